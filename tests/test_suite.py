"""The test suite's own bookkeeping."""

import re
from pathlib import Path

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
