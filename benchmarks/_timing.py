"""Shared timing helpers for the benchmark scripts: side-by-side, interleaved, medians."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax

RESULTS = Path(__file__).parent / "results"


def interleaved(
    candidates: dict[str, Callable[[], object]], *, rounds: int = 7, repeats: int = 10
) -> dict[str, float]:
    """Median seconds per call of each candidate, measured in alternating rounds.

    Each candidate is called once to warm up (compile), then in every round each one runs
    `repeats` times back to back; interleaving the rounds spreads machine noise evenly.
    """
    for fn in candidates.values():
        jax.block_until_ready(fn())
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(repeats):
                jax.block_until_ready(fn())
            samples[name].append((time.perf_counter() - start) / repeats)
    return {name: statistics.median(values) for name, values in samples.items()}


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    device = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "device": f"{device.platform}:{device.device_kind}",
    }


def write(name: str, payload: dict) -> Path:
    """Write the figures as JSON to benchmarks/results/NAME.json."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path
