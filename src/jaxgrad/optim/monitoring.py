"""Watching an Optax chain: per-parameter norms of what passes through it, and a guard that
skips a bad step and says what it skipped.

- `monitor(inner=None, *, every=1, name=None)` records, per parameter and globally, the norm
  of the incoming updates (the gradient, when it is first in the chain), the norm of the
  updates it emits (its `inner`'s output when it wraps one), the weights' norms, the
  update-to-weight ratios and, when `inner` keeps Adam-family moments, their norms; every
  `every` updates (`jax.lax.cond`: the steps in between cost nothing). It works inside
  `nnx.Optimizer` (which initializes on `nnx.Variable` states and updates on arrays) and
  under `jax.vmap`. `monitor_states(opt_state)` finds every monitor of a chain, by name.
- `guard(inner, *, spike_factor=None)` skips an update whose gradient holds an inf or a nan
  (the semantics of `optax.apply_if_finite`), or whose global norm exceeds `spike_factor`
  times its running average, and records the step, the reason, the number of steps skipped
  and which parameters were non-finite: never silently.

Both keep fixed-structure `NamedTuple` states (a named monitor's state is `{name: state}`),
so a jitted step never retraces.

References:
    Karpathy 2016, CS231n notes, "Ratio of weights:updates". Glorot and Bengio 2010,
    "Understanding the difficulty of training deep feedforward neural networks" (per-layer
    gradient norms). Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer
    training instabilities" (update and gradient norms before loss spikes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxgrad import init as _init
from jaxgrad import stats as _stats
from jaxgrad.optim.clipping import _global_norm_dtype, _norm_dtype

if TYPE_CHECKING:
    import pandas as pd


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _leaves(tree: Any) -> list[Any]:
    """The leaves of params or updates, a `nnx.Variable` counting as one leaf (its value)."""
    leaves = jax.tree.leaves(tree, is_leaf=_is_variable)
    return [leaf.get_value() if _is_variable(leaf) else leaf for leaf in leaves]


def leaf_names(tree: Any) -> list[str]:
    """Stable names of the leaves of params or updates: "layers/0/kernel".

    A `nnx.Variable` is one leaf, so the names of a model's `nnx.State` of Variables (what
    `nnx.Optimizer` initializes on) equal those of its arrays (what it updates with). Full
    paths are used where the short ones would collide.

    Args:
        tree: a pytree of parameters, gradients or updates (an `nnx.State` too).

    Returns:
        One name per leaf, in the tree's leaf order.

    Example:
        >>> from jaxgrad import optim
        >>> optim.leaf_names({"layers": [{"kernel": 1.0, "bias": 0.0}]})
        ['layers/0/bias', 'layers/0/kernel']
    """
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)[0]
    paths = [path for path, _ in flat]
    names = [jax.tree_util.keystr(path, simple=True, separator="/") for path in paths]
    if len(set(names)) < len(names):
        names = [jax.tree_util.keystr(path) for path in paths]
    return names


# ----------------------------------------------------------------------------- monitor


class MonitorState(NamedTuple):
    """What `monitor` measured at its last measured update (zeros before the first).

    Per-parameter fields are dicts keyed by `leaf_names` ("layers/0/kernel").

    Attributes:
        count: the number of updates seen.
        measured: whether the last update was measured (every `every` updates).
        grad_norms, global_grad_norm: L2 norms of the incoming updates (the gradient when
            `monitor` is first in a chain: the pre-clip norm).
        update_norms, global_update_norm: L2 norms of the updates `monitor` emits (its
            `inner`'s output when it wraps one, else the incoming ones).
        weight_norms: L2 norms of the params before the step (nan without params).
        update_ratios: update_norms / weight_norms (nan where a weight is zero or missing).
        first_moment_norms, second_moment_norms: L2 norms of `inner`'s first and second
            moments (Adam's mu and nu, found in its state) after the update; nan without.
        inner_state: the wrapped transform's state (`optax.EmptyState()` when none).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import optim
        >>> tx = optim.monitor()
        >>> params = {"w": jnp.array([3.0, 4.0])}
        >>> _, state = tx.update({"w": jnp.array([0.0, 1.0])}, tx.init(params), params)
        >>> ratio = round(float(state.update_ratios["w"]), 6)
        >>> int(state.count), float(state.weight_norms["w"]), ratio
        (1, 5.0, 0.2)
    """

    count: jax.Array
    measured: jax.Array
    grad_norms: dict[str, jax.Array]
    global_grad_norm: jax.Array
    update_norms: dict[str, jax.Array]
    global_update_norm: jax.Array
    weight_norms: dict[str, jax.Array]
    update_ratios: dict[str, jax.Array]
    first_moment_norms: dict[str, jax.Array]
    second_moment_norms: dict[str, jax.Array]
    inner_state: optax.OptState

    @property
    def global_ratio(self) -> jax.Array:
        """The global update norm over the global weight norm."""
        weights = _stats.norm(jnp.stack(list(self.weight_norms.values())))
        return self.global_update_norm / weights

    def to_frame(self, order: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per parameter: the per-parameter fields, and `count`.

        Args:
            order: the rows' order. None: the params' own (alphabetical, as pytrees sort
                dict keys). Parameter names (`leaf_names`) in the order wanted, or module
                names in forward order, as `jaxgrad.train.layer_names(model, x,
                all_modules=True)` gives them ("conv", "ln", "blocks[2].linear"): each
                parameter follows its module, the parameters of modules not named last, in
                their own order (without `all_modules`, the names are the layers with
                weights only, and a norm layer's scale and bias come last).

        Returns:
            A pandas DataFrame, column `param` first.

        Raises:
            ValueError: `order` names neither parameters nor modules of these params.

        Example:
            >>> import jax.numpy as jnp
            >>> import optax
            >>> params = {"head": {"kernel": jnp.ones((2, 1))},
            ...           "stem": {"kernel": jnp.ones((3, 2))}}
            >>> tx = optax.chain(optax.sgd(0.1), monitor(name="m"))
            >>> _, state = tx.update(params, tx.init(params), params)
            >>> monitor_states(state)["m"].to_frame(order=["stem", "head"])["param"].tolist()
            ['stem/kernel', 'head/kernel']
        """
        import pandas as pd

        host = jax.device_get(self)
        names = list(host.grad_norms) if order is None else _ordered(list(host.grad_norms), order)
        fields = (
            "grad_norms",
            "update_norms",
            "weight_norms",
            "update_ratios",
            "first_moment_norms",
            "second_moment_norms",
        )
        columns: dict[str, Any] = {"param": names}
        for field in fields:
            values = getattr(host, field)
            columns[field.removesuffix("s")] = [float(values[name]) for name in names]
        frame = pd.DataFrame(columns)
        frame["count"] = int(host.count)
        return frame


def _ordered(names: list[str], order: Sequence[str]) -> list[str]:
    """`names` (parameter names, "/"-joined) in `order`: parameter names, or module names
    ("blocks[2].linear": a layer of a stack stands for the stack's parameter) whose
    parameters follow them (each after its innermost module named: "attn/query" rather than
    "attn"), the others last."""
    if isinstance(order, str) or not all(isinstance(name, str) for name in order):
        raise TypeError(f"order must be a sequence of names, got {order!r}")
    if set(order) <= set(names):
        return list(dict.fromkeys(order))
    modules = [re.sub(r"\[\d+\]", "", name).replace(".", "/") for name in order]
    place = {}
    for index, name in enumerate(names):
        owners = [i for i, module in enumerate(modules) if name.startswith(module + "/")]
        innermost = max(owners, key=lambda i: (len(modules[i]), -i), default=None)
        place[name] = (len(modules), index) if innermost is None else (innermost, index)
    if all(rank == len(modules) for rank, _ in place.values()):
        raise ValueError(
            f"order names neither parameters nor modules of these params: {list(order)[:4]}; "
            f"the parameters are {names[:8]}"
        )
    return sorted(names, key=place.__getitem__)


def _moments(inner_state: Any, like: Any) -> tuple[Any, Any]:
    """The first and second moments in an inner state, as trees shaped like `like` (the
    updates), or None for one it lacks: from any NamedTuple state with a `mu` or a `nu`
    field shaped like the params (Adam's both, RMSProp's `nu` alone, Muon's `mu`). A
    partitioned optimizer (`optax.multi_transform`, `optax.contrib.muon`) keeps each
    partition's moments with the other parameters masked (`optax.MaskedNode`): those are
    merged, parameter by parameter, with nan where no partition keeps that moment."""
    like_leaves = _leaves(like)

    def is_moment_state(node: Any) -> bool:
        fields = getattr(node, "_fields", ()) if isinstance(node, tuple) else ()
        return "mu" in fields or "nu" in fields

    def is_slot(node: Any) -> bool:
        return isinstance(node, optax.MaskedNode) or _is_variable(node)

    found: dict[str, list[Any]] = {"mu": [], "nu": []}
    for node in jax.tree.leaves(inner_state, is_leaf=is_moment_state):
        if not is_moment_state(node):
            continue
        for field, trees in found.items():
            tree = getattr(node, field, None)
            if tree is not None and len(jax.tree.leaves(tree, is_leaf=is_slot)) == len(like_leaves):
                trees.append(tree)

    def merged(trees: list[Any]) -> Any:
        slots = [jax.tree.leaves(tree, is_leaf=is_slot) for tree in trees]
        kept = [
            [leaves[i] for leaves in slots if not isinstance(leaves[i], optax.MaskedNode)]
            for i in range(len(like_leaves))
        ]
        if not any(kept):
            return None
        picked = iter(
            values[0] if values else jnp.full(jnp.shape(leaf), jnp.nan, jnp.float32)
            for values, leaf in zip(kept, like_leaves, strict=True)
        )
        return jax.tree.map(lambda _: next(picked), trees[0], is_leaf=is_slot)

    return merged(found["mu"]), merged(found["nu"])


def _transformation(name: str, value: object) -> optax.GradientTransformation:
    """`value` if it is an Optax transformation (an `init`/`update` pair), else a TypeError
    that names it (and the likely slip: the factory passed instead of its result)."""
    if callable(getattr(value, "init", None)) and callable(getattr(value, "update", None)):
        return value  # type: ignore[return-value]
    hint = ""
    if callable(value):
        hint = f"; call the factory first, e.g. {getattr(value, '__name__', 'factory')}(...)"
    raise TypeError(f"{name} must be an optax.GradientTransformation, got {value!r}{hint}")


def monitor(
    inner: optax.GradientTransformation | None = None,
    *,
    every: int | jax.Array = 1,
    name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Measure per-parameter gradient, update and weight norms, their ratios and Adam's
    moments, every `every` updates, into the state.

    Alone (`inner=None`) it passes the updates through unchanged (bitwise), so it can sit
    anywhere in a chain: first, it sees the raw gradient (the pre-clip norm); after the
    learning-rate scaling, the ratio of what it sees to the weights is the classic
    update-to-weight diagnostic (about 1e-3 is healthy). Given an `inner` transform (the
    rest of the optimizer), it sees the raw gradient and `inner`'s final updates and
    moments: every diagnostic from one place; `make_optimizer(..., monitor=True)` builds it
    that way. The steps in between measurements run `inner` alone (`jax.lax.cond`; under
    `jax.vmap` both branches run). Read the values with `monitor_states(opt_state)`.

    The updates leave `monitor` as they came (its `inner`'s, when it wraps one); with
    `every=1` the compiled chain also rounds as it would without the monitor, while the
    branch of `every > 1` can make XLA fuse the transforms around it differently (ULP-level
    differences, 1e-6 relative in float32).

    Args:
        inner: an optional transform to wrap; its updates are returned unchanged.
        every: measure on updates 0, every, 2 every, ... (counting from 0); an int >= 1 or
            a jax integer scalar (traced too).
        name: a name to find this monitor by in `monitor_states`; its state is then
            `{name: MonitorState}`.

    Returns:
        An `optax.GradientTransformationExtraArgs` (extra arguments are passed on to
        `inner`).

    Raises:
        ValueError: an int `every` below 1 (or not an int).
        TypeError: a jax `every` that is not an integer scalar, a name that is not a str, an
            `inner` that is not an Optax transformation.

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> params = {"w": jnp.array([3.0, 4.0])}
        >>> tx = optax.chain(optax.sgd(0.1), monitor(name="after_sgd"))
        >>> _, state = tx.update({"w": jnp.array([0.0, 10.0])}, tx.init(params), params)
        >>> stats = monitor_states(state)["after_sgd"]
        >>> round(float(stats.grad_norms["w"]), 6), round(float(stats.update_ratios["w"]), 6)
        (1.0, 0.2)

    References:
        Karpathy 2016, CS231n notes, "Ratio of weights:updates".
    """
    inner = optax.with_extra_args_support(
        optax.identity() if inner is None else _transformation("inner", inner)
    )
    if isinstance(every, jax.Array):
        if every.ndim != 0 or not jnp.issubdtype(every.dtype, jnp.integer):
            raise TypeError(f"every must be an int or an integer jax scalar, got {every!r}")
    elif isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
        raise ValueError(
            f"every must be an int >= 1 (measure every `every` updates), got {every!r}"
        )
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {name!r}")

    def wrap(state: MonitorState) -> Any:
        return state if name is None else {name: state}

    def unwrap(state: Any) -> MonitorState:
        return state if name is None else state[name]

    def init(params):
        names = leaf_names(params)
        leaves = _leaves(params)
        zeros = {n: jnp.zeros((), _norm_dtype(p)) for n, p in zip(names, leaves, strict=True)}
        dtype = _global_norm_dtype(leaves)
        return wrap(
            MonitorState(
                count=jnp.zeros((), jnp.int32),
                measured=jnp.zeros((), bool),
                grad_norms=zeros,
                global_grad_norm=jnp.zeros((), dtype),
                update_norms=dict(zeros),
                global_update_norm=jnp.zeros((), dtype),
                weight_norms=dict(zeros),
                update_ratios=dict(zeros),
                first_moment_norms=dict(zeros),
                second_moment_norms=dict(zeros),
                inner_state=inner.init(params),
            )
        )

    def update(updates, state, params=None, **extra_args):
        state = unwrap(state)
        new_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        names = leaf_names(updates)  # by name, not by the state dict's (sorted) order

        def measure(_):
            def per_leaf(tree, like):
                named = zip(leaf_names(tree), _leaves(tree), strict=True)
                return {n: _stats.norm(v).astype(like[n].dtype) for n, v in named}

            grads = per_leaf(updates, state.grad_norms)
            emitted = per_leaf(new_updates, state.update_norms)
            nan = {n: jnp.full((), jnp.nan, v.dtype) for n, v in state.weight_norms.items()}
            weights = nan if params is None else per_leaf(params, state.weight_norms)
            ratios = {n: jnp.where(weights[n] > 0, emitted[n] / weights[n], jnp.nan) for n in names}
            mu, nu = _moments(inner_state, updates)
            first = nan if mu is None else per_leaf(mu, state.first_moment_norms)
            second = nan if nu is None else per_leaf(nu, state.second_moment_norms)

            def total(norms, like):
                return _stats.norm(jnp.stack(list(norms.values()))).astype(like.dtype)

            return (
                grads,
                total(grads, state.global_grad_norm),
                emitted,
                total(emitted, state.global_update_norm),
                weights,
                ratios,
                first,
                second,
            )

        def keep(_):
            return (
                state.grad_norms,
                state.global_grad_norm,
                state.update_norms,
                state.global_update_norm,
                state.weight_norms,
                state.update_ratios,
                state.first_moment_norms,
                state.second_moment_norms,
            )

        now = state.count % jnp.asarray(every, state.count.dtype) == 0
        if isinstance(every, int | np.integer) and every == 1:
            measured = measure(None)  # no branch: XLA fuses the chain as it would without
        else:
            measured = jax.lax.cond(now, measure, keep, None)
        new_state = MonitorState(
            optax.safe_increment(state.count), now, *measured, inner_state=inner_state
        )
        return new_updates, wrap(new_state)

    return optax.GradientTransformationExtraArgs(init, update)


def _is_variable(leaf: Any) -> bool:
    return isinstance(leaf, nnx.Variable)


def _arrays(node: Any) -> Any:
    """`node` with the arrays an `nnx.Optimizer` wraps in `nnx.Variable`s unwrapped (the node
    itself when it holds none)."""
    if not any(map(_is_variable, jax.tree.leaves(node, is_leaf=_is_variable))):
        return node
    return jax.tree.map(
        lambda leaf: leaf.get_value() if _is_variable(leaf) else leaf, node, is_leaf=_is_variable
    )


def _found(
    opt_state: optax.OptState, kind: type, default: str, found: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every node of type `kind` in an optimizer state, keyed by its name: the key of a named
    monitor or of `optax.named_chain`, else its path in the state. Those inside another's
    `inner_state` (a monitor wrapping a chain with a monitor) follow it. An `nnx.Optimizer`
    keeps its state's arrays in `nnx.Variable`s: the nodes hold the arrays themselves, so
    they read as the transform's own state does (`bool(state.measured)`)."""
    found = {} if found is None else found
    flat = jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=lambda x: isinstance(x, kind))
    for path, node in flat[0]:
        if isinstance(node, kind):
            keys = [entry.key for entry in path if isinstance(entry, jax.tree_util.DictKey)]
            label = str(keys[-1]) if keys else (jax.tree_util.keystr(path) or default)
            while label in found:
                label = f"{label}'"
            found[label] = _arrays(node)
            _found(node.inner_state, kind, default, found)
    return found


def monitor_states(opt_state: optax.OptState) -> dict[str, MonitorState]:
    """Every `MonitorState` in an optimizer state (an `nnx.Optimizer`'s `opt_state` too), in
    chain order, keyed by the monitor's `name` (or the name `optax.named_chain` gives its
    part), else by its path in the state ("[0]", "[3]").

    Args:
        opt_state: an optimizer state (a chain's, or an `nnx.Optimizer`'s `opt_state`).

    Returns:
        A dict from name to `MonitorState`, in chain order.

    Raises:
        ValueError: no monitor in the state.

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> tx = optax.chain(monitor(name="raw"), optax.clip_by_global_norm(1.0),
        ...                  optax.sgd(0.1), monitor(name="final"))
        >>> list(monitor_states(tx.init({"w": jnp.ones(2)})))
        ['raw', 'final']
    """
    found = _found(opt_state, MonitorState, "monitor")
    if not found:
        raise ValueError(
            "no MonitorState in this optimizer state; build the optimizer with "
            "jaxgrad.optim.monitor() in its chain or make_optimizer(..., monitor=True)"
        )
    return found


def monitor_state(opt_state: optax.OptState) -> MonitorState:
    """The first `MonitorState` of an optimizer state (see `monitor_states` for them all).

    Args:
        opt_state: an optimizer state (a chain's, or an `nnx.Optimizer`'s `opt_state`).

    Returns:
        The `MonitorState` of the first monitor in chain order.

    Raises:
        ValueError: no monitor in the state.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad.optim import make_optimizer
        >>> opt = make_optimizer("sgd", 0.1, monitor=True)
        >>> state = opt.init({"w": jnp.ones(2)})
        >>> int(monitor_state(state).count)
        0
    """
    return next(iter(monitor_states(opt_state).values()))


# ----------------------------------------------------------------------------- guard


SKIP_NONFINITE, SKIP_SPIKE = 1, 2
"""`GuardState.reason` codes: the gradient held an inf or a nan; its norm spiked."""


class GuardState(NamedTuple):
    """What `guard` skipped.

    Attributes:
        count: the number of updates seen.
        skipped: the number of updates skipped.
        consecutive: how many of the last updates in a row were skipped.
        last_skipped: the update (0-based) last skipped, -1 if none.
        reason: why it was last skipped: `SKIP_NONFINITE` or `SKIP_SPIKE`; 0 if never.
        nonfinite: per parameter (keyed by `leaf_names`), whether its gradient held an inf
            or a nan at the last skip for that reason.
        global_norm: the incoming global norm at the last update.
        average_norm: the debiased running average of the global norm over accepted
            updates (the spike reference).
        inner_state: the wrapped transform's state, untouched by a skipped update.

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> from jaxgrad import optim
        >>> tx = optim.guard(optax.sgd(1.0))
        >>> params = {"w": jnp.ones(2)}
        >>> _, state = tx.update({"w": jnp.array([jnp.inf, 1.0])}, tx.init(params), params)
        >>> int(state.skipped), int(state.reason) == optim.SKIP_NONFINITE, int(state.last_skipped)
        (1, True, 0)
    """

    count: jax.Array
    skipped: jax.Array
    consecutive: jax.Array
    last_skipped: jax.Array
    reason: jax.Array
    nonfinite: dict[str, jax.Array]
    global_norm: jax.Array
    average_norm: jax.Array
    inner_state: optax.OptState


def guard(
    inner: optax.GradientTransformation,
    *,
    spike_factor: float | None = None,
    decay: float = 0.99,
    warmup: int = 10,
    max_consecutive: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Skip an update whose gradient holds an inf or a nan, or whose global norm spikes, and
    record what was skipped.

    A skipped update is zero, and `inner`'s state is left as it was (the semantics of
    `optax.apply_if_finite`). With `spike_factor`, an update whose global gradient norm is
    above `spike_factor` times the running average of the accepted ones (a debiased
    exponential average with `decay`, after `warmup` accepted updates) is skipped too. The
    state records the count, the last skipped update, the reason and the parameters whose
    gradient was not finite (`guard_states`).

    Args:
        inner: the transform to guard (the rest of the optimizer).
        spike_factor: skip updates whose global norm exceeds this many times the running
            average, > 1; None never skips for size.
        decay: the running average's decay, in (0, 1).
        warmup: accepted updates before a spike can be declared, >= 0.
        max_consecutive: after this many skipped updates in a row, apply the next one
            anyway (optax's `max_consecutive_errors`); None never gives up.

    Returns:
        An `optax.GradientTransformationExtraArgs` with a `GuardState`.

    Raises:
        ValueError: spike_factor <= 1, decay outside (0, 1), warmup not an int >= 0,
            max_consecutive not an int >= 1 or None.
        TypeError: a spike_factor or decay that is not a real number, an `inner` that is
            not an Optax transformation.

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> tx = guard(optax.sgd(1.0))
        >>> params = {"w": jnp.ones(2)}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.array([jnp.nan, 1.0])}, state, params)
        >>> updates["w"].tolist(), int(state.skipped), bool(state.nonfinite["w"])
        ([0.0, 0.0], 1, True)

    References:
        optax.apply_if_finite; Chowdhery et al. 2022, "PaLM: Scaling Language Modeling
        with Pathways" (restarting before a loss spike and skipping the batches around
        it); Wortsman et al. 2023,
        "Small-scale proxies for large-scale Transformer training instabilities".
    """
    inner = optax.with_extra_args_support(_transformation("inner", inner))
    if spike_factor is not None:
        spike_factor = _init._real("spike_factor", spike_factor)
        if not spike_factor > 1:
            raise ValueError(
                f"spike_factor must be > 1 (a factor of the running average), got {spike_factor}"
            )
    decay = _init._real("decay", decay)
    if not 0 < decay < 1:
        raise ValueError(f"decay must be in (0, 1), got {decay}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if max_consecutive is not None and (
        isinstance(max_consecutive, bool)
        or not isinstance(max_consecutive, int)
        or max_consecutive < 1
    ):
        raise ValueError(f"max_consecutive must be an int >= 1 or None, got {max_consecutive!r}")

    def init(params):
        names = leaf_names(params)
        dtype = _global_norm_dtype(_leaves(params))
        zero = jnp.zeros((), jnp.int32)
        return GuardState(
            count=zero,
            skipped=zero,
            consecutive=zero,
            last_skipped=jnp.full((), -1, jnp.int32),
            reason=zero,
            nonfinite={n: jnp.zeros((), bool) for n in names},
            global_norm=jnp.zeros((), dtype),
            average_norm=jnp.zeros((), dtype),
            inner_state=inner.init(params),
        )

    def update(updates, state, params=None, **extra_args):
        names = leaf_names(updates)
        norms = [_stats.norm(leaf) for leaf in _leaves(updates)]
        leaf_bad = {n: ~jnp.isfinite(norm) for n, norm in zip(names, norms, strict=True)}
        total = _stats.norm(jnp.stack(norms)).astype(state.global_norm.dtype)
        nonfinite = ~jnp.isfinite(total)
        accepted = state.count - state.skipped
        average = state.average_norm / (1 - decay ** jnp.maximum(accepted, 1))
        spike = jnp.zeros((), bool)
        if spike_factor is not None:
            spike = (accepted >= warmup) & (total > spike_factor * average) & ~nonfinite
        skip = nonfinite | spike
        if max_consecutive is not None:
            skip = skip & (state.consecutive < max_consecutive)

        def apply(_):
            return inner.update(updates, state.inner_state, params, **extra_args)

        def drop(_):
            return jax.tree.map(jnp.zeros_like, updates), state.inner_state

        new_updates, inner_state = jax.lax.cond(skip, drop, apply, None)
        running = jnp.where(
            skip, state.average_norm, decay * state.average_norm + (1 - decay) * total
        )
        reason = jnp.where(nonfinite, SKIP_NONFINITE, SKIP_SPIKE).astype(jnp.int32)
        new_state = GuardState(
            count=optax.safe_increment(state.count),
            skipped=state.skipped + skip.astype(jnp.int32),
            consecutive=jnp.where(skip, state.consecutive + 1, 0).astype(jnp.int32),
            last_skipped=jnp.where(skip, state.count, state.last_skipped).astype(jnp.int32),
            reason=jnp.where(skip, reason, state.reason).astype(jnp.int32),
            nonfinite={
                n: jnp.where(skip & nonfinite, leaf_bad[n], state.nonfinite[n]) for n in names
            },
            global_norm=total,
            average_norm=running.astype(state.average_norm.dtype),
            inner_state=inner_state,
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init, update)


def guard_states(opt_state: optax.OptState) -> dict[str, GuardState]:
    """Every `GuardState` in an optimizer state, keyed as `monitor_states` keys monitors.

    Args:
        opt_state: an optimizer state (a chain's, or an `nnx.Optimizer`'s `opt_state`).

    Returns:
        A dict from name (or path in the state) to `GuardState`.

    Raises:
        ValueError: no guard in the state.

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> from jaxgrad import optim
        >>> tx = optim.guard(optax.sgd(0.1))
        >>> states = optim.guard_states(tx.init({"w": jnp.ones(2)}))
        >>> [int(state.skipped) for state in states.values()]
        [0]
    """
    found = _found(opt_state, GuardState, "guard")
    if not found:
        raise ValueError("no GuardState in this optimizer state; wrap the chain in guard(...)")
    return found
