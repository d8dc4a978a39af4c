"""Tests for the training recorder, in the standard nnx.Optimizer loop with models a user
writes. References: `jaxgrad.inspect` on a copy of the model at the recorded step (itself
tested against jax.grad of hand-written models), numpy norms of the very updates and Adam
moments of a second optimizer stepped the same way, and hand-built faults (a log of a
negative number, a square root at zero behind a where, a layer whose weights grow)."""

import json
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from flax import nnx

import jaxgrad
from jaxgrad import optim, recording
from jaxgrad.recording import History, RunLog


class CNN(nnx.Module):
    def __init__(self, rngs):
        self.c1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.c2 = nnx.Conv(8, 8, (3, 3), rngs=rngs)
        self.head = nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.bn(self.c1(x)))
        h = jax.nn.relu(self.c2(h))
        return self.head(h.mean(axis=(1, 2)))


class ScannedConvs(nnx.Module):
    """Three convolutions stacked with nnx.vmap and applied with nnx.scan."""

    def __init__(self, rngs):
        @nnx.split_rngs(splits=3)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs):
            return nnx.Conv(3, 3, (3, 3), rngs=rngs)

        self.convs = make(rngs)
        self.head = nnx.Linear(3, 4, rngs=rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def body(h, conv):
            return jax.nn.relu(conv(h))

        return self.head(body(x, self.convs).mean(axis=(1, 2)))


def cross_entropy(model, batch):
    return optax.softmax_cross_entropy_with_integer_labels(model(batch[0]), batch[1]).mean()


def image_batch(seed=0):
    key = jax.random.key(seed)
    x = jax.random.normal(key, (16, 8, 8, 3))
    return x, jax.random.randint(jax.random.fold_in(key, 1), (16,), 0, 4)


def make_step(loss_fn):
    @nnx.jit
    def step(model, optimizer, recorder, batch):
        loss, grads = recorder.value_and_grad(model, batch)
        recorder.update(model, optimizer, optimizer.update(model, grads))
        return loss

    return step


def norms_by_row(history, tree, params_tree):
    """numpy norms of `tree` (shaped like the params) in the history's parameter rows."""
    flat = {
        ".".join(str(p) for p in path): np.asarray(v[...]) for path, v in nnx.to_flat_state(tree)
    }
    return np.array([np.linalg.norm(flat[name]) for name in history.param_names])


@pytest.mark.slow
def test_recorded_statistics_equal_independent_computations_at_the_recorded_steps():
    model, batch = CNN(nnx.Rngs(0)), image_batch()
    tx = optax.chain(optim.clip_by_global_norm(1.0), optax.adam(1e-2))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    recorder = recording.Recorder(model, cross_entropy, batch, every=3, capacity=8)
    step = make_step(cross_entropy)
    expected = {}
    for index in range(7):
        batch = image_batch(index)
        if index % 3 == 0:
            twin, twin_opt = nnx.clone(model), nnx.clone(optimizer)
            report = jaxgrad.inspect(twin, cross_entropy, batch)
            grads = nnx.grad(cross_entropy)(twin, batch)
            updates = twin_opt.update(twin, grads)
            adam = next(s for s in jax.tree.leaves(nnx.as_pure(twin_opt.opt_state),
                                               is_leaf=lambda s: hasattr(s, "mu"))
                    if hasattr(s, "mu"))  # fmt: skip
            expected[index] = (report, updates, adam)
        step(model, optimizer, recorder, batch)
    history = recorder.history()
    assert history.recorded_steps.tolist() == [0, 3, 6]
    assert history.steps["step"].tolist() == list(range(7))
    for row, step_index in enumerate(history.recorded_steps):
        report, updates, adam = expected[int(step_index)]
        assert history.module_names == report.module_names
        for field in ("in_std", "out_std", "out_grad_norm", "dead_frac"):
            np.testing.assert_allclose(
                history.modules[field][row], getattr(report.modules, field), rtol=1e-5, atol=1e-7
            )
        np.testing.assert_allclose(
            history.params["grad_norm"][row], report.params.grad_norm, rtol=1e-5
        )
        np.testing.assert_allclose(history.loss[row], report.loss, rtol=1e-6)
        # Adam normalizes the gradient: where it is rounding noise (c1's bias before batch
        # norm has a gradient of 1e-9), two float32 programs give different updates
        informative = np.asarray(report.params.grad_norm) > 1e-4 * float(
            np.max(report.params.grad_norm)
        )
        update_norms = norms_by_row(history, updates, None)
        weights = np.asarray(report.params.weight_norm, np.float64)
        safe = np.where(weights > 0, weights, 1.0)
        ratio = np.where(weights > 0, update_norms / safe, np.nan)  # nan: a zero weight
        measured = {
            "update_norm": update_norms,
            "update_ratio": ratio,
            "first_moment_norm": norms_by_row(history, adam.mu, None),
            "second_moment_norm": norms_by_row(history, adam.nu, None),
        }
        for field, expected_values in measured.items():
            np.testing.assert_allclose(
                history.params[field][row][informative],
                expected_values[informative],
                rtol=1e-5,
                err_msg=field,
            )
    frame = history.to_frame()
    assert set(frame["kind"]) == {"module", "param"}
    assert (
        frame[frame.kind == "module"].groupby("step").size().tolist()
        == [len(history.module_names) * 16] * 3
    )


def by_rank(adam_rank, other_rank):
    """Labels for optax.multi_transform: "adam" for the parameters of one rank. nnx.Optimizer
    initializes on Variables and updates on arrays; both give the same labels."""

    def labels(params):
        return jax.tree.map(
            lambda p: "adam" if jnp.ndim(p) == adam_rank else "sgd",
            params,
            is_leaf=lambda x: isinstance(x, nnx.Variable),
        )

    return labels


@pytest.mark.parametrize("partitioned", ["multi_transform", "muon"])
def test_moments_of_a_partitioned_optimizer_are_merged_from_its_partitions(partitioned):
    """optax.multi_transform and optax.contrib.muon keep each partition's moments with the
    other parameters masked: each parameter's moment norms are read from the partition that
    keeps them (numpy norms of that state), nan where none does (SGD; Muon keeps no second
    moment). They were nan for every parameter."""
    model = nnx.Sequential(
        nnx.Linear(6, 16, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(16, 4, rngs=nnx.Rngs(1))
    )
    if partitioned == "muon":
        tx = optax.contrib.muon(1e-2)
    else:
        tx = optax.multi_transform(
            {"adam": optax.adam(1e-2), "sgd": optax.sgd(1e-2)}, by_rank(2, 1)
        )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    batch = (jax.random.normal(jax.random.key(0), (16, 6)), jnp.arange(16) % 4)
    recorder = recording.Recorder(model, cross_entropy, batch, every=1, capacity=4)
    step = make_step(cross_entropy)
    for _ in range(2):
        step(model, optimizer, recorder, batch)
    history = recorder.history()
    states = nnx.as_pure(optimizer.opt_state).inner_states

    def kept(tree):  # numpy norms of one partition's moments, nan where it masks the parameter
        flat = {".".join(map(str, path)): v for path, v in nnx.to_flat_state(tree)}
        return np.array(
            [
                np.nan if isinstance(flat[n], optax.MaskedNode) else np.linalg.norm(flat[n])
                for n in history.param_names
            ]
        )

    adam = states["adam"].inner_state[0]
    first, second = kept(adam.mu), kept(adam.nu)
    if partitioned == "muon":  # muon keeps the matrices' momentum, no second moment
        first = np.where(np.isnan(first), kept(states["muon"].inner_state[0].mu), first)
    np.testing.assert_allclose(history.params["first_moment_norm"][-1], first, rtol=1e-5)
    np.testing.assert_allclose(history.params["second_moment_norm"][-1], second, rtol=1e-5)
    assert np.isfinite(first).sum() == (4 if partitioned == "muon" else 2)


def test_a_step_without_update_or_with_two_gradient_calls_is_refused():
    """value_and_grad opens a step and update closes it: a step that calls value_and_grad
    twice (accumulating gradients), a step after one that never called update, and an
    update with no value_and_grad are refused when traced, before anything runs (they
    shifted the recorded step numbers silently)."""
    model = nnx.Sequential(
        nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(8, 1, rngs=nnx.Rngs(1))
    )
    batch = jnp.ones((6, 4))

    def loss_fn(model, x):
        return jnp.mean(model(x) ** 2)

    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    recorder = recording.Recorder(model, loss_fn, batch, every=1, capacity=4)

    @nnx.jit
    def accumulating(model, optimizer, recorder, x):
        _, first = recorder.value_and_grad(model, x)
        recorder.value_and_grad(model, x)  # a second gradient in the same step
        recorder.update(model, optimizer, optimizer.update(model, first))

    @nnx.jit
    def no_update(model, recorder, x):
        return recorder.value_and_grad(model, x)[0]

    @nnx.jit
    def only_update(model, optimizer, recorder, x):
        grads = nnx.grad(loss_fn)(model, x)
        recorder.update(model, optimizer, optimizer.update(model, grads))

    with pytest.raises(ValueError, match="called again before recorder.update closed the step"):
        accumulating(model, optimizer, recorder, batch)
    fresh = recording.Recorder(model, loss_fn, batch, every=1, capacity=4)
    with pytest.raises(ValueError, match="closes a step that recorder.value_and_grad opened"):
        only_update(model, optimizer, fresh, batch)
    no_update(model, fresh, batch)  # the step stays open
    with pytest.raises(ValueError, match="or the one before did not call update"):
        make_step(loss_fn)(model, optimizer, fresh, batch)
    good = recording.Recorder(model, loss_fn, batch, every=1, capacity=4)
    for _ in range(3):
        make_step(loss_fn)(model, optimizer, good, batch)
    assert good.history().steps["step"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("form", ["static", "unconditional"])
def test_a_static_record_flag_records_the_same_rows_as_the_traced_schedule(form):
    """`record=` chosen in Python (two compiled programs, no conditional around the pass:
    what a CNN needs on a CPU), or the traced schedule with the instrumented pass run every
    step (`conditional_pass=False`, the default for a CNN on a CPU), gives the rows the
    traced schedule `every=2` with its pass in a conditional gives, at the same steps;
    anything but None/True/False is refused before tracing the model."""
    batch = image_batch()
    default = recording.Recorder(CNN(nnx.Rngs(0)), cross_entropy, batch, every=2)
    assert default.conditional_pass == (jax.default_backend() != "cpu")
    mlp = nnx.Sequential(nnx.Linear(4, 4, rngs=nnx.Rngs(0)), nnx.relu)
    assert recording.Recorder(mlp, mean_square, jnp.ones((2, 4)), every=2).conditional_pass
    # a convolution found inside a scanned stack too
    scanned = recording.Recorder(ScannedConvs(nnx.Rngs(0)), cross_entropy, batch, every=2)
    assert scanned.conditional_pass == (jax.default_backend() != "cpu")
    histories = []
    for static in (False, True):
        model = CNN(nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
        conditional = not static or form == "static"  # the reference: traced, conditional
        recorder = recording.Recorder(
            model, cross_entropy, batch, every=2, capacity=8, conditional_pass=conditional
        )

        @nnx.jit(static_argnames="record")
        def step(model, optimizer, recorder, batch, record=None):
            loss, grads = recorder.value_and_grad(model, batch, record=record)
            recorder.update(model, optimizer, optimizer.update(model, grads))
            return loss

        for index in range(4):
            record = (index % 2 == 0) if static and form == "static" else None
            step(model, optimizer, recorder, image_batch(index), record=record)
        histories.append(recorder.history())
    traced, static = histories
    assert static.recorded_steps.tolist() == traced.recorded_steps.tolist() == [0, 2]
    assert not static.steps_frame()["rerun"].any()
    for field in ("out_std", "out_grad_norm", "dead_frac"):
        np.testing.assert_allclose(static.modules[field], traced.modules[field], rtol=1e-5)
    # c1's bias, before batch norm, has a gradient of rounding noise (1e-9), which Adam
    # normalizes: two programs agree on it only to that noise
    grads = np.asarray(traced.params["grad_norm"])
    informative = grads > 1e-4 * grads.max()
    assert informative.sum() >= 12
    for field in ("grad_norm", "update_norm", "second_moment_norm"):
        np.testing.assert_allclose(
            np.asarray(static.params[field])[informative],
            np.asarray(traced.params[field])[informative],
            rtol=1e-5,
        )
    np.testing.assert_allclose(static.steps["grad_norm"], traced.steps["grad_norm"], rtol=1e-5)
    with pytest.raises(TypeError, match="record must be None"):
        recorder.value_and_grad(model, batch, record=jnp.bool_(True))
    with pytest.raises(TypeError, match="conditional_pass must be None"):
        recording.Recorder(model, cross_entropy, batch, conditional_pass="no")


@pytest.mark.slow
def test_no_transfer_to_the_host_between_steps():
    model, batch = CNN(nnx.Rngs(0)), image_batch()
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    recorder = recording.Recorder(model, cross_entropy, batch, every=2)
    step = make_step(cross_entropy)
    batch = jax.device_put(batch)
    step(model, optimizer, recorder, batch)  # compile
    with jax.transfer_guard("disallow"):
        for _ in range(4):
            step(model, optimizer, recorder, batch)
    assert recorder.history().recorded_steps.tolist() == [0, 2, 4]


@pytest.mark.slow
def test_every_optim_transform_and_a_guard_in_the_optimizer():
    model, batch = CNN(nnx.Rngs(0)), image_batch()
    chain = optax.chain(
        optim.clip_by_value(1.0),
        optim.clip_by_layer_norm(1.0),
        optim.adaptive_clip(0.1),
        optim.add_l1(1e-4),
        optim.monitor(optax.sgd(0.05, momentum=0.9), every=2),
        optim.l1_proximal(1e-4, 0.05),
        optim.max_norm(3.0),
    )
    optimizer = nnx.Optimizer(model, optim.guard(chain), wrt=nnx.Param)
    recorder = recording.Recorder(model, cross_entropy, batch)
    step = make_step(cross_entropy)
    for index in range(3):
        step(model, optimizer, recorder, image_batch(index))
    history = recorder.history()
    assert np.isfinite(history.params["update_norm"]).all()
    assert not history.steps_frame()["skipped"].any()
    assert int(optim.monitor_state(optimizer.opt_state).count) == 3


# ----------------------------------------------------------------------------- non-finite


class LogOf(nnx.Module):
    """log(x W): nan where x W < 0, in the forward pass."""

    def __init__(self, rngs):
        self.kernel = nnx.Param(jnp.ones((4, 4)))

    def __call__(self, x):
        return jnp.log(x @ self.kernel[...])


class SqrtAtZero(nnx.Module):
    """sqrt(relu(x W)) behind a where: finite forward, nan backward where x W = 0."""

    def __init__(self, rngs):
        self.kernel = nnx.Param(jnp.ones((4, 4)))

    def __call__(self, x):
        z = x @ self.kernel[...]
        return jnp.where(z > 0, jnp.sqrt(jnp.maximum(z, 0)), 0.0)


class LogOfW(LogOf):
    """LogOf with its weight called `w`, as a hand-written layer may call it."""

    def __init__(self, rngs):
        self.w = nnx.Param(jnp.ones((4, 4)))

    def __call__(self, x):
        return jnp.log(x @ self.w[...])


class Chain(nnx.Module):
    def __init__(self, middle, rngs):
        self.first = nnx.Linear(4, 4, rngs=rngs)
        self.middle = middle(rngs)
        self.last = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        return self.last(self.middle(self.first(x)))


def mean_square(model, x):
    return jnp.mean(model(x) ** 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("middle", "name", "direction", "statistic", "form"),
    [
        (LogOf, "middle", "forward", "output", "traced"),
        # middle's backward turns a finite gradient non-finite: measured at first's output
        (SqrtAtZero, "first", "backward", "dL/d(output)", "traced"),
        (SqrtAtZero, "first", "backward", "dL/d(output)", "static"),
        (LogOf, "middle", "forward", "output", "unconditional"),
    ],
)
def test_first_nonfinite_module_is_located_inside_the_compiled_step(
    middle, name, direction, statistic, form
):
    """Steps 0-3 are finite; at step 4 the inputs make `middle` fail. The recorder records
    every 100 steps, so step 4 is located by the instrumented pass run again in the step,
    whether the schedule is traced or chosen in Python (`record=`: the rerun row then has
    no update statistics, no conditional over the updates), or by the pass that runs every
    step (`conditional_pass=False`)."""
    static = form == "static"
    model = Chain(middle, nnx.Rngs(0))
    good = jnp.abs(jax.random.normal(jax.random.key(0), (8, 4))) + 1.0
    # first's output at these inputs: negative for log; zero for sqrt (a zero input row)
    if middle is LogOf:
        model.first.kernel.set_value(-jnp.eye(4))
        model.first.bias.set_value(jnp.zeros(4))
        good, bad = -good, good
    else:
        model.first.kernel.set_value(jnp.eye(4))
        model.first.bias.set_value(jnp.zeros(4))
        bad = good.at[0].set(0.0)
    optimizer = nnx.Optimizer(model, optax.sgd(1e-4), wrt=nnx.Param)
    recorder = recording.Recorder(
        model, mean_square, good, every=100, conditional_pass=form != "unconditional"
    )

    @nnx.jit(static_argnames="record")
    def step(model, optimizer, recorder, batch, record=None):
        loss, grads = recorder.value_and_grad(model, batch, record=record)
        recorder.update(model, optimizer, optimizer.update(model, grads))
        return loss

    for index in range(6):
        record = (index % 100 == 0) if static else None
        step(model, optimizer, recorder, bad if index == 4 else good, record=record)
    history = recorder.history()
    found = history.first_nonfinite()
    assert found == recording.NonFinite(4, name, direction, statistic)
    assert history.steps_frame().set_index("step").loc[4, "rerun"]
    assert history.recorded_steps.tolist()[:2] == [0, 4]  # and every step after a nan
    update_norm = np.asarray(history.params["update_norm"])
    assert np.isfinite(update_norm[0]).all()  # step 0: a scheduled recording
    if static:
        assert np.isnan(update_norm[1]).all()


def test_a_loss_that_overflows_from_finite_outputs_is_named_as_the_loss():
    """Every call's output finite, exp of it in the loss overflowing: the loss made the inf
    (not the parameter gradients it then poisons, nor the last call's output gradient)."""
    model = Chain(lambda rngs: nnx.Linear(4, 4, rngs=rngs), nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (8, 4))

    def exp_loss(model, x):
        return jnp.mean(jnp.exp(model(x)))

    optimizer = nnx.Optimizer(model, optax.sgd(1e-3), wrt=nnx.Param)
    recorder = recording.Recorder(model, exp_loss, x, every=1)
    step = make_step(exp_loss)
    for _ in range(2):
        step(model, optimizer, recorder, x)
    outputs = model(1e3 * x)  # what the loss is given at step 2
    step(model, optimizer, recorder, 1e3 * x)
    history = recorder.history()
    assert np.isfinite(np.asarray(outputs)).all()
    assert not np.isfinite(float(jnp.mean(jnp.exp(outputs))))
    assert history.first_nonfinite() == recording.NonFinite(2, None, "forward", "loss")


# ----------------------------------------------------------------------------- spikes


def test_a_loss_that_blows_up_in_the_first_steps_is_a_spike():
    """A learning rate far too large: the loss jumps from 0.53 to 1.4e7 at step 1. Within the
    warmup the norms are not judged (they move by orders of magnitude in a healthy start),
    the loss is, from step 1; its average does not adopt the blow-up (capped)."""
    losses = [0.53, 1.4e7, 1.7e9, 2e9, 2e9]
    norms = [1.0, 50.0, 3.0, 2.0, 2.0]  # a healthy start's jump, inside the warmup
    state, bits = jnp.zeros(6), []
    for step, (loss, norm) in enumerate(zip(losses, norms, strict=True)):
        onset, state = recording.recorder.spike_onsets(
            state, jnp.asarray(step), jnp.array([loss, norm, norm]),
            factor=10.0, decay=0.99, warmup=20,
        )  # fmt: skip
        bits.append(int(onset))
    assert bits == [0, 1, 0, 0, 0]  # the loss's bit, once, at the onset
    assert float(state[0] / (1 - 0.99**5)) < 1e4  # each value capped at 10x the average


def _accelerate(path_part, start, factor):
    """An optax transform multiplying the updates of the parameters under `path_part` by
    factor**(count - start) from update `start` on: one layer's steps grow."""

    def init(params):
        return optax.ScaleByScheduleState(count=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        scale = jnp.where(state.count >= start, factor ** (state.count - start), 1.0)

        def one(path, u):
            keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
            return u * scale if path_part == keys[: len(path_part)] else u

        updates = jax.tree_util.tree_map_with_path(one, updates)
        return updates, optax.ScaleByScheduleState(count=state.count + 1)

    return optax.GradientTransformation(init, update)


@pytest.mark.slow
def test_an_injected_spike_names_the_layer_that_moved_first(tmp_path):
    """From step 20 the updates of `convs.1` grow 1.6 times a step (a learning rate that
    runs away in one layer); the global update norm spikes a few steps later. The first
    statistic to move is convs.1's update norm, before the spike."""

    class Deep(nnx.Module):
        def __init__(self, rngs):
            self.convs = nnx.List(
                [nnx.Conv(3 if i == 0 else 8, 8, (3, 3), rngs=rngs) for i in range(3)]
            )
            self.head = nnx.Linear(8, 4, rngs=rngs)

        def __call__(self, x):
            for conv in self.convs:
                x = jax.nn.relu(conv(x))
            return self.head(x.mean(axis=(1, 2)))

    model, batch = Deep(nnx.Rngs(0)), image_batch()
    tx = optax.chain(optax.sgd(1e-3), _accelerate(["convs", 1], 20, 1.6))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    recorder = recording.Recorder(model, cross_entropy, batch, spike_warmup=10, spike_factor=5.0)
    step = make_step(cross_entropy)
    log = RunLog(tmp_path / "run")
    for index in range(32):
        step(model, optimizer, recorder, image_batch(index % 4))
        if index % 8 == 7:
            log.poll(recorder)
    history = recorder.history()
    spikes = history.spikes()
    assert spikes, "no spike was flagged"
    first = spikes[0]
    assert first.step > 20
    assert "update_norm" in first.statistics
    name, statistic, moved_at = first.first_mover
    assert name.startswith("convs.1")
    assert statistic == "update_norm"
    assert 20 < moved_at <= first.step
    dumped = json.loads((tmp_path / "run" / "spikes" / f"step-{first.step}.json").read_text())
    assert dumped["first_mover"] == [name, statistic, moved_at]
    rows = pd.read_parquet(tmp_path / "run" / "spikes" / f"step-{first.step}.parquet")
    assert rows["step"].max() == first.step


def test_guard_skips_are_recorded_never_silent():
    model, _batch = Chain(LogOf, nnx.Rngs(0)), None
    model.first.kernel.set_value(jnp.eye(4))
    model.first.bias.set_value(jnp.zeros(4))
    good = jnp.abs(jax.random.normal(jax.random.key(0), (8, 4))) + 1.0
    optimizer = nnx.Optimizer(model, optim.guard(optax.sgd(1e-3)), wrt=nnx.Param)
    recorder = recording.Recorder(model, mean_square, good, every=4)
    step = make_step(mean_square)
    for index in range(5):
        step(model, optimizer, recorder, -good if index == 2 else good)
    frame = recorder.history().steps_frame()
    assert frame["skipped"].tolist() == [False, False, True, False, False]
    guard = optim.guard_states(nnx.as_pure(optimizer.opt_state))["guard"]
    assert int(guard.skipped) == 1
    assert int(guard.last_skipped) == 2
    # read straight off the nnx.Optimizer too: arrays, not Variables (bool() works)
    direct = optim.guard_states(optimizer.opt_state)["guard"]
    assert bool(direct.nonfinite["middle/kernel"])
    assert isinstance(direct.skipped, jax.Array)
    assert int(direct.skipped) == 1
    assert np.isfinite(np.asarray(model.last.kernel[...])).all()  # the bad step was not applied


def test_a_smaller_last_batch_is_recorded_like_inspect_of_it():
    """A recorder built on batches of 16 records a last batch of 10 (a new layout for the new
    shapes, the same calls): its row equals `inspect` of the model before that step, on that
    batch. A batch that makes the loss record other calls is refused, naming both."""
    model = Chain(lambda rngs: nnx.Linear(4, 4, rngs=rngs), nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (26, 4))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    recorder = recording.Recorder(model, mean_square, x[:16], every=1)
    step = make_step(mean_square)
    step(model, optimizer, recorder, x[:16])
    before = nnx.clone(model)
    step(model, optimizer, recorder, x[16:])
    recorded = recorder.history().report(1)
    expected = jaxgrad.inspect(before, mean_square, x[16:])
    assert recorded.module_names == expected.module_names
    chex.assert_trees_all_close(
        (recorded.loss, recorded.modules, recorded.params),
        (expected.loss, expected.modules, expected.params),
        rtol=1e-5,
    )

    def skips_middle(model, x):  # other calls for a batch of other shapes
        h = model.first(x)
        return jnp.mean((model.last(h if x.shape[0] == 10 else model.middle(h))) ** 2)

    other = recording.Recorder(model, skips_middle, x[:16], every=1)
    with pytest.raises(ValueError, match=r"records other calls .* 3 calls then .* 2 now"):
        make_step(skips_middle)(model, optimizer, other, x[16:])


def test_a_guard_inside_multisteps_is_flagged_only_on_the_steps_it_skipped():
    """optax.MultiSteps calls its inner guard every 3rd step; a step counts as skipped only
    when the guard's count of skips grew over it (read off the optimizer after each step),
    not before the guard's first call, nor on the micro-steps after a skip."""
    model = Chain(lambda rngs: nnx.Linear(4, 4, rngs=rngs), nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (8, 4))
    tx = optax.MultiSteps(optim.guard(optax.sgd(1e-2)), every_k_schedule=3)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    recorder = recording.Recorder(model, mean_square, x, every=4)
    traces = []

    @nnx.jit
    def step(model, optimizer, recorder, batch):
        traces.append(1)
        loss, grads = recorder.value_and_grad(model, batch)
        recorder.update(model, optimizer, optimizer.update(model, grads))
        return loss

    counts = []
    for index in range(9):
        step(model, optimizer, recorder, x.at[0, 0].set(jnp.nan) if index == 4 else x)
        counts.append(int(next(iter(optim.guard_states(optimizer.opt_state).values())).skipped))
    expected = np.diff([0, *counts]) > 0
    assert expected.tolist()[:6] == [False] * 5 + [True]  # the NaN reaches the guard at step 5
    assert recorder.history().steps_frame()["skipped"].tolist() == expected.tolist()
    assert len(traces) == 1  # the recorder's graph is the same at every call: one trace


# ----------------------------------------------------------------------------- files


@pytest.mark.slow
def test_a_run_written_as_it_goes_resumes_without_gap_or_duplicate(tmp_path):
    """Steps 0-22 polled every 5 steps (the last poll at 20), then the run is lost; it
    resumes from a checkpoint at step 15 in a new RunLog on the same folder and runs to 30.
    Read back: every step once, 15-29 from the resumed run."""
    batch = image_batch()
    model = CNN(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.05), wrt=nnx.Param)
    recorder = recording.Recorder(
        model, cross_entropy, batch, every=2, capacity=8, step_capacity=16
    )
    step = make_step(cross_entropy)
    log = RunLog(tmp_path / "run")
    checkpoint = None
    for index in range(23):
        if index == 15:
            checkpoint = nnx.clone((model, optimizer, recorder))
        step(model, optimizer, recorder, image_batch(index))
        if (index + 1) % 5 == 0:
            log.poll(recorder)
    (tmp_path / "run" / "rows" / ".run0000-000009.parquet.123.tmp").write_bytes(b"torn")
    model, optimizer, recorder = checkpoint
    assert int(recorder.count[...]) == 15
    log = RunLog(tmp_path / "run")
    assert log.run == 1
    for index in range(15, 30):
        step(model, optimizer, recorder, image_batch(index))
        if (index + 1) % 5 == 0:
            log.poll(recorder)
    read = History.read(tmp_path / "run")
    assert read.steps["step"].tolist() == list(range(30))
    assert read.recorded_steps.tolist() == list(range(0, 30, 2))
    live = recorder.history()
    at = list(read.recorded_steps).index(int(live.recorded_steps[-1]))
    np.testing.assert_allclose(read.modules["out_std"][at], live.modules["out_std"][-1])
    assert read.module_names == live.module_names
    with pytest.raises(ValueError, match="holds no recorded run"):
        History.read(tmp_path / "nowhere")


def test_rows_overwritten_before_a_poll_are_not_lost_silently(tmp_path):
    """A recorder holding 2 rows, polled after 5 recorded steps: 3 rows were overwritten on
    the device, and the poll says so; polled in time, it says nothing (warnings are errors
    in this suite)."""
    model = Chain(lambda rngs: nnx.Linear(4, 4, rngs=rngs), nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (8, 4))
    optimizer = nnx.Optimizer(model, optax.sgd(1e-3), wrt=nnx.Param)
    step = make_step(mean_square)
    recorder = recording.Recorder(model, mean_square, x, every=1, capacity=2)
    log = RunLog(tmp_path / "late")
    for _ in range(5):
        step(model, optimizer, recorder, x)
    with pytest.warns(RuntimeWarning, match="3 recorded rows and 0 steps were overwritten"):
        log.poll(recorder)
    assert History.read(tmp_path / "late").recorded_steps.tolist() == [3, 4]
    for _ in range(2):
        step(model, optimizer, recorder, x)
        log.poll(recorder)
    assert History.read(tmp_path / "late").recorded_steps.tolist() == [3, 4, 5, 6]


def test_diagnose_of_a_run_and_bad_recorder_arguments():
    model, batch = CNN(nnx.Rngs(0)), image_batch()
    optimizer = nnx.Optimizer(model, optax.sgd(1e-9), wrt=nnx.Param)  # far too small
    recorder = recording.Recorder(model, cross_entropy, batch, every=2)
    step = make_step(cross_entropy)
    for index in range(6):
        step(model, optimizer, recorder, image_batch(index))
    result = jaxgrad.diagnose(recorder.history())
    stalled = next(f for f in result.findings if f.rule == "stalled")
    assert stalled.verdict == "vanishing"
    assert len(stalled.layers) == 3  # every kernel's updates stayed below 1e-6 of it
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        recording.Recorder(model, cross_entropy, batch, every=0)
    with pytest.raises(ValueError, match="every must be an int >= 1, got '2'"):
        recording.Recorder(model, cross_entropy, batch, every="2")
    expected = "Recorder(every=2, capacity=256, 4 calls, 8 parameter rows)"
    assert str(recorder) == repr(recorder) == expected
    with pytest.raises(ValueError, match="spike_factor must be > 1"):
        recording.Recorder(model, cross_entropy, batch, spike_factor=0.5)
    with pytest.raises(TypeError, match="model must be an nnx.Module"):
        recording.Recorder(cross_entropy, cross_entropy, batch)


@pytest.mark.parametrize("middle", [LogOf, LogOfW])
def test_diagnose_of_a_run_that_broke_says_where_and_when(middle):
    """The layer diagnose names is the one the history located, whatever the middle
    layer's weight is called (LogOfW's is `w`)."""
    model = Chain(middle, nnx.Rngs(0))
    model.first.kernel.set_value(-jnp.eye(4))
    model.first.bias.set_value(jnp.zeros(4))
    good = -(jnp.abs(jax.random.normal(jax.random.key(0), (8, 4))) + 1.0)
    optimizer = nnx.Optimizer(model, optim.guard(optax.sgd(1e-4)), wrt=nnx.Param)
    recorder = recording.Recorder(model, mean_square, good, every=2)
    step = make_step(mean_square)
    for index in range(6):
        step(model, optimizer, recorder, -good if index == 3 else good)
    result = jaxgrad.diagnose(recorder.history())
    assert result.verdict == "exploding"
    nonfinite = next(f for f in result.findings if f.rule == "nonfinite")
    assert nonfinite.message.startswith("at step 3 of the run")
    assert recorder.history().first_nonfinite().name == "middle"
    assert "from 'middle' (layer 2)" in nonfinite.message


def test_an_unrecorded_static_step_copies_no_parameter_and_leaves_the_gradients_exact():
    """Chosen in Python (`record=False`), an unrecorded step's program holds the conditional
    that measures a non-finite step again, which reads the parameters. Unless the gradients
    order it before the optimizer's in-place update, XLA copies every parameter on every
    step (the stacked kernels of an MLP: about 0.1 of its step on a CPU). The compiled step
    must copy no parameter-shaped array, and its gradients must equal nnx.value_and_grad's
    bit for bit."""
    model = jaxgrad.nn.MLP(12, 24, 5, 3, activation="tanh", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (8, 12))
    batch = (x, jax.random.randint(jax.random.key(1), (8,), 0, 3))
    recorder = recording.Recorder(model, cross_entropy, batch, every=16, check_every_step=False)
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer, recorder))

    def step(state):
        model, optimizer, recorder = nnx.merge(graphdef, state)
        _, grads = recorder.value_and_grad(model, batch, record=False)
        recorder.update(model, optimizer, optimizer.update(model, grads))
        return nnx.state((model, optimizer, recorder)), grads

    text = jax.jit(step, donate_argnums=0).lower(state).compile().as_text()
    entry = text[text.index("\nENTRY") :]
    inputs = set(re.findall(r"%(\S+) = \S+ parameter\(", entry))
    assert any("blocks" in name and "kernel" in name for name in inputs)  # read the names
    copied = set(re.findall(r"= (\S+) copy\(%([^)]+)\)", entry))
    copied_inputs = {name for _, name in copied if name in inputs}
    # state_0 is the model, state_1 the optimizer, state_2 the recorder (whose few small
    # counters XLA may copy)
    assert not any(name.startswith(("state_0", "state_1")) for name in copied_inputs)
    assert copied_inputs <= {name for name in inputs if name.startswith("state_2")}
    _, grads = jax.jit(step)(state)
    _, reference = nnx.value_and_grad(cross_entropy)(model, batch)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(reference), strict=True):
        np.testing.assert_array_equal(got, want)


def test_without_per_step_checks_finite_steps_are_not_measured_again():
    model, batch = CNN(nnx.Rngs(0)), image_batch()
    optimizer = nnx.Optimizer(model, optax.sgd(0.01), wrt=nnx.Param)
    recorder = recording.Recorder(
        model, cross_entropy, batch, every=10, check_every_step=False, conditional_pass=True
    )
    step = make_step(cross_entropy)
    for index in range(4):
        step(model, optimizer, recorder, image_batch(index))
    history = recorder.history()
    assert history.recorded_steps.tolist() == [0]
    frame = history.steps_frame()
    assert not frame["rerun"].any()
    assert frame["grad_norm"].isna().tolist() == [False, True, True, True]  # measured at 0


def test_debug_nans_hands_the_step_to_jax_debug_nans():
    """The recorder names the module; jax.debug_nans names the operation (the log)."""
    model = Chain(LogOf, nnx.Rngs(0))
    x = jnp.abs(jax.random.normal(jax.random.key(0), (8, 4))) + 1.0
    model.first.kernel.set_value(-jnp.eye(4))
    model.first.bias.set_value(jnp.zeros(4))
    error = recording.debug_nans(model, mean_square, x)
    assert isinstance(error, FloatingPointError)
    assert "log" in str(error)
    assert recording.debug_nans(model, mean_square, -x) is None
