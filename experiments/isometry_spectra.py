"""Dynamical isometry: Jacobian spectra of deep tanh and ReLU networks, theory beside measurement.

Reproduces the central comparison of Pennington, Schoenholz and Ganguli 2017, "Resurrecting
the sigmoid in deep learning through dynamical isometry": width 400, depths 2, 8, 32, 128,

- tanh on the critical line with q* = 1/64 (`theory.critical_point_for_q_star`), with
  orthogonal weights and with Gaussian weights of the same variance;
- ReLU at sigma_w2 = 2 (critical for every sigma_b2), orthogonal and Gaussian.

For each network the exact singular values of the input-output Jacobian d h_L / d h_0 at one
input whose pre-activations sit at q* (`jaxgrad.jacobian.depth_profile`), summarized as the
variance of the squared singular values and the largest singular value, beside the
free-probability prediction of that variance, L (mu_2 / mu_1^2 - 1 - s_1)
(`theory.jacobian_spectrum`). Orthogonal tanh stays near isometry; Gaussian tanh spreads
roughly in proportion to depth; ReLU spreads with either.

Writes `isometry_spectra.json` and `isometry_spectra.png` (histograms and variance against
depth) to --out (default experiments/out).
Usage: python experiments/isometry_spectra.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxgrad import activations, init, jacobian, nn, theory

DEPTHS = (2, 8, 32, 128)


def configurations() -> list[dict]:
    tanh_w2, tanh_b2 = theory.critical_point_for_q_star("tanh", 1 / 64)
    out = []
    for activation, sigma_w2, sigma_b2, q_star in (
        ("tanh", tanh_w2, tanh_b2, 1 / 64),
        ("relu", 2.0, 0.0, 1.0),
    ):
        for weights in ("orthogonal", "gaussian"):
            out.append(
                {
                    "name": f"{activation}, {weights}",
                    "activation": activation,
                    "weights": weights,
                    "sigma_w2": sigma_w2,
                    "sigma_b2": sigma_b2,
                    "q_star": q_star,
                }
            )
    return out


def measure(config: dict, width: int, seed: int) -> dict:
    sigma_w = math.sqrt(config["sigma_w2"])
    if config["weights"] == "orthogonal":
        kernel_init = init.orthogonal(gain=sigma_w)
    else:
        kernel_init = init.normal(sigma_w / math.sqrt(width))
    bias_init = init.normal(math.sqrt(config["sigma_b2"])) if config["sigma_b2"] > 0 else None
    model = nn.MLP(
        width,
        width,
        max(DEPTHS),
        activation=config["activation"],
        kernel_init=kernel_init,
        bias_init=bias_init,
        rngs=nnx.Rngs(params=jax.random.key(seed)),
    )
    # An input whose pre-activations have length q*: h_0 = phi(sqrt(q*) g).
    phi = activations.get(config["activation"])
    gaussian = jax.random.normal(jax.random.key(1000 + seed), (width,))
    x = phi(math.sqrt(config["q_star"]) * gaussian)
    profile = jacobian.depth_profile(model, x, jax.random.key(seed), spectra_at=DEPTHS)
    summary = jax.device_get(jacobian.spectrum_summary(profile.spectra))
    return {
        "spectra": np.asarray(profile.spectra).tolist(),
        "var_sq": np.asarray(summary.var_sq).tolist(),
        "mean_sq": np.asarray(summary.mean_sq).tolist(),
        "max": np.asarray(summary.max).tolist(),
    }


def run(width: int, seeds: int) -> dict:
    results = []
    for config in configurations():
        runs = [measure(config, width, seed) for seed in range(seeds)]
        theory_var = [
            float(
                theory.jacobian_spectrum(
                    config["activation"],
                    config["sigma_w2"],
                    config["sigma_b2"],
                    depth,
                    config["weights"],
                ).var_sq
            )
            for depth in DEPTHS
        ]
        results.append(
            {
                **config,
                "depths": list(DEPTHS),
                "var_sq": np.mean([r["var_sq"] for r in runs], axis=0).tolist(),
                "mean_sq": np.mean([r["mean_sq"] for r in runs], axis=0).tolist(),
                "max_singular_value": np.mean([r["max"] for r in runs], axis=0).tolist(),
                "theory_var_sq": theory_var,
                "spectra_seed0": runs[0]["spectra"],
            }
        )
    return {"width": width, "seeds": seeds, "networks": results}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = results["networks"]
    fig, axes = plt.subplots(1, len(networks) + 1, figsize=(4.2 * (len(networks) + 1), 4))
    bins = np.logspace(-8, 2, 100)
    for ax, network in zip(axes, networks, strict=False):
        for index, (depth, spectrum) in enumerate(
            zip(network["depths"], network["spectra_seed0"], strict=True)
        ):
            values = np.clip(np.asarray(spectrum), 1e-8, 1e2)
            ax.hist(values, bins=bins, histtype="step", color=f"C{index}", label=f"L = {depth}")
        ax.set_xscale("log")
        ax.set(title=network["name"], xlabel="singular value of J", ylabel="count")
        ax.legend(fontsize=7)
    ax = axes[-1]
    for index, network in enumerate(networks):
        ax.loglog(
            network["depths"],
            network["var_sq"],
            "o",
            color=f"C{index}",
            label=f"{network['name']} (measured)",
        )
        theory_var = np.maximum(network["theory_var_sq"], 1e-6)
        ax.loglog(network["depths"], theory_var, "-", color=f"C{index}", lw=1)
    ax.set(
        xlabel="depth L",
        ylabel="variance of squared singular values",
        title="lines: free-probability theory",
    )
    ax.legend(fontsize=7)
    fig.suptitle(f"input-output Jacobian spectra, width {results['width']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, under a minute")
    parser.add_argument("--out", type=Path, default=Path("experiments/out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(width=400, seeds=1 if args.quick else 4)
    json_path = args.out / "isometry_spectra.json"
    json_path.write_text(json.dumps(results) + "\n")
    png_path = args.out / "isometry_spectra.png"
    plot(results, png_path)
    for network in results["networks"]:
        cells = "  ".join(
            f"L={d}: var {v:.3g} (theory {t:.3g}), max {m:.3g}"
            for d, v, t, m in zip(
                network["depths"],
                network["var_sq"],
                network["theory_var_sq"],
                network["max_singular_value"],
                strict=True,
            )
        )
        print(f"{network['name']:<18} {cells}")
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
