"""Figures: each is written, non-empty, and its artists hold the data it was drawn from."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm

from jaxgrad import plot, theory
from jaxgrad.jacobian import DepthProfile
from jaxgrad.propagation import LayerStats

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEPTH = 6


def assert_png(path):
    assert path.is_file(), f"{path} was not written"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1024, f"{path} is only {len(data)} bytes"


def make_stats(**fields):
    """LayerStats of depth DEPTH from numpy arrays; unnamed fields are 1, 2, ..., DEPTH."""
    base = {name: np.arange(1.0, DEPTH + 1) for name in plot.LAYER_FIELDS}
    base.update({name: np.asarray(value, dtype=np.float64) for name, value in fields.items()})
    return LayerStats(**base, first_nonfinite_layer=np.int32(-1))


def panel_lines(figure, panel):
    ax = figure.axes[panel]
    return [(line.get_xdata(), line.get_ydata()) for line in ax.get_lines()]


# ----------------------------------------------------------------------------- layer_profiles


def test_layer_profiles_draws_finite_positive_values_and_writes_png(tmp_path):
    act_std = np.array([1.0, 0.5, 0.25, 0.0, np.inf, np.nan])
    grad_norm = np.array([3.0, -1.0, 2.0, 1e-30, 1e30, 4.0])
    healthy = make_stats(act_std=act_std, grad_norm=grad_norm)
    overflowed = make_stats(act_std=np.full(DEPTH, np.nan), grad_norm=np.full(DEPTH, -np.inf))
    path = tmp_path / "nested" / "dir" / "profiles.png"

    figure = plot.layer_profiles({"healthy": healthy, "overflowed": overflowed}, path)

    assert_png(path)
    assert isinstance(figure.canvas, FigureCanvasAgg)
    assert len(figure.axes) == 2
    layers = np.arange(1.0, DEPTH + 1)
    for panel, values in enumerate((act_std, grad_norm)):
        ax = figure.axes[panel]
        assert ax.get_yscale() == "log"
        (x, y), (x_empty, y_empty) = panel_lines(figure, panel)
        keep = np.isfinite(values) & (values > 0)
        np.testing.assert_array_equal(x, layers[keep])
        np.testing.assert_array_equal(y, values[keep])
        assert not np.any(np.asarray(y) == 0)
        assert len(x_empty) == len(y_empty) == 0
        legend = [text.get_text() for text in ax.get_legend().get_texts()]
        assert legend == ["healthy", "overflowed (no finite values)"]
    # a label keeps its colour across panels
    colors = [[line.get_color() for line in ax.get_lines()] for ax in figure.axes]
    assert colors[0] == colors[1]
    assert colors[0][0] != colors[0][1]


def test_layer_profiles_of_seeds_draw_the_median_and_a_min_max_band():
    """A LayerStats vmapped over seeds: the line is the median over seeds, the band spans
    their min and max, a layer where any seed is non-finite is left out, relative_to_last
    divides each seed by its own last drawn layer, and the legend's title says so."""
    rng = np.random.default_rng(0)
    act_std = rng.lognormal(size=(5, DEPTH))
    act_std[2, 1] = np.nan  # one seed's layer 2 is not drawn for any seed
    grad_norm = rng.lognormal(size=(5, DEPTH))
    stats = make_stats(act_std=np.zeros(DEPTH), grad_norm=np.zeros(DEPTH))
    stats = stats._replace(act_std=act_std, grad_norm=grad_norm)
    figure = plot.layer_profiles(
        {"seeds": stats, "one": make_stats()}, relative_to_last=("grad_norm",)
    )
    layers = np.arange(1.0, DEPTH + 1)
    keep = np.array([True, False] + [True] * (DEPTH - 2))
    relative = grad_norm / grad_norm[:, -1:]
    for ax, values, kept in ((figure.axes[0], act_std, keep), (figure.axes[1], relative, None)):
        kept = np.ones(DEPTH, bool) if kept is None else kept
        line = ax.get_lines()[0]
        np.testing.assert_array_equal(line.get_xdata(), layers[kept])
        expected = [sorted(values[:, i])[2] for i in np.flatnonzero(kept)]  # 5 seeds: the 3rd
        np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12)
        (band,) = ax.collections
        path = band.get_paths()[0].vertices  # the polygon: the upper edge, then the lower
        heights = {float(x): [] for x in layers[kept]}
        for x, y in path:
            if float(x) in heights:
                heights[float(x)].append(y)
        for i in np.flatnonzero(kept):
            low, high = values[:, i].min(), values[:, i].max()
            assert min(heights[layers[i]]) == pytest.approx(low, rel=1e-12)
            assert max(heights[layers[i]]) == pytest.approx(high, rel=1e-12)
        legend = ax.get_legend()
        assert legend.get_title().get_text() == "median of 5 seeds; band: min to max"
        assert [t.get_text() for t in legend.get_texts()] == ["seeds", "one"]
    with pytest.raises(ValueError, match=r"\(depth,\) or \(seeds, depth\)"):
        plot.layer_profiles({"x": stats._replace(act_std=np.ones((2, 2, DEPTH)))})


def test_layer_profiles_says_when_no_value_is_positive():
    stats = make_stats(act_mean=np.full(DEPTH, -0.5))
    figure = plot.layer_profiles({"relu": stats}, fields=("act_mean",))
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["relu (no positive values)"]


def test_layer_profiles_accepts_jax_arrays_and_a_single_field_name():
    values = jnp.geomspace(1.0, 1e-6, DEPTH)
    stats = jax.tree.map(jnp.asarray, make_stats(grad_norm=np.asarray(values)))
    figure = plot.layer_profiles({"jax": stats}, fields="grad_norm")
    ((x, y),) = panel_lines(figure, 0)
    np.testing.assert_array_equal(x, np.arange(1.0, DEPTH + 1))
    np.testing.assert_allclose(y, np.asarray(values, dtype=np.float64), rtol=1e-7)


def test_layer_profiles_from_a_dataframe_matches_layer_stats(tmp_path):
    stats = make_stats(act_std=np.linspace(2.0, 0.1, DEPTH), act_grad_norm=np.geomspace(1, 9, 6))
    frame = stats.to_frame().sample(frac=1.0, random_state=0)  # rows out of order
    frame["sigma_w2"] = 1.5  # a sweep's extra configuration column
    fields = ("act_std", "act_grad_norm")
    from_stats = plot.layer_profiles({"a": stats}, fields=fields)
    from_frame = plot.layer_profiles({"a": frame}, tmp_path / "frame.png", fields=fields)
    assert_png(tmp_path / "frame.png")
    for panel in range(2):
        ((x_stats, y_stats),) = panel_lines(from_stats, panel)
        ((x_frame, y_frame),) = panel_lines(from_frame, panel)
        np.testing.assert_array_equal(x_frame, x_stats)
        np.testing.assert_array_equal(y_frame, y_stats)


def test_layer_profiles_relative_to_last():
    grad_norm = np.array([8.0, 4.0, 2.0, 1.0, 0.5, np.inf])
    figure = plot.layer_profiles(
        {"a": make_stats(grad_norm=grad_norm)}, relative_to_last=("grad_norm",)
    )
    ((_, act_std),) = panel_lines(figure, 0)
    ((x, y),) = panel_lines(figure, 1)
    np.testing.assert_array_equal(act_std, np.arange(1.0, DEPTH + 1))  # not rescaled
    np.testing.assert_array_equal(x, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(y, [16.0, 8.0, 4.0, 2.0, 1.0])
    assert "relative to the last layer" in figure.axes[1].get_ylabel()


@pytest.mark.parametrize(
    ("curves", "kwargs", "error", "match"),
    [
        ({}, {}, ValueError, "curves is empty"),
        ({"a": make_stats()}, {"fields": ("act_sdt",)}, ValueError, "valid fields: pre_mean"),
        (
            {"a": make_stats().to_frame()},
            {"fields": ("gradnorm",)},
            ValueError,
            "valid fields: .*grad_norm",
        ),
        ({"a": make_stats()}, {"fields": ()}, ValueError, "fields is empty"),
        (
            {"a": make_stats()},
            {"relative_to_last": ("act_grad_norm",)},
            ValueError,
            "not among fields",
        ),
        (
            {"a": jax.tree.map(lambda v: np.stack([[v, v]]), make_stats())},
            {},
            ValueError,
            r"must be \(depth,\) or \(seeds, depth\), got shape \(1, 2, 6\)",
        ),
        (
            {"a": pd.concat([make_stats().to_frame()] * 2)},
            {},
            ValueError,
            "2 rows for layer 1",
        ),
        ({"a": make_stats().to_frame().drop(columns="layer")}, {}, ValueError, "no 'layer'"),
        ({"a": {"act_std": [1.0]}}, {}, TypeError, "LayerStats or a pandas DataFrame"),
        ([make_stats()], {}, TypeError, "mapping"),
    ],
)
def test_layer_profiles_refuses_bad_input(curves, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot.layer_profiles(curves, **kwargs)


# ----------------------------------------------------------------------------- gradient_heatmap


def test_gradient_heatmap_draws_the_ratio_and_the_trainable_depth(tmp_path):
    sigma_w2 = np.array([0.5, 1.0, 1.5, 2.0])
    depths = np.array([10, 20, 40])
    log_ratio = np.array(
        [
            [-3.0, -0.5, 0.5, 2.0],
            [-6.0, -1.0, 1.0, np.inf],
            [np.nan, -2.0, 2.0, 8.0],
        ]
    )
    xi_c = np.array([0.5, np.inf, 4.0, np.nan])
    path = tmp_path / "heatmap.png"

    figure = plot.gradient_heatmap(jnp.asarray(sigma_w2), depths, log_ratio, path, xi_c=xi_c)

    assert_png(path)
    ax = figure.axes[0]
    (mesh,) = ax.collections
    drawn = mesh.get_array()
    np.testing.assert_array_equal(drawn.mask, ~np.isfinite(log_ratio))
    np.testing.assert_array_equal(
        drawn.filled(np.nan), np.where(np.isfinite(log_ratio), log_ratio, np.nan)
    )
    # diverging, centred at 0: symmetric limits from the largest finite magnitude
    assert (mesh.norm.vmin, mesh.norm.vmax) == (-8.0, 8.0)
    assert mesh.get_cmap().name.startswith("RdBu")
    # cells are bounded by the midpoints between the grid's values, half a step past the ends
    corners = mesh.get_coordinates()
    np.testing.assert_allclose(corners[0, :, 0], [0.25, 0.75, 1.25, 1.75, 2.25])
    np.testing.assert_allclose(corners[:, 0, 1], [5.0, 15.0, 30.0, 50.0])
    # depth = 6 xi_c, nan left out, clipped to the depth range [5, 50] (cell edges)
    ((x, y),) = [(line.get_xdata(), line.get_ydata()) for line in ax.get_lines()]
    np.testing.assert_array_equal(x, [0.5, 1.0, 1.5])
    np.testing.assert_array_equal(y, [5.0, 50.0, 24.0])
    assert ax.get_ylim() == (5.0, 50.0)


def test_gradient_heatmap_without_xi_c_draws_no_curve():
    figure = plot.gradient_heatmap([1.0], [5], [[0.0]])
    assert figure.axes[0].get_lines() == []
    assert (figure.axes[0].collections[0].norm.vmin, figure.axes[0].collections[0].norm.vmax) == (
        -1.0,
        1.0,
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (
            ([1.0, 2.0, 3.0], [10, 20], np.zeros((3, 2))),
            {},
            r"= \(2, 3\), got \(3, 2\) \(transpose it\)",
        ),
        (([1.0, 2.0, 3.0], [10, 20], np.zeros(6)), {}, r"\(2, 3\), got \(6,\)"),
        (([1.0, 2.0], [10], np.zeros((1, 2))), {"xi_c": [1.0]}, r"xi_c .*\(2,\), got \(1,\)"),
        (([2.0, 1.0], [10], np.zeros((1, 2))), {}, "sigma_w2 must be strictly increasing"),
        (([1.0, 2.0], [[10]], np.zeros((1, 2))), {}, "depths must be a non-empty 1-D"),
        (([1.0, np.nan], [10], np.zeros((1, 2))), {}, "sigma_w2 must be finite"),
    ],
)
def test_gradient_heatmap_refuses_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot.gradient_heatmap(*args, **kwargs)


# ----------------------------------------------------------------------------- phase_diagram


def test_phase_diagram_from_theory_draws_the_field_and_the_critical_line(tmp_path):
    sigma_w2 = jnp.array([0.5, 1.5, 3.0])
    sigma_b2 = jnp.array([0.0, 0.05])
    diagram = theory.phase_diagram("tanh", sigma_w2, sigma_b2)
    critical = np.array([1.0, 1.76])
    path = tmp_path / "phase.png"

    figure = plot.phase_diagram(diagram, path, critical_sigma_w2=critical)

    assert_png(path)
    ax = figure.axes[0]
    (mesh,) = ax.collections
    xi_c = np.asarray(diagram.xi_c, dtype=np.float64).T  # rows: sigma_b2
    drawable = np.isfinite(xi_c) & (xi_c > 0)
    np.testing.assert_array_equal(mesh.get_array().mask, ~drawable)
    np.testing.assert_array_equal(mesh.get_array().filled(np.nan), np.where(drawable, xi_c, np.nan))
    assert isinstance(mesh.norm, LogNorm)
    ((x, y),) = [(line.get_xdata(), line.get_ydata()) for line in ax.get_lines()]
    np.testing.assert_array_equal(x, critical)
    np.testing.assert_array_equal(y, np.asarray(sigma_b2, dtype=np.float64))


def synthetic_diagram():
    w2, b2 = np.meshgrid([1.0, 2.0, 3.0], [0.0, 0.1], indexing="ij")
    chi1 = np.array([[0.5, 0.6], [1.2, 0.9], [2.0, 1.5]])
    xi_c = np.array([[1.0, 2.0], [np.inf, 50.0], [-1.0, 3.0]])
    return theory.PhaseDiagram(w2, b2, np.ones_like(w2), np.ones_like(w2), chi1, xi_c, xi_c)


def test_phase_diagram_masks_what_a_log_scale_cannot_show_and_drops_nan_critical_points():
    diagram = synthetic_diagram()
    figure = plot.phase_diagram(diagram, critical_sigma_w2=[np.nan, 2.5])
    drawn = figure.axes[0].collections[0].get_array()
    expected_mask = np.array([[False, True, True], [False, False, False]])
    np.testing.assert_array_equal(drawn.mask, expected_mask)
    np.testing.assert_array_equal(drawn.compressed(), [1.0, 2.0, 50.0, 3.0])
    assert (drawn.min(), drawn.max()) == (figure.axes[0].collections[0].norm.vmin, 50.0)
    ((x, y),) = [(line.get_xdata(), line.get_ydata()) for line in figure.axes[0].get_lines()]
    np.testing.assert_array_equal(x, [2.5])
    np.testing.assert_array_equal(y, [0.1])


def test_phase_diagram_other_field_uses_a_linear_scale():
    diagram = synthetic_diagram()
    figure = plot.phase_diagram(diagram, field="chi1")
    mesh = figure.axes[0].collections[0]
    assert not isinstance(mesh.norm, LogNorm)
    np.testing.assert_array_equal(mesh.get_array().filled(np.nan), diagram.chi1.T)
    assert figure.axes[0].get_lines() == []
    linear_xi_c = plot.phase_diagram(diagram, log_color=False).axes[0].collections[0]
    assert not isinstance(linear_xi_c.norm, LogNorm)
    assert linear_xi_c.get_array().count() == 5  # only inf and nan are masked


@pytest.mark.parametrize(
    ("diagram", "kwargs", "error", "match"),
    [
        (synthetic_diagram(), {"field": "chi"}, ValueError, "valid fields: q_star, c_star, chi1"),
        (synthetic_diagram(), {"critical_sigma_w2": [1.0]}, ValueError, r"\(2,\), got \(1,\)"),
        (
            synthetic_diagram()._replace(sigma_w2=np.ones(3)),
            {},
            ValueError,
            "2-D grid",
        ),
        (
            synthetic_diagram()._replace(sigma_w2=np.array([[1.0, 2.0]] * 3)),
            {},
            ValueError,
            "not a grid",
        ),
        (synthetic_diagram()._asdict(), {}, TypeError, "PhaseDiagram"),
    ],
)
def test_phase_diagram_refuses_bad_input(diagram, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot.phase_diagram(diagram, **kwargs)


# ----------------------------------------------------------------------------- spectra_histograms


def test_spectra_histograms_counts_equal_numpy_histogram(tmp_path):
    rng = np.random.default_rng(0)
    spectra = {
        "orthogonal": {10: rng.uniform(0.5, 1.5, 64), 100: rng.uniform(0.2, 2.0, 64)},
        "gaussian": {10: rng.lognormal(0, 1, 64), 100: jnp.asarray(rng.lognormal(0, 3, (2, 64)))},
    }
    path = tmp_path / "spectra.png"

    figure = plot.spectra_histograms(spectra, path, bins=20)

    assert_png(path)
    pooled = np.concatenate([np.ravel(v) for per in spectra.values() for v in per.values()])
    edges = np.geomspace(pooled.min(), pooled.max(), 21)
    for ax, (label, per_depth) in zip(figure.axes, spectra.items(), strict=True):
        assert ax.get_title() == label
        assert ax.get_xscale() == "log"
        assert len(ax.patches) == len(per_depth)
        for patch, values in zip(ax.patches, per_depth.values(), strict=True):
            drawn = patch.get_data()
            np.testing.assert_allclose(drawn.edges, edges, rtol=1e-12)
            counts, _ = np.histogram(np.ravel(np.asarray(values, np.float64)), bins=drawn.edges)
            np.testing.assert_array_equal(drawn.values, counts)
            assert drawn.values.sum() == np.size(values)  # every value is shown
    # a depth keeps its colour across panels
    colors = [[patch.get_edgecolor() for patch in ax.patches] for ax in figure.axes]
    assert colors[0] == colors[1]


def test_spectra_histograms_leaves_out_what_a_log_axis_cannot_show():
    values = np.array([0.0, -1.0, np.nan, np.inf, 0.1, 1.0, 1.0, 10.0, 20.0, 50.0])
    edges = np.array([0.05, 0.5, 5.0, 30.0])
    figure = plot.spectra_histograms({"relu": {50: values}}, bins=edges)
    (patch,) = figure.axes[0].patches
    np.testing.assert_array_equal(patch.get_data().edges, edges)
    np.testing.assert_array_equal(patch.get_data().values, [1, 2, 2])
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["L = 50 (5 of 10 not shown)"]


def test_spectra_histograms_accepts_a_depth_profile():
    spectra = np.array([[2.0, 1.0, 0.5], [4.0, 1.0, 0.25]])
    profile = DepthProfile(np.array([5, 20], np.int32), np.ones(20), spectra)
    figure = plot.spectra_histograms({"tanh": profile}, bins=4)
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["L = 5", "L = 20"]
    edges = np.geomspace(0.25, 4.0, 5)
    for patch, values in zip(figure.axes[0].patches, spectra, strict=True):
        np.testing.assert_array_equal(patch.get_data().values, np.histogram(values, edges)[0])


@pytest.mark.parametrize(
    ("spectra", "kwargs", "error", "match"),
    [
        ({}, {}, ValueError, "spectra is empty"),
        ({"a": {}}, {}, ValueError, r"spectra\['a'\] is empty"),
        ({"a": np.ones(3)}, {}, TypeError, "mapping from depth"),
        ({"a": {"10": np.ones(3)}}, {}, TypeError, "int depths"),
        ({"a": {10: np.ones(3)}}, {"bins": 0}, ValueError, "bins must be >= 1"),
        ({"a": {10: np.ones(3)}}, {"bins": [0.0, 1.0]}, ValueError, "positive"),
        ({"a": {10: np.ones(3)}}, {"bins": [1.0]}, ValueError, ">= 2 edges"),
    ],
)
def test_spectra_histograms_refuses_bad_input(spectra, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot.spectra_histograms(spectra, **kwargs)


def test_no_path_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plot.spectra_histograms({"a": {1: np.ones(4)}})
    plot.layer_profiles({"a": make_stats()})
    plot.run_heatmap(make_history(), "update_ratio")
    plot.run_profiles(make_history(), "update_ratio")
    plot.run_norms(make_history())
    assert list(tmp_path.iterdir()) == []


def nothing_finite_figures(path):
    nan = np.full(DEPTH, np.nan)
    grid_w2, grid_b2 = np.meshgrid([1.0, 2.0], [0.0], indexing="ij")
    empty = np.full_like(grid_w2, np.nan)
    empty_diagram = theory.PhaseDiagram(grid_w2, grid_b2, *[empty] * 5)
    return {
        "layer_profiles": lambda: plot.layer_profiles(
            {"a": make_stats(act_std=nan, grad_norm=nan)}, path
        ),
        "gradient_heatmap": lambda: plot.gradient_heatmap(
            [1.0, 2.0], [3], [[np.nan, np.inf]], path, xi_c=[np.nan, np.nan]
        ),
        "phase_diagram": lambda: plot.phase_diagram(
            empty_diagram, path, critical_sigma_w2=[np.nan]
        ),
        "spectra_histograms": lambda: plot.spectra_histograms({"a": {3: np.zeros(5)}}, path),
        "run_heatmap": lambda: plot.run_heatmap(make_history(fill=np.nan), "grad_norm", path),
        "run_profiles": lambda: plot.run_profiles(make_history(fill=-1.0), "ratio", path=path),
        "run_norms": lambda: plot.run_norms(make_history(fill=np.nan), path),
    }


@pytest.mark.parametrize(
    "name",
    [
        "layer_profiles",
        "gradient_heatmap",
        "phase_diagram",
        "spectra_histograms",
        "run_heatmap",
        "run_profiles",
        "run_norms",
    ],
)
def test_nothing_finite_still_draws_without_warnings(tmp_path, name):
    path = tmp_path / f"{name}.png"
    nothing_finite_figures(path)[name]()  # warnings are errors in this suite
    assert_png(path)


def test_remedy_summary_draws_means_and_log_ratios(tmp_path):
    accuracy = np.array([[0.1, 0.1], [0.9, 0.8], [0.95, 0.97]])
    ratio = np.array([[1e-14, 1e-12], [1.0, 4.0], [0.0, np.nan]])
    path = tmp_path / "remedies.png"
    figure = plot.remedy_summary(["none", "bn", "res"], accuracy, ratio, path, chance=0.1)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    widths = [patch.get_width() for patch in figure.axes[0].patches]
    np.testing.assert_allclose(widths, accuracy.mean(axis=1))
    log_widths = [patch.get_width() for patch in figure.axes[1].patches]
    # geometric mean over seeds; a zero or nan ratio draws no bar
    np.testing.assert_allclose(log_widths, [-13.0, np.log10(2.0), 0.0])
    # bars run top to bottom in the order given
    labels = sorted(figure.axes[0].get_yticklabels(), key=lambda t: -t.get_position()[1])
    assert [t.get_text() for t in labels] == ["none", "bn", "res"]


@pytest.mark.parametrize(
    ("accuracy", "ratio"), [([0.1, 0.2], [1.0, 1.0, 1.0]), ([[[0.1]], [[0.2]], [[0.3]]], [1, 1, 1])]
)
def test_remedy_summary_refuses_bad_shapes(accuracy, ratio):
    with pytest.raises(ValueError, match=r"must have shape \(len\(names\),\)"):
        plot.remedy_summary(["a", "b", "c"], accuracy, ratio)


# ----------------------------------------------------------------------------- recorded runs
# A History as Recorder.history() returns it, with values chosen to exercise every case
# (zero, negative, inf and nan cells; spikes in different statistics; a skipped step whose
# update is zero; a non-finite step recorded again); tests/test_cli.py reports a real run.

MODULES = ("embed", "block.0", "block.1", "head")
PARAMS = (
    "embed.embedding",
    "block.0.bias",
    "block.0.kernel",
    "block.1.bias",
    "block.1.kernel",
    "head.kernel",
)
RECORDED = np.array([0, 4, 8, 12, 13, 16])  # 13: non-finite, recorded again
STEPS = 18
LOSS_SPIKE, UPDATE_SPIKE, SKIPPED = 9, 15, 13


def make_history(rows=PARAMS, recorded=RECORDED, fill=None):
    from jaxgrad.inspection import ModuleStats, ParamStats
    from jaxgrad.recording import STEP_FIELDS, UPDATE_FIELDS, History

    rng = np.random.default_rng(0)
    shape_m, shape_p = (len(recorded), len(MODULES)), (len(recorded), len(rows))
    modules = {f: rng.lognormal(size=shape_m) for f in ModuleStats._fields}
    params = {f: rng.lognormal(size=shape_p) for f in (*ParamStats._fields, *UPDATE_FIELDS)}
    for table in (modules, params):
        for field in [f for f in table if f.startswith("nonfinite")]:
            table[field] = np.zeros(table[field].shape, bool)
    step = np.arange(STEPS)
    steps = {
        "step": step,
        "loss": np.geomspace(2.0, 0.5, STEPS),
        "grad_norm": np.geomspace(1.0, 0.3, STEPS),
        "update_norm": np.geomspace(0.1, 0.03, STEPS),
        "recorded": np.isin(step, recorded).astype(np.float32),
        "rerun": (step == SKIPPED).astype(np.float32),
        "skipped": (step == SKIPPED).astype(np.float32),
        # the recorder's bits: loss 1, gradient norm 2, update norm 4
        "spike": np.where(step == LOSS_SPIKE, 3.0, np.where(step == UPDATE_SPIKE, 4.0, 0.0)),
    }
    steps["loss"][LOSS_SPIKE] = 40.0
    steps["grad_norm"][LOSS_SPIKE] = 30.0
    steps["update_norm"][UPDATE_SPIKE] = 5.0
    steps["loss"][SKIPPED] = steps["grad_norm"][SKIPPED] = np.nan
    steps["update_norm"][SKIPPED] = 0.0  # the guard applied no update
    assert set(steps) == {"step", *STEP_FIELDS}
    if fill is not None:
        for table in (modules, params):
            for field in table:
                if table[field].dtype != bool:
                    table[field] = np.full(table[field].shape, fill)
        for name in ("loss", "grad_norm", "update_norm"):
            steps[name] = np.full(STEPS, fill)
    return History(
        module_names=MODULES,
        module_types=("Embed", "Linear", "Linear", "Linear"),
        param_names=tuple(rows),
        param_owners=tuple(name.rsplit(".", 1)[0] for name in rows),
        param_shapes=tuple((4, 4) for _ in rows),
        activation="relu",
        recorded_steps=np.asarray(recorded),
        loss=steps["loss"][np.asarray(recorded)],
        modules=modules,
        params=params,
        steps=steps,
    )


@pytest.fixture
def history():
    history = make_history()
    grad = history.params["grad_norm"]
    grad[0, 1] = 0.0  # a zero
    grad[2, 3] = np.inf
    grad[3, 5] = -1.0
    grad[4, :] = np.nan  # the non-finite step
    return history


def test_run_heatmap_draws_the_statistic_per_row_and_recorded_step(history, tmp_path):
    path = tmp_path / "heat.png"
    figure = plot.run_heatmap(history, "grad_norm", path)
    assert_png(path)
    ax = figure.axes[0]
    (mesh,) = ax.collections
    cells = history.params["grad_norm"].T  # rows: parameters in forward order
    drawable = np.isfinite(cells) & (cells > 0)
    drawn = mesh.get_array()
    np.testing.assert_array_equal(drawn.mask, ~drawable)
    np.testing.assert_array_equal(drawn.filled(np.nan), np.where(drawable, cells, np.nan))
    assert isinstance(mesh.norm, LogNorm)
    assert (mesh.norm.vmin, mesh.norm.vmax) == (cells[drawable].min(), cells[drawable].max())
    # the first layer at the top, every row named, every recorded step a column
    assert ax.get_ylim() == (len(PARAMS) - 0.5, -0.5)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(PARAMS)
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(s) for s in RECORDED]
    colorbar_label = figure.axes[1].get_ylabel()
    assert colorbar_label.startswith("gradient norm")
    assert colorbar_label.endswith("log scale")
    (note,) = figure.legends[0].get_texts()
    hidden = int((~drawable).sum())
    assert (
        note.get_text() == f"no value: zero, negative, inf or nan ({hidden} of {cells.size} cells)"
    )


def test_run_heatmap_of_module_calls_and_of_chosen_rows(history):
    figure = plot.run_heatmap(history, "out_std", kind="module")
    drawn = figure.axes[0].collections[0].get_array()
    np.testing.assert_array_equal(drawn.filled(np.nan), history.modules["out_std"].T)
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == list(MODULES)
    assert "module call" in figure.axes[0].get_ylabel()
    assert figure.legends == []  # every cell drawn: no note
    kernels = ["head.kernel", "block.0.kernel"]  # drawn in forward order whatever the order
    figure = plot.run_heatmap(history, "update_ratio", rows=kernels)
    drawn = figure.axes[0].collections[0].get_array()
    np.testing.assert_array_equal(drawn.filled(np.nan), history.params["update_ratio"][:, [2, 5]].T)
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels == ["block.0.kernel", "head.kernel"]


def test_run_heatmap_thins_the_labels_of_many_layers():
    rows = [f"blocks.{i}.kernel" for i in range(100)]
    figure = plot.run_heatmap(make_history(rows=rows), "weight_norm")
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert len(labels) <= 48
    assert labels == rows[:: 100 // len(labels) + (100 % len(labels) > 0)]
    assert figure.axes[0].collections[0].get_array().shape == (100, len(RECORDED))
    assert all(t.get_fontsize() >= 8 for t in figure.axes[0].get_yticklabels())


def test_run_profiles_draws_the_chosen_steps_across_depth(history, tmp_path):
    path = tmp_path / "profiles.png"
    figure = plot.run_profiles(history, "grad_norm", path=path)  # first, middle, last
    assert_png(path)
    ax = figure.axes[0]
    assert ax.get_yscale() == "log"
    positions = np.arange(1.0, len(PARAMS) + 1)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    hidden = " (1 of 6 not shown: zero, negative or not finite)"
    assert legend == [f"step 0{hidden}", f"step 8{hidden}", "step 16"]
    for line, row in zip(ax.get_lines(), (0, 2, 5), strict=True):
        values = history.params["grad_norm"][row]
        keep = np.isfinite(values) & (values > 0)
        np.testing.assert_array_equal(line.get_xdata(), positions[keep])
        np.testing.assert_array_equal(line.get_ydata(), values[keep])
    assert [t.get_text() for t in ax.get_xticklabels()] == list(PARAMS)
    chosen = plot.run_profiles(history, "dead_frac", steps=[16, 13], kind="module").axes[0]
    assert [t.get_text() for t in chosen.get_legend().get_texts()] == ["step 16", "step 13"]
    np.testing.assert_array_equal(
        chosen.get_lines()[0].get_ydata(), history.modules["dead_frac"][5]
    )
    one = plot.run_profiles(history, "grad_norm", steps=13).axes[0]
    assert one.get_legend().get_texts()[0].get_text().startswith("step 13 (6 of 6 not shown")


def steps_of(line):
    return np.asarray(line.get_xdata()).tolist()


def test_run_norms_marks_spikes_skips_and_recorded_steps(history, tmp_path):
    path = tmp_path / "norms.png"
    figure = plot.run_norms(history, path)
    assert_png(path)
    assert len(figure.axes) == len(plot.NORM_FIELDS) == 3
    spiked = {"loss": [LOSS_SPIKE], "grad_norm": [LOSS_SPIKE], "update_norm": [UPDATE_SPIKE]}
    for ax, field in zip(figure.axes, plot.NORM_FIELDS, strict=True):
        assert ax.get_yscale() == "log"
        curve, spikes, recorded = ax.get_lines()
        values = history.steps[field]
        drawable = np.isfinite(values) & (values > 0)
        assert steps_of(curve) == list(range(STEPS))  # every step was measured
        np.testing.assert_array_equal(curve.get_ydata(), np.where(drawable, values, np.nan))
        assert spikes.get_label().startswith("spike")
        assert steps_of(spikes) == spiked[field]
        np.testing.assert_array_equal(spikes.get_ydata(), values[spiked[field]])
        assert spikes.get_markeredgecolor() == "red"
        assert recorded.get_label().startswith("recorded")
        assert steps_of(recorded) == RECORDED.tolist()
        (skips,) = ax.collections
        assert skips.get_label().startswith("skipped")
        assert [segment[:, 0].tolist() for segment in skips.get_segments()] == [[SKIPPED] * 2]
    titles = [ax.get_title(loc="left") for ax in figure.axes]
    assert titles == [
        "loss: 1 of 18 steps not shown (1 not finite)",
        "global gradient norm: 1 of 18 steps not shown (1 not finite)",
        "global update norm: 1 of 18 steps not shown (1 zero)",
    ]
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend == [
        "spike flagged by the recorder (2)",
        "step skipped by the guard (1)",
        "recorded step: per-layer statistics (6)",
    ]


def test_run_norms_joins_unmeasured_steps_and_draws_negative_losses_linearly(history):
    history.steps["grad_norm"][6] = np.nan  # not recorded: not measured (check_every_step off)
    history.steps["loss"][:] = np.linspace(-1.0, 1.0, STEPS)
    loss_ax, grad_ax, _ = plot.run_norms(history).axes
    assert loss_ax.get_yscale() == "linear"
    np.testing.assert_array_equal(loss_ax.get_lines()[0].get_ydata(), history.steps["loss"])
    assert 6 not in steps_of(grad_ax.get_lines()[0])
    assert SKIPPED in steps_of(grad_ax.get_lines()[0])  # a gap: nan there
    assert grad_ax.get_title(loc="left").endswith(
        "2 of 18 steps not shown (1 not finite, 1 not measured)"
    )


VALID_PARAM_STATISTICS = (
    "grad_norm, weight_norm, ratio, update_norm, update_ratio, first_moment_norm, "
    "second_moment_norm"
)
BAD_RUN_CALLS = [
    # (function, arguments after the history, keywords, error, message)
    ("run_heatmap", ("grad",), {}, ValueError, "unknown statistic 'grad' for kind='param'"),
    ("run_heatmap", ("grad",), {}, ValueError, f"valid statistics: {VALID_PARAM_STATISTICS}$"),
    ("run_heatmap", ("nonfinite",), {}, ValueError, "unknown statistic 'nonfinite'"),
    ("run_heatmap", ("out_std",), {}, ValueError, "is a module call statistic: pass kind='module'"),
    ("run_heatmap", ("grad_norm",), {"kind": "layer"}, ValueError, "kind must be 'param' or"),
    ("run_heatmap", ("grad_norm",), {"rows": ["x"]}, ValueError, "unknown row 'x' for kind="),
    ("run_heatmap", ("grad_norm",), {"rows": []}, ValueError, "rows is empty"),
    ("run_heatmap", ("grad_norm",), {"rows": "head.kernel"}, TypeError, "rows must be a sequence"),
    ("run_profiles", ("grad_norm", [5]), {}, ValueError, "step 5 was not recorded; recorded steps: "
     "0, 4, 8, 12, 13, 16$"),
    ("run_profiles", ("grad_norm", []), {}, ValueError, "steps is empty"),
    ("run_profiles", ("grad_norm", ["0"]), {}, TypeError, "steps must be ints"),
    ("run_profiles", ("grad_norm", 2.0), {}, TypeError, "steps must be recorded steps"),
]  # fmt: skip


@pytest.mark.parametrize(("function", "args", "kwargs", "error", "match"), BAD_RUN_CALLS)
def test_run_figures_refuse_bad_input(history, function, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        getattr(plot, function)(history, *args, **kwargs)


def test_run_figures_refuse_what_is_not_a_recorded_history(history):
    with pytest.raises(TypeError, match="must be a jaxgrad.recording.History .* got DataFrame"):
        plot.run_profiles(history.to_frame(), "grad_norm")
    with pytest.raises(TypeError, match="got dict"):
        plot.run_norms(history.steps)
    with pytest.raises(ValueError, match="nothing was recorded in this history"):
        plot.run_heatmap(make_history(recorded=np.zeros(0, int)), "grad_norm")


def test_a_long_run_names_its_recorded_steps_in_short():
    history = make_history(recorded=np.arange(17))
    with pytest.raises(
        ValueError, match=r"recorded steps: 0, 1, 2, 3, 4, \.\.\., 14, 15, 16 \(17 steps\)$"
    ):
        plot.run_profiles(history, "grad_norm", steps=[40])


# ----------------------------------------------------------------------------- legibility

LEGIBLE_PT = 9.0  # issue 18: legends and labels at least 9 pt where the browser shows them


def report_column_px():
    """The width, in CSS pixels, of the column the report's page shows images in, read off
    the page's own style (body max-width, images at most 100% of it)."""
    import re

    from jaxgrad.report import html_page

    page = html_page("t", [])
    assert re.search(r"img\{max-width:100%\}", page), "images are no longer fit to the column"
    (width,) = re.findall(r"body\{[^}]*max-width:(\d+)px", page)
    return int(width)


def report_figures():
    """Each figure function the report (and `jaxgrad report RUN_DIR`) draws, on small
    synthetic inputs shaped like the report's: six networks over three fields, four models
    from DataFrames, two spectra, five remedies."""
    layers = np.arange(1.0, 13.0)
    six = {
        f"({letter}) a network with a long description, {index}": make_stats(
            act_std=np.geomspace(1.0, 10.0**-index, DEPTH)
        )
        for index, letter in enumerate("abcdef")
    }
    frames = {
        name: pd.DataFrame(
            {"layer": layers, "signal_std": layers**scale, "grad_to_weight": 1e-3 * layers}
        )
        for scale, name in enumerate(["CNN, N(0, 0.01^2)", "CNN, cured", "bare", "pre-LN"])
    }
    rng = np.random.default_rng(0)
    return {
        "seed_profiles": lambda: plot.layer_profiles(
            six,
            fields=("act_std", "grad_norm", "act_grad_norm"),
            relative_to_last=("grad_norm", "act_grad_norm"),
        ),
        "own_model": lambda: plot.layer_profiles(frames, fields=("signal_std", "grad_to_weight")),
        "phase_diagram": lambda: plot.phase_diagram(
            synthetic_diagram(), critical_sigma_w2=[1.0, 1.8]
        ),
        "gradient_heatmap": lambda: plot.gradient_heatmap(
            [1.0, 1.5, 2.0], [10, 20], np.ones((2, 3)), xi_c=[3.0, np.inf, 4.0]
        ),
        "spectra": lambda: plot.spectra_histograms(
            {
                "tanh, orthogonal": {2: rng.lognormal(size=50), 32: rng.lognormal(size=50)},
                "tanh, gaussian": {2: rng.lognormal(size=50), 32: rng.lognormal(size=50)},
            }
        ),
        "remedies": lambda: plot.remedy_summary(
            ["none", "Kaiming init", "batch norm", "residual", "Adam"],
            [0.1, 0.9, 0.95, 0.93, 0.9],
            [1e-14, 1.0, 2.0, 0.5, 1e-3],
            chance=0.1,
        ),
        "run_heatmap": lambda: plot.run_heatmap(make_history(fill=np.nan), "grad_norm"),
        "run_profiles": lambda: plot.run_profiles(make_history(), "update_ratio"),
        "run_norms": lambda: plot.run_norms(make_history()),
        "coord_check": lambda: plot.coord_check(coord_check_of_three_widths()),
    }


def coord_check_of_three_widths():
    """A `CoordCheck` of two layers at widths 64, 128 and 256, two steps, two seeds."""
    from jaxgrad.scaling.coord import CoordCheck, CoordPoint

    widths = (64, 128, 256)
    points = []
    for width in widths:
        values = np.ones((2, 2, 2, 3))  # (seeds, steps, layers, statistics)
        values[:, :, 0, 0] = width
        points.append(
            CoordPoint(
                width, None, ("a", "b"), (), np.zeros((2, 2)), values, np.zeros((2, 2, 0, 3))
            )
        )
    return CoordCheck(tuple(points), widths, (None,), (0, 1), 2)


@pytest.mark.parametrize("name", list(report_figures()))
def test_report_figures_are_legible_at_the_width_the_page_shows_them(name):
    from matplotlib.text import Text

    figure = report_figures()[name]()
    figure.canvas.draw()  # ticks, offsets and legends are laid out at draw time
    width_px = figure.get_figwidth() * plot.DPI  # the report saves at plot.DPI, no cropping
    shrink = min(1.0, report_column_px() / width_px)
    texts = [
        text
        for text in figure.findobj(Text)
        if text.get_visible() and text.get_text().strip() and text.get_figure() is not None
    ]
    tick_labels = [t for ax in figure.axes for t in ax.get_xticklabels() + ax.get_yticklabels()]
    assert tick_labels
    assert all(any(t is s for s in texts) for t in tick_labels if t.get_text())
    small = [
        f"{text.get_text()!r}: {text.get_fontsize():.1f} pt -> {text.get_fontsize() * shrink:.1f}"
        for text in texts
        if text.get_fontsize() * shrink < LEGIBLE_PT - 1e-9
    ]
    assert not small, f"{name} ({width_px:.0f} px shown at {shrink:.2f}): {small}"
    legends = [ax.get_legend() for ax in figure.axes if ax.get_legend()] + figure.legends
    for legend in legends:  # legend texts are among the texts checked above
        assert all(any(t is s for s in texts) for t in legend.get_texts())


RAW_NAMES = {*plot.LAYER_FIELDS, *plot.PHASE_FIELDS, "signal_std", "grad_to_weight", "layer"}


@pytest.mark.parametrize("name", list(report_figures()))
def test_report_figures_label_their_axes_in_words(name):
    figure = report_figures()[name]()
    labels = [
        label
        for ax in figure.axes
        for label in (ax.get_xlabel(), ax.get_ylabel(), ax.get_title())
        if label
    ]
    assert labels
    raw = [label for label in labels if label in RAW_NAMES or label == "count"]
    assert not raw, f"{name} labels axes with column names: {raw}"


def test_layer_profiles_labels_in_words_and_log_scale():
    figure = plot.layer_profiles(
        {"a": make_stats()},
        fields=("act_std", "grad_norm"),
        relative_to_last=("grad_norm",),
    )
    std_ax, grad_ax = figure.axes
    assert std_ax.get_xlabel() == "layer (forward order)"
    assert std_ax.get_ylabel() == "std of the layer output"
    assert grad_ax.get_ylabel() == "weight-gradient norm, relative to the last layer"
    assert std_ax.get_yscale() == grad_ax.get_yscale() == "log"
    # two panels of 4.5 in fit side by side in the report's column; three wrap to two rows
    assert figure.get_figwidth() * plot.DPI <= report_column_px()
    three = plot.layer_profiles({"a": make_stats()}, fields=("act_std", "pre_std", "grad_norm"))
    rows = {round(ax.get_position().y0, 3) for ax in three.axes}
    assert len(three.axes) == 3
    assert len(rows) == 2
    assert three.get_figwidth() * plot.DPI <= report_column_px()


def test_a_runaway_curve_is_clipped_and_named_not_flattening_the_others():
    """One network's std grows to 1e38 (10^(38 l / 20) at layer l) while two stay near 1 and
    one falls to 1e-16: the panel's top is 100x the second highest curve, the runaway's
    legend says where it leaves, and the falling curve is not clipped."""
    layers = np.arange(1, 21, dtype=float)
    frames = {
        "runaway": pd.DataFrame({"layer": layers, "act_std": 10 ** (38 * layers / 20)}),
        "flat": pd.DataFrame({"layer": layers, "act_std": np.ones(20)}),
        "mild": pd.DataFrame({"layer": layers, "act_std": 1 + layers / 10}),
        "falling": pd.DataFrame({"layer": layers, "act_std": 10 ** (-16 * layers / 20)}),
    }
    figure = plot.layer_profiles(frames, fields=("act_std",))
    ax = figure.axes[0]
    bottom, top = ax.get_ylim()
    assert top == pytest.approx(100 * 3.0)
    assert bottom < 1e-16
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    # 10^(38 l / 20) > 300 first at l = 2 (10^3.8; layer 1 is 10^1.9)
    assert labels[0] == "runaway (off the scale from layer 2: 1e+38)"
    assert labels[1:] == ["flat", "mild", "falling"]
    calm = plot.layer_profiles({k: frames[k] for k in ("flat", "mild", "falling")},
                               fields=("act_std",))  # fmt: skip
    assert calm.axes[0].get_ylim()[1] > 3.0
    assert calm.axes[0].get_ylim()[1] < 100  # autoscaled, not clipped at 100 x 1
    import matplotlib.pyplot as plt

    plt.close("all")


def test_spectra_draw_the_predicted_rms_and_variance_beside_the_histograms():
    """A dashed line at sqrt(mean of s^2) per depth, and each depth's legend entry quotes the
    measured variance of s^2 (numpy's, over the values) beside the predicted one; with
    shared_bins=False each panel spans its own values; bad entries are refused before
    anything is drawn."""
    rng = np.random.default_rng(0)
    narrow, wide = rng.uniform(0.9, 1.1, 64), 10 ** rng.uniform(-6, 0, 64)
    theory = {"narrow": {2: (1.0, 0.21)}, "wide": {8: (9.0, 100.0)}}
    spectra = {"narrow": {2: narrow}, "wide": {8: wide}}
    figure = plot.spectra_histograms(spectra, theory=theory, shared_bins=False)
    first, second = figure.axes
    dashed = [line for line in first.get_lines() if np.size(line.get_xdata())]
    assert [line.get_xdata()[0] for line in dashed] == pytest.approx([1.0])
    labels = [text.get_text() for text in first.get_legend().get_texts()]
    assert labels == [
        f"L = 2: var of s^2 {np.var(narrow**2):.3g}, theory 0.21",
        "theory: rms s, sqrt(mean s^2)",
    ]
    assert first.get_xlim() == pytest.approx((narrow.min(), narrow.max()), rel=1e-9)
    assert second.get_xlim() == pytest.approx((wide.min(), wide.max()), rel=1e-9)
    shared = plot.spectra_histograms(spectra)
    assert shared.axes[0].get_xlim() == pytest.approx(shared.axes[1].get_xlim())
    with pytest.raises(ValueError, match=r"theory\['net'\]\[2\] must be finite"):
        plot.spectra_histograms({"net": {2: narrow}}, theory={"net": {2: (1.0, -1.0)}})
    with pytest.raises(ValueError, match="must be \\(mean of s\\^2, variance of s\\^2\\)"):
        plot.spectra_histograms({"net": {2: narrow}}, theory={"net": {2: 1.0}})
