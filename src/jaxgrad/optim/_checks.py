"""Validation of hyperparameters shared by the transforms: concrete values are checked where
they are given; jax arrays (maybe traced, under `jax.vmap` over hyperparameters) only by
shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgrad import init as _init

Axis = int | tuple[int, ...] | None
# A mask as optax takes it: a pytree of bools shaped like (a prefix of) the params, or a
# function of the params returning one.
Mask = Any | Callable[[optax.Params], Any] | None


def _scalar(name: str, value: object, check: Callable[[str, object], float]) -> Any:
    """Validate a concrete hyperparameter with `check`; a jax scalar is returned as given,
    checked when its value is known (a concrete array: a negative clipping bound would flip
    the gradient) and taken on trust when traced (under `jax.vmap` over hyperparameters),
    where only its shape can be checked.
    """
    if isinstance(value, jax.Array):
        if value.ndim != 0:
            raise ValueError(f"{name} must be a scalar, got an array of shape {value.shape}")
        if not isinstance(value, jax.core.Tracer) and jnp.issubdtype(value.dtype, jnp.number):
            check(name, value.item())
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return check(name, value)


def _learning_rate(name: str, value: object) -> optax.ScalarOrSchedule:
    """A learning rate: a schedule (callable), a jax scalar (maybe traced) or a number >= 0."""
    if callable(value):
        return value
    return _scalar(name, value, _init._nonnegative)


def _axis(axis: object) -> Axis:
    if axis is None:
        return None
    if isinstance(axis, int) and not isinstance(axis, bool):
        return (axis,)
    if isinstance(axis, tuple | list) and all(
        isinstance(a, int) and not isinstance(a, bool) for a in axis
    ):
        return tuple(axis)
    raise TypeError(f"axis must be None, an int or a tuple of ints, got {axis!r}")


def _require_params(name: str, params: Any) -> None:
    if params is None:
        raise ValueError(
            f"{name} needs the current parameters: call update(updates, state, params) "
            "with params, not None"
        )


def _optional(name: str, value: object, check: Callable[[str, object], float]) -> Any:
    return None if value is None else _scalar(name, value, check)
