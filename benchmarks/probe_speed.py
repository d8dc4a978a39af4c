"""The seed experiment with per-layer gradient norms: jaxgrad's probe against PyTorch eager.

Times one forward and backward pass that yields each layer's output std and weight-gradient
norm, for a deep tanh MLP, three ways measured side by side in one run:

- `jaxgrad.probe` (the reverse scan that never forms dL/dW),
- `jaxgrad.probe(method="autodiff")` (`jax.grad` through the scan),
- PyTorch eager, written as the seed articles write it: a list of `nn.Linear` layers
  initialized with `nn.init`, a Python loop forward, `loss.backward()`, then
  `layer.weight.grad.norm()` per layer.

These time the pass on a network already built. The seed experiment as a script runs it
also builds the network: the second comparison times the whole of it, building the weights
with the initializer and then the pass, `jaxgrad.propagate` (one jitted call) against the
PyTorch script above run from `torch.manual_seed` on (layer construction, `nn.init`, the
pass), and `propagate` with `redraw=False` (the stack of weights drawn once and stored)
against `propagate` as called (the seed's Xavier-uniform weights redrawn in each scan).

Every sample is taken in a fresh process that imports one library only, the candidates'
processes alternating round by round (`_timing.isolated`): in one process JAX's and
PyTorch's thread pools compete for the cores, and a script uses one library.

PyTorch is a benchmark-only extra: `pip install torch==2.13.0`.

Usage: python benchmarks/probe_speed.py [--quick]
Writes benchmarks/results/probe_speed.json.
"""

from __future__ import annotations

import argparse

import jax
from _timing import isolated, worker, write
from flax import nnx

import jaxgrad
from jaxgrad import init, nn

SHAPES = [(100, 400, 16), (100, 1024, 256)]


def torch_seed(depth: int, width: int, batch: int):
    import torch

    torch.manual_seed(0)
    layers = [torch.nn.Linear(width, width) for _ in range(depth)]
    for layer in layers:
        torch.nn.init.xavier_uniform_(layer.weight, gain=torch.nn.init.calculate_gain("tanh"))
        torch.nn.init.zeros_(layer.bias)
    x = torch.randn(batch, width)

    def run():
        for layer in layers:
            layer.weight.grad = None
            layer.bias.grad = None
        h = x
        stds = []
        for layer in layers:
            h = torch.tanh(layer(h))
            stds.append(h.detach().std())
        loss = 0.5 * h.pow(2).mean()
        loss.backward()
        norms = torch.stack([layer.weight.grad.norm() for layer in layers])
        return torch.stack(stds), norms

    return run


def jax_seed(depth: int, width: int, batch: int, method: str):
    model = nn.MLP(
        width,
        width,
        depth,
        activation="tanh",
        kernel_init=init.xavier_uniform(init.calculate_gain("tanh")),
        rngs=nnx.Rngs(0),
    )
    x = jax.random.normal(jax.random.key(1), (batch, width))
    return lambda: jaxgrad.probe(model, x, method=method).grad_norm


def jax_seed_with_build(depth: int, width: int, batch: int, redraw: bool | None = None):
    kernel_init = init.xavier_uniform(init.calculate_gain("tanh"))
    key = jax.random.key(0)
    return lambda: (
        jaxgrad.propagate(
            key,
            depth=depth,
            width=width,
            batch_size=batch,
            activation="tanh",
            kernel_init=kernel_init,
            redraw=redraw,
        ).grad_norm
    )


CANDIDATES = {
    "jaxgrad_probe": lambda d, w, b: jax_seed(d, w, b, "reverse"),
    "jaxgrad_autodiff": lambda d, w, b: jax_seed(d, w, b, "autodiff"),
    "torch_eager": torch_seed,
    "jaxgrad_propagate": jax_seed_with_build,
    "jaxgrad_propagate_stored": lambda d, w, b: jax_seed_with_build(d, w, b, redraw=False),
    "torch_eager_with_build": lambda d, w, b: lambda: torch_seed(d, w, b)(),
}


def timed(shape: tuple[int, int, int], names: list[str], rounds: int) -> dict[str, float]:
    """Each candidate timed in its own processes (`_timing.isolated`), alternating."""
    depth, width, batch = shape
    repeats = 10 if batch < 100 else 2
    seconds, _ = isolated(
        __file__,
        names,
        rounds=rounds,
        worker_args=("--shape", f"{depth},{width},{batch}", "--repeats", str(repeats)),
    )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--worker", choices=list(CANDIDATES), help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        shape = tuple(int(v) for v in args.shape.split(","))
        worker(CANDIDATES[args.worker](*shape), repeats=args.repeats)
        return
    try:
        import torch

        have_torch = True
    except ImportError:
        have_torch = False
        print("torch is not installed (pip install torch==2.13.0): timing jaxgrad only")
    rows = []
    for depth, width, batch in SHAPES:
        rounds = (2 if args.quick else 3) if batch >= 100 else (3 if args.quick else 7)
        shape = (depth, width, batch)
        names = ["jaxgrad_probe", "jaxgrad_autodiff"] + (["torch_eager"] if have_torch else [])
        seconds = timed(shape, names, rounds)
        row = {"depth": depth, "width": width, "batch": batch, "seconds": seconds}
        times = ", ".join(f"{name} {1e3 * value:.2f} ms" for name, value in seconds.items())
        print(f"depth {depth} width {width} batch {batch}: {times}")
        if have_torch:
            row["speedup_vs_torch"] = {
                name: seconds["torch_eager"] / value
                for name, value in seconds.items()
                if name != "torch_eager"
            }
            ratios = ", ".join(f"{k} {v:.2f}x" for k, v in row["speedup_vs_torch"].items())
            print(f"  faster than torch eager: {ratios}")
            built = timed(
                shape,
                ["jaxgrad_propagate", "jaxgrad_propagate_stored", "torch_eager_with_build"],
                rounds,
            )
            built["torch_eager"] = built.pop("torch_eager_with_build")
            row["with_build"] = {
                "seconds": built,
                "speedup_vs_torch": built["torch_eager"] / built["jaxgrad_propagate"],
                "redrawn_vs_stored": built["jaxgrad_propagate_stored"] / built["jaxgrad_propagate"],
            }
            print(
                "  with the build: "
                + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in built.items())
                + f"; jaxgrad {row['with_build']['speedup_vs_torch']:.2f}x faster"
                + f"; redrawn {row['with_build']['redrawn_vs_stored']:.2f}x faster than stored"
            )
        rows.append(row)
    if have_torch:
        import torch

        torch_info = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    else:
        torch_info = {}
    path = write("probe_speed", {"rows": rows, "quick": args.quick, **torch_info})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
