"""Per-layer forward and backward statistics of a deep network, in one jitted pass.

`probe(model, x)` runs a `jaxgrad.nn.MLP` forward with `jax.lax.scan`, keeping each layer's
input and affine output, then walks the layers back in a second, reverse scan that carries
dL/dh_l. Each step of the reverse scan differentiates only the block's elementwise part
(norm, activation, residual) with `jax.vjp` and reduces the weight gradient x^T delta to its
Frobenius norm without forming it: when the batch is smaller than the width,
||x^T delta||_F^2 = sum((x x^T) * (delta delta^T)), two batch-by-batch Gram matrices. Nothing
of size (depth, width, width) is ever allocated beyond the weights themselves, which is what
makes the probe several times faster than `jax.grad` through the same scan (see
`benchmarks/`); `propagate`, which draws the weights too, can redraw each block where it is
used instead of storing them (`redraw`). `method="autodiff"` computes the same numbers with
`jax.grad` through a scan with a zero "tap" added to every layer's output
(dL/dtap_l = dL/dh_l), as a cross-check.

References:
    Glorot and Bengio 2010 (the per-layer activation and gradient statistics of section 4);
    Schoenholz et al. 2017, "Deep Information Propagation" (the random-projection readout).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxgrad import activations as _act
from jaxgrad import init as _init
from jaxgrad import nn as _nn
from jaxgrad import prng as _prng
from jaxgrad import stats as _stats

LossFn = Callable[[jax.Array, Any], jax.Array]

SATURATION_THRESHOLD = 0.01
"""A unit is saturated when |phi'(pre-activation)| is below this (tanh: |z| > 3.0)."""


class LayerStats(NamedTuple):
    """Statistics of every hidden layer; each field has a leading depth axis (index i is
    hidden layer i + 1), after any leading axes added by `jax.vmap` (seeds, say).

    Attributes:
        pre_mean, pre_std: mean and std of the pre-activation z_l = N(h_{l-1} W_l + b_l) over
            the batch and the units.
        act_mean, act_std: mean and std of the layer output h_l.
        saturated_frac: fraction of pre-activations with |phi'(z)| < the saturation threshold.
        dead_frac: fraction of units whose activation phi(z) is zero for the whole batch.
        grad_norm: Frobenius norm of dL/dW_l.
        grad_norm_bias: norm of dL/db_l.
        act_grad_norm: norm of dL/dh_l, over the batch and the units.
        weight_norm: Frobenius norm of W_l.
        first_nonfinite_layer: the first layer (1-based) whose pre-activation or output holds
            an inf or a nan; -1 when every value is finite.

    Example:
        >>> import jax
        >>> from jaxgrad import init, propagate
        >>> stats = propagate(jax.random.key(0), depth=6, width=32, batch_size=4,
        ...                   activation="tanh", kernel_init=init.xavier_uniform())
        >>> stats.act_std.shape, int(stats.first_nonfinite_layer)
        ((6,), -1)
        >>> list(stats.to_frame().columns[:3])
        ['layer', 'pre_mean', 'pre_std']
    """

    pre_mean: jax.Array
    pre_std: jax.Array
    act_mean: jax.Array
    act_std: jax.Array
    saturated_frac: jax.Array
    dead_frac: jax.Array
    grad_norm: jax.Array
    grad_norm_bias: jax.Array
    act_grad_norm: jax.Array
    weight_norm: jax.Array
    first_nonfinite_layer: jax.Array

    @property
    def depth(self) -> int:
        return self.grad_norm.shape[-1]

    def to_frame(self):
        """A tidy pandas DataFrame, one row per layer (and per leading index, if vmapped).

        Columns: `layer` (1-based), one column per per-layer field, and
        `first_nonfinite_layer`; a vmapped result gets a `sample` column (its flat index).
        """
        import pandas as pd

        host = jax.device_get(self)
        per_layer = {
            name: np.asarray(value)
            for name, value in host._asdict().items()
            if name != "first_nonfinite_layer"
        }
        depth = self.depth
        lead = per_layer["grad_norm"].shape[:-1]
        samples = math.prod(lead)
        columns: dict[str, np.ndarray] = {}
        if lead:
            columns["sample"] = np.repeat(np.arange(samples), depth)
        columns["layer"] = np.tile(np.arange(1, depth + 1), samples)
        for name, value in per_layer.items():
            columns[name] = value.reshape(-1)
        nonfinite = np.asarray(host.first_nonfinite_layer).reshape(-1)
        columns["first_nonfinite_layer"] = np.repeat(nonfinite, depth)
        return pd.DataFrame(columns)

    def profile(
        self,
        *,
        activation: str | _act.Activation | None = None,
        width: int | None = None,
        sigma_w2: float | None = None,
        sigma_b2: float | None = None,
    ) -> _stats.Profile:
        """The `jaxgrad.stats.Profile` that `diagnose` reads, of one network (not vmapped).

        Layers are named "layer 1" to "layer L"; the signal is the pre-activation
        (`pre_std`: the output of each layer's weights, what `inspect` reads of a linear
        layer). The statistics do not hold the network's options, so what is known of them
        may be passed: the activation (for the mean-field rule and the cures; only for
        blocks without norm or residual), the hidden width (every hidden layer's fan_in and
        fan_out, for the estimate of sigma_w2 from the weights), and the variances.

        Raises:
            ValueError: statistics with a vmapped axis (index it first).

        Example:
            >>> import jax
            >>> from jaxgrad import init, propagate
            >>> stats = propagate(jax.random.key(0), depth=4, width=16, batch_size=8,
            ...                   activation="relu", kernel_init=init.kaiming_normal())
            >>> stats.profile(activation="relu", width=16).names
            ('layer 1', 'layer 2', 'layer 3', 'layer 4')
        """
        host = jax.device_get(self)
        grad = np.asarray(host.grad_norm, np.float64)
        if grad.ndim != 1:
            raise ValueError(
                f"a profile is of one network (grad_norm of shape (depth,)), got shape "
                f"{grad.shape}; index the vmapped axis first"
            )
        depth = grad.shape[0]
        act_grad = np.asarray(host.act_grad_norm, np.float64)
        broken = ~np.isfinite(grad) | ~np.isfinite(act_grad)
        fans = None
        if width is not None:
            fans = np.full(depth, float(_nn._positive_int("width", width)))
        return _stats.Profile(
            names=tuple(f"layer {layer}" for layer in range(1, depth + 1)),
            grad_norm=grad,
            weight_norm=np.asarray(host.weight_norm, np.float64),
            signal_std=np.asarray(host.pre_std, np.float64),
            act_grad_norm=act_grad,
            dead_frac=np.asarray(host.dead_frac, np.float64),
            saturated_frac=np.asarray(host.saturated_frac, np.float64),
            first_nonfinite=int(host.first_nonfinite_layer),
            # the first layer met going backward: the highest index with a broken gradient
            first_nonfinite_backward=int(np.flatnonzero(broken)[-1]) + 1 if broken.any() else -1,
            activation=activation,
            fan_in=fans,
            fan_out=fans,
            sigma_w2=sigma_w2,
            sigma_b2=sigma_b2,
        )

    def __repr__(self) -> str:
        concrete = all(
            isinstance(leaf, jax.Array | np.ndarray | np.generic | int | float)
            and not isinstance(leaf, jax.core.Tracer)
            for leaf in self
        )
        if not concrete:  # inside a trace, or abstract (eval_shape): the fields as they are
            fields = ", ".join(f"{name}={value!r}" for name, value in self._asdict().items())
            return f"LayerStats({fields})"
        host = jax.device_get(self)
        lead = np.shape(host.grad_norm)[:-1]
        if lead:
            return (
                f"LayerStats of {math.prod(lead)} networks (leading axes {lead}) of "
                f"{self.depth} layers; index one, or see .to_frame()"
            )
        depth = self.depth
        lines = [
            f"LayerStats of {depth} layers, first_nonfinite_layer="
            f"{int(host.first_nonfinite_layer)} (every value: .to_frame())"
        ]
        for name in ("pre_std", "act_std", "grad_norm", "act_grad_norm", "weight_norm"):
            values = np.asarray(getattr(host, name), np.float64)
            lines.append(f"  {name}: {values[0]:.4g} (layer 1) .. {values[-1]:.4g} (layer {depth})")
        for name in ("dead_frac", "saturated_frac"):
            values = np.asarray(getattr(host, name), np.float64)
            worst = float(np.max(values, initial=-np.inf, where=np.isfinite(values)))
            lines.append(f"  {name}: at most {worst:.3g}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- losses


def mean_square_loss(output: jax.Array, y: Any = None) -> jax.Array:
    """0.5 * mean(output^2), or 0.5 * mean((output - y)^2) when targets are given.

    Its gradient is proportional to the output, so it vanishes when the output collapses
    to zero (the ordered phase); `random_projection_loss` does not.

    Args:
        output: the network's output.
        y: targets of the output's shape, or None.

    Returns:
        The loss, a scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import mean_square_loss
        >>> float(mean_square_loss(jnp.array([1.0, 3.0])))
        2.5
        >>> float(mean_square_loss(jnp.ones(2), y=jnp.ones(2)))
        0.0
    """
    residual = output if y is None else output - y
    return 0.5 * jnp.mean(jnp.square(residual))


def random_projection_loss(key: jax.Array) -> LossFn:
    """A linear loss sum(output * G) / sqrt(output.size) with G ~ N(0, 1) fixed by `key`.

    dL/doutput = G / sqrt(size) whatever the output is, so the backward pass sees an
    i.i.d. Gaussian error signal of fixed size, as mean-field theory assumes (Schoenholz
    et al. 2017), even when the forward signal has collapsed. Targets are ignored.

    Args:
        key: PRNG key for G (drawn at the output's shape when the loss is called).

    Returns:
        `loss(output, y=None) -> scalar`, a `LossFn` for `probe` and `propagate`.

    Raises:
        TypeError: a key that is not a jax PRNG key array.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jaxgrad import random_projection_loss
        >>> loss = random_projection_loss(jax.random.key(0))
        >>> grad = jax.grad(loss)(jnp.zeros(4))  # the same for any output
        >>> bool(jnp.all(grad == jax.grad(loss)(jnp.ones(4))))
        True

    References:
        Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep Information Propagation".
    """
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must be a jax PRNG key array, got {type(key).__name__}")

    def loss(output: jax.Array, y: Any = None) -> jax.Array:
        g = jax.random.normal(key, output.shape, output.dtype)
        return jnp.sum(output * g) / math.sqrt(max(output.size, 1))

    return loss


# ----------------------------------------------------------------------------- statistics


def _weight_norms(kernels: jax.Array) -> jax.Array:
    """Frobenius norm of each stacked kernel."""
    return _stats.norm(kernels, axis=(-2, -1))


def _forward_stats(activation, z, out, a, threshold: float):
    pre_mean, pre_std = _stats.mean_std(z)
    act_mean, act_std = _stats.mean_std(out)
    saturated = _stats.saturated_fraction(_act.derivative(activation)(z), threshold)
    dead = _stats.dead_fraction(a)
    finite = jnp.isfinite(pre_mean) & jnp.isfinite(act_mean)  # see stats.mean_std
    return (pre_mean, pre_std, act_mean, act_std, saturated, dead), finite


def times_transpose(rows: jax.Array, kernel: jax.Array) -> jax.Array:
    """`rows @ kernel.T` for a kernel (width_in, width_out), as fast as XLA's CPU backend allows.

    The reverse scan's product of the error signal with a transposed kernel. Leading axes of
    `rows` are flattened into the product's rows.

    Args:
        rows: (..., width_out).
        kernel: (width_in, width_out).

    Returns:
        (..., width_in), equal to `rows @ kernel.T`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import propagation
        >>> rows, kernel = jnp.ones((3, 2)), jnp.arange(6.0).reshape(3, 2)
        >>> bool(jnp.array_equal(propagation.times_transpose(rows, kernel), rows @ kernel.T))
        True
    """
    # With a few rows (2 to 32) XLA's CPU matrix product ran up to 1.5x slower when its right
    # operand is transposed than `(kernel @ rows.T).T` did (`benchmarks/transpose_product.py`,
    # benchmarks/README.md); with one row, or 64 and more, the plain form was as fast or
    # faster. Left to itself XLA folds explicit transposes back into the product, so
    # optimization barriers materialize `rows.T` and the product before it is transposed
    # back (copies width times cheaper than the product). Under `jax.vmap` the rule sees one
    # member's rows only.
    flat = rows.reshape(-1, rows.shape[-1])
    if not 2 <= flat.shape[0] <= 32:
        return rows @ kernel.T
    product = jax.lax.optimization_barrier(kernel @ jax.lax.optimization_barrier(flat.T))
    return product.T.reshape(*rows.shape[:-1], kernel.shape[0])


def _scaled_gram(h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(g g^T, e) for g = h * 2**-e scaled to a largest magnitude in [0.5, 1)."""
    values, exponent = _stats.scaled(h)
    return _stats.gram(values), exponent


def _gram_product_norm(saved: tuple[jax.Array, jax.Array], right: jax.Array) -> jax.Array:
    """||h^T right||_F from h's `_scaled_gram`: sqrt(sum((h h^T) * (right right^T)))."""
    gram, exponent = _scaled_gram(right)
    total = jnp.sum(saved[0] * gram)
    return jnp.ldexp(jnp.sqrt(jnp.maximum(total, 0)), saved[1] + exponent)


def _first_false(finite: jax.Array) -> jax.Array:
    """1-based index of the first False along the last axis, -1 if none."""
    bad = ~finite
    return jnp.where(jnp.any(bad, -1), jnp.argmax(bad, -1) + 1, -1).astype(jnp.int32)


# ----------------------------------------------------------------------------- the probe


def reverse_scan_probe(
    h0,
    layers,
    *,
    affine,
    post,
    transpose,
    activation,
    loss_of_output,
    kernel,
    threshold=SATURATION_THRESHOLD,
    heads=None,
    build=None,
):
    """The probe's core for any stack of layers h -> post(layer, affine(layer, h), h).

    With `heads`, one pass gives the gradients of several networks at once: the network
    truncated after each depth in `heads`, with the loss applied to that layer's output.
    Forward statistics of a truncated network are a prefix of the deepest one's; its
    backward pass is carried as one more row of the reverse scan's (heads, batch, width)
    carry, so the transposed products become taller instead of more numerous.

    Args:
        h0: input to the first layer, (batch, width).
        layers: pytree of per-layer arrays stacked on a leading depth axis.
        affine: `affine(layer, h) -> pre`, linear in h with a kernel (width_in, width_out).
        post: `post(layer, pre, h) -> (out, z, a)` (output, pre-activation, activation); the
            output may depend on h only additively (a residual branch).
        transpose: `transpose(layer, dpre) -> dh`, the transpose of h -> affine(layer, h),
            applied to dpre with a leading axis of heads, (heads, batch, width) (see
            `times_transpose`).
        activation: the elementwise activation (for the saturation statistic).
        loss_of_output: `loss(h) -> scalar`, applied at each head.
        kernel: `kernel(layer) -> W`, whose Frobenius norm is the `weight_norm`.
        threshold: the saturation threshold.
        heads: static tuple of 1-based depths; default (depth,), the whole stack.
        build: `build(seed) -> layer`, with `layers` the stacked seeds (keys) of the layers
            rather than the layers: each scan step builds its layer from its seed where it
            uses it, the forward and the reverse scan each once, so the stack of weights is
            never stored (see `propagate`'s `redraw`).

    Returns:
        `LayerStats`; with `heads`, the gradient fields have a trailing axis of one column
        per head, zero below the head's depth.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import activations, propagation
        >>> layers = {"kernel": jnp.stack([jnp.eye(2)] * 3)}  # three identity layers
        >>> stats = propagation.reverse_scan_probe(
        ...     jnp.ones((4, 2)), layers,
        ...     affine=lambda layer, h: h @ layer["kernel"],
        ...     post=lambda layer, pre, h: (pre, pre, pre),  # no activation
        ...     transpose=lambda layer, dpre: propagation.times_transpose(dpre, layer["kernel"]),
        ...     activation=activations.linear,
        ...     loss_of_output=propagation.mean_square_loss,
        ...     kernel=lambda layer: layer["kernel"])
        >>> stats.grad_norm.tolist()  # ||h^T dL/dz|| = ||(2 x 4 ones) (1/8)|| in every layer
        [1.0, 1.0, 1.0]
    """
    # The weight norm is taken in the forward step that multiplies by W, while W is in
    # cache (a separate pass over the stacked kernels would read them from memory a third
    # time). `build` is worth it where the stack does not fit in memory, or where a draw is
    # cheap: on a 2-core CPU, drawing uniform kernels twice cost less than writing the stack
    # to fresh memory (a page fault every 4 KiB) and reading it back (benchmarks/README.md).
    depth = jax.tree.leaves(layers)[0].shape[0]
    build = (lambda layer: layer) if build is None else build
    head_depths = jnp.asarray((depth,) if heads is None else heads, jnp.int32)
    use_gram = h0.shape[0] < h0.shape[1]

    def forward(carry, scanned):
        h, head_outputs = carry
        index, layer = scanned
        layer = build(layer)
        pre = affine(layer, h)
        out, z, a = post(layer, pre, h)
        stats, finite = _forward_stats(activation, z, out, a, threshold)
        weight_norm = _stats.norm(kernel(layer))
        at_head = (head_depths == index + 1)[:, None, None]
        head_outputs = jnp.where(at_head, out[None], head_outputs)
        # ||h^T dpre||_F needs h only through h h^T when the batch is the smaller side; it
        # is kept of h scaled to a largest magnitude near 1, with the exponent that undoes
        # it, so that the product of the two Gram matrices cannot overflow (stats.scaled).
        saved_input = _scaled_gram(h) if use_gram else h
        saved = (stats, finite, weight_norm, saved_input, pre)
        return (out, head_outputs), saved

    start = (h0, jnp.zeros((head_depths.size, *h0.shape), h0.dtype))
    (_, head_outputs), (stats, finite, weight_norm, saved_inputs, pres) = jax.lax.scan(
        forward, start, (jnp.arange(depth), layers)
    )
    head_grads = jax.vmap(jax.grad(loss_of_output))(head_outputs)

    def backward(delta, scanned):
        index, layer, saved_input, pre = scanned
        layer = build(layer)
        at_head = (head_depths == index + 1)[:, None, None]
        delta = delta + jnp.where(at_head, head_grads, 0)

        # The output depends on h only additively, so the pullback does not depend on h's
        # value: zeros stand in for it. The layer enters as an argument so that state a norm
        # updates (batch norm's running averages) is updated inside this trace, and dropped.
        def out_of(pre, h, layer):
            return post(layer, pre, h)[0]

        _, post_vjp = jax.vjp(out_of, pre, jnp.zeros_like(pre), layer)
        dpre, dh_skip, _ = jax.vmap(post_vjp)(delta)
        if use_gram:
            kernel_grad_norm = jax.vmap(lambda d: _gram_product_norm(saved_input, d))(dpre)
        else:
            kernel_grad_norm = jax.vmap(lambda d: _stats.product_norm(saved_input, d))(dpre)
        per_head = jax.vmap(_stats.norm)
        bias_grad = jnp.sum(dpre.astype(_stats.accumulation_dtype(dpre.dtype)), axis=1)
        grads = (kernel_grad_norm, per_head(bias_grad), per_head(delta))
        dh = transpose(layer, dpre)
        return dh + dh_skip, grads

    scanned = (jnp.arange(depth), layers, saved_inputs, pres)
    _, grads = jax.lax.scan(backward, jnp.zeros_like(head_grads), scanned, reverse=True)
    if heads is None:
        grads = tuple(g[:, 0] for g in grads)
    return LayerStats(*stats, *grads, weight_norm, _first_false(finite))


def _probe_reverse(model: _nn.MLP, x, y, loss_fn, threshold):
    graphdef, params, rest = nnx.split(model.blocks, nnx.Param, ...)
    return _probe_blocks(model, graphdef, (params, rest), x, y, loss_fn, threshold)


def _probe_blocks(model: _nn.MLP, graphdef, layers, x, y, loss_fn, threshold, build=None):
    """The reverse-scan probe of `model` with its blocks given as `layers` ((params, rest)
    of each block stacked, or with `build` their seeds; see `reverse_scan_probe`)."""
    h0 = model.embed(x)
    batch_shape = h0.shape[:-1]
    h0 = h0.reshape(-1, model.width)  # norms reduce over every axis but the last: same numbers

    def loss_of_output(h):
        return loss_fn(model.head(h.reshape(*batch_shape, model.width)), y)

    return reverse_scan_probe(
        h0,
        layers,
        affine=lambda layer, h: nnx.merge(graphdef, *layer).linear(h),
        post=lambda layer, pre, h: nnx.merge(graphdef, *layer).post(pre, h),
        transpose=lambda layer, dpre: times_transpose(dpre, layer[0]["linear"]["kernel"][...]),
        activation=model.blocks.activation,
        loss_of_output=loss_of_output,
        kernel=lambda layer: layer[0]["linear"]["kernel"][...],
        threshold=threshold,
        build=build,
    )


def _probe_autodiff(model: _nn.MLP, x, y, loss_fn, threshold):
    h0 = model.embed(x)
    graphdef, params, rest = nnx.split(model.blocks, nnx.Param, ...)
    taps = jnp.zeros((model.depth, *h0.shape), h0.dtype)

    def loss_of(params, taps):
        def forward(h, layer):
            layer_params, layer_rest, tap = layer
            block = nnx.merge(graphdef, layer_params, layer_rest)
            out, z, a = block.post(block.linear(h), h)
            out = out + tap
            return out, _forward_stats(block.activation, z, out, a, threshold)

        h_last, aux = jax.lax.scan(forward, h0, (params, rest, taps))
        return loss_fn(model.head(h_last), y), aux

    (dparams, dtaps), (stats, finite) = jax.grad(loss_of, argnums=(0, 1), has_aux=True)(
        params, taps
    )
    per_layer = jax.vmap(_stats.norm)
    grads = (
        per_layer(dparams["linear"]["kernel"][...]),
        per_layer(dparams["linear"]["bias"][...]),
        per_layer(dtaps),
        _weight_norms(params["linear"]["kernel"][...]),
    )
    return LayerStats(*stats, *grads, _first_false(finite))


_METHODS = {"reverse": _probe_reverse, "autodiff": _probe_autodiff}


def _check_loss_fn(loss_fn: object) -> LossFn:
    """`loss_fn`, `mean_square_loss` for None, or a TypeError for what cannot be called."""
    if loss_fn is None:
        return mean_square_loss
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be a function loss_fn(output, y) -> scalar (or None for "
            f"mean_square_loss), got {loss_fn!r}"
        )
    return loss_fn


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")


@functools.partial(jax.jit, static_argnames=("graphdef", "loss_fn", "method", "threshold"))
def _probe_jit(graphdef, state, x, y, *, loss_fn, method, threshold):
    model = nnx.merge(graphdef, state)
    return _METHODS[method](model, x, y, loss_fn, threshold)


def probe(
    model: _nn.MLP,
    x: jax.Array,
    loss_fn: LossFn | None = None,
    y: Any = None,
    *,
    method: str = "reverse",
    saturation_threshold: float = SATURATION_THRESHOLD,
) -> LayerStats:
    """Per-layer statistics of one forward and backward pass of a `jaxgrad.nn.MLP`.

    Jitted; the compiled program is cached on the model's structure, the input shape, the
    loss function object and the options, so calling it again on a model of the same
    structure does not recompile. The model is not changed (batch-norm running averages
    are not updated); in training mode batch norm uses the batch's statistics, after
    `model.eval()` its running averages. Inf and nan are kept in the results;
    `first_nonfinite_layer` says where they began.

    Args:
        model: the network.
        x: inputs, (..., in_features).
        loss_fn: `loss_fn(output, y) -> scalar`; default `mean_square_loss`.
        y: targets for `loss_fn` (any pytree, or None).
        method: "reverse" (a hand-written reverse scan; fast, never forms dL/dW) or
            "autodiff" (`jax.grad` through the scan, with zero taps for dL/dh_l).
        saturation_threshold: a unit counts as saturated when |phi'(z)| is below this.

    Returns:
        `LayerStats`, each field of shape (depth,).

    Raises:
        TypeError: a model that is not a `jaxgrad.nn.MLP` (use `jaxgrad.inspect` for any
            other Flax model), a loss_fn that is not callable.
        ValueError: an unknown method.

    Example:
        >>> import jax
        >>> from flax import nnx
        >>> from jaxgrad import nn, probe
        >>> model = nn.MLP(32, 32, depth=10, rngs=nnx.Rngs(0))
        >>> stats = probe(model, jax.random.normal(jax.random.key(0), (16, 32)))
        >>> stats.grad_norm.shape
        (10,)

    References:
        Glorot and Bengio 2010, "Understanding the difficulty of training deep feedforward
        neural networks" (per-layer activation and gradient statistics).
    """
    if not isinstance(model, _nn.MLP):
        raise TypeError(
            f"probe takes a jaxgrad.nn.MLP, got {type(model).__name__}; "
            "use jaxgrad.inspect for any other Flax model"
        )
    _check_method(method)
    threshold = _init._nonnegative("saturation_threshold", saturation_threshold)
    x = model.check_input(x)
    graphdef, state = nnx.split(model)
    return _probe_jit(
        graphdef,
        state,
        x,
        y,
        loss_fn=_check_loss_fn(loss_fn),
        method=method,
        threshold=threshold,
    )


def propagate(
    key: jax.Array,
    *,
    depth: int,
    width: int,
    batch_size: int,
    activation: str | _act.Activation,
    kernel_init: _init.Initializer,
    bias_init: _init.Initializer | None = None,
    norm: str | None = None,
    residual: bool = False,
    dtype: Any = jnp.float32,
    loss_fn: LossFn | None = None,
    method: str = "reverse",
    redraw: bool | None = None,
) -> LayerStats:
    """Build an MLP of `depth` layers of `width` units, feed it N(0, 1) inputs of shape
    (batch_size, width), and probe it: the seed experiment in one call.

    Works under `jax.vmap` over `key`, so many seeds run as one compiled program.

    Args:
        key: PRNG key; split into the weights' key and the input's key.
        depth, width, batch_size: the network and batch sizes.
        activation: a name or an elementwise callable.
        kernel_init: initializer of the hidden kernels.
        bias_init: initializer of the biases; None means zero biases.
        norm, residual: as in `jaxgrad.nn.MLP`.
        dtype: parameter and input dtype.
        loss_fn, method: as in `probe`.
        redraw: True draws each block's weights in each scan step that uses them (the
            forward and the reverse scan of `method="reverse"`) and never stores the stack:
            memory does not grow with depth by a kernel a layer, and the draw is paid twice.
            False draws the stack once and stores it. None (the default) redraws a threefry
            key's weights when the stack would not fit `default_memory_budget()` (one
            key's stack: under `jax.vmap` over keys pass True to bound the memory), and on
            CPU when the kernel initializer's draw is cheap (its `cheap_draw` attribute:
            uniform draws, constants), where redrawing is the faster of the two.
            `method="autodiff"` always stores. With a threefry key (JAX's default) both ways
            give the same numbers, up to the rounding of a draw that is not elementwise (a
            batched QR); with an rbg key the redrawn weights are other draws of the same
            distribution.

    Returns:
        `LayerStats`, each field of shape (depth,) (after the leading axes of a vmap).

    Raises:
        TypeError: a redraw that is not True, False or None, a loss_fn that is not
            callable, or a bad initializer or activation (as `jaxgrad.nn.MLP` refuses them).
        ValueError: redraw=True with method="autodiff", an unknown method, norm or
            activation name, or sizes below 1.

    Example:
        >>> import jax
        >>> from jaxgrad import init, propagate
        >>> stats = propagate(jax.random.key(0), depth=20, width=64, batch_size=8,
        ...                   activation="relu", kernel_init=init.kaiming_normal())
        >>> bool(0.5 < stats.act_std[-1] < 2.0)
        True

    References:
        He, Zhang, Ren and Sun 2015, "Delving Deep into Rectifiers" (the relu network whose
        signal Kaiming initialization keeps); Glorot and Bengio 2010.
    """
    # Why redraw on CPU: writing a stored stack to fresh memory costs a page fault every
    # 4 KiB; at the seed's shape (depth 100, width 400, Xavier uniform, 2 cores) the
    # redrawn pass ran 1.14x faster than the stored one (`benchmarks/probe_speed.py`, see
    # benchmarks/README.md), while normal, orthogonal and sparse draws cost more to redraw
    # than to store. rbg draws differ vmapped over keys, hence other draws when redrawn.
    key = _prng.check_key(key, single=True)
    for name, value in (("depth", depth), ("width", width), ("batch_size", batch_size)):
        _nn._positive_int(name, value)
    dtype = _nn.float_dtype(dtype)
    # every option of the blocks, checked here rather than inside the trace
    _nn.block_maker(
        width,
        activation=activation,
        kernel_init=kernel_init,
        bias_init=bias_init,
        norm=norm,
        residual=residual,
        dtype=dtype,
    )
    loss_fn = _check_loss_fn(loss_fn)
    _check_method(method)
    if redraw is not None and not isinstance(redraw, bool):
        raise TypeError(f"redraw must be True, False or None, got {redraw!r}")
    if redraw and method != "reverse":
        raise ValueError(
            f"redraw=True needs method='reverse', got method={method!r}; "
            "pass redraw=None or False with it"
        )
    if redraw is None:
        stack = depth * width * width * jnp.dtype(dtype).itemsize
        cheap = getattr(kernel_init, "cheap_draw", False) and jax.default_backend() == "cpu"
        redraw = (
            method == "reverse"
            and _prng.is_threefry(key)
            and (cheap or stack > default_memory_budget())
        )
    return _propagate_jit(
        key,
        depth=depth,
        width=width,
        batch_size=batch_size,
        activation=activation,
        kernel_init=kernel_init,
        bias_init=bias_init,
        norm=norm,
        residual=residual,
        dtype=dtype,
        loss_fn=loss_fn,
        method=method,
        redraw=redraw,
    )


def default_memory_budget() -> int:
    """A quarter of the first device's memory when it reports one, else 4 GiB.

    The stack size above which `propagate(redraw=None)` redraws weights instead of storing them.

    Returns:
        The budget in bytes.

    Example:
        >>> from jaxgrad import propagation
        >>> propagation.default_memory_budget() > 0
        True
    """
    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return int(limit // 4) if limit else 4 * 2**30


@functools.partial(
    jax.jit,
    static_argnames=(
        "depth",
        "width",
        "batch_size",
        "activation",
        "kernel_init",
        "bias_init",
        "norm",
        "residual",
        "dtype",
        "loss_fn",
        "method",
        "redraw",
    ),
)
def _propagate_jit(
    key,
    *,
    depth,
    width,
    batch_size,
    activation,
    kernel_init,
    bias_init,
    norm,
    residual,
    dtype,
    loss_fn,
    method,
    redraw,
):
    model_key, input_key = jax.random.split(key)
    x = jax.random.normal(input_key, (batch_size, width), dtype)
    options = {"norm": norm, "residual": residual, "dtype": dtype}

    def mlp():
        return _nn.MLP(
            width,
            width,
            depth,
            activation=activation,
            kernel_init=kernel_init,
            bias_init=bias_init,
            **options,
            rngs=nnx.Rngs(params=model_key),
        )

    if not redraw:
        return _METHODS[method](mlp(), x, None, loss_fn, SATURATION_THRESHOLD)
    # The reverse probe rebuilds each block from its key in each scan step that uses it
    # (`reverse_scan_probe(build=...)`): the model here is abstract, its structure without
    # weights, and the stack of weights is never stored. The blocks are the ones `mlp()`
    # would hold (for threefry keys; see `propagate`).
    model = nnx.eval_shape(mlp)
    make_block = _nn.block_maker(
        width, activation=activation, kernel_init=kernel_init, bias_init=bias_init, **options
    )

    def build(block_key):
        _, params, rest = nnx.split(make_block(block_key), nnx.Param, ...)
        return params, rest

    graphdef = nnx.graphdef(nnx.eval_shape(make_block, jax.random.key(0)))
    keys = _nn.block_keys(nnx.Rngs(params=model_key), depth)
    return _probe_blocks(model, graphdef, keys, x, None, loss_fn, SATURATION_THRESHOLD, build)


# ----------------------------------------------------------------------------- diagnosis

# The one verdict lives in jaxgrad.stats, beside the reductions it judges; these names stay
# here for the callers of jaxgrad.propagation.diagnose.
Diagnosis = _stats.Diagnosis
diagnose = _stats.diagnose


# ----------------------------------------------------------------------------- the seed experiment


class SeedConfig(NamedTuple):
    """One network of the seed experiment.

    Attributes:
        label: "a" to "f".
        description: the network in a few words ("tanh, Xavier uniform gain 5/3").
        activation: the activation's name.
        kernel_init: the hidden kernels' initializer.

    Example:
        >>> from jaxgrad import propagation
        >>> config = propagation.seed_configs(width=64)[0]
        >>> config.label, config.description, config.activation
        ('a', 'linear, N(0, 1)', 'linear')
    """

    label: str
    description: str
    activation: str
    kernel_init: _init.Initializer


def seed_configs(width: int = 400) -> tuple[SeedConfig, ...]:
    """The six networks of the seed experiment, (a) to (f), at a given width.

    (a) no activation, N(0, 1) weights: the std grows sqrt(width) a layer until it overflows;
    (b) no activation, std sqrt(1/width): the std holds; (c) tanh with (b)'s weights: it
    shrinks; (d) tanh, Xavier uniform with gain 5/3: it holds; (e) relu, Xavier uniform: it
    shrinks by about sqrt(2) a layer; (f) relu, Kaiming normal: it holds.

    Args:
        width: the hidden width (sets the std of (b) and (c), sqrt(1 / width)).

    Returns:
        Six `SeedConfig`, (a) to (f).

    Example:
        >>> from jaxgrad import seed_configs
        >>> [(config.label, config.activation) for config in seed_configs()]
        [('a', 'linear'), ('b', 'linear'), ('c', 'tanh'), ('d', 'tanh'), ('e', 'relu'),
         ('f', 'relu')]

    References:
        Glorot and Bengio 2010 (Xavier initialization); He, Zhang, Ren and Sun 2015
        (Kaiming initialization).
    """
    std = 1 / math.sqrt(width)
    return (
        SeedConfig("a", "linear, N(0, 1)", "linear", _init.normal(1.0)),
        SeedConfig("b", "linear, N(0, 1/n)", "linear", _init.normal(std)),
        SeedConfig("c", "tanh, N(0, 1/n)", "tanh", _init.normal(std)),
        SeedConfig(
            "d",
            "tanh, Xavier uniform, gain 5/3",
            "tanh",
            _init.xavier_uniform(_init.calculate_gain("tanh")),
        ),
        SeedConfig("e", "relu, Xavier uniform", "relu", _init.xavier_uniform()),
        SeedConfig("f", "relu, Kaiming normal", "relu", _init.kaiming_normal()),
    )


def seed_experiment(
    key: jax.Array, *, depth: int = 100, width: int = 400, batch_size: int = 16
) -> dict[str, LayerStats]:
    """Run the seed experiment: `propagate` each of `seed_configs(width)` from the same key.

    The six networks are one compiled program per (depth, width, batch_size), the key
    traced: another key runs it again without compiling.

    The gradients come from `random_projection_loss`, so that the gradient view is not
    zero where the forward signal has collapsed.

    Args:
        key: PRNG key, shared by the six networks.
        depth: hidden layers of each network.
        width: their width.
        batch_size: rows of the N(0, 1) input batch.

    Returns:
        A dict from the label ("a" to "f") to that network's `LayerStats`.

    Example:
        >>> import jax
        >>> from jaxgrad import seed_experiment
        >>> def run(key):  # six networks, six programs: traced here, not compiled
        ...     return seed_experiment(key, depth=2, width=8, batch_size=2)
        >>> results = jax.eval_shape(run, jax.random.key(0))
        >>> sorted(results), results["f"].act_std.shape
        (['a', 'b', 'c', 'd', 'e', 'f'], (2,))

    References:
        Glorot and Bengio 2010; He, Zhang, Ren and Sun 2015.
    """
    return _seed_experiment_jit(key, depth=depth, width=width, batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("depth", "width", "batch_size"))
def _seed_experiment_jit(key, *, depth, width, batch_size):
    # one program for the six networks, with the key traced: another key reuses it (each
    # call would otherwise make a new loss and new initializers, static arguments of
    # `propagate`, and compile the six programs again: about 7 s on a CPU)
    loss_fn = random_projection_loss(jax.random.fold_in(key, 1))
    return {
        config.label: propagate(
            key,
            depth=depth,
            width=width,
            batch_size=batch_size,
            activation=config.activation,
            kernel_init=config.kernel_init,
            loss_fn=loss_fn,
        )
        for config in seed_configs(width)
    }
