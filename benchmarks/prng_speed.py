"""Weight draws: JAX's threefry against jaxgrad's fused threefry (`jaxgrad.prng`), same numbers.

Side by side in one run, each jitted and checked bit for bit equal before timing:

- stacked kernels as a model draws them (one key per layer, vmapped): normal and uniform,
  100 x 400 x 400 (the seed experiment's weights) and 20 x 1024 x 1024;
- building a `jaxgrad.nn.MLP` (depth 100, width 400, Xavier uniform) with jaxgrad's
  initializers drawing through the fused threefry, against the same build with the
  initializers handed JAX's own threefry key (the pre-`prng` behaviour).

Usage: python benchmarks/prng_speed.py [--quick]
Writes benchmarks/results/prng_speed.json.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from _timing import interleaved, write
from flax import nnx

from jaxgrad import init, nn, prng

CASES = [(100, 400), (20, 1024)]
SAMPLERS = {"normal": jax.random.normal, "uniform": jax.random.uniform}


def stacked_draw(sampler, depth: int, width: int, fused: bool):
    def layer(key):
        return sampler(prng.fast_key(key) if fused else key, (width, width))

    return jax.jit(jax.vmap(layer))


def model_build(fused: bool):
    """A jitted MLP build returning its kernels; traced here, with fast_key replaced by the
    identity for the unfused build."""

    def build(key):
        model = nn.MLP(
            400,
            400,
            100,
            activation="tanh",
            kernel_init=init.xavier_uniform(init.calculate_gain("tanh")),
            rngs=nnx.Rngs(key),
        )
        return model.blocks.linear.kernel[...]

    jitted = jax.jit(build)
    key = jax.random.key(0)
    if fused:
        jax.block_until_ready(jitted(key))
        return lambda: jitted(key)
    original = prng.fast_key
    prng.fast_key = lambda k: k
    try:
        jax.block_until_ready(jitted(key))  # traced without the fused draw
    finally:
        prng.fast_key = original
    return lambda: jitted(key)


def row(what: str, numbers: int, seconds: dict[str, float]) -> dict:
    print(what, {k: f"{1e3 * v:.1f} ms" for k, v in seconds.items()})
    speedup = seconds["threefry"] / seconds["fused"]
    return {"what": what, "numbers": numbers, "seconds": seconds, "speedup": speedup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    rows = []
    for depth, width in CASES:
        keys = jax.random.split(jax.random.key(1), depth)
        for name, sampler in SAMPLERS.items():
            plain = stacked_draw(sampler, depth, width, fused=False)
            fused = stacked_draw(sampler, depth, width, fused=True)
            np.testing.assert_array_equal(plain(keys), fused(keys))
            seconds = interleaved(
                {"threefry": lambda p=plain, k=keys: p(k), "fused": lambda f=fused, k=keys: f(k)},
                rounds=rounds,
                repeats=2,
            )
            rows.append(row(f"{name}, {depth} x {width} x {width}", depth * width**2, seconds))
    plain, fused = model_build(False), model_build(True)
    np.testing.assert_array_equal(plain(), fused())
    seconds = interleaved({"threefry": plain, "fused": fused}, rounds=rounds, repeats=2)
    rows.append(row("nn.MLP build, depth 100, width 400, Xavier uniform", 100 * 400**2, seconds))
    path = write("prng_speed", {"rows": rows, "quick": args.quick})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
