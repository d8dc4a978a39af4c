"""jaxgrad.train: the jitted loop against a hand-written Python loop, per-layer gradient norms
and the recorded per-layer view against jax.grad, layers in forward order, non-finite losses
recorded and located, train_many against separate runs, pre-training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxgrad
from jaxgrad import data, nn, train


@pytest.fixture(scope="module")
def task():
    """A linearly separable 4-class problem on 16 Gaussian features."""
    x = jax.random.normal(jax.random.key(10), (600, 16))
    w = jax.random.normal(jax.random.key(11), (16, 4))
    y = jnp.argmax(x @ w, axis=-1).astype(jnp.int32)
    return data.Dataset(x[:480], y[:480], x[480:], y[480:])


def small_mlp(seed=0, **kw):
    options = {"activation": "tanh", **kw}
    return nn.MLP(16, 24, 3, 4, rngs=nnx.Rngs(seed), **options)


def reference_loop(model, tx, dataset, steps, batch_size, key, seen=None):
    """Plain Python: one jax.grad per step on the documented minibatches. `seen`, a dict,
    collects each step's parameters (before the update), updates and logits."""
    graphdef, params = nnx.split(model)
    opt_state = tx.init(params)
    n = dataset.x_train.shape[0]
    losses, grads_seen = [], []
    seen = {} if seen is None else seen
    seen.update(params=[], updates=[], logits=[])

    @jax.jit
    def loss_and_grad(params, xb, yb):
        def loss_fn(params):
            logits = nnx.merge(graphdef, params)(xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        return jax.value_and_grad(loss_fn)(params)

    for batch in train.minibatches(key, steps, n, batch_size):
        loss, grads = loss_and_grad(params, dataset.x_train[batch], dataset.y_train[batch])
        updates, opt_state = jax.jit(tx.update)(grads, opt_state, params)
        seen["params"].append(params)
        seen["updates"].append(updates)
        seen["logits"].append(nnx.merge(graphdef, params)(dataset.x_train[batch]))
        params = optax.apply_updates(params, updates)
        losses.append(float(loss))
        grads_seen.append(grads)
    return np.array(losses), grads_seen, nnx.merge(graphdef, params)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_train_equals_python_loop(task, key, optimizer):
    tx = optax.sgd(0.1, momentum=0.9) if optimizer == "sgd" else optax.adam(1e-2)
    model, twin = small_mlp(), small_mlp()
    history = train.train(model, tx, task, steps=12, batch_size=32, key=key, eval_every=4)
    losses, grads, trained = reference_loop(twin, tx, task, 12, 32, key)
    np.testing.assert_allclose(history.loss, losses, rtol=2e-5, atol=1e-6)
    # per-layer gradient norms: input projection, 3 blocks, readout
    for step in (0, 7, 11):
        g = grads[step]
        expected = [
            jnp.linalg.norm(g["input_layer"]["kernel"][...]),
            *jnp.linalg.norm(g["blocks"]["linear"]["kernel"][...], axis=(1, 2)),
            jnp.linalg.norm(g["readout"]["kernel"][...]),
        ]
        np.testing.assert_allclose(history.layer_grad_norms[step], expected, rtol=1e-4)
        global_norm = np.sqrt(sum(np.sum(np.square(v)) for v in jax.tree.leaves(g)))
        np.testing.assert_allclose(history.grad_norm[step], global_norm, rtol=1e-4)
    np.testing.assert_allclose(
        model.readout.kernel[...], trained.readout.kernel[...], rtol=1e-4, atol=1e-6
    )
    # test-set evaluation of the final model, recomputed
    logits = trained(task.x_test)
    np.testing.assert_allclose(
        history.test_accuracy[-1], jnp.mean(jnp.argmax(logits, -1) == task.y_test), atol=1e-6
    )
    np.testing.assert_array_equal(history.eval_step, [0, 4, 8, 12])
    assert int(history.first_nonfinite_step) == -1


def test_minibatches_cover_every_example_once_per_epoch(key):
    batches = np.asarray(train.minibatches(key, steps=7, n_train=10, batch_size=4))
    assert batches.shape == (7, 4)
    stream = batches.reshape(-1)
    for epoch in range(2):  # 28 draws: two whole epochs of 10, then part of a third
        assert sorted(stream[10 * epoch : 10 * (epoch + 1)]) == list(range(10))
    assert len(set(stream[20:])) == 8
    again = np.asarray(train.minibatches(key, steps=7, n_train=10, batch_size=4))
    np.testing.assert_array_equal(batches, again)


@pytest.mark.slow
def test_history_does_not_depend_on_eval_every(task, key):
    a = train.train(small_mlp(), optax.sgd(0.05), task, steps=10, key=key, eval_every=2)
    b = train.train(small_mlp(), optax.sgd(0.05), task, steps=10, key=key)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6)
    np.testing.assert_allclose(a.test_loss[jnp.array([0, -1])], b.test_loss, rtol=1e-6)


@pytest.mark.slow
def test_trainer_learns_an_easy_task(task, key):
    model = small_mlp(activation="relu", kernel_init=None)
    history = train.train(
        model, optax.adam(1e-2), task, steps=300, batch_size=64, key=key, eval_every=100
    )
    # a separable 4-class task: a 3-layer ReLU net with Adam gets above 85% on held-out data
    assert float(history.test_accuracy[-1]) > 0.85
    assert float(history.test_accuracy[0]) < 0.5
    assert float(history.loss[-20:].mean()) < 0.3 * float(history.loss[:20].mean())


@pytest.mark.slow
def test_nonfinite_loss_is_recorded_not_raised(task, key):
    model = small_mlp(activation="relu", kernel_init=None)
    history = train.train(
        model, optax.sgd(1e4), task, steps=30, key=key, eval_every=10, record_every=10
    )
    bad = np.flatnonzero(~np.isfinite(np.asarray(history.loss)) | ~np.isfinite(history.grad_norm))
    assert bad.size > 0
    assert int(history.first_nonfinite_step) == bad[0]
    # the first non-finite step is measured whatever the schedule, and located
    first = history.recording().first_nonfinite()
    assert first is not None
    assert first.step == bad[0]
    assert history.recorded[bad[0]]
    assert history.rerun[bad[0]] == (bad[0] % 10 != 0)
    assert first.name in history.recording().module_names + history.recording().param_names
    # predictions that are nan count as wrong
    assert float(history.test_accuracy[-1]) == 0.0


@pytest.mark.slow
def test_regression_targets_use_mean_squared_error(key):
    x = jax.random.normal(key, (200, 16))
    y = jnp.sin(x[:, :1])
    regression = data.Dataset(x[:160], y[:160], x[160:], y[160:])
    model = nn.MLP(16, 16, 2, 1, rngs=nnx.Rngs(0))
    expected = jnp.mean(jnp.square(model(regression.x_test) - regression.y_test))
    history = train.train(model, optax.adam(1e-2), regression, steps=100, key=key)
    np.testing.assert_allclose(history.test_loss[0], expected, rtol=1e-5)
    assert np.isnan(history.accuracy).all()
    assert float(history.test_loss[-1]) < 0.5 * float(history.test_loss[0])


@pytest.mark.slow
def test_batch_norm_statistics_update_and_evaluation_uses_them(task, key):
    model = small_mlp(norm="batch")
    before = model.blocks.norm.mean[...]
    history = train.train(model, optax.sgd(0.1), task, steps=20, key=key)
    after = model.blocks.norm.mean[...]
    assert not np.allclose(before, after)
    model.eval()
    logits = model(task.x_test)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, task.y_test).mean()
    np.testing.assert_allclose(history.test_loss[-1], loss, rtol=1e-5)


@pytest.mark.slow
def test_randomized_activation_advances_its_stream(task, key):
    """Random state other than parameters (RReLU's stream) is carried through the loop."""
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(
        nnx.Linear(16, 24, rngs=rngs), nn.RReLU(rngs=rngs), nnx.Linear(24, 4, rngs=rngs)
    )
    count = model.layers[1].rngs.count[...]
    history = train.train(model, optax.sgd(0.05), task, steps=5, key=key)
    assert np.isfinite(history.loss).all()
    assert int(model.layers[1].rngs.count[...]) == int(count) + 5 + 0
    assert train.layer_names(model, task.x_train[:1]) == ["layers.0", "layers.2"]
    assert history.layer_names == ("layers.0", "layers.2")


@pytest.mark.slow
def test_second_call_does_not_recompile(task, key):
    tx = optax.sgd(0.05)
    train.train(small_mlp(), tx, task, steps=4, key=key)
    size = train._fit_jit._cache_size()
    train.train(small_mlp(seed=1), tx, task, steps=4, key=jax.random.key(5))
    assert train._fit_jit._cache_size() == size


def test_layer_names(task):
    assert train.layer_names(small_mlp()) == [
        "input_layer",
        "blocks[0].linear",
        "blocks[1].linear",
        "blocks[2].linear",
        "readout",
    ]
    linear = nnx.Linear(16, 4, rngs=nnx.Rngs(0))
    assert train.layer_names(linear, jnp.ones((1, 16))) == ["kernel"]
    with pytest.raises(TypeError, match="layer_names needs x, an example input batch"):
        train.layer_names(linear)
    # jaxgrad's RNN uses its recurrent kernel without calling its module: it comes last
    rnn = nn.RNN(2, 8, out_features=1, rngs=nnx.Rngs(0))
    assert train.layer_names(rnn) == ["input_layer", "readout", "recurrent"]
    # a hand-written layer's weight need not be called kernel: its matrix is the weight
    hand_written = nnx.Sequential(DenseW(16, 8), nnx.LayerNorm(8, rngs=nnx.Rngs(0)), DenseW(8, 4))
    assert train.layer_names(hand_written, jnp.ones((1, 16))) == ["layers.0", "layers.2"]


class DenseW(nnx.Module):
    def __init__(self, fan_in, fan_out):
        self.w = nnx.Param(jnp.ones((fan_in, fan_out)) / fan_in)
        self.b = nnx.Param(jnp.zeros(fan_out))

    def __call__(self, x):
        return x @ self.w[...] + self.b[...][None, :]


class StemConvsHead(nnx.Module):
    """Attributes whose names sort unlike the calls: alphabetically `convs.10` comes before
    `convs.2`, and `head` before `stem`."""

    def __init__(self, rngs):
        self.stem = nnx.Linear(16, 8, rngs=rngs)
        self.convs = nnx.List([nnx.Linear(8, 8, rngs=rngs) for _ in range(11)])
        self.head = nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, x):
        x = jnp.tanh(self.stem(x))
        for conv in self.convs:
            x = jnp.tanh(conv(x))
        return self.head(x)


@pytest.mark.slow
def test_layers_are_in_forward_order(task, key):
    forward = ["stem", *[f"convs.{i}" for i in range(11)], "head"]
    assert sorted(forward) != forward
    assert train.layer_names(StemConvsHead(nnx.Rngs(0)), task.x_train[:3]) == forward
    model, twin = StemConvsHead(nnx.Rngs(0)), StemConvsHead(nnx.Rngs(0))
    tx = optax.sgd(0.1)
    history = train.train(model, tx, task, steps=3, batch_size=32, key=key, record_every=2)
    assert history.layer_names == tuple(forward)
    _, grads, _ = reference_loop(twin, tx, task, 3, 32, key)
    for step in range(3):
        g = grads[step]
        expected = [
            jnp.linalg.norm(g["stem"]["kernel"][...]),
            *[jnp.linalg.norm(g["convs"][i]["kernel"][...]) for i in range(11)],
            jnp.linalg.norm(g["head"]["kernel"][...]),
        ]
        np.testing.assert_allclose(history.layer_grad_norms[step], expected, rtol=1e-4)
    frame = history.to_frame()
    kernels = frame[(frame.statistic == "grad_norm") & frame.name.str.endswith(".kernel")]
    kernels = kernels[kernels.step == 2].sort_values("order")
    assert [name.removesuffix(".kernel") for name in kernels.name] == forward
    np.testing.assert_allclose(kernels.value, history.layer_grad_norms[2], rtol=1e-6)


def _reference_slice(tree, name):
    """The entry of a parameter-shaped tree for a row name such as "blocks[1].linear.kernel"
    (layer 1 of the stacked blocks)."""
    node, layer = tree, None
    for part in name.split("."):
        if part.endswith("]"):
            part, layer = part[:-1].split("[")
        node = node[part]
    value = node[...] if isinstance(node, nnx.Variable) else node
    return value if layer is None else value[int(layer)]


@pytest.fixture(scope="module")
def recorded_run(task):
    """12 steps of SGD with momentum, the per-layer view recorded at steps 0, 4 and 8, and
    the same training unrolled in Python."""
    tx = optax.sgd(0.05, momentum=0.9)
    key = jax.random.key(3)
    history = train.train(
        small_mlp(), tx, task, steps=12, batch_size=32, key=key, eval_every=4, record_every=4
    )
    seen = {}
    losses, grads, _ = reference_loop(small_mlp(), tx, task, 12, 32, key, seen)
    return history, losses, grads, seen


@pytest.mark.slow
def test_recorded_view_equals_an_unrolled_loop(recorded_run):
    """The rows train records (with the Recorder's functions) against jax.grad, the updates
    and the logits of a Python loop, at the recorded steps."""
    history, losses, grads, seen = recorded_run
    np.testing.assert_array_equal(np.flatnonzero(history.recorded), [0, 4, 8])
    run = history.recording()
    np.testing.assert_array_equal(run.recorded_steps, [0, 4, 8])
    np.testing.assert_allclose(run.loss, losses[[0, 4, 8]], rtol=2e-5)
    assert run.param_names[:2] == ("input_layer.bias", "input_layer.kernel")
    assert run.param_names[-1] == "readout.kernel"
    for row, step in enumerate((0, 4, 8)):
        for column, name in enumerate(run.param_names):
            grad = _reference_slice(grads[step], name)
            weight = _reference_slice(seen["params"][step], name)
            update = _reference_slice(seen["updates"][step], name)
            expected = {
                "grad_norm": jnp.linalg.norm(grad),
                "weight_norm": jnp.linalg.norm(weight),
                "update_norm": jnp.linalg.norm(update),
            }
            for statistic, value in expected.items():
                np.testing.assert_allclose(
                    run.params[statistic][row, column], value, rtol=1e-4, atol=1e-7,
                    err_msg=f"{statistic} of {name} at step {step}",
                )  # fmt: skip
        readout = run.module_names.index("readout")
        logits = seen["logits"][step]
        np.testing.assert_allclose(run.modules["out_std"][row, readout], jnp.std(logits), rtol=1e-4)
        np.testing.assert_allclose(
            history.layer_grad_norms[step],
            run.params["grad_norm"][row, list(history.layers.layers)],
            rtol=1e-6,
        )
    # the per-step global update norm, every step
    for step in range(12):
        norm = np.sqrt(sum(np.sum(np.square(u)) for u in jax.tree.leaves(seen["updates"][step])))
        np.testing.assert_allclose(history.update_norm[step], norm, rtol=1e-4)


def test_diagnose_reads_the_training_history(recorded_run):
    history = recorded_run[0]
    verdict = jaxgrad.diagnose(history)
    assert str(verdict) == str(jaxgrad.diagnose(history.recording()))
    assert history.profile().names == history.layer_names
    assert {"stalled", "died"} <= {finding.rule for finding in verdict.findings}


def scaled_mlp(key, sigma_w2):
    model = nn.MLP(16, 24, 3, 4, activation="tanh", rngs=nnx.Rngs(key))
    model.blocks.linear.kernel[...] = model.blocks.linear.kernel[...] * jnp.sqrt(sigma_w2)
    return model


GRID = {"sigma_w2": [1.0, 3.0], "learning_rate": [0.02, 0.2]}
MANY = {"seeds": [0, 7], "hyperparams": GRID, "steps": 16, "batch_size": 32, "eval_every": 8}
MANY_RECORDED = {**MANY, "record_every": 4}


def momentum(learning_rate):
    return optax.sgd(learning_rate, momentum=0.9)


@pytest.fixture(scope="module")
def many(task):
    return train.train_many(scaled_mlp, momentum, task, **MANY_RECORDED)


@pytest.mark.slow
def test_train_many_equals_separate_runs(task, many):
    history, grid = many
    assert grid.shape == (2, 2, 2)
    assert history.loss.shape == (2, 2, 2, 16)
    assert history.layer_grad_norms.shape == (2, 2, 2, 16, 5)
    assert history.grid_shape == (2, 2, 2)
    with pytest.raises(ValueError, match=r"grid of runs with leading axes \(2, 2, 2\)"):
        history.recording()
    optimizers = {lr: momentum(lr) for lr in GRID["learning_rate"]}
    for i, seed in enumerate(MANY["seeds"]):
        for j, sigma_w2 in enumerate(GRID["sigma_w2"]):
            for k, lr in enumerate(GRID["learning_rate"]):
                flat = np.ravel_multi_index((i, j, k), grid.shape)
                assert grid.seeds[flat] == seed
                assert grid.hyperparams["learning_rate"][flat] == np.float32(lr)
                seed_key = jax.random.key(seed)
                alone = train.train(
                    scaled_mlp(seed_key, sigma_w2),
                    optimizers[lr],
                    task,
                    steps=16,
                    batch_size=32,
                    eval_every=8,
                    key=jax.random.fold_in(seed_key, 1),
                    record_every=4,
                )
                for field in ("loss", "layer_grad_norms", "update_norm", "test_accuracy"):
                    np.testing.assert_allclose(
                        getattr(history, field)[i, j, k],
                        getattr(alone, field),
                        rtol=1e-4,
                        atol=1e-6,
                        err_msg=field,
                    )
                # the recorded per-layer view, one run of the grid against the run alone
                one, single = history[i, j, k].recording(), alone.recording()
                np.testing.assert_array_equal(one.recorded_steps, single.recorded_steps)
                for field in ("grad_norm", "update_ratio"):
                    np.testing.assert_allclose(
                        one.params[field], single.params[field], rtol=1e-4, atol=1e-7
                    )
                np.testing.assert_allclose(
                    one.modules["out_std"], single.modules["out_std"], rtol=1e-4
                )


@pytest.mark.slow
def test_train_many_chunked_equals_unchunked(task, many):
    """Chunked, and without the recorded view (train_many's default): the same training."""
    chunked, _ = train.train_many(scaled_mlp, momentum, task, chunk_size=3, **MANY)
    np.testing.assert_allclose(many[0].loss, chunked.loss, rtol=1e-5)
    np.testing.assert_allclose(many[0].test_accuracy, chunked.test_accuracy, atol=1e-6)
    np.testing.assert_allclose(many[0].layer_grad_norms, chunked.layer_grad_norms, rtol=1e-5)
    assert not chunked.recorded.any()
    with pytest.raises(ValueError, match="recorded no per-layer view"):
        chunked[0, 0, 0].recording()


@pytest.mark.slow
def test_pretrain_layerwise(key):
    x = jax.random.uniform(key, (256, 12))
    model = nn.MLP(12, 16, 4, 3, activation="sigmoid", rngs=nnx.Rngs(0))
    readout = model.readout.kernel[...]
    first = model.blocks.linear.kernel[...]
    report = train.pretrain_layerwise(
        model, x, key=key, steps=150, batch_size=64, learning_rate=1e-2
    )
    assert report.block_loss.shape == (4, 150)
    assert report.input_loss.shape == (150,)
    # every layer learned to reconstruct its input
    start, end = report.block_loss[:, :10].mean(1), report.block_loss[:, -10:].mean(1)
    assert np.all(end < 0.5 * start), (start, end)
    assert float(report.input_loss[-10:].mean()) < 0.5 * float(report.input_loss[:10].mean())
    assert not np.allclose(model.blocks.linear.kernel[...], first)
    np.testing.assert_array_equal(model.readout.kernel[...], readout)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps must be an int >= 1, got 0"),
        ({"steps": 10, "batch_size": 10_000}, "batch_size must be <= the 480"),
        ({"steps": 10, "eval_every": 3}, r"eval_every must divide steps \(10\), got 3"),
        ({"steps": 2.5}, "steps must be an int"),
    ],
)
def test_bad_schedule(task, key, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train.train(small_mlp(), optax.sgd(0.1), task, key=key, **kwargs)


def test_bad_data(key):
    with pytest.raises(TypeError, match="x_train, y_train, x_test, y_test"):
        train.train(small_mlp(), optax.sgd(0.1), {"x": 1}, steps=1, key=key)
    x = jnp.zeros((8, 16))
    with pytest.raises(ValueError, match="same non-zero number of examples, got 8 and 7"):
        train.train(
            small_mlp(),
            optax.sgd(0.1),
            data.Dataset(x, jnp.zeros(7, jnp.int32), x, jnp.zeros(8, jnp.int32)),
            steps=1,
            key=key,
        )


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (
            -1,
            r"y_train holds the label -1, but the model outputs 4 logits, so labels must be in "
            r"\[0, 3\]",
        ),
        (7, r"y_train holds the label 7, but the model outputs 4 logits"),
    ],
)
def test_labels_outside_the_logits_are_refused_before_compiling(task, key, labels, match):
    """optax's cross entropy takes label -1 as the last class and gives nan for 7 of 4."""
    y_train = task.y_train.at[5].set(labels)
    bad = data.Dataset(task.x_train, y_train, task.x_test, task.y_test)
    with pytest.raises(ValueError, match=match):
        train.train(small_mlp(), optax.sgd(0.1), bad, steps=1, key=key)
    with pytest.raises(ValueError, match=match):
        train.train_many(small_mlp, lambda: optax.sgd(0.1), bad, seeds=[0], steps=1)


def test_bad_targets_model_and_optimizer(task, key):
    x = task.x_train
    wrong_width = data.Dataset(x, jnp.zeros((480, 3)), task.x_test, jnp.zeros((120, 3)))
    with pytest.raises(ValueError, match=r"the model outputs \(4,\) per example, y_train holds"):
        train.train(small_mlp(), optax.sgd(0.1), wrong_width, steps=1, key=key)
    text = data.Dataset(x, np.array(["a"] * 480), task.x_test, np.array(["a"] * 120))
    with pytest.raises(TypeError, match="y_train must be a numeric array .* got <U1"):
        train.train(small_mlp(), optax.sgd(0.1), text, steps=1, key=key)
    with pytest.raises(TypeError, match="tx must be an optax.GradientTransformation"):
        train.train(small_mlp(), None, task, steps=1, key=key)
    with pytest.raises(TypeError, match="model must be a Flax NNX module, got function"):
        train.train(small_mlp, optax.sgd(0.1), task, steps=1, key=key)
    with pytest.raises(TypeError, match="key must be one PRNG key"):
        train.train(small_mlp(), optax.sgd(0.1), task, steps=1, key=0)
    with pytest.raises(
        ValueError, match=r"cannot be applied to the data's inputs of shape \(16,\)"
    ):
        train.train(nn.MLP(5, 8, 2, 4, rngs=nnx.Rngs(0)), optax.sgd(0.1), task, steps=1, key=key)


def test_bad_grid(task):
    with pytest.raises(ValueError, match="seeds must be a non-empty sequence of ints"):
        train.train_many(small_mlp, optax.sgd, task, seeds=[], steps=1)
    with pytest.raises(ValueError, match=r"hyperparams\['learning_rate'\] must be"):
        train.train_many(
            small_mlp, optax.sgd, task, seeds=[0], hyperparams={"learning_rate": [np.nan]}, steps=1
        )
    with pytest.raises(ValueError, match=r"hyperparams\['learning_rate'\] must be"):
        train.train_many(
            small_mlp, optax.sgd, task, seeds=[0], hyperparams={"learning_rate": []}, steps=1
        )


def test_pretrain_rejects_normalized_models(key):
    with pytest.raises(ValueError, match="norm=None, residual=False"):
        train.pretrain_layerwise(small_mlp(norm="batch"), jnp.zeros((8, 16)), key=key)
    with pytest.raises(TypeError, match="takes a jaxgrad.nn.MLP"):
        train.pretrain_layerwise(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), jnp.zeros((8, 2)), key=key)
