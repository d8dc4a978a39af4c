"""Strict test environment: warnings are errors (pyproject), rank promotion raises."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    """A fixed PRNG key so every statistical test is deterministic."""
    return jax.random.key(0)
