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
import jaxgrad.plot
from jaxgrad import init


def run(depth: int, width: int, batch_size: int, seed: int) -> tuple[dict, dict]:
    stats = jaxgrad.seed_experiment(
        jax.random.key(seed), depth=depth, width=width, batch_size=batch_size
    )
    stats = {label: jax.device_get(value) for label, value in stats.items()}
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
    return stats, {
        "depth": depth,
        "width": width,
        "batch_size": batch_size,
        "seed": seed,
        "tanh_gain_measured": float(init.empirical_gain("tanh", jax.random.key(seed))),
        "tanh_gain_pytorch": init.calculate_gain("tanh"),
        "networks": results,
    }


def plot(stats: dict, results: dict, path: Path) -> None:
    curves = {
        f"({label}) {network['description']}": stats[label]
        for label, network in results["networks"].items()
    }
    jaxgrad.plot.layer_profiles(
        curves,
        path,
        fields=("act_std", "grad_norm", "act_grad_norm"),
        relative_to_last=("grad_norm", "act_grad_norm"),
    )


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
    stats, results = run(args.depth, args.width, args.batch_size, args.seed)
    json_path = args.out / "seed_std_propagation.json"
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    png_path = args.out / "seed_std_propagation.png"
    plot(stats, results, png_path)
    for label, network in results["networks"].items():
        print(
            f"({label}) {network['description']:<32} std@last {network['act_std'][-1]:<10.3g} "
            f"non-finite from {network['first_nonfinite_layer']:>3}  "
            f"grad first/last {network['grad_ratio_first_to_last']:.3g}  {network['verdict']}"
        )
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
