"""Slopes and verdicts of a coordinate check: how each layer's statistic scales with width
(or depth), in numbers and in words.

For each layer, statistic and step, the least-squares slope of log(statistic) against
log(width) is fitted per seed; the table gives their mean and their spread (the standard
deviation over seeds). A statistic that scales as width^a has slope a. The verdict reads the
mean slope:

- "stable" when |slope| <= `STABLE_SLOPE` (0.25: under a factor 2^0.25 = 1.19 per doubling,
  which a few seeds at small widths cannot tell from noise);
- "grows as width^0.98" / "shrinks as width^-0.50" otherwise (the slope to two decimals);
- "zero" when the statistic is exactly zero at every point (a change at step 0);
- "undefined" when a value is non-finite or not positive for every seed (no logarithm).

A verdict carries "(noisy: spread 0.41)" when the spread over seeds exceeds `NOISY_SPREAD`
(0.25): more seeds, a larger batch or a wider range of widths will tell.

`jaxgrad.diagnose(table)` judges the slopes (`Slopes.findings`): the "width_scaling" (or
"depth_scaling") rule reads the recorded outputs' statistics (`JUDGED`) at every step, and
finds "exploding" where a slope exceeds `STABLE_SLOPE`, "vanishing" where one is below
-`STABLE_SLOPE`, with muP (width) or depth-muP's branch multiplier (depth) as the cure. A
series whose mean slope is out of the band but some of whose seeds' slopes are not (within
it, or out on the other side) is unsettled: counted in the finding's message, not judged.

Across depths, layers are matched by name; a name holding a stack index ("blocks[7].linear",
"layers.7") also answers to its last layer as "-1" ("blocks[-1].linear", "layers.-1"), so the
last block, the first and the layers outside the stack are compared at every depth. The
"depth_scaling" rule judges only the layers that keep their relative depth: those outside
the stacks whose length changes with depth, and the stacks' last layers ("-1"). A layer at a
fixed index k of such a stack sits at relative depth k/L, which falls as L grows: under
depth-muP its change is the sum of k blocks' updates of size 1/L each and shrinks with depth
by design (Yang et al. 2023, section 4), so its slopes are tabled, not judged.

References:
    Yang and Hu 2021, "Tensor Programs IV: Feature Learning in Infinite-Width Neural
    Networks" (muP); Yang et al. 2022, "Tensor Programs V", appendix D.1 (coordinate checks:
    a correct parametrization keeps every coordinate's size constant in width); Yang et al.
    2023, "Tensor Programs VI: Feature Learning in Infinite-Depth Neural Networks" and
    Bordelon et al. 2023, "Depthwise Hyperparameter Transfer in Residual Networks" (the same
    across depth, with branches scaled by 1/sqrt(L)).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING

import numpy as np

from jaxgrad.scaling.coord import MODULE_STATISTICS, STATISTICS, CoordCheck, CoordPoint
from jaxgrad.stats import Finding

if TYPE_CHECKING:
    import pandas as pd

STABLE_SLOPE = 0.25
"""|slope| at most this reads "stable"."""

NOISY_SPREAD = 0.25
"""A spread of the slope over seeds above this marks a verdict "noisy"."""

JUDGED = MODULE_STATISTICS
"""The statistics the scaling rules judge: each recorded output's mean |x|, rms and change,
the coordinates a correct parametrization keeps constant in width and depth (TP-V, appendix
D.1). The parameter statistics are tabled but not judged: their exponent under a correct
parametrization depends on the layer's role (under muP with Adam a hidden kernel's gradient
rms scales as width^-1 and its update-to-weight rms as width^-0.5; measured -1.00 and -0.51
on a 3-layer MLP at widths 64 to 512, against 0.00 for every output's size and change)."""

AGAINST = ("width", "depth")

_WHAT = {
    "mean_abs": "mean |x|",
    "rms": "rms",
    "change": "change since step 0",
}

_CURES = {
    "width": (
        "use muP, under which every output's size and change stay constant in width: "
        "jaxgrad.scaling.mup_adam(learning_rate, jaxgrad.scaling.base_shapes(make_model, "
        "base_width)) (or mup_sgd) with a jaxgrad.scaling.MuReadout readout (Yang and Hu "
        "2021; Yang et al. 2022)"
    ),
    "depth": (
        "scale each residual branch by jaxgrad.scaling.depth_multiplier(depth, base_depth) "
        "= sqrt(base_depth / depth), the 1/sqrt(L) of depth-muP, and train with "
        "jaxgrad.scaling.mup_adam over a base_shapes(make_model, base_width, base_depth) "
        "(Yang et al. 2023; Bordelon et al. 2023)"
    ),
}

_LISTED = 4  # series quoted in a finding's message; the rest are counted

_INDEX = re.compile(r"\[(\d+)\]|\.(\d+)(?=\.|$)")


def verdict(slope: float, spread: float = math.nan, *, against: str = "width") -> str:
    """The words for a slope of log(statistic) against log(`against`).

    Args:
        slope: the fitted exponent (nan: undefined).
        spread: its standard deviation over seeds (nan where unknown: not read).
        against: "width" or "depth", the word in the verdict.

    Returns:
        "stable", "grows as width^0.98", "shrinks as depth^-0.50" or "undefined", with
        " (noisy: spread 0.41)" when the spread exceeds `NOISY_SPREAD`.

    Raises:
        ValueError: if `against` is not "width" or "depth".

    Example:
        >>> verdict(0.98), verdict(-0.5, against="depth"), verdict(0.1)
        ('grows as width^0.98', 'shrinks as depth^-0.50', 'stable')
    """
    if against not in AGAINST:
        raise ValueError(f"against must be one of {AGAINST}, got {against!r}")
    if not math.isfinite(slope):
        return "undefined"
    if abs(slope) <= STABLE_SLOPE:
        words = "stable"
    elif slope > 0:
        words = f"grows as {against}^{slope:.2f}"
    else:
        words = f"shrinks as {against}^{slope:.2f}"
    if math.isfinite(spread) and spread > NOISY_SPREAD:
        words += f" (noisy: spread {spread:.2f})"
    return words


def fit_slope(sizes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The least-squares slope of log(values) against log(sizes), per row of `values`
    (shape (rows, len(sizes))); nan for a row with a value that is not finite and positive.

    Args:
        sizes: (n,) the widths or depths, positive.
        values: (rows, n) the statistic at each size.

    Returns:
        (rows,) float64 slopes.

    Example:
        >>> import numpy as np
        >>> fit_slope(np.array([64, 128, 256]), np.array([[1.0, 2.0, 4.0]])).round(6).tolist()
        [1.0]
    """
    x = np.log(np.asarray(sizes, np.float64))
    values = np.asarray(values, np.float64)
    valid = np.all(np.isfinite(values) & (values > 0), axis=-1)
    y = np.log(np.where(np.isfinite(values) & (values > 0), values, 1.0))
    centred = x - x.mean()
    slope = (y - y.mean(axis=-1, keepdims=True)) @ centred / np.sum(centred**2)
    return np.where(valid, slope, np.nan)


def name_map(names: tuple[str, ...], against: str) -> dict[str, int]:
    """Each name's row: the names themselves across widths, and with the stacks' last
    layers also as "-1" across depths (`_aliases`).

    Args:
        names: the layers' names at one point, in row order.
        against: "width" or "depth".

    Returns:
        A dict from name (and, against depth, alias) to row.

    Example:
        >>> from jaxgrad.scaling.slopes import name_map
        >>> name_map(("blocks[0].linear", "blocks[1].linear", "readout"), "depth")
        {'blocks[0].linear': 0, 'blocks[1].linear': 1, 'readout': 2, 'blocks[-1].linear': 1}
    """
    if against == "depth":
        return _aliases(names)
    return {name: row for row, name in enumerate(names)}


def _largest(names: tuple[str, ...]) -> dict[str, int]:
    """The largest index each stack (the name before an index) holds among `names`."""
    largest: dict[str, int] = {}
    for name in names:
        for match in _INDEX.finditer(name):
            prefix = name[: match.start()]
            index = int(match.group(1) or match.group(2))
            largest[prefix] = max(largest.get(prefix, -1), index)
    return largest


def relative_depth_kept(name: str, stacks: tuple[str, ...]) -> bool:
    """Whether layer `name` sits at the same relative depth at every depth: no index of it
    is a fixed index into one of `stacks` (the last layer's alias "-1" is not one).

    Args:
        name: a layer's name, or its "-1" alias.
        stacks: the stacks whose length changes with depth (`Slopes.stacks`).

    Returns:
        False for a layer at a fixed index of such a stack, else True.

    Example:
        >>> from jaxgrad.scaling.slopes import relative_depth_kept
        >>> [relative_depth_kept(n, ("blocks",)) for n in
        ...  ("blocks[0].linear", "blocks[-1].linear", "readout", "stem.layers.0")]
        [False, True, True, True]
    """
    return not any(name[: match.start()] in stacks for match in _INDEX.finditer(name))


def _aliases(names: tuple[str, ...]) -> dict[str, int]:
    """Every name's row, and its alias with the stack's last index written -1."""
    largest = _largest(names)
    out = {name: row for row, name in enumerate(names)}
    for row, name in enumerate(names):
        alias = name
        for match in reversed(list(_INDEX.finditer(name))):
            prefix = name[: match.start()]
            index = int(match.group(1) or match.group(2))
            if index == largest[prefix]:
                text = "[-1]" if match.group(1) is not None else ".-1"
                alias = alias[: match.start()] + text + alias[match.end() :]
        out.setdefault(alias, row)
    return out


@dataclasses.dataclass(frozen=True)
class Slopes:
    """Slopes of a coordinate check: one entry per (fixed, layer, statistic, step), as
    columns of equal length.

    Attributes:
        against: "width" or "depth".
        fixed: the other coordinate of each entry (the depth, for slopes against width).
        layer, statistic, step: which series.
        slope: the mean over seeds of the per-seed slopes (nan where undefined).
        spread: their standard deviation over seeds (0 for one seed).
        seeds: the number of seeds with a defined slope.
        beyond: how many seeds' slopes are out of the band (|slope| > `STABLE_SLOPE`) on the
            mean's side; a series out of the band is judged only when every seed is.
        verdict: the words (`verdict`).
        stacks: against depth, the stacks whose length changes with depth, by the name before
            their index ("blocks", "body.layers"): their layers at a fixed index are not
            judged (`relative_depth_kept`).

    Example:
        `slopes` returns one; here of two hand-made points whose statistics all equal
        the width:

        >>> import numpy as np
        >>> from jaxgrad.scaling.coord import CoordCheck, CoordPoint
        >>> from jaxgrad.scaling.slopes import slopes
        >>> def point(width):  # one seed, one step, one layer
        ...     return CoordPoint(width, None, ("out",), (), np.zeros((1, 1)),
        ...                       np.full((1, 1, 1, 3), float(width)), np.zeros((1, 1, 0, 3)))
        >>> table = slopes(CoordCheck((point(64), point(128)), (64, 128), (None,), (0,), 1))
        >>> table.statistic.tolist(), table.slope.round(2).tolist()
        (['mean_abs', 'rms', 'change'], [1.0, 1.0, 1.0])
        >>> table.get("out", "rms")
        (1.0, 'grows as width^1.00')
    """

    against: str
    fixed: np.ndarray
    layer: np.ndarray
    statistic: np.ndarray
    step: np.ndarray
    slope: np.ndarray
    spread: np.ndarray
    seeds: np.ndarray
    beyond: np.ndarray
    verdict: np.ndarray
    stacks: tuple[str, ...] = ()

    def to_frame(self) -> pd.DataFrame:
        """The table: `fixed` is named `depth` (slopes against width) or `width`."""
        import pandas as pd

        other = "depth" if self.against == "width" else "width"
        return pd.DataFrame(
            {
                other: self.fixed,
                "layer": self.layer,
                "statistic": self.statistic,
                "step": self.step,
                "slope": self.slope,
                "spread": self.spread,
                "seeds": self.seeds,
                "seeds_beyond": self.beyond,
                "verdict": self.verdict,
            }
        )

    def get(self, layer: str, statistic: str, step: int = -1, fixed=None) -> tuple[float, str]:
        """(slope, verdict) of one series (the last step by default; the only or first
        fixed coordinate by default)."""
        steps = np.unique(self.step)
        step = int(steps[step]) if step < 0 else step
        hits = (self.layer == layer) & (self.statistic == statistic) & (self.step == step)
        if fixed is not None:
            hits &= self.fixed == fixed
        index = np.flatnonzero(hits)
        if not index.size:
            raise KeyError(
                f"no slope for layer {layer!r}, statistic {statistic!r}, step {step}; layers "
                f"{sorted(set(self.layer.tolist()))}, statistics {sorted(set(self.statistic))}"
            )
        return float(self.slope[index[0]]), str(self.verdict[index[0]])

    def summary(self, step: int = -1) -> str:
        """One line per (fixed, layer, statistic) at one step: slope, spread and verdict."""
        steps = np.unique(self.step)
        step = int(steps[step]) if step < 0 else step
        lines = [f"slopes against log {self.against} at step {step}:"]
        width = max([len(str(name)) for name in self.layer] + [5])
        for index in np.flatnonzero(self.step == step):
            lines.append(
                f"  {self.fixed[index]!s:>5} {self.layer[index]:<{width}} "
                f"{self.statistic[index]:<12} {self.slope[index]:+7.2f} "
                f"+- {self.spread[index]:.2f}  {self.verdict[index]}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The recorded outputs the scaling rule judges, in forward order: a finding's
        `layers` are 1-based positions in it (against depth, a stack's "-1" aliases come
        after the layers present at every depth)."""
        judged = np.isin(self.statistic, JUDGED)
        return tuple(dict.fromkeys(str(name) for name in self.layer[judged]))

    def findings(self) -> tuple[Finding, ...]:
        """The "width_scaling" (or "depth_scaling") finding that `jaxgrad.diagnose` reads.

        Every defined slope of a statistic in `JUDGED`, at every step (and every fixed
        depth or width), is compared with `STABLE_SLOPE`: above it the output grows with
        width (depth) and the finding is "exploding"; below minus it, "vanishing" (where
        both happen, exploding: `jaxgrad.stats.PRECEDENCE`); else "stable". Each series
        (layer, statistic) out of the band is quoted at its steepest step, growth first and
        the steepest first (the first four; the rest are counted). Undefined slopes
        (a value not finite or not positive) and zero series are counted, not judged; with
        no defined slope the finding is "info".

        Returns:
            One `jaxgrad.stats.Finding`: `layers` the 1-based positions in `layer_names` of
            the outputs out of the band; `numbers` each such series' slope and spread
            ("readout mean_abs step 3: slope", "... : spread"), and the largest and
            smallest slopes read with their spreads; `threshold` `STABLE_SLOPE`; `cure`
            muP (width) or depth-muP's branch multiplier (depth).

        Example:
            >>> import numpy as np
            >>> from jaxgrad.scaling.coord import CoordCheck, CoordPoint
            >>> from jaxgrad.scaling.slopes import slopes
            >>> def point(width):  # one seed, one step; readout's mean |x| = width^-0.5
            ...     values = np.ones((1, 1, 2, 3))
            ...     values[0, 0, 1, 0] = width**-0.5
            ...     return CoordPoint(width, None, ("hidden", "readout"), (),
            ...                       np.zeros((1, 1)), values, np.zeros((1, 1, 0, 3)))
            >>> table = slopes(CoordCheck((point(64), point(256)), (64, 256), (None,), (0,), 1))
            >>> (finding,) = table.findings()
            >>> finding.verdict, finding.layers, finding.numbers["readout mean_abs step 0: slope"]
            ('vanishing', (2,), -0.5)
            >>> finding.message
            "readout: the output's mean |x| shrinks as width^-0.50 at step 0 (slope threshold 0.25)"

        References:
            Yang et al. 2022, "Tensor Programs V", appendix D.1; Yang et al. 2023, "Tensor
            Programs VI".
        """
        return (self._finding(),)

    def _finding(self) -> Finding:
        rule = f"{self.against}_scaling"
        judged = np.isin(self.statistic, JUDGED)
        kept = np.asarray([relative_depth_kept(name, self.stacks) for name in self.layer], bool)
        left_out = len(set(self.layer[judged & ~kept].tolist()))
        judged = judged & kept
        defined = judged & np.isfinite(self.slope)
        undefined = int(np.sum(judged & ~defined & (self.verdict != "zero")))
        names = self.layer_names
        several = len(set(self.fixed[judged].tolist())) > 1
        other = "depth" if self.against == "width" else "width"
        note = f"; {undefined} series undefined (a value not finite or not positive)"
        note = note if undefined else ""
        if left_out:
            note += (
                f"; {left_out} layers at a fixed index of a stack whose length changes with "
                "depth tabled, not judged (their relative depth changes)"
            )
        if not defined.any():
            message = f"no defined slope against log {self.against} to judge{note}"
            return Finding(rule, "info", (), {}, STABLE_SLOPE, message, "")
        slope, spread = self.slope, self.spread
        index = np.flatnonzero(defined)
        high, low = index[np.argmax(slope[index])], index[np.argmin(slope[index])]
        numbers: dict[str, float | int] = {
            "largest_slope": float(slope[high]),
            "spread_of_largest": float(spread[high]),
            "smallest_slope": float(slope[low]),
            "spread_of_smallest": float(spread[low]),
            "series_read": int(index.size),
        }
        # each series out of the band, at its steepest step; one out of it for some seeds
        # only (the others within it or across it) is unsettled
        steepest: dict[tuple, int] = {}
        unsettled: set[tuple] = set()
        for i in index[np.abs(slope[index]) > STABLE_SLOPE]:
            key = (self.fixed[i], self.layer[i], self.statistic[i])
            if self.beyond[i] < self.seeds[i]:
                unsettled.add(key)
            elif key not in steepest or abs(slope[i]) > abs(slope[steepest[key]]):
                steepest[key] = int(i)
        unsettled -= set(steepest)
        if unsettled:
            numbers["series_unsettled"] = len(unsettled)
            note += (
                f"; {len(unsettled)} series out of the band for some seeds but not all, not "
                "judged: more seeds will settle them"
            )
        if not steepest:
            within = f"all within +-{STABLE_SLOPE:g}"
            if unsettled:
                within = f"none out of +-{STABLE_SLOPE:g} for every seed"
            message = (
                f"{index.size} slopes of the outputs' mean |x|, rms and change against log "
                f"{self.against}, from {slope[low]:+.2f} to {slope[high]:+.2f}: {within} "
                f"(slope threshold {STABLE_SLOPE:g}){note}"
            )
            return Finding(rule, "stable", (), numbers, STABLE_SLOPE, message, "")
        # growth first, the steepest first (to two decimals, as quoted), then forward order
        out = sorted(
            steepest.values(),
            key=lambda i: (
                slope[i] < 0,
                -round(abs(float(slope[i])), 2),
                names.index(self.layer[i]),
                JUDGED.index(self.statistic[i]),
            ),
        )
        quoted = []
        for i in out:
            label = f"{self.layer[i]} {self.statistic[i]} step {self.step[i]}"
            where = f" at {other} {self.fixed[i]}" if several else ""
            numbers[f"{label}{where}: slope"] = float(slope[i])
            numbers[f"{label}{where}: spread"] = float(spread[i])
            words = verdict(float(slope[i]), float(spread[i]), against=self.against)
            quoted.append(
                f"{self.layer[i]}: the output's {_WHAT[self.statistic[i]]} {words} at step "
                f"{self.step[i]}{where}"
            )
        numbers["series_out"] = len(out)
        message = "; ".join(quoted[:_LISTED])
        if len(out) > _LISTED:
            message += f"; and {len(out) - _LISTED} more series"
        message += f" (slope threshold {STABLE_SLOPE:g}){note}"
        layers = tuple(sorted({names.index(self.layer[i]) + 1 for i in out}))
        grows = any(slope[i] > 0 for i in out)
        outcome = "exploding" if grows else "vanishing"
        return Finding(rule, outcome, layers, numbers, STABLE_SLOPE, message, _CURES[self.against])


def slopes(check: CoordCheck, against: str = "width") -> Slopes:
    """Fit every layer's, statistic's and step's slope against log width (or log depth).

    Args:
        check: a `CoordCheck` with at least two widths (or depths).
        against: "width" or "depth".

    Returns:
        `Slopes`, with the verdicts.

    Raises:
        ValueError: if `against` is unknown or the check has fewer than two sizes along it.

    Example:
        >>> import numpy as np
        >>> from jaxgrad.scaling.coord import CoordCheck, CoordPoint
        >>> def point(width):  # one seed, one step, one layer: mean |x| = width
        ...     values = np.full((1, 1, 1, 3), float(width))
        ...     return CoordPoint(width, None, ("out",), (), np.zeros((1, 1)), values,
        ...                       np.zeros((1, 1, 0, 3)))
        >>> check = CoordCheck((point(64), point(128)), (64, 128), (None,), (0,), 1)
        >>> slopes(check).get("out", "mean_abs")
        (1.0, 'grows as width^1.00')
    """
    if against not in AGAINST:
        raise ValueError(f"against must be one of {AGAINST}, got {against!r}")
    sizes = check.widths if against == "width" else check.depths
    if len(sizes) < 2 or None in sizes:
        raise ValueError(
            f"a slope against {against} needs at least two {against}s, got {list(sizes)}"
        )
    others = check.depths if against == "width" else check.widths
    stacks: set[str] = set()
    if against == "depth":  # stacks whose length changes with depth, at any width
        for width in others:
            at_depths = [check.point(width, depth) for depth in sizes]
            found = [_largest((*point.layers, *point.params)) for point in at_depths]
            shared = set.intersection(*(set(f) for f in found))
            stacks |= {prefix for prefix in shared if len({f[prefix] for f in found}) > 1}
    columns: dict[str, list] = {key: [] for key in ("fixed", "layer", "statistic", "step")}
    columns |= {"slope": [], "spread": [], "seeds": [], "beyond": [], "verdict": []}
    for other in others:
        points: list[CoordPoint] = [
            check.point(size, other) if against == "width" else check.point(other, size)
            for size in sizes
        ]
        for statistic in STATISTICS:
            tables = [point.statistic(statistic) for point in points]
            maps = [name_map(names, against) for names, _ in tables]
            common = [name for name in maps[0] if all(name in m for m in maps[1:])]
            for name in common:
                # (seeds, steps, sizes)
                series = np.stack(
                    [values[:, :, m[name]] for (_, values), m in zip(tables, maps, strict=True)],
                    axis=-1,
                ).astype(np.float64)
                seeds, steps, _ = series.shape
                per_seed = fit_slope(np.asarray(sizes), series.reshape(-1, len(sizes)))
                per_seed = per_seed.reshape(seeds, steps)
                zero = np.all(series == 0, axis=(0, 2))
                for step in range(steps):
                    defined = per_seed[np.isfinite(per_seed[:, step]), step]
                    slope = float(defined.mean()) if defined.size else math.nan
                    spread = float(defined.std(ddof=1)) if defined.size > 1 else 0.0
                    words = "zero" if zero[step] else verdict(slope, spread, against=against)
                    columns["fixed"].append(other)
                    columns["layer"].append(name)
                    columns["statistic"].append(statistic)
                    columns["step"].append(step)
                    columns["slope"].append(slope)
                    columns["spread"].append(spread if defined.size else math.nan)
                    columns["seeds"].append(int(defined.size))
                    side = np.sign(slope) if math.isfinite(slope) else 0.0
                    columns["beyond"].append(int(np.sum(side * defined > STABLE_SLOPE)))
                    columns["verdict"].append(words)
    return Slopes(
        against,
        np.asarray(columns["fixed"], dtype=object),
        np.asarray(columns["layer"], dtype=object),
        np.asarray(columns["statistic"], dtype=object),
        np.asarray(columns["step"], dtype=np.int64),
        np.asarray(columns["slope"], dtype=np.float64),
        np.asarray(columns["spread"], dtype=np.float64),
        np.asarray(columns["seeds"], dtype=np.int64),
        np.asarray(columns["beyond"], dtype=np.int64),
        np.asarray(columns["verdict"], dtype=object),
        tuple(sorted(stacks)),
    )


__all__ = [
    "AGAINST",
    "JUDGED",
    "NOISY_SPREAD",
    "STABLE_SLOPE",
    "Slopes",
    "fit_slope",
    "name_map",
    "relative_depth_kept",
    "slopes",
    "verdict",
]
