"""Achieved GFLOP/s of the sweep engine (forward plus backward) against the matmul peak.

For widths 256, 512, 1024 and 2048 at batch 256 and depth 20 (tanh, gaussian weights),
three things are timed side by side in one run (interleaved rounds, medians):

- `peak`: a jitted float32 `jnp.dot` of two 4096 x 4096 matrices, 2 * 4096^3 FLOPs: the
  machine's measured matmul peak;
- `engine`: the group's jitted chunk program (`jaxgrad.sweep._chunk_program`) on 4 sigma_w2
  points of one seed, as `sweep.run` calls it: it draws the seed's unit weights
  (depth x width^2 normals), the inputs and the loss, then probes the 4 points (vmapped);
- `engine_16`: the same program on 16 sigma_w2 points, the chunk `sweep.run` makes of a
  16-value sigma_w2 axis at these shapes under its default memory budget (the script checks
  `sweep.chunk_size`): the weight draw is shared by 4 times as many points;
- `engine_compute`: the same vmapped probe (`sweep.probe_point`) on weights drawn outside
  the timed call, i.e. the engine without its weight draw;
- `products`: a floor for this shape, not the engine: the two matrix products alone, a
  `lax.scan` of h = tanh(h @ W0) over the layers with the 4 points stacked as 1024 rows,
  then a reverse scan of d = (d * (1 - h^2)) @ W0^T; its FLOPs are the forward and backward
  products of the count below. It shows how much of the gap to peak is the shape of the
  products (1024 x W times W x W, and the slower transposed product on XLA's CPU backend)
  rather than the engine's bookkeeping.

FLOPs counted, per point and per layer (B = batch, W = width); multiply-adds count 2:

- forward product h @ W0: 2 B W^2;
- backward transposed product dpre @ W0^T: 2 B W^2 (the reverse scan computes it at every
  layer, the first included);
- the weight-gradient norm ||h^T dpre||_F: when B < W, through the Gram matrices
  (||h^T d||^2 = sum((h h^T) * (d d^T))): 2 B^2 W + 2 B^2 W + 2 B^2; when B >= W (width
  256 here), by forming h^T dpre: 2 B W^2 + 2 W^2.

Not counted: elementwise work (the sqrt(sigma) scalings, tanh and its derivative, the
biases, the per-layer means, stds, saturation and finiteness statistics, the bias and
activation gradient norms), the loss, and the random weight draw, which costs no FLOPs in
this count but is part of `engine`'s time. GFLOP/s = counted FLOPs / median seconds.

Usage: python benchmarks/gflops.py [--quick]
  --quick: widths 256 and 512, fewer rounds.
Writes benchmarks/results/gflops.json.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
from _timing import interleaved, write

from jaxgrad import propagation, sweep

WIDTHS = (256, 512, 1024, 2048)
BATCH = 256
DEPTH = 20
POINTS = 4
MANY_POINTS = 16
PEAK_SIZE = 4096
SIGMA_W2 = (0.5, 1.0, 1.5, 2.0)


def probe_flops(depth: int, width: int, batch: int, points: int) -> dict[str, int]:
    """The FLOP count documented in the module docstring, by part."""
    layers = points * depth
    if batch < width:
        weight_grad_norm = 4 * batch * batch * width + 2 * batch * batch
    else:
        weight_grad_norm = 2 * batch * width * width + 2 * width * width
    parts = {
        "forward": layers * 2 * batch * width * width,
        "backward_transposed": layers * 2 * batch * width * width,
        "weight_grad_norm": layers * weight_grad_norm,
    }
    return {**parts, "total": sum(parts.values())}


def candidates_for(width: int) -> dict[str, tuple]:
    """name -> (function, the FLOPs it counts)."""
    group = sweep.Group("tanh", "gaussian", width, None, False)
    heads = (DEPTH,)
    key = jax.random.key(0)
    w2 = jnp.asarray(SIGMA_W2, jnp.float32)
    b2 = jnp.zeros_like(w2)
    many_w2 = jnp.linspace(0.5, 2.0, MANY_POINTS, dtype=jnp.float32)
    grid = sweep.Sweep(
        depth=DEPTH, width=width, sigma_w2=tuple(map(float, many_w2)), batch_size=BATCH
    )
    chosen = sweep.chunk_size(grid, group, MANY_POINTS, 1)
    if chosen != MANY_POINTS:
        raise RuntimeError(f"sweep.run would chunk {MANY_POINTS} points as {chosen} here")
    program = sweep._chunk_program(group, heads, BATCH, 1)

    @jax.jit
    def draw(key):
        weight_key, input_key, loss_key = jax.random.split(key, 3)
        kernels, biases = sweep._unit_weights(group, DEPTH, weight_key, jnp.float32)
        x = jax.random.normal(input_key, (BATCH, width), jnp.float32)
        return kernels, biases, x, loss_key

    @jax.jit
    def compute(sigma_w2, sigma_b2, kernels, biases, x, loss_key):
        loss_fn = propagation.random_projection_loss(loss_key)
        point = functools.partial(
            sweep.probe_point, group, heads, kernels=kernels, biases=biases, x=x, loss_fn=loss_fn
        )
        return jax.vmap(lambda a, b: point(a, b))(sigma_w2, sigma_b2)

    @jax.jit
    def products(kernels, h, d):
        def forward(h, kernel):
            h = jnp.tanh(h @ kernel)
            return h, h

        def backward(d, layer):
            kernel, h = layer
            return (d * (1 - h * h)) @ kernel.T, None

        h, outputs = jax.lax.scan(forward, h, kernels)
        d, _ = jax.lax.scan(backward, d, (kernels, outputs), reverse=True)
        return h, d

    weights = jax.block_until_ready(draw(key))
    rows = jax.random.normal(jax.random.key(2), (2, POINTS * BATCH, width), jnp.float32)
    flops = probe_flops(DEPTH, width, BATCH, POINTS)
    many = probe_flops(DEPTH, width, BATCH, MANY_POINTS)["total"]
    unit_weights = sweep._weights_program(group, DEPTH)  # as sweep.run: drawn, then the chunk
    return {
        "engine": (lambda: program(key, *unit_weights(key), w2, b2), flops["total"]),
        "engine_16": (
            lambda: program(key, *unit_weights(key), many_w2, jnp.zeros_like(many_w2)),
            many,
        ),
        "engine_compute": (functools.partial(compute, w2, b2, *weights), flops["total"]),
        "products": (
            functools.partial(products, weights[0], rows[0], rows[1]),
            flops["forward"] + flops["backward_transposed"],
        ),
    }


def calls(fn, count: int):
    """`fn` called `count` times back to back (so that short programs are timed over about
    as long as the peak's product)."""
    return lambda: [fn() for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="widths 256 and 512, fewer rounds")
    args = parser.parse_args()
    widths = WIDTHS[:2] if args.quick else WIDTHS
    rounds = 3 if args.quick else 5

    keys = jax.random.split(jax.random.key(1))
    a = jax.random.normal(keys[0], (PEAK_SIZE, PEAK_SIZE), jnp.float32)
    b = jax.random.normal(keys[1], (PEAK_SIZE, PEAK_SIZE), jnp.float32)
    dot = jax.jit(jnp.dot)
    peak = functools.partial(dot, a, b)
    peak_flops = 2 * PEAK_SIZE**3

    rows = []
    print(f"depth {DEPTH}, batch {BATCH}, {POINTS} points per chunk; peak: {PEAK_SIZE}^2 jnp.dot")
    names = ("engine", "engine_16", "engine_compute", "products")
    print("width | GFLOP/s (fraction of peak): " + " | ".join(("peak", *names)))
    for width in widths:
        flops = probe_flops(DEPTH, width, BATCH, POINTS)
        counted, counts, candidates = {"peak": peak_flops}, {"peak": 1}, {"peak": peak}
        for name, (fn, name_flops) in candidates_for(width).items():
            counted[name] = name_flops
            counts[name] = max(1, round(peak_flops / name_flops / 2))
            candidates[name] = calls(fn, counts[name])
        seconds = interleaved(candidates, rounds=rounds, repeats=1)
        seconds = {name: value / counts[name] for name, value in seconds.items()}
        gflops = {name: counted[name] / seconds[name] / 1e9 for name in candidates}
        fraction = {name: gflops[name] / gflops["peak"] for name in names}
        rows.append(
            {
                "width": width,
                "batch": BATCH,
                "depth": DEPTH,
                "points": POINTS,
                "many_points": MANY_POINTS,
                "flops": flops,
                "seconds": seconds,
                "gflops": gflops,
                "fraction_of_peak": fraction,
            }
        )
        cells = [f"{gflops[name]:6.1f} ({100 * fraction[name]:3.0f}%)" for name in names]
        print(f"{width:5d} | {gflops['peak']:6.1f} | " + " | ".join(cells))
    target = {
        name: all(row["fraction_of_peak"][name] >= 0.7 for row in rows if row["width"] >= 512)
        for name in ("engine", "engine_16", "engine_compute")
    }
    for name, met in target.items():
        print(f"target {name} >= 70% of peak at width >= 512: {'met' if met else 'not met'}")
    path = write(
        "gflops",
        {
            "quick": args.quick,
            "peak_size": PEAK_SIZE,
            "sigma_w2": SIGMA_W2,
            "rows": rows,
            "target_met": target,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
