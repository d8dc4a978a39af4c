"""`rows @ kernel.T` two ways: XLA's own product against `propagation.times_transpose`.

The probe's reverse scan multiplies every layer's dL/dpre (rows x width) by the transposed
kernel. XLA's CPU backend runs that product more slowly than the same product with the
kernel on the left, `(kernel @ rows.T).T`, when there are a few rows; `times_transpose`
takes that route for 2 to 32 rows (and the plain one otherwise). This script measures both
forms side by side, each as a `lax.map` over 10 stacked kernels (so that, as in the scan,
every kernel comes from memory), for row counts 1 to 256 and widths 400 and 1024, and
reports which rule the figures support.

Usage: python benchmarks/transpose_product.py [--quick]
Writes benchmarks/results/transpose_product.json.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from _timing import interleaved, write

LAYERS = 10
ROWS = (1, 2, 4, 16, 32, 64, 256)
WIDTHS = (400, 1024)


def forms(width: int, rows: int) -> dict:
    keys = jax.random.split(jax.random.key(0))
    kernels = jax.random.normal(keys[0], (LAYERS, width, width), jnp.float32)
    deltas = jax.random.normal(keys[1], (LAYERS, rows, width), jnp.float32)

    def plain(kernels, deltas):
        return jax.lax.map(lambda pair: pair[1] @ pair[0].T, (kernels, deltas))

    def kernel_left(kernels, deltas):
        def one(pair):
            kernel, delta = pair
            barrier = jax.lax.optimization_barrier
            return barrier(kernel @ barrier(delta.T)).T

        return jax.lax.map(one, (kernels, deltas))

    plain, kernel_left = jax.jit(plain), jax.jit(kernel_left)
    return {
        "plain": lambda: plain(kernels, deltas),
        "kernel_left": lambda: kernel_left(kernels, deltas),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 5 if args.quick else 11
    results = []
    for width in WIDTHS:
        for rows in ROWS:
            seconds = interleaved(forms(width, rows), rounds=rounds, repeats=5)
            ratio = seconds["plain"] / seconds["kernel_left"]
            results.append({"width": width, "rows": rows, "seconds": seconds, "speedup": ratio})
            print(
                f"width {width:5d} rows {rows:4d}: kernel on the left {ratio:.2f}x the plain form"
            )
    path = write("transpose_product", {"layers": LAYERS, "quick": args.quick, "rows": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
