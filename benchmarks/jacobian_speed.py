"""Jacobian spectrum methods against naive `jax.jacrev` plus `jnp.linalg.svd`.

The map is a deep tanh MLP, `jaxgrad.nn.MLP(width, width, depth=48)` with LeCun-normal
weights (sigma_w^2 = 1, zero biases: tanh's critical point), taken from h_0 to h_l at one
input. For widths 256 and 1024, measured side by side in one run (interleaved rounds,
medians), every method jitted and called on the same input:

- `naive`: `jnp.linalg.svd(jax.jacrev(f)(x), compute_uv=False)`, f the depth-48 map;
- `exact`: `jaxgrad.jacobian.singular_values(f, x, method="exact")`, the whole spectrum (it
  forms J with `jax.jacfwd` for a square map, then the SVD);
- `lanczos`: `singular_values(f, x, method="lanczos", k=10)`, the top 10 from the default
  2 k + 40 = 60 Golub-Kahan-Lanczos steps (one jvp and one vjp each);
- `profile`: `jaxgrad.jacobian.depth_profile(model, x, key, spectra_at=(12, 24, 36, 48))`,
  the exact spectra at 4 depths from one forward scan (plus its 16 Hutchinson probes at
  every depth), against `naive_profile`: naive jacrev + SVD of the map to each of those
  depths, one jitted program per depth.

The agreement of each method with the naive spectrum is recorded too (largest relative
difference of the top 10 values).

Usage: python benchmarks/jacobian_speed.py [--quick]
  --quick: width 256 only, fewer rounds.
Writes benchmarks/results/jacobian_speed.json.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
from _timing import interleaved, write
from flax import nnx

from jaxgrad import jacobian, nn

WIDTHS = (256, 1024)
DEPTH = 48
SPECTRA_AT = (12, 24, 36, 48)
TOP = 10


def mlp_map(x, kernels, biases):
    """h_0 -> h_depth of the MLP's blocks: h = tanh(h W + b), as a scan."""

    def layer(h, params):
        kernel, bias = params
        return jnp.tanh(h @ kernel + bias), None

    return jax.lax.scan(layer, x, (kernels, biases))[0]


@jax.jit
def naive(x, kernels, biases):
    jac = jax.jacrev(mlp_map)(x, kernels, biases)
    return jnp.linalg.svd(jac, compute_uv=False)


@jax.jit
def exact(x, kernels, biases):
    f = lambda x: mlp_map(x, kernels, biases)
    return jacobian.singular_values(f, x, method="exact")


@jax.jit
def lanczos(x, kernels, biases):
    f = lambda x: mlp_map(x, kernels, biases)
    return jacobian.singular_values(f, x, method="lanczos", k=TOP)


def relative_difference(values, reference) -> float:
    values, reference = np.asarray(values)[:TOP], np.asarray(reference)[:TOP]
    return float(np.max(np.abs(values - reference) / np.abs(reference)))


def measure(width: int, rounds: int) -> dict:
    model = nn.MLP(width, width, DEPTH, activation="tanh", rngs=nnx.Rngs(0))
    kernels = model.blocks.linear.kernel[...]
    biases = model.blocks.linear.bias[...]
    x = jax.random.normal(jax.random.key(1), (width,))
    key = jax.random.key(2)
    np.testing.assert_allclose(mlp_map(x, kernels, biases), model(x), rtol=1e-5, atol=1e-6)
    prefixes = [(kernels[:depth], biases[:depth]) for depth in SPECTRA_AT]

    candidates = {
        "naive": functools.partial(naive, x, kernels, biases),
        "exact": functools.partial(exact, x, kernels, biases),
        "lanczos": functools.partial(lanczos, x, kernels, biases),
        "profile": lambda: jacobian.depth_profile(model, x, key, spectra_at=SPECTRA_AT).spectra,
        "naive_profile": lambda: [naive(x, k, b) for k, b in prefixes],
    }
    seconds = interleaved(candidates, rounds=rounds, repeats=1)
    reference = candidates["naive"]()
    profile, naive_profile = candidates["profile"](), candidates["naive_profile"]()
    agreement = {
        "exact": relative_difference(candidates["exact"](), reference),
        "lanczos": relative_difference(candidates["lanczos"](), reference),
        "profile": max(
            relative_difference(spectrum, expected)
            for spectrum, expected in zip(profile, naive_profile, strict=True)
        ),
    }
    speedup = {
        "exact": seconds["naive"] / seconds["exact"],
        "lanczos": seconds["naive"] / seconds["lanczos"],
        "profile": seconds["naive_profile"] / seconds["profile"],
    }
    return {
        "width": width,
        "depth": DEPTH,
        "spectra_at": SPECTRA_AT,
        "seconds": seconds,
        "speedup_vs_naive": speedup,
        "top10_relative_difference": agreement,
        "largest_singular_value": float(reference[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="width 256 only, fewer rounds")
    args = parser.parse_args()
    widths = WIDTHS[:1] if args.quick else WIDTHS
    rows = []
    for width in widths:
        row = measure(width, rounds=3 if args.quick else 5)
        rows.append(row)
        print(f"width {width}, depth {DEPTH}:")
        for name, value in row["seconds"].items():
            print(f"  {name:14s} {1e3 * value:9.1f} ms")
        for name, value in row["speedup_vs_naive"].items():
            against = "naive_profile" if name == "profile" else "naive"
            difference = row["top10_relative_difference"][name]
            print(
                f"  {name} faster than {against}: {value:.2f}x "
                f"(top-{TOP} relative difference {difference:.1e})"
            )
    print(f"wrote {write('jacobian_speed', {'quick': args.quick, 'rows': rows})}")


if __name__ == "__main__":
    main()
