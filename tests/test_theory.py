"""Tests for jaxgrad.theory: closed forms, float64 quadrature references, wide networks."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize, special

import jaxgrad
from jaxgrad import init, theory


def gauss(fn):
    """E[fn(z)], z ~ N(0, 1), by scipy's adaptive quadrature in float64."""
    value, _ = integrate.quad(
        lambda z: fn(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -12, 12, limit=400
    )
    return value


def tanh_chi1_reference(sigma_w2, sigma_b2):
    """chi1 of tanh from scipy: q* by brentq on the q-map, then E[sech^4]."""

    def q_map(q):
        return sigma_w2 * gauss(lambda z: math.tanh(math.sqrt(q) * z) ** 2) + sigma_b2

    q_star = optimize.brentq(lambda q: q_map(q) - q, 1e-12, 1e4)
    return sigma_w2 * gauss(lambda z: sech(math.sqrt(q_star) * z) ** 4), q_star


def sech(x):
    """1 / cosh(x) without overflow."""
    e = math.exp(-abs(x))
    return 2 * e / (1 + e * e)


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize(("sigma_w2", "sigma_b2"), [(1.0, 0.1), (1.5, 0.3), (1.9, 0.01)])
def test_relu_closed_forms(sigma_w2, sigma_b2):
    q = sigma_b2 / (1 - sigma_w2 / 2)  # q = sigma_w2 q / 2 + sigma_b2
    assert float(theory.q_map("relu", sigma_w2, sigma_b2, 0.7)) == pytest.approx(
        sigma_w2 * 0.7 / 2 + sigma_b2, rel=1e-5
    )
    assert float(theory.q_star("relu", sigma_w2, sigma_b2)) == pytest.approx(q, rel=1e-4)
    assert float(theory.chi1("relu", sigma_w2, sigma_b2)) == pytest.approx(sigma_w2 / 2, rel=1e-5)
    # The arc-cosine kernel (Cho and Saul 2009): E[relu(u1) relu(u2)] = q/(2 pi) J(c).
    for c in (0.0, 0.5, 0.9):
        kernel = q / (2 * math.pi) * (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c)
        expected = (sigma_w2 * kernel + sigma_b2) / q
        got = float(theory.c_map("relu", sigma_w2, sigma_b2, c))
        assert got == pytest.approx(expected, rel=2e-4)


@pytest.mark.parametrize(("sigma_w2", "sigma_b2"), [(1.0, 0.05), (2.0, 0.05), (3.0, 0.2)])
def test_erf_closed_forms(sigma_w2, sigma_b2):
    """Williams 1997: E[erf(u1) erf(u2)] = (2/pi) arcsin(2 q c / (1 + 2 q))."""

    def q_map(q):
        return sigma_w2 * 2 / math.pi * math.asin(2 * q / (1 + 2 * q)) + sigma_b2

    q_star = optimize.brentq(lambda q: q_map(q) - q, 1e-9, 100.0)
    assert float(theory.q_map("erf", sigma_w2, sigma_b2, 0.8)) == pytest.approx(
        q_map(0.8), rel=1e-5
    )
    assert float(theory.q_star("erf", sigma_w2, sigma_b2)) == pytest.approx(q_star, rel=1e-4)
    chi1 = sigma_w2 * 4 / math.pi / math.sqrt(1 + 4 * q_star)  # erf' = 2/sqrt(pi) exp(-u^2)
    assert float(theory.chi1("erf", sigma_w2, sigma_b2)) == pytest.approx(chi1, rel=1e-4)
    for c in (0.1, 0.6, 0.95):
        expected = sigma_w2 * 2 / math.pi * math.asin(2 * q_star * c / (1 + 2 * q_star))
        expected = (expected + sigma_b2) / q_star
        assert float(theory.c_map("erf", sigma_w2, sigma_b2, c)) == pytest.approx(
            expected, rel=2e-4
        )


def test_linear_closed_forms():
    sigma_w2, sigma_b2 = 0.5, 0.2
    q_star = sigma_b2 / (1 - sigma_w2)
    assert float(theory.q_star("linear", sigma_w2, sigma_b2)) == pytest.approx(q_star, rel=1e-5)
    assert float(theory.chi1("linear", sigma_w2, sigma_b2)) == pytest.approx(sigma_w2, rel=1e-6)
    c = 0.3
    expected = (sigma_w2 * q_star * c + sigma_b2) / q_star
    assert float(theory.c_map("linear", sigma_w2, sigma_b2, c)) == pytest.approx(expected, rel=1e-4)
    # Ordered (sigma_w2 < 1): every input pair ends up perfectly correlated.
    assert float(theory.c_star("linear", sigma_w2, sigma_b2)) == pytest.approx(1.0, abs=1e-4)


def test_large_q_expectations_stay_accurate():
    """At sigma_w2 = 1000 tanh' is a spike of width 1/31 in z: chi1 against scipy."""
    expected, q_star = tanh_chi1_reference(1000.0, 0.05)
    assert float(theory.q_star("tanh", 1000.0, 0.05)) == pytest.approx(q_star, rel=1e-4)
    assert float(theory.chi1("tanh", 1000.0, 0.05)) == pytest.approx(expected, rel=1e-3)


# ----------------------------------------------------------------------------- critical line


def test_tanh_critical_point_at_sigma_b2_005():
    """Schoenholz et al. 2017: tanh with sigma_b2 = 0.05 is critical at sigma_w2 ~ 1.76."""
    reference = optimize.brentq(lambda w2: tanh_chi1_reference(w2, 0.05)[0] - 1, 1.2, 3.0)
    got = float(theory.critical_sigma_w2("tanh", 0.05))
    assert got == pytest.approx(reference, rel=1e-4)
    assert got == pytest.approx(1.761, abs=2e-3)


def test_relu_critical_point_is_two():
    for sigma_b2 in (0.0, 0.1):
        assert float(theory.critical_sigma_w2("relu", sigma_b2)) == pytest.approx(2.0, rel=1e-5)


def test_tanh_critical_line_tends_to_one():
    values = [float(theory.critical_sigma_w2("tanh", b2)) for b2 in (1e-2, 1e-4, 1e-6, 0.0)]
    assert values == sorted(values, reverse=True)
    assert values[-1] == pytest.approx(1.0, abs=1e-3)
    assert values[-2] == pytest.approx(1.0, abs=2e-2)


@pytest.mark.parametrize(
    ("activation", "sigma_b2", "expected", "rel"),
    [
        ("tanh", 0.0, 1.0, 1e-3),  # was 0.0: bisection from log(0) = -inf stayed at -inf
        ("relu", 0.1, 2.0, 1e-5),
        # phi = 1e4 tanh: chi1 -> sigma_w2 * 1e8 as q* -> 0, critical at 1e-8, below the
        # default low = 1e-3 (which gives nan) but found from low = 0.
        (lambda x: 1e4 * jnp.tanh(x), 0.0, 1e-8, 1e-3),
    ],
    ids=["tanh", "relu", "1e4_tanh"],
)
def test_critical_sigma_w2_from_low_zero(activation, sigma_b2, expected, rel):
    got = float(theory.critical_sigma_w2(activation, sigma_b2, low=0.0))
    assert got == pytest.approx(expected, rel=rel)


def test_critical_sigma_w2_from_low_zero_matches_the_default_bracket_and_vmaps():
    reference = float(theory.critical_sigma_w2("tanh", 0.05))
    assert float(theory.critical_sigma_w2("tanh", 0.05, low=0)) == pytest.approx(
        reference, rel=1e-5
    )
    batched = jax.vmap(lambda b2: theory.critical_sigma_w2("relu", b2, low=0.0))(
        jnp.array([0.0, 0.5])
    )
    np.testing.assert_allclose(batched, 2.0, rtol=1e-5)


@pytest.mark.parametrize(
    ("low", "high", "match"),
    [
        (10.0, 1.0, "need low < high, got low=10.0, high=1.0"),  # gave nan
        (2.0, 2.0, "need low < high, got low=2.0, high=2.0"),
        (-1.0, 10.0, "low must be finite and >= 0, got -1.0"),
        (1.0, math.inf, "high must be finite and >= 0, got inf"),
        (float("nan"), 10.0, "low must be finite and >= 0, got nan"),
        (1.0, 1e30, "high must be at most 1e+18"),
    ],
)
def test_critical_sigma_w2_refuses_bad_brackets(low, high, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        theory.critical_sigma_w2("tanh", 0.05, low=low, high=high)


def test_phase_labels():
    assert theory.phase("tanh", 1.2, 0.05) == "ordered"
    assert theory.phase("tanh", 3.0, 0.05) == "chaotic"
    critical = float(theory.critical_sigma_w2("tanh", 0.05))
    assert theory.phase("tanh", critical, 0.05) == "critical"


@pytest.mark.parametrize("q_star", [np.float32(0.5), np.float64(1 / 64), np.int64(2)])
def test_critical_point_for_q_star_takes_numpy_scalars(q_star):
    """np.float32(0.5) was refused as 'not a number > 0'."""
    assert theory.critical_point_for_q_star("tanh", q_star) == theory.critical_point_for_q_star(
        "tanh", float(q_star)
    )


@pytest.mark.parametrize(
    ("q_star", "error", "match"),
    [
        (math.inf, ValueError, "q_star must be finite, got inf"),  # gave (1.9e10, inf)
        (np.float64("nan"), ValueError, "q_star must be finite, got np.float64(nan)"),
        (0.0, ValueError, "q_star must be a number > 0, got 0.0"),
        (1e30, ValueError, "q_star must be at most 1e+18"),
        ("0.5", TypeError, "q_star must be a real number, got '0.5'"),
        (True, TypeError, "q_star must be a real number, got True"),
        (np.True_, TypeError, "q_star must be a real number, got np.True_"),
    ],
)
def test_critical_point_for_q_star_refuses_bad_q_star(q_star, error, match):
    with pytest.raises(error, match=re.escape(match)):
        theory.critical_point_for_q_star("tanh", q_star)


def test_critical_point_for_q_star():
    sigma_w2, sigma_b2 = theory.critical_point_for_q_star("tanh", 1 / 64)
    assert sigma_b2 >= 0
    assert float(theory.q_star("tanh", sigma_w2, sigma_b2)) == pytest.approx(1 / 64, rel=1e-3)
    assert float(theory.chi1("tanh", sigma_w2, sigma_b2)) == pytest.approx(1.0, rel=1e-4)
    # Independent: E[sech^4(sqrt(q) z)] from scipy.
    expected = 1 / gauss(lambda z: 1 / math.cosh(math.sqrt(1 / 64) * z) ** 4)
    assert sigma_w2 == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="q_star must be a number > 0, got -1"):
        theory.critical_point_for_q_star("tanh", -1)
    # relu: chi1 = 1 forces sigma_w2 = 2, and then sigma_b2 = q* - q* = 0.
    assert theory.critical_point_for_q_star("relu", 2.0) == pytest.approx((2.0, 0.0), abs=1e-5)
    with pytest.raises(ValueError, match="no critical point of sigmoid"):
        theory.critical_point_for_q_star("sigmoid", 0.01)


# ----------------------------------------------------------------------------- dynamics


@pytest.mark.slow
def test_c_star_in_both_phases():
    assert float(theory.c_star("tanh", 1.2, 0.05)) == pytest.approx(1.0, abs=1e-4)
    chaotic = float(theory.c_star("tanh", 4.0, 0.05))
    assert 0 < chaotic < 0.9
    # Odd activation, no bias: c = 0 is the stable fixed point in the chaotic phase.
    assert float(theory.c_star("tanh", 4.0, 0.0)) == pytest.approx(0.0, abs=1e-4)
    # c* is a fixed point of the map.
    assert float(theory.c_map("tanh", 4.0, 0.05, chaotic)) == pytest.approx(chaotic, rel=1e-4)


@pytest.mark.parametrize(("sigma_w2", "sigma_b2"), [(1.5, 0.05), (3.0, 0.05)])
def test_depth_scales_match_the_maps_convergence(sigma_w2, sigma_b2):
    """xi_c from the formula against the measured rate at which iterating the c-map approaches
    c*, and xi_q against the q-map's approach to q*."""
    xi_q, xi_c = (float(v) for v in theory.depth_scales("tanh", sigma_w2, sigma_b2))
    c_star = float(theory.c_star("tanh", sigma_w2, sigma_b2))
    c, gaps = c_star - 1e-3 if c_star > 0.5 else c_star + 1e-3, []
    for _ in range(6):
        c = float(theory.c_map("tanh", sigma_w2, sigma_b2, c))
        gaps.append(abs(c - c_star))
    measured_rate = (gaps[-1] / gaps[0]) ** (1 / 5)
    assert measured_rate == pytest.approx(math.exp(-1 / xi_c), rel=2e-3)
    q_star = float(theory.q_star("tanh", sigma_w2, sigma_b2))
    q, gaps = q_star * 1.01, []
    for _ in range(4):
        q = float(theory.q_map("tanh", sigma_w2, sigma_b2, q))
        gaps.append(abs(q - q_star))
    assert (gaps[-1] / gaps[0]) ** (1 / 3) == pytest.approx(math.exp(-1 / xi_q), rel=2e-2)


@pytest.mark.parametrize(
    ("activation", "sigma_w2", "sigma_b2", "expected"),
    [
        # relu with sigma_w2 > 2: q_l grows by sigma_w2 / 2 per layer, no fixed point; the
        # formula gave -1 / log(5e5) = -0.076.
        ("relu", 1e6, 0.0, (math.nan, math.nan)),
        ("relu", 3.0, 0.1, (math.nan, math.nan)),
        # Linear, sigma_w2 = 1, sigma_b2 = 0: every length is a fixed point, chi = 1 exactly,
        # nothing is approached exponentially; the formula gave -1 / log(1) = -inf.
        ("linear", 1.0, 0.0, (math.inf, math.inf)),
        # relu, sigma_w2 = 1, sigma_b2 = 0.1: q* = 0.2, chi_q = chi1 = 1/2 (phi'' = 0), so
        # xi_q = 1 / log 2 in closed form.
        ("relu", 1.0, 0.1, (1 / math.log(2), None)),
    ],
)
def test_depth_scales_are_positive_inf_or_nan_never_negative(
    activation, sigma_w2, sigma_b2, expected
):
    scales = [float(v) for v in theory.depth_scales(activation, sigma_w2, sigma_b2)]
    for got, want in zip(scales, expected, strict=True):
        assert not got < 0
        if want is None:
            assert 0 < got < math.inf
        elif math.isnan(want):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.slow
def test_phase_diagram_depth_scales_follow_the_same_rules():
    grid = theory.phase_diagram("relu", jnp.array([1.0, 3.0]), jnp.array([0.1]))
    assert float(grid.xi_q[0, 0]) == pytest.approx(1 / math.log(2), rel=1e-5)
    assert math.isnan(float(grid.xi_q[1, 0]))
    assert math.isnan(float(grid.xi_c[1, 0]))


def test_q_star_at_the_largest_accepted_sigma_w2_is_finite():
    """q* of tanh at sigma_w2 = 1e30 read inf; sigma_w2 beyond MAX_VARIANCE is refused, and
    at MAX_VARIANCE q* = sigma_w2 (1 - E[sech^2(sqrt(q*) z)]) + sigma_b2, where the sech^2 term
    is 2 / sqrt(2 pi q*) ~ 8e-10: q* = 1e18 to float32 precision."""
    got = float(theory.q_star("tanh", theory.MAX_VARIANCE, 0.05))
    assert got == pytest.approx(theory.MAX_VARIANCE, rel=1e-6)


def test_xi_c_diverges_at_criticality():
    critical = float(theory.critical_sigma_w2("tanh", 0.05))
    near = [float(theory.depth_scales("tanh", critical + d, 0.05)[1]) for d in (-0.3, -0.1, -0.02)]
    assert near[0] < near[1] < near[2]
    assert near[2] > 50


@pytest.mark.slow
def test_phase_diagram_equals_pointwise_calls():
    sigma_w2 = jnp.array([1.0, 2.0, 3.0])
    sigma_b2 = jnp.array([0.0, 0.05])
    grid = theory.phase_diagram("tanh", sigma_w2, sigma_b2)
    assert grid.chi1.shape == (3, 2)
    for i, w2 in enumerate([1.0, 2.0, 3.0]):
        for j, b2 in enumerate([0.0, 0.05]):
            assert float(grid.chi1[i, j]) == pytest.approx(float(theory.chi1("tanh", w2, b2)))
            assert float(grid.q_star[i, j]) == pytest.approx(
                float(theory.q_star("tanh", w2, b2)), rel=1e-5, abs=1e-7
            )
            assert float(grid.sigma_w2[i, j]) == w2


def test_theory_under_jit_and_vmap():
    sigma_w2 = jnp.linspace(1.0, 3.0, 5)
    batched = jax.jit(jax.vmap(lambda w2: theory.chi1("tanh", w2, 0.05)))(sigma_w2)
    for value, w2 in zip(np.asarray(batched), np.asarray(sigma_w2), strict=True):
        assert value == pytest.approx(tanh_chi1_reference(float(w2), 0.05)[0], rel=1e-4)
    critical = jax.vmap(lambda b2: theory.critical_sigma_w2("relu", b2))(jnp.array([0.0, 0.5]))
    np.testing.assert_allclose(critical, 2.0, rtol=1e-5)


# ----------------------------------------------------------------------------- wide networks


@pytest.mark.slow
@pytest.mark.parametrize(("sigma_w2", "sigma_b2"), [(1.5, 0.05), (3.0, 0.1)])
def test_wide_network_lengths_follow_the_q_map(sigma_w2, sigma_b2):
    """Width 1024, averaged over 8 networks: the measured q_l = E[z_l^2] of every layer is
    within 3 per cent of the q-map iterated from the first layer's measured q_1 (about
    sigma_w2 + sigma_b2). One network alone fluctuates by a few per cent a layer: the
    examples of a batch share the weights and, through the bias, are correlated, so they
    average out little of the sqrt(2 / width) noise of |h W|^2."""
    width, depth, batch = 1024, 12, 32

    def run(key):
        return jaxgrad.propagate(
            key,
            depth=depth,
            width=width,
            batch_size=batch,
            activation="tanh",
            kernel_init=init.normal(math.sqrt(sigma_w2 / width)),
            bias_init=init.normal(math.sqrt(sigma_b2)),
        )

    # one network at a time (lax.map): 8 networks' 1024 x 1024 kernels and their gradients
    # at once were the suite's peak memory (+0.7 GiB)
    stats = jax.lax.map(run, jax.random.split(jax.random.key(0), 8))
    measured = np.mean(np.asarray(stats.pre_std) ** 2 + np.asarray(stats.pre_mean) ** 2, axis=0)
    assert measured[0] == pytest.approx(sigma_w2 + sigma_b2, rel=0.03)
    predicted = [float(measured[0])]
    for _ in range(depth - 1):
        predicted.append(float(theory.q_map("tanh", sigma_w2, sigma_b2, predicted[-1])))
    np.testing.assert_allclose(measured, predicted, rtol=0.03)


@pytest.mark.parametrize("sigma_w2", [1.2, 1.76, 3.0])
def test_wide_network_gradients_follow_chi1(sigma_w2):
    """Width 1024: the squared norm of dL/dh changes by chi1 per layer going back (the
    geometric mean over 20 layers at the fixed point), within 3 per cent."""
    width, depth, sigma_b2 = 1024, 24, 0.05
    stats = jaxgrad.propagate(
        jax.random.key(1),
        depth=depth,
        width=width,
        batch_size=32,
        activation="tanh",
        kernel_init=init.normal(math.sqrt(sigma_w2 / width)),
        bias_init=init.normal(math.sqrt(sigma_b2)),
        loss_fn=jaxgrad.random_projection_loss(jax.random.key(2)),
    )
    grad = np.asarray(stats.act_grad_norm, np.float64)
    measured = (grad[2] / grad[22]) ** (2 / 20)
    assert measured == pytest.approx(float(theory.chi1("tanh", sigma_w2, sigma_b2)), rel=0.03)
    ratio = float(theory.predicted_gradient_ratio(theory.chi1("tanh", sigma_w2, sigma_b2), 21))
    assert grad[2] / grad[22] == pytest.approx(ratio, rel=0.3)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: theory.q_star("tanh", -1.0, 0.0), "sigma_w2 must be finite and >= 0, got -1.0"),
        (lambda: theory.chi1("tanh", 1.0, -0.1), "sigma_b2 must be finite and >= 0, got -0.1"),
        (lambda: theory.q_map("tanh", 1.0, 0.0, -2.0), "q must be finite and >= 0"),
        (lambda: theory.chi1("tanhh", 1.0, 0.0), "unknown activation 'tanhh'"),
        (lambda: theory.phase_diagram("tanh", jnp.ones((2, 2)), jnp.ones(2)), "1-D grids"),
        (lambda: theory.critical_sigma_w2("tanh", float("nan")), "sigma_b2 must be finite"),
        (lambda: theory.q_star("tanh", 1e30, 0.05), "sigma_w2 must be at most 1e+18"),
        (lambda: theory.chi1("tanh", 1.0, 1e19), "sigma_b2 must be at most 1e+18"),
        (lambda: theory.q_map("relu", 1.0, 0.0, 1e30), "q must be at most 1e+18"),
        (lambda: theory.c_map("tanh", 1.5, 0.05, 0.5, q=1e21), "q must be at most 1e+18"),
        (
            lambda: theory.phase_diagram("tanh", jnp.array([1.0, 1e30]), jnp.ones(2)),
            "sigma_w2 must be at most 1e+18",
        ),
        (lambda: theory.c_map("tanh", 1.5, 0.05, 2.0), "must be in [-1, 1], got 2.0"),
        (lambda: theory.c_map("tanh", 1.5, 0.05, -1.5), "must be in [-1, 1], got -1.5"),
        (lambda: theory.c_map("tanh", 1.5, 0.05, math.nan), "must be in [-1, 1], got nan"),
        (
            lambda: theory.c_map("tanh", 1.5, 0.05, jnp.array([0.5, 1.1])),
            "c is a correlation and must be in [-1, 1]",
        ),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        call()


@pytest.mark.parametrize("c", [-1.0, 0.3, 1.0])
def test_c_map_accepts_the_ends_and_traced_correlations(c):
    """The check reads only concrete values: under jit the same number comes back."""
    eager = float(theory.c_map("tanh", 1.5, 0.05, c))
    traced = float(jax.jit(lambda c: theory.c_map("tanh", 1.5, 0.05, c))(c))
    assert traced == pytest.approx(eager, rel=1e-6)
    if c == 1.0:  # c = 1 maps to 1: (sigma_w2 E[phi(u)^2] + sigma_b2) / q* = q* / q*
        assert eager == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize(
    ("activation", "weights", "per_layer"),
    [
        ("linear", "orthogonal", 0.0),  # a product of orthogonal matrices: exact isometry
        ("linear", "gaussian", 1.0),  # products of Gaussian matrices spread linearly
        ("relu", "orthogonal", 1.0),  # D^2 is Bernoulli(1/2): mu2 / mu1^2 = 2
        ("relu", "gaussian", 2.0),
    ],
)
def test_jacobian_spectrum_closed_forms(activation, weights, per_layer):
    sigma_w2 = 1.0 if activation == "linear" else 2.0
    spectrum = theory.jacobian_spectrum(activation, sigma_w2, 0.0, 10, weights)
    assert float(spectrum.mean_sq) == pytest.approx(1.0, rel=1e-5)
    assert float(spectrum.var_sq) == pytest.approx(10 * per_layer, rel=1e-5, abs=1e-6)


def test_jacobian_spectrum_tanh_isometry_at_small_q():
    """On the critical line, orthogonal tanh's variance shrinks with q* (phi' -> 1), while
    Gaussian weights keep at least L."""
    small = theory.critical_point_for_q_star("tanh", 1 / 64)
    large = theory.critical_point_for_q_star("tanh", 1.0)
    ortho_small = float(theory.jacobian_spectrum("tanh", *small, 100, "orthogonal").var_sq)
    ortho_large = float(theory.jacobian_spectrum("tanh", *large, 100, "orthogonal").var_sq)
    gauss_small = float(theory.jacobian_spectrum("tanh", *small, 100, "gaussian").var_sq)
    # Independent: mu2 / mu1^2 - 1 with mu_k = E[sech^(4k)(sqrt(q) z)] from scipy.
    q = 1 / 64
    mu1 = gauss(lambda z: sech(math.sqrt(q) * z) ** 4)
    mu2 = gauss(lambda z: sech(math.sqrt(q) * z) ** 8)
    assert ortho_small == pytest.approx(100 * (mu2 / mu1**2 - 1), rel=1e-3)
    assert ortho_small < 0.1 * ortho_large
    assert gauss_small > 100
    with pytest.raises(ValueError, match="weights must be 'gaussian' or 'orthogonal'"):
        theory.jacobian_spectrum("tanh", 1.0, 0.0, 3, "uniform")


# ----------------------------------------------------------------------------- exact references
#
# In float64 (jax.enable_x64) against closed forms computed here and 25-digit mpmath: the
# expectations, fixed points and slopes are exact to 1e-10 relative (1e-12 typical) for q
# from 1e-3 to 1e4.

Q_RANGE = np.array([1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4])
CORRELATIONS = np.array([-0.999, -0.6, -0.2, 0.0, 0.3, 0.7, 0.95, 0.999, 1.0])


def arc_cosine(n, c):
    """J_n(theta) of Cho and Saul 2009: E[relu(u1)^n relu(u2)^n] = q^n J_n / (2 pi)."""
    theta = np.arccos(np.clip(c, -1, 1))
    if n == 0:
        return np.pi - theta
    if n == 1:
        return np.sin(theta) + (np.pi - theta) * np.cos(theta)
    return 3 * np.sin(theta) * np.cos(theta) + (np.pi - theta) * (1 + 2 * np.cos(theta) ** 2)


def relu_power(n):
    """relu^n as a callable that declares its kink (n = 0: the step, relu's derivative)."""
    if n == 0:
        return jaxgrad.activations.derivative("relu")

    def phi(x):
        return jaxgrad.activations.relu(x) ** n

    phi.breakpoints = (0.0,)
    return phi


@pytest.mark.parametrize("n", [0, 1, 2])
def test_c_map_is_the_arc_cosine_kernel_of_relu_powers(n):
    """The correlation map of relu^n at every (q, c): (w2 q^n J_n(c) / 2 pi + b2) over the
    same at c = 1, to 1e-12."""
    sigma_w2, sigma_b2 = 2.0, 0.1
    q, c = np.meshgrid(Q_RANGE, CORRELATIONS, indexing="ij")
    scale = sigma_w2 * q**n / (2 * np.pi)
    expected = (scale * arc_cosine(n, c) + sigma_b2) / (scale * arc_cosine(n, 1.0) + sigma_b2)
    with jax.enable_x64(True):
        got = np.asarray(theory.c_map(relu_power(n), sigma_w2, sigma_b2, c, q))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_c_map_is_the_arcsine_kernel_of_erf():
    """Williams 1997: E[erf(u1) erf(u2)] = (2 / pi) arcsin(2 q c / (1 + 2 q)); the old rule
    was off by 6e-5 at q = 1e3 and 3e-4 at q = 1e4."""
    sigma_w2, sigma_b2 = 1.5, 0.05
    q, c = np.meshgrid(Q_RANGE, CORRELATIONS, indexing="ij")
    kernel = lambda c: sigma_w2 * 2 / np.pi * np.arcsin(2 * q * c / (1 + 2 * q)) + sigma_b2
    with jax.enable_x64(True):
        got = np.asarray(theory.c_map("erf", sigma_w2, sigma_b2, c, q))
    np.testing.assert_allclose(got, kernel(c) / kernel(1.0), rtol=1e-12, atol=1e-15)


def root(fn, low, high):
    """The root of fn in [low, high] by brentq, to float64 rounding."""
    return optimize.brentq(fn, low, high, xtol=1e-200, rtol=1e-15, maxiter=1000)


def erf_fixed_point(sigma_w2, sigma_b2):
    """q* of erf from its closed-form length map (the positive one)."""

    def residual(q):
        return sigma_w2 * 2 / math.pi * math.asin(2 * q / (1 + 2 * q)) + sigma_b2 - q

    return root(residual, 1e-12, 1e20)


ERF_POINTS = [(0.9, 0.05), (2.0, 0.01), (3.0, 0.2), (40.0, 0.5), (1e3, 0.0), (1e4, 1.0)]


@pytest.mark.slow
@pytest.mark.parametrize(("sigma_w2", "sigma_b2"), ERF_POINTS)
def test_erf_fixed_points_and_slopes_are_exact(sigma_w2, sigma_b2):
    q = erf_fixed_point(sigma_w2, sigma_b2)
    chi1 = sigma_w2 * 4 / math.pi / math.sqrt(1 + 4 * q)
    with jax.enable_x64(True):
        assert float(theory.q_star("erf", sigma_w2, sigma_b2)) == pytest.approx(q, rel=1e-12)
        assert float(theory.chi1("erf", sigma_w2, sigma_b2)) == pytest.approx(chi1, rel=1e-12)
        c_star = float(theory.c_star("erf", sigma_w2, sigma_b2))
        chi_c = float(theory.chi_c("erf", sigma_w2, sigma_b2))
    if chi1 < 1:  # ordered: c* = 1, where the map's slope is chi1
        assert c_star == 1.0
        assert chi_c == pytest.approx(chi1, rel=1e-12)
        return
    # c* is the fixed point of the closed-form map below 1, chi_c its slope there.
    kernel = lambda c: sigma_w2 * 2 / math.pi * math.asin(2 * q * c / (1 + 2 * q)) + sigma_b2
    assert c_star < 1
    assert kernel(c_star) / q == pytest.approx(c_star, rel=1e-12, abs=1e-15)
    slope = sigma_w2 * 4 / math.pi / math.sqrt((1 + 2 * q) ** 2 - (2 * q * c_star) ** 2)
    assert chi_c == pytest.approx(slope, rel=1e-11)


@pytest.mark.parametrize(
    ("activation", "sigma_w2", "sigma_b2", "expected"),
    [
        ("linear", 0.5, 0.2, 0.4),  # sigma_b2 / (1 - sigma_w2)
        ("linear", 0.99, 1e-3, 0.1),
        ("linear", 0.5, 0.0, 0.0),  # the length decays to 0
        ("linear", 1.0, 0.0, 1.0),  # every length is a fixed point: the network keeps q = 1
        ("linear", 1.5, 0.0, math.inf),
        ("relu", 1.5, 0.3, 1.2),  # sigma_b2 / (1 - sigma_w2 / 2)
        ("relu", 2.5, 0.0, math.inf),
        ("relu", 1e-3, 5.0, 5.0 / (1 - 5e-4)),
    ],
)
def test_q_star_of_linear_and_relu_networks(activation, sigma_w2, sigma_b2, expected):
    with jax.enable_x64(True):
        got = float(theory.q_star(activation, sigma_w2, sigma_b2))
    assert got == pytest.approx(expected, rel=1e-13, abs=0)


def hard_tanh_maps(q):
    """E[hard_tanh(u)^2], E[hard_tanh'(u)^2] and E[u^2; |u| < 1] / q for u ~ N(0, q)."""
    a = 1 / math.sqrt(q)
    inside = special.erf(a / math.sqrt(2))
    truncated = inside - 2 * a * math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    return q * truncated + special.erfc(a / math.sqrt(2)), inside, truncated


def elu_maps(q, alpha=1.0, scale=1.0):
    """E[phi(u)^2] and E[phi'(u)^2] of scale * elu(u, alpha), u ~ N(0, q), in closed form."""
    s = math.sqrt(q)
    twice = special.erfcx(2 * s / math.sqrt(2)) / 2  # exp(2 q) Phi(-2 s)
    once = special.erfcx(s / math.sqrt(2)) / 2  # exp(q / 2) Phi(-s)
    second = q / 2 + alpha**2 * (twice - 2 * once + 0.5)
    return scale**2 * second, scale**2 * (0.5 + alpha**2 * twice)


EXACT_MAPS = {
    "hard_tanh": lambda q: hard_tanh_maps(q)[:2],
    "elu": elu_maps,
    "selu": lambda q: elu_maps(q, jaxgrad.activations.SELU_ALPHA, jaxgrad.activations.SELU_SCALE),
}


KINKED_POINTS = [
    (name, sigma_w2, sigma_b2)
    for name in sorted(EXACT_MAPS)
    # elu and selu grow like relu: a finite q* needs sigma_w2 < 2 (selu: 2 / 1.0507^2)
    for sigma_w2, sigma_b2 in [(0.8, 1e-3), (1.5, 0.05), (1.8, 0.5)]
    + ([(30.0, 1.0), (3e3, 0.1)] if name == "hard_tanh" else [(1.2, 2.0)])
]


@pytest.mark.parametrize(("name", "sigma_w2", "sigma_b2"), KINKED_POINTS)
def test_fixed_points_of_kinked_activations_are_exact(name, sigma_w2, sigma_b2):
    """selu and elu (E[phi'^2] was 1.5e-5 low) and hard_tanh (0.7% off) against their exact
    length maps, q* from brentq, at 1e-11."""
    maps = EXACT_MAPS[name]
    q = root(lambda q: sigma_w2 * maps(q)[0] + sigma_b2 - q, 1e-12, 1e7)
    with jax.enable_x64(True):
        got_q = float(theory.q_star(name, sigma_w2, sigma_b2))
        got_chi1 = float(theory.chi1(name, sigma_w2, sigma_b2))
    assert got_q == pytest.approx(q, rel=1e-11)
    assert got_chi1 == pytest.approx(sigma_w2 * maps(q)[1], rel=1e-11)


@pytest.mark.parametrize("sigma_b2", [0.05, 0.5])
def test_hard_tanh_critical_line_is_exact(sigma_b2):
    """critical_sigma_w2('hard_tanh', 0.05) was 1.16166 against the exact 1.16554."""

    def excess(sigma_w2):
        q = root(lambda q: sigma_w2 * hard_tanh_maps(q)[0] + sigma_b2 - q, 1e-12, 1e6)
        return sigma_w2 * hard_tanh_maps(q)[1] - 1

    expected = root(excess, 1.0, 10.0)
    with jax.enable_x64(True):
        got = float(theory.critical_sigma_w2("hard_tanh", sigma_b2))
    assert got == pytest.approx(expected, rel=1e-11)
    if sigma_b2 == 0.05:
        assert got == pytest.approx(1.16554, abs=1e-5)


def test_hard_tanh_length_depth_scale_counts_the_kinks():
    """chi_q is the length map's slope, sigma_w2 E[u^2; |u| < 1] / q for hard_tanh: chi1 +
    sigma_w2 E[phi'' phi] with phi'' = 0 missed the delta functions at +-1 (2 a pdf(a))."""
    sigma_w2, sigma_b2 = 1.5, 0.05
    q = root(lambda q: sigma_w2 * hard_tanh_maps(q)[0] + sigma_b2 - q, 1e-12, 1e6)
    chi_q = sigma_w2 * hard_tanh_maps(q)[2]
    with jax.enable_x64(True):
        xi_q = float(theory.depth_scales("hard_tanh", sigma_w2, sigma_b2).xi_q)
    assert xi_q == pytest.approx(-1 / math.log(chi_q), rel=1e-10)
    assert chi_q < 0.9 * sigma_w2 * hard_tanh_maps(q)[1]  # what the delta functions take off


MEHLER_TERMS = 40
MEHLER_ACTIVATIONS = {
    "tanh": np.tanh,
    "hard_tanh": lambda x: np.clip(x, -1, 1),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "softsign": lambda x: x / (1 + np.abs(x)),
}


def mehler_c_map(name, sigma_w2, sigma_b2, c, q):
    """The c-map from its Mehler series E[phi(u1) phi(u2)] = sum_k c^k a_k^2, with
    a_k = E[phi(sqrt(q) z) He_k(z)] / sqrt(k!) by 64-point Gauss-Legendre on panels of width
    at most 1/2 over |z| < 14, split at the kinks: float64, independent of jaxgrad's rules;
    40 terms leave 0.3^40."""
    root = math.sqrt(q)
    kinks = {"hard_tanh": [-1 / root, 1 / root]}.get(name, [])
    edges = np.unique(np.concatenate([np.linspace(-14, 14, 57), [0.0], kinks]))
    x, w = np.polynomial.legendre.leggauss(64)
    half = np.diff(edges)[:, None] / 2
    z = ((edges[:-1, None] + edges[1:, None]) / 2 + half * x).ravel()
    weights = (half * w).ravel() * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    values = MEHLER_ACTIVATIONS[name](root * z)
    hermite = [np.ones_like(z), z]  # He_k(z) / sqrt(k!)
    for k in range(1, MEHLER_TERMS):
        hermite.append((z * hermite[k] - math.sqrt(k) * hermite[k - 1]) / math.sqrt(k + 1))
    coefficients = np.array([np.sum(weights * values * h) for h in hermite])
    kernel = np.sum(coefficients**2 * c ** np.arange(MEHLER_TERMS + 1))
    second = np.sum(weights * values**2)
    return (sigma_w2 * kernel + sigma_b2) / (sigma_w2 * second + sigma_b2)


@pytest.mark.parametrize(
    ("name", "q"), [("tanh", 4.0), ("hard_tanh", 2.0), ("elu", 1.0), ("softsign", 9.0)]
)
def test_c_map_against_mpmath_mehler_series(name, q):
    """Kinks away from 0 (hard_tanh), at 0 without symmetry (elu) and in phi'' (softsign)."""
    sigma_w2, sigma_b2 = 1.7, 0.1
    expected = [mehler_c_map(name, sigma_w2, sigma_b2, c, q) for c in (-0.3, 0.3)]
    with jax.enable_x64(True):
        got = np.asarray(theory.c_map(name, sigma_w2, sigma_b2, jnp.array([-0.3, 0.3]), q))
    np.testing.assert_allclose(got, expected, rtol=1e-11)


def mp_fixed_point(name, sigma_w2, sigma_b2):
    """q* and chi1 by 20-digit mpmath (findroot on the length map)."""
    import mpmath as mp

    mp.mp.dps = 20
    sigmoid = lambda x: 1 / (1 + mp.exp(-x))
    softplus = lambda x: mp.log1p(mp.exp(x))
    table = {
        "tanh": (mp.tanh, lambda x: 1 / mp.cosh(x) ** 2),
        "sigmoid": (sigmoid, lambda x: sigmoid(x) * (1 - sigmoid(x))),
        "gelu": (lambda x: x * mp.ncdf(x), lambda x: mp.ncdf(x) + x * mp.npdf(x)),
        "silu": (lambda x: x * sigmoid(x), lambda x: sigmoid(x) * (1 + x * (1 - sigmoid(x)))),
        "softplus": (softplus, sigmoid),
        "softsign": (lambda x: x / (1 + abs(x)), lambda x: 1 / (1 + abs(x)) ** 2),
        "mish": (
            lambda x: x * mp.tanh(softplus(x)),
            lambda x: mp.tanh(softplus(x)) + x * sigmoid(x) / mp.cosh(softplus(x)) ** 2,
        ),
    }
    phi, dphi = table[name]

    def expect(fn, q):
        s = mp.sqrt(q)
        cuts = sorted({0, *[k * s for k in (-12, -4, -1, 1, 4, 12)]}
                      | {k for k in (-8, -2, 2, 8) if abs(k) < 12 * s})  # fmt: skip
        return mp.quad(lambda u: fn(u) * mp.exp(-u * u / (2 * q)) / mp.sqrt(2 * mp.pi * q), cuts)

    # bracketed by jaxgrad's own value within 1% (the root found does not depend on it)
    guess = float(theory.q_star(name, sigma_w2, sigma_b2))
    bracket = (0.99 * guess, 1.01 * guess)
    q = mp.findroot(lambda q: sigma_w2 * expect(lambda u: phi(u) ** 2, q) + sigma_b2 - q,
                    bracket, solver="illinois", tol=mp.mpf(10) ** -18)  # fmt: skip
    return float(q), float(sigma_w2 * expect(lambda u: dphi(u) ** 2, q))


SMOOTH_POINTS = [
    (name, sigma_w2, sigma_b2)
    for name in ("tanh", "sigmoid", "gelu", "silu", "softplus", "softsign", "mish")
    for sigma_w2, sigma_b2 in [(1.5, 0.05)] + ([(400.0, 0.1)] if name == "tanh" else [])
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "sigma_w2", "sigma_b2"), SMOOTH_POINTS)
def test_fixed_points_of_smooth_activations_against_mpmath(name, sigma_w2, sigma_b2):
    q, chi1 = mp_fixed_point(name, sigma_w2, sigma_b2)
    with jax.enable_x64(True):
        assert float(theory.q_star(name, sigma_w2, sigma_b2)) == pytest.approx(q, rel=1e-11)
        assert float(theory.chi1(name, sigma_w2, sigma_b2)) == pytest.approx(chi1, rel=1e-11)


def test_c_map_is_a_correlation_at_any_length():
    """It divided by the input's q: c_map(tanh, 1, 0.05, c=1, q=2) gave 0.285."""
    with jax.enable_x64(True):
        at_one = theory.c_map("tanh", 1.0, 0.05, 1.0, jnp.array([1e-3, 2.0, 1e4]))
        np.testing.assert_allclose(at_one, 1.0, rtol=1e-13)
        below = np.asarray(theory.c_map("tanh", 1.0, 0.05, 0.5, jnp.array([1e-3, 2.0, 1e4])))
    assert np.all((below > 0) & (below < 1))


# ----------------------------------------------------------------------------- broadcasting


BROADCAST_CASES = {
    "q_map": lambda w2, b2: theory.q_map("tanh", w2, b2, 0.7),
    "q_star": lambda w2, b2: theory.q_star("tanh", w2, b2),
    "c_map": lambda w2, b2: theory.c_map("tanh", w2, b2, 0.4),
    "c_star": lambda w2, b2: theory.c_star("tanh", w2, b2),
    "chi1": lambda w2, b2: theory.chi1("tanh", w2, b2),
    "chi_c": lambda w2, b2: theory.chi_c("tanh", w2, b2),
    "xi_c": lambda w2, b2: theory.depth_scales("tanh", w2, b2).xi_c,
    "var_sq": lambda w2, b2: theory.jacobian_spectrum("tanh", w2, b2, 5).var_sq,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BROADCAST_CASES))
def test_array_arguments_broadcast_like_vmapped_scalars(name):
    """chi1('tanh', jnp.array([1., 2., 3.]), 0.05) raised a shape error."""
    fn = BROADCAST_CASES[name]
    with jax.enable_x64(True):
        sigma_w2 = jnp.array([[1.2], [2.0], [3.5]])
        sigma_b2 = jnp.array([0.0, 0.05])
        grid = np.asarray(fn(sigma_w2, sigma_b2))
        assert grid.shape == (3, 2)
        w2 = jnp.asarray(np.repeat([1.2, 2.0, 3.5], 2))
        b2 = jnp.asarray(np.tile([0.0, 0.05], 3))
        vmapped = np.asarray(jax.vmap(fn)(w2, b2)).reshape(3, 2)
        scalar = np.array([float(fn(float(w), float(b))) for w, b in zip(w2, b2, strict=True)])
    np.testing.assert_allclose(grid, vmapped, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(grid.reshape(-1), scalar)  # the same program, point by point


def test_critical_sigma_w2_broadcasts_over_sigma_b2():
    with jax.enable_x64(True):
        got = theory.critical_sigma_w2("tanh", jnp.array([0.0, 0.05]))
        assert got.shape == (2,)
        assert float(got[1]) == float(theory.critical_sigma_w2("tanh", 0.05))


def test_shapes_that_do_not_broadcast_are_refused():
    with pytest.raises(ValueError, match=re.escape("shapes (3,), (2,) do not broadcast")):
        theory.chi1("tanh", jnp.ones(3), jnp.ones(2))


# ----------------------------------------------------------------------------- result objects


@pytest.mark.slow
def test_phase_diagram_repr_and_frame():
    grid = theory.phase_diagram("relu", jnp.array([1.0, 3.0]), jnp.array([0.0, 0.1, 0.2]))
    frame = grid.to_frame()
    assert list(frame.columns) == list(theory.PhaseDiagram._fields)
    assert len(frame) == 6
    assert frame["sigma_w2"].tolist() == [1.0, 1.0, 1.0, 3.0, 3.0, 3.0]
    np.testing.assert_allclose(frame["chi1"], [0.5, 0.5, 0.5, 1.5, 1.5, 1.5], rtol=1e-6)
    text = repr(grid)
    assert text.splitlines()[0] == "PhaseDiagram of shape (2, 3) (every value: .to_frame())"
    assert "  chi1: 0.5 .. 1.5" in text
    assert "  q_star: 0 .. 0.4 (3 inf)" in text  # relu at sigma_w2 = 3 has no fixed point
    assert len(text.splitlines()) == 8


def test_depth_scales_and_jacobian_spectrum_are_named_results():
    scales = theory.depth_scales("relu", 1.0, 0.1)
    xi_q, xi_c = scales  # still unpacks as a pair
    assert xi_q is scales.xi_q
    assert xi_c is scales.xi_c
    assert repr(scales) == f"DepthScales\n  xi_q: {float(xi_q):.4g}\n  xi_c: {float(xi_c):.4g}"
    frame = theory.depth_scales("tanh", jnp.array([1.5, 3.0]), 0.05).to_frame()
    assert list(frame.columns) == ["xi_q", "xi_c"]
    assert len(frame) == 2
    spectrum = theory.jacobian_spectrum("relu", 2.0, 0.0, 10, "orthogonal")
    assert repr(spectrum) == "JacobianSpectrum\n  mean_sq: 1\n  var_sq: 10"
    records = spectrum.to_frame().to_dict("records")
    assert records == [
        {"mean_sq": pytest.approx(1.0, rel=1e-5), "var_sq": pytest.approx(10.0, rel=1e-5)}
    ]


@pytest.mark.slow
def test_result_reprs_survive_traced_and_vmapped_values():
    texts = []

    def run(sigma_w2):
        spectrum = theory.jacobian_spectrum("relu", sigma_w2, 0.05, 3)
        scales = theory.DepthScales(sigma_w2, sigma_w2 + 1)
        grid = theory.PhaseDiagram(*[sigma_w2] * 7)
        texts.extend([repr(spectrum), repr(scales), repr(grid)])
        return spectrum.mean_sq

    jax.jit(run)(1.5)
    jax.vmap(run)(jnp.array([1.5, 3.0]))
    assert len(texts) == 6
    starts = ("JacobianSpectrum(mean_sq=", "DepthScales(xi_q=", "PhaseDiagram(sigma_w2=")
    assert [text.startswith(starts[i % 3]) for i, text in enumerate(texts)] == [True] * 6
    batched = jax.vmap(lambda w2: theory.jacobian_spectrum("relu", w2, 0.0, 2))(jnp.ones(3))
    assert repr(batched) == "JacobianSpectrum of shape (3,) (every value: .to_frame())\n" + (
        "  mean_sq: 0.25\n  var_sq: 0.25"
    )


@pytest.mark.slow
def test_phase_diagram_split_over_cores_keeps_float64_and_every_point():
    """A grid of 256 points runs in one thread per core; a jax.enable_x64 context (which is
    each thread's own) reaches them: it came out in float32, 4e-6 off."""
    with jax.enable_x64(True):
        grid = theory.phase_diagram("tanh", jnp.linspace(1.0, 4.0, 16), jnp.linspace(0, 0.3, 16))
        assert grid.q_star.dtype == jnp.float64
        for i, j in [(0, 0), (7, 3), (15, 15)]:
            w2, b2 = grid.sigma_w2[i, j], grid.sigma_b2[i, j]
            assert float(grid.q_star[i, j]) == float(theory.q_star("tanh", w2, b2))
            assert float(grid.chi1[i, j]) == float(theory.chi1("tanh", w2, b2))
            assert float(grid.c_star[i, j]) == float(theory.c_star("tanh", w2, b2))
