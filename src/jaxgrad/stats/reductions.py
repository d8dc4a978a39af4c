"""Robust reductions: the one set of norms, means and stds that every jaxgrad front end uses.

A statistic must be finite whenever the values it summarizes are, and must not lose the
values it summarizes to the dtype. The naive sum of squares fails both ways long before the
values do: in float32 it overflows once the values pass about 1.8e19 / sqrt(n) (n values)
and squares below about 1e-19 flush to zero; in float16 it overflows at 256 and its sums of
thousands of terms lose every digit. So:

- every reduction accumulates in `accumulation_dtype(dtype)`: float32 at least (float64 for
  float64 values), whatever the values' dtype (float16, bfloat16, integers);
- a sum of squares is taken of the values scaled by the power of two that brings the
  largest magnitude near 1, and the root scaled back (`root_sum_squares`);
- a product whose norm is wanted (||x^T d||_F, the norm of a weight gradient) is taken of
  operands scaled by powers of two to a largest magnitude near 1 (`pow2_exponent`), and the
  exponents are given back afterwards with `jnp.ldexp`, so the result is inf only when the
  norm itself is beyond the dtype.

With inf or nan among the values every statistic is inf or nan, never a silently finite
number: non-finite values are results, recorded where they appear.

Example:
    >>> import jax.numpy as jnp
    >>> from jaxgrad import stats
    >>> big = jnp.full((1000,), 1e20, jnp.float32)
    >>> float(jnp.sqrt(jnp.sum(jnp.square(big))))  # the naive norm overflows
    inf
    >>> round(float(stats.norm(big)) / 1e20 / 1000**0.5, 4)  # the robust one does not
    1.0

References:
    Blue 1978, "A Portable Fortran Program to Find the Euclidean Norm of a Vector" (norms
    by scaled sums of squares); Higham 2002, "Accuracy and Stability of Numerical
    Algorithms", section 4 (summation in a wider format).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

Axis = int | Sequence[int] | None


def accumulation_dtype(dtype: DTypeLike) -> jnp.dtype:
    """The dtype statistics of `dtype` values are accumulated and returned in: float32 at
    least, float64 for float64 values (and complex values' real counterpart).

    Args:
        dtype: the values' dtype.

    Returns:
        The accumulation dtype, a `jnp.dtype`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import stats
        >>> str(stats.accumulation_dtype(jnp.bfloat16)), str(stats.accumulation_dtype(jnp.int8))
        ('float32', 'float32')
    """
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        dtype = jnp.finfo(dtype).dtype
    return jnp.promote_types(dtype, jnp.float32) if dtype != jnp.float64 else dtype


def _as_accumulated(values: ArrayLike) -> jax.Array:
    values = jnp.asarray(values)
    if jnp.issubdtype(values.dtype, jnp.complexfloating):
        values = jnp.abs(values)
    return values.astype(accumulation_dtype(values.dtype))


def _axes(ndim: int, axis: Axis) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for an array with {ndim} dimensions")
    return tuple(sorted({a % max(ndim, 1) for a in axes}))


def root_sum_squares(
    values: ArrayLike,
    axis: Axis = None,
    *,
    divisor: float = 1,
    keepdims: bool = False,
    one_pass: bool = False,
) -> jax.Array:
    """sqrt(sum(values**2) / divisor) over `axis`, finite as long as the values are.

    Two passes: the largest magnitude over `axis`, then the sum of the squares of the values
    scaled (in `accumulation_dtype`) by the power of two that brings that magnitude into
    [0.5, 1) (`pow2_exponent`, exact), whose root is scaled back with `jnp.ldexp`. No square
    can overflow, and what flushes to zero is below 2**-126 of the largest square:
    negligible. With inf or nan among the values the result is inf or nan. The result is
    inf only when the root itself is beyond the dtype.

    Args:
        values: any real (or complex: their moduli) array.
        axis: the axes to reduce; None for all.
        divisor: the sum of squares is divided by this before the root (the count, for an
            RMS).
        keepdims: keep the reduced axes with size 1.
        one_pass: first sum the squares as they are, and keep that sum where it is finite
            and at least sqrt(tiny) of the dtype (what flushed to zero is then below
            n * sqrt(tiny) of it: 1e-13 relative in float32 for a million values): one pass
            instead of two for moderate values. The two-pass form runs only where that check
            fails (`jax.lax.cond`: under `jax.vmap` both run, so leave it off there).

    Returns:
        The root, in `accumulation_dtype(values.dtype)`.

    Raises:
        ValueError: an axis out of range.

    Example:
        >>> import jax.numpy as jnp
        >>> float(root_sum_squares(jnp.array([3.0, 4.0], jnp.float16)))
        5.0

    References:
        Blue 1978, "A Portable Fortran Program to Find the Euclidean Norm of a Vector".
    """
    # Three sums at three fixed scales, the form this replaced, cost three passes: XLA's
    # CPU backend runs sibling reductions one after the other; the two-pass form made
    # `jaxgrad.propagate` about 12% faster at the seed's shape.
    values = _as_accumulated(values)
    axes = _axes(values.ndim, axis)

    def scaled_root():
        exponent = pow2_exponent(values, axes, keepdims=True)
        total = jnp.sum(jnp.square(scale_by_pow2(values, exponent)), axis=axes, keepdims=True)
        return jnp.ldexp(jnp.sqrt(total / divisor), exponent)

    if one_pass:
        plain = jnp.sum(jnp.square(values), axis=axes, keepdims=True)
        moderate = _moderate(plain)
        root = jax.lax.cond(jnp.all(moderate), lambda: jnp.sqrt(plain / divisor), scaled_root)
    else:
        root = scaled_root()
    return root if keepdims else jnp.squeeze(root, axes)


def norm(
    values: ArrayLike, axis: Axis = None, *, keepdims: bool = False, one_pass: bool = False
) -> jax.Array:
    """The 2-norm (Frobenius for matrices) over `axis`: `root_sum_squares` with divisor 1.

    Args:
        values: any real (or complex: their moduli) array.
        axis: the axes to reduce (an int, a sequence of ints); None for all.
        keepdims: keep the reduced axes with size 1.
        one_pass: try the plain sum of squares first (see `root_sum_squares`).

    Returns:
        The norm, in `accumulation_dtype(values.dtype)`; finite as long as the values are.

    Raises:
        ValueError: an axis out of range.

    Example:
        >>> import jax.numpy as jnp
        >>> norm(jnp.array([[3.0, 0.0], [4.0, 0.0]]), axis=0).tolist()
        [5.0, 0.0]
    """
    return root_sum_squares(values, axis, keepdims=keepdims, one_pass=one_pass)


def rms(values: ArrayLike, axis: Axis = None, *, keepdims: bool = False) -> jax.Array:
    """The root mean square over `axis` (nan for no values).

    Args:
        values: any real (or complex: their moduli) array.
        axis: the axes to reduce (an int, a sequence of ints); None for all.
        keepdims: keep the reduced axes with size 1.

    Returns:
        The root mean square, in `accumulation_dtype(values.dtype)`.

    Raises:
        ValueError: an axis out of range.

    Example:
        >>> import jax.numpy as jnp
        >>> float(rms(jnp.array([1.0, -1.0, 1.0, -1.0])))
        1.0
    """
    values = jnp.asarray(values)
    count = math.prod(values.shape[a] for a in _axes(values.ndim, axis))
    return root_sum_squares(values, axis, divisor=count if count else math.nan, keepdims=keepdims)


def mean_std(values: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """The mean and the (population) std of all the values, finite as long as they are.

    Two passes: the mean, each value divided by the count before the sum so that a finite
    sum cannot overflow, then `root_sum_squares` of the centred values. The mean is non-
    finite exactly when some value is, which makes it a cheap finiteness test.

    Args:
        values: any real (or complex: their moduli) array.

    Returns:
        (mean, std), scalars in `accumulation_dtype(values.dtype)`.

    Example:
        >>> import jax.numpy as jnp
        >>> [float(v) for v in mean_std(jnp.array([1.0, 3.0], jnp.bfloat16))]
        [2.0, 1.0]
    """
    values = _as_accumulated(values)
    mean = jnp.sum(values / values.size)
    return mean, root_sum_squares(values - mean, divisor=values.size)


def global_norm(tree: Any, *, one_pass: bool = False) -> jax.Array:
    """The 2-norm of every leaf of a pytree together, finite as long as the leaves are.

    The per-leaf norms are combined with `norm` again (a norm of norms), so no square of a
    large leaf is ever formed.

    Args:
        tree: a pytree of arrays (parameters, gradients, updates).
        one_pass: first add up the plain squares of every leaf, and keep that sum where it
            is finite and at least sqrt(tiny) (as `root_sum_squares`); only where that check
            fails, the norm of norms, in one `jax.lax.cond` for the whole tree: one pass over
            each leaf and one conditional per call, what a training step can afford every
            step (under `jax.vmap` both run: leave it off there).

    Returns:
        A scalar in the widest accumulation dtype of the leaves (float32 for an empty tree).

    Example:
        >>> import jax.numpy as jnp
        >>> float(global_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0], jnp.float16)}))
        5.0
        >>> huge = {"a": jnp.array([3e30]), "b": jnp.array([4e30])}  # squares overflow
        >>> round(float(global_norm(huge, one_pass=True)) / 1e30, 6)
        5.0
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    dtype = jnp.result_type(*(accumulation_dtype(jnp.result_type(leaf)) for leaf in leaves))

    def norm_of_norms():
        return norm(jnp.stack([norm(leaf).astype(dtype) for leaf in leaves]))

    if not one_pass:
        return norm_of_norms()
    plain = sum(jnp.sum(jnp.square(_as_accumulated(leaf).astype(dtype))) for leaf in leaves)
    return jax.lax.cond(_moderate(plain), lambda: jnp.sqrt(plain), norm_of_norms)


def _moderate(plain: jax.Array) -> jax.Array:
    """Where a plain sum of squares can be kept (`root_sum_squares`' one_pass): finite and at
    least sqrt(tiny), so that what flushed to zero is negligible beside it."""
    return jnp.isfinite(plain) & (plain >= math.sqrt(jnp.finfo(plain.dtype).tiny))


def pow2_exponent(values: ArrayLike, axis: Axis = None, *, keepdims: bool = False) -> jax.Array:
    """The int32 exponent e with max|values| over `axis` in [2**(e - 1), 2**e): the values
    times 2**-e have their largest magnitude in [0.5, 1).

    0 where every value is zero or some value is not finite (scaling cannot help then). The
    exponent is clamped so that 2**-e is a normal number of the accumulation dtype: to
    [-(maxexp - 1), -minexp], [-127, 126] for float32, so a largest magnitude among the
    subnormals scales to below 0.5 and one above 2**126 to below 4.

    Args:
        values: any real (or complex: their moduli) array.
        axis: the axes to reduce (an int, a sequence of ints); None for all.
        keepdims: keep the reduced axes with size 1.

    Returns:
        The exponent, an int32 array.

    Raises:
        ValueError: an axis out of range.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import stats
        >>> int(stats.pow2_exponent(jnp.array([3.0, -5.0])))  # 5 in [4, 8)
        3
    """
    values = _as_accumulated(values)
    axes = _axes(values.ndim, axis)
    if values.size:
        largest = jnp.max(jnp.abs(values), axis=axes, keepdims=keepdims)
    else:
        largest = jnp.zeros((), values.dtype)
    _, exponent = jnp.frexp(largest)
    info = jnp.finfo(values.dtype)
    exponent = jnp.clip(exponent, -(info.maxexp - 1), -info.minexp)
    usable = jnp.isfinite(largest) & (largest > 0)
    return jnp.where(usable, exponent, 0).astype(jnp.int32)


def scale_by_pow2(values: ArrayLike, exponent: ArrayLike) -> jax.Array:
    """values * 2**-exponent in the accumulation dtype: exact, for exponents from
    `pow2_exponent` (2**-exponent is then a normal number).

    Args:
        values: any real (or complex: their moduli) array.
        exponent: int exponents that broadcast against the values.

    Returns:
        The scaled values, in `accumulation_dtype(values.dtype)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import stats
        >>> stats.scale_by_pow2(jnp.array([3.0, -5.0]), 3).tolist()
        [0.375, -0.625]
    """
    values = _as_accumulated(values)
    info = jnp.finfo(values.dtype)
    bits = jnp.int64 if values.dtype.itemsize == 8 else jnp.int32
    biased = (info.maxexp - 1) - jnp.asarray(exponent).astype(bits)
    # 2**-exponent built from its bits: XLA's `exp2` is an approximation on CPU.
    factor = jax.lax.bitcast_convert_type(biased << info.nmant, values.dtype)
    return values * factor


def scaled(values: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """`(values * 2**-e, e)` with e = `pow2_exponent(values)`, in the accumulation dtype:
    the values with a largest magnitude in [0.5, 1) (exactly, a power-of-two scaling), and
    the exponent that gives them back.

    Args:
        values: any real (or complex: their moduli) array.

    Returns:
        (scaled values, int32 exponent).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import stats
        >>> mantissas, exponent = stats.scaled(jnp.array([3.0, -5.0]))
        >>> mantissas.tolist(), int(exponent)
        ([0.375, -0.625], 3)
    """
    exponent = pow2_exponent(values)
    return scale_by_pow2(values, exponent), exponent


def product_norm(left: ArrayLike, right: ArrayLike) -> jax.Array:
    """||left^T @ right||_F for left (n, a) and right (n, b), inf only when the norm itself
    is beyond the accumulation dtype.

    Computed as the norm of the product of the scaled operands (`scaled`), the exponents
    given back with `jnp.ldexp`. With n < min(a, b) it uses the identity
    ||L^T R||_F^2 = sum((L L^T) * (R R^T)): two n x n Gram matrices instead of an a x b
    product. With `left` a layer's inputs and `right` the gradient of the loss with respect
    to its outputs, this is the norm of the weight gradient, without forming it.

    Args:
        left: an (n, a) array.
        right: an (n, b) array.

    Returns:
        The Frobenius norm, a scalar in the accumulation dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> left, right = jnp.full((2, 3), 1e15), jnp.full((2, 4), 1e15)
        >>> round(float(product_norm(left, right)) / 1e30, 4)  # 12 entries of 2e30
        6.9282
    """
    left_scaled, left_exp = scaled(left)
    right_scaled, right_exp = scaled(right)
    return jnp.ldexp(_scaled_product_norm(left_scaled, right_scaled), left_exp + right_exp)


def gram(values: jax.Array) -> jax.Array:
    """values @ values.T of an already scaled (n, a) array, accumulated in its dtype.

    Args:
        values: an (n, a) array, scaled (see `scaled`) so that its products cannot overflow.

    Returns:
        The (n, n) Gram matrix.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import stats
        >>> stats.gram(jnp.array([[1.0, 2.0], [0.0, 1.0]])).tolist()
        [[5.0, 2.0], [2.0, 1.0]]
    """
    return jnp.matmul(values, values.T, preferred_element_type=values.dtype)


def _scaled_product_norm(left: jax.Array, right: jax.Array) -> jax.Array:
    rows = left.shape[0]
    if rows < min(left.shape[1], right.shape[1]):
        total = jnp.sum(gram(left) * gram(right))
        return jnp.sqrt(jnp.maximum(total, 0))
    return root_sum_squares(jnp.matmul(left.T, right, preferred_element_type=left.dtype))


class Moments(NamedTuple):
    """Summary of one array's values, in the accumulation dtype (scalars, or with leading
    axes under `jax.vmap`).

    Attributes:
        mean, std: over all values (`mean_std`).
        rms: root mean square (`rms`).
        max_abs: the largest magnitude.
        nonfinite: whether some value is inf or nan (bool; read off the mean and the
            largest magnitude, which are non-finite exactly then: a count would cost a pass
            of its own).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import stats
        >>> m = stats.moments(jnp.array([1.0, -1.0, 1.0, -1.0]))
        >>> float(m.mean), float(m.std), float(m.rms), bool(m.nonfinite)
        (0.0, 1.0, 1.0, False)
    """

    mean: jax.Array
    std: jax.Array
    rms: jax.Array
    max_abs: jax.Array
    nonfinite: jax.Array


_SHIFT_SAMPLE = 256  # values averaged for the shift of `moments`' one-pass variance


def _units(values: jax.Array) -> jax.Array:
    """The values as (positions, units): units are the last axis (one unit for a scalar)."""
    return values.reshape(-1, values.shape[-1] if values.ndim else 1)


def moments(values: ArrayLike) -> Moments:
    """`Moments` of all the values, in three passes over them: what jaxgrad reports of
    every signal it records (`inspect` records two arrays per module call).

    The passes: the largest magnitude of each unit (which also gives `dead_fraction`), the
    sum of the values about a shift s (the mean of the first 256 values), and the sum of
    the squares of the shifted values scaled by the power of two that brings the largest
    magnitude near 1, so no square overflows or flushes to zero (the scaling is exact).
    var = mean((x - s)^2) - (mean - s)^2 has a rounding error of about
    eps * (1 + (mean - s)^2 / var), and s is within about std / 16 of the mean unless the
    first values are outliers; rms = hypot(mean, std). Finite as long as the values are.

    Args:
        values: any real (or complex: their moduli) array.

    Returns:
        `Moments` of scalars in `accumulation_dtype(values.dtype)`; nan for no values.

    Example:
        >>> import jax.numpy as jnp
        >>> m = moments(jnp.array([3.0, -4.0, jnp.inf]))
        >>> float(m.max_abs), bool(m.nonfinite)
        (inf, True)
    """
    # XLA on CPU runs each full reduction as a pass of its own (it does not fuse sibling
    # reductions), so `mean_std` (two passes) and a count of non-finite values would cost
    # more: `nonfinite` is read off the mean and the largest magnitude instead.
    return _moments(_as_accumulated(values))[0]


def moments_and_dead_fraction(values: ArrayLike) -> tuple[Moments, jax.Array]:
    """`moments` and `dead_fraction` of the same values, sharing their first pass.

    Args:
        values: any real array whose last axis holds the units.

    Returns:
        (`Moments`, the dead fraction); the fraction is nan for no values.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import stats
        >>> m, dead = stats.moments_and_dead_fraction(jnp.array([[0.0, 2.0], [0.0, -2.0]]))
        >>> round(float(m.rms), 4), float(dead)
        (1.4142, 0.5)
    """
    moments, unit_max = _moments(_as_accumulated(values))
    dtype = moments.mean.dtype
    if unit_max is None:
        return moments, jnp.full((), jnp.nan, dtype)
    return moments, jnp.mean((unit_max == 0).astype(dtype))


def _moments(values: jax.Array) -> tuple[Moments, jax.Array | None]:
    if values.size == 0:
        nan = jnp.full((), jnp.nan, values.dtype)
        return Moments(nan, nan, nan, nan, jnp.zeros((), bool)), None
    unit_max = jnp.max(jnp.abs(_units(values)), axis=0)
    largest = jnp.max(unit_max)
    flat = values.reshape(-1)
    shift = jnp.mean(flat[: min(flat.size, _SHIFT_SAMPLE)])
    shift = jnp.where(jnp.isfinite(shift), shift, 0)
    centred = values - shift
    mean_offset = jnp.sum(centred) / values.size
    exponent = pow2_exponent(2 * largest)  # |x - s| <= 2 max|x|
    scaled_squares = jnp.sum(jnp.square(scale_by_pow2(centred, exponent)))
    spread = jnp.ldexp(jnp.sqrt(scaled_squares / values.size), exponent)
    ratio = jnp.minimum(jnp.abs(mean_offset) / jnp.where(spread > 0, spread, 1), 1)
    std = spread * jnp.sqrt((1 - ratio) * (1 + ratio))  # no square of spread: no overflow
    mean = shift + mean_offset
    nonfinite = ~(jnp.isfinite(largest) & jnp.isfinite(mean_offset))
    return Moments(mean, std, jnp.hypot(mean, std), largest, nonfinite), unit_max


def dead_fraction(values: ArrayLike) -> jax.Array:
    """The fraction of units (entries of the last axis: a dense layer's features, a JAX
    convolution's channels) that are exactly zero for every example and position.

    A ReLU unit that is zero on a whole batch passes no gradient to the weights before it:
    a dead unit.

    Args:
        values: a layer's outputs, units on the last axis (a scalar is one unit).

    Returns:
        The fraction, a scalar in the accumulation dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> float(dead_fraction(jnp.array([[0.0, 1.0, 0.0, 0.0], [0.0, 2.0, 3.0, 0.0]])))
        0.5

    References:
        Lu, Shin, Su and Karniadakis 2020, "Dying ReLU and Initialization: Theory and
        Numerical Examples".
    """
    values = jnp.asarray(values)
    dtype = accumulation_dtype(values.dtype)
    unit_max = jnp.max(jnp.abs(_units(values)), axis=0)  # faster than all(== 0) on XLA's CPU
    return jnp.mean((unit_max == 0).astype(dtype))


def saturated_fraction(derivatives: ArrayLike, threshold: float) -> jax.Array:
    """The fraction of values whose activation derivative |phi'| is below `threshold`.

    Args:
        derivatives: phi' at a layer's pre-activations.
        threshold: the |phi'| below which a unit counts as saturated (jaxgrad uses
            `SATURATION_THRESHOLD`, 0.01).

    Returns:
        The fraction, a scalar in the accumulation dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> float(saturated_fraction(jnp.array([1.0, 0.001, 0.5, 0.0]), 0.01))
        0.5

    References:
        Glorot and Bengio 2010, "Understanding the difficulty of training deep feedforward
        neural networks" (saturated sigmoid and tanh units).
    """
    derivatives = jnp.asarray(derivatives)
    dtype = accumulation_dtype(derivatives.dtype)
    return jnp.mean((jnp.abs(derivatives) < threshold).astype(dtype))


SATURATION_THRESHOLD = 0.01
"""A unit is saturated when |phi'| at its pre-activation is below this (tanh: |z| > 3.0,
|tanh(z)| > 0.995; sigmoid: |z| > 4.6). Glorot and Bengio 2010 saw sigmoid units of the
last hidden layer sit at 0 for most of training, where the derivative is near 0.25 * 0 and
the gradient vanishes."""
