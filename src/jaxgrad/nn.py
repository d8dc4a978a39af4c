"""Flax NNX modules: learnable and randomized rectifiers, and the deep MLP that jaxgrad probes.

The deep MLP stores its hidden layers stacked: one `Block` whose parameters have a leading
depth axis, built with `nnx.vmap` over split keys and applied with `jax.lax.scan`, so the
compiled program, and the time to compile it, do not grow with depth.

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

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgrad import activations as _act
from jaxgrad import init as _init

NORMS = (None, "batch", "layer")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


class PReLU(nnx.Module):
    """Parametric ReLU (He et al. 2015): x for x >= 0, a * x otherwise, with `a` learned.

    Args:
        num_parameters: 1 (one slope shared by all channels) or the number of channels (one
            slope per channel; channels are the last axis, JAX's layout).
        init: the initial slope.
        rngs: accepted for the NNX constructor convention; the initial value is deterministic.
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
    out so that the probe can differentiate it on its own.
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


class MLP(nnx.Module):
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
        self.in_features = _positive_int("in_features", in_features)
        self.width = _positive_int("width", width)
        self.depth = _positive_int("depth", depth)
        if out_features is not None:
            _positive_int("out_features", out_features)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of None, 'batch', 'layer'; got {norm!r}")
        residual_scale = _init._real("residual_scale", residual_scale)
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs must be an nnx.Rngs, got {type(rngs).__name__}")
        phi = _act.resolve(activation)
        kernel_init = _init.lecun_normal() if kernel_init is None else kernel_init
        bias_init = _init.zeros() if bias_init is None else bias_init
        self.activation_name = _act.name_of(activation)
        self.norm = norm
        self.residual = bool(residual)
        self.out_features = out_features

        def linear(n_in: int, n_out: int) -> nnx.Linear:
            return nnx.Linear(
                n_in,
                n_out,
                kernel_init=kernel_init,
                bias_init=bias_init,
                dtype=dtype,
                param_dtype=dtype,
                rngs=rngs,
            )

        self.input_layer = linear(in_features, width) if in_features != width else None

        @nnx.vmap(in_axes=0, out_axes=0)
        def make_blocks(key: jax.Array) -> Block:
            return Block(
                width,
                activation=phi,
                kernel_init=kernel_init,
                bias_init=bias_init,
                norm=norm,
                residual=self.residual,
                residual_scale=residual_scale,
                dtype=dtype,
                rngs=nnx.Rngs(params=key),
            )

        self.blocks = make_blocks(jax.random.split(rngs.params(), depth))
        self.readout = linear(width, out_features) if out_features is not None else None

    def check_input(self, x: jax.Array) -> None:
        """Raise a ValueError unless `x` is (..., in_features)."""
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"MLP expects inputs of shape (..., {self.in_features}), got {tuple(x.shape)}"
            )

    def embed(self, x: jax.Array) -> jax.Array:
        """The input projection (the identity when in_features == width)."""
        self.check_input(x)
        return x if self.input_layer is None else self.input_layer(x)

    def head(self, h: jax.Array) -> jax.Array:
        """The readout (the identity when out_features is None)."""
        return h if self.readout is None else self.readout(h)

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
