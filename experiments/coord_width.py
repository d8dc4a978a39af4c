"""With Adam, the standard parametrization's updates blow up with width; under muP every
layer's coordinates stay the same size: Tensor Programs V's coordinate check, for an MLP on
digits and a small transformer on a synthetic sequence task.

Reproduces the coordinate-check claim of Yang et al. 2022, "Tensor Programs V: Tuning Large
Neural Networks via Zero-Shot Hyperparameter Transfer" (figure 5 and appendix D.1): train a
few steps of Adam at each width and record, per layer, the mean |x| of its output and the
mean |x_t - x_0| of its change since initialization (`jaxgrad.scaling.coord_check`), then fit
the slope of log(statistic) against log(width) per layer and step (`scaling.slopes`).

- MLP: digits (64 features, 10 classes, cross-entropy), input layer, 2 hidden blocks of
  `width` relu units, readout; SP: `nnx.Linear` readout and `optax.adam`; muP: zero-
  initialized `scaling.MuReadout` and `scaling.mup_adam` relative to the smallest width
  (`scaling.CoordConfig`, the model `jaxgrad coord` checks).
- Transformer: tokens of a 32-symbol vocabulary, each to be predicted from the one before it
  (a shift task, causal attention), embedding, 2 pre-LayerNorm blocks (attention with 4 heads
  of width / 4 dimensions, projections `nnx.Linear`; relu MLP of width units), readout. muP:
  attention logits q.k sqrt(d_base)/d (`scaling.mup_dot_product_attention`), `MuReadout`,
  `mup_adam`; SP: q.k / sqrt(d), `nnx.Linear`, `optax.adam`.

Claim checked: under SP, the change of the hidden blocks' and the readout's outputs grows
with width (slope near 1: Adam moves every entry of an n x n matrix by about the learning
rate, so its product with an n-vector moves by about n times it); under muP every layer's
slope of mean |x| and of its change, after the first steps, is near 0 ("stable": |slope| <=
0.25). Writes coord_width.json and one figure per model and parametrization to --out.

Measured with `time .venv/bin/python experiments/coord_width.py --quick` (widths 64..512,
2 seeds, 3 steps) on 2 CPU cores shared with other jobs (load average about 10): 963 s wall,
184 s CPU (compilation dominates: the transformer's 2 unrolled blocks). Slope against log
width at step 2, mean |x| / change:

    MLP          SP             muP
    embed        -0.02 / -0.08  -0.01 / -0.00
    block 0      +0.22 / +0.53  -0.00 / -0.02   (its linear layer)
    block 1      +0.60 / +0.85  -0.02 / -0.05   (its linear layer)
    readout      +0.96 / +0.98  +0.01 / +0.01

    transformer  SP             muP
    block0.out   +0.69 / +0.99  -0.09 / -0.11
    block0.proj  +0.71 / +0.98  -0.00 / -0.01
    block1.out   +0.78 / +0.86  -0.04 / -0.01
    readout      +0.58 / +0.53  -0.15 / -0.15

Under muP all 19 recorded calls of the transformer and 6 of the MLP read "stable" (largest
|slope| 0.15); under SP the attention output and MLP projections grow as width^0.86..0.99.

Usage: python experiments/coord_width.py [--quick] [--out DIR]
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

from jaxgrad import init, plot, scaling
from jaxgrad.scaling import config as coord_config

VOCAB, LENGTH, HEADS = 32, 16, 4


class Block(nnx.Module):
    """Pre-LayerNorm transformer block; attention with nnx.Linear projections."""

    def __init__(self, width, base_head_dim, mup, rngs):
        self.norm1 = nnx.LayerNorm(width, rngs=rngs)
        self.query = nnx.Linear(width, width, rngs=rngs)
        self.key = nnx.Linear(width, width, rngs=rngs)
        self.value = nnx.Linear(width, width, rngs=rngs)
        self.out = nnx.Linear(width, width, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, rngs=rngs)
        self.hidden = nnx.Linear(width, width, rngs=rngs)
        self.proj = nnx.Linear(width, width, rngs=rngs)
        self.attention = (
            scaling.mup_dot_product_attention(base_head_dim) if mup else nnx.dot_product_attention
        )

    def __call__(self, h):
        batch, length, width = h.shape
        x = self.norm1(h)

        def heads(t):
            return t.reshape(batch, length, HEADS, width // HEADS)

        mask = nnx.make_causal_mask(jnp.ones((batch, length)))
        attended = self.attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), mask=mask
        )
        h = h + self.out(attended.reshape(batch, length, width))
        return h + self.proj(jax.nn.relu(self.hidden(self.norm2(h))))


class Transformer(nnx.Module):
    def __init__(self, width, base_width, mup, rngs):
        self.embed = nnx.Embed(VOCAB, width, embedding_init=init.normal(1.0), rngs=rngs)
        self.block0 = Block(width, base_width // HEADS, mup, rngs)
        self.block1 = Block(width, base_width // HEADS, mup, rngs)
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        if mup:
            self.readout = scaling.MuReadout(
                width, VOCAB, base_in_features=base_width, zero_init=True, rngs=rngs
            )
        else:
            self.readout = nnx.Linear(width, VOCAB, rngs=rngs)

    def __call__(self, tokens):
        h = self.block1(self.block0(self.embed(tokens)))
        return self.readout(self.norm(h))


def shift_loss(model, tokens):
    """Predict each token from the one before it (cross-entropy over positions 1..)."""
    logits = model(tokens)[:, :-1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def transformer_factory(base_width, mup):
    def make(width, depth, rngs):
        return Transformer(width, base_width, mup, rngs)

    return make


def run_mlp(parametrization, widths, seeds, steps):
    config = scaling.CoordConfig(
        parametrization=parametrization,
        widths=tuple(widths),
        depths=(2,),
        data="digits",
        batch_size=32,
        seeds=seeds,
        steps=steps,
    )
    return coord_config.run(config)


def run_transformer(mup, widths, seeds, steps):
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, VOCAB, (8, LENGTH)).astype(np.int32) for _ in range(steps)]
    make = transformer_factory(widths[0], mup)
    if mup:
        optimizer = scaling.mup_adam(0.01, scaling.base_shapes(make, widths[0]))
    else:
        optimizer = optax.adam(0.01)
    return scaling.coord_check(
        make, optimizer, batches, widths=widths, seeds=seeds, steps=steps, loss_fn=shift_loss
    )


def summarize(table, steps):
    """Per layer, the slopes of mean |x| and change at the last step, and the largest
    |slope| over the steps after the first."""
    out = {}
    last = steps - 1
    for statistic in ("mean_abs", "change"):
        chosen = (table.statistic == statistic) & (table.step >= 1)
        for layer in dict.fromkeys(table.layer[chosen].tolist()):
            rows = chosen & (table.layer == layer)
            slopes = table.slope[rows]
            at_last = table.slope[rows & (table.step == last)]
            words = table.verdict[rows & (table.step == last)]
            out.setdefault(layer, {})[statistic] = {
                "slope_last_step": float(at_last[0]),
                "verdict_last_step": str(words[0]),
                "largest_abs_slope_after_step_0": float(np.nanmax(np.abs(slopes)))
                if np.isfinite(slopes).any()
                else None,
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    parser.add_argument("--out", type=Path, default=Path("experiments/out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        widths, seeds, steps = [64, 128, 256, 512], 2, 3
    else:
        widths, seeds, steps = [64, 128, 256, 512, 1024], 4, 5
    results = {"widths": widths, "seeds": seeds, "steps": steps}
    for model in ("mlp", "transformer"):
        for parametrization in ("sp", "mup"):
            start = time.perf_counter()
            if model == "mlp":
                check = run_mlp(parametrization, widths, seeds, steps)
            else:
                check = run_transformer(parametrization == "mup", widths, seeds, steps)
            table = scaling.slopes(check)
            seconds = time.perf_counter() - start
            name = f"{model}_{parametrization}"
            results[name] = {"seconds": seconds, "layers": summarize(table, steps)}
            plot.coord_check(check, "change", path=args.out / f"coord_width_{name}.png")
            print(f"\n{name} ({seconds:.0f} s): slope against log width at step {steps - 1}")
            for layer, values in results[name]["layers"].items():
                print(
                    f"  {layer:<22} mean|x| {values['mean_abs']['slope_last_step']:+.2f}  "
                    f"change {values['change']['slope_last_step']:+.2f}  "
                    f"({values['change']['verdict_last_step']})"
                )
    (args.out / "coord_width.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out / 'coord_width.json'} and the figures")


if __name__ == "__main__":
    main()
