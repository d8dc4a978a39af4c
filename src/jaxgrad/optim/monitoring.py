"""Monitoring transforms: per-parameter norms of what passes through an Optax chain."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxgrad import stats as _stats
from jaxgrad.optim.clipping import _global_norm_dtype, _norm_dtype


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


def monitor_states(opt_state: optax.OptState) -> dict[str, MonitorState]:
    """Every `MonitorState` in an optimizer state, by where it sits."""
    found = {}
    leaves = jax.tree_util.tree_flatten_with_path(
        opt_state, is_leaf=lambda x: isinstance(x, MonitorState)
    )[0]
    for path, node in leaves:
        if isinstance(node, MonitorState):
            found[jax.tree_util.keystr(path)] = node
    return found
