"""Remedies for vanishing and exploding gradients, one at a time, on a 20-layer MLP on digits.

The baseline cannot learn: a sigmoid MLP of 20 hidden layers of width 64 on scikit-learn's digits,
every kernel drawn from N(0, 0.1^2), trained with SGD (learning rate 0.03, batch 64). Its first
layer's gradient is ~1e-14 of its last layer's. Mean-field theory says so (Schoenholz et al.
2017): the sigmoid's slope is at most 1/4 and its mean, 1/2, acts like a large bias, so the net
is deep in the ordered phase, chi1 = 0.037 per layer, chi1^(19/2) = 2.6e-14. Each remedy then
changes one thing, or the pair the literature prescribes together:

- an activation with the initializer scaled for it: ReLU + He (He et al. 2015), leaky ReLU
  (slope 0.2) + He(a = 0.2), ELU + a He-style init at ELU's own gain (1.245, by quadrature), and
  tanh + Xavier (Glorot and Bengio 2010). Controls: each activation alone, init kept.
- the initializer alone on the sigmoid net (controls): Xavier (chi1 = 0.056), He (0.10). The
  sigmoid reaches chi1 = 1 only at sigma_w2 = 103 (`theory.critical_sigma_w2`): "critical init".
- batch norm before every sigmoid; residual blocks h + sigmoid(h W + b); init and SGD kept.
- clipping by value and by global norm (Pascanu et al. 2013), in an exploding setting of its
  own: ReLU + He trained by SGD at learning rate 1, which overflows within a few steps.
- Adam and RMSProp (as Adam with beta1 = 0 and beta2 = 0.9, which adds Adam's bias correction),
  learning rate 1e-3: on the baseline, and on the sigmoid net at N(0, 0.6^2), whose gradient
  vanishes by only ~1e-3 (chi1 = 0.48) and which SGD still cannot train.
- greedy layer-wise pre-training (Bengio et al. 2007; `train.pretrain_layerwise`: tied-weight
  autoencoders, a sigmoid decoder above the first layer) of the baseline, then its SGD.
  Control: the pre-trained kernels with their entries shuffled within each layer.

Rows that differ only in numbers (the kernels drawn, learning rate, clipping thresholds, Adam's
eps and betas) share one compiled program: `train.train_many` vmaps over seeds x rows, and an
infinite clipping threshold passes gradients through unchanged. Pre-training runs seed by seed
(one program each for pre-training and fine-tuning) from the baseline's exact initial weights
and minibatches. The gradient ratio is ||dL/dW_1|| / ||dL/dW_20|| of the hidden kernels, the
mean over the first 10 steps (overflowed or zero norms left out), geometric mean over seeds.

Full mode, `python experiments/remedies.py`: 5 seeds x 2000 steps, 4-5 minutes on 2 CPU cores.
Test accuracy at the end (mean ± std over seeds); grad W_1, the first layer's gradient norm at
the start; (c) marks a control; in parentheses the mean-field prediction chi1^((L-1)/2):

    remedy                    test accuracy  grad W_1   ratio W_1/W_20      non-finite
    baseline                  0.100 ± 0.000  6.9e-15    6.2e-14 (2.6e-14)
    Xavier on sigmoid (c)     0.100 ± 0.000  5.1e-13    2.3e-12 (1.2e-12)
    He on sigmoid (c)         0.100 ± 0.000  1.3e-10    5.4e-10 (3.5e-10)
    critical init             0.510 ± 0.084  0.32       0.16 (1)
    SGD, N(0, 0.6^2) (c)      0.100 ± 0.001  0.00036    0.00031 (0.00096)
    ReLU alone (c)            0.115 ± 0.029  5.8e-06    0.18
    ReLU + He                 0.925 ± 0.003  0.53       1.4
    SGD 1, no clipping (c)    0.019 ± 0.039  2.8e+04    0.53                4/5 seeds, step 2
    clip by value (0.01)      0.962 ± 0.009  0.46       1.1
    clip by global norm (0.3) 0.963 ± 0.005  0.53       1.2
    leaky ReLU alone (c)      0.100 ± 0.000  1.1e-05    0.22
    leaky ReLU + He(a)        0.942 ± 0.009  0.61       1.1
    ELU alone                 0.925 ± 0.012  0.008      1
    ELU + its gain            0.945 ± 0.005  1.2        1.2
    tanh alone (c)            0.769 ± 0.260  0.0097     1
    tanh + Xavier             0.949 ± 0.007  0.35       1
    batch norm                0.972 ± 0.005  0.45       1.5
    residual                  0.958 ± 0.004  0.44       0.13
    Adam                      0.100 ± 0.000  6.9e-15    6.4e-14 (2.6e-14)
    Adam, eps 1e-16 (c)       0.197 ± 0.002  7.3e-15    6.8e-14 (2.6e-14)
    Adam, N(0, 0.6^2)         0.897 ± 0.013  0.00033    0.00021 (0.00096)
    RMSProp                   0.100 ± 0.000  7e-15      6.4e-14 (2.6e-14)
    RMSProp, N(0, 0.6^2)      0.908 ± 0.015  0.00037    0.00023 (0.00096)
    pre-training              0.959 ± 0.005  0.043      0.37
    pre-trained, shuffled (c) 0.100 ± 0.001  5.3e-07    5.3e-06

What the controls say:
- The measured ratios of the sigmoid nets follow mean-field theory within a factor of ~3 from
  1e-14 to 1e-3: Xavier and He, derived for tanh and ReLU, leave the sigmoid ordered. The
  critical init fixes the ratio (0.16) but its large weights (std 1.27) saturate the sigmoids:
  it trains only part way.
- ReLU and leaky ReLU alone fail for another reason: the ratio is fine (~0.2) but the forward
  signal shrinks by sqrt(sigma_w2 / 2) = 0.57 per layer, so every hidden layer's gradient is
  below 1e-4. He's gain fixes exactly that. ELU and tanh alone, whose slope at 0 is 1, train;
  tanh slowly.
- Adam and RMSProp cannot rescue the baseline: their eps (1e-8) is above the gradient entries of
  layers 1 to 12. With eps 1e-16 Adam still stalls at 0.2, which we read as: each layer's input is
  the sigmoid's mean 1/2 plus variations that shrink ~5x per layer, so in every gradient entry
  the part that only moves that mean dominates, and rescaling entries rescales both parts.
  Where the gradient vanishes by ~1e-3 only, their per-parameter scaling does what SGD cannot.
- SGD at learning rate 1 overflows in 4 of 5 seeds (the fifth never learns); either clipping
  alone trains it to 0.96. At learning rate 0.05 instead of 0.03, 1 of 5 leaky ReLU + He(a)
  runs also overflowed (step 432): He init fixes the start, not every step after it.
- Pre-training rescues the baseline (ratio 0.37 after it), and it is the learned structure that
  does: the same weights shuffled within each layer give 5e-6 and chance. It needs the sigmoid
  decoder: with a linear one a tied-weight layer halves the variations it passes on, and the
  layers above ~10 failed to reconstruct (measured before `pretrain_layerwise` had it).

Quick mode, `--quick`: 1 seed x 600 steps (200 pre-training steps per layer), 40-50 s on 2
cores at load ~1 (measured 39-52 s; compiling ten programs is most of it, so a loaded machine
takes longer). Same picture; the slow rows (tanh and ELU alone, critical init) are further from
converged, and batch norm's test accuracy lags its training accuracy before ~500 steps, while
its running statistics still remember the first, fast-changing steps.

XLA's backend optimization level is set to 1: ten programs each run for seconds, and level 1
compiles them about twice as fast as the default and runs them about as fast.

Writes `remedies.json` (settings, one record per row with per-seed numbers, the per-layer
gradient norms at the start and at 50 steps through training, the test-accuracy curve) and
`remedies.png` to --out (default experiments/out; `remedies_quick.*` with --quick), and prints
the table in markdown.
Usage: python experiments/remedies.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxgrad import activations, init, nn, optim, theory, train
from jaxgrad import data as datasets

DEPTH = 20
WIDTH = 64  # = the 64 pixels of digits: the blocks start at the input, no input projection
NUM_CLASSES = 10
BATCH_SIZE = 64
SGD_LR = 0.03  # every SGD row; rectifier nets at depth 20 may diverge at 0.05 (1 of 5 seeds)
NAIVE_STD = 0.1  # the naive initializer: N(0, 0.1^2) for every kernel
# The sigmoid's order-to-chaos transition at sigma_b2 = 0: chi1 = 1 at sigma_w2 = 103.0
# (`theory.critical_sigma_w2("sigmoid", 0.0)`; the JSON's mean_field table has chi1 there).
SIGMOID_CRITICAL_SIGMA_W2 = 103.0
MODERATE_STD = 0.6  # sigma_w2 = 23: still ordered, the gradient vanishes by only ~1e-3
EXPLODING_LR = 1.0  # ~30x SGD_LR: SGD on ReLU + He overflows within a few steps
CLIP_VALUE = 1e-2
CLIP_NORM = 0.3
ADAM_LR = 1e-3  # Kingma and Ba's default, also RMSProp's
RMSPROP_DECAY = 0.9
LEAKY_SLOPE = 0.2
PRETRAIN_LR = 1e-2
RATIO_STEPS = 10  # "at the start of training": the mean over the first steps
CURVE_POINTS = 50  # steps kept of the per-step layer gradient norms in the JSON
EVALS = 10  # test-set evaluations during training (and one at the start)
NO_CLIP = math.inf


class Row(NamedTuple):
    """One remedy (or control) in a group that shares one compiled program.

    `sigma_w2` is fan_in times the kernels' variance for an i.i.d. zero-mean init, for the
    mean-field prediction of the gradient ratio (sigmoid rows only).
    """

    name: str
    changed: str
    kernel_init: init.Initializer
    role: str = "remedy"  # "baseline", "remedy" or "control"
    learning_rate: float = SGD_LR
    clip_value: float = NO_CLIP
    clip_norm: float = NO_CLIP
    eps: float = 1e-8
    b1: float = 0.9  # Adam's; RMSProp is Adam with b1 = 0 and b2 = its decay
    b2: float = 0.999
    sigma_w2: float | None = None


class Group(NamedTuple):
    """Rows with one structure (activation, blocks, optimizer): one `train_many` call, whose
    rows differ only in numbers (the kernels drawn, the learning rate, clipping, eps)."""

    title: str
    activation: str
    rows: tuple[Row, ...]
    optimizer: str = "sgd"
    norm: str | None = None
    residual: bool = False


def _activation(name: str) -> activations.Activation:
    if name == "leaky_relu":
        return activations.get("leaky_relu", negative_slope=LEAKY_SLOPE)
    return activations.get(name)


def groups() -> list[Group]:
    """Every remedy and control but pre-training, by the program each runs in."""
    naive = init.normal(NAIVE_STD)
    naive_w2 = NAIVE_STD**2 * WIDTH
    moderate = init.normal(MODERATE_STD)
    moderate_w2 = MODERATE_STD**2 * WIDTH
    he = init.kaiming_normal()
    elu_gain = init.computed_gain("elu")
    sgd = f"SGD {SGD_LR}"
    exploding = f"ReLU + He, SGD {EXPLODING_LR:g}"
    return [
        Group(
            "sigmoid, SGD",
            "sigmoid",
            (
                Row(
                    "baseline",
                    f"sigmoid, every kernel N(0, {NAIVE_STD}^2), {sgd}",
                    naive,
                    role="baseline",
                    sigma_w2=naive_w2,
                ),
                Row(
                    "Xavier on sigmoid",
                    "init only: Xavier normal (sigma_w2 = 1); still sigmoid",
                    init.xavier_normal(),
                    role="control",
                    sigma_w2=1.0,
                ),
                Row(
                    "He on sigmoid",
                    "init only: He normal (sigma_w2 = 2); still sigmoid",
                    he,
                    role="control",
                    sigma_w2=2.0,
                ),
                Row(
                    "critical init",
                    f"init only: sigma_w2 = {SIGMOID_CRITICAL_SIGMA_W2:g}, the sigmoid's "
                    "chi1 = 1 (Schoenholz et al. 2017)",
                    init.normal(math.sqrt(SIGMOID_CRITICAL_SIGMA_W2 / WIDTH)),
                    sigma_w2=SIGMOID_CRITICAL_SIGMA_W2,
                ),
                Row(
                    f"SGD, N(0, {MODERATE_STD}^2)",
                    f"init only: N(0, {MODERATE_STD}^2), vanishing ~1e-3 (control for Adam, "
                    "RMSProp)",
                    moderate,
                    role="control",
                    sigma_w2=moderate_w2,
                ),
            ),
        ),
        Group(
            "ReLU, SGD, clipping",
            "relu",
            (
                Row("ReLU alone", "activation only: ReLU; init kept", naive, role="control"),
                Row("ReLU + He", "ReLU with its init, He normal (He et al. 2015)", he),
                Row(
                    f"SGD {EXPLODING_LR:g}, no clipping",
                    f"exploding setting: {exploding}",
                    he,
                    role="control",
                    learning_rate=EXPLODING_LR,
                ),
                Row(
                    "clip by value",
                    f"{exploding} + each gradient entry clipped to +-{CLIP_VALUE:g}",
                    he,
                    learning_rate=EXPLODING_LR,
                    clip_value=CLIP_VALUE,
                ),
                Row(
                    "clip by global norm",
                    f"{exploding} + global gradient norm clipped to {CLIP_NORM:g}",
                    he,
                    learning_rate=EXPLODING_LR,
                    clip_norm=CLIP_NORM,
                ),
            ),
        ),
        Group(
            "leaky ReLU, SGD",
            "leaky_relu",
            (
                Row(
                    "leaky ReLU alone",
                    f"activation only: leaky ReLU (slope {LEAKY_SLOPE}); init kept",
                    naive,
                    role="control",
                ),
                Row(
                    "leaky ReLU + He(a)",
                    f"leaky ReLU with its init, He normal with a = {LEAKY_SLOPE}",
                    init.kaiming_normal(a=LEAKY_SLOPE),
                ),
            ),
        ),
        Group(
            "ELU, SGD",
            "elu",
            (
                Row("ELU alone", "activation only: ELU; init kept", naive),
                Row(
                    "ELU + its gain",
                    f"ELU with He-style init at ELU's own gain {elu_gain:.3f} (quadrature)",
                    init.variance_scaling(elu_gain**2, "fan_in", "normal"),
                ),
            ),
        ),
        Group(
            "tanh, SGD",
            "tanh",
            (
                Row("tanh alone", "activation only: tanh; init kept", naive, role="control"),
                Row(
                    "tanh + Xavier",
                    "tanh with Xavier uniform (Glorot and Bengio 2010)",
                    init.xavier_uniform(),
                ),
            ),
        ),
        Group(
            "sigmoid, batch norm, SGD",
            "sigmoid",
            (Row("batch norm", "batch norm before each sigmoid; init kept", naive),),
            norm="batch",
        ),
        Group(
            "sigmoid, residual, SGD",
            "sigmoid",
            (Row("residual", "h + sigmoid(h W + b) in every block; init kept", naive),),
            residual=True,
        ),
        Group(
            "sigmoid, Adam / RMSProp",
            "sigmoid",
            (
                Row(
                    "Adam",
                    f"optimizer only: Adam {ADAM_LR:g} (eps 1e-8)",
                    naive,
                    learning_rate=ADAM_LR,
                    sigma_w2=naive_w2,
                ),
                Row(
                    "Adam, eps 1e-16",
                    f"Adam {ADAM_LR:g} with eps 1e-16, below every layer's gradient",
                    naive,
                    role="control",
                    learning_rate=ADAM_LR,
                    eps=1e-16,
                    sigma_w2=naive_w2,
                ),
                Row(
                    f"Adam, N(0, {MODERATE_STD}^2)",
                    f"Adam {ADAM_LR:g} on the N(0, {MODERATE_STD}^2) net",
                    moderate,
                    learning_rate=ADAM_LR,
                    sigma_w2=moderate_w2,
                ),
                Row(
                    "RMSProp",
                    f"optimizer only: RMSProp {ADAM_LR:g} (decay 0.9, eps 1e-8)",
                    naive,
                    learning_rate=ADAM_LR,
                    b1=0.0,
                    b2=RMSPROP_DECAY,
                    sigma_w2=naive_w2,
                ),
                Row(
                    f"RMSProp, N(0, {MODERATE_STD}^2)",
                    f"RMSProp {ADAM_LR:g} on the N(0, {MODERATE_STD}^2) net",
                    moderate,
                    learning_rate=ADAM_LR,
                    b1=0.0,
                    b2=RMSPROP_DECAY,
                    sigma_w2=moderate_w2,
                ),
            ),
            optimizer="adam",
        ),
    ]


def _selected(initializers: list[init.Initializer], config: jax.Array) -> init.Initializer:
    """The initializer of row `config` (traced): every row's draw from the same key, one kept."""
    distinct = list(dict.fromkeys(initializers))  # rows sharing an initializer share a draw
    if len(distinct) == 1:
        return distinct[0]
    which = jnp.asarray([distinct.index(draw) for draw in initializers])[config]

    def kernel_init(key, shape, dtype=jnp.float32):
        return jnp.stack([draw(key, shape, dtype) for draw in distinct])[which]

    return kernel_init


def run_group(group: Group, data, seeds: list[int], steps: int) -> train.History:
    """Train every row of `group` from every seed: one `train_many` call, one program."""
    rows = group.rows
    table = {
        field: jnp.asarray([getattr(row, field) for row in rows], jnp.float32)
        for field in ("learning_rate", "clip_value", "clip_norm", "eps", "b1", "b2")
    }
    clips = any(math.isfinite(r.clip_value) or math.isfinite(r.clip_norm) for r in rows)
    phi = _activation(group.activation)

    def model_fn(key, config):
        index = jnp.asarray(config).astype(jnp.int32)
        return nn.MLP(
            WIDTH,
            WIDTH,
            DEPTH,
            NUM_CLASSES,
            activation=phi,
            kernel_init=_selected([row.kernel_init for row in rows], index),
            norm=group.norm,
            residual=group.residual,
            rngs=nnx.Rngs(key),
        )

    def optimizer_fn(config):
        index = jnp.asarray(config).astype(jnp.int32)
        learning_rate = table["learning_rate"][index]
        if group.optimizer == "adam":  # RMSProp too: b1 = 0 (Adam's bias correction kept)
            return optax.adam(
                learning_rate, b1=table["b1"][index], b2=table["b2"][index], eps=table["eps"][index]
            )
        if clips:  # an infinite threshold passes every gradient through unchanged
            return optim.make_optimizer(
                "sgd",
                learning_rate,
                clip_value=table["clip_value"][index],
                clip_norm=table["clip_norm"][index],
            )
        return optim.make_optimizer("sgd", learning_rate)

    history, _ = train.train_many(
        model_fn,
        optimizer_fn,
        data,
        seeds=seeds,
        hyperparams={"config": np.arange(len(rows))},
        steps=steps,
        batch_size=BATCH_SIZE,
        eval_every=steps // EVALS,
    )
    return jax.device_get(history)


def baseline_model(key: jax.Array) -> nn.MLP:
    """The baseline network as `run_group` builds it from `key`: the same initial weights."""
    return nn.MLP(
        WIDTH,
        WIDTH,
        DEPTH,
        NUM_CLASSES,
        activation="sigmoid",
        kernel_init=init.normal(NAIVE_STD),
        rngs=nnx.Rngs(key),
    )


def _stack(histories: list[train.History]) -> train.History:
    return jax.tree.map(lambda *arrays: np.stack(arrays), *histories)


def pretraining(data, seeds: list[int], steps: int, pretrain_steps: int):
    """Greedy layer-wise pre-training of the baseline, then the baseline's SGD; and a control
    whose pre-trained kernels have their entries shuffled within each layer (the same
    weight distribution, no learned structure). Seed by seed: the same compiled programs."""
    tx = optim.make_optimizer("sgd", SGD_LR)  # one chain object for every run: one compile
    pretrained, shuffled, block_loss = [], [], []
    for seed in seeds:
        key = jax.random.key(seed)
        model = baseline_model(key)
        report = train.pretrain_layerwise(
            model,
            data.x_train,
            key=jax.random.fold_in(key, 2),
            steps=pretrain_steps,
            batch_size=BATCH_SIZE,
            learning_rate=PRETRAIN_LR,
        )
        block_loss.append(np.asarray(report.block_loss))
        control = nnx.clone(model)
        kernels = control.blocks.linear.kernel[...]
        flat = kernels.reshape(DEPTH, -1)
        flat = jax.random.permutation(jax.random.fold_in(key, 3), flat, axis=1, independent=True)
        control.blocks.linear.kernel[...] = flat.reshape(kernels.shape)
        batch_key = jax.random.fold_in(key, 1)  # train_many's minibatches for this seed
        for runs, net in ((pretrained, model), (shuffled, control)):
            history = train.train(
                net,
                tx,
                data,
                steps=steps,
                key=batch_key,
                batch_size=BATCH_SIZE,
                eval_every=steps // EVALS,
            )
            runs.append(jax.device_get(history))
    block_loss = np.stack(block_loss)  # (seeds, depth, pretrain_steps)
    rows = [
        Row(
            "pre-training",
            f"greedy layer-wise autoencoders ({pretrain_steps} Adam steps per layer, Bengio "
            f"et al. 2007) from the baseline's init, then its {SGD_LR:g} SGD",
            init.normal(NAIVE_STD),
        ),
        Row(
            "pre-trained, shuffled",
            "pre-trained kernels with entries shuffled within each layer, then SGD",
            init.normal(NAIVE_STD),
            role="control",
        ),
    ]
    return rows, (_stack(pretrained), _stack(shuffled)), block_loss


# ----------------------------------------------------------------------------- summaries


def _geometric_mean(values: np.ndarray) -> float:
    """The geometric mean of the finite values (nan when there are none)."""
    values = values[np.isfinite(values)]
    return float(np.exp(np.mean(np.log(values)))) if values.size else math.nan


def _number(x: float) -> float | None:
    """A float for JSON: 4 significant digits, None for nan or inf."""
    return float(f"{x:.4g}") if math.isfinite(x) else None


def summarize(row: Row, group: str, history: train.History, first: int, last: int) -> dict:
    """A row of results from its `History` with a leading seed axis."""
    norms = np.asarray(history.layer_grad_norms, np.float64)  # (seeds, steps, layers)
    # logs of the usable norms: an overflowed (inf, nan) or dead (0) gradient is left out
    with np.errstate(divide="ignore", invalid="ignore"):
        log_norms = np.log(norms)
    log_norms[~np.isfinite(log_norms)] = np.nan
    with warnings.catch_warnings():  # "mean of empty slice" where every value was left out
        warnings.simplefilter("ignore", RuntimeWarning)
        # at the start: each seed's mean over its first steps, then the seeds' geometric mean
        start_logs = log_norms[:, :RATIO_STEPS]
        ratio_per_seed = np.nanmean(np.exp(start_logs[..., first] - start_logs[..., last]), 1)
        first_per_seed = np.nanmean(np.exp(start_logs[..., first]), 1)
        start = np.exp(np.nanmean(start_logs, axis=(0, 1)))  # (layers,)
        steps = norms.shape[1]
        kept = np.unique(np.linspace(0, steps - 1, min(CURVE_POINTS, steps)).round().astype(int))
        curves = np.exp(np.nanmean(log_norms[:, kept], axis=0))  # (kept, layers)
    accuracy = np.asarray(history.test_accuracy[:, -1], np.float64)
    # training accuracy: the minibatches of the last tenth of the steps, in training mode
    train_accuracy = np.asarray(history.accuracy[:, -max(1, steps // 10) :], np.float64)
    return {
        "name": row.name,
        "group": group,
        "role": row.role,
        "changed": row.changed,
        "test_accuracy": accuracy.tolist(),
        "test_accuracy_mean": float(accuracy.mean()),
        "test_accuracy_std": float(accuracy.std()),
        "eval_steps": np.asarray(history.eval_step[0]).tolist(),
        "test_accuracy_curve": np.asarray(history.test_accuracy, np.float64).mean(0).tolist(),
        "train_accuracy_mean": float(train_accuracy.mean()),
        "first_layer_grad_norm": _number(_geometric_mean(first_per_seed)),
        "grad_ratio": [_number(r) for r in ratio_per_seed],
        "grad_ratio_geomean": _number(_geometric_mean(ratio_per_seed)),
        "first_nonfinite_step": np.asarray(history.first_nonfinite_step).tolist(),
        "learning_rate": row.learning_rate,
        "sigma_w2": row.sigma_w2,
        "start_profile": [_number(v) for v in start],
        "curve_steps": kept.tolist(),
        "layer_grad_norms": [[_number(v) for v in step] for step in curves],
    }


def mean_field(rows: list[dict]) -> dict:
    """chi1 and the predicted ratio chi1^((L-1)/2) (Schoenholz et al. 2017) for the rows of
    plain sigmoid networks with an i.i.d. init, in one vmapped call."""
    sigma_w2 = sorted({row["sigma_w2"] for row in rows if row["sigma_w2"] is not None})
    chi1 = jax.vmap(lambda w2: theory.chi1("sigmoid", w2, 0.0))(jnp.asarray(sigma_w2))
    predicted = theory.predicted_gradient_ratio(chi1, DEPTH)
    return {
        "activation": "sigmoid",
        "sigma_b2": 0.0,
        "sigma_w2": sigma_w2,
        "chi1": [float(c) for c in chi1],
        "predicted_ratio": [float(p) for p in predicted],
    }


def _format_number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def markdown_table(rows: list[dict], theory_table: dict) -> str:
    predicted = dict(zip(theory_table["sigma_w2"], theory_table["predicted_ratio"], strict=True))
    lines = [
        "| remedy | what changed | test accuracy | train accuracy | grad norm, layer 1 | "
        f"grad ratio, layer 1 / layer {DEPTH} (mean field) | first non-finite step |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = row["name"] + (" (control)" if row["role"] == "control" else "")
        accuracy = f"{row['test_accuracy_mean']:.3f} ± {row['test_accuracy_std']:.3f}"
        ratio = _format_number(row["grad_ratio_geomean"])
        if row["sigma_w2"] is not None:
            ratio += f" ({predicted[row['sigma_w2']]:.2g})"
        steps = [s for s in row["first_nonfinite_step"] if s >= 0]
        nonfinite = (
            f"{len(steps)}/{len(row['first_nonfinite_step'])} seeds, step {min(steps)}"
            if steps
            else "-"
        )
        first_norm = _format_number(row["first_layer_grad_norm"])
        lines.append(
            f"| {name} | {row['changed']} | {accuracy} | {row['train_accuracy_mean']:.2f} | "
            f"{first_norm} | {ratio} | {nonfinite} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figure

PROFILE_ROWS = (
    "baseline",
    "He on sigmoid",
    "critical init",
    "ReLU + He",
    "ELU alone",
    "tanh + Xavier",
    "batch norm",
    "residual",
    "pre-training",
    f"Adam, N(0, {MODERATE_STD}^2)",
)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    colors = {"baseline": "tab:red", "remedy": "tab:green", "control": "tab:gray"}
    fig = plt.figure(figsize=(17, 15))
    grid = fig.add_gridspec(2, 2, height_ratios=(1.5, 1), hspace=0.25, wspace=0.08)
    ax_acc = fig.add_subplot(grid[0, 0])
    ax_ratio = fig.add_subplot(grid[0, 1], sharey=ax_acc)
    ax_profile = fig.add_subplot(grid[1, 0])
    ax_curve = fig.add_subplot(grid[1, 1])

    y = np.arange(len(rows))[::-1]
    color = [colors[row["role"]] for row in rows]
    ax_acc.barh(
        y,
        [row["test_accuracy_mean"] for row in rows],
        xerr=[row["test_accuracy_std"] for row in rows],
        color=color,
    )
    ax_acc.axvline(0.1, color="k", lw=0.8, ls=":")
    ax_acc.text(0.105, y[0] + 0.7, "chance", fontsize=8)
    ax_acc.set_yticks(y, [f"{row['name']}  [{row['group']}]" for row in rows], fontsize=8)
    ax_acc.set(
        xlim=(0, 1),
        ylim=(-0.7, len(rows) + 0.3),
        xlabel="final test accuracy (mean ± std over seeds)",
    )
    ax_acc.set_title(f"{DEPTH}-layer MLP on digits: each remedy on its own")

    ratio = np.array(
        [np.nan if r["grad_ratio_geomean"] is None else r["grad_ratio_geomean"] for r in rows]
    )
    left = 1e-16  # bars start here; a ratio of exactly 0 (or none) gets no bar
    shown = np.where(ratio > left, ratio, left)
    ax_ratio.barh(y, shown - left, left=left, color=color)
    theory_table = results["mean_field"]
    predicted = dict(zip(theory_table["sigma_w2"], theory_table["predicted_ratio"], strict=True))
    marked = [(p, row) for p, row in zip(y, rows, strict=True) if row["sigma_w2"] is not None]
    ax_ratio.scatter(
        [predicted[row["sigma_w2"]] for _, row in marked],
        [p for p, _ in marked],
        marker="|",
        s=250,
        color="k",
        zorder=3,
        label="mean field: chi1^((L-1)/2)",
    )
    ax_ratio.set_xscale("log")
    ax_ratio.axvline(1, color="k", lw=0.8)
    patches = [plt.Rectangle((0, 0), 1, 1, color=c, label=role) for role, c in colors.items()]
    ax_ratio.legend(
        handles=[*patches, *ax_ratio.get_legend_handles_labels()[0]],
        loc="lower right",
        fontsize=8,
    )
    ax_ratio.set(
        xlim=(left, 1e5),
        xlabel=f"||grad W_1|| / ||grad W_{DEPTH}|| over the first {RATIO_STEPS} steps "
        "(geometric mean over seeds)",
    )
    ax_ratio.set_title("gradient of the first hidden layer relative to the last")
    ax_ratio.tick_params(labelleft=False)

    by_name = {row["name"]: row for row in rows}
    layers = np.arange(1, DEPTH + 1)
    for index, name in enumerate(PROFILE_ROWS):
        row = by_name[name]
        profile = np.array([np.nan if v is None else v for v in row["start_profile"][:DEPTH]])
        ax_profile.semilogy(layers, profile / profile[-1], color=f"C{index}", label=name)
        steps = np.asarray(row["curve_steps"])
        norms = np.array(
            [[np.nan if v is None else v for v in s[:DEPTH]] for s in row["layer_grad_norms"]]
        )
        ax_curve.semilogy(steps, norms[:, 0] / norms[:, -1], color=f"C{index}", label=name)
    ax_profile.set(
        xlabel="hidden layer",
        ylabel="kernel gradient norm / last hidden layer's",
        title="gradient norm by layer at the start of training",
    )
    ax_profile.legend(fontsize=7, ncol=2)
    ax_curve.set(
        xlabel="training step",
        ylabel=f"||grad W_1|| / ||grad W_{DEPTH}||",
        title="first-to-last gradient ratio during training (colours as on the left)",
    )
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, few steps, < 1 minute")
    parser.add_argument("--out", type=Path, default=Path("experiments/out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # Ten programs, each compiled once and run for seconds: compiling dominates. XLA's
    # backend optimization level 1 compiles them about 2x faster than its default and runs
    # them about as fast. XLA reads the flag when JAX first uses the CPU, after this line.
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=1".strip()
    if args.quick:
        seeds, steps, pretrain_steps = [0], 600, 200
    else:
        seeds, steps, pretrain_steps = [0, 1, 2, 3, 4], 2000, 300
    started = time.perf_counter()
    data = datasets.digits()
    names = train.layer_names(nnx.eval_shape(lambda: baseline_model(jax.random.key(0))))
    first, last = names.index("blocks[0].linear"), names.index(f"blocks[{DEPTH - 1}].linear")
    rows = []
    for group in groups():
        history = run_group(group, data, seeds, steps)
        for index, row in enumerate(group.rows):
            history_row = jax.tree.map(lambda a, index=index: a[:, index], history)
            rows.append(summarize(row, group.title, history_row, first, last))
        print(f"{group.title}: {time.perf_counter() - started:.0f} s", flush=True)
    pretrain_rows, histories, block_loss = pretraining(data, seeds, steps, pretrain_steps)
    for row, history in zip(pretrain_rows, histories, strict=True):
        rows.append(summarize(row, "sigmoid, pre-training, SGD", history, first, last))
    theory_table = mean_field(rows)
    results = {
        "quick": args.quick,
        "depth": DEPTH,
        "width": WIDTH,
        "batch_size": BATCH_SIZE,
        "steps": steps,
        "seeds": seeds,
        "sgd_learning_rate": SGD_LR,
        "ratio_steps": RATIO_STEPS,
        "pretrain": {
            "steps_per_layer": pretrain_steps,
            "learning_rate": PRETRAIN_LR,
            "final_loss_per_layer": np.mean(block_loss[:, :, -10:], axis=(0, 2)).tolist(),
            "initial_loss_per_layer": np.mean(block_loss[:, :, :10], axis=(0, 2)).tolist(),
        },
        "mean_field": theory_table,
        "rows": rows,
    }
    table = markdown_table(rows, theory_table)
    results["table"] = table
    results["runtime_s"] = time.perf_counter() - started
    stem = "remedies_quick" if args.quick else "remedies"  # a quick run keeps the full one
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(results) + "\n")
    png_path = args.out / f"{stem}.png"
    plot(results, png_path)
    print(table)
    print(f"wrote {json_path} and {png_path} ({results['runtime_s']:.0f} s)")


if __name__ == "__main__":
    main()
