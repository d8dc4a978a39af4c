"""Per-layer health of any Flax NNX model on one batch, in forward order: `inspect`.

`inspect(model, loss_fn, batch)` runs one compiled program: the loss, its gradient with
respect to every `nnx.Param`, and, for every recorded module call, the statistics of the
call's input and output, the dead and saturated fractions of its input, the norm of
dL/d(output) and, for attention, the largest logit and the attention entropy. It returns a
`ModelReport` whose rows are in forward order (the order in which the calls started: a
block's row comes before the rows of the calls made inside it, although its output is
computed after theirs), one row per layer for layers stacked on a leading axis and applied
with `jax.lax.scan` or `nnx.scan`; `to_frame()` gives the pandas view and
`jaxgrad.diagnose(report)` the verdict.

How it sees inside without changing the model's code: `jaxgrad.inspection.capture` (module
calls are wrapped while tracing, `jax.lax.scan` carries per-layer records out, and a zero
tap added to each recorded output gives dL/d(output) from the same backward pass).

Cost: one forward and one backward pass, plus reductions over each recorded input and output
(a few passes over the activations, no extra matrix product; attention logits are reused).
`benchmarks/inspect_speed.py` measures it against a plain jitted `nnx.value_and_grad` of the
same model and batch. For jaxgrad's own MLP, `jaxgrad.probe` is the faster path (it never
forms a weight gradient).

The model is never mutated: the report is computed on a copy (`nnx.merge` of its state). A
BatchNorm in training mode normalizes with the batch's statistics, as in training, and the
running averages it would update are discarded, as are advanced RNG counters (dropout draws
the same mask on every call). In evaluation mode (`model.eval()`) the running averages are
used.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> from jaxgrad import inspect
    >>> class CNN(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.conv1 = nnx.Conv(1, 8, (3, 3), rngs=rngs)
    ...         self.conv2 = nnx.Conv(8, 8, (3, 3), rngs=rngs)
    ...         self.head = nnx.Linear(8, 10, rngs=rngs)
    ...     def __call__(self, x):
    ...         x = jax.nn.relu(self.conv1(x))
    ...         x = jax.nn.relu(self.conv2(x))
    ...         return self.head(x.mean(axis=(1, 2)))
    >>> def loss_fn(model, batch):
    ...     x, y = batch
    ...     return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
    >>> batch = (jnp.ones((4, 8, 8, 1)), jnp.zeros((4,), jnp.int32))
    >>> report = inspect(CNN(nnx.Rngs(0)), loss_fn, batch, activation="relu")
    >>> report.module_names
    ('conv1', 'conv2', 'head')
    >>> report.param_names[:2]
    ('conv1.bias', 'conv1.kernel')

References:
    Glorot and Bengio 2010, "Understanding the difficulty of training deep feedforward neural
    networks" (per-layer activation and gradient statistics). You et al. 2017, "Large Batch
    Training of Convolutional Networks" (the ratio of gradient norm to weight norm). Lu et al.
    2020, "Dying ReLU and Initialization: Theory and Numerical Examples" (dead units).
    Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer training
    instabilities" (attention-logit growth).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from inspect import signature as _signature
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxgrad import activations as _act
from jaxgrad import nn as _nn
from jaxgrad import stats as _stats
from jaxgrad.inspection import capture as _capture
from jaxgrad.inspection.capture import on_call_outputs as on_call_outputs
from jaxgrad.inspection.capture import path_str as _path_str
from jaxgrad.stats.reductions import SATURATION_THRESHOLD

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_TYPES: tuple[type[nnx.Module], ...] = (
    nnx.MultiHeadAttention,
    _nn.Block,
    _nn.ResidualBlock,
    _nn.PReLU,
    _nn.RReLU,
)
"""Module types recorded by default besides every module that owns an `nnx.Param` itself
(Linear, LinearGeneral, Conv, ConvTranspose, Embed, LayerNorm, BatchNorm, RMSNorm, ...):
attention (for its logits and entropy) and jaxgrad's own blocks and activations."""


class LossFn(Protocol):
    """The contract of `inspect`'s `loss_fn`: `loss_fn(model, batch) -> scalar`.

    It is called with a copy of the model (same graph, same values) and the batch exactly as
    given to `inspect` (any pytree, e.g. `(x, y)`), under `jax.jit`: it must be traceable and
    return a real scalar array. Calling modules in it is all it takes for them to be
    recorded; it must not return or keep the model's arrays.

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> from flax import nnx
        >>> from jaxgrad import inspect
        >>> def loss_fn(model, batch):  # a LossFn
        ...     x, y = batch
        ...     return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
        >>> batch = (jnp.ones((4, 3)), jnp.array([0, 1, 0, 1]))
        >>> report = inspect(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), loss_fn, batch)
        >>> round(float(report.loss), 4)
        0.7269
    """

    def __call__(self, model: Any, batch: Any) -> jax.Array: ...


# ----------------------------------------------------------------------------- results


class ModuleStats(NamedTuple):
    """Statistics of every recorded call, one entry per row (arrays of shape (rows,)).

    Attributes:
        in_mean, in_std, in_rms, in_max_abs: of the call's input (its first array argument).
        out_mean, out_std, out_rms, out_max_abs: of its output.
        out_grad_norm: ||dL/d(output)|| over the whole batch.
        dead_frac: fraction of the input's units (last axis) that are zero on the whole
            batch: in the `act(layer(x))` style, the dead units of the activation before.
        saturated_frac: fraction of the input's values where the activation's derivative,
            read off its value, is below the threshold (`stats.SATURATION_THRESHOLD`); nan
            where the activation is not known or cannot be read off its output (see
            `activations.derivative_from_output`). The first row's input is the data.
        attn_max_logit, attn_entropy: for attention modules, the largest attention logit and
            the mean entropy of the attention rows in nats (log(keys) is uniform attention);
            nan for the others.
        nonfinite_in, nonfinite_out, nonfinite_grad: whether the input, the output and
            dL/d(output) hold an inf or a nan (bool).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import inspect
        >>> model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.relu,
        ...                        nnx.Linear(4, 1, rngs=nnx.Rngs(1)))
        >>> report = inspect(model, lambda m, x: jnp.mean(m(x) ** 2), jnp.ones((5, 3)))
        >>> report.module_names, report.modules.in_std.shape
        (('layers.0', 'layers.2'), (2,))
        >>> float(report.modules.dead_frac[1])  # of layers.2's input, relu's output
        0.75
    """

    in_mean: jax.Array
    in_std: jax.Array
    in_rms: jax.Array
    in_max_abs: jax.Array
    out_mean: jax.Array
    out_std: jax.Array
    out_rms: jax.Array
    out_max_abs: jax.Array
    out_grad_norm: jax.Array
    dead_frac: jax.Array
    saturated_frac: jax.Array
    attn_max_logit: jax.Array
    attn_entropy: jax.Array
    nonfinite_in: jax.Array
    nonfinite_out: jax.Array
    nonfinite_grad: jax.Array


class ParamStats(NamedTuple):
    """Statistics of every parameter (every layer's slice of a stacked one), arrays of shape
    (params,).

    Attributes:
        grad_norm: ||dL/dW||.
        weight_norm: ||W||.
        ratio: grad_norm / weight_norm, the relative change a step of learning rate 1 would
            make (You et al. 2017); nan where the weight is zero (a zero-initialized bias),
            the documented marker for "no scale to compare with".
        nonfinite: whether the gradient or the weight holds an inf or a nan (bool).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import inspect
        >>> model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.relu,
        ...                        nnx.Linear(4, 1, rngs=nnx.Rngs(1)))
        >>> report = inspect(model, lambda m, x: jnp.mean(m(x) ** 2), jnp.ones((5, 3)))
        >>> report.param_names
        ('layers.0.bias', 'layers.0.kernel', 'layers.2.bias', 'layers.2.kernel')
        >>> bool(jnp.isnan(report.params.ratio[0]))  # a zero bias has no scale
        True

    References:
        You, Gitman and Ginsburg 2017, "Large Batch Training of Convolutional Networks"
        (the gradient-to-weight ratio).
    """

    grad_norm: jax.Array
    weight_norm: jax.Array
    ratio: jax.Array
    nonfinite: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ModelReport:
    """The result of `inspect`: arrays in forward order, with their names (a pytree: it
    jits, vmaps and `device_get`s; the names are static).

    Attributes:
        loss: the value of `loss_fn(model, batch)`.
        modules: `ModuleStats`, one entry per recorded call.
        params: `ParamStats`, one entry per parameter, or per layer of a stacked one.
        module_names: the calls' names: the module path ("conv1"), "[i]" after the stack
            for layer i of a stack ("blocks[3].linear"), "[k]" at the end for the k-th call
            of a module called several times.
        module_types: the class name of each call's module.
        module_layers: each call's index in its scans (() outside any scan).
        param_names: the parameters' paths ("blocks[3].linear.kernel" for a layer's slice).
        param_modules: the name of the row (module call) each parameter belongs to, or ""
            when its module was not recorded.
        param_shapes: each parameter's shape (a layer's slice for a stacked one).
        activation: the activation behind the saturated fractions, or None.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import inspect
        >>> model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.relu,
        ...                        nnx.Linear(4, 1, rngs=nnx.Rngs(1)))
        >>> report = inspect(model, lambda m, x: jnp.mean(m(x) ** 2), jnp.ones((5, 3)))
        >>> report.module_types, report.param_shapes[:2]
        (('Linear', 'Linear'), ((4,), (3, 4)))
        >>> len(report.to_frame())  # a row per module call and per parameter
        6
    """

    loss: jax.Array
    modules: ModuleStats
    params: ParamStats
    module_names: tuple[str, ...] = dataclasses.field(metadata={"static": True})
    module_types: tuple[str, ...] = dataclasses.field(metadata={"static": True})
    module_layers: tuple[tuple[int, ...], ...] = dataclasses.field(metadata={"static": True})
    param_names: tuple[str, ...] = dataclasses.field(metadata={"static": True})
    param_modules: tuple[str, ...] = dataclasses.field(metadata={"static": True})
    param_shapes: tuple[tuple[int, ...], ...] = dataclasses.field(metadata={"static": True})
    activation: str | None = dataclasses.field(metadata={"static": True})

    def module(self, name: str) -> ModuleStats:
        """The statistics of one call, by name (scalars)."""
        return jax.tree.map(lambda a: a[self._index(self.module_names, name)], self.modules)

    def param(self, name: str) -> ParamStats:
        """The statistics of one parameter (or layer slice), by name (scalars)."""
        return jax.tree.map(lambda a: a[self._index(self.param_names, name)], self.params)

    @staticmethod
    def _index(names: tuple[str, ...], name: str) -> int:
        try:
            return names.index(name)
        except ValueError:
            raise KeyError(f"no row {name!r}; the rows are {list(names)}") from None

    @property
    def first_nonfinite_forward(self) -> str | None:
        """The first call, in forward order, whose input or output holds an inf or a nan."""
        bad = np.asarray(self.modules.nonfinite_in) | np.asarray(self.modules.nonfinite_out)
        hits = np.flatnonzero(bad)
        return self.module_names[hits[0]] if hits.size else None

    @property
    def first_nonfinite_backward(self) -> str | None:
        """The first call, in backward order (from the loss towards the input), whose
        dL/d(output) holds an inf or a nan: where the backward pass went non-finite."""
        hits = np.flatnonzero(np.asarray(self.modules.nonfinite_grad))
        return self.module_names[hits[-1]] if hits.size else None

    def profile(
        self,
        *,
        activation: str | Callable[[jax.Array], jax.Array] | None = None,
        sigma_w2: float | None = None,
        sigma_b2: float | None = None,
        readout: bool = True,
    ) -> _stats.Profile:
        """The `jaxgrad.stats.Profile` that `jaxgrad.diagnose` reads: one layer per call of a
        module with weights (`weight_rows`: a `kernel`, an `embedding`, or a parameter of
        two or more axes), in forward order.

        Per layer: the weight's gradient and weight norms; the call's output std as the
        signal (a linear layer's output is its pre-activation) and ||dL/d(output)||; the
        dead and saturated fractions that the next layer's input shows (the activation
        between them; nan for the last layer, and the data entering the first layer is never
        read as a layer's units); fans from the weight's shape (fan_out its last axis). The
        activation for the mean-field rule is used only when given here (or to `diagnose`):
        only you know whether the model is a plain stack without norm or residual.

        Args:
            activation: the network's elementwise activation, for the mean-field rule.
            sigma_w2, sigma_b2: the initialization's variances where known.
            readout: whether the last layer in forward order is the model's readout (a
                classifier's head, a language model's unembedding), whose output scale the
                signal rule does not judge; pass False when the last layer with weights
                feeds more of the network.

        Raises:
            ValueError: when no recorded call has weights (nothing to judge).

        Example:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.relu,
            ...                        nnx.Linear(4, 2, rngs=nnx.Rngs(1)))
            >>> report = inspect(model, lambda m, x: jnp.mean(m(x) ** 2), jnp.ones((5, 3)))
            >>> report.profile().names
            ('layers.0', 'layers.2')
        """
        host = jax.device_get(self)
        layers = self.weight_rows()
        if not layers:
            raise ValueError(
                f"no recorded call has weights to judge: none of the {len(self.module_names)} "
                f"recorded calls ({_listing(self.module_names)}) belongs to a module that owns a "
                "parameter of two or more axes; record the modules that own the weights "
                "(inspect's modules=None records every module)"
            )
        modules, params = host.modules, host.params
        layers = _calls_with_input(layers, self.module_names, np.asarray(modules.in_max_abs))
        module_rows = np.array([row for row, _ in layers], dtype=int)
        param_rows = np.array([param for _, param in layers], dtype=int)

        def per_layer(values, at=module_rows):
            return np.asarray(values, np.float64)[at] if at.size else np.zeros(0)

        def next_inputs(values):  # what the next layer receives: the activation in between
            read = per_layer(values, module_rows[1:]) if module_rows.size else np.zeros(0)
            return np.concatenate([read, [np.nan]]) if module_rows.size else read

        forward = np.asarray(modules.nonfinite_in, bool) | np.asarray(modules.nonfinite_out, bool)
        forward_rows = np.flatnonzero(forward)
        first = -1
        if forward_rows.size:
            after = np.flatnonzero(module_rows >= forward_rows[0])
            first = int(after[0]) + 1 if after.size else -1
        broken = (
            per_layer(modules.nonfinite_grad).astype(bool)
            | np.asarray(params.nonfinite, bool)[param_rows]
        )
        shapes = [self.param_shapes[index] for index in param_rows]
        fan_out = np.array([shape[-1] if shape else 1 for shape in shapes], dtype=np.float64)
        fan_in = np.array([math.prod(shape) for shape in shapes], dtype=np.float64) / fan_out
        return _stats.Profile(
            names=tuple(self.module_names[row] for row in module_rows),
            grad_norm=np.asarray(params.grad_norm, np.float64)[param_rows],
            weight_norm=np.asarray(params.weight_norm, np.float64)[param_rows],
            signal_std=per_layer(modules.out_std),
            act_grad_norm=per_layer(modules.out_grad_norm),
            dead_frac=next_inputs(modules.dead_frac),
            saturated_frac=next_inputs(modules.saturated_frac),
            first_nonfinite=first,
            first_nonfinite_backward=int(np.flatnonzero(broken)[-1]) + 1 if broken.any() else -1,
            activation=activation,
            fan_in=fan_in if shapes else None,
            fan_out=fan_out if shapes else None,
            sigma_w2=sigma_w2,
            sigma_b2=sigma_b2,
            readout=readout,
        )

    def weight_rows(self) -> list[tuple[int, int]]:
        """The layers `profile` judges, in forward order: (module row, parameter row) for
        every recorded call of a module that owns weights, the weight being its own
        parameter named `kernel` or `embedding` (flax's names) or else its own parameter
        of two or more axes (the largest, if it owns several: `w` of a hand-written dense
        layer). Norm layers' scales and biases have one axis: they are not layers here.

        Returns:
            A list of (index into `module_names`, index into `param_names`).

        Example:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> from jaxgrad import inspect
            >>> class Dense(nnx.Module):  # its weight is called w, not kernel
            ...     def __init__(self, rngs):
            ...         self.w = nnx.Param(jnp.ones((3, 2)))
            ...         self.b = nnx.Param(jnp.zeros(2))
            ...     def __call__(self, x):
            ...         return x @ self.w + self.b[None, :]
            >>> report = inspect(Dense(nnx.Rngs(0)), lambda m, x: m(x).sum(), jnp.ones((4, 3)))
            >>> [(report.module_names[m], report.param_names[p]) for m, p in report.weight_rows()]
            [('', 'w')]
        """
        return weight_rows(
            self.module_names, self.param_names, self.param_modules, self.param_shapes
        )

    def module_frame(self) -> pd.DataFrame:
        """One row per recorded call, in forward order: `name`, `type`, `layer` (index in
        its stack, -1 outside any), then every `ModuleStats` field."""
        import pandas as pd  # the pandas view lives at the edge

        host = jax.device_get(self.modules)
        columns: dict[str, Any] = {
            "name": list(self.module_names),
            "type": list(self.module_types),
            "layer": [layer[-1] if layer else -1 for layer in self.module_layers],
        }
        columns |= {name: np.asarray(value) for name, value in host._asdict().items()}
        return pd.DataFrame(columns)

    def param_frame(self) -> pd.DataFrame:
        """One row per parameter (or layer slice), in forward order: `name`, `module`, then
        every `ParamStats` field."""
        import pandas as pd

        host = jax.device_get(self.params)
        columns: dict[str, Any] = {"name": list(self.param_names)}
        columns["module"] = list(self.param_modules)
        columns |= {name: np.asarray(value) for name, value in host._asdict().items()}
        return pd.DataFrame(columns)

    def to_frame(self) -> pd.DataFrame:
        """Both views as one tidy table: the module rows then the parameter rows, with a
        `kind` column ("module" or "param"); a column that does not apply to a row's kind
        is nan. The loss is in `frame.attrs["loss"]`, not in every row."""
        import pandas as pd

        modules = self.module_frame().assign(kind="module")
        params = self.param_frame().assign(kind="param")
        frame = pd.concat([modules, params], ignore_index=True)
        frame = frame[["kind", *[c for c in frame.columns if c != "kind"]]]
        frame.attrs["loss"] = float(self.loss)
        return frame

    def __repr__(self) -> str:
        host = jax.device_get(self)
        lines = [
            f"ModelReport: loss {float(host.loss):.4g}, {len(self.module_names)} calls, "
            f"{len(self.param_names)} parameters (forward order)"
        ]
        modules = host.modules
        width = max([len(n) for n in self.module_names] + [4])
        lines.append(f"  {'call':<{width}}  {'in std':>9} {'out std':>9} {'dL/dout':>9}")
        for index, name in enumerate(self.module_names):
            lines.append(
                f"  {name:<{width}}  {float(modules.in_std[index]):9.3g} "
                f"{float(modules.out_std[index]):9.3g} {float(modules.out_grad_norm[index]):9.3g}"
            )
        forward, backward = self.first_nonfinite_forward, self.first_nonfinite_backward
        if forward or backward:
            lines.append(f"  first non-finite: forward {forward}, backward {backward}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- selection


@dataclasses.dataclass(frozen=True)
class _Spec:
    """What `inspect` records: hashable, a static argument of the compiled program."""

    paths: tuple[str, ...]
    types: tuple[type, ...]
    default: bool
    classes: tuple[type, ...]
    activation: Any
    threshold: float

    def select(self, module: nnx.Module, path: str) -> bool:
        if path in self.paths or (self.types and isinstance(module, self.types)):
            return True
        return self.default and (isinstance(module, DEFAULT_TYPES) or _owns_params(module))


def _owns_params(module: nnx.Module) -> bool:
    return any(isinstance(value, nnx.Param) for value in vars(module).values())


def _spec(model, modules, activation, threshold) -> _Spec:
    if modules is None:
        entries: tuple[Any, ...] = ()
    elif isinstance(modules, str | type):
        entries = (modules,)
    elif isinstance(modules, Sequence):
        entries = tuple(modules)
    else:
        raise TypeError(
            "modules must be None, a module path, an nnx.Module subclass or a sequence of "
            f"them, got {modules!r}"
        )
    types, names = [], []
    for entry in entries:
        if isinstance(entry, str):
            names.append(entry)
        elif isinstance(entry, type) and issubclass(entry, nnx.Module):
            types.append(entry)
        else:
            raise TypeError(
                "each entry of modules must be a module path such as 'conv1' or an "
                f"nnx.Module subclass such as nnx.Linear, got {entry!r}"
            )
    by_path = {_path_str(path): module for path, module in nnx.iter_modules(model)}
    unknown = [name for name in names if name not in by_path]
    if unknown:
        valid = [path for path, module in by_path.items() if callable(module)]
        raise ValueError(
            f"unknown module path(s) {unknown} in modules; valid paths (callable modules) are "
            f"{valid} ('' is the model itself)"
        )
    for name in names:
        if not callable(by_path[name]):
            raise TypeError(
                f"module {name!r} ({type(by_path[name]).__name__}) has no __call__, "
                "so it has no output to report"
            )
    absent = [t.__name__ for t in types if not any(isinstance(m, t) for m in by_path.values())]
    if absent:
        present = sorted({type(m).__name__ for m in by_path.values() if callable(m)})
        raise ValueError(
            f"modules names {absent}, but the model has no module of that class; the classes "
            f"of its callable modules are {present}"
        )
    spec = _Spec(tuple(dict.fromkeys(names)), tuple(types), modules is None, (), None, threshold)
    classes = {type(m) for path, m in by_path.items() if callable(m) and spec.select(m, path)}
    if activation is None:
        activation = getattr(model, "activation_name", None)
    elif not (isinstance(activation, str) or callable(activation)):
        raise TypeError(f"activation must be a name, a callable or None, got {activation!r}")
    elif isinstance(activation, str):
        _act.resolve(activation)  # an unknown name is refused here
    order = sorted(classes, key=lambda cls: (cls.__module__, cls.__qualname__))
    return dataclasses.replace(spec, classes=tuple(order), activation=activation)


# ----------------------------------------------------------------------------- inspect


def inspect(
    model: nnx.Module,
    loss_fn: LossFn,
    batch: Any,
    *,
    modules: Sequence[str | type[nnx.Module]] | str | type[nnx.Module] | None = None,
    activation: str | Callable[[jax.Array], jax.Array] | None = None,
    saturation_threshold: float = SATURATION_THRESHOLD,
) -> ModelReport:
    """Per-layer statistics of any NNX model on one batch, in forward order, in one program.

    One jitted call computes the loss, its gradient with respect to every `nnx.Param`, and
    the statistics of every recorded call (see `ModuleStats`), including calls made inside
    `jax.lax.scan` / `nnx.scan` (one row per layer of a stack). The compiled program is
    cached on the model's structure (its `nnx.GraphDef`, modes such as `model.eval()`
    included), the `loss_fn` object and the options: a second call with arrays of the same
    shapes and dtypes and the same `loss_fn` object does not recompile (a fresh `lambda` each
    call does). The model is not changed. Inf and nan never raise: they are counted, and
    `first_nonfinite_forward` / `first_nonfinite_backward` say where they began.

    Args:
        model: the `nnx.Module` to inspect.
        loss_fn: `loss_fn(model, batch) -> scalar` (see `LossFn`), defined once.
        batch: any pytree of arrays, passed to `loss_fn` unchanged.
        modules: which calls to record. None (default): every module that owns an
            `nnx.Param` itself, and `DEFAULT_TYPES` (attention, jaxgrad's blocks). Otherwise
            a module type, a module path such as `"conv1"` or `"blocks.linear"` (a stacked
            module's path records every layer), or a sequence of them; `()` records none.
            A residual block of your own owns no parameter itself, so its output (the
            residual stream, which depth scaling is about) is recorded only when named:
            `modules=[Block, nnx.Linear]` or `modules=["blocks", ...]`.
        activation: the network's activation (a name or a function from
            `jaxgrad.activations.get`), for the saturated fraction of each input; default:
            the model's `activation_name` (jaxgrad's models), else unknown (nan). The
            fraction is read off the input through phi' as a function of phi's value
            (`jaxgrad.activations.derivative_from_output`); where phi' is not a function of
            it (gelu, silu, mish), the fraction is nan.
        saturation_threshold: |phi'| below this counts as saturated, >= 0.

    Returns:
        A `ModelReport`.

    Raises:
        TypeError: if `model` is not an `nnx.Module`, `loss_fn` is not a hashable callable,
            `batch` holds something other than arrays and numbers, an entry of `modules` is
            neither a path nor an `nnx.Module` subclass, or `loss_fn` does not return a
            scalar.
        ValueError: if a path in `modules` names no module of `model` (the message lists the
            valid paths) or a module that `loss_fn` never calls, or a class in `modules` has
            no instance in `model`.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> report = inspect(nnx.Linear(3, 2, rngs=nnx.Rngs(0)),
        ...                  lambda m, x: jnp.mean(m(x) ** 2), jnp.ones((5, 3)))
        >>> report.module_names, report.param_names
        (('',), ('bias', 'kernel'))
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    _check_loss_fn(loss_fn)
    try:
        hash(loss_fn)
    except TypeError:
        raise TypeError(
            f"loss_fn must be hashable (it keys the compiled program), got {loss_fn!r}; "
            "pass a function or a functools.partial"
        ) from None
    threshold = _nonnegative("saturation_threshold", saturation_threshold)
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        if not isinstance(leaf, jax.Array | np.ndarray | np.generic | int | float | complex):
            raise TypeError(
                f"batch must be a pytree of arrays (it is passed to the compiled program), "
                f"got a {type(leaf).__name__} at batch{jax.tree_util.keystr(path)}"
            )
    spec = _spec(model, modules, activation, threshold)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return _inspect_jit(graphdef, loss_fn, spec, params, rest, batch)


def is_named_weight(name: str) -> bool:
    """Whether a parameter's path ends in one of flax's names for a layer's weight.

    Args:
        name: the parameter's path, "."-joined.

    Returns:
        True for a `kernel` or an `embedding`.

    Example:
        >>> from jaxgrad.inspection import is_named_weight
        >>> is_named_weight("blocks.linear.kernel"), is_named_weight("norm.scale")
        (True, False)
    """
    return name.rpartition(".")[2] in ("kernel", "embedding")


def weight_rows(
    module_names: Sequence[str],
    param_names: Sequence[str],
    param_owners: Sequence[str],
    param_shapes: Sequence[tuple[int, ...]],
) -> list[tuple[int, int]]:
    """Which parameter is each recorded call's weight (the one rule for every front end):
    the module's own parameter named `kernel` or `embedding`, else its own parameter of
    two or more axes (the largest, if it owns several); a module with neither (a norm
    layer's scale, a bias alone) is not a layer.

    Args:
        module_names: the recorded calls' names, in forward order.
        param_names, param_owners, param_shapes: each parameter row's path, the name of the
            call it belongs to ("" or a name not in `module_names` when unrecorded), shape.

    Returns:
        (module row, parameter row) per layer, in forward order.

    Example:
        >>> from jaxgrad.inspection import weight_rows
        >>> weight_rows(("dense", "norm"), ("dense.b", "dense.w", "norm.scale"),
        ...             ("dense", "dense", "norm"), ((4,), (3, 4), (4,)))
        [(0, 1)]
    """
    rows = {name: index for index, name in enumerate(module_names)}
    chosen: dict[str, tuple[tuple[bool, int, int], int]] = {}
    for index, (name, owner, shape) in enumerate(
        zip(param_names, param_owners, param_shapes, strict=True)
    ):
        named = is_named_weight(name)
        if owner not in rows or not (named or len(shape) >= 2):
            continue
        rank = (named, len(shape), math.prod(shape))
        if owner not in chosen or rank > chosen[owner][0]:
            chosen[owner] = (rank, index)
    return sorted((rows[owner], index) for owner, (_, index) in chosen.items())


def _calls_with_input(
    layers: list[tuple[int, int]], names: Sequence[str], in_max_abs: np.ndarray
) -> list[tuple[int, int]]:
    """A weight shared by the calls of a scan over time (an RNN cell's) is judged at its first
    call whose input is not all zeros: the first step's recurrent input is the zero initial
    carry, whose output std 0 and dead units would read as a vanished signal. The later calls
    of that call site (the same name but for the step's [t]; none owns a weight row of its
    own, or they would be the layers of a stack) are the candidates."""
    owners = {row for row, _ in layers}
    site = [re.sub(r"\[\d+\]", "[]", name) for name in names]
    chosen = []
    for row, param in layers:
        if in_max_abs[row] == 0:
            later = (
                r
                for r in range(row + 1, len(names))
                if site[r] == site[row] and r not in owners and in_max_abs[r] != 0
            )
            row = next(later, row)
        chosen.append((row, param))
    return sorted(chosen)


def _shapes(tree: Any) -> str:
    """A pytree's arrays as dtype[shape] (other leaves by their type), for a message."""

    def describe(leaf: Any) -> str:
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            return f"{leaf.dtype}{list(leaf.shape)}"
        return type(leaf).__name__

    return str(jax.tree.map(describe, tree)).replace("'", "")


def _listing(names: tuple[str, ...], limit: int = 8) -> str:
    """Names for a message: the first `limit`, and how many more."""
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _nonnegative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- the program


def _run(graphdef, loss_fn, spec: _Spec, rest, batch, params, taps, notes=None):
    """loss_fn on a copy of the model, recording: (loss, records, layout, the state other
    than the parameters after the call: batch-norm statistics, RNG counters). `notes`, a
    dict, gets "foreign_calls": the calls made inside another transformation."""
    model = nnx.merge(graphdef, params, rest, copy=True)
    dphi = None if spec.activation is None else _act.derivative_from_output(spec.activation)
    capture = _capture.Capture(model, spec.select, taps, dphi, spec.threshold)
    with capture.active_on(set(spec.classes)):
        loss = _scalar_loss(loss_fn(model, batch))
    if notes is not None:
        notes["foreign_calls"] = capture.foreign_calls
    return loss, capture.records, capture.layout, nnx.split(model, nnx.Param, ...)[2]


def _scalar_loss(loss: Any) -> jax.Array:
    """The loss as an array, refused (at trace time) unless it is a real scalar."""
    loss = jnp.asarray(loss)
    if loss.shape != () or not jnp.issubdtype(loss.dtype, jnp.floating):
        raise TypeError(
            f"loss_fn must return a real scalar, got an array of shape {loss.shape} and dtype "
            f"{loss.dtype}; reduce it, e.g. with .mean()"
        )
    return loss


def learn_layout(graphdef, loss_fn, spec: _Spec, params, rest, batch, *, warn: bool = True):
    """What `loss_fn` records (its `capture` layout), from an abstract pass (no compute);
    `warn`: an `UnrecordedWarning` for selected modules with no recorded call."""
    learned = {}

    def plan(params):
        loss, _records, layout, _rest = _run(
            graphdef, loss_fn, spec, rest, batch, params, None, notes=learned
        )
        learned["layout"] = layout
        return loss

    try:
        jax.eval_shape(plan, params)
    except Exception as error:  # the user's code failed: say with what it was called
        error.add_note(
            "jaxgrad: raised while tracing loss_fn(model, batch) with batch "
            f"{_shapes(batch)}; does the batch have the shape the model expects?"
        )
        raise
    _check_named_paths_called(spec, learned["layout"])
    if warn and learned["foreign_calls"]:
        _warn_unrecorded(graphdef, spec, learned["layout"], params, rest)
    return learned["layout"]


class ParamRows(NamedTuple):
    """How parameters become rows (static): one per parameter, or per layer of one stacked
    by a top-level scan, in forward order.

    Attributes:
        names, owners, shapes: each row's name, the module call it belongs to, its shape.
        paths: the parameters' paths in the params' own order, with their stack length
            (None where not stacked).
        permutation: rows in forward order, from the parameters' rows laid end to end.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad.inspection import ParamRows
        >>> layer = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        >>> param_rows = ParamRows(
        ...     names=("bias", "kernel"), owners=("", ""), shapes=((2,), (3, 2)),
        ...     paths=((("bias",), None), (("kernel",), None)), permutation=(0, 1))
        >>> ones = jax.tree.map(jnp.ones_like, nnx.state(layer, nnx.Param))
        >>> [round(v, 4) for v in param_rows.norms(ones).tolist()]  # sqrt(2), sqrt(6)
        [1.4142, 2.4495]
    """

    names: tuple[str, ...]
    owners: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    paths: tuple[tuple[tuple, int | None], ...]
    permutation: tuple[int, ...]

    def norms(self, tree) -> jax.Array:
        """The L2 norm of each row's slice of `tree` (shaped like the params: gradients,
        updates, Adam's moments), in row order."""
        flat = {tuple(path): value for path, value in nnx.to_flat_state(tree)}
        pieces = []
        for path, length in self.paths:
            value = flat[path]
            value = value.get_value() if isinstance(value, nnx.Variable) else value
            axes = None if length is None else tuple(range(1, jnp.ndim(value)))
            pieces.append(jnp.reshape(_stats.norm(value, axes, one_pass=True), (-1,)))
        if not pieces:
            return jnp.zeros((0,), jnp.float32)
        return jnp.concatenate(pieces)[np.asarray(self.permutation, dtype=np.int32)]


class _LayoutChanged(Exception):
    """A trace recorded other calls, or other shapes, than the layout it was given."""


def measure(graphdef, loss_fn, spec: _Spec, params, rest, batch, layout):
    """The loss, its gradients and the `ModelReport` of one batch, with `layout` from
    `learn_layout`: the core that `inspect` jits and the training recorder runs in a step.

    A batch of other shapes than the one `layout` was learned from (a smaller last batch,
    another sequence length) gets its own layout; it must record the same calls.

    Returns:
        (loss, parameter gradients, the state other than the parameters after the call,
        report).

    Raises:
        ValueError: when this batch makes `loss_fn` record other calls than `layout`'s.
    """
    try:
        return _measure(graphdef, loss_fn, spec, params, rest, batch, layout)
    except _LayoutChanged:
        pass
    fresh = learn_layout(graphdef, loss_fn, spec, params, rest, batch, warn=False)

    def calls(layout):
        return [(row.name, row.module_type, row.layer) for row in _capture.rows(layout)]

    if calls(fresh) != calls(layout):
        was, now = [c[0] for c in calls(layout)], [c[0] for c in calls(fresh)]
        raise ValueError(
            f"loss_fn records other calls with the batch {_shapes(batch)} than with the batch "
            f"the recorder learned its layout from: {len(was)} calls then "
            f"({_listing(tuple(was))}), {len(now)} now ({_listing(tuple(now))}); build a "
            "Recorder for this batch's shapes"
        )
    return _measure(graphdef, loss_fn, spec, params, rest, batch, fresh)


def _measure(graphdef, loss_fn, spec: _Spec, params, rest, batch, layout):
    taps = _capture.tap_structure(layout)

    def loss_of(params, taps):
        loss, records, traced, new_rest = _run(graphdef, loss_fn, spec, rest, batch, params, taps)
        if traced != layout:
            raise _LayoutChanged
        return loss, (records, new_rest)

    (loss, (records, new_rest)), (param_grads, tap_grads) = jax.value_and_grad(
        loss_of, argnums=(0, 1), has_aux=True
    )(params, taps)
    rows = _capture.rows(layout)
    modules = _module_stats(layout, rows, records, tap_grads)
    param_rows = param_rows_of(layout, rows, params)
    report = ModelReport(
        loss=loss,
        modules=modules,
        params=_param_stats(param_rows, params, param_grads),
        module_names=tuple(row.name for row in rows),
        module_types=tuple(row.module_type for row in rows),
        module_layers=tuple(row.layer for row in rows),
        param_names=param_rows.names,
        param_modules=param_rows.owners,
        param_shapes=param_rows.shapes,
        activation=None if spec.activation is None else _act.name_of(spec.activation),
    )
    return loss, param_grads, new_rest, report


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _inspect_jit(graphdef, loss_fn, spec: _Spec, params, rest, batch) -> ModelReport:
    # A first, abstract pass learns what is recorded (the layout and the outputs' shapes),
    # so that the zero taps can be made; the second pass records and differentiates.
    layout = learn_layout(graphdef, loss_fn, spec, params, rest, batch)
    return measure(graphdef, loss_fn, spec, params, rest, batch, layout)[3]


def _check_named_paths_called(spec: _Spec, layout) -> None:
    called = {row.path for row in _capture.rows(layout)}
    never = [path for path in spec.paths if path not in called]
    if never:
        raise ValueError(
            f"module(s) {never} named in modules were never called by loss_fn, so they have "
            "no statistics to report"
        )


def _check_loss_fn(loss_fn: object) -> None:
    """A TypeError, before any tracing, unless `loss_fn` can be called as
    `loss_fn(model, batch)`: what `inspect`, the training recorder and the coordinate check
    call. A loss of the model and two arrays, `loss_fn(model, x, y)`, gets the wrapper to use."""
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be callable as loss_fn(model, batch) -> scalar, got {loss_fn!r}"
        )
    try:
        signature = _signature(loss_fn, follow_wrapped=False)  # an adapter's own
    except (TypeError, ValueError):  # no signature to read (a builtin): let the call tell
        return
    try:
        signature.bind(None, None)
    except TypeError:
        name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
        raise TypeError(
            f"loss_fn must be callable as loss_fn(model, batch) -> scalar, with the batch one "
            f"argument (a tuple or a dict for several arrays); {name}{signature} is not. For "
            "loss_fn(model, x, y) pass lambda model, batch: loss_fn(model, *batch) with "
            "batch = (x, y)"
        ) from None


class UnrecordedWarning(UserWarning):
    """Calls were made inside another transformation of the loss (`nnx.remat` /
    `jax.checkpoint`, `jax.vmap`, ...), which are not recorded, and modules with parameters
    that `inspect` (or the training recorder) would record have no recorded call. Their
    layers are missing from the per-layer view; their parameters are tabled whole, with no
    module (`param_modules` "").

    Example:
        >>> import warnings
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import inspect
        >>> from jaxgrad.inspection import UnrecordedWarning
        >>> model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)),
        ...                        nnx.Linear(4, 1, rngs=nnx.Rngs(1)))
        >>> def loss_fn(model, x):  # the second layer inside nnx.remat
        ...     return jnp.mean(nnx.remat(lambda m, h: m(h))(model.layers[1], model.layers[0](x)))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     report = inspect(model, loss_fn, jnp.ones((5, 3)))
        >>> report.module_names, caught[0].category is UnrecordedWarning
        (('layers.0',), True)
    """


def _warn_unrecorded(graphdef, spec: _Spec, layout, params, rest) -> None:
    """After calls were made inside another transformation of the loss (`nnx.remat` /
    `jax.checkpoint`, `jax.vmap`, ...), warn (`UnrecordedWarning`) of the modules holding
    parameters that the selection takes but whose calls were not recorded. Their layers are
    missing from the per-layer view, and their parameters are tabled whole, unowned. (A
    module whose weights the model reads without calling it, an RNN's recurrent kernel,
    has no call to record either; with no call inside a transformation nothing is said.)"""
    called = {row.path for row in _capture.rows(layout)}
    model = nnx.merge(graphdef, params, rest, copy=True)
    missing = []
    for path, node in nnx.iter_graph(model):
        name = ".".join(str(part) for part in path)
        selected = isinstance(node, nnx.Module) and _owns_params(node)
        if selected and spec.select(node, name) and name not in called:
            missing.append(name)
    if missing:
        warnings.warn(
            f"no call of {', '.join(missing)} was recorded, so their layers are missing from "
            "the per-layer view (their parameters are tabled whole, with no module): calls "
            "made inside nnx.remat / jax.checkpoint, jax.vmap or another transformation of "
            "the loss are not recorded (nor are modules the loss does not call); inspect the "
            "model without that transformation (for example a remat-free copy of the same "
            "parameters) to see each layer",
            UnrecordedWarning,
            stacklevel=_user_stacklevel(),
        )


def _user_stacklevel() -> int:
    """`warnings.warn`'s stacklevel of the first caller outside jaxgrad, jax and flax."""
    here = os.path.dirname(os.path.dirname(__file__))  # jaxgrad's package
    libraries = (here, os.path.dirname(jax.__file__ or ""), os.path.dirname(nnx.__file__ or ""))
    frame, level = sys._getframe(1), 1  # the warning function itself is level 1
    while frame is not None and frame.f_code.co_filename.startswith(libraries):
        frame, level = frame.f_back, level + 1
    return level


def _sites(layout, keys=(), leading=()):
    """Every site with where it sits and its stacked leading shape, in layout order."""
    out = []
    for entry in layout:
        if isinstance(entry, _capture.Site):
            out.append(((*keys, entry.key), leading))
        else:
            out += _sites(entry.layout, (*keys, entry.key), (*leading, entry.length))
    return out


def _get(tree, keys):
    for key in keys:
        tree = tree[key]
    return tree


def _module_stats(layout, rows, records, tap_grads) -> ModuleStats:
    """Gather every site's stacked record into one entry per row, in row order (a static
    permutation of the sites' entries laid end to end: compile time is flat in depth)."""
    sites = _sites(layout)
    offsets, total = {}, 0
    for keys, leading in sites:
        offsets[keys] = total
        total += math.prod(leading)
    order = np.array(
        [
            offsets[row.keys]
            + (np.ravel_multi_index(row.layer, dict(sites)[row.keys]) if row.layer else 0)
            for row in rows
        ],
        dtype=np.int32,
    )

    def laid_out(per_site):
        flat = jnp.concatenate(
            [jnp.reshape(per_site(keys, leading), (-1,)) for keys, leading in sites]
        )
        return flat[order]

    def field(get):
        return laid_out(lambda keys, leading: get(_get(records, keys)))

    norms = {}
    for keys, _leading in sites:
        norm = _get(tap_grads, keys)  # the norm of dL/d(output): see `capture.gradient_tap`
        norms[keys] = (norm, ~jnp.isfinite(norm))

    def grad_norm(keys, leading):
        return norms[keys][0]

    def grad_nonfinite(keys, leading):
        return norms[keys][1]

    if not sites:
        empty = jnp.zeros((0,), jnp.float32)
        return ModuleStats(*([empty] * 13), *([jnp.zeros((0,), bool)] * 3))
    return ModuleStats(
        in_mean=field(lambda r: r.input.mean),
        in_std=field(lambda r: r.input.std),
        in_rms=field(lambda r: r.input.rms),
        in_max_abs=field(lambda r: r.input.max_abs),
        out_mean=field(lambda r: r.output.mean),
        out_std=field(lambda r: r.output.std),
        out_rms=field(lambda r: r.output.rms),
        out_max_abs=field(lambda r: r.output.max_abs),
        out_grad_norm=laid_out(grad_norm),
        dead_frac=field(lambda r: r.dead_frac),
        saturated_frac=field(lambda r: r.saturated_frac),
        attn_max_logit=field(lambda r: r.attn_max_logit),
        attn_entropy=field(lambda r: r.attn_entropy),
        nonfinite_in=field(lambda r: r.input.nonfinite),
        nonfinite_out=field(lambda r: r.output.nonfinite),
        nonfinite_grad=laid_out(grad_nonfinite),
    )


def param_rows_of(layout, rows, params) -> ParamRows:
    """One row per parameter, or per layer of a parameter stacked by a top-level scan,
    ordered by the row of the module it belongs to (its first call), then model order."""
    stacked = _capture.stacked_params(layout)
    position = {}
    for index, row in enumerate(rows):
        position.setdefault((row.path, row.layer[:1]), (index, row.name))
        position.setdefault((row.path, None), (index, row.name))
    paths, entries = [], []  # entries: (sort key, ..., name, owner, shape, index)
    offset = 0
    for order, (path, weight) in enumerate(nnx.to_flat_state(params)):
        shape = tuple(weight.get_value().shape)
        parts = [str(part) for part in path]
        owners = [".".join(parts[:size]) for size in range(len(parts) - 1, -1, -1)]
        if tuple(path) in stacked:
            length, root, _ = stacked[tuple(path)]
            paths.append((tuple(path), length))
            prefix = len(root) if root else len(parts) - 1
            for layer in range(length):
                name = ".".join([*parts[:prefix]]) + f"[{layer}]"
                name += "".join("." + part for part in parts[prefix:])
                where = _owner(position, owners, (layer,))
                entries.append((where[0], order, layer, name, where[1], shape[1:], offset + layer))
            offset += length
        else:
            paths.append((tuple(path), None))
            where = _owner(position, owners, None)
            entries.append((where[0], order, 0, ".".join(parts), where[1], shape, offset))
            offset += 1
    entries.sort()
    return ParamRows(
        names=tuple(entry[3] for entry in entries),
        owners=tuple(entry[4] for entry in entries),
        shapes=tuple(tuple(entry[5]) for entry in entries),
        paths=tuple(paths),
        permutation=tuple(int(entry[-1]) for entry in entries),
    )


def _param_stats(param_rows: ParamRows, params, grads) -> ParamStats:
    grad_norm = param_rows.norms(grads)
    weight_norm = param_rows.norms(params)
    dtype = jnp.result_type(grad_norm.dtype, weight_norm.dtype)
    grad_norm, weight_norm = grad_norm.astype(dtype), weight_norm.astype(dtype)
    ratio = jnp.where(weight_norm == 0, jnp.nan, grad_norm / weight_norm)
    nonfinite = ~(jnp.isfinite(grad_norm) & jnp.isfinite(weight_norm))
    return ParamStats(grad_norm, weight_norm, ratio.astype(dtype), nonfinite)


def _owner(position, owners, layer) -> tuple[float, str]:
    """(the row index of the innermost recorded module holding a parameter, its name)."""
    for owner in owners:
        if layer is not None and (owner, layer) in position:
            return position[(owner, layer)]
        if (owner, None) in position and layer is None:
            return position[(owner, None)]
    return (math.inf, "")


__all__ = [
    "DEFAULT_TYPES",
    "LossFn",
    "ModelReport",
    "ModuleStats",
    "ParamRows",
    "ParamStats",
    "UnrecordedWarning",
    "inspect",
    "is_named_weight",
    "on_call_outputs",
    "weight_rows",
]
