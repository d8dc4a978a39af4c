"""The seed experiment: how the std of each layer's output evolves through 100 layers.

Networks (a)-(f) of the foundation issue (linear and tanh and relu networks under naive,
1/n, Xavier and Kaiming initializations), 100 fully connected layers of width 400, batch 16,
inputs N(0, 1), built and probed with `jaxgrad.propagate`. Beside the forward view, the
gradient view of the same networks: the ratio of the first layer's weight-gradient norm to
the last layer's (random-projection loss, so that a collapsed output still sends an error
signal back).

Writes `seed_std_propagation.json` (every layer's std, gradient norms, the first non-finite
layer, the verdict) and `seed_std_propagation.png` (std against layer, log scale).

Usage: python experiments/seed_std_propagation.py [--out DIR] [--depth N] [--width N]

References: Glorot and Bengio 2010; He et al. 2015.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

import jaxgrad
from jaxgrad import init


def run(depth: int, width: int, batch_size: int, seed: int) -> dict:
    stats = jaxgrad.seed_experiment(
        jax.random.key(seed), depth=depth, width=width, batch_size=batch_size
    )
    results = {}
    for config in jaxgrad.seed_configs(width):
        layer_stats = jax.device_get(stats[config.label])
        verdict = jaxgrad.diagnose(layer_stats)
        act_std = np.asarray(layer_stats.act_std, np.float64)
        results[config.label] = {
            "description": config.description,
            "act_std": [float(v) for v in act_std],
            "grad_norm": [float(v) for v in np.asarray(layer_stats.grad_norm)],
            "act_grad_norm": [float(v) for v in np.asarray(layer_stats.act_grad_norm)],
            "first_nonfinite_layer": int(layer_stats.first_nonfinite_layer),
            "grad_ratio_first_to_last": verdict.ratio,
            "verdict": verdict.verdict,
        }
    return {
        "depth": depth,
        "width": width,
        "batch_size": batch_size,
        "seed": seed,
        "tanh_gain_measured": float(init.empirical_gain("tanh", jax.random.key(seed))),
        "tanh_gain_pytorch": init.calculate_gain("tanh"),
        "networks": results,
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_std, ax_grad, ax_delta) = plt.subplots(1, 3, figsize=(16, 4.5))
    layers = np.arange(1, results["depth"] + 1)
    for index, (label, network) in enumerate(results["networks"].items()):
        style = {"color": f"C{index}", "label": f"({label}) {network['description']}"}
        std = np.asarray(network["act_std"])
        finite = np.isfinite(std) & (std > 0)
        ax_std.semilogy(layers[finite], std[finite], **style)
        for axis, key in ((ax_grad, "grad_norm"), (ax_delta, "act_grad_norm")):
            values = np.asarray(network[key])
            finite = np.isfinite(values) & (values > 0)
            if finite.any():  # (a) has no finite gradient at all
                axis.semilogy(layers[finite], values[finite] / values[finite][-1], **style)
    ax_std.set(xlabel="layer", ylabel="std of layer output", title="forward: activation std")
    ax_grad.set(
        xlabel="layer",
        ylabel="relative to the last layer",
        title="backward: weight-gradient norm ||dL/dW_l||",
    )
    ax_delta.set(
        xlabel="layer",
        ylabel="relative to the last layer",
        title="backward: output-gradient norm ||dL/dh_l||",
    )
    ax_std.legend(fontsize=7)
    fig.suptitle(
        f"{results['depth']} layers of width {results['width']}, batch {results['batch_size']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/out"))
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the same (it takes seconds)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(args.depth, args.width, args.batch_size, args.seed)
    json_path = args.out / "seed_std_propagation.json"
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    png_path = args.out / "seed_std_propagation.png"
    plot(results, png_path)
    for label, network in results["networks"].items():
        print(
            f"({label}) {network['description']:<32} std@last {network['act_std'][-1]:<10.3g} "
            f"non-finite from {network['first_nonfinite_layer']:>3}  "
            f"grad first/last {network['grad_ratio_first_to_last']:.3g}  {network['verdict']}"
        )
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
