"""Compile time of the probe against depth: the scan keeps it flat.

For each depth, a fresh `jaxgrad.nn.MLP` (width 128) is built, its weights are waited for
(they are drawn asynchronously, and at depth 10000 the draw would otherwise share the cores
with the compile), and the probe's program is traced, lowered and compiled through JAX's
ahead-of-time API, with every cache cleared first; the figure reported is the time of that
step alone, and its ratio to depth 10's.

Usage: python benchmarks/compile_time.py [--quick]
Writes benchmarks/results/compile_time.json.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import jax
import jax.numpy as jnp
from _timing import write
from flax import nnx

from jaxgrad import nn
from jaxgrad.propagation import SATURATION_THRESHOLD, _probe_jit, mean_square_loss


def compile_seconds(depth: int, width: int, method: str) -> float:
    model = nn.MLP(width, width, depth, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    x = jnp.ones((16, width))
    # The model's weights are drawn asynchronously: wait for them, or the draw (164 M
    # normals at depth 10000) runs on the same cores during the compile being timed.
    jax.block_until_ready((state, x))
    jax.clear_caches()
    gc.collect()
    start = time.perf_counter()
    _probe_jit.lower(
        graphdef,
        state,
        x,
        None,
        loss_fn=mean_square_loss,
        method=method,
        threshold=SATURATION_THRESHOLD,
    ).compile()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="depths up to 1000, one repeat")
    args = parser.parse_args()
    depths = (10, 100, 1000) if args.quick else (10, 100, 1000, 10000)
    repeats = 1 if args.quick else 3
    rows = []
    for method in ("reverse", "autodiff"):
        base = None
        for depth in depths:
            seconds = statistics.median(compile_seconds(depth, 128, method) for _ in range(repeats))
            base = seconds if base is None else base
            rows.append(
                {
                    "method": method,
                    "depth": depth,
                    "seconds": seconds,
                    "ratio_to_10": seconds / base,
                }
            )
            print(f"{method:8s} depth {depth:>5}: {seconds:.3f} s ({seconds / base:.2f}x depth 10)")
    print(f"wrote {write('compile_time', {'width': 128, 'rows': rows})}")


if __name__ == "__main__":
    main()
