"""Initializers that need the model or a batch of data: LSUV and Fixup.

The initializers of `jaxgrad.init` draw one array from its shape alone. The two here act on a
whole model, in place (the NNX way):

- `lsuv(model, x, key)`, layer-sequential unit-variance initialization (Mishkin and Matas
  2015): orthogonal kernels, then, layer by layer in forward order, each kernel is divided by
  the standard deviation of its layer's output on the batch `x` until that variance is within
  `tol` of 1.
- `fixup(model)`, fixed-update initialization (Zhang et al. 2019) of a residual network
  without normalization: the last layer of every residual branch and the classifier start at
  zero, the other branch layers are scaled down by L^(-1/(2m-2)).

For the stacked models of `jaxgrad.nn` (`MLP`, `ResidualMLP`) LSUV runs as one compiled
`jax.lax.scan` over the depth axis, carrying the batch's hidden state, with a
`jax.lax.while_loop` for the rescaling of each layer: the time to compile does not grow with
depth. Other NNX models are handled layer by layer from Python (see `lsuv`).

Example:
    >>> import jax
    >>> from flax import nnx
    >>> from jaxgrad import nn
    >>> from jaxgrad.model_init import fixup, lsuv
    >>> model = nn.MLP(32, 64, depth=20, activation="tanh", rngs=nnx.Rngs(0))
    >>> x = jax.random.normal(jax.random.key(1), (256, 32))
    >>> report = lsuv(model, x, jax.random.key(2))
    >>> bool(report.converged["blocks.linear.kernel"].all())
    True
    >>> resnet = nn.ResidualMLP(32, 64, depth=20, out_features=10, rngs=nnx.Rngs(0))
    >>> fixup(resnet)
    >>> float(abs(resnet(x)).max())
    0.0

References:
    Mishkin and Matas 2015, "All you need is a good init". Saxe et al. 2014, "Exact solutions
    to the nonlinear dynamics of learning in deep linear neural networks". Zhang et al. 2019,
    "Fixup Initialization: Residual Learning Without Normalization".
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxgrad import activations as _act
from jaxgrad import init as _init
from jaxgrad import nn as _nn
from jaxgrad.inspection import _path_str, on_call_outputs

if TYPE_CHECKING:
    import pandas as pd

#: Module types whose kernels `lsuv` initializes in a model that is not a jaxgrad stack.
LSUV_MODULES: tuple[type[nnx.Module], ...] = (nnx.Linear, nnx.Conv)

_ORTHOGONAL = _init.orthogonal()


class LSUVReport(NamedTuple):
    """The result of `lsuv`: per layer, what the rescaling reached.

    Every dictionary is keyed by the path of the rescaled kernel in forward order, e.g.
    `"input_layer.kernel"`, `"blocks.linear.kernel"`, `"readout.kernel"`, or for a generic
    model `"layers.0.kernel"`. A stacked kernel has one entry per layer: an array of shape
    `(depth,)` for `MLP` blocks, `(depth, branch_layers)` for `ResidualMLP` blocks; a single
    layer has a scalar.

    Attributes:
        variance: variance of the layer's output on the batch (over every entry) after the
            last rescaling.
        iterations: number of rescalings, from 0 to `max_iters`.
        converged: whether |variance - 1| < tol.
        initial_variance: the same variance before the first rescaling (with the orthogonal
            kernel when a key was given), the layers before it already rescaled: what LSUV
            corrected.

    Example:
        >>> import jax
        >>> from flax import nnx
        >>> from jaxgrad import nn
        >>> from jaxgrad.model_init import lsuv
        >>> model = nn.MLP(4, 16, depth=3, out_features=2, activation="tanh", rngs=nnx.Rngs(0))
        >>> report = lsuv(model, jax.random.normal(jax.random.key(0), (64, 4)), jax.random.key(1))
        >>> report.converged["blocks.linear.kernel"].tolist()
        [True, True, True]
        >>> round(float(report.variance["readout.kernel"]), 4)
        1.0
    """

    variance: dict[str, jax.Array]
    iterations: dict[str, jax.Array]
    converged: dict[str, jax.Array]
    initial_variance: dict[str, jax.Array]

    def to_frame(self) -> pd.DataFrame:
        """One row per layer (a stacked kernel gives one row per index, `"blocks.kernel[3, 1]"`),
        columns `layer`, `initial_variance`, `variance`, `iterations`, `converged`."""
        import pandas as pd  # the pandas view lives at the edge, not in the numeric core

        host = jax.device_get(self)
        columns = ["layer", "initial_variance", "variance", "iterations", "converged"]
        rows = []
        for path, variance in host.variance.items():
            variance = np.asarray(variance)
            for index in np.ndindex(variance.shape):
                suffix = f"[{', '.join(str(i) for i in index)}]" if index else ""
                rows.append(
                    {
                        "layer": path + suffix,
                        "initial_variance": float(np.asarray(host.initial_variance[path])[index]),
                        "variance": float(variance[index]),
                        "iterations": int(np.asarray(host.iterations[path])[index]),
                        "converged": bool(np.asarray(host.converged[path])[index]),
                    }
                )
        return pd.DataFrame(rows, columns=columns)

    def __repr__(self) -> str:
        """One line per kernel path: the output variance before and after, the rescalings,
        and how many layers converged (a stacked kernel summarized over its layers)."""
        host = jax.device_get(self)
        lines = [f"LSUVReport of {len(host.variance)} kernels (every layer: .to_frame())"]
        for path, variance in host.variance.items():
            after = np.asarray(variance, np.float64)
            before = np.asarray(host.initial_variance[path], np.float64)
            iterations = np.asarray(host.iterations[path])
            converged = np.asarray(host.converged[path])
            done = f"{int(converged.sum())} of {converged.size} converged"
            if after.ndim == 0:
                done = "converged" if converged else "not converged"
            layers = f" ({after.size} layers)" if after.ndim else ""
            lines.append(
                f"  {path}{layers}: variance {_span(before)} before, {_span(after)} after; "
                f"rescalings {_span(iterations)}; {done}"
            )
        return "\n".join(lines)


def _span(values: np.ndarray) -> str:
    """'0.98' or '0.391 to 1.04': the range of some layers' values, for a repr."""
    floating = np.issubdtype(values.dtype, np.floating)
    low, high = (f"{v:.3g}" if floating else str(v) for v in (np.min(values), np.max(values)))
    return low if low == high else f"{low} to {high}"


# ----------------------------------------------------------------------------- LSUV


def _float(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _affine(u: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    y = u @ kernel
    return y if bias is None else y + bias.reshape((1,) * (y.ndim - 1) + (-1,))


def _normalize(
    kernel: jax.Array,
    output_of: Callable[[jax.Array], jax.Array],
    tol: jax.Array,
    max_iters: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """LSUV's inner loop, W <- W / sqrt(Var(output)), as a `jax.lax.while_loop`.

    Stops when |Var - 1| < tol, after `max_iters` rescalings, or when the variance is 0 or
    not finite (nothing to divide by). Returns (kernel, variance, iterations, the variance
    before the first rescaling).
    """

    def variance_of(k: jax.Array) -> jax.Array:
        return jnp.var(_float(output_of(k)))

    def keep_going(carry: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        _, variance, iterations = carry
        usable = jnp.isfinite(variance) & (variance > 0)
        return usable & (jnp.abs(variance - 1) >= tol) & (iterations < max_iters)

    def rescale(carry: tuple[jax.Array, jax.Array, jax.Array]):
        k, variance, iterations = carry
        k = (_float(k) / jnp.sqrt(variance)).astype(k.dtype)
        return k, variance_of(k), iterations + 1

    initial = variance_of(kernel)
    start = (kernel, initial, jnp.zeros((), jnp.int32))
    return (*jax.lax.while_loop(keep_going, rescale, start), initial)


def _orthogonal_like(key: jax.Array | None, kernel: jax.Array) -> jax.Array:
    return kernel if key is None else _ORTHOGONAL(key, kernel.shape, kernel.dtype)


@jax.jit
def _lsuv_dense(kernel, bias, inputs, key, tol, max_iters):
    """One unstacked dense layer: (kernel, variance, iterations, output with the new kernel)."""
    kernel = _orthogonal_like(key, kernel)
    output_of = functools.partial(_affine, inputs, bias=bias)
    kernel, variance, iterations, initial = _normalize(kernel, output_of, tol, max_iters)
    return kernel, variance, iterations, initial, output_of(kernel)


@functools.partial(jax.jit, static_argnums=0)
def _lsuv_mlp_blocks(graphdef, state, h, keys, tol, max_iters):
    """The stacked blocks of an `nn.MLP`, as one scan over depth carrying the hidden batch."""

    def body(h, layer):
        layer_state, key = layer
        block = nnx.merge(graphdef, layer_state)
        linear = block.linear
        bias = None if linear.bias is None else linear.bias[...]
        kernel = _orthogonal_like(key, linear.kernel[...])
        output_of = functools.partial(_affine, h, bias=bias)
        kernel, variance, iterations, initial = _normalize(kernel, output_of, tol, max_iters)
        linear.kernel[...] = kernel
        # norm statistics updates are dropped
        return block(h), (kernel, variance, iterations, initial)

    return jax.lax.scan(body, h, (state, keys))


@functools.partial(jax.jit, static_argnums=0)
def _lsuv_residual_blocks(graphdef, state, h, keys, tol, max_iters):
    """The stacked blocks of an `nn.ResidualMLP`: a scan over depth; each branch's m layers
    are normalized in order inside the scan body."""

    def body(h, layer):
        layer_state, layer_keys = layer
        block = nnx.merge(graphdef, layer_state)
        kernels, variances, iterations, initials = [], [], [], []
        z = h
        for i in range(block.branch_layers):  # m is small and static
            key = None if layer_keys is None else layer_keys[i]
            kernel = _orthogonal_like(key, block.kernel[...][i])
            u = block.linear_input(i, z)
            output_of = functools.partial(block.linear, i, u)
            kernel, variance, count, initial = _normalize(kernel, output_of, tol, max_iters)
            z = block.after_linear(i, block.linear(i, u, kernel))
            kernels.append(kernel)
            variances.append(variance)
            iterations.append(count)
            initials.append(initial)
        stages = (kernels, variances, iterations, initials)
        return block.combine(h, z), tuple(map(jnp.stack, stages))

    return jax.lax.scan(body, h, (state, keys))


def _split(key: jax.Array | None, shape: int | tuple[int, ...]) -> jax.Array | None:
    return None if key is None else jax.random.split(key, shape)


class _Stage(NamedTuple):
    kernel: jax.Array
    variance: jax.Array
    iterations: jax.Array
    initial_variance: jax.Array


def _lsuv_linear_layer(
    layer: nnx.Linear, h: jax.Array, key: jax.Array | None, tol: jax.Array, max_iters: jax.Array
) -> tuple[jax.Array, _Stage]:
    bias = None if layer.bias is None else layer.bias[...]
    kernel, variance, iterations, initial, out = _lsuv_dense(
        layer.kernel[...], bias, h, key, tol, max_iters
    )
    layer.kernel[...] = kernel
    return out, _Stage(kernel, variance, iterations, initial)


def _lsuv_stack(
    model: _nn.MLP | _nn.ResidualMLP,
    x: jax.Array,
    key: jax.Array | None,
    tol: jax.Array,
    max_iters: jax.Array,
) -> dict[str, _Stage]:
    """LSUV of a jaxgrad stack: input projection, the scanned blocks, the readout."""
    model.check_input(x)
    key_input, key_blocks, key_readout = (None,) * 3 if key is None else _split(key, 3)
    stages: dict[str, _Stage] = {}
    h = x
    if model.input_layer is not None:
        h, stages["input_layer.kernel"] = _lsuv_linear_layer(
            model.input_layer, h, key_input, tol, max_iters
        )
    graphdef, state = nnx.split(model.blocks)
    if isinstance(model, _nn.MLP):
        keys = _split(key_blocks, model.depth)
        h, stage = _lsuv_mlp_blocks(graphdef, state, h, keys, tol, max_iters)
        model.blocks.linear.kernel[...] = stage[0]
        stages["blocks.linear.kernel"] = _Stage(*stage)
    else:
        keys = _split(key_blocks, (model.depth, model.branch_layers))
        h, stage = _lsuv_residual_blocks(graphdef, state, h, keys, tol, max_iters)
        model.blocks.kernel[...] = stage[0]
        stages["blocks.kernel"] = _Stage(*stage)
    if model.readout is not None:
        _, stages["readout.kernel"] = _lsuv_linear_layer(
            model.readout, h, key_readout, tol, max_iters
        )
    return stages


def _record_first_outputs(
    targets: dict[int, tuple[str, nnx.Module]], outputs: dict[str, jax.Array]
):
    """While active, the first `__call__` output of each target (id -> (path, module)) is put
    in `outputs` under its path, in call order."""
    return on_call_outputs(targets, lambda module, path, output: outputs.setdefault(path, output))


def _layer_outputs(
    graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array, paths: tuple[str, ...]
) -> dict[str, jax.Array]:
    """Run a copy of the model on `x`; the first output of each layer in `paths`, in call order."""
    model = nnx.merge(graphdef, state, copy=True)
    targets = {
        id(module): (_path_str(path), module)
        for path, module in nnx.iter_modules(model)
        if _path_str(path) in paths
    }
    outputs: dict[str, jax.Array] = {}
    with _record_first_outputs(targets, outputs):
        model(x)
    return outputs


@functools.partial(jax.jit, static_argnums=(0, 1))
def _layer_variances(graphdef, order, state, x):
    outputs = _layer_outputs(graphdef, state, x, order)
    return jnp.stack([jnp.var(_float(outputs[path])) for path in order])


def _lsuv_generic(
    model: nnx.Module, x: jax.Array, key: jax.Array | None, tol: float, max_iters: int
) -> dict[str, _Stage]:
    """LSUV of any NNX model whose `nnx.Linear` / `nnx.Conv` layers `model(x)` calls directly.

    Layer by layer from Python: a layer's variance comes from one compiled forward pass of
    the whole model (compiled once), so the cost is at most (max_iters + 1) passes per layer.
    """
    layers = {
        _path_str(path): module
        for path, module in nnx.iter_modules(model)
        if isinstance(module, LSUV_MODULES)
    }
    if not layers:
        raise TypeError(
            f"lsuv found no nnx.Linear or nnx.Conv layer in {type(model).__name__}; it supports "
            "jaxgrad.nn.MLP, jaxgrad.nn.ResidualMLP and models built from those layers"
        )
    graphdef, state = nnx.split(model)
    order: list[str] = []

    def trace_order(state: nnx.State, x: jax.Array) -> None:
        order.extend(_layer_outputs(graphdef, state, x, tuple(layers)))

    jax.eval_shape(trace_order, state, x)
    never_called = [path for path in layers if path not in order]
    if never_called:
        raise TypeError(
            f"lsuv cannot reach the layers {never_called} of {type(model).__name__}: model(x) "
            "never calls them directly (layers stored stacked and applied inside jax.lax.scan, "
            "nnx.scan or nnx.vmap are copies it does not see, as are layers a model does not "
            "call). Supported: jaxgrad.nn.MLP, jaxgrad.nn.ResidualMLP, and models whose "
            "nnx.Linear / nnx.Conv layers are called as they are stored"
        )
    order_key = tuple(order)

    def variance(index: int) -> float:
        return float(_layer_variances(graphdef, order_key, nnx.state(model), x)[index])

    keys = _split(key, len(order))
    stages: dict[str, _Stage] = {}
    for index, path in enumerate(order):
        layer = layers[path]
        if keys is not None:
            layer.kernel[...] = _orthogonal_like(keys[index], layer.kernel[...])
        current, iterations = variance(index), 0
        initial = current
        while (
            math.isfinite(current)
            and current > 0
            and abs(current - 1) >= tol
            and iterations < max_iters
        ):
            kernel = layer.kernel[...]
            layer.kernel[...] = (_float(kernel) / math.sqrt(current)).astype(kernel.dtype)
            current, iterations = variance(index), iterations + 1
        stages[f"{path}.kernel"] = _Stage(
            layer.kernel[...], jnp.float32(current), jnp.int32(iterations), jnp.float32(initial)
        )
    return stages


def lsuv(
    model: nnx.Module,
    x: jax.Array,
    key: jax.Array | None,
    *,
    tol: float = 0.1,
    max_iters: int = 10,
) -> LSUVReport:
    """Layer-sequential unit-variance initialization (Mishkin and Matas 2015), in place.

    1. With a `key`, every kernel is replaced by a Haar-random orthogonal one
       (`init.orthogonal()`; a convolution kernel is orthogonal as a (taps * in, out)
       matrix). With `key=None` the current kernels are kept and only rescaled.
    2. Layer by layer, in forward order: run the batch `x` through the network up to the
       layer, and while |Var(y) - 1| >= tol and fewer than `max_iters` rescalings were done,
       divide the kernel by sqrt(Var(y)), where y = u W + b is the layer's output (before
       any normalization and activation) and the variance is over every entry of y (batch
       and units). Biases are not changed.

    Every linear layer is normalized, as in the paper: the input projection, each hidden
    layer, and the readout (so the logits start with unit variance). In a `ResidualMLP`
    each linear layer of each branch is normalized, the last one before the branch's scalar
    multiplier; the residual stream then grows with depth, since each block adds a
    unit-variance branch (use `fixup` for the residual-specific cure). In an `MLP` with
    batch or layer norm, the output before the norm is what is measured. Norm statistics
    and random-number states used on the way are discarded; only kernels change.

    Supported models: `nn.MLP` and `nn.ResidualMLP` (one compiled scan over the stacked
    layers, compile time independent of depth), and any NNX model whose `nnx.Linear` and
    `nnx.Conv` layers `model(x)` calls as they are stored (the call order is found by
    tracing `model(x)` once; a layer called several times is normalized on its first
    call). Such a model is handled layer by layer, with up to `max_iters + 1` compiled
    forward passes of the whole model per layer.

    Args:
        model: the model to initialize; its kernels are changed in place.
        x: a batch of inputs, what `model(x)` takes; a few hundred examples are typical.
        key: PRNG key for the orthogonal kernels, or None to keep the current kernels.
        tol: tolerance on the variance, > 0.
        max_iters: the most rescalings per layer, an int >= 0.

    Returns:
        An `LSUVReport` (per layer: the output variance before and after, the rescalings
        used, convergence); its repr is a few lines, `to_frame()` one row per layer.

    Raises:
        TypeError: for a model that is not an `nnx.Module`, an `nn.RNN`, a model with no
            `nnx.Linear` or `nnx.Conv`, or one whose layers `model(x)` does not call
            directly; for a `key` that is not a JAX array.
        ValueError: for a bad `tol` or `max_iters`, or inputs of the wrong shape.

    Example:
        >>> import jax
        >>> from flax import nnx
        >>> from jaxgrad import nn
        >>> from jaxgrad.model_init import lsuv
        >>> model = nn.MLP(16, 32, depth=30, out_features=4, activation="relu",
        ...                rngs=nnx.Rngs(0))
        >>> report = lsuv(model, jax.random.normal(jax.random.key(0), (128, 16)),
        ...               jax.random.key(1))
        >>> list(report.variance), report.variance["blocks.linear.kernel"].shape
        (['input_layer.kernel', 'blocks.linear.kernel', 'readout.kernel'], (30,))

    References:
        Mishkin and Matas 2015, "All you need is a good init". Saxe et al. 2014, "Exact
        solutions to the nonlinear dynamics of learning in deep linear neural networks".
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    if isinstance(model, _nn.RNN):
        raise TypeError(
            "lsuv does not support jaxgrad.nn.RNN: its recurrent kernel is applied at every "
            "time step inside jax.lax.scan; initialize it with recurrent_init= instead "
            "(e.g. init.orthogonal())"
        )
    if key is not None and not isinstance(key, jax.Array):
        raise TypeError(
            f"key must be a PRNG key (jax.random.key(seed)) or None, got {type(key).__name__}"
        )
    tol = _init._positive("tol", tol)
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 0:
        raise ValueError(f"max_iters must be an int >= 0, got {max_iters!r}")
    x = jnp.asarray(x)
    if isinstance(model, _nn.MLP | _nn.ResidualMLP):
        stages = _lsuv_stack(model, x, key, jnp.float32(tol), jnp.int32(max_iters))
    else:
        stages = _lsuv_generic(model, x, key, tol, max_iters)
    # OrderedDicts: JAX keeps their order (forward order) through jit, device_get and tree_map
    return LSUVReport(
        variance=collections.OrderedDict((path, s.variance) for path, s in stages.items()),
        iterations=collections.OrderedDict((path, s.iterations) for path, s in stages.items()),
        converged=collections.OrderedDict(
            (path, jnp.abs(s.variance - 1) < tol) for path, s in stages.items()
        ),
        initial_variance=collections.OrderedDict(
            (path, s.initial_variance) for path, s in stages.items()
        ),
    )


# ----------------------------------------------------------------------------- Fixup


def _fixup_mlp(model: _nn.MLP) -> None:
    if not model.residual:
        raise ValueError(
            "fixup needs a residual network; got an MLP with residual=False (build it with "
            "residual=True, or use jaxgrad.nn.ResidualMLP)"
        )
    if model.norm is not None:
        raise ValueError(
            f"fixup is for residual networks without normalization; got an MLP with "
            f"norm={model.norm!r} (use norm=None)"
        )
    phi = model.blocks.activation
    at_zero = float(phi(jnp.zeros((), jnp.float32)))
    slope_at_zero = float(_act.derivative(phi)(jnp.zeros((), jnp.float32)))
    if at_zero != 0 or slope_at_zero == 0:
        raise ValueError(
            f"an MLP block's branch is phi(h W + b), so after zeroing W and b it outputs "
            f"phi(0) = {at_zero:g} with slope phi'(0) = {slope_at_zero:g} for activation "
            f"{model.activation_name!r}; fixup needs phi(0) = 0 (the block is the identity) "
            "and phi'(0) != 0 (its weights get gradients), e.g. tanh. For relu use "
            "jaxgrad.nn.ResidualMLP, whose branches end with a linear layer"
        )
    linear = model.blocks.linear
    linear.kernel[...] = jnp.zeros_like(linear.kernel[...])
    linear.bias[...] = jnp.zeros_like(linear.bias[...])


def _fixup_residual_mlp(model: _nn.ResidualMLP, key: jax.Array | None) -> None:
    blocks = model.blocks
    depth, m = model.depth, model.branch_layers
    kernel, bias = blocks.kernel[...], blocks.bias[...]
    if m > 1:
        inner_kernel, inner_bias = kernel[:, : m - 1], bias[:, : m - 1]
        if key is not None:
            key_kernel, key_bias = jax.random.split(key)
            shape = (model.width, model.width)

            def redraw(init_fn: _init.Initializer, key: jax.Array, shape: tuple[int, ...]):
                # vmapped over depth, looped over the m - 1 layers: one compiled sampler
                draw = jax.vmap(lambda k: init_fn(k, shape, model.dtype))
                layers = [draw(jax.random.split(k, depth)) for k in jax.random.split(key, m - 1)]
                return jnp.stack(layers, axis=1)

            inner_kernel = redraw(model.kernel_init, key_kernel, shape)
            inner_bias = redraw(model.bias_init, key_bias, (model.width,))
        scale = depth ** (-1.0 / (2 * m - 2))
        inner_kernel = (_float(inner_kernel) * scale).astype(kernel.dtype)
        kernel = jnp.concatenate([inner_kernel, jnp.zeros_like(kernel[:, m - 1 :])], axis=1)
        bias = jnp.concatenate([inner_bias, jnp.zeros_like(bias[:, m - 1 :])], axis=1)
    else:
        kernel, bias = jnp.zeros_like(kernel), jnp.zeros_like(bias)
    blocks.kernel[...] = kernel
    blocks.bias[...] = bias
    blocks.multiplier[...] = jnp.ones_like(blocks.multiplier[...])
    blocks.scalar_bias_in[...] = jnp.zeros_like(blocks.scalar_bias_in[...])
    blocks.scalar_bias_out[...] = jnp.zeros_like(blocks.scalar_bias_out[...])


def fixup(model: _nn.ResidualMLP | _nn.MLP, *, key: jax.Array | None = None) -> None:
    """Fixup initialization (Zhang et al. 2019) of a residual network, in place.

    With L residual branches (the depth) of m linear layers each:

    1. the classification layer (the readout) and the last linear layer of each branch are
       zero, kernel and bias;
    2. the other branch layers keep a standard initialization (the model's `kernel_init`,
       He normal by default) scaled by L^(-1/(2m-2));
    3. the scalar multiplier of every branch is 1 and the scalar biases are 0.

    At the end every block is the identity (with `post_activation=True`, phi applied to its
    input) and the readout outputs zero; training can still start, since the gradient of the
    loss reaches the readout at once, and the zeroed branch layers as soon as the readout
    moves (or at once in a model without a readout). The input projection is not changed.

    For m = 1 the scaling rule is vacuous: the one layer of each branch is zeroed. That is
    the case of `nn.MLP(residual=True)`, whose block branch is phi(h W + b): its kernels
    and biases are zeroed, which makes the block the identity only if phi(0) = 0, and lets
    gradients through only if phi'(0) != 0 (tanh qualifies; relu, whose derivative at 0 is
    0 in JAX, does not, and is refused). Its `residual_scale` plays the role of the fixed
    multiplier and is left as it is.

    Args:
        model: an `nn.ResidualMLP`, or an `nn.MLP` with `residual=True` and `norm=None`.
        key: for a `ResidualMLP` with m >= 2, draw the scaled branch layers afresh from the
            model's `kernel_init` and `bias_init` with this key. None (default) scales the
            current kernels, which is the rule itself when the model is freshly built.
            Unused for m = 1.

    Raises:
        TypeError: for a model that is neither, or a `key` that is not a JAX array.
        ValueError: for an MLP without residual connections, with normalization, or with
            an activation for which a zero block is not a trainable identity.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import nn
        >>> from jaxgrad.model_init import fixup
        >>> model = nn.ResidualMLP(8, 8, depth=16, branch_layers=3, rngs=nnx.Rngs(0))
        >>> fixup(model)
        >>> x = jnp.ones((2, 8))
        >>> bool((model(x) == x).all())
        True

    References:
        Zhang et al. 2019, "Fixup Initialization: Residual Learning Without Normalization".
    """
    if key is not None and not isinstance(key, jax.Array):
        raise TypeError(
            f"key must be a PRNG key (jax.random.key(seed)) or None, got {type(key).__name__}"
        )
    if isinstance(model, _nn.ResidualMLP):
        _fixup_residual_mlp(model, key)
    elif isinstance(model, _nn.MLP):
        _fixup_mlp(model)
    else:
        raise TypeError(
            "fixup supports jaxgrad.nn.ResidualMLP and jaxgrad.nn.MLP(residual=True), got "
            f"{type(model).__name__}"
        )
    if model.readout is not None:
        readout = model.readout
        readout.kernel[...] = jnp.zeros_like(readout.kernel[...])
        readout.bias[...] = jnp.zeros_like(readout.bias[...])


# ----------------------------------------------------------------------------- cures


CURES = ("auto", "critical", "lsuv")


class CureResult(NamedTuple):
    """What `cure` did and what it measured before and after.

    Attributes:
        model: the cured copy (the model given is not changed).
        method: "critical" (kernels, and biases where prescribed, redrawn at the mean-field
            critical point) or "lsuv".
        before, after: `jaxgrad.diagnose` of the model and of the cured copy on the batch.
        report_before, report_after: their `jaxgrad.inspect` reports.
        detail: the prescription (`stats.Prescription`) or the `LSUVReport`.

    Example:
        >>> from jaxgrad.model_init import CureResult
        >>> CureResult._fields  # `cure`'s example reads them
        ('model', 'method', 'before', 'after', 'report_before', 'report_after', 'detail')
    """

    model: nnx.Module
    method: str
    before: Any
    after: Any
    report_before: Any
    report_after: Any
    detail: Any

    def to_frame(self) -> pd.DataFrame:
        """The findings before and after, one row each, with a `when` column."""
        import pandas as pd

        before = self.before.to_frame().assign(when="before")
        after = self.after.to_frame().assign(when="after")
        return pd.concat([before, after], ignore_index=True)

    def __repr__(self) -> str:
        return (
            f"CureResult({self.method}): before {self.before.verdict}, after "
            f"{self.after.verdict}\n  before: {self.before.message}\n  after: "
            f"{self.after.message}"
        )


def _fan_in(module: nnx.Module, shape: tuple[int, ...]) -> int:
    """A kernel's fan-in: the product of a LinearGeneral's input axes, else every axis but
    the last (JAX/Flax layouts: a dense (in, out), a convolution (*window, in, out))."""
    if isinstance(module, nnx.LinearGeneral):
        return math.prod(module.in_features)
    return math.prod(shape[:-1])


def _redraw(model: nnx.Module, report, prescription, key: jax.Array) -> None:
    """Redraw every kernel (per layer for a stacked one) as N(0, sigma_w2 / fan_in), and
    every bias as N(0, sigma_b2) where the prescription changes the biases."""
    per_layer = {}
    for name, shape in zip(report.param_names, report.param_shapes, strict=True):
        if "[" in name:  # a layer's slice of a stacked parameter: "blocks[3].linear.kernel"
            head, _, tail = name.partition("[")
            per_layer[head + tail.partition("]")[2]] = shape
    modules = list(nnx.iter_modules(model))
    for index, (path, module) in enumerate(modules):
        for attribute in ("kernel", "bias"):
            param = vars(module).get(attribute)
            if not isinstance(param, nnx.Param):
                continue
            if attribute == "bias" and not prescription.changes_biases:
                continue
            value = param[...]
            name = _path_str((*path, attribute))
            layer_shape = per_layer.get(name, value.shape)
            stacked = layer_shape != value.shape
            if attribute == "kernel":
                std = math.sqrt(prescription.sigma_w2 / _fan_in(module, layer_shape))
            else:
                std = math.sqrt(prescription.sigma_b2)
            draw_key = jax.random.fold_in(key, 2 * index + (attribute == "bias"))
            draw = _init.normal(std)
            if stacked:
                keys = jax.random.split(draw_key, value.shape[0])
                new = jax.vmap(functools.partial(draw, shape=layer_shape, dtype=value.dtype))(keys)
            else:
                new = draw(draw_key, value.shape, value.dtype)
            param[...] = new


def cure(
    model: nnx.Module,
    loss_fn: Callable[[nnx.Module, Any], jax.Array],
    batch: Any,
    *,
    method: str = "auto",
    activation: str | Callable[[jax.Array], jax.Array] | None = None,
    x: jax.Array | None = None,
    key: jax.Array | None = None,
) -> CureResult:
    """Apply the initialization cure `jaxgrad.diagnose` prescribes and check it: the cured
    copy, and the diagnosis before and after, on the same batch.

    Only cures that keep the architecture are applied: "critical" redraws every kernel at
    the mean-field critical point of the activation (N(0, sigma_w2 / fan_in), per layer of a
    stacked kernel; `stats.prescribe_initialization`: He et al.'s sigma_w2 = 2 for ReLU,
    the critical sigma_w2 of tanh at the model's bias variance, or at sigma_b2 = 0.05 with
    the biases redrawn where the signal would still decay); "lsuv" runs
    `lsuv(copy, x, key)`. "auto" chooses "critical" where the activation is known and has a
    critical point, else "lsuv". A norm layer or residual connections change the model and
    are left to you (the diagnosis names them).

    Args:
        model: the model; not changed (the cure works on `nnx.clone(model)`).
        loss_fn, batch: as for `jaxgrad.inspect`.
        method: "auto", "critical" or "lsuv".
        activation: the network's elementwise activation (needed for "critical"); default
            the model's `activation_name` where it has one (jaxgrad's models).
        x: the inputs LSUV feeds the model; default `batch[0]` for a tuple batch, else
            `batch`.
        key: PRNG key for the redrawn weights; default `jax.random.key(0)`.

    Returns:
        A `CureResult`.

    Raises:
        ValueError: an unknown method, or "critical" without a known activation or where
            the activation has no critical point.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad import init, nn
        >>> model = nn.MLP(16, 64, depth=30, out_features=4, activation="relu",
        ...                kernel_init=init.normal(0.01), rngs=nnx.Rngs(0))
        >>> x = jax.random.normal(jax.random.key(0), (64, 16))
        >>> result = cure(model, lambda m, x: jnp.mean(m(x) ** 2), x)
        >>> result.method, result.before.verdict, result.after.verdict
        ('critical', 'vanishing', 'stable')

    References:
        Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep Information Propagation"
        (the critical initialization); Mishkin and Matas 2015, "All you need is a good
        init" (LSUV).
    """
    from jaxgrad import inspection, stats

    if method not in CURES:
        raise ValueError(f"method must be one of {', '.join(CURES)}, got {method!r}")
    if activation is None:
        activation = getattr(model, "activation_name", None)
    if key is None:
        key = jax.random.key(0)
    report_before = inspection.inspect(model, loss_fn, batch, activation=activation)
    before = stats.diagnose(report_before, activation=activation)
    prescription = None
    if activation is not None:
        prescription = stats.prescribe_initialization(activation, _bias_variance(model))
    if method == "auto":
        method = "critical" if prescription is not None else "lsuv"
    cured = nnx.clone(model)
    if method == "critical":
        if prescription is None:
            raise ValueError(
                "method='critical' needs the activation (activation=...), and one with a "
                f"critical point; got {activation!r}: use method='lsuv'"
            )
        _redraw(cured, report_before, prescription, key)
        detail: Any = prescription
    else:
        if x is None:
            x = batch[0] if isinstance(batch, tuple | list) else batch
        detail = lsuv(cured, x, key)
    report_after = inspection.inspect(cured, loss_fn, batch, activation=activation)
    after = stats.diagnose(report_after, activation=activation)
    return CureResult(cured, method, before, after, report_before, report_after, detail)


def _bias_variance(model: nnx.Module) -> float:
    """The mean square of the model's biases (0 when it has none): its sigma_b2."""
    squares, count = 0.0, 0
    for _, module in nnx.iter_modules(model):
        bias = vars(module).get("bias")
        if isinstance(bias, nnx.Param):
            values = np.asarray(bias[...], np.float64)
            squares += float(np.sum(values**2))
            count += values.size
    return squares / count if count else 0.0
