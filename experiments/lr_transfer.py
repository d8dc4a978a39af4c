"""The best Adam learning rate of an MLP on digits drifts with width under the standard
parametrization and stays put under muP.

Reproduces the learning-rate-transfer claim of Yang et al. 2022, "Tensor Programs V: Tuning
Large Neural Networks via Zero-Shot Hyperparameter Transfer" (figure 1): train the same
MLP (input layer, 2 hidden blocks of `width` relu units, readout; `scaling.CoordConfig`'s
model) on scikit-learn's digits with Adam at a grid of learning rates, at each width, and
compare the training loss at the end against the learning rate.

- "sp": `nnx.Linear` readout, `optax.adam(lr)`.
- "mup": zero-initialized `scaling.MuReadout` and `scaling.mup_adam(lr, base)` relative to
  width 64 (so at width 64 the two are the same network and optimizer but for the
  readout's initialization).

Every learning rate and seed of a width is one vmapped program (`jax.vmap` over the
learning rate, a traced hyperparameter of the Optax chain, and over seeds), the steps one
`jax.lax.scan`. Claim checked: the best learning rate (the grid point of lowest final
training loss, averaged over seeds) moves to smaller values as the width grows under SP, and
moves by at most one grid step (a factor 2) under muP. Writes lr_transfer.json and the
curves of loss against learning rate per width to --out.

Measured with `time .venv/bin/python experiments/lr_transfer.py --quick` (widths 64, 256,
1024; 2 seeds; 150 steps of batches of 128; learning rates 2^-14 .. 2^-4) on 2 CPU cores
shared with other jobs (load average about 10): 469 s wall, 139 s CPU. Best log2 learning
rate (lowest mean training loss after 150 steps):

    width      64    256   1024
    sp         -8     -9    -12     (moves by 4 octaves: a factor 16)
    mup        -7     -7     -7     (does not move)

The full mode (widths 64..1024, 3 seeds, 400 steps, 2^-16 .. 2^-3) was not run for lack of
time on the shared machine.

Usage: python experiments/lr_transfer.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxgrad import data, scaling
from jaxgrad.scaling import config as coord_config

BATCH = 128


def train_losses(parametrization, width, log2_rates, seeds, steps, x, y):
    """Final training loss (seeds, rates) after `steps` Adam steps on minibatches."""
    make = coord_config.model_factory(64, 10, parametrization, 64, 2, "relu", False)
    base = scaling.base_shapes(lambda w, d, rngs: make(w, 2, rngs), 64)  # muP in width, at depth 2
    graphdef = nnx.split(nnx.eval_shape(lambda: make(width, 2, nnx.Rngs(0))), nnx.Param, ...)[0]
    indices = np.random.default_rng(0).integers(0, len(x), (steps, BATCH))

    def loss_of(state, rest, xb, yb):
        model = nnx.merge(graphdef, state, rest)
        return optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

    def one(seed, log2_rate):
        rate = 2.0**log2_rate
        _, state, rest = nnx.split(make(width, 2, nnx.Rngs(jax.random.key(seed))), nnx.Param, ...)
        sp = parametrization == "sp"
        optimizer = optax.adam(rate) if sp else scaling.mup_adam(rate, base)

        def step(carry, index):
            state, opt_state = carry
            grads = jax.grad(loss_of)(state, rest, x[index], y[index])
            updates, opt_state = optimizer.update(grads, opt_state, state)
            return (optax.apply_updates(state, updates), opt_state), None

        (state, _), _ = jax.lax.scan(step, (state, optimizer.init(state)), indices)
        return loss_of(state, rest, x, y)

    program = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None)))
    return np.asarray(program(jnp.arange(seeds), jnp.asarray(log2_rates, jnp.float32)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--out", type=Path, default=Path("experiments/out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        widths, seeds, steps = [64, 256, 1024], 2, 150
        log2_rates = np.arange(-14.0, -3.0, 1.0)
    else:
        widths, seeds, steps = [64, 128, 256, 512, 1024], 3, 400
        log2_rates = np.arange(-16.0, -2.0, 1.0)
    digits = data.digits()
    x, y = jnp.asarray(digits.x_train), jnp.asarray(digits.y_train)
    results = {"widths": widths, "seeds": seeds, "steps": steps, "log2_rates": log2_rates.tolist()}
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharey=True)
    for ax, parametrization in zip(axes, ("sp", "mup"), strict=True):
        best = {}
        curves = {}
        for width in widths:
            start = time.perf_counter()
            losses = train_losses(parametrization, width, log2_rates, seeds, steps, x, y)
            mean = np.nanmean(np.where(np.isfinite(losses), losses, np.nan), axis=0)
            finite = np.isfinite(mean)
            best[width] = float(log2_rates[np.nanargmin(np.where(finite, mean, np.inf))])
            curves[width] = mean.tolist()
            print(
                f"{parametrization} width {width}: best log2 lr {best[width]:+.0f}, loss "
                f"{np.nanmin(mean):.4f} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            ax.plot(log2_rates[finite], mean[finite], "o-", ms=3, label=f"width {width}")
        ax.set_yscale("log")
        ax.set_xlabel("log2 learning rate")
        ax.set_title(parametrization)
        ax.legend(fontsize=7)
        results[parametrization] = {"best_log2_rate": best, "final_train_loss": curves}
        shift = best[widths[-1]] - best[widths[0]]
        results[parametrization]["shift_of_best_log2_rate"] = shift
        print(
            f"{parametrization}: best log2 lr from width {widths[0]} to {widths[-1]}: {shift:+.0f}"
        )
    axes[0].set_ylabel(f"training loss after {steps} steps")
    figure.savefig(args.out / "lr_transfer.png", dpi=120)
    (args.out / "lr_transfer.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out / 'lr_transfer.json'} and lr_transfer.png")


if __name__ == "__main__":
    main()
