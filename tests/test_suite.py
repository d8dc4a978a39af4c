"""The test suite's own bookkeeping."""

import re
from pathlib import Path

import conftest
import pytest
from conftest import slow_functions


def test_every_test_listed_as_slow_exists():
    """slow_tests.txt names `module::function` of tests that still exist (a renamed test
    would otherwise silently come back into `make test-fast`, or a typo mark nothing)."""
    root = Path(__file__).parent.parent
    listed = slow_functions()
    assert len(listed) > 100
    for entry in sorted(listed):
        module, _, function = entry.partition("::")
        source = (root / module).read_text()
        assert re.search(rf"^def {re.escape(function)}\(", source, re.MULTILINE), entry


@pytest.mark.parametrize(
    ("cores", "memory", "expected"),
    [(2, None, 2), (2, 24 * 2**30, 2), (16, 24 * 2**30, 6), (4, 4 * 2**30, 1), (2, 2**30, 1)],
)
def test_auto_workers_are_as_many_as_cores_and_memory_allow(monkeypatch, cores, memory, expected):
    """`-n auto` starts one process per core, no more than fit in the available memory at
    conftest.WORKER_MEMORY each, and always at least one."""
    monkeypatch.setattr(conftest.os, "sched_getaffinity", lambda _: set(range(cores)))
    monkeypatch.setattr(conftest, "_available_memory", lambda: memory)
    assert conftest.WORKER_MEMORY == 3.5 * 2**30
    assert conftest.pytest_xdist_auto_num_workers(None) == expected


def test_available_memory_reads_proc_meminfo():
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():  # not Linux: no reading, and the cores alone decide
        assert conftest._available_memory() is None
        return
    line = next(x for x in meminfo.read_text().splitlines() if x.startswith("MemAvailable:"))
    expected = int(line.split()[1]) * 1024
    assert conftest._available_memory() == pytest.approx(expected, rel=0.2)
