"""Seeing inside a Flax NNX model without changing its code: what `inspect` records.

While `loss_fn(model, batch)` is traced inside a `Capture`:

- the `__call__` of every class of a recorded module is wrapped (resolved through the MRO,
  so an inherited `__call__` is covered; other instances pass through untouched), so that a
  recorded call reports the `Moments` of its input and output, the dead fraction and (where
  the activation is known) the saturated fraction of its input, and passes its output through
  `gradient_tap`: the identity, whose backward pass gives a scalar "tap" the norm of
  dL/d(output), from the same backward pass that gives the parameter gradients;
- `jax.lax.scan` is replaced by a scan that feeds its body a stacked tap per recorded call
  and carries the records made inside the body out as extra per-iteration outputs: layers
  stacked on a leading axis and applied with `jax.lax.scan` or `nnx.scan` give one record per
  layer, and compile time does not grow with depth. A module copy made inside the body
  (`nnx.merge` of a slice, which is what `nnx.scan` does) is recognised by its parameters:
  they are the very slices the scan made of the model's stacked parameters;
- the attention function of `nnx.MultiHeadAttention` is wrapped to report the largest
  attention logit and the mean entropy of the attention weights (attention-logit growth is a
  known cause of divergence, Wortsman et al. 2023, "Small-scale proxies for large-scale
  Transformer training instabilities").

All of this happens while tracing; a compiled call runs no Python. Calls made inside another
transformation of the loss (`jax.checkpoint`, `jax.vmap`, `nnx.remat`, ...) are not recorded:
their values belong to that transformation's trace (`inspect` names such modules in an
`UnrecordedWarning`). A module that `loss_fn` reaches through
`from jax.lax import scan` (bound before the capture) is not seen as stacked.

Thread-safe: while any thread captures, the classes and `jax.lax.scan` are replaced by
dispatchers (`patched`) that apply the wrappers of the calling thread's own captures, so
other threads' calls pass through untouched, and captures in several threads at once (a
report training its remedies on two cores) each see their own calls.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax._src import core as _core  # the current trace: records are made only in ours

from jaxgrad import stats as _stats

Path = tuple[Any, ...]


# ----------------------------------------------------------------------------- patching

_SCAN = "jax.lax.scan"  # the key of jax.lax.scan among the patched classes
_PATCH_LOCK = threading.Lock()
_PATCHED: dict[Any, list[Any]] = {}  # class or _SCAN -> [captures using it, its own attribute]
_THREAD = threading.local()  # .wraps: class or _SCAN -> this thread's wrappers, outermost first


def _thread_wraps(key: Any) -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    wraps = getattr(_THREAD, "wraps", None)
    if wraps is None:
        wraps = _THREAD.wraps = {}
    return wraps.setdefault(key, [])


def _inherited_call(cls: type) -> Callable[..., Any]:
    """The `__call__` `cls` inherits (its first base's in the MRO that defines one)."""
    for base in cls.__mro__[1:]:
        if "__call__" in base.__dict__:
            return base.__dict__["__call__"]
    raise TypeError(f"{cls.__name__} has no __call__ to record")


def _through(wraps: list[Callable[..., Any]], call: Callable[..., Any]) -> Callable[..., Any]:
    for wrap in wraps:  # the innermost capture's wrapper is called first
        call = wrap(call)
    return call


def _dispatcher(key: Any, own: Callable[..., Any] | None) -> Callable[..., Any]:
    """What replaces a class's `__call__` (or `jax.lax.scan`) while a capture uses it: the
    original, through the calling thread's wrappers (none in a thread that captures
    nothing). An inherited `__call__` is looked up at each call, so a base class patched
    later is seen."""
    if key == _SCAN:

        @functools.wraps(own)
        def scan(*args: Any, **kwargs: Any) -> Any:
            return _through(_thread_wraps(_SCAN), own)(*args, **kwargs)

        return scan

    @functools.wraps(own if own is not None else _inherited_call(key))
    def call(module: Any, *args: Any, **kwargs: Any) -> Any:
        original = own if own is not None else _inherited_call(key)
        return _through(_thread_wraps(key), original)(module, *args, **kwargs)

    return call


@contextlib.contextmanager
def patched(wraps: dict[Any, Callable[[Callable[..., Any]], Callable[..., Any]]]) -> Iterator[None]:
    """While the block runs, this thread's calls of each class in `wraps` (and of
    `jax.lax.scan`, under the key `"jax.lax.scan"`) go through `wraps[key](original)`.

    Each class (and `jax.lax.scan`) gets one dispatcher while any thread's block needs it;
    the last block to end puts the original back. Blocks nest: an inner block's wrapper
    is called first, and calls the outer one's.

    Args:
        wraps: a class or `"jax.lax.scan"` -> `wrap(call) -> call`, which is given the
            original (or the next outer block's wrapper) and returns what to call instead.

    Yields:
        Nothing; the wrappers apply as long as the `with` block.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad.inspection import capture
        >>> seen = []
        >>> def wrap(call):
        ...     def noted(module, x):
        ...         seen.append(x.shape)
        ...         return call(module, x)
        ...     return noted
        >>> layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
        >>> with capture.patched({nnx.Linear: wrap}):
        ...     _ = layer(jnp.ones((4, 2)))
        >>> _ = layer(jnp.ones((5, 2)))  # after the block: not seen
        >>> seen
        [(4, 2)]
    """
    keys = list(wraps)
    with _PATCH_LOCK:
        for key in keys:
            entry = _PATCHED.get(key)
            if entry is not None:
                entry[0] += 1
                continue
            own = jax.lax.scan if key == _SCAN else key.__dict__.get("__call__")
            dispatcher = _dispatcher(key, own)
            if key == _SCAN:
                jax.lax.scan = dispatcher
            else:
                key.__call__ = dispatcher
            _PATCHED[key] = [1, own]
    for key in keys:
        _thread_wraps(key).append(wraps[key])
    try:
        yield
    finally:
        for key in keys:
            stack = _thread_wraps(key)
            del stack[len(stack) - 1 - stack[::-1].index(wraps[key])]
        with _PATCH_LOCK:
            for key in keys:
                entry = _PATCHED[key]
                entry[0] -= 1
                if entry[0]:
                    continue
                del _PATCHED[key]
                if key == _SCAN:
                    jax.lax.scan = entry[1]
                elif entry[1] is None:
                    del key.__call__
                else:
                    key.__call__ = entry[1]


def path_str(path: Path) -> str:
    """A module or parameter path as text: its parts joined with ".".

    Args:
        path: the path's parts (strings and ints), as `nnx.iter_modules` gives them.

    Returns:
        The joined text.

    Example:
        >>> from jaxgrad.inspection import capture
        >>> capture.path_str(("blocks", 3, "kernel"))
        'blocks.3.kernel'
    """
    return ".".join(str(part) for part in path)


# ----------------------------------------------------------------------------- records


class Record(NamedTuple):
    """What one recorded call gives, scalar arrays in float32 at least (leading axes: one per
    enclosing scan).

    Attributes:
        input, output: `stats.Moments` of the call's input (its first array argument) and
            output (its last array leaf that is not a scalar: a cell's output rather than
            its carry, a layer's output rather than an auxiliary loss beside it).
        dead_frac: fraction of the input's units that are zero on the whole batch.
        saturated_frac: fraction of the input's values where the known activation's
            derivative, read off its output, is below the threshold; nan where unknown.
        attn_max_logit, attn_entropy: the largest attention logit and the mean entropy (in
            nats) of the attention rows, for attention modules; nan for the others.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import stats
        >>> from jaxgrad.inspection import capture
        >>> moments = stats.moments(jnp.array([1.0, -1.0]))
        >>> nan = jnp.float32(jnp.nan)
        >>> record = capture.Record(moments, moments, jnp.float32(0), nan, nan, nan)
        >>> float(record.output.rms)
        1.0
    """

    input: _stats.Moments
    output: _stats.Moments
    dead_frac: jax.Array
    saturated_frac: jax.Array
    attn_max_logit: jax.Array
    attn_entropy: jax.Array


@dataclasses.dataclass(frozen=True)
class Site:
    """A recorded call site, what is known of it while tracing (static).

    Attributes:
        key: unique within its level (the model's top level or one scan body): the module's
            path and "#k" for its k-th call there.
        path: the module's path in the model ("" for the model itself).
        call: k, the call's index among the calls of this module at its level.
        module_type: the module's class name.
        output: shape and dtype of the tapped output (one iteration's, inside a scan).
        start: the order in which the call started, within its level.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jaxgrad.inspection import capture
        >>> output = jax.ShapeDtypeStruct((8, 4), jnp.float32)
        >>> site = capture.Site("dense#0", "dense", 0, "Linear", output, 0)
        >>> capture.rows((site,))
        [Row(name='dense', path='dense', module_type='Linear', layer=(), keys=('dense#0',))]
    """

    key: str
    path: str
    call: int
    module_type: str
    output: jax.ShapeDtypeStruct
    start: int


@dataclasses.dataclass(frozen=True)
class Scan:
    """A traced `jax.lax.scan` whose body recorded something (static).

    Attributes:
        key: "scan{n}", the n-th such scan at its level.
        length: the number of iterations.
        reverse: whether it ran from the last iteration to the first.
        root: the longest common path of the model parameters it was given stacked (the
            container of stacked layers, e.g. ("blocks",)), or None.
        stacked: the model parameters it scanned over (stacked on their leading axis).
        layout: what its body recorded, in call order.
        start: the order in which it started, within its level.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jaxgrad.inspection import capture
        >>> output = jax.ShapeDtypeStruct((8, 4), jnp.float32)
        >>> site = capture.Site("blocks.linear#0", "blocks.linear", 0, "Linear", output, 0)
        >>> scan = capture.Scan("scan0", 2, False, ("blocks",),
        ...                     (("blocks", "linear", "kernel"),), (site,), 0)
        >>> [row.name for row in capture.rows((scan,))]  # one row per layer
        ['blocks[0].linear', 'blocks[1].linear']
    """

    key: str
    length: int
    reverse: bool
    root: Path | None
    stacked: tuple[Path, ...]
    layout: tuple[Site | Scan, ...]
    start: int


class _Level:
    """The recording state of one level: the top of the trace or one scan body."""

    def __init__(self, taps: dict[str, Any] | None, leaf_paths: dict[int, Path], trace: Any):
        self.taps = taps
        self.leaf_paths = leaf_paths
        self.trace = trace
        self.records: dict[str, Any] = {}
        self.reduced: dict[int, tuple[jax.Array, Any]] = {}  # id(array) -> (array, moments)
        self.layout: list[Site | Scan] = []
        self.calls: collections.Counter[str] = collections.Counter()
        self.scans = 0
        self.starts = 0

    def next_start(self) -> int:
        self.starts += 1
        return self.starts - 1


# ----------------------------------------------------------------------------- the capture


def _is_array(value: Any) -> bool:
    return isinstance(value, jax.Array) and not jnp.issubdtype(value.dtype, jax.dtypes.prng_key)


def _first_array(values: Any) -> jax.Array | None:
    arrays = [leaf for leaf in jax.tree.leaves(values) if _is_array(leaf)]
    return arrays[0] if arrays else None


@jax.custom_vjp
def gradient_tap(values: jax.Array, tap: jax.Array) -> jax.Array:
    """The identity on `values`, whose backward pass gives `tap` the L2 norm of the
    cotangent of `values` (`stats.norm`, in the dtype of `tap`) instead of a gradient.

    The cotangent of `values` passes through unchanged, so every other gradient is exact.
    The norm of dL/d(output) is reduced where the backward pass makes the cotangent, inside
    the backward scan for a stacked layer, rather than stacked whole and reduced afterwards
    (a zero added to the output would give the cotangent itself as the tap's gradient: one
    more array of the output's size per recorded call, written and read again).

    Args:
        values: any array.
        tap: a scalar (zero) whose "gradient" becomes the norm.

    Returns:
        `values`.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jaxgrad.inspection import capture
        >>> loss = lambda x, tap: jnp.sum(3 * capture.gradient_tap(x, tap))
        >>> dx, norm = jax.grad(loss, argnums=(0, 1))(jnp.ones((4,)), jnp.float32(0))
        >>> dx.tolist(), float(norm)  # dL/dx = 3 everywhere: norm sqrt(4 * 9)
        ([3.0, 3.0, 3.0, 3.0], 6.0)
    """
    return values


def _gradient_tap_forward(values, tap):
    return values, jnp.zeros((), tap.dtype)


def _gradient_tap_backward(tap_zero, cotangent):
    norm = _stats.norm(cotangent, one_pass=True).astype(tap_zero.dtype)
    return cotangent, norm


gradient_tap.defvjp(_gradient_tap_forward, _gradient_tap_backward)


def _recorded_index(leaves: list[Any]) -> int | None:
    """Which leaf of a call's output is recorded: the last array that is not a scalar (a
    cell's output rather than its carry; a layer's output rather than the auxiliary loss it
    returns beside it), else the last array; None without arrays."""
    arrays = [i for i, leaf in enumerate(leaves) if _is_array(leaf)]
    if not arrays:
        return None
    shaped = [i for i in arrays if jnp.ndim(leaves[i]) > 0]
    return (shaped or arrays)[-1]


def _tap_output(output: Any, tap: jax.Array) -> Any:
    """`output` with its recorded leaf (`_recorded_index`) passed through `gradient_tap`."""
    leaves, treedef = jax.tree.flatten(output)
    index = _recorded_index(leaves)
    leaves[index] = gradient_tap(leaves[index], tap)
    return jax.tree.unflatten(treedef, leaves)


def _recorded_output(values: Any) -> jax.Array | None:
    """The recorded leaf of a call's output (`_recorded_index`)."""
    leaves = jax.tree.leaves(values)
    index = _recorded_index(leaves)
    return None if index is None else leaves[index]


_NAN = float("nan")


class Capture:
    """Records the selected modules' calls while `loss_fn` is traced (see the module doc).

    Args:
        model: the model `loss_fn` is called with (its modules and parameters are matched by
            identity).
        select: `select(module, path) -> bool`, whether a module (the model's own, or a copy
            made inside a scan, with the path of the module it copies) is recorded.
        taps: the zero taps of the outputs (`gradient_tap`), `tap_structure(layout)`-shaped, or None
            (a first, abstract pass that only learns the layout).
        derivative_from_output: phi' as a function of the activation's value, for the
            saturated fraction of inputs, or None.
        threshold: the saturation threshold on |phi'|.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad.inspection import capture
        >>> model = nnx.Sequential(nnx.Linear(2, 4, rngs=nnx.Rngs(0)),
        ...                        nnx.Linear(4, 1, rngs=nnx.Rngs(1)))
        >>> graphdef, state = nnx.split(model)
        >>> found = {}
        >>> def traced(state, x):  # records are made while tracing, on a copy of the model
        ...     copy = nnx.merge(graphdef, state, copy=True)
        ...     linear = lambda module, path: isinstance(module, nnx.Linear)
        ...     recorder = capture.Capture(copy, linear, None, None, 0.01)
        ...     with recorder.active_on({nnx.Linear}):
        ...         copy(x)
        ...     found["layout"] = recorder.layout
        >>> _ = jax.eval_shape(traced, state, jnp.ones((3, 2)))
        >>> [row.name for row in capture.rows(found["layout"])]
        ['layers.0', 'layers.1']
    """

    def __init__(
        self,
        model: nnx.Module,
        select: Callable[[nnx.Module, str], bool],
        taps: dict[str, Any] | None,
        derivative_from_output: Callable[[jax.Array], jax.Array] | None,
        threshold: float,
    ):
        self.select = select
        self.modules = {id(module): path_str(path) for path, module in nnx.iter_modules(model)}
        params = nnx.state(model, nnx.Param)
        self.param_paths = {
            id(variable.get_value()): tuple(path) for path, variable in nnx.to_flat_state(params)
        }
        self.dphi = derivative_from_output
        self.threshold = threshold
        self.levels = [_Level(taps, {}, None)]
        self.active: list[list[jax.Array]] = []  # attention statistics of the calls under way
        self.in_call: set[int] = set()  # modules whose recorded call is under way
        # calls of the patched classes made inside another transformation's trace (nnx.remat,
        # jax.vmap, ...), which are not recorded
        self.foreign_calls = 0

    # ------------------------------------------------------------------ results

    @property
    def records(self) -> dict[str, Any]:
        return self.levels[0].records

    @property
    def layout(self) -> tuple[Site | Scan, ...]:
        return tuple(self.levels[0].layout)

    # ------------------------------------------------------------------ patching

    @contextlib.contextmanager
    def active_on(self, classes: set[type]) -> Iterator[Capture]:
        """Record the calls of `classes` (and `jax.lax.scan`) this thread makes while the
        block runs (`patched`)."""
        self.levels[0].trace = _core.trace_ctx.trace
        wraps: dict[Any, Callable[..., Any]] = dict.fromkeys(classes, self._wrap_call)
        wraps[_SCAN] = self._wrap_scan
        with patched(wraps):
            yield self

    # ------------------------------------------------------------------ module calls

    def _module_path(self, module: nnx.Module) -> str | None:
        """The path of a model module, or of the module a scan-body copy was made from."""
        if id(module) in self.modules:
            return self.modules[id(module)]
        for relative, variable in nnx.to_flat_state(nnx.state(module, nnx.Param)):
            for level in reversed(self.levels):
                path = level.leaf_paths.get(id(variable.get_value()))
                if path is not None and len(path) >= len(relative):
                    return path_str(path[: len(path) - len(relative)])
        return None

    def _wrap_call(self, call: Callable[..., Any]) -> Callable[..., Any]:
        capture = self

        @functools.wraps(call)
        def recording_call(module: nnx.Module, *args: Any, **kwargs: Any) -> Any:
            level = capture.levels[-1]
            if id(module) in capture.in_call:
                return call(module, *args, **kwargs)  # nested in its own recorded call
            if _core.trace_ctx.trace is not level.trace:
                capture.foreign_calls += 1
                return call(module, *args, **kwargs)  # inside another transformation
            path = capture._module_path(module)
            if path is None or not capture.select(module, path):
                return call(module, *args, **kwargs)
            start = level.next_start()
            attention: list[jax.Array] = []
            capture.active.append(attention)
            capture.in_call.add(id(module))
            try:
                output = capture._call(module, call, args, kwargs)
            finally:
                capture.in_call.discard(id(module))
                capture.active.pop()
            recorded = _recorded_output(output)
            if recorded is None:
                return output
            count = level.calls[path]
            level.calls[path] += 1
            key = f"{path}#{count}"
            site = Site(
                key,
                path,
                count,
                type(module).__name__,
                jax.ShapeDtypeStruct(recorded.shape, recorded.dtype),
                start,
            )
            level.layout.append(site)
            level.records[key] = capture._record(_first_array(args), recorded, attention)
            if level.taps is not None:
                output = _tap_output(output, level.taps[key])
                capture._same_values(_recorded_output(output), recorded)
            return output

        return recording_call

    def _call(self, module, call, args, kwargs):
        if isinstance(module, nnx.MultiHeadAttention):
            original = module.attention_fn
            object.__setattr__(module, "attention_fn", self._wrap_attention(original))
            try:
                return call(module, *args, **kwargs)
            finally:
                object.__setattr__(module, "attention_fn", original)
        return call(module, *args, **kwargs)

    def _moments(self, values: jax.Array) -> tuple[_stats.Moments, jax.Array]:
        """`stats.moments_and_dead_fraction`, once per array: an array that is the input of
        several calls (attention's query, key and value) or the output of one and the input
        of the next is reduced once (the cache holds the array, so its id stays its own)."""
        level = self.levels[-1]
        cached = level.reduced.get(id(values))
        if cached is None or cached[0] is not values:
            cached = (values, _stats.moments_and_dead_fraction(values))
            level.reduced[id(values)] = cached
        return cached[1]

    def _same_values(self, tapped: jax.Array, recorded: jax.Array) -> None:
        """A tapped output holds the values of the recorded one (`gradient_tap`): the next
        call that takes it as its input, or returns it as its own output (attention returns
        its output projection's), reuses the reduction instead of making another pass."""
        level = self.levels[-1]
        cached = level.reduced.get(id(recorded))
        if cached is not None and cached[0] is recorded:
            level.reduced[id(tapped)] = (tapped, cached[1])

    def _record(self, x: jax.Array | None, output: jax.Array, attention) -> Record:
        dtype = _stats.accumulation_dtype(output.dtype)
        nan = jnp.full((), _NAN, dtype)
        if x is None:
            moments_in = _stats.Moments(nan, nan, nan, nan, jnp.zeros((), bool))
            dead, saturated = nan, nan
        else:
            moments_in, dead = self._moments(x)
            if self.dphi is None or not jnp.issubdtype(x.dtype, jnp.floating):
                saturated = nan
            else:
                saturated = _stats.saturated_fraction(self.dphi(x), self.threshold)
        max_logit, entropy = attention if attention else (nan, nan)
        return Record(
            moments_in,
            self._moments(output)[0],
            dead.astype(dtype),
            saturated.astype(dtype),
            jnp.asarray(max_logit, dtype),
            jnp.asarray(entropy, dtype),
        )

    # ------------------------------------------------------------------ attention

    def _wrap_attention(self, attention_fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
        capture = self
        flax_default = attention_fn is nnx.dot_product_attention

        def recording_attention(query, key, value, bias=None, mask=None, **kwargs):
            weights, max_logit, entropy = attention_statistics(
                query, key, bias, mask, kwargs.get("is_causal", False)
            )
            if capture.active and not capture.active[-1]:
                capture.active[-1].extend([max_logit, entropy])
            deterministic = kwargs.get("deterministic", False) or not kwargs.get("dropout_rate")
            if flax_default and deterministic and kwargs.get("module") is None:
                # flax's own function without dropout: the weights are already here
                return _weighted_values(weights, value)
            return attention_fn(query, key, value, bias=bias, mask=mask, **kwargs)

        return recording_attention

    # ------------------------------------------------------------------ scans

    def _wrap_scan(self, scan: Callable[..., Any]) -> Callable[..., Any]:
        capture = self

        def recording_scan(f, init, xs=None, length=None, reverse=False, unroll=1, **kwargs):
            outer = capture.levels[-1]
            if _core.trace_ctx.trace is not outer.trace:
                return scan(f, init, xs, length, reverse, unroll, **kwargs)
            key = f"scan{outer.scans}"
            outer.scans += 1  # every scan counts, so that both passes number them alike
            taps = None if outer.taps is None else outer.taps.get(key, {})
            known = {**capture.param_paths, **outer.leaf_paths}
            xs_leaves = jax.tree.leaves(xs)
            init_leaves = jax.tree.leaves(init)
            stacked = tuple(known[id(leaf)] for leaf in xs_leaves if id(leaf) in known)
            start = outer.next_start()
            inner_levels: list[_Level] = []

            def body(carry, packed):
                x, tap = packed
                leaf_paths = {
                    id(inner): known[id(given)]
                    for given, inner in zip(xs_leaves, jax.tree.leaves(x), strict=True)
                    if id(given) in known
                }
                leaf_paths.update(
                    (id(inner), known[id(given)])
                    for given, inner in zip(init_leaves, jax.tree.leaves(carry), strict=True)
                    if id(given) in known
                )
                level = _Level(tap if taps is not None else None, leaf_paths, None)
                level.trace = _core.trace_ctx.trace
                capture.levels.append(level)
                try:
                    carry, y = f(carry, x)
                finally:
                    capture.levels.pop()
                inner_levels.append(level)
                packed, unpack = _pack(level.records)
                unpacks.append(unpack)
                return carry, (y, packed)

            unpacks: list[Callable[[Any], Any]] = []
            packed = (xs, taps if taps is not None else None)
            carry, (ys, records) = scan(body, init, packed, length, reverse, unroll, **kwargs)
            records = unpacks[-1](records)
            level = inner_levels[-1]
            if level.layout:
                iterations = length if length is not None else xs_leaves[0].shape[0]
                root = _stack_root(stacked, level.layout)
                outer.layout.append(
                    Scan(key, iterations, reverse, root, stacked, tuple(level.layout), start)
                )
                outer.records[key] = records
            return carry, ys

        return recording_scan


def _pack(records: Any) -> tuple[tuple[jax.Array, ...], Callable[[Any], Any]]:
    """A scan body's records (many scalars, and the stacked records of scans inside it) as
    one vector per dtype, and the function that unpacks the scan's stacked vectors,
    (length, n), into the records stacked: one scan output instead of one per scalar (each
    costs a small update at every iteration)."""
    leaves, treedef = jax.tree.flatten(records)
    dtypes = sorted({leaf.dtype for leaf in leaves}, key=str)
    groups = [[i for i, leaf in enumerate(leaves) if leaf.dtype == dtype] for dtype in dtypes]
    packed = tuple(jnp.concatenate([leaves[i].reshape(-1) for i in group]) for group in groups)

    def unpack(stacked: tuple[jax.Array, ...]) -> Any:
        out: list[Any] = [None] * len(leaves)
        for group, vector in zip(groups, stacked, strict=True):
            offset = 0
            for i in group:
                size = leaves[i].size
                column = vector[:, offset : offset + size]
                out[i] = column.reshape(vector.shape[0], *leaves[i].shape)
                offset += size
        return jax.tree.unflatten(treedef, out)

    return packed, unpack


def _stack_root(stacked: tuple[Path, ...], layout: list[Site | Scan]) -> Path | None:
    """The container of the stacked layers: the shortest recorded module path that holds
    every stacked parameter (a `Block` whose copies the body called), else the longest
    common path of their modules."""
    if not stacked:
        return None
    modules = [path[:-1] for path in stacked]
    prefix = modules[0]
    for path in modules[1:]:
        size = 0
        while size < min(len(prefix), len(path)) and prefix[size] == path[size]:
            size += 1
        prefix = prefix[:size]
    text = [str(part) for part in prefix]
    holders = [
        len(parts)
        for entry in layout
        if isinstance(entry, Site) and entry.path
        for parts in [entry.path.split(".")]
        if text[: len(parts)] == parts
    ]
    return prefix[: min(holders)] if holders else prefix


def attention_statistics(query, key, bias=None, mask=None, is_causal=False):
    """(weights, largest logit, mean row entropy) of dot-product attention, as flax computes
    it: logits q.k / sqrt(depth) plus the bias, masked (with the causal mask), softmax over
    the keys. Grouped-query attention repeats the key heads.

    Args:
        query: (..., q, heads, depth), as flax's.
        key: (..., k, kv_heads, depth); heads must be a multiple of kv_heads.
        bias: added to the logits (broadcasting to (..., heads, q, k)), or None.
        mask: True where a query may attend to a key (broadcasting to the logits), or None.
        is_causal: also mask every key after the query.

    Returns:
        (weights of shape (..., heads, q, k), the largest unmasked logit, the mean entropy of
        the attention rows in nats), the last two in the accumulation dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad.inspection import capture
        >>> q = jnp.ones((1, 2, 1, 4))  # batch 1, 2 positions, 1 head, depth 4
        >>> weights, max_logit, entropy = capture.attention_statistics(q, q)
        >>> weights.shape, float(max_logit), round(float(entropy), 4)  # uniform: log 2
        ((1, 1, 2, 2), 2.0, 0.6931)

    References:
        Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer training
        instabilities" (attention-logit growth).
    """
    dtype = jnp.result_type(query.dtype, key.dtype)
    query, key = query.astype(dtype), key.astype(dtype)
    heads, kv_heads = query.shape[-2], key.shape[-2]
    if heads != kv_heads:
        key = jnp.repeat(key, heads // kv_heads, axis=-2)
    logits = jnp.einsum(
        "...qhd,...khd->...hqk", query / jnp.sqrt(query.shape[-1]).astype(dtype), key
    )
    if bias is not None:
        logits = logits + bias
    valid = jnp.ones(logits.shape, bool)
    if mask is not None:
        valid = valid & jnp.broadcast_to(mask.astype(bool), logits.shape)
    if is_causal:
        q_len, k_len = logits.shape[-2], logits.shape[-1]
        valid = valid & jnp.broadcast_to(jnp.tril(jnp.ones((q_len, k_len), bool)), logits.shape)
    big_negative = jnp.finfo(dtype).min
    masked = jnp.where(valid, logits, big_negative)
    weights = jax.nn.softmax(masked, axis=-1)
    max_logit = jnp.max(jnp.where(valid, logits, -jnp.inf)).astype(_stats.accumulation_dtype(dtype))
    log_weights = jax.nn.log_softmax(masked, axis=-1)
    row_entropy = -jnp.sum(jnp.where(valid, weights * log_weights, 0), axis=-1)
    rows = jnp.any(valid, axis=-1)
    entropy = jnp.sum(jnp.where(rows, row_entropy, 0)) / jnp.maximum(jnp.sum(rows), 1)
    return weights, max_logit, entropy.astype(_stats.accumulation_dtype(dtype))


def _weighted_values(weights: jax.Array, value: jax.Array) -> jax.Array:
    heads, kv_heads = weights.shape[-3], value.shape[-2]
    if heads != kv_heads:
        value = jnp.repeat(value, heads // kv_heads, axis=-2)
    return jnp.einsum("...hqk,...khd->...qhd", weights.astype(value.dtype), value)


# ----------------------------------------------------------------------------- taps


def tap_structure(layout: tuple[Site | Scan, ...], leading: tuple[int, ...] = ()) -> dict:
    """Zero taps for a layout: a dict of zeros per site (a scalar in the accumulation dtype
    of its output, stacked by the enclosing scans' lengths) and a nested dict per scan. The
    gradient with respect to a tap is the norm of dL/d(output) (see `gradient_tap`).

    Args:
        layout: a `Capture`'s layout.
        leading: the lengths of the enclosing scans (for the recursion).

    Returns:
        A dict of zero arrays, one per recorded call.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jaxgrad.inspection import capture
        >>> output = jax.ShapeDtypeStruct((8, 4), jnp.float32)
        >>> site = capture.Site("blocks.linear#0", "blocks.linear", 0, "Linear", output, 0)
        >>> scan = capture.Scan("scan0", 2, False, ("blocks",),
        ...                     (("blocks", "linear", "kernel"),), (site,), 0)
        >>> jax.tree.map(jnp.shape, capture.tap_structure((scan,)))  # one per layer
        {'scan0': {'blocks.linear#0': (2,)}}
    """
    taps: dict[str, Any] = {}
    for entry in layout:
        if isinstance(entry, Site):
            dtype = _stats.accumulation_dtype(entry.output.dtype)
            taps[entry.key] = jnp.zeros(leading, dtype)
        else:
            taps[entry.key] = tap_structure(entry.layout, (*leading, entry.length))
    return taps


# ----------------------------------------------------------------------------- flattening


class Row(NamedTuple):
    """One recorded call (one layer of a stack), in forward order (static).

    Attributes:
        name: the module path, with "[i]" after the stack's root for layer i of a stack
            ("blocks[3].linear"), or after the path for iteration i of a scan over time.
        path: the module's path in the model.
        module_type: its class name.
        layer: its index in the enclosing scan(s), () at the top level.
        keys: where its record sits in the records tree.

    Example:
        >>> from jaxgrad.inspection import capture
        >>> row = capture.Row("blocks[1].linear", "blocks.linear", "Linear", (1,),
        ...                   ("scan0", "blocks.linear#0"))
        >>> row.layer
        (1,)
    """

    name: str
    path: str
    module_type: str
    layer: tuple[int, ...]
    keys: tuple[str, ...]


def rows(layout: tuple[Site | Scan, ...]) -> list[Row]:
    """Every record of a layout as a row, in the order the calls started (forward order):
    the iterations of a scan in the order they ran, each iteration's calls in order.

    Args:
        layout: a `Capture`'s layout.

    Returns:
        A list of `Row`.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jaxgrad.inspection import capture
        >>> output = jax.ShapeDtypeStruct((8, 4), jnp.float32)
        >>> site = capture.Site("blocks.linear#0", "blocks.linear", 0, "Linear", output, 0)
        >>> scan = capture.Scan("scan0", 2, False, ("blocks",),
        ...                     (("blocks", "linear", "kernel"),), (site,), 0)
        >>> [(row.name, row.layer) for row in capture.rows((scan,))]
        [('blocks[0].linear', (0,)), ('blocks[1].linear', (1,))]
    """
    return _rows(layout, (), (), None)


def _rows(layout, keys, layer, naming) -> list[Row]:
    out: list[Row] = []
    calls = collections.Counter(entry.path for entry in layout if isinstance(entry, Site))
    for entry in sorted(layout, key=lambda e: e.start):
        if isinstance(entry, Site):
            name = entry.path if naming is None else naming(entry.path)
            if calls[entry.path] > 1:
                name = f"{name}[{entry.call}]"
            out.append(Row(name, entry.path, entry.module_type, layer, (*keys, entry.key)))
            continue
        order = range(entry.length - 1, -1, -1) if entry.reverse else range(entry.length)
        for index in order:
            out += _rows(
                entry.layout,
                (*keys, entry.key),
                (*layer, index),
                _namer(entry.root, index, naming),
            )
    return out


def _namer(root: Path | None, index: int, outer: Callable[[str], str] | None):
    prefix = path_str(root) if root else None

    def name(path: str) -> str:
        if prefix and (path == prefix or path.startswith(prefix + ".")):
            named = f"{prefix}[{index}]{path[len(prefix) :]}"
        else:
            named = f"{path}[{index}]"
        return named if outer is None else outer(named)

    return name


def take(records: dict[str, Any], row: Row) -> Any:
    """The record of `row` (its leading scan axes indexed away).

    Args:
        records: a `Capture`'s records (a nested dict, scans' entries stacked).
        row: one of `rows(layout)`.

    Returns:
        The row's record (a pytree).

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jaxgrad.inspection import capture
        >>> output = jax.ShapeDtypeStruct((8, 4), jnp.float32)
        >>> site = capture.Site("blocks.linear#0", "blocks.linear", 0, "Linear", output, 0)
        >>> scan = capture.Scan("scan0", 2, False, ("blocks",),
        ...                     (("blocks", "linear", "kernel"),), (site,), 0)
        >>> records = {"scan0": {"blocks.linear#0": jnp.array([10.0, 20.0])}}
        >>> float(capture.take(records, capture.rows((scan,))[1]))
        20.0
    """
    value: Any = records
    for key in row.keys:
        value = value[key]
    return jax.tree.map(lambda leaf: leaf[row.layer] if row.layer else leaf, value)


def stacked_params(layout: tuple[Site | Scan, ...]) -> dict[Path, tuple[int, Path | None, bool]]:
    """Model parameters a top-level scan ran over: path -> (length, the stack's root,
    reverse).

    Args:
        layout: a `Capture`'s layout.

    Returns:
        A dict from parameter path to (number of layers, the stack's root path or None,
        whether the scan ran in reverse).

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jaxgrad.inspection import capture
        >>> output = jax.ShapeDtypeStruct((8, 4), jnp.float32)
        >>> site = capture.Site("blocks.linear#0", "blocks.linear", 0, "Linear", output, 0)
        >>> scan = capture.Scan("scan0", 2, False, ("blocks",),
        ...                     (("blocks", "linear", "kernel"),), (site,), 0)
        >>> capture.stacked_params((scan,))
        {('blocks', 'linear', 'kernel'): (2, ('blocks',), False)}
    """
    stacked = {}
    for entry in layout:
        if isinstance(entry, Scan):
            for path in entry.stacked:
                stacked.setdefault(tuple(path), (entry.length, entry.root, entry.reverse))
    return stacked


# ----------------------------------------------------------------------------- old helper


@contextlib.contextmanager
def on_call_outputs(
    targets: dict[int, tuple[str, nnx.Module]], record: Callable[[nnx.Module, str, Any], None]
) -> Iterator[None]:
    """While active, each module in `targets` (id -> (path, module)) passes its `__call__`
    output to `record(module, path, output)`: the call-order tracing LSUV uses.

    Wraps `__call__` of the targets' classes (resolved through the MRO, so an inherited
    `__call__` is covered) in this thread (`patched`); other instances of those classes, and
    other threads, pass through untouched, and a target's nested `super().__call__()`
    records once.

    Args:
        targets: the modules to watch, id(module) -> (its path, the module).
        record: called as `record(module, path, output)` after each watched call.

    Yields:
        Nothing; the watch lasts as long as the `with` block.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad.inspection import capture
        >>> first, second = nnx.Linear(2, 4, rngs=nnx.Rngs(0)), nnx.Linear(4, 1, rngs=nnx.Rngs(1))
        >>> seen = []
        >>> with capture.on_call_outputs(
        ...     {id(first): ("first", first)}, lambda module, path, out: seen.append(path)
        ... ):
        ...     _ = second(first(jnp.ones((3, 2))))
        >>> seen
        ['first']
    """
    classes = {type(module) for _, module in targets.values()}
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

    with patched(dict.fromkeys(classes, wrap)):
        yield


__all__ = [
    "Capture",
    "Record",
    "Row",
    "Scan",
    "Site",
    "attention_statistics",
    "gradient_tap",
    "on_call_outputs",
    "patched",
    "path_str",
    "rows",
    "stacked_params",
    "take",
    "tap_structure",
]
