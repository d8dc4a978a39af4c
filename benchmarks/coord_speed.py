"""Time a coordinate check end to end: jaxgrad's `scaling.coord_check` against mup's PyTorch
`get_coord_data` on the same check (an MLP 64 -> n -> n -> 10 with relu, widths 64 to 1024,
3 Adam steps, 4 seeds, batches of 32 from digits), when mup and torch are installed
(benchmark-only extras: `pip install torch mup`).

End to end means from the model factory to the per-layer table: jaxgrad's cold time
includes every compilation (one per width), mup's its Python loop over widths, seeds and
steps with forward hooks. Each side runs `--repeats` times in fresh state (jaxgrad's compiled
programs are cleared between runs, so every cold run compiles); jaxgrad's warm time is a
second check of the same shapes right after (the compiled programs reused, as when the data
or the learning rate changes). The medians are reported, and the machine's load average
beside them (the numbers move with the other jobs on a shared machine). `--batch`,
`--seeds` and `--steps` scale the check up, to where the computation and not the
compilation sets the time.

Usage: python benchmarks/coord_speed.py [--repeats N] [--batch B] [--seeds S] [--steps T]
    [--out benchmarks/results/coord_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

from jaxgrad import data, scaling

WIDTHS = (64, 128, 256, 512, 1024)
SEEDS, STEPS, BATCH, LR = 4, 3, 32, 1e-3


def batches():
    digits = data.digits()
    rng = np.random.default_rng(0)
    chosen = [
        rng.choice(len(digits.x_train), BATCH, replace=len(digits.x_train) < BATCH)
        for _ in range(STEPS)
    ]
    x, y = np.asarray(digits.x_train), np.asarray(digits.y_train)
    return [(x[i], y[i]) for i in chosen]


def make_mlp(width, depth, rngs):
    return nnx.Sequential(
        nnx.Linear(64, width, rngs=rngs),
        nnx.relu,
        nnx.Linear(width, width, rngs=rngs),
        nnx.relu,
        nnx.Linear(width, 10, rngs=rngs),
    )


def cross_entropy(model, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def run_jaxgrad(stream) -> tuple[float, float]:
    """(cold seconds, compiling every width; warm seconds, the same check again)."""
    jax.clear_caches()
    optimizer = optax.adam(LR)  # one object: a new one would be a new static argument
    times = []
    for _ in range(2):
        start = time.perf_counter()
        check = scaling.coord_check(
            make_mlp,
            optimizer,
            stream,
            widths=WIDTHS,
            seeds=SEEDS,
            steps=STEPS,
            loss_fn=cross_entropy,
        )
        check.to_frame()
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def run_mup(stream) -> float | None:
    try:
        import torch
        from mup.coord_check import get_coord_data
    except ImportError:
        return None

    class MLP(torch.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.fc1 = torch.nn.Linear(64, width)
            self.fc2 = torch.nn.Linear(width, width)
            self.fc3 = torch.nn.Linear(width, 10)

        def forward(self, x):
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    loader = [(torch.tensor(x), torch.tensor(y, dtype=torch.long)) for x, y in stream]
    models = {width: (lambda w=width: MLP(w)) for width in WIDTHS}
    start = time.perf_counter()
    get_coord_data(
        models,
        loader,
        mup=False,
        lr=LR,
        optimizer="adam",
        nseeds=SEEDS,
        nsteps=STEPS,
        lossfn="xent",
        dict_in_out=False,
        flatten_input=False,
        fix_data=False,  # batch t at step t, as jaxgrad's side
        cuda=False,
        show_progress=False,
    )
    return time.perf_counter() - start


def main() -> None:
    global BATCH, SEEDS, STEPS  # the check's size, read by batches() and both runners
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/coord_speed.json"))
    args = parser.parse_args()
    BATCH, SEEDS, STEPS = args.batch, args.seeds, args.steps
    stream = batches()
    jaxgrad_times = [run_jaxgrad(stream) for _ in range(args.repeats)]
    cold = [t for t, _ in jaxgrad_times]
    warm = [t for _, t in jaxgrad_times]
    mup_times = [run_mup(stream) for _ in range(args.repeats)]
    mup_times = [t for t in mup_times if t is not None]
    mup_median = statistics.median(mup_times) if mup_times else None
    result = {
        "check": {"widths": WIDTHS, "seeds": SEEDS, "steps": STEPS, "batch": BATCH},
        "jaxgrad_seconds": cold,
        "jaxgrad_median": statistics.median(cold),
        "jaxgrad_warm_seconds": warm,
        "jaxgrad_warm_median": statistics.median(warm),
        "mup_seconds": mup_times or None,
        "mup_median": mup_median,
        "mup_over_jaxgrad_cold": mup_median / statistics.median(cold) if mup_times else None,
        "mup_over_jaxgrad_warm": mup_median / statistics.median(warm) if mup_times else None,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "jax": jax.__version__,
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
