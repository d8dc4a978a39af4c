"""Grids of random deep networks: one compiled program per static group, vmap and sharding inside.

A `Sweep` is the product of depths, widths, activations, initializer families, sigma_w2,
sigma_b2, norms, residual flags, dtypes and seeds. `run` groups the grid by what changes the
compiled program (activation, initializer family, width, norm, residual, dtype; the batch
size is fixed per sweep) and, inside a group:

- draws each seed's unit weights once, in a program of their own on one device, and applies
  sqrt(sigma_w2) (and sqrt(sigma_b2)) to the pre-activation, so every (sigma_w2, sigma_b2)
  point of a seed shares its random numbers and the vmapped points become one taller matrix
  product instead of many thin ones. (Orthogonal weights need a batched QR, which hangs when
  it runs inside a program sharded over several host devices: drawn apart, the weights enter
  the sharded program replicated.)
- builds one network of the largest depth: forward statistics of every shallower depth are
  its prefix, and the backward pass of each shallower network rides along as one more head
  of the reverse scan (`propagation.reverse_scan_probe(heads=...)`), so a depth axis does not
  multiply the cost;
- splits the vmapped points into chunks that fit a memory budget (default: a quarter of the
  device's memory, or 4 GiB on CPU), pads the last chunk so no shape is new, and shards each
  chunk's points over the local devices with `jax.sharding`;
- writes every chunk to a `jaxgrad.store.ResultStore` as soon as it is computed.

The numbers do not depend on the chunking or the device count: the theory columns are
computed one point at a time (cached by point), exactly equal whatever the chunks; the probe
statistics of one network come from the same program at another vmapped size, which XLA may
round differently: they agree to float32 rounding (measured at width 24, depth 12, one point
per chunk against 21: up to 7e-6 relative on gradient norms, 1e-6 on stds; bitwise equal
over 2 host devices against 1; more where a chaotic network amplifies rounding with depth).

**Results folders.** `run(sweep, out=...)` records the sweep in `out/manifest.json`. Two
runs are the same sweep, and may share a folder, when they agree on everything that changes
a network's numbers or the rows' shape without being a network's coordinate: the results
format (`RESULTS_FORMAT`), `batch_size`, the `depth` list, `dtype`, `theory` and
`jacobian_probes`. A network's coordinates (activation, init, width, norm, residual, dtype,
seed, sigma_w2, sigma_b2) may differ: a rerun that adds seeds, sigma values, widths or
activations extends the folder, computing only its new networks; a rerun of a subset reads
what is there. Another batch size, depth list or dtype is refused before any compute, with
one line naming what differs (use another folder). The memory budget and the device count
change only the chunking: a network is stored once, whichever chunking stored it, and a
rerun with another budget skips it. An interrupted run resumes where it stopped and says so.

**Cost.** Memory: the shared weights (depth x width^2 per group and seed) and, per point of
a chunk, the stacked per-layer activations of both scans (`bytes_per_point`); `check_size`
refuses a sweep whose single point does not fit the machine before anything is allocated.
Disk: one row per (network, reported depth, layer <= depth), about 30 columns.

The network is the jaxgrad MLP's: h_l = phi(N(sqrt(sigma_w2) h_{l-1} W0_l + sqrt(sigma_b2) b0_l))
(or h_{l-1} + that, residual), with W0 ~ N(0, 1/width) ("gaussian") or Haar orthogonal
("orthogonal"), b0 ~ N(0, 1), N the identity, batch or layer norm without learned
parameters (their values at initialization), N(0, 1) inputs and the random-projection loss.

References: Schoenholz et al. 2017 (the depth x sigma_w2 trainability grids this serves).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxgrad import activations as _act
from jaxgrad import init as _init
from jaxgrad import propagation as _prop
from jaxgrad import theory as _theory
from jaxgrad.store import ResultStore

INITS = ("gaussian", "orthogonal")
NORMS = (None, "batch", "layer")
DTYPES = ("float32", "float64", "bfloat16")
SEED_RANGE = (0, 2**32 - 1)
"""Seeds `jax.random.key` tells apart: without jax_enable_x64 it keeps a seed's low 32 bits,
so 0 and 2**32 would give the same network."""
RESULTS_FORMAT = 2
"""Bumped whenever a network's numbers or the rows' columns change: a folder of another
format is refused, not mixed."""
NETWORK_COLUMNS = (
    "activation",
    "init",
    "width",
    "norm",
    "residual",
    "dtype",
    "seed",
    "sigma_w2",
    "sigma_b2",
)
"""The columns that name one network (of the deepest depth) of a sweep."""
THEORY_COLUMNS = ("q_star", "chi1", "xi_q", "xi_c")
_LAYER_FIELDS = [f for f in _prop.LayerStats._fields if f != "first_nonfinite_layer"]
_GRID_AXES = (
    "depth",
    "width",
    "activation",
    "init",
    "sigma_w2",
    "sigma_b2",
    "norm",
    "residual",
    "seed",
    "dtype",
)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([a-z]+)\s*$", re.IGNORECASE)


def _tuple(value: Any) -> tuple:
    if isinstance(value, str | int | float | bool | np.generic) or value is None:
        return (value,)
    if isinstance(value, dict) or not hasattr(value, "__iter__"):
        raise TypeError(f"expected a value or a list of values, got {value!r}")
    return tuple(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def parse_bytes(value: Any) -> int:
    """A memory size as bytes: an int, or a string such as "512MB", "1GB" or "2GiB".

    Decimal units (KB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB, GiB, TiB)
    powers of 1024; case does not matter.

    Args:
        value: an int number of bytes, or a string: a number and a unit.

    Returns:
        The size in bytes, an int.

    Raises:
        ValueError: a string that is not a size.
        TypeError: neither an int nor a string.

    Example:
        >>> parse_bytes("1.5GiB"), parse_bytes(4096)
        (1610612736, 4096)
    """
    if _is_int(value):
        return int(value)
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
        raise ValueError(
            f"memory_budget {value!r} is not a size; give bytes as an int or a string such as "
            '"512MB", "1GB" or "2GiB"'
        )
    raise TypeError(
        f'memory_budget must be an int number of bytes or a string such as "1GB", got {value!r}'
    )


def _human(size: float) -> str:
    for unit, factor in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{int(size)} B"


def read_toml(path: str | Path) -> dict[str, Any]:
    """The table of a TOML file, or one ValueError line saying why it cannot be read.

    Args:
        path: the file.

    Returns:
        Its top-level table as a dict.

    Raises:
        ValueError: the file cannot be read or is not valid TOML.

    Example:
        >>> import pathlib, tempfile
        >>> from jaxgrad import sweep
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "grid.toml"
        >>> _ = path.write_text('depth = [10, 50]')
        >>> sweep.read_toml(path)
        {'depth': [10, 50]}
    """
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A grid of random networks to probe. Every field but the scalars takes a value or a
    list of values (each value once); the grid is their product.

    Attributes:
        depth: depths to report (>= 1); the deepest is computed once.
        width: hidden widths.
        activation: names from `jaxgrad.activations.names()` (not rrelu, whose slopes need a
            PRNG key per call); aliases are stored under their canonical name.
        init: "gaussian" or "orthogonal" weights, scaled by sqrt(sigma_w2).
        sigma_w2, sigma_b2: weight and bias variances (>= 0).
        norm: None (or "none"), "batch" or "layer".
        residual: residual blocks or not (true or false).
        seed: PRNG seeds, ints in `SEED_RANGE`.
        batch_size: inputs per network.
        dtype: "float32", "float64" or "bfloat16" (each its own compiled program).
        theory: add mean-field columns (q_star, chi1, xi_q, xi_c) where they apply (no norm,
            no residual, gaussian weights).
        jacobian_probes: with P > 0, add `mean_sq_singular_value`: Hutchinson's estimate (P
            Gaussian probes) of tr(J_l^T J_l) / width for J_l = d h_l / d h_0 at the first
            input of the batch (nan with batch norm, which has no per-example Jacobian).
        memory_budget: bytes one chunk may use, as an int or a string such as "1GB" or
            "512MiB" (see `parse_bytes`); None derives it from the device.

    Raises:
        TypeError: a value of the wrong type (e.g. theory = "no", a float depth).
        ValueError: a value out of range, unknown, or given twice, when the Sweep is built.

    Example:
        >>> from jaxgrad import sweep
        >>> grid = sweep.Sweep(depth=(2, 4), width=(8,), activation=("tanh", "relu"),
        ...                    sigma_w2=(1.0, 2.0), seed=(0, 1), memory_budget="1MB")
        >>> grid.size, len(grid.groups()), grid.rows  # 2 x 2 x 2 networks, 6 layers each
        (8, 2, 48)

    References:
        Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep Information Propagation"
        (the theory columns); Hutchinson 1990, "A stochastic estimator of the trace of the
        influence matrix for Laplacian smoothing splines" (jacobian_probes).
    """

    depth: tuple[int, ...] = (10, 50, 100)
    width: tuple[int, ...] = (256,)
    activation: tuple[str, ...] = ("tanh",)
    init: tuple[str, ...] = ("gaussian",)
    sigma_w2: tuple[float, ...] = (1.0,)
    sigma_b2: tuple[float, ...] = (0.0,)
    norm: tuple[str | None, ...] = (None,)
    residual: tuple[bool, ...] = (False,)
    seed: tuple[int, ...] = (0,)
    batch_size: int = 16
    dtype: tuple[str, ...] = ("float32",)
    theory: bool = True
    jacobian_probes: int = 0
    memory_budget: int | str | None = None

    def __post_init__(self):
        for name in _GRID_AXES:
            try:
                values = _tuple(getattr(self, name))
            except TypeError:
                raise TypeError(
                    f"{name} must be a value or a list of values, got {getattr(self, name)!r}"
                ) from None
            if not values:
                raise ValueError(f"{name} needs at least one value")
            object.__setattr__(self, name, values)
        for name in ("depth", "width"):
            for value in getattr(self, name):
                if not _is_int(value):
                    raise TypeError(f"{name} must be ints >= 1, got {value!r}")
                if value < 1:
                    raise ValueError(f"{name} must be ints >= 1, got {value!r}")
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "activation", tuple(map(_activation_name, self.activation)))
        for value in self.init:
            if value not in INITS:
                raise ValueError(f"init must be one of {', '.join(INITS)}, got {value!r}")
        norms = tuple(None if n in (None, "none") else n for n in self.norm)
        for value in norms:
            if value not in NORMS:
                raise ValueError(f"norm must be one of none, batch, layer; got {value!r}")
        object.__setattr__(self, "norm", norms)
        for name in ("sigma_w2", "sigma_b2"):
            values = tuple(_init._nonnegative(name, v) for v in getattr(self, name))
            object.__setattr__(self, name, values)
        for value in self.residual:
            if not isinstance(value, bool):
                raise TypeError(f"residual must be true or false, got {value!r}")
        low, high = SEED_RANGE
        for value in self.seed:
            if not _is_int(value):
                raise TypeError(f"seed must be ints in [{low}, {high}], got {value!r}")
            if not low <= value <= high:
                raise ValueError(
                    f"seed must be ints in [{low}, {high}] (what jax.random.key tells apart), "
                    f"got {value!r}"
                )
        object.__setattr__(self, "seed", tuple(int(v) for v in self.seed))
        for value in self.dtype:
            if value not in DTYPES:
                raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {value!r}")
        for name in _GRID_AXES:
            seen = set()
            for value in getattr(self, name):
                if value in seen:
                    raise ValueError(f"{name} lists {value!r} more than once; give each value once")
                seen.add(value)
        if not _is_int(self.batch_size):
            raise TypeError(f"batch_size must be an int, got {self.batch_size!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if "float64" in self.dtype and not jax.config.jax_enable_x64:
            raise ValueError(
                "dtype float64 needs jax_enable_x64 (jax.config.update or JAX_ENABLE_X64=1)"
            )
        if not isinstance(self.theory, bool):
            raise TypeError(f"theory must be true or false, got {self.theory!r}")
        probes = self.jacobian_probes
        if not _is_int(probes):
            raise TypeError(f"jacobian_probes must be an int >= 0, got {probes!r}")
        if probes < 0:
            raise ValueError(f"jacobian_probes must be an int >= 0, got {probes!r}")
        if self.memory_budget is not None:
            budget = parse_bytes(self.memory_budget)
            if budget < 1:
                raise ValueError(
                    f"memory_budget must be a positive number of bytes or None, got "
                    f"{self.memory_budget!r}"
                )
            object.__setattr__(self, "memory_budget", budget)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Sweep:
        """Build from a mapping (e.g. a parsed TOML table); unknown keys raise ValueError."""
        if not isinstance(values, dict):
            raise TypeError(f"a sweep is a table of its fields, got {values!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown sweep keys {unknown}; valid keys are: {', '.join(sorted(known))}"
            )
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path) -> Sweep:
        """Load from a TOML file: top-level keys, or a [sweep] table (and nothing beside it).

        Example file:
            depth = [10, 50, 100]
            activation = ["tanh", "relu"]
            sigma_w2 = [1.0, 1.5, 2.0, 2.5]
            seed = [0, 1, 2]
            memory_budget = "1GB"
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"sweep configuration {str(path)!r} does not exist")
        values = read_toml(path)
        if "sweep" not in values:
            return cls.from_dict(values)
        table = values["sweep"]
        if not isinstance(table, dict):
            raise TypeError(f"sweep must be a [sweep] table of fields, got sweep = {table!r}")
        beside = sorted(set(values) - {"sweep"})
        if beside:
            raise ValueError(
                f"keys {beside} sit beside the [sweep] table and would be ignored; put them "
                "inside [sweep] (above its header they are top-level keys)"
            )
        return cls.from_dict(table)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def max_depth(self) -> int:
        return max(self.depth)

    def groups(self) -> list[Group]:
        """The static groups: one compiled program each."""
        keys = itertools.product(
            self.activation, self.init, self.width, self.norm, self.residual, self.dtype
        )
        return [Group(*key) for key in keys]

    def points(self) -> list[tuple[float, float]]:
        """The continuous (sigma_w2, sigma_b2) points every group and seed evaluates."""
        return list(itertools.product(self.sigma_w2, self.sigma_b2))

    @property
    def size(self) -> int:
        """Number of networks (configurations of the deepest depth) in the grid."""
        return len(self.groups()) * len(self.points()) * len(self.seed)

    @property
    def rows(self) -> int:
        """Number of result rows: one per (network, reported depth, layer <= depth)."""
        return self.size * sum(self.depth)

    def identity(self) -> dict[str, Any]:
        """What two runs must share to be the same sweep (see the module docstring)."""
        return {
            "results_format": RESULTS_FORMAT,
            "batch_size": self.batch_size,
            "depth": sorted(self.depth),
            "dtype": sorted(self.dtype),
            "theory": self.theory,
            "jacobian_probes": self.jacobian_probes,
        }

    def grid(self) -> dict[str, list]:
        """{network column: its values}: the networks of the sweep are their product."""
        axes = {
            "activation": self.activation,
            "init": self.init,
            "width": self.width,
            "norm": tuple("none" if n is None else n for n in self.norm),
            "residual": self.residual,
            "dtype": self.dtype,
            "seed": self.seed,
            "sigma_w2": self.sigma_w2,
            "sigma_b2": self.sigma_b2,
        }
        return {name: list(axes[name]) for name in NETWORK_COLUMNS}

    def columns(self) -> list[str]:
        """The columns of the rows, in order."""
        probes = ["mean_sq_singular_value"] if self.jacobian_probes else []
        return [
            "seed",
            *(c for c in NETWORK_COLUMNS if c != "seed"),
            "depth",
            "layer",
            *_LAYER_FIELDS,
            "first_nonfinite_layer",
            "batch_size",
            *probes,
            *THEORY_COLUMNS,
            "jaxgrad_version",
            "jax_version",
            "device_kind",
        ]


def _activation_name(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"activation must be names from jaxgrad.activations, got {value!r}")
    name = _act.name_of(value)
    if name == "rrelu":
        raise ValueError(
            "activation 'rrelu' draws random slopes and needs a PRNG key per call, so a sweep "
            "cannot probe it; use leaky_relu with a fixed negative slope"
        )
    return name


class Group(NamedTuple):
    """What changes the compiled program: one group, one program (`Sweep.groups`).

    Attributes:
        activation: the activation's canonical name.
        init: "gaussian" or "orthogonal".
        width: the hidden width.
        norm: None, "batch" or "layer".
        residual: residual blocks or not.
        dtype: "float32", "float64" or "bfloat16".

    Example:
        >>> from jaxgrad import sweep
        >>> group = sweep.Sweep(activation=("tanh", "relu")).groups()[1]
        >>> group.activation, group.width, group.norm, group.dtype
        ('relu', 256, None, 'float32')
    """

    activation: str
    init: str
    width: int
    norm: str | None
    residual: bool
    dtype: str = "float32"


def network_of(group: Group, seed: int, point: tuple[float, float]) -> tuple:
    """The network's values of `NETWORK_COLUMNS` (its key in a results folder).

    Args:
        group: the network's `Group`.
        seed: its seed.
        point: its (sigma_w2, sigma_b2).

    Returns:
        A tuple of the values, in `NETWORK_COLUMNS` order.

    Example:
        >>> from jaxgrad import sweep
        >>> sweep.network_of(sweep.Group("tanh", "gaussian", 8, None, False), 0, (1.0, 0.0))
        ('tanh', 'gaussian', 8, 'none', False, 'float32', 0, 1.0, 0.0)
    """
    norm = "none" if group.norm is None else group.norm
    return (group.activation, group.init, group.width, norm, group.residual, group.dtype,
            seed, *point)  # fmt: skip


# ----------------------------------------------------------------------------- the network


def _normalize(pre: jax.Array, norm: str | None) -> jax.Array:
    """Batch or layer norm at initialization (scale 1, bias 0), with Flax's epsilons."""
    if norm == "batch":
        mean, var = jnp.mean(pre, axis=0), jnp.var(pre, axis=0)
        return (pre - mean[None]) * jax.lax.rsqrt(var + 1e-5)[None]
    if norm == "layer":
        mean, var = jnp.mean(pre, axis=-1), jnp.var(pre, axis=-1)
        return (pre - mean[:, None]) * jax.lax.rsqrt(var + 1e-6)[:, None]
    return pre


def _normal(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """N(0, 1) drawn in float32 and cast, so a bfloat16 sweep sees the float32 numbers
    rounded (as `jaxgrad.init` does), not a different draw."""
    return jax.random.normal(key, shape, jnp.float32).astype(dtype)


def _unit_weights(group: Group, depth: int, key: jax.Array, dtype) -> tuple[jax.Array, ...]:
    """Per-layer unit weights and biases; layer l's depend only on (key, l), not on depth."""
    draw = (
        _init.orthogonal()
        if group.init == "orthogonal"
        else _init.normal(1 / math.sqrt(group.width))
    )

    def layer(index):
        layer_key = jax.random.fold_in(key, index)
        kernel_key, bias_key = jax.random.split(layer_key)
        kernel = draw(kernel_key, (group.width, group.width), dtype)
        return kernel, _normal(bias_key, (group.width,), dtype)

    return jax.vmap(layer)(jnp.arange(depth))


def _layer_functions(group: Group, sigma_w2, sigma_b2, dtype):
    """affine(layer, h) and post(layer, pre, h) of one (sigma_w2, sigma_b2) network."""
    phi = _act.get(group.activation)
    scale_w = jnp.sqrt(sigma_w2).astype(dtype)
    scale_b = jnp.sqrt(sigma_b2).astype(dtype)

    def affine(layer, h):
        kernel, bias = layer
        return scale_w * (h @ kernel) + scale_b * bias[None]

    def post(layer, pre, h):
        z = _normalize(pre, group.norm)
        a = phi(z)
        return (h + a if group.residual else a), z, a

    return affine, post, scale_w


def probe_point(
    group: Group, heads: tuple[int, ...], sigma_w2, sigma_b2, kernels, biases, x, loss_fn
) -> _prop.LayerStats:
    """Probe one (sigma_w2, sigma_b2) network built from shared unit weights.

    The network's kernels are sqrt(sigma_w2) times `kernels`, its biases sqrt(sigma_b2)
    times `biases`: every point of a chunk shares the same unit draws.

    Args:
        group: the network's `Group` (activation, norm, residual).
        heads: static tuple of 1-based depths at which to read the gradients.
        sigma_w2: the weight variance.
        sigma_b2: the bias variance.
        kernels: unit kernels stacked on depth, (depth, width, width).
        biases: unit biases, (depth, width).
        x: the input batch, (batch, width).
        loss_fn: `loss(output) -> scalar`.

    Returns:
        `LayerStats` as `jaxgrad.propagation.reverse_scan_probe` gives them.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import propagation, sweep
        >>> group = sweep.Group("linear", "gaussian", 2, None, False)
        >>> kernels, biases = jnp.stack([jnp.eye(2)] * 3), jnp.zeros((3, 2))
        >>> stats = sweep.probe_point(group, (3,), 1.0, 0.0, kernels, biases,
        ...                           jnp.ones((4, 2)), propagation.mean_square_loss)
        >>> stats.act_mean.tolist(), stats.grad_norm[:, 0].tolist()
        ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    """
    affine, post, scale_w = _layer_functions(group, sigma_w2, sigma_b2, x.dtype)
    stats = _prop.reverse_scan_probe(
        x,
        (kernels, biases),
        affine=affine,
        post=post,
        transpose=lambda layer, dpre: scale_w * (dpre @ layer[0].T),
        activation=_act.get(group.activation),
        loss_of_output=loss_fn,
        kernel=lambda layer: layer[0],
        heads=heads,
    )
    return stats._replace(weight_norm=scale_w * stats.weight_norm)


def jacobian_point(group: Group, sigma_w2, sigma_b2, kernels, biases, x0, probes) -> jax.Array:
    """Hutchinson's mean squared singular value of d h_l / d h_0 at the input x0 (1, width),
    for every layer l, from one forward scan that carries the probe tangents (P, 1, width).

    E ||J v||^2 / n = tr(J^T J) / n for v ~ N(0, I_n) (Hutchinson 1990).

    Args:
        group: the network's `Group`.
        sigma_w2: the weight variance.
        sigma_b2: the bias variance.
        kernels: unit kernels stacked on depth, (depth, width, width).
        biases: unit biases, (depth, width).
        x0: the input, (1, width).
        probes: the probe vectors, (P, 1, width).

    Returns:
        The estimate at every layer, shape (depth,).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxgrad import sweep
        >>> group = sweep.Group("linear", "gaussian", 2, None, False)
        >>> kernels, biases = jnp.stack([jnp.eye(2)] * 3), jnp.zeros((3, 2))
        >>> probes = jnp.ones((1, 1, 2))  # |v|^2 = n: the estimate is exact for J = 2^l I
        >>> x0 = jnp.ones((1, 2))
        >>> sweep.jacobian_point(group, 4.0, 0.0, kernels, biases, x0, probes).tolist()
        [4.0, 16.0, 64.0]

    References:
        Hutchinson 1990, "A stochastic estimator of the trace of the influence matrix for
        Laplacian smoothing splines".
    """
    affine, post, _ = _layer_functions(group, sigma_w2, sigma_b2, x0.dtype)

    def body(carry, layer):
        h, tangents = carry

        def block(h):
            return post(layer, affine(layer, h), h)[0]

        out, linear = jax.linearize(block, h)
        tangents = jax.vmap(linear)(tangents)
        mean_sq = jnp.mean(jnp.sum(jnp.square(tangents), axis=(1, 2))) / h.shape[-1]
        return (out, tangents), mean_sq

    _, mean_sq = jax.lax.scan(body, (x0, probes), (kernels, biases))
    return mean_sq


@functools.cache
def _weights_program(group: Group, depth: int) -> Callable:
    """The jitted draw of one seed's unit weights, (key) -> (kernels, biases), on one device.

    Kept out of the sharded chunk program: XLA's batched QR (orthogonal weights) deadlocks
    inside a program sharded over several host devices."""
    dtype = jnp.dtype(group.dtype)
    return jax.jit(lambda key: _unit_weights(group, depth, jax.random.split(key, 3)[0], dtype))


@functools.cache
def _chunk_program(
    group: Group,
    heads: tuple[int, ...],
    batch_size: int,
    num_devices: int,
    jacobian_probes: int = 0,
) -> Callable:
    """The jitted program of one group: (seed key, kernels, biases, sigma_w2[C], sigma_b2[C])
    -> stats[C], or (stats[C], mean squared singular values [C, depth]) with
    `jacobian_probes`. The weights come from `_weights_program`, replicated."""
    dt = jnp.dtype(group.dtype)

    def program(key, kernels, biases, sigma_w2, sigma_b2):
        _, input_key, loss_key = jax.random.split(key, 3)
        x = _normal(input_key, (batch_size, group.width), dt)
        loss_fn = _prop.random_projection_loss(loss_key)
        point = functools.partial(
            probe_point, group, heads, kernels=kernels, biases=biases, x=x, loss_fn=loss_fn
        )
        stats = jax.vmap(lambda w2, b2: point(w2, b2))(sigma_w2, sigma_b2)
        if not jacobian_probes:
            return stats
        probe_key = jax.random.fold_in(key, 7)
        probes = jax.random.normal(probe_key, (jacobian_probes, 1, group.width), dt)
        jacobian = functools.partial(
            jacobian_point, group, kernels=kernels, biases=biases, x0=x[:1], probes=probes
        )
        return stats, jax.vmap(lambda w2, b2: jacobian(w2, b2))(sigma_w2, sigma_b2)

    if num_devices == 1:
        return jax.jit(program)
    mesh = Mesh(np.array(jax.local_devices()[:num_devices]), ("points",))
    sharded = NamedSharding(mesh, PartitionSpec("points"))
    replicated = NamedSharding(mesh, PartitionSpec())
    shardings = (replicated, replicated, replicated, sharded, sharded)
    return jax.jit(program, in_shardings=shardings)


def _replicated(num_devices: int):
    return NamedSharding(Mesh(np.array(jax.local_devices()[:num_devices]), ("points",)),
                         PartitionSpec())  # fmt: skip


# ----------------------------------------------------------------------------- chunking and size


default_memory_budget = _prop.default_memory_budget


def bytes_per_point(sweep: Sweep, group: Group) -> int:
    """Memory one vmapped point needs: the stacked per-layer arrays of both scans.

    Args:
        sweep: the sweep.
        group: one of its groups.

    Returns:
        Bytes, an int.

    Example:
        >>> from jaxgrad import sweep
        >>> grid = sweep.Sweep(depth=(2, 4), width=(8,), activation=("tanh", "relu"),
        ...                    sigma_w2=(1.0, 2.0), seed=(0, 1), memory_budget="1MB")
        >>> sweep.bytes_per_point(grid, grid.groups()[0])
        20480
    """
    itemsize = jnp.dtype(group.dtype).itemsize
    activations = sweep.max_depth * sweep.batch_size * group.width * itemsize
    heads = len(sweep.depth) * sweep.batch_size * group.width * itemsize
    probes = 4 * sweep.jacobian_probes * group.width * itemsize
    return 4 * activations + 8 * heads + probes + 4096


def weight_bytes(sweep: Sweep, group: Group) -> int:
    """Memory of one seed's shared unit weights and biases.

    Args:
        sweep: the sweep.
        group: one of its groups.

    Returns:
        Bytes, an int.

    Example:
        >>> from jaxgrad import sweep
        >>> grid = sweep.Sweep(depth=(2, 4), width=(8,), activation=("tanh", "relu"),
        ...                    sigma_w2=(1.0, 2.0), seed=(0, 1), memory_budget="1MB")
        >>> sweep.weight_bytes(grid, grid.groups()[0])  # 4 layers of 8 x 8 + 8 float32
        1152
    """
    return sweep.max_depth * group.width * (group.width + 1) * jnp.dtype(group.dtype).itemsize


def chunk_size(sweep: Sweep, group: Group, num_points: int, num_devices: int) -> int:
    """Points per chunk: as many as the budget allows (after the shared weights), a multiple
    of the device count, at most the number of points rounded up to that multiple.

    Args:
        sweep: the sweep (its memory budget).
        group: one of its groups.
        num_points: the (sigma_w2, sigma_b2) points to split.
        num_devices: the devices a chunk is sharded over.

    Returns:
        The chunk size, an int >= num_devices.

    Example:
        >>> from jaxgrad import sweep
        >>> grid = sweep.Sweep(depth=(2, 4), width=(8,), activation=("tanh", "relu"),
        ...                    sigma_w2=(1.0, 2.0), seed=(0, 1), memory_budget="1MB")
        >>> sweep.chunk_size(grid, grid.groups()[0], num_points=2, num_devices=1)
        2
    """
    budget = sweep.memory_budget or default_memory_budget()
    fit = max(1, (budget - 2 * weight_bytes(sweep, group)) // bytes_per_point(sweep, group))
    fit = max(num_devices, fit // num_devices * num_devices)
    needed = -(-num_points // num_devices) * num_devices
    return int(min(fit, needed))


def machine_memory() -> tuple[int, str]:
    """(bytes, what they are): the first device's memory limit where it reports one (GPU,
    TPU), else the host's physical memory.

    Returns:
        (bytes, a few words saying what they are, for messages).

    Example:
        >>> from jaxgrad import sweep
        >>> size, what = sweep.machine_memory()
        >>> size > 0, isinstance(what, str)
        (True, True)
    """
    stats = jax.local_devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"the memory of {jax.local_devices()[0].device_kind}"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "the physical memory"


_ROW_BYTES = 16
"""Rough bytes per value of a result row in memory (numbers 8, shared strings a pointer)."""


def check_size(sweep: Sweep, *, load: bool = True) -> None:
    """Refuse, before anything is allocated, a sweep that cannot fit the machine.

    One network of each group needs its seed's weights and one point of a chunk
    (`weight_bytes` + `bytes_per_point`, the smallest chunk there is); with `load`, the
    result rows are held in memory too.

    Args:
        sweep: the sweep.
        load: whether the result rows will be held in memory (keyword only).

    Raises:
        ValueError: naming the bytes needed and the limit.

    Example:
        >>> from jaxgrad import sweep
        >>> grid = sweep.Sweep(depth=(2, 4), width=(8,), activation=("tanh", "relu"),
        ...                    sigma_w2=(1.0, 2.0), seed=(0, 1), memory_budget="1MB")
        >>> sweep.check_size(grid)  # fits: nothing to say
    """
    limit, what = machine_memory()
    for group in sweep.groups():
        needed = 2 * weight_bytes(sweep, group) + bytes_per_point(sweep, group)
        if needed > limit:
            raise ValueError(
                f"one network of width {group.width}, depth {sweep.max_depth}, batch_size "
                f"{sweep.batch_size} ({group.dtype}) needs about {_human(needed)}, more than "
                f"{what} ({_human(limit)}); make the width, depth or batch_size smaller"
            )
    in_memory = sweep.rows * len(sweep.columns()) * _ROW_BYTES
    if load and in_memory > limit:
        raise ValueError(
            f"the sweep's {sweep.rows:,} result rows need about {_human(in_memory)} in memory, "
            f"more than {what} ({_human(limit)}); write them to a folder with "
            "run(sweep, out=..., load=False)"
        )


def describe(sweep: Sweep, num_devices: int) -> str:
    """One line: how many networks, programs, chunks, rows and bytes the sweep makes.

    Args:
        sweep: the sweep.
        num_devices: the devices its chunks are sharded over.

    Returns:
        The line.

    Example:
        >>> from jaxgrad import sweep
        >>> grid = sweep.Sweep(depth=(2, 4), width=(8,), activation=("tanh", "relu"),
        ...                    sigma_w2=(1.0, 2.0), seed=(0, 1), memory_budget="1MB")
        >>> print(sweep.describe(grid, 1))
        8 networks in 2 programs, 4 chunks on 1 device; ...
    """
    chunks = plan(sweep, num_devices)
    in_memory = sweep.rows * len(sweep.columns()) * _ROW_BYTES
    programs = len(sweep.groups())
    return (
        f"{sweep.size:,} networks in {programs} program{'s' if programs > 1 else ''}, "
        f"{len(chunks):,} chunks on {num_devices} device{'s' if num_devices > 1 else ''}; "
        f"{sweep.rows:,} rows (about {_human(in_memory)} in memory, less on disk)"
    )


# ----------------------------------------------------------------------------- rows


def _rows(sweep: Sweep, group: Group, seed: int, points, stats) -> pd.DataFrame:
    """One row per (point, reported depth, layer <= depth)."""
    host = jax.device_get(stats)
    frames = []
    heads = tuple(sorted(sweep.depth))
    for index, (sigma_w2, sigma_b2) in enumerate(points):
        finite_until = int(host.first_nonfinite_layer[index])
        for head, depth in enumerate(heads):
            layer = np.arange(1, depth + 1)
            columns: dict[str, Any] = {"depth": depth, "layer": layer}
            for name in _LAYER_FIELDS:
                values = np.asarray(getattr(host, name)[index], np.float64)
                columns[name] = values[:depth, head] if values.ndim == 2 else values[:depth]
            nonfinite = finite_until if 0 < finite_until <= depth else -1
            columns["first_nonfinite_layer"] = nonfinite
            frame = pd.DataFrame(columns)
            frame.insert(0, "sigma_b2", sigma_b2)
            frame.insert(0, "sigma_w2", sigma_w2)
            frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    for name, value in reversed(list(group._asdict().items())):
        frame.insert(0, name, "none" if value is None and name == "norm" else value)
    frame.insert(0, "seed", seed)
    frame["batch_size"] = sweep.batch_size
    return frame


def _per_layer_column(points, values, frame: pd.DataFrame) -> np.ndarray:
    """Spread a (points, depth) array over the rows' (point, layer); nan when absent."""
    if values is None:
        return np.full(len(frame), np.nan)
    values = np.asarray(jax.device_get(values), np.float64)
    index = {point: i for i, point in enumerate(points)}
    rows = [index[(w2, b2)] for w2, b2 in zip(frame["sigma_w2"], frame["sigma_b2"], strict=True)]
    return values[np.asarray(rows), frame["layer"].to_numpy() - 1]


def _theory_columns(sweep: Sweep, group: Group, frame: pd.DataFrame) -> pd.DataFrame:
    applies = sweep.theory and group.norm is None and not group.residual
    applies = applies and group.init == "gaussian"
    if not applies:
        for name in THEORY_COLUMNS:
            frame[name] = np.nan
        return frame
    # One computation per distinct point, spread over the rows by index (a Python loop over
    # the rows cost 2 s for a sweep of 800k rows).
    rows = np.stack([frame["sigma_w2"].to_numpy(), frame["sigma_b2"].to_numpy()], axis=1)
    points, where = np.unique(rows, axis=0, return_inverse=True)
    values = np.asarray(
        [theory_of_point(group.activation, float(w2), float(b2)) for w2, b2 in points],
        np.float64,
    ).reshape(len(points), len(THEORY_COLUMNS))
    for index, name in enumerate(THEORY_COLUMNS):
        frame[name] = values[where.reshape(-1), index]
    return frame


@functools.cache
def theory_of_point(activation: str, sigma_w2: float, sigma_b2: float) -> tuple[float, ...]:
    """(q_star, chi1, xi_q, xi_c) of one point, computed alone (never vmapped with others:
    a batch's vectorization would change its rounding, so a point's value would depend on
    its chunk), cached by point. One jitted program per activation (about 3 ms a chaotic
    point, 0.3 ms an ordered one, on one CPU core).

    Args:
        activation: the activation's name.
        sigma_w2: the weight variance.
        sigma_b2: the bias variance.

    Returns:
        (q_star, chi1, xi_q, xi_c) as Python floats.

    Example:
        >>> from jaxgrad import sweep
        >>> q_star, chi1, xi_q, xi_c = sweep.theory_of_point("tanh", 1.0, 0.0)  # critical
        >>> q_star, round(chi1, 4), xi_c
        (0.0, 1.0, inf)

    References:
        Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep Information Propagation".
    """
    values = _theory_program(activation)(jnp.asarray(sigma_w2), jnp.asarray(sigma_b2))
    return tuple(float(v) for v in jax.device_get(values))


@functools.cache
def _theory_program(activation: str) -> Callable:
    phi = _act.resolve(activation)

    def one_point(sigma_w2, sigma_b2):
        q_star, _, chi1, chi_q, chi_c = _theory._everything(phi, sigma_w2, sigma_b2)
        scales = _theory._scales(q_star, chi_q, chi_c)
        return q_star, chi1, scales.xi_q, scales.xi_c

    return jax.jit(one_point)


def _provenance(frame: pd.DataFrame) -> pd.DataFrame:
    from jaxgrad import __version__

    frame["jaxgrad_version"] = __version__
    frame["jax_version"] = jax.__version__
    frame["device_kind"] = jax.local_devices()[0].device_kind
    return frame


# ----------------------------------------------------------------------------- running


class Chunk(NamedTuple):
    """The points of one group and seed that one call of the compiled program computes.

    Attributes:
        group: the chunk's `Group`.
        seed: its seed.
        points: its (sigma_w2, sigma_b2) points.
        size: the vmapped size: the points padded to a multiple of the device count.

    Example:
        >>> from jaxgrad import sweep
        >>> grid = sweep.Sweep(depth=(2, 4), width=(8,), activation=("tanh", "relu"),
        ...                    sigma_w2=(1.0, 2.0), seed=(0, 1), memory_budget="1MB")
        >>> chunk = sweep.plan(grid, num_devices=1)[0]
        >>> chunk.group.activation, chunk.seed, chunk.points, chunk.size
        ('tanh', 0, ((1.0, 0.0), (2.0, 0.0)), 2)
    """

    group: Group
    seed: int
    points: tuple[tuple[float, float], ...]
    size: int
    """The vmapped size: the points padded to a multiple of the device count."""

    @property
    def networks(self) -> list[tuple]:
        return [network_of(self.group, self.seed, point) for point in self.points]


def plan(sweep: Sweep, num_devices: int | None = None) -> list[Chunk]:
    """Every chunk of the sweep, in run order. The chunking depends on the memory budget and
    the device count; the numbers and the stored parts do not (see the module docstring).

    Args:
        sweep: the sweep.
        num_devices: the devices a chunk is sharded over; None for every local device.

    Returns:
        A list of `Chunk`: groups in order, then seeds, then points.

    Example:
        >>> from jaxgrad import sweep
        >>> grid = sweep.Sweep(depth=(2, 4), width=(8,), activation=("tanh", "relu"),
        ...                    sigma_w2=(1.0, 2.0), seed=(0, 1), memory_budget="1MB")
        >>> [(chunk.group.activation, chunk.seed) for chunk in sweep.plan(grid, 1)]
        [('tanh', 0), ('tanh', 1), ('relu', 0), ('relu', 1)]
    """
    num_devices = num_devices or jax.local_device_count()
    points = sweep.points()
    chunks = []
    for group in sweep.groups():
        size = chunk_size(sweep, group, len(points), num_devices)
        for seed in sweep.seed:
            for start in range(0, len(points), size):
                chunks.append(Chunk(group, seed, tuple(points[start : start + size]), size))
    return chunks


PROGRESS_SECONDS = 10.0
"""Without a terminal, a progress line is written at most this often (and once at the end)."""


class _ProgressLines:
    """Progress as plain lines for a log file, where a progress bar would be one long line
    of carriage returns: "sweep: 12 of 60 networks (20%), 30 s, about 2 min left". The time
    left is estimated from the chunks after the first, whose time is mostly compilation."""

    def __init__(self, total: int, initial: int, log: Callable[[str], None]):
        self.total, self.initial, self.done, self.log = total, initial, initial, log
        self.start = self.last = time.monotonic()
        self.lines, self.reported = 0, initial
        self.first: tuple[float, int] | None = None  # (time, done) at the first update

    def update(self, count: int) -> None:
        self.done += count
        if self.first is None:
            self.first = time.monotonic(), self.done
        if time.monotonic() - self.last >= PROGRESS_SECONDS:
            self._line()

    def close(self) -> None:
        if self.lines and self.reported != self.done:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        elapsed, left = now - self.start, ""
        if self.first is not None and self.done > self.first[1] and self.done < self.total:
            rate = (self.done - self.first[1]) / max(now - self.first[0], 1e-9)
            left = f", about {_duration((self.total - self.done) / rate)} left"
        percent = 100 * self.done // max(self.total, 1)
        self.log(
            f"sweep: {self.done:,} of {self.total:,} networks ({percent}%), "
            f"{_duration(elapsed)}{left}"
        )
        self.last, self.reported, self.lines = now, self.done, self.lines + 1


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _progress(total: int, initial: int, enabled: bool, log: Callable[[str], None]):
    """A tqdm bar on a terminal, plain lines through `log` otherwise, or None."""
    if not enabled:
        return None
    if not sys.stderr.isatty():
        return _ProgressLines(total, initial, log)
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="net", desc="sweep", dynamic_ncols=True)


def check_devices(num_devices: Any) -> int:
    """The device count to shard over: None means every local device.

    Args:
        num_devices: an int, or None.

    Returns:
        The device count, an int.

    Raises:
        TypeError: not an int.
        ValueError: outside [1, local device count].

    Example:
        >>> import jax
        >>> from jaxgrad import sweep
        >>> sweep.check_devices(None) == jax.local_device_count()
        True
    """
    available = jax.local_device_count()
    if num_devices is None:
        return available
    if not _is_int(num_devices):
        raise TypeError(f"num_devices must be an int in [1, {available}], got {num_devices!r}")
    if not 1 <= num_devices <= available:
        raise ValueError(
            f"num_devices must be in [1, {available}] (the local devices), got {num_devices}"
        )
    return int(num_devices)


def prepare(
    sweep: Sweep,
    out: str | Path | None = None,
    num_devices: int | None = None,
    *,
    load: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[int, ResultStore | None]:
    """Every check of a run, before any compute: the device count, the memory a network
    needs, and the results folder (created, or joined when it holds the same sweep).

    Args:
        sweep: the sweep.
        out: the results folder, or None.
        num_devices: the devices to shard over; None for every local device.
        load: whether the result rows will be held in memory (keyword only).
        log: where one-line messages go; default stderr.

    Returns:
        (num_devices, the ResultStore or None without `out`).

    Raises:
        TypeError / ValueError: a bad device count, a sweep too large for the machine, or a
            folder that holds another sweep (the message says what differs).

    Example:
        >>> import jax
        >>> from jaxgrad import sweep
        >>> sweep.prepare(sweep.Sweep(depth=(2,), width=(8,))) == (jax.local_device_count(), None)
        True
    """
    if not isinstance(sweep, Sweep):
        raise TypeError(f"sweep must be a jaxgrad.sweep.Sweep, got {type(sweep).__name__}")
    num_devices = check_devices(num_devices)
    if not isinstance(load, bool):
        raise TypeError(f"load must be true or false, got {load!r}")
    if not load and out is None:
        raise ValueError("load=False keeps the results only on disk: it needs `out`")
    check_size(sweep, load=load)
    if out is None:
        return num_devices, None
    store = ResultStore.for_sweep(
        out, sweep.identity(), sweep.grid(), part_columns=sweep.columns(), log=log
    )
    return num_devices, store


def run(
    sweep: Sweep,
    out: str | Path | None = None,
    progress: bool = True,
    num_devices: int | None = None,
    *,
    timeout: float = 3600.0,
    load: bool = True,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame | None:
    """Probe every network of the sweep and return one tidy row per (network, depth, layer).

    Args:
        sweep: the grid.
        out: a results folder (see the module docstring): networks already there are
            skipped, and each new chunk is written as soon as it is computed. None keeps
            everything in memory.
        progress: show a progress bar with an ETA on a terminal; without one (a log file, a
            notebook), write a plain line through `log` every `PROGRESS_SECONDS`.
        num_devices: local devices to shard each chunk over, an int in [1, local device
            count] (default: all).
        timeout: with several processes, seconds to wait for the others' chunks.
        load: False returns None instead of reading every row back (for a sweep larger than
            memory; needs `out`).
        log: where one-line messages go (resuming, damaged or stray parts, progress lines);
            default stderr.

    Several processes (after `jax.distributed.initialize`) split the chunks between them,
    process i taking every process_count-th chunk from the i-th; each writes its parts to
    the shared `out` folder and then waits until every network of the sweep is there, so
    every process returns the whole result. No collective communication is needed.

    Returns:
        A pandas DataFrame: the columns of `Sweep.columns()`: the configuration (seed,
        activation, init, width, norm, residual, dtype, sigma_w2, sigma_b2, depth, layer,
        batch_size), the `LayerStats` fields, the theory columns, and jaxgrad_version,
        jax_version, device_kind. None with `load=False`.

    Raises:
        TypeError / ValueError: before any compute (see `prepare`).
        TimeoutError: other processes' networks did not appear within `timeout`.

    Example:
        >>> from jaxgrad import sweep
        >>> grid = sweep.Sweep(depth=(3,), width=(8,), batch_size=4, theory=False)
        >>> frame = sweep.run(grid, progress=False)
        >>> frame[["depth", "layer"]].values.tolist(), round(float(frame.act_std.iloc[0]), 3)
        ([[3, 1], [3, 2], [3, 3]], 0.611)

    References:
        Schoenholz, Gilmer, Ganguli and Sohl-Dickstein 2017, "Deep Information Propagation".
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    log = (lambda message: print(message, file=sys.stderr, flush=True)) if log is None else log
    num_devices, store = prepare(sweep, out, num_devices, load=load, log=log)
    process_count, process_index = jax.process_count(), jax.process_index()
    if process_count > 1 and store is None:
        raise ValueError("a sweep over several processes needs `out`, a folder they all share")
    all_chunks = plan(sweep, num_devices)
    wanted = [network for chunk in all_chunks for network in chunk.networks]
    if store is None:
        computed = _compute_chunks(sweep, all_chunks, {}, num_devices, progress, log)
        return pd.concat([frame for _, frame in computed], ignore_index=True)
    for attempt in range(3):
        stored = store.stored()
        done = sum(network in stored for network in wanted)
        if attempt == 0 and 0 < done < len(wanted):
            log(f"resuming: {done} of {len(wanted)} networks already in {store.root}")
        mine = all_chunks[process_index::process_count]
        for chunk, frame in _compute_chunks(sweep, mine, stored, num_devices, progress, log):
            store.write(chunk.networks, frame)
        _wait_for_networks(store, wanted, timeout)
        if not load:
            return None
        frame = store.read(wanted)
        if len(store.stored().keys() & set(wanted)) == len(wanted):
            return frame
    raise RuntimeError(f"parts of {store.root} were damaged while being read, three times over")


def _compute_chunks(sweep, chunks, stored, num_devices, progress, log):
    """Compute each chunk's networks that are not in `stored`, one chunk at a time: yields
    (the chunk cut to the networks computed, their rows)."""
    heads = tuple(sorted(sweep.depth))
    total = sum(len(c.points) for c in chunks)
    already = sum(network_of(c.group, c.seed, p) in stored for c in chunks for p in c.points)
    bar = _progress(total, already, progress, log)
    weights_of = None, None
    for chunk in chunks:
        points = tuple(p for p in chunk.points if network_of(chunk.group, chunk.seed, p)
                       not in stored)  # fmt: skip
        if not points:
            continue
        key = jax.random.key(chunk.seed)
        if weights_of[0] != (chunk.group, chunk.seed):
            weights = _weights_program(chunk.group, sweep.max_depth)(key)
            if num_devices > 1:
                weights = jax.device_put(weights, _replicated(num_devices))
            weights_of = (chunk.group, chunk.seed), weights
        kernels, biases = weights_of[1]
        probes = sweep.jacobian_probes if chunk.group.norm != "batch" else 0
        program = _chunk_program(chunk.group, heads, sweep.batch_size, num_devices, probes)
        padded = list(points) + [points[-1]] * (chunk.size - len(points))
        w2 = jnp.asarray([p[0] for p in padded], jnp.float32)
        b2 = jnp.asarray([p[1] for p in padded], jnp.float32)
        result = program(key, kernels, biases, w2, b2)
        stats, mean_sq = result if probes else (result, None)
        frame = _rows(sweep, chunk.group, chunk.seed, points, stats)
        if sweep.jacobian_probes:
            frame["mean_sq_singular_value"] = _per_layer_column(points, mean_sq, frame)
        frame = _provenance(_theory_columns(sweep, chunk.group, frame))
        yield chunk._replace(points=points), frame[sweep.columns()]
        if bar is not None:
            bar.update(len(points))
    if bar is not None:
        bar.close()


def _wait_for_networks(store: ResultStore, networks: list[tuple], timeout: float) -> None:
    """Block until every network is stored (other processes are still writing theirs)."""
    deadline = time.monotonic() + timeout
    while missing := len(set(networks) - store.stored().keys()):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{missing} of {len(networks)} networks did not appear in {store.parts} within "
                f"{timeout:.0f} s; run the sweep again to compute them"
            )
        time.sleep(0.2)
