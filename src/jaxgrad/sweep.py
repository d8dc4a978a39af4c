"""Grids of random deep networks: one compiled program per static group, vmap and sharding inside.

A `Sweep` is the product of depths, widths, activations, initializer families, sigma_w2,
sigma_b2, norms, residual flags and seeds. `run` groups the grid by what changes the
compiled program (activation, initializer family, width, norm, residual, dtype; the batch
size is fixed per sweep) and, inside a group:

- draws each seed's unit weights once and applies sqrt(sigma_w2) (and sqrt(sigma_b2)) to the
  pre-activation, so every (sigma_w2, sigma_b2) point of a seed shares its random numbers and
  the vmapped points become one taller matrix product instead of many thin ones;
- builds one network of the largest depth: forward statistics of every shallower depth are
  its prefix, and the backward pass of each shallower network rides along as one more head
  of the reverse scan (`propagation.reverse_scan_probe(heads=...)`), so a depth axis does not
  multiply the cost;
- splits the vmapped points into chunks that fit a memory budget (default: a quarter of the
  device's memory, or 4 GiB on CPU), pads the last chunk so no shape is new, and shards each
  chunk's points over all local devices with `jax.sharding`;
- writes every chunk to the `jaxgrad.store.ResultStore` as soon as it is computed; a chunk
  already on disk is skipped, so an interrupted sweep resumes where it stopped.

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
from jaxgrad.store import ResultStore, content_id

INITS = ("gaussian", "orthogonal")
NORMS = (None, "batch", "layer")
DTYPES = ("float32", "float64", "bfloat16")
_LAYER_FIELDS = [f for f in _prop.LayerStats._fields if f != "first_nonfinite_layer"]


def _tuple(value: Any) -> tuple:
    if isinstance(value, str | int | float | bool) or value is None:
        return (value,)
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A grid of random networks to probe. Every field but the scalars takes a value or a
    list of values; the grid is their product.

    Attributes:
        depth: depths to report (>= 1); the deepest is computed once.
        width: hidden widths.
        activation: names from `jaxgrad.activations.names()`.
        init: "gaussian" or "orthogonal" weights, scaled by sqrt(sigma_w2).
        sigma_w2, sigma_b2: weight and bias variances (>= 0).
        norm: None (or "none"), "batch" or "layer".
        residual: residual blocks or not.
        seed: PRNG seeds.
        batch_size: inputs per network.
        dtype: "float32", "float64" or "bfloat16" (each its own compiled program).
        theory: add mean-field columns (q_star, chi1, xi_q, xi_c) where they apply (no norm,
            no residual, gaussian weights).
        jacobian_probes: with P > 0, add `mean_sq_singular_value`: Hutchinson's estimate (P
            Gaussian probes) of tr(J_l^T J_l) / width for J_l = d h_l / d h_0 at the first
            input of the batch (nan with batch norm, which has no per-example Jacobian).
        memory_budget: bytes one chunk may use; None derives it from the device.

    Raises:
        ValueError / TypeError: on any bad value, when the Sweep is built.
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
    memory_budget: int | None = None

    def __post_init__(self):
        for name in (
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
        ):
            values = _tuple(getattr(self, name))
            if not values:
                raise ValueError(f"{name} needs at least one value")
            object.__setattr__(self, name, values)
        for name in ("depth", "width"):
            for value in getattr(self, name):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{name} must be ints >= 1, got {value!r}")
        for value in self.activation:
            _act.get(value)
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
        for value in self.seed:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"seed must be ints, got {value!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise TypeError(f"batch_size must be an int, got {self.batch_size!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for value in self.dtype:
            if value not in DTYPES:
                raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {value!r}")
        if "float64" in self.dtype and not jax.config.jax_enable_x64:
            raise ValueError(
                "dtype float64 needs jax_enable_x64 (jax.config.update or JAX_ENABLE_X64=1)"
            )
        probes = self.jacobian_probes
        if isinstance(probes, bool) or not isinstance(probes, int) or probes < 0:
            raise ValueError(f"jacobian_probes must be an int >= 0, got {probes!r}")
        if self.memory_budget is not None and self.memory_budget < 1:
            raise ValueError("memory_budget must be a positive number of bytes or None")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Sweep:
        """Build from a mapping (e.g. a parsed TOML table); unknown keys raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown sweep keys {unknown}; valid keys are: {', '.join(sorted(known))}"
            )
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path) -> Sweep:
        """Load from a TOML file: top-level keys, or a [sweep] table.

        Example file:
            depth = [10, 50, 100]
            activation = ["tanh", "relu"]
            sigma_w2 = [1.0, 1.5, 2.0, 2.5]
            seed = [0, 1, 2]
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"sweep configuration {str(path)!r} does not exist")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not valid TOML: {error}") from None
        return cls.from_dict(values.get("sweep", values))

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


class Group(NamedTuple):
    """What changes the compiled program."""

    activation: str
    init: str
    width: int
    norm: str | None
    residual: bool
    dtype: str = "float32"


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
    """Probe one (sigma_w2, sigma_b2) network built from shared unit weights."""
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

    E ||J v||^2 / n = tr(J^T J) / n for v ~ N(0, I_n) (Hutchinson 1990)."""
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
def _chunk_program(
    group: Group,
    heads: tuple[int, ...],
    batch_size: int,
    num_devices: int,
    jacobian_probes: int = 0,
) -> Callable:
    """The jitted program of one group: (seed key, sigma_w2[C], sigma_b2[C]) -> stats[C],
    or (stats[C], mean squared singular values [C, depth]) with `jacobian_probes`."""
    depth = max(heads)
    dt = jnp.dtype(group.dtype)

    def program(key, sigma_w2, sigma_b2):
        weight_key, input_key, loss_key = jax.random.split(key, 3)
        kernels, biases = _unit_weights(group, depth, weight_key, dt)
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
    return jax.jit(program, in_shardings=(replicated, sharded, sharded))


# ----------------------------------------------------------------------------- chunking


default_memory_budget = _prop.default_memory_budget


def bytes_per_point(sweep: Sweep, group: Group) -> int:
    """Memory one vmapped point needs: the stacked per-layer arrays of both scans."""
    itemsize = jnp.dtype(group.dtype).itemsize
    activations = sweep.max_depth * sweep.batch_size * group.width * itemsize
    heads = len(sweep.depth) * sweep.batch_size * group.width * itemsize
    return 4 * activations + 8 * heads + 4096


def chunk_size(sweep: Sweep, group: Group, num_points: int, num_devices: int) -> int:
    """Points per chunk: as many as the budget allows (after the shared weights), a multiple
    of the device count, at most the number of points rounded up to that multiple."""
    budget = sweep.memory_budget or default_memory_budget()
    itemsize = jnp.dtype(group.dtype).itemsize
    weights = sweep.max_depth * group.width * (group.width + 1) * itemsize
    fit = max(1, (budget - 2 * weights) // bytes_per_point(sweep, group))
    fit = max(num_devices, fit // num_devices * num_devices)
    needed = -(-num_points // num_devices) * num_devices
    return int(min(fit, needed))


# ----------------------------------------------------------------------------- rows


def _rows(sweep: Sweep, group: Group, seed: int, points, stats) -> pd.DataFrame:
    """One row per (point, reported depth, layer <= depth)."""
    host = jax.device_get(stats)
    frames = []
    heads = tuple(sorted(set(sweep.depth)))
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
    names = ("q_star", "chi1", "xi_q", "xi_c")
    if not applies:
        for name in names:
            frame[name] = np.nan
        return frame
    pairs = frame[["sigma_w2", "sigma_b2"]].drop_duplicates().to_numpy()
    w2, b2 = jnp.asarray(pairs[:, 0]), jnp.asarray(pairs[:, 1])
    phi = _act.get(group.activation)
    values = jax.device_get(jax.vmap(lambda w, b: _theory_point(phi, w, b))(w2, b2))
    table = pd.DataFrame({"sigma_w2": pairs[:, 0], "sigma_b2": pairs[:, 1]})
    for name, column in zip(names, values, strict=True):
        table[name] = np.asarray(column, np.float64)
    return frame.merge(table, on=["sigma_w2", "sigma_b2"], how="left")


def _theory_point(phi, sigma_w2, sigma_b2):
    q = _theory._q_star(phi, sigma_w2, sigma_b2)
    xi_q, xi_c = _theory._depth_scales(phi, sigma_w2, sigma_b2)
    return q, _theory._chi1(phi, sigma_w2, q), xi_q, xi_c


def _provenance(frame: pd.DataFrame) -> pd.DataFrame:
    from jaxgrad import __version__

    frame["jaxgrad_version"] = __version__
    frame["jax_version"] = jax.__version__
    frame["device_kind"] = jax.local_devices()[0].device_kind
    return frame


# ----------------------------------------------------------------------------- running


class Chunk(NamedTuple):
    group: Group
    seed: int
    points: tuple[tuple[float, float], ...]
    part_id: str


def plan(sweep: Sweep, num_devices: int | None = None) -> list[Chunk]:
    """Every chunk of the sweep, in run order, with its content-addressed part id."""
    num_devices = num_devices or jax.local_device_count()
    points = sweep.points()
    chunks = []
    for group in sweep.groups():
        size = chunk_size(sweep, group, len(points), num_devices)
        for seed in sweep.seed:
            for start in range(0, len(points), size):
                members = tuple(points[start : start + size])
                identity = {
                    "group": group._asdict(),
                    "seed": seed,
                    "points": members,
                    "depth": sorted(set(sweep.depth)),
                    "batch_size": sweep.batch_size,
                    "theory": sweep.theory,
                    "jacobian_probes": sweep.jacobian_probes,
                    "format": 1,
                }
                chunks.append(Chunk(group, seed, members, content_id(identity)))
    return chunks


def _progress(total: int, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="net", desc="sweep", dynamic_ncols=True)


def run(
    sweep: Sweep,
    out: str | Path | None = None,
    progress: bool = True,
    num_devices: int | None = None,
    *,
    timeout: float = 3600.0,
) -> pd.DataFrame:
    """Probe every network of the sweep and return one tidy row per (network, depth, layer).

    Args:
        sweep: the grid.
        out: a folder for the results; chunks already there are skipped and each new chunk is
            written as soon as it is computed. None keeps everything in memory.
        progress: show a progress bar with an ETA (only on a terminal).
        num_devices: local devices to shard each chunk over (default: all).
        timeout: with several processes, seconds to wait for the others' chunks.

    Several processes (after `jax.distributed.initialize`) split the chunks between them,
    process i taking every process_count-th chunk from the i-th; each writes its parts to
    the shared `out` folder and then waits until every part of the sweep is there, so every
    process returns the whole result. No collective communication is needed.

    Returns:
        A pandas DataFrame: the configuration columns (seed, activation, init, width, norm,
        residual, sigma_w2, sigma_b2, depth, layer, batch_size, dtype), the `LayerStats`
        fields, the theory columns, and jaxgrad_version, jax_version, device_kind.
    """
    num_devices = num_devices or jax.local_device_count()
    if num_devices > jax.local_device_count():
        raise ValueError(
            f"num_devices={num_devices} but only {jax.local_device_count()} local devices exist"
        )
    process_count, process_index = jax.process_count(), jax.process_index()
    if process_count > 1 and out is None:
        raise ValueError("a sweep over several processes needs `out`, a folder they all share")
    store = ResultStore(out) if out is not None else None
    all_chunks = plan(sweep, num_devices)
    chunks = all_chunks[process_index::process_count]
    heads = tuple(sorted(set(sweep.depth)))
    bar = _progress(sum(len(c.points) for c in chunks), progress)
    frames = []
    for chunk in chunks:
        if store is not None and store.has(chunk.part_id):
            if bar is not None:
                bar.update(len(chunk.points))
            continue
        size = chunk_size(sweep, chunk.group, len(sweep.points()), num_devices)
        probes = sweep.jacobian_probes if chunk.group.norm != "batch" else 0
        program = _chunk_program(chunk.group, heads, sweep.batch_size, num_devices, probes)
        padded = list(chunk.points) + [chunk.points[-1]] * (size - len(chunk.points))
        w2 = jnp.asarray([p[0] for p in padded], jnp.float32)
        b2 = jnp.asarray([p[1] for p in padded], jnp.float32)
        result = program(jax.random.key(chunk.seed), w2, b2)
        stats, mean_sq = result if probes else (result, None)
        frame = _rows(sweep, chunk.group, chunk.seed, chunk.points, stats)
        if sweep.jacobian_probes:
            frame["mean_sq_singular_value"] = _per_layer_column(chunk.points, mean_sq, frame)
        frame = _provenance(_theory_columns(sweep, chunk.group, frame))
        if store is not None:
            store.write(chunk.part_id, frame)
        else:
            frames.append(frame)
        if bar is not None:
            bar.update(len(chunk.points))
    if bar is not None:
        bar.close()
    if store is not None:
        _wait_for_parts(store, all_chunks, timeout)
        wanted = {chunk.part_id for chunk in all_chunks}
        parts = [store.path(p) for p in store.part_ids() if p in wanted]
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return pd.concat(frames, ignore_index=True)


def _wait_for_parts(store: ResultStore, chunks: list[Chunk], timeout: float) -> None:
    """Block until every chunk's part exists (other processes are still writing theirs)."""
    deadline = time.monotonic() + timeout
    while missing := [c for c in chunks if not store.has(c.part_id)]:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(missing)} of {len(chunks)} chunks did not appear in {store.parts} within "
                f"{timeout:.0f} s; run the sweep again to compute them"
            )
        time.sleep(0.2)
