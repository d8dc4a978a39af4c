"""Mean-field theory of signal propagation in wide random networks: order, chaos, isometry.

For a network z_l = W_l phi(z_{l-1}) + b_l with W_l ~ N(0, sigma_w2 / N) and
b_l ~ N(0, sigma_b2), in the limit of infinite width, the pre-activations are Gaussian with
a length q_l that follows the q-map

    q_l = sigma_w2 * E[phi(sqrt(q_{l-1}) z)^2] + sigma_b2,      z ~ N(0, 1),

to a fixed point q*, and the correlation c of two inputs of length q follows the c-map

    c_l = (sigma_w2 * E[phi(u_1) phi(u_2)] + sigma_b2) / (sigma_w2 * E[phi(u_1)^2] + sigma_b2),
    u_1 = sqrt(q) z_1,  u_2 = sqrt(q) (c z_1 + sqrt(1 - c^2) z_2),

whose denominator is q* at q = q* (`c_map`).

Its slope at c = 1, chi1 = sigma_w2 * E[phi'(sqrt(q*) z)^2], is also the factor by which the
mean squared gradient changes per layer: chi1 < 1 is the ordered phase (gradients vanish,
inputs collapse together), chi1 > 1 the chaotic phase (gradients explode, nearby inputs
decorrelate), chi1 = 1 the critical line, where depth scales diverge and, for a bounded
activation with small q*, orthogonal weights give dynamical isometry.

In jaxgrad's `nn.MLP` (h_l = phi(h_{l-1} W_l + b_l)) the pre-activation h_{l-1} W_l + b_l is
the z_l above, so `LayerStats.pre_std**2 + pre_mean**2` measures q_l; with N(0, 1) inputs
q_1 = sigma_w2 + sigma_b2. Weights `init.normal(sqrt(sigma_w2 / width))` and biases
`init.normal(sqrt(sigma_b2))` realize (sigma_w2, sigma_b2).

Every function but `phase` and `critical_point_for_q_star` takes arrays: its arguments
broadcast together (NumPy rules) and each entry is computed alone, one after another, by the
same compiled program as a scalar call, so a point's value never depends on the others
(`chi1("tanh", jnp.array([1.0, 2.0, 3.0]), 0.05)` has shape (3,)). They are jittable and
vmappable. Computations run in the default float dtype (float64 under `jax.enable_x64`).

Accuracy. Gaussian expectations split their integrals at the activation's breakpoints
(`jaxgrad.activations.breakpoints`: the registry's activations declare theirs, a callable
may) and resolve the activation's scale at any length: one-dimensional ones are
`jaxgrad.activations.gaussian_expectation`, two-dimensional ones (the c-map) are built from
the same rule (see `_expect_pair`). Against closed forms and 30-digit mpmath, for every
activation of the registry and q in `ACCURATE_Q_RANGE` = [1e-3, 1e4], the expectations,
q*, c*, chi1, the depth scales and the c-map are exact to float64 rounding (relative error
below 1e-12; 1e-13 typical); below 1e-3 accuracy is the same (the rule scales with q), above
1e4 it degrades slowly (erf' at q = 1e8: 6e-8, at 1e20: 2e-4; smooth activations with wider
features fare better). In float32 the error is float32 rounding. A callable with kinks it
does not declare is integrated as if smooth: about 1e-4 relative at a kink away from 0.

Concrete (not traced) arguments are checked when a function is called: variances and
lengths must be finite, >= 0 and at most `MAX_VARIANCE`, correlations in [-1, 1], and the
arguments' shapes must broadcast; anything else raises `ValueError`. Traced arguments
(under jit or vmap) cannot be checked and pass as they are.

References:
    Poole, Lahiri, Raghu, Sohl-Dickstein and Ganguli 2016, "Exponential expressivity in deep
    neural networks through transient chaos". Schoenholz, Gilmer, Ganguli and Sohl-Dickstein
    2017, "Deep Information Propagation" (eqs. 2-9: q* , c*, chi_1, xi_q, xi_c).
    Pennington, Schoenholz and Ganguli 2017, "Resurrecting the sigmoid in deep learning
    through dynamical isometry: theory and practice".
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxgrad import activations as _act

PHASE_TOLERANCE = 1e-3
"""|chi1 - 1| below this counts as critical in `phase`."""
MAX_VARIANCE = 1e18
"""The largest sigma_w2, sigma_b2, q or q* accepted. The quadrature covers lengths up to
1e20, and q* reaches about sigma_w2 * max phi^2 + sigma_b2, so this leaves a factor 100 for
phi^2: beyond it, q* of tanh would come out inf instead of about sigma_w2."""
ACCURATE_Q_RANGE = (1e-3, 1e4)
"""Lengths q over which expectations are checked against 30-digit references: relative
error below 1e-12 in float64 (for the registry's activations; see the module docstring)."""


# ----------------------------------------------------------------------------- validation


def _check_variance(name: str, value: ArrayLike) -> jax.Array:
    """Raise on a concrete negative, non-finite or too large variance; tracers pass through."""
    if not isinstance(value, jax.core.Tracer):
        array = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(array)) or np.any(array < 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if np.any(array > MAX_VARIANCE):
            raise ValueError(
                f"{name} must be at most {MAX_VARIANCE:g} (jaxgrad.theory.MAX_VARIANCE: the "
                f"quadrature covers lengths up to {_Q_CEILING:g}), got {value!r}"
            )
    return jnp.asarray(value, dtype=jnp.result_type(float))


def _check_correlation(value: ArrayLike) -> jax.Array:
    """Raise on a concrete correlation outside [-1, 1] (or nan); tracers pass through."""
    if not isinstance(value, jax.core.Tracer):
        array = np.asarray(value, dtype=np.float64)
        if not np.all((array >= -1) & (array <= 1)):
            raise ValueError(f"c is a correlation and must be in [-1, 1], got {value!r}")
    return jnp.asarray(value, dtype=jnp.result_type(float))


def _activation(activation: str | _act.Activation) -> _act.Activation:
    phi = _act.resolve(activation)
    _act.breakpoints(phi)  # a bad declaration is refused here, not inside a trace
    return phi


def _pointwise(kernel: Callable, *arrays: jax.Array):
    """kernel(*scalars) at every entry of the broadcast arrays, one point after another
    (`jax.lax.map`): each point runs the same program, so its value does not depend on the
    other points (a vmapped batch would change XLA's vectorization, and so its rounding),
    and its arrays stay small enough for the cache."""
    try:
        shape = jnp.broadcast_shapes(*(jnp.shape(a) for a in arrays))
    except ValueError:
        shapes = ", ".join(str(jnp.shape(a)) for a in arrays)
        raise ValueError(f"the arguments' shapes {shapes} do not broadcast together") from None
    flat = [jnp.broadcast_to(a, shape).reshape(-1) for a in arrays]
    result = jax.lax.map(lambda point: kernel(*point), flat)
    return jax.tree.map(lambda value: value.reshape(shape), result)


_Q_FLOOR, _Q_CEILING = 1e-20, 1e20


# ----------------------------------------------------------------------------- expectations
#
# One-dimensional expectations E[f(u)], u ~ N(0, q), use jaxgrad.activations' split rule:
# the integral is split at the breakpoints of f and at 0 and integrated by graded
# Gauss-Legendre panels. Two-dimensional ones, E[f(u_1) g(u_2)] with u_1, u_2 of length q
# and correlation c >= 0, are written with independent x, y ~ N(0, 1) as
#
#     u_1 = v + d,   u_2 = v - d,   v = sqrt(q (1 + c) / 2) x,   d = sqrt(q (1 - c) / 2) y,
#
# (c < 0: the same with g(-u) for g(u) and -c for c). For fixed d the inner integral over v
# is one-dimensional, with the kinks and features of f at v = b - d and those of g at
# v = b' + d: the split rule takes these as its centers, so kinks are integrated exactly,
# and large q (where the features are narrow in x) is resolved by the grading. The outer
# integral over d is smooth but where two inner centers meet (d = (b - b') / 2) or one
# crosses the inner Gaussian's peak: those are the outer rule's centers. As c -> 1 the outer
# Gaussian narrows to d = 0 and the inner one is the one-dimensional expectation of f g.


def _sqrt_q(q: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.clip(q, _Q_FLOOR, _Q_CEILING))


def _value_and_slope(phi: Callable, u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """phi(u) and phi'(u) from one forward-mode pass."""
    return jax.jvp(phi, (u,), (jnp.ones_like(u),))


def _pair_centers(points1, points2, sign):
    """The outer (d) centers for activations with these breakpoints, g reflected by sign
    (a static +-1, or an array: both sets are padded to one size and selected)."""
    first, second = _act._centers(points1), _act._centers(points2)
    options = []
    for s in (1.0, -1.0):
        reflected = [s * b for b in second]
        meets = {(b - r) / 2 for b in first for r in reflected}
        options.append(sorted(meets | set(first) | {-r for r in reflected} | {0.0}))
    if isinstance(sign, float):
        return np.asarray(options[0] if sign > 0 else options[1])
    size = max(len(o) for o in options)
    options = [o + [o[-1]] * (size - len(o)) for o in options]  # a repeat adds an empty gap
    return jnp.where(sign > 0, jnp.asarray(options[0]), jnp.asarray(options[1]))


def _expect_pair(integrand, q, c, points1, points2, order=_act._RULE_ORDER, symmetric=False):
    """E[integrand(u_1, u_2)] for u_1, u_2 of length q and correlation c, where the
    integrand's dependence on u_1 has kinks at points1 and on u_2 at points2 (see above).

    `symmetric=True` (for an integrand symmetric in u_1 and u_2, points1 == points2 and
    c >= 0, which the caller guarantees) integrates the outer d >= 0 only: the inner
    integral is even in d, so this halves the work."""
    dtype = jnp.result_type(q, c)
    tiny = jnp.finfo(dtype).tiny
    root = _sqrt_q(q)
    sign = jnp.where(c < 0, -1.0, 1.0).astype(dtype)
    rho = jnp.clip(jnp.abs(c), 0, 1)
    inner_std = root * jnp.sqrt((1 + rho) / 2)
    outer_std = jnp.maximum(root * jnp.sqrt((1 - rho) / 2), tiny)
    if symmetric:
        sign = jnp.ones((), dtype)
        everywhere = _pair_centers(points1, points2, 1.0)
        outer_centers = jnp.asarray([b for b in everywhere.tolist() if b >= 0], dtype)
    else:
        outer_centers = _pair_centers(points1, points2, sign).astype(dtype)
    outer_z, outer_w = _act.split_rule(
        outer_centers / outer_std,
        jnp.full(outer_centers.shape, 1.0, dtype) * jnp.minimum(1.0, 0.5 / outer_std),
        order=order,
        right_only=symmetric,
    )
    first = jnp.asarray(_act._centers(points1), dtype)
    second = sign * jnp.asarray(_act._centers(points2), dtype)
    inner_scale = jnp.minimum(1.0, 1 / inner_std)

    def inner(shift):
        centers = jnp.concatenate([first - shift, second + shift])
        z, w = _act.split_rule(
            centers / inner_std, jnp.full(centers.shape, 1.0, dtype) * inner_scale, order=order
        )
        v = inner_std * z
        values = integrand(v + shift, sign * (v - shift))
        total = jnp.sum(w)
        return jax.tree.map(lambda value: jnp.sum(w * value) / total, values)

    values = jax.vmap(inner)(outer_std * outer_z)
    total = jnp.sum(outer_w)
    return jax.tree.map(lambda value: jnp.sum(outer_w * value) / total, values)


def _moments(phi, q):
    """E[phi^2] and the length map's slope per sigma_w2, E[phi phi' u] / q, at length q."""
    points = _act.breakpoints(phi)
    root = _sqrt_q(q)

    def fn(u):
        value, slope = _value_and_slope(phi, u)
        return value**2, value * slope * (u / root) / root

    return _act._expect(fn, root, points)


def _second_moment(phi, q):
    return _act._expect(lambda u: phi(u) ** 2, _sqrt_q(q), _act.breakpoints(phi))


def _slope_moments(phi, q):
    """E[phi'^2] and E[phi'^4] at length q."""
    dphi = _act.derivative(phi)

    def fn(u):
        square = dphi(u) ** 2
        return square, square**2

    return _act._expect(fn, _sqrt_q(q), _act.breakpoints(phi))


def _kernel(phi, q, c, order=_act._RULE_ORDER, symmetric=False):
    """E[phi(u_1) phi(u_2)] and E[phi'(u_1) phi'(u_2)] at length q, correlation c
    (`symmetric=True` for c >= 0 only, see `_expect_pair`)."""
    points = _act.breakpoints(phi)

    def integrand(u1, u2):
        value1, slope1 = _value_and_slope(phi, u1)
        value2, slope2 = _value_and_slope(phi, u2)
        return value1 * value2, slope1 * slope2

    return _expect_pair(integrand, q, c, points, points, order, symmetric)


# ----------------------------------------------------------------------------- fixed points

_LOG_Q_LIMIT = math.log(_Q_CEILING)
_SEARCH_STEPS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, _LOG_Q_LIMIT)
_NEWTON_STEPS = 60
_GUESS_STEPS, _ACCURATE_STEPS = 24, 6
_STEP_TOLERANCE = 1e-12
_MODERATE_Q = 100.0


def _q_star_point(phi, sigma_w2, sigma_b2):
    """q* of one point: the fixed point of the length map reached from q = 1.

    In x = log q, G(x) = log(q_map(q)) - x is positive where the length grows. From x = 0
    the search steps outward (by 1, 2, 4, ... in x) in the direction the length moves until
    G changes sign, then safeguarded Newton steps (bisection where Newton leaves the
    bracket) find the root. No sign change up to q = 1e20 (or down to 1e-20) means the
    length grows without bound (q* = inf) or decays to 0 (q* = 0).
    """

    def residual(x):
        q = jnp.exp(x)
        second, slope = _moments(phi, q)
        mapped = sigma_w2 * second + sigma_b2
        # d/dx log(q_map(e^x)) - 1 = q q_map'(q) / q_map(q) - 1
        return jnp.log(mapped) - x, q * sigma_w2 * slope / mapped - 1

    dtype = jnp.result_type(sigma_w2, sigma_b2)
    start, _ = residual(jnp.zeros((), dtype))
    direction = jnp.where(start > 0, 1.0, -1.0).astype(dtype)

    zero = jnp.zeros((), dtype)
    steps = jnp.asarray(_SEARCH_STEPS, dtype)
    # q = 1 is itself a fixed point within rounding (a linear network with sigma_w2 = 1).
    at_start = jnp.abs(start) <= 4 * jnp.finfo(dtype).eps

    def searching(carry):
        index, _, _, found = carry
        return (index < len(_SEARCH_STEPS)) & ~found

    def search(carry):
        index, lo, hi, _ = carry
        x = direction * steps[index]
        value, _ = residual(x)
        crossed = (value > 0) != (start > 0)
        return index + 1, jnp.where(crossed, lo, x), jnp.where(crossed, x, hi), crossed

    _, lo, hi, found = jax.lax.while_loop(searching, search, (0, zero, zero, at_start))
    # lo: the last point on the side of the start, hi: the first across (both 0: G(0) = 0).
    sign_lo = jnp.where(start > 0, 1.0, -1.0)

    def unfinished(carry):
        count, previous, x = carry[:3]
        close = jnp.abs(x - previous) <= 4 * jnp.finfo(dtype).eps * (1 + jnp.abs(x))
        return (count < _NEWTON_STEPS) & ~close

    def newton(carry):
        count, _, x, lo, hi = carry
        value, slope = residual(x)
        same = (value > 0) == (sign_lo > 0)
        lo, hi = jnp.where(same, x, lo), jnp.where(same, hi, x)
        candidate = x - value / slope
        inside = (candidate - lo) * (candidate - hi) < 0
        following = jnp.where(inside & jnp.isfinite(candidate), candidate, (lo + hi) / 2)
        return count + 1, x, jnp.where(value == 0, x, following), lo, hi

    # Newton (bisection where it leaves the bracket) until a step is within rounding; at
    # most 60 steps, enough for bisection alone to resolve float64.
    middle = (lo + hi) / 2
    _, _, x, _, _ = jax.lax.while_loop(unfinished, newton, (0, middle + 1, middle, lo, hi))
    q = jnp.exp(x)
    # A last Newton step in q itself: log q resolves q only to eps * |log q| relative.
    second, slope = _moments(phi, q)
    polished = q - (sigma_w2 * second + sigma_b2 - q) / (sigma_w2 * slope - 1)
    small = jnp.abs(polished - q) <= 1e-3 * q
    q = jnp.where(small & jnp.isfinite(polished), polished, q)
    unbounded = jnp.where(start > 0, jnp.inf, 0.0)
    q = jnp.where(at_start, 1.0, jnp.where(found, q, unbounded))
    return jnp.where(q >= _Q_CEILING, jnp.inf, jnp.where(q <= _Q_FLOOR, 0.0, q))


_HERMITE_TERMS = 48  # terms of the Mehler series that gives c*'s first guess


def _hermite_coefficients(phi, q):
    """a_k = E[phi(sqrt(q) z) He_k(z)] / sqrt(k!), k = 0..48, and E[phi^2]: the c-map's
    Mehler series is E[phi(u_1) phi(u_2)] = sum_k a_k^2 c^k (and sum_k a_k^2 = E[phi^2])."""
    root = _sqrt_q(q)

    def fn(u):
        z = u / root
        rows = [jnp.ones_like(z), z]
        for k in range(1, _HERMITE_TERMS):
            rows.append((z * rows[k] - math.sqrt(k) * rows[k - 1]) / math.sqrt(k + 1))
        value = phi(u)
        return value[None, :] * jnp.stack(rows), value**2

    return _act._expect(fn, root, _act.breakpoints(phi))


def _c_star_point(phi, sigma_w2, sigma_b2, q, chi):
    """c* and chi_c of one point with q* = q and chi1 = chi: c* = 1 and chi_c = chi1 unless
    the point is chaotic (chi1 > 1); then c* is the root in [0, 1) of S(c) = 1, where
    S(c) = (1 - M(c)) / (1 - c) is the slope of the secant of the c-map M from c to 1
    (S(0) = 1 - M(0) <= 1, S(1) = chi1; the root c = 1 of M(c) = c is divided out, so c*
    stays a simple root however close to 1). A first guess comes from the first 49 terms of
    M's Mehler series (one-dimensional integrals only), then safeguarded Newton steps on the
    two-dimensional expectations."""
    dtype = jnp.result_type(sigma_w2, sigma_b2, q)
    eps = jnp.finfo(dtype).eps
    chaotic = (chi > 1) & jnp.isfinite(q)
    q_safe = jnp.where(jnp.isfinite(q), q, 1.0)
    mapped = sigma_w2 * _second_moment(phi, q_safe) + sigma_b2

    def accurate(c):  # c stays in [0, 1): the outer integral's symmetry halves the work
        # Order 12 is exact to 2e-12 up to q = 100 (where the grading is short), at 70% of
        # the cost of order 16; beyond, order 16 (under vmap, cond computes both).
        return jax.lax.cond(
            q_safe <= _MODERATE_Q,
            lambda c: _kernel(phi, q_safe, c, order=12, symmetric=True),
            lambda c: _kernel(phi, q_safe, c, symmetric=True),
            c,
        )

    def secant(c, kernel):
        value, slope = kernel(c)
        correlation = (sigma_w2 * value + sigma_b2) / mapped
        derivative = sigma_w2 * q_safe * slope / mapped
        gap = jnp.maximum(1 - c, eps)
        ratio = (1 - correlation) / gap
        return ratio - 1, (ratio - derivative) / gap, derivative

    def newton(value, slope, c, lo, hi):
        below = value < 0
        lo, hi = jnp.where(below, c, lo), jnp.where(below, hi, c)
        candidate = c - value / slope
        inside = (candidate > lo) & (candidate < hi)
        following = jnp.where(inside & jnp.isfinite(candidate), candidate, (lo + hi) / 2)
        return jnp.where(value == 0, c, following), lo, hi

    zero, one = jnp.zeros((), dtype), jnp.ones((), dtype)

    def solve():
        coefficients, second = _hermite_coefficients(phi, q_safe)
        powers = jnp.square(coefficients)
        # The series' remainder put at the next power: exact at c = 1, and still convex.
        powers = jnp.concatenate([powers, jnp.maximum(second - jnp.sum(powers), 0)[None]])
        exponents = jnp.arange(_HERMITE_TERMS + 2, dtype=dtype)
        derivative_powers = (powers * exponents)[1:]

        def series(c):  # Horner's rule
            slope = jnp.polyval(derivative_powers[::-1], c) / q_safe
            return jnp.polyval(powers[::-1], c), slope

        def guess_step(_, carry):
            value, slope, _ = secant(carry[0], series)
            return newton(value, slope, *carry)

        c, _, _ = jax.lax.fori_loop(0, _GUESS_STEPS, guess_step, (zero, zero, one))

        # Accurate Newton steps until a step is below 1e-12 (at most 6; the c* after it is
        # then exact to rounding, the step being quadratic); the last step's expectations
        # give chi_c at its starting point, within 1e-12 of c*.
        def unfinished(carry):
            count, c, following = carry[:3]
            tolerance = jnp.maximum(_STEP_TOLERANCE, 4 * eps)
            return (count < _ACCURATE_STEPS) & (jnp.abs(following - c) > tolerance)

        def accurate_step(carry):
            count, _, c, lo, hi, _ = carry
            value, slope, chi_c = secant(c, accurate)
            following, lo, hi = newton(value, slope, c, lo, hi)
            return count + 1, c, following, lo, hi, chi_c

        start = (0, c + 1, c, zero, one, zero)  # (count, previous, current, lo, hi, chi_c)
        _, _, c, _, _, chi_c = jax.lax.while_loop(unfinished, accurate_step, start)
        return c, chi_c

    def settled():
        return jnp.where(jnp.isfinite(q), 1.0, jnp.nan).astype(dtype), jnp.where(
            jnp.isfinite(q), chi, jnp.nan
        ).astype(dtype)

    # Only a chaotic point needs the two-dimensional expectations (under vmap, cond
    # computes both branches and selects).
    return jax.lax.cond(chaotic, solve, settled)


def _depth_scale(slope, q):
    # |gap_l| ~ |slope|^l: a depth -1 / log|slope| while |slope| < 1, inf from 1 on. A slope
    # within rounding of 1 (4 eps, a depth scale beyond 1 / (4 eps)) counts as 1.
    rate = jnp.abs(slope)
    below = rate < 1 - 4 * jnp.finfo(rate.dtype).eps
    scale = jnp.where(below, -1 / jnp.log(jnp.where(below, rate, 0.5)), jnp.inf)
    return jnp.where(jnp.isfinite(q), scale, jnp.nan)  # no fixed point: no depth scale


def _chi1_at(phi, sigma_w2, q):
    square, _ = _slope_moments(phi, jnp.where(jnp.isfinite(q), q, _Q_CEILING))
    return sigma_w2 * square


def _everything(phi, sigma_w2, sigma_b2):
    """(q*, c*, chi1, chi_q, chi_c) of one point."""
    q = _q_star_point(phi, sigma_w2, sigma_b2)
    q_safe = jnp.where(jnp.isfinite(q), q, _Q_CEILING)
    chi = _chi1_at(phi, sigma_w2, q)
    _, slope = _moments(phi, q_safe)
    chi_q = sigma_w2 * slope
    c, chi_c = _c_star_point(phi, sigma_w2, sigma_b2, q, chi)
    return q, c, chi, chi_q, chi_c


# Jitted kernels, keyed on the activation function (one compile per activation).
_static_phi = functools.partial(jax.jit, static_argnums=0)


@_static_phi
def _q_star_all(phi, sigma_w2, sigma_b2):
    return _pointwise(functools.partial(_q_star_point, phi), sigma_w2, sigma_b2)


@_static_phi
def _chi1_all(phi, sigma_w2, sigma_b2):
    def point(w2, b2):
        return _chi1_at(phi, w2, _q_star_point(phi, w2, b2))

    return _pointwise(point, sigma_w2, sigma_b2)


# c_star, chi_c, depth_scales and phase_diagram share one program per activation (c* and
# chi_c, the costly part, come together), so each compiles once.
@_static_phi
def _everything_all(phi, sigma_w2, sigma_b2):
    return _pointwise(functools.partial(_everything, phi), sigma_w2, sigma_b2)


def _scales(q, chi_q, chi_c):
    return DepthScales(_depth_scale(chi_q, q), _depth_scale(chi_c, q))


@_static_phi
def _q_map_all(phi, sigma_w2, sigma_b2, q):
    return _pointwise(lambda w2, b2, q: w2 * _second_moment(phi, q) + b2, sigma_w2, sigma_b2, q)


@_static_phi
def _c_map_all(phi, sigma_w2, sigma_b2, c, q):
    def point(w2, b2, c, q):
        q = jnp.where(jnp.isnan(q), _q_star_point(phi, w2, b2), q)
        value, _ = _kernel(phi, q, c)
        return (w2 * value + b2) / (w2 * _second_moment(phi, q) + b2)

    return _pointwise(point, sigma_w2, sigma_b2, c, q)


# ----------------------------------------------------------------------------- public maps


def q_map(
    activation: str | _act.Activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, q: ArrayLike
) -> jax.Array:
    """One step of the length map: sigma_w2 * E[phi(sqrt(q) z)^2] + sigma_b2.

    The length q of a layer's pre-activations, given the previous layer's length q, in an
    infinitely wide network with N(0, sigma_w2 / N) weights and N(0, sigma_b2) biases.

    Args:
        activation: a registry name (`jaxgrad.activations.names()`) or an elementwise
            callable.
        sigma_w2: the weight variance (times the fan-in), >= 0.
        sigma_b2: the bias variance, >= 0.
        q: the previous layer's pre-activation length (mean square), >= 0.

    Returns:
        The next length, an array of the arguments' broadcast shape.

    Raises:
        ValueError: an unknown activation name, or a concrete variance that is negative,
            non-finite or above `MAX_VARIANCE`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import theory
        >>> q = theory.q_map("relu", 2.0, 0.0, jnp.array([0.5, 1.0, 2.0]))  # q for relu, 2
        >>> [round(v, 5) for v in q.tolist()]
        [0.5, 1.0, 2.0]

    References:
        Poole, Lahiri, Raghu, Sohl-Dickstein and Ganguli 2016, "Exponential expressivity in
        deep neural networks through transient chaos".
    """
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    sigma_b2 = _check_variance("sigma_b2", sigma_b2)
    return _q_map_all(phi, sigma_w2, sigma_b2, _check_variance("q", q))


def q_star(
    activation: str | _act.Activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike
) -> jax.Array:
    """The fixed point of the length map reached from q = 1, as a network reaches it.

    Exact to float64 rounding where the expectations are (see the module docstring). Where
    the length grows without bound (relu with sigma_w2 >= 2 and sigma_b2 > 0, or
    sigma_w2 > 2) the result is inf; where it decays to 0 (sigma_b2 = 0 in the ordered
    phase) it is 0.

    Args:
        activation: a registry name (`jaxgrad.activations.names()`) or an elementwise
            callable.
        sigma_w2: the weight variance (times the fan-in), >= 0; an array broadcasts.
        sigma_b2: the bias variance, >= 0; an array broadcasts.

    Returns:
        q*, an array of the broadcast shape.

    Raises:
        ValueError: a concrete sigma_w2 or sigma_b2 that is negative, non-finite or above
            `MAX_VARIANCE` (where q* would leave the quadrature's range and read inf).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import theory
        >>> q = theory.q_star("linear", jnp.array([0.5, 0.75]), 0.25)  # sigma_b2 / (1 - w2)
        >>> [round(v, 6) for v in q.tolist()]
        [0.5, 1.0]

    References:
        Poole et al. 2016, "Exponential expressivity in deep neural networks through
        transient chaos".
    """
    # Found in log q by stepping out from q = 1 in the direction the length moves until the
    # map's residual changes sign, then safeguarded Newton steps (`_q_star_point`).
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    return _q_star_all(phi, sigma_w2, _check_variance("sigma_b2", sigma_b2))


def c_map(
    activation: str | _act.Activation,
    sigma_w2: ArrayLike,
    sigma_b2: ArrayLike,
    c: ArrayLike,
    q: ArrayLike | None = None,
) -> jax.Array:
    """The correlation of two signals after one layer, given their correlation c and their
    common length q (default q*): the correlation map,

        (sigma_w2 E[phi(u_1) phi(u_2)] + sigma_b2) / (sigma_w2 E[phi(u_1)^2] + sigma_b2),

    with u_1, u_2 of length q and correlation c. It is a correlation for any q: c = 1 maps
    to 1. (Before jaxgrad 0.2 this function divided by q instead of the output's length,
    which is the same only at q = q*.) At q* its fixed points are the c* of `c_star`.

    Args:
        activation: a registry name (`jaxgrad.activations.names()`) or an elementwise
            callable.
        sigma_w2: the weight variance (times the fan-in), >= 0.
        sigma_b2: the bias variance, >= 0.
        c: the two signals' correlation, in [-1, 1].
        q: their common pre-activation length, >= 0; None (the default) uses q*.

    Returns:
        The correlation after the layer, an array of the arguments' broadcast shape.

    Raises:
        ValueError: a concrete c outside [-1, 1] or nan, an unknown activation name, or a
            concrete variance or q that is negative, non-finite or above `MAX_VARIANCE`.

    Example:
        >>> import math
        >>> from jaxgrad import theory
        >>> round(float(theory.c_map("tanh", 1.0, 0.05, c=1.0, q=2.0)), 6)
        1.0
        >>> relu = theory.c_map("relu", 2.0, 0.0, c=0.0, q=1.0)  # the arc-cosine kernel
        >>> round(float(relu), 6) == round(1 / math.pi, 6)
        True

    References:
        Poole et al. 2016 (the correlation map); Cho and Saul 2009, "Kernel Methods for
        Deep Learning" (the arc-cosine kernel of relu).
    """
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    sigma_b2 = _check_variance("sigma_b2", sigma_b2)
    c = _check_correlation(c)
    q = jnp.full((), jnp.nan, c.dtype) if q is None else _check_variance("q", q)
    return _c_map_all(phi, sigma_w2, sigma_b2, c, q)


def c_star(activation: str | _act.Activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike):
    """The stable fixed point of the correlation map at q*: 1 in the ordered phase (and on
    the critical line), in [0, 1) in the chaotic phase; nan where q* is inf. Exact to
    float64 rounding where the expectations are.

    Args:
        activation: a registry name (`jaxgrad.activations.names()`) or an elementwise
            callable.
        sigma_w2: the weight variance (times the fan-in), >= 0; an array broadcasts.
        sigma_b2: the bias variance, >= 0; an array broadcasts.

    Returns:
        c*, an array of the broadcast shape of sigma_w2 and sigma_b2.

    Raises:
        ValueError: an unknown activation name, or a concrete variance that is negative,
            non-finite or above `MAX_VARIANCE`.

    Example:
        >>> from jaxgrad import theory
        >>> float(theory.c_star("tanh", 4.0, 0.0))  # odd, no bias: chaos decorrelates fully
        0.0

    References:
        Poole et al. 2016; Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep
        Information Propagation".
    """
    # Safeguarded Newton on the secant slope of the map, from a Mehler-series guess
    # (`_c_star_point`).
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    return _everything_all(phi, sigma_w2, _check_variance("sigma_b2", sigma_b2))[1]


def chi1(activation: str | _act.Activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike) -> jax.Array:
    """sigma_w2 * E[phi'(sqrt(q*) z)^2]: the slope of the c-map at c = 1, and the per-layer
    factor of the mean squared gradient (Schoenholz et al. 2017, eq. 5). chi1 < 1 is the
    ordered phase (gradients vanish), chi1 > 1 the chaotic phase (gradients explode).

    Args:
        activation: a registry name (`jaxgrad.activations.names()`) or an elementwise
            callable.
        sigma_w2: the weight variance (times the fan-in), >= 0; an array broadcasts.
        sigma_b2: the bias variance, >= 0; an array broadcasts.

    Returns:
        chi1, an array of the broadcast shape of sigma_w2 and sigma_b2.

    Raises:
        ValueError: an unknown activation name, or a concrete variance that is negative,
            non-finite or above `MAX_VARIANCE`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import theory
        >>> [round(v, 5) for v in theory.chi1("relu", jnp.array([1.0, 2.0, 3.0]), 0.0).tolist()]
        [0.5, 1.0, 1.5]
        >>> theory.chi1("tanh", jnp.array([[1.0], [2.0]]), jnp.array([0.0, 0.05])).shape
        (2, 2)

    References:
        Poole et al. 2016; Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep
        Information Propagation".
    """
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    return _chi1_all(phi, sigma_w2, _check_variance("sigma_b2", sigma_b2))


def chi_c(activation: str | _act.Activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike) -> jax.Array:
    """sigma_w2 * E[phi'(u_1) phi'(u_2)] at c*: the slope of the c-map at its stable fixed
    point, which sets the correlation depth scale xi_c = -1 / log(chi_c) (equal to chi1 in
    the ordered phase, where c* = 1).

    Args:
        activation: a registry name (`jaxgrad.activations.names()`) or an elementwise
            callable.
        sigma_w2: the weight variance (times the fan-in), >= 0; an array broadcasts.
        sigma_b2: the bias variance, >= 0; an array broadcasts.

    Returns:
        chi_c, an array of the broadcast shape of sigma_w2 and sigma_b2.

    Raises:
        ValueError: an unknown activation name, or a concrete variance that is negative,
            non-finite or above `MAX_VARIANCE`.

    Example:
        >>> from jaxgrad import theory
        >>> round(float(theory.chi_c("tanh", 0.5, 0.0)), 5)  # ordered: chi1 = 0.5 tanh'(0)^2
        0.5

    References:
        Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep Information Propagation".
    """
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    return _everything_all(phi, sigma_w2, _check_variance("sigma_b2", sigma_b2))[4]


class DepthScales(NamedTuple):
    """The depths over which signals approach their fixed points (see `depth_scales`).

    Attributes:
        xi_q: the length depth scale, |q_l - q*| ~ exp(-l / xi_q).
        xi_c: the correlation depth scale, |c_l - c*| ~ exp(-l / xi_c).

    Example:
        >>> from jaxgrad import theory
        >>> xi_q, xi_c = theory.depth_scales("tanh", 0.5, 0.0)  # both -1 / log(chi1 = 0.5)
        >>> round(float(xi_c), 4)
        1.4427
    """

    xi_q: jax.Array
    xi_c: jax.Array

    def to_frame(self):
        """A pandas DataFrame with columns `xi_q` and `xi_c`, one row per entry."""
        return _frame(self)

    def __repr__(self) -> str:
        return _repr(self, "DepthScales")


def depth_scales(
    activation: str | _act.Activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike
) -> DepthScales:
    """The depths over which the length and the correlation of signals approach their fixed
    points, |q_l - q*| ~ exp(-l / xi_q), |c_l - c*| ~ exp(-l / xi_c).

    xi_q^-1 = -log(chi_q), where chi_q = sigma_w2 E[phi(u) phi'(u) u] / q* is the slope of the
    length map at q* (Schoenholz et al.'s chi1 + sigma_w2 E[phi'' phi], integrated by parts,
    which stays right where phi'' has delta functions, as at hard_tanh's kinks), and
    xi_c^-1 = -log(chi_c) (Schoenholz et al. 2017, eqs. 6 and 9). xi_c diverges on the
    critical line, which bounds the depth of trainable networks at about 6 xi_c.

    A slope chi >= 1 means the fixed point is not approached exponentially (on the critical
    line, or where every length is a fixed point, as for a linear network with
    sigma_w2 = 1, sigma_b2 = 0): that depth scale is inf (so is one whose slope is within
    4 eps of 1, a depth beyond what the dtype resolves), where -1 / log(chi) would be
    negative or -inf. Where the length map has no finite fixed point (q* = inf: relu with
    sigma_w2 > 2) the signal never settles, neither scale exists, and both are nan.

    Args:
        activation: a registry name (`jaxgrad.activations.names()`) or an elementwise
            callable.
        sigma_w2: the weight variance (times the fan-in), >= 0; an array broadcasts.
        sigma_b2: the bias variance, >= 0; an array broadcasts.

    Returns:
        A `DepthScales` (xi_q, xi_c) of arrays of the broadcast shape, each > 0, inf or nan
        as above; it unpacks as a pair.

    Example:
        >>> import math
        >>> from jaxgrad import theory
        >>> scales = theory.depth_scales("tanh", 0.5, 0.0)  # q* = 0: chi_q = chi1 = 1/2
        >>> round(float(scales.xi_q) * math.log(2), 6)
        1.0

    Raises:
        ValueError: an unknown activation name, or a concrete variance that is negative,
            non-finite or above `MAX_VARIANCE`.

    References:
        Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep Information Propagation".
    """
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    q, _, _, chi_q, chi_c = _everything_all(phi, sigma_w2, _check_variance("sigma_b2", sigma_b2))
    return _scales(q, chi_q, chi_c)


def critical_sigma_w2(
    activation: str | _act.Activation, sigma_b2: ArrayLike, *, low: float = 1e-3, high: float = 1e3
) -> jax.Array:
    """The sigma_w2 at which chi1 = 1 for a given sigma_b2: the order-to-chaos transition.

    Bisection in log(sigma_w2) over [low, high] (chi1 grows with sigma_w2); nan where chi1
    does not cross 1 in that interval. For tanh it is 1 at sigma_b2 = 0 and about 1.76 at
    sigma_b2 = 0.05; for relu it is 2 for every sigma_b2. `low=0` is allowed (chi1 = 0
    there): the search then steps down from `high` by factors of e^16 until chi1 < 1, and
    bisects from there.

    Args:
        activation: a registry name (`jaxgrad.activations.names()`) or an elementwise
            callable.
        sigma_b2: the bias variance, >= 0; an array broadcasts.
        low: the smallest sigma_w2 searched (keyword only), >= 0.
        high: the largest sigma_w2 searched (keyword only), > low.

    Returns:
        The critical sigma_w2, an array of sigma_b2's shape (nan where there is none in
        [low, high]).

    Raises:
        ValueError: a concrete sigma_b2, low or high that is negative, non-finite or above
            `MAX_VARIANCE`, low >= high, or an unknown activation name.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import theory
        >>> [round(v, 5) for v in theory.critical_sigma_w2("relu", jnp.array([0.0, 0.1])).tolist()]
        [2.0, 2.0]

    References:
        Poole et al. 2016; Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep
        Information Propagation" (the order-to-chaos transition line).
    """
    phi = _activation(activation)
    sigma_b2 = _check_variance("sigma_b2", sigma_b2)
    concrete = not isinstance(low, jax.core.Tracer) and not isinstance(high, jax.core.Tracer)
    low, high = _check_variance("low", low), _check_variance("high", high)
    if concrete and not np.all(np.asarray(low) < np.asarray(high)):
        raise ValueError(f"need low < high, got low={float(low)}, high={float(high)}")
    return _critical_sigma_w2(phi, sigma_b2, low, high)


_LOG_DESCENT = 16.0  # critical_sigma_w2 with low = 0 steps down by e^16 (8.9e6) at a time


@_static_phi
def _critical_sigma_w2(phi, sigma_b2, low, high):
    def point(sigma_b2, low, high):
        def excess(log_w2):
            w2 = jnp.exp(log_w2)
            return _chi1_at(phi, w2, _q_star_point(phi, w2, sigma_b2)) - 1

        def bisect(_, bounds):
            lo, hi = bounds
            # With low = 0, lo = log(0) = -inf: step down from hi until chi1 < 1, then bisect.
            mid = jnp.where(jnp.isfinite(lo), (lo + hi) / 2, hi - _LOG_DESCENT)
            below = excess(mid) < 0
            return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

        log_low, log_high = jnp.log(low), jnp.log(high)
        lo, hi = jax.lax.fori_loop(0, 60, bisect, (log_low, log_high))
        crosses = (excess(log_low) < 0) & (excess(log_high) > 0)
        return jnp.where(crosses, jnp.exp((lo + hi) / 2), jnp.nan)

    return _pointwise(point, sigma_b2, low, high)


def phase(
    activation: str | _act.Activation,
    sigma_w2: float,
    sigma_b2: float,
    *,
    tol: float = PHASE_TOLERANCE,
) -> str:
    """The phase of the point (sigma_w2, sigma_b2): where chi1 puts it against 1.

    Args:
        activation: a registry name (`jaxgrad.activations.names()`) or an elementwise
            callable.
        sigma_w2: the weight variance (times the fan-in), a number >= 0.
        sigma_b2: the bias variance, a number >= 0.
        tol: how far chi1 may be from 1 and still count as critical (keyword only).

    Returns:
        "ordered" (chi1 < 1 - tol: gradients vanish), "chaotic" (chi1 > 1 + tol: gradients
        explode) or "critical".

    Raises:
        ValueError: an unknown activation name, or a concrete variance that is negative,
            non-finite or above `MAX_VARIANCE`.

    Example:
        >>> from jaxgrad import theory
        >>> theory.phase("tanh", 1.0, 0.0), theory.phase("tanh", 4.0, 0.0)
        ('critical', 'chaotic')

    References:
        Poole et al. 2016; Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep
        Information Propagation".
    """
    value = float(chi1(activation, sigma_w2, sigma_b2))
    if value < 1 - tol:
        return "ordered"
    if value > 1 + tol:
        return "chaotic"
    return "critical"


def critical_point_for_q_star(
    activation: str | _act.Activation, q_star: float
) -> tuple[float, float]:
    """The point (sigma_w2, sigma_b2) on the critical line whose fixed point is `q_star`.

    chi1 = 1 gives sigma_w2 = 1 / E[phi'(sqrt(q*) z)^2], and the fixed-point equation then
    gives sigma_b2 = q* - sigma_w2 E[phi(sqrt(q*) z)^2]. A small q* keeps a bounded
    activation near its linear regime, the route to dynamical isometry (Pennington et al.
    2017).

    Args:
        activation: a name or an elementwise callable.
        q_star: the fixed point, a Python or NumPy real number in (0, MAX_VARIANCE].

    Returns:
        (sigma_w2, sigma_b2) as Python floats.

    Raises:
        TypeError: a q_star that is not a real number (bools are not).
        ValueError: a q_star that is not finite, <= 0 or above `MAX_VARIANCE`, or when no
            critical point with this q* has sigma_b2 >= 0.

    Example:
        >>> from jaxgrad import theory
        >>> sigma_w2, sigma_b2 = theory.critical_point_for_q_star("tanh", 0.01)
        >>> round(sigma_w2, 4), f"{sigma_b2:.2e}"
        (1.0197, '1.26e-06')

    References:
        Pennington, Schoenholz and Ganguli 2017, "Resurrecting the sigmoid in deep learning
        through dynamical isometry: theory and practice".
    """
    phi = _activation(activation)
    if isinstance(q_star, bool | np.bool_) or not isinstance(
        q_star, int | float | np.integer | np.floating
    ):
        raise TypeError(f"q_star must be a real number, got {q_star!r}")
    if not math.isfinite(q_star):
        raise ValueError(f"q_star must be finite, got {q_star!r}")
    if not q_star > 0:
        raise ValueError(f"q_star must be a number > 0, got {q_star!r}")
    if q_star > MAX_VARIANCE:
        raise ValueError(
            f"q_star must be at most {MAX_VARIANCE:g} (jaxgrad.theory.MAX_VARIANCE), got {q_star!r}"
        )
    q_star = float(q_star)
    q = jnp.asarray(q_star, jnp.result_type(float))
    sigma_w2 = 1 / float(_slope_moments(phi, q)[0])
    sigma_b2 = q_star - sigma_w2 * float(_second_moment(phi, q))
    if sigma_b2 < -1e-6 * max(q_star, 1):
        raise ValueError(
            f"no critical point of {_act.name_of(activation)} has q* = {q_star}: it would need "
            f"sigma_b2 = {sigma_b2:.3g} < 0"
        )
    return sigma_w2, max(sigma_b2, 0.0)


# ----------------------------------------------------------------------------- phase diagrams


def _concrete(result: tuple) -> bool:
    return all(
        isinstance(leaf, jax.Array | np.ndarray | np.generic | int | float)
        and not isinstance(leaf, jax.core.Tracer)
        for leaf in result
    )


def _frame(result: tuple):
    """A tidy pandas DataFrame of a result of same-shaped fields: one row per entry."""
    import pandas as pd  # the pandas view lives at the edge, not in the numeric core

    host = jax.device_get(result)
    arrays = {name: np.asarray(value) for name, value in host._asdict().items()}
    shape = np.broadcast_shapes(*(a.shape for a in arrays.values()))
    return pd.DataFrame({n: np.broadcast_to(a, shape).reshape(-1) for n, a in arrays.items()})


def _summary(values: np.ndarray) -> str:
    """'0.5' or '0.12 .. 3.4 (2 nan, 1 inf)': the values of a field, for a repr."""
    values = np.asarray(values, np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        text = "-"
    else:
        low, high = f"{finite.min():.4g}", f"{finite.max():.4g}"
        text = low if low == high else f"{low} .. {high}"
    notes = [
        f"{count} {label}"
        for count, label in ((int(np.isnan(values).sum()), "nan"),
                             (int(np.isinf(values).sum()), "inf"))
        if count
    ]  # fmt: skip
    return f"{text} ({', '.join(notes)})" if notes else text


def _repr(result: tuple, name: str) -> str:
    """A few lines: the shape, then each field's value (one entry) or range (several)."""
    if not _concrete(result):  # inside a trace, or abstract: the fields as they are
        fields = ", ".join(f"{key}={value!r}" for key, value in result._asdict().items())
        return f"{name}({fields})"
    host = jax.device_get(result)
    shapes = [np.shape(value) for value in host]
    shape = np.broadcast_shapes(*shapes)
    head = f"{name} of shape {shape} (every value: .to_frame())" if shape else name
    lines = [head]
    for key, value in host._asdict().items():
        lines.append(f"  {key}: {_summary(value)}")
    return "\n".join(lines)


class PhaseDiagram(NamedTuple):
    """Mean-field quantities on a grid; every field has the grid's shape.

    Attributes:
        sigma_w2, sigma_b2: the grid's coordinates.
        q_star: the fixed point of the length map (`q_star`).
        c_star: the stable fixed point of the correlation map (`c_star`).
        chi1: the slope of the correlation map at c = 1 (`chi1`).
        xi_q, xi_c: the depth scales (`depth_scales`).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import theory
        >>> grid = theory.phase_diagram("tanh", jnp.linspace(1, 4, 4), jnp.array([0.0, 0.05]))
        >>> [round(v, 3) for v in grid.chi1[:, 0].tolist()]  # sigma_b2 = 0: critical at 1
        [1.0, 1.106, 1.239, 1.363]
    """

    sigma_w2: jax.Array
    sigma_b2: jax.Array
    q_star: jax.Array
    c_star: jax.Array
    chi1: jax.Array
    xi_q: jax.Array
    xi_c: jax.Array

    def to_frame(self):
        """A tidy pandas DataFrame: one row per grid point, one column per field."""
        return _frame(self)

    def __repr__(self) -> str:
        return _repr(self, "PhaseDiagram")


def phase_diagram(
    activation: str | _act.Activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike
) -> PhaseDiagram:
    """q*, c*, chi1 and the depth scales on the grid of every (sigma_w2, sigma_b2) pair.

    Each point is computed alone, as `q_star`, `c_star`, `chi1` and `depth_scales` compute
    it, to the same accuracy (see the module docstring); the correlation map's
    two-dimensional expectations are needed only at chaotic points (chi1 > 1).

    Args:
        activation: a name or an elementwise callable.
        sigma_w2: 1-D array of weight variances.
        sigma_b2: 1-D array of bias variances.

    Returns:
        A `PhaseDiagram` of arrays of shape (len(sigma_w2), len(sigma_b2)).

    Raises:
        ValueError: sigma_w2 or sigma_b2 not 1-D, a concrete variance that is negative,
            non-finite or above `MAX_VARIANCE`, or an unknown activation name.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import theory
        >>> grid = theory.phase_diagram("tanh", jnp.linspace(1, 4, 4), jnp.array([0.0, 0.05]))
        >>> grid.chi1.shape
        (4, 2)
        >>> grid.to_frame().columns.tolist()[:3]
        ['sigma_w2', 'sigma_b2', 'q_star']

    References:
        Poole et al. 2016, "Exponential expressivity in deep neural networks through
        transient chaos"; Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep
        Information Propagation".
    """
    # A concrete grid is split over the CPU's cores, one thread each (`_on_every_core`);
    # `benchmarks/theory_speed.py` times a 256 x 256 tanh grid.
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    sigma_b2 = _check_variance("sigma_b2", sigma_b2)
    if sigma_w2.ndim != 1 or sigma_b2.ndim != 1:
        raise ValueError(
            f"sigma_w2 and sigma_b2 must be 1-D grids, got shapes {sigma_w2.shape} and "
            f"{sigma_b2.shape}"
        )
    w2, b2 = jnp.meshgrid(sigma_w2, sigma_b2, indexing="ij")
    if isinstance(w2, jax.core.Tracer):
        q, c, chi, chi_q, chi_c = _everything_all(phi, w2, b2)
    else:
        q, c, chi, chi_q, chi_c = _on_every_core(phi, w2, b2)
    scales = _scales(q, chi_q, chi_c)
    return PhaseDiagram(w2, b2, q, c, chi, scales.xi_q, scales.xi_c)


_POINTS_PER_CORE = 64  # a grid below this many points a core runs in one call


def _on_every_core(phi, sigma_w2, sigma_b2):
    """`_everything_all` on a concrete grid, split into equal chunks run by one thread per
    CPU core: the program runs one point after another on one core, so this is what puts
    a machine's other cores to work. Each point's value is the same as in one call."""
    shape, size = sigma_w2.shape, sigma_w2.size
    workers = min(os.cpu_count() or 1, _MAX_THREADS, max(size // _POINTS_PER_CORE, 1))
    if workers == 1:
        return _everything_all(phi, sigma_w2, sigma_b2)
    chunk = -(-size // workers)
    # Thread k takes points k, k + workers, ...: chaotic points (the costly ones) gather on
    # one side of a grid, so contiguous chunks would leave one core idle. The last chunk is
    # padded with repeats of the last point, so that every chunk has one shape (one compile).
    order = np.concatenate([np.arange(k, size, workers) for k in range(workers)])
    order = np.concatenate([order, np.full(chunk * workers - size, order[-1])])
    w2, b2 = sigma_w2.reshape(-1)[order], sigma_b2.reshape(-1)[order]
    program = _compiled_chunk(phi, jax.typeof(w2[:chunk]))

    def run(index):
        part = slice(index * chunk, (index + 1) * chunk)
        return jax.block_until_ready(program(w2[part], b2[part]))

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(run, range(workers)))
    place = np.empty(size, np.int64)
    place[order[:size]] = np.arange(size)
    return tuple(
        jnp.concatenate([part[i] for part in parts])[place].reshape(shape) for i in range(5)
    )


_MAX_THREADS = 8


@functools.lru_cache(maxsize=32)
def _compiled_chunk(phi, chunk):
    """`_everything_all` for one chunk's shape and dtype, compiled here, in the calling
    thread: the worker threads only run it. Compiling one program from several threads at
    once (each in its own `jax.enable_x64` context) crashed XLA later in the process."""
    return _everything_all.lower(phi, chunk, chunk).compile()


class JacobianSpectrum(NamedTuple):
    """Predicted moments of the squared singular values of the input-output Jacobian.

    Attributes:
        mean_sq: the mean of the squared singular values, chi1^L.
        var_sq: their variance.

    Example:
        >>> from jaxgrad import theory
        >>> mean_sq, var_sq = theory.jacobian_spectrum("relu", 2.0, 0.0, depth=10)
        >>> round(float(mean_sq), 3), round(float(var_sq), 3)  # Gaussian weights: var 2 L
        (1.0, 20.0)
    """

    mean_sq: jax.Array
    var_sq: jax.Array

    def to_frame(self):
        """A pandas DataFrame with columns `mean_sq` and `var_sq`, one row per entry."""
        return _frame(self)

    def __repr__(self) -> str:
        return _repr(self, "JacobianSpectrum")


_S1 = {"gaussian": -1.0, "orthogonal": 0.0}


def jacobian_spectrum(
    activation: str | _act.Activation,
    sigma_w2: ArrayLike,
    sigma_b2: ArrayLike,
    depth: int,
    weights: str = "gaussian",
) -> JacobianSpectrum:
    """Mean and variance of the eigenvalues of J J^T for a depth-L network at the fixed point.

    With mu_k = E[phi'(sqrt(q*) z)^(2k)], each layer contributes W^T D^2 W, whose spectrum has
    mean chi1 = sigma_w2 mu_1 and normalized variance mu_2 / mu_1^2 - 1 - s_1, where s_1 is
    the first S-transform coefficient of W^T W: -1 for Gaussian weights, 0 for orthogonal
    ones. Normalized variances of free products add, so

        mean = chi1^L,    variance = chi1^(2L) L (mu_2 / mu_1^2 - 1 - s_1),

    which on the critical line is Pennington et al.'s L (mu_2 / mu_1^2 - 1 - s_1): it grows
    linearly with depth unless the weights are orthogonal and phi' is nearly constant over
    the inputs (small q*), the condition for dynamical isometry. ReLU has mu_2 / mu_1^2 = 2,
    so even orthogonal weights give variance L.

    Args:
        activation: a registry name (`jaxgrad.activations.names()`) or an elementwise
            callable.
        sigma_w2: the weight variance (times the fan-in), >= 0; an array broadcasts.
        sigma_b2: the bias variance, >= 0; an array broadcasts.
        depth: the number of layers L, an int >= 1.
        weights: "gaussian" or "orthogonal", the weight matrices' distribution.

    Returns:
        A `JacobianSpectrum` (mean_sq, var_sq) of arrays of the broadcast shape of sigma_w2
        and sigma_b2.

    Raises:
        ValueError: weights not "gaussian" or "orthogonal", depth not an int >= 1, an
            unknown activation name, or a concrete variance that is negative, non-finite or
            above `MAX_VARIANCE`.

    Example:
        >>> from jaxgrad import theory
        >>> theory.jacobian_spectrum("relu", 2.0, 0.0, depth=10, weights="orthogonal")
        JacobianSpectrum
          mean_sq: 1
          var_sq: 10

    References:
        Pennington, Schoenholz and Ganguli 2017, "Resurrecting the sigmoid in deep learning
        through dynamical isometry: theory and practice", sec. 4 (eqs. 13-17).
    """
    if weights not in _S1:
        raise ValueError(f"weights must be 'gaussian' or 'orthogonal', got {weights!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    sigma_b2 = _check_variance("sigma_b2", sigma_b2)
    return _jacobian_spectrum_all(phi, sigma_w2, sigma_b2, depth, _S1[weights])


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _jacobian_spectrum_all(phi, sigma_w2, sigma_b2, depth, s1):
    def point(w2, b2):
        q = _q_star_point(phi, w2, b2)
        mu1, mu2 = _slope_moments(phi, jnp.where(jnp.isfinite(q), q, _Q_CEILING))
        chi = w2 * mu1
        return JacobianSpectrum(chi**depth, chi ** (2 * depth) * depth * (mu2 / mu1**2 - 1 - s1))

    return _pointwise(point, sigma_w2, sigma_b2)


def predicted_gradient_ratio(chi1_value: ArrayLike, depth: int) -> jax.Array:
    """The predicted ratio of the first layer's gradient norm to the last's, chi1^((L-1)/2):
    the mean squared gradient changes by chi1 per layer (Schoenholz et al. 2017, eq. 5).

    Args:
        chi1_value: chi1 (see `chi1`), a number or an array.
        depth: the number of layers L.

    Returns:
        chi1_value ** ((depth - 1) / 2), an array of chi1_value's shape.

    Example:
        >>> from jaxgrad import theory
        >>> float(theory.predicted_gradient_ratio(0.5, depth=11))  # ordered: vanishing
        0.03125

    References:
        Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep Information Propagation".
    """
    return jnp.asarray(chi1_value) ** ((depth - 1) / 2)
