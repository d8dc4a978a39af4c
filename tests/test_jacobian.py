"""Tests for Jacobian spectra, Hutchinson estimates, the depth profile and spectrum summaries.

References are independent of the code under test: the analytic float64 Jacobian of a tanh
network in numpy, numpy's SVD, float64 `jax.jacfwd` of an unrolled loop of hand-written
blocks, closed forms (orthogonal products are isometries; the Fuss-Catalan law of products of
Gaussian matrices), and the variance of Hutchinson's estimator computed from the exact
spectrum.
"""

import itertools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxgrad import init, nn
from jaxgrad.jacobian import (
    AUTO_EXACT_MAX,
    DepthProfile,
    SpectrumSummary,
    _depth_profile_jit,
    default_num_iterations,
    depth_profile,
    mean_squared_singular_value,
    singular_values,
    spectrum_summary,
)

# ----------------------------------------------------------------------------- references


def tanh_weights(seed: int, dims, gain: float = 1.0) -> list[np.ndarray]:
    """float64 weights with float32-representable values, (dims[i + 1], dims[i]) each."""
    rng = np.random.default_rng(seed)
    return [
        (gain * rng.standard_normal((d_out, d_in)) / math.sqrt(d_in))
        .astype(np.float32)
        .astype(np.float64)
        for d_in, d_out in itertools.pairwise(dims)
    ]


def tanh_net(weights, dtype=jnp.float32):
    """x -> tanh(W_L ... tanh(W_1 x)) in JAX, at `dtype`."""
    ws = [jnp.asarray(w, dtype) for w in weights]

    def f(x):
        for w in ws:
            x = jnp.tanh(w @ x)
        return x

    return f


def tanh_jacobian(weights, x) -> np.ndarray:
    """The analytic Jacobian prod_l diag(1 - tanh(z_l)^2) W_l, in float64 numpy."""
    h = np.asarray(x, np.float64)
    jac = np.eye(h.shape[0])
    for w in weights:
        h = np.tanh(w @ h)
        jac = (1 - h**2)[:, None] * (w @ jac)
    return jac


def hutchinson_std(exact_s: np.ndarray, n: int, num_probes: int) -> float:
    """Std of mean_p ||J v_p||^2 / n for Gaussian v: Var ||J v||^2 = 2 tr((J^T J)^2)."""
    return math.sqrt(2 * np.sum(np.asarray(exact_s, np.float64) ** 4) / num_probes) / n


def case(seed: int, dims, gain: float = 1.0):
    weights = tanh_weights(seed, dims, gain)
    x = np.random.default_rng(seed + 100).standard_normal(dims[0]).astype(np.float32)
    exact = np.linalg.svd(tanh_jacobian(weights, x), compute_uv=False)
    return tanh_net(weights), jnp.asarray(x), exact


def float32_close(actual, expected, rtol: float = 1e-5, scale_atol: float = 1e-6):
    """|a - e| <= rtol |e| + scale_atol * max|e|: float32 rounding is relative to the
    largest singular value, so small ones are accurate only in absolute terms."""
    expected = np.asarray(expected, np.float64)
    np.testing.assert_allclose(
        np.asarray(actual, np.float64),
        expected,
        rtol=rtol,
        atol=scale_atol * float(np.max(np.abs(expected))),
    )


# ----------------------------------------------------------------------------- exact spectra


@pytest.mark.parametrize(
    "dims",
    [(6, 30, 17), (30, 40, 9), (12, 12)],
    ids=["n<m (jacfwd)", "n>m (jacrev)", "square"],
)
def test_exact_matches_numpy_svd_of_float64_jacobian(dims):
    f, x, exact = case(0, dims, gain=1.5)
    s = singular_values(f, x, method="exact")
    assert s.shape == (min(dims[0], dims[-1]),)
    assert s.dtype == jnp.float32
    assert np.all(np.diff(np.asarray(s)) <= 0), "descending"
    float32_close(s, exact)
    float32_close(singular_values(f, x), exact)  # auto: small, so exact
    float32_close(jax.jit(lambda x: singular_values(f, x))(x), exact)


def test_exact_in_float64():
    dims = (10, 25, 7)
    weights = tanh_weights(1, dims, gain=2.0)
    x = np.random.default_rng(3).standard_normal(dims[0])
    exact = np.linalg.svd(tanh_jacobian(weights, x), compute_uv=False)
    with jax.enable_x64(True):
        s = singular_values(tanh_net(weights, jnp.float64), jnp.asarray(x, jnp.float64))
        assert s.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(s), exact, rtol=1e-12, atol=1e-14)


def test_output_of_any_shape_is_flattened_and_k_selects():
    f, x, exact = case(2, (8, 12))
    s = singular_values(lambda x: f(x).reshape(3, 4), x, method="exact")
    float32_close(s, exact)
    float32_close(singular_values(f, x, k=3), exact[:3])
    float32_close(singular_values(f, x, k=3, which="bottom"), exact[-3:])
    top, bottom = singular_values(f, x, k=2, which="both")
    float32_close(top, exact[:2])
    float32_close(bottom, exact[-2:])


# ----------------------------------------------------------------------------- Lanczos


SQUARE_DEEP = (200, 200, 200, 200)  # a random deep tanh map R^200 -> R^200


def test_lanczos_top_k_in_default_iterations_and_interlacing():
    f, x, exact = case(3, SQUARE_DEEP, gain=1.2)
    k = 5
    steps = default_num_iterations(k, 200, 200)
    assert steps == 2 * k + 40
    top = singular_values(f, x, method="lanczos", k=k)
    assert top.shape == (k,)
    # the top values converge geometrically: 50 steps of 200 reach float32 rounding
    np.testing.assert_allclose(np.asarray(top, np.float64), exact[:k], rtol=1e-4)
    # Ritz values interlace: with few steps the top values are lower bounds and the bottom
    # values upper bounds of the true ones; here the bottom ones are far from converged.
    top, bottom = singular_values(f, x, method="lanczos", k=k, which="both", num_iterations=steps)
    top, bottom = np.asarray(top, np.float64), np.asarray(bottom, np.float64)
    assert np.all(top <= exact[:k] * (1 + 1e-5))
    assert np.all(bottom >= exact[-k:] * (1 - 1e-5))
    assert bottom[-1] > 100 * exact[-1]


def test_auto_uses_lanczos_for_the_top_of_a_large_jacobian(monkeypatch):
    from jaxgrad import jacobian

    def no_exact(*args):
        raise AssertionError("auto formed the Jacobian")

    f, x, exact = case(3, SQUARE_DEEP, gain=1.2)
    monkeypatch.setattr(jacobian, "AUTO_EXACT_MAX", 100)  # so that 200 counts as large
    monkeypatch.setattr(jacobian, "_exact", no_exact)
    top = singular_values(f, x, k=5)
    np.testing.assert_allclose(np.asarray(top, np.float64), exact[:5], rtol=1e-4)
    with pytest.raises(AssertionError, match="formed the Jacobian"):
        singular_values(f, x, k=5, which="bottom")  # the bottom: exact is cheaper
    with pytest.raises(AssertionError, match="formed the Jacobian"):
        singular_values(f, x)  # every value: exact
    assert AUTO_EXACT_MAX == 512


@pytest.mark.parametrize(
    "dims",
    [(200, 200, 200), (150, 300, 300), (300, 300, 150)],
    ids=["square", "n<m", "n>m (runs on J^T)"],
)
def test_lanczos_top_and_bottom_k_match_exact(dims):
    f, x, exact = case(4, dims)
    k = 5
    assert default_num_iterations(k, dims[0], dims[-1], "both") == min(dims[0], dims[-1])
    top, bottom = singular_values(f, x, method="lanczos", k=k, which="both")
    assert top.shape == bottom.shape == (k,)
    np.testing.assert_allclose(np.asarray(top, np.float64), exact[:k], rtol=1e-4)
    # Looser: the bottom values are found last, and float32 rounding in each product J v is
    # of size eps * s_max, so a small s_i is accurate only to about eps * s_max / s_i relative.
    float32_close(bottom, exact[-k:], rtol=1e-3, scale_atol=2e-5)


def test_lanczos_on_a_rank_deficient_jacobian_under_jit():
    """Exact zero products (breakdown) restart from a fresh direction: no nan, zeros kept."""
    w = np.zeros((40, 40), np.float32)
    w[:3, :3] = np.diag([3.0, 2.0, 1.0])
    f = lambda x: jnp.asarray(w) @ x
    both = jax.jit(lambda x: singular_values(f, x, method="lanczos", k=4, which="both"))
    top, bottom = both(jnp.ones(40))
    np.testing.assert_allclose(np.asarray(top), [3, 2, 1, 0], atol=1e-5)
    np.testing.assert_allclose(np.asarray(bottom), 0, atol=1e-5)


# ----------------------------------------------------------------------------- Hutchinson


@pytest.mark.parametrize("dims", [(40, 60, 30), (30, 60, 40)], ids=["n>m", "n<m"])
def test_hutchinson_within_statistical_tolerance(dims):
    f, x, exact = case(6, dims, gain=1.3)
    n, num_probes = dims[0], 64
    truth = np.sum(exact**2) / n  # tr(J^T J) / n
    est = float(mean_squared_singular_value(f, x, jax.random.key(7), num_probes))
    assert abs(est - truth) <= 5 * hutchinson_std(exact, n, num_probes)


def test_hutchinson_is_unbiased_over_keys():
    f, x, exact = case(8, (32, 48, 32), gain=1.3)
    n, num_probes, repeats = 32, 4, 400
    keys = jax.random.split(jax.random.key(9), repeats)
    estimates = jax.jit(jax.vmap(lambda key: mean_squared_singular_value(f, x, key, num_probes)))(
        keys
    )
    truth = np.sum(exact**2) / n
    std = hutchinson_std(exact, n, num_probes)
    assert abs(float(jnp.mean(estimates)) - truth) <= 5 * std / math.sqrt(repeats)
    np.testing.assert_allclose(float(jnp.std(estimates)), std, rtol=0.2)


# ----------------------------------------------------------------------------- depth profile


def reference_block(params: dict, rest: dict, layer: int, model: nn.MLP):
    """Block `layer` of `model` written out by hand, for float64 arrays."""
    kernel = params["linear"]["kernel"][layer]
    bias = params["linear"]["bias"][layer]
    phi = {"tanh": jnp.tanh, "relu": jax.nn.relu, "linear": lambda z: z}[model.activation_name]

    def block(h):
        z = h @ kernel + bias
        if model.norm == "layer":
            centred = z - jnp.mean(z)
            z = centred / jnp.sqrt(jnp.mean(centred**2) + 1e-6)
        elif model.norm == "batch":
            mean, var = rest["norm"]["mean"][layer], rest["norm"]["var"][layer]
            z = (z - mean) / jnp.sqrt(var + 1e-5)
        if model.norm is not None:
            z = z * params["norm"]["scale"][layer] + params["norm"]["bias"][layer]
        a = phi(z)
        return h + model.blocks.residual_scale * a if model.residual else a

    return block


def reference_spectra(model: nn.MLP, x) -> list[np.ndarray]:
    """Singular values of d h_l / d h_0 at every depth l, by float64 `jax.jacfwd` through the
    first l blocks, unrolled with a Python loop over the stacked weights."""
    h0 = np.asarray(model.embed(jnp.asarray(x)), np.float64)
    _, params, rest = nnx.split(model.blocks, nnx.Param, ...)
    to64 = lambda tree: jax.tree.map(lambda a: np.asarray(a, np.float64), nnx.to_pure_dict(tree))
    params, rest = to64(params), to64(rest)
    spectra = []
    with jax.enable_x64(True):
        for depth in range(1, model.depth + 1):

            def h_at(h, depth=depth):
                for layer in range(depth):
                    h = reference_block(params, rest, layer, model)(h)
                return h

            jac = np.asarray(jax.jacfwd(h_at)(jnp.asarray(h0)))
            spectra.append(np.linalg.svd(jac, compute_uv=False))
    return spectra


CONFIGS = ("tanh", "residual relu", "layer norm", "batch norm (eval)")


def make_model(config: str, seed: int = 0) -> nn.MLP:
    kwargs = {
        "tanh": {"activation": "tanh", "kernel_init": init.normal(1.3 / math.sqrt(32))},
        "residual relu": {
            "activation": "relu",
            "residual": True,
            "residual_scale": 0.5,
            "kernel_init": init.kaiming_normal(),
        },
        "layer norm": {"activation": "tanh", "norm": "layer"},
        "batch norm (eval)": {"activation": "tanh", "norm": "batch"},
    }[config]
    model = nn.MLP(12, 32, 6, 3, bias_init=init.normal(0.1), rngs=nnx.Rngs(seed), **kwargs)
    if model.norm is not None:  # move the norm's parameters off their identity defaults
        keys = iter(jax.random.split(jax.random.key(11), 4))
        shape = (6, 32)
        model.blocks.norm.scale[...] = jax.random.uniform(next(keys), shape, minval=0.5, maxval=2)
        model.blocks.norm.bias[...] = 0.1 * jax.random.normal(next(keys), shape)
        if model.norm == "batch":
            model.blocks.norm.mean[...] = 0.3 * jax.random.normal(next(keys), shape)
            model.blocks.norm.var[...] = jax.random.uniform(next(keys), shape, minval=0.3, maxval=3)
            model.eval()
    return model


@pytest.mark.parametrize("config", CONFIGS)
def test_depth_profile_matches_unrolled_float64_reference(config):
    model = make_model(config)
    x = jax.random.normal(jax.random.key(12), (12,))
    num_probes, spectra_at = 64, (4, 1, 6)
    profile = depth_profile(model, x, jax.random.key(13), num_probes, spectra_at)
    assert isinstance(profile, DepthProfile)
    assert profile.mean_sq_singular_value.shape == (6,)
    assert profile.spectra.shape == (3, 32)
    np.testing.assert_array_equal(np.asarray(profile.depths), spectra_at)

    reference = reference_spectra(model, x)
    for row, depth in enumerate(spectra_at):
        float32_close(profile.spectra[row], reference[depth - 1], rtol=1e-4)
    for depth, exact in enumerate(reference, start=1):
        truth = np.sum(exact**2) / model.width
        est = float(profile.mean_sq_singular_value[depth - 1])
        assert abs(est - truth) <= 5 * hutchinson_std(exact, model.width, num_probes), depth


def test_depth_profile_probes_do_not_depend_on_spectra_at_and_do_not_recompile():
    model = make_model("tanh")
    x = jax.random.normal(jax.random.key(14), (12,))
    plain = depth_profile(model, x, jax.random.key(15))
    with_spectra = depth_profile(model, x, jax.random.key(15), spectra_at=(2, 2, 5))
    np.testing.assert_allclose(
        np.asarray(plain.mean_sq_singular_value),
        np.asarray(with_spectra.mean_sq_singular_value),
        rtol=1e-6,
    )
    assert plain.spectra.shape == (0, 32)
    np.testing.assert_array_equal(np.asarray(with_spectra.spectra[0]), with_spectra.spectra[1])
    size = _depth_profile_jit._cache_size()
    other = make_model("tanh", seed=1)  # same structure, other weights
    depth_profile(other, 2 * x, jax.random.key(16), spectra_at=(2, 2, 5))
    assert _depth_profile_jit._cache_size() == size
    frame = plain.to_frame()
    assert list(frame["depth"]) == [1, 2, 3, 4, 5, 6]


@pytest.fixture(scope="module")
def linear_profiles():
    """Deep linear networks, width 256, depth 16: orthogonal and Gaussian (variance 1/n)."""
    x = jnp.ones(256)
    profiles = {}
    for name, kernel_init in [("orthogonal", init.orthogonal()), ("gaussian", init.lecun_normal())]:
        model = nn.MLP(256, 256, 16, activation="linear", kernel_init=kernel_init, rngs=nnx.Rngs(0))
        profiles[name] = depth_profile(model, x, jax.random.key(17), 64, spectra_at=(1, 4, 16))
    return profiles


def test_orthogonal_linear_network_is_an_isometry_at_every_depth(linear_profiles):
    """Saxe et al. 2014: a product of orthogonal matrices is orthogonal."""
    profile = linear_profiles["orthogonal"]
    np.testing.assert_allclose(np.asarray(profile.spectra), 1.0, atol=1e-4)
    summary = spectrum_summary(profile.spectra)
    np.testing.assert_array_equal(np.asarray(summary.isometry_score), 1.0)
    # ||J v||^2 = ||v||^2, so only the probes' own norms vary: std sqrt(2 / (P n))
    tolerance = 5 * math.sqrt(2 / (64 * 256))
    np.testing.assert_allclose(np.asarray(profile.mean_sq_singular_value), 1.0, atol=tolerance)


def test_gaussian_linear_network_keeps_mean_but_spreads_spectrum(linear_profiles):
    """Pennington et al. 2017: with variance 1/n, E tr(J^T J) / n = 1 at every depth, while the
    squared singular values of a product of l Gaussian matrices follow the Fuss-Catalan law,
    whose variance is l: the spectrum spreads linearly with depth."""
    profile = linear_profiles["gaussian"]
    n, num_probes = 256, 64
    summary = spectrum_summary(profile.spectra)
    for row, depth in enumerate((1, 4, 16)):
        exact = np.asarray(profile.spectra[row], np.float64)
        est = float(profile.mean_sq_singular_value[depth - 1])
        assert abs(est - np.mean(exact**2)) <= 5 * hutchinson_std(exact, n, num_probes)
        # the weights' own randomness: relative std about sqrt(l (l + 1)) / n
        assert abs(np.mean(exact**2) - 1) <= 4 * math.sqrt(depth * (depth + 1)) / n
        np.testing.assert_allclose(float(summary.var_sq[row]), depth, rtol=0.25)
    estimates = np.asarray(profile.mean_sq_singular_value)
    assert np.all(np.abs(estimates - 1) < 0.3)
    assert summary.max[2] > 2 * summary.max[0]
    assert summary.isometry_score[2] < summary.isometry_score[0] < 0.5


# ----------------------------------------------------------------------------- summary


def test_spectrum_summary_matches_numpy():
    rng = np.random.default_rng(18)
    spectra = np.sort(rng.uniform(0.2, 1.6, (3, 50)), axis=-1)[:, ::-1].astype(np.float32)
    eps = 0.25
    summary = jax.jit(lambda s: spectrum_summary(s, eps))(jnp.asarray(spectra))
    assert isinstance(summary, SpectrumSummary)
    s64 = spectra.astype(np.float64)
    expected = {
        "mean_sq": np.mean(s64**2, axis=-1),
        "var_sq": np.var(s64**2, axis=-1),
        "max": s64.max(axis=-1),
        "min": s64.min(axis=-1),
        "condition_number": s64.max(axis=-1) / s64.min(axis=-1),
        "isometry_score": np.mean((s64 >= 1 / 1.25) & (s64 <= 1.25), axis=-1),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(getattr(summary, name)), value, rtol=1e-5)
    vmapped = jax.vmap(spectrum_summary)(jnp.asarray(spectra))
    np.testing.assert_allclose(np.asarray(vmapped.var_sq), expected["var_sq"], rtol=1e-5)


def test_spectrum_summary_edge_cases():
    assert float(spectrum_summary(jnp.array([2.0, 0.0])).condition_number) == math.inf
    q = np.linalg.qr(np.random.default_rng(19).standard_normal((64, 64)))[0]
    summary = spectrum_summary(jnp.asarray(np.linalg.svd(q, compute_uv=False), jnp.float32))
    assert float(summary.isometry_score) == 1.0
    np.testing.assert_allclose(float(summary.condition_number), 1.0, rtol=1e-5)
    np.testing.assert_allclose(float(summary.var_sq), 0.0, atol=1e-5)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors():
    f = jnp.tanh
    with pytest.raises(ValueError, match=r"1-D.*\(2, 3\)"):
        singular_values(f, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"1-D.*\(\)"):
        mean_squared_singular_value(f, jnp.ones(()), jax.random.key(0))
    with pytest.raises(TypeError, match="floating-point"):
        singular_values(f, jnp.arange(3))
    with pytest.raises(ValueError, match=r"auto, exact, lanczos.*'svd'"):
        singular_values(f, jnp.ones(3), method="svd")
    with pytest.raises(ValueError, match="top, bottom, both"):
        singular_values(f, jnp.ones(3), k=1, which="middle")
    with pytest.raises(ValueError, match="needs k"):
        singular_values(f, jnp.ones(3), method="lanczos")
    with pytest.raises(ValueError, match=r"k must be in \[1, 3\], got 4"):
        singular_values(f, jnp.ones(3), k=4)
    with pytest.raises(TypeError, match="k must be an int"):
        singular_values(f, jnp.ones(3), k=2.0)
    with pytest.raises(ValueError, match=r"num_iterations must be in \[2, 3\], got 1"):
        singular_values(f, jnp.ones(3), method="lanczos", k=2, num_iterations=1)
    with pytest.raises(ValueError, match="num_probes must be >= 1, got 0"):
        mean_squared_singular_value(f, jnp.ones(3), jax.random.key(0), num_probes=0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        spectrum_summary(jnp.ones(3), eps=0.0)
    with pytest.raises(ValueError, match="k >= 1"):
        spectrum_summary(jnp.ones((2, 0)))


def test_depth_profile_bad_input():
    model = nn.MLP(8, 16, 4, rngs=nnx.Rngs(0))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"in \[1, 4\], got 5"):
        depth_profile(model, jnp.ones(8), key, spectra_at=(2, 5))
    with pytest.raises(ValueError, match=r"in \[1, 4\], got 0"):
        depth_profile(model, jnp.ones(8), key, spectra_at=(0,))
    with pytest.raises(TypeError, match="must be an int"):
        depth_profile(model, jnp.ones(8), key, spectra_at=(1.5,))
    with pytest.raises(ValueError, match=r"1-D.*\(2, 8\)"):
        depth_profile(model, jnp.ones((2, 8)), key)
    with pytest.raises(ValueError, match=r"shape \(8,\), got \(16,\)"):
        depth_profile(model, jnp.ones(16), key)
    with pytest.raises(TypeError, match="jaxgrad.nn.MLP"):
        depth_profile(nnx.Linear(8, 8, rngs=nnx.Rngs(0)), jnp.ones(8), key)
    batch_norm = nn.MLP(8, 16, 4, norm="batch", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        depth_profile(batch_norm, jnp.ones(8), key)


# ----------------------------------------------------------------------------- result objects


def test_spectrum_summary_frame_and_repr():
    one = spectrum_summary(jnp.array([2.0, 1.05, 1.0, 0.5]))
    assert repr(one) == (
        "SpectrumSummary\n  mean_sq: 1.588\n  var_sq: 2.047\n  max: 2\n  min: 0.5\n"
        "  condition_number: 4\n  isometry_score: 0.5"
    )
    frame = one.to_frame()
    assert list(frame.columns) == list(SpectrumSummary._fields)
    assert frame["condition_number"].tolist() == [4.0]
    spectra = jnp.asarray([[1.0, 2.0], [0.5, 1.0], [1.0, 1.0]])
    stacked = spectrum_summary(spectra.reshape(3, 1, 2))
    frame = stacked.to_frame()
    assert frame["index"].tolist() == ["(0, 0)", "(1, 0)", "(2, 0)"]
    np.testing.assert_allclose(frame["max"], [2.0, 1.0, 1.0])
    text = repr(stacked)
    assert text.splitlines()[0] == (
        "SpectrumSummary of 3 spectra (shape (3, 1); every one: .to_frame())"
    )
    assert "  condition_number: 1 .. 2" in text


def test_result_reprs_survive_tracing():
    texts = []

    def run(s):
        summary = spectrum_summary(s)
        texts.append(repr(summary))
        texts.append(repr(DepthProfile(jnp.arange(1, 2), jnp.square(s), s[None])))
        return summary.mean_sq

    jax.jit(run)(jnp.ones(3))
    jax.vmap(run)(jnp.ones((2, 3)))
    assert [t.split("(")[0] for t in texts] == ["SpectrumSummary", "DepthProfile"] * 2


def test_depth_profile_frame_and_repr():
    model = nn.MLP(16, 16, depth=6, activation="linear", kernel_init=init.orthogonal(),
                   rngs=nnx.Rngs(0))  # fmt: skip
    profile = depth_profile(model, jnp.ones(16), jax.random.key(0), spectra_at=(6, 2))
    frame = profile.to_frame()
    assert frame["depth"].tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(frame["max_singular_value"].to_numpy()[[1, 5]], 1.0, rtol=1e-5)
    assert frame["min_singular_value"].isna().tolist() == [True, False, True, True, True, False]
    lines = repr(profile).splitlines()
    assert lines[0] == "DepthProfile of 6 layers (every depth: .to_frame())"
    assert lines[1].startswith("  mean_sq_singular_value: ")
    assert lines[2] == "  spectrum at depth 6: 16 values, 1 .. 1"
    assert lines[3] == "  spectrum at depth 2: 16 values, 1 .. 1"
    batched = jax.vmap(lambda key: depth_profile(model, jnp.ones(16), key))(
        jax.random.split(jax.random.key(1), 2)
    )
    assert repr(batched) == "DepthProfile of 2 profiles (leading axes (2,)) of 6 layers; index one"
    with pytest.raises(ValueError, match=re.escape("index the vmapped axis first")):
        batched.to_frame()
