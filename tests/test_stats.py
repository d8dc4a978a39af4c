"""Tests for the robust reductions every front end uses, against float64 numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgrad.stats import reductions as stats

SCALES = [1e-36, 1e-30, 1e-20, 1e-5, 1.0, 1e10, 1e19, 1e30, 1e36]


def base_values(shape=(16, 400), seed=3):
    return np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float64)


@pytest.mark.parametrize("scale", SCALES)
def test_norm_and_std_hold_at_every_scale(scale):
    """The one-pass norm and the two-pass std against float64, from values whose squares
    flush to zero in float32 (1e-36) to values whose squares overflow it (1e36)."""
    values = (base_values() * scale).astype(np.float32)
    exact = values.astype(np.float64)
    norm = float(jax.jit(stats.norm)(jnp.asarray(values)))
    np.testing.assert_allclose(norm, np.linalg.norm(exact), rtol=1e-5)
    # An offset up to a thousand times the spread: the centred second pass must not cancel.
    shifted = (values + np.float32(min(1000 * scale, 1e37))).astype(np.float32)
    mean, std = jax.jit(stats.mean_std)(jnp.asarray(shifted))
    np.testing.assert_allclose(float(mean), shifted.astype(np.float64).mean(), rtol=1e-6)
    np.testing.assert_allclose(float(std), shifted.astype(np.float64).std(), rtol=1e-4)


@pytest.mark.parametrize(
    ("bad", "norm_is"), [(np.inf, np.isposinf), (-np.inf, np.isposinf), (np.nan, np.isnan)]
)
def test_norm_and_mean_report_nonfinite_values(bad, norm_is):
    """An inf or nan among finite values makes the norm inf (nan) and the mean non-finite,
    which is how the probe's `first_nonfinite_layer` finds it."""
    values = np.ones((16, 400), np.float32)
    values[3, 7] = bad
    assert norm_is(float(jax.jit(stats.norm)(jnp.asarray(values))))
    mean, _ = jax.jit(stats.mean_std)(jnp.asarray(values))
    assert not np.isfinite(float(mean))
    huge = np.full((16, 400), np.finfo(np.float32).max / 2, np.float32)
    mean, std = jax.jit(stats.mean_std)(jnp.asarray(huge))
    assert np.isfinite(float(mean))
    assert float(std) <= 1e-6 * float(huge[0, 0])  # zero up to the rounding of the mean


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.int32])
def test_low_precision_values_are_accumulated_in_float32(dtype):
    """A 400 x 400 N(0, 1) kernel in float16 has entries far inside float16's range, but
    the sum of its squares (about 160000) is beyond it: the norm is taken in float32."""
    values = jnp.asarray(base_values((400, 400)) * (3 if dtype == jnp.int32 else 1), dtype)
    exact = np.asarray(values.astype(jnp.float32), np.float64)
    norm = stats.norm(values)
    assert norm.dtype == jnp.float32
    np.testing.assert_allclose(float(norm), np.linalg.norm(exact), rtol=1e-5)
    mean, std = stats.mean_std(values)
    assert mean.dtype == std.dtype == jnp.float32
    np.testing.assert_allclose(float(std), exact.std(), rtol=1e-4)
    np.testing.assert_allclose(float(mean), exact.mean(), atol=1e-5)


def test_axis_keepdims_and_rms():
    values = base_values((3, 5, 7)) * 1e25
    got = stats.norm(jnp.asarray(values, jnp.float32), axis=(0, 2), keepdims=True)
    assert got.shape == (1, 5, 1)
    expected = np.sqrt(np.sum(values**2, axis=(0, 2), keepdims=True))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(
        stats.rms(jnp.asarray(values, jnp.float32), axis=-1),
        np.sqrt(np.mean(values**2, axis=-1)),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        stats.norm(jnp.ones((2, 2, 2)), axis=3)


def test_global_norm_of_a_pytree_with_huge_and_low_precision_leaves():
    tree = {
        "a": jnp.full((1000,), 1e20, jnp.float32),
        "b": jnp.full((10,), 100.0, jnp.float16),
        "c": [jnp.full((2, 3), 3e19, jnp.float32)],
    }
    expected = np.sqrt(1000 * 1e40 + 10 * 1e4 + 6 * 9e38)
    for one_pass in (False, True):  # the one-pass sum overflows here: its fallback runs
        got = jax.jit(lambda t, p=one_pass: stats.global_norm(t, one_pass=p))(tree)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    assert float(stats.global_norm({})) == 0.0


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1.0, 1e15, 1e30])
def test_one_pass_global_norm_against_float64_at_every_scale(scale):
    """Moderate scales keep the plain sum; tiny ones (squares flushed to zero) and huge ones
    (squares overflowing) take the norm of norms; inf and nan stay inf and nan."""
    tree = {
        "w": jnp.asarray(base_values((8, 50)) * scale, jnp.float32),
        "b": [jnp.asarray(base_values((1, 7))[0] * scale, jnp.float32)],
    }
    exact = np.sqrt(sum(np.sum(np.asarray(v, np.float64) ** 2) for v in jax.tree.leaves(tree)))
    got = jax.jit(lambda t: stats.global_norm(t, one_pass=True))(tree)
    np.testing.assert_allclose(float(got), exact, rtol=1e-5)
    for bad, expected in ((jnp.inf, np.inf), (jnp.nan, np.nan)):
        broken = {**tree, "w": tree["w"].at[0, 0].set(bad)}
        got = float(stats.global_norm(broken, one_pass=True))
        assert got == expected or (np.isnan(expected) and np.isnan(got))


def test_power_of_two_scaling_is_exact_over_the_whole_exponent_range():
    exponents = jnp.arange(-127, 127, dtype=jnp.int32)
    got = np.asarray(jax.jit(stats.scale_by_pow2)(jnp.ones(exponents.shape), exponents))
    np.testing.assert_array_equal(got, np.ldexp(np.float32(1), -np.arange(-127, 127)))


@pytest.mark.parametrize("largest", [5e-38, 1e-30, 0.75, 1.0, 3e5, 1e30, 3e38])
def test_pow2_exponent_brings_the_largest_magnitude_near_one(largest):
    # (XLA on CPU flushes subnormal inputs to zero, so the smallest case is a normal number)
    values = np.array([largest, -largest / 4, 0.0], np.float32)
    scaled, exponent = stats.scaled(jnp.asarray(values))
    top = float(np.max(np.abs(np.asarray(scaled))))
    if largest > 2.0**126:  # the exponent is clamped to keep 2**-e a normal number
        assert 1 <= top < 4
    else:
        assert 0.5 <= top < 1
    np.testing.assert_array_equal(
        np.ldexp(np.asarray(scaled, np.float64), int(exponent)), values.astype(np.float64)
    )


@pytest.mark.parametrize("special", [0.0, np.inf, np.nan])
def test_pow2_exponent_is_zero_where_scaling_cannot_help(special):
    values = jnp.array([special, special])
    assert int(stats.pow2_exponent(values)) == 0


@pytest.mark.parametrize("rows", [4, 40])  # the Gram route (4 < 30) and the product route
@pytest.mark.parametrize("scale", [1e-30, 1e-10, 1.0, 1e10, 1e15, 1e19, 1e25])
def test_product_norm_against_float64(rows, scale):
    """||L^T R||_F stays finite and right wherever it is below float32's largest number,
    where the naive Gram form overflowed once ||L|| ||R|| passed about 1e19."""
    left = base_values((rows, 30), seed=1) * scale
    right = base_values((rows, 50), seed=2) * scale
    expected = np.linalg.norm(left.T @ right)
    got = jax.jit(stats.product_norm)(
        jnp.asarray(left, jnp.float32), jnp.asarray(right, jnp.float32)
    )
    if expected > np.finfo(np.float32).max:
        assert np.isposinf(float(got))
    elif expected < np.finfo(np.float32).tiny:
        assert float(got) == pytest.approx(expected, abs=float(np.finfo(np.float32).tiny))
    else:
        np.testing.assert_allclose(float(got), expected, rtol=1e-4)


def test_product_norm_of_float16_operands_accumulates_in_float32():
    left = jnp.asarray(base_values((8, 300), seed=1) * 200, jnp.float16)
    right = jnp.asarray(base_values((8, 300), seed=2) * 200, jnp.float16)
    exact = np.asarray(left, np.float64).T @ np.asarray(right, np.float64)
    got = stats.product_norm(left, right)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), np.linalg.norm(exact), rtol=1e-4)


def test_moments_against_numpy_and_with_nonfinite_values():
    values = base_values((8, 30)) * 1e20
    got = jax.jit(stats.moments)(jnp.asarray(values, jnp.float32))
    np.testing.assert_allclose(float(got.mean), values.mean(), rtol=1e-4, atol=1e14)
    np.testing.assert_allclose(float(got.std), values.std(), rtol=1e-5)
    np.testing.assert_allclose(float(got.rms), np.sqrt(np.mean(values**2)), rtol=1e-5)
    np.testing.assert_allclose(float(got.max_abs), np.abs(values).max(), rtol=1e-6)
    assert not got.nonfinite
    values = base_values((8, 30))
    values[0, :3] = [np.inf, -np.inf, np.nan]
    got = stats.moments(jnp.asarray(values, jnp.float16))
    assert got.nonfinite
    assert got.std.dtype == jnp.float32
    assert np.isnan(float(got.mean))


def test_dead_and_saturated_fractions_count_units_and_values():
    # 4 examples x 3 positions x 5 channels; channels 1 and 3 zero everywhere
    values = np.asarray(base_values((4, 3, 5)), np.float32)
    values[..., [1, 3]] = 0.0
    values[0, 0, 0] = 0.0  # a zero entry does not make a unit dead
    assert float(stats.dead_fraction(jnp.asarray(values))) == pytest.approx(2 / 5)
    derivatives = jnp.array([0.0, 0.009, 0.01, 0.5, -0.001, 1.0])
    assert float(stats.saturated_fraction(derivatives, 0.01)) == pytest.approx(3 / 6)


@pytest.mark.parametrize("scale", SCALES)
def test_one_pass_norm_equals_the_two_pass_norm_at_every_scale(scale):
    """The one-pass sum of squares is kept only where it is a safe normal number; elsewhere
    (squares that overflow or flush to zero) the scaled two-pass form runs."""
    values = jnp.asarray(base_values((16, 400)) * scale, jnp.float32)
    exact = np.linalg.norm(np.asarray(values, np.float64), axis=1)
    for one_pass in (False, True):
        got = jax.jit(lambda v, p=one_pass: stats.norm(v, axis=1, one_pass=p))(values)
        np.testing.assert_allclose(got, exact, rtol=1e-5)
