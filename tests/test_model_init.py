"""Tests for jaxgrad.model_init: LSUV and Fixup, checked by independent forward passes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxgrad
from jaxgrad import init, model_init, nn
from jaxgrad.model_init import LSUVReport, fixup, lsuv

TOL = 0.1
# One set of sizes throughout, so that the eager operations of model construction compile once.
IN, WIDTH, DEPTH, OUT = 32, 64, 20, 10
RES_DEPTH = DEPTH  # the same stacked shapes as the MLPs: their samplers compile once
NUMPY_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0)}


def mlp_linear_outputs(model: nn.MLP, x: jax.Array) -> dict[str, list[np.ndarray]]:
    """Every linear layer's output h W + b of a plain or residual MLP without norm, by a
    float64 numpy loop over the stacked weights."""
    assert model.norm is None
    act = NUMPY_ACTIVATIONS[model.activation_name]
    params = lambda layer: (
        np.asarray(layer.kernel[...], np.float64),
        np.asarray(layer.bias[...], np.float64),
    )
    outputs: dict[str, list[np.ndarray]] = {}
    h = np.asarray(x, np.float64)
    if model.input_layer is not None:
        kernel, bias = params(model.input_layer)
        h = h @ kernel + bias
        outputs["input_layer.kernel"] = [h]
    outputs["blocks.linear.kernel"] = []
    for kernel, bias in zip(*params(model.blocks.linear), strict=True):
        pre = h @ kernel + bias
        outputs["blocks.linear.kernel"].append(pre)
        h = h + act(pre) if model.residual else act(pre)
    if model.readout is not None:
        kernel, bias = params(model.readout)
        outputs["readout.kernel"] = [h @ kernel + bias]
    return outputs


def residual_linear_outputs(model: nn.ResidualMLP, x: jax.Array) -> dict[str, list[np.ndarray]]:
    """Every linear layer's output of a ResidualMLP (branch layers in order), in float64."""
    act = NUMPY_ACTIVATIONS[model.activation_name]
    blocks = model.blocks
    kernels, biases = np.asarray(blocks.kernel[...], np.float64), np.asarray(blocks.bias[...])
    shift_in, shift_out = np.asarray(blocks.scalar_bias_in[...]), blocks.scalar_bias_out[...]
    shift_out, multiplier = np.asarray(shift_out), np.asarray(blocks.multiplier[...])
    outputs: dict[str, list[np.ndarray]] = {}
    h = np.asarray(x, np.float64)
    if model.input_layer is not None:
        h = h @ np.asarray(model.input_layer.kernel[...]) + np.asarray(model.input_layer.bias[...])
        outputs["input_layer.kernel"] = [h]
    outputs["blocks.kernel"] = []
    m = model.branch_layers
    for layer in range(model.depth):
        z = h
        for i in range(m):
            y = (z + shift_in[layer, i]) @ kernels[layer, i] + biases[layer, i]
            outputs["blocks.kernel"].append(y)
            if i < m - 1:
                z = act(y + shift_out[layer, i])
            else:
                z = multiplier[layer] * y + shift_out[layer, i]
        h = act(h + z) if model.post_activation else h + z
    if model.readout is not None:
        y = h @ np.asarray(model.readout.kernel[...]) + np.asarray(model.readout.bias[...])
        outputs["readout.kernel"] = [y]
    return outputs


def check_report(report: LSUVReport, outputs: dict[str, list[np.ndarray]], max_iters: int):
    """The report's variances are the independent ones, and each is within TOL of 1."""
    assert list(report.variance) == list(outputs), "layers in forward order"
    for path, layer_outputs in outputs.items():
        independent = np.array([output.var() for output in layer_outputs])
        reported = np.asarray(report.variance[path]).ravel()
        np.testing.assert_allclose(reported, independent, rtol=1e-4)
        assert np.all(np.abs(independent - 1) < TOL), (path, independent)
        iterations = np.asarray(report.iterations[path])
        assert iterations.shape == np.asarray(report.variance[path]).shape
        assert np.all((iterations >= 0) & (iterations <= max_iters))
        assert np.asarray(report.converged[path]).all()


def numpy_normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    """Test data drawn with numpy: no JAX sampler to compile for each new shape."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.fixture(scope="module")
def batch():
    return numpy_normal(1, (256, IN))


@pytest.mark.parametrize(
    ("activation", "bias_init", "residual"),
    [("tanh", init.zeros(), False), ("relu", init.normal(0.3), False), ("tanh", None, True)],
)
def test_lsuv_gives_every_mlp_layer_unit_variance(batch, activation, bias_init, residual):
    model = nn.MLP(
        IN,
        WIDTH,
        DEPTH,
        OUT,
        activation=activation,
        bias_init=bias_init,
        residual=residual,
        rngs=nnx.Rngs(0),
    )
    report = lsuv(model, batch, jax.random.key(2), tol=TOL, max_iters=10)
    check_report(report, mlp_linear_outputs(model, batch), max_iters=10)
    assert report.variance["blocks.linear.kernel"].shape == (DEPTH,)
    # Zero biases: one rescaling lands at 1 exactly; random biases need more for some layers.
    iterations = np.asarray(report.iterations["blocks.linear.kernel"])
    if activation == "tanh" and not residual:
        assert iterations.max() == 1
    if activation == "relu":
        assert iterations.max() >= 2
    frame = report.to_frame()
    assert list(frame["layer"])[:3] == [
        "input_layer.kernel",
        "blocks.linear.kernel[0]",
        "blocks.linear.kernel[1]",
    ]
    assert len(frame) == DEPTH + 2


def test_lsuv_kernels_are_orthogonal_up_to_scale(batch):
    model = nn.MLP(IN, WIDTH, DEPTH, OUT, activation="relu", rngs=nnx.Rngs(0))
    lsuv(model, batch, jax.random.key(3))

    def assert_scaled_isometry(gram):
        scale = np.mean(np.diag(gram))
        np.testing.assert_allclose(gram / scale, np.eye(len(gram)), atol=1e-5)

    for kernel in np.asarray(model.blocks.linear.kernel[...], np.float64):
        assert_scaled_isometry(kernel.T @ kernel)
    wide = np.asarray(model.input_layer.kernel[...], np.float64)  # (32, 64): orthonormal rows
    assert_scaled_isometry(wide @ wide.T)
    tall = np.asarray(model.readout.kernel[...], np.float64)  # (64, 10): orthonormal columns
    assert_scaled_isometry(tall.T @ tall)


def test_lsuv_without_key_rescales_the_current_kernels(batch):
    model = nn.MLP(IN, WIDTH, DEPTH, OUT, activation="tanh", rngs=nnx.Rngs(0))
    before = np.asarray(model.blocks.linear.kernel[...])
    report = lsuv(model, batch, None)
    after = np.asarray(model.blocks.linear.kernel[...])
    ratios = after.reshape(DEPTH, -1) / before.reshape(DEPTH, -1)
    np.testing.assert_allclose(ratios, ratios[:, :1] * np.ones_like(ratios), rtol=1e-5)
    check_report(report, mlp_linear_outputs(model, batch), max_iters=10)


def test_lsuv_report_says_what_it_corrected(batch):
    """initial_variance is each layer's output variance before its first rescaling (the
    layers before it already rescaled), and the repr is a few lines, not a wall of dicts."""
    model = nn.MLP(IN, WIDTH, DEPTH, OUT, activation="tanh", rngs=nnx.Rngs(0))
    paths = {
        "input_layer.kernel": model.input_layer,
        "blocks.linear.kernel": model.blocks.linear,
        "readout.kernel": model.readout,
    }
    before = {path: np.asarray(layer.kernel[...], np.float64) for path, layer in paths.items()}
    report = lsuv(model, batch, None)
    outputs = mlp_linear_outputs(model, batch)  # zero biases: an output scales with its kernel
    frame = report.to_frame()
    assert list(frame.columns) == [
        "layer", "initial_variance", "variance", "iterations", "converged"
    ]  # fmt: skip
    for path, layer in paths.items():
        after = np.asarray(layer.kernel[...], np.float64)
        stacked = after.ndim == 3
        scale = after[..., 0, 0] / before[path][..., 0, 0]  # one factor per kernel
        variance = np.array([output.var() for output in outputs[path]])
        expected = variance / np.square(scale if stacked else scale.reshape(1))
        initial = np.asarray(report.initial_variance[path]).ravel()
        np.testing.assert_allclose(initial, expected, rtol=1e-4)
        unchanged = np.asarray(report.iterations[path]).ravel() == 0
        np.testing.assert_array_equal(
            initial[unchanged], np.asarray(report.variance[path]).ravel()[unchanged]
        )
        rows = frame[frame["layer"].str.startswith(path)]
        np.testing.assert_allclose(rows["initial_variance"], initial)
    corrected = np.abs(np.asarray(report.initial_variance["blocks.linear.kernel"]) - 1) >= TOL
    assert corrected.sum() >= DEPTH // 2  # tanh shrinks what it receives: LSUV undid that
    lines = repr(report).splitlines()
    assert lines[0] == "LSUVReport of 3 kernels (every layer: .to_frame())"
    assert len(lines) == 4
    assert lines[2].startswith(f"  blocks.linear.kernel ({DEPTH} layers): variance ")
    assert lines[2].endswith(f"; {DEPTH} of {DEPTH} converged")
    initial = float(report.initial_variance["input_layer.kernel"])
    final = float(report.variance["input_layer.kernel"])
    assert lines[1].startswith(
        f"  input_layer.kernel: variance {initial:.3g} before, {final:.3g} after; rescalings "
    )
    assert "OrderedDict" not in repr(report)


def test_lsuv_max_iters_bounds_the_rescalings(batch):
    model = nn.MLP(
        IN, WIDTH, DEPTH, OUT, activation="relu", bias_init=init.normal(0.5), rngs=nnx.Rngs(0)
    )
    report = lsuv(model, batch, jax.random.key(0), max_iters=0)
    assert all(np.all(np.asarray(it) == 0) for it in report.iterations.values())
    # Orthogonal kernels untouched: the variances are those of the plain orthogonal network.
    outputs = mlp_linear_outputs(model, batch)
    independent = np.array([o.var() for o in outputs["blocks.linear.kernel"]])
    np.testing.assert_allclose(report.variance["blocks.linear.kernel"], independent, rtol=1e-4)
    np.testing.assert_array_equal(
        report.converged["blocks.linear.kernel"], np.abs(independent - 1) < TOL
    )
    report = lsuv(model, batch, jax.random.key(0), tol=1e-6, max_iters=1)
    assert np.asarray(report.iterations["blocks.linear.kernel"]).max() == 1


def test_lsuv_on_residual_mlp(batch):
    branch_layers = 2
    model = nn.ResidualMLP(
        IN,
        WIDTH,
        RES_DEPTH,
        OUT,
        branch_layers=branch_layers,
        post_activation=True,
        bias_init=init.normal(0.1),
        rngs=nnx.Rngs(0),
    )
    report = lsuv(model, batch, jax.random.key(4))
    assert report.variance["blocks.kernel"].shape == (RES_DEPTH, branch_layers)
    check_report(report, residual_linear_outputs(model, batch), max_iters=10)


class TwoPath(nnx.Module):
    """A generic model: a convolution, then two dense layers defined in reverse call order.

    Zero kernels to start with (lsuv draws orthogonal ones), sizes that share samplers.
    """

    def __init__(self, rngs: nnx.Rngs):
        zeros = init.zeros()
        self.head = nnx.Linear(6, 6, kernel_init=zeros, rngs=rngs)
        self.conv = nnx.Conv(2, 6, kernel_size=(3,), padding="VALID", kernel_init=zeros, rngs=rngs)
        self.hidden = nnx.Linear(36, 6, kernel_init=zeros, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.conv(x))
        h = jnp.tanh(self.hidden(h.reshape(h.shape[0], -1)))
        return self.head(h)


def test_lsuv_on_a_generic_model_follows_call_order():
    model = TwoPath(nnx.Rngs(0))
    x = numpy_normal(0, (128, 8, 2))
    report = lsuv(model, x, jax.random.key(1))
    assert list(report.variance) == ["conv.kernel", "hidden.kernel", "head.kernel"]
    # Independent forward pass through the layers as modules.
    conv_out = model.conv(x)
    hidden_out = model.hidden(jax.nn.relu(conv_out).reshape(128, -1))
    head_out = model.head(jnp.tanh(hidden_out))
    for path, output in zip(report.variance, (conv_out, hidden_out, head_out), strict=True):
        variance = float(jnp.var(output))
        assert abs(variance - 1) < TOL
        np.testing.assert_allclose(float(report.variance[path]), variance, rtol=1e-4)
    # The kernels are orthogonal up to scale; the conv as a (taps * in, out) matrix.
    conv_matrix = np.asarray(model.conv.kernel[...]).reshape(3 * 2, 6)
    gram = conv_matrix.T @ conv_matrix
    np.testing.assert_allclose(gram / gram[0, 0], np.eye(6), atol=1e-5)


def test_lsuv_compiles_a_program_independent_of_depth(batch):
    from jaxgrad import model_init

    def size(depth: int) -> int:
        model = nnx.eval_shape(lambda: nn.MLP(IN, WIDTH, depth, OUT, rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(model.blocks)
        blocks = functools.partial(model_init._lsuv_mlp_blocks, graphdef)
        keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), depth))
        h = jax.ShapeDtypeStruct((256, WIDTH), jnp.float32)
        jaxpr = jax.make_jaxpr(blocks)(state, h, keys, jnp.float32(0.1), jnp.int32(10))
        return count_equations(jaxpr.jaxpr)

    assert size(2) == size(DEPTH)


def count_equations(jaxpr) -> int:
    total = 0
    for equation in jaxpr.eqns:
        total += 1
        for param in equation.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                total += count_equations(inner)
    return total


class Stacked(nnx.Module):
    """Layers stacked with nnx.vmap and applied inside jax.lax.scan: out of lsuv's reach."""

    def __init__(self, rngs: nnx.Rngs):
        linear = lambda key: nnx.Linear(
            WIDTH, WIDTH, kernel_init=init.lecun_normal(), rngs=nnx.Rngs(key)
        )
        self.layers = nnx.vmap(linear)(jax.random.split(rngs.params(), DEPTH))

    def __call__(self, x):
        graphdef, state = nnx.split(self.layers)
        body = lambda h, s: (jnp.tanh(nnx.merge(graphdef, s)(h)), None)
        return jax.lax.scan(body, x, state)[0]


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (lambda: Stacked(nnx.Rngs(0)), r"cannot reach the layers \['layers'\] of Stacked"),
        (lambda: nn.RNN(WIDTH, WIDTH, rngs=nnx.Rngs(0)), "does not support jaxgrad.nn.RNN"),
        (lambda: nn.PReLU(rngs=nnx.Rngs(0)), "found no nnx.Linear or nnx.Conv layer in PReLU"),
        (None, "model must be an nnx.Module, got PjitFunction"),
    ],
)
def test_lsuv_unsupported_models_raise(model, match):
    built = jnp.tanh if model is None else nnx.eval_shape(model)  # no arrays drawn
    with pytest.raises(TypeError, match=match):
        lsuv(built, jnp.ones((8, WIDTH)), jax.random.key(0))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"tol": 0.0}, ValueError, "tol must be > 0, got 0.0"),
        ({"tol": "big"}, TypeError, "tol must be a real number, got 'big'"),
        ({"max_iters": -1}, ValueError, "max_iters must be an int >= 0, got -1"),
        ({"max_iters": 2.0}, ValueError, "max_iters must be an int >= 0, got 2.0"),
        ({"key": 0}, TypeError, r"key must be a PRNG key \(jax.random.key\(seed\)\) or None"),
        ({"x": jnp.ones((8, 33))}, ValueError, r"inputs of shape \(\.\.\., 32\), got \(8, 33\)"),
    ],
)
def test_lsuv_bad_arguments_raise(kwargs, error, match):
    arguments = {"x": jnp.ones((8, IN)), "key": jax.random.key(0), **kwargs}
    with pytest.raises(error, match=match):
        lsuv(nnx.eval_shape(lambda: nn.MLP(IN, WIDTH, 2, OUT, rngs=nnx.Rngs(0))), **arguments)


# ----------------------------------------------------------------------------- Fixup


def scramble_scalars(model: nn.ResidualMLP) -> None:
    """Move Fixup's scalar parameters away from 1 and 0, as training would."""
    blocks = model.blocks
    blocks.multiplier[...] = 2.0 * jnp.ones_like(blocks.multiplier[...])
    blocks.scalar_bias_in[...] = 0.5 * jnp.ones_like(blocks.scalar_bias_in[...])
    blocks.scalar_bias_out[...] = -0.5 * jnp.ones_like(blocks.scalar_bias_out[...])


@pytest.mark.parametrize(
    ("branch_layers", "post_activation"), [(1, False), (2, False), (3, False), (2, True)]
)
def test_fixup_makes_the_residual_mlp_an_identity_with_a_zero_readout(
    batch, branch_layers, post_activation
):
    model = nn.ResidualMLP(
        IN,
        WIDTH,
        RES_DEPTH,
        OUT,
        branch_layers=branch_layers,
        post_activation=post_activation,
        bias_init=init.normal(0.1),
        rngs=nnx.Rngs(0),
    )
    scramble_scalars(model)
    fixup(model)
    embedded = model.embed(batch)
    expected = jax.nn.relu(embedded) if post_activation else embedded  # relu is idempotent
    np.testing.assert_array_equal(model.trunk(embedded), expected)
    np.testing.assert_array_equal(model(batch), np.zeros((len(batch), OUT)))
    blocks = model.blocks
    np.testing.assert_array_equal(blocks.kernel[...][:, -1], 0.0)
    np.testing.assert_array_equal(blocks.bias[...][:, -1], 0.0)
    np.testing.assert_array_equal(blocks.multiplier[...], 1.0)
    np.testing.assert_array_equal(blocks.scalar_bias_in[...], 0.0)
    np.testing.assert_array_equal(blocks.scalar_bias_out[...], 0.0)
    np.testing.assert_array_equal(model.readout.kernel[...], 0.0)
    np.testing.assert_array_equal(model.readout.bias[...], 0.0)
    assert np.abs(np.asarray(model.input_layer.kernel[...])).min() > 0, "input layer untouched"


@pytest.mark.parametrize("branch_layers", [2, 3])
def test_fixup_scales_the_other_branch_layers_by_depth_power(branch_layers):
    depth, width = RES_DEPTH, WIDTH
    model = nn.ResidualMLP(IN, width, depth, OUT, branch_layers=branch_layers, rngs=nnx.Rngs(0))
    before = np.asarray(model.blocks.kernel[...])
    fixup(model)
    after = np.asarray(model.blocks.kernel[...])
    expected_scale = depth ** (-1 / (2 * branch_layers - 2))
    for i in range(branch_layers - 1):
        np.testing.assert_allclose(after[:, i].std() / before[:, i].std(), expected_scale, 1e-5)
    # With a key the layers are drawn afresh from He normal, then scaled: statistically so.
    fresh = nn.ResidualMLP(IN, width, depth, OUT, branch_layers=branch_layers, rngs=nnx.Rngs(1))
    fixup(fresh, key=jax.random.key(7))
    redrawn = np.asarray(fresh.blocks.kernel[...])
    he_std = np.sqrt(2 / width)
    for i in range(branch_layers - 1):
        np.testing.assert_allclose(redrawn[:, i].std(), he_std * expected_scale, rtol=0.02)
    np.testing.assert_array_equal(redrawn[:, -1], 0.0)


def test_fixup_mlp_with_residual_tanh_blocks(batch):
    model = nn.MLP(IN, WIDTH, DEPTH, OUT, activation="tanh", residual=True, rngs=nnx.Rngs(0))
    fixup(model)
    np.testing.assert_array_equal(model(batch), np.zeros((len(batch), OUT)))
    no_readout = nn.MLP(IN, WIDTH, DEPTH, activation="tanh", residual=True, rngs=nnx.Rngs(0))
    fixup(no_readout)
    np.testing.assert_array_equal(no_readout(batch), no_readout.embed(batch))
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum((m(batch) - 1.0) ** 2)))(no_readout)
    kernel_grad_norms = np.linalg.norm(np.asarray(grads.blocks.linear.kernel[...]), axis=(1, 2))
    assert np.all(kernel_grad_norms > 0)


def test_fixup_zeroed_layers_receive_gradients(batch):
    target = numpy_normal(2, (len(batch), WIDTH))
    # Without a readout the loss reaches every zeroed last branch layer at once.
    loss = lambda m: jnp.mean((m(batch) - target) ** 2)
    model = nn.ResidualMLP(IN, WIDTH, RES_DEPTH, branch_layers=2, rngs=nnx.Rngs(0))
    fixup(model)
    grads = nnx.jit(nnx.grad(loss))(model)
    last_layer_grads = np.asarray(grads.blocks.kernel[...][:, -1])
    assert np.all(np.linalg.norm(last_layer_grads, axis=(1, 2)) > 0)
    assert np.all(np.asarray(grads.blocks.multiplier[...]) == 0), "s multiplies a zero output"
    # With a zero readout the gradient reaches the readout first, the branches after one step.
    target = numpy_normal(3, (len(batch), OUT))
    loss = lambda m: jnp.mean((m(batch) - target) ** 2)
    model = nn.ResidualMLP(IN, WIDTH, RES_DEPTH, OUT, branch_layers=2, rngs=nnx.Rngs(0))
    fixup(model)
    grad_fn = nnx.jit(nnx.grad(loss))
    grads = grad_fn(model)
    assert np.linalg.norm(np.asarray(grads.readout.kernel[...])) > 0
    np.testing.assert_array_equal(grads.blocks.kernel[...][:, -1], 0.0)
    sgd = jax.jit(lambda params, grads: jax.tree.map(lambda p, g: p - 0.1 * g, params, grads))
    nnx.update(model, sgd(nnx.state(model, nnx.Param), grads))
    grads = grad_fn(model)
    last_layer_grads = np.asarray(grads.blocks.kernel[...][:, -1])
    assert np.all(np.linalg.norm(last_layer_grads, axis=(1, 2)) > 0)


@pytest.mark.parametrize(
    ("model", "kwargs", "error", "match"),
    [
        (lambda: nn.MLP(IN, WIDTH, 2, OUT, rngs=nnx.Rngs(0)), {}, ValueError, "residual=False"),
        (
            lambda: nn.MLP(IN, WIDTH, 2, OUT, residual=True, norm="layer", rngs=nnx.Rngs(0)),
            {},
            ValueError,
            "without normalization; got an MLP with norm='layer'",
        ),
        (
            lambda: nn.MLP(IN, WIDTH, 2, OUT, activation="relu", residual=True, rngs=nnx.Rngs(0)),
            {},
            ValueError,
            r"phi\(0\) = 0 with slope phi'\(0\) = 0 for activation 'relu'",
        ),
        (
            lambda: nn.MLP(
                IN, WIDTH, 2, OUT, activation="sigmoid", residual=True, rngs=nnx.Rngs(0)
            ),
            {},
            ValueError,
            r"phi\(0\) = 0.5",
        ),
        (
            lambda: nnx.Linear(IN, WIDTH, kernel_init=init.lecun_normal(), rngs=nnx.Rngs(0)),
            {},
            TypeError,
            "got Linear",
        ),
        (
            lambda: nn.ResidualMLP(IN, WIDTH, RES_DEPTH, OUT, rngs=nnx.Rngs(0)),
            {"key": 3},
            TypeError,
            "PRNG key",
        ),
    ],
)
def test_fixup_bad_models_raise(model, kwargs, error, match):
    built = nnx.eval_shape(model)  # the checks come before any array is touched
    with pytest.raises(error, match=match):
        fixup(built, **kwargs)


# ----------------------------------------------------------------------------- cure


class FunctionalReLUCNN(nnx.Module):
    """The issue's user model: ReLU applied as a function, N(0, 0.01^2) kernels."""

    def __init__(self, depth, kernel_init, *, rngs):
        self.stem = nnx.Conv(3, 16, (3, 3), kernel_init=kernel_init, rngs=rngs)
        self.convs = nnx.List(
            [nnx.Conv(16, 16, (3, 3), kernel_init=kernel_init, rngs=rngs) for _ in range(depth)]
        )
        self.head = nnx.Linear(16, 10, kernel_init=kernel_init, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.stem(x))
        for conv in self.convs:
            h = jax.nn.relu(conv(h))
        return self.head(h.mean(axis=(1, 2)))


def cnn_loss(model, batch):
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(model(batch[0]), batch[1]).mean()


@pytest.fixture(scope="module")
def cnn_batch():
    x = jax.random.normal(jax.random.key(0), (32, 10, 10, 3))
    return x, jax.random.randint(jax.random.key(1), (32,), 0, 10)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["critical", "lsuv"])
def test_cure_of_a_collapsed_relu_cnn(cnn_batch, method):
    """Every kernel gradient near 1e-12 (N(0, 0.01^2) weights, 11 layers): vanishing before;
    the critical redraw (He init) or LSUV gives gradients of order one and a stable verdict.
    The model given is not changed."""
    model = FunctionalReLUCNN(9, init.normal(0.01), rngs=nnx.Rngs(0))
    kernel_before = np.asarray(model.convs[3].kernel[...])
    result = model_init.cure(model, cnn_loss, cnn_batch, method=method, activation="relu")
    assert result.method == method
    assert result.before.verdict == "vanishing"
    assert result.after.verdict == "stable"
    np.testing.assert_array_equal(model.convs[3].kernel[...], kernel_before)
    kernels = [i for i, name in enumerate(result.report_before.param_names) if "kernel" in name]
    before = np.asarray(result.report_before.params.grad_norm)[kernels]
    after = np.asarray(result.report_after.params.grad_norm)[kernels]
    assert before.max() < 1e-8  # the head's kernel sees 1e-9, the stem 1e-13
    assert 1e-2 < np.median(after) < 1e2
    assert "before vanishing, after stable" in repr(result)
    assert set(result.to_frame()["when"]) == {"before", "after"}


@pytest.mark.slow
def test_critical_cure_draws_the_prescribed_variances():
    """ReLU: kernels N(0, 2 / fan_in) (He); tanh with zero biases: the biases are redrawn
    with sigma_b2 = 0.05 and the kernels at tanh's critical sigma_w2 there (1.761)."""
    relu = nn.MLP(64, 128, 8, 4, activation="relu", kernel_init=init.normal(0.01), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (32, 64))
    loss = lambda m, x: jnp.mean(m(x) ** 2)
    cured = model_init.cure(relu, loss, x).model
    kernels = np.asarray(cured.blocks.linear.kernel[...], np.float64)
    np.testing.assert_allclose(kernels.var(axis=(1, 2)) * 128, 2.0, rtol=0.05)  # 16384 draws
    np.testing.assert_allclose(np.asarray(cured.input_layer.kernel[...]).var() * 64, 2.0, rtol=0.1)
    tanh = nn.MLP(64, 128, 8, 4, activation="tanh", rngs=nnx.Rngs(0))
    result = model_init.cure(tanh, loss, x, method="critical")
    prescription = result.detail
    assert prescription.changes_biases
    assert prescription.sigma_b2 == pytest.approx(0.05)
    assert prescription.sigma_w2 == pytest.approx(
        float(jaxgrad.theory.critical_sigma_w2("tanh", 0.05))
    )
    biases = np.asarray(result.model.blocks.linear.bias[...], np.float64)
    np.testing.assert_allclose(biases.var(), 0.05, rtol=0.1)  # 1024 draws
    kernels = np.asarray(result.model.blocks.linear.kernel[...], np.float64)
    np.testing.assert_allclose(kernels.var() * 128, prescription.sigma_w2, rtol=0.02)


@pytest.mark.slow
def test_cure_refuses_what_it_cannot_do(cnn_batch):
    model = FunctionalReLUCNN(1, init.normal(0.01), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="method must be one of auto, critical, lsuv"):
        model_init.cure(model, cnn_loss, cnn_batch, method="magic")
    with pytest.raises(ValueError, match="method='critical' needs the activation"):
        model_init.cure(model, cnn_loss, cnn_batch, method="critical")
    assert model_init.cure(model, cnn_loss, cnn_batch).method == "lsuv"  # unknown activation
