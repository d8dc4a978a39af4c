"""One-batch health report of a Flax NNX model: gradient and weight norms per parameter,
activation statistics per module output.

`inspect(model, loss_fn, batch)` runs one compiled program that computes the loss, the gradient
of every `nnx.Param` and the outputs of the selected modules (every `nnx.Linear` and `nnx.Conv`
by default), and returns a `ModelReport` of scalar arrays with a `to_frame()` pandas view.

How outputs are captured: with Flax's own intermediate-capture mechanism, `nnx.capture(loss_fn,
nnx.Intermediate)`, into which the selected modules `sow` their `__call__` outputs (under the
name `"__call__"`, the key `nnx.capture(method_outputs=...)` uses). The model's code is not
changed: for the duration of the trace (never at run time; a compiled call runs no Python), the
`__call__` of each selected module's class is wrapped so that the selected *instances*, and
only they, sow their output. We do not use `nnx.capture(method_outputs=nnx.Intermediate)`
directly, which wraps every public callable in the `__dict__` of every module class in the
model, because (Flax 0.12.8) it (1) misses a module whose class inherits `__call__` (a
`class Dense(nnx.Linear)` with only a new `__init__` records nothing unless a plain
`nnx.Linear` happens to be in the model too), and (2) breaks models with callable class
attributes that are not methods, e.g. `act = staticmethod(jax.nn.relu)`, which it rebinds as
methods. Like `nnx.capture`, the wrapping patches classes while tracing, so do not trace
`inspect` of models sharing a class from two threads at once.

The model is never mutated. The report is computed on a pure `nnx.split` copy: a BatchNorm in
training mode normalizes with the batch's statistics, as in training, but the running averages
it would update are discarded, as are advanced RNG counters (so dropout draws the same mask on
every call). In evaluation mode (`model.eval()`) the running averages are used.

Limitations: modules that `loss_fn` never calls directly have no output entry; this includes
layers stored stacked and applied inside `jax.lax.scan` / `nnx.scan` / `nnx.vmap` (their
parameters are reported, with norms over the whole stack). Per-layer statistics of stacked
layers are the job of the scan's own outputs.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from flax import nnx
    >>> from jaxgrad.inspection import inspect
    >>> model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
    ...                        nnx.Linear(8, 3, rngs=nnx.Rngs(1)))
    >>> def loss_fn(model, batch):
    ...     x, y = batch
    ...     return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
    >>> batch = (jnp.ones((16, 4)), jnp.zeros((16,), jnp.int32))
    >>> report = inspect(model, loss_fn, batch)
    >>> list(report.params)
    ['layers.0.bias', 'layers.0.kernel', 'layers.2.bias', 'layers.2.kernel']
    >>> list(report.outputs)
    ['layers.0', 'layers.2']
    >>> report.to_frame().shape
    (6, 10)

References:
    Glorot and Bengio 2010, "Understanding the difficulty of training deep feedforward neural
    networks" (per-layer gradient and activation statistics). Pascanu et al. 2013, "On the
    difficulty of training recurrent neural networks" (vanishing and exploding gradient norms).
    You et al. 2017, "Large Batch Training of Convolutional Networks" (the per-layer ratio of
    gradient norm to weight norm). Lu et al. 2020, "Dying ReLU and Initialization: Theory and
    Numerical Examples" (dead units).
"""

from __future__ import annotations

import collections
import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgrad import stats as _stats

if TYPE_CHECKING:
    import pandas as pd

#: Module types whose outputs `inspect` reports when `modules` is not given.
DEFAULT_MODULES: tuple[type[nnx.Module], ...] = (nnx.Linear, nnx.Conv)

_SOW_NAME = "__call__"  # the key nnx.capture(method_outputs=...) uses for __call__ outputs


class LossFn(Protocol):
    """The contract of `inspect`'s `loss_fn`: `loss_fn(model, batch) -> scalar`.

    It is called with a copy of the model (same graph, same values) and the batch exactly as
    given to `inspect` (any pytree, e.g. `(x, y)`), under `jax.jit`: it must be traceable and
    return a real scalar array. Calling modules in it is all it takes for their outputs to be
    reported; it must not return or keep the model's arrays.
    """

    def __call__(self, model: Any, batch: Any) -> jax.Array: ...


class ParamStats(NamedTuple):
    """Statistics of one parameter (one `nnx.Param`) and its gradient, all scalar arrays.

    Attributes:
        grad_norm: L2 (Frobenius) norm of the gradient of the loss with respect to it.
        weight_norm: L2 norm of the parameter's value.
        ratio: `grad_norm / weight_norm`: the size of a gradient step relative to the weight
            (per unit learning rate). Where `weight_norm` is 0 it is `inf`, or 0 if
            `grad_norm` is 0 too; NaN in either norm gives NaN.
        nonfinite: number of entries where the gradient or the weight is NaN or infinite.
    """

    grad_norm: jax.Array
    weight_norm: jax.Array
    ratio: jax.Array
    nonfinite: jax.Array


class OutputStats(NamedTuple):
    """Statistics of one module output over the batch, all scalar arrays.

    Attributes:
        mean: mean over all entries of the output.
        std: standard deviation over all entries (population, `ddof=0`).
        dead_frac: fraction of units (entries of the last axis, the channels of a JAX/Flax
            convolution) whose output is exactly 0 for every example and every position.
        nonfinite: number of entries of the output that are NaN or infinite.
    """

    mean: jax.Array
    std: jax.Array
    dead_frac: jax.Array
    nonfinite: jax.Array


class ModelReport(NamedTuple):
    """The result of `inspect`: a pytree of scalar arrays (it jits, vmaps and `device_get`s).

    Attributes:
        loss: the value of `loss_fn(model, batch)`.
        params: parameter path (its attribute path in the model joined with ".", e.g.
            `"conv1.kernel"`, `"blocks.0.linear.kernel"`) -> `ParamStats`, in the model's order.
        outputs: module path (e.g. `"conv1"`) -> `OutputStats`, in the order the modules were
            first called; a module called k > 1 times has k entries `"path[0]"`...
            `"path[k-1]"`, one per call.
    """

    loss: jax.Array
    params: dict[str, ParamStats]
    outputs: dict[str, OutputStats]

    def first_nonfinite_output(self) -> str | None:
        """The first module output, in call order, with a NaN or infinite entry, or None."""
        for path, stats in self.outputs.items():
            if int(stats.nonfinite) > 0:
                return path
        return None

    def to_frame(self) -> pd.DataFrame:
        """A tidy pandas view: one row per parameter, then one row per module output.

        Returns:
            A DataFrame with columns `kind` ("param" or "output"), `path`, `grad_norm`,
            `weight_norm`, `ratio`, `mean`, `std`, `dead_frac`, `nonfinite` (the count of
            non-finite entries), `loss`. A statistic that does not apply to a row's kind is NaN.
        """
        import pandas as pd  # the pandas view lives at the edge, not in the numeric core

        host = jax.device_get(self)
        param_cols = ParamStats._fields[:-1]
        output_cols = OutputStats._fields[:-1]
        columns = ["kind", "path", *param_cols, *output_cols, "nonfinite", "loss"]
        rows = []
        for path, stats in host.params.items():
            row = dict.fromkeys(columns, float("nan"))
            row.update(kind="param", path=path, **{f: float(getattr(stats, f)) for f in param_cols})
            row.update(nonfinite=int(stats.nonfinite), loss=float(host.loss))
            rows.append(row)
        for path, stats in host.outputs.items():
            row = dict.fromkeys(columns, float("nan"))
            row.update(
                kind="output", path=path, **{f: float(getattr(stats, f)) for f in output_cols}
            )
            row.update(nonfinite=int(stats.nonfinite), loss=float(host.loss))
            rows.append(row)
        frame = pd.DataFrame(rows, columns=columns)
        return frame.astype({"nonfinite": "int64"})


def inspect(
    model: nnx.Module,
    loss_fn: LossFn,
    batch: Any,
    *,
    modules: Sequence[str | type[nnx.Module]] | str | type[nnx.Module] | None = None,
) -> ModelReport:
    """Gradient and weight norms per parameter and output statistics per module, on one batch.

    One jitted call computes the loss, its gradient with respect to every `nnx.Param`, and the
    outputs of the selected modules. The compiled program is cached on the model's structure
    (its `nnx.GraphDef`, including modes such as `model.train()` / `model.eval()`), the
    `loss_fn` object and the selected paths: a second call with arrays of the same shapes and
    dtypes and the same `loss_fn` object does not retrace (a fresh `lambda` each call does).
    The model is not changed, BatchNorm statistics and RNG counters included (see the module
    docstring). NaN and infinite values never raise: they appear in the numbers and in the
    `nonfinite` counts.

    Args:
        model: the `nnx.Module` to inspect; unchanged by the call.
        loss_fn: `loss_fn(model, batch) -> scalar` (see `LossFn`), e.g.
            `lambda m, b: optax.softmax_cross_entropy_with_integer_labels(m(b[0]), b[1]).mean()`
            defined once.
        batch: any pytree of arrays, passed to `loss_fn` unchanged.
        modules: which module outputs to report. None (default): every `nnx.Linear` and
            `nnx.Conv` (subclasses included). Otherwise a module type, a module path such as
            `"conv1"` or `"blocks.0.linear"`, or a sequence of them (types select all
            instances, subclasses included; `()` reports no outputs). A named path must exist
            and be called by `loss_fn`.

    Returns:
        A `ModelReport(loss, params, outputs)` of scalar arrays, with `to_frame()`.

    Raises:
        TypeError: if `model` is not an `nnx.Module`, `loss_fn` is not a hashable callable,
            an entry of `modules` is neither a path string nor an `nnx.Module` subclass,
            `loss_fn` does not return a scalar, or a selected module's output is not an array.
        ValueError: if a path in `modules` names no module of `model` (the message lists the
            valid paths), or names a module that `loss_fn` never calls.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad.inspection import inspect
        >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        >>> report = inspect(model, lambda m, x: jnp.mean(m(x) ** 2), jnp.ones((5, 3)))
        >>> sorted(report.params), list(report.outputs)
        (['bias', 'kernel'], [''])
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be callable as loss_fn(model, batch) -> scalar, got {loss_fn!r}"
        )
    try:
        hash(loss_fn)
    except TypeError:
        raise TypeError(
            f"loss_fn must be hashable (it keys the compiled program), got {loss_fn!r}; "
            "pass a function or a functools.partial"
        ) from None
    selected, named = _select_modules(model, modules)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return _inspect_jit(graphdef, loss_fn, selected, named, params, rest, batch)


# ----------------------------------------------------------------------------- selection


def _path_str(path: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in path)


def _select_modules(
    model: nnx.Module, modules: Sequence[str | type[nnx.Module]] | str | type | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Validate `modules` against the model: (selected paths in model order, named paths)."""
    if modules is None:
        entries: tuple[Any, ...] = DEFAULT_MODULES
    elif isinstance(modules, str | type):
        entries = (modules,)
    elif isinstance(modules, Sequence):
        entries = tuple(modules)
    else:
        raise TypeError(
            "modules must be None, a module path, an nnx.Module subclass or a sequence of "
            f"them, got {modules!r}"
        )
    types: list[type[nnx.Module]] = []
    names: list[str] = []
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
        raise ValueError(
            f"unknown module path(s) {unknown} in modules; valid paths (callable modules) are "
            f"{[path for path, module in by_path.items() if callable(module)]} "
            "('' is the model itself)"
        )
    for name in names:
        if not callable(by_path[name]):
            raise TypeError(
                f"module {name!r} ({type(by_path[name]).__name__}) has no __call__, "
                "so it has no output to report"
            )
    selected = tuple(
        path
        for path, module in by_path.items()
        if path in names or (types and isinstance(module, tuple(types)) and callable(module))
    )
    return selected, tuple(dict.fromkeys(names))


# ----------------------------------------------------------------------------- capture


@contextlib.contextmanager
def on_call_outputs(
    targets: dict[int, tuple[str, nnx.Module]], record: Callable[[nnx.Module, str, Any], None]
) -> Iterator[None]:
    """While active, each module in `targets` (id -> (path, module)) passes its `__call__`
    output to `record(module, path, output)`.

    Wraps `__call__` of the targets' classes (resolved through the MRO, so an inherited
    `__call__` is covered); other instances of those classes pass through untouched, and a
    target's nested `super().__call__()` records once. Not thread-safe: the classes are
    patched while the context is active.
    """
    classes = {type(module) for _, module in targets.values()}
    originals = {cls: (cls.__dict__.get("__call__"), cls.__call__) for cls in classes}
    active: set[int] = set()

    def wrap(call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def recording_call(self: nnx.Module, *args: Any, **kwargs: Any) -> Any:
            if id(self) not in targets or id(self) in active:
                return call(self, *args, **kwargs)
            active.add(id(self))
            try:
                output = call(self, *args, **kwargs)
            finally:
                active.discard(id(self))
            record(self, targets[id(self)][0], output)
            return output

        return recording_call

    try:
        for cls, (_, resolved) in originals.items():
            cls.__call__ = wrap(resolved)
        yield
    finally:
        for cls, (own, _) in originals.items():
            if own is None:
                del cls.__call__
            else:
                cls.__call__ = own


def _sow_call_outputs(targets: dict[int, tuple[str, nnx.Module]], calls: list[str]):
    """Each target sows its `__call__` output and appends its path to `calls` (call order)."""

    def record(module: nnx.Module, path: str, output: Any) -> None:
        module.sow(nnx.Intermediate, _SOW_NAME, output)
        calls.append(path)

    return on_call_outputs(targets, record)


def _capture_outputs(
    loss_fn: LossFn,
    model: nnx.Module,
    batch: Any,
    selected: tuple[str, ...],
    named: tuple[str, ...],
) -> tuple[jax.Array, list[tuple[str, Any]]]:
    """Run `loss_fn` under `nnx.capture`; return (loss, [(key, output)] in call order)."""
    targets = {
        id(module): (_path_str(path), module)
        for path, module in nnx.iter_modules(model)
        if _path_str(path) in selected
    }
    calls: list[str] = []
    with _sow_call_outputs(targets, calls):
        loss, captured = nnx.capture(loss_fn, nnx.Intermediate)(model, batch)
    never_called = [name for name in named if name not in calls]
    if never_called:
        raise ValueError(
            f"module(s) {never_called} named in modules were never called by loss_fn, "
            "so they have no output to report (modules applied inside jax.lax.scan or an "
            "nnx transform are copies and are not seen)"
        )
    sown = {
        _path_str(path[:-1]): variable.get_value()
        for path, variable in nnx.to_flat_state(captured)
        if path and path[-1] == _SOW_NAME and _path_str(path[:-1]) in calls
    }
    counts = collections.Counter(calls)
    seen: collections.Counter[str] = collections.Counter()
    outputs = []
    for path in calls:
        index = seen[path]
        seen[path] += 1
        key = path if counts[path] == 1 else f"{path}[{index}]"
        outputs.append((key, sown[path][index]))
    return loss, outputs


# ----------------------------------------------------------------------------- statistics


def _float(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _param_stats(grad: jax.Array, weight: jax.Array) -> ParamStats:
    grad, weight = _float(grad), _float(weight)
    grad_norm, weight_norm = _stats.norm(grad), _stats.norm(weight)
    at_zero = weight_norm == 0
    ratio = jnp.where(
        at_zero,
        jnp.where(grad_norm == 0, jnp.zeros_like(grad_norm), grad_norm * jnp.inf),
        grad_norm / jnp.where(at_zero, jnp.ones_like(weight_norm), weight_norm),
    )
    nonfinite = jnp.sum(~(jnp.isfinite(grad) & jnp.isfinite(weight)), dtype=jnp.int32)
    return ParamStats(grad_norm, weight_norm, ratio, nonfinite)


def _output_stats(path: str, output: Any) -> OutputStats:
    if not isinstance(output, jax.Array):
        raise TypeError(
            f"the output of module {path!r} is a {type(output).__name__}, not an array; "
            "select modules that return a single array"
        )
    output = _float(output)
    units = output.reshape(-1, output.shape[-1] if output.ndim else 1)
    dead = jnp.all(units == 0, axis=0)
    mean, std = _stats.mean_std(output)
    return OutputStats(
        mean=mean,
        std=std,
        dead_frac=jnp.mean(dead.astype(output.dtype)),
        nonfinite=jnp.sum(~jnp.isfinite(output), dtype=jnp.int32),
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _inspect_jit(
    graphdef: nnx.GraphDef,
    loss_fn: LossFn,
    selected: tuple[str, ...],
    named: tuple[str, ...],
    params: nnx.State,
    rest: nnx.State,
    batch: Any,
) -> ModelReport:
    def loss_and_outputs(
        params: nnx.State, rest: nnx.State
    ) -> tuple[jax.Array, list[tuple[str, Any]]]:
        # fresh Variables at this trace level; what the model writes to `rest` is discarded
        model = nnx.merge(graphdef, params, rest, copy=True)
        loss, outputs = _capture_outputs(loss_fn, model, batch, selected, named)
        loss = jnp.asarray(loss)
        if loss.shape != ():
            raise TypeError(
                f"loss_fn must return a scalar, got an array of shape {loss.shape}; "
                "reduce it, e.g. with .mean()"
            )
        return loss, outputs

    (loss, outputs), grads = jax.value_and_grad(loss_and_outputs, has_aux=True)(params, rest)
    flat_weights = dict(nnx.to_flat_state(params))
    param_stats = collections.OrderedDict(
        (_path_str(path), _param_stats(grad.get_value(), flat_weights[path].get_value()))
        for path, grad in nnx.to_flat_state(grads)
    )
    output_stats = collections.OrderedDict(
        (path, _output_stats(path, output)) for path, output in outputs
    )
    return ModelReport(loss=loss, params=param_stats, outputs=output_stats)
