"""Parametrizations that keep every layer's updates of the same size at every width and
depth: muP (Yang et al. 2022) and depth-muP (Yang et al. 2023, Bordelon et al. 2023).

muP is written here as TP-V's Table 8 (the form the `mup` package implements), relative to
a base model: at the base width every factor is 1 and the model is the standard one, and a
width n multiplies a weight's size or learning rate by a power of the width ratio
m = n / n_base of its fan-in or fan-out. A parameter's role comes from which of its axes
grow with width (read off the base model and a model of twice its width, as `mup`'s
`set_base_shapes` does with its delta model):

=====================  =================  ===============  ========================
role                   init std           SGD lr           Adam lr
=====================  =================  ===============  ========================
input (finite fan-in)  1 / sqrt(fan_in)   x m_out          x 1
hidden (both grow)     1 / sqrt(fan_in)   x 1              x 1 / m_in
output (finite out)    1 / sqrt(base in)  x m_in           x 1
vector (bias, scale)   unchanged          x m_out          x 1
=====================  =================  ===============  ========================

and the output layer's forward pass is multiplied by 1 / m_in (`MuReadout`). Input and
hidden initializations are the standard 1/fan_in variance (`jaxgrad.init.lecun_normal`).
Attention logits are q.k * sqrt(d_base) / d instead of q.k / sqrt(d)
(`mup_dot_product_attention`).

Depth-muP: a residual block's branch is multiplied by sqrt(L_base / L) (`depth_multiplier`;
`jaxgrad.nn.MLP(residual=True, residual_scale=...)`), and with Adam the learning rate of the
blocks' parameters by sqrt(L_base / L) too; with SGD it is unchanged. Blocks are recognized
as parameters with an axis that grows with depth (stacked layers, `nnx.vmap` + scan).

Kernels are in Flax's layout: the last axis is fan-out, the others fan-in (`nnx.Linear`,
`nnx.Conv`; `nnx.Embed`'s (vocabulary, features) embedding is an input weight, whose fan-in,
the vocabulary, is finite). An `nnx.LinearGeneral` kernel's fan-in is its `in_features` axes
and its fan-out its `out_features` axes, and its bias is a vector, so
`nnx.MultiHeadAttention` is read as TP-V reads a transformer: the query, key and value
kernels (in, heads, head_dim) have fan-in `in` and fan-out heads * head_dim, the output
kernel (heads, head_dim, out) fan-in heads * head_dim and fan-out `out`, all four hidden
weights whether the width grows the head dimension or the number of heads; their
(heads, head_dim) biases and the layer norms' scales and biases are vectors. A fan that spans
several axes counts as their product (its width ratio is the product of theirs). Pass
`attention_fn=mup_dot_product_attention(base_head_dim)` to `nnx.MultiHeadAttention` for the
1/d logits; TP-V (appendix D.2) also zero-initializes the query kernel
(`kernel_init=jaxgrad.init.zeros()` on it, which the table does not enforce). Flax's
default `nnx.Embed` initialization, std 1/sqrt(features), shrinks with width; under muP give
the embedding a width-independent std (`embedding_init`).

References:
    Yang and Hu 2021, "Tensor Programs IV: Feature Learning in Infinite-Width Neural
    Networks" (the maximal-update parametrization). Yang et al. 2022, "Tensor Programs V:
    Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer", Tables 3 and 8
    (initialization, multipliers and learning rates for SGD and Adam; 1/d attention).
    Yang, Yu, Zhu and Hayou 2023, "Tensor Programs VI: Feature Learning in Infinite-Depth
    Neural Networks" (Depth-muP: branch multiplier 1/sqrt(L); Adam learning rate
    1/sqrt(L)). Bordelon, Noci, Li, Hanin and Pehlevan 2023, "Depthwise Hyperparameter
    Transfer in Residual Networks: Dynamics and Scaling Limit" (1/sqrt(L) branches).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxgrad import init as _init

OPTIMIZERS = ("sgd", "adam")
ROLES = ("input", "hidden", "output", "vector")


def _path_key(path) -> str:
    """A parameter's path as "layers.0.kernel" (a Variable's trailing `.value` dropped)."""
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            parts.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            parts.append(entry.name)
        else:
            parts.append(str(entry))
    if parts and parts[-1] == "value":
        parts.pop()
    return ".".join(parts)


def _param_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """Every `nnx.Param`'s shape by its path (the paths `jax.tree_util` gives the state)."""
    state = nnx.state(model, nnx.Param)
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return {_path_key(path): tuple(leaf.shape) for path, leaf in flat}


def _kernel_fans(ndim: int, depth_axes: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Flax's kernel layout: of the axes that are not depth axes, the last is fan-out and the
    others fan-in; a parameter with one such axis is a vector (fan-in 1)."""
    core = tuple(a for a in range(ndim) if a not in depth_axes)
    return core[:-1], core[-1:]


def _linear_general_fans(
    model: nnx.Module, shapes: dict[str, tuple[int, ...]]
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """The fans of every `nnx.LinearGeneral`'s kernel and bias, by path: the kernel is
    (*batch, *in_features, *out_features), after any leading axes that stacking added, and
    the bias (*batch, *out_features); batch axes are neither fan."""
    fans = {}
    for path, module in nnx.iter_modules(model):
        if not isinstance(module, nnx.LinearGeneral):
            continue
        prefix = ".".join(map(str, path))
        n_batch, n_in = len(module.batch_axis), len(module.in_features)
        n_out = len(module.out_features)
        for name, n_fan_in in (("kernel", n_in), ("bias", 0)):
            key = f"{prefix}.{name}" if prefix else name
            if key not in shapes:
                continue  # no bias
            ndim = len(shapes[key])
            first = ndim - n_out - n_fan_in  # the first fan-in axis
            if first - n_batch < 0:
                continue  # not the layout LinearGeneral makes: leave it to the default
            fans[key] = (tuple(range(first, first + n_fan_in)), tuple(range(ndim - n_out, ndim)))
    return fans


@dataclasses.dataclass(frozen=True)
class BaseShapes:
    """The base model's parameter shapes and which of their axes grow with width and depth.

    Attributes:
        shapes: path -> shape at the base width and depth.
        width_axes: path -> the axes that grow with width.
        depth_axes: path -> the axes that grow with depth (stacked blocks).
        base_width, base_depth: the base (`base_depth` None: no depth-muP factors).
        fan_in_axes, fan_out_axes: path -> the axes whose product is the fan-in (fan-out):
            every axis but the last (the last) for a kernel, none (the non-depth axes) for
            a vector, a `nnx.LinearGeneral`'s `in_features` (`out_features`) axes. A path
            missing from them (a `BaseShapes` built by hand) gets the kernel layout.

    Example:
        >>> from flax import nnx
        >>> from jaxgrad.scaling.mup import MuReadout, base_shapes
        >>> def make(width, depth, rngs):
        ...     return nnx.Sequential(nnx.Linear(3, width, rngs=rngs),
        ...                           nnx.Linear(width, width, rngs=rngs),
        ...                           MuReadout(width, 2, base_in_features=16, rngs=rngs))
        >>> base = base_shapes(make, 16)
        >>> base.shapes["layers.1.kernel"], base.width_axes["layers.1.kernel"]
        ((16, 16), (0, 1))
        >>> base.width_axes["layers.2.bias"], base.base_depth  # the readout's bias is fixed
        ((), None)
    """

    shapes: dict[str, tuple[int, ...]]
    width_axes: dict[str, tuple[int, ...]]
    depth_axes: dict[str, tuple[int, ...]]
    base_width: int
    base_depth: int | None
    fan_in_axes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    fan_out_axes: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(
            (
                tuple(sorted(self.shapes.items())),
                tuple(sorted(self.fan_in_axes.items())),
                self.base_width,
                self.base_depth,
            )
        )

    def fans(self, path: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The fan-in and fan-out axes of the parameter at `path` (see the attributes).

        Args:
            path: a parameter's path, as in `shapes`.

        Returns:
            (fan-in axes, fan-out axes), indices into the parameter's shape.

        Raises:
            KeyError: `path` is not a parameter of the base.

        Example:
            >>> from flax import nnx
            >>> from jaxgrad.scaling.mup import base_shapes
            >>> def make(width, depth, rngs):
            ...     return nnx.MultiHeadAttention(4, width, decode=False, rngs=rngs)
            >>> base = base_shapes(make, 16)
            >>> base.fans("query.kernel"), base.fans("out.kernel"), base.fans("query.bias")
            (((0,), (1, 2)), ((0, 1), (2,)), ((), (0, 1)))
        """
        if path in self.fan_in_axes:
            return self.fan_in_axes[path], self.fan_out_axes[path]
        return _kernel_fans(len(self.shapes[path]), self.depth_axes[path])


def base_shapes(
    make_model: Callable[[int, int | None, nnx.Rngs], nnx.Module],
    base_width: int,
    base_depth: int | None = None,
    *,
    scale_depth: bool = True,
) -> BaseShapes:
    """The base of a model family: its parameter shapes at `base_width` (and `base_depth`),
    and the axes that grow, found by building (abstractly, no compute) the model at twice
    the base width (and twice the base depth), and each parameter's fan-in and fan-out axes
    (read off the base model's modules: an `nnx.LinearGeneral`'s `in_features` and
    `out_features`, so `nnx.MultiHeadAttention`'s kernels are hidden weights whether the
    width grows the head dimension or the number of heads; see the module's docstring).

    Args:
        make_model: `make_model(width, depth, rngs) -> nnx.Module` (depth is None when no
            base depth is given); the same parameters at every width and depth.
        base_width: the width at which every muP factor is 1, a positive int.
        base_depth: the depth at which depth-muP's factors are 1, a positive int, or None
            for width alone. A model whose blocks are stacked on a leading axis (`nnx.vmap`)
            needs it even for muP in width alone: without it the stacked axis is read as a
            fan-in (the learning rates come out the same, the roles and `init_std` not).
        scale_depth: False for muP in width alone with `base_depth` given: the stacked axes
            are found at `base_depth` and read as neither fan, and no depth-muP factor
            applies at any depth (the result's `base_depth` is None).

    Returns:
        `BaseShapes`.

    Raises:
        ValueError: `base_width` or `base_depth` is not a positive int, the model's
            parameters (their paths) change with width or depth, or `scale_depth` is
            False without a `base_depth` or with a model none of whose parameters grows
            with depth.

    Example:
        >>> from flax import nnx
        >>> def make(width, depth, rngs):
        ...     return nnx.Sequential(nnx.Linear(3, width, rngs=rngs),
        ...                           nnx.Linear(width, 2, rngs=rngs))
        >>> base = base_shapes(make, 16)
        >>> base.width_axes["layers.0.kernel"], base.width_axes["layers.1.kernel"]
        ((1,), (0,))

        Attention with four heads, whose head dimension grows with the width; the 1/d logits
        come from `mup_dot_product_attention`:

        >>> from jaxgrad.scaling.mup import mup_dot_product_attention
        >>> def make(width, depth, rngs):
        ...     return nnx.MultiHeadAttention(
        ...         4, width, decode=False, rngs=rngs,
        ...         attention_fn=mup_dot_product_attention(base_head_dim=16 // 4))
        >>> base = base_shapes(make, 16)
        >>> base.shapes["query.kernel"], base.width_axes["query.kernel"]
        ((16, 4, 4), (0, 2))
        >>> base.fans("query.kernel"), base.fans("out.kernel")  # (fan-in, fan-out) axes
        (((0,), (1, 2)), ((0, 1), (2,)))
    """
    for name, value in (("base_width", base_width), ("base_depth", base_depth)):
        if value is None and name == "base_depth":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")

    if not isinstance(scale_depth, bool):
        raise TypeError(f"scale_depth must be a bool, got {scale_depth!r}")
    if not scale_depth and base_depth is None:
        raise ValueError(
            "scale_depth=False needs base_depth (the depth at which the stacked axes are "
            "found); for a model with no stacked blocks leave both out"
        )

    def shapes_at(width, depth):
        return _param_shapes(nnx.eval_shape(lambda: make_model(width, depth, nnx.Rngs(0))))

    base_model = nnx.eval_shape(lambda: make_model(base_width, base_depth, nnx.Rngs(0)))
    base = _param_shapes(base_model)
    wider = shapes_at(2 * base_width, base_depth)
    deeper = shapes_at(base_width, 2 * base_depth) if base_depth is not None else base
    for other, at in (
        (wider, f"width {2 * base_width}"),
        (deeper, f"depth {2 * (base_depth or 0)}"),
    ):
        if set(other) != set(base):
            raise ValueError(
                f"the model must have the same parameters at every width and depth; at {at} "
                f"it gains {sorted(set(other) - set(base))} and loses "
                f"{sorted(set(base) - set(other))} against the base (stack blocks on a "
                "leading axis, nnx.vmap, rather than in a list whose length is the depth)"
            )

    def grown(other):
        return {
            path: tuple(
                a for a, (s, t) in enumerate(zip(shape, other[path], strict=True)) if s != t
            )
            for path, shape in base.items()
        }

    depth_axes = grown(deeper)
    if not scale_depth and not any(depth_axes.values()):
        raise ValueError(
            f"scale_depth=False reads the axes that grow with depth, but no parameter grows "
            f"between depth {base_depth} and {2 * base_depth}: make_model ignores its depth "
            "(build `depth` stacked blocks, nnx.vmap), or the model has no stacked blocks "
            "(then leave base_depth and scale_depth out)"
        )
    fans = {path: _kernel_fans(len(shape), depth_axes[path]) for path, shape in base.items()}
    fans.update(_linear_general_fans(base_model, base))
    return BaseShapes(
        base,
        grown(wider),
        depth_axes,
        base_width,
        base_depth if scale_depth else None,
        {path: fan_in for path, (fan_in, _) in fans.items()},
        {path: fan_out for path, (_, fan_out) in fans.items()},
    )


class MupEntry(NamedTuple):
    """How muP treats one parameter at its current shape.

    Attributes:
        role: "input", "hidden", "output" or "vector".
        fan_in_ratio, fan_out_ratio: m_in and m_out, the width ratios of its fans (1 where
            the fan does not grow; the product of its axes' ratios where a fan spans
            several, as heads and head_dim do in `nnx.MultiHeadAttention`).
        depth_ratio: L / L_base for a stacked block's parameter, else 1.
        init_std: the standard deviation of its initialization, relative to 1: 1/sqrt(fan_in)
            for input and hidden kernels, 1/sqrt(base fan_in) for the output kernel, nan for
            vectors (left to the model).
        multiplier: the factor on its forward contribution (1/m_in for the output kernel).
        lr: its learning-rate multiplier under the optimizer.

    Example:
        >>> from flax import nnx
        >>> from jaxgrad.scaling.mup import MuReadout, base_shapes
        >>> def make(width, depth, rngs):
        ...     return nnx.Sequential(nnx.Linear(3, width, rngs=rngs),
        ...                           nnx.Linear(width, width, rngs=rngs),
        ...                           MuReadout(width, 2, base_in_features=16, rngs=rngs))
        >>> base = base_shapes(make, 16)
        >>> from jaxgrad.scaling.mup import mup_table
        >>> params = nnx.state(make(64, None, nnx.Rngs(0)), nnx.Param)
        >>> entry = mup_table(params, base)["layers.2.kernel"]  # the readout at width 64
        >>> entry.role, entry.fan_in_ratio, entry.init_std, entry.multiplier, entry.lr
        ('output', 4.0, 0.25, 0.25, 1.0)
    """

    role: str
    fan_in_ratio: float
    fan_out_ratio: float
    depth_ratio: float
    init_std: float
    multiplier: float
    lr: float


def _entry(path: str, shape: tuple[int, ...], base: BaseShapes, optimizer: str) -> MupEntry:
    if path not in base.shapes:
        raise ValueError(
            f"parameter {path} is not in the base model; its parameters are {sorted(base.shapes)}"
        )
    base_shape = base.shapes[path]
    if len(shape) != len(base_shape):
        raise ValueError(f"parameter {path} has shape {shape}, the base {base_shape}")
    depth_axes, width_axes = base.depth_axes[path], base.width_axes[path]
    ratios = [shape[a] / base_shape[a] if a in width_axes else 1.0 for a in range(len(shape))]
    depth_ratio = 1.0  # no depth-muP factor where no base depth is scaled
    if depth_axes and base.base_depth is not None:
        depth_ratio = math.prod(shape[a] / base_shape[a] for a in depth_axes)
    fan_in_axes, fan_out_axes = base.fans(path)
    # a fan spread over several axes (LinearGeneral's heads and head_dim) is their product
    fan_in_ratio = float(math.prod(ratios[a] for a in fan_in_axes))
    fan_out_ratio = float(math.prod(ratios[a] for a in fan_out_axes))
    if not fan_in_axes:
        role = "vector"
    else:
        grows_in = any(a in width_axes for a in fan_in_axes)
        grows_out = any(a in width_axes for a in fan_out_axes)
        role = "hidden" if grows_in and grows_out else "output" if grows_in else "input"
    if role == "vector":
        init_std = math.nan
    else:
        fan_in = math.prod(shape[a] for a in fan_in_axes)
        base_fan_in = math.prod(base_shape[a] for a in fan_in_axes)
        init_std = 1 / math.sqrt(base_fan_in if role == "output" else fan_in)
    multiplier = 1 / fan_in_ratio if role == "output" else 1.0
    if optimizer == "adam":
        lr = 1 / fan_in_ratio if role == "hidden" else 1.0
        lr /= math.sqrt(depth_ratio)
    else:
        lr = {"input": fan_out_ratio, "vector": fan_out_ratio, "output": fan_in_ratio}.get(
            role, 1.0
        )
    return MupEntry(role, fan_in_ratio, fan_out_ratio, depth_ratio, init_std, multiplier, lr)


def _check_optimizer(optimizer: str) -> str:
    if optimizer not in OPTIMIZERS:
        raise ValueError(
            f"optimizer must be one of {OPTIMIZERS} (muP's learning-rate rules differ between "
            f"SGD-like and Adam-like updates), got {optimizer!r}"
        )
    return optimizer


def mup_table(params: Any, base: BaseShapes, optimizer: str = "adam") -> dict[str, MupEntry]:
    """muP's treatment of every parameter of `params` (a model's `nnx.State` of `nnx.Param`,
    or any pytree of arrays with the base's structure): path -> `MupEntry`.

    Args:
        params: the parameters at the current width (and depth).
        base: the family's `BaseShapes`.
        optimizer: "adam" or "sgd": whose learning-rate rule `lr` follows.

    Returns:
        A dict from parameter path ("layers.1.kernel") to `MupEntry`.

    Raises:
        ValueError: an unknown optimizer, or a parameter that is not in the base or has
            another number of axes.

    Example:
        >>> from flax import nnx
        >>> def make(width, depth, rngs):
        ...     return nnx.Sequential(nnx.Linear(3, width, rngs=rngs),
        ...                           nnx.Linear(width, width, rngs=rngs),
        ...                           MuReadout(width, 2, base_in_features=16, rngs=rngs))
        >>> base = base_shapes(make, 16)
        >>> table = mup_table(nnx.state(make(64, None, nnx.Rngs(0)), nnx.Param), base)
        >>> entry = table["layers.1.kernel"]
        >>> entry.role, entry.lr
        ('hidden', 0.25)

        `nnx.MultiHeadAttention`'s (in, heads, head_dim) query kernel, here with the head
        dimension fixed and the heads growing, is a hidden weight with fan-in `in`:

        >>> def make(width, depth, rngs):
        ...     return nnx.MultiHeadAttention(width // 8, width, decode=False, rngs=rngs)
        >>> base = base_shapes(make, 16)
        >>> params = nnx.state(nnx.eval_shape(lambda: make(64, None, nnx.Rngs(0))), nnx.Param)
        >>> entry = mup_table(params, base)["query.kernel"]
        >>> entry.role, entry.fan_in_ratio, entry.fan_out_ratio, entry.init_std, entry.lr
        ('hidden', 4.0, 4.0, 0.125, 0.25)
    """
    optimizer = _check_optimizer(optimizer)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {
        _path_key(path): _entry(_path_key(path), tuple(jnp.shape(leaf)), base, optimizer)
        for path, leaf in flat
    }


class ScaleByMupState(NamedTuple):
    """`scale_by_mup` keeps no state.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad.scaling.mup import ScaleByMupState
        >>> ScaleByMupState() == ()  # an empty tuple: nothing to carry or shard
        True
    """


def scale_by_mup(base: BaseShapes, optimizer: str = "adam") -> optax.GradientTransformation:
    """Multiply each parameter's update by its muP learning-rate factor (`mup_table`'s
    `lr`): place it after the optimizer's scaling (`optax.scale_by_adam`) and before the
    learning rate (`optax.scale(-lr)`), or use `mup_adam` / `mup_sgd`.

    The factors are read off the updates' shapes against the base (static: nothing is
    traced and jit does not retrace).

    Args:
        base: the family's `BaseShapes` (from `base_shapes`).
        optimizer: "adam" or "sgd": whose learning-rate rule to apply (`mup_table`).

    Returns:
        An `optax.GradientTransformation` with a `ScaleByMupState`.

    Raises:
        TypeError: `base` is not a `BaseShapes`.
        ValueError: an unknown optimizer (at once), or an update whose path or number of
            axes is not in the base (at the update).

    Example:
        At width 64 against a base of 16, SGD's input weights and biases learn 4 times
        faster, the hidden kernel at the base rate, the readout's kernel 4 times faster:

        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad.scaling.mup import MuReadout, base_shapes
        >>> def make(width, depth, rngs):
        ...     return nnx.Sequential(nnx.Linear(3, width, rngs=rngs),
        ...                           nnx.Linear(width, width, rngs=rngs),
        ...                           MuReadout(width, 2, base_in_features=16, rngs=rngs))
        >>> base = base_shapes(make, 16)
        >>> from jaxgrad.scaling.mup import scale_by_mup
        >>> params = nnx.state(make(64, None, nnx.Rngs(0)), nnx.Param)
        >>> transform = scale_by_mup(base, "sgd")
        >>> ones = jax.tree.map(jnp.ones_like, params)
        >>> updates, _ = transform.update(ones, transform.init(params))
        >>> {"/".join(map(str, path)): float(value.max())
        ...  for path, value in nnx.to_flat_state(updates) if path[-1] == "kernel"}
        {'layers/0/kernel': 4.0, 'layers/1/kernel': 1.0, 'layers/2/kernel': 4.0}
    """
    optimizer = _check_optimizer(optimizer)
    if not isinstance(base, BaseShapes):
        raise TypeError(f"base must be a BaseShapes (from base_shapes), got {type(base).__name__}")

    def init(params):
        del params
        return ScaleByMupState()

    def update(updates, state, params=None):
        del params

        def scale(path, update):
            if update is None:
                return None
            key = _path_key(path)
            factor = _entry(key, tuple(jnp.shape(update)), base, optimizer).lr
            return update * jnp.asarray(factor, update.dtype)

        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(init, update)


def mup_adam(
    learning_rate: float, base: BaseShapes, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """Adam under muP (and depth-muP, where the base has a depth): `optax.scale_by_adam`,
    `scale_by_mup(base, "adam")`, then the learning rate.

    Args:
        learning_rate: the learning rate at the base width (and depth).
        base: the family's `BaseShapes`.
        b1, b2, eps: as for `optax.adam`.

    Returns:
        An `optax.GradientTransformation`.

    Example:
        Adam's first step has unit size per coordinate; muP divides the hidden kernel's by
        m_in = 4 at width 64:

        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad.scaling.mup import MuReadout, base_shapes
        >>> def make(width, depth, rngs):
        ...     return nnx.Sequential(nnx.Linear(3, width, rngs=rngs),
        ...                           nnx.Linear(width, width, rngs=rngs),
        ...                           MuReadout(width, 2, base_in_features=16, rngs=rngs))
        >>> base = base_shapes(make, 16)
        >>> from jaxgrad.scaling.mup import mup_adam
        >>> params = nnx.state(make(64, None, nnx.Rngs(0)), nnx.Param)
        >>> tx = mup_adam(1e-3, base)
        >>> grads = jax.tree.map(jnp.ones_like, params)
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> {"/".join(map(str, path)): round(float(jnp.abs(value).max()), 6)
        ...  for path, value in nnx.to_flat_state(updates) if path[-1] == "kernel"}
        {'layers/0/kernel': 0.001, 'layers/1/kernel': 0.00025, 'layers/2/kernel': 0.001}
    """
    return optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        scale_by_mup(base, "adam"),
        optax.scale(-learning_rate),
    )


def mup_sgd(learning_rate: float, base: BaseShapes) -> optax.GradientTransformation:
    """SGD under muP: `scale_by_mup(base, "sgd")`, then the learning rate.

    Args:
        learning_rate: the learning rate at the base width.
        base: the family's `BaseShapes`.

    Returns:
        An `optax.GradientTransformation`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad.scaling.mup import MuReadout, base_shapes
        >>> def make(width, depth, rngs):
        ...     return nnx.Sequential(nnx.Linear(3, width, rngs=rngs),
        ...                           nnx.Linear(width, width, rngs=rngs),
        ...                           MuReadout(width, 2, base_in_features=16, rngs=rngs))
        >>> base = base_shapes(make, 16)
        >>> from jaxgrad.scaling.mup import mup_sgd
        >>> params = nnx.state(make(64, None, nnx.Rngs(0)), nnx.Param)
        >>> tx = mup_sgd(0.1, base)
        >>> grads = jax.tree.map(jnp.ones_like, params)
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> {"/".join(map(str, path)): round(float(value.max()), 6)
        ...  for path, value in nnx.to_flat_state(updates) if path[-1] == "kernel"}
        {'layers/0/kernel': -0.4, 'layers/1/kernel': -0.1, 'layers/2/kernel': -0.4}
    """
    return optax.chain(scale_by_mup(base, "sgd"), optax.scale(-learning_rate))


class MuReadout(nnx.Module):
    """muP's output layer: y = (x W) * base_in / in + b, with W drawn with the base's std
    1/sqrt(base_in) (or zero), so the logits' update stays of the same size at every width
    (TP-V, Table 8; the `mup` package's `MuReadout`).

    Args:
        in_features, out_features: sizes.
        base_in_features: the base model's `in_features` (the multiplier is 1 there).
        use_bias: add a bias (zero-initialized).
        zero_init: start W at zero (TP-V, appendix D.2: removes the logits' initial
            randomness, which shrinks as 1/sqrt(width) anyway).
        scale: multiplies the initialization's std.
        dtype: parameter and computation dtype.
        rngs: `nnx.Rngs`.

    Raises:
        ValueError: `in_features`, `out_features` or `base_in_features` is not a positive
            int.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad.scaling.mup import MuReadout
        >>> readout = MuReadout(64, 2, base_in_features=16, rngs=nnx.Rngs(0))
        >>> readout.multiplier, readout(jnp.ones((5, 64))).shape
        (0.25, (5, 2))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        base_in_features: int,
        use_bias: bool = True,
        zero_init: bool = False,
        scale: float = 1.0,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        for name, value in (
            ("in_features", in_features),
            ("out_features", out_features),
            ("base_in_features", base_in_features),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        std = 0.0 if zero_init else scale / math.sqrt(base_in_features)
        init = _init.zeros() if zero_init else _init.normal(std=std)
        self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features), dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), dtype)) if use_bias else None
        self.multiplier = base_in_features / in_features

    def __call__(self, x: jax.Array) -> jax.Array:
        y = (x @ self.kernel[...]) * jnp.asarray(self.multiplier, x.dtype)
        return y if self.bias is None else y + jnp.broadcast_to(self.bias[...], y.shape)


def depth_multiplier(depth: int, base_depth: int = 1) -> float:
    """Depth-muP's branch multiplier sqrt(base_depth / depth): a residual network
    h_l = h_{l-1} + multiplier * f_l(h_{l-1}) keeps its output and its updates of the same
    size at every depth (Yang et al. 2023; Bordelon et al. 2023).

    Args:
        depth: the number of residual blocks, a positive int.
        base_depth: the depth at which the multiplier is 1, a positive int.

    Returns:
        sqrt(base_depth / depth).

    Raises:
        ValueError: `depth` or `base_depth` is not a positive int.

    Example:
        >>> depth_multiplier(16, base_depth=4)
        0.5
    """
    for name, value in (("depth", depth), ("base_depth", base_depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return math.sqrt(base_depth / depth)


def mup_dot_product_attention(base_head_dim: int) -> Callable[..., jax.Array]:
    """An `attention_fn` for `nnx.MultiHeadAttention` (or a function of the same signature)
    with muP's logits q.k * sqrt(base_head_dim) / head_dim: 1/d instead of 1/sqrt(d),
    equal to the standard scaling at the base (TP-V, section 4 and appendix J: q and k
    become correlated during training, so q.k grows as d). Pass it as
    `nnx.MultiHeadAttention(..., attention_fn=mup_dot_product_attention(base_head_dim))`;
    `base_shapes` and `mup_table` treat the attention's projections as hidden weights.

    Args:
        base_head_dim: the base model's head dimension (the scaling is standard there).

    Returns:
        `attention(query, key, value, *args, **kwargs)`, `nnx.dot_product_attention`'s
        signature.

    Raises:
        ValueError: `base_head_dim` is not a positive int.

    Example:
        >>> import jax.numpy as jnp
        >>> q = k = v = jnp.ones((1, 2, 1, 64))  # (batch, length, heads, head_dim)
        >>> mup_dot_product_attention(base_head_dim=16)(q, k, v).shape
        (1, 2, 1, 64)
        >>> from flax import nnx  # width 256, 4 heads of 64, against a base of 4 heads of 16
        >>> attention = nnx.MultiHeadAttention(
        ...     4, 256, decode=False, rngs=nnx.Rngs(0),
        ...     attention_fn=mup_dot_product_attention(base_head_dim=16))
        >>> attention(jnp.ones((1, 3, 256))).shape
        (1, 3, 256)
    """
    if isinstance(base_head_dim, bool) or not isinstance(base_head_dim, int) or base_head_dim < 1:
        raise ValueError(f"base_head_dim must be a positive int, got {base_head_dim!r}")

    def attention(query, key, value, *args, **kwargs):
        head_dim = query.shape[-1]
        # flax divides by sqrt(d); one more factor sqrt(base / d) makes it sqrt(base) / d
        query = query * jnp.asarray(math.sqrt(base_head_dim / head_dim), query.dtype)
        return nnx.dot_product_attention(query, key, value, *args, **kwargs)

    return attention


__all__ = [
    "OPTIMIZERS",
    "ROLES",
    "BaseShapes",
    "MuReadout",
    "MupEntry",
    "ScaleByMupState",
    "base_shapes",
    "depth_multiplier",
    "mup_adam",
    "mup_dot_product_attention",
    "mup_sgd",
    "mup_table",
    "scale_by_mup",
]
