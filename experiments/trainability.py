"""Which deep tanh networks train: the band around criticality bounded by depth = 6 xi_c.

Reproduces the trainability experiment of Schoenholz et al. 2017, "Deep Information
Propagation" (section 5, there on MNIST and CIFAR-10), on scikit-learn's digits. Claim: a
random network carries information about its input only over a depth of order the
correlation depth scale xi_c (`jaxgrad.theory.depth_scales`), so a network of depth L
trains only where L < ~6 xi_c(sigma_w2). xi_c diverges at the critical sigma_w2 (chi1 = 1,
about 1.76 for tanh at sigma_b2 = 0.05), so the trainable sigma_w2 form a band around it
that narrows as L grows: wide for shallow networks, a sliver at depth 100 and beyond.

Setup. tanh MLPs from `jaxgrad.nn.MLP`, every hidden layer of the same width; hidden
weights N(0, sigma_w2 / width), built with `init.lecun_normal()` (variance 1 / fan_in) and
scaled by sqrt(sigma_w2) inside `model_fn` (sigma_w2 arrives traced: one compiled program
per depth trains every sigma_w2 x seed, vmapped by `jaxgrad.train.train_many`); hidden
biases N(0, sigma_b2 = 0.05). The input is the 64 standardized pixels (each of unit variance
over the training set, so q_0 is about 1). With width 64 (--quick) there is no input
projection: the first tanh layer reads the pixels. With width 128 (full) a linear
64 -> 128 projection (LeCun init, not scaled by sigma_w2, bias N(0, sigma_b2)) comes
first; it only sets the length of the signal entering the tanh stack. The readout
width -> 10 is LeCun-initialized with a zero bias in both modes; it is the classifier, not
part of the mean-field stack.
Training: Adam at learning rate 6.4e-3 / width (1e-4 at width 64, 5e-5 at 128), the same
for every cell of the grid, as the paper keeps its rate fixed. In exploratory runs twice
that rate left depth-100 networks at criticality at 0.2-0.3 test accuracy instead of 0.8,
and SGD (learning rates 1e-3 to 1e-1, with or without momentum) kept a width-64,
depth-100 network at criticality below 0.4 within 400-1,600 steps, too slow for a CPU; the
paper trains with SGD and with RMSProp, of which Adam is a variant.
Colour: test accuracy after training (mean over seeds; chance is 0.1). A cell counts as
trained when that accuracy exceeds 0.5; theory predicts it trainable when L < 6 xi_c.
The JSON holds the fraction of grid cells where the two agree.

Measured (full mode: width 128, 13 sigma_w2 x 6 depths x 2 seeds, 500 Adam steps):
    The trained cells form a band around the critical sigma_w2 = 1.76 that narrows with
    depth, as 6 xi_c predicts. Depth 10: every sigma_w2 from 1 to 4 trains (test accuracy
    0.82-0.96). Depth 50: sigma_w2 1.0-2.25. Depth 100: only 1.5, 1.75 and 2.0 (0.66, 0.87,
    0.76; 0.47 at 2.25 and 0.09-0.19 elsewhere), where depth < 6 xi_c holds at 1.75 and 2.0
    (6 xi_c = 95 at 1.5, 91 at 2.25). "Trained" and "depth < 6 xi_c" agree in 61 of 78
    cells (0.78), and the 17 disagreements lie on the two edges of the band, not at random:
    on the chaotic side 12 cells inside the bound stay below 0.5 after 500 steps (depths
    20-50, sigma_w2 >= 2.5; the chaotic side learns more slowly even at depth 10, so this is
    likely an effect of the short training); on the ordered side 5 cells train beyond it
    (sigma_w2 1.0 at depths 30 and 50, 1.25 at 50 and 75, 1.5 at 100), up to 2.3 times
    deeper than 6 xi_c, perhaps because Adam rescales the small gradients of the ordered
    phase (not tested). The quick mode (width 64, depths 10 and 50, 300 steps) shows the
    same pattern: 13 of 16 cells agree.

Results are written to the JSON after every depth, so an interrupted run loses only the
depth in progress; running again with the same settings skips the depths already there
(--fresh starts over). --quick and the full mode write different files.

Writes `trainability.json` and `trainability.png` (`trainability_quick.*` with --quick) to
--out (default experiments/out).
Usage: python experiments/trainability.py [--quick] [--out DIR] [--fresh]

References:
    Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep Information Propagation",
    section 5. Poole, Lahiri, Raghu, Sohl-Dickstein and Ganguli 2016, "Exponential
    expressivity in deep neural networks through transient chaos".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxgrad
from jaxgrad import init, theory

SIGMA_B2 = 0.05
TRAINABLE_DEPTH_FACTOR = 6.0  # Schoenholz et al.: trainable while depth < 6 xi_c
TRAINED_ACCURACY = 0.5  # test accuracy above which a cell counts as trained (chance: 0.1)
LEARNING_RATE_TIMES_WIDTH = 6.4e-3  # Adam's rate is this / width
IN_FEATURES, NUM_CLASSES = 64, 10  # digits: 8x8 pixels, 10 classes

MODES = {
    "quick": {
        "sigma_w2": [1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0],
        "depths": [10, 50],
        "width": 64,
        "seeds": [0],
        "steps": 300,
        "batch_size": 32,
    },
    "full": {
        "sigma_w2": np.round(np.arange(1.0, 4.0 + 1e-9, 0.25), 4).tolist(),
        "depths": [10, 20, 30, 50, 75, 100],
        "width": 128,
        "seeds": [0, 1],
        "steps": 500,
        "batch_size": 64,
    },
}


def make_model_fn(depth: int, width: int):
    """`model_fn(key, sigma_w2)` for `train_many`: a tanh MLP with hidden weights
    N(0, sigma_w2 / width) and hidden biases N(0, SIGMA_B2)."""

    def model_fn(key, sigma_w2):
        model = jaxgrad.nn.MLP(
            IN_FEATURES,
            width,
            depth,
            NUM_CLASSES,
            activation="tanh",
            kernel_init=init.lecun_normal(),
            bias_init=init.normal(math.sqrt(SIGMA_B2)),
            rngs=nnx.Rngs(key),
        )
        # sigma_w2 is traced: scale the unit-variance kernels arithmetically
        model.blocks.linear.kernel[...] = model.blocks.linear.kernel[...] * jnp.sqrt(sigma_w2)
        model.readout.bias[...] = jnp.zeros_like(model.readout.bias[...])
        return model

    return model_fn


def train_depth(depth: int, config: dict, digits) -> dict:
    """Train every sigma_w2 x seed at one depth (one compile) and summarize."""
    learning_rate = LEARNING_RATE_TIMES_WIDTH / config["width"]
    start = time.perf_counter()
    history, _ = jaxgrad.train.train_many(
        make_model_fn(depth, config["width"]),
        lambda: optax.adam(learning_rate),
        digits,
        seeds=config["seeds"],
        hyperparams={"sigma_w2": config["sigma_w2"]},
        steps=config["steps"],
        batch_size=config["batch_size"],
        eval_every=config["steps"] // 4,
    )
    test_accuracy = np.asarray(history.test_accuracy, np.float64)  # (seeds, w2, evals)
    final_loss = np.asarray(history.loss, np.float64)[..., -50:].mean(axis=-1)
    return {
        "depth": depth,
        "seconds": time.perf_counter() - start,
        "eval_step": np.asarray(history.eval_step).tolist(),
        "test_accuracy_curve": test_accuracy.tolist(),
        "test_accuracy": test_accuracy[..., -1].tolist(),  # (seeds, w2) after training
        "mean_test_accuracy": test_accuracy[..., -1].mean(axis=0).tolist(),
        "final_train_loss": _finite_or_none(final_loss.mean(axis=0)),
        "first_nonfinite_step": np.asarray(history.first_nonfinite_step).tolist(),
    }


def _finite_or_none(values) -> list:
    """A list for JSON: inf and nan become None."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, np.float64)]


def theory_curves(sigma_w2_cells: list[float]) -> dict:
    """xi_q and xi_c on a fine sigma_w2 axis (for the curve) and at the grid's columns."""
    fine = np.linspace(1.0, 4.0, 241)
    columns = np.asarray(sigma_w2_cells)
    both = np.concatenate([fine, columns])
    diagram = theory.phase_diagram("tanh", jnp.asarray(both), jnp.asarray([SIGMA_B2]))
    xi_q, xi_c = np.asarray(diagram.xi_q)[:, 0], np.asarray(diagram.xi_c)[:, 0]
    n = fine.size
    return {
        "critical_sigma_w2": float(theory.critical_sigma_w2("tanh", SIGMA_B2)),
        "fine_sigma_w2": fine.tolist(),
        "fine_xi_c": _finite_or_none(xi_c[:n]),
        "xi_q": _finite_or_none(xi_q[n:]),
        "xi_c": _finite_or_none(xi_c[n:]),
        "chi1": _finite_or_none(np.asarray(diagram.chi1)[n:, 0]),
    }


def agreement(results: dict) -> dict:
    """Compare "trained" (mean test accuracy > TRAINED_ACCURACY) with "depth < 6 xi_c"."""
    sigma_w2 = np.asarray(results["config"]["sigma_w2"])
    xi_c = np.array([np.inf if v is None else v for v in results["theory"]["xi_c"]])
    bound = TRAINABLE_DEPTH_FACTOR * xi_c
    rows, counts = [], {"both": 0, "neither": 0, "trained_only": 0, "predicted_only": 0}
    for depth in sorted(results["runs"], key=int):
        run = results["runs"][depth]
        trained = np.asarray(run["mean_test_accuracy"]) > TRAINED_ACCURACY
        predicted = int(depth) < bound
        counts["both"] += int(np.sum(trained & predicted))
        counts["neither"] += int(np.sum(~trained & ~predicted))
        counts["trained_only"] += int(np.sum(trained & ~predicted))
        counts["predicted_only"] += int(np.sum(~trained & predicted))
        rows.append(
            {
                "depth": int(depth),
                "trained_sigma_w2": sigma_w2[trained].tolist(),
                "predicted_sigma_w2": sigma_w2[predicted].tolist(),
                "agreement": float(np.mean(trained == predicted)),
            }
        )
    cells = sum(counts.values())
    return {
        "trained_accuracy": TRAINED_ACCURACY,
        "depth_factor": TRAINABLE_DEPTH_FACTOR,
        "cells": cells,
        "agreement": (counts["both"] + counts["neither"]) / cells if cells else None,
        **counts,
        "per_depth": rows,
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config, curves = results["config"], results["theory"]
    depths = sorted(int(d) for d in results["runs"])
    sigma_w2 = np.asarray(config["sigma_w2"])
    accuracy = np.array([results["runs"][str(d)]["mean_test_accuracy"] for d in depths])
    fig, (ax_map, ax_cut) = plt.subplots(1, 2, figsize=(13, 5))
    x_edges = _edges(sigma_w2)
    y_edges = np.exp(_edges(np.log(np.asarray(depths, np.float64))))  # depth on a log axis
    mesh = ax_map.pcolormesh(x_edges, y_edges, accuracy, vmin=0.0, vmax=1.0, cmap="viridis")
    fig.colorbar(mesh, ax=ax_map, label="test accuracy (chance 0.1)")
    for row, depth in enumerate(depths):
        for column, value in enumerate(accuracy[row]):
            ax_map.text(
                sigma_w2[column],
                depth,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=6,
                color="k" if value > 0.6 else "w",
            )
    fine = np.asarray(curves["fine_sigma_w2"])
    bound = TRAINABLE_DEPTH_FACTOR * np.array(
        [np.inf if v is None else v for v in curves["fine_xi_c"]]
    )
    ax_map.plot(fine, np.clip(bound, y_edges[0], y_edges[-1]), "r--", lw=2, label="6 xi_c")
    ax_map.axvline(curves["critical_sigma_w2"], color="r", ls=":", lw=1, label="chi1 = 1")
    ax_map.set_yscale("log")
    ax_map.set_yticks(depths, [str(d) for d in depths])
    ax_map.minorticks_off()
    ax_map.set_xlim(x_edges[0], x_edges[-1])
    ax_map.set_ylim(y_edges[0], y_edges[-1])
    ax_map.set(
        xlabel="sigma_w^2",
        ylabel="depth",
        title=f"tanh, width {config['width']}, sigma_b^2 = {SIGMA_B2}, {config['steps']} steps",
    )
    ax_map.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), ncols=2, fontsize=8)
    for index, depth in enumerate(depths):
        ax_cut.plot(sigma_w2, accuracy[index], "o-", color=f"C{index}", label=f"L = {depth}")
    ax_cut.axhline(TRAINED_ACCURACY, color="grey", lw=0.8, ls="--", label="'trained' threshold")
    ax_cut.axvline(curves["critical_sigma_w2"], color="k", ls=":", lw=1)
    ax_cut.set(
        xlabel="sigma_w^2",
        ylabel="test accuracy",
        ylim=(0, 1),
        title="test accuracy by depth (dotted: critical sigma_w^2)",
    )
    ax_cut.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around increasing centres: midpoints, and half a step past each end."""
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    middle = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - middle[0]], middle, [2 * centres[-1] - middle[-1]]])


def write_json(results: dict, path: Path) -> None:
    """Write atomically: a temporary file in the same folder, then `os.replace`."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(results) + "\n")
    os.replace(temporary, path)


def load_previous(path: Path, config: dict, fresh: bool) -> dict:
    """The runs of an earlier run with the same configuration, to resume from."""
    if fresh or not path.exists():
        return {}
    try:
        previous = json.loads(path.read_text())
    except json.JSONDecodeError:
        print(f"{path} is not valid JSON: starting over")
        return {}
    if previous.get("config") != config:
        print(f"{path} holds another configuration: starting over")
        return {}
    return {d: run for d, run in previous.get("runs", {}).items() if int(d) in config["depths"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid, under a minute")
    parser.add_argument("--out", type=Path, default=Path("experiments/out"))
    parser.add_argument(
        "--fresh", action="store_true", help="ignore results already in the JSON and start over"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    mode = "quick" if args.quick else "full"
    stem = "trainability_quick" if args.quick else "trainability"
    json_path, png_path = args.out / f"{stem}.json", args.out / f"{stem}.png"
    config = {
        "mode": mode,
        **MODES[mode],
        "sigma_b2": SIGMA_B2,
        "activation": "tanh",
        "optimizer": "adam",
        "learning_rate": LEARNING_RATE_TIMES_WIDTH / MODES[mode]["width"],
        "dataset": "digits",
    }
    start = time.perf_counter()
    results = {
        "config": config,
        "theory": theory_curves(config["sigma_w2"]),
        "runs": load_previous(json_path, config, args.fresh),
    }
    if results["runs"]:
        print(f"resuming: depths {sorted(map(int, results['runs']))} already in {json_path}")
    bound = TRAINABLE_DEPTH_FACTOR * np.array(
        [np.inf if v is None else v for v in results["theory"]["xi_c"]]
    )
    digits = jaxgrad.data.digits()
    networks = len(config["sigma_w2"]) * len(config["seeds"])
    print(
        f"{mode}: tanh width {config['width']}, {networks} networks per depth "
        f"({len(config['sigma_w2'])} sigma_w2 x {len(config['seeds'])} seeds), "
        f"{config['steps']} Adam steps at {config['learning_rate']:.2g}; critical sigma_w2 = "
        f"{results['theory']['critical_sigma_w2']:.4f}"
    )
    for depth in config["depths"]:
        if str(depth) in results["runs"]:
            continue
        run = train_depth(depth, config, digits)
        results["runs"][str(depth)] = run
        write_json(results, json_path)
        accuracy = np.asarray(run["mean_test_accuracy"])
        trained = np.asarray(config["sigma_w2"])[accuracy > TRAINED_ACCURACY]
        predicted = np.asarray(config["sigma_w2"])[depth < bound]
        print(
            f"depth {depth:>4}: {run['seconds']:6.1f} s (elapsed {time.perf_counter() - start:6.1f}"
            f" s)  best accuracy {accuracy.max():.3f} at sigma_w2 "
            f"{config['sigma_w2'][int(accuracy.argmax())]}; trained at {trained.tolist()}; "
            f"depth < 6 xi_c at {predicted.tolist()}"
        )
    results["summary"] = agreement(results)
    results["seconds"] = time.perf_counter() - start  # this session's
    results["training_seconds"] = sum(run["seconds"] for run in results["runs"].values())
    write_json(results, json_path)
    plot(results, png_path)
    summary = results["summary"]
    print(
        f"trained (accuracy > {TRAINED_ACCURACY}) agrees with depth < 6 xi_c in "
        f"{summary['both'] + summary['neither']} of {summary['cells']} cells "
        f"({summary['agreement']:.2f}); trained beyond 6 xi_c: {summary['trained_only']}, "
        f"untrained within it: {summary['predicted_only']}"
    )
    print(
        f"wrote {json_path} and {png_path} ({results['seconds']:.0f} s; training "
        f"{results['training_seconds']:.0f} s over all sessions)"
    )


if __name__ == "__main__":
    main()
