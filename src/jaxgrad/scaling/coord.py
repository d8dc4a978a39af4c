"""The coordinate check: per-layer sizes of a few training steps, across widths and depths.

`coord_check(make_model, optimizer, batches, widths=..., depths=..., seeds=..., loss_fn=...)`
builds the model at every width (and depth), trains it `steps` steps with the given Optax
chain on the given batches, and records, per layer in forward order and per step:

- of each recorded module's output (`inspect`'s selection: every module that owns an
  `nnx.Param`, attention, jaxgrad's blocks): its mean |x| (the statistic of mup's
  `get_coord_data`), its rms, and `change`, the mean |x_t - x_0| of its output at step t
  against the output of the initial model on the same batch (0 within float rounding of
  the two passes: `CHANGE_FLOOR_ULPS`);
- of each parameter (each layer's slice of a stacked one): the rms of its gradient, the rms
  of the update the optimizer made of it, and that update's rms relative to the weight's
  (the relative change of the weight; under muP with Adam a hidden kernel's shrinks as
  width^-1/2, since its entries move by O(1/width) while they are O(1/sqrt(width)), and
  what stays of the same order at every width is each layer's output change).

Step t's numbers are those of the forward and backward pass at the parameters after t
updates, on batch t (mup's convention: step 0 is the initialization), and the update made
from them.

Cost: one compiled program per (width, depth): the seeds are vmapped (each seed draws its own
initialization; all see the same batches) and the steps run in a `jax.lax.scan`. A step costs
two forward passes and one backward pass (the second forward pass, with the initial
parameters, is the reference for `change`), plus a few passes over each recorded output. The
outputs are kept whole inside the step (one copy per recorded call), so memory grows with
batch x width x recorded calls: small batches are what a coordinate check needs. For one
model at one width, `jaxgrad.inspect` is the cheaper view.

References:
    Yang and Hu 2021, "Tensor Programs IV: Feature Learning in Infinite-Width Neural
    Networks"; Yang et al. 2022, "Tensor Programs V: Tuning Large Neural Networks via
    Zero-Shot Hyperparameter Transfer", appendix D.1 (the coordinate check).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxgrad import inspection as _inspection
from jaxgrad import stats as _stats
from jaxgrad._compile import jit_building_models as _jit_building_models
from jaxgrad.inspection import capture as _capture

if TYPE_CHECKING:
    import pandas as pd

MODULE_STATISTICS = ("mean_abs", "rms", "change")
"""Per recorded call: mean |x| of its output, its rms, and mean |x_t - x_0|."""

PARAM_STATISTICS = ("grad_rms", "update_rms", "update_ratio")
"""Per parameter (layer slice): rms of the gradient, rms of the update, and the update's rms
over the weight's (nan where the weight is zero, e.g. a zero-initialized bias)."""

STATISTICS = MODULE_STATISTICS + PARAM_STATISTICS


def mean_abs(values: jax.Array, axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """The mean of |values| over `axis`, accumulated in `stats.accumulation_dtype` (each term
    divided by the count before the sum, so a finite mean never overflows).

    mup's coordinate-check statistic (`x.abs().mean()`): for a vector with Theta(1)
    coordinates it is Theta(1), whatever its length.

    Args:
        values: an array.
        axis: the axis or axes to average over; default all.

    Returns:
        The mean of |values| over `axis`, in the accumulation dtype (float32 for float16
        and bfloat16 input).

    Example:
        >>> import jax.numpy as jnp
        >>> float(mean_abs(jnp.array([1.0, -3.0], jnp.float16)))
        2.0
    """
    values = jnp.asarray(values)
    values = values.astype(_stats.accumulation_dtype(values.dtype))
    axes = tuple(range(values.ndim)) if axis is None else axis
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    count = math.prod(values.shape[a] for a in axes)
    return jnp.sum(jnp.abs(values) / max(count, 1), axis=axes)


# ----------------------------------------------------------------------------- results


class CoordPoint(NamedTuple):
    """The coordinate check of one (width, depth): every seed, every step.

    Attributes:
        width, depth: the point (depth None where the check has no depths).
        layers: the recorded calls' names, in forward order (`inspect`'s names).
        params: the parameters' names (a stacked parameter has one per layer), in forward
            order.
        loss: (seeds, steps), the loss at each step, before its update.
        modules: (seeds, steps, layers, len(MODULE_STATISTICS)).
        param_values: (seeds, steps, params, len(PARAM_STATISTICS)).

    Example:
        `coord_check` builds them; one made by hand (one seed, one step, one layer):

        >>> import numpy as np
        >>> from jaxgrad.scaling.coord import CoordPoint
        >>> point = CoordPoint(64, None, ("out",), (), np.zeros((1, 1)),
        ...                    np.array([[[[0.8, 1.0, 0.0]]]]), np.zeros((1, 1, 0, 3)))
        >>> names, values = point.statistic("rms")  # values: (seeds, steps, layers)
        >>> names, values.tolist()
        (('out',), [[[1.0]]])
    """

    width: int
    depth: int | None
    layers: tuple[str, ...]
    params: tuple[str, ...]
    loss: np.ndarray
    modules: np.ndarray
    param_values: np.ndarray

    def statistic(self, name: str) -> tuple[tuple[str, ...], np.ndarray]:
        """(names, values of shape (seeds, steps, names)) of one statistic."""
        if name in MODULE_STATISTICS:
            return self.layers, self.modules[..., MODULE_STATISTICS.index(name)]
        if name in PARAM_STATISTICS:
            return self.params, self.param_values[..., PARAM_STATISTICS.index(name)]
        raise ValueError(f"unknown statistic {name!r}; the statistics are {list(STATISTICS)}")


@dataclasses.dataclass(frozen=True)
class CoordCheck:
    """The result of `coord_check`: one `CoordPoint` per (width, depth).

    Attributes:
        points: in the order of the widths, then the depths.
        widths, depths: the grid (depths (None,) when no depth was given).
        seeds: the seeds, in the order of the seed axis.
        steps: the number of steps recorded.

    Example:
        `coord_check` returns one; one made by hand from two points:

        >>> import numpy as np
        >>> from jaxgrad.scaling.coord import CoordCheck, CoordPoint
        >>> def point(width):  # one seed, one step, one layer
        ...     return CoordPoint(width, None, ("out",), (), np.zeros((1, 1)),
        ...                       np.ones((1, 1, 1, 3)), np.zeros((1, 1, 0, 3)))
        >>> check = CoordCheck((point(64), point(128)), (64, 128), (None,), (0,), 1)
        >>> check.point(128).width, check.depths
        (128, (None,))
    """

    points: tuple[CoordPoint, ...]
    widths: tuple[int, ...]
    depths: tuple[int | None, ...]
    seeds: tuple[int, ...]
    steps: int

    def point(self, width: int, depth: int | None = None) -> CoordPoint:
        """The point at (width, depth)."""
        for point in self.points:
            if point.width == width and point.depth == depth:
                return point
        raise KeyError(
            f"no point at width {width}, depth {depth}; widths {list(self.widths)}, depths "
            f"{list(self.depths)}"
        )

    def findings(self) -> tuple[_stats.Finding, ...]:
        """What `jaxgrad.diagnose(check)` reads: the findings of the slopes against width
        (`jaxgrad.scaling.Slopes.findings`, the "width_scaling" rule) where the check has two
        or more widths, then against depth ("depth_scaling") where it has two or more depths.

        Returns:
            One `jaxgrad.stats.Finding` per direction with two or more sizes.

        Raises:
            ValueError: if the check has a single width and a single depth (no slope).

        Example:
            >>> import numpy as np
            >>> def point(width):  # one seed, one step, one layer: mean |x| = 2
            ...     return CoordPoint(width, None, ("out",), (), np.zeros((1, 1)),
            ...                       np.full((1, 1, 1, 3), 2.0), np.zeros((1, 1, 0, 3)))
            >>> check = CoordCheck((point(64), point(128)), (64, 128), (None,), (0,), 1)
            >>> [(f.rule, f.verdict) for f in check.findings()]
            [('width_scaling', 'stable')]
        """
        from jaxgrad.scaling.slopes import slopes  # slopes.py imports this module

        directions = [
            against
            for against, sizes in (("width", self.widths), ("depth", self.depths))
            if len(sizes) >= 2 and None not in sizes
        ]
        if not directions:
            raise ValueError(
                f"a coordinate check at one width ({list(self.widths)}) and one depth "
                f"({list(self.depths)}) has no slope to judge: give coord_check two or more "
                "widths or depths"
            )
        return tuple(
            finding for against in directions for finding in slopes(self, against).findings()
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per (width, depth, seed, step, layer, statistic): columns `width`,
        `depth`, `seed`, `step`, `layer` (a call's name for the module statistics, a
        parameter's name for the others), `statistic`, `value`."""
        import pandas as pd

        frame = pd.concat(
            [_point_frame(point, self.seeds) for point in self.points], ignore_index=True
        )
        return frame.astype({"value": np.float64})

    def __repr__(self) -> str:
        return (
            f"CoordCheck: widths {list(self.widths)}, depths {list(self.depths)}, "
            f"{len(self.seeds)} seeds, {self.steps} steps, "
            f"{len(self.points[0].layers) if self.points else 0} calls at the first point"
        )


def _point_frame(point: CoordPoint, seeds: Sequence[int], loss: bool = False) -> pd.DataFrame:
    """A point's rows as `CoordCheck.to_frame` lays them out (values in their own dtype),
    with its loss as the statistic "loss" of the layer "" when `loss`."""
    import pandas as pd

    frames = []
    named = [(statistic, *point.statistic(statistic)) for statistic in STATISTICS]
    if loss:
        named.append(("loss", ("",), np.asarray(point.loss)[..., None]))
    for statistic, names, values in named:
        count_seeds, steps, count = values.shape
        seed_index, step_index, name_index = np.meshgrid(
            np.arange(count_seeds), np.arange(steps), np.arange(count), indexing="ij"
        )
        frames.append(
            pd.DataFrame(
                {
                    "width": point.width,
                    "depth": point.depth,
                    "seed": np.asarray(seeds)[seed_index.ravel()],
                    "step": step_index.ravel(),
                    "layer": np.asarray(names, dtype=object)[name_index.ravel()],
                    "statistic": statistic,
                    "value": np.asarray(values).ravel(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _point_from_frame(frame: pd.DataFrame, seeds: int, steps: int) -> CoordPoint:
    """The `CoordPoint` whose `_point_frame(point, seeds, loss=True)` is `frame`."""

    def block(statistic):
        rows = frame[frame["statistic"] == statistic]
        names = rows["layer"].tolist()[: len(rows) // (seeds * steps)]
        values = rows["value"].to_numpy().reshape(seeds, steps, len(names))
        return tuple(names), values

    layers, modules = zip(*(block(name) for name in MODULE_STATISTICS), strict=True)
    params, param_values = zip(*(block(name) for name in PARAM_STATISTICS), strict=True)
    depth = frame["depth"].iloc[0]
    return CoordPoint(
        int(frame["width"].iloc[0]),
        None if depth is None or (isinstance(depth, float) and math.isnan(depth)) else int(depth),
        layers[0],
        params[0],
        block("loss")[1][..., 0],
        np.stack(modules, axis=-1),
        np.stack(param_values, axis=-1),
    )


# ----------------------------------------------------------------------------- the program


class _OutputCapture(_capture.Capture):
    """`inspect`'s capture, keeping each recorded call's whole output (the coordinate check
    reduces it itself, and compares it with the output of the initial model)."""

    def _record(self, x, output, attention):
        return output


def _forward(graphdef, loss_fn, spec, params, rest, batch):
    """loss_fn on a copy of the model: (loss, every recorded output, the new rest)."""
    model = nnx.merge(graphdef, params, rest, copy=True)
    capture = _OutputCapture(model, spec.select, None, None, spec.threshold)
    with capture.active_on(set(spec.classes)):
        loss = _inspection._scalar_loss(loss_fn(model, batch))
    return loss, capture.records, nnx.split(model, nnx.Param, ...)[2]


def _row_order(layout, rows) -> tuple[list[tuple[tuple[str, ...], tuple[int, ...]]], np.ndarray]:
    """The sites (keys, stacked leading shape) in layout order, and each row's index in
    their values laid end to end."""
    sites = _inspection._sites(layout)
    offsets, total = {}, 0
    for keys, leading in sites:
        offsets[keys] = total
        total += math.prod(leading)
    leading_of = dict(sites)
    order = [
        offsets[row.keys]
        + (int(np.ravel_multi_index(row.layer, leading_of[row.keys])) if row.layer else 0)
        for row in rows
    ]
    return sites, np.asarray(order, dtype=np.int32)


CHANGE_FLOOR_ULPS = 16
"""A `change` at most this many float rounding units (the output dtype's eps) of the output's
mean |x| reads 0. The reference outputs come from a separate forward pass (a vmapped one,
before the steps' scan), which rounds differently: an output whose inputs did not move
differed from its reference by 1 to 4 eps in float32 (2e-7 to 4e-7 of its mean |x|, a
muP transformer whose blocks the first update leaves exactly in place), where a real
change after one update is 1e-2 or more; without the floor that noise was read as a
change shrinking with width."""


def _epsilon(value: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """The rounding unit of `value`'s dtype, shaped as a reduction over `axes` gives."""
    shape = tuple(n for axis, n in enumerate(value.shape) if axis not in axes)
    dtype = value.dtype if jnp.issubdtype(value.dtype, jnp.inexact) else jnp.float32
    return jnp.full(shape, jnp.finfo(dtype).eps, jnp.float32)


def _per_row(sites, order, records, reduce) -> jax.Array:
    """`reduce(array, axes)` of every site's output (over all but its stacked axes), one
    value per row in forward order: one reduction per site, however deep the stack."""
    pieces = []
    for keys, leading in sites:
        value = _inspection._get(records, keys)
        axes = tuple(range(len(leading), value.ndim))
        pieces.append(jnp.reshape(reduce(value, axes), (-1,)))
    if not pieces:
        return jnp.zeros((0,), jnp.float32)
    return jnp.concatenate(pieces)[order]


class _Plan(NamedTuple):
    """What one (width, depth) records (static, learned by tracing)."""

    layers: tuple[str, ...]
    params: tuple[str, ...]


def _init_state(make_model, width, depth, key):
    model = make_model(width, depth, nnx.Rngs(key))
    return nnx.split(model, nnx.Param, ...)[1:]


def _graphdef(make_model, width, depth):
    model = nnx.eval_shape(lambda: make_model(width, depth, nnx.Rngs(0)))
    if not isinstance(model, nnx.Module):
        raise TypeError(
            f"make_model(width, depth, rngs) must return an nnx.Module, got "
            f"{type(model).__name__} at width {width}, depth {depth}"
        )
    return model, nnx.split(model, nnx.Param, ...)[0]


def _layout(graphdef, loss_fn, spec, params, rest, batch):
    layout = _inspection.learn_layout(graphdef, loss_fn, spec, params, rest, batch)
    rows = _capture.rows(layout)
    return layout, rows, _inspection.param_rows_of(layout, rows, params)


def _plan(make_model, width, depth, loss_fn, spec, batch) -> _Plan:
    """The names of the rows, from an abstract pass (no compute)."""
    graphdef = _graphdef(make_model, width, depth)[1]
    learned = {}

    def trace(batch):
        params, rest = _init_state(make_model, width, depth, jax.random.key(0))
        _, rows, param_rows = _layout(graphdef, loss_fn, spec, params, rest, batch)
        learned["plan"] = _Plan(tuple(row.name for row in rows), param_rows.names)
        return 0

    jax.eval_shape(trace, batch)
    return learned["plan"]


@_jit_building_models(static_argnums=(0, 1, 2, 3, 4, 5))
def _program(make_model, width, depth, loss_fn, optimizer, spec, seeds, batches, rates=None):
    """Every seed (vmapped over `seeds`, int32) trained on `batches` (stacked on a leading step
    axis): (loss (seeds, steps), module values, parameter values). With `rates` (float32),
    `optimizer` is `optimizer(learning_rate)` and every rate is vmapped too: a leading rate
    axis on each output."""
    graphdef = _graphdef(make_model, width, depth)[1]

    def one_seed(optimizer, seed):
        params0, rest0 = _init_state(make_model, width, depth, jax.random.key(seed))
        first = jax.tree.map(lambda leaf: leaf[0], batches)
        layout, rows, param_rows = _layout(graphdef, loss_fn, spec, params0, rest0, first)
        sites, order = _row_order(layout, rows)
        sizes = np.asarray([max(math.prod(shape), 1) for shape in param_rows.shapes], np.float32)
        root_sizes = jnp.asarray(np.sqrt(sizes))

        def loss_of(params, rest, batch):
            loss, records, new_rest = _forward(graphdef, loss_fn, spec, params, rest, batch)
            return loss, (records, new_rest)

        # The initial model's outputs on every batch, computed before the steps' scan (the
        # XLA CPU bug that `jaxgrad._compile` works around was first met here, inside the
        # scan's body, as garbage for a 3-d input times a zero-initialized kernel).
        initials = jax.vmap(
            lambda batch: _forward(graphdef, loss_fn, spec, params0, rest0, batch)[1]
        )(batches)

        def step(carry, inputs):
            batch, initial = inputs
            params, rest, opt_state = carry
            (loss, (records, new_rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(
                params, rest, batch
            )
            change = jax.tree.map(lambda now, then: now - then, records, initial)
            size = _per_row(sites, order, records, mean_abs)
            moved = _per_row(sites, order, change, mean_abs)
            floor = CHANGE_FLOOR_ULPS * _per_row(sites, order, records, _epsilon)
            modules = jnp.stack(
                [
                    size,
                    _per_row(sites, order, records, _stats.rms),
                    jnp.where(moved <= floor * size, 0.0, moved),
                ],
                axis=-1,
            )
            updates, opt_state = optimizer.update(grads, opt_state, params)
            grad_rms = param_rows.norms(grads) / root_sizes
            update_rms = param_rows.norms(updates) / root_sizes
            weight_rms = param_rows.norms(params) / root_sizes
            ratio = jnp.where(weight_rms == 0, jnp.nan, update_rms / weight_rms)
            param_values = jnp.stack([grad_rms, update_rms, ratio], axis=-1)
            params = optax.apply_updates(params, updates)
            return (params, new_rest, opt_state), (loss, modules, param_values)

        carry = (params0, rest0, optimizer.init(params0))
        return jax.lax.scan(step, carry, (batches, initials))[1]

    if rates is None:
        return jax.vmap(functools.partial(one_seed, optimizer))(seeds)
    return jax.vmap(lambda rate: jax.vmap(functools.partial(one_seed, optimizer(rate)))(seeds))(
        rates
    )


# ----------------------------------------------------------------------------- front end


def _positive_ints(name: str, values: object, allow_none: bool = False) -> tuple:
    if values is None and allow_none:
        return (None,)
    if isinstance(values, int | np.integer) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, Sequence) or isinstance(values, str) or not values:
        raise TypeError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must hold positive ints, got {value!r} in {list(values)}")
        out.append(int(value))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat a value, got {out}")
    return tuple(out)


def _seeds(seeds: object) -> tuple[int, ...]:
    if isinstance(seeds, int | np.integer) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be a count >= 1 or a sequence of ints, got {seeds}")
        return tuple(range(int(seeds)))
    if not isinstance(seeds, Sequence) or isinstance(seeds, str) or not seeds:
        raise TypeError(f"seeds must be a count or a non-empty sequence of ints, got {seeds!r}")
    if any(isinstance(s, bool) or not isinstance(s, int | np.integer) for s in seeds):
        raise TypeError(f"seeds must be ints, got {list(seeds)}")
    return tuple(int(s) for s in seeds)


def _stacked_batches(batches: Any, steps: int) -> Any:
    """The first `steps` batches stacked on a leading axis: a list of batches, a callable
    `batches(step)`, or one batch (anything else) used at every step."""
    if callable(batches):
        chosen = [batches(step) for step in range(steps)]
    elif isinstance(batches, list):
        if len(batches) < steps:
            raise ValueError(
                f"batches holds {len(batches)} batches, fewer than steps={steps}; give at "
                "least one batch per step (or one batch, not in a list, for every step)"
            )
        chosen = batches[:steps]
    else:
        chosen = [batches] * steps
    shapes = [
        jax.tree.map(lambda leaf: (jnp.shape(leaf), jnp.result_type(leaf)), b) for b in chosen
    ]
    if any(shape != shapes[0] for shape in shapes[1:]):
        raise ValueError(
            "every batch must have the same structure, shapes and dtypes (the steps run in "
            f"one compiled scan); got {shapes[0]} and {next(s for s in shapes if s != shapes[0])}"
        )
    # stacked on the host: no small program compiled per leaf
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *chosen)


PART_COLUMNS = ("width", "depth", "seed", "step", "layer", "statistic", "value")
"""The columns of a stored point (`coord_check(out=...)`): `to_frame`'s, with the loss as
the statistic "loss" of the layer ""."""


def _name(function: Any) -> str:
    return (
        f"{getattr(function, '__module__', None)}."
        f"{getattr(function, '__qualname__', type(function).__qualname__)}"
    )


def _check_identity(make_model, loss_fn, modules, seeds, steps, stacked, identity) -> dict:
    """What a results folder of coordinate checks must agree on (JSON values)."""
    try:
        identity = json.loads(json.dumps(identity, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"identity must be JSON values (dicts, lists, strings, finite numbers), got "
            f"{identity!r} ({error})"
        ) from None
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(stacked):
        leaf = np.ascontiguousarray(leaf)
        digest.update(f"{leaf.shape}{leaf.dtype}".encode())
        digest.update(leaf.tobytes())
    return {
        "check": "coordinate check",
        "make_model": _name(make_model),
        "loss_fn": _name(loss_fn),
        "modules": repr(modules),
        "seeds": list(seeds),
        "steps": int(steps),
        "batches": digest.hexdigest()[:20],
        "identity": identity,
    }


def _run(
    make_model, optimizer, rates, batches, widths, depths, seeds, steps, loss_fn, modules,
    progress, out, identity, log,
) -> dict[float | None, CoordCheck]:  # fmt: skip
    """The checked arguments' coordinate check, one per learning rate (the key None when
    `rates` is None): per (width, depth), one program for every rate and seed, or the
    point read back from `out`."""
    stacked = _stacked_batches(batches, steps)
    seed_array = np.asarray(seeds, np.int32)
    rate_array = None if rates is None else np.asarray(rates, np.float32)
    keys = [None] if rates is None else list(rates)
    first = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype), stacked)
    grid = [(width, depth) for width in widths for depth in depths]
    store, stored = None, {}
    if out is not None:
        from jaxgrad.store import ResultStore  # pandas and pyarrow, only when writing

        check = _check_identity(make_model, loss_fn, modules, seeds, steps, stacked, identity)
        if rates is not None:
            check["learning_rates"] = list(rates)
        store = ResultStore.for_sweep(
            out,
            check,
            {"width": list(widths), "depth": list(depths)},
            part_columns=PART_COLUMNS + (() if rates is None else ("learning_rate",)),
            log=log,
            what="coordinate check",
        )
        stored = store.stored()
        if done := sum(point in stored for point in grid):
            store.log(f"resuming: {done} of {len(grid)} points already in {store.root}")
    points: dict[float | None, list[CoordPoint]] = {key: [] for key in keys}
    for width, depth in grid:
        if (width, depth) in stored:
            frame = store.read([(width, depth)])
            for key in keys:
                rows = frame if key is None else frame[frame["learning_rate"] == key]
                points[key].append(_point_from_frame(rows, len(seeds), steps))
        else:
            abstract, _ = _graphdef(make_model, width, depth)
            spec = _inspection._spec(abstract, modules, None, _stats.SATURATION_THRESHOLD)
            plan = _plan(make_model, width, depth, loss_fn, spec, first)
            values = jax.device_get(
                _program(
                    make_model, width, depth, loss_fn, optimizer, spec, seed_array, stacked,
                    rate_array,
                )
            )  # fmt: skip
            frames = []
            for index, key in enumerate(keys):
                loss, module_values, param_values = (
                    values if key is None else [array[index] for array in values]
                )
                point = CoordPoint(
                    width,
                    depth,
                    plan.layers,
                    plan.params,
                    np.asarray(loss),
                    np.asarray(module_values),
                    np.asarray(param_values),
                )
                points[key].append(point)
                frame = _point_frame(point, seeds, loss=True)
                frames.append(frame if key is None else frame.assign(learning_rate=key))
            if store is not None:
                import pandas as pd

                store.write([(width, depth)], pd.concat(frames, ignore_index=True))
        if progress is not None:
            progress(width, depth)
    return {key: CoordCheck(tuple(points[key]), widths, depths, seeds, steps) for key in keys}


def _learning_rates(values: object) -> tuple[float, ...]:
    if isinstance(values, int | float | np.number) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, Sequence) or isinstance(values, str) or not values:
        raise TypeError(
            f"learning_rates must be a non-empty sequence of positive numbers, got {values!r}"
        )
    rates = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise TypeError(f"learning_rates must hold numbers, got {value!r} in {list(values)}")
        if not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"learning_rates must be finite and > 0, got {value!r} in {list(values)}"
            )
        rates.append(float(value))
    if len(set(rates)) != len(rates):
        raise ValueError(f"learning_rates must not repeat a value, got {rates}")
    return tuple(rates)


def _check_arguments(make_model, widths, depths, seeds, steps, loss_fn):
    widths = _positive_ints("widths", widths)
    depths = _positive_ints("depths", depths, allow_none=True)
    seed_values = _seeds(seeds)
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not callable(make_model):
        raise TypeError(
            f"make_model must be callable as make_model(width, depth, rngs), got {make_model!r}"
        )
    _inspection._check_loss_fn(loss_fn)
    return widths, depths, seed_values, int(steps)


def _is_transformation(optimizer: object) -> bool:
    return hasattr(optimizer, "init") and hasattr(optimizer, "update")


def coord_check(
    make_model: Callable[[int, int | None, nnx.Rngs], nnx.Module],
    optimizer: optax.GradientTransformation,
    batches: Any,
    *,
    widths: Sequence[int],
    depths: Sequence[int] | None = None,
    seeds: int | Sequence[int] = 3,
    steps: int = 3,
    loss_fn: _inspection.LossFn,
    modules: Sequence[str | type[nnx.Module]] | str | type[nnx.Module] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    out: str | Path | None = None,
    identity: Any = None,
    log: Callable[[str], None] | None = None,
) -> CoordCheck:
    """The coordinate check of a model family: per width (and depth), seed, step and layer,
    the sizes of the activations, their change, the gradients and the updates.

    Args:
        make_model: `make_model(width, depth, rngs) -> nnx.Module`; `depth` is None when
            `depths` is None. It must be hashable (a function, not a fresh lambda per call,
            for a second call to reuse the compiled programs).
        optimizer: any `optax.GradientTransformation` (a chain, `jaxgrad.scaling.mup_adam`,
            ...). It is a static argument: pass the same object again to reuse the compiled
            programs (a new `optax.adam(lr)` compiles again; `coord_checks` takes
            `optax.adam` itself and vmaps the learning rates).
        batches: a list of at least `steps` batches (batch t is used at step t), a callable
            `batches(step) -> batch`, or one batch (any pytree that is not a list) used at
            every step. Every batch has the same shapes.
        widths: the widths, positive ints.
        depths: the depths, positive ints, or None (one depth, passed as None).
        seeds: a count n (seeds 0..n-1) or the seeds; each draws the initialization from
            `jax.random.key(seed)`. They are vmapped.
        steps: the number of training steps recorded, >= 1.
        loss_fn: `loss_fn(model, batch) -> scalar`, as for `jaxgrad.inspect`.
        modules: which calls to record, as for `jaxgrad.inspect` (default: every module that
            owns a parameter, attention and jaxgrad's blocks).
        progress: called as `progress(width, depth)` after each point (a log, a progress bar),
            computed or read back from `out`.
        out: a results folder (`jaxgrad.store.ResultStore`, one Parquet part per point) where
            each point is written as soon as it is computed; a run into a folder that holds
            some points of the same check reads them back instead of computing them (a
            killed run resumes, and says so through `log`). Default: nothing is written.
        identity: JSON values naming what `out`'s check depends on that this function
            cannot see: above all the optimizer and its settings (an Optax chain is a pair
            of functions). A folder refuses another check: one whose identity, seeds, steps,
            batches (their bytes), `modules`, or the names of `make_model` and `loss_fn`
            differ. The `jaxgrad coord` command passes its whole configuration.
        log: where the one-line messages of `out` go (resuming; damaged or stray parts);
            default stderr.

    Returns:
        A `CoordCheck`. Inf and nan in a network's signal are recorded as values.

    Raises:
        TypeError, ValueError: on a bad width, depth, seed, step count or batch list, an
            `identity` that is not JSON, an `out` that holds another check, or a `loss_fn`
            that does not return a scalar (raised while tracing, before any run).

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> def make(width, depth, rngs):
        ...     return nnx.Sequential(nnx.Linear(4, width, rngs=rngs), nnx.relu,
        ...                           nnx.Linear(width, 1, rngs=rngs))
        >>> def loss_fn(model, batch):
        ...     return jnp.mean((model(batch[0]) - batch[1]) ** 2)
        >>> batch = (jnp.ones((8, 4)), jnp.zeros((8, 1)))
        >>> check = coord_check(make, optax.sgd(0.1), batch, widths=[16, 32], seeds=2,
        ...                     loss_fn=loss_fn)
        >>> check.point(16).layers, check.point(16).modules.shape
        (('layers.0', 'layers.2'), (2, 3, 2, 3))
    """
    widths, depths, seed_values, steps = _check_arguments(
        make_model, widths, depths, seeds, steps, loss_fn
    )
    if not _is_transformation(optimizer):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {optimizer!r}")
    return _run(
        make_model, optimizer, None, batches, widths, depths, seed_values, steps, loss_fn,
        modules, progress, out, identity, log,
    )[None]  # fmt: skip


def coord_checks(
    make_model: Callable[[int, int | None, nnx.Rngs], nnx.Module],
    optimizer: Callable[[Any], optax.GradientTransformation],
    batches: Any,
    *,
    learning_rates: Sequence[float],
    widths: Sequence[int],
    depths: Sequence[int] | None = None,
    seeds: int | Sequence[int] = 3,
    steps: int = 3,
    loss_fn: _inspection.LossFn,
    modules: Sequence[str | type[nnx.Module]] | str | type[nnx.Module] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    out: str | Path | None = None,
    identity: Any = None,
    log: Callable[[str], None] | None = None,
) -> dict[float, CoordCheck]:
    """`coord_check` at several learning rates at once: per (width, depth), one compiled
    program trains every learning rate and every seed (both vmapped).

    Each learning rate's `CoordCheck` reads as `coord_check`'s does (`slopes`,
    `jaxgrad.plot.coord_check`, `jaxgrad.diagnose`), and its points' `loss` across rates is
    the learning-rate sweep of learning-rate transfer (Tensor Programs V, figure 1: under muP
    the best rate stays put as the width grows). Each rate's numbers equal those of
    `coord_check(make_model, optimizer(rate), ...)` up to float rounding (the rate arrives as
    a float32 array, not a Python float).

    Args:
        make_model: as for `coord_check`.
        optimizer: `optimizer(learning_rate) -> optax.GradientTransformation`, called with a
            traced float32 scalar inside the program (pass it on to an Optax optimizer or
            schedule; do not branch on it in Python), and once with the first rate as a
            Python float to check that it builds a transformation.
        batches: as for `coord_check`.
        learning_rates: the learning rates, finite and > 0, without repeats.
        widths, depths, seeds, steps, loss_fn, modules, progress: as for `coord_check`.
        out, identity, log: as for `coord_check`; a folder holds one set of learning rates
            (they are part of its identity), each point's part holding every rate.

    Returns:
        {learning rate: `CoordCheck`}, in the order of `learning_rates`.

    Raises:
        TypeError, ValueError: as `coord_check`, and on learning rates that are not positive
            finite numbers, or an `optimizer` that is not callable or does not build a
            transformation.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> def make(width, depth, rngs):
        ...     return nnx.Sequential(nnx.Linear(4, width, rngs=rngs), nnx.relu,
        ...                           nnx.Linear(width, 1, rngs=rngs))
        >>> def loss_fn(model, batch):
        ...     return jnp.mean((model(batch[0]) - batch[1]) ** 2)
        >>> batch = (jnp.ones((8, 4)), jnp.zeros((8, 1)))
        >>> checks = coord_checks(make, optax.sgd, batch, learning_rates=[0.01, 0.1],
        ...                       widths=[16, 32], seeds=2, loss_fn=loss_fn)
        >>> sorted(checks), checks[0.1].point(32).loss.shape  # (seeds, steps)
        ([0.01, 0.1], (2, 3))

    References:
        Yang et al. 2022, "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
        Hyperparameter Transfer" (figure 1, learning-rate transfer).
    """
    widths, depths, seed_values, steps = _check_arguments(
        make_model, widths, depths, seeds, steps, loss_fn
    )
    rates = _learning_rates(learning_rates)
    if not callable(optimizer) or _is_transformation(optimizer):
        raise TypeError(
            "optimizer must be a function of the learning rate that returns an "
            f"optax.GradientTransformation (e.g. optax.adam), got {optimizer!r}"
        )
    built = optimizer(rates[0])
    if not _is_transformation(built):
        raise TypeError(
            f"optimizer({rates[0]}) must return an optax.GradientTransformation, got {built!r}"
        )
    return _run(
        make_model, optimizer, rates, batches, widths, depths, seed_values, steps, loss_fn,
        modules, progress, out, identity, log,
    )  # fmt: skip


__all__ = [
    "MODULE_STATISTICS",
    "PARAM_STATISTICS",
    "STATISTICS",
    "CoordCheck",
    "CoordPoint",
    "coord_check",
    "coord_checks",
    "mean_abs",
]
