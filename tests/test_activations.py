"""Tests for jaxgrad.activations against float64 definitions, finite differences and closed forms.

Float64 evaluations run inside `jax.enable_x64(True)`; nothing changes the global config.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from jaxgrad import activations

# Five standard errors: a two-sided miss by chance has probability below 6e-7 per check.
N_SIGMA = 5.0

# Klambauer et al. 2017, eq. (14): the SELU constants in closed form.
_ERFC = special.erfc(1.0 / math.sqrt(2.0))
KLAMBAUER_ALPHA = -math.sqrt(2.0 / math.pi) / (_ERFC * math.exp(0.5) - 1.0)
KLAMBAUER_SCALE = (
    (1.0 - _ERFC * math.sqrt(math.e))
    * math.sqrt(2.0 * math.pi)
    * (
        2.0 * special.erfc(math.sqrt(2.0)) * math.e**2
        + math.pi * _ERFC**2 * math.e
        - 2.0 * (2.0 + math.pi) * _ERFC * math.sqrt(math.e)
        + math.pi
        + 2.0
    )
    ** -0.5
)


def _sigmoid(x):
    """1 / (1 + exp(-x)), evaluated without overflow by scipy."""
    return special.expit(x)


def _elu(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


# (name, params, float64 definition)
DEFINITIONS = [
    ("linear", {}, lambda x: x),
    ("sigmoid", {}, _sigmoid),
    ("tanh", {}, np.tanh),
    ("relu", {}, lambda x: np.maximum(x, 0.0)),
    ("leaky_relu", {}, lambda x: np.where(x >= 0, x, 0.01 * x)),
    ("leaky_relu", {"negative_slope": 0.2}, lambda x: np.where(x >= 0, x, 0.2 * x)),
    ("elu", {}, lambda x: _elu(x, 1.0)),
    ("elu", {"alpha": 0.5}, lambda x: _elu(x, 0.5)),
    ("selu", {}, lambda x: KLAMBAUER_SCALE * _elu(x, KLAMBAUER_ALPHA)),
    ("gelu", {}, lambda x: x * special.ndtr(x)),
    ("gelu", {"approximate": False}, lambda x: 0.5 * x * (1.0 + special.erf(x / math.sqrt(2.0)))),
    (
        "gelu",
        {"approximate": True},
        # 0.5 x (1 + tanh(u)) = x sigmoid(2 u), u = sqrt(2 / pi) (x + 0.044715 x^3), without
        # the cancellation in 1 + tanh(u) for very negative x.
        lambda x: x * _sigmoid(2.0 * math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)),
    ),
    ("silu", {}, lambda x: x * _sigmoid(x)),
    ("softplus", {}, lambda x: np.logaddexp(0.0, x)),
    ("softsign", {}, lambda x: x / (1.0 + np.abs(x))),
    ("mish", {}, lambda x: x * np.tanh(np.log1p(np.exp(x)))),
    ("hard_tanh", {}, lambda x: np.clip(x, -1.0, 1.0)),
    ("erf", {}, special.erf),
    (
        "rrelu",
        {"deterministic": True, "lower": 0.1, "upper": 0.3},
        lambda x: np.where(x >= 0, x, 0.2 * x),
    ),
]
DEFINITION_IDS = [f"{name}{params or ''}" for name, params, _ in DEFINITIONS]

# Negative, zero and positive values, including the kinks (0, +-1) and both tails.
GRID = np.concatenate(
    [np.linspace(-8.0, 8.0, 161), [-30.0, -1e-3, -0.0, 0.0, 1e-3, 30.0, -1.0, 1.0]]
)
# Tolerances: a few ulps of the dtype relative, plus an absolute floor for values near 0.
TOLERANCES = {"float32": {"rtol": 5e-6, "atol": 1e-6}, "float64": {"rtol": 1e-13, "atol": 1e-14}}


def _evaluate(fn, x, dtype):
    """fn(x) computed in `dtype` (float64 inside enable_x64), returned as float64 numpy."""
    if dtype == "float64":
        with jax.enable_x64(True):
            y = fn(jnp.asarray(x, jnp.float64))
            assert y.dtype == jnp.float64
            return np.asarray(y)
    y = fn(jnp.asarray(x, jnp.float32))
    assert y.dtype == jnp.float32
    return np.asarray(y, np.float64)


# ----------------------------------------------------------------------------- definitions


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "params", "definition"), DEFINITIONS, ids=DEFINITION_IDS)
def test_activation_matches_definition(name, params, definition, dtype):
    x = GRID.astype(dtype).astype(np.float64)  # the reference sees the rounded inputs
    expected = definition(x)
    direct = getattr(activations, name)
    np.testing.assert_allclose(
        _evaluate(lambda v: direct(v, **params), x, dtype), expected, **TOLERANCES[dtype]
    )
    bound = activations.get(name, **params)
    np.testing.assert_allclose(_evaluate(bound, x, dtype), expected, **TOLERANCES[dtype])


def test_selu_constants_are_klambauers():
    assert pytest.approx(KLAMBAUER_ALPHA, rel=1e-14) == activations.SELU_ALPHA
    assert pytest.approx(KLAMBAUER_SCALE, rel=1e-14) == activations.SELU_SCALE


@pytest.mark.parametrize(("name", "params", "definition"), DEFINITIONS, ids=DEFINITION_IDS)
def test_activation_keeps_shape_and_bfloat16(name, params, definition):
    x = jnp.asarray(np.linspace(-3.0, 3.0, 24).reshape(4, 6), jnp.bfloat16)
    y = activations.get(name, **params)(x)
    assert y.shape == (4, 6)
    assert y.dtype == jnp.bfloat16
    expected = definition(np.asarray(x, np.float64))
    # bfloat16 has an 8-bit significand: relative spacing 2^-7 = 0.0078.
    np.testing.assert_allclose(np.asarray(y, np.float64), expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(("name", "params", "definition"), DEFINITIONS, ids=DEFINITION_IDS)
def test_activation_under_jit(name, params, definition):
    x = GRID.astype(np.float32)
    y = jax.jit(activations.get(name, **params))(x)
    np.testing.assert_allclose(
        np.asarray(y, np.float64), definition(x.astype(np.float64)), **TOLERANCES["float32"]
    )


# ----------------------------------------------------------------------------- rrelu


def test_rrelu_deterministic_uses_mean_slope():
    x = jnp.asarray(GRID, jnp.float32)
    for lower, upper in [(1 / 8, 1 / 3), (0.0, 1.0), (0.25, 0.25)]:
        y = activations.rrelu(x, lower=lower, upper=upper, deterministic=True)
        slope = (lower + upper) / 2
        np.testing.assert_allclose(y, np.where(GRID >= 0, GRID, slope * GRID), rtol=1e-6)


@pytest.mark.parametrize(("lower", "upper"), [(1 / 8, 1 / 3), (0.1, 0.9), (0.0, 0.05)])
def test_rrelu_random_slopes_are_uniform_in_range(lower, upper, key):
    num = 200_000
    x = -jnp.linspace(0.5, 4.0, num)
    y = activations.rrelu(x, key, lower=lower, upper=upper)
    slopes = np.asarray(y, np.float64) / np.asarray(x, np.float64)
    # Float32 division: allow one relative rounding error at each end of the range.
    assert slopes.min() >= lower * (1 - 1e-6)
    assert slopes.max() <= upper * (1 + 1e-6)
    # U(lower, upper): mean (lower + upper) / 2 with SE (upper - lower) / sqrt(12 n); variance
    # (upper - lower)^2 / 12 with SE var * sqrt(0.8 / n) (excess kurtosis -6/5).
    width = upper - lower
    assert abs(slopes.mean() - (lower + upper) / 2) <= N_SIGMA * width / math.sqrt(12 * num)
    assert abs(slopes.var() - width**2 / 12) <= N_SIGMA * width**2 / 12 * math.sqrt(0.8 / num)


def test_rrelu_leaves_nonnegative_inputs_unchanged(key):
    x = jnp.asarray(GRID, jnp.float32)
    y = np.asarray(activations.rrelu(x, key))
    nonnegative = GRID >= 0
    np.testing.assert_array_equal(y[nonnegative], np.asarray(x)[nonnegative])
    negative = ~nonnegative
    # slope * x with slope in [1/8, 1/3] and x < 0: between x/3 and x/8.
    assert np.all(y[negative] <= GRID[negative] / 8 * (1 - 1e-6))
    assert np.all(y[negative] >= GRID[negative] / 3 * (1 + 1e-6))


def test_rrelu_slopes_differ_per_element_and_key(key):
    x = -jnp.ones(1000)
    first = np.asarray(activations.rrelu(x, key))
    again = np.asarray(activations.rrelu(x, key))
    other = np.asarray(activations.rrelu(x, jax.random.key(1)))
    np.testing.assert_array_equal(first, again)  # a fixed key is reproducible
    assert len(np.unique(first)) > 900
    assert np.mean(first != other) > 0.99


def test_rrelu_under_jit(key):
    x = -jnp.ones(1000)
    jitted = jax.jit(activations.rrelu)(x, key)
    np.testing.assert_allclose(jitted, activations.rrelu(x, key), rtol=1e-6)


def test_rrelu_needs_a_key():
    with pytest.raises(ValueError, match="key"):
        activations.rrelu(jnp.ones(3))
    with pytest.raises(ValueError, match="key"):
        activations.get("rrelu")(jnp.ones(3))


@pytest.mark.parametrize("name", ["rrelu", "RReLU"])
def test_resolve_refuses_rrelu_by_name_and_says_what_to_use(name):
    """A name cannot carry the key rrelu needs at every call: refused before any model,
    sweep or trace is built, with the reason and both remedies in the message."""
    with pytest.raises(ValueError, match="needs a fresh PRNG key at every call") as excinfo:
        activations.resolve(name)
    message = str(excinfo.value)
    assert "jaxgrad.nn.RReLU" in message
    assert "activations.get('rrelu', deterministic=True)" in message
    # The derivative and anything else built on resolve refuse it the same way.
    with pytest.raises(ValueError, match="cannot be given by name"):
        activations.derivative(name)


def test_rrelu_evaluation_form_resolves_to_leaky_relu_with_the_mean_slope(key):
    """The remedy the refusal names: get(..., deterministic=True) is a callable that resolve
    takes, equal to leaky_relu with slope (lower + upper) / 2; rrelu(x, key) still works."""
    phi = activations.resolve(activations.get("rrelu", deterministic=True))
    x = jnp.asarray(GRID, jnp.float32)
    mean_slope = (1 / 8 + 1 / 3) / 2
    np.testing.assert_array_equal(phi(x), activations.leaky_relu(x, mean_slope))
    assert mean_slope == pytest.approx(0.2292, abs=1e-4)  # the figure the message quotes
    y = np.asarray(activations.get("rrelu")(x, key), np.float64)
    negative = GRID < 0
    slopes = y[negative] / GRID[negative]
    assert np.all((slopes >= 1 / 8 * (1 - 1e-6)) & (slopes <= 1 / 3 * (1 + 1e-6)))


@pytest.mark.parametrize("flag", ["no", "none", "tanh", "False", 0, 1, None])
def test_boolean_flags_refuse_non_bools(flag):
    """gelu(approximate="no") used to approximate (a non-empty string is true)."""
    x = jnp.linspace(-3.0, 3.0, 7)
    with pytest.raises(TypeError, match=re.escape("approximate of 'gelu' must be a bool")):
        activations.gelu(x, approximate=flag)
    with pytest.raises(TypeError, match=re.escape(f"got {flag!r}")):
        activations.get("gelu", approximate=flag)
    with pytest.raises(TypeError, match="deterministic of 'rrelu' must be a bool"):
        activations.rrelu(x, deterministic=flag)
    with pytest.raises(TypeError, match="deterministic of 'rrelu' must be a bool"):
        activations.get("rrelu", deterministic=flag)


@pytest.mark.parametrize("flag", [True, False, np.True_, np.False_])
def test_boolean_flags_accept_python_and_numpy_bools(flag):
    x = jnp.linspace(-3.0, 3.0, 7)
    expected = jax.nn.gelu(x, approximate=bool(flag))
    np.testing.assert_array_equal(activations.gelu(x, approximate=flag), expected)
    np.testing.assert_array_equal(activations.get("gelu", approximate=flag)(x), expected)


@pytest.mark.parametrize(
    ("name", "param", "value"),
    [
        ("leaky_relu", "negative_slope", np.float32(0.1)),
        ("leaky_relu", "negative_slope", np.float64(0.2)),
        ("leaky_relu", "negative_slope", np.int64(1)),
        ("elu", "alpha", np.float32(0.5)),
        ("rrelu", "upper", np.float16(0.5)),
    ],
)
def test_numpy_real_scalars_are_accepted_and_keep_the_dtype(name, param, value):
    """negative_slope=np.float32(.1) used to be refused; a NumPy scalar now acts as the same
    Python number (so a bfloat16 input stays bfloat16)."""
    extra = {"deterministic": True} if name == "rrelu" else {}
    phi = activations.get(name, **{param: value}, **extra)
    reference = activations.get(name, **{param: float(value)}, **extra)
    x = jnp.asarray(GRID, jnp.float32)
    np.testing.assert_array_equal(phi(x), reference(x))
    assert phi(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize("value", [np.True_, np.array([0.1]), "0.1"])
def test_numpy_bools_and_arrays_are_not_real_scalars(value):
    with pytest.raises(TypeError, match="negative_slope of 'leaky_relu' must be a real number"):
        activations.get("leaky_relu", negative_slope=value)


# ----------------------------------------------------------------------------- registry

EXPECTED_NAMES = {
    "linear",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "rrelu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "softplus",
    "softsign",
    "mish",
    "hard_tanh",
    "erf",
}


def test_names():
    names = activations.names()
    assert isinstance(names, tuple)
    assert len(names) == len(set(names))
    assert set(names) == EXPECTED_NAMES
    for name in names:
        assert activations.get(name) is getattr(activations, name)


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("identity", "linear"),
        ("none", "linear"),
        ("swish", "silu"),
        ("hardtanh", "hard_tanh"),
        ("ReLU", "relu"),
        ("TANH", "tanh"),
        ("Swish", "silu"),
    ],
)
def test_get_aliases(alias, canonical):
    assert activations.get(alias) is getattr(activations, canonical)
    if alias.lower() != canonical:
        assert alias.lower() not in activations.names()  # names() lists canonical names only


def test_get_binds_params():
    x = jnp.asarray(GRID, jnp.float32)
    phi = activations.get("leaky_relu", negative_slope=0.2)
    assert phi.__name__ == "leaky_relu"
    np.testing.assert_allclose(phi(x), np.where(GRID >= 0, GRID, 0.2 * GRID), rtol=1e-6)
    elu = activations.get("ELU", alpha=2.0)
    np.testing.assert_allclose(elu(x), _elu(GRID, 2.0), rtol=1e-6, atol=1e-6)


def test_get_binds_rrelu_key_and_range(key):
    phi = activations.get("rrelu", key=key, lower=0.2, upper=0.4)
    x = -jnp.ones(10_000)
    slopes = -np.asarray(phi(x))
    assert slopes.min() >= 0.2 * (1 - 1e-6)
    assert slopes.max() <= 0.4 * (1 + 1e-6)
    np.testing.assert_array_equal(phi(x), activations.rrelu(x, key, 0.2, 0.4))


@pytest.mark.parametrize("name", ["relux", "softmax", "", "leaky-relu"])
def test_get_unknown_name_lists_valid_names(name):
    with pytest.raises(ValueError, match=re.escape(repr(name))) as excinfo:
        activations.get(name)
    for valid in EXPECTED_NAMES:
        assert valid in str(excinfo.value)


@pytest.mark.parametrize(
    ("name", "params", "error", "match"),
    [
        ("relu", {"alpha": 1.0}, TypeError, "'relu' has no parameter 'alpha'"),
        ("leaky_relu", {"slope": 0.2}, TypeError, "'slope'"),
        ("elu", {"negative_slope": 0.2}, TypeError, "'negative_slope'"),
        ("gelu", {"alpha": 1.0}, TypeError, "'alpha'"),
        ("leaky_relu", {"negative_slope": "0.2"}, TypeError, "got '0.2'"),
        ("elu", {"alpha": True}, TypeError, "got True"),
        ("elu", {"alpha": math.inf}, ValueError, "got inf"),
        ("rrelu", {"lower": 0.5, "upper": 0.2}, ValueError, "lower=0.5, upper=0.2"),
        ("rrelu", {"lower": 0.5}, ValueError, "lower <= upper"),
        ("rrelu", {"upper": 0.1}, ValueError, "lower <= upper"),
    ],
)
def test_get_bad_params(name, params, error, match):
    with pytest.raises(error, match=re.escape(match)):
        activations.get(name, **params)


@pytest.mark.parametrize("name", [3, None, activations.relu])
def test_get_needs_a_string(name):
    with pytest.raises(TypeError, match="must be a str"):
        activations.get(name)


def test_resolve():
    assert activations.resolve("tanh") is activations.tanh
    assert activations.resolve("Swish") is activations.silu

    def cube(x):
        return x**3

    assert activations.resolve(cube) is cube
    for bad in [3, None, 1.5, ["relu"]]:
        with pytest.raises(TypeError, match=re.escape(repr(bad))):
            activations.resolve(bad)
    with pytest.raises(ValueError, match="relux"):
        activations.resolve("relux")


def test_name_of():
    assert activations.name_of("Swish") == "silu"
    assert activations.name_of(activations.get("leaky_relu", negative_slope=0.3)) == "leaky_relu"


# ----------------------------------------------------------------------------- derivative

# A grid with no point at a kink (0 for the ReLU family, +-1 for hard_tanh): step 0.1 from -3.95.
SMOOTH_GRID = np.linspace(-3.95, 3.95, 80)


@pytest.mark.parametrize(("name", "params", "definition"), DEFINITIONS, ids=DEFINITION_IDS)
def test_derivative_matches_central_differences_in_float64(name, params, definition):
    # Central difference of the float64 definition: truncation h^2 f''' / 6 ~ 1e-12 and
    # rounding ~ eps |f| / h ~ 1e-9 for h = 1e-6.
    h = 1e-6
    finite_difference = (definition(SMOOTH_GRID + h) - definition(SMOOTH_GRID - h)) / (2 * h)
    with jax.enable_x64(True):
        dphi = activations.derivative(activations.get(name, **params))
        derivative = dphi(jnp.asarray(SMOOTH_GRID))
        assert derivative.dtype == jnp.float64
    np.testing.assert_allclose(derivative, finite_difference, rtol=1e-7, atol=1e-8)


def _sigmoid_derivative(x):
    s = _sigmoid(x)
    return s * (1 - s)


def _elu_derivative(x):
    return np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0)))


# Closed-form derivatives away from the kinks (the relu convention at 0 is tested below).
CLOSED_FORM_DERIVATIVES = [
    ("tanh", lambda x: 1.0 - np.tanh(x) ** 2),
    ("sigmoid", _sigmoid_derivative),
    ("relu", lambda x: (x > 0).astype(np.float64)),
    ("linear", np.ones_like),
    ("identity", np.ones_like),
    ("erf", lambda x: 2.0 / math.sqrt(math.pi) * np.exp(-(x**2))),
    ("softplus", _sigmoid),
    ("silu", lambda x: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x)))),
    ("gelu", lambda x: special.ndtr(x) + x * np.exp(-(x**2) / 2) / math.sqrt(2.0 * math.pi)),
    ("softsign", lambda x: 1.0 / (1.0 + np.abs(x)) ** 2),
    ("elu", _elu_derivative),
    ("selu", lambda x: KLAMBAUER_SCALE * np.where(x > 0, 1.0, KLAMBAUER_ALPHA * np.exp(x))),
    ("leaky_relu", lambda x: np.where(x > 0, 1.0, 0.01)),
    ("hard_tanh", lambda x: (np.abs(x) < 1).astype(np.float64)),
]
# Closed forms hold everywhere but at the kinks, where the convention is checked below.
KINK_FREE_GRID = GRID[(np.abs(GRID) > 1e-6) & (np.abs(np.abs(GRID) - 1.0) > 1e-6)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("name", "closed_form"), CLOSED_FORM_DERIVATIVES)
def test_derivative_matches_closed_form(name, closed_form, dtype):
    # float32 runs under jax.jit, float64 eagerly.
    x = KINK_FREE_GRID.astype(dtype).astype(np.float64)
    dphi = activations.derivative(name)
    derivative = _evaluate(jax.jit(dphi) if dtype == "float32" else dphi, x, dtype)
    np.testing.assert_allclose(derivative, closed_form(x), **TOLERANCES[dtype])


def test_relu_derivative_at_zero_is_zero():
    # Documented convention, as in JAX and PyTorch.
    np.testing.assert_array_equal(
        activations.derivative("relu")(jnp.array([-1.0, -0.0, 0.0, 1.0])), [0.0, 0.0, 0.0, 1.0]
    )


def test_derivative_of_bound_and_custom_callables():
    x = jnp.asarray(KINK_FREE_GRID, jnp.float32)
    leaky = activations.derivative(activations.get("leaky_relu", negative_slope=0.2))
    np.testing.assert_allclose(leaky(x), np.where(KINK_FREE_GRID > 0, 1.0, 0.2), rtol=1e-6)
    cube = activations.derivative(lambda v: v**3)
    np.testing.assert_allclose(cube(x), 3.0 * KINK_FREE_GRID**2, rtol=1e-5)


def test_derivative_name_shape_and_integer_inputs():
    dphi = activations.derivative("tanh")
    assert dphi.__name__ == "d_tanh"
    x = jnp.zeros((3, 4))
    assert dphi(x).shape == (3, 4)
    relu_slope = activations.derivative("relu")(jnp.array([-2, 3]))
    assert jnp.issubdtype(relu_slope.dtype, jnp.floating)
    np.testing.assert_array_equal(relu_slope, [0.0, 1.0])


# ----------------------------------------------------------------------------- Gaussian moments


def _erf_second_moment(std):
    # E[erf(s z)^2] = (2 / pi) arcsin(2 s^2 / (1 + 2 s^2)) (Williams 1997).
    return 2.0 / np.pi * np.arcsin(2.0 * std**2 / (1.0 + 2.0 * std**2))


def _erf_second_moment_grad(std):
    u = 2.0 * std**2 / (1.0 + 2.0 * std**2)
    du = 4.0 * std / (1.0 + 2.0 * std**2) ** 2
    return 2.0 / np.pi * du / np.sqrt(1.0 - u**2)


# (function of the Gaussian argument, E[fn(s z)] as a function of s, its derivative in s)
GAUSSIAN_CASES = {
    "square": (lambda x: x**2, lambda s: s**2, lambda s: 2.0 * s),
    "relu_square": (lambda x: activations.relu(x) ** 2, lambda s: s**2 / 2, lambda s: s),
    "erf_square": (lambda x: activations.erf(x) ** 2, _erf_second_moment, _erf_second_moment_grad),
    "fourth": (lambda x: x**4, lambda s: 3.0 * s**4, lambda s: 12.0 * s**3),
    "cos": (jnp.cos, lambda s: np.exp(-(s**2) / 2), lambda s: -s * np.exp(-(s**2) / 2)),
    "exp": (jnp.exp, lambda s: np.exp(s**2 / 2), lambda s: s * np.exp(s**2 / 2)),
}
# 128-point Gauss-Hermite is accurate to float32 for these smooth integrands up to std 2; a
# saturating one such as erf(s z)^2 converges slowly beyond (relative error 4e-5 at s = 3).
STDS = [0.1, 0.5, 1.0, 1.5, 2.0]


@pytest.mark.parametrize("case", sorted(GAUSSIAN_CASES))
@pytest.mark.parametrize("std", STDS)
def test_gaussian_expectation_closed_forms(case, std):
    fn, expected, _ = GAUSSIAN_CASES[case]
    value = activations.gaussian_expectation(fn, std)
    assert value.shape == ()
    assert float(value) == pytest.approx(expected(std), rel=1e-5)


@pytest.mark.parametrize("case", ["square", "relu_square", "erf_square"])
def test_gaussian_expectation_under_jit(case):
    fn, expected, _ = GAUSSIAN_CASES[case]
    jitted = jax.jit(lambda s: activations.gaussian_expectation(fn, s))
    for std in STDS:
        assert float(jitted(std)) == pytest.approx(expected(std), rel=1e-5)


@pytest.mark.parametrize("case", ["square", "relu_square", "erf_square"])
@pytest.mark.parametrize("jit", [False, True])
def test_gaussian_expectation_array_of_stds(case, jit):
    fn, expected, _ = GAUSSIAN_CASES[case]
    expectation = lambda s: activations.gaussian_expectation(fn, s)
    if jit:
        expectation = jax.jit(expectation)
    for stds in (np.array(STDS), np.array(STDS).reshape(1, 5), np.array(STDS[:4]).reshape(2, 2)):
        values = expectation(jnp.asarray(stds))
        assert values.shape == stds.shape
        np.testing.assert_allclose(values, expected(stds), rtol=1e-5)


@pytest.mark.parametrize("case", ["square", "relu_square", "erf_square", "fourth", "cos"])
def test_gaussian_expectation_grad_in_std(case):
    fn, _, expected_grad = GAUSSIAN_CASES[case]
    grad = jax.grad(lambda s: activations.gaussian_expectation(fn, s))
    assert float(grad(0.5)) == pytest.approx(expected_grad(0.5), rel=1e-5, abs=1e-6)
    jitted_grad = jax.jit(grad)
    for std in STDS:
        assert float(jitted_grad(std)) == pytest.approx(expected_grad(std), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("num_points", [2, 16, 512])
def test_gaussian_expectation_any_order_is_exact_for_quadratics(num_points):
    # Any Gauss-Hermite order >= 2 integrates a quadratic exactly: E[(2 z)^2 + 1] = 5. The
    # docstring sets no upper limit on the order, so a high one must work too.
    value = activations.gaussian_expectation(lambda x: x**2 + 1.0, 2.0, num_points=num_points)
    assert float(value) == pytest.approx(5.0, rel=1e-5)


def test_gaussian_expectation_float64():
    with jax.enable_x64(True):
        value = activations.gaussian_expectation(activations.erf, 1.0)
        assert value.dtype == jnp.float64
        second_moment = activations.gaussian_expectation(lambda x: activations.erf(x) ** 2, 1.0)
    assert float(value) == pytest.approx(0.0, abs=1e-15)  # erf is odd
    assert float(second_moment) == pytest.approx(2.0 / math.pi * math.asin(2.0 / 3.0), rel=1e-12)


@pytest.mark.parametrize(
    "num_points", [1, 0, 2.0, activations.MAX_QUADRATURE_POINTS + 1, 100_000, 10**12]
)
def test_gaussian_expectation_bad_num_points(num_points):
    """100000 points used to start a 75 GiB eigendecomposition: refused at once, naming the
    documented maximum."""
    with pytest.raises(ValueError, match=re.escape(repr(num_points))) as excinfo:
        activations.gaussian_expectation(jnp.square, 1.0, num_points=num_points)
    assert f"[2, {activations.MAX_QUADRATURE_POINTS}]" in str(excinfo.value)


def test_hermite_nodes_at_a_large_order_still_integrate_exactly():
    """The one-matrix Golub-Welsch build gives the same rule: 1024 points against E[z^2k]."""
    nodes, weights = activations.hermite_nodes(1024)
    assert nodes.shape == weights.shape == (1024,)
    assert np.sum(weights) == pytest.approx(1.0, rel=1e-12)
    for k, double_factorial in [(1, 1.0), (2, 3.0), (5, 945.0)]:
        assert np.sum(weights * nodes ** (2 * k)) == pytest.approx(double_factorial, rel=1e-10)


def test_hermite_nodes_integrate_polynomials_exactly():
    nodes, weights = activations.hermite_nodes(16)
    # Gauss-Hermite with n points is exact up to degree 2n - 1: E[z^2k] = (2k - 1)!!.
    for k, double_factorial in [(0, 1.0), (1, 1.0), (2, 3.0), (3, 15.0), (4, 105.0)]:
        assert np.sum(weights * nodes ** (2 * k)) == pytest.approx(double_factorial, rel=1e-12)
    assert np.sum(weights * nodes**3) == pytest.approx(0.0, abs=1e-12)
    assert not np.any(nodes == 0)  # an even order puts no node on the kink of relu


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("linear", {}),
        ("sigmoid", {}),
        ("tanh", {}),
        ("relu", {}),
        ("leaky_relu", {"negative_slope": 0.2}),
        ("elu", {"alpha": 0.5}),
        ("selu", {}),
        ("softplus", {}),
        ("softsign", {}),
        ("hard_tanh", {}),
        ("erf", {}),
    ],
)
def test_derivative_from_output_equals_the_derivative_at_the_preactivation(name, params):
    """phi'(z) read off a = phi(z) (what a layer receives), against autodiff at z, on a grid
    that avoids the kinks (at a kink the two sides differ by definition)."""
    z = np.linspace(-4, 4, 801)
    z = z[(np.abs(z) > 1e-2) & (np.abs(np.abs(z) - 1) > 1e-2)]
    phi = activations.get(name, **params)
    dphi = activations.derivative_from_output(phi if params else name)
    expected = activations.derivative(phi)(jnp.asarray(z, jnp.float32))
    np.testing.assert_allclose(dphi(phi(jnp.asarray(z, jnp.float32))), expected, atol=2e-6)


def test_derivative_from_output_is_none_where_phi_cannot_be_inverted():
    for name in ("gelu", "silu", "mish"):
        assert activations.derivative_from_output(name) is None
    assert activations.derivative_from_output(jnp.sin) is None


# ----------------------------------------------------------------------------- kinks

# (activation, kink, derivative there as PyTorch defines it)
KINK_DERIVATIVES = [
    (activations.get("relu"), 0.0, 0.0),
    (activations.get("leaky_relu"), 0.0, 0.01),
    (activations.get("leaky_relu", negative_slope=0.2), 0.0, 0.2),
    (activations.get("rrelu", deterministic=True), 0.0, (1 / 8 + 1 / 3) / 2),
    (activations.get("elu"), 0.0, 1.0),  # alpha = 1: differentiable, the true derivative
    (activations.get("elu", alpha=0.5), 0.0, 0.5),  # the left derivative, alpha
    (activations.get("selu"), 0.0, KLAMBAUER_SCALE * KLAMBAUER_ALPHA),  # 1.7581
    (activations.get("softsign"), 0.0, 1.0),
    (activations.get("hard_tanh"), -1.0, 0.0),
    (activations.get("hard_tanh"), 1.0, 0.0),
]
KINK_IDS = [
    f"{activations.name_of(phi)}{getattr(phi, 'keywords', '')}@{x}"
    for phi, x, _ in KINK_DERIVATIVES
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("phi", "kink", "expected"), KINK_DERIVATIVES, ids=KINK_IDS)
def test_derivative_at_every_kink_follows_pytorch(phi, kink, expected, dtype):
    """elu with alpha = 1 gave 0.5 at 0 (minimum(x, 0) splits its tie), selu 0.879 where
    PyTorch gives 1.758; hard_tanh gave 0.5 at +-1 where PyTorch gives 0."""
    got = _evaluate(activations.derivative(phi), np.array([kink]), dtype)
    tolerance = TOLERANCES[dtype]["rtol"]
    assert got[0] == pytest.approx(expected, rel=tolerance, abs=tolerance)
    under_jit = jax.jit(activations.derivative(phi))(jnp.asarray([kink], jnp.float32))
    assert float(under_jit[0]) == pytest.approx(expected, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize(
    ("phi", "kink", "expected"),
    [case for case in KINK_DERIVATIVES if activations.name_of(case[0]) != "rrelu"],
)
def test_derivative_from_output_agrees_at_the_kinks(phi, kink, expected):
    """What a layer reads off a = phi(z) is the derivative at z, kinks included."""
    from_output = activations.derivative_from_output(phi)
    a = phi(jnp.asarray([kink], jnp.float32))
    assert float(from_output(a)[0]) == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_derivatives_beside_the_kinks_are_the_one_sided_limits():
    x = jnp.asarray([-1e-6, 1e-6], jnp.float32)
    np.testing.assert_allclose(activations.derivative("selu")(x), [1.7580993, 1.0507010], 1e-5)
    np.testing.assert_allclose(activations.derivative("elu")(x), [1.0, 1.0], 1e-5)
    y = jnp.asarray([-1 - 1e-6, -1 + 1e-6, 1 - 1e-6, 1 + 1e-6], jnp.float32)
    np.testing.assert_array_equal(activations.derivative("hard_tanh")(y), [0, 1, 1, 0])


# ----------------------------------------------------------------------------- breakpoints


def test_breakpoints_of_the_registry():
    expected = {"relu": (0.0,), "leaky_relu": (0.0,), "elu": (0.0,), "selu": (0.0,),
                "softsign": (0.0,), "hard_tanh": (-1.0, 1.0), "rrelu": (0.0,)}  # fmt: skip
    for name in activations.names():
        assert activations.breakpoints(name) == expected.get(name, ())
    assert activations.breakpoints("hardtanh") == (-1.0, 1.0)
    assert activations.breakpoints(activations.get("leaky_relu", negative_slope=0.3)) == (0.0,)
    assert activations.breakpoints(activations.derivative("hard_tanh")) == (-1.0, 1.0)
    assert activations.breakpoints(lambda x: x) == ()  # a callable is smooth by default


def test_breakpoints_declared_by_a_callable():
    def shifted(x):
        return activations.relu(x + 0.3)

    shifted.breakpoints = [0.5, np.float32(-0.3), 0.5]
    assert activations.breakpoints(shifted) == (pytest.approx(-0.3), 0.5)
    assert activations.breakpoints(activations.derivative(shifted))[1] == 0.5


@pytest.mark.parametrize(
    ("declared", "error", "match"),
    [
        ("0", TypeError, "must be a tuple of real numbers, got '0'"),
        (0.5, TypeError, "must be a tuple of real numbers, got 0.5"),
        ((0.0, "1"), TypeError, "must be real numbers, got '1'"),
        ((True,), TypeError, "must be real numbers, got True"),
        ((math.inf,), ValueError, "must be finite, got inf"),
    ],
)
def test_bad_breakpoints_are_refused(declared, error, match):
    def phi(x):
        return x

    phi.breakpoints = declared
    with pytest.raises(error, match=re.escape(match)):
        activations.breakpoints(phi)


# ----------------------------------------------------------------------------- exact moments

Q_RANGE = [1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4]


def _closed_form_moments(name, q):
    """(E[phi(u)^2], E[phi'(u)^2]) for u ~ N(0, q), in closed form, float64."""
    s = math.sqrt(q)
    if name == "relu":
        return q / 2, 0.5
    if name == "leaky_relu":
        return (1 + 0.01**2) * q / 2, (1 + 0.01**2) / 2
    if name == "linear":
        return q, 1.0
    if name == "erf":  # Williams 1997
        return 2 / math.pi * math.asin(2 * q / (1 + 2 * q)), 4 / math.pi / math.sqrt(1 + 4 * q)
    if name == "hard_tanh":  # P(|u| < 1) and E[u^2; |u| < 1] = q (P(|z| < a) - 2 a pdf(a))
        a = 1 / s
        inside = special.erf(a / math.sqrt(2))
        pdf = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
        return q * (inside - 2 * a * pdf) + special.erfc(a / math.sqrt(2)), inside
    # elu and selu: E[exp(k u); u < 0] = exp(k^2 q / 2) Phi(-k s) = erfcx(k s / sqrt 2) / 2.
    alpha, scale = (1.0, 1.0) if name == "elu" else (KLAMBAUER_ALPHA, KLAMBAUER_SCALE)
    twice = special.erfcx(2 * s / math.sqrt(2)) / 2
    once = special.erfcx(s / math.sqrt(2)) / 2
    second = q / 2 + alpha**2 * (twice - 2 * once + 0.5)
    return scale**2 * second, scale**2 * (0.5 + alpha**2 * twice)


@pytest.mark.parametrize("q", Q_RANGE)
@pytest.mark.parametrize(
    "name", ["relu", "leaky_relu", "linear", "erf", "hard_tanh", "elu", "selu"]
)
def test_moments_match_closed_forms_to_float64_rounding(name, q):
    """The split rule against exact moments: 1e-12 relative (hard_tanh's kinks at +-1 were
    0.7% off with the sinh-mapped midpoint rule; selu's E[phi'^2] 1.5e-5 low)."""
    second, slope = _closed_form_moments(name, q)
    with jax.enable_x64(True):
        phi = activations.get(name)
        dphi = activations.derivative(phi)
        points = activations.breakpoints(phi)
        got_second, got_slope = (
            activations.gaussian_expectation(fn, math.sqrt(q), breakpoints=points)
            for fn in (lambda u: phi(u) ** 2, lambda u: dphi(u) ** 2)
        )
    assert float(got_second) == pytest.approx(second, rel=1e-12)
    assert float(got_slope) == pytest.approx(slope, rel=1e-12)


def _mp_activation(name):
    """phi and phi' as mpmath functions (closed-form derivatives)."""
    import mpmath as mp

    sigmoid = lambda x: 1 / (1 + mp.exp(-x))
    sp = lambda x: mp.log1p(mp.exp(x))
    table = {
        "tanh": (mp.tanh, lambda x: 1 / mp.cosh(x) ** 2),
        "sigmoid": (sigmoid, lambda x: sigmoid(x) * (1 - sigmoid(x))),
        "gelu": (lambda x: x * mp.ncdf(x), lambda x: mp.ncdf(x) + x * mp.npdf(x)),
        "silu": (lambda x: x * sigmoid(x), lambda x: sigmoid(x) * (1 + x * (1 - sigmoid(x)))),
        "softplus": (sp, sigmoid),
        "softsign": (lambda x: x / (1 + abs(x)), lambda x: 1 / (1 + abs(x)) ** 2),
        "mish": (
            lambda x: x * mp.tanh(sp(x)),
            lambda x: mp.tanh(sp(x)) + x * sigmoid(x) / mp.cosh(sp(x)) ** 2,
        ),
    }
    return table[name]


MPMATH_REFERENCES: dict = {}


def _mp_moments(name, q):
    """(E[phi^2], E[phi'^2]) at length q by mpmath's tanh-sinh quadrature, 25 digits, split
    at 0, at the activation's scale and at the Gaussian's."""
    import mpmath as mp

    if (name, q) not in MPMATH_REFERENCES:
        mp.mp.dps = 25
        phi, dphi = _mp_activation(name)
        s = mp.sqrt(q)
        cuts = {0, *[k * s for k in (-12, -4, -1, 1, 4, 12)]}
        cuts |= {k for k in (-8, -2, -0.5, 0.5, 2, 8) if abs(k) < 12 * s}
        cuts = sorted(cuts)
        density = lambda u: mp.exp(-u * u / (2 * q)) / mp.sqrt(2 * mp.pi * q)
        MPMATH_REFERENCES[name, q] = (
            float(mp.quad(lambda u: phi(u) ** 2 * density(u), cuts)),
            float(mp.quad(lambda u: dphi(u) ** 2 * density(u), cuts)),
        )
    return MPMATH_REFERENCES[name, q]


@pytest.mark.parametrize("q", [1e-3, 0.1, 1.0, 10.0, 1e3, 1e4])
@pytest.mark.parametrize(
    "name", ["tanh", "sigmoid", "gelu", "silu", "softplus", "softsign", "mish"]
)
def test_moments_match_mpmath_to_float64_rounding(name, q):
    """Every smooth registry activation (and softsign, kinked in phi'') against 25-digit
    mpmath: 1e-12 relative; erf's E[phi'^2] was off by 3e-4 at q = 1e4 with Gauss-Hermite."""
    second, slope = _mp_moments(name, q)
    with jax.enable_x64(True):
        phi = activations.get(name)
        dphi = activations.derivative(phi)
        points = activations.breakpoints(phi)
        got = [
            float(activations.gaussian_expectation(fn, math.sqrt(q), breakpoints=points))
            for fn in (lambda u: phi(u) ** 2, lambda u: dphi(u) ** 2)
        ]
    assert got[0] == pytest.approx(second, rel=1e-12)
    assert got[1] == pytest.approx(slope, rel=1e-12)


def test_split_rule_integrates_the_gaussian_and_its_moments():
    with jax.enable_x64(True):
        centers = jnp.asarray([-3.0, 0.0, 0.4])
        z, w = activations.split_rule(centers, jnp.asarray([0.01, 1.0, 0.1]))
        assert z.shape == w.shape == (activations.rule_size(3),)
        total = float(jnp.sum(w))
        assert total == pytest.approx(math.sqrt(2 * math.pi), rel=1e-14)
        # E[z^8] also loses 1e-13 beyond the cutoff |z| = 9.
        for k, double_factorial in [(1, 1.0), (2, 3.0), (4, 105.0)]:
            moment = float(jnp.sum(w * z ** (2 * k))) / total
            assert moment == pytest.approx(double_factorial, rel=1e-12)
        assert np.all(np.diff(np.sort(np.asarray(z))) >= 0)


def test_an_undeclared_kink_costs_accuracy_a_declared_one_none():
    """hard_tanh(x)^2 as a lambda hides its kinks: about 2e-4 off at std 2; declared, exact."""
    expected = _closed_form_moments("hard_tanh", 4.0)[0]
    with jax.enable_x64(True):
        fn = lambda u: activations.hard_tanh(u) ** 2
        hidden = float(activations.gaussian_expectation(fn, 2.0))
        declared = float(activations.gaussian_expectation(fn, 2.0, breakpoints=(-1, 1)))
    assert declared == pytest.approx(expected, rel=1e-13)
    assert abs(hidden / expected - 1) > 1e-5
