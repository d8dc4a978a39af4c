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
    after this process imported jax, so only the subprocesses use it); a cache the
    contributor set is left as it is. A cached program is the same executable: no result
    changes."""
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


def pytest_terminal_summary(terminalreporter):
    if not _PEAK_RAISES:
        return
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    terminalreporter.write_line(f"peak resident memory {peak / 2**20:.2f} GiB; raised most by:")
    for raised, nodeid in sorted(_PEAK_RAISES, reverse=True)[:12]:
        terminalreporter.write_line(f"  +{raised / 2**10:7.0f} MiB  {nodeid}")


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
