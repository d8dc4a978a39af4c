"""The one verdict: `diagnose` judges the per-layer numbers of every jaxgrad front end.

`probe` and `propagate` (`LayerStats`), `inspect` (`ModelReport`) and the training monitor
each reduce a network to a `Profile`: per layer, in forward order, the std of the signal the
layer's weights produce, the norms of the weight gradient, of the weights and of the
backpropagated error, the dead and saturated fractions, where values stopped being finite,
and what is known of the activation and the initialization. `diagnose` reads only that, so
one set of rules, with one set of documented thresholds, judges them all. It runs on the host
in microseconds (NumPy on a few arrays of length depth); the mean-field rule, which runs only
where the activation is known, evaluates `jaxgrad.theory` once (about a second to compile
per activation, then milliseconds).

The rules, each a `Finding` (in this order):

- ``nonfinite``: any inf or nan in the signal or the gradients. Exploding.
- ``gradient_ratio``: the first layer's weight-gradient norm over the last layer's, outside
  [1/band, band] (default `BAND` = 100). Gradients flow backward from the last layer, so the
  last layer is the reference (Glorot and Bengio 2010, section 4.2).
- ``signal``: the std of each layer's pre-activation against the first layer's, outside
  [1/signal_band, signal_band] (default `SIGNAL_BAND` = 10) in any layer. The forward signal
  flows from the first layer, so the first layer is the reference (He et al. 2015 choose the
  initialization so that this std is preserved). A readout (`Profile.readout`: the last
  layer's output is the network's output, logits or predictions, whose scale the loss and
  its initialization set, often small on purpose) is not read.
- ``scale``: ||dL/dW_l|| / ||W_l||, the relative change a unit learning rate would make to
  layer l (You et al. 2017), below `SCALE_LOW` in every layer (uniform collapse, which the
  ratio across depth cannot see) or above `SCALE_HIGH` in every layer.
- ``dead`` and ``saturated``: the fraction of units dead for the whole batch, or of
  pre-activations where |phi'| < the saturation threshold, above `DEAD_THRESHOLD` or
  `SATURATED_THRESHOLD` in any layer (Lu et al. 2020; Glorot and Bengio 2010). Vanishing.
- ``mean_field``: where the activation is known (the profile's, or `activation=`), the
  order-to-chaos phase of a plain stack at (sigma_w2, sigma_b2): chi1, the gradient factor it
  predicts across the network's depth, and the critical sigma_w2 (Schoenholz et al. 2017).

A coordinate check is judged by rules of its own (a result with a `findings()` method,
`Judged`): `jaxgrad.scaling.Slopes` and `jaxgrad.scaling.CoordCheck` give

- ``width_scaling`` and ``depth_scaling``: the slope of log(statistic) against log(width)
  (log(depth)) of every recorded output's mean |x|, rms and change, above
  `jaxgrad.scaling.STABLE_SLOPE` (0.25) in any layer at any step (exploding: the
  coordinates grow with width, as the logits do under the standard parametrization with
  Adam) or below minus it (vanishing). The cure is muP for width (Yang and Hu 2021) and
  depth-muP's branch multiplier for depth (Yang et al. 2023; Bordelon et al. 2023).

Every rule that can be evaluated gives a finding, "stable" when it passes, so the findings
say what was checked and what was read. The overall verdict follows from the measured
findings by `PRECEDENCE`; mean-field findings are predictions of infinite-width theory
("info") and never set it. Every finding that is not stable names a cure, with the call that
applies it.

Example:
    >>> import numpy as np
    >>> from jaxgrad.stats import Profile, diagnose
    >>> profile = Profile(
    ...     names=("conv1", "conv2", "conv3"),
    ...     grad_norm=np.array([1.9e-12, 5e-12, 1e-11]),
    ...     weight_norm=np.array([1.9, 1.9, 1.9]),
    ... )
    >>> result = diagnose(profile)
    >>> result.verdict, [f.rule for f in result.findings if f.verdict != "stable"]
    ('vanishing', ['scale'])

References:
    Glorot and Bengio 2010, "Understanding the difficulty of training deep feedforward
    neural networks". He, Zhang, Ren and Sun 2015, "Delving Deep into Rectifiers".
    Mishkin and Matas 2015, "All you need is a good init". Schoenholz, Gilmer, Ganguli and
    Sohl-Dickstein 2017, "Deep Information Propagation". You, Gitman and Ginsburg 2017,
    "Large Batch Training of Convolutional Networks" (the gradient-to-weight ratio). Lu, Shin,
    Su and Karniadakis 2020, "Dying ReLU and Initialization". Pascanu, Mikolov and Bengio
    2013, "On the difficulty of training recurrent neural networks" (gradient clipping).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from jaxgrad import activations as _act
from jaxgrad import init as _init

if TYPE_CHECKING:
    import pandas as pd

BAND = 100.0
"""The default `band` of the gradient-ratio rule: the first layer's weight-gradient norm may
differ from the last layer's by at most this factor, two orders of magnitude. A well
initialized network stays within a few units (seed networks (b), (c), (f): 0.9 to 1.5 at
depth 100); at a fixed learning rate a factor 100 means one end learns 100 times faster than
the other, past what training absorbs."""

SIGNAL_BAND = 10.0
"""The default `signal_band`: a layer's pre-activation std may differ from the first layer's
by at most this factor, one order of magnitude (a factor 100 in variance). Initializations
are chosen to keep this std constant (Glorot and Bengio 2010, He et al. 2015), so the band is
tighter than the gradients': He-initialized ReLU at depth 100, width 400 (seed network (f))
drifts by a factor 1.3 to 3 with the seed (finite width), while tanh at sigma_w2 = 1,
sigma_b2 = 0 (seed network (c)) decays as q_l ~ 1/(2l) to zero and leaves the band from
about depth 50 (0.078 of the first layer at depth 100)."""

SCALE_LOW = 1e-7
"""||dL/dW|| / ||W|| below this in every layer is a vanishing scale: about float32's machine
epsilon (1.19e-7), so an SGD step at a learning rate <= 1 changes the weights by less than
their rounding and float32 weights do not move at all (entries below half an ulp round back).
A ReLU CNN from N(0, 0.01^2) weights, or seed network (e) (4e-16 to 7e-16), is far below."""

SCALE_HIGH = 1e2
"""||dL/dW|| / ||W|| above this in every layer is an exploding scale: an SGD step at a
learning rate of 0.01, the common default, would change every layer by at least its own
size. Healthy networks read 1e-3 to 0.2 (You et al. 2017, table 1: AlexNet) or about 1 under
jaxgrad's unit-size random-projection loss (seed networks (b), (c), (f): 0.05 to 1.8)."""

DEAD_THRESHOLD = 0.75
"""A dead fraction above this in any layer is vanishing: those units pass no gradient to the
weights before them (Lu et al. 2020). Not 0.5: at a symmetric initialization a ReLU unit is
off for half its inputs, and once deep layers correlate the batch it is off for the whole
batch half the time, so a healthy He-initialized ReLU network reads up to 0.53 (seed networks
(e), (f), width 400); 0.75 is halfway from that baseline to every unit dead."""

SATURATED_THRESHOLD = 0.75
"""A saturated fraction (|phi'(z)| < jaxgrad.stats.SATURATION_THRESHOLD = 0.01: tanh
at |z| > 3) above this in any layer is vanishing: those units pass almost no gradient
(Glorot and Bengio 2010, section 3). Above ReLU's baseline of about 0.5 (its negative half has
phi' = 0; seed networks (e), (f) read up to 0.57), as for `DEAD_THRESHOLD`."""

STALL_RATIO = 1e-6
"""A layer's updates stalled when ||update|| / ||W|| stayed below this at every recorded
step of a run: its weights move by less than a millionth a step (a thousandth is the
healthy order, Karpathy 2016), about 8 float32 units in the last place of a unit weight."""

CURE_SIGMA_B2 = 0.05
"""The bias variance a tanh-like cure suggests where the model has none: at sigma_b2 = 0 the
critical point has q* = 0 and the signal decays to zero as a power law (seed network (c)); at
0.05 the critical point (sigma_w2 = 1.761 for tanh) keeps q* = 0.57."""

VERDICTS = ("vanishing", "exploding", "stable")
"""The values of `Diagnosis.verdict`."""

RULES = (
    "nonfinite",
    "gradient_ratio",
    "signal",
    "scale",
    "dead",
    "saturated",
    "stalled",
    "died",
    "mean_field",
    "width_scaling",
    "depth_scaling",
)
"""The rules, in the order their findings are listed. The last two read the slopes of a
coordinate check (`jaxgrad.scaling.Slopes`), not a `Profile`."""

PRECEDENCE = ("exploding", "vanishing", "stable")
"""How the findings give the verdict: non-finite values first (a "nonfinite" finding is
exploding), then any measured rule that finds exploding, then any that finds vanishing,
else stable; within a verdict the first finding in `RULES` order is the one the message
quotes. Exploding beats vanishing where both are found (an exploding gradient with a
collapsing signal, say) because it fails first: one update too large diverges at once, while
a vanishing one stalls slowly; the vanishing findings stay listed with their cures.
Mean-field findings are predictions and do not vote."""

_COLLAPSED_Q_STAR = 1e-2  # a fixed point q* below this reads as a signal decaying to zero


class Profile(NamedTuple):
    """The per-layer numbers `diagnose` reads, in forward order, as host NumPy arrays.

    Every front end builds one (`LayerStats.profile()`, `ModelReport.profile()`); one built
    by hand is judged the same way (use keywords: fields after `weight_norm` have defaults).
    A per-layer field is an array of shape (L,), or None where the front end does not
    measure it (read as all nan); nan in a per-layer field other than `grad_norm` and
    `weight_norm` means "not measured" for that layer.

    Attributes:
        names: the L layer names, e.g. ("layer 1", ..., "layer L") or ("conv1", ...).
        grad_norm: ||dL/dW_l||_F, the Frobenius norm of each layer's kernel gradient.
        weight_norm: ||W_l||_F (0 for a zero-initialized kernel, which the signal and scale
            rules skip: Fixup's last branch layers, a zero readout).
        signal_std: std of the signal the layer's weights produce, its pre-activation
            h_{l-1} W_l + b_l (after a norm layer where the front end only sees that), over
            the batch and the units.
        act_grad_norm: ||dL/dh_l||, the backpropagated error at the layer's output.
        dead_frac: fraction of units zero for the whole batch.
        saturated_frac: fraction of pre-activations with |phi'| below the saturation
            threshold.
        first_nonfinite: 1-based index of the first layer, in forward order, whose signal
            holds an inf or a nan; -1 if none.
        first_nonfinite_backward: 1-based forward index of the first layer met in backward
            order (from the last layer) whose gradient is not finite; -1 if none.
        activation: the elementwise activation (a name or a callable) of a plain stack
            h_l = phi(h_{l-1} W_l + b_l), without norm or residual, or None: the mean-field
            rule runs only where it is known.
        fan_in, fan_out: per layer (L,) (or one int for every layer), or None, for the
            mean-field estimate sigma_w2 = fan_in Var(W) = ||W||^2 / fan_out (fan_out
            defaults to fan_in: square layers).
        sigma_w2, sigma_b2: the weight and bias variances of the initialization where known
            (W ~ N(0, sigma_w2 / fan_in), b ~ N(0, sigma_b2)), else None.
        steps: for a training run, the recorded steps (R,) that the histories hold.
        update_ratio_history: (R, L) ||update|| / ||W|| of each layer's kernel at each
            recorded step, for the "stalled" rule; None outside a run.
        dead_frac_history: (R, L) each layer's dead fraction at each recorded step, for the
            "died" rule; None outside a run.
        nonfinite_step: for a run, the step whose numbers the per-layer fields hold when it
            went non-finite there (its first non-finite step), for the message; else None.
        readout: whether the last layer is the network's readout (its output is the model's
            output): the signal rule then leaves its std out (see the module doc).

    Example:
        >>> import numpy as np
        >>> from jaxgrad import stats
        >>> profile = stats.Profile(
        ...     names=("layer 1", "layer 2", "layer 3"),
        ...     grad_norm=np.array([1e-4, 1e-2, 1.0]),
        ...     weight_norm=np.ones(3),
        ... )
        >>> profile.depth, stats.diagnose(profile).verdict
        (3, 'vanishing')
    """

    names: tuple[str, ...]
    grad_norm: np.ndarray
    weight_norm: np.ndarray
    signal_std: np.ndarray | None = None
    act_grad_norm: np.ndarray | None = None
    dead_frac: np.ndarray | None = None
    saturated_frac: np.ndarray | None = None
    first_nonfinite: int = -1
    first_nonfinite_backward: int = -1
    activation: str | Callable[..., Any] | None = None
    fan_in: np.ndarray | None = None
    fan_out: np.ndarray | None = None
    sigma_w2: float | None = None
    sigma_b2: float | None = None
    steps: tuple[int, ...] | None = None
    update_ratio_history: np.ndarray | None = None
    dead_frac_history: np.ndarray | None = None
    nonfinite_step: int | None = None
    readout: bool = False

    @property
    def depth(self) -> int:
        return len(self.names)

    def profile(self) -> Profile:
        """The profile itself: a `Profile` is `Profiled`, so `diagnose(profile)` works."""
        return self

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: `layer` (1-based), `name`, the per-layer fields, and
        `grad_to_weight` (grad_norm / weight_norm, what the scale rule reads)."""
        import pandas as pd  # the pandas view lives at the edge, not in the numeric core

        checked = _checked(self)
        columns: dict[str, Any] = {
            "layer": np.arange(1, checked.depth + 1),
            "name": list(checked.names),
        }
        for field in _PER_LAYER:
            columns[field] = getattr(checked, field)
        columns["grad_to_weight"] = _grad_to_weight(checked)
        return pd.DataFrame(columns)

    def __repr__(self) -> str:
        try:
            checked = _checked(self)
        except (TypeError, ValueError):  # a malformed profile still prints, field by field
            fields = ", ".join(f"{k}={v!r}" for k, v in self._asdict().items())
            return f"Profile({fields})"
        known = [
            f"{name}={value!r}"
            for name, value in (
                ("activation", _activation_name(checked.activation)),
                ("sigma_w2", checked.sigma_w2),
                ("sigma_b2", checked.sigma_b2),
                ("readout", True if checked.readout else None),
            )
            if value is not None
        ]
        names = checked.names
        span = f"{names[0]!r}" if len(names) == 1 else f"{names[0]!r} .. {names[-1]!r}"
        lines = [
            f"Profile of {checked.depth} layers ({span})"
            + (f", {', '.join(known)}" if known else "")
            + f", first_nonfinite={checked.first_nonfinite}"
            + f", first_nonfinite_backward={checked.first_nonfinite_backward}"
        ]
        for field in ("signal_std", "grad_norm", "weight_norm", "act_grad_norm"):
            values = getattr(checked, field)
            if np.isnan(values).all():
                continue
            lines.append(f"  {field}: {_g(values[0])} (first) .. {_g(values[-1])} (last)")
        return "\n".join(lines)


_PER_LAYER = (
    "signal_std",
    "grad_norm",
    "weight_norm",
    "act_grad_norm",
    "dead_frac",
    "saturated_frac",
    "fan_in",
    "fan_out",
)


class Profiled(Protocol):
    """Any result `diagnose` takes: `LayerStats`, `ModelReport`, a training history, or a
    `Profile` itself: anything with a `profile()` method that returns a `Profile`.

    Example:
        >>> import numpy as np
        >>> from jaxgrad import stats
        >>> class TwoLayers:  # a front end of your own
        ...     def profile(self):
        ...         return stats.Profile(("a", "b"), np.array([1.0, 2.0]), np.ones(2))
        >>> stats.diagnose(TwoLayers()).verdict
        'stable'
    """

    def profile(self) -> Profile: ...


class Judged(Protocol):
    """A result `diagnose` reads by rules of its own instead of a `Profile`: anything with a
    `findings()` method returning `Finding`s of rules in `RULES`. `jaxgrad.scaling.Slopes`
    (the width_scaling or depth_scaling rule) and `jaxgrad.scaling.CoordCheck` (its slopes)
    are judged.

    Example:
        >>> import numpy as np
        >>> from jaxgrad.scaling import CoordCheck, CoordPoint, slopes
        >>> def point(width):  # one seed, one step; the readout's mean |x| = width
        ...     values = np.ones((1, 1, 2, 3))
        ...     values[0, 0, 1, :2] = width
        ...     return CoordPoint(width, None, ("hidden", "readout"), (), np.zeros((1, 1)),
        ...                       values, np.zeros((1, 1, 0, 3)))
        >>> check = CoordCheck((point(64), point(256)), (64, 256), (None,), (0,), 1)
        >>> finding = slopes(check).findings()[0]
        >>> finding.rule, finding.verdict, finding.layers
        ('width_scaling', 'exploding', (2,))
    """

    def findings(self) -> Sequence[Finding]: ...


class Finding(NamedTuple):
    """One rule's reading of a `Profile`.

    Attributes:
        rule: one of `RULES`.
        verdict: "vanishing", "exploding" or "stable" for a measured rule; "info" for a
            mean-field prediction, or a scaling rule that found no defined slope.
        layers: 1-based forward indices of the layers at fault (empty when stable).
        numbers: the values the rule read (plain floats and ints), keyed by name.
        threshold: the documented threshold the numbers were compared against (for a
            two-sided rule that did not fire, the nearer one).
        message: the finding in plain words: the layers, the numbers, the rule.
        cure: the remedy with the call that applies it; "" when none is needed.

    Example:
        >>> import numpy as np
        >>> from jaxgrad import stats
        >>> profile = stats.Profile(("1", "2", "3"), np.array([1e-4, 1e-2, 1.0]), np.ones(3))
        >>> finding = stats.diagnose(profile).findings[1]
        >>> finding.rule, finding.verdict, finding.layers, finding.threshold
        ('gradient_ratio', 'vanishing', (1,), 100.0)
    """

    rule: str
    verdict: str
    layers: tuple[int, ...]
    numbers: dict[str, float | int]
    threshold: float
    message: str
    cure: str

    def __str__(self) -> str:
        text = f"{self.rule} ({self.verdict}): {self.message}"
        return text + (f"\n    cure: {self.cure}" if self.cure else "")


class Diagnosis(NamedTuple):
    """A verdict on the gradient flow of one network, and the findings it follows from.

    Attributes:
        verdict: "vanishing", "exploding" or "stable", from `findings` by `PRECEDENCE`.
        ratio: grad_norm of the first layer over that of the last (1 is perfect flow);
            nan for a result judged by its own rules (`Judged`: the slopes of a coordinate
            check), as is `rate_per_layer`.
        rate_per_layer: the geometric-mean factor by which the gradient norm changes per
            layer going from the output to the input, ratio ** (1 / (depth - 1)).
        layers_at_fault: 1-based layers whose gradient norm is outside the band relative to
            the last layer's, or not finite (the gradient-ratio rule's layers); () for a
            `Judged` result, whose findings name their layers.
        first_nonfinite_layer: the first layer whose signal is not finite; -1 if none.
        message: the verdict in one sentence, quoting the finding it follows from.
        findings: every rule's `Finding`, in `RULES` order.

    Example:
        >>> import numpy as np
        >>> from jaxgrad import stats
        >>> profile = stats.Profile(("1", "2", "3"), np.array([1e-4, 1e-2, 1.0]), np.ones(3))
        >>> result = stats.diagnose(profile)
        >>> result.verdict, result.ratio, result.rate_per_layer, result.layers_at_fault
        ('vanishing', 0.0001, 0.01, (1,))
        >>> [finding.rule for finding in result.findings]
        ['nonfinite', 'gradient_ratio', 'scale']
    """

    verdict: str
    ratio: float
    rate_per_layer: float
    layers_at_fault: tuple[int, ...]
    first_nonfinite_layer: int
    message: str
    findings: tuple[Finding, ...] = ()

    def __str__(self) -> str:
        lines = [self.message]
        for finding in self.findings:
            lines.append(f"  - {finding.rule} ({finding.verdict}): {finding.message}")
            if finding.cure:
                lines.append(f"      cure: {finding.cure}")
        return "\n".join(lines)

    __repr__ = __str__

    def to_frame(self) -> pd.DataFrame:
        """One row per finding: `rule`, `verdict`, `layers` (a tuple), `threshold`,
        `message`, `cure`, `numbers` (a dict)."""
        import pandas as pd  # the pandas view lives at the edge, not in the numeric core

        columns = ["rule", "verdict", "layers", "threshold", "message", "cure", "numbers"]
        rows = [{name: getattr(f, name) for name in columns} for f in self.findings]
        return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------------------- checking


def _as_layers(name: str, value: object, depth: int, *, optional: bool) -> np.ndarray:
    if value is None:
        if not optional:
            raise TypeError(f"Profile.{name} is required, got None")
        return np.full(depth, np.nan)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"Profile.{name} must be an array of numbers, got {value!r}") from error
    if array.ndim == 0 and name in ("fan_in", "fan_out"):
        array = np.full(depth, float(array))  # one fan for every layer
    if array.shape != (depth,):
        hint = "; index the vmapped axis first" if array.ndim > 1 else ""
        raise ValueError(
            f"Profile.{name} must have one value per layer, shape ({depth},) for "
            f"{depth} names, got shape {array.shape}{hint}"
        )
    return array


def _as_layer_index(name: str, value: object, depth: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        array = np.asarray(value)
        if array.shape != () or not np.issubdtype(array.dtype, np.integer):
            hint = "; index the vmapped axis first" if array.ndim else ""
            raise TypeError(f"Profile.{name} must be an int, got {value!r}{hint}")
        value = array.item()
    value = int(value)
    if value != -1 and not 1 <= value <= depth:
        raise ValueError(f"Profile.{name} must be -1 or a layer in [1, {depth}], got {value}")
    return value


def _optional_variance(name: str, value: object) -> float | None:
    return None if value is None else _init._nonnegative(name, value)


def _checked(profile: Profile) -> Profile:
    """The profile with NumPy float64 arrays, nan for what is unknown, and checked values."""
    names = profile.names
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"Profile.names must be a tuple of layer names, got {names!r}")
    names = tuple(str(name) for name in names)
    depth = len(names)
    if depth == 0:
        raise ValueError("Profile.names is empty: a profile needs at least one layer")
    arrays = {
        field: _as_layers(
            field,
            getattr(profile, field),
            depth,
            optional=field not in ("grad_norm", "weight_norm"),
        )
        for field in _PER_LAYER
    }
    activation = profile.activation
    if activation is not None:
        _act.resolve(activation)  # an unknown name or a non-callable fails here, named
    return Profile(
        names=names,
        **arrays,
        first_nonfinite=_as_layer_index("first_nonfinite", profile.first_nonfinite, depth),
        first_nonfinite_backward=_as_layer_index(
            "first_nonfinite_backward", profile.first_nonfinite_backward, depth
        ),
        activation=activation,
        sigma_w2=_optional_variance("sigma_w2", profile.sigma_w2),
        sigma_b2=_optional_variance("sigma_b2", profile.sigma_b2),
        steps=None if profile.steps is None else tuple(int(s) for s in profile.steps),
        update_ratio_history=_as_history(
            "update_ratio_history", profile.update_ratio_history, depth, profile.steps
        ),
        dead_frac_history=_as_history(
            "dead_frac_history", profile.dead_frac_history, depth, profile.steps
        ),
        nonfinite_step=None if profile.nonfinite_step is None else int(profile.nonfinite_step),
        readout=_as_bool("readout", profile.readout),
    )


def _as_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"Profile.{name} must be True or False, got {value!r}")
    return bool(value)


def _as_history(name: str, value: object, depth: int, steps) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float64)
    rows = None if steps is None else len(steps)
    if array.ndim != 2 or array.shape[1] != depth or (rows is not None and array.shape[0] != rows):
        raise ValueError(
            f"Profile.{name} must have shape (recorded steps, layers) = ({rows}, {depth}), got "
            f"{array.shape}"
        )
    return array


def _profile_of(result: object) -> Profile:
    method = getattr(result, "profile", None)
    if not callable(method):
        raise TypeError(
            "diagnose takes the LayerStats of jaxgrad.probe or jaxgrad.propagate, the "
            "ModelReport of jaxgrad.inspect, or any result with a .profile() method returning "
            "a jaxgrad.stats.Profile, or the Slopes or CoordCheck of jaxgrad.scaling (any "
            f"result with a .findings() method); got {type(result).__name__}"
        )
    profile = method()
    if not isinstance(profile, Profile):
        raise TypeError(
            f"{type(result).__name__}.profile() must return a jaxgrad.stats.Profile, got "
            f"{type(profile).__name__}"
        )
    return profile


# ----------------------------------------------------------------------------- wording


def _g(value: float, digits: int = 3) -> str:
    """A number for a message: 3 significant digits, inf and nan as they are."""
    value = float(value)
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def _name(profile: Profile, layer: int) -> str:
    """A 1-based layer as the message names it: its name, with the index if the name lacks it."""
    name = profile.names[layer - 1]
    return name if name == f"layer {layer}" else f"{name!r} (layer {layer})"


def _ranges(layers: Sequence[int]) -> str:
    parts: list[str] = []
    start = previous = None
    for layer in [*layers, None]:
        if start is not None and (layer is None or layer != previous + 1):
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = None
        if layer is not None and start is None:
            start = layer
        previous = layer
    return ", ".join(parts)


def _where(profile: Profile, layers: Sequence[int]) -> str:
    """'layer 3', 'all 100 layers', or '52 of 100 layers (49-100)'."""
    if len(layers) == profile.depth and profile.depth > 1:
        return f"all {profile.depth} layers"
    if len(layers) <= 2:
        return " and ".join(_name(profile, layer) for layer in layers)
    return f"{len(layers)} of {profile.depth} layers ({_ranges(layers)})"


def _activation_name(activation: object) -> str | None:
    return None if activation is None else _act.name_of(activation)


def _power(base: float, exponent: float) -> float:
    """base ** exponent for base >= 0, inf or 0 where it overflows or underflows."""
    if base == 0:
        return 0.0 if exponent > 0 else 1.0
    log = exponent * math.log(base)
    return math.inf if log > 709 else math.exp(max(log, -745.0))


def _grad_to_weight(profile: Profile) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(profile.weight_norm > 0, profile.grad_norm / profile.weight_norm, np.nan)


# ----------------------------------------------------------------------------- cures


def _decays(theory, activation, sigma_w2: float, sigma_b2: float, q_star=None) -> bool:
    """Whether the signal of a plain stack decays to zero: its length map shrinks a unit
    length (q_map(1) < 1) toward a fixed point q* near 0. (Where every length is a fixed
    point, linear at sigma_w2 = 1 or ReLU at 2, q* from iterating is not a decay.)"""
    if q_star is None:
        q_star = float(theory.q_star(activation, sigma_w2, sigma_b2))
    if not q_star < _COLLAPSED_Q_STAR:
        return False
    return float(theory.q_map(activation, sigma_w2, sigma_b2, 1.0)) < 1 - _COLLAPSED_Q_STAR


class Prescription(NamedTuple):
    """The re-initialization that puts a plain stack of an activation at its critical point
    (chi1 = 1, Schoenholz et al. 2017): kernels W ~ N(0, sigma_w2 / fan_in), and biases
    b ~ N(0, sigma_b2) where `sigma_b2` differs from the model's (else biases are kept).

    Attributes:
        sigma_w2: the critical weight variance.
        sigma_b2: the bias variance it is critical at.
        changes_biases: True where the bias variance had to be raised (at the model's
            sigma_b2 the fixed point is q* = 0 and the signal decays as a power law).

    Example:
        >>> from jaxgrad import stats
        >>> stats.prescribe_initialization("relu")
        Prescription(sigma_w2=2.0, sigma_b2=0.0, changes_biases=False)
    """

    sigma_w2: float
    sigma_b2: float
    changes_biases: bool


def prescribe_initialization(
    activation: object, sigma_b2: float | None = None
) -> Prescription | None:
    """The critical initialization for a plain stack of `activation` at the model's bias
    variance (0 when unknown), or at `CURE_SIGMA_B2` where the signal would still decay to
    zero there; None where the activation has no critical point in [1e-3, 1e3].

    This is what the cures of `diagnose` name and what `jaxgrad.model_init.cure` applies.

    Args:
        activation: the stack's activation, a name or an elementwise callable.
        sigma_b2: the model's bias variance; None when unknown (taken as 0).

    Returns:
        A `Prescription`, or None where no critical point exists.

    Raises:
        ValueError: an unknown activation name, or (for any activation but relu, which is
            not checked) a negative or non-finite sigma_b2.

    Example:
        >>> prescribe_initialization("relu").sigma_w2
        2.0
        >>> round(prescribe_initialization("tanh", 0.0).sigma_w2, 3)  # q* = 0 at sigma_b2 = 0
        1.761

    References:
        Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep Information Propagation";
        He, Zhang, Ren and Sun 2015, "Delving Deep into Rectifiers" (sigma_w2 = 2 for relu).
    """
    from jaxgrad import theory  # the theory sits beside the front ends, right of stats

    if _activation_name(activation) == "relu":
        return Prescription(2.0, 0.0 if sigma_b2 is None else float(sigma_b2), False)
    bias = 0.0 if sigma_b2 is None else float(sigma_b2)
    critical = float(theory.critical_sigma_w2(activation, bias))
    if not math.isfinite(critical):
        return None
    if _decays(theory, activation, critical, bias):
        better = float(theory.critical_sigma_w2(activation, CURE_SIGMA_B2))
        if math.isfinite(better):
            return Prescription(better, CURE_SIGMA_B2, True)
    return Prescription(critical, bias, False)


def _init_cure(activation: object, sigma_b2: float | None) -> str:
    """The re-initialization that puts a plain stack of this activation at its critical
    point, with the call (`prescribe_initialization`); LSUV for any model."""
    lsuv = (
        "jaxgrad.model_init.lsuv(model, x, key), which rescales each layer to unit output "
        "variance on a batch for any activation (Mishkin and Matas 2015)"
    )
    name = _activation_name(activation)
    if name is None:
        return (
            "re-initialize the kernels: jaxgrad.init.kaiming_normal() for ReLU (He et al. "
            "2015); for tanh and others, the critical point that diagnose(result, "
            f"activation=...) names; or {lsuv}"
        )
    if name == "relu":
        return (
            "re-initialize the kernels with jaxgrad.init.kaiming_normal() (He et al. 2015: "
            f"sigma_w2 = 2, the critical point of ReLU), or {lsuv}"
        )
    bias = 0.0 if sigma_b2 is None else sigma_b2
    prescription = prescribe_initialization(activation, sigma_b2)
    if prescription is None:
        return (
            f"{name} has no critical sigma_w2 in [1e-3, 1e3] at sigma_b2 = {bias:g}: "
            f"use {lsuv}, or a norm layer, nn.MLP(..., norm='layer')"
        )
    if prescription.changes_biases:
        from jaxgrad import theory

        critical = float(theory.critical_sigma_w2(activation, bias))
        text = (
            f"sigma_w2 = {critical:.5g} at sigma_b2 = {bias:g} is the critical point of {name} "
            f"(chi1 = 1, Schoenholz et al. 2017), but there q* = 0 and the signal still "
            f"decays to zero (as a power law), so re-initialize the biases with "
            f"jaxgrad.init.normal({math.sqrt(prescription.sigma_b2):.4g}) (sigma_b2 = "
            f"{prescription.sigma_b2:g}) and the kernels with "
            f"jaxgrad.init.variance_scaling({prescription.sigma_w2:.5g}, 'fan_in', 'normal')"
        )
    else:
        text = (
            f"sigma_w2 = {prescription.sigma_w2:.5g} at sigma_b2 = {bias:g} is the critical "
            f"point of {name} (chi1 = 1, Schoenholz et al. 2017): re-initialize the kernels "
            f"with jaxgrad.init.variance_scaling({prescription.sigma_w2:.5g}, 'fan_in', "
            f"'normal') (gain {math.sqrt(prescription.sigma_w2):.4g})"
        )
    return f"{text}; or {lsuv}; jaxgrad.model_init.cure applies either and checks it"


_NORM = "a norm layer before each activation: nn.MLP(..., norm='layer') (Ba et al. 2016)"
_RESIDUAL = "residual connections: nn.MLP(..., residual=True) (He et al. 2016)"
_CLIP = (
    "clip the updates with jaxgrad.optim.clip_by_global_norm(1.0) (Pascanu et al. 2013) "
    "and lower the learning rate"
)


def _cure(rule: str, verdict: str, profile: Profile) -> str:
    init = _init_cure(profile.activation, profile.sigma_b2)
    if rule == "nonfinite":
        return f"{init}; in training, {_CLIP}"
    if rule == "gradient_ratio":
        other = _CLIP if verdict == "exploding" else _RESIDUAL
        return f"{init}; {_NORM}; {other}"
    if rule == "scale":
        if verdict == "exploding":
            return f"{_CLIP}; {init}"
        return (
            f"the weights are too small for their depth everywhere: {init}; a larger "
            "learning rate does not help once updates fall below float32's rounding"
        )
    if rule == "signal":
        return f"{init}; {_NORM}"
    if rule == "dead":
        return (
            "re-initialize with jaxgrad.init.kaiming_normal() and zero biases (He et al. "
            "2015), or an activation whose negative side passes gradient: "
            "nn.MLP(..., activation='leaky_relu') or jaxgrad.nn.PReLU (Lu et al. 2020)"
        )
    if rule == "saturated":
        return f"shrink the pre-activations: {init}; {_NORM}"
    return init


# ----------------------------------------------------------------------------- the rules


def _per_layer(rate: float) -> str:
    """The clause ', a factor r per layer' of a message, empty where there is no factor (a
    zero or non-finite end)."""
    return f", a factor {_g(rate, 4)} per layer" if math.isfinite(rate) else ""


def _stable(rule: str, numbers: dict, threshold: float, message: str) -> Finding:
    return Finding(rule, "stable", (), numbers, threshold, message, "")


def _nonfinite_rule(profile: Profile) -> Finding:
    grad_bad = ~np.isfinite(profile.grad_norm) | ~np.isfinite(profile.weight_norm)
    forward = profile.first_nonfinite
    backward = profile.first_nonfinite_backward
    infinite = np.zeros(profile.depth, bool)
    for field in ("signal_std", "act_grad_norm"):  # nan there means "not measured"
        infinite |= np.isinf(getattr(profile, field))
    layers = set(np.flatnonzero(grad_bad | infinite) + 1)
    layers |= {layer for layer in (forward, backward) if layer > 0}
    if forward > 0:
        layers |= set(np.flatnonzero(~np.isfinite(profile.signal_std[forward - 1 :])) + forward)
    layers = tuple(sorted(int(layer) for layer in layers))
    numbers = {
        "first_nonfinite": forward,
        "first_nonfinite_backward": backward,
        "nonfinite_grad_layers": int(grad_bad.sum()),
    }
    if not layers:
        return _stable("nonfinite", numbers, math.inf, "every value is finite")
    parts = []
    if forward > 0:
        parts.append(f"the signal is not finite from {_name(profile, forward)} on")
    if grad_bad.any():
        parts.append(
            f"the weight gradient or weight norm is not finite in "
            f"{_where(profile, tuple(int(i) + 1 for i in np.flatnonzero(grad_bad)))}"
        )
    if backward > 0:
        parts.append(f"the backward pass first breaks at {_name(profile, backward)}")
    if not parts:
        parts.append(f"values are infinite in {_where(profile, layers)}")
    message = "; ".join(parts) + " (inf or nan counts as exploding)"
    if profile.nonfinite_step is not None:
        message = f"at step {profile.nonfinite_step} of the run, " + message
    return Finding(
        "nonfinite",
        "exploding",
        layers,
        numbers,
        math.inf,
        message,
        _cure("nonfinite", "", profile),
    )


def _gradient_rule(profile: Profile, band: float) -> tuple[Finding | None, dict]:
    """The gradient-ratio finding (None where the ends are not finite: the nonfinite rule
    speaks), and the Diagnosis fields it gives (ratio, rate, layers at fault)."""
    grad = profile.grad_norm
    depth = profile.depth
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = grad / grad[-1]
    ratio = float(relative[0])
    rate = float(ratio ** (1 / (depth - 1))) if depth > 1 and ratio > 0 else math.nan
    bad = ~np.isfinite(relative) | (relative < 1 / band) | (relative > band)
    layers = tuple(int(i) + 1 for i in np.flatnonzero(bad))
    fields = {"ratio": ratio, "rate_per_layer": rate, "layers_at_fault": layers}
    if not (np.isfinite(grad[0]) and np.isfinite(grad[-1])):
        return None, fields
    numbers = {
        "first_grad_norm": float(grad[0]),
        "last_grad_norm": float(grad[-1]),
        "ratio": ratio,
        "rate_per_layer": rate,
    }
    first, last = _name(profile, 1), _name(profile, depth)
    if not np.any(grad > 0):
        message = f"every weight gradient is zero ({_where(profile, layers)})"
        verdict = "vanishing"
    else:
        if ratio > band:
            verdict = "exploding"
        elif ratio < 1 / band:
            verdict = "vanishing"
        else:
            verdict = "stable"
        if ratio == 0:  # no factor per layer to quote: the first layer learns nothing
            message = (
                f"the weight gradient of {first} is exactly zero, against {_g(grad[-1])} at {last}"
            )
        else:
            message = (
                f"the weight-gradient norm of {first} is {_g(ratio)} times that of {last} "
                f"({_g(grad[0])} against {_g(grad[-1])}){_per_layer(rate)}"
            )
        if verdict == "stable":
            message += f", within a factor {band:g}"
        else:
            message += f"; {_where(profile, layers)} outside a factor {band:g} of {last}"
    if verdict == "stable":
        return _stable("gradient_ratio", numbers, band, message), fields
    cure = _cure("gradient_ratio", verdict, profile)
    return Finding("gradient_ratio", verdict, layers, numbers, band, message, cure), fields


def _scale_rule(profile: Profile) -> Finding | None:
    scale = _grad_to_weight(profile)
    known = np.isfinite(scale)
    if not known.any():
        return None
    values = scale[known]
    low_at = int(np.flatnonzero(known)[np.argmin(values)]) + 1
    high_at = int(np.flatnonzero(known)[np.argmax(values)]) + 1
    smallest, largest = float(values.min()), float(values.max())
    numbers = {
        "min_grad_to_weight": smallest,
        "max_grad_to_weight": largest,
        "min_layer": low_at,
        "max_layer": high_at,
        "layers_read": int(known.sum()),
    }
    layers = tuple(int(i) + 1 for i in np.flatnonzero(known))
    span = (
        f"||dL/dW|| / ||W|| (the relative change a unit learning rate makes) is between "
        f"{_g(smallest)} ({_name(profile, low_at)}) and {_g(largest)} "
        f"({_name(profile, high_at)}) over {_where(profile, layers)}"
    )
    if largest < SCALE_LOW:
        message = f"{span}: below {SCALE_LOW:g} in every layer, uniformly collapsed"
        cure = _cure("scale", "vanishing", profile)
        return Finding("scale", "vanishing", layers, numbers, SCALE_LOW, message, cure)
    if smallest > SCALE_HIGH:
        message = f"{span}: above {SCALE_HIGH:g} in every layer"
        cure = _cure("scale", "exploding", profile)
        return Finding("scale", "exploding", layers, numbers, SCALE_HIGH, message, cure)
    # the nearer threshold: the one a smaller factor on every layer would cross
    to_high = SCALE_HIGH / smallest if smallest > 0 else math.inf
    nearer = SCALE_LOW if largest / SCALE_LOW <= to_high else SCALE_HIGH
    message = (
        f"{span}: neither below {SCALE_LOW:g} in every layer nor above {SCALE_HIGH:g} in "
        "every layer"
    )
    return _stable("scale", numbers, nearer, message)


def _signal_rule(profile: Profile, signal_band: float) -> Finding | None:
    std = profile.signal_std
    # a zero kernel outputs its bias by design (Fixup, zero readouts): not a collapse; a
    # readout's scale is the loss's business
    read = np.isfinite(std) & (profile.weight_norm != 0)
    if profile.readout:
        read[-1] = False
    if read.sum() < 2:
        return None
    indices = np.flatnonzero(read)
    positive = indices[std[indices] > 0]
    layers_read = tuple(int(i) + 1 for i in indices)
    if positive.size == 0:
        numbers = {"first_std": 0.0, "last_std": 0.0, "layers_read": len(layers_read)}
        message = f"the pre-activation std is 0 in {_where(profile, layers_read)}: no signal"
        cure = _cure("signal", "vanishing", profile)
        return Finding("signal", "vanishing", layers_read, numbers, signal_band, message, cure)
    reference = int(positive[0])
    relative = std[indices] / std[reference]
    last = int(indices[-1])
    total = float(std[last] / std[reference])
    steps = last - reference
    rate = _power(total, 1 / steps) if steps > 0 and total > 0 else math.nan
    low, high = relative < 1 / signal_band, relative > signal_band
    extreme = int(np.argmax(np.abs(np.log(np.where(relative > 0, relative, 1e-300)))))
    numbers = {
        "first_std": float(std[reference]),
        "last_std": float(std[last]),
        "ratio": total,
        "rate_per_layer": rate,
        "extreme_ratio": float(relative[extreme]),
        "extreme_layer": int(indices[extreme]) + 1,
        "layers_read": len(layers_read),
    }
    first_name, last_name = _name(profile, reference + 1), _name(profile, last + 1)
    moves = "falls" if total < 1 else "grows"
    message = (
        f"the pre-activation std {moves} from {_g(std[reference])} ({first_name}) to "
        f"{_g(std[last])} ({last_name}), a factor {_g(total)}"
        + (f" ({_g(rate, 4)} per layer)" if math.isfinite(rate) else "")
    )
    if not (low.any() or high.any()):
        return _stable(
            "signal", numbers, signal_band, f"{message}, within a factor {signal_band:g}"
        )
    verdict = "vanishing" if relative[extreme] < 1 else "exploding"
    outside = low if verdict == "vanishing" else high
    layers = tuple(int(i) + 1 for i in indices[outside])
    side = "below 1/" if verdict == "vanishing" else "above "
    message += (
        f"; {_where(profile, layers)} {side}{signal_band:g} of {first_name}'s, the farthest "
        f"{_name(profile, numbers['extreme_layer'])} at {_g(relative[extreme])}"
    )
    cure = _cure("signal", verdict, profile)
    return Finding("signal", verdict, layers, numbers, signal_band, message, cure)


def _fraction_rule(profile: Profile, rule: str) -> Finding | None:
    field, threshold, what = {
        "dead": ("dead_frac", DEAD_THRESHOLD, "units dead for the whole batch"),
        "saturated": ("saturated_frac", SATURATED_THRESHOLD, "saturated pre-activations"),
    }[rule]
    values = getattr(profile, field)
    known = np.isfinite(values)
    if not known.any():
        return None
    worst = int(np.flatnonzero(known)[np.argmax(values[known])]) + 1
    numbers = {f"max_{field}": float(values[worst - 1]), "max_layer": worst}
    over = tuple(int(i) + 1 for i in np.flatnonzero(known & (values > threshold)))
    message = f"{what}: at most {values[worst - 1]:.1%} ({_name(profile, worst)})"
    if not over:
        return _stable(rule, numbers, threshold, f"{message}, not above {threshold:.0%}")
    numbers["layers_over"] = len(over)
    message += f"; above {threshold:.0%} in {_where(profile, over)}"
    return Finding(rule, "vanishing", over, numbers, threshold, message, _cure(rule, "", profile))


def _estimated_sigma_w2(profile: Profile) -> tuple[float | None, str]:
    fan_out = profile.fan_out
    estimate = profile.weight_norm**2 / fan_out
    usable = np.isfinite(estimate) & (profile.weight_norm > 0)
    if not usable.any():
        return None, ""
    values = estimate[usable]
    note = (
        f" (estimated from the weights, fan_in Var(W) = ||W||^2 / fan_out averaged over "
        f"{int(usable.sum())} layers: {_g(values.min(), 4)} to {_g(values.max(), 4)})"
    )
    return float(values.mean()), note


def _mean_field_rule(profile: Profile, band: float) -> Finding | None:
    activation = profile.activation
    if activation is None:
        return None
    from jaxgrad import theory  # the theory sits beside the front ends, right of stats

    name = _activation_name(activation)
    sigma_w2, how = profile.sigma_w2, ""
    if sigma_w2 is None:
        sigma_w2, how = _estimated_sigma_w2(profile)
    if sigma_w2 is None:
        message = (
            f"{name} is known but sigma_w2 is not: pass sigma_w2= to diagnose, or fans to "
            "the profile for an estimate from the weights"
        )
        return Finding("mean_field", "info", (), {}, theory.PHASE_TOLERANCE, message, "")
    sigma_b2, assumed = profile.sigma_b2, ""
    if sigma_b2 is None:
        sigma_b2, assumed = 0.0, " (assumed: zero biases, jaxgrad's default)"
    if max(sigma_w2, sigma_b2) > theory.MAX_VARIANCE:
        message = (
            f"{name} at sigma_w2 = {_g(sigma_w2)}{how}, sigma_b2 = {_g(sigma_b2)}: beyond "
            f"the theory's range (jaxgrad.theory.MAX_VARIANCE = {theory.MAX_VARIANCE:g})"
        )
        numbers = {"sigma_w2": sigma_w2, "sigma_b2": sigma_b2}
        cure = _init_cure(activation, sigma_b2 if sigma_b2 <= theory.MAX_VARIANCE else None)
        return Finding("mean_field", "info", (), numbers, theory.PHASE_TOLERANCE, message, cure)
    chi1 = float(theory.chi1(activation, sigma_w2, sigma_b2))
    q_star = float(theory.q_star(activation, sigma_w2, sigma_b2))
    critical = float(theory.critical_sigma_w2(activation, sigma_b2))
    phase = theory.phase(activation, sigma_w2, sigma_b2)
    depth = profile.depth
    predicted = _power(chi1, (depth - 1) / 2)
    numbers: dict[str, float | int] = {
        "sigma_w2": sigma_w2,
        "sigma_b2": sigma_b2,
        "chi1": chi1,
        "q_star": q_star,
        "critical_sigma_w2": critical,
        "predicted_ratio": predicted,
    }
    message = (
        f"{name} at sigma_w2 = {_g(sigma_w2, 5)}{how}, sigma_b2 = {sigma_b2:g}{assumed} is in "
        f"the {phase} phase (chi1 = {_g(chi1, 4)}, critical sigma_w2 = {_g(critical, 5)}; "
        f"Schoenholz et al. 2017): dL/dh changes by sqrt(chi1) = {_g(math.sqrt(chi1), 4)} a "
        f"layer, a predicted factor {_g(predicted)} from the last layer to the first"
    )
    act_grad = profile.act_grad_norm
    if np.isfinite(act_grad[0]) and np.isfinite(act_grad[-1]) and act_grad[-1] > 0:
        numbers["measured_ratio"] = float(act_grad[0] / act_grad[-1])
        message += f" (measured ||dL/dh||: {_g(numbers['measured_ratio'])})"
    if _decays(theory, activation, sigma_w2, sigma_b2, q_star):
        message += f"; q* = {_g(q_star)}: the signal decays toward zero"
    elif math.isinf(q_star):
        message += "; q* = inf: the signal grows without bound"
    inside = 1 / band <= predicted <= band
    if inside:
        message += f"; within a factor {band:g} at this depth"
        cure = ""
    else:
        cure = _init_cure(activation, sigma_b2)
    return Finding("mean_field", "info", (), numbers, theory.PHASE_TOLERANCE, message, cure)


# ----------------------------------------------------------------------------- diagnose


def _run_steps(profile: Profile, count: int) -> tuple[int, ...]:
    return profile.steps if profile.steps is not None else tuple(range(count))


def _stalled_rule(profile: Profile) -> Finding | None:
    """Layers whose update-to-weight ratio stayed below `STALL_RATIO` at every recorded step
    of a run: they did not learn (vanishing)."""
    history = profile.update_ratio_history
    if history is None or not history.size:
        return None
    measured = np.isfinite(history)
    stalled = np.all(~measured | (history < STALL_RATIO), axis=0) & measured.any(axis=0)
    layers = tuple(int(i) + 1 for i in np.flatnonzero(stalled))
    largest = np.where(measured, history, -np.inf).max(axis=0)
    numbers = {"smallest_largest_ratio": float(np.min(largest[measured.any(axis=0)]))}
    steps = _run_steps(profile, history.shape[0])
    if not layers:
        message = (
            f"every layer's ||update|| / ||W|| reached {_g(numbers['smallest_largest_ratio'])} "
            f"or more at some recorded step (of {len(steps)}), above {STALL_RATIO:g}"
        )
        return _stable("stalled", numbers, STALL_RATIO, message)
    numbers["layers_stalled"] = len(layers)
    message = (
        f"the updates of {_where(profile, layers)} stayed below {STALL_RATIO:g} of their "
        f"weights at every one of {len(steps)} recorded steps (steps {steps[0]}-{steps[-1]}): "
        "they did not learn"
    )
    cure = (
        "the gradient reaching these layers vanished or the learning rate is too small for "
        "them: " + _init_cure(profile.activation, profile.sigma_b2)
    )
    return Finding("stalled", "vanishing", layers, numbers, STALL_RATIO, message, cure)


def _died_rule(profile: Profile) -> Finding | None:
    """Layers whose dead fraction rose above `DEAD_THRESHOLD` during a run while it was
    below at the first recorded step (units that died in training, Lu et al. 2020)."""
    history = profile.dead_frac_history
    if history is None or history.shape[0] < 2:
        return None
    first = history[0]
    worst = np.where(np.isnan(history), -np.inf, history).max(axis=0)  # nan: not measured
    died = (first <= DEAD_THRESHOLD) & (worst > DEAD_THRESHOLD)
    layers = tuple(int(i) + 1 for i in np.flatnonzero(died))
    steps = _run_steps(profile, history.shape[0])
    rise = worst - first
    numbers = (
        {"largest_rise": float(rise[np.isfinite(rise)].max())} if np.isfinite(rise).any() else {}
    )
    if not layers:
        message = f"no layer's dead fraction rose above {DEAD_THRESHOLD:.0%} during the run"
        return _stable("died", numbers, DEAD_THRESHOLD, message)
    at = [steps[int(np.argmax(history[:, layer - 1] > DEAD_THRESHOLD))] for layer in layers]
    numbers["layers_died"] = len(layers)
    message = (
        f"units died during training: {_where(profile, layers)} went above "
        f"{DEAD_THRESHOLD:.0%} dead (first at step {min(at)}), from at most "
        f"{float(np.nanmax(first[np.asarray(layers) - 1])):.0%} at step {steps[0]}"
    )
    cure = (
        "lower the learning rate or clip the updates (jaxgrad.optim.clip_by_global_norm(1.0)), "
        "or use a leaky activation: jaxgrad.activations.get('leaky_relu', negative_slope=0.1) "
        "(Maas et al. 2013), or jaxgrad.nn.PReLU"
    )
    return Finding("died", "vanishing", layers, numbers, DEAD_THRESHOLD, message, cure)


def _band(name: str, value: object) -> float:
    value = _init._real(name, value)
    if value <= 1:
        raise ValueError(f"{name} must be > 1, got {value}")
    return value


def _judged_findings(result: object, keywords: dict[str, object]) -> tuple[Finding, ...]:
    """The findings of a `Judged` result, checked; the Profile rules' keywords refused."""
    given = [name for name, value in keywords.items() if value is not None]
    if given:
        raise TypeError(
            f"{', '.join(given)} tune the rules read from a Profile; a "
            f"{type(result).__name__} is judged by its own rules (its .findings()): leave "
            f"{'it' if len(given) == 1 else 'them'} out"
        )
    findings = tuple(result.findings())
    for finding in findings:
        if not isinstance(finding, Finding) or finding.rule not in RULES:
            raise TypeError(
                f"{type(result).__name__}.findings() must return jaxgrad.stats.Finding's of "
                f"rules in {RULES}, got {finding!r}"
            )
    return findings


def _verdict_and_message(findings: Sequence[Finding]) -> tuple[str, str | None]:
    """The verdict by `PRECEDENCE`, and its message when a finding is not stable."""
    for candidate in PRECEDENCE[:2]:
        lead = next((f for f in findings if f.verdict == candidate), None)
        if lead is not None:
            others = [f.rule for f in findings if f.verdict in ("vanishing", "exploding")]
            others.remove(lead.rule)
            message = f"{candidate}: {lead.message}"
            if others:
                message += f" (also: {', '.join(others)})"
            return candidate, message
    return "stable", None


def diagnose(
    result: Profiled | Judged,
    *,
    band: float = BAND,
    signal_band: float = SIGNAL_BAND,
    activation: str | Callable[..., Any] | None = None,
    sigma_w2: float | None = None,
    sigma_b2: float | None = None,
) -> Diagnosis:
    """Say whether gradients vanish, explode or flow, by every rule, with the cures.

    The result's `Profile` is read by the rules in the module docstring, each giving a
    `Finding`; the verdict follows from them by `PRECEDENCE`. `activation`, `sigma_w2` and
    `sigma_b2` override what the profile knows; with an activation and no sigma_w2, the
    mean-field rule estimates sigma_w2 from the weights where the profile has fans, and says
    so. A coordinate check's slopes are read by the width_scaling and depth_scaling rules
    instead (`jaxgrad.scaling.Slopes.findings`): a recorded output whose size or change grows
    with width (depth) faster than width^0.25 (`jaxgrad.scaling.STABLE_SLOPE`) is exploding,
    one that shrinks faster is vanishing.

    Args:
        result: `LayerStats` (probe, propagate; one network, not vmapped), `ModelReport`
            (inspect), a training history, or a `Profile` (anything with `.profile()`,
            `Profiled`); or the `Slopes` of `jaxgrad.scaling.slopes` (against width or
            depth), or a `jaxgrad.scaling.CoordCheck`, read by its slopes against width and,
            where it has two or more depths, against depth (anything with `.findings()`,
            `Judged`).
        band: the gradient-ratio rule's allowed factor, > 1 (`BAND`).
        signal_band: the signal rule's allowed factor, > 1 (`SIGNAL_BAND`).
        activation: the activation of a plain stack (a name or a callable), for the
            mean-field rule and the cures.
        sigma_w2, sigma_b2: the initialization's weight and bias variances (W ~ N(0,
            sigma_w2 / fan_in), b ~ N(0, sigma_b2)), for the mean-field rule.

    Returns:
        A `Diagnosis`; `str()` of it is the verdict line and one line per finding with its
        cure, `to_frame()` a table of the findings.

    Raises:
        TypeError: a result without `.profile()` or `.findings()` (naming what was given),
            bad keywords, or `activation`, `sigma_w2`, `sigma_b2`, `band` or `signal_band`
            given with a `Judged` result (they tune the Profile rules only).
        ValueError: a band <= 1, a vmapped `LayerStats` ("index the vmapped axis first"),
            a malformed profile.

    Example:
        >>> import jax
        >>> from jaxgrad import diagnose, init, propagate
        >>> stats = propagate(jax.random.key(0), depth=50, width=64, batch_size=8,
        ...                   activation="relu", kernel_init=init.xavier_uniform())
        >>> result = diagnose(stats)
        >>> result.verdict, [f.rule for f in result.findings if f.verdict == "vanishing"]
        ('vanishing', ['signal', 'scale'])

        The slopes of a coordinate check (here made by hand: the readout's mean |x| and rms
        grow as width, the hidden layer's stay 1):

        >>> import numpy as np
        >>> from jaxgrad.scaling import CoordCheck, CoordPoint, slopes
        >>> def point(width):  # one seed, one step, two recorded calls
        ...     values = np.ones((1, 1, 2, 3))
        ...     values[0, 0, 1, :2] = width
        ...     return CoordPoint(width, None, ("hidden", "readout"), (), np.zeros((1, 1)),
        ...                       values, np.zeros((1, 1, 0, 3)))
        >>> check = CoordCheck((point(64), point(256)), (64, 256), (None,), (0,), 1)
        >>> result = diagnose(slopes(check))
        >>> result.verdict, [(f.rule, f.layers) for f in result.findings]
        ('exploding', [('width_scaling', (2,))])
        >>> print(result.message.split(";")[0])
        exploding: readout: the output's mean |x| grows as width^1.00 at step 0

    References:
        Glorot and Bengio 2010, "Understanding the difficulty of training deep feedforward
        neural networks"; He, Zhang, Ren and Sun 2015, "Delving Deep into Rectifiers"; You,
        Gitman and Ginsburg 2017, "Large Batch Training of Convolutional Networks" (the
        gradient-to-weight ratio); Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017,
        "Deep Information Propagation" (the mean-field rule); Yang and Hu 2021, "Tensor
        Programs IV" and Yang et al. 2023, "Tensor Programs VI" (the scaling rules).
    """
    band = _band("band", band)
    signal_band = _band("signal_band", signal_band)
    if not callable(getattr(result, "profile", None)) and callable(
        getattr(result, "findings", None)
    ):
        keywords = {
            "activation": activation,
            "sigma_w2": sigma_w2,
            "sigma_b2": sigma_b2,
            "band": None if band == BAND else band,
            "signal_band": None if signal_band == SIGNAL_BAND else signal_band,
        }
        findings = _judged_findings(result, keywords)
        verdict, message = _verdict_and_message(findings)
        if message is None:
            read = [f.message for f in findings if f.verdict == "stable"]
            message = f"stable: {'; '.join(read)}" if read else "stable: no rule fired"
        return Diagnosis(verdict, math.nan, math.nan, (), -1, message, findings)
    profile = _profile_of(result)
    overrides = {
        "activation": activation,
        "sigma_w2": _optional_variance("sigma_w2", sigma_w2),
        "sigma_b2": _optional_variance("sigma_b2", sigma_b2),
    }
    profile = profile._replace(**{k: v for k, v in overrides.items() if v is not None})
    profile = _checked(profile)
    if np.isnan(profile.fan_out).all():
        profile = profile._replace(fan_out=profile.fan_in)  # only fan_in known: square layers

    gradient, fields = _gradient_rule(profile, band)
    findings = [
        _nonfinite_rule(profile),
        gradient,
        _signal_rule(profile, signal_band),
        _scale_rule(profile),
        _fraction_rule(profile, "dead"),
        _fraction_rule(profile, "saturated"),
        _stalled_rule(profile),
        _died_rule(profile),
        _mean_field_rule(profile, band),
    ]
    findings = tuple(f for f in findings if f is not None)
    verdict, message = _verdict_and_message(findings)
    if message is None:
        message = "stable: " + (f"{gradient.message}; " if gradient is not None else "")
        message += "no rule fired"
    return Diagnosis(
        verdict,
        fields["ratio"],
        fields["rate_per_layer"],
        fields["layers_at_fault"],
        profile.first_nonfinite,
        message,
        findings,
    )
