"""Tests for jaxgrad.inspection: `inspect` against manual `nnx.grad` and manual forward passes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from flax import nnx

from jaxgrad.inspection import ModelReport, OutputStats, ParamStats, inspect

RTOL = 1e-5  # two float32 programs (inspect's and the reference's), compared in float64
ATOL = 1e-6


def numpy_normal(seed=0, gain=2.0):
    """He-scaled normal weights drawn by NumPy from a fixed seed: unlike `jax.random`, this
    compiles nothing per parameter shape, which keeps the tests fast on CPU."""
    rng = np.random.default_rng(seed)

    def init(key, shape, dtype=jnp.float32):
        del key
        fan_in = int(np.prod(shape[:-1]))
        return jnp.asarray(rng.standard_normal(shape) * np.sqrt(gain / fan_in), dtype)

    return init


# ----------------------------------------------------------------------------- models


class SmallCNN(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 8, (3, 3), kernel_init=numpy_normal(1), rngs=rngs)
        self.conv2 = nnx.Conv(8, 16, (3, 3), strides=2, kernel_init=numpy_normal(2), rngs=rngs)
        self.head = nnx.Linear(16, 10, kernel_init=numpy_normal(3), rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.conv1(x))
        h = nnx.relu(self.conv2(h))
        return self.head(h.mean(axis=(1, 2)))


class BatchNormNet(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(5, 6, kernel_init=numpy_normal(4), rngs=rngs)
        self.bn = nnx.BatchNorm(6, rngs=rngs)
        self.fc2 = nnx.Linear(6, 4, kernel_init=numpy_normal(5), rngs=rngs)

    def __call__(self, x):
        return self.fc2(nnx.relu(self.bn(self.fc1(x))))


class ReLU(nnx.Module):
    def __call__(self, x):
        return nnx.relu(x)


class Dense(nnx.Linear):
    """Inherits `__call__`: Flax's `capture(method_outputs=...)` alone would miss it."""


class DeadNet(nnx.Module):
    act = staticmethod(nnx.relu)  # a callable class attribute must not be disturbed

    def __init__(self, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(4, 8, kernel_init=numpy_normal(6), rngs=rngs)
        self.relu = ReLU()
        self.fc2 = Dense(8, 3, kernel_init=numpy_normal(7), rngs=rngs)  # zero bias by default
        self.unused = nnx.Linear(2, 2, kernel_init=numpy_normal(8), rngs=rngs)
        self.fc1.bias.set_value(jnp.full((8,), -100.0))  # every unit of fc1 + relu is dead

    def __call__(self, x):
        return self.fc2(self.relu(self.act(self.fc1(x))))


def cross_entropy(model, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def dict_cross_entropy(model, batch):
    return optax.softmax_cross_entropy_with_integer_labels(model(batch["x"]), batch["y"]).mean()


def image_batch(seed=0, n=6):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8, 8, 3), dtype=np.float32)
    return jnp.asarray(x), jnp.asarray(rng.integers(0, 10, n), jnp.int32)


def vector_batch(seed=0, n=8, features=5, classes=4):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features), dtype=np.float32)
    return jnp.asarray(x), jnp.asarray(rng.integers(0, classes, n), jnp.int32)


# ----------------------------------------------------------------------------- references


def path_str(parts):
    return ".".join(str(part) for part in parts)


def reference_params(model, loss_fn, batch):
    """Grad and weight norms in float64 from `nnx.grad` on a clone of the model."""
    grads = nnx.jit(nnx.grad(loss_fn))(nnx.clone(model), batch)
    weights = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    out = {}
    for path, grad in nnx.to_flat_state(grads):
        grad_norm = np.linalg.norm(np.asarray(grad.get_value(), np.float64))
        weight_norm = np.linalg.norm(np.asarray(weights[path].get_value(), np.float64))
        out[path_str(path)] = (grad_norm, weight_norm)
    return out


def reference_output(h):
    """Mean, std and dead fraction (units of the last axis all zero) in float64."""
    h = np.asarray(h, np.float64)
    dead = np.all(h.reshape(-1, h.shape[-1]) == 0, axis=0)
    return h.mean(), h.std(), dead.mean()


def expected_ratio(grad_norm, weight_norm):
    """The documented rule: grad / weight; inf at a zero weight, 0 if the gradient is 0 too."""
    if weight_norm == 0:
        return 0.0 if grad_norm == 0 else np.inf
    return grad_norm / weight_norm


def assert_param_stats(report, expected):
    assert list(report.params) == list(expected)
    for path, (grad_norm, weight_norm) in expected.items():
        stats = report.params[path]
        # atol: a gradient that is 0 in exact arithmetic (a bias before BatchNorm) is noise
        np.testing.assert_allclose(stats.grad_norm, grad_norm, rtol=RTOL, atol=ATOL, err_msg=path)
        np.testing.assert_allclose(stats.weight_norm, weight_norm, rtol=RTOL, err_msg=path)
        ratio = expected_ratio(grad_norm, weight_norm)
        np.testing.assert_allclose(stats.ratio, ratio, rtol=2 * RTOL, atol=ATOL, err_msg=path)
        assert int(stats.nonfinite) == 0


def assert_output_stats(report, expected):
    assert list(report.outputs) == list(expected)  # call order
    for path, h in expected.items():
        mean, std, dead_frac = reference_output(h)
        stats = report.outputs[path]
        np.testing.assert_allclose(stats.mean, mean, rtol=RTOL, atol=ATOL, err_msg=path)
        np.testing.assert_allclose(stats.std, std, rtol=RTOL, err_msg=path)
        np.testing.assert_allclose(stats.dead_frac, dead_frac, rtol=0, atol=0, err_msg=path)
        assert int(stats.nonfinite) == 0


# ----------------------------------------------------------------------------- tests


def test_cnn_matches_manual_grad_and_forward():
    model = SmallCNN(rngs=nnx.Rngs(0))
    # four dead output channels of conv2: dead_frac 4/16 over batch and spatial positions
    kernel = model.conv2.kernel.get_value()
    model.conv2.kernel.set_value(kernel.at[..., :4].set(0.0))
    x, y = image_batch()
    batch = (x, y)

    report = inspect(model, cross_entropy, batch)

    assert isinstance(report, ModelReport)
    assert set(report.params) == {
        f"{layer}.{name}" for layer in ("conv1", "conv2", "head") for name in ("kernel", "bias")
    }
    assert all(isinstance(stats, ParamStats) for stats in report.params.values())
    assert all(isinstance(stats, OutputStats) for stats in report.outputs.values())
    assert_param_stats(report, reference_params(model, cross_entropy, batch))
    h1 = model.conv1(x)
    h2 = model.conv2(nnx.relu(h1))
    logits = model.head(nnx.relu(h2).mean(axis=(1, 2)))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    np.testing.assert_allclose(report.loss, loss, rtol=RTOL)
    assert_output_stats(report, {"conv1": h1, "conv2": h2, "head": logits})
    assert float(report.outputs["conv2"].dead_frac) == 0.25


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm_model_matches_reference_and_is_unchanged(mode):
    model = BatchNormNet(rngs=nnx.Rngs(1))
    model.bn.mean.set_value(jnp.linspace(-0.5, 0.5, 6))
    model.bn.var.set_value(jnp.linspace(0.5, 2.0, 6))
    model.train() if mode == "train" else model.eval()
    batch = vector_batch()
    before = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model)))

    report = inspect(model, cross_entropy, batch, modules=(nnx.Linear, nnx.BatchNorm))

    after = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(model)))
    jax.tree.map(np.testing.assert_array_equal, before, after)  # params and BatchStats
    assert_param_stats(report, reference_params(model, cross_entropy, batch))
    reference = nnx.clone(model)
    h1 = reference.fc1(batch[0])
    h2 = reference.bn(h1)
    h3 = reference.fc2(nnx.relu(h2))
    assert_output_stats(report, {"fc1": h1, "bn": h2, "fc2": h3})
    if mode == "train":  # the same forward pass does move the statistics of a plain model
        assert not np.array_equal(reference.bn.mean.get_value(), before["bn"]["mean"])
        np.testing.assert_allclose(report.outputs["bn"].mean, 0.0, atol=1e-6)


def test_dead_units_ratio_guard_and_module_selection():
    model = DeadNet(rngs=nnx.Rngs(2))
    batch = vector_batch(features=4, classes=3)

    report = inspect(model, cross_entropy, batch)

    # default: Linear outputs, the Dense subclass included, the never-called `unused` omitted
    assert list(report.outputs) == ["fc1", "fc2"]
    assert float(report.outputs["fc1"].dead_frac) == 0.0  # pre-activation, not zero
    assert float(report.outputs["fc2"].dead_frac) == 1.0  # its input is all zero
    params = report.params
    assert float(params["fc1.kernel"].grad_norm) == 0.0
    assert float(params["fc1.kernel"].ratio) == 0.0
    assert float(params["fc2.bias"].weight_norm) == 0.0
    assert float(params["fc2.bias"].grad_norm) > 0.0
    assert float(params["fc2.bias"].ratio) == np.inf  # weight 0, gradient not
    assert float(params["unused.bias"].ratio) == 0.0  # weight 0 and gradient 0
    assert_param_stats(report, reference_params(model, cross_entropy, batch))

    chosen = inspect(model, cross_entropy, batch, modules=(ReLU, "fc2"))  # a type and a path
    assert list(chosen.outputs) == ["relu", "fc2"]
    assert float(chosen.outputs["relu"].dead_frac) == 1.0
    assert float(chosen.outputs["relu"].mean) == 0.0
    np.testing.assert_array_equal(chosen.outputs["fc2"], report.outputs["fc2"])
    assert inspect(model, cross_entropy, batch, modules=()).outputs == {}

    with pytest.raises(ValueError, match=r"unknown module path\(s\) \['fc3'\].*'fc1'"):
        inspect(model, cross_entropy, batch, modules=("fc1", "fc3"))
    with pytest.raises(ValueError, match="never called"):
        inspect(model, cross_entropy, batch, modules=("unused",))
    with pytest.raises(TypeError, match="got 3"):
        inspect(model, cross_entropy, batch, modules=("fc1", 3))
    assert DeadNet.act is nnx.relu  # the model's class is left as it was
    assert "__call__" not in Dense.__dict__


def test_shared_module_called_twice_has_one_entry_per_call():
    class Twice(nnx.Module):
        def __init__(self, *, rngs):
            self.fc = nnx.Linear(4, 4, kernel_init=numpy_normal(9), rngs=rngs)

        def __call__(self, x):
            return self.fc(nnx.relu(self.fc(x)))

    model = Twice(rngs=nnx.Rngs(3))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 4), dtype=np.float32))
    report = inspect(model, lambda m, x: jnp.sum(m(x) ** 2), x)
    first = model.fc(x)
    assert_output_stats(report, {"fc[0]": first, "fc[1]": model.fc(nnx.relu(first))})


def test_nonfinite_values_are_reported_not_raised():
    model = SmallCNN(rngs=nnx.Rngs(0))
    x, y = image_batch()
    report = inspect(model, cross_entropy, (x.at[0, 4, 4, 0].set(jnp.nan), y))

    assert np.isnan(report.loss)
    assert all(np.isnan(stats.grad_norm) for stats in report.params.values())
    assert all(np.isnan(stats.ratio) for stats in report.params.values())  # a 0 weight too
    assert all(int(stats.nonfinite) > 0 for stats in report.params.values())
    assert np.isnan(report.outputs["conv1"].mean)
    assert int(report.outputs["conv1"].nonfinite) == 9 * 8  # 3x3 neighbourhood, 8 channels
    assert report.first_nonfinite_output() == "conv1"
    frame = report.to_frame()
    assert frame.loc[frame["kind"] == "param", "grad_norm"].isna().all()

    kernel = model.conv2.kernel.get_value()
    model.conv2.kernel.set_value(kernel.at[0, 0, 0, 0].set(jnp.inf))
    report = inspect(model, cross_entropy, (x, y))
    assert int(report.outputs["conv1"].nonfinite) == 0
    assert report.first_nonfinite_output() == "conv2"
    assert np.isinf(report.params["conv2.kernel"].weight_norm)
    assert int(report.params["conv2.kernel"].nonfinite) >= 1


def test_second_call_does_not_retrace():
    traces = []

    def loss_fn(model, batch):  # the batch is a dict here: any pytree is passed through
        traces.append(1)  # runs only while tracing
        return dict_cross_entropy(model, batch)

    def batch(seed):
        x, y = vector_batch(seed=seed)
        return {"x": x, "y": y}

    model = BatchNormNet(rngs=nnx.Rngs(1))
    first = inspect(model, loss_fn, batch(0))
    x, y = vector_batch(seed=0)
    np.testing.assert_allclose(first.loss, cross_entropy(nnx.clone(model), (x, y)), rtol=RTOL)
    model.fc2.bias.set_value(model.fc2.bias.get_value() + 1.0)  # new values, same shapes
    second = inspect(model, loss_fn, batch(1))  # new batch, same shapes
    assert len(traces) == 1
    assert float(first.loss) != float(second.loss)
    model.eval()  # BatchNorm's mode is part of the graph: one new program
    inspect(model, loss_fn, batch(2))
    inspect(model, loss_fn, batch(3))
    model.train()
    inspect(model, loss_fn, batch(4))
    assert len(traces) == 2


def test_to_frame_rows_columns_and_values():
    model = SmallCNN(rngs=nnx.Rngs(0))
    report = inspect(model, cross_entropy, image_batch())
    frame = report.to_frame()

    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == [
        "kind",
        "path",
        "grad_norm",
        "weight_norm",
        "ratio",
        "mean",
        "std",
        "dead_frac",
        "nonfinite",
        "loss",
    ]
    assert list(frame["kind"]) == ["param"] * 6 + ["output"] * 3
    assert list(frame["path"]) == [*report.params, *report.outputs]
    assert frame["nonfinite"].dtype == np.int64
    params = frame[frame["kind"] == "param"].set_index("path")
    outputs = frame[frame["kind"] == "output"].set_index("path")
    for path, stats in report.params.items():
        for field in ("grad_norm", "weight_norm", "ratio", "nonfinite"):
            assert params.loc[path, field] == getattr(stats, field).item()
    for path, stats in report.outputs.items():
        for field in ("mean", "std", "dead_frac", "nonfinite"):
            assert outputs.loc[path, field] == getattr(stats, field).item()
    assert params[["mean", "std", "dead_frac"]].isna().all().all()
    assert outputs[["grad_norm", "weight_norm", "ratio"]].isna().all().all()
    assert (frame["loss"] == report.loss.item()).all()


def test_report_is_a_pytree_of_scalars():
    model = SmallCNN(rngs=nnx.Rngs(0))
    report = jax.device_get(inspect(model, cross_entropy, image_batch()))  # cached program
    leaves = jax.tree.leaves(report)
    assert len(leaves) == 1 + 4 * len(report.params) + 4 * len(report.outputs)
    assert all(np.shape(leaf) == () for leaf in leaves)


class UnhashableLoss:
    __hash__ = None

    def __call__(self, model, batch):
        return cross_entropy(model, batch)


def test_rejects_bad_arguments():
    model = BatchNormNet(rngs=nnx.Rngs(1))
    batch = vector_batch()
    with pytest.raises(TypeError, match=r"nnx\.Module, got dict"):
        inspect({"w": jnp.ones(3)}, cross_entropy, batch)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        inspect(model, "cross_entropy", batch)
    with pytest.raises(TypeError, match=r"scalar, got an array of shape \(8, 4\)"):
        inspect(model, lambda m, b: m(b[0]), batch)
    with pytest.raises(TypeError, match="hashable"):
        inspect(model, UnhashableLoss(), batch)
    with pytest.raises(TypeError, match="sequence"):
        inspect(model, cross_entropy, batch, modules=5)
