"""`jax.jit` for programs that build a model inside them, with a workaround for an XLA CPU bug.

`scaling.coord_check` vmaps seeds over a program that builds the user's model from a key,
and runs the initial model forward for its reference outputs. There a kernel initialized to a
constant (muP's zero-initialized readout, `nnx.initializers.zeros`) is a constant of the
program, and XLA's CPU backend (jaxlib 0.10.2) hands the product of an activation with that
constant to a YNNPACK fusion that returned garbage (1e28 to 1e37, Inf or NaN in place of zeros)
at widths of 128 and more; at width 64, or with the kernel passed in as an argument, the same
product was right. (`train.train_many` builds models the same way but only uses them as the
carry of its training loop, where the kernels are not constants: its losses were right.) The
YNN fusions are turned off for such programs on CPU; other backends compile them unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

# The debug option that lists the YNN fusion types to use: none.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


class _JitBuildingModels:
    """One `jax.jit` per backend kind, chosen at each call by the default device's platform
    (so importing jaxgrad does not start a backend)."""

    def __init__(self, fun: Callable[..., Any], jit_kwargs: dict[str, Any]):
        functools.update_wrapper(self, fun)
        self._cpu = jax.jit(fun, compiler_options=CPU_COMPILER_OPTIONS, **jit_kwargs)
        self._other = jax.jit(fun, **jit_kwargs)

    def _jitted(self):
        return self._cpu if _platform() == "cpu" else self._other

    def __call__(self, *args, **kwargs):
        return self._jitted()(*args, **kwargs)

    def _cache_size(self) -> int:
        return self._jitted()._cache_size()


def _platform() -> str:
    """The platform a call without placed inputs runs on: `jax.default_device`'s (a device
    or a platform name) where one is set, else the default backend's."""
    default = jax.config.jax_default_device
    if default is None:
        return jax.default_backend()
    return default if isinstance(default, str) else default.platform


def jit_building_models(**jit_kwargs: Any) -> Callable[[Callable[..., Any]], _JitBuildingModels]:
    """A decorator: `jax.jit(fun, **jit_kwargs)` for a program that builds a model inside it,
    compiled on CPU without the YNN fusions (the module's docstring says why)."""
    return lambda fun: _JitBuildingModels(fun, jit_kwargs)
