"""Flax NNX modules: learnable and randomized rectifiers, the deep MLP that jaxgrad probes, a
residual MLP with multi-layer branches (Fixup's setting) and an Elman RNN.

The deep MLP stores its hidden layers stacked: one `Block` whose parameters have a leading
depth axis, built with `nnx.vmap` over split keys and applied with `jax.lax.scan`, so the
compiled program, and the time to compile it, do not grow with depth. `ResidualMLP` stores
its `ResidualBlock`s the same way; `RNN` applies its one cell with `jax.lax.scan` over time.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxgrad import init, nn
    >>> model = nn.MLP(64, 128, depth=50, out_features=10, activation="relu",
    ...                kernel_init=init.kaiming_normal(), rngs=nnx.Rngs(0))
    >>> model.blocks.linear.kernel.shape
    (50, 128, 128)
    >>> model(jnp.ones((8, 64))).shape
    (8, 10)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxgrad import activations as _act
from jaxgrad import init as _init

NORMS = (None, "batch", "layer")


def _positive_int(name: str, value: object) -> int:
    """`value` as an int >= 1 (a NumPy integer too), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def float_dtype(dtype: object, name: str = "dtype") -> jnp.dtype:
    """`dtype` as a floating-point `jnp.dtype`, or a TypeError (a ValueError for float64
    without `jax_enable_x64`, which JAX would silently turn into float32).

    Args:
        dtype: anything `jnp.dtype` takes.
        name: the argument's name, for the message.

    Returns:
        The `jnp.dtype`.

    Raises:
        TypeError: not a dtype, or not a floating-point one.
        ValueError: float64 while `jax_enable_x64` is off.

    Example:
        >>> from jaxgrad import nn
        >>> nn.float_dtype("bfloat16")
        dtype(bfloat16)
    """
    valid = "a floating-point dtype: float32, float64, bfloat16 or float16"
    try:
        result = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be {valid}, got {dtype!r}") from None
    if not jnp.issubdtype(result, jnp.floating):
        raise TypeError(f"{name} must be {valid}, got {result}")
    if result == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"{name} float64 needs jax_enable_x64 (jax.config.update('jax_enable_x64', True) "
            "or JAX_ENABLE_X64=1); without it JAX computes in float32"
        )
    return result


def check_initializer(name: str, value: object, shape: tuple[int, ...], dtype) -> None:
    """Raise a TypeError unless `value` is an initializer `init(key, shape, dtype)` that
    draws an array of `shape` (checked abstractly with `jax.eval_shape`: nothing is drawn).

    An uncalled jaxgrad factory (`init.xavier_uniform` for `init.xavier_uniform()`) gets a
    message saying so; an initializer's own ValueError for this shape is passed on with the
    argument's name in front.

    Args:
        name: the argument's name, for the message ("kernel_init").
        value: the initializer to check.
        shape: the shape it will be asked for.
        dtype: the dtype it will be asked for.

    Raises:
        TypeError: `value` is not such an initializer.
        ValueError: the initializer refuses this shape or dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import init, nn
        >>> nn.check_initializer("kernel_init", init.xavier_uniform(), (4, 4), jnp.float32)
        >>> nn.check_initializer("kernel_init", init.xavier_uniform, (4, 4), jnp.float32)
        Traceback (most recent call last):
        TypeError: kernel_init is the factory jaxgrad.init.xavier_uniform, not an initializer: ...
    """
    factory = getattr(_init, getattr(value, "__name__", ""), None)
    if factory is value and getattr(value, "__module__", "") == _init.__name__:
        raise TypeError(
            f"{name} is the factory jaxgrad.init.{value.__name__}, not an initializer: call it, "
            f"e.g. {name}=init.{value.__name__}()"
        )
    if not callable(value):
        raise TypeError(
            f"{name} must be an initializer init(key, shape, dtype) -> array, such as "
            f"jaxgrad.init.xavier_uniform(); got {value!r}"
        )
    try:
        hash(value)
    except TypeError:
        drawn_shape = _drawn_shape.__wrapped__
    else:
        drawn_shape = _drawn_shape  # a repeated check (propagate in a loop) costs nothing
    try:
        drawn = drawn_shape(value, tuple(shape), jnp.dtype(dtype))
    except ValueError as error:
        raise ValueError(f"{name} cannot draw a {shape} array: {error}") from None
    except TypeError as error:
        raise TypeError(
            f"{name}={value!r} cannot be called as init(key, shape, dtype): {error}"
        ) from None
    if not isinstance(drawn, jax.ShapeDtypeStruct) or tuple(drawn.shape) != tuple(shape):
        got = getattr(drawn, "shape", type(drawn).__name__)
        raise TypeError(f"{name} must return an array of the shape asked, {shape}; got {got}")


@functools.lru_cache(maxsize=256)
def _drawn_shape(initializer, shape: tuple[int, ...], dtype: jnp.dtype):
    return jax.eval_shape(lambda key: initializer(key, shape, dtype), jax.random.key(0))


def check_bool(name: str, value: object) -> bool:
    """`value` if it is a bool (numpy's too), else a TypeError.

    Args:
        name: the argument's name, for the message.
        value: the value to check.

    Returns:
        `value` as a Python bool.

    Raises:
        TypeError: anything but a Python or NumPy bool.

    Example:
        >>> from jaxgrad import nn
        >>> nn.check_bool("residual", True)
        True
    """
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def as_input(model: str, x: object, dtype: jnp.dtype) -> jax.Array:
    """`x` as a jax array of the model's `dtype` (integer and other float inputs are cast, as
    a first `nnx.Linear` in that dtype would), or a TypeError for what is not an array.

    Args:
        model: the model's name, for the message.
        x: the input (anything `jnp.asarray` takes).
        dtype: the model's dtype.

    Returns:
        `x` as a jax array of `dtype`.

    Raises:
        TypeError: an input that is not numeric or not array-like.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import nn
        >>> nn.as_input("MLP", [1, 2], jnp.float32)
        Array([1., 2.], dtype=float32)
    """
    try:
        x = jnp.asarray(x)
    except TypeError:
        raise TypeError(
            f"{model} takes an array of inputs, got {type(x).__name__}: {x!r:.80}"
        ) from None
    if not (jnp.issubdtype(x.dtype, jnp.number) or x.dtype == jnp.bool_):
        raise TypeError(f"{model} takes numeric inputs, got dtype {x.dtype}")
    return x.astype(dtype)


def _check_features(model: str, x: jax.Array, in_features: int, leading: str) -> None:
    """Raise a ValueError unless `x` is (<leading axes>, in_features)."""
    if x.ndim < leading.count(",") + 1 or x.shape[-1] != in_features:
        raise ValueError(
            f"{model} expects inputs of shape ({leading}, {in_features}), got {tuple(x.shape)}"
        )


class PReLU(nnx.Module):
    """Parametric ReLU (He et al. 2015): x for x >= 0, a * x otherwise, with `a` learned.

    Args:
        num_parameters: 1 (one slope shared by all channels) or the number of channels (one
            slope per channel; channels are the last axis, JAX's layout).
        init: the initial slope.
        rngs: accepted for the NNX constructor convention; the initial value is deterministic.

    Raises:
        ValueError: a num_parameters that is not an int >= 1, a non-finite init; at the
            call, an input whose channels do not match num_parameters.
        TypeError: an init that is not a real number.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import nn
        >>> nn.PReLU(rngs=nnx.Rngs(0))(jnp.array([-2.0, 2.0])).tolist()
        [-0.5, 2.0]

    References:
        He, Zhang, Ren and Sun 2015, "Delving Deep into Rectifiers: Surpassing Human-Level
        Performance on ImageNet Classification".
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25, *, rngs: nnx.Rngs):
        self.num_parameters = _positive_int("num_parameters", num_parameters)
        init = _init._real("init", init)
        self.slope = nnx.Param(jnp.full((num_parameters,), init, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.num_parameters > 1 and x.shape[-1] != self.num_parameters:
            raise ValueError(
                f"PReLU has {self.num_parameters} slopes but the input has {x.shape[-1]} "
                f"channels (last axis of shape {x.shape})"
            )
        slope = self.slope[...].astype(x.dtype)
        slope = slope[0] if self.num_parameters == 1 else slope.reshape((1,) * (x.ndim - 1) + (-1,))
        return jnp.where(x >= 0, x, slope * x)


class RReLU(nnx.Module):
    """Randomized leaky ReLU (Xu et al. 2015): a slope per element drawn from U(lower, upper)
    in training mode, the mean slope (lower + upper) / 2 after `model.eval()`.

    Args:
        lower, upper: range of the random negative slope, 0 <= lower <= upper.
        deterministic: start in evaluation mode.
        rngs: the `rrelu` stream (or the default stream) supplies the slopes.

    Raises:
        ValueError: not 0 <= lower <= upper, or a non-finite bound.
        TypeError: a bound that is not a real number.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import nn
        >>> layer = nn.RReLU(deterministic=True, rngs=nnx.Rngs(0))  # slope (1/8 + 1/3) / 2
        >>> [round(v, 4) for v in layer(jnp.array([-1.0, 1.0])).tolist()]
        [-0.2292, 1.0]

    References:
        Xu, Wang, Chen and Li 2015, "Empirical Evaluation of Rectified Activations in
        Convolutional Network".
    """

    def __init__(
        self,
        lower: float = 1 / 8,
        upper: float = 1 / 3,
        *,
        deterministic: bool = False,
        rngs: nnx.Rngs,
    ):
        lower, upper = _init._real("lower", lower), _init._real("upper", upper)
        if not 0 <= lower <= upper:
            raise ValueError(f"RReLU needs 0 <= lower <= upper, got lower={lower}, upper={upper}")
        self.lower, self.upper = lower, upper
        self.deterministic = deterministic
        self.rngs = rngs["rrelu"].fork()

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.deterministic:
            return _act.rrelu(x, lower=self.lower, upper=self.upper, deterministic=True)
        return _act.rrelu(x, self.rngs(), self.lower, self.upper)


class Block(nnx.Module):
    """One hidden layer: h -> h' = phi(N(h W + b)), or h + residual_scale * phi(N(h W + b)).

    N is the identity, `nnx.BatchNorm` or `nnx.LayerNorm`; the normalized value N(h W + b) is
    what jaxgrad calls the pre-activation. `post` is the part after the matrix product, split
    out so that the probe can differentiate it on its own. Build one with `block_maker`,
    which validates the options.

    Args:
        width: the layer's input and output size.
        activation: the elementwise activation (a callable).
        kernel_init: the kernel's initializer.
        bias_init: the bias's initializer.
        norm: None, "batch" or "layer".
        residual: add the input to the output.
        residual_scale: the factor on the residual branch.
        dtype: parameter and computation dtype.
        rngs: `nnx.Rngs` for the parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import activations, init, nn
        >>> block = nn.Block(4, activation=activations.relu, kernel_init=init.identity(),
        ...                  bias_init=init.zeros(), norm=None, residual=True,
        ...                  residual_scale=1.0, dtype=jnp.float32, rngs=nnx.Rngs(0))
        >>> block(jnp.array([[1.0, -1.0, 2.0, 0.0]])).tolist()  # h + relu(h)
        [[2.0, -1.0, 4.0, 0.0]]
    """

    def __init__(
        self,
        width: int,
        *,
        activation: Callable[[jax.Array], jax.Array],
        kernel_init: _init.Initializer,
        bias_init: _init.Initializer,
        norm: str | None,
        residual: bool,
        residual_scale: float,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.linear = nnx.Linear(
            width,
            width,
            kernel_init=kernel_init,
            bias_init=bias_init,
            dtype=dtype,
            param_dtype=dtype,
            rngs=rngs,
        )
        if norm == "batch":
            self.norm = nnx.BatchNorm(width, dtype=dtype, param_dtype=dtype, rngs=rngs)
        elif norm == "layer":
            self.norm = nnx.LayerNorm(width, dtype=dtype, param_dtype=dtype, rngs=rngs)
        else:
            self.norm = None
        self.activation = activation
        self.residual = residual
        self.residual_scale = residual_scale

    def post(self, pre: jax.Array, h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """From the affine output `pre` and the block input `h` to (output, z = N(pre), phi(z))."""
        z = pre if self.norm is None else self.norm(pre)
        a = self.activation(z)
        out = h + self.residual_scale * a if self.residual else a
        return out, z, a

    def __call__(self, h: jax.Array) -> jax.Array:
        return self.post(self.linear(h), h)[0]


def _default_inits(kernel_init, bias_init) -> tuple[_init.Initializer, _init.Initializer]:
    """An MLP's initializers with their defaults: LeCun normal kernels, zero biases."""
    kernel_init = _init.lecun_normal() if kernel_init is None else kernel_init
    return kernel_init, _init.zeros() if bias_init is None else bias_init


def block_maker(
    width: int,
    *,
    activation: str | Callable[[jax.Array], jax.Array] = "tanh",
    kernel_init: _init.Initializer | None = None,
    bias_init: _init.Initializer | None = None,
    norm: str | None = None,
    residual: bool = False,
    residual_scale: float = 1.0,
    dtype: jnp.dtype = jnp.float32,
) -> Callable[[jax.Array], Block]:
    """`key -> Block`: one hidden block of an `MLP` with these options (the same defaults)
    drawn from its key. `MLP` vmaps it over `block_keys`; `jaxgrad.propagate` calls it inside
    its scans to rebuild each block where it is used instead of storing the stack (for
    threefry keys the same numbers: their vmapped draw equals the draws one key at a time).

    Args:
        width: the block's width.
        activation: a name or an elementwise callable.
        kernel_init: the kernel's initializer; default `init.lecun_normal()`.
        bias_init: the bias's initializer; default zeros.
        norm: None, "batch" or "layer".
        residual: add each block's input to its output.
        residual_scale: the factor on the residual branch.
        dtype: parameter and computation dtype.

    Returns:
        A function `make(key) -> Block`.

    Raises:
        ValueError: a width below 1, an unknown norm or activation name.
        TypeError: a bad initializer, flag or dtype.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jaxgrad import nn
        >>> make = nn.block_maker(4, activation="relu")
        >>> make(jax.random.key(0))(jnp.ones((2, 4))).shape
        (2, 4)
    """
    width = _positive_int("width", width)
    kernel_init, bias_init = _default_inits(kernel_init, bias_init)
    phi = _act.resolve(activation)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of None, 'batch', 'layer'; got {norm!r}")
    residual = check_bool("residual", residual)
    residual_scale = _init._real("residual_scale", residual_scale)
    dtype = float_dtype(dtype)
    check_initializer("kernel_init", kernel_init, (width, width), dtype)
    check_initializer("bias_init", bias_init, (width,), dtype)

    def make_block(key: jax.Array) -> Block:
        return Block(
            width,
            activation=phi,
            kernel_init=kernel_init,
            bias_init=bias_init,
            norm=norm,
            residual=residual,
            residual_scale=residual_scale,
            dtype=dtype,
            rngs=nnx.Rngs(params=key),
        )

    return make_block


def block_keys(rngs: nnx.Rngs, depth: int) -> jax.Array:
    """The `depth` keys of an `MLP`'s hidden blocks, drawn from `rngs` after the input
    projection's parameters.

    Args:
        rngs: the model's `nnx.Rngs` (its `params` stream is advanced once).
        depth: the number of blocks.

    Returns:
        A key array of shape (depth,).

    Example:
        >>> from flax import nnx
        >>> from jaxgrad import nn
        >>> nn.block_keys(nnx.Rngs(0), 3).shape
        (3,)
    """
    return jax.random.split(rngs.params(), depth)


def _dense(n_in: int, n_out: int, kernel_init, bias_init, dtype, rngs, use_bias=True):
    """An `nnx.Linear` with parameters and computation in `dtype`."""
    return nnx.Linear(
        n_in,
        n_out,
        use_bias=use_bias,
        kernel_init=kernel_init,
        bias_init=bias_init,
        dtype=dtype,
        param_dtype=dtype,
        rngs=rngs,
    )


class _Stack(nnx.Module):
    """What MLP and ResidualMLP share: their sizes, and the input projection and readout
    around the stacked blocks."""

    def _set_sizes(self, in_features, width, depth, out_features, rngs) -> None:
        self.in_features = _positive_int("in_features", in_features)
        self.width = _positive_int("width", width)
        self.depth = _positive_int("depth", depth)
        if out_features is not None:
            _positive_int("out_features", out_features)
        self.out_features = out_features
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs must be an nnx.Rngs, got {type(rngs).__name__}")

    def check_input(self, x: jax.Array) -> jax.Array:
        """`x` as an array of the model's dtype, or a ValueError unless it is (...,
        in_features) (a TypeError unless it is numeric)."""
        x = as_input(type(self).__name__, x, self.dtype)
        _check_features(type(self).__name__, x, self.in_features, "...")
        return x

    def embed(self, x: jax.Array) -> jax.Array:
        """The input projection (the identity when in_features == width), of `x` cast to the
        model's dtype."""
        x = self.check_input(x)
        return x if self.input_layer is None else self.input_layer(x)

    def head(self, h: jax.Array) -> jax.Array:
        """The readout (the identity when out_features is None)."""
        return h if self.readout is None else self.readout(h)


class MLP(_Stack):
    """A deep fully connected network with `depth` identical hidden layers of `width` units.

    Structure: an input projection `in_features -> width` (a plain `nnx.Linear`, no
    activation) when the two differ; then the hidden blocks, stacked along a leading depth
    axis and applied with `jax.lax.scan`,

        h_l = phi(N(h_{l-1} W_l + b_l))                          (residual=False)
        h_l = h_{l-1} + residual_scale * phi(N(h_{l-1} W_l + b_l))   (residual=True)

    with N the identity, batch norm or layer norm; then an optional linear readout to
    `out_features`. With residual blocks and a branch that preserves variance (He init for
    ReLU), Var(h_l) = (1 + residual_scale^2) Var(h_{l-1}): about 2x a block at scale 1.

    Args:
        in_features: input size.
        width: hidden size.
        depth: number of hidden blocks, >= 1.
        out_features: readout size, or None for no readout.
        activation: a name from `jaxgrad.activations.names()` or an elementwise callable.
        kernel_init: initializer of every kernel; default `init.lecun_normal()` (variance
            1/fan_in, the choice that keeps a linear network's signal at unit variance).
        bias_init: initializer of every bias; default zeros.
        norm: None, "batch" or "layer", applied to h W + b before the activation.
        residual: add each block's input to its output.
        residual_scale: the factor on the residual branch.
        dtype: parameter and computation dtype.
        rngs: `nnx.Rngs`; its `params` stream draws the weights.

    Raises:
        ValueError: on depth < 1, a non-positive size, or an unknown norm or activation.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import nn
        >>> model = nn.MLP(3, 16, depth=5, out_features=2, activation="relu", norm="layer",
        ...                rngs=nnx.Rngs(0))
        >>> model.blocks.linear.kernel.shape  # the hidden kernels, stacked on depth
        (5, 16, 16)
        >>> model(jnp.ones((4, 3))).shape
        (4, 2)

    References:
        LeCun, Bottou, Orr and Mueller 1998, "Efficient BackProp" (the default
        initialization); Ioffe and Szegedy 2015, "Batch Normalization: Accelerating Deep
        Network Training by Reducing Internal Covariate Shift"; Ba, Kiros and Hinton 2016,
        "Layer Normalization"; He, Zhang, Ren and Sun 2016, "Deep Residual Learning for
        Image Recognition".
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        out_features: int | None = None,
        *,
        activation: str | Callable[[jax.Array], jax.Array] = "tanh",
        kernel_init: _init.Initializer | None = None,
        bias_init: _init.Initializer | None = None,
        norm: str | None = None,
        residual: bool = False,
        residual_scale: float = 1.0,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self._set_sizes(in_features, width, depth, out_features, rngs)
        make_block = block_maker(  # validates every option, before anything is drawn
            width,
            activation=activation,
            kernel_init=kernel_init,
            bias_init=bias_init,
            norm=norm,
            residual=residual,
            residual_scale=residual_scale,
            dtype=dtype,
        )
        kernel_init, bias_init = _default_inits(kernel_init, bias_init)
        self.activation_name = _act.name_of(activation)
        self.norm = norm
        self.residual = bool(residual)
        self.dtype = jnp.dtype(dtype)

        def linear(n_in: int, n_out: int) -> nnx.Linear:
            return _dense(n_in, n_out, kernel_init, bias_init, dtype, rngs)

        self.input_layer = linear(in_features, width) if in_features != width else None
        self.blocks = nnx.vmap(make_block, in_axes=0, out_axes=0)(block_keys(rngs, depth))
        self.readout = linear(width, out_features) if out_features is not None else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.embed(x)
        graphdef, state = nnx.split(self.blocks)

        def body(h, layer_state):
            block = nnx.merge(graphdef, layer_state)
            h = block(h)
            return h, nnx.state(block)

        h, new_state = jax.lax.scan(body, h, state)
        nnx.update(self.blocks, new_state)
        return self.head(h)


# ----------------------------------------------------------------------------- residual MLP


def _bias_like(bias: jax.Array, y: jax.Array) -> jax.Array:
    """`bias` (features,) reshaped to broadcast against `y` (..., features), rank for rank."""
    return bias.reshape((1,) * (y.ndim - 1) + (-1,))


class ResidualBlock(nnx.Module):
    """One residual block with an m-layer branch and Fixup's scalar parameters.

        u_i = z_{i-1} + a_i                               (scalar bias before linear i)
        y_i = u_i W_i + b_i                               (linear i, i = 1..m)
        z_i = phi(y_i + c_i)            for i < m         (scalar bias before the activation)
        r   = s * y_m + c_m                               (scalar multiplier and last scalar bias)
        out = h + r        or        phi(h + r)  (post_activation)

    with z_0 = h. The m kernels are stored stacked, `kernel` of shape (m, width, width),
    `bias` (m, width); `scalar_bias_in` (a_i) and `scalar_bias_out` (c_i) have shape (m,),
    `multiplier` (s) is a scalar. At construction a = c = 0 and s = 1, so they change nothing.
    `ResidualMLP` builds and validates these blocks.

    Args:
        width: the block's width.
        branch_layers: m, the layers of the branch.
        activation: the elementwise activation (a callable).
        kernel_init: the kernels' initializer.
        bias_init: the biases' initializer.
        post_activation: apply the activation after the sum (the original ResNet).
        dtype: parameter and computation dtype.
        rngs: `nnx.Rngs` for the parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import activations, init, nn
        >>> block = nn.ResidualBlock(4, branch_layers=2, activation=activations.relu,
        ...                          kernel_init=init.zeros(), bias_init=init.zeros(),
        ...                          post_activation=False, dtype=jnp.float32, rngs=nnx.Rngs(0))
        >>> block.kernel.shape, block(jnp.ones((1, 4))).tolist()  # a zero branch: identity
        ((2, 4, 4), [[1.0, 1.0, 1.0, 1.0]])

    References:
        Zhang, Dauphin and Ma 2019, "Fixup Initialization: Residual Learning Without
        Normalization"; He, Zhang, Ren and Sun 2016, "Deep Residual Learning for Image
        Recognition".
    """

    def __init__(
        self,
        width: int,
        *,
        branch_layers: int,
        activation: Callable[[jax.Array], jax.Array],
        kernel_init: _init.Initializer,
        bias_init: _init.Initializer,
        post_activation: bool,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        # One draw per branch layer on its own (width, width) shape, so that fans are right.
        # A Python loop over the m layers (m is small): eager construction then reuses one
        # compiled sampler for every m, where a jax.vmap over m would compile one per m.
        kernels, biases = [], []
        for _ in range(branch_layers):
            kernels.append(kernel_init(rngs.params(), (width, width), dtype))
            biases.append(bias_init(rngs.params(), (width,), dtype))
        self.kernel = nnx.Param(jnp.stack(kernels))
        self.bias = nnx.Param(jnp.stack(biases))
        self.scalar_bias_in = nnx.Param(jnp.zeros((branch_layers,), dtype))
        self.scalar_bias_out = nnx.Param(jnp.zeros((branch_layers,), dtype))
        self.multiplier = nnx.Param(jnp.ones((), dtype))
        self.branch_layers = branch_layers
        self.activation = activation
        self.post_activation = post_activation

    def linear_input(self, i: int, z: jax.Array) -> jax.Array:
        """u_i = z + a_i: the input of the branch's linear layer `i` (0-based)."""
        return z + self.scalar_bias_in[...][i]

    def linear(self, i: int, u: jax.Array, kernel: jax.Array | None = None) -> jax.Array:
        """y_i = u W_i + b_i, with `kernel` in place of W_i when it is given."""
        kernel = self.kernel[...][i] if kernel is None else kernel
        y = u @ kernel
        return y + _bias_like(self.bias[...][i], y)

    def after_linear(self, i: int, y: jax.Array) -> jax.Array:
        """phi(y_i + c_i) inside the branch; s * y_m + c_m after its last layer."""
        if i < self.branch_layers - 1:
            return self.activation(y + self.scalar_bias_out[...][i])
        return self.multiplier[...] * y + self.scalar_bias_out[...][i]

    def branch(self, h: jax.Array) -> jax.Array:
        """The residual branch r(h)."""
        z = h
        for i in range(self.branch_layers):  # m is small and static: unrolled
            z = self.after_linear(i, self.linear(i, self.linear_input(i, z)))
        return z

    def combine(self, h: jax.Array, r: jax.Array) -> jax.Array:
        """h + r, or phi(h + r) with post_activation."""
        out = h + r
        return self.activation(out) if self.post_activation else out

    def __call__(self, h: jax.Array) -> jax.Array:
        return self.combine(h, self.branch(h))


class ResidualMLP(_Stack):
    """A deep residual MLP whose branches have `branch_layers` linear layers: Fixup's setting.

    Structure: an input projection `in_features -> width` (a plain `nnx.Linear`, no
    activation) when the two differ; then `depth` residual blocks (`ResidualBlock`), stacked
    along a leading depth axis and applied with `jax.lax.scan`,

        h_l = h_{l-1} + r_l(h_{l-1})                        (post_activation=False)
        h_l = phi(h_{l-1} + r_l(h_{l-1}))                   (post_activation=True)
        r_l(h) = s_l * Linear_m(... phi(Linear_1(h + a_1) + c_1) ... + a_m) + c_m

    then an optional linear readout to `out_features`. Every branch carries Fixup's scalar
    multiplier s (initialized to 1) and a scalar bias before each linear layer and each
    activation (initialized to 0); they do not change the function at construction.

    The default form, without an activation after the addition, is the one Fixup's analysis
    uses (x_l = x_{l-1} + F_l(x_{l-1})) and keeps the skip path the identity, so a branch
    initialized to zero makes the block exactly the identity. `post_activation=True` gives
    the original ResNet form of the paper's experiments and code, phi(h + r(h)) (with ReLU,
    a zero branch then maps h to relu(h)).

    Args:
        in_features: input size.
        width: hidden size.
        depth: number of residual blocks L, >= 1.
        out_features: readout size, or None for no readout.
        branch_layers: number of linear layers m in each branch, >= 1.
        activation: a name from `jaxgrad.activations.names()` or an elementwise callable;
            default "relu", the ResNet setting.
        kernel_init: initializer of every kernel (each branch kernel is drawn on its own
            (width, width) shape); default `init.kaiming_normal()` (He et al. 2015, for ReLU),
            Fixup's "standard initialization".
        bias_init: initializer of every per-unit bias; default zeros.
        post_activation: apply the activation after the addition (see above).
        dtype: parameter and computation dtype.
        rngs: `nnx.Rngs`; its `params` stream draws the weights.

    Raises:
        ValueError: on a non-positive size, depth or branch_layers, or an unknown activation.
        TypeError: on an activation that is neither a name nor a callable, or `rngs` that is
            not an `nnx.Rngs`.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import nn
        >>> model = nn.ResidualMLP(16, 32, depth=10, out_features=3, branch_layers=2,
        ...                        rngs=nnx.Rngs(0))
        >>> model.blocks.kernel.shape
        (10, 2, 32, 32)
        >>> model(jnp.ones((4, 16))).shape
        (4, 3)

    References:
        He et al. 2016, "Deep Residual Learning for Image Recognition". He et al. 2016,
        "Identity Mappings in Deep Residual Networks". Zhang et al. 2019, "Fixup
        Initialization: Residual Learning Without Normalization".
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        out_features: int | None = None,
        *,
        branch_layers: int = 2,
        activation: str | Callable[[jax.Array], jax.Array] = "relu",
        kernel_init: _init.Initializer | None = None,
        bias_init: _init.Initializer | None = None,
        post_activation: bool = False,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self._set_sizes(in_features, width, depth, out_features, rngs)
        self.branch_layers = _positive_int("branch_layers", branch_layers)
        phi = _act.resolve(activation)
        self.kernel_init = _init.kaiming_normal() if kernel_init is None else kernel_init
        self.bias_init = _init.zeros() if bias_init is None else bias_init
        self.activation_name = _act.name_of(activation)
        self.post_activation = check_bool("post_activation", post_activation)
        self.dtype = float_dtype(dtype)
        check_initializer("kernel_init", self.kernel_init, (width, width), self.dtype)
        check_initializer("bias_init", self.bias_init, (width,), self.dtype)

        def linear(n_in: int, n_out: int) -> nnx.Linear:
            return _dense(n_in, n_out, self.kernel_init, self.bias_init, dtype, rngs)

        self.input_layer = linear(in_features, width) if in_features != width else None

        @nnx.vmap(in_axes=0, out_axes=0)
        def make_blocks(key: jax.Array) -> ResidualBlock:
            return ResidualBlock(
                width,
                branch_layers=self.branch_layers,
                activation=phi,
                kernel_init=self.kernel_init,
                bias_init=self.bias_init,
                post_activation=self.post_activation,
                dtype=dtype,
                rngs=nnx.Rngs(params=key),
            )

        self.blocks = make_blocks(jax.random.split(rngs.params(), depth))
        self.readout = linear(width, out_features) if out_features is not None else None

    def trunk(self, h: jax.Array) -> jax.Array:
        """The residual blocks, h_0 -> h_L, applied with `jax.lax.scan` over the depth axis."""
        graphdef, state = nnx.split(self.blocks)

        def body(h, layer_state):
            return nnx.merge(graphdef, layer_state)(h), None

        return jax.lax.scan(body, h, state)[0]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.trunk(self.embed(x)))


# ----------------------------------------------------------------------------- recurrent


class RNN(nnx.Module):
    """An Elman recurrent network, h_t = phi(x_t W_in + b + h_{t-1} W_hh), applied with
    `jax.lax.scan` over time.

    Inputs are batch-major sequences, `(..., time, in_features)` (typically `(batch, time,
    in_features)`; a single sequence `(time, in_features)` works too). The initial state
    h_0 is zero unless given. Calling the model returns the readout of the last hidden
    state h_T, `(..., out_features)` (h_T itself when `out_features` is None);
    `hidden_states` returns every h_t, `(..., time, hidden)`; `step` is one update, so the
    gradient through time dh_T/dh_0 is a `jax.jacrev` of a loop of steps or of
    `hidden_states(x, h0)[..., -1, :]` away.

    The recurrent initializer sets the spectrum of W_hh, which controls gradients through
    time: with a linear activation dh_T/dh_0 = W_hh^T (the T-th power), so
    `recurrent_init=init.orthogonal(gain=g)` makes every singular value of dh_T/dh_0 equal
    to g^T: g < 1 vanishes, g > 1 explodes (Pascanu et al. 2013).

    Args:
        in_features: input size per time step.
        hidden: hidden state size.
        out_features: readout size, or None for no readout.
        activation: a name from `jaxgrad.activations.names()` or an elementwise callable.
        recurrent_init: initializer of W_hh (hidden, hidden); default `init.orthogonal()`.
        input_init: initializer of W_in (in_features, hidden) and of the readout kernel;
            default `init.lecun_normal()`.
        bias_init: initializer of b and of the readout bias; default zeros.
        dtype: parameter and computation dtype.
        rngs: `nnx.Rngs`; its `params` stream draws the weights.

    Raises:
        ValueError: on a non-positive size or an unknown activation.
        TypeError: on an activation that is neither a name nor a callable, or `rngs` that is
            not an `nnx.Rngs`.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import init, nn
        >>> rnn = nn.RNN(3, 16, 2, recurrent_init=init.orthogonal(gain=0.9), rngs=nnx.Rngs(0))
        >>> x = jnp.ones((8, 20, 3))
        >>> rnn(x).shape, rnn.hidden_states(x).shape
        ((8, 2), (8, 20, 16))

    References:
        Elman 1990, "Finding Structure in Time". Bengio et al. 1994, "Learning Long-Term
        Dependencies with Gradient Descent is Difficult". Pascanu et al. 2013, "On the
        difficulty of training recurrent neural networks".
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        out_features: int | None = None,
        *,
        activation: str | Callable[[jax.Array], jax.Array] = "tanh",
        recurrent_init: _init.Initializer | None = None,
        input_init: _init.Initializer | None = None,
        bias_init: _init.Initializer | None = None,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_features = _positive_int("in_features", in_features)
        self.hidden = _positive_int("hidden", hidden)
        if out_features is not None:
            _positive_int("out_features", out_features)
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs must be an nnx.Rngs, got {type(rngs).__name__}")
        self.activation = _act.resolve(activation)
        self.activation_name = _act.name_of(activation)
        self.out_features = out_features
        self.dtype = dtype = float_dtype(dtype)
        recurrent_init = _init.orthogonal() if recurrent_init is None else recurrent_init
        input_init = _init.lecun_normal() if input_init is None else input_init
        bias_init = _init.zeros() if bias_init is None else bias_init
        check_initializer("recurrent_init", recurrent_init, (hidden, hidden), dtype)
        check_initializer("input_init", input_init, (in_features, hidden), dtype)
        check_initializer("bias_init", bias_init, (hidden,), dtype)

        def linear(n_in: int, n_out: int, kernel_init, use_bias: bool = True) -> nnx.Linear:
            return _dense(n_in, n_out, kernel_init, bias_init, dtype, rngs, use_bias)

        self.input_layer = linear(in_features, hidden, input_init)
        self.recurrent = linear(hidden, hidden, recurrent_init, use_bias=False)
        self.readout = (
            linear(hidden, out_features, input_init) if out_features is not None else None
        )

    def check_input(self, x: jax.Array) -> jax.Array:
        """`x` as an array of the model's dtype, or a ValueError unless it is (..., time,
        in_features)."""
        x = as_input("RNN", x, self.dtype)
        _check_features("RNN", x, self.in_features, "..., time")
        return x

    def initial_state(self, x: jax.Array, h0: jax.Array | None = None) -> jax.Array:
        """`h0` checked against `x` and cast to the model's dtype, or zeros of shape
        (..., hidden) when it is None."""
        x = self.check_input(x)
        shape = (*x.shape[:-2], self.hidden)
        if h0 is None:
            return jnp.zeros(shape, self.dtype)
        h0 = as_input("RNN's h0", h0, self.dtype)
        if tuple(h0.shape) != shape:
            raise ValueError(
                f"h0 must have shape {shape} for inputs of shape {tuple(x.shape)}, "
                f"got {tuple(h0.shape)}"
            )
        return h0

    def step(self, h: jax.Array, x_t: jax.Array) -> jax.Array:
        """One update, h_t = phi(x_t W_in + b + h_{t-1} W_hh); h (..., hidden), x_t (..., in)."""
        return self.activation(self.input_layer(x_t) + self.recurrent(h))

    def _scan(self, x: jax.Array, h0: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        h = self.initial_state(x, h0)
        x = self.check_input(x)
        drive = jnp.moveaxis(self.input_layer(x), -2, 0)  # (time, ..., hidden), one matmul
        recurrent_kernel = self.recurrent.kernel[...]
        phi = self.activation

        def body(h, drive_t):
            h = phi(drive_t + h @ recurrent_kernel)
            return h, h

        last, states = jax.lax.scan(body, h, drive)
        return last, jnp.moveaxis(states, 0, -2)

    def hidden_states(self, x: jax.Array, h0: jax.Array | None = None) -> jax.Array:
        """Every hidden state h_1..h_T, shape (..., time, hidden), for inputs (..., time, in)."""
        return self._scan(x, h0)[1]

    def __call__(self, x: jax.Array, h0: jax.Array | None = None) -> jax.Array:
        """The readout of the last hidden state, (..., out_features) (h_T without a readout)."""
        last = self._scan(x, h0)[0]
        return last if self.readout is None else self.readout(last)
