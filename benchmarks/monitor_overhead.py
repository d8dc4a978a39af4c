"""What recording a training run costs: a plain jitted train step against the same step with
`jaxgrad.recording.Recorder`, recording every step and every 16 steps.

The step is the standard Flax NNX one: `nnx.value_and_grad` of the loss, then
`nnx.Optimizer.update` with Adam. The recorded step replaces the first by
`recorder.value_and_grad` and adds `recorder.update`. Each timed call runs 16 consecutive
calls of the jitted step from Python, as a training loop does (so every-16 recording is timed
over its whole period), in Flax's functional form (`nnx.split` once, `jax.jit` of a pure
step with the state donated: `nnx.jit` re-flattens its arguments' graphs on every call,
several milliseconds for a recorder's, which the functional form pays once), side by side
in one process,
interleaved rounds, medians (`_timing.interleaved`). Models:

- (a) mlp: jaxgrad's `nn.MLP`, 20 hidden layers of width 256 (stacked, applied with
  `jax.lax.scan`), ReLU, batch 128;
- (b) resnet: a ResNet-style CNN: a stem convolution, 3 residual blocks of two 3x3
  convolutions of 32 channels with batch norm, 16 x 16 images, batch 64;
- (c) transformer: 4 pre-LN blocks with `nnx.MultiHeadAttention` (4 heads, width 128)
  stacked with `nnx.vmap` and applied with `nnx.scan`, sequence 64, batch 16.

Goals (issue 16): every step at most 1.10x the plain step, every 16 steps at most 1.02x.

Usage: python benchmarks/monitor_overhead.py [--quick]
Writes benchmarks/results/monitor_overhead.json.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from _models import ResNet, Transformer, cross_entropy
from _timing import interleaved, write
from flax import nnx

from jaxgrad import nn, recording

STEPS_PER_CALL = 16


def cases() -> dict:
    key = jax.random.key(0)
    vectors = jax.random.normal(key, (128, 256))
    images = jax.random.normal(key, (64, 16, 16, 3))
    tokens = jax.random.randint(key, (16, 64), 0, 256)
    labels = jax.random.randint(jax.random.fold_in(key, 1), (128,), 0, 10)
    return {
        "mlp": (
            lambda: nn.MLP(256, 256, 20, 10, activation="relu", rngs=nnx.Rngs(0)),
            (vectors, labels),
        ),
        "resnet": (lambda: ResNet(nnx.Rngs(0)), (images, labels[:64])),
        "transformer": (
            lambda: Transformer(256, 128, 4, 4, nnx.Rngs(0), final_norm=True),
            (tokens, jnp.roll(tokens, 1)),
        ),
    }


def _loop(graphdef, state, step):
    """16 calls of a jitted step on the split state, from Python (Flax's functional form:
    `nnx.split` once, `jax.jit` of a pure function, so that the host's dispatch costs the
    same for every candidate and is not what is timed)."""
    jitted = jax.jit(step, donate_argnums=0)
    holder = [state]

    def run():
        for _ in range(STEPS_PER_CALL):
            holder[0], loss = jitted(holder[0])
        return loss

    return run


def plain_run(make_model, batch):
    model = make_model()
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))

    def step(state):
        model, optimizer = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(cross_entropy)(model, batch)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    return _loop(graphdef, state, step)


def recorded_run(make_model, batch, every: int):
    model = make_model()
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    recorder = recording.Recorder(model, cross_entropy, batch, every=every, capacity=64)
    graphdef, state = nnx.split((model, optimizer, recorder))

    def step(state):
        model, optimizer, recorder = nnx.merge(graphdef, state)
        loss, grads = recorder.value_and_grad(model, batch)
        recorder.update(model, optimizer, optimizer.update(model, grads))
        return nnx.state((model, optimizer, recorder)), loss

    return _loop(graphdef, state, step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds, repeats = (3, 2) if args.quick else (7, 4)
    results = {}
    for name, (make_model, batch) in cases().items():
        candidates = {
            "plain": plain_run(make_model, batch),
            "every_step": recorded_run(make_model, batch, 1),
            "every_16": recorded_run(make_model, batch, 16),
        }
        times = interleaved(candidates, rounds=rounds, repeats=repeats)
        step = {k: v / STEPS_PER_CALL for k, v in times.items()}
        ratios = {k: step[k] / step["plain"] for k in ("every_step", "every_16")}
        results[name] = {"seconds_per_step": step, "ratio": ratios}
        print(
            f"{name}: plain {step['plain'] * 1e3:.2f} ms/step, every step "
            f"{ratios['every_step']:.3f}x, every 16 steps {ratios['every_16']:.3f}x"
        )
    path = write(
        "monitor_overhead",
        {"steps_per_call": STEPS_PER_CALL, "quick": args.quick, "results": results},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
