"""Elementwise activation functions, their registry, derivatives and Gaussian moments.

Every activation is a pure function of an array that returns an array of the same shape
and dtype. Hyperparameters are keyword arguments with PyTorch's defaults; `get` binds them
once, validates them, and returns a one-argument function, which is the form the rest of
jaxgrad takes (`MLP(activation=...)`, `empirical_gain`, the mean-field theory).

At a kink `derivative` gives PyTorch's value (relu 0, leaky_relu its slope, elu and selu
their left derivative alpha * scale, which is the derivative of elu with alpha = 1, hard_tanh
0 at +-1). `breakpoints` says where each activation is not smooth, and
`gaussian_expectation` splits its integrals there: exact to float64 rounding.

Example:
    >>> import jax.numpy as jnp
    >>> from jaxgrad import activations
    >>> phi = activations.get("leaky_relu", negative_slope=0.2)
    >>> phi(jnp.array([-1.0, 2.0])).tolist()
    [-0.20000000298023224, 2.0]
    >>> activations.derivative("tanh")(jnp.array([0.0])).tolist()
    [1.0]
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

Activation = Callable[[jax.Array], jax.Array]

# SELU constants, Klambauer et al. 2017, "Self-Normalizing Neural Networks", eq. (14).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def linear(x: ArrayLike) -> jax.Array:
    """The identity, phi(x) = x: a network without a nonlinearity.

    Args:
        x: the input array (or anything `jnp.asarray` takes).

    Returns:
        phi(x), an array of x's shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> activations.linear(jnp.array([-2.0, 3.0])).tolist()
        [-2.0, 3.0]
    """
    return jnp.asarray(x)


def sigmoid(x: ArrayLike) -> jax.Array:
    """The logistic function 1 / (1 + exp(-x)); its derivative is at most 1/4.

    Unless the weights make up that factor 4, gradients shrink layer by layer through a
    deep sigmoid network; Glorot and Bengio 2010 also found that its mean of 1/2 drives the
    top hidden layer into saturation.

    Args:
        x: the input array (or anything `jnp.asarray` takes).

    Returns:
        phi(x), an array of x's shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> activations.sigmoid(jnp.array([0.0])).tolist()
        [0.5]

    References:
        Glorot and Bengio 2010, "Understanding the difficulty of training deep feedforward
        neural networks".
    """
    return jax.nn.sigmoid(x)


def tanh(x: ArrayLike) -> jax.Array:
    """The hyperbolic tangent; saturates at +-1, derivative 1 at the origin.

    Args:
        x: the input array (or anything `jnp.asarray` takes).

    Returns:
        phi(x), an array of x's shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> [round(v, 4) for v in activations.tanh(jnp.array([0.0, 1.0])).tolist()]
        [0.0, 0.7616]
    """
    return jnp.tanh(x)


def relu(x: ArrayLike) -> jax.Array:
    """max(x, 0). The derivative at 0 is taken as 0, as in JAX and PyTorch. Kink at 0.

    Args:
        x: the input array (or anything `jnp.asarray` takes).

    Returns:
        phi(x), an array of x's shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> activations.relu(jnp.array([-1.0, 0.0, 2.0])).tolist()
        [0.0, 0.0, 2.0]

    References:
        Nair and Hinton 2010, "Rectified Linear Units Improve Restricted Boltzmann Machines";
        Glorot, Bordes and Bengio 2011, "Deep Sparse Rectifier Neural Networks".
    """
    return jax.nn.relu(x)


def leaky_relu(x: ArrayLike, negative_slope: float = 0.01) -> jax.Array:
    """x for x > 0, negative_slope * x otherwise (Maas et al. 2013).

    Kink at 0, where the derivative is taken as negative_slope, as in PyTorch.

    Args:
        x: the input array (or anything `jnp.asarray` takes).
        negative_slope: the slope for x <= 0 (PyTorch's default 0.01).

    Returns:
        phi(x), an array of x's shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> activations.leaky_relu(jnp.array([-2.0, 2.0]), negative_slope=0.5).tolist()
        [-1.0, 2.0]

    References:
        Maas, Hannun and Ng 2013, "Rectifier Nonlinearities Improve Neural Network Acoustic
        Models".
    """
    x = jnp.asarray(x)
    return jnp.where(x > 0, x, negative_slope * x)


def elu(x: ArrayLike, alpha: float = 1.0) -> jax.Array:
    """x for x > 0, alpha * (exp(x) - 1) otherwise (Clevert et al. 2016).

    Kink at 0 unless alpha = 1 (then only the second derivative jumps). The derivative at 0
    is the left one, alpha, as in PyTorch: 1 for alpha = 1, where elu is differentiable.

    Args:
        x: the input array (or anything `jnp.asarray` takes).
        alpha: the negative branch's scale (and its limit -alpha).

    Returns:
        phi(x), an array of x's shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> [round(v, 4) for v in activations.elu(jnp.array([-1.0, 2.0])).tolist()]
        [-0.6321, 2.0]

    References:
        Clevert, Unterthiner and Hochreiter 2016, "Fast and Accurate Deep Network Learning by
        Exponential Linear Units (ELUs)".
    """
    x = jnp.asarray(x)
    # where, not minimum: minimum splits its derivative at the tie x = 0 (alpha / 2).
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.where(x > 0, 0, x)))


def selu(x: ArrayLike) -> jax.Array:
    """Scaled ELU with the fixed point of mean 0 and variance 1 (Klambauer et al. 2017).

    SELU_SCALE * elu(x, SELU_ALPHA). Kink at 0; the derivative there is the left one,
    SELU_SCALE * SELU_ALPHA = 1.7581, as in PyTorch (the right one is SELU_SCALE = 1.0507).
    With `jaxgrad.init.lecun_normal` weights the activations approach mean 0, variance 1.

    Args:
        x: the input array (or anything `jnp.asarray` takes).

    Returns:
        phi(x), an array of x's shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> [round(v, 4) for v in activations.selu(jnp.array([-1.0, 1.0])).tolist()]
        [-1.1113, 1.0507]

    References:
        Klambauer, Unterthiner, Mayr and Hochreiter 2017, "Self-Normalizing Neural Networks".
    """
    return SELU_SCALE * elu(x, SELU_ALPHA)


def gelu(x: ArrayLike, approximate: bool = False) -> jax.Array:
    """x * Phi(x) (Hendrycks and Gimpel 2016); `approximate=True` gives the tanh form.

    The exact form is the default, as in PyTorch (JAX's own default is the approximation).

    Args:
        x: the input array (or anything `jnp.asarray` takes).
        approximate: True for the tanh approximation, a bool.

    Returns:
        phi(x), an array of x's shape and dtype.

    Raises:
        TypeError: an `approximate` that is not a bool (a string such as "no" or "none",
            PyTorch's spelling, would otherwise count as true).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> [round(v, 4) for v in activations.gelu(jnp.array([-1.0, 1.0])).tolist()]
        [-0.1587, 0.8413]

    References:
        Hendrycks and Gimpel 2016, "Gaussian Error Linear Units (GELUs)".
    """
    return jax.nn.gelu(x, approximate=_flag("approximate", "gelu", approximate))


def silu(x: ArrayLike) -> jax.Array:
    """x * sigmoid(x), also called swish (Ramachandran et al. 2017).

    Args:
        x: the input array (or anything `jnp.asarray` takes).

    Returns:
        phi(x), an array of x's shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> [round(v, 4) for v in activations.silu(jnp.array([-1.0, 1.0])).tolist()]
        [-0.2689, 0.7311]

    References:
        Elfwing, Uchibe and Doya 2018, "Sigmoid-Weighted Linear Units for Neural Network
        Function Approximation in Reinforcement Learning"; Ramachandran, Zoph and Le 2017,
        "Searching for Activation Functions".
    """
    return jax.nn.silu(x)


def softplus(x: ArrayLike) -> jax.Array:
    """log(1 + exp(x)), a smooth ReLU.

    Args:
        x: the input array (or anything `jnp.asarray` takes).

    Returns:
        phi(x), an array of x's shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> [round(v, 4) for v in activations.softplus(jnp.array([0.0, 5.0])).tolist()]
        [0.6931, 5.0067]
    """
    return jax.nn.softplus(x)


def softsign(x: ArrayLike) -> jax.Array:
    """x / (1 + |x|): tanh-like with polynomial rather than exponential saturation.

    Its second derivative jumps at 0 (a breakpoint for quadrature); the derivative is 1 there.

    Args:
        x: the input array (or anything `jnp.asarray` takes).

    Returns:
        phi(x), an array of x's shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> activations.softsign(jnp.array([-1.0, 3.0])).tolist()
        [-0.5, 0.75]

    References:
        Glorot and Bengio 2010, "Understanding the difficulty of training deep feedforward
        neural networks" (softsign against tanh).
    """
    return jax.nn.soft_sign(x)


def mish(x: ArrayLike) -> jax.Array:
    """x * tanh(softplus(x)) (Misra 2019).

    Args:
        x: the input array (or anything `jnp.asarray` takes).

    Returns:
        phi(x), an array of x's shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> [round(v, 4) for v in activations.mish(jnp.array([-1.0, 1.0])).tolist()]
        [-0.3034, 0.8651]

    References:
        Misra 2019, "Mish: A Self Regularized Non-Monotonic Activation Function".
    """
    x = jnp.asarray(x)
    return x * jnp.tanh(jax.nn.softplus(x))


def hard_tanh(x: ArrayLike) -> jax.Array:
    """clip(x, -1, 1). Kinks at -1 and 1, where the derivative is taken as 0, as in PyTorch.

    Args:
        x: the input array (or anything `jnp.asarray` takes).

    Returns:
        phi(x), an array of x's shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> activations.hard_tanh(jnp.array([-3.0, 0.5, 2.0])).tolist()
        [-1.0, 0.5, 1.0]
    """
    x = jnp.asarray(x)
    # where, not clip: clip splits its derivative at the ties x = +-1 (1/2).
    return jnp.where((x > -1) & (x < 1), x, jnp.sign(x))


def erf(x: ArrayLike) -> jax.Array:
    """The error function: tanh-like with closed-form Gaussian moments (Williams 1997).

    Args:
        x: the input array (or anything `jnp.asarray` takes).

    Returns:
        phi(x), an array of x's shape and dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> [round(v, 4) for v in activations.erf(jnp.array([0.0, 1.0])).tolist()]
        [0.0, 0.8427]

    References:
        Williams 1997, "Computing with Infinite Networks".
    """
    return jax.scipy.special.erf(x)


def rrelu(
    x: ArrayLike,
    key: jax.Array | None = None,
    lower: float = 1 / 8,
    upper: float = 1 / 3,
    deterministic: bool = False,
) -> jax.Array:
    """Randomized leaky ReLU (Xu et al. 2015, "Empirical Evaluation of Rectified Activations").

    Args:
        x: input array.
        key: PRNG key for the slopes; required unless `deterministic`.
        lower, upper: the slope of each negative element is drawn uniformly from [lower, upper].
        deterministic: use the mean slope (lower + upper) / 2 for every element (evaluation mode).

    Returns:
        x where x > 0, slope * x elsewhere (the derivative at 0 is the slope, as in PyTorch).

    Raises:
        ValueError: no `key` while not `deterministic`.
        TypeError: a `deterministic` that is not a bool.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> activations.rrelu(jnp.array([-1.0, 2.0]), deterministic=True).tolist()  # slope 11/48
        [-0.2291666716337204, 2.0]
        >>> y = activations.rrelu(-jnp.ones(1000), jax.random.key(0))
        >>> bool(y.min() >= -1 / 3) and bool(y.max() <= -1 / 8)
        True
    """
    x = jnp.asarray(x)
    if _flag("deterministic", "rrelu", deterministic):
        slope = jnp.asarray((lower + upper) / 2, x.dtype)
    else:
        if key is None:
            raise ValueError("rrelu needs a PRNG `key` unless deterministic=True")
        slope = jax.random.uniform(key, x.shape, x.dtype, lower, upper)
    return jnp.where(x > 0, x, slope * x)


_REGISTRY: dict[str, Activation] = {
    "linear": linear,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "rrelu": rrelu,
    "elu": elu,
    "selu": selu,
    "gelu": gelu,
    "silu": silu,
    "softplus": softplus,
    "softsign": softsign,
    "mish": mish,
    "hard_tanh": hard_tanh,
    "erf": erf,
}
# Where each activation (or one of its first two derivatives) is not smooth: the points at
# which Gaussian expectations split their integrals (see `breakpoints`).
_BREAKPOINTS: dict[str, tuple[float, ...]] = {
    "relu": (0.0,),
    "leaky_relu": (0.0,),
    "rrelu": (0.0,),
    "elu": (0.0,),
    "selu": (0.0,),
    "softsign": (0.0,),
    "hard_tanh": (-1.0, 1.0),
}
_ALIASES = {"identity": "linear", "swish": "silu", "hardtanh": "hard_tanh", "none": "linear"}

# Hyperparameters whose value must be a real number, and those that must be a bool.
_REAL_PARAMS = {"negative_slope", "alpha", "lower", "upper"}
_FLAG_PARAMS = {"approximate", "deterministic"}


def _flag(param: str, name: str, value: object) -> bool:
    """A Python or NumPy bool as a bool; anything else (a string, a number) is refused."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{param} of {name!r} must be a bool (True or False), got {value!r}")
    return bool(value)


def names() -> tuple[str, ...]:
    """The canonical activation names that `get` accepts (aliases such as "swish" also work).

    Returns:
        A tuple of names, in the registry's order.

    Example:
        >>> from jaxgrad import activations
        >>> activations.names()[:4]
        ('linear', 'sigmoid', 'tanh', 'relu')
    """
    return tuple(_REGISTRY)


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"activation name must be a str, got {type(name).__name__}")
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown activation {name!r}; valid names are: {', '.join(names())}")
    return key


def _check_params(name: str, fn: Activation, params: dict[str, Any]) -> None:
    allowed = [p for p in inspect.signature(fn).parameters if p != "x"]
    for param, value in params.items():
        if param not in allowed:
            valid = ", ".join(allowed) if allowed else "none"
            raise TypeError(
                f"activation {name!r} has no parameter {param!r}; its parameters: {valid}"
            )
        if param in _REAL_PARAMS:
            if isinstance(value, bool) or not isinstance(
                value, int | float | np.integer | np.floating
            ):
                raise TypeError(f"{param} of {name!r} must be a real number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{param} of {name!r} must be finite, got {value!r}")
        if param in _FLAG_PARAMS:
            _flag(param, name, value)
    if name == "rrelu":
        lower = params.get("lower", 1 / 8)
        upper = params.get("upper", 1 / 3)
        if not lower <= upper:
            raise ValueError(f"rrelu needs lower <= upper, got lower={lower}, upper={upper}")


def get(name: str, **params: Any) -> Activation:
    """The activation `name` with its hyperparameters bound, as a function of one array.

    Args:
        name: one of `names()` (case-insensitive) or an alias ("identity", "swish", "hardtanh").
        **params: hyperparameters of that activation, e.g. `negative_slope=0.2`, `alpha=1.0`,
            `approximate=True`, or for rrelu `key`, `lower`, `upper`, `deterministic`.

    Returns:
        A pure function `phi(x)`; it carries `__name__` equal to the canonical name.

    Real-valued hyperparameters may be Python or NumPy numbers (not bools); flags
    (`approximate`, `deterministic`) must be bools. `get("rrelu")` returns `rrelu` itself,
    which takes a PRNG key at every call; `resolve` refuses that name (see there).

    Raises:
        ValueError: unknown name (the message lists the valid ones) or a bad value.
        TypeError: a parameter the activation does not have, a non-numeric value, or a
            flag that is not a bool.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> phi = activations.get("leaky_relu", negative_slope=0.5)
        >>> phi.__name__, phi(jnp.array([-2.0])).tolist()
        ('leaky_relu', [-1.0])
        >>> activations.get("swish").__name__
        'silu'
    """
    key = _canonical(name)
    fn = _REGISTRY[key]
    _check_params(key, fn, params)
    # NumPy scalars as Python ones: a weakly typed slope keeps a bfloat16 input bfloat16.
    params = {
        param: value.item() if isinstance(value, np.generic) else value
        for param, value in params.items()
    }
    if not params:
        return fn
    bound = functools.partial(fn, **params)
    functools.update_wrapper(bound, fn)
    return bound


def resolve(activation: str | Activation) -> Activation:
    """A name (looked up with `get`) or a callable (returned as it is) as an activation.

    This is how models, sweeps, the theory and the command line take an activation: the
    result is called as `phi(x)`, with nothing else.

    Args:
        activation: a name from `names()` (or an alias), or a callable.

    Returns:
        The activation as a function of one array.

    Raises:
        ValueError: an unknown name, or "rrelu": its random slope per element needs a fresh
            PRNG key at every call, which a name cannot carry. Use `jaxgrad.nn.RReLU` in a
            model, or `get("rrelu", deterministic=True)` (leaky_relu with slope
            (lower + upper) / 2) for its evaluation form.
        TypeError: neither a string nor a callable.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> activations.resolve("tanh") is activations.tanh
        True
        >>> activations.resolve(jnp.sin) is jnp.sin
        True
    """
    if isinstance(activation, str):
        if _canonical(activation) == "rrelu":
            raise ValueError(
                f"activation {activation!r} cannot be given by name: rrelu draws a random "
                "slope for every negative element, so it needs a fresh PRNG key at every call, "
                "which a name cannot carry. In a model use jaxgrad.nn.RReLU (it draws its keys "
                "from nnx.Rngs); for its evaluation form use "
                "activations.get('rrelu', deterministic=True), which is leaky_relu with "
                "negative_slope = (lower + upper) / 2 (0.2292 for the defaults 1/8 and 1/3)"
            )
        return get(activation)
    if callable(activation):
        return activation
    raise TypeError(
        f"activation must be a name from jaxgrad.activations.names() or a callable, "
        f"got {activation!r}"
    )


def name_of(activation: str | Activation) -> str:
    """A readable name for an activation given by name or as a function.

    Args:
        activation: a name (aliases give the canonical name) or a callable.

    Returns:
        The canonical name, or the callable's `__name__` (its type's name if it has none).

    Raises:
        ValueError: an unknown activation name.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> activations.name_of("Swish"), activations.name_of(jnp.sin)
        ('silu', 'sin')
    """
    if isinstance(activation, str):
        return _canonical(activation)
    return getattr(activation, "__name__", type(activation).__name__)


def breakpoints(activation: str | Activation) -> tuple[float, ...]:
    """The points where an activation, or its first or second derivative, is not smooth.

    Gaussian expectations (`gaussian_expectation`, `jaxgrad.theory`, `jaxgrad.init.
    computed_gain`) split their integrals there, which makes them exact to rounding for
    piecewise-smooth functions. The registry's activations declare theirs (relu, leaky_relu,
    elu, selu, softsign at 0; hard_tanh at -1 and 1); a callable may declare its own as an
    attribute, `phi.breakpoints = (-0.3,)`; anything else counts as smooth. `derivative(phi)`
    carries the breakpoints of phi.

    Args:
        activation: a name, or a callable (with or without a `breakpoints` attribute).

    Returns:
        The sorted, distinct breakpoints as Python floats; () for a smooth activation.

    Raises:
        TypeError: a declared `breakpoints` that is not a sequence of real numbers.
        ValueError: a declared breakpoint that is not finite.

    Example:
        >>> breakpoints("hard_tanh")
        (-1.0, 1.0)
        >>> def shifted(x):
        ...     return relu(x + 0.3)
        >>> shifted.breakpoints = (-0.3,)
        >>> breakpoints(shifted)
        (-0.3,)
    """
    if isinstance(activation, str):
        return _BREAKPOINTS.get(_canonical(activation), ())
    declared = getattr(activation, "breakpoints", None)
    if declared is not None:
        if isinstance(declared, str) or not isinstance(declared, tuple | list | np.ndarray):
            raise TypeError(
                f"breakpoints of {name_of(activation)} must be a tuple of real numbers, "
                f"got {declared!r}"
            )
        points = []
        for point in np.asarray(declared, dtype=object).ravel():
            if isinstance(point, bool | np.bool_) or not isinstance(
                point, int | float | np.integer | np.floating
            ):
                raise TypeError(
                    f"breakpoints of {name_of(activation)} must be real numbers, got {point!r}"
                )
            if not math.isfinite(point):
                raise ValueError(
                    f"breakpoints of {name_of(activation)} must be finite, got {point!r}"
                )
            points.append(float(point))
        return tuple(sorted(set(points)))
    name = getattr(activation, "__name__", None)
    if name in _REGISTRY and _REGISTRY[name] is getattr(activation, "func", activation):
        return _BREAKPOINTS.get(name, ())
    return ()


def derivative(activation: str | Activation) -> Activation:
    """The elementwise derivative phi'(x) of an activation, by forward-mode autodiff.

    For an elementwise phi the Jacobian is diagonal, so one `jax.jvp` with a tangent of
    ones gives every derivative at the cost of one extra forward pass.

    Args:
        activation: a name from `names()` or an elementwise callable.

    Returns:
        A function `dphi(x)` with the shape and dtype of `x` (an integer x is taken as the
        default float dtype); it carries the breakpoints of phi.

    Raises:
        ValueError: an unknown name, or "rrelu" (see `resolve`).
        TypeError: neither a string nor a callable.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> activations.derivative("relu")(jnp.array([-1.0, 0.0, 2.0])).tolist()
        [0.0, 0.0, 1.0]
        >>> activations.derivative("sigmoid")(jnp.array([0.0])).tolist()  # at most 1/4
        [0.25]
    """
    phi = resolve(activation)

    def dphi(x: ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            x = x.astype(jnp.result_type(float))
        return jax.jvp(phi, (x,), (jnp.ones_like(x),))[1]

    dphi.__name__ = f"d_{name_of(activation)}"
    dphi.breakpoints = breakpoints(activation)  # phi' jumps where phi has a kink
    return dphi


def _derivatives_from_outputs() -> dict[str, Callable[..., jax.Array]]:
    """phi' as a function of a = phi(z), by name (see `derivative_from_output`)."""

    def erf_derivative(a):
        inside = jnp.abs(a) < 1  # erf rounds to +-1 beyond |z| ~ 3.9 in float32: saturated
        z = jax.scipy.special.erfinv(jnp.where(inside, a, 0))
        return jnp.where(inside, 2 / math.sqrt(math.pi) * jnp.exp(-jnp.square(z)), 0)

    def piecewise(a, negative, positive=1.0):
        return jnp.where(a > 0, positive, negative).astype(a.dtype)

    return {
        "linear": jnp.ones_like,
        "sigmoid": lambda a: a * (1 - a),
        "tanh": lambda a: 1 - jnp.square(a),
        "relu": lambda a: piecewise(a, 0.0),
        "leaky_relu": lambda a, negative_slope=0.01: piecewise(a, negative_slope),
        "elu": lambda a, alpha=1.0: piecewise(a, a + alpha),
        "selu": lambda a: piecewise(a, a + SELU_SCALE * SELU_ALPHA, SELU_SCALE),
        "softplus": lambda a: -jnp.expm1(-a),
        "softsign": lambda a: jnp.square(1 - jnp.abs(a)),
        "hard_tanh": lambda a: (jnp.abs(a) < 1).astype(a.dtype),
        "erf": erf_derivative,
    }


def derivative_from_output(activation: str | Activation) -> Activation | None:
    """phi'(z) as a function of the activation's value a = phi(z), where phi is invertible
    on its range (or its derivative is a function of a, as for ReLU); None otherwise (gelu,
    silu, mish, custom callables).

    What a layer receives is the previous activation's output, not its pre-activation: this
    reads the saturation of a unit off what the layer sees (`jaxgrad.inspect` does). At a
    kink the one-sided value of the branch a falls on is taken: ReLU's a = 0 gives 0.

    Args:
        activation: a name (hyperparameters of `get(name, ...)` are kept), or a function
            returned by `get`.

    Returns:
        `dphi(a)`, or None where the derivative is not a function of the output.

    Example:
        >>> import jax.numpy as jnp
        >>> dtanh = derivative_from_output("tanh")
        >>> z = jnp.array([0.0, 1.0, 3.0])
        >>> bool(jnp.allclose(dtanh(tanh(z)), derivative("tanh")(z)))
        True
        >>> derivative_from_output("gelu") is None
        True
    """
    params: dict[str, Any] = {}
    if isinstance(activation, str):
        name = _canonical(activation)
    else:
        name = getattr(activation, "__name__", None)
        params = dict(getattr(activation, "keywords", None) or {})
        fn = getattr(activation, "func", activation)
        if name not in _REGISTRY or _REGISTRY[name] is not fn:
            return None
    table = _derivatives_from_outputs()
    if name not in table:
        return None
    dphi = table[name]
    return functools.partial(dphi, **params) if params else dphi


MAX_QUADRATURE_POINTS = 2048
"""The largest `num_points` that `hermite_nodes` (and so `gaussian_expectation` and
`jaxgrad.init.computed_gain`) accepts. The rule comes from the eigendecomposition of a dense
num_points x num_points matrix: at 2048 points about 100 MB of float64 and a few seconds of
one CPU; at 100000 points it would need 75 GiB for the matrix alone. Smooth activations
converge with a few dozen points, and kinked ones gain little beyond a few hundred."""


@functools.cache
def hermite_nodes(num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for E[f(z)], z ~ N(0, 1): E[f(z)] ~= sum(weights * f(nodes)).

    The Gauss rule of the standard normal measure by the Golub-Welsch algorithm (the
    eigenvalues of the Jacobi matrix of the probabilists' Hermite polynomials, whose
    off-diagonal is sqrt(1), ..., sqrt(n - 1)), in float64; stable up to
    `MAX_QUADRATURE_POINTS`, where `numpy.polynomial.hermite.hermgauss` overflows beyond
    about 300. An even `num_points` puts no node at 0, so the kink of ReLU-like functions at
    0 is integrated exactly by symmetry.

    Args:
        num_points: the number of nodes, an int in [2, MAX_QUADRATURE_POINTS].

    Returns:
        (nodes, weights), float64 NumPy arrays of shape (num_points,); the weights sum to 1.

    Raises:
        ValueError: a `num_points` that is not an int in that range.

    Example:
        >>> from jaxgrad import activations
        >>> nodes, weights = activations.hermite_nodes(4)
        >>> round(float((weights * nodes**2).sum()), 12)  # E[z^2] = 1
        1.0

    References:
        Golub and Welsch 1969, "Calculation of Gauss quadrature rules".
    """
    if (
        isinstance(num_points, bool)
        or not isinstance(num_points, int)
        or not 2 <= num_points <= MAX_QUADRATURE_POINTS
    ):
        raise ValueError(
            f"num_points must be an int in [2, {MAX_QUADRATURE_POINTS}] "
            f"(jaxgrad.activations.MAX_QUADRATURE_POINTS: the rule's eigendecomposition needs "
            f"num_points^2 float64 numbers), got {num_points!r}"
        )
    off_diagonal = np.sqrt(np.arange(1.0, num_points))
    jacobi = np.zeros((num_points, num_points))
    rows = np.arange(num_points - 1)
    jacobi[rows, rows + 1] = off_diagonal
    jacobi[rows + 1, rows] = off_diagonal
    nodes, vectors = np.linalg.eigh(jacobi)
    weights = vectors[0] ** 2
    return nodes, weights / weights.sum()


# ----------------------------------------------------------------------------- split rule
#
# E[F(z)], z ~ N(0, 1), for an F that is smooth between known points (kinks) and varies on
# two scales: the Gaussian's (1 in z) and the activation's (1 in its argument u = std * z,
# so 1 / std in z). The line [-CUTOFF, CUTOFF] is split at every center (the breakpoints and
# 0, where the registry's activations vary); each gap between two centers is split again
# where their gradings meet, and each half is integrated outward from its center by
# Gauss-Legendre panels: first in t, z = center + scale * sinh(t), out to GRADED_REACH
# (dense within the activation's scale of the center, geometric beyond), then uniformly in z
# to the gap's end. A function that is smooth on each half is integrated at full order;
# `jaxgrad.theory` builds its two-dimensional rules from the same halves.

QUADRATURE_CUTOFF = 9.0
"""The split rule integrates over |z| <= 9 standard deviations: the Gaussian's weight beyond
is 2e-19, below float64 rounding for any integrand that grows at most polynomially."""
_RULE_ORDER, _RULE_GRADED, _RULE_LINEAR, _GRADED_REACH = 16, 4, 2, 2.0


@functools.cache
def _half_layout(order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nodes of one half of a gap: position in [0, 1] of its graded or linear segment,
    Gauss-Legendre weight (summing to 1 over each segment), and whether it is graded."""
    x, w = np.polynomial.legendre.leggauss(order)
    x, w = (x + 1) / 2, w / 2
    positions, weights, graded = [], [], []
    for count, is_graded in ((_RULE_GRADED, True), (_RULE_LINEAR, False)):
        positions.append(((np.arange(count)[:, None] + x[None, :]) / count).ravel())
        weights.append(np.tile(w, count) / count)
        graded.append(np.full(count * order, is_graded))
    return np.concatenate(positions), np.concatenate(weights), np.concatenate(graded)


def rule_size(num_centers: int, *, order: int = _RULE_ORDER) -> int:
    """The number of nodes of `split_rule` with `num_centers` centers.

    Args:
        num_centers: the number of centers (an activation's breakpoints and 0).
        order: Gauss-Legendre points per panel (keyword only).

    Returns:
        The node count, an int.

    Example:
        >>> from jaxgrad import activations
        >>> activations.rule_size(1), activations.rule_size(3, order=8)
        (192, 288)
    """
    return 2 * num_centers * order * (_RULE_GRADED + _RULE_LINEAR)


def split_rule(
    centers: jax.Array, scales: jax.Array, *, order: int = _RULE_ORDER, right_only: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Nodes z and weights w with sum(w * F(z)) / sum(w) ~= E[F(z)], z ~ N(0, 1).

    F may have kinks at the `centers` (in z) and vary on the length `scales` (in z, one per
    center) around them; it must be smooth between them. Jittable and vmappable (the
    centers are arrays, their number is static). Used by `gaussian_expectation` and
    `jaxgrad.theory`; see the comment above for the construction.

    Args:
        centers: shape (K,), any real values (those beyond the cutoff are clipped to it).
        scales: shape (K,), > 0.
        order: Gauss-Legendre points per panel (16: exact to float64 rounding for the
            registry's activations; fewer give a cheaper, rougher rule).
        right_only: integrate over z >= min(centers) only (the smallest center must be 0,
            for an F symmetric about 0: the result is then E[F(z)] again).

    Returns:
        (z, w), each of shape (`rule_size(K, order=order)`,), less one half's nodes with
        `right_only`; the weights include the Gaussian density up to a constant factor.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations
        >>> z, w = activations.split_rule(jnp.array([0.0]), jnp.array([1.0]))
        >>> z.shape, round(float((w * jnp.abs(z)).sum() / w.sum()), 6)  # E|z| = sqrt(2 / pi)
        ((192,), 0.797885)
    """
    dtype = jnp.result_type(centers, scales)
    if centers.shape[0] > 1:
        index = jnp.argsort(centers)
        centers, scales = centers[index], scales[index]
    center = jnp.clip(centers, -QUADRATURE_CUTOFF, QUADRATURE_CUTOFF)
    # Where two gradings meet: the point equally many scales from either center.
    meet = (center[:-1] * scales[1:] + center[1:] * scales[:-1]) / (scales[:-1] + scales[1:])
    halves = [  # (anchor, direction, length, scale) of each half gap
        (center[:1], -1.0, center[:1] + QUADRATURE_CUTOFF, scales[:1]),
        (center[:-1], 1.0, meet - center[:-1], scales[:-1]),
        (center[1:], -1.0, center[1:] - meet, scales[1:]),
        (center[-1:], 1.0, QUADRATURE_CUTOFF - center[-1:], scales[-1:]),
    ]
    if right_only:
        halves = halves[1:]
    anchor = jnp.concatenate([h[0] for h in halves])
    direction = jnp.concatenate([jnp.full(h[0].shape, h[1], dtype) for h in halves])
    length = jnp.maximum(jnp.concatenate([h[2] for h in halves]), 0)
    unit = jnp.concatenate([h[3] for h in halves])
    graded_length = jnp.minimum(length, _GRADED_REACH)
    top = jnp.arcsinh(graded_length / unit)
    # The per-half numbers are computed once (the barrier keeps XLA from fusing their
    # concatenations into the per-node expression, which it then cannot vectorize).
    anchor, direction, length, unit, graded_length, top = jax.lax.optimization_barrier(
        (anchor, direction, length, unit, graded_length, top)
    )
    position, weight, graded = (jnp.asarray(a, dtype)[None, :] for a in _half_layout(order))
    # One elementwise expression per node, without `where` (which stops XLA's CPU backend
    # from vectorizing the fusion): graded nodes at unit * sinh(top * position), linear ones
    # spread over the rest of the half.
    linear = 1 - graded
    t = top[:, None] * position * graded
    grow = jnp.exp(t)
    shrink = 1 / grow
    rest = (length - graded_length)[:, None]
    offset = graded * unit[:, None] * (grow - shrink) / 2
    offset = offset + linear * (graded_length[:, None] + rest * position)
    span = graded * (top * unit)[:, None] * (grow + shrink) / 2 + linear * rest
    z = anchor[:, None] + direction[:, None] * offset
    w = span * weight * jnp.exp(-jnp.square(z) / 2)
    return z.ravel(), w.ravel()


def _centers(points: tuple[float, ...]) -> tuple[float, ...]:
    """The centers of an activation's rule: its breakpoints and 0."""
    return tuple(sorted({0.0, *points}))


def _expect(fn: Callable, std: jax.Array, points: tuple[float, ...], order: int = _RULE_ORDER):
    """E[fn(std * z)], z ~ N(0, 1), for a scalar std >= 0, by the split rule; fn may return
    a pytree of arrays whose last axis is the nodes' (each is averaged over it)."""
    tiny = jnp.finfo(std.dtype).tiny
    std = jnp.maximum(std, tiny)
    centers = jnp.asarray(_centers(points), std.dtype) / std
    scales = jnp.full(centers.shape, 1.0, std.dtype) * jnp.minimum(1.0, 1 / std)
    z, w = split_rule(centers, scales, order=order)
    total = jnp.sum(w)

    def mean(values):
        return jnp.sum(values * w.reshape((1,) * (values.ndim - 1) + w.shape), axis=-1) / total

    return jax.tree.map(mean, fn(std * z))


def gaussian_expectation(
    fn: Callable[[jax.Array], jax.Array],
    std: ArrayLike = 1.0,
    *,
    breakpoints: Sequence[float] | None = None,
    num_points: int | None = None,
) -> jax.Array:
    """E[fn(std * z)] for z ~ N(0, 1), exact to rounding for piecewise-smooth functions.

    By default the integral is split at the breakpoints of `fn` (the `breakpoints`
    argument, or those `fn` declares: the registry's activations and their `derivative`
    do, see `jaxgrad.activations.breakpoints`) and at 0, and each piece is integrated by
    graded Gauss-Legendre panels (`split_rule`): for the registry's activations, their
    squares and their derivatives' squares, the relative error is below 1e-13 in float64
    for std from 0.03 to 100 (q = std^2 from 1e-3 to 1e4), and within float32 rounding in
    float32. Features of fn far from 0 and from its
    breakpoints, narrower than 1 (in the argument of fn), are not resolved: declare a
    breakpoint there. `num_points=n` instead uses n-point Gauss-Hermite quadrature, which is
    exact for polynomials of degree < 2n but converges slowly at kinks and large std.

    Jittable and differentiable in `std`; `std` may be an array, in which case the result
    has its shape (one expectation per entry).

    Args:
        fn: elementwise function.
        std: standard deviation of the Gaussian argument, >= 0 (scalar or array).
        breakpoints: where fn is not smooth (in its argument); None for those fn declares.
            A kink left undeclared costs accuracy (1e-4 for hard_tanh(x)^2 at std 2).
        num_points: None for the split rule, or a Gauss-Hermite order (even, see
            `hermite_nodes`), at most `MAX_QUADRATURE_POINTS`.

    Returns:
        An array of the shape of `std`.

    Raises:
        ValueError: a `num_points` that `hermite_nodes` refuses.

    Example:
        >>> value = gaussian_expectation(lambda x: hard_tanh(x) ** 2, 2.0, breakpoints=(-1, 1))
        >>> round(float(value), 6)
        0.740513
    """
    std = jnp.asarray(std, dtype=jnp.result_type(float))
    if num_points is not None:
        nodes, weights = hermite_nodes(num_points)
        z = jnp.asarray(nodes, std.dtype)
        values = fn(jnp.multiply.outer(std, z))
        return jnp.tensordot(values, jnp.asarray(weights, std.dtype), axes=1)
    points = _declared_breakpoints(fn if breakpoints is None else _Declared(breakpoints))
    flat = std.reshape(-1)
    values = jax.vmap(lambda s: _expect(fn, s, points))(flat)
    return values.reshape(std.shape)


class _Declared:
    """Breakpoints given as an argument, read by `breakpoints` like a declared attribute."""

    __name__ = "fn"

    def __init__(self, points):
        self.breakpoints = points


_declared_breakpoints = breakpoints
