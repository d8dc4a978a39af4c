"""Tests for `jaxgrad.inspect` against `jax.grad` of the same models written out by hand,
with explicit intermediates and explicit zero taps for dL/d(output).

Models a user would write: a CNN with the activation applied as a function, a transformer
whose blocks (with `nnx.MultiHeadAttention`) are stacked and applied with `nnx.scan`, an RNN
that runs its cell with `nnx.scan` over time, and jaxgrad's own MLP (against `probe`).
"""

import concurrent.futures
import functools
import math
import threading

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxgrad
from jaxgrad import nn
from jaxgrad.inspection import DEFAULT_TYPES, ModelReport, inspect

RTOL = 2e-5  # two float32 programs (inspect's and the reference's), compared in float64
ATOL = 1e-6


def numpy_normal(seed=0, gain=2.0):
    """He-scaled normal weights drawn by NumPy from a fixed seed (compiles nothing)."""
    rng = np.random.default_rng(seed)

    def init(key, shape, dtype=jnp.float32):
        del key
        fan_in = int(np.prod(shape[:-1]))
        return jnp.asarray(rng.standard_normal(shape) * np.sqrt(gain / fan_in), dtype)

    return init


def moments(values):
    """mean, std, rms, max |x| in float64."""
    values = np.asarray(values, np.float64)
    return values.mean(), values.std(), np.sqrt(np.mean(values**2)), np.abs(values).max()


def dead(values):
    values = np.asarray(values)
    return np.all(values.reshape(-1, values.shape[-1]) == 0, axis=0).mean()


def assert_row(report, name, x, out, out_grad, dead_frac=None):
    """The row `name` against numpy float64 of its input, output and dL/d(output)."""
    row = jax.device_get(report.module(name))
    got_in = (row.in_mean, row.in_std, row.in_rms, row.in_max_abs)
    got_out = (row.out_mean, row.out_std, row.out_rms, row.out_max_abs)
    np.testing.assert_allclose(got_in, moments(x), rtol=RTOL, atol=ATOL, err_msg=name)
    np.testing.assert_allclose(got_out, moments(out), rtol=RTOL, atol=ATOL, err_msg=name)
    expected_grad = np.linalg.norm(np.asarray(out_grad, np.float64))
    np.testing.assert_allclose(row.out_grad_norm, expected_grad, rtol=RTOL, err_msg=name)
    np.testing.assert_allclose(row.dead_frac, dead(x) if dead_frac is None else dead_frac)


def assert_params(report, expected):
    """Parameter rows (forward order) against {name: (grad, weight)} arrays."""
    assert list(report.param_names) == list(expected)
    for name, (grad, weight) in expected.items():
        row = jax.device_get(report.param(name))
        grad_norm = np.linalg.norm(np.asarray(grad, np.float64))
        weight_norm = np.linalg.norm(np.asarray(weight, np.float64))
        np.testing.assert_allclose(row.grad_norm, grad_norm, rtol=RTOL, err_msg=name)
        np.testing.assert_allclose(row.weight_norm, weight_norm, rtol=RTOL, err_msg=name)
        ratio = np.nan if weight_norm == 0 else grad_norm / weight_norm
        np.testing.assert_allclose(row.ratio, ratio, rtol=RTOL, err_msg=name)


def cross_entropy(model, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


# ----------------------------------------------------------------------------- a CNN


class CNN(nnx.Module):
    """Declared head first, called stem first: rows must follow the calls, not the names."""

    def __init__(self, depth=3, channels=8, *, rngs):
        self.head = nnx.Linear(channels, 10, kernel_init=numpy_normal(9), rngs=rngs)
        self.convs = nnx.List(
            [
                nnx.Conv(channels, channels, (3, 3), kernel_init=numpy_normal(i), rngs=rngs)
                for i in range(depth)
            ]
        )
        self.stem = nnx.Conv(3, channels, (3, 3), kernel_init=numpy_normal(10), rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.stem(x))
        for conv in self.convs:
            h = jax.nn.relu(conv(h))
        return self.head(h.mean(axis=(1, 2)))


def image_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, 8, 8, 3)), jnp.float32)
    return x, jnp.asarray(rng.integers(0, 10, n), jnp.int32)


def test_cnn_with_functional_relu_against_explicit_intermediates():
    model = CNN(rngs=nnx.Rngs(0))
    model.convs[0].bias.set_value(model.convs[0].bias[...].at[jnp.array([1, 4, 6])].set(-100.0))
    batch = image_batch()
    report = inspect(model, cross_entropy, batch, activation="relu")
    names = ["stem", "convs.0", "convs.1", "convs.2", "head"]
    assert report.module_names == tuple(names)  # forward order
    layers = [model.stem, *model.convs]

    def explicit(params, taps):
        m = nnx.merge(graphdef, params, rest)
        mods = [m.stem, *m.convs]
        inputs, outputs = [], []
        h = batch[0]
        for mod, tap in zip(mods, taps[:-1], strict=True):
            inputs.append(h)
            z = mod(h)
            outputs.append(z)
            h = jax.nn.relu(z + tap)
        pooled = h.mean(axis=(1, 2))
        logits = m.head(pooled)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits + taps[-1], batch[1])
        return loss.mean(), ([*inputs, pooled], [*outputs, logits])

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    taps = [
        jnp.zeros(mod(jnp.zeros((8, 8, 8, 3 if mod is model.stem else 8))).shape) for mod in layers
    ]
    taps.append(jnp.zeros((8, 10)))
    (loss, (inputs, outputs)), (grads, tap_grads) = jax.value_and_grad(
        explicit, argnums=(0, 1), has_aux=True
    )(params, taps)
    np.testing.assert_allclose(report.loss, loss, rtol=RTOL)
    for name, x, out, grad in zip(names, inputs, outputs, tap_grads, strict=True):
        assert_row(report, name, x, out, grad)
    # three channels of convs.0 are dead after its ReLU: convs.1 sees them, not convs.0
    assert float(report.module("convs.1").dead_frac) == pytest.approx(3 / 8)
    assert float(report.module("convs.0").dead_frac) == 0.0
    flat_grads, flat_weights = dict(nnx.to_flat_state(grads)), dict(nnx.to_flat_state(params))
    expected = {}
    for name in names:
        for param in ("bias", "kernel"):
            path = (*name.split("."), param)
            path = tuple(int(p) if p.isdigit() else p for p in path)
            expected[f"{name}.{param}"] = (flat_grads[path][...], flat_weights[path][...])
    assert_params(report, expected)
    assert np.isnan(report.param("stem.bias").ratio)  # a zero bias: the nan marker
    # ReLU's derivative read off its value: saturated means exactly zero there
    for name, x in zip(names[1:], inputs[1:], strict=True):
        expected_saturated = np.mean(np.asarray(x) == 0)
        np.testing.assert_allclose(report.module(name).saturated_frac, expected_saturated)


def test_second_call_does_not_recompile_and_the_model_is_unchanged():
    traces = []

    def counting_loss(model, batch):
        traces.append(1)
        return cross_entropy(model, batch)

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.fc = nnx.Linear(5, 6, kernel_init=numpy_normal(1), rngs=rngs)
            self.bn = nnx.BatchNorm(6, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.out = nnx.Linear(6, 4, kernel_init=numpy_normal(2), rngs=rngs)

        def __call__(self, x):
            return self.out(self.drop(nnx.relu(self.bn(self.fc(x)))))

    def host(state):
        return [
            np.asarray(
                jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v
            )
            for v in jax.tree.leaves(state)
        ]

    model = Net(nnx.Rngs(0))
    before = host(nnx.state(model))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 5)), jnp.float32)
    batch = (x, jnp.zeros((16,), jnp.int32))
    first = inspect(model, counting_loss, batch)
    count = len(traces)
    other = jnp.asarray(np.random.default_rng(1).standard_normal((16, 5)), jnp.float32)
    second = inspect(model, counting_loss, (other, batch[1]))
    assert len(traces) == count  # cached: same shapes, same loss_fn object
    assert float(first.loss) != float(second.loss)
    for after, value in zip(host(nnx.state(model)), before, strict=True):
        np.testing.assert_array_equal(after, value)
    np.testing.assert_allclose(second.module("bn").out_mean, 0.0, atol=1e-6)  # batch stats


# ----------------------------------------------------------------------------- a transformer


class Block(nnx.Module):
    def __init__(self, width, heads, rngs):
        self.ln1 = nnx.LayerNorm(width, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, width, decode=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, 2 * width, rngs=rngs)
        self.down = nnx.Linear(2 * width, width, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.down(jax.nn.gelu(self.up(self.ln2(x))))


class Transformer(nnx.Module):
    """Pre-LN blocks stacked with nnx.vmap and applied with nnx.scan (flax's example 06)."""

    def __init__(self, vocab=11, width=16, heads=2, depth=3, *, rngs):
        self.embed = nnx.Embed(vocab, width, rngs=rngs)

        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs):
            return Block(width, heads, rngs)

        self.blocks = make(rngs)
        self.head = nnx.Linear(width, vocab, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens)

        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def body(x, block):
            return block(x)

        return self.head(body(x, self.blocks))


class RematTransformer(Transformer):
    """The same blocks scanned through nnx.remat, as memory-bound transformers are trained."""

    def __call__(self, tokens):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        @nnx.remat
        def body(x, block):
            return block(x)

        return self.head(body(self.embed(tokens), self.blocks))


def test_blocks_inside_remat_are_named_in_a_warning_not_dropped_silently():
    """Calls inside nnx.remat are not recorded: the warning names every module of the blocks,
    whose parameters stay in the table whole with no module; the loss and the parameters'
    gradients are those of the remat-free model."""
    model = RematTransformer(depth=2, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(0), (4, 6), 0, 11)
    batch = (tokens, jnp.roll(tokens, 1, axis=1))
    with pytest.warns(jaxgrad.inspection.UnrecordedWarning) as caught:
        report = inspect(model, cross_entropy, batch)
    assert len(caught) == 1
    named = str(caught[0].message).split(" was recorded")[0].removeprefix("no call of ")
    expected = ["blocks.ln1", "blocks.attn.query", "blocks.attn.key", "blocks.attn.value"]
    expected += ["blocks.attn.out", "blocks.ln2", "blocks.up", "blocks.down"]
    assert sorted(named.split(", ")) == sorted(expected)
    assert caught[0].filename == __file__
    assert report.module_names == ("embed", "head")
    owners = dict(zip(report.param_names, report.param_modules, strict=True))
    unowned = sorted(name for name, owner in owners.items() if owner == "")
    assert unowned == sorted(name for name in owners if name.startswith("blocks."))
    assert len(unowned) == 16  # 8 modules' kernels and biases (scales for the norms)
    plain = Transformer(depth=2, rngs=nnx.Rngs(0))
    reference = inspect(plain, cross_entropy, batch)  # no warning: the suite makes it an error
    np.testing.assert_allclose(report.loss, reference.loss, rtol=1e-6)
    np.testing.assert_allclose(
        report.param("head.kernel").grad_norm, reference.param("head.kernel").grad_norm, rtol=1e-5
    )


@pytest.mark.slow
def test_scanned_transformer_gives_one_row_per_layer_against_an_unrolled_reference():
    depth = 3
    model = Transformer(depth=depth, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(0), (4, 6), 0, 11)
    batch = (tokens, jnp.roll(tokens, 1, axis=1))
    report = inspect(model, cross_entropy, batch)
    sub = ["ln1", "attn", "attn.query", "attn.key", "attn.value", "attn.out", "ln2", "up", "down"]
    expected_names = ["embed"]
    for layer in range(depth):
        expected_names += [f"blocks[{layer}].{name}" for name in sub]
    assert report.module_names == (*expected_names, "head")
    assert report.module_layers[1] == (0,)
    assert report.module_layers[-2] == (depth - 1,)

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    block_graphdef, _block_state = nnx.split(model.blocks)

    def unrolled(params, taps):
        m = nnx.merge(graphdef, params, rest)
        state = nnx.state(m.blocks)
        record = {"in": [], "out": [], "attn": []}
        x = m.embed(batch[0]) + taps["embed"]
        for layer in range(depth):
            b = nnx.merge(block_graphdef, jax.tree.map(lambda a, i=layer: a[i], state))
            t = taps["blocks"][layer]
            h = b.ln1(x)
            record["in"].append(x)
            record["out"].append(h)
            h = h + t["ln1"]
            q, k = b.attn.query(h), b.attn.key(h)
            logits = jnp.einsum("bqhd,bkhd->bhqk", q / math.sqrt(q.shape[-1]), k)
            weights = jax.nn.softmax(logits)
            entropy = -jnp.sum(weights * jax.nn.log_softmax(logits), axis=-1).mean()
            record["attn"].append((logits.max(), entropy))
            a = b.attn(h)
            record["in"].append(h)
            record["out"].append(a)
            x = x + a + t["attn"]
            h2 = b.ln2(x)
            record["in"].append(x)
            record["out"].append(h2)
            h2 = h2 + t["ln2"]
            u = b.up(h2)
            record["in"].append(h2)
            record["out"].append(u)
            u = u + t["up"]
            d = b.down(jax.nn.gelu(u))
            record["in"].append(jax.nn.gelu(u))
            record["out"].append(d)
            x = x + d + t["down"]
        logits = m.head(x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()
        return loss, record

    zeros = jnp.zeros((4, 6, 16))
    layer_taps = {"ln1": zeros, "attn": zeros, "ln2": zeros, "up": jnp.zeros((4, 6, 32))}
    layer_taps["down"] = zeros
    taps = {"embed": zeros, "blocks": [dict(layer_taps) for _ in range(depth)]}
    (loss, record), (grads, tap_grads) = jax.value_and_grad(unrolled, argnums=(0, 1), has_aux=True)(
        params, taps
    )
    np.testing.assert_allclose(report.loss, loss, rtol=RTOL)
    position = 0
    for layer in range(depth):
        for name in ("ln1", "attn", "ln2", "up", "down"):
            x, out = record["in"][position], record["out"][position]
            position += 1
            assert_row(report, f"blocks[{layer}].{name}", x, out, tap_grads["blocks"][layer][name])
        max_logit, entropy = record["attn"][layer]
        row = report.module(f"blocks[{layer}].attn")
        np.testing.assert_allclose(row.attn_max_logit, max_logit, rtol=RTOL)
        np.testing.assert_allclose(row.attn_entropy, entropy, rtol=RTOL)
        assert row.attn_entropy <= math.log(6) + 1e-6  # at most uniform over 6 keys
    assert np.isnan(report.module("blocks[0].ln1").attn_max_logit)
    # per-layer parameter rows: the slices of the stacked parameters
    flat_grads, flat_weights = dict(nnx.to_flat_state(grads)), dict(nnx.to_flat_state(params))
    for layer in range(depth):
        path = ("blocks", "up", "kernel")
        row = report.param(f"blocks[{layer}].up.kernel")
        np.testing.assert_allclose(
            row.grad_norm, np.linalg.norm(np.asarray(flat_grads[path][...][layer])), rtol=RTOL
        )
        np.testing.assert_allclose(
            row.weight_norm, np.linalg.norm(np.asarray(flat_weights[path][...][layer])), rtol=RTOL
        )
    names = report.param_names
    assert names[0] == "embed.embedding"
    assert names[-1] == "head.kernel"
    assert names.index("blocks[0].down.kernel") < names.index("blocks[1].ln1.bias")


def test_attention_statistics_with_a_causal_mask_against_a_manual_softmax():
    attention = nnx.MultiHeadAttention(2, 8, decode=False, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (3, 5, 8)) * 3
    mask = nnx.make_causal_mask(jnp.ones((3, 5)))

    def loss(model, x):
        return jnp.mean(model(x, mask=mask) ** 2)

    report = inspect(attention, loss, x)
    q, k = attention.query(x), attention.key(x)
    logits = np.asarray(jnp.einsum("bqhd,bkhd->bhqk", q / math.sqrt(4), k), np.float64)
    valid = np.broadcast_to(np.asarray(mask, bool), logits.shape)
    masked = np.where(valid, logits, -np.inf)
    weights = np.exp(masked - masked.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(valid, weights * np.log(weights), 0), axis=-1).mean()
    row = report.module("")
    np.testing.assert_allclose(row.attn_max_logit, masked.max(), rtol=RTOL)
    np.testing.assert_allclose(row.attn_entropy, entropy, rtol=1e-4)
    np.testing.assert_allclose(report.loss, loss(attention, x), rtol=RTOL)


# ----------------------------------------------------------------------------- an RNN


class ScannedRNN(nnx.Module):
    def __init__(self, rngs):
        self.cell = nnx.SimpleCell(3, 5, rngs=rngs)
        self.head = nnx.Linear(5, 2, rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, None, 1), out_axes=(nnx.Carry, 1))
        def step(carry, cell, x_t):
            return cell(carry, x_t)

        carry, _ = step(jnp.zeros((x.shape[0], 5)), self.cell, x)
        return self.head(carry)


@pytest.mark.slow
def test_rnn_scanned_over_time_gives_one_row_per_step():
    steps = 6
    model = ScannedRNN(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, steps, 3))

    def loss(model, x):
        return jnp.mean(model(x) ** 2)

    report = inspect(model, loss, x)
    expected = []
    for t in range(steps):
        expected += [f"cell.dense_i[{t}]", f"cell.dense_h[{t}]"]
    assert report.module_names == (*expected, "head")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def unrolled(params, taps):
        m = nnx.merge(graphdef, params, rest)
        h = jnp.zeros((4, 5))
        record = []
        for t in range(steps):
            xi = m.cell.dense_i(x[:, t])
            hh = m.cell.dense_h(h)
            record.append(((x[:, t], xi), (h, hh)))
            h = jnp.tanh(xi + taps[t][0] + hh + taps[t][1])
        return jnp.mean(m.head(h) ** 2), record

    taps = [(jnp.zeros((4, 5)), jnp.zeros((4, 5))) for _ in range(steps)]
    (value, record), (grads, tap_grads) = jax.value_and_grad(
        unrolled, argnums=(0, 1), has_aux=True
    )(params, taps)
    np.testing.assert_allclose(report.loss, value, rtol=RTOL)
    for t in range(steps):
        (xi_in, xi), (h_in, hh) = record[t]
        assert_row(report, f"cell.dense_i[{t}]", xi_in, xi, tap_grads[t][0])
        if t > 0:  # the first step's recurrent input is all zero: its std is 0
            assert_row(report, f"cell.dense_h[{t}]", h_in, hh, tap_grads[t][1])
    # gradients through time shrink towards the first step
    assert (
        report.module("cell.dense_i[0]").out_grad_norm
        < report.module(f"cell.dense_i[{steps - 1}]").out_grad_norm
    )
    flat = dict(nnx.to_flat_state(grads))
    np.testing.assert_allclose(
        report.param("cell.dense_h.kernel").grad_norm,
        np.linalg.norm(np.asarray(flat[("cell", "dense_h", "kernel")][...])),
        rtol=RTOL,
    )


# ----------------------------------------------------------------------------- jaxgrad's MLP


@pytest.mark.slow
@pytest.mark.parametrize("norm", [None, "layer"])
def test_inspect_agrees_with_probe_on_jaxgrads_mlp(norm):
    depth = 5
    model = nn.MLP(12, 16, depth, 3, activation="tanh", norm=norm, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (8, 12))
    loss_fn = jaxgrad.random_projection_loss(jax.random.key(1))

    def loss(model, x):
        return loss_fn(model(x))

    report = inspect(model, loss, x)
    stats = jaxgrad.probe(model, x, lambda out, y: loss_fn(out))
    blocks = [f"blocks[{i}]" for i in range(depth)]
    get = lambda field, names: np.array([getattr(report.module(n), field) for n in names])
    np.testing.assert_allclose(get("out_std", blocks), stats.act_std, rtol=1e-5)
    np.testing.assert_allclose(get("out_grad_norm", blocks), stats.act_grad_norm, rtol=1e-5)
    pre = [f"blocks[{i}].norm" if norm else f"blocks[{i}].linear" for i in range(depth)]
    np.testing.assert_allclose(get("out_std", pre), stats.pre_std, rtol=1e-5)
    kernels = [report.param(f"blocks[{i}].linear.kernel") for i in range(depth)]
    np.testing.assert_allclose([k.grad_norm for k in kernels], stats.grad_norm, rtol=1e-5)
    np.testing.assert_allclose([k.weight_norm for k in kernels], stats.weight_norm, rtol=1e-6)
    # saturation of layer l's activation is read where layer l + 1 (or the readout) takes it
    receivers = [*blocks[1:], "readout"]
    np.testing.assert_allclose(get("saturated_frac", receivers), stats.saturated_frac, atol=1e-6)
    assert report.activation == "tanh"


# ----------------------------------------------------------------------------- non-finite


class Chain(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(4, 4, kernel_init=numpy_normal(1), rngs=rngs)
        self.l2 = nnx.Linear(4, 4, kernel_init=numpy_normal(2), rngs=rngs)
        self.l3 = nnx.Linear(4, 2, kernel_init=numpy_normal(3), rngs=rngs)

    def __call__(self, x):
        return self.l3(jnp.sqrt(jnp.abs(self.l2(self.l1(x))) * 0.0))


def test_first_nonfinite_module_forward_and_backward():
    """sqrt(0) is finite forward and infinite backward: dL/d(l2's output) is the first
    non-finite gradient going back from the loss; l3's is finite."""
    model = Chain(nnx.Rngs(0))
    x = jnp.ones((3, 4))
    report = inspect(model, lambda m, x: jnp.sum(m(x)), x)
    assert report.first_nonfinite_forward is None
    assert report.first_nonfinite_backward == "l2"
    assert not report.module("l3").nonfinite_grad
    model.l1.kernel.set_value(jnp.full((4, 4), 1e30))
    blown = inspect(model, lambda m, x: jnp.sum(m(jnp.full((3, 4), 1e10))), x)
    assert blown.first_nonfinite_forward == "l1"  # its output overflows float32
    assert not blown.module("l1").nonfinite_in
    assert blown.module("l1").nonfinite_out


def test_gradient_tap_gives_the_cotangent_norm_inside_a_scan_and_leaves_gradients_exact():
    """In the linear chain h_(t+1) = w h_t scanned for T steps with L = ||h_T||^2, the tap of
    step t receives ||dL/dh_(t+1)|| = w^(T-1-t) 2 ||h_T|| (closed form, float64), and the
    gradient of w is bitwise that of the same scan without taps."""
    from jaxgrad.inspection import capture

    steps, w0, h0 = 5, 0.9, jnp.arange(1.0, 4.0)

    def chain(w, taps, tapped=True):
        def body(h, tap):
            h = w * h
            return (capture.gradient_tap(h, tap) if tapped else h), None

        h, _ = jax.lax.scan(body, h0, taps)
        return jnp.sum(h**2)

    dw, tap_norms = jax.grad(chain, argnums=(0, 1))(w0, jnp.zeros(steps))
    plain = jax.grad(chain)(w0, jnp.zeros(steps), False)
    h_final = w0**steps * np.asarray(h0, np.float64)
    expected = [w0 ** (steps - 1 - t) * 2 * np.linalg.norm(h_final) for t in range(steps)]
    np.testing.assert_allclose(np.asarray(tap_norms), expected, rtol=1e-6)
    assert float(dw) == float(plain)
    np.testing.assert_allclose(float(dw), 2 * steps * w0 ** (2 * steps - 1) * 14, rtol=1e-6)


# ----------------------------------------------------------------------------- options


@pytest.mark.slow
def test_module_selection_types_paths_and_errors():
    model = CNN(depth=2, rngs=nnx.Rngs(0))
    batch = image_batch()
    only_convs = inspect(model, cross_entropy, batch, modules=nnx.Conv)
    assert only_convs.module_names == ("stem", "convs.0", "convs.1")
    chosen = inspect(model, cross_entropy, batch, modules=("head", "convs.1"))
    assert chosen.module_names == ("convs.1", "head")
    full = inspect(model, cross_entropy, batch)
    np.testing.assert_array_equal(
        chosen.module("head").out_grad_norm, full.module("head").out_grad_norm
    )
    assert inspect(model, cross_entropy, batch, modules=()).module_names == ()
    with pytest.raises(ValueError, match=r"unknown module path\(s\) \['convs.7'\]"):
        inspect(model, cross_entropy, batch, modules=("convs.7",))
    with pytest.raises(TypeError, match="each entry of modules must be a module path"):
        inspect(model, cross_entropy, batch, modules=("head", 3))
    with pytest.raises(TypeError, match="model must be an nnx.Module, got function"):
        inspect(cross_entropy, cross_entropy, batch)
    with pytest.raises(TypeError, match="loss_fn must return a real scalar"):
        inspect(model, lambda m, b: m(b[0]), batch)
    with pytest.raises(ValueError, match="saturation_threshold must be a finite number >= 0"):
        inspect(model, cross_entropy, batch, saturation_threshold=-1.0)
    with pytest.raises(ValueError, match="unknown activation 'relux'"):
        inspect(model, cross_entropy, batch, activation="relux")
    assert nnx.MultiHeadAttention in DEFAULT_TYPES


@pytest.mark.slow
def test_report_is_a_pytree_with_frames_and_a_readable_repr():
    model = CNN(depth=1, rngs=nnx.Rngs(0))
    report = inspect(model, cross_entropy, image_batch())
    assert isinstance(report, ModelReport)
    leaves = jax.tree.leaves(report)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    frame = report.to_frame()
    assert list(frame["kind"].unique()) == ["module", "param"]
    assert frame.attrs["loss"] == pytest.approx(float(report.loss))
    assert "loss" not in frame.columns
    modules = report.module_frame()
    assert list(modules["name"]) == ["stem", "convs.0", "head"]
    text = repr(report)
    assert "stem" in text
    assert "forward order" in text
    with pytest.raises(KeyError, match="no row 'nowhere'"):
        report.module("nowhere")


@pytest.mark.slow
def test_profile_reads_the_report_layer_by_layer():
    """One layer per call with a kernel, in forward order: its kernel's norms, its output as
    the signal, and the dead fraction the next layer receives (the first input, the data,
    is never read as units)."""
    model = CNN(depth=2, rngs=nnx.Rngs(0))
    model.convs[0].bias.set_value(model.convs[0].bias[...].at[jnp.array([0, 5])].set(-100.0))
    report = inspect(model, cross_entropy, image_batch(), activation="relu")
    profile = report.profile()
    assert profile.names == ("stem", "convs.0", "convs.1", "head")
    for index, name in enumerate(profile.names):
        row, kernel = report.module(name), report.param(f"{name}.kernel")
        assert profile.grad_norm[index] == pytest.approx(float(kernel.grad_norm))
        assert profile.weight_norm[index] == pytest.approx(float(kernel.weight_norm))
        assert profile.signal_std[index] == pytest.approx(float(row.out_std))
        assert profile.act_grad_norm[index] == pytest.approx(float(row.out_grad_norm))
    np.testing.assert_allclose(profile.dead_frac[:3], [0.0, 2 / 8, 0.0])
    assert np.isnan(profile.dead_frac[3])
    np.testing.assert_array_equal(profile.fan_out, [8, 8, 8, 10])
    np.testing.assert_array_equal(profile.fan_in, [27, 72, 72, 8])
    assert profile.first_nonfinite == -1
    dead = next(f for f in jaxgrad.diagnose(report).findings if f.rule == "dead")
    assert dead.verdict == "stable"  # 2 of 8 units, below the threshold
    assert dead.numbers["max_dead_frac"] == pytest.approx(2 / 8)
    assert dead.numbers["max_layer"] == 2  # convs.0's dead units, as convs.1 receives them


class Dense(nnx.Module):
    """A hand-written dense layer whose weight is called `w`, not flax's `kernel`."""

    def __init__(self, fan_in, fan_out, seed):
        self.w = nnx.Param(numpy_normal(seed, gain=1.0)(None, (fan_in, fan_out)))
        self.b = nnx.Param(jnp.zeros(fan_out))

    def __call__(self, x):
        return x @ self.w[...] + self.b[...][None, :]


class LogDense(Dense):
    """log(x W + b + 4): nan in its output once its bias is pushed below -4 - max |x W|."""

    def __call__(self, x):
        return jnp.log(super().__call__(x) + 4.0)


class HandWritten(nnx.Module):
    """Dense, layer norm, tanh, log of a dense layer, Dense (tanh keeps |x W| of the middle
    layer below 4 here, so its log is finite until its bias is pushed down)."""

    def __init__(self):
        self.inp = Dense(4, 8, seed=0)
        self.norm = nnx.LayerNorm(8, rngs=nnx.Rngs(0))
        self.mid = LogDense(8, 2, seed=1)
        self.out = Dense(2, 1, seed=2)

    def __call__(self, x):
        return self.out(self.mid(jnp.tanh(self.norm(self.inp(x)))))


def test_hand_written_layers_are_judged_whatever_their_weights_are_called():
    """A module's weight is its `kernel`, its `embedding`, or else its own parameter of two
    or more axes (`w` here); a norm layer's one-axis scale does not make it a layer. The
    non-finite layer `diagnose` names is the one `inspect` located."""
    model = HandWritten()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 4)), jnp.float32)
    report = inspect(model, lambda m, x: jnp.mean(m(x) ** 2), x)
    assert report.module_names == ("inp", "norm", "mid", "out")
    profile = report.profile()
    assert profile.names == ("inp", "mid", "out")
    for index, name in enumerate(profile.names):
        assert profile.grad_norm[index] == float(report.param(f"{name}.w").grad_norm)
        assert profile.weight_norm[index] == float(report.param(f"{name}.w").weight_norm)
    np.testing.assert_array_equal(profile.fan_in, [4, 8, 2])
    gradient = next(f for f in jaxgrad.diagnose(report).findings if f.rule == "gradient_ratio")
    assert gradient.numbers["first_grad_norm"] == float(report.param("inp.w").grad_norm)
    assert gradient.numbers["last_grad_norm"] == float(report.param("out.w").grad_norm)

    model.mid.b.set_value(jnp.full(2, -10.0))
    broken = inspect(model, lambda m, x: jnp.mean(m(x) ** 2), x)
    assert broken.first_nonfinite_forward == "mid"
    result = jaxgrad.diagnose(broken)
    nonfinite = next(f for f in result.findings if f.rule == "nonfinite")
    assert "'mid' (layer 2)" in nonfinite.message
    assert result.verdict == "exploding"


def test_what_cannot_be_judged_is_refused_with_a_reason():
    model = HandWritten()
    x = jnp.ones((16, 4))
    with pytest.raises(ValueError, match=r"modules names \['Conv'\], but the model has no"):
        inspect(model, lambda m, x: jnp.mean(m(x) ** 2), x, modules=nnx.Conv)
    norms_only = inspect(model, lambda m, x: jnp.mean(m(x) ** 2), x, modules=nnx.LayerNorm)
    with pytest.raises(ValueError, match=r"none of the 1 recorded calls \('norm'\)"):
        jaxgrad.diagnose(norms_only)
    with pytest.raises(TypeError) as raised:  # the model's own error, with the batch named
        inspect(model, lambda m, b: jnp.mean(m(b[0]) ** 2), (jnp.ones((16, 5)), 3))
    assert "batch (float32[16, 5], int32[])" in " ".join(raised.value.__notes__)
    with pytest.raises(TypeError, match=r"pytree of arrays .*, got a str at batch\[1\]"):
        inspect(model, lambda m, b: jnp.mean(m(b[0]) ** 2), (jnp.ones((16, 4)), "labels"))


# ----------------------------------------------------------------------------- threads


def test_patches_are_per_thread_and_the_last_to_leave_restores_the_originals():
    """Two threads wrap nnx.Linear at once: each sees only its own calls, the first to
    leave does not unwrap the other (the report trains its remedies in two threads; a
    process-wide patch lost the second thread's calls halfway through its trace, "loss_fn
    recorded different calls in two traces of it"), and the originals come back after the
    last one."""
    from jaxgrad.inspection import capture

    own_call, own_scan = nnx.Linear.__dict__["__call__"], jax.lax.scan
    layers = {name: nnx.Linear(2, 2, rngs=nnx.Rngs(0)) for name in "ab"}
    seen = {"a": [], "b": []}
    entered, a_left = threading.Barrier(2), threading.Event()

    def noting(name):
        def wrap(call):
            def noted(module, x):
                seen[name].append(next(k for k, v in layers.items() if v is module))
                return call(module, x)

            return noted

        return wrap

    def thread(name):
        with capture.patched({nnx.Linear: noting(name), "jax.lax.scan": lambda scan: scan}):
            entered.wait(timeout=30)
            layers[name](jnp.ones((1, 2)))
            if name == "a":
                a_left.set()  # leaves while b is still inside
            else:
                assert a_left.wait(timeout=30)
                layers["b"](jnp.ones((1, 2)))  # after a left: still b's wrapper
                layers["a"](jnp.ones((1, 2)))

    threads = [threading.Thread(target=thread, args=(name,)) for name in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert seen == {"a": ["a"], "b": ["b", "b", "a"]}
    assert nnx.Linear.__dict__["__call__"] is own_call
    assert jax.lax.scan is own_scan


def test_inspect_in_two_threads_at_once_equals_inspect_in_one():
    """A CNN and a scanned RNN inspected in two threads, the RNN's trace under way from before
    the CNN's inspect starts tracing until after it has returned: each report equals the one
    its model gives alone (names and every statistic)."""
    cnn = CNN(rngs=nnx.Rngs(0))
    rnn = ScannedRNN(nnx.Rngs(0))
    x_rnn = jax.random.normal(jax.random.key(1), (4, 3, 3))
    cnn_tracing, rnn_tracing, cnn_done = threading.Event(), threading.Event(), threading.Event()

    def cnn_loss(model, batch):
        cnn_tracing.set()
        assert rnn_tracing.wait(timeout=60)
        return cross_entropy(model, batch)

    def rnn_loss(model, x):
        if not rnn_tracing.is_set():  # its first trace waits for the CNN's whole inspect
            rnn_tracing.set()
            assert cnn_done.wait(timeout=120)
        return jnp.mean(model(x) ** 2)

    def inspect_cnn():
        report = inspect(cnn, cnn_loss, image_batch())
        cnn_done.set()
        return report

    def inspect_rnn():
        assert cnn_tracing.wait(timeout=60)
        return inspect(rnn, rnn_loss, x_rnn)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        together = {"cnn": pool.submit(inspect_cnn), "rnn": pool.submit(inspect_rnn)}
        together = {name: future.result(timeout=300) for name, future in together.items()}
    alone = {
        "cnn": inspect(cnn, cross_entropy, image_batch()),
        "rnn": inspect(rnn, lambda m, x: jnp.mean(m(x) ** 2), x_rnn),
    }
    assert together["rnn"].module_names[-1] == "head"
    for name in alone:
        assert together[name].module_names == alone[name].module_names
        chex.assert_trees_all_close(together[name], alone[name], rtol=1e-6)


class WithAuxLoss(nnx.Module):
    """A layer returning (output, auxiliary loss), as a mixture-of-experts layer does."""

    def __init__(self, rngs):
        self.w = nnx.Param(numpy_normal(3)(None, (6, 6)))

    def __call__(self, x):
        y = x @ self.w[...]
        return y, 1e-3 * jnp.mean(y**2)


class AuxNet(nnx.Module):
    def __init__(self, rngs):
        self.inp = nnx.Linear(4, 6, kernel_init=numpy_normal(1), rngs=rngs)
        self.moe = WithAuxLoss(rngs)
        self.out = nnx.Linear(6, 1, kernel_init=numpy_normal(2), rngs=rngs)

    def __call__(self, x):
        y, aux = self.moe(jnp.tanh(self.inp(x)))
        return self.out(jnp.tanh(y)), aux


def test_a_layer_returning_an_auxiliary_loss_is_measured_on_its_output():
    """(y, aux_loss): the row is y's statistics and dL/dy (an explicit zero tap on y), not
    the scalar loss beside it (the last leaf, which it used to be)."""
    model = AuxNet(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (16, 4))

    def loss(model, x):
        pred, aux = model(x)
        return jnp.mean((pred - 1.0) ** 2) + aux

    report = inspect(model, loss, x)
    graphdef, state = nnx.split(model)

    def explicit(tap):
        m = nnx.merge(graphdef, state)
        h = jnp.tanh(m.inp(x))
        y = h @ m.moe.w[...] + tap
        pred = m.out(jnp.tanh(y))
        return jnp.mean((pred - 1.0) ** 2) + 1e-3 * jnp.mean(y**2), (h, y)

    tap_grad, (h, y) = jax.grad(explicit, has_aux=True)(jnp.zeros((16, 6)))
    assert report.module_names == ("inp", "moe", "out")
    assert_row(report, "moe", h, y, tap_grad)


class LSTMLanguageModel(nnx.Module):
    def __init__(self, rngs):
        self.embed = nnx.Embed(20, 8, rngs=rngs)
        self.rnn = nnx.RNN(nnx.OptimizedLSTMCell(8, 16, rngs=rngs))
        self.head = nnx.Linear(16, 20, rngs=rngs)

    def __call__(self, tokens):
        return self.head(self.rnn(self.embed(tokens)))


def test_an_rnn_cell_is_judged_at_its_first_step_with_an_input():
    """nnx.RNN's first step feeds the cell's recurrent layer the zero initial carry (input and
    output std 0): the profile judges that shared weight at step 1 instead, and a freshly
    initialized LSTM is not called vanishing with all its units dead (it was)."""
    model = LSTMLanguageModel(nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(0), (8, 6), 0, 20)

    def loss(model, tokens):
        logits = model(tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()

    report = inspect(model, loss, tokens)
    assert float(report.module("rnn.cell.dense_h[0]").in_max_abs) == 0.0
    profile = report.profile()
    assert profile.names == ("embed", "rnn.cell.dense_i[0]", "rnn.cell.dense_h[1]", "head")
    step1 = jax.device_get(report.module("rnn.cell.dense_h[1]"))
    assert profile.signal_std[2] == pytest.approx(float(step1.out_std))
    assert profile.dead_frac[1] == pytest.approx(float(step1.dead_frac))  # h_0 read by step 1
    assert profile.dead_frac[1] < 0.5
    hidden = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    kernel = hidden[("rnn", "cell", "dense_h", "kernel")][...]
    assert profile.weight_norm[2] == pytest.approx(float(np.linalg.norm(kernel)), rel=1e-5)
    assert jaxgrad.diagnose(report).verdict == "stable"


def test_a_loss_of_the_model_and_two_arrays_is_refused_with_the_wrapper_to_use():
    """inspect, the recorder and the coordinate check call loss_fn(model, batch): a loss
    written loss_fn(model, x, y) is refused before any tracing, naming the wrapper; losses
    with defaults after the batch, and partials, are callable so and pass."""
    from jaxgrad import recording, scaling

    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    batch = (jnp.ones((2, 3)), jnp.ones((2, 1)))

    def loss3(model, x, y):
        return jnp.mean((model(x) - y) ** 2)

    def make(width, depth, rngs):
        return nnx.Linear(3, 1, rngs=rngs)

    attempts = {
        "inspect": lambda: inspect(model, loss3, batch),
        "Recorder": lambda: recording.Recorder(model, loss3, batch),
        "coord_check": lambda: scaling.coord_check(
            make, optax.sgd(0.1), [batch], widths=[4, 8], steps=1, loss_fn=loss3
        ),
    }
    for attempt in attempts.values():
        with pytest.raises(TypeError, match=r"loss3\(model, x, y\) is not\. .*lambda model, batch"):
            attempt()
    wrapped = inspect(model, lambda model, batch: loss3(model, *batch), batch)

    def with_default(model, batch, scale=1.0):
        return scale * loss3(model, *batch)

    np.testing.assert_allclose(inspect(model, with_default, batch).loss, wrapped.loss)
    partial = functools.partial(with_default, scale=2.0)
    np.testing.assert_allclose(inspect(model, partial, batch).loss, 2 * wrapped.loss, rtol=1e-6)

    @functools.wraps(loss3)  # an adapter that keeps loss3's name: its own signature counts
    def adapter(model, batch):
        return loss3(model, *batch)

    np.testing.assert_allclose(inspect(model, adapter, batch).loss, wrapped.loss)
