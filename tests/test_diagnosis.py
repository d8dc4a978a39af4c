"""Tests for jaxgrad.stats.diagnosis: every rule on a constructed Profile on both sides of its
threshold, the verdict's precedence, the mean-field rule against jaxgrad.theory, the six
seed networks, and the errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad import propagation, stats, theory
from jaxgrad.propagation import LayerStats
from jaxgrad.stats import Diagnosis, Finding, Profile, diagnose

DEPTH = 10


def healthy(depth: int = DEPTH, **changes) -> Profile:
    """A profile every rule passes: flat gradients and signal, a gradient-to-weight ratio of
    0.1, a few dead and saturated units. Keyword arguments replace fields."""
    fields = {
        "names": tuple(f"layer {i}" for i in range(1, depth + 1)),
        "grad_norm": np.ones(depth),
        "weight_norm": np.full(depth, 10.0),
        "signal_std": np.ones(depth),
        "act_grad_norm": np.ones(depth),
        "dead_frac": np.full(depth, 0.1),
        "saturated_frac": np.full(depth, 0.1),
    }
    return Profile(**{**fields, **changes})


def ramp(last: float) -> np.ndarray:
    """DEPTH values from 1 to `last`, geometrically."""
    return np.geomspace(1.0, last, DEPTH)


def findings(result: Diagnosis) -> dict[str, Finding]:
    return {finding.rule: finding for finding in result.findings}


def test_a_healthy_profile_passes_every_rule():
    result = diagnose(healthy())
    assert result.verdict == "stable"
    # no activation: no mean-field rule; not a training run: no stalled or died rule; a
    # profile, not the slopes of a coordinate check: no scaling rule
    scaling_rules = ("width_scaling", "depth_scaling")
    expected = [
        r for r in stats.RULES if r not in ("mean_field", "stalled", "died", *scaling_rules)
    ]
    assert [f.rule for f in result.findings] == expected
    assert all(f.verdict == "stable" and f.cure == "" and f.layers == () for f in result.findings)
    assert result.message.startswith("stable: ")
    assert result.layers_at_fault == ()
    assert result.first_nonfinite_layer == -1


# ----------------------------------------------------------------------------- gradient ratio


@pytest.mark.parametrize(
    ("first", "verdict"),
    [(101.0, "exploding"), (99.0, "stable"), (1 / 101, "vanishing"), (1 / 99, "stable")],
)
def test_gradient_ratio_fires_just_past_the_band(first, verdict):
    grad = np.ones(DEPTH)
    grad[0] = first
    result = diagnose(healthy(grad_norm=grad))
    finding = findings(result)["gradient_ratio"]
    assert finding.verdict == verdict == result.verdict
    assert finding.threshold == stats.BAND
    assert finding.numbers["ratio"] == pytest.approx(first) == result.ratio
    assert finding.numbers["first_grad_norm"] == grad[0]
    assert finding.numbers["last_grad_norm"] == grad[-1]
    assert finding.layers == ((1,) if verdict != "stable" else ())
    assert result.rate_per_layer == pytest.approx(first ** (1 / (DEPTH - 1)))
    assert f"{first:.3g} times" in finding.message
    assert bool(finding.cure) == (verdict != "stable")
    if verdict == "exploding":
        assert "jaxgrad.optim.clip_by_global_norm(1.0)" in finding.cure
    if verdict == "vanishing":
        assert "residual=True" in finding.cure


def test_gradient_ratio_takes_the_band():
    grad = ramp(20.0)[::-1]  # the first layer 20x the last
    assert diagnose(healthy(grad_norm=grad)).verdict == "stable"
    assert diagnose(healthy(grad_norm=grad), band=19.0).verdict == "exploding"


def test_every_gradient_zero_is_vanishing():
    result = diagnose(healthy(grad_norm=np.zeros(DEPTH)))
    finding = findings(result)["gradient_ratio"]
    assert result.verdict == finding.verdict == "vanishing"
    assert "every weight gradient is zero" in finding.message
    assert result.layers_at_fault == tuple(range(1, DEPTH + 1))


def test_a_first_layer_without_gradient_is_said_in_words_not_as_a_nan_factor():
    grad = np.ones(DEPTH)
    grad[0] = 0.0  # saturated units pass back exactly nothing
    finding = findings(diagnose(healthy(grad_norm=grad)))["gradient_ratio"]
    assert finding.verdict == "vanishing"
    assert finding.message == (
        "the weight gradient of layer 1 is exactly zero, against 1 at layer 10; layer 1 "
        "outside a factor 100 of layer 10"
    )
    assert math.isnan(finding.numbers["rate_per_layer"])
    signal = np.ones(DEPTH)
    signal[-1] = 0.0
    message = findings(diagnose(healthy(signal_std=signal)))["signal"].message
    assert "a factor 0" in message
    assert "nan" not in message


# ----------------------------------------------------------------------------- signal


@pytest.mark.parametrize(
    ("last", "verdict"),
    [(0.0999, "vanishing"), (0.1001, "stable"), (10.01, "exploding"), (9.99, "stable")],
)
def test_signal_fires_just_past_the_signal_band(last, verdict):
    signal = ramp(last)
    result = diagnose(healthy(signal_std=signal))
    finding = findings(result)["signal"]
    assert finding.verdict == verdict == result.verdict
    assert finding.threshold == stats.SIGNAL_BAND
    assert finding.numbers["first_std"] == signal[0]
    assert finding.numbers["last_std"] == signal[-1]
    assert finding.numbers["ratio"] == pytest.approx(last)
    assert finding.numbers["rate_per_layer"] == pytest.approx(last ** (1 / (DEPTH - 1)))
    assert finding.layers == ((DEPTH,) if verdict != "stable" else ())
    if verdict != "stable":
        assert "nn.MLP(..., norm='layer')" in finding.cure
        assert "jaxgrad.model_init.lsuv(model, x, key)" in finding.cure


def test_signal_reads_every_layer_and_takes_the_signal_band():
    signal = np.ones(DEPTH)
    signal[4] = 0.05  # one collapsed layer in the middle
    finding = findings(diagnose(healthy(signal_std=signal)))["signal"]
    assert finding.verdict == "vanishing"
    assert finding.layers == (5,)
    assert finding.numbers["extreme_layer"] == 5
    assert finding.numbers["extreme_ratio"] == pytest.approx(0.05)
    assert diagnose(healthy(signal_std=signal), signal_band=25.0).verdict == "stable"


def test_signal_skips_zero_kernels_and_unmeasured_layers():
    # a zero-initialized readout (Fixup) outputs its bias: std 0 by design, not a collapse
    signal, weight = np.ones(DEPTH), np.full(DEPTH, 10.0)
    signal[-1], weight[-1] = 0.0, 0.0
    result = diagnose(healthy(signal_std=signal, weight_norm=weight))
    assert findings(result)["signal"].numbers["layers_read"] == DEPTH - 1
    assert result.verdict == "stable"
    # a signal that is not measured gives no signal finding
    assert "signal" not in findings(diagnose(healthy(signal_std=None)))
    # a signal that is zero wherever it is read is no signal at all
    zero = findings(diagnose(healthy(signal_std=np.zeros(DEPTH))))["signal"]
    assert zero.verdict == "vanishing"
    assert zero.layers == tuple(range(1, DEPTH + 1))


# ----------------------------------------------------------------------------- scale


@pytest.mark.parametrize(
    ("scale", "verdict"),
    [(0.99e-7, "vanishing"), (1.01e-7, "stable"), (1.01e2, "exploding"), (0.99e2, "stable")],
)
def test_scale_fires_when_every_layer_is_past_the_threshold(scale, verdict):
    weight = np.linspace(1.0, 3.0, DEPTH)
    grad = scale * weight
    result = diagnose(healthy(grad_norm=grad, weight_norm=weight))
    finding = findings(result)["scale"]
    assert finding.verdict == verdict == result.verdict
    assert findings(result)["gradient_ratio"].verdict == "stable"  # first/last is 1/3
    assert finding.numbers["min_grad_to_weight"] == pytest.approx(scale)
    assert finding.numbers["max_grad_to_weight"] == pytest.approx(scale)
    expected = stats.SCALE_LOW if scale < 1 else stats.SCALE_HIGH
    assert finding.threshold == expected
    assert finding.layers == (tuple(range(1, DEPTH + 1)) if verdict != "stable" else ())


def test_scale_needs_every_layer():
    weight = np.full(DEPTH, 2.0)
    grad = 1e-9 * weight
    grad[3] = 1e-3  # one layer learns
    result = diagnose(healthy(grad_norm=grad, weight_norm=weight, signal_std=None))
    finding = findings(result)["scale"]
    assert finding.verdict == "stable"
    assert finding.numbers["max_layer"] == 4
    assert finding.numbers["max_grad_to_weight"] == pytest.approx(5e-4)


def test_uniform_collapse_is_not_stable():
    """A ReLU CNN from N(0, 0.01^2) weights: every kernel gradient some 1e-12 of its weights,
    a first/last ratio of 0.19 that the gradient-ratio rule passes."""
    weight = np.full(DEPTH, 1.92)  # a 3x3x64x64 kernel of std 0.01
    grad = 1e-12 * weight * np.linspace(0.19, 1.0, DEPTH)
    result = diagnose(healthy(grad_norm=grad, weight_norm=weight, signal_std=None))
    assert result.ratio == pytest.approx(0.19)
    assert findings(result)["gradient_ratio"].verdict == "stable"
    scale = findings(result)["scale"]
    assert result.verdict == scale.verdict == "vanishing"
    assert scale.numbers["max_grad_to_weight"] == pytest.approx(1e-12)
    assert result.message.startswith("vanishing: ||dL/dW|| / ||W||")
    assert "jaxgrad.init.kaiming_normal()" in scale.cure


# ----------------------------------------------------------------------------- dead, saturated


@pytest.mark.parametrize("rule", ["dead", "saturated"])
@pytest.mark.parametrize(("worst", "fires"), [(0.76, True), (0.74, False)])
def test_dead_and_saturated_fire_above_their_threshold(rule, worst, fires):
    field = f"{rule}_frac"
    fraction = np.full(DEPTH, 0.5)
    fraction[6] = worst
    finding = findings(diagnose(healthy(**{field: fraction})))[rule]
    assert finding.verdict == ("vanishing" if fires else "stable")
    assert finding.threshold == {"dead": stats.DEAD_THRESHOLD, "saturated": 0.75}[rule]
    assert finding.numbers[f"max_{field}"] == worst
    assert finding.numbers["max_layer"] == 7
    assert finding.layers == ((7,) if fires else ())
    if fires and rule == "dead":
        assert "leaky_relu" in finding.cure


# ----------------------------------------------------------------------------- non-finite


def test_signal_leaves_out_a_readout_whose_output_is_small_by_design():
    """Layers 1..L-1 hold their std; the readout's logits are 100x smaller (a head drawn at
    a small scale, as many transformers do): judged as a hidden layer it is a collapse, as
    a readout it is not read, and a hidden layer that collapses is still caught."""
    signal = np.ones(DEPTH)
    signal[-1] = 0.01
    assert findings(diagnose(healthy(signal_std=signal)))["signal"].verdict == "vanishing"
    as_readout = findings(diagnose(healthy(signal_std=signal, readout=True)))["signal"]
    assert as_readout.verdict == "stable"
    assert as_readout.numbers["layers_read"] == DEPTH - 1
    signal[3] = 0.01
    hidden = findings(diagnose(healthy(signal_std=signal, readout=True)))["signal"]
    assert hidden.verdict == "vanishing"
    assert hidden.layers == (4,)
    assert "readout=True" in repr(healthy(readout=True))
    with pytest.raises(TypeError, match="Profile.readout must be True or False"):
        diagnose(healthy(readout="yes"))


def test_a_cnn_with_a_small_head_is_not_called_vanishing():
    """inspect's profile marks the head as the readout: a ReLU CNN at He initialization whose
    linear head is drawn at std 1e-4 (logits near 0) is stable on the signal rule; the same
    report read with readout=False calls the head's output a collapse."""
    from flax import nnx

    class SmallHead(nnx.Module):
        def __init__(self, rngs):
            init = jax.nn.initializers.he_normal()
            self.c1 = nnx.Conv(3, 16, (3, 3), kernel_init=init, rngs=rngs)
            self.c2 = nnx.Conv(16, 16, (3, 3), kernel_init=init, rngs=rngs)
            self.head = nnx.Linear(16, 10, kernel_init=jax.nn.initializers.normal(1e-4), rngs=rngs)

        def __call__(self, x):
            h = jax.nn.relu(self.c2(jax.nn.relu(self.c1(x))))
            return self.head(h.mean(axis=(1, 2)))

    def loss_fn(model, batch):
        logits = model(batch)
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[:, 0])

    x = jax.random.normal(jax.random.key(0), (32, 8, 8, 3))
    report = jaxgrad.inspect(SmallHead(nnx.Rngs(0)), loss_fn, x)
    assert findings(diagnose(report))["signal"].verdict == "stable"
    hidden_head = findings(diagnose(report.profile(readout=False)))["signal"]
    assert hidden_head.verdict == "vanishing"
    assert hidden_head.layers == (3,)


def test_nonfinite_signal_and_gradients_are_exploding():
    grad = np.ones(DEPTH)
    grad[2] = np.inf
    result = diagnose(healthy(grad_norm=grad))
    finding = findings(result)["nonfinite"]
    assert result.verdict == finding.verdict == "exploding"
    assert finding.layers == (3,) == result.layers_at_fault
    signal = np.ones(DEPTH)
    signal[5:] = np.nan
    result = diagnose(healthy(signal_std=signal, first_nonfinite=6, first_nonfinite_backward=DEPTH))
    finding = findings(result)["nonfinite"]
    assert result.verdict == "exploding"
    assert result.first_nonfinite_layer == 6
    assert finding.numbers["first_nonfinite"] == 6
    assert finding.numbers["first_nonfinite_backward"] == DEPTH
    assert finding.layers == tuple(range(6, DEPTH + 1))
    assert "from layer 6 on" in finding.message
    assert "jaxgrad.optim.clip_by_global_norm(1.0)" in finding.cure


# ----------------------------------------------------------------------------- precedence


def test_nonfinite_comes_first():
    signal = ramp(1e-3)
    grad = np.ones(DEPTH)
    grad[-1] = np.nan
    result = diagnose(healthy(signal_std=signal, grad_norm=grad))
    assert result.verdict == "exploding"
    assert findings(result)["signal"].verdict == "vanishing"
    assert result.message.startswith("exploding: " + findings(result)["nonfinite"].message)
    assert "gradient_ratio" not in findings(result)  # no ratio of a nan: nonfinite speaks


def test_an_exploding_gradient_beats_a_vanishing_signal():
    result = diagnose(healthy(grad_norm=ramp(1e3)[::-1], signal_std=ramp(1e-3)))
    assert findings(result)["gradient_ratio"].verdict == "exploding"
    assert findings(result)["signal"].verdict == "vanishing"
    assert result.verdict == "exploding"
    assert result.message == (
        f"exploding: {findings(result)['gradient_ratio'].message} (also: signal)"
    )
    text = str(result)
    assert text.splitlines()[0] == result.message
    assert text.count("cure: ") == 2  # both listed, each with its cure


def test_vanishing_without_exploding_and_the_first_rule_leads():
    fraction = np.full(DEPTH, 0.9)
    result = diagnose(healthy(signal_std=ramp(1e-3), dead_frac=fraction))
    assert result.verdict == "vanishing"
    assert result.message.startswith("vanishing: " + findings(result)["signal"].message)
    assert result.message.endswith("(also: dead)")
    assert diagnose(healthy(dead_frac=fraction)).verdict == "vanishing"


def test_mean_field_predictions_do_not_vote():
    result = diagnose(healthy(), activation="tanh", sigma_w2=2.5, sigma_b2=0.05)
    assert findings(result)["mean_field"].verdict == "info"
    assert result.verdict == "stable"


# ----------------------------------------------------------------------------- mean field


def test_mean_field_chaotic_tanh_names_the_critical_point():
    profile = healthy(100, names=tuple(f"dense{i}" for i in range(100)))
    result = diagnose(profile, activation="tanh", sigma_w2=2.5, sigma_b2=0.05)
    finding = findings(result)["mean_field"]
    chi1 = float(theory.chi1("tanh", 2.5, 0.05))
    critical = float(theory.critical_sigma_w2("tanh", 0.05))
    assert theory.phase("tanh", 2.5, 0.05) == "chaotic"
    assert "the chaotic phase" in finding.message
    assert finding.numbers["chi1"] == pytest.approx(chi1, rel=1e-6)
    assert finding.numbers["critical_sigma_w2"] == pytest.approx(critical, rel=1e-6)
    assert finding.numbers["q_star"] == pytest.approx(float(theory.q_star("tanh", 2.5, 0.05)))
    assert finding.numbers["predicted_ratio"] == pytest.approx(chi1 ** (99 / 2), rel=1e-5)
    assert finding.numbers["predicted_ratio"] > stats.BAND
    assert finding.numbers["measured_ratio"] == 1.0
    assert finding.threshold == theory.PHASE_TOLERANCE
    assert f"jaxgrad.init.variance_scaling({critical:.5g}, 'fan_in', 'normal')" in finding.cure
    assert "sigma_b2 = 0.05 is the critical point of tanh" in finding.cure
    assert f"gain {math.sqrt(critical):.4g}" in finding.cure


@pytest.mark.parametrize(
    ("activation", "sigma_w2", "phase"),
    [("tanh", 0.5, "ordered"), ("relu", 2.0, "critical"), ("relu", 4.0, "chaotic")],
)
def test_mean_field_phase_agrees_with_theory(activation, sigma_w2, phase):
    result = diagnose(healthy(), activation=activation, sigma_w2=sigma_w2, sigma_b2=0.0)
    finding = findings(result)["mean_field"]
    assert theory.phase(activation, sigma_w2, 0.0) == phase
    assert f"the {phase} phase" in finding.message
    predicted = float(theory.chi1(activation, sigma_w2, 0.0)) ** ((DEPTH - 1) / 2)
    assert finding.numbers["predicted_ratio"] == pytest.approx(predicted, rel=1e-5)
    inside = 1 / stats.BAND <= predicted <= stats.BAND
    assert (finding.cure == "") == inside
    if activation == "relu" and not inside:
        assert "jaxgrad.init.kaiming_normal()" in finding.cure


def test_mean_field_estimates_sigma_w2_from_the_weights_and_says_so():
    width, depth = 100, 100  # deep enough for chi1 = 1.17 to leave the band: a cure
    weight = np.full(depth, math.sqrt(2.5 * width))  # ||W||^2 / fan_out = 2.5
    profile = healthy(depth, weight_norm=weight, activation="tanh", fan_in=np.full(depth, width))
    finding = findings(diagnose(profile, sigma_b2=0.05))["mean_field"]
    assert finding.numbers["sigma_w2"] == pytest.approx(2.5)
    assert "estimated from the weights" in finding.message
    # sigma_b2 unknown: zero assumed, and said; tanh at 0 has q* = 0: the cure says so
    finding = findings(diagnose(profile))["mean_field"]
    assert finding.numbers["sigma_b2"] == 0.0
    assert "(assumed: zero biases" in finding.message
    assert f"jaxgrad.init.normal({math.sqrt(stats.CURE_SIGMA_B2):.4g})" in finding.cure
    # one fan for every layer
    scalar = findings(diagnose(profile._replace(fan_in=width), sigma_b2=0.05))["mean_field"]
    assert scalar.numbers == findings(diagnose(profile, sigma_b2=0.05))["mean_field"].numbers
    # beyond the theory's range: said, with a cure, no quadrature
    huge = findings(diagnose(profile, sigma_w2=1e20))["mean_field"]
    assert "beyond the theory's range" in huge.message
    assert huge.numbers == {"sigma_w2": 1e20, "sigma_b2": 0.0}
    # neither sigma_w2 nor fans: said, not guessed
    unknown = findings(diagnose(healthy(activation="tanh")))["mean_field"]
    assert unknown.numbers == {}
    assert "sigma_w2 is not" in unknown.message


# ----------------------------------------------------------------------------- seed networks


@pytest.fixture(scope="module")
def seeds():
    return {
        label: jax.device_get(value)
        for label, value in jaxgrad.seed_experiment(jax.random.key(0)).items()
    }


SEED_VERDICTS = {
    "a": ("exploding", "nonfinite"),
    "b": ("stable", None),
    "c": ("vanishing", "signal"),
    "d": ("exploding", "gradient_ratio"),
    "e": ("vanishing", "signal"),
    "f": ("stable", None),
}


@pytest.mark.parametrize("label", list(SEED_VERDICTS))
def test_seed_networks(seeds, label):
    layer_stats = seeds[label]
    result = diagnose(layer_stats)
    verdict, rule = SEED_VERDICTS[label]
    assert result.verdict == verdict
    assert result.message.startswith(f"{verdict}: ")
    if rule is not None:
        lead = findings(result)[rule]
        assert lead.verdict == verdict
        assert result.message.startswith(f"{verdict}: {lead.message}")
    # the numbers the findings read are the statistics'
    pre_std = np.asarray(layer_stats.pre_std, np.float64)
    grad = np.asarray(layer_stats.grad_norm, np.float64)
    if "signal" in findings(result):
        assert findings(result)["signal"].numbers["first_std"] == pre_std[0]
    if "gradient_ratio" in findings(result):
        assert findings(result)["gradient_ratio"].numbers["ratio"] == grad[0] / grad[-1]
    assert result.first_nonfinite_layer == int(layer_stats.first_nonfinite_layer)


def test_seed_network_numbers(seeds):
    c = findings(diagnose(seeds["c"]))
    assert c["gradient_ratio"].verdict == "stable"  # what the old rule read: 1.15
    assert c["signal"].numbers["ratio"] < 1 / stats.SIGNAL_BAND
    e = findings(diagnose(seeds["e"]))
    assert e["scale"].verdict == "vanishing"
    assert e["scale"].numbers["max_grad_to_weight"] < 1e-14
    f = findings(diagnose(seeds["f"]))
    assert 1 / stats.SIGNAL_BAND < f["signal"].numbers["ratio"] < 1
    assert f["dead"].numbers["max_dead_frac"] < stats.DEAD_THRESHOLD
    a = findings(diagnose(seeds["a"]))
    assert a["nonfinite"].numbers["first_nonfinite"] == int(seeds["a"].first_nonfinite_layer)
    assert a["signal"].verdict == "exploding"  # 20x a layer while finite
    assert a["signal"].numbers["rate_per_layer"] == pytest.approx(20, rel=0.05)


SEED_PHASES = {"a": "chaotic", "b": "critical", "c": "critical", "d": "chaotic",
               "e": "ordered", "f": "critical"}  # fmt: skip


@pytest.mark.parametrize("config", jaxgrad.seed_configs(), ids=lambda c: c.label)
def test_seed_networks_with_their_activation(seeds, config):
    profile = seeds[config.label].profile(activation=config.activation, width=400)
    result = diagnose(profile)
    assert result.verdict == SEED_VERDICTS[config.label][0]  # the theory does not vote
    finding = findings(result)["mean_field"]
    phase = SEED_PHASES[config.label]
    assert f"the {phase} phase" in finding.message
    weight = np.asarray(seeds[config.label].weight_norm, np.float64)
    assert finding.numbers["sigma_w2"] == pytest.approx(np.mean(weight**2 / 400))
    assert (finding.cure != "") == (config.label in "ade")
    if config.label == "e":
        assert "jaxgrad.init.kaiming_normal()" in finding.cure
        # mean-field theory predicts the measured collapse of dL/dh within a factor 2
        assert 0.5 < finding.numbers["measured_ratio"] / finding.numbers["predicted_ratio"] < 2


# ----------------------------------------------------------------------------- LayerStats


def test_layer_stats_profile_holds_the_statistics(seeds):
    layer_stats = seeds["a"]
    profile = layer_stats.profile(activation="linear", width=400, sigma_b2=0.0)
    assert profile.names == tuple(f"layer {i}" for i in range(1, 101))
    np.testing.assert_array_equal(profile.signal_std, np.asarray(layer_stats.pre_std))
    np.testing.assert_array_equal(profile.grad_norm, np.asarray(layer_stats.grad_norm))
    np.testing.assert_array_equal(profile.dead_frac, np.asarray(layer_stats.dead_frac))
    np.testing.assert_array_equal(profile.fan_in, np.full(100, 400.0))
    assert profile.first_nonfinite == int(layer_stats.first_nonfinite_layer) == 30
    # every weight gradient is nan (the signal overflowed): the backward pass breaks at once
    assert profile.first_nonfinite_backward == 100
    assert profile.first_nonfinite_backward == max(
        i + 1
        for i in range(100)
        if not (np.isfinite(layer_stats.grad_norm[i]) and np.isfinite(layer_stats.act_grad_norm[i]))
    )
    frame = profile.to_frame()
    assert list(frame["layer"]) == list(range(1, 101))
    np.testing.assert_array_equal(frame["grad_to_weight"], profile.grad_norm / profile.weight_norm)
    assert repr(profile).startswith("Profile of 100 layers ('layer 1' .. 'layer 100')")
    assert "LayerStats of 100 layers, first_nonfinite_layer=30" in repr(layer_stats)


def test_diagnose_is_one_function_everywhere():
    assert jaxgrad.diagnose is stats.diagnose is propagation.diagnose
    assert jaxgrad.Diagnosis is stats.Diagnosis is propagation.Diagnosis


# ----------------------------------------------------------------------------- reading


def test_str_repr_and_frame_agree_with_the_findings():
    result = diagnose(healthy(grad_norm=ramp(1e3)[::-1], dead_frac=np.full(DEPTH, 0.8)))
    text = str(result)
    assert repr(result) == text
    lines = text.splitlines()
    assert lines[0] == result.message
    for finding in result.findings:
        assert f"  - {finding.rule} ({finding.verdict}): {finding.message}" in lines
        if finding.cure:
            assert f"      cure: {finding.cure}" in lines
    frame = result.to_frame()
    assert list(frame["rule"]) == [f.rule for f in result.findings]
    assert list(frame["verdict"]) == [f.verdict for f in result.findings]
    assert frame.loc[frame["rule"] == "dead", "numbers"].item()["max_dead_frac"] == 0.8
    assert str(findings(result)["dead"]).startswith("dead (vanishing): ")


def test_named_layers_appear_in_messages():
    names = tuple(f"conv{i}" for i in range(1, DEPTH + 1))
    grad = np.ones(DEPTH)
    grad[0] = 1e3
    finding = findings(diagnose(healthy(names=names, grad_norm=grad)))["gradient_ratio"]
    assert "'conv1' (layer 1)" in finding.message
    assert f"'conv{DEPTH}' (layer {DEPTH})" in finding.message


def test_findings_take_jax_arrays_and_plain_lists():
    profile = healthy(grad_norm=jnp.ones(DEPTH), weight_norm=[10.0] * DEPTH)
    assert diagnose(profile).verdict == "stable"


# ----------------------------------------------------------------------------- errors


def vmapped_stats() -> LayerStats:
    grad = jnp.ones((2, DEPTH))
    return LayerStats(*([grad] * 10), jnp.full((2,), -1, jnp.int32))


class NotAProfile:
    def profile(self):
        return {"grad_norm": [1.0]}


@pytest.mark.parametrize(
    ("result", "kwargs", "error", "match"),
    [
        ({"grad_norm": [1.0, 2.0]}, {}, TypeError, r"diagnose takes the LayerStats .* got dict"),
        (NotAProfile(), {}, TypeError, r"NotAProfile.profile\(\) must .* got dict"),
        (vmapped_stats(), {}, ValueError, "index the vmapped axis first"),
        (healthy(), {"band": 1.0}, ValueError, "band must be > 1, got 1.0"),
        (healthy(), {"band": 0.5}, ValueError, "band must be > 1, got 0.5"),
        (healthy(), {"signal_band": 1}, ValueError, "signal_band must be > 1, got 1"),
        (healthy(), {"band": "wide"}, TypeError, "band must be a real number, got 'wide'"),
        (healthy(), {"sigma_w2": -1.0}, ValueError, "sigma_w2 must be >= 0, got -1.0"),
        (healthy(), {"activation": "swish2"}, ValueError, "swish2"),
        (healthy(grad_norm=np.ones(3)), {}, ValueError, r"\(10,\) for 10 names, got shape \(3,\)"),
        (healthy(signal_std=np.ones((2, DEPTH))), {}, ValueError, "index the vmapped axis first"),
        (healthy(weight_norm=None), {}, TypeError, "Profile.weight_norm is required"),
        (healthy(names=()), {}, ValueError, "Profile.names is empty"),
        (healthy(names="layer"), {}, TypeError, "Profile.names must be a tuple"),
        (healthy(first_nonfinite=11), {}, ValueError, r"-1 or a layer in \[1, 10\], got 11"),
        (healthy(first_nonfinite=2.0), {}, TypeError, "Profile.first_nonfinite must be an int"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_clearly(result, kwargs, error, match):
    with pytest.raises(error, match=match):
        diagnose(result, **kwargs)


def test_prescribed_initialization_is_the_critical_point_the_cure_names():
    """ReLU: He's sigma_w2 = 2. tanh at sigma_b2 = 0.1: the critical point there, biases
    kept. tanh at sigma_b2 = 0: q* = 0 there, so sigma_b2 = CURE_SIGMA_B2 and its critical
    sigma_w2; the cure's text names the same numbers."""
    from jaxgrad import theory
    from jaxgrad.stats import CURE_SIGMA_B2, prescribe_initialization
    from jaxgrad.stats.diagnosis import _init_cure

    assert prescribe_initialization("relu") == (2.0, 0.0, False)
    kept = prescribe_initialization("tanh", 0.1)
    assert not kept.changes_biases
    assert kept.sigma_w2 == pytest.approx(float(theory.critical_sigma_w2("tanh", 0.1)))
    raised = prescribe_initialization("tanh", 0.0)
    assert raised.changes_biases
    assert raised.sigma_b2 == CURE_SIGMA_B2
    assert raised.sigma_w2 == pytest.approx(float(theory.critical_sigma_w2("tanh", CURE_SIGMA_B2)))
    text = _init_cure("tanh", 0.0)
    assert f"variance_scaling({raised.sigma_w2:.5g}, 'fan_in', 'normal')" in text
    assert f"sigma_b2 = {CURE_SIGMA_B2:g}" in text


# ----------------------------------------------------------------------------- run rules


def run_profile(ratios, dead):
    ratios, dead = np.asarray(ratios, float), np.asarray(dead, float)
    steps = tuple(range(0, 10 * len(ratios), 10))
    return healthy()._replace(steps=steps, update_ratio_history=ratios, dead_frac_history=dead)


def test_stalled_fires_when_a_layer_never_moved():
    depth = healthy().depth
    ratios = np.full((4, depth), 1e-3)
    ratios[:, 2] = [3e-7, 9.9e-7, 5e-7, np.nan]  # below 1e-6 at every measured step
    found = findings(diagnose(run_profile(ratios, np.zeros((4, depth)))))
    assert found["stalled"].verdict == "vanishing"
    assert found["stalled"].layers == (3,)
    assert "steps 0-30" in found["stalled"].message
    ratios[1, 2] = 1.01e-6  # it moved once: not stalled
    assert (
        findings(diagnose(run_profile(ratios, np.zeros((4, depth)))))["stalled"].verdict == "stable"
    )


def test_died_fires_when_units_die_during_training():
    depth = healthy().depth
    dead = np.zeros((3, depth))
    dead[:, 1] = [0.1, 0.5, 0.8]  # above 0.75 at step 20, from 0.1
    dead[:, 3] = [0.9, 0.9, 0.9]  # dead from the start: not "died in training"
    ratios = np.full((3, depth), 1e-3)
    result = diagnose(run_profile(ratios, dead))
    assert findings(result)["died"].layers == (2,)
    assert "first at step 20" in findings(result)["died"].message
    assert result.verdict == "vanishing"
    dead[2, 1] = 0.74
    assert findings(diagnose(run_profile(ratios, dead)))["died"].verdict == "stable"


def test_run_histories_must_match_the_layers():
    with pytest.raises(ValueError, match="update_ratio_history must have shape"):
        diagnose(run_profile(np.zeros((2, 3)), np.zeros((2, healthy().depth))))
