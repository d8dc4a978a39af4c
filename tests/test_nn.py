"""Tests for jaxgrad.nn: PReLU, RReLU and the stacked deep MLP against unrolled references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxgrad import init, nn


def unrolled_mlp(model: nn.MLP, x: jax.Array, phi) -> jax.Array:
    """The MLP written out as a Python loop over its stacked weights, without scan or nnx.

    Covers the plain and residual block forms, with layer norm (scale 1, bias 0 at init,
    epsilon 1e-6 as in nnx.LayerNorm) or batch norm in training mode (epsilon 1e-5).
    """
    kernels = np.asarray(model.blocks.linear.kernel[...])
    biases = np.asarray(model.blocks.linear.bias[...])
    h = np.asarray(x) if model.input_layer is None else np.asarray(model.input_layer(x))
    for kernel, bias in zip(kernels, biases, strict=True):
        pre = h @ kernel + bias
        if model.norm == "layer":
            mean = pre.mean(-1, keepdims=True)
            pre = (pre - mean) / np.sqrt(pre.var(-1, keepdims=True) + 1e-6)
        elif model.norm == "batch":
            pre = (pre - pre.mean(0)) / np.sqrt(pre.var(0) + 1e-5)
        a = np.asarray(phi(jnp.asarray(pre)))
        h = h + a if model.residual else a
    if model.readout is not None:
        h = np.asarray(model.readout(jnp.asarray(h)))
    return h


@pytest.mark.parametrize(
    ("in_features", "out_features", "norm", "residual", "activation"),
    [
        (16, None, None, False, "tanh"),
        (8, 3, None, True, "relu"),
        (16, 4, "layer", False, "gelu"),
        (16, None, "batch", True, "tanh"),
    ],
)
def test_scan_equals_unrolled_loop(in_features, out_features, norm, residual, activation):
    model = nn.MLP(
        in_features,
        16,
        7,
        out_features,
        activation=activation,
        norm=norm,
        residual=residual,
        bias_init=init.normal(0.1),
        rngs=nnx.Rngs(3),
    )
    x = jax.random.normal(jax.random.key(1), (10, in_features))
    from jaxgrad import activations

    expected = unrolled_mlp(model, x, activations.get(activation))
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=2e-5, atol=2e-5)


def test_layers_are_stacked_and_distinct():
    model = nn.MLP(8, 8, 5, rngs=nnx.Rngs(0))
    kernels = model.blocks.linear.kernel[...]
    assert kernels.shape == (5, 8, 8)
    # Every layer drew its own weights: no two stacked kernels are equal.
    flat = np.asarray(kernels).reshape(5, -1)
    assert len({row.tobytes() for row in flat}) == 5


def jaxpr_size(depth: int) -> int:
    model = nn.MLP(8, 8, depth, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    jaxpr = jax.make_jaxpr(lambda state, x: nnx.merge(graphdef, state)(x))(state, jnp.ones((2, 8)))
    return len(jaxpr.eqns)


def test_traced_program_does_not_grow_with_depth():
    assert jaxpr_size(2) == jaxpr_size(64)


def test_works_with_nnx_jit_and_grad():
    model = nn.MLP(6, 6, 4, 2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (5, 6))

    @nnx.jit
    def loss(model, x):
        return jnp.sum(model(x) ** 2)

    grads = nnx.grad(lambda m, x: jnp.sum(m(x) ** 2))(model, x)
    kernel_grad = grads.blocks.linear.kernel[...]
    assert kernel_grad.shape == (4, 6, 6)
    # Directional derivative check against a finite difference in float32 along the gradient.
    eps = 1e-3
    direction = kernel_grad / jnp.linalg.norm(kernel_grad)
    base = float(loss(model, x))
    model.blocks.linear.kernel[...] += eps * direction
    bumped = float(loss(model, x))
    np.testing.assert_allclose(
        (bumped - base) / eps, float(jnp.linalg.norm(kernel_grad)), rtol=2e-2
    )


def test_batch_norm_train_and_eval_modes():
    model = nn.MLP(4, 4, 3, norm="batch", rngs=nnx.Rngs(0))
    x = 3.0 + jax.random.normal(jax.random.key(0), (64, 4))
    before = np.asarray(model.blocks.norm.mean[...]).copy()
    train_out = model(x)
    after = np.asarray(model.blocks.norm.mean[...])
    assert not np.allclose(before, after), "training mode must update the running means"
    model.eval()
    eval_out = model(x)
    assert np.asarray(model.blocks.norm.mean[...]) == pytest.approx(after)
    # In eval mode batch norm uses running averages, so the outputs differ from training mode.
    assert not np.allclose(train_out, eval_out)
    # Eval mode: the output of one example does not depend on the rest of the batch.
    np.testing.assert_allclose(model(x[:1]), eval_out[:1], rtol=1e-5, atol=1e-6)


def test_callable_activation_and_dtype():
    model = nn.MLP(4, 4, 2, activation=jnp.sin, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    out = model(jnp.ones((2, 4), jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    assert model.activation_name == "sin"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"depth": 0}, ValueError, "depth must be an int >= 1, got 0"),
        ({"depth": 2.5}, ValueError, "depth must be an int >= 1, got 2.5"),
        ({"width": -1}, ValueError, "width must be an int >= 1"),
        ({"norm": "group"}, ValueError, "norm must be one of None, 'batch', 'layer'; got 'group'"),
        ({"activation": "relux"}, ValueError, "unknown activation 'relux'"),
        ({"activation": 3}, TypeError, "activation must be a name"),
        ({"rngs": 0}, TypeError, "rngs must be an nnx.Rngs"),
    ],
)
def test_bad_arguments_raise_when_built(kwargs, error, match):
    arguments = {"in_features": 4, "width": 4, "depth": 2, "rngs": nnx.Rngs(0), **kwargs}
    with pytest.raises(error, match=match):
        nn.MLP(**arguments)


def test_mismatched_input_width_raises():
    model = nn.MLP(4, 8, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"inputs of shape \(\.\.\., 4\), got \(3, 5\)"):
        model(jnp.ones((3, 5)))


def test_prelu_matches_definition_and_learns_slope():
    layer = nn.PReLU(3, init=0.1, rngs=nnx.Rngs(0))
    layer.slope[...] = jnp.array([0.1, 0.2, 0.3])
    x = jnp.array([[-1.0, -2.0, 3.0], [4.0, -5.0, -6.0]])
    expected = np.where(x >= 0, x, np.array([0.1, 0.2, 0.3]) * np.asarray(x))
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6)
    # d/da sum(prelu(x)) = sum of the negative inputs of each channel.
    grads = nnx.grad(lambda m: jnp.sum(m(x)))(layer)
    np.testing.assert_allclose(grads.slope[...], [-1.0, -7.0, -6.0], rtol=1e-6)


def test_prelu_shared_slope_and_bad_channels():
    shared = nn.PReLU(rngs=nnx.Rngs(0))
    np.testing.assert_allclose(shared(jnp.array([-4.0, 4.0])), [-1.0, 4.0])
    with pytest.raises(ValueError, match="PReLU has 3 slopes but the input has 2 channels"):
        nn.PReLU(3, rngs=nnx.Rngs(0))(jnp.ones((1, 2)))
    with pytest.raises(ValueError, match="num_parameters must be an int >= 1, got 0"):
        nn.PReLU(0, rngs=nnx.Rngs(0))


def test_rrelu_training_and_eval_modes():
    lower, upper = 0.1, 0.3
    layer = nn.RReLU(lower, upper, rngs=nnx.Rngs(0))
    x = -jnp.ones((200_000,))
    slopes = -np.asarray(layer(x))
    assert slopes.min() >= lower
    assert slopes.max() <= upper
    # Uniform slopes: mean (l+u)/2, std (u-l)/sqrt(12); 5 standard errors of the mean.
    tolerance = 5 * (upper - lower) / np.sqrt(12 * x.size)
    assert abs(slopes.mean() - (lower + upper) / 2) < tolerance
    assert not np.allclose(layer(x), layer(x)), "each call draws new slopes"
    np.testing.assert_array_equal(layer(jnp.array([2.0, 0.0])), [2.0, 0.0])
    layer.eval()
    np.testing.assert_allclose(layer(jnp.array([-2.0, 2.0])), [-(lower + upper), 2.0])
    with pytest.raises(ValueError, match="0 <= lower <= upper"):
        nn.RReLU(0.5, 0.2, rngs=nnx.Rngs(0))
