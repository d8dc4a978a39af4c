"""Strict test environment: warnings are errors (pyproject), rank promotion raises.

Each test module starts with empty compilation caches: the suite compiles a few thousand
programs, and keeping every one alive in one process raised its peak memory and ended the
full run with a segmentation fault inside XLA's compiler (always at the same test, which
passes in a shorter run).
"""

import atexit
import ctypes
import gc
import os
import resource
import shutil
import tempfile
from pathlib import Path

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


def _share_compiled_programs_with_subprocesses() -> None:
    """The command line is tested in subprocesses, and each new process compiled the same
    programs again (a killed `jaxgrad coord` and its resumed and uninterrupted reruns: three
    times). They share one persistent compilation cache, a folder of this session's (set
    after this process imported jax, so the subprocesses use it, and so do pytest-xdist's
    workers, started by this process); a cache the contributor set is left as it is. A cached
    program is the same executable: no result changes."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    folder = tempfile.mkdtemp(prefix="jaxgrad-test-xla-cache-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


_share_compiled_programs_with_subprocesses()


def _malloc_trim():
    """glibc's malloc_trim(0), where there is glibc: hand the freed heap back to the system.

    XLA's CPU runtime mallocs and frees each call's buffers; glibc keeps what is freed for
    reuse, so without a trim the process's resident memory only ratchets up across the
    suite (its peak crept to 4.3 GiB with no single test raising it by more than 161 MiB).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return lambda: None
    return lambda: libc.malloc_trim(0)


_trim = _malloc_trim()


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Drop the compiled programs of the module before, so the suite does not accumulate
    them, and return the freed memory to the system."""
    jax.clear_caches()
    gc.collect()
    _trim()


_PEAK_RAISES: list[tuple[int, str]] = []  # (kilobytes the test raised the peak by, test id)


@pytest.fixture(autouse=True)
def _peak_memory(request):
    """With JAXGRAD_TEST_MEMORY=1, note how far each test raised the process's peak resident
    memory (module fixtures count toward the module's first test); the terminal summary
    lists the largest raises, to find what sets the suite's peak."""
    if not os.environ.get("JAXGRAD_TEST_MEMORY"):
        yield
        return
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    raised = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    if raised > 0:
        _PEAK_RAISES.append((raised, request.node.nodeid))


_WORKER_PEAKS: list[tuple[str, int]] = []  # (xdist worker, its peak in kilobytes)


def pytest_sessionfinish(session):
    """An xdist worker hands its memory notes to the controller, which prints them."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and os.environ.get("JAXGRAD_TEST_MEMORY"):
        workeroutput["peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        workeroutput["peak_raises"] = [list(entry) for entry in _PEAK_RAISES]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    notes = getattr(node, "workeroutput", {})
    if "peak_kib" in notes:
        _WORKER_PEAKS.append((node.gateway.id, notes["peak_kib"]))
        _PEAK_RAISES.extend((raised, nodeid) for raised, nodeid in notes["peak_raises"])


def pytest_terminal_summary(terminalreporter):
    if not _PEAK_RAISES:
        return
    if _WORKER_PEAKS:
        each = ", ".join(f"{name} {kib / 2**20:.2f}" for name, kib in sorted(_WORKER_PEAKS))
        total = sum(kib for _, kib in _WORKER_PEAKS) / 2**20
        peak = f"{each} GiB (at most {total:.2f} GiB together)"
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    terminalreporter.write_line(f"peak resident memory {peak}; raised most by:")
    for raised, nodeid in sorted(_PEAK_RAISES, reverse=True)[:12]:
        terminalreporter.write_line(f"  +{raised / 2**10:7.0f} MiB  {nodeid}")


WORKER_MEMORY = 7 * 2**29  # 3.5 GiB: the larger worker's measured peak was 3.15 GiB (2026-12-06)


def _available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes, where there is one."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """`pytest -n auto` (as `make test` runs): one process per core this process may use, but
    no more than the available memory holds at WORKER_MEMORY each. Most of the suite's time is
    XLA compiling, one core a program, so two processes on two cores take 14 minutes where
    one took 24 (2026-12-06)."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    memory = _available_memory()
    fits = cores if memory is None else memory // WORKER_MEMORY
    return max(1, min(cores, fits))


SLOW_LIST = Path(__file__).with_name("slow_tests.txt")


def slow_functions() -> set[str]:
    """`module::function` of the tests `make test-fast` leaves out by measured duration."""
    lines = SLOW_LIST.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def pytest_collection_modifyitems(config, items):
    """Mark slow the test functions listed in slow_tests.txt (every parametrization)."""
    listed = slow_functions()
    root = Path(__file__).parent.parent
    for item in items:
        module = Path(item.fspath).relative_to(root).as_posix()
        function = item.originalname if hasattr(item, "originalname") else item.name
        if f"{module}::{function}" in listed:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def key():
    """A fixed PRNG key so every statistical test is deterministic."""
    return jax.random.key(0)
