"""A coordinate check described by a TOML file: what `jaxgrad coord CONFIG.toml` runs.

Example file (every key optional; these are the defaults but for `widths`):

    parametrization = "mup"      # "sp", "mup" or "depth_mup"
    optimizer = "adam"           # "adam" or "sgd"
    learning_rate = 0.01
    widths = [64, 128, 256, 512]
    depths = [2]                 # several depths: slopes against depth as well
    residual = false             # residual blocks (depth_mup implies them)
    activation = "relu"
    data = "gaussian"            # "gaussian" (regression on N(0, 1) targets) or "digits"
    batch_size = 32
    seeds = 3
    steps = 3

The model is an input layer, `depth` stacked blocks of `width` units (`jaxgrad.nn.MLP`'s,
or residual blocks h + multiplier * W2 phi(W1 h)) and a readout: `nnx.Linear` under "sp",
`MuReadout` (zero initialized) under "mup" and "depth_mup"; the optimizer is Optax's under
"sp", `mup_adam` / `mup_sgd` relative to the smallest width (and depth) otherwise;
"depth_mup" multiplies the residual branches by sqrt(L_base / L).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxgrad import activations as _act
from jaxgrad import nn as _nn
from jaxgrad import sweep as _sweep
from jaxgrad.scaling import mup as _mup
from jaxgrad.scaling.coord import CoordCheck, coord_check

PARAMETRIZATIONS = ("sp", "mup", "depth_mup")
DATA = ("gaussian", "digits")
GAUSSIAN_FEATURES = 16
"""Inputs and targets of the "gaussian" data: 16 features each."""


class Branch(nnx.Module):
    """A residual block h + multiplier * W2 phi(W1 h) (a branch that ends in a linear layer,
    whose output has mean zero, as Tensor Programs VI's blocks)."""

    def __init__(self, width: int, multiplier: float, activation: str, rngs: nnx.Rngs):
        self.inner = nnx.Linear(width, width, rngs=rngs)
        self.outer = nnx.Linear(width, width, rngs=rngs)
        self.multiplier = multiplier
        self.activation = _act.resolve(activation)

    def __call__(self, h: jax.Array) -> jax.Array:
        branch = self.outer(self.activation(self.inner(h)))
        return h + jnp.asarray(self.multiplier, h.dtype) * branch


class ResidualStack(nnx.Module):
    """`depth` `Branch` blocks stacked on a leading axis (`nnx.vmap`) and applied with
    `jax.lax.scan`: one row per block in a coordinate check, compile time flat in depth."""

    def __init__(self, width, depth, multiplier, activation, rngs: nnx.Rngs):
        keys = jax.random.split(rngs.params(), depth)
        self.blocks = nnx.vmap(
            lambda key: Branch(width, multiplier, activation, nnx.Rngs(key)), in_axes=0
        )(keys)

    def __call__(self, h: jax.Array) -> jax.Array:
        graphdef, state = nnx.split(self.blocks)

        def body(h, layer_state):
            return nnx.merge(graphdef, layer_state)(h), None

        return jax.lax.scan(body, h, state)[0]


class CoordMLP(nnx.Module):
    """An input layer, jaxgrad's MLP body and a readout: what a `CoordConfig` checks.

    Args:
        in_features, width, depth, out_features: sizes.
        parametrization: "sp" (an `nnx.Linear` readout) or "mup" / "depth_mup" (a zero
            initialized `MuReadout` relative to `base_width`).
        base_width: the muP base.
        activation: the activation's name.
        residual: `ResidualStack` blocks h + residual_scale * W2 phi(W1 h); otherwise
            `jaxgrad.nn.MLP`'s blocks phi(h W + b).
        residual_scale: the branch multiplier.
        rngs: `nnx.Rngs`.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad.scaling.config import CoordMLP
        >>> model = CoordMLP(4, 8, 2, 3, parametrization="mup", base_width=8, rngs=nnx.Rngs(0))
        >>> type(model.readout).__name__, model(jnp.ones((5, 4))).shape
        ('MuReadout', (5, 3))
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        out_features: int,
        *,
        parametrization: str = "sp",
        base_width: int = 64,
        activation: str = "relu",
        residual: bool = False,
        residual_scale: float = 1.0,
        rngs: nnx.Rngs,
    ):
        self.embed = nnx.Linear(in_features, width, rngs=rngs)  # at every width, even = in
        if residual:
            self.body = ResidualStack(width, depth, residual_scale, activation, rngs)
        else:
            self.body = _nn.MLP(width, width, depth, None, activation=activation, rngs=rngs)
        if parametrization == "sp":
            self.readout = nnx.Linear(width, out_features, rngs=rngs)
        else:
            self.readout = _mup.MuReadout(
                width, out_features, base_in_features=base_width, zero_init=True, rngs=rngs
            )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.readout(self.body(self.embed(x)))


def mse_loss(model: nnx.Module, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Mean squared error of `model(x)` against float targets.

    Args:
        model: the model.
        batch: (x, y), y shaped like `model(x)`.

    Returns:
        The mean of the squared errors, a scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad.scaling.config import mse_loss
        >>> zero = nnx.Linear(3, 3, kernel_init=nnx.initializers.zeros, rngs=nnx.Rngs(0))
        >>> float(mse_loss(zero, (jnp.ones((2, 3)), jnp.ones((2, 3)))))  # outputs 0, targets 1
        1.0
    """
    x, y = batch
    return jnp.mean((model(x) - y) ** 2)


def cross_entropy_loss(model: nnx.Module, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Softmax cross-entropy of `model(x)` against integer labels.

    Args:
        model: the model, returning logits (batch, classes).
        batch: (x, labels), labels (batch,) integers in [0, classes).

    Returns:
        The mean cross-entropy, a scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad.scaling.config import cross_entropy_loss
        >>> zero = nnx.Linear(2, 4, kernel_init=nnx.initializers.zeros, rngs=nnx.Rngs(0))
        >>> loss = cross_entropy_loss(zero, (jnp.ones((2, 2)), jnp.array([0, 3])))
        >>> round(float(loss), 4)  # uniform logits over 4 classes: log 4
        1.3863
    """
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@dataclasses.dataclass(frozen=True)
class CoordConfig:
    """A coordinate check's settings (see the module docstring for each key).

    Args:
        parametrization: "sp", "mup" or "depth_mup".
        optimizer: "adam" or "sgd".
        learning_rate: the learning rate (at the base, under muP), > 0 and finite.
        widths, depths: positive ints (kept sorted, without repeats; the smallest is the
            base).
        residual: residual blocks (implied by "depth_mup").
        activation: an activation's name (`jaxgrad.activations`).
        data: "gaussian" or "digits".
        batch_size, seeds, steps: ints >= 1.

    Raises:
        TypeError: `widths` or `depths` is not a non-empty list, `residual` not a bool,
            or `activation` not a name.
        ValueError: any other value outside what is listed above, or an unknown
            activation.

    Example:
        >>> from jaxgrad.scaling.config import CoordConfig
        >>> config = CoordConfig(widths=[256, 64, 128], seeds=2)
        >>> config.widths, config.base_width, config.parametrization
        ((64, 128, 256), 64, 'mup')
        >>> CoordConfig.from_dict({"width": [64]})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown key(s) ['width']; the keys are ['activation', ...]
    """

    parametrization: str = "mup"
    optimizer: str = "adam"
    learning_rate: float = 0.01
    widths: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (2,)
    residual: bool = False
    activation: str = "relu"
    data: str = "gaussian"
    batch_size: int = 32
    seeds: int = 3
    steps: int = 3

    def __post_init__(self):
        def positive_ints(name, value):
            if not isinstance(value, list | tuple) or not value:
                raise TypeError(f"{name} must be a non-empty list of ints, got {value!r}")
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
                raise ValueError(f"{name} must hold positive ints, got {list(value)}")
            object.__setattr__(self, name, tuple(sorted(set(value))))

        positive_ints("widths", self.widths)
        positive_ints("depths", self.depths)
        for name, choices in (
            ("parametrization", PARAMETRIZATIONS),
            ("optimizer", _mup.OPTIMIZERS),
            ("data", DATA),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        for name in ("batch_size", "seeds", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise ValueError(f"learning_rate must be a number > 0, got {rate!r}")
        if not math.isfinite(rate):
            raise ValueError(f"learning_rate must be finite, got {rate!r}")
        if not isinstance(self.residual, bool):
            raise TypeError(f"residual must be true or false, got {self.residual!r}")
        _act.resolve(self.activation)  # an unknown name is refused here

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CoordConfig:
        """From a dict of fields; an unknown key is refused with the known ones."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; the keys are {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path) -> CoordConfig:
        """From a TOML file of top-level keys."""
        return cls.from_dict(_sweep.read_toml(path))

    @property
    def base_width(self) -> int:
        return self.widths[0]

    @property
    def base_depth(self) -> int:
        return self.depths[0]


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from jaxgrad import data

    digits = data.digits()
    return np.asarray(digits.x_train), np.asarray(digits.y_train)


def batches(config: CoordConfig) -> tuple[list, int, int, Callable]:
    """(one batch per step, in_features, out_features, loss_fn) of a config (seeded by
    step: the same at every width, depth and seed).

    Args:
        config: the `CoordConfig` (its data, batch_size and steps are read).

    Returns:
        (a list of `steps` batches (x, y), in_features, out_features, `mse_loss` or
        `cross_entropy_loss`).

    Example:
        >>> from jaxgrad.scaling.config import CoordConfig, batches
        >>> stream, in_features, out_features, loss_fn = batches(CoordConfig(steps=2))
        >>> len(stream), stream[0][0].shape, in_features, out_features, loss_fn.__name__
        (2, (32, 16), 16, 16, 'mse_loss')
    """
    steps, size = config.steps, config.batch_size
    if config.data == "digits":
        x, y = _digits()
        rng = np.random.default_rng(0)
        chosen = [rng.choice(len(x), size, replace=False) for _ in range(steps)]
        return [(x[i], y[i]) for i in chosen], x.shape[1], 10, cross_entropy_loss
    rng = np.random.default_rng(0)
    out = [
        (
            rng.standard_normal((size, GAUSSIAN_FEATURES)).astype(np.float32),
            rng.standard_normal((size, GAUSSIAN_FEATURES)).astype(np.float32),
        )
        for _ in range(steps)
    ]
    return out, GAUSSIAN_FEATURES, GAUSSIAN_FEATURES, mse_loss


@functools.cache
def model_factory(
    in_features: int,
    out_features: int,
    parametrization: str,
    base_width: int,
    base_depth: int,
    activation: str,
    residual: bool,
) -> Callable[[int, int, nnx.Rngs], CoordMLP]:
    """The `make_model(width, depth, rngs)` of these settings (cached: the same function for
    the same settings, so compiled programs are reused).

    Args:
        in_features, out_features: the data's sizes.
        parametrization: "sp", "mup" or "depth_mup" (the last scales each residual branch
            by `depth_multiplier(depth, base_depth)`).
        base_width, base_depth: the muP base.
        activation: the activation's name.
        residual: residual blocks (always, under "depth_mup").

    Returns:
        `make_model(width, depth, rngs) -> CoordMLP`.

    Example:
        >>> from flax import nnx
        >>> from jaxgrad.scaling.config import model_factory
        >>> make = model_factory(16, 16, "mup", 16, 2, "relu", False)
        >>> make is model_factory(16, 16, "mup", 16, 2, "relu", False)
        True
        >>> make(32, 2, nnx.Rngs(0)).readout.multiplier
        0.5
    """

    def make_model(width: int, depth: int, rngs: nnx.Rngs) -> CoordMLP:
        scale = 1.0
        if parametrization == "depth_mup":
            scale = _mup.depth_multiplier(depth, base_depth)
        return CoordMLP(
            in_features,
            width,
            depth,
            out_features,
            parametrization=parametrization,
            base_width=base_width,
            activation=activation,
            residual=residual or parametrization == "depth_mup",
            residual_scale=scale,
            rngs=rngs,
        )

    return make_model


def optimizer(config: CoordConfig, make_model) -> optax.GradientTransformation:
    """The config's Optax chain: plain under "sp", muP's (relative to the base) otherwise.

    Args:
        config: the `CoordConfig`.
        make_model: its `model_factory` (muP reads the base's shapes off it).

    Returns:
        `optax.adam` / `optax.sgd` under "sp", else `mup_adam` / `mup_sgd`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxgrad.scaling.config import CoordConfig, model_factory, optimizer
        >>> config = CoordConfig(widths=(16, 32), optimizer="sgd", learning_rate=0.1)
        >>> make = model_factory(16, 16, "mup", 16, 2, "relu", False)
        >>> params = nnx.state(make(32, 2, nnx.Rngs(0)), nnx.Param)
        >>> tx = optimizer(config, make)
        >>> grads = jax.tree.map(jnp.ones_like, params)
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> round(float(updates["embed"]["kernel"].max()), 6)  # an input weight: lr x m_out
        -0.2
    """
    if config.parametrization == "sp":
        factory = optax.adam if config.optimizer == "adam" else optax.sgd
        return factory(config.learning_rate)
    if config.parametrization == "depth_mup":
        base = _mup.base_shapes(make_model, config.base_width, config.base_depth)
    else:  # muP in width only: the stacked axis is neither fan, and no depth factors
        base = _mup.base_shapes(make_model, config.base_width, config.base_depth, scale_depth=False)
    if config.optimizer == "adam":
        return _mup.mup_adam(config.learning_rate, base)
    return _mup.mup_sgd(config.learning_rate, base)


def _identity(config: CoordConfig) -> dict[str, Any]:
    """What a point's numbers depend on besides its (width, depth): every setting, with the
    base width and depth (muP's multipliers) in place of the grid."""
    values = dataclasses.asdict(config)
    del values["widths"], values["depths"]
    return {**values, "base_width": config.base_width, "base_depth": config.base_depth}


def run(
    config: CoordConfig,
    progress: Callable[[int, int | None], None] | None = None,
    out: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> CoordCheck:
    """The coordinate check a `CoordConfig` describes.

    Args:
        config: the `CoordConfig`.
        progress: called as `progress(width, depth)` after each point, or None.
        out: a results folder each point is written to as it is computed, and read back
            from by a later run of the same configuration (`coord_check`'s `out`, with the
            whole configuration as its identity), or None.
        log: where `out`'s messages go (resuming, damaged parts); default stderr.

    Returns:
        The `CoordCheck` (read it with `jaxgrad.scaling.slopes`).

    Example:
        >>> check = run(CoordConfig(widths=(8, 16), depths=(1,), seeds=1, steps=1))
        >>> check.point(8, 1).layers
        ('embed', 'body.blocks[0]', 'body.blocks[0].linear', 'readout')
    """
    stream, in_features, out_features, loss_fn = batches(config)
    make_model = model_factory(
        in_features,
        out_features,
        config.parametrization,
        config.base_width,
        config.base_depth,
        config.activation,
        config.residual,
    )
    return coord_check(
        make_model,
        optimizer(config, make_model),
        stream,
        widths=config.widths,
        depths=config.depths,
        seeds=config.seeds,
        steps=config.steps,
        loss_fn=loss_fn,
        progress=progress,
        out=out,
        identity=None if out is None else _identity(config),
        log=log,
    )


__all__ = [
    "DATA",
    "PARAMETRIZATIONS",
    "CoordConfig",
    "CoordMLP",
    "batches",
    "cross_entropy_loss",
    "model_factory",
    "mse_loss",
    "optimizer",
    "run",
]
