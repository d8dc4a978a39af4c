"""Tests for the per-layer probe, propagate, diagnose and the seed experiment."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxgrad
from jaxgrad import activations, init, nn
from jaxgrad.propagation import (
    LayerStats,
    _probe_jit,
    mean_square_loss,
    random_projection_loss,
    seed_experiment,
    times_transpose,
)


def reference_stats(model: nn.MLP, x, loss_fn, y=None):
    """Per-layer statistics by `jax.grad` of an unrolled Python loop with explicit per-layer
    intermediates: the gradient with respect to each layer's output is taken through an
    added zero, and the weight gradients are materialized and normed directly."""
    phi = activations.get(model.activation_name)
    kernels = model.blocks.linear.kernel[...]
    biases = model.blocks.linear.bias[...]
    depth = kernels.shape[0]

    def loss_of(kernels, biases, taps):
        h = model.embed(x)
        outputs, pres = [], []
        for layer in range(depth):
            pre = h @ kernels[layer] + biases[layer][None, :]
            a = phi(pre)
            h = (h + a if model.residual else a) + taps[layer]
            outputs.append(h)
            pres.append(pre)
        return loss_fn(model.head(h), y), (outputs, pres)

    h0 = model.embed(x)
    taps = jnp.zeros((depth, *h0.shape))
    (dk, db, dtaps), (outputs, pres) = jax.grad(loss_of, argnums=(0, 1, 2), has_aux=True)(
        kernels, biases, taps
    )
    return {
        "grad_norm": np.linalg.norm(np.asarray(dk, np.float64).reshape(depth, -1), axis=1),
        "grad_norm_bias": np.linalg.norm(np.asarray(db, np.float64), axis=1),
        "act_grad_norm": np.linalg.norm(np.asarray(dtaps, np.float64).reshape(depth, -1), axis=1),
        "weight_norm": np.linalg.norm(np.asarray(kernels, np.float64).reshape(depth, -1), axis=1),
        "act_std": np.array([np.std(np.asarray(o, np.float64)) for o in outputs]),
        "act_mean": np.array([np.mean(np.asarray(o, np.float64)) for o in outputs]),
        "pre_std": np.array([np.std(np.asarray(p, np.float64)) for p in pres]),
        "pre_mean": np.array([np.mean(np.asarray(p, np.float64)) for p in pres]),
    }


CASES = [
    ("tanh", False, None, 16),  # batch < width: the Gram-matrix weight-gradient norm
    ("relu", True, 3, 16),
    ("sigmoid", False, 2, 40),  # batch > width: the direct weight-gradient norm
]


@pytest.mark.parametrize(("activation", "residual", "out_features", "batch"), CASES)
@pytest.mark.parametrize("method", ["reverse", "autodiff"])
def test_probe_matches_autodiff_of_unrolled_loop(activation, residual, out_features, batch, method):
    model = nn.MLP(
        12,
        24,
        6,
        out_features,
        activation=activation,
        residual=residual,
        residual_scale=1.0,
        bias_init=init.normal(0.2),
        rngs=nnx.Rngs(1),
    )
    x = jax.random.normal(jax.random.key(2), (batch, 12))
    loss_fn = random_projection_loss(jax.random.key(5))
    stats = jaxgrad.probe(model, x, loss_fn, method=method)
    expected = reference_stats(model, x, loss_fn)
    for name, reference in expected.items():
        np.testing.assert_allclose(
            np.asarray(getattr(stats, name)), reference, rtol=2e-5, atol=1e-7, err_msg=name
        )
    assert int(stats.first_nonfinite_layer) == -1


def test_probe_with_targets_and_custom_loss():
    model = nn.MLP(5, 10, 4, 2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (7, 5))
    y = jax.random.normal(jax.random.key(1), (7, 2))
    stats = jaxgrad.probe(model, x, mean_square_loss, y)
    expected = reference_stats(model, x, mean_square_loss, y)
    np.testing.assert_allclose(stats.grad_norm, expected["grad_norm"], rtol=2e-5)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_probe_with_norm_matches_autodiff_and_normalizes(norm):
    model = nn.MLP(32, 32, 5, activation="tanh", norm=norm, rngs=nnx.Rngs(0))
    x = 2.0 + 3.0 * jax.random.normal(jax.random.key(0), (64, 32))
    fast = jaxgrad.probe(model, x, random_projection_loss(jax.random.key(1)))
    slow = jaxgrad.probe(model, x, random_projection_loss(jax.random.key(1)), method="autodiff")
    names = ["grad_norm", "act_grad_norm", "pre_std", "act_std"]
    if norm == "batch":
        # Batch norm subtracts the batch mean, so dL/db is zero up to rounding in both.
        for stats in (fast, slow):
            assert np.all(np.asarray(stats.grad_norm_bias) < 1e-6 * np.asarray(stats.grad_norm))
    else:
        names.append("grad_norm_bias")
    for name in names:
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), rtol=2e-5)
    # Each normalized pre-activation has zero mean and unit std (up to the epsilon).
    np.testing.assert_allclose(fast.pre_std, 1.0, rtol=1e-3)
    np.testing.assert_allclose(fast.pre_mean, 0.0, atol=1e-5)
    # The probe does not change the model: batch norm's running averages stay at init.
    if norm == "batch":
        np.testing.assert_array_equal(model.blocks.norm.mean[...], 0.0)


def test_batch_norm_eval_mode_uses_running_averages():
    model = nn.MLP(16, 16, 3, norm="batch", rngs=nnx.Rngs(0))
    x = 5.0 + jax.random.normal(jax.random.key(0), (32, 16))
    model.eval()  # running mean 0, variance 1: batch norm is (nearly) the identity
    stats = jaxgrad.probe(model, x)
    plain = nn.MLP(16, 16, 3, rngs=nnx.Rngs(0))
    reference = jaxgrad.probe(plain, x)
    np.testing.assert_allclose(stats.pre_std, reference.pre_std, rtol=1e-4)


def residual_relu_prediction(depth: int, scale: float) -> np.ndarray:
    """E[h_l^2] of h_l = h_{l-1} + scale * relu(h_{l-1} W), He init, x ~ N(0, 1), wide limit.

    With m = E[h] and s = E[h^2] per unit, the branch input is N(0, 2 s), so relu gives mean
    sqrt(s / pi) and mean square s, nearly independent of the unit's own h:
        s' = s + 2 scale m sqrt(s / pi) + scale^2 s,   m' = m + scale sqrt(s / pi).
    A zero-mean branch would give exactly (1 + scale^2) s; relu's positive mean adds up
    coherently over blocks and lifts the factor towards 2.9 at scale 1.
    """
    m, s, out = 0.0, 1.0, []
    for _ in range(depth):
        m, s = (
            m + scale * math.sqrt(s / math.pi),
            s * (1 + scale**2) + 2 * scale * m * math.sqrt(s / math.pi),
        )
        out.append(s)
    return np.array(out)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_residual_relu_growth_follows_block_form(scale):
    width, depth = 1024, 8
    model = nn.MLP(
        width,
        width,
        depth,
        activation="relu",
        residual=True,
        residual_scale=scale,
        kernel_init=init.kaiming_normal(),
        rngs=nnx.Rngs(0),
    )
    x = jax.random.normal(jax.random.key(1), (64, width))
    stats = jaxgrad.probe(model, x)
    mean_square = np.asarray(stats.act_std) ** 2 + np.asarray(stats.act_mean) ** 2
    # Finite width 1024 and batch 64: fluctuations of a few per cent per block.
    np.testing.assert_allclose(mean_square, residual_relu_prediction(depth, scale), rtol=0.1)


def test_residual_zero_mean_branch_doubles_variance_per_block():
    """A branch that preserves variance and has zero mean (linear, LeCun init): exactly
    Var(h_l) = (1 + scale^2) Var(h_{l-1}) = 2 Var(h_{l-1})."""
    width = 1024
    model = nn.MLP(width, width, 8, activation="linear", residual=True, rngs=nnx.Rngs(0))
    stats = jaxgrad.probe(model, jax.random.normal(jax.random.key(1), (64, width)))
    growth = np.asarray(stats.act_std[1:] / stats.act_std[:-1]) ** 2
    np.testing.assert_allclose(growth, 2.0, rtol=0.05)


def test_nonfinite_values_are_recorded_not_raised():
    """Seed case (a): N(0, 1) weights, no activation, width 400: the values overflow float32
    around layer 30, and act_std is finite exactly as long as the values are."""
    depth, width = 40, 400
    kernel_init = init.normal(1.0)
    key = jax.random.key(0)
    stats = jaxgrad.propagate(
        key,
        depth=depth,
        width=width,
        batch_size=16,
        activation="linear",
        kernel_init=kernel_init,
    )
    # Independent reference: the same weights and inputs in a float32 numpy loop.
    model_key, input_key = jax.random.split(key)
    model = nn.MLP(
        width,
        width,
        depth,
        activation="linear",
        kernel_init=kernel_init,
        rngs=nnx.Rngs(params=model_key),
    )
    h = np.asarray(jax.random.normal(input_key, (16, width)))
    kernels = np.asarray(model.blocks.linear.kernel[...])
    first_bad = -1
    with np.errstate(over="ignore", invalid="ignore"):
        for layer in range(depth):
            h = (h @ kernels[layer]).astype(np.float32)
            if first_bad < 0 and not np.isfinite(h).all():
                first_bad = layer + 1
    assert 25 <= first_bad <= 35
    assert int(stats.first_nonfinite_layer) == first_bad
    act_std = np.asarray(stats.act_std)
    assert np.isfinite(act_std[: first_bad - 1]).all()
    assert not np.isfinite(act_std[first_bad - 1 :]).any()
    # The naive std overflows float32 long before the values do.
    naive_overflow = np.flatnonzero(act_std > math.sqrt(np.finfo(np.float32).max))[0] + 1
    assert first_bad - naive_overflow >= 10
    # The std grows by sqrt(width) = 20 per layer while finite.
    growth = act_std[1 : first_bad - 1] / act_std[: first_bad - 2]
    np.testing.assert_allclose(np.median(growth), math.sqrt(width), rtol=0.05)
    verdict = jaxgrad.diagnose(stats)
    assert verdict.verdict == "exploding"
    assert verdict.first_nonfinite_layer == first_bad


@pytest.mark.slow
def test_propagate_vmapped_over_keys_equals_separate_stored_calls():
    keys = jax.random.split(jax.random.key(0), 3)

    def run(key, redraw=None):
        return jaxgrad.propagate(
            key,
            depth=12,
            width=32,
            batch_size=8,
            activation="tanh",
            kernel_init=init.xavier_uniform(5 / 3),
            bias_init=init.normal(0.1),
            redraw=redraw,
        )

    batched = jax.jit(jax.vmap(run))(keys)  # Xavier uniform: redrawn in the scans
    assert batched.grad_norm.shape == (3, 12)
    for index, key in enumerate(keys):
        single = run(key, redraw=False)
        for name in LayerStats._fields:
            np.testing.assert_allclose(
                getattr(batched, name)[index], getattr(single, name), rtol=1e-5, err_msg=name
            )


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"activation": "tanh", "kernel_init": init.xavier_uniform(5 / 3)}, jax.random.key(3)),
        (
            {
                "activation": "relu",
                "kernel_init": init.kaiming_normal(),
                "bias_init": init.normal(0.1),
            },
            jax.random.key(3),
        ),
        (
            {
                "activation": "tanh",
                "kernel_init": init.orthogonal(),
                "norm": "batch",
                "residual": True,
            },
            jax.random.key(3),
        ),
        (
            {"activation": "selu", "kernel_init": init.lecun_normal(), "norm": "layer"},
            jax.random.key(3),
        ),
        (
            {"activation": "tanh", "kernel_init": init.normal(1.0), "dtype": jnp.float64},
            jax.random.key(3),
        ),
        ({"activation": "tanh", "kernel_init": None}, jax.random.PRNGKey(3)),
    ],
    ids=["tanh", "relu-bias", "batch-residual", "selu-layer", "float64", "default-init-raw-key"],
)
@pytest.mark.parametrize("redraw", [True, False])
def test_propagate_probes_the_mlp_it_stands_for(options, key, redraw):
    """propagate, its weights redrawn in each scan step that uses them or drawn once and
    stored, gives the numbers of probing the MLP built from the same key, every field, up
    to the rounding of the same products."""
    depth, width, batch = 9, 24, 6
    with jax.enable_x64(options.get("dtype") == jnp.float64):
        got = jaxgrad.propagate(
            key, depth=depth, width=width, batch_size=batch, redraw=redraw, **options
        )
        model_key, input_key = jax.random.split(key)
        dtype = options.get("dtype", jnp.float32)
        model = nn.MLP(width, width, depth, **options, rngs=nnx.Rngs(params=model_key))
        x = jax.random.normal(input_key, (batch, width), dtype)
        stored = jaxgrad.probe(model, x)
        tol = 1e-6 if dtype == jnp.float32 else 1e-12
        for name in LayerStats._fields:
            # atol: a mean of values of order 1 that is zero (batch norm's) is rounding.
            np.testing.assert_allclose(
                np.asarray(getattr(got, name)),
                np.asarray(getattr(stored, name)),
                rtol=tol,
                atol=tol,
                err_msg=name,
            )
        assert got.grad_norm.dtype == dtype


def test_propagate_with_an_rbg_key_stores_its_weights():
    """rbg draws differ vmapped over keys, so by default an rbg key's weights are stored (the
    MLP's numbers); redrawn they are other draws of the same distribution."""
    key = jax.random.key(5, impl="rbg")
    kwargs = {"depth": 6, "width": 32, "batch_size": 4, "activation": "tanh"}
    kwargs["kernel_init"] = init.xavier_uniform()
    default = jaxgrad.propagate(key, **kwargs)
    stored = jaxgrad.propagate(key, **kwargs, redraw=False)
    np.testing.assert_array_equal(default.weight_norm, stored.weight_norm)
    redrawn = jaxgrad.propagate(key, **kwargs, redraw=True)
    assert not np.allclose(redrawn.weight_norm, stored.weight_norm, rtol=1e-6)
    # Both are Xavier-uniform kernels: squared norm 32 * 32 * 2 / 64 = 32 on average.
    np.testing.assert_allclose(np.asarray(redrawn.weight_norm) ** 2, 32, rtol=0.1)


def _propagate_temp_bytes(depth, width, batch, kernel_init, **options):
    """Scratch memory of the compiled propagate (XLA's own accounting)."""

    def run(key):
        return jaxgrad.propagate(
            key,
            depth=depth,
            width=width,
            batch_size=batch,
            activation="tanh",
            kernel_init=kernel_init,
            **options,
        )

    compiled = jax.jit(run).lower(jax.random.key(0)).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.slow
def test_propagate_redrawn_memory_does_not_grow_with_the_stack_of_weights():
    """Redrawn, propagate keeps one block's weights at a time: its scratch memory at depth
    200 is far below the (depth, width, width) stack the stored model needs, and grows with
    depth by the saved activations only (one (batch, width) array a layer, and scalars), not
    by a kernel a layer."""
    width, batch = 256, 8
    stack = 200 * width * width * 4
    uniform, normal = init.lecun_uniform(), init.lecun_normal()
    assert _propagate_temp_bytes(200, width, batch, normal, method="autodiff") > stack
    assert _propagate_temp_bytes(200, width, batch, normal) > stack  # a normal draw: stored
    deep = _propagate_temp_bytes(200, width, batch, uniform)  # a cheap draw: redrawn
    assert deep < stack / 20
    # a normal draw redrawn: the same bound (its draw fuses differently, a kernel more)
    assert _propagate_temp_bytes(200, width, batch, normal, redraw=True) < stack / 20
    assert _propagate_temp_bytes(200, width, batch, uniform, redraw=False) > stack
    per_layer = (deep - _propagate_temp_bytes(20, width, batch, uniform)) / 180
    assert per_layer < 1.5 * batch * width * 4


@pytest.mark.slow
def test_propagate_redraws_a_stack_larger_than_the_memory_budget(monkeypatch):
    """With a normal initializer (stored by default) the stack is redrawn once it exceeds
    the budget; the numbers do not change."""
    kwargs = {"depth": 30, "width": 40, "batch_size": 4, "activation": "tanh"}
    kwargs["kernel_init"] = init.xavier_normal()
    stored = jaxgrad.propagate(jax.random.key(2), **kwargs)
    stored_bytes = _propagate_temp_bytes(30, 40, 4, kwargs["kernel_init"])
    stack = 30 * 40 * 40 * 4
    monkeypatch.setattr(jaxgrad.propagation, "default_memory_budget", lambda: stack - 1)
    assert _propagate_temp_bytes(30, 40, 4, kwargs["kernel_init"]) < stored_bytes - stack / 2
    redrawn = jaxgrad.propagate(jax.random.key(2), **kwargs)
    for name in LayerStats._fields:
        np.testing.assert_allclose(
            getattr(redrawn, name), getattr(stored, name), rtol=1e-6, atol=1e-6, err_msg=name
        )


def test_cheap_draw_marks_the_uniform_and_constant_initializers():
    cheap = [
        init.uniform(),
        init.constant(0.5),
        init.zeros(),
        init.identity(),
        init.xavier_uniform(),
        init.kaiming_uniform(),
        init.lecun_uniform(),
        init.variance_scaling(1.0, "fan_avg", "uniform"),
    ]
    dear = [
        init.normal(),
        init.trunc_normal(),
        init.xavier_normal(),
        init.kaiming_normal(),
        init.lecun_normal(),
        init.orthogonal(),
        init.delta_orthogonal(),
        init.sparse(0.5),
    ]
    assert all(initializer.cheap_draw for initializer in cheap)
    assert not any(initializer.cheap_draw for initializer in dear)


def test_second_probe_call_does_not_recompile():
    model = nn.MLP(8, 8, 3, rngs=nnx.Rngs(0))
    x = jnp.ones((4, 8))
    jaxgrad.probe(model, x)
    size = _probe_jit._cache_size()
    other = nn.MLP(8, 8, 3, rngs=nnx.Rngs(1))
    jaxgrad.probe(model, 2 * x)
    jaxgrad.probe(other, x)
    assert _probe_jit._cache_size() == size


@pytest.mark.slow
def test_seed_experiment_claims():
    """The seed experiment (a)-(f) at its own size: 100 layers, width 400, batch 16."""
    stats = {k: jax.device_get(v) for k, v in seed_experiment(jax.random.key(0)).items()}
    std = {label: np.asarray(s.act_std) for label, s in stats.items()}
    # (a) grows about sqrt(400) = 20 a layer until it overflows.
    assert 20 <= int(stats["a"].first_nonfinite_layer) <= 40
    assert 15 < std["a"][1] / std["a"][0] < 25
    # (b) stays near 1 (a product of 100 random matrices: within a factor 2).
    assert 0.5 < std["b"][-1] < 2.0
    # (c) tanh with the same weights shrinks layer after layer (q_l ~ 1/l at criticality).
    assert std["c"][-1] < 0.15 < 0.5 < std["c"][0]
    # (d) holds.
    assert 0.5 < std["d"][-1] < 1.0
    # (e) shrinks by about sqrt(2) a layer.
    rate = (std["e"][-1] / std["e"][9]) ** (1 / 90)
    np.testing.assert_allclose(rate, 1 / math.sqrt(2), rtol=0.02)
    # (f) holds.
    assert 0.2 < std["f"][-1] < 1.5
    for label in "bcdef":
        assert int(stats[label].first_nonfinite_layer) == -1


def test_seed_experiment_equals_separate_propagate_calls_and_compiles_once():
    """One program for the six networks, with the key traced: a second key reuses it (a
    loss and initializers made afresh on every call, static arguments of `propagate`,
    compiled the six programs again each time), and every network's statistics equal a
    `propagate` call of its own with the same loss key."""
    from jaxgrad.propagation import _seed_experiment_jit

    sizes = {"depth": 6, "width": 16, "batch_size": 4}
    before = _seed_experiment_jit._cache_size()
    runs = [seed_experiment(jax.random.key(seed), **sizes) for seed in (0, 1)]
    assert _seed_experiment_jit._cache_size() == before + 1
    for seed, run in zip((0, 1), runs, strict=True):
        key = jax.random.key(seed)
        loss_fn = random_projection_loss(jax.random.fold_in(key, 1))
        configs = jaxgrad.seed_configs(sizes["width"])
        # every network at the first key; the second key's tanh network (c) is enough to
        # show the reused program takes the new key (each separate call compiles)
        for config in configs if seed == 0 else configs[2:3]:
            alone = jaxgrad.propagate(
                key,
                activation=config.activation,
                kernel_init=config.kernel_init,
                loss_fn=loss_fn,
                **sizes,
            )
            for field in ("act_std", "act_grad_norm", "grad_norm", "first_nonfinite_layer"):
                np.testing.assert_allclose(
                    getattr(run[config.label], field), getattr(alone, field), rtol=1e-5
                )
    assert not np.allclose(runs[0]["c"].act_std, runs[1]["c"].act_std)  # the keys differ


def test_random_projection_loss_gradient_ignores_output():
    loss = random_projection_loss(jax.random.key(0))
    small = jax.grad(loss)(1e-12 * jnp.ones((4, 5)))
    large = jax.grad(loss)(1e6 * jnp.ones((4, 5)))
    np.testing.assert_array_equal(small, large)
    np.testing.assert_allclose(jnp.linalg.norm(small), 1.0, rtol=0.5)  # ||G|| / sqrt(20) ~ 1


def test_default_loss_vanishes_in_the_ordered_phase_but_projection_does_not():
    kwargs = {
        "depth": 60,
        "width": 64,
        "batch_size": 8,
        "activation": "tanh",
        "kernel_init": init.normal(0.5 / 8),
    }
    plain = jaxgrad.propagate(jax.random.key(0), **kwargs)
    projected = jaxgrad.propagate(
        jax.random.key(0), loss_fn=random_projection_loss(jax.random.key(1)), **kwargs
    )
    assert float(plain.act_grad_norm[-1]) < 1e-6 * float(projected.act_grad_norm[-1])


def synthetic(grad_norm) -> LayerStats:
    grad_norm = jnp.asarray(grad_norm, jnp.float32)
    zeros = jnp.zeros_like(grad_norm)
    return LayerStats(*([zeros] * 6), grad_norm, zeros, zeros, zeros, jnp.int32(-1))


@pytest.mark.parametrize(
    ("grad_norm", "verdict", "at_fault"),
    [
        ([1e-4, 5e-2, 1.0, 1.0], "vanishing", (1,)),
        ([1e3, 10.0, 1.0, 1.0], "exploding", (1,)),
        ([0.5, 0.7, 0.9, 1.0], "stable", ()),
        ([0.0, 0.0, 0.0, 0.0], "vanishing", (1, 2, 3, 4)),
        ([1.0, np.inf, 1.0, 1.0], "exploding", (2,)),
    ],
)
def test_diagnose_verdicts(grad_norm, verdict, at_fault):
    result = jaxgrad.diagnose(synthetic(grad_norm))
    assert result.verdict == verdict
    assert result.layers_at_fault == at_fault
    assert str(result).startswith(verdict)


def test_diagnose_rate_and_real_networks():
    result = jaxgrad.diagnose(synthetic([0.5**k for k in range(10, -1, -1)]))
    assert result.rate_per_layer == pytest.approx(0.5, rel=1e-5)
    assert result.ratio == pytest.approx(0.5**10, rel=1e-5)
    deep_sigmoid = jaxgrad.propagate(
        jax.random.key(0),
        depth=30,
        width=64,
        batch_size=16,
        activation="sigmoid",
        kernel_init=init.normal(0.01),
        loss_fn=random_projection_loss(jax.random.key(1)),
    )
    assert jaxgrad.diagnose(deep_sigmoid).verdict == "vanishing"
    with pytest.raises(ValueError, match="band must be > 1, got 0.5"):
        jaxgrad.diagnose(deep_sigmoid, band=0.5)
    with pytest.raises(ValueError, match="index the vmapped axis first"):
        jaxgrad.diagnose(synthetic([[1.0, 1.0]]))


def test_to_frame_rows_and_values():
    stats = jaxgrad.propagate(
        jax.random.key(0),
        depth=5,
        width=8,
        batch_size=4,
        activation="relu",
        kernel_init=init.kaiming_normal(),
    )
    frame = stats.to_frame()
    assert list(frame["layer"]) == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(frame["grad_norm"], np.asarray(stats.grad_norm))
    assert set(LayerStats._fields) <= set(frame.columns)
    batched = jax.vmap(
        lambda k: jaxgrad.propagate(
            k, depth=5, width=8, batch_size=4, activation="relu", kernel_init=init.kaiming_normal()
        )
    )(jax.random.split(jax.random.key(0), 2))
    frame = batched.to_frame()
    assert len(frame) == 10
    assert list(frame["sample"]) == [0] * 5 + [1] * 5
    np.testing.assert_array_equal(frame["act_std"], np.asarray(batched.act_std).ravel())


def test_saturation_and_dead_fractions():
    # Huge tanh weights: nearly every unit saturates (|z| >> 3).
    saturated = jaxgrad.propagate(
        jax.random.key(0),
        depth=3,
        width=64,
        batch_size=32,
        activation="tanh",
        kernel_init=init.normal(2.0),
    )
    # sigma_w^2 = 4 * 64: pre-activations of std ~ 13, so P(|z| < 3) is about 0.2.
    assert float(saturated.saturated_frac[-1]) > 0.75
    # A ReLU net with a large negative bias: every unit is dead after the first layer.
    dead = jaxgrad.propagate(
        jax.random.key(0),
        depth=3,
        width=64,
        batch_size=32,
        activation="relu",
        kernel_init=init.kaiming_normal(),
        bias_init=init.constant(-100.0),
    )
    np.testing.assert_array_equal(dead.dead_frac, 1.0)
    healthy = jaxgrad.propagate(
        jax.random.key(0),
        depth=3,
        width=64,
        batch_size=32,
        activation="tanh",
        kernel_init=init.xavier_normal(),
    )
    assert float(healthy.saturated_frac.max()) < 0.01
    np.testing.assert_array_equal(healthy.dead_frac, 0.0)


def test_bad_probe_arguments():
    model = nn.MLP(4, 4, 2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="probe takes a jaxgrad.nn.MLP, got Linear"):
        jaxgrad.probe(nnx.Linear(4, 4, rngs=nnx.Rngs(0)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="method must be one of reverse, autodiff, got 'fast'"):
        jaxgrad.probe(model, jnp.ones((2, 4)), method="fast")
    with pytest.raises(ValueError, match=r"inputs of shape \(\.\.\., 4\), got \(2, 3\)"):
        jaxgrad.probe(model, jnp.ones((2, 3)))
    seed = {"depth": 2, "width": 4, "batch_size": 2, "activation": "tanh"}
    seed["kernel_init"] = init.lecun_normal()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="depth must be an int >= 1, got 0"):
        jaxgrad.propagate(key, **{**seed, "depth": 0})
    with pytest.raises(ValueError, match="width must be an int >= 1, got 0"):
        jaxgrad.propagate(key, **{**seed, "width": 0})
    with pytest.raises(ValueError, match="redraw=True needs method='reverse', got method="):
        jaxgrad.propagate(key, **seed, method="autodiff", redraw=True)
    with pytest.raises(TypeError, match="redraw must be True, False or None, got 'yes'"):
        jaxgrad.propagate(key, **seed, redraw="yes")
    with pytest.raises(ValueError, match="norm must be one of"):
        jaxgrad.propagate(key, **seed, norm="instance")


def test_probe_flattens_leading_batch_axes():
    model = nn.MLP(6, 10, 3, 2, activation="tanh", norm="layer", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 4, 6))
    loss_fn = random_projection_loss(jax.random.key(1))
    nested = jaxgrad.probe(model, x, lambda out, y: loss_fn(out.reshape(8, 2), y))
    flat = jaxgrad.probe(model, x.reshape(8, 6), loss_fn)
    for name in LayerStats._fields:
        np.testing.assert_allclose(getattr(nested, name), getattr(flat, name), rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 24), (2, 24), (3, 16, 24), (33, 24)])
def test_times_transpose_equals_the_plain_product(shape):
    # Both routes (the kernel on the left for 2 to 32 rows, the plain product otherwise),
    # with leading axes, against a float64 numpy product.
    rows = jax.random.normal(jax.random.key(0), shape)
    kernel = jax.random.normal(jax.random.key(1), (20, 24))
    expected = np.asarray(rows, np.float64) @ np.asarray(kernel, np.float64).T
    result = jax.jit(times_transpose)(rows, kernel)
    assert result.shape == (*shape[:-1], 20)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
    batched = jax.vmap(times_transpose, in_axes=(0, None))(jnp.stack([rows, -rows]), kernel)
    np.testing.assert_allclose(batched[1], -expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- extreme values


@pytest.mark.parametrize("batch", [8, 160])  # the Gram route (batch < width), the product route
def test_gradient_norms_hold_where_a_gram_product_overflows(batch):
    """A linear network whose signal grows 30x a layer: values stay far inside float32, but
    ||h|| ||delta|| passes 1e19 from the first layer, where sum((h h^T) * (d d^T)) overflowed
    and every grad_norm was inf. Reference: the same weights in a float64 numpy loop."""
    depth, width = 14, 100
    kernel_init = init.normal(3.0)
    key, loss_key = jax.random.key(0), jax.random.key(1)
    loss_fn = random_projection_loss(loss_key)
    options = {"depth": depth, "width": width, "batch_size": batch, "activation": "linear"}
    stats = jaxgrad.propagate(key, **options, kernel_init=kernel_init, loss_fn=loss_fn)
    model_key, input_key = jax.random.split(key)
    model = nn.MLP(width, width, depth, activation="linear", kernel_init=kernel_init,
                   rngs=nnx.Rngs(params=model_key))  # fmt: skip
    kernels = np.asarray(model.blocks.linear.kernel[...], np.float64)
    inputs = [np.asarray(jax.random.normal(input_key, (batch, width)), np.float64)]
    for kernel in kernels:
        inputs.append(inputs[-1] @ kernel)
    delta = np.asarray(jax.random.normal(loss_key, (batch, width)), np.float64)
    delta /= math.sqrt(batch * width)
    expected = np.zeros(depth)
    for layer in reversed(range(depth)):
        expected[layer] = np.linalg.norm(inputs[layer].T @ delta)
        delta = delta @ kernels[layer].T
    assert expected.min() > 2e19  # its square overflows float32, as the Gram product did
    assert int(stats.first_nonfinite_layer) == -1
    np.testing.assert_allclose(stats.grad_norm, expected, rtol=1e-4)
    # finite norms, no false overflow, and a flat gradient ratio; the signal grows 30x a layer
    result = jaxgrad.diagnose(stats)
    by_rule = {finding.rule: finding for finding in result.findings}
    assert by_rule["nonfinite"].verdict == "stable"
    assert by_rule["gradient_ratio"].verdict == "stable"
    assert by_rule["signal"].verdict == "exploding"
    assert by_rule["signal"].numbers["rate_per_layer"] == pytest.approx(30, rel=0.1)
    assert result.verdict == "exploding"


def test_float64_seed_network_a_has_finite_gradient_norms():
    """Seed network (a)'s growth in float64: 20x a layer for 100 layers (1e130) stays finite,
    and so must every gradient norm (the Gram form overflowed float64 at 1e154 and gave nan).
    Width 100 with N(0, 2^2) weights grows 20x a layer as width 400 with N(0, 1) does, in a
    sixteenth of the memory."""
    with jax.enable_x64(True):
        options = {"depth": 100, "width": 100, "batch_size": 16, "activation": "linear"}
        options |= {"kernel_init": init.normal(2.0), "dtype": jnp.float64}
        loss_fn = random_projection_loss(jax.random.key(1))
        reverse = jaxgrad.propagate(jax.random.key(0), **options, loss_fn=loss_fn)
        autodiff = jaxgrad.propagate(
            jax.random.key(0), **options, loss_fn=loss_fn, method="autodiff"
        )
        assert np.isfinite(reverse.grad_norm).all()
        assert float(reverse.grad_norm.min()) > 1e100
        np.testing.assert_allclose(reverse.grad_norm, autodiff.grad_norm, rtol=1e-10)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_networks_have_float32_statistics(dtype):
    """A float16 ReLU network with O(1) values: sums of squares overflow float16 (a 400 x 400
    N(0, 1) kernel's norm is 400, its sum of squares 160000 > 65504), so the statistics are
    taken in float32. References: numpy float64 of the network's own float16 values."""
    width, depth = 400, 3
    model = nn.MLP(width, width, depth, activation="relu", kernel_init=init.normal(1.0),
                   dtype=dtype, rngs=nnx.Rngs(0))  # fmt: skip
    # small inputs, so that the values grow (14x a layer) from 0.2 to about 40 only
    x = 0.01 * jax.random.normal(jax.random.key(0), (16, width), dtype)
    stats = jaxgrad.probe(model, x, random_projection_loss(jax.random.key(1)))
    assert stats.pre_std.dtype == jnp.float32
    kernels = model.blocks.linear.kernel[...]
    np.testing.assert_allclose(
        stats.weight_norm, np.linalg.norm(np.asarray(kernels, np.float64), axis=(1, 2)), rtol=1e-5
    )
    # the model's own float16 pre-activations, by the blocks one at a time
    pre_std, h = [], x
    for layer in range(depth):
        pre = h @ kernels[layer] + model.blocks.linear.bias[...][layer][None]
        pre_std.append(np.std(np.asarray(pre, np.float64)))
        h = jax.nn.relu(pre)
    assert np.isfinite(stats.pre_std).all()
    np.testing.assert_allclose(stats.pre_std, pre_std, rtol=2e-2)  # float16 matmul rounding
    assert np.isfinite(stats.grad_norm).all()
    autodiff = jaxgrad.probe(model, x, random_projection_loss(jax.random.key(1)), method="autodiff")
    np.testing.assert_allclose(stats.grad_norm, autodiff.grad_norm, rtol=5e-2)


@pytest.mark.parametrize("input_dtype", [jnp.float16, jnp.int32, jnp.bool_])
def test_probe_takes_any_numeric_input_the_model_takes(input_dtype):
    model = nn.MLP(8, 8, 3, rngs=nnx.Rngs(0))
    x = (jax.random.normal(jax.random.key(0), (4, 8)) * 3).astype(input_dtype)
    stats = jaxgrad.probe(model, x)
    reference = jaxgrad.probe(model, x.astype(jnp.float32))
    for name in LayerStats._fields:
        np.testing.assert_array_equal(getattr(stats, name), getattr(reference, name))
    np.testing.assert_array_equal(model(x), model(x.astype(jnp.float32)))


BAD_PROPAGATE = [
    ({"kernel_init": "xavier"}, TypeError, "kernel_init must be an initializer"),
    ({"kernel_init": init.xavier_uniform}, TypeError, "call it, e.g. kernel_init=init.xavier"),
    ({"bias_init": 0.0}, TypeError, "bias_init must be an initializer"),
    ({"kernel_init": init.dirac()}, ValueError, r"kernel_init cannot draw a \(4, 4\) array"),
    ({"dtype": jnp.int32}, TypeError, "dtype must be a floating-point dtype"),
    ({"dtype": "float64"}, ValueError, "float64 needs jax_enable_x64"),
    ({"loss_fn": 3}, TypeError, "loss_fn must be a function"),
    ({"activation": ["tanh"]}, TypeError, "activation must be a name"),
    ({"activation": "tanhh"}, ValueError, "unknown activation 'tanhh'"),
    ({"residual": "maybe"}, TypeError, "residual must be True or False, got 'maybe'"),
    ({"key": 0}, TypeError, r"key must be one PRNG key, jax.random.key\(seed\).*got int 0"),
    ({"key": jnp.zeros(3)}, TypeError, r"got an array of dtype float32 and shape \(3,\)"),
]


@pytest.mark.parametrize(("change", "error", "match"), BAD_PROPAGATE)
def test_propagate_refuses_bad_arguments_before_tracing(change, error, match, monkeypatch):
    """Each bad argument is refused by propagate itself, with the value and the fix, before
    any tracing (the jitted function is replaced by one that fails if reached)."""

    def reached(*args, **kwargs):
        raise AssertionError("the bad argument reached the jitted program")

    monkeypatch.setattr(jaxgrad.propagation, "_propagate_jit", reached)
    options = {"depth": 2, "width": 4, "batch_size": 2, "activation": "tanh"}
    options |= {"kernel_init": init.lecun_normal(), "key": jax.random.key(0)} | change
    with pytest.raises(error, match=match):
        jaxgrad.propagate(options.pop("key"), **options)


BAD_MLP = [case for case in BAD_PROPAGATE if not {"key", "loss_fn"} & set(case[0])]


@pytest.mark.parametrize(("change", "error", "match"), BAD_MLP)
def test_mlp_refuses_the_same_bad_arguments(change, error, match):
    with pytest.raises(error, match=match):
        nn.MLP(4, 4, 2, **{"activation": "tanh", **change}, rngs=nnx.Rngs(0))


def test_diagnose_and_probe_name_what_they_were_given():
    with pytest.raises(TypeError, match="diagnose takes the LayerStats .* got dict"):
        jaxgrad.diagnose({"grad_norm": [1.0, 2.0]})
    model = nn.MLP(4, 4, 2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="MLP takes an array of inputs, got str"):
        jaxgrad.probe(model, "inputs")
    with pytest.raises(TypeError, match="loss_fn must be a function"):
        jaxgrad.probe(model, jnp.ones((2, 4)), loss_fn="mse")
