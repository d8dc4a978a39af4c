"""Sweep throughput: jaxgrad's sweep engine against PyTorch eager, and vmap against a loop.

(a) A 64-configuration sweep at the seed's shape (depth 100, width 400, batch 16, tanh,
16 sigma_w values x 4 seeds, sigma_b = 0), three ways measured side by side in one run,
each sample in a fresh process that imports one library only, the candidates' processes
alternating round by round (`_timing.isolated`; in one process JAX's and PyTorch's thread
pools compete for the cores):

- `engine`: the compute of `jaxgrad.sweep.run`: for each seed, the group's jitted chunk
  program (`sweep._chunk_program`) on all 16 sigma_w2 points at once (the seed's unit
  weights are drawn once and sqrt(sigma_w2) is applied to the pre-activation), blocked on;
- `sweep.run`: `jaxgrad.sweep.run(sweep, progress=False)` end to end: the same programs plus
  the tidy DataFrame (6400 rows) and the mean-field theory columns, no files;
- `torch_eager`: an idiomatic PyTorch loop over the 64 configurations: for each, 100
  `nn.Linear(400, 400)` built and initialized with `nn.init.normal_(std=sigma_w / 20)` and
  zero biases, a Python forward loop with tanh that collects each layer's std, the random-
  projection loss, `loss.backward()` and `layer.weight.grad.norm()` per layer. The time it
  spends building and initializing the layers is recorded separately.

(b) Points per second of the vmapped chunk program against Python loops over the same
points, at the seed's shape (one seed's 16 sigma_w2 points) and at width 1024, batch 256
(4 points, so the run fits a few minutes):

- `vmapped`: one call of the chunk program on all the points;
- `loop_vmap1`: a loop calling the same jitted chunk program with one point (vmap size 1),
  so each call also draws the seed's unit weights again, as a sweep with chunk size 1 would;
- `loop_shared_weights`: the unit weights drawn once (jitted), then a loop calling one jitted
  single-point probe (`sweep.probe_point`) on them: vmap against a loop with the weight draw
  taken out of the comparison.

PyTorch is a benchmark-only extra: `pip install torch==2.13.0`.

Usage: python benchmarks/sweep_speed.py [--quick]
  --quick: 16 configurations (one seed) in (a), 2 points at width 1024 in (b), fewer rounds.
Writes benchmarks/results/sweep_speed.json.
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from _timing import interleaved, isolated, worker, write

from jaxgrad import propagation, sweep

SEED_SHAPE = {"depth": 100, "width": 400, "batch": 16}
WIDE_SHAPE = {"depth": 100, "width": 1024, "batch": 256}
SIGMA_W = np.linspace(0.5, 2.0, 16)


def group_of(width: int) -> sweep.Group:
    return sweep.Group("tanh", "gaussian", width, None, False)


def engine(depth: int, width: int, batch: int, sigma_w2: np.ndarray, seeds: tuple[int, ...]):
    """The compute of `sweep.run`: one chunk program call per seed on all the points."""
    group = group_of(width)
    program = sweep._chunk_program(group, (depth,), batch, 1)
    draw = sweep._weights_program(group, depth)  # a seed's unit weights, drawn once per seed
    keys = [jax.random.key(seed) for seed in seeds]
    w2 = jnp.asarray(sigma_w2, jnp.float32)
    b2 = jnp.zeros_like(w2)
    return lambda: [program(key, *draw(key), w2, b2) for key in keys]


def sweep_run(depth: int, width: int, batch: int, sigma_w2: np.ndarray, seeds: tuple[int, ...]):
    config = sweep.Sweep(
        depth=depth,
        width=width,
        activation="tanh",
        sigma_w2=tuple(float(v) for v in sigma_w2),
        sigma_b2=0.0,
        seed=seeds,
        batch_size=batch,
    )
    return lambda: sweep.run(config, progress=False)


def torch_sweep(depth: int, width: int, batch: int, sigma_w: np.ndarray, seeds: tuple[int, ...]):
    """The idiomatic PyTorch eager loop over every (seed, sigma_w), and a record of the
    seconds each call spent in total and building and initializing layers."""
    import torch

    record = {"total": 0.0, "build": 0.0}

    def one(seed: int, sigma: float):
        start = time.perf_counter()
        torch.manual_seed(seed)
        layers = [torch.nn.Linear(width, width) for _ in range(depth)]
        for layer in layers:
            torch.nn.init.normal_(layer.weight, std=sigma / math.sqrt(width))
            torch.nn.init.zeros_(layer.bias)
        record["build"] += time.perf_counter() - start
        x = torch.randn(batch, width)
        projection = torch.randn(batch, width)
        h = x
        stds = []
        for layer in layers:
            h = torch.tanh(layer(h))
            stds.append(h.detach().std())
        loss = (h * projection).sum() / math.sqrt(h.numel())
        loss.backward()
        norms = torch.stack([layer.weight.grad.norm() for layer in layers])
        return torch.stack(stds), norms

    def run():
        start = time.perf_counter()
        results = [one(seed, float(sigma)) for seed in seeds for sigma in sigma_w]
        record["total"] += time.perf_counter() - start
        return results

    return run, record


def throughput_candidates(depth: int, width: int, batch: int, sigma_w2: np.ndarray):
    """Vmapped chunk program, a loop over the same program at vmap size 1, and a loop over a
    jitted single-point probe on weights drawn once; all for seed 0."""
    group = group_of(width)
    key = jax.random.key(0)
    w2 = jnp.asarray(sigma_w2, jnp.float32)
    b2 = jnp.zeros_like(w2)
    vmapped = sweep._chunk_program(group, (depth,), batch, 1)
    singles = [(w2[i : i + 1], b2[i : i + 1]) for i in range(w2.shape[0])]
    scalars = [(w2[i], b2[i]) for i in range(w2.shape[0])]

    @jax.jit
    def draw(key):
        # as the chunk program does: the same keys, weights, inputs and loss
        weight_key, input_key, loss_key = jax.random.split(key, 3)
        kernels, biases = sweep._unit_weights(group, depth, weight_key, jnp.float32)
        x = jax.random.normal(input_key, (batch, width), jnp.float32)
        return kernels, biases, x, loss_key

    @jax.jit
    def point(sigma_w2, sigma_b2, kernels, biases, x, loss_key):
        loss_fn = propagation.random_projection_loss(loss_key)
        return sweep.probe_point(group, (depth,), sigma_w2, sigma_b2, kernels, biases, x, loss_fn)

    def shared():
        weights = draw(key)
        return [point(a, b, *weights) for a, b in scalars]

    unit_weights = sweep._weights_program(group, depth)
    return {
        "vmapped": lambda: vmapped(key, *unit_weights(key), w2, b2),
        "loop_vmap1": lambda: [vmapped(key, *unit_weights(key), a, b) for a, b in singles],
        "loop_shared_weights": shared,
    }


def max_relative_difference(candidates: dict) -> float:
    """Largest relative difference of the weight-gradient norms of the loops against the
    vmapped program, over the points in the ordered and critical phase (sigma_w <= 1), where
    float32 rounding is not amplified with depth."""
    reference = np.asarray(candidates["vmapped"]().grad_norm)
    worst = 0.0
    for name in ("loop_vmap1", "loop_shared_weights"):
        values = np.stack(
            [np.asarray(s.grad_norm).reshape(reference.shape[1:]) for s in candidates[name]()]
        )
        keep = SIGMA_W[: values.shape[0]] <= 1.0
        diff = np.abs(values - reference) / np.maximum(np.abs(reference), 1e-30)
        worst = max(worst, float(diff[keep].max()))
    return worst


def seed_sweep_worker(name: str, seeds: tuple[int, ...]) -> None:
    """Time one candidate of (a) in this process (see `_timing.isolated`)."""
    depth, width, batch = SEED_SHAPE.values()
    if name == "torch_eager":
        run, record = torch_sweep(depth, width, batch, SIGMA_W, seeds)
        worker(run, repeats=1, fields=lambda: {"build_fraction": record["build"] / record["total"]})
        return
    make = {"engine": engine, "sweep_run": sweep_run}[name]
    worker(make(depth, width, batch, SIGMA_W**2, seeds), repeats=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer configurations and rounds")
    parser.add_argument(
        "--worker", choices=["engine", "sweep_run", "torch_eager"], help=argparse.SUPPRESS
    )
    parser.add_argument("--seeds", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        seed_sweep_worker(args.worker, tuple(int(v) for v in args.seeds.split(",")))
        return
    try:
        import torch

        have_torch = True
    except ImportError:
        have_torch = False
        print("torch is not installed (pip install torch==2.13.0): timing jaxgrad only")

    # (a) the 64-configuration sigma_w x seed sweep
    depth, width, batch = SEED_SHAPE.values()
    seeds = (0,) if args.quick else (0, 1, 2, 3)
    names = ["engine", "sweep_run"] + (["torch_eager"] if have_torch else [])
    seconds, extra = isolated(
        __file__,
        names,
        rounds=2 if args.quick else 4,
        worker_args=("--seeds", ",".join(map(str, seeds))),
    )
    configurations = len(seeds) * len(SIGMA_W)
    seed_sweep = {**SEED_SHAPE, "configurations": configurations, "seconds": seconds}
    print(f"(a) {configurations}-configuration sweep, depth {depth} width {width} batch {batch}")
    for name, value in seconds.items():
        print(f"  {name:20s} {value:8.3f} s  ({configurations / value:7.1f} configurations/s)")
    if have_torch:
        seed_sweep["torch_build_fraction"] = extra["torch_eager"]["build_fraction"]
        seed_sweep["speedup_vs_torch"] = {
            name: seconds["torch_eager"] / value
            for name, value in seconds.items()
            if name != "torch_eager"
        }
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in seed_sweep["speedup_vs_torch"].items())
        print(f"  faster than torch eager: {ratios} (target >= 5x)")
        print(
            "  torch spends "
            f"{100 * seed_sweep['torch_build_fraction']:.0f}% of its time building layers"
        )

    # (b) vmapped chunk against loops over the same points
    shapes = [
        (SEED_SHAPE, SIGMA_W**2, 3 if args.quick else 5),
        (
            WIDE_SHAPE,
            SIGMA_W[[0, 5]] ** 2 if args.quick else SIGMA_W[[0, 5, 10, 15]] ** 2,
            1 if args.quick else 3,
        ),
    ]
    throughput = []
    for shape, points, rounds in shapes:
        depth, width, batch = shape.values()
        candidates = throughput_candidates(depth, width, batch, points)
        seconds = interleaved(candidates, rounds=rounds, repeats=1)
        rate = {name: len(points) / value for name, value in seconds.items()}
        row = {
            **shape,
            "points": len(points),
            "seconds": seconds,
            "points_per_second": rate,
            "vmapped_over": {
                name: rate["vmapped"] / value for name, value in rate.items() if name != "vmapped"
            },
        }
        throughput.append(row)
        print(f"(b) {len(points)} points, depth {depth} width {width} batch {batch}")
        for name, value in rate.items():
            print(f"  {name:20s} {value:8.2f} points/s  ({seconds[name]:.3f} s)")
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in row["vmapped_over"].items())
        print(f"  vmapped faster than: {ratios}")
        if width == SEED_SHAPE["width"]:
            row["max_relative_difference"] = max_relative_difference(candidates)
            print(
                "  loops against vmapped, largest relative difference of the gradient norms "
                f"(sigma_w <= 1): {row['max_relative_difference']:.1e}"
            )

    extra = (
        {"torch": torch.__version__, "torch_threads": torch.get_num_threads()} if have_torch else {}
    )
    path = write(
        "sweep_speed",
        {"quick": args.quick, "seed_sweep": seed_sweep, "throughput": throughput, **extra},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
