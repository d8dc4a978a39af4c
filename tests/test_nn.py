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


def count_equations(jaxpr) -> int:
    """Equations of a jaxpr, those of nested jaxprs (scan and while bodies) included."""
    total = 0
    for equation in jaxpr.eqns:
        total += 1
        for param in equation.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                total += count_equations(inner)
    return total


def numpy_normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    """Test data drawn with numpy: no JAX sampler to compile for each new shape."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# ----------------------------------------------------------------------------- ResidualMLP


def unrolled_residual_mlp(model: nn.ResidualMLP, x: jax.Array, phi) -> np.ndarray:
    """The residual MLP as Python loops over depth and branch layers, in float64 numpy."""
    params = {
        name: np.asarray(getattr(model.blocks, name)[...], np.float64)
        for name in ("kernel", "bias", "scalar_bias_in", "scalar_bias_out", "multiplier")
    }
    h = np.asarray(x, np.float64)
    if model.input_layer is not None:
        h = h @ np.asarray(model.input_layer.kernel[...]) + np.asarray(model.input_layer.bias[...])
    m = model.branch_layers
    for layer in range(model.depth):
        z = h
        for i in range(m):
            y = (z + params["scalar_bias_in"][layer, i]) @ params["kernel"][layer, i]
            y = y + params["bias"][layer, i]
            if i < m - 1:
                z = phi(y + params["scalar_bias_out"][layer, i])
            else:
                z = params["multiplier"][layer] * y + params["scalar_bias_out"][layer, i]
        h = phi(h + z) if model.post_activation else h + z
    if model.readout is not None:
        h = h @ np.asarray(model.readout.kernel[...]) + np.asarray(model.readout.bias[...])
    return h


NUMPY_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0)}


@pytest.mark.parametrize(
    ("in_features", "out_features", "branch_layers", "post_activation", "activation"),
    [
        (16, None, 1, False, "tanh"),
        (8, 3, 2, False, "relu"),
        (8, 3, 3, True, "relu"),
        (16, None, 2, True, "tanh"),
    ],
)
def test_residual_mlp_scan_equals_unrolled_loop(
    in_features, out_features, branch_layers, post_activation, activation
):
    model = nn.ResidualMLP(  # the sizes and initializers of the MLP test above
        in_features,
        16,
        7,
        out_features,
        branch_layers=branch_layers,
        activation=activation,
        kernel_init=init.lecun_normal(),
        bias_init=init.normal(0.1),
        post_activation=post_activation,
        rngs=nnx.Rngs(3),
    )
    # Give Fixup's scalar parameters values other than their neutral 1 and 0, so they count.
    blocks = model.blocks
    blocks.multiplier[...] = 1 + 0.3 * numpy_normal(0, blocks.multiplier.shape)
    blocks.scalar_bias_in[...] = 0.2 * numpy_normal(1, blocks.scalar_bias_in.shape)
    blocks.scalar_bias_out[...] = 0.2 * numpy_normal(2, blocks.scalar_bias_out.shape)
    x = numpy_normal(3, (10, in_features))
    expected = unrolled_residual_mlp(model, x, NUMPY_ACTIVATIONS[activation])
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=5e-5, atol=5e-5)


def test_residual_mlp_parameters_are_stacked_and_drawn_per_layer():
    model = nn.ResidualMLP(
        16, 16, 7, branch_layers=3, kernel_init=init.lecun_normal(), rngs=nnx.Rngs(0)
    )
    blocks = model.blocks
    assert model.input_layer is None
    assert model.readout is None
    assert blocks.kernel.shape == (7, 3, 16, 16)
    assert blocks.bias.shape == (7, 3, 16)
    assert blocks.scalar_bias_in.shape == blocks.scalar_bias_out.shape == (7, 3)
    assert blocks.multiplier.shape == (7,)
    np.testing.assert_array_equal(blocks.multiplier[...], 1.0)
    np.testing.assert_array_equal(blocks.scalar_bias_in[...], 0.0)
    np.testing.assert_array_equal(blocks.scalar_bias_out[...], 0.0)
    flat = np.asarray(blocks.kernel[...]).reshape(21, -1)
    assert len({row.tobytes() for row in flat}) == 21
    # Each kernel is drawn on its own (16, 16) shape: LeCun std 1/4, not 1/sqrt(3 * 16).
    np.testing.assert_allclose(flat.std(), 1 / 4, rtol=0.05)


def test_residual_mlp_traced_program_does_not_grow_with_depth():
    def size(depth: int) -> int:
        model = nnx.eval_shape(lambda: nn.ResidualMLP(8, 16, depth, 3, rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(model)
        x = jax.ShapeDtypeStruct((2, 8), jnp.float32)
        return count_equations(jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(state, x))

    assert size(2) == size(64)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"depth": 0}, ValueError, "depth must be an int >= 1, got 0"),
        ({"branch_layers": 0}, ValueError, "branch_layers must be an int >= 1, got 0"),
        ({"branch_layers": 2.0}, ValueError, "branch_layers must be an int >= 1, got 2.0"),
        ({"width": -1}, ValueError, "width must be an int >= 1"),
        ({"out_features": 0}, ValueError, "out_features must be an int >= 1, got 0"),
        ({"activation": "relux"}, ValueError, "unknown activation 'relux'"),
        ({"rngs": 0}, TypeError, "rngs must be an nnx.Rngs"),
        ({"kernel_init": init.kaiming_normal}, TypeError, "call it, e.g. kernel_init=init"),
        ({"bias_init": "zeros"}, TypeError, "bias_init must be an initializer"),
        ({"dtype": jnp.int8}, TypeError, "dtype must be a floating-point dtype.*got int8"),
        ({"post_activation": "yes"}, TypeError, "post_activation must be True or False"),
    ],
)
def test_residual_mlp_bad_arguments_raise(kwargs, error, match):
    arguments = {"in_features": 4, "width": 4, "depth": 2, "rngs": nnx.Rngs(0), **kwargs}
    with pytest.raises(error, match=match):
        nn.ResidualMLP(**arguments)


def test_residual_mlp_mismatched_input_raises():
    model = nnx.eval_shape(lambda: nn.ResidualMLP(4, 8, 2, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"inputs of shape \(\.\.\., 4\), got \(3, 5\)"):
        model(jnp.ones((3, 5)))


# ----------------------------------------------------------------------------- RNN

IN, HIDDEN = 4, 16


def unrolled_rnn(model: nn.RNN, x: jax.Array, h0: jax.Array | None, phi) -> np.ndarray:
    """Every hidden state, by a Python loop over time in float64 numpy."""
    w_in = np.asarray(model.input_layer.kernel[...], np.float64)
    b = np.asarray(model.input_layer.bias[...], np.float64)
    w_hh = np.asarray(model.recurrent.kernel[...], np.float64)
    x = np.asarray(x, np.float64)
    h = np.zeros((*x.shape[:-2], model.hidden)) if h0 is None else np.asarray(h0, np.float64)
    states = []
    for t in range(x.shape[-2]):
        h = phi(x[..., t, :] @ w_in + b + h @ w_hh)
        states.append(h)
    return np.stack(states, axis=-2)


@pytest.mark.parametrize(
    ("activation", "out_features", "with_h0"),
    [("tanh", None, False), ("relu", 3, True), ("linear", 2, False)],
)
def test_rnn_scan_equals_unrolled_loop(activation, out_features, with_h0):
    model = nn.RNN(
        IN,
        HIDDEN,
        out_features,
        activation=activation,
        recurrent_init=init.orthogonal(0.95),
        bias_init=init.normal(0.1),
        rngs=nnx.Rngs(2),
    )
    x = numpy_normal(0, (3, 9, IN))
    h0 = numpy_normal(1, (3, HIDDEN)) if with_h0 else None
    phi = {**NUMPY_ACTIVATIONS, "linear": lambda v: v}[activation]
    expected = unrolled_rnn(model, x, h0, phi)
    np.testing.assert_allclose(model.hidden_states(x, h0), expected, rtol=1e-5, atol=1e-5)
    last = expected[:, -1]
    if model.readout is not None:
        kernel, bias = model.readout.kernel[...], model.readout.bias[...]
        last = last @ np.asarray(kernel) + np.asarray(bias)
    np.testing.assert_allclose(model(x, h0), last, rtol=1e-5, atol=1e-5)
    # The public step, looped, is the same recursion.
    h = jnp.zeros((3, HIDDEN)) if h0 is None else h0
    for t in range(x.shape[1]):
        h = model.step(h, x[:, t])
    np.testing.assert_allclose(h, expected[:, -1], rtol=1e-5, atol=1e-5)


def test_rnn_shapes():
    model = nn.RNN(IN, HIDDEN, 2, rngs=nnx.Rngs(0))
    assert model.input_layer.kernel.shape == (IN, HIDDEN)
    assert model.recurrent.kernel.shape == (HIDDEN, HIDDEN)
    assert model.recurrent.bias is None
    x = jnp.ones((3, 9, IN))
    assert model(x).shape == (3, 2)
    assert model.hidden_states(x).shape == (3, 9, HIDDEN)
    assert model(x[0]).shape == (2,)
    assert model.hidden_states(x[0]).shape == (9, HIDDEN)
    assert model.hidden_states(jnp.ones((2, 3, 9, IN))).shape == (2, 3, 9, HIDDEN)
    # The default recurrent kernel is orthogonal.
    w_hh = np.asarray(model.recurrent.kernel[...])
    np.testing.assert_allclose(w_hh.T @ w_hh, np.eye(HIDDEN), atol=1e-5)


@pytest.mark.parametrize("gain", [0.8, 1.0, 1.25])
def test_rnn_orthogonal_gain_sets_gradient_through_time(gain):
    """Linear RNN: dh_T/dh_0 = W_hh^T (a power), so every singular value is gain^T exactly."""
    steps = 12
    model = nn.RNN(
        IN, HIDDEN, activation="linear", recurrent_init=init.orthogonal(gain), rngs=nnx.Rngs(0)
    )
    x = numpy_normal(0, (steps, IN))
    jacobian = jax.jacrev(lambda h0: model.hidden_states(x, h0)[-1])(numpy_normal(1, (HIDDEN,)))
    singular_values = np.linalg.svd(np.asarray(jacobian), compute_uv=False)
    np.testing.assert_allclose(singular_values, gain**steps, rtol=1e-4)


def test_rnn_tanh_gradient_through_time_is_bounded_by_the_gain():
    """|tanh'| <= 1, so ||dh_T/dh_0|| <= ||W_hh||^T = gain^T."""
    steps, gain = 12, 1.25
    model = nn.RNN(IN, HIDDEN, recurrent_init=init.orthogonal(gain), rngs=nnx.Rngs(0))
    x = numpy_normal(0, (steps, IN))
    jacobian = jax.jacrev(lambda h0: model.hidden_states(x, h0)[-1])(jnp.zeros((HIDDEN,)))
    assert 0 < np.linalg.norm(np.asarray(jacobian), 2) < gain**steps


def test_rnn_traced_program_does_not_grow_with_time_and_differentiates():
    model = nn.RNN(IN, HIDDEN, 2, rngs=nnx.Rngs(0))

    def size(steps: int) -> int:
        x = jax.ShapeDtypeStruct((3, steps, IN), jnp.float32)
        return count_equations(jax.make_jaxpr(lambda x: model(x))(x))

    assert size(2) == size(100)
    grads = nnx.grad(lambda m, x: jnp.sum(m(x) ** 2))(model, jnp.ones((3, 9, IN)))
    kernel_grad = np.asarray(grads.recurrent.kernel[...])
    assert kernel_grad.shape == (HIDDEN, HIDDEN)
    assert np.isfinite(kernel_grad).all()
    assert np.abs(kernel_grad).sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"hidden": 0}, ValueError, "hidden must be an int >= 1, got 0"),
        ({"in_features": -2}, ValueError, "in_features must be an int >= 1, got -2"),
        ({"out_features": 0}, ValueError, "out_features must be an int >= 1, got 0"),
        ({"activation": "tanhh"}, ValueError, "unknown activation 'tanhh'"),
        ({"rngs": 1}, TypeError, "rngs must be an nnx.Rngs"),
        ({"recurrent_init": init.orthogonal}, TypeError, "call it, e.g. recurrent_init=init"),
        ({"input_init": 1.0}, TypeError, "input_init must be an initializer"),
        ({"recurrent_init": init.dirac()}, ValueError, r"recurrent_init cannot draw a \(4, 4\)"),
        ({"dtype": "int32"}, TypeError, "dtype must be a floating-point dtype.*got int32"),
    ],
)
def test_rnn_bad_arguments_raise(kwargs, error, match):
    arguments = {"in_features": 3, "hidden": 4, "rngs": nnx.Rngs(0), **kwargs}
    with pytest.raises(error, match=match):
        nn.RNN(**arguments)


@pytest.mark.parametrize("input_dtype", [jnp.int32, jnp.float16, jnp.bfloat16])
def test_models_cast_numeric_inputs_to_their_dtype(input_dtype):
    """An int or half-precision input gives what its float32 cast gives (the first layer
    would cast it anyway; without the cast, jax.lax.scan refused the mismatched carry)."""
    x = (3 * jax.random.normal(jax.random.key(0), (2, 5, 4))).astype(input_dtype)
    reference = x.astype(jnp.float32)
    for model in (
        nn.MLP(4, 4, 2, rngs=nnx.Rngs(0)),
        nn.ResidualMLP(4, 4, 2, rngs=nnx.Rngs(0)),
        nn.RNN(4, 6, 2, rngs=nnx.Rngs(0)),
    ):
        np.testing.assert_array_equal(model(x), model(reference))
    with pytest.raises(TypeError, match="MLP takes an array of inputs, got list"):
        nn.MLP(4, 4, 2, rngs=nnx.Rngs(0))([[1, 2], "x"])


def test_rnn_bad_inputs_raise():
    model = nnx.eval_shape(lambda: nn.RNN(IN, HIDDEN, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"\(\.\.\., time, 4\), got \(5, 2\)"):
        model(jnp.ones((5, 2)))
    with pytest.raises(ValueError, match=r"\(\.\.\., time, 4\), got \(4,\)"):
        model.hidden_states(jnp.ones((IN,)))
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 16\) .* got \(16,\)"):
        model(jnp.ones((2, 5, IN)), jnp.zeros((HIDDEN,)))
