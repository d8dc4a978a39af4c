"""Tests of jaxgrad.scaling: the coordinate check against a hand-written training loop, the
vmapped seeds against separate runs, slopes on constructed cases with known exponents, and the
muP / depth-muP tables against the papers' formulas."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from flax import nnx

import jaxgrad
from jaxgrad import init as jinit
from jaxgrad import nn as jnn
from jaxgrad import scaling
from jaxgrad.scaling import coord as coord_module
from jaxgrad.scaling import mup as mup_module
from jaxgrad.scaling.coord import CoordCheck, CoordPoint

IN, OUT = 5, 3


def make_mlp(width, depth, rngs):
    """A 2-layer MLP: Linear -> relu -> Linear."""
    return nnx.Sequential(
        nnx.Linear(IN, width, rngs=rngs), nnx.relu, nnx.Linear(width, OUT, rngs=rngs)
    )


def mse(model, batch):
    x, y = batch
    return jnp.mean((model(x) - y) ** 2)


def batch_list(steps, size=6, seed=1):
    keys = jax.random.split(jax.random.key(seed), steps)
    return [
        (jax.random.normal(k, (size, IN)), jax.random.normal(jax.random.fold_in(k, 1), (size, OUT)))
        for k in keys
    ]


def hand_loop(width, seed, optimizer, batches, steps):
    """The statistics written out by hand: jax.grad and optax.update on a dict of arrays,
    the statistics in float64 numpy."""
    model = make_mlp(width, None, nnx.Rngs(jax.random.key(seed)))
    params = {
        "w1": model.layers[0].kernel.get_value(),
        "b1": model.layers[0].bias.get_value(),
        "w2": model.layers[2].kernel.get_value(),
        "b2": model.layers[2].bias.get_value(),
    }

    def forward(params, x):
        h = x @ params["w1"] + params["b1"][None, :]
        return h, jax.nn.relu(h) @ params["w2"] + params["b2"][None, :]

    def loss(params, batch):
        return jnp.mean((forward(params, batch[0])[1] - batch[1]) ** 2)

    initial = params
    state = optimizer.init(params)
    module_rows, param_rows, losses = [], [], []
    for t in range(steps):
        batch = batches[t]
        losses.append(float(loss(params, batch)))
        outputs = [np.asarray(o, np.float64) for o in forward(params, batch[0])]
        outputs0 = [np.asarray(o, np.float64) for o in forward(initial, batch[0])]
        module_rows.append(
            [
                [np.mean(np.abs(o)), np.sqrt(np.mean(o**2)), np.mean(np.abs(o - o0))]
                for o, o0 in zip(outputs, outputs0, strict=True)
            ]
        )
        grads = jax.grad(loss)(params, batch)
        updates, state = optimizer.update(grads, state, params)
        row = []
        for name in ("b1", "w1", "b2", "w2"):  # forward order: a layer's bias, then kernel
            g, u, w = (np.asarray(tree[name], np.float64) for tree in (grads, updates, params))
            rms = lambda a: np.sqrt(np.mean(a**2))
            ratio = rms(u) / rms(w) if rms(w) > 0 else np.nan
            row.append([rms(g), rms(u), ratio])
        param_rows.append(row)
        params = optax.apply_updates(params, updates)
    return np.array(losses), np.array(module_rows), np.array(param_rows)


@pytest.mark.parametrize("optimizer", [optax.sgd(0.1), optax.adam(0.05)], ids=["sgd", "adam"])
def test_statistics_match_a_hand_written_loop(optimizer):
    steps, widths, seeds = 3, (8,), (0, 4)
    batches = batch_list(steps)
    check = scaling.coord_check(
        make_mlp, optimizer, batches, widths=widths, seeds=seeds, steps=steps, loss_fn=mse
    )
    for width in widths:
        point = check.point(width)
        assert point.layers == ("layers.0", "layers.2")
        assert point.params == (
            "layers.0.bias",
            "layers.0.kernel",
            "layers.2.bias",
            "layers.2.kernel",
        )
        for index, seed in enumerate(seeds):
            loss, modules, params = hand_loop(width, seed, optimizer, batches, steps)
            np.testing.assert_allclose(point.loss[index], loss, rtol=1e-5)
            np.testing.assert_allclose(point.modules[index], modules, rtol=2e-5, atol=1e-7)
            np.testing.assert_allclose(point.param_values[index], params, rtol=2e-5, atol=1e-9)
    # step 0 is the initialization: no change yet; the biases start at zero (ratio nan)
    assert np.all(check.point(8).modules[:, 0, :, 2] == 0)
    assert np.all(np.isnan(check.point(8).param_values[:, :1, [0, 2], 2]))


def test_vmapped_seeds_equal_separate_runs():
    batches = batch_list(2)
    together = scaling.coord_check(
        make_mlp, optax.adam(0.01), batches, widths=[8], seeds=[3, 1], steps=2, loss_fn=mse
    )
    for index, seed in enumerate([3, 1]):
        alone = scaling.coord_check(
            make_mlp, optax.adam(0.01), batches, widths=[8], seeds=[seed], steps=2, loss_fn=mse
        )
        a, b = together.point(8), alone.point(8)
        np.testing.assert_allclose(a.modules[index], b.modules[0], rtol=1e-6)
        np.testing.assert_allclose(a.param_values[index], b.param_values[0], rtol=1e-6)
        np.testing.assert_allclose(a.loss[index], b.loss[0], rtol=1e-6)


def test_vmapped_learning_rates_equal_separate_checks_in_one_program_per_shape(tmp_path):
    """coord_checks trains every learning rate and seed of a width in one program; each
    rate's check equals coord_check with optimizer(rate) (the rate arrives as float32), and a
    results folder reads every rate back bit for bit."""
    batches = batch_list(2)
    rates = [0.003, 0.03, 0.3]
    before = coord_module._program._cache_size()
    checks = scaling.coord_checks(
        make_mlp, optax.adam, batches, learning_rates=rates, widths=[4, 8], seeds=2,
        steps=2, loss_fn=mse,
    )  # fmt: skip
    assert coord_module._program._cache_size() == before + 2  # one per width, not per rate
    assert list(checks) == rates
    for rate in rates:
        alone = scaling.coord_check(
            make_mlp, optax.adam(float(np.float32(rate))), batches, widths=[4, 8], seeds=2,
            steps=2, loss_fn=mse,
        )  # fmt: skip
        for mine, reference in zip(checks[rate].points, alone.points, strict=True):
            assert (mine.layers, mine.params) == (reference.layers, reference.params)
            np.testing.assert_allclose(mine.loss, reference.loss, rtol=1e-5)
            np.testing.assert_allclose(mine.modules, reference.modules, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(
                mine.param_values, reference.param_values, rtol=1e-5, atol=1e-7
            )
    # a larger rate moves the weights further at step 0 (Adam's first update is the rate)
    updates = [checks[rate].point(8).statistic("update_rms")[1][:, 0] for rate in rates]
    assert np.all(updates[0] < updates[1])
    assert np.all(updates[1] < updates[2])
    messages = []
    run = functools.partial(
        scaling.coord_checks, make_mlp, optax.adam, batches, learning_rates=rates,
        widths=[4, 8], seeds=2, steps=2, loss_fn=mse, out=tmp_path, log=messages.append,
    )  # fmt: skip
    written = run()
    read = run()
    assert messages == [f"resuming: 2 of 2 points already in {tmp_path}"]
    for rate in rates:
        pd.testing.assert_frame_equal(written[rate].to_frame(), read[rate].to_frame())
        pd.testing.assert_frame_equal(written[rate].to_frame(), checks[rate].to_frame())
    with pytest.raises(ValueError, match=r"learning_rates \[0.003, 0.03, 0.3\] there, \[0.03\]"):
        run(learning_rates=[0.03])
    bad = [
        ({"learning_rates": []}, TypeError, "non-empty"),
        ({"learning_rates": [0.1, -1.0]}, ValueError, "finite and > 0, got -1.0"),
        ({"learning_rates": [0.1, 0.1]}, ValueError, "repeat"),
        ({"learning_rates": [0.1], "optimizer": optax.adam(0.1)}, TypeError, "function of the"),
        ({"learning_rates": [0.1], "optimizer": lambda rate: rate}, TypeError, "must return"),
    ]
    for kwargs, error, match in bad:
        arguments = {"optimizer": optax.adam, **kwargs}
        with pytest.raises(error, match=match):
            scaling.coord_checks(make_mlp, batches=batches, widths=[4], loss_fn=mse, **arguments)


def test_one_program_per_shape_and_no_recompile():
    batch = batch_list(1)[0]
    optimizer = optax.sgd(0.01)
    before = coord_module._program._cache_size()
    scaling.coord_check(make_mlp, optimizer, batch, widths=[4, 6], seeds=2, loss_fn=mse)
    assert coord_module._program._cache_size() == before + 2
    scaling.coord_check(make_mlp, optimizer, batch, widths=[4, 6], seeds=2, loss_fn=mse)
    assert coord_module._program._cache_size() == before + 2


def make_scanned(width, depth, rngs):
    return jnn.MLP(IN, width, depth, OUT, activation="relu", residual=True, rngs=rngs)


def test_stacked_layers_give_one_row_per_layer_and_a_frame():
    check = scaling.coord_check(
        make_scanned,
        optax.sgd(0.01),
        batch_list(1)[0],
        widths=[8],
        depths=[2, 3],
        seeds=1,
        steps=2,
        loss_fn=mse,
    )
    assert check.point(8, 3).layers == (
        "input_layer",
        "blocks[0]",
        "blocks[0].linear",
        "blocks[1]",
        "blocks[1].linear",
        "blocks[2]",
        "blocks[2].linear",
        "readout",
    )
    # a block's output is its input plus the branch: the block rows differ from their linear
    point = check.point(8, 3)
    assert np.all(np.isfinite(point.modules))
    frame = check.to_frame()
    assert list(frame.columns) == ["width", "depth", "seed", "step", "layer", "statistic", "value"]
    expected = sum(
        2 * (len(p.layers) * 3 + len(p.params) * 3) for p in check.points
    )  # steps x rows x statistics
    assert len(frame) == expected
    row = frame.query("depth == 3 and step == 1 and layer == 'readout' and statistic == 'rms'")
    assert float(row.value.iloc[0]) == pytest.approx(float(point.modules[0, 1, 7, 1]))


def test_nonfinite_signal_is_recorded_not_raised():
    x, y = batch_list(1)[0]
    x = x.at[0, 0].set(jnp.inf)
    check = scaling.coord_check(
        make_mlp, optax.sgd(0.1), (x, y), widths=[4], seeds=1, steps=2, loss_fn=mse
    )
    assert not np.all(np.isfinite(check.point(4).modules))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"widths": []}, TypeError, "widths"),
        ({"widths": [0]}, ValueError, "positive"),
        ({"widths": [4, 4]}, ValueError, "repeat"),
        ({"widths": [4], "seeds": 0}, ValueError, "seeds"),
        ({"widths": [4], "steps": 0}, ValueError, "steps"),
        ({"widths": [4], "depths": [1.5]}, ValueError, "depths"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        scaling.coord_check(make_mlp, optax.sgd(0.1), batch_list(1)[0], loss_fn=mse, **kwargs)


def test_too_few_batches_and_a_non_scalar_loss_are_refused():
    with pytest.raises(ValueError, match="fewer than steps"):
        scaling.coord_check(
            make_mlp, optax.sgd(0.1), batch_list(2), widths=[4], steps=3, loss_fn=mse
        )
    with pytest.raises(TypeError, match="real scalar"):
        scaling.coord_check(
            make_mlp,
            optax.sgd(0.1),
            batch_list(1)[0],
            widths=[4],
            loss_fn=lambda model, batch: model(batch[0]),
        )


def test_mean_abs_is_accumulated_wide():
    values = jnp.full((4096,), 60000.0, jnp.float16)
    assert float(scaling.mean_abs(values)) == 60000.0
    np.testing.assert_allclose(
        scaling.mean_abs(jnp.arange(6.0).reshape(2, 3) - 2, axis=1), [1.0, 2.0]
    )


# ----------------------------------------------------------------------------- slopes


def make_power_linear(exponent):
    """A linear network 16 -> n -> n -> 16 without biases, every kernel's entries drawn with
    std width**exponent: for a fixed input, the hidden outputs' coordinates have std
    c * n**a (first layer) and c * n**(2a + 1/2) (second: a sum of n terms), the readout
    c * n**(3a + 1), so mean |x| scales with those exponents."""

    def make(width, depth, rngs):
        kernel_init = jinit.normal(std=float(width) ** exponent)
        return nnx.Sequential(
            nnx.Linear(16, width, use_bias=False, kernel_init=kernel_init, rngs=rngs),
            nnx.Linear(width, width, use_bias=False, kernel_init=kernel_init, rngs=rngs),
            nnx.Linear(width, 16, use_bias=False, kernel_init=kernel_init, rngs=rngs),
        )

    return make


def output_square(model, x):
    return jnp.mean(model(x) ** 2)


@pytest.mark.slow
@pytest.mark.parametrize("exponent", [-0.5, 0.25])
def test_slopes_of_a_linear_network_with_known_exponents(exponent):
    x = jax.random.normal(jax.random.key(2), (16, 16))
    check = scaling.coord_check(
        make_power_linear(exponent),
        optax.sgd(0.0),
        x,
        widths=[64, 256, 1024],
        seeds=6,
        steps=1,
        loss_fn=output_square,
    )
    table = scaling.slopes(check)
    expected = {"layers.0": exponent, "layers.1": 2 * exponent + 0.5, "layers.2": 3 * exponent + 1}
    for layer, slope in expected.items():
        for statistic in ("mean_abs", "rms"):
            fitted, words = table.get(layer, statistic, step=0)
            assert fitted == pytest.approx(slope, abs=0.06), (layer, statistic)
            assert words == scaling.verdict(fitted)
    assert table.get("layers.0", "change", 0)[1] == "zero"


def test_slope_spread_over_seeds_and_noisy_verdicts():
    widths = (64, 128, 256, 512)
    exponents = np.array([0.6, 1.0, 1.4])  # per seed

    def point(width):
        values = np.zeros((3, 2, 1, 3))
        values[:, :, 0, 0] = 2.0 * float(width) ** exponents[:, None]
        values[:, :, 0, 1] = 5.0  # constant: stable, slope 0
        values[:, 1, 0, 2] = np.nan  # undefined at step 1
        return CoordPoint(
            width, None, ("out",), (), np.zeros((3, 2)), values, np.zeros((3, 2, 0, 3))
        )

    check = CoordCheck(tuple(point(w) for w in widths), widths, (None,), (0, 1, 2), 2)
    table = scaling.slopes(check)
    frame = table.to_frame().set_index(["layer", "statistic", "step"])
    row = frame.loc[("out", "mean_abs", 1)]
    assert row.slope == pytest.approx(1.0)
    assert row.spread == pytest.approx(0.4)  # sample std of 0.6, 1.0, 1.4
    assert row.verdict == "grows as width^1.00 (noisy: spread 0.40)"
    assert frame.loc[("out", "rms", 0)].verdict == "stable"
    assert frame.loc[("out", "change", 0)].verdict == "zero"
    assert frame.loc[("out", "change", 1)].verdict == "undefined"
    assert frame.loc[("out", "change", 1)].seeds == 0


def test_a_series_whose_seeds_disagree_does_not_set_the_verdict():
    """Per-seed slopes of 'noisy' -0.2 and 0.8 (mean 0.3: one seed within the band) are
    unsettled: counted, not judged; 'grows' at 0.95 and 1.05 is judged exploding beside it.
    Alone, the noisy series leaves the finding stable. Seeds at 0.5 and 2.0 disagree on
    the exponent but both grow: exploding."""
    widths = (64, 128, 256, 512)

    def point(width, exponents):
        values = np.ones((2, 1, len(exponents), 3))
        for layer, per_seed in enumerate(exponents):
            values[:, 0, layer, 0] = float(width) ** np.asarray(per_seed)
        names = ("noisy", "grows")[: len(exponents)]
        return CoordPoint(width, None, names, (), np.zeros((2, 1)), values, np.zeros((2, 1, 0, 3)))

    def finding(exponents):
        points = tuple(point(w, exponents) for w in widths)
        (found,) = scaling.slopes(CoordCheck(points, widths, (None,), (0, 1), 1)).findings()
        return found

    both = finding([(-0.2, 0.8), (0.95, 1.05)])
    assert (both.verdict, both.layers) == ("exploding", (2,))
    assert both.numbers["series_unsettled"] == 1
    assert "noisy" not in both.message.split(" (slope threshold")[0]
    assert "1 series out of the band for some seeds but not all, not judged" in both.message
    alone = finding([(-0.2, 0.8)])
    assert alone.verdict == "stable"
    assert alone.message.startswith(
        "3 slopes of the outputs' mean |x|, rms and change against log width, from +0.00 to "
        "+0.30: none out of +-0.25 for every seed (slope threshold 0.25); 1 series"
    )
    for seeds in ([(0.55, 0.65)], [(0.5, 2.0)]):
        settled = finding(seeds)
        assert (settled.verdict, settled.layers) == ("exploding", (1,)), seeds


@pytest.mark.parametrize(
    ("slope", "against", "words"),
    [
        (0.98, "width", "grows as width^0.98"),
        (-0.5, "depth", "shrinks as depth^-0.50"),
        (0.25, "width", "stable"),
        (-0.26, "width", "shrinks as width^-0.26"),
        (math.nan, "width", "undefined"),
    ],
)
def test_verdict_thresholds(slope, against, words):
    assert scaling.verdict(slope, against=against) == words


def test_verdict_and_slopes_refuse_bad_input():
    with pytest.raises(ValueError, match="against"):
        scaling.verdict(1.0, against="height")
    point = CoordPoint(
        4, None, ("a",), (), np.zeros((1, 1)), np.ones((1, 1, 1, 3)), np.zeros((1, 1, 0, 3))
    )
    with pytest.raises(ValueError, match="two widths"):
        scaling.slopes(CoordCheck((point,), (4,), (None,), (0,), 1))


def make_counting(width, depth, rngs):
    """`depth` identity layers each adding 1 (bias 1): with a zero input, layer l's output
    is l + 1 in every coordinate, so the last layer's mean |x| is the depth (slope 1 against
    depth) and the first's is 1 (slope 0)."""
    return nnx.Sequential(
        *[
            nnx.Linear(
                width,
                width,
                kernel_init=jinit.identity(),
                bias_init=jinit.ones(),
                rngs=rngs,
            )
            for _ in range(depth)
        ]
    )


def test_slopes_against_depth_match_layers_by_their_last_index():
    check = scaling.coord_check(
        make_counting,
        optax.sgd(0.0),
        jnp.zeros((2, 4)),
        widths=[4],
        depths=[2, 4, 8],
        seeds=1,
        steps=1,
        loss_fn=output_square,
    )
    table = scaling.slopes(check, against="depth")
    assert table.get("layers.-1", "mean_abs", 0) == (pytest.approx(1.0), "grows as depth^1.00")
    assert table.get("layers.0", "mean_abs", 0) == (pytest.approx(0.0), "stable")
    assert "layers.3" not in set(table.layer)  # not at every depth
    assert table.to_frame().columns[0] == "width"


# ----------------------------------------------------------------------------- muP

BASE = 16


def make_mup_mlp(width, depth, rngs):
    """in -> n -> n -> out with muP's readout (SP initialization elsewhere, as Table 8)."""
    return nnx.Sequential(
        nnx.Linear(IN, width, rngs=rngs),
        nnx.relu,
        nnx.Linear(width, width, rngs=rngs),
        nnx.relu,
        scaling.MuReadout(width, OUT, base_in_features=BASE, rngs=rngs),
    )


def table8(role, fan_in, fan_out, base_fan_in, base_fan_out, optimizer):
    """TP-V Table 8 relative to the base, written out: (init std, multiplier, lr factor)."""
    m_in, m_out = fan_in / base_fan_in, fan_out / base_fan_out
    if role == "input":
        return 1 / math.sqrt(fan_in), 1.0, {"sgd": m_out, "adam": 1.0}[optimizer]
    if role == "hidden":
        return 1 / math.sqrt(fan_in), 1.0, {"sgd": 1.0, "adam": 1 / m_in}[optimizer]
    if role == "output":
        return 1 / math.sqrt(base_fan_in), 1 / m_in, {"sgd": m_in, "adam": 1.0}[optimizer]
    return math.nan, 1.0, {"sgd": m_out, "adam": 1.0}[optimizer]  # a bias: fan_in 1


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("width", [16, 64, 48])
def test_mup_table_follows_tensor_programs_v_table_8(optimizer, width):
    base = scaling.base_shapes(make_mup_mlp, BASE)
    params = nnx.state(make_mup_mlp(width, None, nnx.Rngs(0)), nnx.Param)
    table = scaling.mup_table(params, base, optimizer)
    layers = {  # path: (role, fan_in, fan_out, base fan_in, base fan_out)
        "layers.0.kernel": ("input", IN, width, IN, BASE),
        "layers.0.bias": ("vector", 1, width, 1, BASE),
        "layers.2.kernel": ("hidden", width, width, BASE, BASE),
        "layers.2.bias": ("vector", 1, width, 1, BASE),
        "layers.4.kernel": ("output", width, OUT, BASE, OUT),
        "layers.4.bias": ("vector", 1, OUT, 1, OUT),
    }
    assert set(table) == set(layers)
    for path, (role, *fans) in layers.items():
        entry = table[path]
        assert entry.role == role, path
        std, multiplier, lr = table8(role, *fans, optimizer)
        np.testing.assert_allclose(
            [entry.init_std, entry.multiplier, entry.lr], [std, multiplier, lr], rtol=1e-12
        )
        assert entry.depth_ratio == 1.0
    readout = make_mup_mlp(width, None, nnx.Rngs(0)).layers[4]
    assert readout.multiplier == pytest.approx(table["layers.4.kernel"].multiplier)


def test_mup_initialization_is_what_the_table_says():
    model = make_mup_mlp(512, None, nnx.Rngs(3))
    table = scaling.mup_table(nnx.state(model, nnx.Param), scaling.base_shapes(make_mup_mlp, BASE))
    for path, layer in (("layers.2.kernel", 2), ("layers.4.kernel", 4)):
        drawn = np.asarray(model.layers[layer].kernel[...], np.float64)
        assert drawn.std() == pytest.approx(table[path].init_std, rel=0.08), path
    zero = scaling.MuReadout(8, 2, base_in_features=4, zero_init=True, rngs=nnx.Rngs(0))
    assert np.all(np.asarray(zero.kernel[...]) == 0)
    np.testing.assert_allclose(
        zero(jnp.ones((3, 8))), np.zeros((3, 2))
    )  # zero kernel and bias: zero logits


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_scale_by_mup_multiplies_each_update_by_its_factor(optimizer):
    base = scaling.base_shapes(make_mup_mlp, BASE)
    params = nnx.state(make_mup_mlp(64, None, nnx.Rngs(0)), nnx.Param)
    table = scaling.mup_table(params, base, optimizer)
    grads = jax.tree.map(jnp.ones_like, params)
    transform = scaling.mup_sgd(0.5, base) if optimizer == "sgd" else scaling.mup_adam(0.5, base)
    updates, _ = jax.jit(transform.update)(grads, transform.init(params), params)
    flat = jax.tree_util.tree_flatten_with_path(updates)[0]
    for path, update in flat:
        key = mup_module._path_key(path)
        # SGD: -lr * factor * 1; Adam's first step is sign-like: -lr * factor * 1/(1 + eps)
        np.testing.assert_allclose(update, -0.5 * table[key].lr, rtol=1e-4)


def make_deep(width, depth, rngs):
    return jnn.MLP(
        IN,
        width,
        depth,
        OUT,
        activation="relu",
        residual=True,
        residual_scale=scaling.depth_multiplier(depth, 2),
        rngs=rngs,
    )


def test_depth_mup_table_and_branch_multiplier():
    base = scaling.base_shapes(make_deep, BASE, base_depth=2)
    assert base.depth_axes["blocks.linear.kernel"] == (0,)
    assert base.width_axes["blocks.linear.kernel"] == (1, 2)
    params = nnx.state(make_deep(64, 8, nnx.Rngs(0)), nnx.Param)
    adam = scaling.mup_table(params, base, "adam")
    sgd = scaling.mup_table(params, base, "sgd")
    entry = adam["blocks.linear.kernel"]
    assert (entry.role, entry.depth_ratio) == ("hidden", 4.0)
    assert entry.lr == pytest.approx((BASE / 64) / math.sqrt(4.0))  # 1/m_in and 1/sqrt(L/L0)
    assert sgd["blocks.linear.kernel"].lr == 1.0
    assert adam["blocks.linear.bias"].lr == pytest.approx(0.5)
    assert adam["input_layer.kernel"].lr == 1.0
    assert scaling.depth_multiplier(8, 2) == 0.5
    with pytest.raises(ValueError, match="depth"):
        scaling.depth_multiplier(0)


def test_width_only_mup_of_stacked_blocks_reads_the_stacked_axis_as_neither_fan():
    """muP in width alone for stacked blocks (scale_depth=False): TP-V's table 8 for a
    hidden weight of fan-in 64 (init 1/sqrt(64), Adam lr 1/m_in) and a vector for the
    stacked bias, at any depth. Without base_depth the stacked axis is read as the fan-in
    (init 1/sqrt(8 * 64) here, the bias an input weight)."""
    width_only = scaling.base_shapes(make_deep, BASE, base_depth=2, scale_depth=False)
    assert width_only.base_depth is None
    assert width_only.depth_axes["blocks.linear.kernel"] == (0,)
    for depth in (2, 8):
        params = nnx.state(make_deep(64, depth, nnx.Rngs(0)), nnx.Param)
        adam = scaling.mup_table(params, width_only, "adam")
        kernel, bias = adam["blocks.linear.kernel"], adam["blocks.linear.bias"]
        assert (kernel.role, kernel.depth_ratio, kernel.fan_in_ratio) == ("hidden", 1.0, 64 / BASE)
        assert kernel.init_std == pytest.approx(1 / math.sqrt(64))
        assert kernel.lr == pytest.approx(BASE / 64)
        assert (bias.role, bias.lr) == ("vector", 1.0)
        assert math.isnan(bias.init_std)
        assert scaling.mup_table(params, width_only, "sgd")["blocks.linear.bias"].lr == 64 / BASE
    unstacked_reading = scaling.base_shapes(lambda w, _, rngs: make_deep(w, 8, rngs), BASE)
    params = nnx.state(make_deep(64, 8, nnx.Rngs(0)), nnx.Param)
    misread = scaling.mup_table(params, unstacked_reading, "adam")
    assert misread["blocks.linear.kernel"].init_std == pytest.approx(1 / math.sqrt(8 * 64))
    assert misread["blocks.linear.bias"].role == "input"
    with pytest.raises(ValueError, match="scale_depth=False needs base_depth"):
        scaling.base_shapes(make_deep, BASE, scale_depth=False)
    with pytest.raises(ValueError, match="no parameter grows between depth 2 and 4"):
        scaling.base_shapes(lambda w, _, r: make_deep(w, 8, r), BASE, 2, scale_depth=False)


def test_mup_attention_is_one_over_d_and_standard_at_the_base():
    q, k, v = (
        jax.random.normal(jax.random.fold_in(jax.random.key(0), i), (2, 5, 3, 32)) for i in range(3)
    )
    at_base = scaling.mup_dot_product_attention(32)(q, k, v)
    np.testing.assert_allclose(at_base, nnx.dot_product_attention(q, k, v), rtol=1e-6)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * math.sqrt(8) / 32  # sqrt(base) / d
    expected = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
    np.testing.assert_allclose(
        scaling.mup_dot_product_attention(8)(q, k, v), expected, rtol=1e-5, atol=1e-6
    )


def test_bad_mup_arguments_are_refused():
    base = scaling.base_shapes(make_mup_mlp, BASE)
    with pytest.raises(ValueError, match="optimizer"):
        scaling.scale_by_mup(base, "lion")
    with pytest.raises(ValueError, match="base_width"):
        scaling.base_shapes(make_mup_mlp, 0)
    with pytest.raises(ValueError, match="not in the base"):
        scaling.mup_table({"other": jnp.ones(3)}, base)
    with pytest.raises(ValueError, match="in_features"):
        scaling.MuReadout(0, 2, base_in_features=4, rngs=nnx.Rngs(0))


# ------------------------------------------------------ muP for a transformer (MHA)

VOCAB, T_BASE, HEAD_DIM = 50, 64, 16


class OneBlockTransformer(nnx.Module):
    """embed -> x + attn(ln1 x) -> x + down(gelu(up(ln2 x))) -> ln_f -> muP readout, with
    muP's 1/d attention logits (both families below have 4 heads of 16 at the base)."""

    def __init__(self, width, heads, *, rngs):
        self.embed = nnx.Embed(VOCAB, width, rngs=rngs)
        self.ln1 = nnx.LayerNorm(width, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            heads,
            width,
            decode=False,
            attention_fn=scaling.mup_dot_product_attention(HEAD_DIM),
            rngs=rngs,
        )
        self.ln2 = nnx.LayerNorm(width, rngs=rngs)
        self.up = nnx.Linear(width, 4 * width, rngs=rngs)
        self.down = nnx.Linear(4 * width, width, rngs=rngs)
        self.ln_f = nnx.LayerNorm(width, rngs=rngs)
        self.readout = scaling.MuReadout(width, OUT, base_in_features=T_BASE, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens)
        x = x + self.attn(self.ln1(x))
        x = x + self.down(jax.nn.gelu(self.up(self.ln2(x))))
        return self.readout(self.ln_f(x))


def heads_fixed(width, depth, rngs):
    """Four heads; the head dimension grows with the width."""
    return OneBlockTransformer(width, 4, rngs=rngs)


def head_dim_fixed(width, depth, rngs):
    """Heads of dimension 16; their number grows with the width."""
    return OneBlockTransformer(width, width // HEAD_DIM, rngs=rngs)


def transformer_fans(width):
    """Each parameter's (role, fan_in, fan_out) at `width`, written out as TP-V reads a
    transformer: q, k, v map `width` to heads * head_dim = width, out maps it back."""
    hidden = ("hidden", width, width)
    vector = ("vector", 1, width)
    fans = {
        "embed.embedding": ("input", VOCAB, width),
        "up.kernel": ("hidden", width, 4 * width),
        "up.bias": ("vector", 1, 4 * width),
        "down.kernel": ("hidden", 4 * width, width),
        "down.bias": vector,
        "readout.kernel": ("output", width, OUT),
        "readout.bias": ("vector", 1, OUT),
    }
    for projection in ("query", "key", "value", "out"):
        fans[f"attn.{projection}.kernel"] = hidden
        fans[f"attn.{projection}.bias"] = vector
    for norm in ("ln1", "ln2", "ln_f"):
        fans[f"{norm}.scale"] = fans[f"{norm}.bias"] = vector
    return fans


def table3(role, fan_in, fan_out, optimizer):
    """TP-V Table 3's muP column, up to width-independent constants: (init variance of the
    effective weight, its learning rate). Biases and gains are input weights of fan-in 1;
    their initialization is left to the model (None)."""
    if role == "input":
        return 1 / fan_in, {"sgd": fan_out, "adam": 1.0}[optimizer]
    if role == "hidden":
        return 1 / fan_in, {"sgd": 1.0, "adam": 1 / fan_in}[optimizer]
    if role == "output":
        return 1 / fan_in**2, {"sgd": 1 / fan_in, "adam": 1 / fan_in}[optimizer]
    return None, {"sgd": fan_out, "adam": 1.0}[optimizer]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("make", [heads_fixed, head_dim_fixed])
@pytest.mark.parametrize("width", [T_BASE, 256])
def test_mup_table_of_a_transformer_follows_tensor_programs_v(width, make, optimizer):
    """Every parameter of a one-block transformer against TP-V written out by hand: Table 8
    (the `mup` package's form, which mup.py implements) entry by entry, and Table 3 through
    the effective weight multiplier * W (its std is multiplier * init_std, its SGD learning
    rate lr * multiplier**2, its Adam learning rate lr * multiplier), as ratios to the base."""
    base = scaling.base_shapes(make, T_BASE)
    params = nnx.state(nnx.eval_shape(lambda: make(width, None, nnx.Rngs(0))), nnx.Param)
    table = scaling.mup_table(params, base, optimizer)
    at_base = transformer_fans(T_BASE)
    assert set(table) == set(at_base)
    for path, (role, fan_in, fan_out) in transformer_fans(width).items():
        entry = table[path]
        assert entry.role == role, path
        _, base_fan_in, base_fan_out = at_base[path]
        assert (entry.fan_in_ratio, entry.fan_out_ratio) == (
            fan_in / base_fan_in,
            fan_out / base_fan_out,
        ), path
        # Table 8, the row of `role`: init std, multiplier, learning rate
        std, multiplier, lr = table8(role, fan_in, fan_out, base_fan_in, base_fan_out, optimizer)
        np.testing.assert_allclose(
            [entry.init_std, entry.multiplier, entry.lr], [std, multiplier, lr], rtol=1e-12
        )
        # Table 3, the row of `role`, as the ratio of width `width` to the base
        variance, table3_lr = table3(role, fan_in, fan_out, optimizer)
        base_variance, base_lr = table3(role, base_fan_in, base_fan_out, optimizer)
        power = 2 if optimizer == "sgd" else 1
        assert entry.lr * entry.multiplier**power == pytest.approx(table3_lr / base_lr), path
        if variance is None:
            assert math.isnan(entry.init_std), path
            continue
        base_std = 1 / math.sqrt(base_fan_in)  # standard parametrization at the base
        assert (entry.multiplier * entry.init_std / base_std) ** 2 == pytest.approx(
            variance / base_variance
        ), path
    if width == T_BASE:  # muP is the standard parametrization at the base
        assert {(entry.multiplier, entry.lr) for entry in table.values()} == {(1.0, 1.0)}


@pytest.mark.parametrize("make", [heads_fixed, head_dim_fixed])
def test_base_shapes_reads_attention_fans_from_linear_general(make):
    base = scaling.base_shapes(make, T_BASE)
    for projection in ("query", "key", "value"):  # (in, heads, head_dim)
        assert base.fans(f"attn.{projection}.kernel") == ((0,), (1, 2))
        assert base.fans(f"attn.{projection}.bias") == ((), (0, 1))
    assert base.fans("attn.out.kernel") == ((0, 1), (2,))  # (heads, head_dim, out)
    assert base.fans("embed.embedding") == ((0,), (1,))
    assert base.fans("ln1.scale") == ((), (0,))
    grows = (0, 2) if make is heads_fixed else (0, 1)
    assert base.width_axes["attn.query.kernel"] == grows


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("make", [heads_fixed, head_dim_fixed])
def test_scale_by_mup_gives_the_tables_factors_for_attention_kernels(make, optimizer):
    base = scaling.base_shapes(make, T_BASE)
    params = nnx.state(make(256, None, nnx.Rngs(0)), nnx.Param)
    table = scaling.mup_table(params, base, optimizer)
    transform = scaling.scale_by_mup(base, optimizer)
    ones = jax.tree.map(jnp.ones_like, params)
    updates, _ = jax.jit(transform.update)(ones, transform.init(params))
    scaled = {
        mup_module._path_key(path): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(updates)
    }
    expected = {"sgd": 1.0, "adam": T_BASE / 256}[optimizer]  # hidden: 1 and base_fan_in / fan_in
    for projection in ("query", "key", "value", "out"):
        path = f"attn.{projection}.kernel"
        assert scaled[path].ndim == 3
        assert table[path].lr == expected
        np.testing.assert_array_equal(scaled[path], np.full(scaled[path].shape, expected))
    for path, update in scaled.items():
        np.testing.assert_array_equal(update, np.full(update.shape, table[path].lr, np.float32))


def test_flax_attention_init_draws_the_tables_std_and_its_logits_are_one_over_d():
    """Flax's LinearGeneral draws lecun_normal over the flattened fan-in, which is the
    table's 1/sqrt(fan_in) for q, k, v (fan-in `in`, not in * heads) and out (heads *
    head_dim); with `attention_fn=mup_dot_product_attention(16)` the block's attention at
    width 256 (4 heads of 64) is softmax(q.k * sqrt(16) / 64) v, written out in float64."""
    base = scaling.base_shapes(heads_fixed, T_BASE)
    model = heads_fixed(256, None, nnx.Rngs(1))
    table = scaling.mup_table(nnx.state(model, nnx.Param), base)
    for projection in ("query", "out"):
        drawn = np.asarray(getattr(model.attn, projection).kernel[...], np.float64)
        # lecun_normal: a truncated normal rescaled to std 1/sqrt(fan_in); 65536 draws
        assert drawn.std() == pytest.approx(table[f"attn.{projection}.kernel"].init_std, rel=0.02)
    assert table["attn.query.kernel"].init_std == 1 / math.sqrt(256)
    x = np.asarray(jax.random.normal(jax.random.key(2), (2, 5, 256)), np.float64)
    weights = {
        name: (
            np.asarray(getattr(model.attn, name).kernel[...], np.float64),
            np.asarray(getattr(model.attn, name).bias[...], np.float64),
        )
        for name in ("query", "key", "value", "out")
    }
    q, k, v = (
        np.einsum("bti,ihd->bthd", x, weights[name][0]) + weights[name][1]
        for name in ("query", "key", "value")
    )
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) * math.sqrt(HEAD_DIM) / 64
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    heads = np.einsum("bhqk,bkhd->bqhd", probs, v)
    expected = np.einsum("bqhd,hdo->bqo", heads, weights["out"][0]) + weights["out"][1]
    np.testing.assert_allclose(
        model.attn(jnp.asarray(x, jnp.float32)), expected, rtol=1e-4, atol=1e-5
    )


def test_stacked_attention_blocks_keep_their_fans_under_depth_mup():
    """nnx.vmap-stacked attention adds a leading depth axis before (in, heads, head_dim)."""

    def make(width, depth, rngs):
        @nnx.vmap(in_axes=0, out_axes=0)
        def block(key):
            return nnx.MultiHeadAttention(4, width, decode=False, rngs=nnx.Rngs(key))

        return block(jax.random.split(rngs.params(), depth))

    base = scaling.base_shapes(make, T_BASE, base_depth=2)
    assert base.depth_axes["query.kernel"] == (0,)
    assert base.fans("query.kernel") == ((1,), (2, 3))
    assert base.fans("out.kernel") == ((1, 2), (3,))
    params = nnx.state(nnx.eval_shape(lambda: make(256, 8, nnx.Rngs(0))), nnx.Param)
    table = scaling.mup_table(params, base, "adam")
    for path in ("query.kernel", "out.kernel"):
        entry = table[path]
        assert (entry.role, entry.fan_in_ratio, entry.depth_ratio) == ("hidden", 4.0, 4.0)
        assert entry.lr == pytest.approx((T_BASE / 256) / math.sqrt(4.0))  # 1/m_in, 1/sqrt(L/L0)
        assert entry.init_std == 1 / 16  # fan-in 256: in, or heads * head_dim
    assert table["query.bias"].role == "vector"


def make_sp_mlp(width, depth, rngs):
    return nnx.Sequential(
        nnx.Linear(IN, width, rngs=rngs),
        nnx.relu,
        nnx.Linear(width, width, rngs=rngs),
        nnx.relu,
        nnx.Linear(width, OUT, rngs=rngs),
    )


def make_mup_mlp64(width, depth, rngs):
    return nnx.Sequential(
        nnx.Linear(IN, width, rngs=rngs),
        nnx.relu,
        nnx.Linear(width, width, rngs=rngs),
        nnx.relu,
        scaling.MuReadout(width, OUT, base_in_features=64, zero_init=True, rngs=rngs),
    )


@pytest.mark.slow
def test_adam_under_sp_grows_with_width_and_under_mup_does_not():
    """Tensor Programs V's coordinate check at small scale: with Adam, the standard
    parametrization's hidden and output changes grow about as width^1 from the first update;
    under muP (zero-initialized readout, as TP-V recommends) every layer's output and its
    change are flat."""
    widths, batch = [64, 128, 512], batch_list(3, size=4)
    kwargs = {"widths": widths, "seeds": 2, "steps": 3, "loss_fn": mse}
    sp = scaling.slopes(scaling.coord_check(make_sp_mlp, optax.adam(0.01), batch, **kwargs))
    base = scaling.base_shapes(make_mup_mlp64, 64)
    mup = scaling.slopes(
        scaling.coord_check(make_mup_mlp64, scaling.mup_adam(0.01, base), batch, **kwargs)
    )
    for layer in ("layers.2", "layers.4"):
        slope, words = sp.get(layer, "change", step=1)
        assert slope > 0.75, (layer, slope)
        assert words.startswith("grows as width^")
    assert sp.get("layers.4.kernel", "update_ratio", step=1)[0] > 0.4  # as 1/sqrt(1/n)
    for layer in ("layers.0", "layers.2", "layers.4"):
        for statistic in ("mean_abs", "change"):
            slope, words = mup.get(layer, statistic, step=2)
            assert abs(slope) < 0.25, (layer, statistic, slope)
            assert words == "stable"
    assert mup.get("layers.4", "change", step=1)[1] == "stable"
    assert mup.get("layers.2", "change", step=1)[1] == "zero"  # no gradient through a 0 readout


# ----------------------------------------------------------------------------- figure


def test_coord_figure_draws_the_seed_mean_per_layer_and_step(tmp_path):
    from jaxgrad import plot

    widths = (64, 128, 256)

    def point(width):
        values = np.ones((2, 2, 2, 3))
        values[0, :, 0, 0] = float(width)  # layer "a": seeds width and 3 width
        values[1, :, 0, 0] = 3.0 * width
        values[:, 1, 1, 0] = -1.0  # layer "b" at step 1: not drawable on a log axis
        return CoordPoint(
            width, None, ("a", "b"), (), np.zeros((2, 2)), values, np.zeros((2, 2, 0, 3))
        )

    check = CoordCheck(tuple(point(w) for w in widths), widths, (None,), (0, 1), 2)
    figure = plot.coord_check(check, "mean_abs", path=tmp_path / "coord.png")
    assert (tmp_path / "coord.png").stat().st_size > 0
    assert len(figure.axes) == 2
    first, second = figure.axes
    np.testing.assert_allclose(first.lines[0].get_xdata(), widths)
    np.testing.assert_allclose(first.lines[0].get_ydata(), 2.0 * np.array(widths))
    assert first.lines[0].get_label() == "a: grows as width^1.00"
    assert first.lines[1].get_label() == "b: stable"
    assert [line.get_label() for line in second.lines] == ["a: grows as width^1.00"]
    # a panel with nothing a log axis can show says why; a flat curve is drawn flat, on an
    # axis of at least a decade
    values = np.ones((2, 2, 1, 3))
    values[:, 1, 0, 2] = [0.020, 0.021]  # the change at step 1: a few percent apart
    values[:, 0, 0, 2] = 0.0  # the change at step 0
    points = tuple(
        CoordPoint(w, None, ("c",), (), np.zeros((2, 2)), values * (1 + w / 6400), values[:, :, :0])
        for w in widths
    )
    zero, moved = plot.coord_check(CoordCheck(points, widths, (None,), (0, 1), 2), "change").axes
    assert not zero.lines
    assert [text.get_text() for text in zero.texts] == [
        "nothing moved yet:\nthe change is 0 at step 0"
    ]
    low, high = moved.get_ylim()
    assert high / low == pytest.approx(10.0)
    assert low < moved.lines[0].get_ydata().min() <= moved.lines[0].get_ydata().max() < high
    with pytest.raises(ValueError, match="statistic"):
        plot.coord_check(check, "std")


# ----------------------------------------------------------------------------- configs


def test_config_from_toml_and_its_refusals(tmp_path):
    from jaxgrad.scaling.config import CoordConfig

    path = tmp_path / "coord.toml"
    path.write_text('parametrization = "sp"\nwidths = [128, 64]\ndepths = [3]\nseeds = 2\n')
    config = CoordConfig.from_toml(path)
    assert (config.parametrization, config.widths, config.depths, config.seeds) == (
        "sp",
        (64, 128),
        (3,),
        2,
    )
    assert config.base_width == 64
    for text, match in (
        ("widht = [1]", "unknown key"),
        ('parametrization = "ntk"', "parametrization"),
        ("learning_rate = -1.0", "learning_rate"),
        ('activation = "nope"', "nope"),
        ("widths = [", "not valid TOML"),
    ):
        path.write_text(text)
        with pytest.raises(ValueError, match=match):
            CoordConfig.from_toml(path)


@pytest.mark.slow
def test_residual_outputs_grow_with_depth_unless_branches_are_scaled():
    """Tensor Programs VI / Bordelon et al. at small scale: residual blocks with branch
    multiplier 1 make the last block's output and the logits grow with depth; depth-muP's
    sqrt(L_base / L) keeps them flat."""
    from jaxgrad.scaling.config import CoordConfig, run

    common = {"widths": (32,), "depths": (2, 16), "residual": True, "seeds": 2, "steps": 2}
    sp = scaling.slopes(run(CoordConfig(parametrization="sp", **common)), against="depth")
    deep = scaling.slopes(run(CoordConfig(parametrization="depth_mup", **common)), "depth")
    for layer in ("body.blocks[-1].outer", "readout"):
        assert sp.get(layer, "mean_abs", step=1)[0] > 0.75, layer
        assert deep.get(layer, "mean_abs", step=1)[1] == "stable", layer


def test_points_written_to_a_folder_are_read_back_and_a_grown_grid_resumes(tmp_path):
    """coord_check(out=...) writes each point as it is computed; a later run reads stored
    points back bit for bit instead of computing them, computes only the missing ones, and
    says so; a folder of another check is refused before anything runs."""
    batches = batch_list(2)
    run = functools.partial(
        scaling.coord_check, make_mlp, optax.adam(0.01), batches, seeds=2, steps=2, loss_fn=mse
    )
    alone = run(widths=[4, 8])  # nothing written: the reference
    messages = []
    run(widths=[4], out=tmp_path, identity={"adam": 0.01}, log=messages.append)
    assert messages == []
    computed = []
    real_program = coord_module._program

    def counting(make_model, width, *args):
        computed.append(width)
        return real_program(make_model, width, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(coord_module, "_program", counting)
        grown = run(widths=[4, 8], out=tmp_path, identity={"adam": 0.01}, log=messages.append)
        again = run(widths=[4, 8], out=tmp_path, identity={"adam": 0.01}, log=messages.append)
    assert computed == [8]  # width 4 was stored by the first run, width 8 by the second
    assert messages == [
        f"resuming: 1 of 2 points already in {tmp_path}",
        f"resuming: 2 of 2 points already in {tmp_path}",
    ]
    for check in (grown, again):
        for mine, reference in zip(check.points, alone.points, strict=True):
            for value, expected in zip(mine, reference, strict=True):
                if isinstance(expected, np.ndarray):
                    assert value.dtype == expected.dtype
                    np.testing.assert_array_equal(value, expected)  # nan where nan
                else:
                    assert value == expected
        pd.testing.assert_frame_equal(check.to_frame(), alone.to_frame())
    with pytest.raises(ValueError, match=r"\(identity.adam 0.01 there, 0.1 here\)"):
        run(widths=[4], out=tmp_path, identity={"adam": 0.1})
    with pytest.raises(ValueError, match="steps 2 there, 1 here"):
        run(widths=[4], out=tmp_path, identity={"adam": 0.01}, steps=1)
    with pytest.raises(TypeError, match="identity must be JSON"):
        run(widths=[4], out=tmp_path, identity={"adam": optax.adam})


def test_ctrl_c_in_the_coord_command_says_what_is_saved(tmp_path, monkeypatch, capsys):
    from jaxgrad import cli
    from jaxgrad.scaling import config as coord_config

    real_run = coord_config.run

    def interrupted_after_the_first_width(config, progress, out, log):
        real_run(dataclasses.replace(config, widths=config.widths[:1]), progress, out, log)
        raise KeyboardInterrupt

    monkeypatch.setattr(coord_config, "run", interrupted_after_the_first_width)
    config = tmp_path / "coord.toml"
    config.write_text("widths = [8, 16]\ndepths = [1]\nseeds = 1\nsteps = 1\n")
    assert cli.main(["coord", str(config), "--out", str(tmp_path / "out")]) == 130
    points = tmp_path / "out" / "points"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"jaxgrad coord: interrupted: 1 of 2 points saved in {points}; run the same command "
        "again to resume"
    )
    config.write_text("widths = [8, 16]\ndepths = [1]\nseeds = 2\nsteps = 1\n")
    monkeypatch.setattr(coord_config, "run", real_run)
    assert cli.main(["coord", str(config), "--out", str(tmp_path / "out")]) == 2
    assert (
        "holds a different coordinate check (identity.seeds 1 there, 2 here; seeds [0] there, "
        "[0, 1] here)" in capsys.readouterr().err
    )


def test_a_swallowed_ctrl_c_stops_the_coord_command_at_the_next_point(
    tmp_path, monkeypatch, capsys
):
    """A Ctrl-C whose KeyboardInterrupt landed where Python ignores it (XLA's garbage-
    collection callback: the command then ran to the end and exited 0) still stops the run,
    at the next progress line, with the usual one line."""
    from jaxgrad import cli
    from jaxgrad.scaling import config as coord_config

    monkeypatch.setitem(cli._ctrl_c, "pressed", False)  # restored after the test
    real_run = coord_config.run

    def ctrl_c_swallowed_during_the_first_point(config, progress, out, log):
        def progress_after(width, depth):
            cli._ctrl_c["pressed"] = True  # noted by the handler; its exception was lost
            progress(width, depth)

        return real_run(config, progress_after, out, log)

    monkeypatch.setattr(coord_config, "run", ctrl_c_swallowed_during_the_first_point)
    config = tmp_path / "coord.toml"
    config.write_text("widths = [8, 16]\ndepths = [1]\nseeds = 1\nsteps = 1\n")
    assert cli.main(["coord", str(config), "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"jaxgrad coord: interrupted: 1 of 2 points saved in {tmp_path / 'out' / 'points'}; "
        "run the same command again to resume"
    )


@pytest.mark.slow
def test_a_killed_coord_command_resumes_where_it_stopped(tmp_path):
    """`jaxgrad coord` killed (SIGKILL) after its first point: the rerun says what it found,
    computes the rest, and writes the same table as a run that was never stopped."""
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "coord.toml"
    config.write_text("widths = [8, 16, 32, 64]\ndepths = [1]\nseeds = 1\nsteps = 2\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "jaxgrad.cli", "coord", str(config), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list((out / "points").glob("parts/*.parquet")):
        assert time.monotonic() < deadline, "no point appeared"
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    stored = len(list((out / "points").glob("parts/*.parquet")))
    assert 1 <= stored < 4
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {stored} of 4 points already in {out / 'points'}" in rerun.stderr
    whole = subprocess.run(
        [*command[:-1], str(tmp_path / "whole")], capture_output=True, text=True, timeout=300
    )
    assert whole.returncode == 0, whole.stderr
    assert "resuming" not in whole.stderr
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "coord.csv"), pd.read_csv(tmp_path / "whole" / "coord.csv")
    )


@pytest.mark.slow
def test_jaxgrad_coord_command_writes_tables_and_figures(tmp_path, capsys):
    from jaxgrad import cli

    config = tmp_path / "coord.toml"
    config.write_text('parametrization = "mup"\nwidths = [8, 16]\ndepths = [1]\nseeds = 1\n')
    assert cli.main(["coord", str(config), "--out", str(tmp_path / "out")]) == 0
    frame = pd.read_csv(tmp_path / "out" / "coord.csv")
    assert set(frame.width) == {8, 16}
    assert set(frame.statistic) == set(scaling.STATISTICS)
    table = pd.read_csv(tmp_path / "out" / "slopes_width.csv")
    assert {"layer", "statistic", "step", "slope", "spread", "verdict"} <= set(table.columns)
    assert (tmp_path / "out" / "width_mean_abs.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "slopes against log width" in out
    # the verdict over every step, which the printed last step's slopes alone do not give:
    # diagnose of the same check, read back from the points the command stored
    from jaxgrad.scaling import config as coord_config

    stored = coord_config.run(
        coord_config.CoordConfig.from_toml(config), out=tmp_path / "out" / "points"
    )
    assert out.splitlines()[-2] == f"diagnose: {jaxgrad.diagnose(stored).message}"
    written = "coord.csv, slopes_width.csv, width_mean_abs.png, width_change.png"
    assert out.splitlines()[-1] == f"wrote {written} to {tmp_path / 'out'}"
    assert all((tmp_path / "out" / name).is_file() for name in written.split(", "))
    # one width of the same check into the same folder (read back, nothing trained): the
    # slopes and figures of two widths would contradict its coord.csv, so they go
    config.write_text('parametrization = "mup"\nwidths = [8]\ndepths = [1]\nseeds = 1\n')
    assert cli.main(["coord", str(config), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"wrote coord.csv to {tmp_path / 'out'} (removed {written.split(', ', 1)[1]}, an "
        "earlier run's)"
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["coord.csv", "points"]
    assert set(pd.read_csv(tmp_path / "out" / "coord.csv").width) == {8}
    config.write_text('parametrization = "ntk"\n')
    assert cli.main(["coord", str(config)]) == 2
    assert "bad coord configuration" in capsys.readouterr().err
    # a width whose weights cannot fit: the initializer's refusal, in one line, status 2
    config.write_text("widths = [1000000]\ndepths = [1]\nseeds = 1\nsteps = 1\n")
    assert cli.main(["coord", str(config), "--out", str(tmp_path / "big")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("jaxgrad coord: ")
    assert "bytes" in err[-1]
    assert "memory" in err[-1]


class EmbedReadout(nnx.Module):
    """Tokens -> embedding -> zero-initialized readout, on (batch, length, width) arrays."""

    def __init__(self, width, rngs):
        self.embed = nnx.Embed(11, width, rngs=rngs)
        self.readout = scaling.MuReadout(width, 11, base_in_features=16, zero_init=True, rngs=rngs)

    def __call__(self, tokens):
        return self.readout(self.embed(tokens))


def make_embed_readout(width, depth, rngs):
    return EmbedReadout(width, rngs)


def next_token_loss(model, tokens):
    logits = model(tokens)[:, :-1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def test_change_of_a_zero_initialized_readout_is_its_output():
    """With a zero initial readout, x_t - x_0 is x_t: the change equals mean |x| at every
    step (inside the steps' scan this once read garbage, 1e31, from an XLA CPU miscompile
    of the reference pass)."""
    tokens = np.random.default_rng(0).integers(0, 11, (4, 6)).astype(np.int32)
    check = scaling.coord_check(
        make_embed_readout,
        optax.adam(0.01),
        tokens,
        widths=[64],
        seeds=2,
        steps=2,
        loss_fn=next_token_loss,
    )
    point = check.point(64)
    readout = point.layers.index("readout")
    np.testing.assert_array_equal(point.modules[:, 0, readout, 0], 0.0)
    np.testing.assert_allclose(
        point.modules[:, :, readout, 2], point.modules[:, :, readout, 0], rtol=1e-6
    )
    assert np.all(point.modules[:, 1, readout, 0] > 0)


class PooledConvReadout(nnx.Module):
    """A CNN as users write it: conv, relu applied as a function, mean over the image, and a
    zero-initialized readout."""

    def __init__(self, width, rngs):
        self.conv = nnx.Conv(3, width, (3, 3), rngs=rngs)
        self.readout = scaling.MuReadout(width, 4, base_in_features=32, zero_init=True, rngs=rngs)

    def __call__(self, x):
        return self.readout(jax.nn.relu(self.conv(x)).mean(axis=(1, 2)))


def test_a_zero_initialized_readout_starts_at_zero_at_every_width():
    """Step 0's output and change of a zero readout are exactly 0 and step 1's change is its
    output. At width 128 and up, XLA's CPU backend computed this product as garbage (NaN or
    1e33) inside the seed-vmapped program until `jaxgrad._compile` turned off the fusion
    that did it; width 64 was right."""
    rng = np.random.default_rng(0)
    batches = [
        (
            rng.standard_normal((8, 8, 8, 3)).astype(np.float32),
            rng.standard_normal((8, 4)).astype(np.float32),
        )
        for _ in range(2)
    ]
    check = scaling.coord_check(
        lambda width, depth, rngs: PooledConvReadout(width, rngs),
        optax.adam(0.01),
        batches,
        widths=[64, 128],
        seeds=2,
        steps=2,
        loss_fn=mse,
    )
    for width in (64, 128):
        point = check.point(width)
        readout = point.layers.index("readout")
        np.testing.assert_array_equal(point.modules[:, 0, readout, 0], 0.0)
        np.testing.assert_array_equal(point.modules[:, 0, readout, 2], 0.0)
        np.testing.assert_allclose(
            point.modules[:, 1, readout, 2], point.modules[:, 1, readout, 0], rtol=1e-6
        )
        assert np.all(point.modules[:, 1, readout, 0] > 0), width


# ----------------------------------------------------------------------------- diagnose


def hand_check(exponent, widths=(64, 128, 256, 512), depths=(None,), steps=3):
    """A coordinate check made by hand, three seeds: the readout's mean |x| at the last step
    is 3 * width**(exponent + d) with d = -0.08, 0, 0.08 per seed (mean slope `exponent`,
    spread 0.08 over seeds); every other output statistic is constant in width, the change
    is zero at step 0, and the hidden kernel's gradient rms scales as width**-1 (as under
    muP: parameter statistics are not judged)."""
    offsets = np.array([-0.08, 0.0, 0.08])

    def point(width, depth):
        modules = np.ones((3, steps, 3, 3)) * np.array([1.0, 2.0, 3.0])[:, None, None, None]
        modules[:, steps - 1, 2, 0] = 3.0 * float(width) ** (exponent + offsets)
        modules[:, 0, :, 2] = 0.0
        params = np.ones((3, steps, 1, 3))
        params[:, :, 0, 0] = 1.0 / width
        layers, names = ("embed", "hidden", "readout"), ("hidden.kernel",)
        return CoordPoint(width, depth, layers, names, np.zeros((3, steps)), modules, params)

    points = tuple(point(w, d) for w in widths for d in depths)
    return CoordCheck(points, tuple(widths), tuple(depths), (0, 1, 2), steps)


@pytest.mark.parametrize(
    ("exponent", "expected"),
    [(0.98, "exploding"), (0.4, "exploding"), (0.3, "stable"), (0.2, "stable"),
     (0.0, "stable"), (-0.5, "vanishing")],
)  # fmt: skip
def test_diagnose_reads_the_width_slopes_of_a_constructed_check(exponent, expected):
    """At 0.3 the three seeds' slopes are 0.22, 0.30 and 0.38: one within the band, so the
    series is unsettled (counted, not judged); at 0.4 all three are out of it."""
    check = hand_check(exponent)
    result = jaxgrad.diagnose(scaling.slopes(check))
    (finding,) = result.findings
    assert ("series_unsettled" in finding.numbers) == (exponent == 0.3)
    assert (result.verdict, finding.rule, finding.verdict) == (expected, "width_scaling", expected)
    assert finding.threshold == scaling.STABLE_SLOPE == 0.25
    assert math.isnan(result.ratio)
    assert result.layers_at_fault == ()
    if expected == "stable":
        assert finding.layers == ()
        assert finding.cure == ""
        assert finding.numbers["largest_slope"] == pytest.approx(max(exponent, 0.0), abs=1e-9)
        assert result.message.startswith("stable: ")
        return
    assert finding.layers == (3,)  # the readout alone: the hidden gradient's width^-1 is not read
    assert finding.numbers["readout mean_abs step 2: slope"] == pytest.approx(exponent, abs=1e-9)
    assert finding.numbers["readout mean_abs step 2: spread"] == pytest.approx(0.08, abs=1e-9)
    slope_keys = [key for key in finding.numbers if key.endswith(": slope")]
    assert slope_keys == ["readout mean_abs step 2: slope"]
    moves = "grows" if exponent > 0 else "shrinks"
    assert finding.message == (
        f"readout: the output's mean |x| {moves} as width^{exponent:.2f} at step 2 "
        "(slope threshold 0.25)"
    )
    assert result.message == f"{expected}: {finding.message}"
    assert "jaxgrad.scaling.mup_adam(" in finding.cure
    assert "MuReadout" in finding.cure
    assert jaxgrad.diagnose(check).findings == result.findings  # a check: against width


def test_diagnose_of_a_check_over_widths_and_depths_judges_both():
    check = hand_check(1.0, widths=(64, 256), depths=(2, 4), steps=1)
    result = jaxgrad.diagnose(check)
    width, depth = result.findings
    assert (width.rule, width.verdict, depth.rule, depth.verdict) == (
        "width_scaling",
        "exploding",
        "depth_scaling",
        "stable",
    )
    for fixed in (2, 4):
        key = f"readout mean_abs step 0 at depth {fixed}: slope"
        assert width.numbers[key] == pytest.approx(1.0, abs=1e-9)
    assert result.verdict == "exploding"
    assert "depth_multiplier" not in width.cure


def make_constant_linear(readout_exponent):
    """A linear network 16 -> n -> n -> 16 without biases and with constant kernels 1, 1/n and
    n**readout_exponent: each hidden unit is the sum S of the input's coordinates, and each
    readout coordinate n * n**readout_exponent * S, so the readout's mean |x| and rms scale
    with slope exactly 1 + readout_exponent and the hidden outputs' with slope 0."""

    def make(width, depth, rngs):
        kernels = (1.0, 1.0 / width, float(width) ** readout_exponent)
        shapes = ((16, width), (width, width), (width, 16))
        return nnx.Sequential(
            *[
                nnx.Linear(*shape, use_bias=False, kernel_init=jinit.constant(k), rngs=rngs)
                for shape, k in zip(shapes, kernels, strict=True)
            ]
        )

    return make


@pytest.mark.parametrize(
    ("readout_exponent", "expected"), [(-0.02, "exploding"), (-1.0, "stable"), (-1.5, "vanishing")]
)
def test_diagnose_of_a_linear_network_finds_the_readout_slope_in_closed_form(
    readout_exponent, expected
):
    x = jax.random.normal(jax.random.key(3), (4, 16))
    check = scaling.coord_check(
        make_constant_linear(readout_exponent),
        optax.sgd(0.0),
        x,
        widths=[8, 32, 128],
        seeds=1,
        steps=1,
        loss_fn=output_square,
    )
    result = jaxgrad.diagnose(check)
    (finding,) = result.findings
    assert (result.verdict, finding.rule, finding.verdict) == (expected, "width_scaling", expected)
    slope = 1.0 + readout_exponent
    if expected == "stable":
        assert finding.layers == ()
        assert finding.numbers["largest_slope"] == pytest.approx(0.0, abs=1e-3)
        assert finding.numbers["smallest_slope"] == pytest.approx(0.0, abs=1e-3)
        return
    assert scaling.slopes(check).layer_names == ("layers.0", "layers.1", "layers.2")
    assert finding.layers == (3,)
    for statistic in ("mean_abs", "rms"):
        key = f"layers.2 {statistic} step 0: slope"
        assert finding.numbers[key] == pytest.approx(slope, abs=1e-3)
    assert finding.numbers["series_out"] == 2  # mean |x| and rms; the change is zero
    moves = "grows" if slope > 0 else "shrinks"
    assert finding.message.startswith(
        f"layers.2: the output's mean |x| {moves} as width^{slope:.2f} at step 0"
    )


def test_diagnose_of_depth_slopes_gives_the_depth_rule():
    check = scaling.coord_check(
        make_counting,
        optax.sgd(0.0),
        jnp.zeros((2, 4)),
        widths=[4],
        depths=[2, 4, 8],
        seeds=1,
        steps=1,
        loss_fn=output_square,
    )
    table = scaling.slopes(check, against="depth")
    result = jaxgrad.diagnose(table)
    (finding,) = result.findings
    assert (result.verdict, finding.rule, finding.verdict) == (
        "exploding",
        "depth_scaling",
        "exploding",
    )
    # the last layer's output is the depth (slope 1); the first two layers are constant
    assert finding.layers == (table.layer_names.index("layers.-1") + 1,)
    assert finding.numbers["layers.-1 mean_abs step 0: slope"] == pytest.approx(1.0, abs=1e-5)
    assert finding.message.startswith("layers.-1: the output's mean |x| grows as depth^1.00")
    assert "jaxgrad.scaling.depth_multiplier(" in finding.cure
    assert jaxgrad.diagnose(check).findings == result.findings  # one width: depth only


def depth_mup_like(readout_exponent, depths=(2, 4, 8)):
    """A check over depth made by hand, as depth-muP behaves (Yang et al. 2023): block k of
    L changes by (k + 1) / L after a step (its residual stream sums k + 1 updates of size
    1/L), so a fixed index shrinks as depth^-1 while the last block stays at 1; the readout's
    change scales as depth**readout_exponent; every size is 1."""

    def point(depth):
        layers = (*(f"blocks[{k}].out" for k in range(depth)), "readout")
        modules = np.ones((1, 2, depth + 1, 3))
        modules[:, 0, :, 2] = 0.0
        modules[0, 1, :depth, 2] = (np.arange(depth) + 1) / depth
        modules[0, 1, depth, 2] = float(depth) ** readout_exponent
        params = np.ones((1, 2, 1, 3))
        return CoordPoint(8, depth, layers, ("readout.kernel",), np.zeros((1, 2)), modules, params)

    return CoordCheck(tuple(point(d) for d in depths), (8,), tuple(depths), (0,), 2)


def test_the_depth_rule_judges_only_layers_that_keep_their_relative_depth():
    """A fixed index of a stack whose length changes with depth is tabled (its change
    shrinks as depth^-1, as depth-muP's does) but not judged: the verdict reads the last
    block and the layers outside the stack, and says how many it left out."""
    table = scaling.slopes(depth_mup_like(0.0), against="depth")
    assert table.stacks == ("blocks",)
    assert table.get("blocks[0].out", "change", 1) == (
        pytest.approx(-1.0),
        "shrinks as depth^-1.00",
    )
    assert table.get("blocks[-1].out", "change", 1) == (pytest.approx(0.0), "stable")
    (finding,) = jaxgrad.diagnose(table).findings
    assert finding.verdict == "stable"
    # blocks[-1] and readout: mean |x| and rms at 2 steps, the change at step 1 (0 at step 0)
    assert finding.numbers["series_read"] == 2 * 5
    assert "2 layers at a fixed index of a stack whose length changes" in finding.message
    (finding,) = jaxgrad.diagnose(scaling.slopes(depth_mup_like(1.0), against="depth")).findings
    assert finding.verdict == "exploding"
    expected = "readout: the output's change since step 0 grows as depth^1.00"
    assert finding.message.startswith(expected)


def test_diagnose_of_slopes_refuses_profile_keywords_and_bad_findings():
    table = scaling.slopes(hand_check(0.0))
    with pytest.raises(TypeError, match="activation tune the rules read from a Profile"):
        jaxgrad.diagnose(table, activation="relu")
    with pytest.raises(TypeError, match="sigma_w2, band tune"):
        jaxgrad.diagnose(table, band=10.0, sigma_w2=2.0)
    single = hand_check(0.0, widths=(64,))
    with pytest.raises(ValueError, match="no slope to judge"):
        jaxgrad.diagnose(single)

    class Wrong:
        def findings(self):
            return ("readout grows",)

    with pytest.raises(TypeError, match=r"Wrong.findings\(\) must return"):
        jaxgrad.diagnose(Wrong())


class ThreeHidden(nnx.Module):
    """8 -> n -> n -> n -> 4, relu, plain flax layers."""

    def __init__(self, width, rngs):
        self.inp = nnx.Linear(8, width, rngs=rngs)
        self.hidden = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(2)])
        self.out = nnx.Linear(width, 4, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.inp(x))
        for layer in self.hidden:
            h = jax.nn.relu(layer(h))
        return self.out(h)


def test_outputs_that_did_not_move_show_no_change():
    """At step 0 the parameters are the initial ones, so every output's change is 0. The
    reference outputs come from a separate forward pass that rounds differently (1 to 4
    float32 eps of the output's mean |x| at width 32 here): that must read 0, not a change
    that shrinks with width (diagnose called a correct muP transformer vanishing on it)."""
    rng = np.random.default_rng(0)
    batches = [
        (rng.standard_normal((16, 8)).astype(np.float32),
         rng.standard_normal((16, 4)).astype(np.float32))
        for _ in range(4)
    ]  # fmt: skip
    widths = (32, 64, 128)
    check = scaling.coord_check(
        lambda width, depth, rngs: ThreeHidden(width, rngs), optax.adam(1e-2), batches,
        widths=widths, seeds=2, steps=4, loss_fn=mse,
    )  # fmt: skip
    for width in widths:
        _, change = check.point(width).statistic("change")
        assert np.all(change[:, 0, :] == 0), (width, change[:, 0, :])
        assert np.all(change[:, 1, :] > 1e-3)  # the first update moves every output
