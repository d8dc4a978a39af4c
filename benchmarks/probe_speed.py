"""The seed experiment with per-layer gradient norms: jaxgrad's probe against PyTorch eager.

Times one forward and backward pass that yields each layer's output std and weight-gradient
norm, for a deep tanh MLP, in four ways measured side by side in one run:

- `jaxgrad.probe` (the reverse scan that never forms dL/dW),
- `jaxgrad.probe(method="autodiff")` (`jax.grad` through the scan),
- PyTorch eager, written as the seed articles write it: a list of `nn.Linear` layers
  initialized with `nn.init`, a Python loop forward, `loss.backward()`, then
  `layer.weight.grad.norm()` per layer.

PyTorch is a benchmark-only extra: `pip install torch==2.13.0`.

Usage: python benchmarks/probe_speed.py [--quick]
Writes benchmarks/results/probe_speed.json.
"""

from __future__ import annotations

import argparse

import jax
from _timing import interleaved, write
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    try:
        import torch

        have_torch = True
    except ImportError:
        have_torch = False
        print("torch is not installed (pip install torch==2.13.0): timing jaxgrad only")
    rows = []
    for depth, width, batch in SHAPES:
        candidates = {
            "jaxgrad_probe": jax_seed(depth, width, batch, "reverse"),
            "jaxgrad_autodiff": jax_seed(depth, width, batch, "autodiff"),
        }
        if have_torch:
            candidates["torch_eager"] = torch_seed(depth, width, batch)
        seconds = interleaved(candidates, rounds=rounds, repeats=5)
        row = {"depth": depth, "width": width, "batch": batch, "seconds": seconds}
        if have_torch:
            row["speedup_vs_torch"] = {
                name: seconds["torch_eager"] / value
                for name, value in seconds.items()
                if name != "torch_eager"
            }
        rows.append(row)
        times = ", ".join(f"{name} {1e3 * value:.2f} ms" for name, value in seconds.items())
        print(f"depth {depth} width {width} batch {batch}: {times}")
        if have_torch:
            ratios = ", ".join(f"{k} {v:.2f}x" for k, v in row["speedup_vs_torch"].items())
            print(f"  faster than torch eager: {ratios}")
    if have_torch:
        import torch

        torch_info = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    else:
        torch_info = {}
    path = write("probe_speed", {"rows": rows, **torch_info})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
