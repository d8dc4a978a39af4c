"""Jacobian spectra and norm estimators of deep networks, from jvp and vjp products.

The singular values of the input-output Jacobian J = df/dx decide whether gradients vanish or
explode: a network whose Jacobian has every singular value near 1 (dynamical isometry)
propagates every direction of the error signal without distortion, however deep it is.

- `singular_values(f, x)`: the spectrum of J at one input, exactly (forming J with `jax.jacfwd`
  or `jax.jacrev` and taking its SVD) or, matrix-free, its top and bottom few by Golub-Kahan-
  Lanczos bidiagonalization.
- `mean_squared_singular_value(f, x, key)`: tr(J^T J) / n by Hutchinson's estimator, a few
  Jacobian-vector products whatever the size of J.
- `depth_profile(model, x, key)`: for a `jaxgrad.nn.MLP`, the mean squared singular value of
  d h_l / d h_0 at every depth l from one forward scan that carries the probe tangents, and the
  exact spectra at chosen depths from the accumulated product of the per-layer Jacobians.
- `spectrum_summary(s)`: moments, extremes, condition number and an isometry score.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxgrad import jacobian
    >>> w = jax.random.normal(jax.random.key(0), (8, 5))
    >>> s = jacobian.singular_values(lambda x: jnp.tanh(w @ x), jnp.zeros(5))
    >>> s.shape
    (5,)

References:
    Pennington, Schoenholz and Ganguli 2017, "Resurrecting the sigmoid in deep learning through
    dynamical isometry: theory and practice". Saxe, McClelland and Ganguli 2014, "Exact
    solutions to the nonlinear dynamics of learning in deep linear neural networks".
    Hutchinson 1990, "A stochastic estimator of the trace of the influence matrix for Laplacian
    smoothing splines". Golub and Kahan 1965, "Calculating the singular values and
    pseudo-inverse of a matrix". Lanczos 1950, "An iteration method for the solution of the
    eigenvalue problem of linear differential and integral operators".
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from jaxgrad import init as _init
from jaxgrad import nn as _nn

METHODS = ("auto", "exact", "lanczos")
WHICH = ("top", "bottom", "both")

AUTO_EXACT_MAX = 512
"""`method="auto"` forms the Jacobian when min(n, m) is at most this (or when `k` is None, or
the bottom values are asked for); above it, the top `k` come from Lanczos."""


# ----------------------------------------------------------------------------- validation


def _concrete(result: tuple) -> bool:
    return all(
        isinstance(leaf, jax.Array | np.ndarray | np.generic | int | float)
        and not isinstance(leaf, jax.core.Tracer)
        for leaf in result
    )


def _span(values) -> str:
    """'0.5' or '0.12 .. 3.4': a field's value or range of values, rounded, for a repr."""
    values = np.asarray(values, np.float64).reshape(-1)
    low, high = f"{np.min(values):.4g}", f"{np.max(values):.4g}"
    return low if low == high else f"{low} .. {high}"


def _check_x(x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"x must be a 1-D array (one input), got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        raise TypeError(f"x must have a floating-point dtype to be differentiated, got {x.dtype}")
    return x


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return value


def _flat_output(f: Callable[[jax.Array], jax.Array], x: jax.Array):
    """`f` with its output flattened, and the output size."""
    out = jax.eval_shape(f, x)
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise TypeError(f"f must return a single array, got {type(out).__name__}")
    if not jnp.issubdtype(out.dtype, jnp.inexact):
        raise TypeError(f"f must return a floating-point array, got dtype {out.dtype}")
    return (lambda x: jnp.ravel(f(x))), math.prod(out.shape)


# ----------------------------------------------------------------------------- spectra


def _select(s: jax.Array, k: int | None, which: str):
    if k is None:
        return s
    top, bottom = s[:k], s[s.shape[0] - k :]
    return {"top": top, "bottom": bottom, "both": (top, bottom)}[which]


def _exact(f, x, m: int) -> jax.Array:
    jac = jax.jacfwd(f)(x) if x.shape[0] <= m else jax.jacrev(f)(x)
    return jnp.linalg.svd(jac, compute_uv=False)


def default_num_iterations(k: int, n: int, m: int, which: str = "top") -> int:
    """The Lanczos steps `singular_values` takes by default.

    which="top": min(min(n, m), 2 k + 40). The largest singular values of a network Jacobian
    are separated from the bulk, and Lanczos finds them to float32 rounding within a few dozen
    steps. which="bottom" or "both": min(n, m), the full Krylov space, where the answer is
    exact up to rounding. The smallest singular values of a deep network's Jacobian sit in a
    cluster near zero, and Lanczos resolves an end of the spectrum only as fast as that end is
    separated relative to the whole spread: for a deep random tanh map of width 200, the
    bottom values are still off by orders of magnitude after 150 of 200 steps. With fewer
    steps the bottom values are upper bounds (Cauchy interlacing), not estimates.

    Args:
        k: how many singular values are asked for.
        n: the Jacobian's input size.
        m: its output size.
        which: "top", "bottom" or "both", the end of the spectrum asked for.

    Returns:
        The number of Lanczos steps, an int.

    Example:
        >>> from jaxgrad import jacobian
        >>> jacobian.default_num_iterations(5, n=400, m=300)
        50
        >>> jacobian.default_num_iterations(5, n=400, m=300, which="bottom")
        300

    References:
        Golub and Kahan 1965, "Calculating the singular values and pseudo-inverse of a
        matrix" (Lanczos bidiagonalization).
    """
    rank = min(n, m)
    return min(rank, 2 * k + 40) if which == "top" else rank


def _orthogonalize(w: jax.Array, basis: jax.Array) -> jax.Array:
    """w minus its projection on the rows of `basis` (orthonormal or zero rows), twice
    (classical Gram-Schmidt with reorthogonalization, accurate to rounding)."""
    w = w - basis.T @ (basis @ w)
    return w - basis.T @ (basis @ w)


def _lanczos(f, x, m: int, num_iterations: int, key: jax.Array) -> jax.Array:
    """Singular values (descending) of the bidiagonal matrix of `num_iterations` Golub-Kahan-
    Lanczos steps on J, with full reorthogonalization of both Lanczos bases.

    The iteration starts in the smaller of the input and output spaces (on J^T when m < n), so
    that min(n, m) steps span it and return the exact spectrum.
    """
    _, forward = jax.linearize(f, x)
    _, pullback = jax.vjp(f, x)
    jvp = forward
    vjp = lambda u: pullback(u)[0]
    if m < x.shape[0]:  # run on A = J^T: R^m -> R^n
        apply, apply_t, dim_in, dim_out = vjp, jvp, m, x.shape[0]
    else:  # A = J: R^n -> R^m
        apply, apply_t, dim_in, dim_out = jvp, vjp, x.shape[0], m
    dtype = x.dtype
    steps = num_iterations
    tiny = jnp.finfo(dtype).tiny
    breakdown = 100 * jnp.finfo(dtype).eps

    def normalize(w, basis, norm, scale, fresh):
        # On breakdown (an invariant subspace is exhausted), restart from a random direction
        # orthogonal to the basis; the recorded coefficient stays the (near-zero) norm.
        w = jnp.where(norm > breakdown * scale, w, _orthogonalize(fresh, basis))
        return w / jnp.maximum(jnp.linalg.norm(w), tiny)

    # The random numbers are drawn before the scan: the compiled loop body stays small.
    key_start, key_u, key_v = jax.random.split(key, 3)
    v0 = jax.random.normal(key_start, (dim_in,), dtype)
    v0 = v0 / jnp.linalg.norm(v0)
    fresh_u = jax.random.normal(key_u, (steps, dim_out), dtype)
    fresh_v = jax.random.normal(key_v, (steps, dim_in), dtype)
    u_basis = jnp.zeros((steps, dim_out), dtype)
    v_basis = jnp.zeros((steps + 1, dim_in), dtype).at[0].set(v0)

    def step(carry, inputs):
        u_basis, v_basis, u_prev, beta_prev, scale = carry
        j, fresh_u, fresh_v = inputs
        v = v_basis[j]
        u = _orthogonalize(apply(v) - beta_prev * u_prev, u_basis)
        alpha = jnp.linalg.norm(u)
        scale = jnp.maximum(scale, alpha)
        u = normalize(u, u_basis, alpha, scale, fresh_u)
        u_basis = u_basis.at[j].set(u)
        w = _orthogonalize(apply_t(u) - alpha * v, v_basis)
        beta = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, beta)
        v_basis = v_basis.at[j + 1].set(normalize(w, v_basis, beta, scale, fresh_v))
        return (u_basis, v_basis, u, beta, scale), (alpha, beta)

    zero = jnp.zeros((), dtype)
    init = (u_basis, v_basis, jnp.zeros((dim_out,), dtype), zero, zero)
    xs = (jnp.arange(steps), fresh_u, fresh_v)
    _, (alphas, betas) = jax.lax.scan(step, init, xs)
    bidiagonal = jnp.diag(alphas) + jnp.diag(betas[:-1], 1)
    return jnp.linalg.svd(bidiagonal, compute_uv=False)


def singular_values(
    f: Callable[[jax.Array], jax.Array],
    x: ArrayLike,
    *,
    method: str = "auto",
    k: int | None = None,
    which: str = "top",
    num_iterations: int | None = None,
    key: jax.Array | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Singular values, in descending order, of the Jacobian of `f: R^n -> R^m` at `x`.

    Traceable: it can be called under `jax.jit` (with `f` closed over), and `x` can be vmapped.

    Args:
        f: a function of one 1-D array; its output (any shape) is flattened to R^m.
        x: the point, a 1-D floating-point array of size n.
        method: "exact" forms J with `jax.jacfwd` (n <= m) or `jax.jacrev` (n > m), whichever
            takes fewer products, and takes its SVD: O(n m min(n, m)). "lanczos" never forms
            J: Golub-Kahan-Lanczos bidiagonalization, with full reorthogonalization, run for a
            fixed number of steps from one Jacobian-vector product (`jax.linearize`, i.e.
            jvp) and one vector-Jacobian product (`jax.vjp`) each; the Ritz values are the
            singular values of the small bidiagonal matrix. It starts in the smaller of the two
            spaces (on J^T when m < n), so min(n, m) steps are exact up to rounding. "auto" is
            "lanczos" only for the top `k` of a Jacobian with min(n, m) > `AUTO_EXACT_MAX`
            (512), and "exact" otherwise (k None, which="bottom" or "both", or a small J).
        k: how many singular values to return (None: all min(n, m)); required by "lanczos".
        which: with `k`, "top" (the k largest), "bottom" (the k smallest) or "both" (a tuple).
        num_iterations: Lanczos steps, in [k, min(n, m)]; default
            `default_num_iterations(k, n, m, which)`: min(min(n, m), 2 k + 40) for "top",
            min(n, m) for "bottom" and "both" (see there why).
        key: PRNG key of the Lanczos starting vector; default `jax.random.key(0)`.

    Returns:
        An array of min(n, m) values (k is None) or k values, descending; for which="both",
        the tuple (top k, bottom k). Lanczos values are Ritz values: the top ones lower
        bounds, the bottom ones upper bounds of the true values (Cauchy interlacing); the top
        ones converge to float32 rounding within a few dozen steps, the bottom ones far more
        slowly.

    Raises:
        ValueError: x not 1-D, an unknown method or `which`, k or num_iterations out of range,
            "lanczos" without k.
        TypeError: x or f(x) not floating point, k not an int.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> w = jax.random.normal(jax.random.key(0), (300, 300)) / 300 ** 0.5
        >>> f = lambda x: jnp.tanh(w @ x)
        >>> top = singular_values(f, jnp.ones(300), method="lanczos", k=3)
        >>> exact = singular_values(f, jnp.ones(300), method="exact")
        >>> bool(jnp.allclose(top, exact[:3], rtol=1e-4))
        True

    References:
        Golub and Kahan 1965, "Calculating the singular values and pseudo-inverse of a matrix";
        Lanczos 1950.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if which not in WHICH:
        raise ValueError(f"which must be one of {', '.join(WHICH)}; got {which!r}")
    x = _check_x(x)
    flat_f, m = _flat_output(f, x)
    n = x.shape[0]
    rank = min(n, m)
    if rank == 0:
        raise ValueError(f"the Jacobian is empty: input size {n}, output size {m}")
    if k is not None:
        k = _check_int("k", k, 1, rank)
    if method == "auto":
        small = rank <= AUTO_EXACT_MAX
        method = "exact" if k is None or which != "top" or small else "lanczos"
    if method == "exact":
        return _select(_exact(flat_f, x, m), k, which)
    if k is None:
        raise ValueError(
            "method='lanczos' needs k, the number of singular values to return "
            f"(an int in [1, {rank}]); use method='exact' for all of them"
        )
    if num_iterations is None:
        num_iterations = default_num_iterations(k, n, m, which)
    num_iterations = _check_int("num_iterations", num_iterations, k, rank)
    key = jax.random.key(0) if key is None else key
    return _select(_lanczos(flat_f, x, m, num_iterations, key), k, which)


# ----------------------------------------------------------------------------- Hutchinson


def mean_squared_singular_value(
    f: Callable[[jax.Array], jax.Array],
    x: ArrayLike,
    key: jax.Array,
    num_probes: int = 16,
) -> jax.Array:
    """Hutchinson's estimate of tr(J^T J) / n, the mean of the n eigenvalues of J^T J (the
    mean squared singular value of J when n <= m), without forming J.

    With Gaussian probes v ~ N(0, I_n), E ||J v||^2 = tr(J^T J) and
    Var ||J v||^2 = 2 tr((J^T J)^2), so the average over P probes has relative standard
    deviation sqrt(2 / P) * sqrt(sum s^4) / sum s^2: sqrt(2 / (P n)) for an isometry, up to
    sqrt(2 / P) for a rank-one J. One vmapped `jax.jvp` per probe.

    Args:
        f: a function of one 1-D array; its output is flattened.
        x: the point, a 1-D floating-point array.
        key: PRNG key of the probes.
        num_probes: P, an int >= 1.

    Returns:
        A scalar estimate.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> q = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (64, 64)))[0]
        >>> est = mean_squared_singular_value(lambda x: q @ x, jnp.ones(64), jax.random.key(1),
        ...                                   num_probes=64)
        >>> bool(abs(est - 1) < 0.1)
        True

    References:
        Hutchinson 1990, "A stochastic estimator of the trace of the influence matrix for
        Laplacian smoothing splines".
    """
    num_probes = _check_int("num_probes", num_probes, 1)
    x = _check_x(x)
    flat_f, _ = _flat_output(f, x)
    probes = jax.random.normal(key, (num_probes, x.shape[0]), x.dtype)
    # x is not batched, so the primal is computed once and only the tangents are vmapped
    images = jax.vmap(lambda v: jax.jvp(flat_f, (x,), (v,))[1])(probes)
    return jnp.mean(jnp.sum(jnp.square(images), axis=-1)) / x.shape[0]


# ----------------------------------------------------------------------------- depth profile


class DepthProfile(NamedTuple):
    """The Jacobian J_l = d h_l / d h_0 of a deep MLP at every depth l.

    Attributes:
        depths: the requested depths `spectra_at` (1-based), int32, shape (len(spectra_at),).
        mean_sq_singular_value: Hutchinson estimate of tr(J_l^T J_l) / width at l = 1..depth,
            shape (depth,) (index i is depth i + 1).
        spectra: exact singular values of J_l at each requested depth, descending, shape
            (len(spectra_at), width).

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import init, jacobian, nn
        >>> model = nn.MLP(8, 8, depth=4, activation="linear",
        ...                kernel_init=init.orthogonal(), rngs=nnx.Rngs(0))
        >>> key = jax.random.key(0)
        >>> profile = jacobian.depth_profile(model, jnp.ones(8), key, spectra_at=(2, 4))
        >>> profile.depths.tolist(), profile.spectra.shape
        ([2, 4], (2, 8))
    """

    depths: jax.Array
    mean_sq_singular_value: jax.Array
    spectra: jax.Array

    def to_frame(self):
        """A pandas DataFrame with one row per depth: `depth`, `mean_sq_singular_value`, and
        (at the depths in `spectra_at`) the extremes of the exact spectrum, `max_singular_value`
        and `min_singular_value` (nan at the other depths)."""
        import pandas as pd

        host = jax.device_get(self)
        values = np.asarray(host.mean_sq_singular_value)
        if values.ndim != 1:
            raise ValueError(
                f"a frame is of one profile (mean_sq_singular_value of shape (depth,)), got "
                f"shape {values.shape}; index the vmapped axis first"
            )
        largest, smallest = np.full(values.shape, np.nan), np.full(values.shape, np.nan)
        spectra = np.asarray(host.spectra, np.float64)
        for depth, spectrum in zip(np.asarray(host.depths), spectra, strict=True):
            largest[depth - 1], smallest[depth - 1] = spectrum.max(), spectrum.min()
        return pd.DataFrame(
            {
                "depth": np.arange(1, values.shape[-1] + 1),
                "mean_sq_singular_value": values,
                "max_singular_value": largest,
                "min_singular_value": smallest,
            }
        )

    def __repr__(self) -> str:
        if not _concrete(self):  # inside a trace, or abstract: the fields as they are
            fields = ", ".join(f"{key}={value!r}" for key, value in self._asdict().items())
            return f"DepthProfile({fields})"
        host = jax.device_get(self)
        values = np.asarray(host.mean_sq_singular_value, np.float64)
        if values.ndim != 1:
            return (
                f"DepthProfile of {math.prod(values.shape[:-1])} profiles (leading axes "
                f"{values.shape[:-1]}) of {values.shape[-1]} layers; index one"
            )
        depth = values.shape[0]
        lines = [
            f"DepthProfile of {depth} layers (every depth: .to_frame())",
            f"  mean_sq_singular_value: {values[0]:.4g} (depth 1) .. {values[-1]:.4g} "
            f"(depth {depth})",
        ]
        spectra = np.asarray(host.spectra, np.float64)
        for at, spectrum in zip(np.asarray(host.depths), spectra, strict=True):
            lines.append(
                f"  spectrum at depth {at}: {spectrum.size} values, {spectrum.min():.4g} .. "
                f"{spectrum.max():.4g}"
            )
        return "\n".join(lines)


def _check_depths(spectra_at: object, depth: int) -> tuple[int, ...]:
    if isinstance(spectra_at, int | np.integer) and not isinstance(spectra_at, bool):
        spectra_at = (spectra_at,)
    if not isinstance(spectra_at, Sequence) or isinstance(spectra_at, str):
        raise TypeError(f"spectra_at must be a tuple of ints, got {spectra_at!r}")
    return tuple(_check_int("each depth in spectra_at", d, 1, depth) for d in spectra_at)


def _block_tangents(graphdef, layer, h, tangents):
    """The block's output and its Jacobian-vector products with every row of `tangents`."""
    block = nnx.merge(graphdef, *layer)
    apply = lambda h: block.post(block.linear(h), h)[0]
    out = apply(h)
    images = jax.vmap(lambda t: jax.jvp(apply, (h,), (t,))[1])(tangents)
    return out, images


@functools.partial(jax.jit, static_argnames=("graphdef", "num_probes", "spectra_at"))
def _depth_profile_jit(graphdef, state, x, key, *, num_probes, spectra_at):
    model = nnx.merge(graphdef, state)
    h0 = model.embed(x)
    width = h0.shape[-1]
    block_def, params, rest = nnx.split(model.blocks, nnx.Param, ...)
    probes = jax.random.normal(key, (num_probes, width), h0.dtype)

    def body(carry, layer):
        h, tangents = carry
        h, tangents = _block_tangents(block_def, layer, h, tangents)
        mean_sq = jnp.mean(jnp.sum(jnp.square(tangents[:num_probes]), axis=-1)) / width
        return (h, tangents), mean_sq

    # The rows past the probes are J_l^T (row i = J_l e_i), carried only as far as the
    # deepest requested spectrum; the scan stops at every requested depth to take the SVD.
    stops = sorted(set(spectra_at))
    bounds = [0, *stops] + ([model.depth] if not stops or stops[-1] < model.depth else [])
    tangents = jnp.concatenate([probes, jnp.eye(width, dtype=h0.dtype)]) if stops else probes
    h, mean_sq, spectra = h0, [], {}
    for lo, hi in itertools.pairwise(bounds):
        if stops and lo == stops[-1]:
            tangents = tangents[:num_probes]
        segment = jax.tree.map(lambda a, lo=lo, hi=hi: a[lo:hi], (params, rest))
        (h, tangents), seg_mean_sq = jax.lax.scan(body, (h, tangents), segment)
        mean_sq.append(seg_mean_sq)
        if hi in stops:
            spectra[hi] = jnp.linalg.svd(tangents[num_probes:], compute_uv=False)
    ordered = [spectra[d] for d in spectra_at]
    spectra = jnp.stack(ordered) if ordered else jnp.zeros((0, width), h0.dtype)
    return DepthProfile(
        jnp.asarray(spectra_at, jnp.int32).reshape(len(spectra_at)),
        jnp.concatenate(mean_sq),
        spectra,
    )


def depth_profile(
    model: _nn.MLP,
    x: ArrayLike,
    key: jax.Array,
    num_probes: int = 16,
    spectra_at: Sequence[int] = (),
) -> DepthProfile:
    """The input-output Jacobian of a `jaxgrad.nn.MLP` at every depth, at one input.

    The Jacobian at depth l is J_l = d h_l / d h_0, where h_0 = `model.embed(x)`: the input
    projection (and the readout) are excluded, so J_l = prod_{i<=l} D_i W_i^T, with D_i the
    Jacobian of the block's elementwise part (diag(phi'(z_i)) without normalization), and
    I + residual_scale D_i W_i^T for residual blocks. In one jitted forward `lax.scan`:

    - `num_probes` Gaussian tangents ride along with h (a vmapped `jax.jvp` of each block),
      and Hutchinson's estimate of tr(J_l^T J_l) / width is emitted at every depth (see
      `mean_squared_singular_value` for its relative error);
    - the identity's `width` rows ride along too, up to the deepest depth in `spectra_at`, so
      they hold J_l^T, the accumulated product of the per-layer Jacobians; the scan is run in
      segments that end at the requested depths, where the SVD is taken, so nothing of size
      (depth, width, width) is stored. That costs O(width^3) per layer up to that depth.

    Args:
        model: the network; with norm="batch" it must be in evaluation mode (`model.eval()`).
        x: one input, shape (in_features,).
        key: PRNG key of the probes.
        num_probes: an int >= 1.
        spectra_at: 1-based depths (ints in [1, depth]) at which to return the exact spectrum.

    Returns:
        `DepthProfile` with `mean_sq_singular_value` of shape (depth,) and `spectra` of shape
        (len(spectra_at), width), in the order of `spectra_at`.

    Raises:
        TypeError: model not an MLP; spectra_at not ints.
        ValueError: x not (in_features,); a depth outside [1, depth]; batch norm in training
            mode (a batch statistic couples the examples, so there is no per-example Jacobian).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import init, nn
        >>> model = nn.MLP(16, 16, depth=8, activation="linear",
        ...                kernel_init=init.orthogonal(), rngs=nnx.Rngs(0))
        >>> profile = depth_profile(model, jnp.ones(16), jax.random.key(0), spectra_at=(8,))
        >>> profile.mean_sq_singular_value.shape, profile.spectra.shape
        ((8,), (1, 16))
        >>> bool(jnp.allclose(profile.spectra, 1, atol=1e-5))
        True

    References:
        Pennington, Schoenholz and Ganguli 2017; Saxe et al. 2014; Hutchinson 1990.
    """
    if not isinstance(model, _nn.MLP):
        raise TypeError(f"depth_profile takes a jaxgrad.nn.MLP, got {type(model).__name__}")
    if model.norm == "batch" and not model.blocks.norm.use_running_average:
        raise ValueError(
            "a batch-norm MLP in training mode normalizes with batch statistics, so it has no "
            "per-example Jacobian; call model.eval() first to use the running averages"
        )
    num_probes = _check_int("num_probes", num_probes, 1)
    spectra_at = _check_depths(spectra_at, model.depth)
    x = _check_x(x)
    if x.shape != (model.in_features,):
        raise ValueError(
            f"x must be one input of shape ({model.in_features},), got {tuple(x.shape)}"
        )
    graphdef, state = nnx.split(model)
    return _depth_profile_jit(graphdef, state, x, key, num_probes=num_probes, spectra_at=spectra_at)


# ----------------------------------------------------------------------------- summary


class SpectrumSummary(NamedTuple):
    """Summary statistics of a spectrum (reduced over its last axis).

    Attributes:
        mean_sq: mean of s^2 (tr(J^T J) / number of values).
        var_sq: variance of s^2 (population variance); Pennington et al. 2017 track it.
        max: largest singular value.
        min: smallest singular value.
        condition_number: max / min, inf when min == 0.
        isometry_score: fraction of values with 1 / (1 + eps) <= s <= 1 + eps.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import jacobian
        >>> summary = jacobian.spectrum_summary(jnp.array([[1.0, 1.0], [2.0, 0.5]]))
        >>> summary.mean_sq.tolist(), summary.max.tolist()  # one summary per row
        ([1.0, 2.125], [1.0, 2.0])
    """

    mean_sq: jax.Array
    var_sq: jax.Array
    max: jax.Array
    min: jax.Array
    condition_number: jax.Array
    isometry_score: jax.Array

    def to_frame(self):
        """A tidy pandas DataFrame: one row per spectrum (one for a single spectrum, one per
        leading index of a stack, with its `index`), one column per field."""
        import pandas as pd

        host = jax.device_get(self)
        arrays = {name: np.asarray(value) for name, value in host._asdict().items()}
        shape = arrays["mean_sq"].shape
        columns = {}
        if shape:
            columns["index"] = [str(i) if len(i) > 1 else i[0] for i in np.ndindex(shape)]
        columns.update({name: value.reshape(-1) for name, value in arrays.items()})
        return pd.DataFrame(columns)

    def __repr__(self) -> str:
        if not _concrete(self):  # inside a trace, or abstract: the fields as they are
            fields = ", ".join(f"{key}={value!r}" for key, value in self._asdict().items())
            return f"SpectrumSummary({fields})"
        host = jax.device_get(self)
        shape = np.shape(host.mean_sq)
        head = "SpectrumSummary"
        if shape:
            head += f" of {math.prod(shape)} spectra (shape {shape}; every one: .to_frame())"
        return "\n".join([head] + [f"  {k}: {_span(v)}" for k, v in host._asdict().items()])


def spectrum_summary(singular_values: ArrayLike, eps: float = 0.1) -> SpectrumSummary:
    """Moments, extremes, condition number and isometry score of singular values.

    Reduces over the last axis, so a stack of spectra (`DepthProfile.spectra`) gives one
    summary per row; jittable and vmappable.

    Args:
        singular_values: non-negative values, shape (..., k) with k >= 1.
        eps: the isometry tolerance, > 0: s counts as isometric when within a factor 1 + eps
            of 1.

    Returns:
        `SpectrumSummary`, each field of shape `singular_values.shape[:-1]`.

    Raises:
        ValueError: singular values of shape (..., 0) or a scalar; an eps <= 0 or not finite.
        TypeError: an eps that is not a real number.

    Example:
        >>> import jax.numpy as jnp
        >>> summary = spectrum_summary(jnp.array([2.0, 1.05, 1.0, 0.5]))
        >>> float(summary.condition_number), float(summary.isometry_score)
        (4.0, 0.5)

    References:
        Pennington, Schoenholz and Ganguli 2017, "Resurrecting the sigmoid in deep learning
        through dynamical isometry: theory and practice".
    """
    eps = _init._positive("eps", eps)
    s = jnp.asarray(singular_values)
    if s.ndim < 1 or s.shape[-1] == 0:
        raise ValueError(f"singular_values must have shape (..., k) with k >= 1, got {s.shape}")
    if not jnp.issubdtype(s.dtype, jnp.floating):
        s = s.astype(jnp.float32)
    squares = jnp.square(s)
    largest, smallest = jnp.max(s, axis=-1), jnp.min(s, axis=-1)
    condition = jnp.where(
        smallest > 0, largest / jnp.where(smallest > 0, smallest, 1), jnp.inf
    ).astype(s.dtype)
    isometric = (s >= 1 / (1 + eps)) & (s <= 1 + eps)
    return SpectrumSummary(
        mean_sq=jnp.mean(squares, axis=-1),
        var_sq=jnp.var(squares, axis=-1),
        max=largest,
        min=smallest,
        condition_number=condition,
        isometry_score=jnp.mean(isometric, axis=-1, dtype=s.dtype),
    )
