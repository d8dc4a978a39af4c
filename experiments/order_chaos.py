"""Order and chaos in deep tanh networks: the phase diagram, and gradients that follow chi1.

Reproduces two views of Schoenholz et al. 2017, "Deep Information Propagation":

1. The phase diagram of tanh over (sigma_w2, sigma_b2): the correlation depth scale xi_c as a
   heatmap (log colour), with the critical line chi1 = 1 (`jaxgrad.theory.critical_sigma_w2`)
   on top. xi_c diverges on the line and is short deep in either phase.
2. At several sigma_w2 (sigma_b2 = 0.05), wide random tanh networks built and probed with
   `jaxgrad.propagate` (random-projection loss): the measured ratio of the first layer's
   output-gradient norm to the last layer's, against the mean-field prediction
   chi1^((L - 1) / 2), averaged over seeds in one vmapped call.

Writes `order_chaos.json` and `order_chaos.png` to --out (default experiments/out).
Usage: python experiments/order_chaos.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxgrad
from jaxgrad import init, theory

SIGMA_B2 = 0.05


def phase_diagram(num_w2: int, num_b2: int) -> dict:
    sigma_w2 = jnp.linspace(1.0, 4.0, num_w2)
    sigma_b2 = jnp.linspace(0.0, 0.3, num_b2)
    grid = jax.device_get(theory.phase_diagram("tanh", sigma_w2, sigma_b2))
    critical = jax.device_get(theory.critical_sigma_w2("tanh", sigma_b2))
    return {
        "sigma_w2": np.asarray(sigma_w2).tolist(),
        "sigma_b2": np.asarray(sigma_b2).tolist(),
        "xi_c": np.asarray(grid.xi_c).tolist(),
        "chi1": np.asarray(grid.chi1).tolist(),
        "q_star": np.asarray(grid.q_star).tolist(),
        "critical_sigma_w2": np.asarray(critical).tolist(),
    }


def gradient_ratios(sigma_w2_values, depth: int, width: int, seeds: int) -> list[dict]:
    rows = []
    for sigma_w2 in sigma_w2_values:

        def run(key, sigma_w2=sigma_w2):
            return jaxgrad.propagate(
                key,
                depth=depth,
                width=width,
                batch_size=16,
                activation="tanh",
                kernel_init=init.normal(math.sqrt(sigma_w2 / width)),
                bias_init=init.normal(math.sqrt(SIGMA_B2)),
                loss_fn=jaxgrad.random_projection_loss(jax.random.key(99)),
            )

        stats = jax.vmap(run)(jax.random.split(jax.random.key(0), seeds))
        grad = np.asarray(stats.act_grad_norm, np.float64)  # (seeds, depth)
        # Mean-field theory predicts the mean squared gradient: average squares over seeds.
        mean_square = np.mean(grad**2, axis=0)
        chi1 = float(theory.chi1("tanh", sigma_w2, SIGMA_B2))
        rows.append(
            {
                "sigma_w2": sigma_w2,
                "phase": theory.phase("tanh", sigma_w2, SIGMA_B2),
                "chi1": chi1,
                "measured_ratio": math.sqrt(mean_square[0] / mean_square[-1]),
                "predicted_ratio": float(theory.predicted_gradient_ratio(chi1, depth)),
                "profile": np.sqrt(mean_square / mean_square[-1]).tolist(),
            }
        )
    return rows


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    diagram = results["phase_diagram"]
    fig, (ax_phase, ax_ratio, ax_profile) = plt.subplots(1, 3, figsize=(17, 4.8))
    w2, b2 = np.asarray(diagram["sigma_w2"]), np.asarray(diagram["sigma_b2"])
    xi_c = np.clip(np.asarray(diagram["xi_c"]).T, 0.1, 1e3)
    mesh = ax_phase.pcolormesh(w2, b2, xi_c, norm=LogNorm(vmin=0.5, vmax=1e3), shading="auto")
    fig.colorbar(mesh, ax=ax_phase, label="xi_c (correlation depth scale)")
    ax_phase.plot(diagram["critical_sigma_w2"], b2, "w--", lw=2, label="critical line chi1 = 1")
    ax_phase.set(xlabel="sigma_w^2", ylabel="sigma_b^2", title="tanh: ordered | chaotic")
    ax_phase.set_xlim(w2.min(), w2.max())
    ax_phase.legend(loc="upper left", fontsize=8)
    rows = results["gradients"]
    depth = results["depth"]
    measured = [row["measured_ratio"] for row in rows]
    predicted = [row["predicted_ratio"] for row in rows]
    sigmas = [row["sigma_w2"] for row in rows]
    ax_ratio.semilogy(sigmas, predicted, "k-", label="theory chi1^((L-1)/2)")
    ax_ratio.semilogy(sigmas, measured, "o", label=f"measured, width {results['width']}")
    ax_ratio.axhline(1, color="grey", lw=0.5)
    ax_ratio.set(
        xlabel="sigma_w^2",
        ylabel="||dL/dh_1|| / ||dL/dh_L||",
        title=f"gradient ratio across {depth} layers (sigma_b^2 = {SIGMA_B2})",
    )
    ax_ratio.legend(fontsize=8)
    layers = np.arange(1, depth + 1)
    for index, row in enumerate(rows):
        ax_profile.semilogy(
            layers, row["profile"], color=f"C{index}", label=f"sigma_w^2 = {row['sigma_w2']:.2f}"
        )
        ax_profile.semilogy(
            layers, row["chi1"] ** ((depth - layers) / 2), color=f"C{index}", ls=":", lw=1
        )
    ax_profile.set(
        xlabel="layer",
        ylabel="relative to the last layer",
        title="gradient norm by layer (dotted: theory)",
    )
    ax_profile.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid, under a minute")
    parser.add_argument("--out", type=Path, default=Path("experiments/out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        grid, depth, width, seeds = (16, 8), 30, 256, 4
    else:
        grid, depth, width, seeds = (61, 31), 60, 1024, 8
    critical = float(theory.critical_sigma_w2("tanh", SIGMA_B2))
    sigma_w2_values = [1.0, 1.3, round(critical, 4), 2.2, 3.0, 4.0]
    results = {
        "depth": depth,
        "width": width,
        "seeds": seeds,
        "sigma_b2": SIGMA_B2,
        "critical_sigma_w2": critical,
        "phase_diagram": phase_diagram(*grid),
        "gradients": gradient_ratios(sigma_w2_values, depth, width, seeds),
    }
    json_path = args.out / "order_chaos.json"
    json_path.write_text(json.dumps(results) + "\n")
    png_path = args.out / "order_chaos.png"
    plot(results, png_path)
    print(f"tanh, sigma_b2 = {SIGMA_B2}: critical sigma_w2 = {critical:.4f}")
    for row in results["gradients"]:
        print(
            f"sigma_w2 {row['sigma_w2']:<7.4g} {row['phase']:<9} chi1 {row['chi1']:.4f}  "
            f"gradient ratio over {depth} layers: measured {row['measured_ratio']:.4g}, "
            f"predicted {row['predicted_ratio']:.4g}"
        )
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
