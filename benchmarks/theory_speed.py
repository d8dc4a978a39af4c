"""Mean-field theory speed: a 256 x 256 tanh phase diagram and a sweep's theory columns,
jaxgrad against a numpy/scipy reference implementation of the same quantities, timed in the
same run (on a shared machine: medians, and ratios of side-by-side runs).

(a) Phase diagram: `theory.phase_diagram("tanh", linspace(1, 4, 256), linspace(0, 0.3, 256))`
in float64 (q*, c*, chi1, xi_q, xi_c at 65536 points, exact to float64 rounding), the median
of several calls after a first one that compiles (its time is reported apart). The
reference computes the same five quantities the classical way, point by point with numpy and
scipy: q* by `scipy.optimize.brentq` on the length map, c* by brentq on the correlation map
below 1, chi1, chi_q and chi_c, with two kinds of expectations: Gauss-Hermite quadrature
(200 nodes in one dimension, a 200 x 200 tensor rule in two, vectorized with numpy; fast,
about 1e-6 accurate here) on every 64th point of the grid (1024 points), and scipy's
adaptive quadrature (QUADPACK, nested in two dimensions, 1e-11 requested) on 12 points.
Their times per point are scaled to the grid; the largest differences to jaxgrad on those
points are reported (c* absolute, the others relative).

(b) A sweep's theory columns: `sweep.run` of the tanh map of issue 17 (sigma_w2 32 values
in [0.5, 4], sigma_b2 32 values in [0, 0.3], 4 seeds, depth 200, width 128, batch 16), with
`theory=True` and with `theory=False`, in alternating rounds (the theory cache emptied
before each), in the default float32; the overhead is their ratio, and (less noisy) the
time of the theory columns alone (`sweep.theory_of_point` at every point, the cache
emptied) over the sweep's. Beside them, the same four columns (q_star, chi1, xi_q, xi_c)
for the 1024 points by the numpy/scipy Gauss-Hermite reference.

Usage: python benchmarks/theory_speed.py [--quick]
  --quick: a 64 x 64 grid, a 16 x 16 x 2-seed sweep of depth 50, fewer rounds.
Writes benchmarks/results/theory_speed.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from _timing import write
from scipy import integrate, optimize

from jaxgrad import sweep, theory

GH_NODES = 200

# ----------------------------------------------------------------------------- reference

_z, _w = np.polynomial.hermite_e.hermegauss(GH_NODES)
_w = _w / _w.sum()


def hermite_expect(fn, q):
    return float(np.dot(_w, fn(math.sqrt(q) * _z)))


def hermite_expect_pair(fn, q, c):
    root = math.sqrt(q)
    u1 = root * _z[:, None]
    u2 = root * (c * _z[:, None] + math.sqrt(max(1 - c * c, 0.0)) * _z[None, :])
    return float(_w @ (fn(u1) * fn(u2)) @ _w)


def _density(z):
    return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def adaptive_expect(fn, q):
    """scipy's adaptive quadrature (QUADPACK), split at 0, to 1e-12 relative."""
    root = math.sqrt(q)
    return sum(
        integrate.quad(lambda z: float(fn(root * z)) * _density(z), a, b, epsabs=1e-300,
                       epsrel=1e-12, limit=400)[0]
        for a, b in ((-12.0, 0.0), (0.0, 12.0))
    )  # fmt: skip


def adaptive_expect_pair(fn, q, c):
    """Nested adaptive quadrature: the inner integral over z2 for each z1, to 1e-11."""
    root, s = math.sqrt(q), math.sqrt(max(1 - c * c, 0.0))

    def inner(z1):
        value, _ = integrate.quad(
            lambda z2: float(fn(root * (c * z1 + s * z2))) * _density(z2), -12, 12,
            epsabs=1e-300, epsrel=1e-11, limit=400,
        )  # fmt: skip
        return float(fn(root * z1)) * value * _density(z1)

    return sum(integrate.quad(inner, a, b, epsabs=1e-300, epsrel=1e-11, limit=400)[0]
               for a, b in ((-12.0, 0.0), (0.0, 12.0)))  # fmt: skip


def _sech2(u):
    return 1 - np.tanh(u) ** 2


def reference_point(sigma_w2, sigma_b2, expect=hermite_expect, expect_pair=hermite_expect_pair):
    """(q*, c*, chi1, xi_q, xi_c) of tanh with numpy/scipy: brentq for the fixed points,
    `expect` and `expect_pair` for the expectations."""

    def q_map(q):
        return sigma_w2 * expect(lambda u: np.tanh(u) ** 2, q) + sigma_b2

    if sigma_b2 == 0 and sigma_w2 <= 1:
        q = 0.0
    else:
        low = 1e-12 if sigma_b2 == 0 else sigma_b2
        q = optimize.brentq(lambda q: q_map(q) - q, low, sigma_w2 + sigma_b2 + 1, xtol=1e-15)
    q_eval = max(q, 1e-12)
    chi1 = sigma_w2 * expect(lambda u: _sech2(u) ** 2, q_eval)
    chi_q = sigma_w2 * expect(lambda u: np.tanh(u) * _sech2(u) * u, q_eval) / q_eval
    c, chi_c = 1.0, chi1
    if chi1 > 1:
        mapped = q_map(q_eval)

        def excess(c):
            return (sigma_w2 * expect_pair(np.tanh, q_eval, c) + sigma_b2) / mapped - c

        top = 1 - 1e-7
        if excess(top) < 0:
            c = optimize.brentq(excess, 0.0, top, xtol=1e-15) if excess(0.0) > 0 else 0.0
            chi_c = sigma_w2 * expect_pair(_sech2, q_eval, c)

    def scale(chi):
        return -1 / math.log(chi) if chi < 1 else math.inf

    return q, c, chi1, scale(chi_q), scale(chi_c)


def reference(sigma_w2: np.ndarray, sigma_b2: np.ndarray, **rules) -> np.ndarray:
    pairs = zip(sigma_w2, sigma_b2, strict=True)
    return np.array([reference_point(float(w), float(b), **rules) for w, b in pairs])


FIELDS = ("q_star", "c_star", "chi1", "xi_q", "xi_c")


def differences(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """The largest difference per field: absolute for c* (in [0, 1]), relative otherwise."""
    result = {}
    for i, field in enumerate(FIELDS):
        a, b = ours[:, i], theirs[:, i]
        both = np.isfinite(a) & np.isfinite(b)
        gap = np.abs(a - b)
        if field != "c_star":
            gap = gap / np.maximum(np.abs(b), 1e-300)
        result[field] = float(np.max(gap[both], initial=0.0))
    return result


# ----------------------------------------------------------------------------- (a)


def phase_diagram_timing(size: int, rounds: int, adaptive_points: int) -> dict:
    with jax.enable_x64(True):
        sigma_w2 = jnp.linspace(1.0, 4.0, size)
        sigma_b2 = jnp.linspace(0.0, 0.3, size)
        start = time.perf_counter()
        grid = jax.block_until_ready(theory.phase_diagram("tanh", sigma_w2, sigma_b2))
        first = time.perf_counter() - start
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            jax.block_until_ready(theory.phase_diagram("tanh", sigma_w2, sigma_b2))
            samples.append(time.perf_counter() - start)
    seconds = statistics.median(samples)
    ours = np.stack([np.asarray(getattr(grid, f)).reshape(-1) for f in FIELDS], axis=1)
    w2_all = np.asarray(grid.sigma_w2).reshape(-1)
    b2_all = np.asarray(grid.sigma_b2).reshape(-1)
    every = max(size * size // 1024, 1)
    index = np.arange(0, size * size, every)
    start = time.perf_counter()
    hermite = reference(w2_all[index], b2_all[index])
    hermite_seconds = (time.perf_counter() - start) / len(index) * size * size
    # The accurate reference is slow: a few chaotic and ordered points, spread over the grid.
    few = np.linspace(0, size * size - 1, adaptive_points).astype(int)
    start = time.perf_counter()
    adaptive = reference(
        w2_all[few], b2_all[few], expect=adaptive_expect, expect_pair=adaptive_expect_pair
    )
    adaptive_seconds = (time.perf_counter() - start) / len(few) * size * size
    return {
        "grid": [size, size],
        "sigma_w2": [1.0, 4.0],
        "sigma_b2": [0.0, 0.3],
        "chaotic_fraction": float(np.mean(np.asarray(grid.chi1) > 1)),
        "seconds": {
            "jaxgrad": seconds,
            "reference_gauss_hermite_200": hermite_seconds,
            "reference_adaptive_quad": adaptive_seconds,
        },
        "jaxgrad_samples": samples,
        "jaxgrad_first_call_with_compile": first,
        "reference_points_timed": {"gauss_hermite_200": len(index), "adaptive_quad": len(few)},
        "speedup": {
            "vs_gauss_hermite_200": hermite_seconds / seconds,
            "vs_adaptive_quad": adaptive_seconds / seconds,
        },
        "max_difference_to_reference": {
            "gauss_hermite_200": differences(ours[index], hermite),
            "adaptive_quad": differences(ours[few], adaptive),
        },
    }


# ----------------------------------------------------------------------------- (b)


def sweep_timing(points: int, seeds: int, depth: int, width: int, rounds: int) -> dict:
    grid = sweep.Sweep(
        depth=depth,
        width=width,
        activation="tanh",
        sigma_w2=tuple(np.linspace(0.5, 4.0, points).tolist()),
        sigma_b2=tuple(np.linspace(0.0, 0.3, points).tolist()),
        seed=tuple(range(seeds)),
        batch_size=16,
    )
    plain = dataclasses.replace(grid, theory=False)

    def timed(config):
        sweep.theory_of_point.cache_clear()
        start = time.perf_counter()
        sweep.run(config, progress=False)
        return time.perf_counter() - start

    timed(grid)  # compile both programs
    timed(plain)
    with_theory, without = [], []
    for _ in range(rounds):
        with_theory.append(timed(grid))
        without.append(timed(plain))
    ratios = [a / b for a, b in zip(with_theory, without, strict=True)]
    pairs = grid.points()
    # The theory columns alone (what theory=True adds), less noisy than the difference of
    # two 10-second runs on a shared machine.
    alone = []
    for _ in range(rounds):
        sweep.theory_of_point.cache_clear()
        start = time.perf_counter()
        for point in pairs:
            sweep.theory_of_point("tanh", *point)
        alone.append(time.perf_counter() - start)
    start = time.perf_counter()
    reference(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
    reference_seconds = time.perf_counter() - start
    return {
        "sweep": {"points": points * points, "seeds": seeds, "depth": depth, "width": width},
        "seconds": {
            "with_theory": statistics.median(with_theory),
            "without_theory": statistics.median(without),
            "theory_columns_alone": statistics.median(alone),
            "reference_theory_columns_numpy_scipy": reference_seconds,
        },
        "with_theory_samples": with_theory,
        "without_theory_samples": without,
        "overhead": statistics.median(ratios) - 1,
        "overhead_of_the_theory_alone": statistics.median(alone) / statistics.median(without),
    }


def main() -> None:
    # QUADPACK warns where the nested reference reaches its rounding floor (the figures
    # record how close it came); the run stays quiet.
    warnings.simplefilter("ignore", integrate.IntegrationWarning)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        diagram = phase_diagram_timing(64, rounds=2, adaptive_points=4)
        overhead = sweep_timing(16, seeds=2, depth=50, width=64, rounds=2)
    else:
        diagram = phase_diagram_timing(256, rounds=5, adaptive_points=12)
        overhead = sweep_timing(32, seeds=4, depth=200, width=128, rounds=3)
    path = write(
        "theory_speed",
        {"quick": args.quick, "phase_diagram": diagram, "sweep_theory_columns": overhead},
    )
    d, o = diagram["seconds"], overhead["seconds"]
    print(
        f"phase diagram {diagram['grid']}: jaxgrad {d['jaxgrad']:.1f} s; numpy/scipy "
        f"Gauss-Hermite {d['reference_gauss_hermite_200']:.0f} s, adaptive quad "
        f"{d['reference_adaptive_quad']:.0f} s"
    )
    print(
        f"sweep: {o['with_theory']:.1f} s with theory, {o['without_theory']:.1f} s without "
        f"({100 * overhead['overhead']:+.1f}%); the theory columns alone "
        f"{o['theory_columns_alone']:.2f} s ({100 * overhead['overhead_of_the_theory_alone']:.1f}%)"
        f", by numpy/scipy {o['reference_theory_columns_numpy_scipy']:.1f} s"
    )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
