"""Optax gradient transformations against vanishing and exploding gradients, and ready chains.

Every public factory validates its hyperparameters when called and returns an
`optax.GradientTransformation` with pure `init`/`update` and a `NamedTuple` state whose
structure (and dtypes) are fixed by `init`, so the transforms compose with `optax.chain`,
run under `jax.jit` without retracing and under `jax.vmap` (over gradients, or over a traced
hyperparameter). Layouts are JAX/Flax's: a dense kernel is `(in, out)`, a convolution kernel
`(*spatial, in, out)`.

- Clipping: `clip_by_value` (Keras' clipvalue), `clip_by_global_norm` (Pascanu et al. 2013,
  or PyTorch's `clip_grad_norm_` with `eps`), `clip_by_layer_norm` (per parameter leaf) and
  `adaptive_clip` (unit-wise AGC, Brock et al. 2021).
- Regularization: `add_l1` (the L1 subgradient added to the gradient), `l1_proximal` (exact
  soft-thresholding after the step). L2 is weight decay: `optax.add_decayed_weights` before
  the learning-rate scaling (coupled, PyTorch's `weight_decay`) or `optax.adamw` (decoupled,
  Loshchilov and Hutter 2019); `make_optimizer` uses them.
- Constraints: `max_norm` (Keras' MaxNorm), which projects the parameters after the update.
- Monitoring: `monitor` records gradient norms and update-to-weight ratios into its state;
  `monitor_state` finds that state inside any nested optimizer state.
- `make_optimizer` builds a ready chain for "sgd", "momentum", "rmsprop", "adam", "adamw".

Transforms that rewrite the parameters (`l1_proximal`, `max_norm`) see the step
`p + u` only once the learning rate has been applied, so they belong at the end of a chain.

A "unit" (for `adaptive_clip` and `max_norm`) is one output feature: a kernel's slice along
its last axis, whose norm runs over all the other axes (axis 0 of a dense `(in, out)` kernel,
axes 0..2 of a `(kh, kw, in, out)` convolution kernel). A vector or scalar (a bias, a norm
scale) is a single unit, as in optax's `unitwise_norm` and the NFNet reference code.

Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from jaxgrad import optim
    >>> params = {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}
    >>> opt = optim.make_optimizer("adam", 1e-3, clip_norm=1.0, monitor=True)
    >>> state = opt.init(params)
    >>> grads = {"kernel": jnp.full((3, 2), 10.0), "bias": jnp.ones(2)}
    >>> updates, state = opt.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> round(float(optim.monitor_state(state).global_grad_norm), 3)
    24.536

References:
    Pascanu, Mikolov and Bengio 2013, "On the difficulty of training recurrent neural
    networks". Brock, De, Smith and Simonyan 2021, "High-Performance Large-Scale Image
    Recognition Without Normalization". Srivastava et al. 2014, "Dropout: A Simple Way to
    Prevent Neural Networks from Overfitting" (max-norm constraints). Duchi and Singer 2009,
    "Efficient Online and Batch Learning Using Forward Backward Splitting" (the L1 proximal
    step). Loshchilov and Hutter 2019, "Decoupled Weight Decay Regularization".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgrad import init as _init
from jaxgrad import stats as _stats

Axis = int | tuple[int, ...] | None
# A mask as optax takes it: a pytree of bools shaped like (a prefix of) the params, or a
# function of the params returning one.
Mask = Any | Callable[[optax.Params], Any] | None

OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")


# ----------------------------------------------------------------------------- validation


def _scalar(name: str, value: object, check: Callable[[str, object], float]) -> Any:
    """Validate a concrete hyperparameter with `check`; take a jax array (maybe traced) as given.

    A jax array cannot be checked without forcing its value, which a tracer (under `jax.vmap`
    over hyperparameters) does not have; only its shape is checked.
    """
    if isinstance(value, jax.Array):
        if value.ndim != 0:
            raise ValueError(f"{name} must be a scalar, got an array of shape {value.shape}")
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
            default above.

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


# ----------------------------------------------------------------------------- regularization


def add_l1(weight: float) -> optax.GradientTransformation:
    """Add the L1 penalty's subgradient `weight * sign(p)` to the gradient.

    This is the gradient of `weight * sum|p|` (with 0 at p = 0), what Keras' `l1` regularizer
    or an L1 term in a PyTorch loss contributes. Put it before the optimizer; it rarely
    yields exact zeros (use `l1_proximal` for that).

    Args:
        weight: the penalty coefficient, >= 0 (or a jax scalar).

    Returns:
        A stateless `optax.GradientTransformation` whose `update` needs `params`.

    Example:
        >>> import jax.numpy as jnp
        >>> tx = add_l1(0.1)
        >>> params = jnp.array([-2.0, 0.0, 3.0])
        >>> updates, _ = tx.update(jnp.zeros(3), tx.init(params), params)
        >>> [round(x, 6) for x in updates.tolist()]
        [-0.1, 0.0, 0.1]

    References:
        Tibshirani 1996, "Regression Shrinkage and Selection via the Lasso".
    """
    weight = _scalar("weight", weight, _init._nonnegative)

    def update(updates, state, params=None):
        _require_params("add_l1", params)
        return jax.tree.map(
            lambda u, p: u + (weight * jnp.sign(p)).astype(u.dtype), updates, params
        ), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class L1ProximalState(NamedTuple):
    """The step count, to evaluate a learning-rate schedule."""

    count: jax.Array


def l1_proximal(
    weight: float, learning_rate: optax.ScalarOrSchedule
) -> optax.GradientTransformation:
    """Soft-threshold the parameters after the step: the proximal operator of the L1 penalty.

    With q = p + u the parameters the incoming updates u would give, the returned updates
    make the new parameters exactly `sign(q) * max(|q| - learning_rate * weight, 0)`, so
    small weights become exactly zero (proximal gradient / ISTA, Duchi and Singer 2009).

    It must be the LAST transform in a chain, after the learning-rate scaling (e.g.
    `optax.chain(optax.sgd(lr), l1_proximal(weight, lr))`), because it needs the step as it
    will be applied; `learning_rate` must be the one the chain uses. (If a `max_norm`
    constraint is also used, put it after this one: both project the parameters.)

    Args:
        weight: the penalty coefficient, >= 0 (or a jax scalar).
        learning_rate: the step size, >= 0; a number, a jax scalar (maybe traced) or an
            optax schedule of the step count.

    Returns:
        An `optax.GradientTransformation` with an `L1ProximalState`; its `update` needs
        `params`.

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> tx = optax.chain(optax.sgd(0.5), l1_proximal(0.2, 0.5))
        >>> params = jnp.array([0.05, -1.0, 2.0])
        >>> updates, _ = tx.update(jnp.zeros(3), tx.init(params), params)
        >>> [round(x, 6) for x in optax.apply_updates(params, updates).tolist()]
        [0.0, -0.9, 1.9]

    References:
        Duchi and Singer 2009, "Efficient Online and Batch Learning Using Forward Backward
        Splitting". Tibshirani 1996, "Regression Shrinkage and Selection via the Lasso".
    """
    weight = _scalar("weight", weight, _init._nonnegative)
    learning_rate = _learning_rate("learning_rate", learning_rate)

    def update(updates, state, params=None):
        _require_params("l1_proximal", params)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        threshold = lr * weight

        def prox(u, p):
            step = p + u
            shrunk = jnp.maximum(jnp.abs(step) - jnp.asarray(threshold, step.dtype), 0)
            return (jnp.sign(step) * shrunk - p).astype(u.dtype)

        updates = jax.tree.map(prox, updates, params)
        return updates, L1ProximalState(optax.safe_increment(state.count))

    return optax.GradientTransformation(
        lambda params: L1ProximalState(jnp.zeros((), jnp.int32)), update
    )


# ----------------------------------------------------------------------------- constraints


def _default_kernel_mask(params: Any) -> Any:
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def max_norm(
    max_value: float, axis: int | tuple[int, ...] | None = None, *, mask: Mask = None
) -> optax.GradientTransformation:
    """Constrain every unit's weight vector to L2 norm <= `max_value` after the update.

    Keras' `MaxNorm` as a transform: with q = p + u the parameters the incoming updates
    would give, the returned updates make the new parameters q with every unit whose norm
    exceeds `max_value` scaled back onto the sphere of radius `max_value`; units inside stay
    exactly as they are (Keras divides by norm + 1e-7, which also shrinks those slightly).

    It must be the LAST transform in a chain, after the learning-rate scaling, so that it
    constrains the parameters actually produced. The projection is expressed as an update
    u' = projected - p that `optax.apply_updates` adds back to p, so a unit whose norm
    exceeds `max_value` by more than the dtype's precision (about 1e7 times in float32)
    lands at rounding noise of p rather than on the sphere: p + (projected - p) cancels.

    Args:
        max_value: the largest unit norm, > 0 (or a jax scalar).
        axis: the axes each unit's norm runs over. None (the default) is every axis but the
            last: axis 0 of a dense `(in, out)` kernel, each output unit's incoming weights
            (Keras' default `axis=0`), and axes (0, 1, 2) of a `(kh, kw, in, out)` conv
            kernel (Keras' advice for convolutions).
        mask: which leaves to constrain, as in optax: a pytree of Python bools with the
            structure of (a prefix of) the params, or a function of the params returning
            one. None constrains the leaves with at least 2 dimensions (kernels, not biases).

    Returns:
        A stateless `optax.GradientTransformation` whose `update` needs `params`.

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> tx = optax.chain(optax.sgd(1.0), max_norm(1.0))
        >>> params = {"kernel": jnp.array([[0.6, 0.1], [0.8, 0.1]]), "bias": jnp.zeros(2)}
        >>> grads = {"kernel": jnp.array([[-0.6, 0.0], [-0.8, 0.0]]), "bias": jnp.full(2, -5.0)}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> new = optax.apply_updates(params, updates)
        >>> [round(x, 4) for x in jnp.linalg.norm(new["kernel"], axis=0).tolist()]
        [1.0, 0.1414]
        >>> new["bias"].tolist()
        [5.0, 5.0]

    References:
        Srivastava et al. 2014, "Dropout: A Simple Way to Prevent Neural Networks from
        Overfitting", section 5.1. Keras `keras.constraints.MaxNorm`.
    """
    max_value = _scalar("max_value", max_value, _init._positive)
    axis = _axis(axis)
    if mask is None:
        mask = _default_kernel_mask

    def project(u, p):
        step = p + u
        (projected,), _, outside = _clip_group([step], max_value, _unit_axes(step.ndim, axis))
        # Units inside the ball keep their update bit for bit.
        return jnp.where(outside, (projected - p).astype(u.dtype), u)

    def update(updates, state, params=None):
        _require_params("max_norm", params)
        leaf_mask = mask(params) if callable(mask) else mask

        def apply(selected, update_subtree, param_subtree):
            if isinstance(selected, jax.Array | np.ndarray) and selected.ndim == 0:
                try:
                    selected = bool(selected)
                except jax.errors.ConcretizationTypeError:
                    raise TypeError(
                        "max_norm's mask must hold Python bools known at trace time, "
                        "not traced arrays"
                    ) from None
            if not isinstance(selected, bool | np.bool_):
                raise TypeError(f"max_norm's mask leaves must be bools, got {selected!r}")
            if not selected:
                return update_subtree
            return jax.tree.map(project, update_subtree, param_subtree)

        return jax.tree.map(apply, leaf_mask, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


_max_norm_constraint = max_norm


# ----------------------------------------------------------------------------- monitoring


def _leaf_names(tree: Any) -> list[str]:
    """Stable string keys for the leaves: "layers/0/kernel" (jax's keystr, full if ambiguous)."""
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    names = [jax.tree_util.keystr(path, simple=True, separator="/") for path in paths]
    if len(set(names)) < len(names):
        names = [jax.tree_util.keystr(path) for path in paths]
    return names


class MonitorState(NamedTuple):
    """What `monitor` recorded at the last step (zeros before the first).

    Attributes:
        count: the number of updates recorded.
        grad_norms: leaf name -> L2 norm of the incoming updates (the gradient, when `monitor`
            is first in the chain). Names are "/"-joined paths, e.g. "layers/0/kernel".
        global_grad_norm: the global L2 norm of the incoming updates.
        update_ratios: leaf name -> ||update|| / ||param||, with the update the one `monitor`
            emits (its `inner`'s output when it wraps one) and the param before the step.
            NaN when `update` got no params; inf or NaN where a param is zero.
        inner_state: the wrapped transform's state (`optax.EmptyState()` when none).
    """

    count: jax.Array
    grad_norms: dict[str, jax.Array]
    global_grad_norm: jax.Array
    update_ratios: dict[str, jax.Array]
    inner_state: optax.OptState


def monitor(inner: optax.GradientTransformation | None = None) -> optax.GradientTransformation:
    """Record gradient norms and update-to-weight ratios into the state, every step.

    Alone (`inner=None`) it passes the updates through unchanged (bitwise), so it can sit
    anywhere in a chain; it records the norms of what it receives and the ratio
    ||u|| / ||p|| of those same updates to the current params. The ratio is the classic
    update-to-weight diagnostic (about 1e-3 is healthy) only after the learning-rate
    scaling; before it, it is a gradient-to-weight ratio.

    Given an `inner` transform (the rest of the optimizer), it records the norms of the raw
    updates it receives and the ratios of `inner`'s final updates to the params: both
    diagnostics from one place. `make_optimizer(..., monitor=True)` builds it that way.

    Read the values with `monitor_state(opt_state)`. The state's structure is fixed by
    `init(params)`, so a jitted step does not retrace.

    Args:
        inner: an optional transform to wrap; its updates are returned unchanged.

    Returns:
        An `optax.GradientTransformationExtraArgs` with a `MonitorState` (extra arguments
        are passed on to `inner`).

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> params = {"w": jnp.array([3.0, 4.0])}
        >>> tx = optax.chain(optax.sgd(0.1), monitor())
        >>> _, state = tx.update({"w": jnp.array([0.0, 10.0])}, tx.init(params), params)
        >>> stats = monitor_state(state)
        >>> round(float(stats.grad_norms["w"]), 6), round(float(stats.update_ratios["w"]), 6)
        (1.0, 0.2)

    References:
        Karpathy 2016, CS231n notes, "Ratio of weights:updates". Glorot and Bengio 2010,
        "Understanding the difficulty of training deep feedforward neural networks"
        (per-layer gradient norms as the sign of vanishing gradients).
    """
    inner = optax.with_extra_args_support(optax.identity() if inner is None else inner)

    def init(params):
        names = _leaf_names(params)
        leaves = jax.tree.leaves(params)
        zeros = {name: jnp.zeros((), _norm_dtype(p)) for name, p in zip(names, leaves, strict=True)}
        return MonitorState(
            count=jnp.zeros((), jnp.int32),
            grad_norms=zeros,
            global_grad_norm=jnp.zeros((), _global_norm_dtype(params)),
            update_ratios=dict(zeros),
            inner_state=inner.init(params),
        )

    def update(updates, state, params=None, **extra_args):
        names = _leaf_names(updates)
        grad_leaves = jax.tree.leaves(updates)
        grad_norms = {
            name: _stats.norm(g).astype(state.grad_norms[name].dtype)
            for name, g in zip(names, grad_leaves, strict=True)
        }
        global_grad_norm = _stats.global_norm(updates).astype(state.global_grad_norm.dtype)
        new_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        if params is None:
            ratios = {
                name: jnp.full((), jnp.nan, dtype=old.dtype)
                for name, old in state.update_ratios.items()
            }
        else:
            ratios = {
                name: (_stats.norm(u) / _stats.norm(p)).astype(state.update_ratios[name].dtype)
                for name, u, p in zip(
                    names, jax.tree.leaves(new_updates), jax.tree.leaves(params), strict=True
                )
            }
        new_state = MonitorState(
            count=optax.safe_increment(state.count),
            grad_norms=grad_norms,
            global_grad_norm=global_grad_norm,
            update_ratios=ratios,
            inner_state=inner_state,
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init, update)


def monitor_state(opt_state: optax.OptState) -> MonitorState:
    """The (outermost, first) `MonitorState` inside an optimizer state.

    It looks through any nesting of chains, `optax.inject_hyperparams`, `optax.masked` and
    the like, since they are all pytrees of NamedTuples, tuples and dicts. Under `jax.vmap`
    the arrays carry the vmapped axes.

    Args:
        opt_state: the state of an optimizer that contains a `monitor`.

    Returns:
        The `MonitorState`, whose `grad_norms` and `update_ratios` are dicts of arrays.

    Raises:
        ValueError: no `MonitorState` in `opt_state`.

    Example:
        >>> import jax.numpy as jnp
        >>> opt = make_optimizer("sgd", 0.1, monitor=True)
        >>> state = opt.init({"w": jnp.ones(2)})
        >>> int(monitor_state(state).count)
        0
    """
    found = [
        node
        for node in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, MonitorState))
        if isinstance(node, MonitorState)
    ]
    if not found:
        raise ValueError(
            "no MonitorState in this optimizer state; build the optimizer with "
            "jaxgrad.optim.monitor() in its chain or make_optimizer(..., monitor=True)"
        )
    return found[0]


# ----------------------------------------------------------------------------- ready chains


def _optional(name: str, value: object, check: Callable[[str, object], float]) -> Any:
    return None if value is None else _scalar(name, value, check)


def make_optimizer(
    name: str,
    learning_rate: optax.ScalarOrSchedule,
    *,
    clip_value: float | None = None,
    clip_norm: float | None = None,
    weight_decay: float | None = None,
    l1: float | None = None,
    max_norm: float | None = None,
    monitor: bool = False,
) -> optax.GradientTransformation:
    """A ready optimizer chain: clipping, penalties, the optimizer, then the constraint.

    The chain, each part present only when its argument is given:

    1. `clip_by_value(clip_value)`, then `clip_by_global_norm(clip_norm)`: on the raw
       gradient of the loss, as Keras' clipvalue/clipnorm and PyTorch's clipping before
       `step()` do;
    2. `add_l1(l1)`: the L1 subgradient, then `optax.add_decayed_weights(weight_decay)`:
       coupled L2 weight decay added to the gradient before the optimizer, as PyTorch's
       `weight_decay` argument does (for every name but "adamw"). Penalties are added after
       clipping, so clipping bounds the data gradient only;
    3. the optimizer with `learning_rate`: "sgd" (`optax.sgd`), "momentum" (`optax.sgd` with
       momentum 0.9), "rmsprop" (`optax.rmsprop`, decay 0.9, eps 1e-8), "adam" (`optax.adam`)
       or "adamw" (`optax.adamw`, decoupled decay `weight_decay`; None keeps optax's default
       1e-4);
    4. `max_norm(max_norm)`: the per-unit constraint on kernels, last, so it holds after
       every step.

    With `monitor=True` the whole chain is wrapped in `monitor(inner=chain)`: it records the
    raw gradient norms and the ratios of the final updates to the weights
    (read them with `monitor_state`).

    Weight decay and L1 apply to every parameter, biases included; for another choice build
    the chain yourself with `optax.masked`. For exact zeros under L1, use `l1_proximal`.

    Args:
        name: one of `OPTIMIZERS`.
        learning_rate: a number >= 0, an optax schedule, or a jax scalar (a traced one too,
            e.g. under `jax.vmap` over learning rates; it is then not validated).
        clip_value: the bound for `clip_by_value`, > 0.
        clip_norm: the bound for `clip_by_global_norm`, > 0.
        weight_decay: the L2 weight decay coefficient, >= 0.
        l1: the L1 penalty coefficient, >= 0.
        max_norm: the bound for the `max_norm` constraint, > 0.
        monitor: wrap the chain in `monitor`.

    Returns:
        An `optax.GradientTransformation` (its `update` needs params when `l1`, `max_norm`,
        `weight_decay` or `monitor` is used).

    Raises:
        ValueError: an unknown name (the message lists the valid ones) or a hyperparameter
            out of range (the message names it and its value).

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import optax
        >>> opt = make_optimizer("momentum", 0.1, clip_norm=1.0, max_norm=1.2)
        >>> params = {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}
        >>> state = opt.init(params)
        >>> grads = {"kernel": jnp.full((2, 2), -100.0), "bias": jnp.ones(2)}
        >>> updates, state = jax.jit(opt.update)(grads, state, params)
        >>> params = optax.apply_updates(params, updates)
        >>> [round(x, 4) for x in jnp.linalg.norm(params["kernel"], axis=0).tolist()]
        [1.2, 1.2]

    References:
        Pascanu et al. 2013 (clipping); Loshchilov and Hutter 2019, "Decoupled Weight Decay
        Regularization" (adamw against coupled decay); Srivastava et al. 2014 (max-norm).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names are: {', '.join(OPTIMIZERS)}")
    learning_rate = _learning_rate("learning_rate", learning_rate)
    clip_value = _optional("clip_value", clip_value, _init._positive)
    clip_norm = _optional("clip_norm", clip_norm, _init._positive)
    weight_decay = _optional("weight_decay", weight_decay, _init._nonnegative)
    l1 = _optional("l1", l1, _init._nonnegative)
    max_norm = _optional("max_norm", max_norm, _init._positive)
    if not isinstance(monitor, bool):
        raise TypeError(f"monitor must be a bool, got {monitor!r}")

    parts = []
    if clip_value is not None:
        parts.append(clip_by_value(clip_value))
    if clip_norm is not None:
        parts.append(clip_by_global_norm(clip_norm))
    if l1 is not None:
        parts.append(add_l1(l1))
    if weight_decay is not None and name != "adamw":
        parts.append(optax.add_decayed_weights(weight_decay))
    if name == "sgd":
        parts.append(optax.sgd(learning_rate))
    elif name == "momentum":
        parts.append(optax.sgd(learning_rate, momentum=0.9))
    elif name == "rmsprop":
        parts.append(optax.rmsprop(learning_rate))
    elif name == "adam":
        parts.append(optax.adam(learning_rate))
    elif weight_decay is None:
        parts.append(optax.adamw(learning_rate))
    else:
        parts.append(optax.adamw(learning_rate, weight_decay=weight_decay))
    if max_norm is not None:
        parts.append(_max_norm_constraint(max_norm))
    chain = optax.chain(*parts)
    return _monitor(chain) if monitor else chain


_monitor = monitor
