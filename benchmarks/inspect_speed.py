"""`jaxgrad.inspect` against a plain jitted `nnx.value_and_grad` of the same model and batch.

What a user pays for the per-layer view: both candidates run the same loss and its gradient
with respect to every parameter; `inspect` also records every call's input and output
moments, dead and saturated fractions, dL/d(output) and attention statistics. Timed side by
side in one process, interleaved rounds, medians (`_timing.interleaved`):

- a CNN: 8 convolutions of 32 channels with ReLU applied as a function, 16 x 16 images,
  batch 64, a linear head;
- a transformer: 4 pre-LN blocks with `nnx.MultiHeadAttention` (4 heads) stacked with
  `nnx.vmap` and applied with `nnx.scan`, 32 tokens, batch 64, at width 64 and at width 256
  (the statistics are passes over the activations, which grow with the width, where the
  products grow with its square).

`inspect` is timed as a user calls it (split of the model, the cached compiled program, the
report); the plain step returns the loss and the gradients.

Both run with glibc's malloc thresholds raised (`_timing.keep_large_allocations`): XLA's
CPU runtime mallocs each call's temporaries, and inspect's are larger.

Usage: python benchmarks/inspect_speed.py [--quick]
Writes benchmarks/results/inspect_speed.json.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from _models import CNN, Transformer, cross_entropy
from _timing import interleaved, keep_large_allocations, write
from flax import nnx

import jaxgrad


def cases(batch_size: int) -> dict[str, tuple[nnx.Module, tuple]]:
    key = jax.random.key(0)
    images = jax.random.normal(key, (batch_size, 16, 16, 3))
    labels = jax.random.randint(key, (batch_size,), 0, 10)
    tokens = jax.random.randint(key, (batch_size, 32), 0, 256)
    return {
        "cnn": (CNN(8, 32, nnx.Rngs(0)), (images, labels)),
        "transformer": (Transformer(256, 64, 4, 4, nnx.Rngs(0)), (tokens, jnp.roll(tokens, 1))),
        "transformer_256": (
            Transformer(256, 256, 4, 4, nnx.Rngs(0)),
            (tokens, jnp.roll(tokens, 1)),
        ),
    }


def candidates(model: nnx.Module, batch) -> dict:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def value_and_grad(params, rest, batch):
        def loss(params):
            return cross_entropy(nnx.merge(graphdef, params, rest), batch)

        return jax.value_and_grad(loss)(params)

    return {
        "value_and_grad": lambda: value_and_grad(params, rest, batch),
        "inspect": lambda: jaxgrad.inspect(model, cross_entropy, batch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds, repeats = (3, 3) if args.quick else (7, 10)
    malloc = keep_large_allocations()  # inspect's larger temporaries would be mapped per call
    results = {}
    for name, (model, batch) in cases(64).items():
        times = interleaved(candidates(model, batch), rounds=rounds, repeats=repeats)
        ratio = times["inspect"] / times["value_and_grad"]
        results[name] = {"seconds": times, "ratio": ratio}
        print(
            f"{name}: value_and_grad {times['value_and_grad'] * 1e3:.2f} ms, "
            f"inspect {times['inspect'] * 1e3:.2f} ms, ratio {ratio:.3f}"
        )
    payload = {"batch_size": 64, "quick": args.quick, "malloc": malloc, "results": results}
    path = write("inspect_speed", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
