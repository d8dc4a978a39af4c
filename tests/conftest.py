"""Strict test environment: warnings are errors (pyproject), rank promotion raises.

Each test module starts with empty compilation caches: the suite compiles a few thousand
programs, and keeping every one alive in one process raised its peak memory and ended the
full run with a segmentation fault inside XLA's compiler (always at the same test, which
passes in a shorter run).
"""

import gc

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Drop the compiled programs of the module before, so the suite does not accumulate them."""
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def key():
    """A fixed PRNG key so every statistical test is deterministic."""
    return jax.random.key(0)
