"""Penalties and constraints: the L1 subgradient, the L1 proximal step, max-norm.

Transforms that rewrite the parameters (`l1_proximal`, `max_norm`) see the step `p + u` only
once the learning rate has been applied, so they belong at the end of a chain.

References:
    Tibshirani 1996, "Regression Shrinkage and Selection via the Lasso". Duchi and Singer
    2009, "Efficient Online and Batch Learning Using Forward Backward Splitting". Srivastava
    et al. 2014, "Dropout: A Simple Way to Prevent Neural Networks from Overfitting"
    (max-norm constraints).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgrad import init as _init
from jaxgrad.optim._checks import Mask, _axis, _learning_rate, _require_params, _scalar
from jaxgrad.optim.clipping import _clip_group, _unit_axes

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
    """The step count, to evaluate a learning-rate schedule (see `l1_proximal`).

    Attributes:
        count: the number of updates seen, an int32 scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import optim
        >>> tx = optim.l1_proximal(0.1, learning_rate=0.5)
        >>> params = jnp.ones(2)
        >>> _, state = tx.update(jnp.zeros(2), tx.init(params), params)
        >>> int(state.count)
        1
    """

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
            kernel (Keras' advice for convolutions). Layers stacked on a leading axis
            (`nnx.vmap`, the blocks of jaxgrad's `nn.MLP`) are one array here, and the
            default would take each unit's norm across the layers (and the default mask
            would take their stacked biases for kernels): constrain them with `axis=-2` in
            an `optax.masked` of their own, beside the default for the other leaves.
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
