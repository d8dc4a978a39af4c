"""Weight initializers, fan computation and gains.

Every public initializer is a factory: it validates its hyperparameters when called and
returns `init(key, shape, dtype=jnp.float32) -> jax.Array`, the `jax.nn.initializers`
protocol, so it can be given to `flax.nnx.Linear(kernel_init=...)`. Layouts are JAX/Flax's:
a dense kernel is `(fan_in, fan_out)`, a convolution kernel `(*spatial, in, out)`.
Definitions follow PyTorch's `torch.nn.init`, but with plain (not truncated) normals.

Random values are drawn in float32 (float64 when that is the requested dtype) and then cast,
so a bfloat16 kernel has the distribution of a rounded float32 one. A shape with a zero in
it gives an empty array.

Every initializer refuses, with a ValueError or TypeError before drawing anything: a key
that is not a PRNG key, a shape with a non-integer dimension, an array larger than the
memory it would be allocated in, and hyperparameters whose draws could overflow the dtype
(the factory refuses what would overflow float64, the call what would overflow the dtype
asked for, e.g. `uniform(-1e300, 1e300)` in float32).

Example:
    >>> import jax
    >>> from flax import nnx
    >>> from jaxgrad import init
    >>> layer = nnx.Linear(400, 400, kernel_init=init.xavier_uniform(init.calculate_gain("tanh")),
    ...                    rngs=nnx.Rngs(0))
    >>> layer.kernel.shape
    (400, 400)

References:
    Glorot and Bengio 2010, "Understanding the difficulty of training deep feedforward neural
    networks". He et al. 2015, "Delving Deep into Rectifiers". LeCun et al. 1998, "Efficient
    BackProp". Saxe et al. 2014, "Exact solutions to the nonlinear dynamics of learning in deep
    linear neural networks". Martens 2010, "Deep learning via Hessian-free optimization".
    Xiao et al. 2018, "Dynamical Isometry and a Mean Field Theory of CNNs".
"""

from __future__ import annotations

import functools
import math
import operator
import os
from collections.abc import Callable, Sequence
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxgrad import activations as _act
from jaxgrad import prng as _prng


class Initializer(Protocol):
    """The `jax.nn.initializers` protocol: `init(key, shape, dtype=jnp.float32) -> jax.Array`.

    Every factory of this module returns one, and any function of this form (`jax.nn.initializers`'
    too) can be passed where jaxgrad asks for an initializer.

    An initializer may also carry a boolean `cheap_draw` attribute (jaxgrad's do): True when
    each number is a few arithmetic operations on one random word (a uniform draw, a
    constant), so that `jaxgrad.propagate` may redraw a kernel where it is used instead of
    storing it. Without it a draw counts as dear; set it on your own initializer to declare it
    cheap.

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> initializer: init.Initializer = init.uniform(-1.0, 1.0)
        >>> initializer(jax.random.key(0), (3, 2)).shape, initializer.cheap_draw
        ((3, 2), True)
    """

    def __call__(
        self, key: jax.Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32
    ) -> jax.Array: ...


# ----------------------------------------------------------------------------- validation


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _nonnegative(name: str, value: object) -> float:
    value = _real(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def _positive(name: str, value: object) -> float:
    value = _real(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def _interval(low_name: str, low: object, high_name: str, high: object) -> tuple[float, float]:
    low, high = _real(low_name, low), _real(high_name, high)
    if not low < high:
        raise ValueError(f"need {low_name} < {high_name}, got {low_name}={low}, {high_name}={high}")
    return low, high


def _dimension(shape: object, dim: object) -> int:
    """One dimension as an int: Python and NumPy integers pass, bools and floats do not."""
    if isinstance(dim, bool | np.bool_):
        raise TypeError(f"shape must be a sequence of ints, got {shape!r} (a bool {dim!r})")
    try:
        return operator.index(dim)
    except TypeError:
        raise TypeError(
            f"shape must be a sequence of ints, got {shape!r} ({dim!r} is not an integer)"
        ) from None


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence of ints, got {shape!r}") from None
    dims = tuple(_dimension(shape, d) for d in dims)
    if any(d < 0 for d in dims):
        raise ValueError(f"shape must have non-negative dimensions, got {dims}")
    return dims


def _largest_normal(dt: jnp.dtype) -> float:
    """A bound on |z| for z drawn by `jax.random.normal` in `dt`: it inverts a uniform that
    stays eps/2 away from +-1, and P(|z| > t) <= exp(-t^2 / 2) gives t <= sqrt(2 log(2 / eps))
    (5.77 for float32, 8.57 for float64; the largest draws are 5.42 and 8.3)."""
    return math.sqrt(2.0 * math.log(2.0 / float(jnp.finfo(dt).eps)))


_FLOAT64_MAX = float(np.finfo(np.float64).max)


def _check_float64_magnitude(name: str, magnitude: float, what: str) -> None:
    """At the factory: refuse what overflows float64, the widest sampling dtype."""
    if not magnitude <= _FLOAT64_MAX:
        raise ValueError(
            f"{name}: {what} is {magnitude:.4g}, beyond the largest finite float64 "
            f"({_FLOAT64_MAX:.4g}); every draw would overflow"
        )


@functools.cache
def _memory_limit() -> tuple[int, str] | None:
    """(bytes, where) an array cannot exceed: the memory of the default backend's devices
    where they report one (GPUs, TPUs), else the machine's physical memory."""
    try:
        limits = [(device.memory_stats() or {}).get("bytes_limit") for device in jax.devices()]
    except Exception:  # a backend without memory statistics
        limits = [None]
    if limits and all(limits):
        count = len(limits)
        where = f"the memory of the {count} {jax.default_backend()} device" + "s" * (count > 1)
        return int(sum(limits)), where
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return None


def _check_size(name: str, dims: tuple[int, ...], sampling: jnp.dtype, dtype: jnp.dtype) -> None:
    """Refuse an array that could not be allocated: such a draw fails only when read."""
    limit = _memory_limit()
    if limit is None:
        return
    limit_bytes, where = limit
    needed = math.prod(dims) * max(sampling.itemsize, dtype.itemsize)
    if needed > limit_bytes:
        raise ValueError(
            f"{name}: a {dtype} array of shape {dims} needs {needed:,} bytes "
            f"({needed / 2**30:,.1f} GiB) to draw, more than the {limit_bytes:,} bytes "
            f"({limit_bytes / 2**30:,.1f} GiB) of {where}"
        )


def _check_magnitude(
    name: str, magnitude: float, sampling: jnp.dtype, dtype: jnp.dtype, hint: str
) -> None:
    """Refuse a draw whose values (or intermediate results) could reach `magnitude`, beyond
    the largest finite number of the sampling dtype or of the dtype asked for."""
    limit_dtype = min(sampling, dtype, key=lambda d: float(jnp.finfo(d).max))
    limit = float(jnp.finfo(limit_dtype).max)
    if not magnitude <= limit:
        raise ValueError(
            f"{name}: its draw reaches {magnitude:.4g} in magnitude ({hint}), beyond the "
            f"largest finite {limit_dtype} ({limit:.4g}), so values would be inf or nan; use "
            "smaller hyperparameters, or a wider dtype (float64 needs jax_enable_x64) if they "
            "are meant"
        )


def _sampling_dtype(dtype: DTypeLike) -> jnp.dtype:
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"initializers produce floating-point arrays; got dtype {dtype}")
    return jnp.dtype(jnp.float64) if dtype == jnp.float64 else jnp.dtype(jnp.float32)


def _initializer(
    draw: Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array],
    name: str,
    min_ndim: int = 0,
    cheap_draw: bool = False,
    largest: Callable[[tuple[int, ...], jnp.dtype], tuple[float, str]] | None = None,
) -> Initializer:
    """Wrap `draw(key, shape, sampling_dtype)` into the initializer protocol.

    The wrapper normalizes the shape, checks the key, the dtype and the number of
    dimensions, returns an empty array for an empty shape, refuses an array larger than
    the memory it would live in, refuses a draw whose values could overflow (`largest(shape,
    sampling_dtype)` gives a bound on the magnitudes the draw computes and what it is), and
    casts the float32/float64 sample to the dtype. A threefry key draws through
    `jaxgrad.prng.fast_key`: the same numbers, faster. Every check reads static things
    (shapes, dtypes, hyperparameters), so it runs the same inside a jit trace.

    The initializer's `cheap_draw` attribute says that each number is a few arithmetic
    operations on one random word (uniform draws, constants). On a 2-core CPU at the seed's
    shape, drawing such kernels twice cost less than storing the stack in fresh memory, so
    `jaxgrad.propagate` redraws them on CPU where it uses them. Normal draws (an inverse
    error function a number) cost about 2.6 times a uniform one there, and orthogonal
    and sparse draws far more.
    """

    def init(key: jax.Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> jax.Array:
        dims = _shape(shape)
        sampling = _sampling_dtype(dtype)
        _prng.check_key(key, single=True)
        if len(dims) < min_ndim:
            raise ValueError(
                f"{name} needs a shape with at least {min_ndim} dimensions, got {dims}"
            )
        if math.prod(dims) == 0:
            return jnp.zeros(dims, dtype)
        _check_size(name, dims, sampling, jnp.dtype(dtype))
        if largest is not None:
            magnitude, what = largest(dims, sampling)
            _check_magnitude(name, magnitude, sampling, jnp.dtype(dtype), what)
        return draw(_prng.fast_key(key), dims, sampling).astype(dtype)

    init.__name__ = name
    init.__qualname__ = name
    init.cheap_draw = cheap_draw
    return init


# ----------------------------------------------------------------------------- fans and gains


def compute_fans(shape: Sequence[int], in_axis: int = -2, out_axis: int = -1) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel: its input and output sizes times the receptive field.

    Args:
        shape: the kernel's shape, at least 2-D; dense `(in, out)`, conv `(*spatial, in, out)`.
        in_axis, out_axis: which axes hold the input and output features.

    Returns:
        `(shape[in_axis] * receptive, shape[out_axis] * receptive)` where `receptive` is the
        product of every other axis.

    Raises:
        ValueError: for a shape with fewer than 2 dimensions, or axes out of range or equal.

    Example:
        >>> from jaxgrad import init
        >>> init.compute_fans((3, 3, 16, 32))  # a 3 x 3 convolution from 16 to 32 channels
        (144, 288)
    """
    dims = _shape(shape)
    if len(dims) < 2:
        raise ValueError(
            f"fans need a shape with at least 2 dimensions (fan_in, fan_out), got {dims}"
        )
    ndim = len(dims)
    for axis_name, axis in (("in_axis", in_axis), ("out_axis", out_axis)):
        if not -ndim <= axis < ndim:
            raise ValueError(f"{axis_name}={axis} is out of range for shape {dims}")
    in_axis, out_axis = in_axis % ndim, out_axis % ndim
    if in_axis == out_axis:
        raise ValueError(f"in_axis and out_axis must differ, both are {in_axis}")
    receptive = math.prod(d for i, d in enumerate(dims) if i not in (in_axis, out_axis))
    return dims[in_axis] * receptive, dims[out_axis] * receptive


# PyTorch's torch.nn.init.calculate_gain table.
_UNIT_GAIN = (
    "linear",
    "identity",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
)
GAIN_NAMES = (*_UNIT_GAIN, "tanh", "relu", "leaky_relu", "selu")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity: PyTorch's `calculate_gain` table exactly.

    linear, identity, conv1d/2d/3d, conv_transpose1d/2d/3d and sigmoid: 1; tanh: 5/3;
    relu: sqrt(2); leaky_relu: sqrt(2 / (1 + slope^2)) with slope `param` (0.01 when None);
    selu: 3/4. For any other activation use `computed_gain` or `empirical_gain`.

    Args:
        nonlinearity: a name from `GAIN_NAMES`.
        param: the negative slope of leaky_relu; ignored by the others.

    Returns:
        The gain as a Python float.

    Raises:
        ValueError: an unknown name (the message lists the valid ones), a non-finite `param`.
        TypeError: a `param` that is not a real number (NumPy numbers are; bools are not).

    Example:
        >>> from jaxgrad.init import calculate_gain
        >>> round(calculate_gain("leaky_relu", 0.2), 6)
        1.38675
        >>> round(calculate_gain("tanh"), 4)
        1.6667

    References:
        He, Zhang, Ren and Sun 2015, "Delving Deep into Rectifiers" (relu, leaky_relu);
        Klambauer et al. 2017, "Self-Normalizing Neural Networks": their fixed point needs
        gain 1 (`lecun_normal`); selu's 3/4 is PyTorch's choice, which gives up
        self-normalization for a steadier gradient.
    """
    if nonlinearity in _UNIT_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else _real("leaky_relu param (negative slope)", param)
        return math.sqrt(2.0) / math.hypot(1.0, slope)  # slope**2 would overflow past 1e154
    if nonlinearity == "selu":
        return 3.0 / 4.0
    raise ValueError(
        f"unsupported nonlinearity {nonlinearity!r}; valid names are: {', '.join(GAIN_NAMES)} "
        "(for any other activation use jaxgrad.init.computed_gain)"
    )


def computed_gain(
    activation: str | _act.Activation, criterion: str = "forward", *, num_points: int | None = None
) -> float:
    """A gain for any activation from its Gaussian moments.

    With z ~ N(0, 1): "forward" gives 1/sqrt(E[phi(z)^2]), the gain that keeps the second
    moment of the signal at 1 from layer to layer; "backward" gives 1/sqrt(E[phi'(z)^2]),
    the gain that keeps the gradient's second moment (He et al. 2015, sec. 2.2). Both are
    sqrt(2) for relu.

    The moments are the ones `jaxgrad.theory` uses (`jaxgrad.activations.gaussian_expectation`:
    the integral split at the activation's breakpoints): exact to float64 rounding
    (relative error below 1e-13) for the registry's activations under `jax_enable_x64`, to
    float32 rounding otherwise; phi is evaluated in the default dtype and its square summed
    in float64, so phi = 1e30 x keeps its gain 1e-30. A callable with kinks away from 0
    should declare them (`phi.breakpoints = (...)`, see `jaxgrad.activations.breakpoints`).

    Args:
        activation: a name from `jaxgrad.activations.names()` or an elementwise callable.
        criterion: "forward" or "backward".
        num_points: None for the split rule, or a Gauss-Hermite order (at most
            `jaxgrad.activations.MAX_QUADRATURE_POINTS`, 2048), the rule of jaxgrad before
            0.2 (128 points gave softsign's backward gain 2.2% high: it converges slowly at
            kinks).

    Returns:
        The gain as a Python float.

    Raises:
        ValueError: a bad `criterion` or `num_points`; a second moment of zero, or
            non-finite values at the quadrature nodes: no finite gain exists.

    Example:
        >>> from jaxgrad.init import computed_gain
        >>> round(computed_gain("relu"), 4)  # sqrt(2)
        1.4142
        >>> round(computed_gain("softsign", "backward"), 4)  # Gauss-Hermite gave 2.1417
        2.0958

    References:
        Glorot and Bengio 2010, "Understanding the difficulty of training deep feedforward
        neural networks" (the forward and backward criteria); He, Zhang, Ren and Sun 2015,
        "Delving Deep into Rectifiers", sec. 2.2.
    """
    if criterion not in ("forward", "backward"):
        raise ValueError(f"criterion must be 'forward' or 'backward', got {criterion!r}")
    phi = _act.resolve(activation)
    fn = phi if criterion == "forward" else _act.derivative(phi)
    dtype = jnp.result_type(float)
    if num_points is None:
        centers = jnp.asarray(_act._centers(_act.breakpoints(fn)), dtype)
        nodes, weights = _act.split_rule(centers, jnp.ones_like(centers))
        described = f"{nodes.shape[0]} quadrature nodes (|z| up to {_act.QUADRATURE_CUTOFF:g})"
    else:
        nodes, weights = _act.hermite_nodes(num_points)
        described = f"{num_points} quadrature nodes (|z| up to {np.max(nodes):.3g})"
    weights = np.asarray(weights, np.float64)
    # phi at the nodes in the default dtype, the moment summed in float64: squares of
    # float32 values cannot overflow there (phi = 1e30 x keeps its gain 1e-30).
    values = np.asarray(fn(jnp.asarray(nodes, dtype)), np.float64)
    name = _act.name_of(activation)
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"the {criterion} values of {name} are inf or nan at some of the {described}; "
            "no finite gain exists"
        )
    second_moment = float(np.sum(weights * values**2) / np.sum(weights))
    if not second_moment > 0:
        raise ValueError(
            f"E[{criterion} value^2] of {name} is {second_moment}; no finite gain exists"
        )
    return 1.0 / math.sqrt(second_moment)


def empirical_gain(
    activation: str | _act.Activation, key: jax.Array, num_samples: int = 100_000
) -> jax.Array:
    """std(x) / std(phi(x)) for x ~ N(0, 1): the gain measured as the seed articles do.

    For tanh it is about 1.59, below PyTorch's 5/3. Jittable for a fixed `num_samples`.
    std(phi(x)) is taken after scaling by max |phi(x)|, so outputs whose squares overflow
    (phi(x) = 1e25 x) still give their gain.

    The gain is undefined when phi(x) has zero variance (a constant, or relu(x - 100) on
    these samples), or non-finite values, and when std(x) / std(phi(x)) overflows. Called
    with concrete values such cases raise; under `jax.jit` or `jax.vmap`, where nothing can
    be raised, the result is nan.

    Args:
        activation: a name or an elementwise callable.
        key: PRNG key, `jax.random.key(seed)` (or a legacy `jax.random.PRNGKey`).
        num_samples: how many standard normal samples.

    Returns:
        A scalar array, finite and > 0 (or nan under a trace, see above).

    Raises:
        ValueError: a bad `num_samples`; outside a trace, an undefined gain (see above).
        TypeError: a key that is not a PRNG key.

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> gain = init.empirical_gain("tanh", jax.random.key(0), num_samples=10_000)
        >>> round(float(gain), 1)  # PyTorch's table says 5/3
        1.6
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2, got {num_samples!r}")
    phi = _act.resolve(activation)
    _prng.check_key(key, single=True)
    x = jax.random.normal(key, (num_samples,))
    y = phi(x)
    scale = jnp.max(jnp.abs(y))
    constant = jnp.all(y == y.ravel()[0])
    y_std = jnp.where(constant, 0.0, scale * jnp.std(y / jnp.where(scale > 0, scale, 1)))
    gain = jnp.std(x) / y_std
    defined = jnp.isfinite(gain) & (gain > 0)
    if isinstance(gain, jax.core.Tracer):
        return jnp.where(defined, gain, jnp.nan)
    if not bool(defined):
        name = _act.name_of(activation)
        nonfinite = int(jnp.sum(~jnp.isfinite(y)))
        if nonfinite:
            reason = f"it returned inf or nan for {nonfinite} of the {num_samples} samples"
        elif bool(constant):
            reason = f"it returned {float(y.ravel()[0])} for all {num_samples} samples"
        else:
            reason = f"std(phi(x)) = {float(y_std):.4g} makes the ratio overflow {gain.dtype}"
        raise ValueError(
            f"empirical_gain of {name} is undefined: {reason} of N(0, 1); the gain "
            "std(x) / std(phi(x)) needs a finite phi(x) with nonzero variance"
        )
    return gain


# ----------------------------------------------------------------------------- constant and plain


def constant(value: float) -> Initializer:
    """Every entry equal to `value`.

    Args:
        value: the entry, a real number (refused at the call where the dtype cannot hold it).

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Raises:
        TypeError: a value that is not a real number.
        ValueError: a non-finite value.

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> init.constant(0.1)(jax.random.key(0), (2,)).tolist()
        [0.10000000149011612, 0.10000000149011612]
    """
    value = _real("value", value)
    return _initializer(
        lambda key, shape, dt: jnp.full(shape, value, dt),
        "constant",
        cheap_draw=True,
        largest=lambda shape, dt: (abs(value), f"value={value}"),
    )


def zeros() -> Initializer:
    """All zeros: `constant(0.0)`.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> init.zeros()(jax.random.key(0), (2, 2)).tolist()
        [[0.0, 0.0], [0.0, 0.0]]
    """
    return constant(0.0)


def ones() -> Initializer:
    """All ones: `constant(1.0)`.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> init.ones()(jax.random.key(0), (3,)).tolist()
        [1.0, 1.0, 1.0]
    """
    return constant(1.0)


def normal(std: float = 1.0, mean: float = 0.0) -> Initializer:
    """N(mean, std^2) entries.

    Refused where a draw could overflow: |mean| + 5.77 std beyond float32's 3.4e38 at a
    float32 call (5.77 bounds jax's float32 normal draws), |mean| + 8.57 std beyond float64's
    1.8e308 at once.

    Args:
        std: the standard deviation, >= 0.
        mean: the mean.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Raises:
        TypeError: a hyperparameter that is not a real number.
        ValueError: std < 0, a non-finite hyperparameter, or one whose draws overflow float64.
        At the call, a key that is not a PRNG key, a non-integer dimension, or an array too large
        for memory or whose draw would overflow the dtype raise ValueError or TypeError.

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> kernel = init.normal(0.05)(jax.random.key(0), (256, 256))
        >>> round(float(kernel.std()), 2)
        0.05
    """
    std, mean = _nonnegative("std", std), _real("mean", mean)

    def largest(shape, dt):
        z = _largest_normal(dt)
        return abs(mean) + std * z, f"|mean| + {z:.3g} std, mean={mean}, std={std}"

    magnitude, what = largest((), jnp.dtype(jnp.float64))
    _check_float64_magnitude("normal", magnitude, what)
    return _initializer(
        lambda key, shape, dt: mean + std * jax.random.normal(key, shape, dt),
        "normal",
        largest=largest,
    )


def uniform(low: float = 0.0, high: float = 1.0) -> Initializer:
    """U(low, high) entries.

    The draw computes low + (high - low) u, so `high - low` must be finite: refused at once
    beyond float64 (`uniform(-1e308, 1e308)`), at a float32 call beyond float32's 3.4e38.

    Args:
        low: the lower bound.
        high: the upper bound, > low.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Raises:
        TypeError: a bound that is not a real number.
        ValueError: low >= high, a non-finite bound, or high - low beyond float64.

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> kernel = init.uniform(-0.1, 0.1)(jax.random.key(0), (64, 64))
        >>> bool(kernel.min() >= -0.1) and bool(kernel.max() < 0.1)
        True
    """
    low, high = _interval("low", low, "high", high)
    _check_float64_magnitude("uniform", high - low, f"high - low with low={low}, high={high}")

    def largest(shape, dt):
        return max(abs(low), abs(high), high - low), f"low={low}, high={high}"

    return _initializer(
        lambda key, shape, dt: jax.random.uniform(key, shape, dt, low, high),
        "uniform",
        cheap_draw=True,
        largest=largest,
    )


def _normal_cdf(x: float) -> float:
    """Phi(x) in float64, accurate in the lower tail (down to about -38)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _tail_resolution(dt: jnp.dtype) -> float:
    """The smallest Phi(-|near end|) a tail draw in `dt` resolves: below tiny / eps, more
    than a fraction eps of the uniform draws would fall among subnormal numbers."""
    info = jnp.finfo(dt)
    return float(info.tiny) / float(info.eps)


def trunc_normal(
    std: float = 1.0, mean: float = 0.0, low: float = -2.0, high: float = 2.0
) -> Initializer:
    """N(mean, std^2) conditioned on [low, high]; the cut-offs are absolute, as in PyTorch.

    Note that the resulting standard deviation is below `std` (see `variance_scaling` for the
    corrected truncated normal that jax uses).

    An interval that lies wholly on one side of the mean is sampled accurately:
    `trunc_normal(low=10, high=11)` has mean 10.098, where the inverse-error-function route
    of PyTorch and `jax.random` put every draw at 10.999999. Such a tail is refused
    where its probability Phi(-|near end in standard units|) is below what the
    sampling dtype resolves (about 11.7 standard deviations from the mean in float32, 36.5
    in float64). Draws are clipped to [low, high].

    Args:
        std: standard deviation of the normal before truncation, > 0.
        mean: its mean.
        low, high: the absolute cut-offs, low < high.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array`.

    Raises:
        ValueError: std <= 0, low >= high, a tail beyond float64's reach (at once), beyond
            float32's (at a float32 call), or cut-offs that overflow the dtype.
        TypeError: a hyperparameter that is not a real number.

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> kernel = init.trunc_normal(std=1.0, low=-1.0, high=1.0)(jax.random.key(0), (1000,))
        >>> bool(abs(kernel).max() <= 1.0), round(float(kernel.std()), 1)  # below std
        (True, 0.5)
    """
    # An interval that contains the mean is drawn as PyTorch and `jax.random` do (inverse
    # error function of a uniform); a one-sided tail through the normal CDF of that tail,
    # ndtr and its inverse ndtri (reflected for an upper tail), which stay far from 1.
    std, mean = _positive("std", std), _real("mean", mean)
    low, high = _interval("low", low, "high", high)
    a, b = (low - mean) / std, (high - mean) / std
    bound = max(abs(low), abs(high), abs(low - mean), abs(high - mean))
    _check_float64_magnitude(
        "trunc_normal",
        bound,
        f"max(|low|, |high|, |low - mean|, |high - mean|) with low={low}, high={high}, mean={mean}",
    )
    # An interval on one side of the mean as (far end, near end) in the lower tail, in
    # standard units (an upper tail [a, b] is sampled as -z for z in [-b, -a]); None when
    # the interval holds the mean.
    if a >= 0:
        tail, sign = (-b, -a), -1.0
    elif b <= 0:
        tail, sign = (a, b), 1.0
    else:
        tail, sign = None, 1.0

    def check_tail(dt):
        if tail is None:
            return
        mass_near = _normal_cdf(tail[1])
        if not mass_near >= _tail_resolution(dt):
            side = "above" if sign < 0 else "below"
            raise ValueError(
                f"trunc_normal: [low, high] = [{low}, {high}] lies {abs(tail[1]):.4g} standard "
                f"deviations {side} the mean {mean}, where the normal's tail probability "
                f"{mass_near:.3g} is below the {_tail_resolution(dt):.3g} that {dt} resolves "
                f"(about {-_ndtri64(_tail_resolution(dt)):.3g} standard deviations); "
                + (
                    "bring mean closer to the interval"
                    if dt == jnp.float64
                    else "sample in float64 (jax_enable_x64, dtype=jnp.float64, which reaches "
                    "36.5 standard deviations) or bring mean closer to the interval"
                )
            )

    check_tail(jnp.dtype(jnp.float64))

    def largest(shape, dt):
        return bound, f"low={low}, high={high}, mean={mean}"

    def draw(key, shape, dt):
        check_tail(dt)  # before anything is drawn
        if tail is None:  # PyTorch's and jax's inverse error function of a uniform
            z = jax.random.truncated_normal(key, a, b, shape, dt)
        else:
            # u uniform in (Phi(far), Phi(near)], Phi in float64: u is 0, and ndtri(u) -inf,
            # only when rounding takes it there (about 2^-24 of float32 draws), and the clip
            # below puts that draw at the far end.
            phi_far, phi_near = _normal_cdf(tail[0]), _normal_cdf(tail[1])
            u = phi_near - jax.random.uniform(key, shape, dt) * (phi_near - phi_far)
            z = sign * jax.scipy.special.ndtri(u)
        return jnp.clip(mean + std * z, low, high)

    return _initializer(draw, "trunc_normal", largest=largest)


def _ndtri64(p: float) -> float:
    """Phi^-1(p) for a small p in float64 (for messages): bisection on `_normal_cdf`."""
    lo, hi = -40.0, 0.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _normal_cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


# ----------------------------------------------------------------------------- variance scaling

_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("normal", "uniform", "truncated_normal")
# std of N(0, 1) truncated to [-2, 2], to make a truncated normal have the requested variance.
_TRUNC_STD = 0.87962566103423978


def variance_scaling(
    scale: float,
    mode: str = "fan_in",
    distribution: str = "normal",
    *,
    in_axis: int = -2,
    out_axis: int = -1,
) -> Initializer:
    """Zero-mean entries with variance `scale / fan`: the family Xavier, He and LeCun belong to.

    Args:
        scale: variance multiplier (the gain squared), >= 0.
        mode: "fan_in", "fan_out" or "fan_avg" ((fan_in + fan_out) / 2).
        distribution: "normal", "uniform" (bound sqrt(3 * variance)) or "truncated_normal"
            (cut at two standard deviations and rescaled to the variance, as in jax).
        in_axis: the kernel's input-feature axis (keyword only), for `compute_fans`.
        out_axis: the kernel's output-feature axis (keyword only), for `compute_fans`.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` for shapes of at
        least 2 dimensions.

    Raises:
        ValueError: a bad `mode` or `distribution`, a negative or non-finite `scale`; at the
            call, a shape whose draw could overflow the dtype (sqrt(3 scale / fan) beyond
            float32's 3.4e38 for a float32 kernel).

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> he = init.variance_scaling(2.0, "fan_in", "normal")  # He et al.'s normal
        >>> kernel = he(jax.random.key(0), (512, 256))
        >>> round(float(kernel.var() * 512), 1)  # scale / fan_in times fan_in
        2.0

    References:
        Glorot and Bengio 2010; He, Zhang, Ren and Sun 2015; LeCun, Bottou, Orr and Mueller
        1998, "Efficient BackProp".
    """
    scale = _nonnegative("scale", scale)
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(
            f"distribution must be one of {', '.join(_DISTRIBUTIONS)}, got {distribution!r}"
        )

    def std_of(shape):
        fan_in, fan_out = compute_fans(shape, in_axis, out_axis)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        return math.sqrt(scale / fan)

    def largest(shape, dt):
        std = std_of(shape)
        if distribution == "uniform":
            return math.sqrt(3.0) * std, f"the bound sqrt(3) std, std={std:.4g}"
        if distribution == "truncated_normal":
            return 2.0 * std / _TRUNC_STD, f"the cut-off 2 std / 0.88, std={std:.4g}"
        z = _largest_normal(dt)
        return z * std, f"{z:.3g} std, std={std:.4g}"

    def draw(key, shape, dt):
        std = std_of(shape)
        if distribution == "uniform":
            bound = math.sqrt(3.0) * std
            return jax.random.uniform(key, shape, dt, -bound, bound)
        if distribution == "truncated_normal":
            return std / _TRUNC_STD * jax.random.truncated_normal(key, -2.0, 2.0, shape, dt)
        return std * jax.random.normal(key, shape, dt)

    return _initializer(
        draw,
        f"variance_scaling_{mode}_{distribution}",
        min_ndim=2,
        cheap_draw=distribution == "uniform",
        largest=largest,
    )


_LARGEST_GAIN = math.sqrt(_FLOAT64_MAX)


def _gain(gain: object) -> float:
    """A gain >= 0 whose square, the variance scale, is finite in float64."""
    gain = _nonnegative("gain", gain)
    if gain > _LARGEST_GAIN:
        raise ValueError(
            f"gain must be at most {_LARGEST_GAIN:.4g}, so that the variance scale gain**2 is "
            f"finite in float64; got {gain!r}"
        )
    return gain


def xavier_uniform(gain: float = 1.0, *, in_axis: int = -2, out_axis: int = -1) -> Initializer:
    """U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio 2010, eq. 16).

    The variance gain^2 * 2 / (fan_in + fan_out) is the compromise between keeping the forward
    signal's variance (fan_in) and the backward gradient's (fan_out). `glorot_uniform` is the
    same function.

    Args:
        gain: the multiplier, e.g. `calculate_gain("tanh")`; >= 0. A gain above 1.34e154 (its
            square overflows float64) is refused at once; one whose bound overflows the dtype,
            at the call.
        in_axis: the kernel's input-feature axis (keyword only), for `compute_fans`.
        out_axis: the kernel's output-feature axis (keyword only), for `compute_fans`.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Raises:
        TypeError: a gain that is not a real number.
        ValueError: a negative, non-finite or too large gain.

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> kernel = init.xavier_uniform()(jax.random.key(0), (200, 100))
        >>> round(float(abs(kernel).max()), 2)  # b = sqrt(6 / 300)
        0.14

    References:
        Glorot and Bengio 2010, "Understanding the difficulty of training deep feedforward
        neural networks".
    """
    gain = _gain(gain)
    return variance_scaling(gain**2, "fan_avg", "uniform", in_axis=in_axis, out_axis=out_axis)


def xavier_normal(gain: float = 1.0, *, in_axis: int = -2, out_axis: int = -1) -> Initializer:
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out)) (Glorot and Bengio 2010).

    `glorot_normal` is the same function.

    Args:
        gain: the multiplier, >= 0 (refused as in `xavier_uniform`).
        in_axis: the kernel's input-feature axis (keyword only), for `compute_fans`.
        out_axis: the kernel's output-feature axis (keyword only), for `compute_fans`.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Raises:
        TypeError: a gain that is not a real number.
        ValueError: a negative, non-finite or too large gain.

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> kernel = init.xavier_normal()(jax.random.key(0), (300, 100))
        >>> round(float(kernel.std()), 3)  # sqrt(2 / 400)
        0.071

    References:
        Glorot and Bengio 2010, "Understanding the difficulty of training deep feedforward
        neural networks".
    """
    gain = _gain(gain)
    return variance_scaling(gain**2, "fan_avg", "normal", in_axis=in_axis, out_axis=out_axis)


def _kaiming_scale(a: float, mode: str, nonlinearity: str) -> float:
    a = _real("a", a)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return calculate_gain(nonlinearity, a) ** 2


def kaiming_uniform(
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    *,
    in_axis: int = -2,
    out_axis: int = -1,
) -> Initializer:
    """U(-b, b) with b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a).

    He initialization: the variance gain^2 / fan keeps the second moment of the signal
    (`mode="fan_in"`) or of the gradient (`mode="fan_out"`) constant from layer to layer in a
    rectifier network. With the defaults (leaky_relu with slope 0, i.e. relu) the gain is
    sqrt(2). `he_uniform` is the same function; the arguments are PyTorch's
    `kaiming_uniform_`'s.

    Args:
        a: the negative slope of leaky_relu (used by that nonlinearity only).
        mode: "fan_in" (preserve the forward signal) or "fan_out" (the backward gradient).
        nonlinearity: a name from `GAIN_NAMES`, passed to `calculate_gain`.
        in_axis: the kernel's input-feature axis (keyword only), for `compute_fans`.
        out_axis: the kernel's output-feature axis (keyword only), for `compute_fans`.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Raises:
        TypeError: an `a` that is not a real number.
        ValueError: a bad mode or nonlinearity, a non-finite `a`.

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> kernel = init.kaiming_uniform()(jax.random.key(0), (600, 100))
        >>> round(float(abs(kernel).max()), 2)  # sqrt(2) * sqrt(3 / 600)
        0.1

    References:
        He, Zhang, Ren and Sun 2015, "Delving Deep into Rectifiers: Surpassing Human-Level
        Performance on ImageNet Classification", sec. 2.2.
    """
    scale = _kaiming_scale(a, mode, nonlinearity)
    return variance_scaling(scale, mode, "uniform", in_axis=in_axis, out_axis=out_axis)


def kaiming_normal(
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    *,
    in_axis: int = -2,
    out_axis: int = -1,
) -> Initializer:
    """N(0, std^2) with std = gain / sqrt(fan), gain = calculate_gain(nonlinearity, a).

    He initialization with a plain (not truncated) normal, as PyTorch's `kaiming_normal_`:
    the variance gain^2 / fan keeps the second moment of the signal (`mode="fan_in"`) or of
    the gradient (`mode="fan_out"`) constant from layer to layer in a rectifier network.
    `he_normal` is the same function.

    Args:
        a: the negative slope of leaky_relu (used by that nonlinearity only).
        mode: "fan_in" (preserve the forward signal) or "fan_out" (the backward gradient).
        nonlinearity: a name from `GAIN_NAMES`, passed to `calculate_gain`.
        in_axis: the kernel's input-feature axis (keyword only), for `compute_fans`.
        out_axis: the kernel's output-feature axis (keyword only), for `compute_fans`.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Raises:
        TypeError: an `a` that is not a real number.
        ValueError: a bad mode or nonlinearity, a non-finite `a`.

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> kernel = init.kaiming_normal()(jax.random.key(0), (800, 200))
        >>> round(float(kernel.std()), 3)  # sqrt(2 / 800)
        0.05

    References:
        He, Zhang, Ren and Sun 2015, "Delving Deep into Rectifiers: Surpassing Human-Level
        Performance on ImageNet Classification", sec. 2.2.
    """
    scale = _kaiming_scale(a, mode, nonlinearity)
    return variance_scaling(scale, mode, "normal", in_axis=in_axis, out_axis=out_axis)


def lecun_uniform(*, in_axis: int = -2, out_axis: int = -1) -> Initializer:
    """U(-b, b) with b = sqrt(3 / fan_in): variance 1 / fan_in (LeCun et al. 1998).

    Args:
        in_axis: the kernel's input-feature axis (keyword only), for `compute_fans`.
        out_axis: the kernel's output-feature axis (keyword only), for `compute_fans`.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> kernel = init.lecun_uniform()(jax.random.key(0), (300, 100))
        >>> round(float(abs(kernel).max()), 2)  # sqrt(3 / 300)
        0.1

    References:
        LeCun, Bottou, Orr and Mueller 1998, "Efficient BackProp".
    """
    return variance_scaling(1.0, "fan_in", "uniform", in_axis=in_axis, out_axis=out_axis)


def lecun_normal(*, in_axis: int = -2, out_axis: int = -1) -> Initializer:
    """N(0, 1 / fan_in), a plain normal (LeCun et al. 1998; the SELU paper's choice).

    Args:
        in_axis: the kernel's input-feature axis (keyword only), for `compute_fans`.
        out_axis: the kernel's output-feature axis (keyword only), for `compute_fans`.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> kernel = init.lecun_normal()(jax.random.key(0), (400, 100))
        >>> round(float(kernel.std()), 3)  # sqrt(1 / 400)
        0.05

    References:
        LeCun, Bottou, Orr and Mueller 1998, "Efficient BackProp"; Klambauer, Unterthiner,
        Mayr and Hochreiter 2017, "Self-Normalizing Neural Networks".
    """
    return variance_scaling(1.0, "fan_in", "normal", in_axis=in_axis, out_axis=out_axis)


glorot_uniform = xavier_uniform
glorot_normal = xavier_normal
he_uniform = kaiming_uniform
he_normal = kaiming_normal


# ----------------------------------------------------------------------------- structured


def _haar_orthogonal(key: jax.Array, rows: int, cols: int, dt: jnp.dtype) -> jax.Array:
    """A (rows, cols) matrix with orthonormal columns (rows >= cols) or rows, Haar-distributed.

    QR of a Gaussian matrix with the signs of R's diagonal moved into Q (Mezzadri 2007,
    "How to generate random matrices from the classical compact groups").
    """
    tall = rows >= cols
    gaussian = jax.random.normal(key, (max(rows, cols), min(rows, cols)), dt)
    q, r = jnp.linalg.qr(gaussian)
    q = q * jnp.where(jnp.diagonal(r) < 0, -1, 1).astype(dt)[None, :]
    return q if tall else q.T


def orthogonal(gain: float = 1.0) -> Initializer:
    """A Haar-random (semi-)orthogonal matrix times `gain` (Saxe et al. 2014).

    The last axis is the columns; every other axis is folded into the rows. Then
    W^T W = gain^2 I when rows >= columns and W W^T = gain^2 I otherwise. Orthogonal weights
    keep every singular value of a deep linear network's input-output map at gain^depth, the
    route to dynamical isometry.

    Args:
        gain: the multiplier, >= 0.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Raises:
        TypeError: a gain that is not a real number.
        ValueError: a negative or non-finite gain; at the call, a shape of fewer than 2
            dimensions.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jaxgrad import init
        >>> w = init.orthogonal()(jax.random.key(0), (4, 4))
        >>> bool(jnp.allclose(w.T @ w, jnp.eye(4), atol=1e-5))
        True

    References:
        Saxe, McClelland and Ganguli 2014, "Exact solutions to the nonlinear dynamics of
        learning in deep linear neural networks"; Mezzadri 2007, "How to generate random
        matrices from the classical compact groups" (the Haar measure).
    """
    gain = _nonnegative("gain", gain)

    def draw(key, shape, dt):
        cols = shape[-1]
        rows = math.prod(shape[:-1])
        return (gain * _haar_orthogonal(key, rows, cols, dt)).reshape(shape)

    return _initializer(
        draw, "orthogonal", min_ndim=2, largest=lambda shape, dt: (gain, f"gain={gain}")
    )


def identity(gain: float = 1.0) -> Initializer:
    """`gain` times the (possibly rectangular) identity, for 2-D shapes: residual-free passthrough.

    Args:
        gain: the multiplier, >= 0.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Raises:
        TypeError: a gain that is not a real number.
        ValueError: a negative or non-finite gain; at the call, a shape that is not 2-D.

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> init.identity(0.5)(jax.random.key(0), (2, 3)).tolist()
        [[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]

    References:
        Le, Jaitly and Hinton 2015, "A Simple Way to Initialize Recurrent Networks of
        Rectified Linear Units".
    """
    gain = _nonnegative("gain", gain)

    def draw(key, shape, dt):
        if len(shape) != 2:
            raise ValueError(f"identity needs a 2-D shape, got {shape}")
        return gain * jnp.eye(*shape, dtype=dt)

    return _initializer(
        draw, "identity", cheap_draw=True, largest=lambda shape, dt: (gain, f"gain={gain}")
    )


def _check_conv_shape(name: str, shape: tuple[int, ...]) -> None:
    if not 3 <= len(shape) <= 5:
        raise ValueError(
            f"{name} needs a convolution kernel shape (*spatial, in, out) with 1 to 3 spatial "
            f"dimensions, got {shape}"
        )


def _centre(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(k // 2 for k in shape[:-2])


def dirac(groups: int = 1) -> Initializer:
    """A convolution kernel that passes its input through: 1 at the centre tap from input
    channel d to output channel d, within each of `groups` groups (PyTorch's `dirac_`).

    Shape `(*spatial, in, out)` with `out` divisible by `groups`; channels beyond
    min(in, out / groups) get zero kernels.

    Args:
        groups: the number of channel groups, an int >= 1.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Raises:
        ValueError: groups not an int >= 1; at the call, a shape that is not a 1-3 D
            convolution kernel, or out channels not divisible by groups.

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> kernel = init.dirac()(jax.random.key(0), (3, 2, 2))  # width 3, 2 -> 2 channels
        >>> kernel[1].tolist(), float(kernel.sum())
        ([[1.0, 0.0], [0.0, 1.0]], 2.0)
    """
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")

    def draw(key, shape, dt):
        _check_conv_shape("dirac", shape)
        fan_in, fan_out = shape[-2], shape[-1]
        if fan_out % groups:
            raise ValueError(f"dirac: out channels {fan_out} are not divisible by groups={groups}")
        per_group = fan_out // groups
        diag = min(per_group, fan_in)
        ins = np.tile(np.arange(diag), groups)
        outs = (np.arange(groups)[:, None] * per_group + np.arange(diag)[None, :]).ravel()
        centre = _centre(shape)
        return jnp.zeros(shape, dt).at[(*centre, ins, outs)].set(1)

    return _initializer(draw, "dirac")


def delta_orthogonal(gain: float = 1.0) -> Initializer:
    """A convolution kernel that is a (semi-)orthogonal matrix at the centre tap and zero
    elsewhere (Xiao et al. 2018), so a deep CNN starts with an orthogonal input-output map.

    Needs `in <= out`, so that the centre tap has orthonormal rows (W W^T = gain^2 I).

    Args:
        gain: the multiplier, >= 0.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Raises:
        TypeError: a gain that is not a real number.
        ValueError: a negative or non-finite gain; at the call, a shape that is not a 1-3 D
            convolution kernel, or in channels > out channels.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jaxgrad import init
        >>> kernel = init.delta_orthogonal()(jax.random.key(0), (3, 3, 4, 4))
        >>> centre = kernel[1, 1]
        >>> bool(jnp.allclose(centre @ centre.T, jnp.eye(4), atol=1e-5)), float(kernel[0, 0].sum())
        (True, 0.0)

    References:
        Xiao, Bahri, Sohl-Dickstein, Schoenholz and Pennington 2018, "Dynamical Isometry and a
        Mean Field Theory of CNNs: How to Train 10,000-Layer Vanilla Convolutional Neural
        Networks".
    """
    gain = _nonnegative("gain", gain)

    def draw(key, shape, dt):
        _check_conv_shape("delta_orthogonal", shape)
        fan_in, fan_out = shape[-2], shape[-1]
        if fan_in > fan_out:
            raise ValueError(
                f"delta_orthogonal needs in channels <= out channels, got in={fan_in}, "
                f"out={fan_out}; use orthogonal for a kernel that shrinks the channel count"
            )
        centre_tap = gain * _haar_orthogonal(key, fan_in, fan_out, dt)
        return jnp.zeros(shape, dt).at[_centre(shape)].set(centre_tap)

    return _initializer(draw, "delta_orthogonal", largest=lambda shape, dt: (gain, f"gain={gain}"))


def sparse(sparsity: float, std: float = 0.01) -> Initializer:
    """Sparse initialization (Martens 2010): each output unit sees few nonzero inputs.

    For a 2-D shape `(fan_in, fan_out)`, in every column exactly ceil(sparsity * fan_in)
    entries, at uniformly random rows, are zero; the rest are N(0, std^2).

    Args:
        sparsity: fraction of zeros per column, in [0, 1).
        std: standard deviation of the nonzero entries.

    Returns:
        An initializer `init(key, shape, dtype=jnp.float32) -> jax.Array` (the
        `jax.nn.initializers` protocol).

    Raises:
        TypeError: a hyperparameter that is not a real number.
        ValueError: sparsity outside [0, 1), std < 0; at the call, a shape that is not 2-D.

    Example:
        >>> import jax
        >>> from jaxgrad import init
        >>> kernel = init.sparse(0.75)(jax.random.key(0), (8, 3))
        >>> (kernel == 0).sum(axis=0).tolist()  # ceil(0.75 * 8) zeros in every column
        [6, 6, 6]

    References:
        Martens 2010, "Deep learning via Hessian-free optimization", sec. 5.
    """
    sparsity = _real("sparsity", sparsity)
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    std = _nonnegative("std", std)

    def draw(key, shape, dt):
        if len(shape) != 2:
            raise ValueError(f"sparse needs a 2-D shape (fan_in, fan_out), got {shape}")
        fan_in, fan_out = shape
        num_zeros = math.ceil(sparsity * fan_in)
        key_values, key_rows = jax.random.split(key)
        # Selection sampling (Knuth, The Art of Computer Programming vol. 2, 3.4.2,
        # Algorithm S), every column at once: row i is zeroed
        # with probability (zeros still to place) / (rows left), which places exactly
        # num_zeros zeros, each set of rows equally likely. One pass down the rows; sorting
        # each column for a random permutation was 30x slower on XLA's CPU backend.
        draws = jax.random.uniform(key_rows, shape)

        def select(remaining, row):
            index, draw = row
            zero = draw * (fan_in - index).astype(draw.dtype) < remaining
            return remaining - zero.astype(remaining.dtype), zero

        start = jnp.full((fan_out,), num_zeros, jnp.int32)
        _, zeros = jax.lax.scan(select, start, (jnp.arange(fan_in), draws))
        values = std * jax.random.normal(key_values, shape, dt)
        return jnp.where(zeros, jnp.zeros((), dt), values)

    def largest(shape, dt):
        z = _largest_normal(dt)
        return z * std, f"{z:.3g} std, std={std}"

    return _initializer(draw, "sparse", largest=largest)
