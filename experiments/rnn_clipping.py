"""Gradients through time in a tanh RNN vanish or explode with the recurrent spectral radius,
and clipping the global gradient norm keeps SGD on the adding problem from blowing up.

Reproduces two claims of Pascanu, Mikolov and Bengio 2013, "On the difficulty of training
recurrent neural networks", with the Elman RNN `jaxgrad.nn.RNN` (tanh, hidden 64) and
W_hh = rho Q, Q Haar orthogonal (`init.orthogonal`), so that every eigenvalue and every
singular value of W_hh has modulus rho:

1. Sec. 2.1: dh_T/dh_0 is a product of T factors diag(1 - h_t^2) W_hh^T. rho < 1 suffices
   for it to vanish (|tanh'| <= 1); rho > 1 is necessary for it to explode, not sufficient:
   saturation (h_t^2 -> 1) damps every factor. Measured: the spectral norm (largest singular
   value) ||dh_t/dh_0||_2 for t = 1..T, in forward mode through a `jax.lax.scan` of
   `RNN.step` (`jax.linearize`, the basis tangents vmapped), vmapped over rho, three
   settings and 8 samples (each its own network, input sequence and h_0, the same ones for
   every rho), against the linear prediction rho^t. Settings: zero input and h_0 = 0 (the
   state stays at 0, where tanh' = 1: exactly rho^t, a check of the machinery); zero input
   and h_0 ~ N(0, 0.5^2) per unit; adding-problem inputs and h_0 = 0. `jax.jacrev` of
   `RNN.hidden_states(x, h0)[-1]` must give the same dh_T/dh_0.
2. Sec. 3.2, Algorithm 1: the same RNN trained on the adding problem
   (`data.adding_problem`; predicting the constant 1 has test MSE 1/6) with plain SGD at
   lr 0.1, where the unclipped run blows up, and with the gradient first rescaled to global
   norm at most 1 (`optim.make_optimizer("sgd", 0.1, clip_norm=1.0)`), 3 seeds, one
   `train.train_many` program per sequence length. The unclipped run is the same chain with
   an infinite threshold, which leaves every gradient unchanged.

Measured with `time .venv/bin/python experiments/rnn_clipping.py` (full mode) on 2 CPU cores
shared with other jobs: 209 s wall (200 s CPU) at a load average of 3, 280 s at 6. `--quick`
(part 1 at T = 80 with 4 samples; part 2 at T = 50, rho 1.2, 2 seeds, 400 steps from 2048
sequences) takes 24 s and 36 s: both unclipped runs blow up by step 22, both clipped ones
stay finite, but not yet below 1/6 (test MSE 0.197 and 0.177). Full mode:

    ||dh_T/dh_0||_2 at T = 200, geometric mean of 8 [per-step growth ||dh_T/dh_0||_2^(1/T)]
     rho     rho^T   zero input, h0 = 0   zero input, random h0   adding-problem input
     0.8  4.15e-20   4.15e-20 [0.800]        3.8e-20 [0.800]         3.76e-34 [0.681]
     0.9  7.06e-10   7.06e-10 [0.900]       5.62e-10 [0.899]          6.9e-26 [0.749]
     1.0         1          1 [1.000]          0.183 [0.992]         2.96e-19 [0.808]
     1.1   1.9e+08    1.9e+08 [1.100]           6.71 [1.010]         4.48e-14 [0.858]
     1.3  6.15e+22   6.15e+22 [1.300]       1.76e+03 [1.038]         2.61e-06 [0.938]
     1.5  1.65e+35   1.65e+35 [1.500]       1.71e+06 [1.074]             1.15 [1.001]
    zero input, h0 = 0 against rho^t: max relative error 1.4e-05; forward against reverse
    mode: 1.0e-05 (136 of 144 cases; rho 0.8 with inputs is below 1e-30, where float32
    subnormals flush to zero on a CPU)

    adding problem, SGD lr 0.1, batches of 64 from 4096 sequences; seeds 0 / 1 / 2
       T  rho  clip  first |g| > 1e3  first inf/nan  train MSE              test MSE
      50  0.9  none  - / 7 / 6        - / 23 / 23    0.152 / nan / nan      0.169 / nan / nan
      50  0.9  1     -                -              0.091 / 0.077 / 0.065  0.090 / 0.094 / 0.094
      50  1.2  none  6 / 3 / 6        28 / 22 / 22   nan                    nan
      50  1.2  1     -                -              0.063 / 0.066 / 0.071  0.073 / 0.049 / 0.109
     100  1.2  none  5 / 4 / 5        22 / 30 / 26   nan                    nan
     100  1.2  1     -                -              0.154 / 0.150 / 0.151  0.209 / 0.206 / 0.203
    (T = 50: 2000 steps; T = 100: 1000 steps; train MSE: the last 5% of steps)

Findings. Without input, rho <= 1 follows rho^t (0.800 and 0.899 per step at rho 0.8 and
0.9) and rho > 1 explodes, but far slower than rho^t (rho 1.5: 1.074 per step, 1.7e6 instead
of 1.7e35 at T = 200) once the state saturates. With adding-problem inputs, which hold the
state away from 0, the gradient vanishes for every rho up to 1.3 and is about flat at 1.5:
rho > 1 is necessary, not sufficient. In training, 8 of the 9 unclipped runs blow up by step
30, at rho 0.9 as at 1.2: at this learning rate the blow-up does not need rho > 1 at
initialization. The first spike (global norm > 1e3) is always in the gradient of W_hh (steps
3 to 7); the step it causes saturates the state, the gradients of W_in and W_hh fall to 0,
and the readout's gradient grows by the factor that gradient descent on the readout of a
saturated state predicts, |1 - lr 2 (hidden + 1)| = 12 per step (measured 12.0 in 5 of the 8
runs, 4.0 to 10.6 in the others), until it overflows. Clipped, no run diverges, 42% to 75%
of the steps are clipped, and at T = 50 all six runs beat 1/6 (test MSE 0.049 to 0.109). At
T = 100 none does within 1000 steps: they fit the training sequences (0.15) but not the test
ones (0.20 to 0.21), which fits part 1: with inputs, dh_t/dh_0 shrinks with every step for
rho up to 1.3, and the first marker can be 99 steps back. `rnn_clipping.json` holds every
curve, the gradient norm of each layer included.

Writes `rnn_clipping.json` and `rnn_clipping.png` (||dh_t/dh_0||_2 against t and the growth
per step against rho; per sequence length the training MSE, the global gradient norm on log
scales and the test MSE) to --out (default experiments/out).
Usage: python experiments/rnn_clipping.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxgrad import data, init, nn, optim, train

RHOS = (0.8, 0.9, 1.0, 1.1, 1.3, 1.5)
SETTINGS = ("zero input, h0 = 0", "zero input, random h0", "adding-problem input, h0 = 0")
H0_STD = 0.5
LEARNING_RATE = 0.1
CLIP_NORM = 1.0
BASELINE_MSE = 1 / 6  # predicting the constant 1: the variance of a sum of two U(0, 1)
TINY = 1e-30  # the forward/reverse check skips a dh_T/dh_0 whose norm is below this
SPIKE = 1e3  # a global gradient norm this large (1000x the threshold) counts as a spike


def scaled_orthogonal(rho: float | jax.Array) -> init.Initializer:
    """W_hh = rho * Q with Q Haar orthogonal; `rho` may be traced (under `train_many`)."""
    orthogonal = init.orthogonal()

    def draw(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return (rho * orthogonal(key, shape, dtype)).astype(dtype)

    return draw


def make_rnn(key: jax.Array, rho: float | jax.Array, hidden: int) -> nn.RNN:
    return nn.RNN(
        2,
        hidden,
        1,
        activation="tanh",
        recurrent_init=scaled_orthogonal(rho),
        rngs=nnx.Rngs(key),
    )


# ----------------------------------------------------------------------------- part 1


def jacobian_norms(key, rho, x, h0, hidden: int):
    """||dh_t/dh_0||_2 for t = 1..T by forward mode, and the largest difference between the
    entries of dh_T/dh_0 so found and by reverse mode through `RNN.hidden_states`, relative
    to the largest entry.

    The scan carries h_t and the pushforward of the `hidden` basis directions of h_0, the
    rows of (dh_t/dh_0)^T, through `jax.linearize` of `RNN.step`: memory does not grow with T.
    """
    rnn = make_rnn(key, rho, hidden)

    def body(carry, x_t):
        h, tangents = carry
        h, push = jax.linearize(lambda h: rnn.step(h, x_t), h)
        tangents = jax.vmap(push)(tangents)
        return (h, tangents), jnp.linalg.norm(tangents, ord=2)

    (_, tangents), norms = jax.lax.scan(body, (h0, jnp.eye(hidden, dtype=h0.dtype)), x)
    reverse = jax.jacrev(lambda h0: rnn.hidden_states(x, h0)[-1])(h0)
    # max-abs, not Frobenius, whose squares of entries below 1e-19 would underflow float32
    difference = jnp.max(jnp.abs(tangents.T - reverse)) / jnp.max(jnp.abs(reverse))
    return norms, difference


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _all_jacobian_norms(hidden: int, length: int, samples: int, rhos: jax.Array):
    """`jacobian_norms` for every rho, setting and sample, (rhos, settings, samples, ...)."""
    key_nets, key_data, key_h0 = jax.random.split(jax.random.key(0), 3)
    net_keys = jax.random.split(key_nets, samples)
    inputs = data.adding_problem(key_data, samples, 1, length).x_train  # (samples, T, 2)
    random_h0 = H0_STD * jax.random.normal(key_h0, (samples, hidden))
    zeros_x, zeros_h0 = jnp.zeros_like(inputs), jnp.zeros_like(random_h0)
    x = jnp.stack([zeros_x, zeros_x, inputs])  # (settings, samples, T, 2), as in SETTINGS
    h0 = jnp.stack([zeros_h0, random_h0, zeros_h0])

    def one(key, rho, x, h0):
        return jacobian_norms(key, rho, x, h0, hidden)

    over_samples = jax.vmap(one, in_axes=(0, None, 0, 0))
    over_settings = jax.vmap(over_samples, in_axes=(None, None, 0, 0))
    return jax.vmap(over_settings, in_axes=(None, 0, None, None))(net_keys, rhos, x, h0)


def gradient_through_time(hidden: int, length: int, samples: int) -> dict:
    forward, difference = jax.device_get(
        _all_jacobian_norms(hidden, length, samples, jnp.asarray(RHOS))
    )
    forward = np.asarray(forward, np.float64)  # (rhos, settings, samples, T)
    comparable = forward[..., -1] > TINY
    log_norm = np.log(forward)
    steps = np.arange(1, length + 1)
    rows = []
    for i, rho in enumerate(RHOS):
        linear = rho ** steps.astype(np.float64)
        row = {"rho": rho, "linear_at_T": float(linear[-1])}
        for j, setting in enumerate(SETTINGS):
            geo_mean = np.exp(log_norm[i, j].mean(axis=0))
            row[setting] = {
                "geometric_mean": geo_mean.tolist(),
                "min": forward[i, j].min(axis=0).tolist(),
                "max": forward[i, j].max(axis=0).tolist(),
                "at_T": float(geo_mean[-1]),
                # the per-step factor: ||dh_T/dh_0||^(1/T), rho for the linear network
                "growth_per_step": float(np.exp(log_norm[i, j, :, -1].mean() / length)),
            }
        row["zero_input_relative_error"] = float(np.max(np.abs(forward[i, 0] / linear - 1)))
        rows.append(row)
    return {
        "norm": "spectral (largest singular value)",
        "hidden": hidden,
        "length": length,
        "samples": samples,
        "h0_std": H0_STD,
        "settings": list(SETTINGS),
        "rows": rows,
        # over the cases whose dh_T/dh_0 is well inside float32's normal range: below it
        # (rho 0.8 with inputs at T = 200) the CPU flushes subnormal entries to zero
        "forward_reverse_max_relative_difference": float(np.max(difference[comparable])),
        "forward_reverse_cases_compared": f"{int(comparable.sum())} of {comparable.size}",
    }


# ----------------------------------------------------------------------------- part 2


def _finite_or_none(values) -> list:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, np.float64).ravel()]


def readout_growth(layer_norms: np.ndarray, names: list[str], first_nonfinite: int) -> float:
    """Median factor by which the readout's gradient norm grew per step over the last 8
    steps before the first inf/nan."""
    readout = layer_norms[:first_nonfinite, names.index("readout")][-8:]
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.median(readout[1:] / readout[:-1]))


def summary(history: train.History, names: list[str]) -> dict:
    """The numbers of one run: spikes, divergence, the final test MSE, and the curves."""
    grad_norm = np.asarray(history.grad_norm, np.float64)
    layer_norms = np.asarray(history.layer_grad_norms, np.float64)
    test_loss = np.asarray(history.test_loss, np.float64)
    finite = np.isfinite(grad_norm)
    # The first spike (a global norm above SPIKE, or inf/nan) and the layer whose gradient
    # was largest there: where the explosion starts.
    spikes = np.flatnonzero(~(grad_norm <= SPIKE))
    spike = int(spikes[0]) if spikes.size else -1
    spike_layer = None
    if spike >= 0 and not np.isnan(layer_norms[spike]).all():
        spike_layer = names[int(np.argmax(np.nan_to_num(layer_norms[spike], nan=-np.inf)))]
    final = float(test_loss[-1])
    loss = np.asarray(history.loss, np.float64)
    final_train = float(np.mean(loss[-max(1, loss.size // 20) :]))  # the last 5% of steps
    bad = int(history.first_nonfinite_step)
    return {
        "first_nonfinite_step": bad,
        "readout_growth_per_step": readout_growth(layer_norms, names, bad) if bad > 8 else None,
        "first_spike_step": spike,
        "first_spike_layer": spike_layer,
        "max_grad_norm": float(grad_norm[finite].max()) if finite.any() else None,
        # of the steps with a finite gradient, those whose norm exceeded the threshold
        "fraction_above_threshold": float(np.mean(grad_norm[finite] > CLIP_NORM))
        if finite.any()
        else None,
        "final_train_mse": final_train if math.isfinite(final_train) else None,
        "final_test_mse": final if math.isfinite(final) else None,
        "beats_baseline": bool(final < BASELINE_MSE),
        "loss": _finite_or_none(loss),
        "grad_norm": _finite_or_none(grad_norm),
        "layer_grad_norms": {
            name: _finite_or_none(layer_norms[:, k]) for k, name in enumerate(names)
        },
        "test_loss": _finite_or_none(test_loss),
    }


def clipping_runs(
    length: int,
    hidden: int,
    steps: int,
    seeds: int,
    rhos,
    batch_size: int,
    n_train: int,
    n_test: int = 512,
    evaluations: int = 10,
) -> dict:
    split = data.adding_problem(jax.random.key(1), n_train, n_test, length)

    def model_fn(key, rho):
        return make_rnn(key, rho, hidden)

    def optimizer_fn(clipped):
        # An infinite threshold makes clip_by_global_norm the identity: the unclipped run.
        threshold = jnp.where(clipped > 0, CLIP_NORM, jnp.inf)
        return optim.make_optimizer("sgd", LEARNING_RATE, clip_norm=threshold)

    history, grid = train.train_many(
        model_fn,
        optimizer_fn,
        split,
        seeds=list(range(seeds)),
        hyperparams={"rho": list(rhos), "clipped": [0.0, 1.0]},
        steps=steps,
        batch_size=batch_size,
        eval_every=steps // evaluations,
    )
    history = jax.device_get(history)
    # an abstract model is enough for the names, and builds nothing
    names = train.layer_names(nnx.eval_shape(lambda: make_rnn(jax.random.key(0), 1.0, hidden)))
    runs = []
    for seed in range(seeds):
        for i, rho in enumerate(rhos):
            for clipped in (False, True):
                run = jax.tree.map(lambda a, at=(seed, i, int(clipped)): a[at], history)
                runs.append({"seed": seed, "rho": rho, "clipped": clipped, **summary(run, names)})
    return {
        "length": length,
        "hidden": hidden,
        "steps": steps,
        "batch_size": batch_size,
        "n_train": n_train,
        "n_test": n_test,
        "optimizer": "sgd",
        "learning_rate": LEARNING_RATE,
        "clip_norm": CLIP_NORM,
        "baseline_mse": BASELINE_MSE,
        # Gradient descent on the readout of a saturated state (every |h_i| = 1, the same for
        # every sequence): the MSE's Hessian in (kernel, bias) is 2 [h, 1][h, 1]^T, top
        # eigenvalue 2 (hidden + 1), so each step multiplies the error by 1 - lr 2 (hidden + 1).
        "saturated_readout_growth": abs(1 - LEARNING_RATE * 2 * (hidden + 1)),
        "eval_step": np.asarray(history.eval_step[(0,) * len(grid.shape)]).tolist(),
        "runs": runs,
    }


# ----------------------------------------------------------------------------- figure


def _smooth(values: list, window: int) -> np.ndarray:
    """Trailing mean over `window` steps (fewer at the start); nan from a missing value on."""
    x = _array(values)
    cumulative = np.concatenate([[0.0], np.cumsum(x)])
    ends = np.arange(1, x.size + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def _array(values: list) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], np.float64)


def _plot_jacobians(axes, part1: dict) -> None:
    steps = np.arange(1, part1["length"] + 1)
    for ax, setting in zip(axes[:2], SETTINGS[1:], strict=True):
        for index, row in enumerate(part1["rows"]):
            colour = f"C{index}"
            stats = row[setting]
            ax.semilogy(steps, stats["geometric_mean"], color=colour, label=f"rho = {row['rho']}")
            ax.fill_between(steps, stats["min"], stats["max"], color=colour, alpha=0.15, lw=0)
            ax.semilogy(steps, row["rho"] ** steps.astype(float), color=colour, ls=":", lw=1)
        ax.set(
            xlabel="t",
            ylabel="||dh_t/dh_0||_2",
            title=f"{setting} (dotted: rho^t; band: min-max)",
            ylim=(1e-20, 1e20),
        )
        ax.legend(fontsize=7, ncol=2)
    ax = axes[2]
    rhos = [row["rho"] for row in part1["rows"]]
    ax.plot(rhos, rhos, "k:", label="linear: rho")
    for index, setting in enumerate(SETTINGS):
        growth = [row[setting]["growth_per_step"] for row in part1["rows"]]
        ax.plot(rhos, growth, "o-", color=f"C{index + 6}", label=setting)
    ax.axhline(1, color="grey", lw=0.5)
    ax.set(
        xlabel="recurrent spectral radius rho",
        ylabel="||dh_T/dh_0||_2^(1/T)",
        title=f"tanh RNN, hidden {part1['hidden']}: growth per step over T = {part1['length']}",
    )
    ax.legend(fontsize=7)


def _plot_training(axes, setting: dict) -> None:
    ax_loss, ax_grad, ax_test = axes
    window = max(1, setting["steps"] // 100)
    steps = np.arange(1, setting["steps"] + 1)  # 1-based, for a log axis
    rhos = sorted({run["rho"] for run in setting["runs"]})
    for run in setting["runs"]:
        index = 2 * rhos.index(run["rho"]) + int(run["clipped"])
        colour = ("C3", "C0", "C1", "C2")[index % 4]
        label = None
        if run["seed"] == 0:
            clip = f"clip {setting['clip_norm']:g}" if run["clipped"] else "no clip"
            label = f"rho {run['rho']}, {clip}"
        ax_loss.semilogy(steps, _smooth(run["loss"], window), colour, lw=1, label=label)
        ax_grad.semilogy(steps, _array(run["grad_norm"]), colour, lw=0.5, alpha=0.7, label=label)
        ax_test.plot(
            setting["eval_step"], _array(run["test_loss"]), colour, marker=".", label=label
        )
        if run["first_nonfinite_step"] >= 0:
            for ax in (ax_loss, ax_grad):
                ax.axvline(run["first_nonfinite_step"] + 1, color=colour, lw=0.5, alpha=0.5)
    for ax in (ax_loss, ax_test):
        ax.axhline(setting["baseline_mse"], color="k", lw=0.8, ls=":", label="baseline 1/6")
    ax_grad.axhline(setting["clip_norm"], color="k", lw=0.8, ls=":", label="clip threshold")
    title = (
        f"adding problem T = {setting['length']}, SGD lr {setting['learning_rate']:g}, "
        f"{len({run['seed'] for run in setting['runs']})} seeds"
    )
    ax_loss.set(
        xscale="log",  # the blow-ups take a few dozen steps, training a few thousand
        xlabel="step",
        ylabel=f"training MSE (trailing mean of {window} steps)",
        title=title,
        ylim=(1e-2, 1e6),  # an exploding run leaves through the top
    )
    ax_grad.set(
        xscale="log",
        xlabel="step",
        ylabel="global gradient norm (before clipping)",
        title="vertical lines: first inf/nan",
    )
    ax_test.set(
        xlabel="step",
        ylabel="test MSE",
        title="test MSE (a diverged run is nan: no points)",
        ylim=(0, 0.5),
    )
    for ax in axes:
        ax.legend(fontsize=7)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = results["clipping"]
    rows = 1 + len(settings)
    fig, axes = plt.subplots(rows, 3, figsize=(17, 4.8 * rows))
    _plot_jacobians(axes[0], results["gradient_through_time"])
    for ax_row, setting in zip(axes[1:], settings, strict=True):
        _plot_training(ax_row, setting)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def report(results: dict) -> None:
    """Print the tables of the module docstring."""
    part1 = results["gradient_through_time"]
    print(
        f"||dh_T/dh_0||_2 at T = {part1['length']}, tanh RNN, hidden {part1['hidden']}, "
        f"W_hh = rho Q (geometric mean of {part1['samples']} samples; per-step growth "
        "||dh_T/dh_0||_2^(1/T) in brackets)"
    )
    print(f"{'rho':>5} {'rho^T':>9}  " + "  ".join(f"{s:>29}" for s in SETTINGS))
    for row in part1["rows"]:
        cells = [f"{row[s]['at_T']:>9.3g} [{row[s]['growth_per_step']:.3f}]" for s in SETTINGS]
        print(
            f"{row['rho']:>5} {row['linear_at_T']:>9.3g}  " + "  ".join(f"{c:>29}" for c in cells)
        )
    worst = max(row["zero_input_relative_error"] for row in part1["rows"])
    print(
        f"zero input, h0 = 0 against rho^t: max relative error {worst:.1e}; forward against "
        f"reverse mode, dh_T/dh_0: {part1['forward_reverse_max_relative_difference']:.1e} "
        f"({part1['forward_reverse_cases_compared']} cases with a norm above {TINY:g})"
    )
    for setting in results["clipping"]:
        print(
            f"adding problem T = {setting['length']}, hidden {setting['hidden']}, SGD lr "
            f"{setting['learning_rate']:g}, {setting['steps']} steps of {setting['batch_size']} "
            f"from {setting['n_train']} sequences (test {setting['n_test']}); "
            f"baseline MSE {setting['baseline_mse']:.4f}; readout growth per step for a "
            f"saturated state |1 - lr 2 (hidden + 1)| = {setting['saturated_readout_growth']:.1f}"
        )
        print(
            f"{'rho':>5} {'clip':>5} {'seed':>4} {'first spike':>18} {'first inf/nan':>13} "
            f"{'readout x':>9} {'max |g|':>9} {'|g| > c':>7} {'train MSE':>9} {'test MSE':>8} "
            f"{'< 1/6':>5}"
        )
        for run in setting["runs"]:
            clip = f"{setting['clip_norm']:g}" if run["clipped"] else "none"
            spike = "-"
            if run["first_spike_step"] >= 0:
                spike = f"{run['first_spike_step']} ({run['first_spike_layer']})"
            bad = run["first_nonfinite_step"]
            peak, above = run["max_grad_norm"], run["fraction_above_threshold"]
            final, final_train = run["final_test_mse"], run["final_train_mse"]
            growth = run["readout_growth_per_step"]
            print(
                f"{run['rho']:>5} {clip:>5} {run['seed']:>4} {spike:>18} "
                f"{'-' if bad < 0 else bad:>13} {'-' if growth is None else f'{growth:.1f}':>9} "
                f"{'-' if peak is None else f'{peak:.3g}':>9} "
                f"{'-' if above is None else f'{above:.0%}':>7} "
                f"{'nan' if final_train is None else f'{final_train:.4f}':>9} "
                f"{'nan' if final is None else f'{final:.4f}':>8} {run['beats_baseline']!s:>5}"
            )


def main() -> None:
    start = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--out", type=Path, default=Path("experiments/out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # n_train is kept small because `train` draws every minibatch as a full permutation of
    # the training set: on a CPU that costs as much as the training itself at n_train = 4096.
    fit = {"hidden": 64, "batch_size": 64}
    if args.quick:
        jacobians = {"hidden": 64, "length": 80, "samples": 4}
        training = [fit | {"length": 50, "steps": 400, "seeds": 2, "rhos": (1.2,), "n_train": 2048}]
    else:
        jacobians = {"hidden": 64, "length": 200, "samples": 8}
        training = [
            fit | {"length": 50, "steps": 2000, "seeds": 3, "rhos": (0.9, 1.2), "n_train": 4096},
            fit | {"length": 100, "steps": 1000, "seeds": 3, "rhos": (1.2,), "n_train": 4096},
        ]
    results = {
        "gradient_through_time": gradient_through_time(**jacobians),
        "clipping": [clipping_runs(**kwargs) for kwargs in training],
    }
    json_path = args.out / "rnn_clipping.json"
    json_path.write_text(json.dumps(results) + "\n")
    png_path = args.out / "rnn_clipping.png"
    plot(results, png_path)
    report(results)
    print(f"wrote {json_path} and {png_path} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
