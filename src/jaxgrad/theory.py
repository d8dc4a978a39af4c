"""Mean-field theory of signal propagation in wide random networks: order, chaos, isometry.

For a network z_l = W_l phi(z_{l-1}) + b_l with W_l ~ N(0, sigma_w2 / N) and
b_l ~ N(0, sigma_b2), in the limit of infinite width, the pre-activations are Gaussian with
a length q_l that follows the q-map

    q_l = sigma_w2 * E[phi(sqrt(q_{l-1}) z)^2] + sigma_b2,      z ~ N(0, 1),

to a fixed point q*, and the correlation c of two inputs follows the c-map

    c_l = (sigma_w2 * E[phi(u_1) phi(u_2)] + sigma_b2) / q*,
    u_1 = sqrt(q*) z_1,  u_2 = sqrt(q*) (c z_1 + sqrt(1 - c^2) z_2).

Its slope at c = 1, chi1 = sigma_w2 * E[phi'(sqrt(q*) z)^2], is also the factor by which the
mean squared gradient changes per layer: chi1 < 1 is the ordered phase (gradients vanish,
inputs collapse together), chi1 > 1 the chaotic phase (gradients explode, nearby inputs
decorrelate), chi1 = 1 the critical line, where depth scales diverge and, for a bounded
activation with small q*, orthogonal weights give dynamical isometry.

In jaxgrad's `nn.MLP` (h_l = phi(h_{l-1} W_l + b_l)) the pre-activation h_{l-1} W_l + b_l is
the z_l above, so `LayerStats.pre_std**2 + pre_mean**2` measures q_l; with N(0, 1) inputs
q_1 = sigma_w2 + sigma_b2. Weights `init.normal(sqrt(sigma_w2 / width))` and biases
`init.normal(sqrt(sigma_b2))` realize (sigma_w2, sigma_b2).

Every function is jittable and vmappable in `sigma_w2`, `sigma_b2` (and `q`, `c`), so a phase
diagram is one `phase_diagram` call. Gaussian expectations use Gauss-Hermite quadrature
(`jaxgrad.activations.gaussian_expectation`); computations run in the default float dtype
(float64 under `jax.enable_x64`). Concrete (not traced) arguments are checked when a
function is called: variances and lengths must be finite, >= 0 and at most `MAX_VARIANCE`,
correlations in [-1, 1]; anything else raises `ValueError`. Traced arguments (under jit or
vmap) cannot be checked and pass as they are.

References:
    Poole, Lahiri, Raghu, Sohl-Dickstein and Ganguli 2016, "Exponential expressivity in deep
    neural networks through transient chaos". Schoenholz, Gilmer, Ganguli and Sohl-Dickstein
    2017, "Deep Information Propagation" (eqs. 2-9: q* , c*, chi_1, xi_q, xi_c).
    Pennington, Schoenholz and Ganguli 2017, "Resurrecting the sigmoid in deep learning
    through dynamical isometry: theory and practice".
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxgrad import activations as _act

QUADRATURE_POINTS = 512
"""Nodes of the sinh-mapped rule for one-dimensional expectations (see `_expect`)."""
QUADRATURE_POINTS_2D = 24
"""Gauss-Legendre points on each of the four angular arcs of the c-map's two-dimensional
expectations (and twice as many radial points); see `_expect_pair`."""
PHASE_TOLERANCE = 1e-3
"""|chi1 - 1| below this counts as critical in `phase`."""
MAX_VARIANCE = 1e18
"""The largest sigma_w2, sigma_b2, q or q* accepted. The quadrature covers lengths up to
1e20 (see `_expect`), and q* reaches about sigma_w2 * max phi^2 + sigma_b2, so this leaves a
factor 100 for phi^2: beyond it, q* of tanh would come out inf instead of about sigma_w2."""


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
    return _act.resolve(activation)


_Q_FLOOR, _Q_CEILING = 1e-20, 1e20


def _expect(fn, q: jax.Array) -> jax.Array:
    """E[fn(u)] for u ~ N(0, q), a scalar q, by the midpoint rule in t where u = sinh(t).

    Gauss-Hermite scales its nodes with sqrt(q), so once sqrt(q) is large the structure of
    phi around 0 (tanh' has width ~1 in u) falls between nodes: at q = 1000 a 256-point rule
    gives chi1 a thousand times too small. The sinh map puts nodes densely where the
    activation varies (|u| <~ 1) and sparsely in the Gaussian's tails, for any q; the rule
    on the transformed line converges exponentially for smooth integrands. An even number
    of symmetric nodes, none at 0, makes the expectations of ReLU-type kinks exact by
    symmetry. q is clipped to [1e-20, 1e20], which gives the q -> 0 and q -> inf limits
    (relu's chi1 = sigma_w2 / 2 at q* = 0 or inf).
    """
    q = jnp.clip(q, _Q_FLOOR, _Q_CEILING)
    half_width = jnp.arcsinh(12 * jnp.sqrt(q))  # the Gaussian's weight beyond 12 sd is nil
    count = QUADRATURE_POINTS
    t = half_width * (2 * (jnp.arange(count, dtype=q.dtype) + 0.5) / count - 1)
    u = jnp.sinh(t)
    weights = jnp.cosh(t) * jnp.exp(-(u**2) / (2 * q))
    return jnp.sum(weights * fn(u)) / jnp.sum(weights)


def _expect_pair(fn1, fn2, q: jax.Array, c: jax.Array) -> jax.Array:
    """E[fn1(u_1) fn2(u_2)] for (u_1, u_2) Gaussian, variances q, correlation c.

    In polar coordinates of the standard normal pair, u_1 = sqrt(q) r cos(theta) and
    u_2 = sqrt(q) r cos(theta - alpha) with cos(alpha) = c, so the lines where either
    argument is 0 (the kinks of relu-type activations) are the four rays theta = +-pi/2 and
    alpha +- pi/2. Gauss-Legendre on each arc between them integrates a piecewise-smooth
    integrand at full order; the radius is mapped as in `_expect` (r = sinh(t) / sqrt(q),
    dense where |u| <~ 1) and integrated by Gauss-Legendre in t, so large q stays accurate.
    """
    dtype = jnp.result_type(q, c)
    q = jnp.clip(q, _Q_FLOOR, _Q_CEILING)
    alpha = jnp.arccos(jnp.clip(c, -1, 1))
    half_pi = math.pi / 2
    breaks = jnp.sort(jnp.mod(jnp.stack([half_pi, 3 * half_pi, alpha + half_pi, alpha - half_pi]),
                              2 * math.pi))  # fmt: skip
    starts = breaks
    ends = jnp.concatenate([breaks[1:], breaks[:1] + 2 * math.pi])
    legendre_x, legendre_w = _legendre(QUADRATURE_POINTS_2D)
    mid, half = (starts + ends) / 2, (ends - starts) / 2
    theta = (mid[:, None] + half[:, None] * jnp.asarray(legendre_x, dtype)[None, :]).ravel()
    theta_w = (half[:, None] * jnp.asarray(legendre_w, dtype)[None, :]).ravel()
    root_q = jnp.sqrt(q)
    top = jnp.arcsinh(12 * root_q)  # the radius runs to 12 standard deviations
    radial_x, radial_w = _legendre(2 * QUADRATURE_POINTS_2D)
    t = top * (1 + jnp.asarray(radial_x, dtype)) / 2
    radius = jnp.sinh(t) / root_q
    radius_w = jnp.asarray(radial_w, dtype) * jnp.cosh(t) * radius * jnp.exp(-(radius**2) / 2)
    u1 = root_q * radius[None, :] * jnp.cos(theta)[:, None]
    u2 = root_q * radius[None, :] * jnp.cos(theta - alpha)[:, None]
    values = fn1(u1) * fn2(u2)
    return (theta_w @ values @ radius_w) / (jnp.sum(theta_w) * jnp.sum(radius_w))


@functools.cache
def _legendre(count: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(count)


# ----------------------------------------------------------------------------- length map


def q_map(
    activation: str | _act.Activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike, q: ArrayLike
) -> jax.Array:
    """One step of the length map: sigma_w2 * E[phi(sqrt(q) z)^2] + sigma_b2."""
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    sigma_b2 = _check_variance("sigma_b2", sigma_b2)
    return _q_map(phi, sigma_w2, sigma_b2, _check_variance("q", q))


def q_star(
    activation: str | _act.Activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike
) -> jax.Array:
    """The fixed point of the length map reached from q = 1, as a network reaches it.

    500 iterations of the map, then Newton steps on q_map(q) - q in s = sqrt(q) (accepted
    only where they stay positive and reduce the residual). Where the map has no finite
    fixed point (relu with sigma_w2 > 2) the result is inf, or the length after 500 layers
    when it grows slowly; for sigma_b2 = 0 in the ordered phase q* = 0.

    Returns:
        q*, a scalar array.

    Raises:
        ValueError: a concrete sigma_w2 or sigma_b2 that is negative, non-finite or above
            `MAX_VARIANCE` (where q* would leave the quadrature's range and read inf).
    """
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    return _q_star(phi, sigma_w2, _check_variance("sigma_b2", sigma_b2))


def c_map(
    activation: str | _act.Activation,
    sigma_w2: ArrayLike,
    sigma_b2: ArrayLike,
    c: ArrayLike,
    q: ArrayLike | None = None,
) -> jax.Array:
    """One step of the correlation map at length q (default q*).

    Raises:
        ValueError: a concrete c outside [-1, 1] or nan, or a bad variance (see the module).
    """
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    sigma_b2 = _check_variance("sigma_b2", sigma_b2)
    c = _check_correlation(c)
    q = _q_star(phi, sigma_w2, sigma_b2) if q is None else _check_variance("q", q)
    return _c_map(phi, sigma_w2, sigma_b2, c, q)


def c_star(activation: str | _act.Activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike):
    """The stable fixed point of the correlation map: 1 in the ordered phase, below 1 in the
    chaotic phase. Found by iterating from c = 0.5 (the map's own dynamics), then Newton."""
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    sigma_b2 = _check_variance("sigma_b2", sigma_b2)
    return _c_star(phi, sigma_w2, sigma_b2, _q_star(phi, sigma_w2, sigma_b2))


def chi1(activation: str | _act.Activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike) -> jax.Array:
    """sigma_w2 * E[phi'(sqrt(q*) z)^2]: the slope of the c-map at c = 1, and the per-layer
    factor of the mean squared gradient (Schoenholz et al. 2017, eq. 5)."""
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    sigma_b2 = _check_variance("sigma_b2", sigma_b2)
    return _chi1(phi, sigma_w2, _q_star(phi, sigma_w2, sigma_b2))


def chi_c(activation: str | _act.Activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike) -> jax.Array:
    """sigma_w2 * E[phi'(u_1) phi'(u_2)] at c*: the slope of the c-map at its stable fixed
    point, which sets the correlation depth scale (equal to chi1 in the ordered phase)."""
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    sigma_b2 = _check_variance("sigma_b2", sigma_b2)
    q = _q_star(phi, sigma_w2, sigma_b2)
    return _chi_c(phi, sigma_w2, q, _c_star(phi, sigma_w2, sigma_b2, q))


def depth_scales(
    activation: str | _act.Activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """(xi_q, xi_c): the depths over which the length and the correlation of signals approach
    their fixed points, |q_l - q*| ~ exp(-l / xi_q), |c_l - c*| ~ exp(-l / xi_c).

    xi_q^-1 = -log(chi_q), chi_q = chi1 + sigma_w2 E[phi''(sqrt(q*) z) phi(sqrt(q*) z)], and
    xi_c^-1 = -log(chi_c) (Schoenholz et al. 2017, eqs. 6 and 9). xi_c diverges on the
    critical line, which bounds the depth of trainable networks at about 6 xi_c.

    A slope chi >= 1 means the fixed point is not approached exponentially (on the critical
    line, or where every length is a fixed point, as for a linear network with
    sigma_w2 = 1, sigma_b2 = 0): that depth scale is inf, where -1 / log(chi) would be
    negative or -inf. Where the length map has no finite fixed point (q* = inf: relu with
    sigma_w2 > 2) the signal never settles, neither scale exists, and both are nan.

    Returns:
        (xi_q, xi_c), scalar arrays, each > 0, inf or nan as above.
    """
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    return _depth_scales(phi, sigma_w2, _check_variance("sigma_b2", sigma_b2))


def critical_sigma_w2(
    activation: str | _act.Activation, sigma_b2: ArrayLike, *, low: float = 1e-3, high: float = 1e3
) -> jax.Array:
    """The sigma_w2 at which chi1 = 1 for a given sigma_b2: the order-to-chaos transition.

    Bisection in log(sigma_w2) over [low, high] (chi1 grows with sigma_w2); nan where chi1
    does not cross 1 in that interval. For tanh it is 1 at sigma_b2 = 0 and about 1.76 at
    sigma_b2 = 0.05; for relu it is 2 for every sigma_b2. `low=0` is allowed (chi1 = 0
    there): the search then steps down from `high` by factors of e^16 until chi1 < 1, and
    bisects from there.

    Raises:
        ValueError: a concrete sigma_b2, low or high that is negative, non-finite or above
            `MAX_VARIANCE`, or low >= high.
    """
    phi = _activation(activation)
    sigma_b2 = _check_variance("sigma_b2", sigma_b2)
    concrete = not isinstance(low, jax.core.Tracer) and not isinstance(high, jax.core.Tracer)
    low, high = _check_variance("low", low), _check_variance("high", high)
    if concrete and not float(low) < float(high):
        raise ValueError(f"need low < high, got low={float(low)}, high={float(high)}")
    return _critical_sigma_w2(phi, sigma_b2, low, high)


# Jitted kernels, keyed on the activation function; they share q* and c* between quantities.
_LOG_DESCENT = 16.0  # critical_sigma_w2 with low = 0 steps down by e^16 (8.9e6) at a time
_static_phi = functools.partial(jax.jit, static_argnums=0)


@_static_phi
def _q_map(phi, sigma_w2, sigma_b2, q):
    return sigma_w2 * _expect(lambda u: phi(u) ** 2, q) + sigma_b2


@_static_phi
def _q_star(phi, sigma_w2, sigma_b2):
    def step(q):
        return _q_map(phi, sigma_w2, sigma_b2, q)

    q = jax.lax.fori_loop(0, 500, lambda _, q: step(q), jnp.ones_like(sigma_w2))

    def residual(s):
        return step(s**2) - s**2

    def newton(_, q):
        s = jnp.sqrt(q)
        value, slope = jax.value_and_grad(residual)(s)
        candidate = (s - value / slope) ** 2
        better = jnp.abs(residual(jnp.sqrt(candidate))) < jnp.abs(value)
        ok = jnp.isfinite(candidate) & (candidate > 0) & better
        return jnp.where(ok, candidate, q)

    q = jax.lax.fori_loop(0, 8, newton, q)
    return jnp.where(q >= _Q_CEILING, jnp.inf, q)  # the map ran off: no finite fixed point


@_static_phi
def _c_map(phi, sigma_w2, sigma_b2, c, q):
    return (sigma_w2 * _expect_pair(phi, phi, q, c) + sigma_b2) / jnp.clip(q, _Q_FLOOR, None)


@_static_phi
def _c_star(phi, sigma_w2, sigma_b2, q):
    def step(c):
        return jnp.minimum(_c_map(phi, sigma_w2, sigma_b2, c, q), 1)

    c = jax.lax.fori_loop(0, 200, lambda _, c: step(c), jnp.full_like(q, 0.5))

    def newton(_, c):
        value, slope = jax.value_and_grad(lambda c: step(c) - c)(c)
        candidate = jnp.clip(c - value / slope, -1, 1)
        better = jnp.abs(step(candidate) - candidate) < jnp.abs(value)
        return jnp.where(jnp.isfinite(candidate) & better, candidate, c)

    return jax.lax.fori_loop(0, 8, newton, c)


@_static_phi
def _chi1(phi, sigma_w2, q):
    dphi = _act.derivative(phi)
    return sigma_w2 * _expect(lambda u: dphi(u) ** 2, q)


@_static_phi
def _chi_c(phi, sigma_w2, q, c):
    dphi = _act.derivative(phi)
    return sigma_w2 * _expect_pair(dphi, dphi, q, c)


@_static_phi
def _depth_scales(phi, sigma_w2, sigma_b2):
    q = _q_star(phi, sigma_w2, sigma_b2)
    c = _c_star(phi, sigma_w2, sigma_b2, q)
    d2phi = _act.derivative(_act.derivative(phi))
    chi_q = _chi1(phi, sigma_w2, q) + sigma_w2 * _expect(lambda u: d2phi(u) * phi(u), q)

    def depth_scale(slope):
        # |gap_l| ~ |slope|^l: a depth -1 / log|slope| while |slope| < 1, inf from 1 on.
        rate = jnp.abs(slope)
        scale = jnp.where(rate < 1, -1 / jnp.log(jnp.where(rate < 1, rate, 0.5)), jnp.inf)
        return jnp.where(jnp.isfinite(q), scale, jnp.nan)  # no fixed point: no depth scale

    return depth_scale(chi_q), depth_scale(_chi_c(phi, sigma_w2, q, c))


@_static_phi
def _critical_sigma_w2(phi, sigma_b2, low, high):
    def excess(log_w2):
        w2 = jnp.exp(log_w2)
        return _chi1(phi, w2, _q_star(phi, w2, sigma_b2)) - 1

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


def phase(
    activation: str | _act.Activation,
    sigma_w2: float,
    sigma_b2: float,
    *,
    tol: float = PHASE_TOLERANCE,
) -> str:
    """ "ordered" (chi1 < 1 - tol), "chaotic" (chi1 > 1 + tol) or "critical"."""
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
    dphi = _act.derivative(phi)
    q = jnp.asarray(q_star, jnp.result_type(float))
    sigma_w2 = 1 / float(_expect(lambda u: dphi(u) ** 2, q))
    sigma_b2 = q_star - sigma_w2 * float(_expect(lambda u: phi(u) ** 2, q))
    if sigma_b2 < -1e-6 * max(q_star, 1):
        raise ValueError(
            f"no critical point of {_act.name_of(activation)} has q* = {q_star}: it would need "
            f"sigma_b2 = {sigma_b2:.3g} < 0"
        )
    return sigma_w2, max(sigma_b2, 0.0)


# ----------------------------------------------------------------------------- phase diagrams


class PhaseDiagram(NamedTuple):
    """Mean-field quantities on a grid; every field has the grid's shape."""

    sigma_w2: jax.Array
    sigma_b2: jax.Array
    q_star: jax.Array
    c_star: jax.Array
    chi1: jax.Array
    xi_q: jax.Array
    xi_c: jax.Array


def phase_diagram(
    activation: str | _act.Activation, sigma_w2: ArrayLike, sigma_b2: ArrayLike
) -> PhaseDiagram:
    """q*, c*, chi1 and the depth scales on the grid of every (sigma_w2, sigma_b2) pair.

    Args:
        activation: a name or an elementwise callable.
        sigma_w2: 1-D array of weight variances.
        sigma_b2: 1-D array of bias variances.

    Returns:
        A `PhaseDiagram` of arrays of shape (len(sigma_w2), len(sigma_b2)), computed as one
        vmapped, jitted program.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import theory
        >>> grid = theory.phase_diagram("tanh", jnp.linspace(1, 4, 4), jnp.array([0.0, 0.05]))
        >>> grid.chi1.shape
        (4, 2)
    """
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    sigma_b2 = _check_variance("sigma_b2", sigma_b2)
    if sigma_w2.ndim != 1 or sigma_b2.ndim != 1:
        raise ValueError(
            f"sigma_w2 and sigma_b2 must be 1-D grids, got shapes {sigma_w2.shape} and "
            f"{sigma_b2.shape}"
        )
    return _phase_diagram_jit(phi, sigma_w2, sigma_b2)


@_static_phi
def _phase_diagram_jit(phi, sigma_w2, sigma_b2):
    def point(w2, b2):
        q = _q_star(phi, w2, b2)
        xi_q, xi_c = _depth_scales(phi, w2, b2)
        return PhaseDiagram(w2, b2, q, _c_star(phi, w2, b2, q), _chi1(phi, w2, q), xi_q, xi_c)

    over_b2 = jax.vmap(point, in_axes=(None, 0))
    return jax.vmap(over_b2, in_axes=(0, None))(sigma_w2, sigma_b2)


class JacobianSpectrum(NamedTuple):
    """Predicted moments of the squared singular values of the input-output Jacobian."""

    mean_sq: jax.Array
    var_sq: jax.Array


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

    References: Pennington, Schoenholz and Ganguli 2017, sec. 4 (eqs. 13-17).
    """
    if weights not in _S1:
        raise ValueError(f"weights must be 'gaussian' or 'orthogonal', got {weights!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    phi = _activation(activation)
    sigma_w2 = _check_variance("sigma_w2", sigma_w2)
    sigma_b2 = _check_variance("sigma_b2", sigma_b2)
    q = _q_star(phi, sigma_w2, sigma_b2)
    dphi = _act.derivative(phi)
    mu1 = _expect(lambda u: dphi(u) ** 2, q)
    mu2 = _expect(lambda u: dphi(u) ** 4, q)
    chi = sigma_w2 * mu1
    per_layer = mu2 / mu1**2 - 1 - _S1[weights]
    return JacobianSpectrum(chi**depth, chi ** (2 * depth) * depth * per_layer)


def predicted_gradient_ratio(chi1_value: ArrayLike, depth: int) -> jax.Array:
    """The predicted ratio of the first layer's gradient norm to the last's, chi1^((L-1)/2):
    the mean squared gradient changes by chi1 per layer (Schoenholz et al. 2017, eq. 5)."""
    return jnp.asarray(chi1_value) ** ((depth - 1) / 2)
