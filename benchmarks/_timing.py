"""Shared timing helpers for the benchmark scripts: side-by-side, interleaved, medians."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import statistics
import subprocess
import sys
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


def isolated(
    script: str, names: list[str], *, rounds: int = 5, worker_args: tuple[str, ...] = ()
) -> tuple[dict[str, float], dict[str, dict]]:
    """Median seconds per call of each named candidate, every sample taken in a fresh process.

    Each round runs `python SCRIPT --worker NAME *worker_args` once per candidate, in turn;
    the worker builds that one candidate, warms it up, times it (`worker`) and prints a JSON
    line. Two libraries in one process compete for the cores through their thread pools
    (PyTorch's seed pass took 38 to 54 ms in processes of its own and 43 to 72 ms
    interleaved with JAX in one process, on 2 cores), and a script uses one library, so
    comparisons across libraries are timed this way. Returns the medians and, per name, the
    last worker's extra fields.
    """
    samples: dict[str, list[float]] = {name: [] for name in names}
    extra: dict[str, dict] = {}
    for _ in range(rounds):
        for name in names:
            command = [sys.executable, script, "--worker", name, *worker_args]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"worker {name} failed:\n{done.stderr[-2000:]}")
            report = json.loads(done.stdout.strip().splitlines()[-1])
            samples[name].append(report.pop("seconds"))
            extra[name] = report
    return {name: statistics.median(values) for name, values in samples.items()}, extra


def worker(
    fn: Callable[[], object], *, repeats: int, fields: Callable[[], dict] | None = None
) -> None:
    """Time `fn` in this process for `isolated`: one warm-up call, then `repeats` calls;
    print the seconds per call (and what `fields()` returns after the timing) as one JSON
    line."""
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn())
    seconds = (time.perf_counter() - start) / repeats
    print(json.dumps({"seconds": seconds, **(fields() if fields else {})}))


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


def keep_large_allocations() -> str:
    """Raise glibc's mmap and trim thresholds to 1 GiB in this process (`mallopt`), so that
    large freed blocks are kept for the next step instead of returned to the system.

    XLA's CPU runtime allocates each call's temporary buffer with malloc. Past glibc's mmap
    threshold (at most 32 MiB by default) every call maps fresh pages and pays a page fault
    for each one it touches: a step whose program holds a conditional with a large branch
    (the recorder's re-measurement of a non-finite step, never taken) took 31-37 ms instead
    of 19-20 ms for the 4-block transformer of monitor_overhead.py, and by how much varied
    from process to process.
    The same setting from the shell: MALLOC_MMAP_THRESHOLD_=1073741824
    MALLOC_TRIM_THRESHOLD_=1073741824, or a preloaded jemalloc or tcmalloc. Both libraries'
    steps run with it."""

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return "unchanged (not glibc)"
    libc = ctypes.CDLL(name)
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30)
    return "glibc mmap and trim thresholds 1 GiB" if ok else "mallopt failed: glibc defaults"
