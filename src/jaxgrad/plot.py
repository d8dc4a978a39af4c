"""Figures of jaxgrad's results, drawn with matplotlib: the edge of the library, never imported
by the numeric core.

- `layer_profiles(curves)`: per-layer activation std and gradient norms on a log scale, one
  panel per statistic and one curve per network (Glorot and Bengio 2010, figures 3-7).
- `gradient_heatmap(sigma_w2, depths, log_ratio)`: log10 of a gradient ratio over
  (sigma_w2, depth), with the trainability bound depth = 6 xi_c on top (Schoenholz et al.
  2017, figure 5).
- `phase_diagram(diagram)`: a `jaxgrad.theory.PhaseDiagram` field over (sigma_w2, sigma_b2),
  with the critical line chi1 = 1 on top (Poole et al. 2016, Schoenholz et al. 2017).
- `spectra_histograms(spectra)`: histograms of the Jacobian's singular values at several
  depths (Pennington, Schoenholz and Ganguli 2017, figure 1).
- `run_heatmap(history, statistic)`, `run_profiles(history, statistic, steps)` and
  `run_norms(history)`: a training run recorded by `jaxgrad.recording`: a layer x step
  heatmap of any per-layer statistic (log colour scale), its depth profiles at chosen
  recorded steps, and the loss and global norms over the steps with spikes, guard skips
  and recorded steps marked (`jaxgrad report RUN_DIR` puts them in a page).

Every function builds a `matplotlib.figure.Figure` with its own Agg canvas, not through
`matplotlib.pyplot`, so no GUI is needed, no global figure registry fills up and no state
passes from one call to the next. Figures are sized for the HTML report's content column
(`PAGE_WIDTH_PX`; panels in rows of as many as fit), and every text in them is at least
`MIN_FONT_PT` points at the size the page shows the image. Each returns the Figure; given
`path`, it also writes the image there (PNG unless the suffix names another format
matplotlib knows), creating the parent directories. Arrays may be numpy or jax arrays. The
data each artist holds are the data given (after leaving out what cannot be drawn, as each
function says), so a figure can be checked against the results it was drawn from.

Example:
    >>> import numpy as np
    >>> from jaxgrad import plot
    >>> fig = plot.gradient_heatmap([1.0, 2.0], [10, 20], np.zeros((2, 2)))
    >>> fig.axes[0].get_ylabel()
    'depth (layers)'

References:
    Glorot and Bengio 2010, "Understanding the difficulty of training deep feedforward neural
    networks". Poole, Lahiri, Raghu, Sohl-Dickstein and Ganguli 2016, "Exponential
    expressivity in deep neural networks through transient chaos". Schoenholz, Gilmer, Ganguli
    and Sohl-Dickstein 2017, "Deep Information Propagation". Pennington, Schoenholz and
    Ganguli 2017, "Resurrecting the sigmoid in deep learning through dynamical isometry:
    theory and practice".
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

try:
    import matplotlib.colors as _colors
    import matplotlib.transforms as _transforms
    from matplotlib import colormaps as _colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "jaxgrad.plot needs matplotlib; install it with `pip install matplotlib`"
    ) from error

from jaxgrad.jacobian import DepthProfile
from jaxgrad.propagation import LayerStats
from jaxgrad.theory import PhaseDiagram

if TYPE_CHECKING:
    from jaxgrad.recording import History

__all__ = [
    "gradient_heatmap",
    "layer_profiles",
    "phase_diagram",
    "remedy_summary",
    "run_heatmap",
    "run_norms",
    "run_profiles",
    "spectra_histograms",
]

DPI = 120
"""Resolution of the written images, in dots per inch."""

PAGE_WIDTH_PX = 1100
"""Width of the HTML report's content column in CSS pixels (`jaxgrad.report`'s page style
sets the body's max-width to it, and an image wider than the column is shown scaled down
to it): a figure W inches wide is shown at min(1, PAGE_WIDTH_PX / (W * DPI)) of its size."""

MIN_FONT_PT = 9.0
"""The smallest text, in points, a figure shows at the size the report displays it: titles,
axis and tick labels, legends and colour-bar labels are enlarged to at least
MIN_FONT_PT / scale, scale the display factor of `PAGE_WIDTH_PX`."""

TRAINABLE_DEPTH_FACTOR = 6.0
"""Networks train up to a depth of about this many correlation depth scales xi_c
(Schoenholz et al. 2017, figure 5)."""

LAYER_FIELDS = tuple(name for name in LayerStats._fields if name != "first_nonfinite_layer")
"""The per-layer fields of `LayerStats` that `layer_profiles` can draw."""

PHASE_FIELDS = tuple(name for name in PhaseDiagram._fields if name not in ("sigma_w2", "sigma_b2"))
"""The fields of `PhaseDiagram` that `phase_diagram` can draw."""

_DESCRIPTIONS = {
    "pre_mean": "pre-activation mean",
    "pre_std": "pre-activation std",
    "act_mean": "activation mean",
    "act_std": "activation std",
    "saturated_frac": "saturated fraction",
    "dead_frac": "dead-unit fraction",
    "grad_norm": "weight-gradient norm ||dL/dW_l||",
    "grad_norm_bias": "bias-gradient norm ||dL/db_l||",
    "act_grad_norm": "output-gradient norm ||dL/dh_l||",
    "weight_norm": "weight norm ||W_l||",
    "q_star": "fixed-point length q*",
    "c_star": "fixed-point correlation c*",
    "chi1": "chi1 (per-layer gradient factor)",
    "xi_q": "xi_q (length depth scale)",
    "xi_c": "xi_c (correlation depth scale)",
    "signal_std": "signal std",
    "grad_to_weight": "gradient-to-weight ratio",
}
_AXIS_LABELS = {
    # y labels of the per-layer fields (layer_profiles); the title names the statistic
    "pre_mean": "mean of the pre-activation",
    "pre_std": "std of the pre-activation",
    "act_mean": "mean of the layer output",
    "act_std": "std of the layer output",
    "signal_std": "std of the pre-activation (W_l's output)",
    "saturated_frac": "fraction of units saturated",
    "dead_frac": "fraction of units dead",
    "grad_norm": "weight-gradient norm ||dL/dW_l||",
    "grad_norm_bias": "bias-gradient norm ||dL/db_l||",
    "act_grad_norm": "output-gradient norm ||dL/dh_l||",
    "weight_norm": "weight norm ||W_l||",
    "grad_to_weight": "gradient / weight norm, ||dL/dW_l|| / ||W_l||",
}
_PHASE_LABELS = {
    # colour-bar labels of the phase-diagram fields, with units
    "q_star": "fixed-point length $q^*$ (pre-activation variance)",
    "c_star": "fixed-point correlation $c^*$",
    "chi1": "per-layer gradient factor $\\chi_1$",
    "xi_q": "length depth scale $\\xi_q$ (layers)",
    "xi_c": "correlation depth scale $\\xi_c$ (layers)",
}
_SIZE_LABELS = {"width": "width (units per layer)", "depth": "depth (layers)"}
_COORD_LABELS = {
    # y labels of the coordinate-check statistics (jaxgrad.scaling.STATISTICS)
    "mean_abs": "mean |x| of the output",
    "rms": "rms of the output",
    "change": "mean |x_t - x_0| of the output",
    "grad_rms": "rms of the gradient",
    "update_rms": "rms of the update",
    "update_ratio": "rms of the update / rms of the weight",
}
_SIGMA_W2 = "weight variance $\\sigma_w^2$"
_SIGMA_B2 = "bias variance $\\sigma_b^2$"
_LOG_COLOR_FIELDS = ("q_star", "xi_q", "xi_c")
_DIVERGING = "RdBu_r"
_SEQUENTIAL = "viridis"
_BAD_COLOR = "0.75"  # cells holding inf or nan


# ----------------------------------------------------------------------------- helpers


def _new_figure(
    panels: int, *, panel_size: tuple[float, float] = (4.5, 3.6), stacked: bool = False
) -> Figure:
    """A figure with `panels` axes in rows of as many as fit the report's column side by
    side (or stacked, sharing the x axis) and its own Agg canvas (no pyplot). The axes are
    `figure.axes` in reading order."""
    width, height = panel_size
    fit = max(1, int(PAGE_WIDTH_PX / (DPI * width)))
    columns = 1 if stacked else min(panels, fit)
    rows = -(-panels // columns)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False, sharex=stacked)
    for ax in grid.flat[panels:]:
        figure.delaxes(ax)
    return figure


def _display_scale(figure: Figure) -> float:
    """The factor the report's page shrinks the figure's image by (1 when it fits)."""
    return min(1.0, PAGE_WIDTH_PX / (figure.get_figwidth() * DPI))


def _readable(figure: Figure) -> None:
    """Enlarge every text of the figure below `MIN_FONT_PT` at the displayed size: tick
    labels (also those made when the figure is drawn), titles, axis and colour-bar labels,
    legends and notes."""
    from matplotlib.text import Text

    smallest = MIN_FONT_PT / _display_scale(figure)
    for ax in figure.axes:
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            sizes = [label.get_fontsize() for label in axis.get_ticklabels(which="both")]
            if min(sizes, default=0.0) < smallest:
                ax.tick_params(axis=name, which="both", labelsize=max([smallest, *sizes]))
    for text in figure.findobj(Text):
        if text.get_fontsize() < smallest:
            text.set_fontsize(smallest)


def _finish(figure: Figure, path: str | os.PathLike[str] | None) -> Figure:
    _readable(figure)
    if path is not None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=DPI)
    return figure


def _float_array(name: str, value: Any) -> np.ndarray:
    """`value` as a float64 numpy array (from numpy, jax or a sequence)."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be an array of numbers, got {type(value).__name__}"
        ) from error


def _axis(name: str, value: Any) -> np.ndarray:
    """A 1-D, finite, strictly increasing grid axis."""
    values = _float_array(name, value)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be finite, got {values}")
    if values.size > 1 and not np.all(np.diff(values) > 0):
        raise ValueError(f"{name} must be strictly increasing (sort the grid), got {values}")
    return values


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around increasing cell centres: midpoints, and half a step past each end."""
    if centres.size == 1:
        half = 0.5 * max(abs(centres[0]), 1.0) if centres[0] != 0 else 0.5
        return np.array([centres[0] - half, centres[0] + half])
    middle = (centres[1:] + centres[:-1]) / 2
    first = centres[0] - (middle[0] - centres[0])
    last = centres[-1] + (centres[-1] - middle[-1])
    return np.concatenate([[first], middle, [last]])


def _check_mapping(name: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a mapping from label to results, got {type(value).__name__}"
        )
    if not value:
        raise ValueError(f"{name} is empty: give at least one label")


def _color_map(name: str) -> _colors.Colormap:
    return _colormaps[name].with_extremes(bad=_BAD_COLOR)


def _masked_cells(cells: np.ndarray, log_color: bool) -> tuple[np.ma.MaskedArray, Any]:
    """The cells with what the colour scale cannot show masked (inf and nan; zero and
    negative too on a log scale), and a norm spanning the rest."""
    drawable = np.isfinite(cells) & (cells > 0 if log_color else True)
    shown = cells[drawable]
    if log_color and shown.size:
        low, high = float(shown.min()), float(shown.max())
        norm = _colors.LogNorm(vmin=low, vmax=high if high > low else low * 10)
    elif shown.size:
        low, high = float(shown.min()), float(shown.max())
        norm = _colors.Normalize(vmin=low, vmax=high if high > low else low + 1)
    else:
        norm = _colors.Normalize(vmin=0, vmax=1)
    return np.ma.masked_array(cells, mask=~drawable), norm


# ----------------------------------------------------------------------------- layer profiles


def _profile_columns(label: str, result: Any, fields: tuple[str, ...]) -> tuple[np.ndarray, dict]:
    """(layers, {field: values}) of one curve, from a LayerStats or a DataFrame."""
    if isinstance(result, LayerStats):
        unknown = [field for field in fields if field not in LAYER_FIELDS]
        if unknown:
            raise ValueError(
                f"unknown field {unknown[0]!r} for LayerStats {label!r}; valid fields: "
                f"{', '.join(LAYER_FIELDS)}"
            )
        columns = {field: _float_array(field, getattr(result, field)) for field in fields}
        for field, values in columns.items():
            if values.ndim not in (1, 2):
                raise ValueError(
                    f"LayerStats {label!r} field {field} must be (depth,) or (seeds, depth), "
                    f"got shape {values.shape}; pick one sample, e.g. "
                    "jax.tree.map(lambda a: a[0], stats)"
                )
        depths = {values.shape[-1] for values in columns.values()}
        if len(depths) != 1:
            raise ValueError(f"LayerStats {label!r} fields have different depths: {depths}")
        return np.arange(1, depths.pop() + 1, dtype=np.float64), columns

    import pandas as pd  # a dependency of jaxgrad; imported here to keep module import light

    if not isinstance(result, pd.DataFrame):
        raise TypeError(
            f"curves[{label!r}] must be a LayerStats or a pandas DataFrame, got "
            f"{type(result).__name__}"
        )
    available = [str(column) for column in result.columns if column != "layer"]
    if "layer" not in result.columns:
        raise ValueError(
            f"DataFrame {label!r} has no 'layer' column; columns: {', '.join(available)}"
        )
    unknown = [field for field in fields if field not in result.columns or field == "layer"]
    if unknown:
        raise ValueError(
            f"unknown field {unknown[0]!r} for DataFrame {label!r}; valid fields: "
            f"{', '.join(available)}"
        )
    repeated = result["layer"].duplicated()
    if repeated.any():
        layer = result["layer"][repeated].iloc[0]
        count = int((result["layer"] == layer).sum())
        raise ValueError(
            f"DataFrame {label!r} has {count} rows for layer {layer}: filter it to one "
            "configuration and seed (or average over seeds) first"
        )
    ordered = result.sort_values("layer")
    layers = _float_array(f"DataFrame {label!r} column 'layer'", ordered["layer"].to_numpy())
    columns = {
        field: _float_array(f"DataFrame {label!r} column {field!r}", ordered[field].to_numpy())
        for field in fields
    }
    return layers, columns


def layer_profiles(
    curves: Mapping[str, LayerStats | Any],
    path: str | os.PathLike[str] | None = None,
    *,
    fields: Sequence[str] = ("act_std", "grad_norm"),
    relative_to_last: Collection[str] = (),
) -> Figure:
    """Per-layer statistics of one or more networks, one panel per field, log y scale.

    Each curve has the layer (1-based) on x and the field's value on y. A `LayerStats`
    vmapped over seeds (fields of shape (seeds, depth)) is drawn as the median over its
    seeds with a band from the smallest to the largest, and the legend's title says so.
    Values that a log scale cannot show (inf, nan, zero, negative) are left out of the curve,
    not drawn as zero (with seeds: every layer where any seed has one); a network with none
    left is still listed in that panel's legend, as "label (no finite values)" or
    "label (no positive values)". A label keeps its colour in every panel. When one curve
    rises more than `RUNAWAY_DECADES` above every other (a signal that overflows), the panel
    is clipped at 100 times the next highest curve and that curve's legend entry says from
    which layer it is off the scale and how high it goes.

    Args:
        curves: label -> a `LayerStats` with fields of shape (depth,) (one network), or
            (seeds, depth) (one network vmapped over seeds: median and band), or a pandas
            DataFrame with a `layer` column and one column per field, one row per layer (for
            example `LayerStats.to_frame()`, or a sweep's result filtered to one configuration
            and seed).
        path: where to write the image; None writes nothing.
        fields: the fields to draw, one panel each (see `LAYER_FIELDS`; a DataFrame may hold
            others).
        relative_to_last: fields drawn relative to their last drawn value (a gradient norm
            divided by the last layer's), so curves of different scales compare.

    Returns:
        The matplotlib Figure; `figure.axes[i].get_lines()[j]` is curve j of field i.

    Raises:
        TypeError: curves not a mapping of LayerStats or DataFrames.
        ValueError: no curves or no fields; an unknown field; LayerStats with more than one
            leading axis; a DataFrame without a `layer` column or with several rows for one
            layer.

    Example:
        >>> import numpy as np
        >>> from jaxgrad import LayerStats, plot
        >>> stats = LayerStats(*[np.linspace(1.0, 2.0, 5)] * 10, first_nonfinite_layer=-1)
        >>> fig = plot.layer_profiles({"tanh": stats})
        >>> fig.axes[0].get_lines()[0].get_xdata().tolist()
        [1.0, 2.0, 3.0, 4.0, 5.0]

    References:
        Glorot and Bengio 2010, section 4 (figures 3-7).
    """
    _check_mapping("curves", curves)
    fields = (fields,) if isinstance(fields, str) else tuple(fields)
    if not fields:
        raise ValueError("fields is empty: give at least one field, e.g. ('act_std',)")
    relative = {relative_to_last} if isinstance(relative_to_last, str) else set(relative_to_last)
    if not relative <= set(fields):
        extra = sorted(relative - set(fields))
        raise ValueError(f"relative_to_last names {extra}, which are not among fields {fields}")
    columns = {
        str(label): _profile_columns(str(label), curve, fields) for label, curve in curves.items()
    }

    seeds = {len(v) for _, of in columns.values() for v in of.values() if v.ndim == 2}
    spread = None
    if seeds:
        counted = f"{seeds.pop()} seeds" if len(seeds) == 1 else "the seeds"
        spread = f"median of {counted}; band: min to max"
    entries = len(columns) + (spread is not None)
    figure = _new_figure(len(fields), panel_size=(4.5, 3.6 + 0.6 + 0.22 * entries))
    for ax, field in zip(figure.axes, fields, strict=True):
        y_label = _AXIS_LABELS.get(field, field.replace("_", " "))
        for index, (label, (layers, values_of)) in enumerate(columns.items()):
            values = values_of[field]
            samples = values if values.ndim == 2 else values[None]
            keep = np.all(np.isfinite(samples) & (samples > 0), axis=0)
            x, ys = layers[keep], samples[:, keep]
            if field in relative and x.size:
                ys = ys / ys[:, -1:]  # each seed relative to its own last layer
            if x.size:
                name = label
            elif np.isfinite(values).any():
                name = f"{label} (no positive values)"
            else:
                name = f"{label} (no finite values)"
            color = f"C{index % 10}"
            ax.plot(x, np.median(ys, axis=0) if x.size else x, color=color, label=name)
            if len(ys) > 1 and x.size:
                ax.fill_between(x, ys.min(axis=0), ys.max(axis=0), color=color, alpha=0.2, lw=0)
        ax.set_yscale("log")
        _clip_runaway_curve(ax)
        ax.set_xlabel("layer (forward order)")
        if field in relative:
            y_label = f"{y_label.partition(' ||')[0]}, relative to the last layer"
        ax.set_ylabel(y_label)
        ax.set_title(_DESCRIPTIONS.get(field, field.replace("_", " ")))
        # below the panel, clear of the axis label: inside, a legend of many curves hides
        # the lines it names
        below = _transforms.ScaledTranslation(0.0, -0.5, figure.dpi_scale_trans)
        ax.legend(
            fontsize=MIN_FONT_PT,
            title=spread,
            title_fontsize=MIN_FONT_PT,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            bbox_transform=ax.transAxes + below,
        )
    return _finish(figure, path)


RUNAWAY_DECADES = 10.0
"""A log panel's top is clipped when one curve rises this many decades above every other
(`layer_profiles`): the others would otherwise lie flat along its bottom."""


def _clip_runaway_curve(ax: Any) -> None:
    """Clip a log panel above the other curves when one curve runs away from them (a network
    whose signal overflows to 1e38), and say so in that curve's legend entry."""
    tops = [
        (float(np.max(line.get_ydata())), line)
        for line in ax.get_lines()
        if np.size(line.get_ydata())
    ]
    if len(tops) < 2:
        return
    tops.sort(key=lambda pair: pair[0])
    (highest, runaway), second = tops[-1], tops[-2][0]
    if not np.log10(highest / second) > RUNAWAY_DECADES:
        return
    ceiling = second * 100.0
    x, y = np.asarray(runaway.get_xdata()), np.asarray(runaway.get_ydata())
    leaves = x[np.argmax(y > ceiling)]
    ax.set_ylim(top=ceiling)
    runaway.set_label(f"{runaway.get_label()} (off the scale from layer {leaves:g}: {highest:.0e})")


# ----------------------------------------------------------------------------- heatmaps


def gradient_heatmap(
    sigma_w2: Any,
    depths: Any,
    log_ratio: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    xi_c: Any = None,
    label: str = "log10 gradient ratio",
) -> Figure:
    """A heatmap of log10 of a gradient ratio over (sigma_w2, depth), with 6 xi_c on top.

    The colour map diverges from white at 0 (no vanishing, no explosion) to blue (gradients
    vanish) and red (they explode), symmetric about 0; cells holding inf or nan are grey.
    Given `xi_c`, the curve depth = 6 xi_c(sigma_w2) is drawn on top, clipped to the heatmap's
    depth range (an infinite xi_c at the critical point runs to the top edge; nan is left
    out): Schoenholz et al.'s bound on the depth of trainable networks.

    Args:
        sigma_w2: 1-D increasing weight variances (the columns).
        depths: 1-D increasing depths (the rows).
        log_ratio: log10 of the gradient ratio, shape (len(depths), len(sigma_w2)), e.g.
            log10(||dL/dW_1|| / ||dL/dW_L||) of a network of each depth L.
        path: where to write the image; None writes nothing.
        xi_c: the correlation depth scale at each sigma_w2, shape (len(sigma_w2),), e.g. from
            `jaxgrad.theory.depth_scales`.
        label: the colour bar's label.

    Returns:
        The matplotlib Figure. `figure.axes[0].collections[0]` is the QuadMesh, whose
        `get_array()` is `log_ratio` (inf and nan masked); `figure.axes[0].get_lines()[0]` is
        the 6 xi_c curve.

    Raises:
        ValueError: an axis not 1-D, not finite or not increasing; log_ratio or xi_c of the
            wrong shape.

    Example:
        >>> import numpy as np
        >>> from jaxgrad import plot
        >>> fig = plot.gradient_heatmap([1.0, 2.0, 3.0], [10, 20], np.zeros((2, 3)),
        ...                             xi_c=[5.0, np.inf, 4.0])
        >>> fig.axes[0].get_lines()[0].get_ydata().tolist()
        [25.0, 25.0, 24.0]

    References:
        Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep Information Propagation",
        figure 5.
    """
    sigma_w2 = _axis("sigma_w2", sigma_w2)
    depths = _axis("depths", depths)
    log_ratio = _float_array("log_ratio", log_ratio)
    expected = (depths.size, sigma_w2.size)
    if log_ratio.shape != expected:
        hint = " (transpose it)" if log_ratio.shape == expected[::-1] else ""
        raise ValueError(
            f"log_ratio must have shape (len(depths), len(sigma_w2)) = {expected}, got "
            f"{log_ratio.shape}{hint}"
        )
    if xi_c is not None:
        xi_c = _float_array("xi_c", xi_c)
        if xi_c.shape != sigma_w2.shape:
            raise ValueError(
                f"xi_c must have shape (len(sigma_w2),) = {sigma_w2.shape}, got {xi_c.shape}"
            )

    figure = _new_figure(1, panel_size=(6.0, 4.4))
    ax = figure.axes[0]
    drawn = np.ma.masked_invalid(log_ratio)
    finite = log_ratio[np.isfinite(log_ratio)]
    half_range = float(np.max(np.abs(finite))) if finite.size else 0.0
    half_range = half_range if half_range > 0 else 1.0
    x_edges, y_edges = _edges(sigma_w2), _edges(depths)
    mesh = ax.pcolormesh(
        x_edges,
        y_edges,
        drawn,
        cmap=_color_map(_DIVERGING),
        norm=_colors.Normalize(vmin=-half_range, vmax=half_range),
        shading="flat",
    )
    figure.colorbar(mesh, ax=ax, label=label)
    if xi_c is not None:
        keep = ~np.isnan(xi_c)
        bound = np.clip(TRAINABLE_DEPTH_FACTOR * xi_c[keep], y_edges[0], y_edges[-1])
        ax.plot(sigma_w2[keep], bound, "k--", lw=2, label="$6\\,\\xi_c$ (trainable depth)")
        ax.legend(loc="upper right", fontsize=MIN_FONT_PT)
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(y_edges[0], y_edges[-1])
    ax.set_xlabel(_SIGMA_W2)
    ax.set_ylabel("depth (layers)")
    ax.set_title("gradient ratio across depth")
    return _finish(figure, path)


def _grid_axes(diagram: PhaseDiagram) -> tuple[np.ndarray, np.ndarray]:
    """The sigma_w2 and sigma_b2 axes of a phase diagram's (len(w2), len(b2)) grid."""
    w2_grid = _float_array("diagram.sigma_w2", diagram.sigma_w2)
    b2_grid = _float_array("diagram.sigma_b2", diagram.sigma_b2)
    if w2_grid.ndim != 2 or w2_grid.shape != b2_grid.shape:
        raise ValueError(
            "diagram must be a 2-D grid from jaxgrad.theory.phase_diagram, got sigma_w2 of "
            f"shape {w2_grid.shape} and sigma_b2 of shape {b2_grid.shape}"
        )
    sigma_w2, sigma_b2 = w2_grid[:, 0], b2_grid[0, :]
    if not (
        np.array_equal(w2_grid, np.broadcast_to(sigma_w2[:, None], w2_grid.shape))
        and np.array_equal(b2_grid, np.broadcast_to(sigma_b2[None, :], b2_grid.shape))
    ):
        raise ValueError(
            "diagram is not a grid: sigma_w2 must vary along axis 0 only and sigma_b2 along "
            "axis 1 only, as jaxgrad.theory.phase_diagram returns them"
        )
    return _axis("diagram.sigma_w2", sigma_w2), _axis("diagram.sigma_b2", sigma_b2)


def phase_diagram(
    diagram: PhaseDiagram,
    path: str | os.PathLike[str] | None = None,
    *,
    critical_sigma_w2: Any = None,
    field: str = "xi_c",
    log_color: bool | None = None,
) -> Figure:
    """A field of a mean-field phase diagram over (sigma_w2, sigma_b2), with the critical line.

    Cells are coloured by the field; where the colour scale is logarithmic (by default for the
    depth scales xi_q, xi_c and for q_star, which span decades) zero and negative cells are
    masked, as are inf and nan ones, and drawn grey. Given `critical_sigma_w2`, the line
    sigma_w2 = critical_sigma_w2(sigma_b2), where chi1 = 1, is drawn on top (nan values, where
    chi1 does not cross 1, are left out) and the view is kept to the grid.

    Args:
        diagram: a `jaxgrad.theory.PhaseDiagram` of shape (len(sigma_w2), len(sigma_b2)), as
            `jaxgrad.theory.phase_diagram` returns it.
        path: where to write the image; None writes nothing.
        critical_sigma_w2: the critical sigma_w2 at each of the diagram's sigma_b2, shape
            (len(sigma_b2),), e.g. `jaxgrad.theory.critical_sigma_w2(activation, sigma_b2)`.
        field: the field to colour by, one of `PHASE_FIELDS`.
        log_color: a logarithmic colour scale; None chooses it for q_star, xi_q and xi_c.

    Returns:
        The matplotlib Figure. `figure.axes[0].collections[0]` is the QuadMesh, whose
        `get_array()` is the field transposed to (sigma_b2, sigma_w2) with what cannot be
        drawn masked; `figure.axes[0].get_lines()[0]` is the critical line.

    Raises:
        TypeError: diagram not a PhaseDiagram.
        ValueError: an unknown field; a diagram that is not a grid; critical_sigma_w2 of the
            wrong shape.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import plot, theory
        >>> sigma_b2 = jnp.array([0.0, 0.05])
        >>> grid = theory.phase_diagram("tanh", jnp.linspace(1, 4, 4), sigma_b2)
        >>> critical = theory.critical_sigma_w2("tanh", sigma_b2)
        >>> fig = plot.phase_diagram(grid, critical_sigma_w2=critical)
        >>> fig.axes[0].collections[0].get_array().shape
        (2, 4)

    References:
        Poole et al. 2016, figure 2; Schoenholz et al. 2017, figure 1.
    """
    if not isinstance(diagram, PhaseDiagram):
        raise TypeError(
            f"diagram must be a jaxgrad.theory.PhaseDiagram, got {type(diagram).__name__}"
        )
    if field not in PHASE_FIELDS:
        raise ValueError(f"unknown field {field!r}; valid fields: {', '.join(PHASE_FIELDS)}")
    sigma_w2, sigma_b2 = _grid_axes(diagram)
    values = _float_array(f"diagram.{field}", getattr(diagram, field))
    if values.shape != (sigma_w2.size, sigma_b2.size):
        raise ValueError(
            f"diagram.{field} must have the grid's shape {(sigma_w2.size, sigma_b2.size)}, got "
            f"{values.shape}"
        )
    if critical_sigma_w2 is not None:
        critical_sigma_w2 = _float_array("critical_sigma_w2", critical_sigma_w2)
        if critical_sigma_w2.shape != sigma_b2.shape:
            raise ValueError(
                "critical_sigma_w2 must have one value per sigma_b2, shape "
                f"{sigma_b2.shape}, got {critical_sigma_w2.shape}"
            )
    log_color = field in _LOG_COLOR_FIELDS if log_color is None else bool(log_color)

    figure = _new_figure(1, panel_size=(6.0, 4.4))
    ax = figure.axes[0]
    drawn, norm = _masked_cells(values.T, log_color)  # rows: sigma_b2, columns: sigma_w2
    x_edges, y_edges = _edges(sigma_w2), _edges(sigma_b2)
    mesh = ax.pcolormesh(
        x_edges, y_edges, drawn, cmap=_color_map(_SEQUENTIAL), norm=norm, shading="flat"
    )
    figure.colorbar(mesh, ax=ax, label=_PHASE_LABELS.get(field, field))
    if critical_sigma_w2 is not None:
        keep = np.isfinite(critical_sigma_w2)
        ax.plot(
            critical_sigma_w2[keep],
            sigma_b2[keep],
            "w--",
            lw=2,
            label="critical line $\\chi_1 = 1$",
        )
        ax.legend(loc="upper left", fontsize=MIN_FONT_PT)
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(y_edges[0], y_edges[-1])
    ax.set_xlabel(_SIGMA_W2)
    ax.set_ylabel(_SIGMA_B2)
    ax.set_title("ordered (left) | chaotic (right)")
    return _finish(figure, path)


# ----------------------------------------------------------------------------- spectra


def _spectra_of(label: str, value: Any) -> dict[int, np.ndarray]:
    """{depth: singular values (flattened)} from a mapping or a DepthProfile."""
    if isinstance(value, DepthProfile):
        depths = np.asarray(value.depths)
        spectra = _float_array(f"spectra[{label!r}].spectra", value.spectra)
        if depths.ndim != 1 or spectra.ndim != 2:
            raise ValueError(
                f"DepthProfile {label!r} must hold one network (depths 1-D, spectra 2-D), got "
                f"shapes {depths.shape} and {spectra.shape}"
            )
        value = dict(zip(depths.tolist(), spectra, strict=True))
    if not isinstance(value, Mapping):
        raise TypeError(
            f"spectra[{label!r}] must be a mapping from depth to singular values or a "
            f"jaxgrad.jacobian.DepthProfile, got {type(value).__name__}"
        )
    if not value:
        raise ValueError(f"spectra[{label!r}] is empty: give at least one depth")
    result = {}
    for depth, values in value.items():
        if isinstance(depth, bool) or not isinstance(depth, int | np.integer):
            raise TypeError(f"spectra[{label!r}] keys must be int depths, got {depth!r}")
        result[int(depth)] = _float_array(f"spectra[{label!r}][{depth}]", values).reshape(-1)
    return result


def _bin_edges(bins: Any, spectra: dict[str, dict[int, np.ndarray]]) -> np.ndarray:
    if isinstance(bins, int | np.integer) and not isinstance(bins, bool):
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        pooled = np.concatenate([v for per_depth in spectra.values() for v in per_depth.values()])
        positive = pooled[np.isfinite(pooled) & (pooled > 0)]
        low, high = (positive.min(), positive.max()) if positive.size else (0.1, 10.0)
        if high <= low * (1 + 1e-9):
            low, high = low / 2, high * 2
        return np.geomspace(low, high, int(bins) + 1)
    edges = _float_array("bins", bins)
    if edges.ndim != 1 or edges.size < 2:
        raise ValueError(f"bins must be an int or a 1-D array of >= 2 edges, got {bins!r}")
    if not (np.all(np.isfinite(edges)) and edges[0] > 0 and np.all(np.diff(edges) > 0)):
        raise ValueError(
            f"bin edges must be finite, positive (the axis is logarithmic) and increasing, "
            f"got {edges}"
        )
    return edges


def spectra_histograms(
    spectra: Mapping[str, Mapping[int, Any] | DepthProfile],
    path: str | os.PathLike[str] | None = None,
    *,
    bins: int | Any = 60,
    theory: Mapping[str, Mapping[int, Any]] | None = None,
    shared_bins: bool = True,
) -> Figure:
    """Histograms of singular values of the Jacobian, one panel per network, one per depth.

    The x axis is logarithmic and, by default, every panel shares the same bins, so spectra
    compare across networks. Each histogram is a step outline (`Axes.stairs`) of the counts.
    Zero, negative and non-finite values, and values outside explicit bins, cannot be drawn
    and are left out; the legend then says how many, "L = 50 (3 of 128 not shown)". A depth
    keeps its colour in every panel.

    Args:
        spectra: label -> {depth: singular values}, or label -> a `jaxgrad.jacobian.
            DepthProfile` (its `depths` and `spectra`). Values of any shape are pooled (several
            seeds, say).
        path: where to write the image; None writes nothing.
        bins: the number of log-spaced bins spanning every positive finite value, or the bin
            edges (1-D, positive, increasing).
        theory: label -> {depth: (mean of s^2, variance of s^2)} predicted (for example
            `jaxgrad.theory.jacobian_spectrum`'s `mean_sq` and `var_sq`), drawn beside the
            measurement: a dashed line in the depth's colour at the predicted rms singular
            value sqrt(mean), and the legend entry "L = 32: var of s^2 34.8, theory 32.1"
            (measured over the values drawn). Labels and depths not given draw none.
        shared_bins: one set of bins for every panel (False: each panel's own, spanning its
            values, so a narrow spectrum beside a wide one still shows its shape).

    Returns:
        The matplotlib Figure; `figure.axes[i].patches[j].get_data().values` are the counts of
        depth j of label i, and `.edges` the bin edges; the theory lines are
        `figure.axes[i].get_lines()`, one per depth given.

    Raises:
        TypeError: spectra not a mapping of mappings (or DepthProfiles); a depth not an int.
        ValueError: an empty mapping; bad bins; a theory entry that is not two finite numbers
            (mean >= 0, variance >= 0).

    Example:
        >>> import numpy as np
        >>> from jaxgrad import plot
        >>> fig = plot.spectra_histograms({"orthogonal": {10: np.ones(8), 100: np.full(8, 2.0)}})
        >>> int(fig.axes[0].patches[0].get_data().values.sum())
        8

    References:
        Pennington, Schoenholz and Ganguli 2017, figure 1.
    """
    _check_mapping("spectra", spectra)
    per_label = {str(label): _spectra_of(str(label), value) for label, value in spectra.items()}
    predictions = {  # every entry checked before anything is drawn
        (str(label), depth): _predicted_moments(theory, label, depth)
        for label, per_depth in (theory or {}).items()
        for depth in per_depth
    }
    edges_of = {
        label: _bin_edges(bins, per_label if shared_bins else {label: per_label[label]})
        for label in per_label
    }
    all_depths = sorted({depth for per_depth in per_label.values() for depth in per_depth})
    color_of = {depth: f"C{index % 10}" for index, depth in enumerate(all_depths)}

    figure = _new_figure(len(per_label), panel_size=(4.4, 3.7))
    for ax, (label, per_depth) in zip(figure.axes, per_label.items(), strict=True):
        edges = edges_of[label]
        drew_theory = False
        for depth, values in per_depth.items():
            drawable = values[np.isfinite(values) & (values > 0)]
            counts, _ = np.histogram(drawable, bins=edges)
            name = f"L = {depth}"
            predicted = predictions.get((label, depth))
            if predicted is not None:
                mean, std = predicted
                measured = float(np.var(np.square(drawable))) if drawable.size else math.nan
                name += f": var of s^2 {measured:.3g}, theory {std**2:.3g}"
                ax.axvline(math.sqrt(mean), color=color_of[depth], linestyle="--")
                drew_theory = True
            hidden = values.size - int(counts.sum())
            if hidden:
                name += f" ({hidden} of {values.size} not shown)"
            ax.stairs(counts, edges, color=color_of[depth], label=name)
        if drew_theory:
            ax.plot([], [], color="0.35", linestyle="--", label="theory: rms s, sqrt(mean s^2)")
        ax.set_xscale("log")
        ax.set_xlim(edges[0], edges[-1])
        ax.set_xlabel("singular value of the input-output Jacobian")
        ax.set_ylabel("number of singular values")
        ax.set_title(label)
        ax.legend(fontsize=MIN_FONT_PT)
    return _finish(figure, path)


def _predicted_moments(theory: Any, label: str, depth: int) -> tuple[float, float]:
    """(mean of s^2, std of s^2) of `theory[label][depth]`, checked."""
    try:
        mean, variance = (float(value) for value in theory[label][depth])
    except (TypeError, ValueError):
        raise ValueError(
            f"theory[{label!r}][{depth}] must be (mean of s^2, variance of s^2), got "
            f"{theory[label][depth]!r}"
        ) from None
    if not (math.isfinite(mean) and math.isfinite(variance) and mean >= 0 and variance >= 0):
        raise ValueError(
            f"theory[{label!r}][{depth}] must be finite, mean >= 0 and variance >= 0, got "
            f"({mean}, {variance})"
        )
    return mean, math.sqrt(variance)


# ----------------------------------------------------------------------------- remedies


def remedy_summary(
    names: Sequence[str],
    test_accuracy: Any,
    grad_ratio: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    chance: float | None = None,
) -> Figure:
    """Two bar charts, one bar per remedy: final test accuracy, and log10 of the first
    layer's gradient norm over the last layer's at the start of training.

    Args:
        names: one label per remedy.
        test_accuracy: (remedies,) or (remedies, seeds); bars show the mean over seeds and,
            with more than one seed, error bars of one standard deviation.
        grad_ratio: the same shapes; bars show log10 of the geometric mean over seeds
            (a ratio of 1 is no vanishing and no explosion; 0 or nan draws no bar).
        path: where to write the image; None writes nothing.
        chance: the accuracy of guessing, drawn as a dashed line.

    Returns:
        The matplotlib Figure. `figure.axes[0].patches[i].get_width()` is remedy i's mean
        accuracy and `figure.axes[1].patches[i].get_width()` its log10 ratio.

    Raises:
        ValueError: when the shapes disagree with `names`.

    Example:
        >>> from jaxgrad import plot
        >>> fig = plot.remedy_summary(["none", "batch norm"], [0.1, 0.9], [1e-14, 1.4])
        >>> round(fig.axes[1].patches[0].get_width())
        -14
    """
    names = [str(name) for name in names]
    accuracy = _float_array("test_accuracy", test_accuracy)
    ratio = _float_array("grad_ratio", grad_ratio)
    for label, values in (("test_accuracy", accuracy), ("grad_ratio", ratio)):
        if values.ndim not in (1, 2) or values.shape[0] != len(names):
            raise ValueError(
                f"{label} must have shape (len(names),) or (len(names), seeds) with "
                f"len(names) = {len(names)}, got {values.shape}"
            )
    accuracy = accuracy.reshape(len(names), -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log10(ratio.reshape(len(names), -1)).mean(axis=1)
    log_ratio = np.where(np.isfinite(log_ratio), log_ratio, 0.0)
    rows = np.arange(len(names))[::-1]
    figure = _new_figure(2, panel_size=(4.5, 0.35 * len(names) + 1.6))
    ax_acc, ax_ratio = figure.axes
    spread = accuracy.std(axis=1) if accuracy.shape[1] > 1 else None
    ax_acc.barh(rows, accuracy.mean(axis=1), xerr=spread, color="tab:blue")
    if chance is not None:
        ax_acc.axvline(chance, color="k", ls="--", lw=1, label="chance")
        ax_acc.legend(fontsize=MIN_FONT_PT, loc="best")
    ax_acc.set_xlim(0, 1)
    seeds = accuracy.shape[1]
    ax_acc.set_xlabel(
        f"test accuracy (mean ± std, {seeds} seeds)" if seeds > 1 else "test accuracy"
    )
    ax_ratio.barh(rows, log_ratio, color=np.where(log_ratio < -2, "tab:red", "tab:green"))
    ax_ratio.axvline(0, color="k", lw=1)
    ax_ratio.set_xlabel("first-layer / last-layer gradient norm (log10)")
    for ax in (ax_acc, ax_ratio):
        ax.set_yticks(rows, names, fontsize=MIN_FONT_PT)
    ax_ratio.tick_params(labelleft=False)
    return _finish(figure, path)


# ----------------------------------------------------------------------------- recorded runs

RUN_KINDS = ("param", "module")
"""The rows a recorded run's per-layer statistics come in: parameter rows
(`History.param_names`) or module calls (`History.module_names`)."""

NORM_FIELDS = ("loss", "grad_norm", "update_norm")
"""The per-step series `run_norms` draws, one panel each (`History.steps`)."""

_RUN_DESCRIPTIONS = {
    "grad_norm": "gradient norm ||dL/dW||",
    "weight_norm": "weight norm ||W||",
    "ratio": "gradient-to-weight ratio ||dL/dW|| / ||W||",
    "update_norm": "update norm ||update||",
    "update_ratio": "update-to-weight ratio ||update|| / ||W||",
    "first_moment_norm": "Adam first-moment norm ||m||",
    "second_moment_norm": "Adam second-moment norm ||v||",
    "in_mean": "input mean",
    "in_std": "input std",
    "in_rms": "input rms",
    "in_max_abs": "input max |x|",
    "out_mean": "output mean",
    "out_std": "output std",
    "out_rms": "output rms",
    "out_max_abs": "output max |y|",
    "out_grad_norm": "output-gradient norm ||dL/d(output)||",
    "dead_frac": "dead-unit fraction of the input",
    "saturated_frac": "saturated fraction of the input",
    "attn_max_logit": "largest attention logit",
    "attn_entropy": "attention entropy (nats)",
}
_NORM_DESCRIPTIONS = {
    "loss": ("loss", "loss"),
    "grad_norm": ("global gradient norm", "||gradient||"),
    "update_norm": ("global update norm", "||update||"),
}
_ROW_WORDS = {"param": "parameter row", "module": "module call"}
_MOST_ROW_LABELS = 48  # tick labels on a layer axis; more layers are labelled every k-th
_MOST_STEP_LABELS = 12


def _run_history(history: Any) -> History:
    """`history` if it is a `jaxgrad.recording.History` (imported here: plot stays light)."""
    from jaxgrad.recording import History

    if not isinstance(history, History):
        raise TypeError(
            "history must be a jaxgrad.recording.History (recorder.history() or "
            f"History.read(folder)), got {type(history).__name__}"
        )
    return history


def _run_statistics(table: Mapping[str, Any]) -> tuple[str, ...]:
    """The numeric statistics of a history's table (not the non-finite flags)."""
    return tuple(
        name
        for name, values in table.items()
        if not name.startswith("nonfinite") and np.asarray(values).dtype != bool
    )


def _steps_text(steps: np.ndarray) -> str:
    """Recorded steps in a line: all of them, or the first and last few and the count."""
    steps = [int(step) for step in steps]
    if len(steps) <= 12:
        return ", ".join(map(str, steps)) if steps else "none"
    shown = ", ".join(map(str, steps[:5])) + ", ..., " + ", ".join(map(str, steps[-3:]))
    return f"{shown} ({len(steps)} steps)"


def _thinned(count: int, most: int) -> np.ndarray:
    """Every k-th index of `count`, from the first, k the smallest giving at most `most`."""
    return np.arange(0, count, max(1, -(-count // most)))


def _run_table(
    history: Any, statistic: str, kind: str, rows: Sequence[str] | None = None
) -> tuple[tuple[str, ...], np.ndarray]:
    """(row names in forward order, values of shape (recorded steps, rows)) of a statistic,
    for every row or the chosen ones."""
    history = _run_history(history)
    if kind not in RUN_KINDS:
        raise ValueError(f"kind must be 'param' or 'module', got {kind!r}")
    tables = {"param": history.params, "module": history.modules}
    valid = _run_statistics(tables[kind])
    if statistic not in valid:
        other = "module" if kind == "param" else "param"
        hint = ""
        if statistic in _run_statistics(tables[other]):
            hint = f"; {statistic!r} is a {_ROW_WORDS[other]} statistic: pass kind={other!r}"
        raise ValueError(
            f"unknown statistic {statistic!r} for kind={kind!r}; valid statistics: "
            f"{', '.join(valid)}{hint}"
        )
    names = history.param_names if kind == "param" else history.module_names
    if not len(history.recorded_steps):
        raise ValueError("nothing was recorded in this history: no recorded step to draw")
    if not names:
        raise ValueError(f"this history has no {_ROW_WORDS[kind]}s to draw")
    values = _float_array(statistic, tables[kind][statistic])
    expected = (len(history.recorded_steps), len(names))
    if values.shape != expected:
        raise ValueError(
            f"history.{'params' if kind == 'param' else 'modules'}[{statistic!r}] must have "
            f"shape (recorded steps, rows) = {expected}, got {values.shape}"
        )
    if rows is None:
        return tuple(names), values
    if isinstance(rows, str) or not isinstance(rows, Collection):
        raise TypeError(f"rows must be a sequence of row names or None, got {rows!r}")
    unknown = [row for row in rows if row not in names]
    if unknown:
        raise ValueError(
            f"unknown row {unknown[0]!r} for kind={kind!r}; rows: {_names_text(names)}"
        )
    if not rows:
        raise ValueError("rows is empty: give row names, or None for every row")
    chosen = [index for index, name in enumerate(names) if name in set(rows)]
    return tuple(names[i] for i in chosen), values[:, chosen]


def _names_text(names: Sequence[str]) -> str:
    if len(names) <= 12:
        return ", ".join(names)
    return f"{', '.join(names[:6])}, ..., {', '.join(names[-3:])} ({len(names)} rows)"


def _run_description(statistic: str) -> str:
    return _RUN_DESCRIPTIONS.get(statistic, _DESCRIPTIONS.get(statistic, statistic))


def run_heatmap(
    history: History,
    statistic: str,
    path: str | os.PathLike[str] | None = None,
    *,
    kind: str = "param",
    rows: Sequence[str] | None = None,
) -> Figure:
    """A layer x step heatmap of one per-layer statistic of a recorded run, log colour scale.

    Rows are the layers in forward order (the first at the top): parameter rows
    (`history.param_names`) or module calls (`history.module_names`); columns are the
    recorded steps, one column each, ticked with their step. Zero, negative, inf and nan
    cells cannot be placed on a log scale: they are drawn grey, and a note under the map
    says how many there are. With many layers, every k-th is labelled.

    Args:
        history: a `jaxgrad.recording.History` (`recorder.history()`, `History.read`).
        statistic: a numeric field of `history.params` (kind "param": grad_norm,
            weight_norm, ratio, update_norm, update_ratio, first_moment_norm,
            second_moment_norm) or of `history.modules` (kind "module": in_std, out_std,
            out_grad_norm, dead_frac, ...).
        path: where to write the image; None writes nothing.
        kind: "param" or "module".
        rows: the names of the rows to draw (drawn in forward order); None draws all.

    Returns:
        The matplotlib Figure. `figure.axes[0].collections[0]` is the QuadMesh, whose
        `get_array()` is the statistic transposed to (rows, recorded steps), with what the
        log scale cannot show masked.

    Raises:
        TypeError: history not a History.
        ValueError: an unknown kind, statistic or row (the valid ones are named); nothing
            recorded.

    Example:
        >>> import numpy as np
        >>> from jaxgrad import plot
        >>> from jaxgrad.recording import History
        >>> history = History(("dense",), ("Linear",), ("dense.kernel",), ("dense",),
        ...                   ((4, 2),), None, np.array([0, 10]), np.ones(2), {},
        ...                   {"grad_norm": np.array([[1.0], [0.1]])}, {"step": np.arange(11)})
        >>> fig = plot.run_heatmap(history, "grad_norm")
        >>> fig.axes[0].collections[0].get_array().tolist()
        [[1.0, 0.1]]

    References:
        Glorot and Bengio 2010 (per-layer statistics during training).
    """
    names, values = _run_table(history, statistic, kind, rows)
    steps = np.asarray(history.recorded_steps)
    drawn, norm = _masked_cells(values.T, log_color=True)  # rows: layers, columns: steps
    count = len(names)
    height = min(max(0.2 * count + 1.8, 3.2), 12.0)
    figure = _new_figure(1, panel_size=(9.0, height))
    ax = figure.axes[0]
    mesh = ax.pcolormesh(
        np.arange(steps.size + 1) - 0.5,
        np.arange(count + 1) - 0.5,
        drawn,
        cmap=_color_map(_SEQUENTIAL),
        norm=norm,
        shading="flat",
    )
    described, row_words = _run_description(statistic), _ROW_WORDS[kind]
    words, _, symbol = described.partition(" ||")
    label = f"{words}\n||{symbol}, log scale" if symbol else f"{words}\n(log scale)"
    figure.colorbar(mesh, ax=ax, label=label)
    ax.set_ylim(count - 0.5, -0.5)  # the first layer at the top
    labelled = _thinned(count, _MOST_ROW_LABELS)
    ax.set_yticks(labelled, [names[i] for i in labelled], fontsize=MIN_FONT_PT)
    columns = _thinned(steps.size, _MOST_STEP_LABELS)
    ax.set_xticks(columns, [str(int(steps[i])) for i in columns])
    ax.set_xlabel("recorded step (one column each)")
    ax.set_ylabel(f"{row_words} (forward order)")
    ax.set_title(f"{described}, per {row_words} and recorded step")
    hidden = int(np.count_nonzero(np.ma.getmaskarray(drawn)))
    if hidden:
        from matplotlib.patches import Patch

        note = Patch(
            facecolor=_BAD_COLOR,
            edgecolor="0.4",
            label=f"no value: zero, negative, inf or nan ({hidden} of {drawn.size} cells)",
        )
        figure.legend(handles=[note], loc="outside lower left", fontsize=MIN_FONT_PT, frameon=False)
    return _finish(figure, path)


def _recorded_rows(recorded: np.ndarray, steps: Any) -> list[int]:
    """The history rows of the chosen steps (default: first, middle and last recorded)."""
    if steps is None:
        last = len(recorded) - 1
        return sorted({0, last // 2, last})
    if isinstance(steps, int | np.integer) and not isinstance(steps, bool):
        steps = [steps]
    if isinstance(steps, str) or not isinstance(steps, Collection):
        raise TypeError(f"steps must be recorded steps (ints) or None, got {steps!r}")
    if not len(steps):
        raise ValueError(
            "steps is empty: give recorded steps, or None for the first, middle and last"
        )
    rows = []
    for step in steps:
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise TypeError(f"steps must be ints (recorded steps), got {step!r}")
        hits = np.flatnonzero(recorded == step)
        if not hits.size:
            raise ValueError(
                f"step {step} was not recorded; recorded steps: {_steps_text(recorded)}"
            )
        if int(hits[-1]) not in rows:
            rows.append(int(hits[-1]))
    return rows


def run_profiles(
    history: History,
    statistic: str,
    steps: int | Sequence[int] | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    kind: str = "param",
    rows: Sequence[str] | None = None,
) -> Figure:
    """Depth profiles of one per-layer statistic of a recorded run at chosen recorded steps.

    x is the layer in forward order (parameter rows or module calls, labelled with their
    names, every k-th when there are many), y the statistic on a log scale, one line per
    step, coloured from early (dark) to late (light). Zero, negative, inf and nan values
    are left out of a line, and its legend entry says how many.

    Args:
        history: a `jaxgrad.recording.History`.
        statistic: as for `run_heatmap`.
        steps: recorded steps to draw (an int or a sequence); None draws the first, middle
            and last recorded steps.
        path: where to write the image; None writes nothing.
        kind: "param" or "module".
        rows: the names of the rows to draw (in forward order), e.g. only the kernels, so
            that a kernel and its bias do not alternate along the line; None draws all.

    Returns:
        The matplotlib Figure; `figure.axes[0].get_lines()[j]` is step j's line, its x the
        1-based forward positions of the values drawn.

    Raises:
        TypeError: history not a History; steps not ints.
        ValueError: an unknown kind, statistic or row; a step that was not recorded (the
            recorded ones are named); nothing recorded.

    Example:
        >>> import numpy as np
        >>> from jaxgrad import plot
        >>> from jaxgrad.recording import History
        >>> history = History(("a", "b"), ("Linear",) * 2, ("a.kernel", "b.kernel"), ("a", "b"),
        ...                   ((2, 2),) * 2, None, np.array([0, 5]), np.ones(2), {},
        ...                   {"update_ratio": np.array([[1e-3, 1e-4], [1e-2, 0.0]])},
        ...                   {"step": np.arange(6)})
        >>> fig = plot.run_profiles(history, "update_ratio", steps=[5])
        >>> fig.axes[0].get_lines()[0].get_xydata().tolist()
        [[1.0, 0.01]]
    """
    names, values = _run_table(history, statistic, kind, rows)
    recorded = np.asarray(history.recorded_steps)
    chosen = _recorded_rows(recorded, steps)
    count = len(names)
    positions = np.arange(1, count + 1, dtype=np.float64)
    described, row_words = _run_description(statistic), _ROW_WORDS[kind]
    figure = _new_figure(1, panel_size=(9.0, 4.6))
    ax = figure.axes[0]
    colors = _colormaps[_SEQUENTIAL](np.linspace(0.0, 0.8, len(chosen)))
    for color, row in zip(colors, chosen, strict=True):
        row_values = values[row]
        keep = np.isfinite(row_values) & (row_values > 0)
        label = f"step {int(recorded[row])}"
        hidden = count - int(keep.sum())
        if hidden:
            label += f" ({hidden} of {count} not shown: zero, negative or not finite)"
        ax.plot(positions[keep], row_values[keep], color=color, marker="o", ms=4, label=label)
    ax.set_yscale("log")
    labelled = _thinned(count, 40)
    ax.set_xticks(
        positions[labelled],
        [names[i] for i in labelled],
        rotation=40,
        ha="right",
        rotation_mode="anchor",
        fontsize=MIN_FONT_PT,
    )
    ax.set_xlim(0.5, count + 0.5)
    ax.set_xlabel(f"{row_words} (forward order)")
    ax.set_ylabel(described)
    ax.set_title(f"{described} across depth")
    ax.legend(fontsize=MIN_FONT_PT)
    return _finish(figure, path)


def run_norms(history: History, path: str | os.PathLike[str] | None = None) -> Figure:
    """The loss and the global gradient and update norms of a recorded run over its steps.

    Three panels sharing the step axis (`history.steps`), each on a log scale unless it
    holds a negative value. A value that cannot be drawn leaves a gap in the curve (inf or
    nan: a non-finite step; zero on a log scale: the update of a step the guard skipped),
    except nan on a step that was not recorded (a norm not measured, `check_every_step`
    off), which is left out so the curve joins the steps around it; each panel's title
    says how many steps are not shown and why. Marks: red
    circles at the steps flagged as spikes, on the panel of each statistic that spiked
    there (`History.spikes`; on every panel when it names none); grey vertical lines at
    the steps a `jaxgrad.optim.guard` skipped; grey triangles along the bottom at the
    recorded steps (those with per-layer statistics). A legend above the panels says what
    the marks are, with their counts.

    Args:
        history: a `jaxgrad.recording.History`.
        path: where to write the image; None writes nothing.

    Returns:
        The matplotlib Figure. Panel i draws `NORM_FIELDS[i]`: `figure.axes[i].get_lines()`
        are the curve (labelled with the statistic's name in words; its y is nan at the
        steps not drawn), the spikes (label
        starting "spike") and the recorded steps (label starting "recorded"), and
        `figure.axes[i].collections` the skipped steps' lines (label starting "skipped").

    Raises:
        TypeError: history not a History.
        ValueError: a history without steps.

    Example:
        >>> import numpy as np
        >>> from jaxgrad import plot
        >>> from jaxgrad.recording import STEP_FIELDS, History
        >>> steps = {name: np.zeros(4) for name in STEP_FIELDS}
        >>> steps |= {"step": np.arange(4), "loss": np.array([3.0, 2.0, 1.0, 0.5])}
        >>> history = History((), (), (), (), (), None, np.array([0, 2]), np.ones(2), {}, {},
        ...                   steps)
        >>> fig = plot.run_norms(history)
        >>> fig.axes[0].get_lines()[0].get_ydata().tolist()
        [3.0, 2.0, 1.0, 0.5]

    References:
        Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer training
        instabilities" (loss and update-norm spikes).
    """
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    history = _run_history(history)
    missing = [
        name for name in ("step", *NORM_FIELDS, "skipped", "spike") if name not in history.steps
    ]
    if missing:
        raise ValueError(f"history.steps lacks {missing}; it holds {sorted(history.steps)}")
    steps = np.asarray(history.steps["step"], np.int64)
    if not steps.size:
        raise ValueError("this history holds no steps: run and poll the recorder first")
    spikes = history.spikes()
    skipped = steps[np.asarray(history.steps["skipped"], np.float64) > 0]
    recorded = np.asarray(history.recorded_steps, np.int64)
    was_recorded = np.asarray(history.steps.get("recorded", np.zeros(steps.size)), float) > 0
    spike_mark = {"ls": "none", "marker": "o", "ms": 8, "mfc": "none", "mec": "red", "mew": 1.8}
    recorded_mark = {"ls": "none", "marker": "^", "ms": 5, "color": "0.3"}
    skipped_mark = {"colors": "0.6", "linewidths": 1.5}

    figure = _new_figure(len(NORM_FIELDS), panel_size=(9.0, 2.1), stacked=True)
    for ax, field in zip(figure.axes, NORM_FIELDS, strict=True):
        words, short = _NORM_DESCRIPTIONS[field]
        values = _float_array(f"history.steps[{field!r}]", history.steps[field])
        finite = np.isfinite(values)
        log = not np.any(values[finite] < 0) and np.any(values[finite] > 0)
        drawable = finite & (values > 0) if log else finite
        # nan on a step that was not recorded: not measured (check_every_step off), left
        # out so the curve joins its neighbours; anything else undrawable leaves a gap
        measured = finite | np.isinf(values) | was_recorded
        ax.plot(
            steps[measured],
            np.where(drawable, values, np.nan)[measured],
            color="C0",
            lw=1.2,
            label=words,
        )
        notes = [
            f"{int(count)} {reason}"
            for count, reason in (
                ((measured & ~finite).sum(), "not finite"),
                ((~measured).sum(), "not measured"),
                ((finite & ~drawable).sum(), "zero"),
            )
            if count
        ]
        title = words
        if notes:
            hidden = int((~drawable).sum())
            title += f": {hidden} of {steps.size} steps not shown ({', '.join(notes)})"
        ax.set_title(title, loc="left", fontsize=MIN_FONT_PT)
        named = [
            spike.step for spike in spikes if field in spike.statistics or not spike.statistics
        ]
        at = drawable & np.isin(steps, named)
        if at.any():
            ax.plot(steps[at], values[at], **spike_mark, label=f"spike in the {words}")
        if skipped.size:
            lines = LineCollection(
                [[(step, 0.0), (step, 1.0)] for step in skipped],
                transform=ax.get_xaxis_transform(),
                label="skipped by the guard",
                zorder=1,
                **skipped_mark,
            )
            ax.add_collection(lines, autolim=False)
        if recorded.size:
            ax.plot(
                recorded,
                np.full(recorded.size, 0.04),
                transform=ax.get_xaxis_transform(),
                label="recorded step",
                **recorded_mark,
            )
        if log:
            ax.set_yscale("log")
        ax.margins(y=0.15)
        ax.set_ylabel(short)
    figure.axes[-1].set_xlabel("step")
    marks = [Line2D([], [], **spike_mark, label=f"spike flagged by the recorder ({len(spikes)})")]
    if skipped.size:
        marks.append(
            Line2D(
                [],
                [],
                color=skipped_mark["colors"],
                lw=skipped_mark["linewidths"],
                label=f"step skipped by the guard ({skipped.size})",
            )
        )
    if recorded.size:
        marks.append(
            Line2D(
                [],
                [],
                **recorded_mark,
                label=f"recorded step: per-layer statistics ({recorded.size})",
            )
        )
    figure.legend(handles=marks, loc="outside upper center", ncols=len(marks), fontsize=MIN_FONT_PT)
    return _finish(figure, path)


# ----------------------------------------------------------------------------- coordinate checks


def coord_check(
    check: Any,
    statistic: str = "mean_abs",
    *,
    against: str = "width",
    fixed: int | None = None,
    layers: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """A coordinate check as mup draws it: width (or depth) against a statistic, log-log,
    one curve per layer and one panel per step (Yang et al. 2022, "Tensor Programs V",
    figure 5).

    Each curve is the mean over seeds (the data its `Line2D` holds), with the seeds' range
    shaded; the legend gives each layer's slope and verdict from `jaxgrad.scaling.slopes`
    at that step. Values that are not finite and positive are left out (a log axis cannot
    show them).

    Args:
        check: a `jaxgrad.scaling.CoordCheck`.
        statistic: one of `jaxgrad.scaling.STATISTICS`.
        against: "width" or "depth".
        fixed: the depth (against width) or width (against depth) to draw; default the first.
        layers: the layers to draw (names as in the check; "[-1]" aliases across depths);
            default every layer of the statistic.
        path: where to write the image, if given.

    Returns:
        The Figure.
    """
    from jaxgrad.scaling import STATISTICS, slopes  # the numeric core, imported at the edge

    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {list(STATISTICS)}, got {statistic!r}")
    table = slopes(check, against)
    others = check.depths if against == "width" else check.widths
    fixed = others[0] if fixed is None else fixed
    if fixed not in others:
        raise ValueError(f"fixed must be one of {list(others)}, got {fixed!r}")
    sizes = np.asarray(check.widths if against == "width" else check.depths, np.float64)
    chosen = (table.fixed == fixed) & (table.statistic == statistic)
    names = list(dict.fromkeys(table.layer[chosen].tolist()))
    if layers is not None:
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ValueError(f"unknown layers {unknown}; the layers are {names}")
        names = list(layers)
    from jaxgrad.scaling.slopes import name_map  # the names matched across the sizes

    points = [
        check.point(int(size), fixed) if against == "width" else check.point(fixed, int(size))
        for size in sizes
    ]
    tables = [point.statistic(statistic) for point in points]
    maps = [name_map(point_names, against) for point_names, _ in tables]
    steps = check.steps
    figure = _new_figure(steps, panel_size=(4.2, 3.6))
    colors = _colormaps["viridis"](np.linspace(0, 0.92, max(len(names), 1)))
    for step, ax in enumerate(figure.axes):
        for color, name in zip(colors, names, strict=False):
            values = np.stack(
                [values[:, step, m[name]] for (_, values), m in zip(tables, maps, strict=True)],
                axis=-1,
            ).astype(np.float64)  # (seeds, sizes)
            usable = np.all(np.isfinite(values) & (values > 0), axis=0)
            if not usable.any():
                continue
            mean = values[:, usable].mean(axis=0)
            words = table.get(name, statistic, step, fixed)[1]
            ax.plot(sizes[usable], mean, "o-", color=color, ms=3, label=f"{name}: {words}")
            ax.fill_between(
                sizes[usable],
                values[:, usable].min(axis=0),
                values[:, usable].max(axis=0),
                color=color,
                alpha=0.15,
                lw=0,
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"step {step}")
        ax.set_xlabel(_SIZE_LABELS[against])
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(_COORD_LABELS.get(statistic, statistic))
        if ax.lines:
            ax.legend(fontsize=MIN_FONT_PT, loc="best")
            _at_least_a_decade(ax)
        else:  # nothing a log axis can show: say so rather than draw an empty frame
            ax.set_xticks([])
            ax.set_yticks([], minor=False)
            ax.set_yticks([], minor=True)
            zero = statistic == "change" and step == 0
            ax.text(
                0.5, 0.5,
                "nothing moved yet:\nthe change is 0 at step 0" if zero
                else "no finite positive value\nat any size",
                ha="center", va="center", transform=ax.transAxes, fontsize=MIN_FONT_PT,
            )  # fmt: skip
    return _finish(figure, path)


def _at_least_a_decade(ax: Any) -> None:
    """A log y axis spanning at least a factor 10 around the data's geometric middle, so a
    curve that varies by a few percent draws flat rather than filling the panel."""
    low, high = ax.get_ylim()
    if high / low < 10:
        middle = math.sqrt(low * high)
        ax.set_ylim(middle / math.sqrt(10), middle * math.sqrt(10))
