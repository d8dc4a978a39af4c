"""Clipping transforms: by value, by global norm, per leaf and per unit (AGC).

Norms and rescalings go through `jaxgrad.stats`: a finite exploding update keeps its
direction (float32 entries of 2e19 square to inf, where optax's clipping gives an update of
exactly 0), inf entries clip to their limiting direction, and a nan passes through with a
nan norm recorded.

References:
    Pascanu, Mikolov and Bengio 2013, "On the difficulty of training recurrent neural
    networks". Brock, De, Smith and Simonyan 2021, "High-Performance Large-Scale Image
    Recognition Without Normalization".
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxgrad import init as _init
from jaxgrad import stats as _stats
from jaxgrad.optim._checks import Axis, _axis, _require_params, _scalar

# ----------------------------------------------------------------------------- norms


def _norm_dtype(x: jax.Array) -> jnp.dtype:
    """Norms are accumulated in at least float32 (float64 for float64 leaves)."""
    return _stats.accumulation_dtype(jnp.result_type(x))


def _global_norm_dtype(tree: Any) -> jnp.dtype:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.dtype(jnp.float32)
    return jnp.result_type(*(_norm_dtype(x) for x in leaves))


def _unit_axes(ndim: int, axis: Axis) -> tuple[int, ...]:
    """The axes a unit's norm runs over: `axis` if given, else all but the last (or all)."""
    if axis is None:
        return tuple(range(ndim)) if ndim <= 1 else tuple(range(ndim - 1))
    for a in axis:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for a parameter with {ndim} dimensions")
    return tuple(sorted({a % ndim for a in axis}))


def _unit_norm(x: jax.Array, axis: Axis) -> jax.Array:
    """The L2 norm of each unit of `x`, with the reduced axes kept (so it broadcasts)."""
    return _stats.norm(x, _unit_axes(jnp.ndim(x), axis), keepdims=True)


def _clip_group(values: list[jax.Array], limit: Any, axes: tuple[int, ...] | None, eps=0.0):
    """Rescale `values` so that each unit's norm is at most `limit`: the clipping core.

    With `axes=None` all the arrays together are one unit (a global norm); with `axes`,
    `values` is one array whose units are its slices over those axes. A unit is rescaled to
    `limit * v / (||v|| + eps)` when ||v|| + eps > limit, and kept bit for bit otherwise.

    The rescaling never loses a finite update to the dtype: the direction v / ||v|| is taken
    of the values scaled by a power of two to a largest magnitude below 1 (so neither the
    norm nor the quotient can overflow or flush to zero where the naive g * (limit / ||g||)
    gives exactly 0 for entries of 2e19 in float32). A unit with inf entries is clipped to
    its limiting direction, the signs of its inf entries over the square root of their
    number (the limit of v / ||v|| as they grow). A unit with a nan is passed through as it
    is: it has no direction, and its nan norm is recorded (skip such steps with
    `optax.apply_if_finite`).

    Returns:
        (the rescaled arrays in their own dtypes, the norm of each unit, whether each unit
        was clipped); the norm is inf only beyond the accumulation dtype (or with inf
        entries), nan with nan entries.
    """
    dtype = _global_norm_dtype(values)
    floats = [v.astype(dtype) for v in values]

    def reduce(per_value, combine):
        # per_value(v) reduces one array over the unit's axes, combine joins across arrays
        if axes is None:
            return combine(jnp.stack([per_value(v, None) for v in floats]))
        return per_value(floats[0], axes)

    exponent = reduce(lambda v, a: _stats.pow2_exponent(v, a, keepdims=a is not None), jnp.max)
    scaled = [_stats.scale_by_pow2(v, exponent) for v in floats]
    if axes is None:
        scaled_norm = _stats.global_norm(scaled)
    else:
        scaled_norm = _stats.norm(scaled[0], axes, keepdims=True)
    norm = jnp.ldexp(scaled_norm, exponent)
    inf_count = reduce(
        lambda v, a: jnp.sum(jnp.isinf(v), axis=a, keepdims=a is not None, dtype=dtype), jnp.sum
    )
    has_nan = reduce(lambda v, a: jnp.any(jnp.isnan(v), axis=a, keepdims=a is not None), jnp.any)
    limit = jnp.asarray(limit, dtype)
    clipped = (norm + eps > limit) & ~has_nan
    scaled_eps = _stats.scale_by_pow2(jnp.asarray(eps, dtype), exponent)

    def rescale(value, v_scaled):
        finite_direction = v_scaled / (scaled_norm + scaled_eps)
        inf_direction = jnp.where(jnp.isinf(v_scaled), jnp.sign(v_scaled), 0) / jnp.sqrt(
            jnp.maximum(inf_count, 1)
        )
        direction = jnp.where(inf_count > 0, inf_direction, finite_direction)
        return jnp.where(clipped, direction * limit, value).astype(value.dtype)

    return [rescale(v, sv) for v, sv in zip(values, scaled, strict=True)], norm, clipped


# ----------------------------------------------------------------------------- clipping


def clip_by_value(max_delta: float) -> optax.GradientTransformation:
    """Clip every entry of the updates to [-max_delta, max_delta] (Keras' `clipvalue`).

    Args:
        max_delta: the largest absolute value an entry may keep, > 0 (or a jax scalar).

    Returns:
        A stateless `optax.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> tx = clip_by_value(1.0)
        >>> updates, _ = tx.update(jnp.array([-3.0, 0.5, 2.0]), tx.init(None))
        >>> updates.tolist()
        [-1.0, 0.5, 1.0]

    References:
        Keras `Optimizer(clipvalue=...)`; Mikolov 2012, "Statistical Language Models Based on
        Neural Networks" (element-wise clipping, as discussed by Pascanu et al. 2013).
    """
    max_delta = _scalar("max_delta", max_delta, _init._positive)

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: jnp.clip(u, -max_delta, max_delta), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class ClipByGlobalNormState(NamedTuple):
    """What `clip_by_global_norm` saw at the last step.

    Attributes:
        global_norm: the global L2 norm of the incoming updates, before clipping.
        clipped: whether they were rescaled.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import optim
        >>> tx = optim.clip_by_global_norm(1.0)
        >>> params = {"w": jnp.ones(2)}
        >>> updates, state = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params))
        >>> clipped = [round(u, 6) for u in updates["w"].tolist()]
        >>> float(state.global_norm), bool(state.clipped), clipped
        (5.0, True, [0.6, 0.8])
    """

    global_norm: jax.Array
    clipped: jax.Array


def clip_by_global_norm(max_norm: float, eps: float = 0.0) -> optax.GradientTransformation:
    """Rescale all updates together so that their global L2 norm is at most `max_norm`.

    With n the global norm of the updates, every leaf is multiplied by
    `max_norm / (n + eps)` when that is < 1 and left unchanged otherwise. With `eps=0`
    (the default) this is Pascanu et al.'s g / max(1, n / max_norm); `eps=1e-6` gives
    PyTorch's `torch.nn.utils.clip_grad_norm_`. A zero gradient stays zero and finite. The
    state records n (before clipping) and whether the updates were clipped.

    Unlike optax's, the norm and the rescaling cannot overflow: float32 entries of 2e19
    give a finite norm and an update of norm `max_norm` in their direction (a naive norm
    is inf there and the update exactly 0), inf entries give their limiting direction,
    and an update with a nan passes through unchanged with a nan norm recorded (wrap the
    chain in `optax.apply_if_finite` to skip such steps). Norms of float16 and bfloat16
    updates are taken in float32. `clip_by_layer_norm` and `adaptive_clip` do the same per
    leaf and per unit.

    Args:
        max_norm: the largest global norm, > 0 (or a jax scalar).
        eps: added to the norm in the denominator, >= 0.

    Returns:
        An `optax.GradientTransformation` with a `ClipByGlobalNormState`.

    Example:
        >>> import jax.numpy as jnp
        >>> tx = clip_by_global_norm(1.0)
        >>> grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
        >>> updates, state = tx.update(grads, tx.init(grads))
        >>> [round(float(updates[k][0]), 6) for k in "ab"], float(state.global_norm)
        ([0.6, 0.8], 5.0)

    References:
        Pascanu, Mikolov and Bengio 2013, "On the difficulty of training recurrent neural
        networks", Algorithm 1.
    """
    max_norm = _scalar("max_norm", max_norm, _init._positive)
    eps = _scalar("eps", eps, _init._nonnegative)

    def init(params):
        dtype = _global_norm_dtype(params)
        return ClipByGlobalNormState(jnp.zeros((), dtype), jnp.zeros((), bool))

    def update(updates, state, params=None):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        if not leaves:
            return updates, state
        leaves, norm, clipped = _clip_group(leaves, max_norm, None, eps)
        state = ClipByGlobalNormState(norm.astype(state.global_norm.dtype), clipped)
        return jax.tree.unflatten(treedef, leaves), state

    return optax.GradientTransformation(init, update)


def clip_by_layer_norm(max_norm: float) -> optax.GradientTransformation:
    """Rescale each parameter leaf's update separately so that its L2 norm is at most `max_norm`.

    Every leaf u becomes u / max(1, ||u|| / max_norm): the global rule of Pascanu et al.
    applied per tensor (a kernel and its bias are clipped independently).

    Args:
        max_norm: the largest norm of each leaf, > 0 (or a jax scalar).

    Returns:
        A stateless `optax.GradientTransformation`.

    Example:
        >>> import jax.numpy as jnp
        >>> tx = clip_by_layer_norm(1.0)
        >>> grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.1])}
        >>> updates, _ = tx.update(grads, tx.init(grads))
        >>> [round(x, 6) for x in updates["a"].tolist()], updates["b"].tolist()
        ([0.6, 0.8], [0.10000000149011612])

    References:
        Pascanu, Mikolov and Bengio 2013, "On the difficulty of training recurrent neural
        networks".
    """
    max_norm = _scalar("max_norm", max_norm, _init._positive)

    def update(updates, state, params=None):
        del params

        def clip(u):
            return _clip_group([u], max_norm, tuple(range(jnp.ndim(u))))[0][0]

        return jax.tree.map(clip, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def adaptive_clip(
    clipping: float, eps: float = 1e-3, *, axis: int | tuple[int, ...] | None = None
) -> optax.GradientTransformation:
    """Unit-wise adaptive gradient clipping (AGC): ||G_i|| <= clipping * max(||W_i||, eps).

    For each unit i (see the module docstring) with gradient G_i and weights W_i, G_i is
    rescaled to `clipping * max(||W_i||, eps) / ||G_i||` times itself when it is longer than
    that, and left unchanged otherwise. By default a unit is an output feature: the norm runs
    over axis 0 of a dense `(in, out)` kernel and over every axis but the last of a
    `(*spatial, in, out)` convolution kernel; a bias or other vector is one unit (its whole
    norm), as in optax and the NFNet code. Give `axis` for other layouts, e.g. `axis=1` for
    an `nnx.Embed` table `(vocab, features)` whose units are rows. Brock et al. do not clip
    the final classifier layer: exclude it with `optax.masked`.

    Args:
        clipping: the largest allowed ratio ||G_i|| / max(||W_i||, eps), > 0 (or a jax
            scalar). The paper uses 0.01 to 0.16, smaller for larger batches.
        eps: the floor on the weight norm, so zero-initialized units can move, >= 0.
        axis: the axes every unit's norm runs over, the same for all leaves; None for the
            default above. Layers stacked on a leading axis (`nnx.vmap`, the blocks of
            jaxgrad's `nn.MLP`) are one array here, and the default would take each unit's
            norm across the layers: give them `axis=-2` (a stacked dense kernel's inputs)
            in an `optax.masked` of their own, beside the default for the other leaves.

    Returns:
        A stateless `optax.GradientTransformation`. Its `update` needs `params` and raises a
        ValueError without them.

    Example:
        >>> import jax.numpy as jnp
        >>> tx = adaptive_clip(0.1)
        >>> params = {"kernel": jnp.array([[3.0, 0.0], [4.0, 0.0]])}
        >>> grads = {"kernel": jnp.array([[0.0, 1.0], [2.0, 0.0]])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> [[round(x, 6) for x in row] for row in updates["kernel"].tolist()]
        [[0.0, 0.0001], [0.5, 0.0]]

    References:
        Brock, De, Smith and Simonyan 2021, "High-Performance Large-Scale Image Recognition
        Without Normalization", section 4.
    """
    clipping = _scalar("clipping", clipping, _init._positive)
    eps = _scalar("eps", eps, _init._nonnegative)
    axis = _axis(axis)

    def update(updates, state, params=None):
        _require_params("adaptive_clip", params)

        def clip(u, p):
            limit = clipping * jnp.maximum(_unit_norm(p, axis), eps)
            return _clip_group([u], limit, _unit_axes(jnp.ndim(u), axis))[0][0]

        return jax.tree.map(clip, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
