"""Tests for jaxgrad.optim against hand-written float64 numpy loops.

Every reference below is written from the formula (Pascanu et al. 2013, PyTorch's
clip_grad_norm_, Brock et al. 2021, soft-thresholding, Keras' MaxNorm), not from jaxgrad or
optax code, and is run for several optimizer steps on a quadratic loss whose gradient
changes from step to step. float32 results are compared at rtol 1e-5.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgrad import optim

RTOL, ATOL = 1e-5, 1e-6
STEPS = 5


# ----------------------------------------------------------------------------- fixtures


FULL_SHAPES = {
    "dense": {"kernel": (4, 3), "bias": (3,)},
    "conv": {"kernel": (3, 3, 2, 4)},
    "gain": (),
}
# Fewer leaves, for the tests whose cost is compiling long chains.
SMALL_SHAPES = {"kernel": (4, 3), "bias": (3,)}


def make_params(rng, scale=1.0, shapes=FULL_SHAPES):
    """By default a dense layer (in=4, out=3), a conv layer (3, 3, 2, 4) and a scalar, float32."""
    return jax.tree.map(
        lambda shape: jnp.asarray(scale * rng.standard_normal(shape), jnp.float32),
        shapes,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def make_quadratic(rng, params, curvature=3.0):
    """loss(p) = 0.5 * sum(c * (p - target)^2) with c > 0 per entry; grad = c * (p - target)."""
    target = jax.tree.map(lambda x: 2.0 * rng.standard_normal(x.shape), params)
    curv = jax.tree.map(lambda x: curvature * rng.uniform(0.2, 1.0, x.shape), params)

    def grad_jax(p):
        return jax.tree.map(
            lambda x, t, c: jnp.asarray(c, x.dtype) * (x - jnp.asarray(t, x.dtype)), p, target, curv
        )

    def grad_np(p):
        return jax.tree.map(lambda x, t, c: c * (x - t), p, target, curv)

    return grad_jax, grad_np


def to_np(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def run_chain(tx, params, grad_fn, steps=STEPS):
    """Run `steps` jitted steps p <- p + update(grad(p)); return the params after each."""

    @jax.jit
    def step(p, state):
        updates, state = tx.update(grad_fn(p), state, p)
        return optax.apply_updates(p, updates), state

    state = tx.init(params)
    history = []
    for _ in range(steps):
        params, state = step(params, state)
        history.append(params)
    return history, state


def assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), e, rtol=rtol, atol=atol)


def assert_trees_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


@pytest.fixture
def rng():
    """Test data from a fixed numpy generator (no per-shape compilation of jax.random)."""
    return np.random.default_rng(0)


@pytest.fixture
def problem(rng):
    params = make_params(rng)
    grad_jax, grad_np = make_quadratic(rng, params)
    return params, grad_jax, grad_np


@pytest.fixture
def small_problem(rng):
    params = make_params(rng, shapes=SMALL_SHAPES)
    grad_jax, grad_np = make_quadratic(rng, params)
    return params, grad_jax, grad_np


# ----------------------------------------------------------------------------- clipping


def test_clip_by_value_matches_numpy(problem):
    params, grad_jax, grad_np = problem
    lr, delta = 0.1, 0.5
    history, _ = run_chain(optax.chain(optim.clip_by_value(delta), optax.sgd(lr)), params, grad_jax)
    p = to_np(params)
    for step_params in history:
        g = grad_np(p)
        p = jax.tree.map(lambda x, gx: x - lr * np.minimum(np.maximum(gx, -delta), delta), p, g)
        assert_trees_close(step_params, p)


def _torch_clip_grad_norm(grads, max_norm, eps):
    """torch.nn.utils.clip_grad_norm_ by hand: coef = max_norm / (norm + eps), clamped to 1."""
    norm = np.sqrt(sum(float(np.sum(g**2)) for g in jax.tree.leaves(grads)))
    coef = min(max_norm / (norm + eps), 1.0)
    return jax.tree.map(lambda g: g * coef, grads), norm, max_norm / (norm + eps) < 1.0


@pytest.mark.parametrize("eps", [0.0, 1e-6, 0.5])
def test_clip_by_global_norm_matches_pascanu_and_torch(problem, eps):
    params, grad_jax, grad_np = problem
    lr, max_norm = 0.15, 20.0
    tx = optax.chain(optim.clip_by_global_norm(max_norm, eps=eps), optax.sgd(lr))
    state = tx.init(params)
    step = jax.jit(tx.update)
    p_jax, p = params, to_np(params)
    flags = []
    for _ in range(STEPS):
        updates, state = step(grad_jax(p_jax), state, p_jax)
        p_jax = optax.apply_updates(p_jax, updates)
        clipped_grads, norm, clipped = _torch_clip_grad_norm(grad_np(p), max_norm, eps)
        if eps == 0.0:  # Pascanu et al.: g / max(1, ||g|| / theta), the same thing.
            pascanu = jax.tree.map(lambda g, norm=norm: g / max(1.0, norm / max_norm), grad_np(p))
            assert_trees_close(pascanu, clipped_grads, rtol=1e-12, atol=0)
        p = jax.tree.map(lambda x, g: x - lr * g, p, clipped_grads)
        assert_trees_close(p_jax, p)
        clip_state = state[0]
        np.testing.assert_allclose(float(clip_state.global_norm), norm, rtol=RTOL)
        assert bool(clip_state.clipped) == clipped
        flags.append(clipped)
    assert True in flags  # both branches were exercised
    assert False in flags


def test_clip_by_layer_norm_matches_numpy(problem):
    params, grad_jax, grad_np = problem
    lr, max_norm = 0.1, 4.0
    history, _ = run_chain(
        optax.chain(optim.clip_by_layer_norm(max_norm), optax.sgd(lr)), params, grad_jax
    )
    p = to_np(params)
    for step_params in history:
        g = grad_np(p)
        clipped = jax.tree.map(lambda gx: gx / max(1.0, np.linalg.norm(gx.ravel()) / max_norm), g)
        p = jax.tree.map(lambda x, gx: x - lr * gx, p, clipped)
        assert_trees_close(step_params, p)


@pytest.mark.parametrize(
    "tx",
    [
        optim.clip_by_value(1.0),
        optim.clip_by_global_norm(1.0),
        optim.clip_by_global_norm(1.0, eps=1e-6),
        optim.clip_by_layer_norm(1.0),
        optim.adaptive_clip(0.01),
        optim.adaptive_clip(0.01, eps=0.0),
    ],
    ids=["value", "global", "global_eps", "layer", "agc", "agc_eps0"],
)
def test_clipping_a_zero_gradient_is_finite_zero(rng, tx):
    params = make_params(rng)
    params = jax.tree.map(jnp.zeros_like, params)  # zero params too: the worst case for AGC
    grads = jax.tree.map(jnp.zeros_like, params)
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
    for u in jax.tree.leaves(updates):
        assert bool(jnp.all(jnp.isfinite(u)))
        np.testing.assert_array_equal(np.asarray(u), 0.0)
    if isinstance(state, optim.ClipByGlobalNormState):
        assert float(state.global_norm) == 0.0
        assert not bool(state.clipped)


def _agc_reference(grad, param, clipping, eps):
    """AGC by an explicit loop over output units (last axis), vectors and scalars as one unit."""
    grad, param = np.asarray(grad, np.float64), np.asarray(param, np.float64)
    if grad.ndim <= 1:
        g_norm, w_norm = np.linalg.norm(grad.ravel()), np.linalg.norm(param.ravel())
        limit = clipping * max(w_norm, eps)
        return grad * (limit / g_norm if g_norm > limit else 1.0), int(g_norm > limit)
    out = grad.copy()
    clipped_units = 0
    for unit in range(grad.shape[-1]):
        g_unit, w_unit = grad[..., unit], param[..., unit]
        g_norm, w_norm = np.linalg.norm(g_unit.ravel()), np.linalg.norm(w_unit.ravel())
        limit = clipping * max(w_norm, eps)
        if g_norm > limit:
            out[..., unit] = g_unit * limit / g_norm
            clipped_units += 1
    return out, clipped_units


@pytest.mark.parametrize("layout", ["dense", "conv"])
def test_adaptive_clip_matches_per_unit_reference(rng, layout):
    shape = {"dense": (5, 4), "conv": (3, 3, 2, 4)}[layout]
    # Units of very different gradient sizes, so some are clipped and some not.
    unit_scale = np.array([0.001, 0.01, 1.0, 10.0])
    kernel = rng.standard_normal(shape)
    params = {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.zeros(4)}
    offset = rng.standard_normal(shape) * unit_scale
    target = {"kernel": jnp.asarray(kernel + offset, jnp.float32), "bias": jnp.ones(4)}

    def grad_jax(p):
        return jax.tree.map(lambda x, t: x - t, p, target)

    lr, clipping, eps = 0.5, 0.05, 1e-3
    history, _ = run_chain(
        optax.chain(optim.adaptive_clip(clipping, eps), optax.sgd(lr)), params, grad_jax
    )
    p = to_np(params)
    clipped_total = unclipped_total = 0
    for step_params in history:
        g = jax.tree.map(lambda x, t: x - np.asarray(t, np.float64), p, target)
        new_p = {}
        for name in p:
            clipped, count = _agc_reference(g[name], p[name], clipping, eps)
            new_p[name] = p[name] - lr * clipped
            if name == "kernel":
                clipped_total += count
                unclipped_total += shape[-1] - count
        p = new_p
        assert_trees_close(step_params, p)
    assert clipped_total > 0
    assert unclipped_total > 0


def test_adaptive_clip_axis_override(rng):
    table = jnp.asarray(rng.standard_normal((6, 3)), jnp.float32)  # units are rows
    grads = jnp.asarray(10.0 * rng.standard_normal((6, 3)), jnp.float32)
    tx = optim.adaptive_clip(0.1, axis=1)
    updates, _ = tx.update(grads, tx.init(table), table)
    expected, _ = _agc_reference(np.asarray(grads).T, np.asarray(table).T, 0.1, 1e-3)
    np.testing.assert_allclose(np.asarray(updates), expected.T, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "tx",
    [optim.adaptive_clip(0.1), optim.add_l1(0.1), optim.l1_proximal(0.1, 0.1), optim.max_norm(1.0)],
    ids=["adaptive_clip", "add_l1", "l1_proximal", "max_norm"],
)
def test_transforms_that_need_params_say_so(tx):
    grads = {"kernel": jnp.ones((2, 2))}
    state = tx.init(grads)
    with pytest.raises(ValueError, match=r"needs the current parameters.*params, not None"):
        tx.update(grads, state)


# ----------------------------------------------------------------------------- regularization


def test_add_l1_matches_numpy(problem):
    params, grad_jax, grad_np = problem
    lr, weight = 0.1, 0.3
    history, _ = run_chain(optax.chain(optim.add_l1(weight), optax.sgd(lr)), params, grad_jax)
    p = to_np(params)
    for step_params in history:
        g = grad_np(p)
        p = jax.tree.map(lambda x, gx: x - lr * (gx + weight * np.sign(x)), p, g)
        assert_trees_close(step_params, p)


@pytest.mark.parametrize("scheduled", [False, True])
def test_l1_proximal_soft_thresholds_to_exact_zeros(rng, scheduled):
    params = make_params(rng, scale=0.3)
    grad_jax, grad_np = make_quadratic(rng, params, curvature=0.5)
    weight = 2.0
    if scheduled:
        lr = optax.exponential_decay(0.2, transition_steps=1, decay_rate=0.7)
        lr_at = lambda t: 0.2 * 0.7**t
    else:
        lr, lr_at = 0.2, lambda t: 0.2
    history, _ = run_chain(
        optax.chain(optax.sgd(lr), optim.l1_proximal(weight, lr)), params, grad_jax
    )
    p = to_np(params)
    zeros = 0
    for t, step_params in enumerate(history):
        lr_t = lr_at(t)
        q = jax.tree.map(lambda x, gx, lr_t=lr_t: x - lr_t * gx, p, grad_np(p))
        threshold = lr_t * weight
        p = jax.tree.map(lambda x, c=threshold: np.sign(x) * np.maximum(np.abs(x) - c, 0), q)
        assert_trees_close(step_params, p)
        for actual, step in zip(jax.tree.leaves(step_params), jax.tree.leaves(q), strict=True):
            # Exact zeros wherever the step lands clearly inside the threshold.
            inside = np.abs(step) < threshold * (1 - 1e-4)
            np.testing.assert_array_equal(np.asarray(actual)[inside], 0.0)
            zeros += int(inside.sum())
    assert zeros > 0


# ----------------------------------------------------------------------------- constraints


def _column_norms(kernel, axes):
    return np.sqrt(np.sum(np.asarray(kernel, np.float64) ** 2, axis=axes))


def test_max_norm_holds_after_every_step_and_leaves_inside_units_alone(problem):
    params, grad_jax, grad_np = problem
    lr, limit = 0.2, 2.5
    constrained = optax.chain(optax.sgd(lr), optim.max_norm(limit))
    free = optax.sgd(lr)
    c_state, f_state = constrained.init(params), free.init(params)
    c_step, f_step = jax.jit(constrained.update), jax.jit(free.update)
    p_jax, p = params, to_np(params)
    seen_inside = seen_outside = 0
    for _ in range(STEPS):
        grads = grad_jax(p_jax)
        c_updates, c_state = c_step(grads, c_state, p_jax)
        f_updates, f_state = f_step(grads, f_state, p_jax)
        unconstrained = optax.apply_updates(p_jax, f_updates)
        p_jax = optax.apply_updates(p_jax, c_updates)
        for path, axes in ((("dense", "kernel"), 0), (("conv", "kernel"), (0, 1, 2))):
            new = p_jax[path[0]][path[1]]
            assert np.all(_column_norms(new, axes) <= limit * (1 + 1e-6))
            free_new = np.asarray(unconstrained[path[0]][path[1]])
            inside = _column_norms(free_new, axes) <= limit
            # Units inside the ball are exactly the unconstrained step, bit for bit.
            np.testing.assert_array_equal(np.asarray(new)[..., inside], free_new[..., inside])
            seen_inside += int(inside.sum())
            seen_outside += int((~inside).sum())
        # Vectors and scalars are not constrained by default.
        np.testing.assert_array_equal(p_jax["dense"]["bias"], unconstrained["dense"]["bias"])
        np.testing.assert_array_equal(p_jax["gain"], unconstrained["gain"])
        # float64 reference: project q = p - lr g unit by unit.
        q = jax.tree.map(lambda x, g: x - lr * g, p, grad_np(p))
        for layer, axes in (("dense", (0,)), ("conv", (0, 1, 2))):
            kernel = q[layer]["kernel"]
            norms = np.sqrt(np.sum(kernel**2, axis=axes, keepdims=True))
            q[layer]["kernel"] = np.where(norms > limit, kernel * limit / norms, kernel)
        p = q
        assert_trees_close(p_jax, p)
    assert seen_inside > 0
    assert seen_outside > 0


def test_max_norm_axis_and_mask(rng):
    kernel = jnp.asarray(3.0 * rng.standard_normal((4, 5)), jnp.float32)
    params = {"kernel": kernel, "bias": jnp.full(3, 10.0)}
    zero = jax.tree.map(jnp.zeros_like, params)
    # Rows (axis=1) of the kernel; the bias left alone by the mask.
    tx = optim.max_norm(1.0, axis=1, mask={"kernel": True, "bias": False})
    updates, _ = jax.jit(tx.update)(zero, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(_column_norms(new["kernel"], 1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(new["bias"], params["bias"])
    # A vector selected by the mask is one unit: its whole norm is constrained.
    tx = optim.max_norm(1.0, mask=lambda p: {"kernel": False, "bias": True})
    updates, _ = jax.jit(tx.update)(zero, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["kernel"], kernel)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(new["bias"])), 1.0, rtol=1e-6)


# ----------------------------------------------------------------------------- monitor


def test_monitor_records_independent_norms(problem):
    params, grad_jax, grad_np = problem
    lr = 0.1
    tx = optax.chain(optim.monitor(), optax.sgd(lr), optim.monitor())
    history, state = run_chain(tx, params, grad_jax, steps=3)
    before = to_np(history[-2])
    grads = grad_np(before)
    first, last = state[0], state[2]
    assert int(first.count) == 3
    names = {
        "dense/kernel": ("dense", "kernel"),
        "dense/bias": ("dense", "bias"),
        "conv/kernel": ("conv", "kernel"),
        "gain": ("gain",),
    }
    assert set(first.grad_norms) == set(names)

    def at(tree, path):
        for part in path:
            tree = tree[part]
        return tree

    for name, path in names.items():
        g, p = at(grads, path), at(before, path)
        np.testing.assert_allclose(first.grad_norms[name], np.linalg.norm(np.ravel(g)), rtol=RTOL)
        ratio = np.linalg.norm(np.ravel(g)) / np.linalg.norm(np.ravel(p))
        np.testing.assert_allclose(first.update_ratios[name], ratio, rtol=RTOL)
        # After the lr scaling: the update is -lr * g.
        np.testing.assert_allclose(
            last.grad_norms[name], lr * np.linalg.norm(np.ravel(g)), rtol=RTOL
        )
        np.testing.assert_allclose(last.update_ratios[name], lr * ratio, rtol=RTOL)
    global_norm = np.sqrt(sum(np.sum(g**2) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(first.global_grad_norm, global_norm, rtol=RTOL)
    assert optim.monitor_state(state) is first


def test_monitor_without_params_records_nan(rng):
    params = make_params(rng)
    tx = optim.monitor()
    _, state = tx.update(params, tx.init(params))
    assert all(bool(jnp.isnan(r)) for r in state.update_ratios.values())
    assert all(bool(jnp.isfinite(n)) for n in state.grad_norms.values())


def test_monitor_does_not_change_the_updates(small_problem):
    params, grad_jax, _ = small_problem
    base = [optim.clip_by_global_norm(5.0), optax.adam(1e-2)]
    plain = optax.chain(*base)
    variants = [
        optax.chain(optim.monitor(), base[0], optim.monitor(), base[1], optim.monitor()),
        optim.monitor(optax.chain(*base)),
    ]
    expected, _ = run_chain(plain, params, grad_jax)
    for tx in variants:
        actual, state = run_chain(tx, params, grad_jax)
        for a, e in zip(actual, expected, strict=True):
            assert_trees_equal(a, e)
        assert int(optim.monitor_state(state).count) == STEPS


def test_monitor_wrapping_records_raw_grads_and_final_update_ratio(problem):
    params, grad_jax, grad_np = problem
    lr = 0.05
    tx = optim.monitor(optax.chain(optim.clip_by_value(0.5), optax.sgd(lr)))
    state = tx.init(params)
    _, state = tx.update(grad_jax(params), state, params)
    grads, p = grad_np(to_np(params)), to_np(params)
    g = grads["conv"]["kernel"]
    np.testing.assert_allclose(
        state.grad_norms["conv/kernel"], np.linalg.norm(g.ravel()), rtol=RTOL
    )
    final = lr * np.clip(g, -0.5, 0.5)
    np.testing.assert_allclose(
        state.update_ratios["conv/kernel"],
        np.linalg.norm(final.ravel()) / np.linalg.norm(p["conv"]["kernel"].ravel()),
        rtol=RTOL,
    )


def test_monitor_state_is_found_through_nesting(rng):
    params = make_params(rng)
    tx = optax.inject_hyperparams(
        lambda learning_rate: optax.chain(
            optax.masked(optim.monitor(), lambda p: jax.tree.map(lambda _: True, p)),
            optax.sgd(learning_rate),
        )
    )(learning_rate=0.1)
    state = tx.init(params)
    _, state = tx.update(params, state, params)
    assert int(optim.monitor_state(state).count) == 1
    with pytest.raises(ValueError, match="no MonitorState"):
        optim.monitor_state(optax.sgd(0.1).init(params))


def test_monitor_leaf_names_stay_unambiguous():
    params = {"a": [jnp.ones(2)], "a/0": jnp.ones(2)}  # "a/0" twice with simple keys
    state = optim.monitor().init(params)
    assert len(state.grad_norms) == 2


# ----------------------------------------------------------------------------- make_optimizer


def _hand_built(
    name, lr, *, clip_value=None, clip_norm=None, weight_decay=None, l1=None, max_norm=None
):
    parts = []
    if clip_value is not None:
        parts.append(optax.clip(clip_value))
    if clip_norm is not None:
        parts.append(optax.clip_by_global_norm(clip_norm))
    if l1 is not None:
        parts.append(optim.add_l1(l1))
    if weight_decay is not None and name != "adamw":
        parts.append(optax.add_decayed_weights(weight_decay))
    core = {
        "sgd": lambda: optax.sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=0.9),
        "rmsprop": lambda: optax.rmsprop(lr),
        "adam": lambda: optax.adam(lr),
        "adamw": lambda: optax.adamw(
            lr, weight_decay=1e-4 if weight_decay is None else weight_decay
        ),
    }[name]
    parts.append(core())
    if max_norm is not None:
        parts.append(optim.max_norm(max_norm))
    return optax.chain(*parts)


EVERYTHING = {
    "clip_value": 2.0,
    "clip_norm": 5.0,
    "weight_decay": 0.01,
    "l1": 0.001,
    "max_norm": 2.0,
}


@pytest.mark.parametrize(
    ("name", "options"),
    [*((name, EVERYTHING) for name in optim.OPTIMIZERS), ("adamw", {})],
    ids=[*(f"{name}-everything" for name in optim.OPTIMIZERS), "adamw-plain"],
)
def test_make_optimizer_matches_hand_built_chain(small_problem, name, options):
    params, grad_jax, _ = small_problem
    lr = 0.05
    expected, _ = run_chain(_hand_built(name, lr, **options), params, grad_jax)
    actual, state = run_chain(
        optim.make_optimizer(name, lr, monitor=True, **options), params, grad_jax
    )
    for a, e in zip(actual, expected, strict=True):
        assert_trees_close(a, to_np(e), rtol=1e-6, atol=1e-7)
    assert int(optim.monitor_state(state).count) == STEPS


def test_make_optimizer_vmaps_over_hyperparameters(small_problem):
    """Learning rates and penalties may be traced (vmapped) scalars; none is float()-ed."""
    params, grad_jax, _ = small_problem
    grid = {
        "learning_rate": [0.0, 0.01, 0.1],
        "clip_norm": [5.0, 1.0, 0.5],
        "weight_decay": [0.1, 0.0, 0.01],
        "l1": [0.0, 0.01, 0.001],
        "max_norm": [3.0, 1.0, 2.0],
    }

    def train(hp):
        opt = optim.make_optimizer("momentum", monitor=True, **hp)
        state = opt.init(params)
        p = params
        for _ in range(2):
            updates, state = opt.update(grad_jax(p), state, p)
            p = optax.apply_updates(p, updates)
        return p, optim.monitor_state(state).global_grad_norm

    batched, norms = jax.jit(jax.vmap(train))({k: jnp.array(v) for k, v in grid.items()})
    assert norms.shape == (3,)
    train_one = jax.jit(train)  # one compilation for every set of Python floats
    for i in range(3):
        single, norm = train_one({k: v[i] for k, v in grid.items()})
        assert_trees_close(
            jax.tree.map(lambda x, i=i: x[i], batched), to_np(single), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(norms[i], norm, rtol=1e-5)


def test_make_optimizer_takes_a_schedule(small_problem):
    params, grad_jax, _ = small_problem
    schedule = optax.linear_schedule(0.1, 0.0, transition_steps=STEPS)
    history, _ = run_chain(optim.make_optimizer("sgd", schedule), params, grad_jax)
    expected, _ = run_chain(optax.sgd(schedule), params, grad_jax)
    assert_trees_equal(history[-1], expected[-1])


def test_update_vmaps_over_a_batch_of_gradients(rng):
    params = make_params(rng, shapes=SMALL_SHAPES)
    grads = jax.tree.map(lambda x: jnp.stack([x, -2.0 * x, 0.0 * x]), params)
    tx = optax.chain(
        optim.monitor(),
        optim.adaptive_clip(0.1),
        optim.clip_by_global_norm(1.0),
        optim.add_l1(0.01),
        optax.sgd(0.1),
        optim.l1_proximal(0.01, 0.1),
        optim.max_norm(1.0),
    )
    state = tx.init(params)
    batched, batched_state = jax.jit(jax.vmap(tx.update, in_axes=(0, None, None)))(
        grads, state, params
    )
    update_one = jax.jit(tx.update)
    for i in range(3):
        single, single_state = update_one(jax.tree.map(lambda x, i=i: x[i], grads), state, params)
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], batched), to_np(single))
        np.testing.assert_allclose(
            optim.monitor_state(batched_state).global_grad_norm[i],
            optim.monitor_state(single_state).global_grad_norm,
            rtol=RTOL,
        )


def test_jit_does_not_retrace(small_problem):
    params, grad_jax, _ = small_problem
    opt = optim.make_optimizer(
        "adam", 1e-3, clip_value=1.0, clip_norm=1.0, l1=1e-4, max_norm=3.0, monitor=True
    )
    traces = 0

    @jax.jit
    def step(p, state):
        nonlocal traces
        traces += 1
        updates, state = opt.update(grad_jax(p), state, p)
        return optax.apply_updates(p, updates), state

    p, state = params, opt.init(params)
    for _ in range(3):
        p, state = step(p, state)
    assert traces == 1


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (
            lambda: optim.make_optimizer("adagrad", 0.1),
            ValueError,
            "unknown optimizer 'adagrad'; valid names are: sgd, momentum, rmsprop, adam, adamw",
        ),
        (
            lambda: optim.make_optimizer("sgd", -0.1),
            ValueError,
            r"learning_rate must be >= 0, got -0\.1",
        ),
        (
            lambda: optim.make_optimizer("sgd", 0.1, max_norm=-1.0),
            ValueError,
            r"max_norm must be > 0, got -1\.0",
        ),
        (
            lambda: optim.make_optimizer("sgd", 0.1, clip_norm=0.0),
            ValueError,
            r"clip_norm must be > 0, got 0\.0",
        ),
        (
            lambda: optim.make_optimizer("sgd", 0.1, clip_value=-2),
            ValueError,
            r"clip_value must be > 0, got -2",
        ),
        (
            lambda: optim.make_optimizer("sgd", 0.1, weight_decay=-1e-4),
            ValueError,
            r"weight_decay must be >= 0, got -0\.0001",
        ),
        (
            lambda: optim.make_optimizer("sgd", 0.1, l1=float("nan")),
            ValueError,
            "l1 must be finite, got nan",
        ),
        (
            lambda: optim.make_optimizer("sgd", "0.1"),
            TypeError,
            "learning_rate must be a real number, got '0.1'",
        ),
        (
            lambda: optim.make_optimizer("sgd", jnp.ones(2)),
            ValueError,
            r"learning_rate must be a scalar, got an array of shape \(2,\)",
        ),
        (lambda: optim.clip_by_value(0.0), ValueError, r"max_delta must be > 0, got 0\.0"),
        (lambda: optim.clip_by_global_norm(-1.0), ValueError, r"max_norm must be > 0, got -1\.0"),
        (
            lambda: optim.clip_by_global_norm(1.0, eps=-1e-6),
            ValueError,
            r"eps must be >= 0, got -1e-06",
        ),
        (
            lambda: optim.clip_by_layer_norm(np.float32(-3.0)),
            ValueError,
            r"max_norm must be > 0, got -3\.0",
        ),
        (lambda: optim.adaptive_clip(-0.01), ValueError, r"clipping must be > 0, got -0\.01"),
        (
            lambda: optim.adaptive_clip(0.01, axis="0"),
            TypeError,
            "axis must be None, an int or a tuple of ints, got '0'",
        ),
        (lambda: optim.add_l1(-1.0), ValueError, r"weight must be >= 0, got -1\.0"),
        (
            lambda: optim.l1_proximal(0.1, -0.5),
            ValueError,
            r"learning_rate must be >= 0, got -0\.5",
        ),
        (lambda: optim.max_norm(-1.0), ValueError, r"max_value must be > 0, got -1\.0"),
        (
            lambda: optim.make_optimizer("sgd", 0.1, monitor=1),
            TypeError,
            "monitor must be a bool, got 1",
        ),
        (  # a concrete jax scalar is checked (a negative bound would flip the gradient)
            lambda: optim.clip_by_global_norm(jnp.asarray(-1.0)),
            ValueError,
            "max_norm must be > 0, got -1.0",
        ),
        (
            lambda: optim.make_optimizer("sgd", jnp.asarray(-1.0)),
            ValueError,
            "learning_rate must be >= 0, got -1.0",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_out_of_range_axis_names_the_axis():
    tx = optim.max_norm(1.0, axis=2)
    params = {"kernel": jnp.ones((2, 2))}
    with pytest.raises(
        ValueError, match="axis 2 is out of range for a parameter with 2 dimensions"
    ):
        tx.update(params, tx.init(params), params)


# ----------------------------------------------------------------------------- extreme values


def _clip_reference(grads, limit):
    """g * limit / ||g|| in float64 where ||g|| > limit (numpy's norm does not overflow)."""
    flat = np.concatenate([np.asarray(g, np.float64).ravel() for g in jax.tree.leaves(grads)])
    norm = np.linalg.norm(flat)
    scale = min(1.0, limit / norm)
    return jax.tree.map(lambda g: np.asarray(g, np.float64) * scale, grads), norm


EXPLODING_SCALES = [1e15, 2e19, 1e30, 3e37]


@pytest.mark.parametrize("scale", EXPLODING_SCALES)
@pytest.mark.parametrize(
    ("build", "sign"),
    [
        (lambda: optim.clip_by_global_norm(1.0), 1.0),
        (lambda: optim.make_optimizer("sgd", 1.0, clip_norm=1.0), -1.0),  # sgd negates
    ],
    ids=["clip_by_global_norm", "make_optimizer"],
)
def test_global_clipping_keeps_the_direction_of_finite_exploding_gradients(rng, scale, build, sign):
    """Entries of 2e19 square to inf in float32: a naive norm is inf and the update exactly 0
    (optax's clip_by_global_norm does that). Here the update is the float64 reference's."""
    params = make_params(rng)
    grads = jax.tree.map(
        lambda p: jnp.asarray(scale * rng.standard_normal(p.shape), p.dtype), params
    )
    tx = build()
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
    expected, norm = _clip_reference(grads, 1.0)
    clip_states = [
        s
        for s in jax.tree.leaves(
            state, is_leaf=lambda x: isinstance(x, optim.ClipByGlobalNormState)
        )
        if isinstance(s, optim.ClipByGlobalNormState)
    ]
    assert len(clip_states) == 1
    np.testing.assert_allclose(float(clip_states[0].global_norm), norm, rtol=1e-5)
    assert bool(clip_states[0].clipped)
    assert_trees_close(jax.tree.map(lambda u: sign * np.asarray(u, np.float64), updates), expected)


@pytest.mark.parametrize("scale", EXPLODING_SCALES)
def test_layer_and_unit_clipping_of_finite_exploding_gradients(rng, scale):
    params = make_params(rng)
    grads = jax.tree.map(
        lambda p: jnp.asarray(scale * rng.standard_normal(p.shape), p.dtype), params
    )
    updates, _ = jax.jit(optim.clip_by_layer_norm(2.0).update)(grads, optax.EmptyState())
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
        g = np.asarray(g, np.float64)
        np.testing.assert_allclose(
            np.asarray(u, np.float64), 2.0 * g / np.linalg.norm(g), rtol=RTOL
        )
    tx = optim.adaptive_clip(0.01)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    for u, g, p in zip(*(jax.tree.leaves(t) for t in (updates, grads, params)), strict=True):
        expected, _ = _agc_reference(np.asarray(g, np.float64), p, 0.01, 1e-3)
        np.testing.assert_allclose(np.asarray(u, np.float64), expected, rtol=RTOL, atol=0)


@pytest.mark.parametrize(
    "tx",
    [optim.clip_by_global_norm(1.0), optim.clip_by_layer_norm(1.0)],
    ids=["global", "layer"],
)
def test_an_inf_entry_clips_to_its_limiting_direction(tx):
    """v / ||v|| as the inf entries grow: their signs over sqrt(their count), zero elsewhere,
    norm exactly the limit; an update with nan passes through (no direction), recorded."""
    grads = {"a": jnp.array([jnp.inf, 1.0, -jnp.inf, 2.0]), "b": jnp.ones(3)}
    updates, state = jax.jit(tx.update)(grads, tx.init(grads))
    root_half = np.sqrt(0.5)
    np.testing.assert_allclose(np.asarray(updates["a"]), [root_half, 0, -root_half, 0], rtol=1e-6)
    if isinstance(state, optim.ClipByGlobalNormState):
        assert np.isposinf(float(state.global_norm))
        assert bool(state.clipped)
        np.testing.assert_array_equal(np.asarray(updates["b"]), 0.0)
    else:  # per leaf: b is finite and inside the limit? no: norm sqrt(3) > 1, clipped alone
        np.testing.assert_allclose(np.asarray(updates["b"]), 1 / np.sqrt(3), rtol=1e-6)
    with_nan = {"a": jnp.array([jnp.nan, 1.0]), "b": jnp.full(3, 5.0)}
    updates, state = jax.jit(tx.update)(with_nan, tx.init(with_nan))
    assert np.isnan(float(updates["a"][0]))
    assert float(updates["a"][1]) == 1.0
    if isinstance(state, optim.ClipByGlobalNormState):
        assert np.isnan(float(state.global_norm))
        assert not bool(state.clipped)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_gradients_are_clipped_with_a_float32_norm(rng, dtype):
    """Entries of 300 square beyond float16's largest number (65504)."""
    grads = {"w": jnp.asarray(300 * rng.standard_normal((64,)), dtype)}
    tx = optim.clip_by_global_norm(1.0)
    updates, state = jax.jit(tx.update)(grads, tx.init(grads))
    assert updates["w"].dtype == dtype
    assert state.global_norm.dtype == jnp.float32
    exact = np.asarray(grads["w"], np.float64)
    np.testing.assert_allclose(float(state.global_norm), np.linalg.norm(exact), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(updates["w"], np.float64), exact / np.linalg.norm(exact), rtol=1e-2
    )


# ----------------------------------------------------------------------------- inside nnx.Optimizer


class _Net:
    """A small NNX model for the nnx.Optimizer tests (defined lazily: flax import)."""

    @staticmethod
    def make(seed=0):
        from flax import nnx

        class Net(nnx.Module):
            def __init__(self, rngs):
                self.l1 = nnx.Linear(3, 5, rngs=rngs)
                self.conv = nnx.Conv(5, 4, (1,), rngs=rngs)
                self.head = nnx.Linear(4, 2, rngs=rngs)

            def __call__(self, x):
                h = jax.nn.relu(self.l1(x))
                return self.head(jax.nn.relu(self.conv(h[:, None, :]))[:, 0])

        return Net(nnx.Rngs(seed))


EVERY_TRANSFORM = [
    optim.clip_by_value(0.5),
    optim.clip_by_global_norm(1.0),
    optim.clip_by_layer_norm(1.0),
    optim.adaptive_clip(0.05),
    optim.add_l1(1e-3),
    optax.adam(1e-2),
    optim.l1_proximal(1e-3, 1e-2),
    optim.max_norm(2.0),
]


def _loss(model, x):
    return jnp.mean(jnp.square(model(x)))


def test_monitors_work_inside_nnx_optimizer_with_every_transform():
    """The issue's crash (KeyError 'head/bias': nnx.Optimizer initializes on Variables and
    updates on arrays) is gone; the monitors change nothing; each is found by its name and
    measures the norms of the arrays it saw, in an independent recomputation."""
    from flax import nnx

    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 3)), jnp.float32)
    plain_model, watched_model = _Net.make(), _Net.make()
    plain = nnx.Optimizer(plain_model, optax.chain(*EVERY_TRANSFORM), wrt=nnx.Param)
    chain = optax.chain(
        optim.monitor(name="raw"),
        *EVERY_TRANSFORM[:5],
        optim.monitor(
            optax.chain(*EVERY_TRANSFORM[5:], optim.monitor(name="inner")), name="optimizer"
        ),
    )
    watched = nnx.Optimizer(watched_model, chain, wrt=nnx.Param)
    for _ in range(3):
        before = {
            n: np.asarray(v, np.float64)
            for n, v in zip(
                optim.leaf_names(nnx.state(watched_model, nnx.Param)),
                jax.tree.leaves(nnx.state(watched_model, nnx.Param)),
                strict=True,
            )
        }
        grads = nnx.grad(_loss)(watched_model, x)
        plain.update(plain_model, nnx.grad(_loss)(plain_model, x))
        watched.update(watched_model, grads)
    for a, b in zip(
        jax.tree.leaves(nnx.state(plain_model)),
        jax.tree.leaves(nnx.state(watched_model)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    states = optim.monitor_states(watched.opt_state)
    assert list(states) == ["raw", "optimizer", "inner"]  # a monitor inside one is found too
    raw, final = states["raw"], states["optimizer"]
    assert int(raw.count) == 3
    # arrays, as the transform's own state holds them (nnx.Optimizer wraps them in Variables)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(raw))
    assert bool(raw.measured)
    assert bool(raw.global_grad_norm > 0)
    np.testing.assert_allclose(states["inner"].global_update_norm, final.global_update_norm)
    grad_leaves = dict(zip(optim.leaf_names(grads), jax.tree.leaves(grads), strict=True))
    assert set(raw.grad_norms) == set(grad_leaves) == {
        "l1/kernel", "l1/bias", "conv/kernel", "conv/bias", "head/kernel", "head/bias"
    }  # fmt: skip
    for name, grad in grad_leaves.items():
        np.testing.assert_allclose(
            raw.grad_norms[name], np.linalg.norm(np.asarray(grad)), rtol=1e-5
        )
        np.testing.assert_allclose(raw.weight_norms[name], np.linalg.norm(before[name]), rtol=1e-5)
    # the wrapping monitor sees adam's moments: compare with adam's own state
    adam = next(s for s in jax.tree.leaves(final.inner_state, is_leaf=lambda s: hasattr(s, "mu"))
            if hasattr(s, "mu"))  # fmt: skip
    mu = dict(zip(optim.leaf_names(adam.mu), jax.tree.leaves(adam.mu), strict=True))
    nu = dict(zip(optim.leaf_names(adam.nu), jax.tree.leaves(adam.nu), strict=True))
    for name in mu:
        np.testing.assert_allclose(
            final.first_moment_norms[name], np.linalg.norm(mu[name]), rtol=1e-5
        )
        np.testing.assert_allclose(
            final.second_moment_norms[name], np.linalg.norm(nu[name]), rtol=1e-5
        )
    assert np.isnan(float(raw.first_moment_norms["head/kernel"]))  # no moments before adam
    frame = final.to_frame(
        order=["l1/kernel", "l1/bias", "conv/kernel", "conv/bias", "head/kernel", "head/bias"]
    )
    assert next(iter(frame["param"])) == "l1/kernel"
    # forward order from the modules' order, as jaxgrad.train.layer_names traces it
    from jaxgrad import train

    by_module = raw.to_frame(order=train.layer_names(watched_model, x))
    assert by_module["param"].tolist() == [
        "l1/bias", "l1/kernel", "conv/bias", "conv/kernel", "head/bias", "head/kernel"
    ]  # fmt: skip
    np.testing.assert_allclose(
        by_module.set_index("param")["grad_norm"]["conv/kernel"], raw.grad_norms["conv/kernel"]
    )
    assert {"grad_norm", "update_norm", "update_ratio", "first_moment_norm"} <= set(frame.columns)


def test_every_module_in_forward_order_places_a_norm_layers_parameters():
    """A CNN with its activation applied as a function and a LayerNorm before the head: the
    monitor's rows follow layer_names(..., all_modules=True); with the layers with weights
    alone, the norm's scale and bias come last, as documented."""
    from flax import nnx

    from jaxgrad import train

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
            self.ln = nnx.LayerNorm(4, rngs=rngs)
            self.head = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            return self.head(self.ln(jax.nn.relu(self.conv(x)).mean(axis=(1, 2))))

    model, x = Net(nnx.Rngs(0)), jnp.ones((2, 5, 5, 3))
    optimizer = nnx.Optimizer(
        model, optax.chain(optim.monitor(name="m"), optax.sgd(0.1)), wrt=nnx.Param
    )
    optimizer.update(model, nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model))
    state = optim.monitor_states(optimizer.opt_state)["m"]
    assert train.layer_names(model, x, all_modules=True) == ["conv", "ln", "head"]
    every = state.to_frame(order=train.layer_names(model, x, all_modules=True))
    assert every["param"].tolist() == [
        "conv/bias", "conv/kernel", "ln/bias", "ln/scale", "head/bias", "head/kernel"
    ]  # fmt: skip
    weights_only = state.to_frame(order=train.layer_names(model, x))["param"].tolist()
    assert weights_only[-2:] == ["ln/bias", "ln/scale"]
    # attention: each projection's parameters after the projection itself, not after the
    # attention module that holds them (which would sort them by name)
    attention = nnx.MultiHeadAttention(2, 4, decode=False, rngs=nnx.Rngs(0))
    tokens = jnp.ones((1, 3, 4))
    optimizer = nnx.Optimizer(
        attention, optax.chain(optim.monitor(name="m"), optax.sgd(0.1)), wrt=nnx.Param
    )
    optimizer.update(attention, nnx.grad(lambda m: jnp.mean(m(tokens) ** 2))(attention))
    order = train.layer_names(attention, tokens, all_modules=True)
    assert order == ["", "query", "key", "value", "out"]
    rows = optim.monitor_states(optimizer.opt_state)["m"].to_frame(order=order)["param"]
    assert [name.split("/")[0] for name in rows][::2] == ["query", "key", "value", "out"]
    with pytest.raises(TypeError, match="all_modules must be a bool"):
        train.layer_names(model, x, all_modules="yes")


def test_make_optimizer_with_monitor_inside_nnx_optimizer():
    from flax import nnx

    model = _Net.make()
    opt = nnx.Optimizer(model, optim.make_optimizer("sgd", 0.1, monitor=True), wrt=nnx.Param)
    x = jnp.ones((4, 3))
    opt.update(model, nnx.grad(_loss)(model, x))
    assert int(optim.monitor_state(opt.opt_state).count) == 1
    assert float(optim.monitor_state(opt.opt_state).global_update_norm) > 0


def test_monitor_measures_every_k_updates_and_keeps_the_values_between(small_problem):
    params, grad_jax, _ = small_problem
    tx = optim.monitor(optax.sgd(0.1), every=3)
    state = tx.init(params)
    step = jax.jit(tx.update)
    seen = []
    for _ in range(7):
        grads = grad_jax(params)
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
        seen.append((bool(state.measured), float(state.global_grad_norm), grads))
    assert [m for m, _, _ in seen] == [True, False, False, True, False, False, True]
    for measured, norm, grads in seen:
        if measured:
            np.testing.assert_allclose(norm, float(optax.tree.norm(grads)), rtol=1e-5)
    assert seen[1][1] == seen[0][1]  # kept between measurements
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        optim.monitor(every=0)


def test_guard_skips_nonfinite_and_spiking_updates_and_records_them():
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    tx = optim.guard(optax.adam(0.1), spike_factor=10.0, warmup=2)
    state = tx.init(params)
    step = jax.jit(tx.update)
    normal = {"a": jnp.full(3, 0.5), "b": jnp.full(2, 0.5)}
    for _ in range(3):
        updates, state = step(normal, state, params)
    inner_before = state.inner_state
    bad = {"a": jnp.array([1.0, jnp.nan, 1.0]), "b": jnp.ones(2)}
    updates, state = step(bad, state, params)
    assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(updates))
    for before, after in zip(
        jax.tree.leaves(inner_before), jax.tree.leaves(state.inner_state), strict=True
    ):
        np.testing.assert_array_equal(before, after)  # adam's moments untouched
    assert int(state.skipped) == 1
    assert int(state.last_skipped) == 3
    assert int(state.reason) == optim.SKIP_NONFINITE
    assert bool(state.nonfinite["a"])
    assert not bool(state.nonfinite["b"])
    spike = {"a": jnp.full(3, 50.0), "b": jnp.full(2, 50.0)}  # 100x the running norm
    updates, state = step(spike, state, params)
    assert int(state.skipped) == 2
    assert int(state.reason) == optim.SKIP_SPIKE
    assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(updates))
    updates, state = step(normal, state, params)
    assert int(state.consecutive) == 0
    assert float(jnp.abs(updates["a"]).max()) > 0
    assert list(optim.guard_states(state)) == ["guard"]
    with pytest.raises(ValueError, match="spike_factor must be > 1"):
        optim.guard(optax.sgd(0.1), spike_factor=0.5)
    with pytest.raises(
        TypeError, match=r"got <function sgd .*; call the factory first, e\.g\. sgd"
    ):
        optim.guard(optax.sgd)  # the factory, not its transform
    with pytest.raises(TypeError, match="inner must be an optax.GradientTransformation, got 3"):
        optim.monitor(inner=3)


def test_guard_gives_up_after_max_consecutive_skips():
    params = {"w": jnp.ones(2)}
    tx = optim.guard(optax.sgd(1.0), max_consecutive=2)
    state = tx.init(params)
    bad = {"w": jnp.array([jnp.inf, 0.0])}
    skipped = []
    for _ in range(3):
        _updates, state = tx.update(bad, state, params)
        skipped.append(int(state.skipped))
    assert skipped == [1, 2, 2]  # the third is applied, as optax.apply_if_finite does


def test_monitor_reports_rmsprops_second_moment():
    """RMSProp keeps `nu` alone (no `mu`): its norm is reported, the first moment's is nan."""
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    grads = {"w": jnp.full((2, 3), 2.0), "b": jnp.arange(3.0)}
    tx = optim.make_optimizer("rmsprop", 0.01, monitor=True)
    _, state = tx.update(grads, tx.init(params), params)
    reference = optax.scale_by_rms()
    _, expected = reference.update(grads, reference.init(params), params)
    stats = optim.monitor_state(state)
    for name in ("w", "b"):
        np.testing.assert_allclose(
            stats.second_moment_norms[name], np.linalg.norm(expected.nu[name]), rtol=1e-6
        )
        assert np.isnan(float(stats.first_moment_norms[name]))


def test_monitor_rows_follow_modules_in_forward_order_stacks_included():
    from jaxgrad.optim import monitoring

    names = ["blocks/linear/bias", "blocks/linear/kernel", "input_layer/kernel", "readout/kernel"]
    forward = ["input_layer", "blocks[0].linear", "blocks[1].linear", "readout"]
    assert monitoring._ordered(names, forward) == [
        "input_layer/kernel", "blocks/linear/bias", "blocks/linear/kernel", "readout/kernel"
    ]  # fmt: skip
    assert monitoring._ordered(names, ["readout"])[0] == "readout/kernel"  # the rest after
    with pytest.raises(ValueError, match="order names neither parameters nor modules"):
        monitoring._ordered(names, ["decoder"])
    with pytest.raises(TypeError, match="order must be a sequence of names"):
        monitoring._ordered(names, "readout")
