"""Tests for the demo report: files written, figures embedded, numbers equal their sources."""

import math
import re

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxgrad import data, diagnose, init, nn, report, theory, train
from jaxgrad.propagation import seed_experiment

pytestmark = pytest.mark.slow  # the module's fixture builds the whole demo report (a minute)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, report.build_report(out, log=lambda *_: None)


def test_report_files_are_written_and_self_contained(built):
    out, result = built
    html = (out / "report.html").read_text()
    markdown = (out / "report.md").read_text()
    assert [s.title for s in result.sections] == [
        "Seed experiment", "Order and chaos", "Gradients across depth", "Dynamical isometry",
        "Remedies", "Your own model",
    ]  # fmt: skip
    figures = [(s.figure, s.title) for s in result.sections]
    figures += [figure for s in result.sections for figure in s.figures]
    assert html.count("data:image/png;base64,") == len(figures)
    for section in result.sections:
        assert f"## {section.title}" in markdown
    for figure, caption in figures:
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert caption in markdown


def test_takeaways_head_the_report_and_agree_with_the_tables(built):
    """Every section has a takeaway at the top of the page, linked to the section, and each
    one quotes the numbers of its own table."""
    out, result = built
    html = (out / "report.html").read_text()
    assert html.index("<h2>Takeaways</h2>") < html.index("<h2 id='seed-experiment'>")
    for section in result.sections:
        assert section.takeaway
        assert f"<a href='#{section.anchor}'>" in html
        assert f"<h2 id='{section.anchor}'>" in html
    seed, phase, sweep, spectra, remedies, own = (s for s in result.sections)
    stable = [row[0].split(")")[0] + ")" for row in seed.rows if row[-1] == "stable"]
    assert stable == ["(b)", "(f)"]
    assert all(label in seed.takeaway for label in stable)
    assert "(c) (e) vanishing" in seed.takeaway
    assert "(a) (d) exploding" in seed.takeaway
    assert f"sigma_w2 = {float(phase.rows[0][1]):.3f}" in phase.takeaway
    # the table's cells are "median (min-max)" over the seeds; the takeaway quotes the median
    assert f"from {sweep.rows[0][2].split(' ')[0]} " in sweep.takeaway
    assert f"to {sweep.rows[-1][2].split(' ')[0]} " in sweep.takeaway
    assert all(re.fullmatch(r"\S+ \(\S+-\S+\)", row[2]) for row in sweep.rows), sweep.rows
    deepest = {row[0]: row[2] for row in spectra.rows if row[1] == "32"}
    assert f"{deepest['orthogonal']} with orthogonal" in spectra.takeaway
    assert f"{deepest['gaussian']} with Gaussian" in spectra.takeaway
    quoted = dict(re.findall(r"(?:each: |, )([^,;:]+?) (\d\.\d\d)", remedies.takeaway))
    for row in remedies.rows[1:]:  # the table's 3 significant digits, the takeaway's 2 decimals
        assert float(quoted[row[0]]) == pytest.approx(float(row[1].split(" ")[0]), abs=0.0051)
    assert f"accuracy of {float(remedies.rows[0][1].split(' ')[0]):.2f}" in remedies.takeaway
    assert own.rows[0][1] in own.takeaway
    assert own.rows[1][6] in own.takeaway


def test_seed_rows_equal_the_seed_experiment(built):
    """Five seeds, each run alone here: the table's numbers are their medians with the
    range, its verdicts the most common of diagnose's per seed."""
    _, result = built
    runs = [seed_experiment(jax.random.key(seed)) for seed in range(5)]
    rows = result.sections[0].rows
    for row, label in zip(rows, "abcdef", strict=True):
        std_at_10 = np.array([float(run[label].act_std[9]) for run in runs])
        number = r"\d[\d.]*(?:e[-+]\d+)?"
        cell = rf"({number}) \(({number})-({number})\)"  # median (min-max)
        if np.isfinite(std_at_10).all():
            median, low, high = re.fullmatch(cell, row[2]).groups()
            assert float(median) == pytest.approx(np.median(std_at_10), rel=1e-2)
            assert float(low) == pytest.approx(std_at_10.min(), rel=1e-2)
            assert float(high) == pytest.approx(std_at_10.max(), rel=1e-2)
        ratios = np.array([diagnose(run[label]).ratio for run in runs])
        if np.isfinite(ratios).all():
            assert float(row[6].split(" ")[0]) == pytest.approx(np.median(ratios), rel=1e-2)
    # jaxgrad.diagnose's verdicts (every seed agrees), with the rule each follows from
    verdicts = ["exploding", "stable", "vanishing", "exploding", "vanishing", "stable"]
    assert [row[-1] for row in rows] == verdicts
    for label, verdict in zip("abcdef", verdicts, strict=True):
        assert [diagnose(run[label]).verdict for run in runs] == [verdict] * 5
    assert [row[-2] for row in rows] == [
        "nonfinite",
        "-",
        "signal",
        "gradient_ratio",
        "signal",
        "-",
    ]
    first = sorted({int(run["a"].first_nonfinite_layer) for run in runs})
    assert rows[0][5] == (str(first[0]) if len(first) == 1 else f"{first[0]}-{first[-1]}")
    assert "5 seeds" in result.sections[0].text


def test_phase_rows_equal_theory(built):
    _, result = built
    for sigma_b2, critical in result.sections[1].rows:
        expected = float(theory.critical_sigma_w2("tanh", float(sigma_b2)))
        assert float(critical) == pytest.approx(expected, rel=1e-4)


def test_isometry_rows(built):
    _, result = built
    rows = {(r[0], int(r[1])): r for r in result.sections[3].rows}
    orthogonal = float(rows["orthogonal", 32][2])
    gaussian = float(rows["gaussian", 32][2])
    assert orthogonal < 0.2 < 10 < gaussian
    # Theory for Gaussian weights near q* = 0: L (mu2 / mu1^2) ~ L.
    assert math.isclose(float(rows["gaussian", 2][3]), 2.0, rel_tol=0.05)


def test_remedy_rows(built):
    _, result = built
    section = result.sections[4]
    rows = {row[0]: row for row in section.rows}
    baseline = rows["none: sigmoid, N(0, 0.1^2) weights"]
    # the 20-layer sigmoid network does not learn (10 classes: chance is 0.1) and its first
    # layer's gradient is some 1e-14 of its last layer's; diagnose says vanishing, by the
    # gradient ratio, at the last recorded step
    assert float(baseline[2]) < 0.2
    assert float(baseline[3]) < 1e-8
    assert baseline[4:6] == ["vanishing (step 590)", "gradient_ratio"]
    for name in ("ReLU with He init", "tanh with Xavier init", "batch norm"):
        accuracy, ratio = float(rows[name][2]), float(rows[name][3])
        assert accuracy > 0.8, name
        assert 0.1 < ratio < 10, name
        assert rows[name][4] == "stable (step 590)", name
    # the residual network learns, with a first-layer gradient no longer vanishing
    assert float(rows["residual connections"][2]) > 0.8
    assert float(rows["residual connections"][3]) > 1e-3
    # the accuracy over seeds: mean ± std (min-max) of separate runs of train_many's seeds,
    # as the summary figure draws them; chance for the untreated network at every seed
    number = r"\d[\d.]*(?:e[-+]\d+)?"
    for name, change in (report.REMEDIES[0], report.REMEDIES[2]):
        mean, std, low, high = re.fullmatch(
            rf"({number}) ± ({number}) \(({number})-({number})\)", rows[name][1]
        ).groups()
        options = {"activation": "sigmoid", "kernel_init": init.normal(0.1), **change}
        separate = []
        sgd = optax.sgd(0.1)  # one object: every seed's run reuses the compiled program
        for seed in range(report.REMEDY_SEEDS):
            model = nn.MLP(
                64, 64, report.REMEDY_DEPTH, 10, rngs=nnx.Rngs(jax.random.key(seed)), **options
            )
            history = train.train(
                model, sgd, data.digits(), steps=600, batch_size=64,
                key=jax.random.fold_in(jax.random.key(seed), 1),
            )  # fmt: skip
            separate.append(float(history.test_accuracy[-1]))
        separate = np.array(separate)
        # vmapped and separate runs round differently; 600 steps of SGD amplify that
        assert float(mean) == pytest.approx(separate.mean(), abs=0.01), name
        assert float(low) == pytest.approx(separate.min(), abs=0.02), name
        assert float(high) == pytest.approx(separate.max(), abs=0.02), name
        assert float(std) == pytest.approx(separate.std(), abs=0.01), name
    assert float(rows["none: sigmoid, N(0, 0.1^2) weights"][1].split(" ")[0]) < 0.2
    # one heatmap of the recorded kernel gradient norms per remedy
    assert len(section.figures) == len(report.REMEDIES)


def test_remedy_verdicts_agree_with_a_separate_recorded_run(built):
    """The batch-norm and baseline rows equal separate training runs of the same networks:
    the accuracy, the step-0 ratio recomputed from the layer gradient norms of every step,
    and diagnose's message, whose numbers are those of the recorded rows."""
    _, result = built
    rows = {row[0]: row for row in result.sections[4].rows}
    digits = data.digits()
    for name, change in (report.REMEDIES[0], report.REMEDIES[3]):
        options = {"activation": "sigmoid", "kernel_init": init.normal(0.1), **change}
        model = nn.MLP(64, 64, report.REMEDY_DEPTH, 10, rngs=nnx.Rngs(0), **options)
        history = train.train(
            model, optax.sgd(0.1), digits, steps=600, batch_size=64, key=jax.random.key(0),
            record_every=10,
        )  # fmt: skip
        row = rows[name]
        assert float(row[2]) == pytest.approx(float(history.test_accuracy[-1]), abs=2e-3)
        first = history.layer_names.index("blocks[0].linear")
        last = history.layer_names.index(f"blocks[{report.REMEDY_DEPTH - 1}].linear")
        norms = np.asarray(history.layer_grad_norms[0], np.float64)
        assert float(row[3]) == pytest.approx(norms[first] / norms[last], rel=1e-2)
        verdict = diagnose(history)
        assert row[6] == verdict.message
        # the message quotes the gradient ratio of the judged step's recorded rows
        run = history.recording()
        grads = np.asarray(run.params["grad_norm"][-1], np.float64)
        ratio = (
            grads[run.param_names.index("blocks[0].linear.kernel")]
            / grads[run.param_names.index("readout.kernel")]
        )
        assert f"is {ratio:.3g} times that of 'readout'" in verdict.message


def test_own_model_rows_are_diagnoses_of_the_models_named(built):
    """The collapsed CNN reads vanishing and its cure stable; the transformer without norm
    layers reads exploding, with attention logits far above the pre-LN model's."""
    _, result = built
    cnn, transformer = result.sections[-1].rows
    assert cnn[1:3] == ["vanishing", "signal"]
    assert cnn[6] == "stable"
    high = float(cnn[3].split(" to ")[1])
    assert high < 1e-8  # every kernel's gradient/weight ratio collapsed
    low_after = float(cnn[7].split(" to ")[0])
    assert low_after > 1e-3
    assert transformer[1:3] == ["exploding", "signal"]
    assert float(transformer[4]) > 100
    assert transformer[6] == "stable"
