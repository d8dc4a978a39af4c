"""A recorded run on the host: tables, the first non-finite value, spikes, a verdict, and
its files.

`History` holds what a `Recorder` measured, brought to the host: one row per recorded step
(per-layer statistics in forward order) and one per step (loss, global norms, recorded,
skipped, spike). `RunLog` writes a run as it goes: each `poll` appends the rows recorded
since the last one to Parquet parts in a folder (atomically, one part per poll), and a
resumed run appends to the same folder; `History.read(folder)` reads them back, a step
recorded twice (a run resumed from a checkpoint before its last poll) counting once, from
the latest run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import numpy as np

from jaxgrad.inspection import ModelReport, ModuleStats, ParamStats
from jaxgrad.recording.recorder import STEP_FIELDS, UPDATE_FIELDS

if TYPE_CHECKING:
    import pandas as pd

    from jaxgrad.recording.recorder import Recorder

MOVE_FACTOR = 3.0
"""A statistic "moved" at a recorded step when it is this many times the largest value it
took over the recorded steps before the spike's window (or below the smallest divided by
this): outside its own range of variation by a factor 3 (`History.spikes`)."""


class NonFinite(NamedTuple):
    """Where a run first went non-finite.

    Attributes:
        step: the step.
        name: the module call (forward order name) or parameter row where it began; None
            when it is the loss.
        direction: "forward", "backward" or "parameter".
        statistic: forward: "input" (it came in: the data, or an operation that is not a
            recorded module), "output" (the call made it from a finite input), or "loss"
            (every call's output finite, the loss not: the loss function made it; also when
            the step was not recorded); backward: "dL/d(output)", of the first call met
            going back from the loss whose output gradient holds an inf or a nan (the
            backward pass went non-finite between this call's output and the next recorded
            call's: in that call's backward pass, or in an operation between them that is
            not a recorded module); parameter: "gradient or weight".

    Example:
        `History.first_nonfinite` returns one; its fields read as a sentence:

        >>> from jaxgrad.recording import NonFinite
        >>> where = NonFinite(step=3, name="layers.0", direction="forward", statistic="input")
        >>> f"step {where.step}: {where.direction}, the {where.statistic} of {where.name}"
        'step 3: forward, the input of layers.0'
    """

    step: int
    name: str | None
    direction: str
    statistic: str


class Spike(NamedTuple):
    """A step whose loss or global norm exceeded its running average, and what moved first.

    Attributes:
        step: the step.
        statistics: which of loss, grad_norm, update_norm spiked there.
        first_mover: (row name, statistic, step) of the per-layer statistic that first
            moved by `MOVE_FACTOR` from its earlier median, among the recorded rows up to
            the spike; None when nothing did (or nothing was recorded before).

    Example:
        `History.spikes` returns a list of them:

        >>> from jaxgrad.recording import Spike
        >>> spike = Spike(step=120, statistics=("loss", "update_norm"),
        ...               first_mover=("layers.4", "update_norm", 112))
        >>> name, statistic, step = spike.first_mover
        >>> f"{statistic} of {name} moved at step {step}, {spike.step - step} steps before"
        'update_norm of layers.4 moved at step 112, 8 steps before'
    """

    step: int
    statistics: tuple[str, ...]
    first_mover: tuple[str, str, int] | None


@dataclasses.dataclass
class History:
    """A recorded run, on the host (numpy arrays; rows sorted by step).

    Attributes:
        module_names, module_types, param_names, param_owners: the rows' names, in forward
            order (as `ModelReport` names them).
        activation: the activation behind the saturated fractions, or None.
        recorded_steps: (R,) the recorded steps.
        loss: (R,) the loss at each recorded step.
        modules: field of `ModuleStats` -> (R, calls).
        params: field of `ParamStats`, or of `UPDATE_FIELDS` -> (R, parameter rows).
        steps: `step` and each of `STEP_FIELDS` -> (S,), every step kept.

    Example:
        A run whose fourth batch holds a nan: the step is recorded although `every=2`
        skips it, and the first non-finite value is traced to the first layer's input.

        >>> import jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> from jaxgrad import recording
        >>> model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
        ...                        nnx.Linear(8, 1, rngs=nnx.Rngs(1)))
        >>> def loss_fn(model, batch):
        ...     return jnp.mean((model(batch[0]) - batch[1]) ** 2)
        >>> batch = (jnp.ones((16, 4)), jnp.zeros((16, 1)))
        >>> optimizer = nnx.Optimizer(model, optax.sgd(1e-2), wrt=nnx.Param)
        >>> recorder = recording.Recorder(model, loss_fn, batch, every=2)
        >>> @nnx.jit
        ... def step(model, optimizer, recorder, batch):
        ...     loss, grads = recorder.value_and_grad(model, batch)
        ...     recorder.update(model, optimizer, optimizer.update(model, grads))
        ...     return loss
        >>> for _ in range(3):
        ...     _ = step(model, optimizer, recorder, batch)
        >>> _ = step(model, optimizer, recorder, (batch[0].at[0, 0].set(jnp.nan), batch[1]))
        >>> history = recorder.history()
        >>> history
        History(steps 0-3, 3 recorded, 2 calls, 4 parameter rows)
        >>> history.recorded_steps.tolist()
        [0, 2, 3]
        >>> history.first_nonfinite()
        NonFinite(step=3, name='layers.0', direction='forward', statistic='input')
        >>> history.to_frame().columns.tolist()
        ['step', 'kind', 'name', 'order', 'statistic', 'value']
    """

    module_names: tuple[str, ...]
    module_types: tuple[str, ...]
    param_names: tuple[str, ...]
    param_owners: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]
    activation: str | None
    recorded_steps: np.ndarray
    loss: np.ndarray
    modules: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    steps: dict[str, np.ndarray]

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_buffers(cls, recorder: Recorder, rows: Mapping, steps: Mapping) -> History:
        """The valid rows of a recorder's ring buffers (fetched to the host), by step."""
        valid = np.asarray(rows["step"]) >= 0
        order = np.argsort(np.asarray(rows["step"])[valid], kind="stable")

        def pick(array):
            return np.asarray(array)[valid][order]

        step_valid = np.asarray(steps["step"]) >= 0
        step_order = np.argsort(np.asarray(steps["step"])[step_valid], kind="stable")
        return cls(
            module_names=recorder.module_names,
            module_types=recorder.module_types,
            param_names=recorder.param_rows.names,
            param_owners=recorder.param_rows.owners,
            param_shapes=recorder.param_rows.shapes,
            activation=recorder.activation,
            recorded_steps=pick(rows["step"]).astype(np.int64),
            loss=pick(rows["loss"]).astype(np.float64),
            modules={f: pick(v) for f, v in rows["modules"]._asdict().items()},
            params={
                **{f: pick(v) for f, v in rows["params"]._asdict().items()},
                **{f: pick(rows["updates"][f]) for f in UPDATE_FIELDS},
            },
            steps={
                name: np.asarray(steps[name])[step_valid][step_order]
                for name in ("step", *STEP_FIELDS)
            },
        )

    # ------------------------------------------------------------------ views

    def report(self, step: int | None = None) -> ModelReport:
        """The `ModelReport` of one recorded step (default: the last), as `inspect` gives."""
        index = self._row(step)
        modules = ModuleStats(**{f: self.modules[f][index] for f in ModuleStats._fields})
        params = ParamStats(**{f: self.params[f][index] for f in ParamStats._fields})
        return ModelReport(
            loss=self.loss[index],
            modules=modules,
            params=params,
            module_names=self.module_names,
            module_types=self.module_types,
            module_layers=tuple(() for _ in self.module_names),
            param_names=self.param_names,
            param_modules=self.param_owners,
            param_shapes=self.param_shapes,
            activation=self.activation,
        )

    def _row(self, step: int | None) -> int:
        if not len(self.recorded_steps):
            raise ValueError("nothing was recorded in this history")
        if step is None:
            return len(self.recorded_steps) - 1
        hits = np.flatnonzero(self.recorded_steps == step)
        if not hits.size:
            raise ValueError(
                f"step {step} was not recorded; recorded steps: {self.recorded_steps.tolist()}"
            )
        return int(hits[-1])

    def profile(self, step: int | None = None, **known: Any):
        """The `jaxgrad.stats.Profile` of a recorded step, with the run's update-to-weight
        ratios and dead fractions over the recorded steps up to it for the run's rules
        (`jaxgrad.diagnose(history)`). By default the step is the first recorded step that
        held an inf or a nan, if the run had one (so the verdict says where and when it
        broke), else the last. `known` as for `ModelReport.profile`."""
        nonfinite_step = None
        if step is None:
            broken = self.first_nonfinite()
            if broken is not None and broken.step in self.recorded_steps:
                step = nonfinite_step = broken.step
        report = self.report(step)
        profile = report.profile(**known)
        weights = [param for _, param in report.weight_rows()]
        upto = self._row(step) + 1
        ratios = np.asarray(self.params["update_ratio"], np.float64)[:upto, weights]
        dead = np.stack(
            [self.report(int(s)).profile().dead_frac for s in self.recorded_steps[:upto]]
        )
        return profile._replace(
            steps=tuple(int(s) for s in self.recorded_steps[:upto]),
            update_ratio_history=ratios,
            dead_frac_history=dead,
            nonfinite_step=nonfinite_step,
        )

    def to_frame(self) -> pd.DataFrame:
        """A tidy table: one row per (recorded step, module call or parameter row,
        statistic), columns `step`, `kind` ("module" or "param"), `name`, `order` (its
        forward position), `statistic`, `value`."""
        import pandas as pd

        frames = []
        for kind, names, table in (
            ("module", self.module_names, self.modules),
            ("param", self.param_names, self.params),
        ):
            count = len(names)
            for statistic, values in table.items():
                values = np.asarray(values, np.float64)
                frames.append(
                    pd.DataFrame(
                        {
                            "step": np.repeat(self.recorded_steps, count),
                            "kind": kind,
                            "name": np.tile(np.asarray(names, dtype=object), len(values)),
                            "order": np.tile(np.arange(count), len(values)),
                            "statistic": statistic,
                            "value": values.reshape(-1),
                        }
                    )
                )
        if not frames:
            return pd.DataFrame(columns=["step", "kind", "name", "order", "statistic", "value"])
        return pd.concat(frames, ignore_index=True)

    def steps_frame(self) -> pd.DataFrame:
        """One row per step: `step`, `STEP_FIELDS` (flags as bools) and `spiking` (which of
        loss, grad_norm, update_norm began a spike there, comma-separated)."""
        import pandas as pd

        frame = pd.DataFrame({name: np.asarray(v) for name, v in self.steps.items()})
        frame["spiking"] = [", ".join(self._spiking(i)) for i in range(len(frame))]
        for flag in ("recorded", "rerun", "skipped", "spike"):
            frame[flag] = frame[flag] > 0
        return frame.astype({"step": "int64"})

    # ------------------------------------------------------------------ findings

    def first_nonfinite(self) -> NonFinite | None:
        """Where the run first held an inf or a nan, found in the compiled step: the first
        recorded step with one (a non-finite step is always recorded), the module in
        forward order (forward), the first met going back from the loss (backward), or a
        parameter row; else, from the per-step table, the step and the statistic."""
        losses = dict(
            zip(
                np.asarray(self.steps["step"]).tolist(),
                np.asarray(self.steps["loss"], np.float64).tolist(),
                strict=True,
            )
        )
        for index, step in enumerate(self.recorded_steps):
            forward = self.modules["nonfinite_in"][index] | self.modules["nonfinite_out"][index]
            hits = np.flatnonzero(forward)
            if hits.size:
                first = hits[0]
                statistic = "input" if self.modules["nonfinite_in"][index][first] else "output"
                return NonFinite(int(step), self.module_names[first], "forward", statistic)
            if not np.isfinite(losses.get(int(step), 0.0)):
                return NonFinite(int(step), None, "forward", "loss")
            hits = np.flatnonzero(self.modules["nonfinite_grad"][index])
            if hits.size:  # measured: this call's output gradient, nearest the loss
                return NonFinite(int(step), self.module_names[hits[-1]], "backward", "dL/d(output)")
            hits = np.flatnonzero(self.params["nonfinite"][index])
            if hits.size:
                name = self.param_names[hits[0]]
                return NonFinite(int(step), name, "parameter", "gradient or weight")
        loss = np.asarray(self.steps["loss"], np.float64)
        bad = np.flatnonzero(~np.isfinite(loss))
        if bad.size:  # a step not recorded (the recorder checked the loss only)
            return NonFinite(int(self.steps["step"][bad[0]]), None, "forward", "loss")
        return None

    def spikes(self, window: int = 8) -> list[Spike]:
        """Every step flagged as a spike, with the per-layer statistic that moved first:
        among the recorded rows up to the spike, the earliest whose value left its range
        over the rows before the last `window` steps by a factor `MOVE_FACTOR` (the largest
        move first where several moved at the same step; update norms tend to move before
        gradient norms: Wortsman et al. 2023)."""
        spikes = []
        flagged = np.flatnonzero(np.asarray(self.steps["spike"]) > 0)
        for index in flagged:
            step = int(self.steps["step"][index])
            spikes.append(Spike(step, self._spiking(index), self._first_mover(step, window)))
        return spikes

    def _spiking(self, index: int) -> tuple[str, ...]:
        bits = int(self.steps["spike"][index])
        return tuple(
            name for bit, name in ((1, "loss"), (2, "grad_norm"), (4, "update_norm")) if bits & bit
        )

    def _first_mover(self, step: int, window: int) -> tuple[str, str, int] | None:
        upto = self.recorded_steps <= step
        baseline = self.recorded_steps < step - window
        if not baseline.any():
            return None
        candidates = []
        series = [
            ("param", self.param_names, "update_norm", self.params["update_norm"]),
            ("param", self.param_names, "grad_norm", self.params["grad_norm"]),
            ("module", self.module_names, "out_grad_norm", self.modules["out_grad_norm"]),
            ("module", self.module_names, "out_std", self.modules["out_std"]),
        ]
        for _, names, statistic, values in series:
            values = np.abs(np.asarray(values, np.float64))
            before = np.where(np.isfinite(values[baseline]), values[baseline], np.nan)
            if np.isnan(before).all():
                continue
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns
                high, low = np.nanmax(before, axis=0), np.nanmin(before, axis=0)
                moved = (values > MOVE_FACTOR * high) | (values < low / MOVE_FACTOR)
                jumps = np.maximum(values / high, low / values)
            moved &= (upto & ~baseline)[:, None]
            for column in range(values.shape[1]):
                hits = np.flatnonzero(moved[:, column])
                if hits.size:
                    at = hits[0]
                    size = -float(np.log(jumps[at, column]))
                    candidates.append(
                        (int(self.recorded_steps[at]), size, names[column], statistic)
                    )
        if not candidates:
            return None
        step_moved, _, name, statistic = min(candidates)
        return name, statistic, step_moved

    # ------------------------------------------------------------------ files

    def metadata(self) -> dict[str, Any]:
        return {
            "module_names": list(self.module_names),
            "module_types": list(self.module_types),
            "param_names": list(self.param_names),
            "param_owners": list(self.param_owners),
            "param_shapes": [list(s) for s in self.param_shapes],
            "activation": self.activation,
            "module_fields": list(self.modules),
            "param_fields": list(self.params),
        }

    @classmethod
    def read(cls, folder: str | os.PathLike) -> History:
        """A run written by `RunLog`: every part, a step written twice counted once (the
        latest run's)."""

        folder = Path(folder)
        meta_path = folder / "history.json"
        if not meta_path.is_file():
            raise ValueError(f"{folder} holds no recorded run (no history.json)")
        meta = json.loads(meta_path.read_text())
        rows = _read_parts(folder, "rows")
        steps = _read_parts(folder, "steps")
        modules_n, params_n = len(meta["module_names"]), len(meta["param_names"])
        if rows.empty:
            recorded = np.zeros(0, np.int64)
        else:
            rows = rows.sort_values(["step", "run"]).drop_duplicates("step", keep="last")
            recorded = rows["step"].to_numpy(np.int64)

        def table(prefix, fields, count):
            out = {}
            for field in fields:
                columns = [f"{prefix}/{field}/{i}" for i in range(count)]
                values = rows[columns].to_numpy() if len(rows) else np.zeros((0, count))
                out[field] = values.astype(bool) if field.startswith("nonfinite") else values
            return out

        if not steps.empty:
            steps = steps.sort_values(["step", "run"]).drop_duplicates("step", keep="last")
        step_table = {
            name: (steps[name].to_numpy() if len(steps) else np.zeros(0))
            for name in ("step", *STEP_FIELDS)
        }
        return cls(
            module_names=tuple(meta["module_names"]),
            module_types=tuple(meta["module_types"]),
            param_names=tuple(meta["param_names"]),
            param_owners=tuple(meta["param_owners"]),
            param_shapes=tuple(tuple(s) for s in meta["param_shapes"]),
            activation=meta["activation"],
            recorded_steps=recorded,
            loss=rows["loss"].to_numpy(np.float64) if len(rows) else np.zeros(0),
            modules=table("module", meta["module_fields"], modules_n),
            params=table("param", meta["param_fields"], params_n),
            steps=step_table,
        )

    def __repr__(self) -> str:
        steps = self.steps["step"]
        span = f"steps {int(steps[0])}-{int(steps[-1])}" if len(steps) else "no steps"
        return (
            f"History({span}, {len(self.recorded_steps)} recorded, {len(self.module_names)} "
            f"calls, {len(self.param_names)} parameter rows)"
        )


def _read_parts(folder: Path, kind: str):
    import pandas as pd

    parts = sorted((folder / kind).glob("*.parquet")) if (folder / kind).is_dir() else []
    frames = [pd.read_parquet(path) for path in parts]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _wide(history: History, since_row: int, since_step: int, run: int):
    """The rows recorded and the steps taken after the given ones, as wide tables."""
    import pandas as pd

    keep = history.recorded_steps > since_row
    columns: dict[str, Any] = {"step": history.recorded_steps[keep], "run": run}
    columns["loss"] = history.loss[keep]
    for prefix, table in (("module", history.modules), ("param", history.params)):
        for field, values in table.items():
            for i in range(values.shape[1]):
                columns[f"{prefix}/{field}/{i}"] = np.asarray(values)[keep, i]
    rows = pd.DataFrame(columns)
    step_keep = np.asarray(history.steps["step"]) > since_step
    steps = pd.DataFrame({n: np.asarray(v)[step_keep] for n, v in history.steps.items()})
    steps["run"] = run
    return rows, steps


class RunLog:
    """A recorded run written as it goes: Parquet parts in `folder`, resumable.

    Each `poll(recorder)` writes the rows recorded and the steps taken since the last poll
    as one part each (written to a temporary file and renamed: a killed run keeps every
    part it finished), and `history.json` the names; a spike since the last poll is dumped
    to `spikes/step-N.parquet` (the per-layer rows of the recorded steps up to it) and
    `spikes/step-N.json` (which statistic spiked, what moved first). A new `RunLog` on the
    same folder continues it: its parts carry a higher run number, so a step recorded
    again after a resume from an earlier checkpoint replaces the old row when read
    (`History.read`).
    Poll at least every `capacity` recorded steps (and `step_capacity` steps), or rows
    are overwritten on the device before they are read.

    Args:
        folder: where to write; created if missing.

    Example:
        >>> import tempfile
        >>> import jax.numpy as jnp, optax
        >>> from flax import nnx
        >>> from jaxgrad import recording
        >>> model = nnx.Linear(4, 1, rngs=nnx.Rngs(0))
        >>> def loss_fn(model, batch):
        ...     return jnp.mean(model(batch) ** 2)
        >>> batch = jnp.ones((8, 4))
        >>> optimizer = nnx.Optimizer(model, optax.sgd(1e-2), wrt=nnx.Param)
        >>> recorder = recording.Recorder(model, loss_fn, batch, every=2)
        >>> @nnx.jit
        ... def step(model, optimizer, recorder, batch):
        ...     loss, grads = recorder.value_and_grad(model, batch)
        ...     recorder.update(model, optimizer, optimizer.update(model, grads))
        >>> folder = tempfile.mkdtemp()
        >>> log = recording.RunLog(folder)
        >>> for index in range(6):
        ...     step(model, optimizer, recorder, batch)
        ...     if index % 3 == 2:
        ...         _ = log.poll(recorder)
        >>> recording.History.read(folder).recorded_steps.tolist()
        [0, 2, 4]
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        for kind in ("rows", "steps"):
            (self.folder / kind).mkdir(parents=True, exist_ok=True)
        runs = [int(p.name.split("-")[0][3:]) for p in (self.folder / "rows").glob("run*.parquet")]
        self.run = max(runs, default=-1) + 1
        self.last_row, self.last_step, self.parts = -1, -1, 0
        self._seen: tuple[int, int] | None = None  # the recorder's counts at the last poll

    def poll(self, recorder: Recorder) -> History:
        """Write what is new since the last poll; return everything in the buffers.

        Warns (RuntimeWarning) when rows or steps were overwritten on the device since the
        last poll of this `RunLog`: they are lost, and the warning says how many."""
        history = recorder.history()
        self._check_overwritten(recorder, history)
        meta = self.folder / "history.json"
        if not meta.exists():
            _atomic_write(meta, json.dumps(history.metadata()).encode())
        rows, steps = _wide(history, self.last_row, self.last_step, self.run)
        for kind, frame in (("rows", rows), ("steps", steps)):
            if len(frame):
                name = f"run{self.run:04d}-{self.parts:06d}.parquet"
                _atomic_parquet(self.folder / kind / name, frame)
        self.parts += 1
        for spike in history.spikes():
            if spike.step > self.last_step:
                self._dump(history, spike)
        if len(history.recorded_steps):
            self.last_row = int(history.recorded_steps[-1])
        if len(history.steps["step"]):
            self.last_step = int(history.steps["step"][-1])
        return history

    def _check_overwritten(self, recorder: Recorder, history: History) -> None:
        counts = (int(recorder.recorded[...]), int(recorder.count[...]))
        seen, self._seen = self._seen, counts
        if seen is None:  # the first poll: a new run counts from 0, a resumed one from here
            if self.run > 0:
                return
            seen = (0, 0)
        new_rows = int(np.sum(history.recorded_steps > self.last_row))
        new_steps = int(np.sum(np.asarray(history.steps["step"]) > self.last_step))
        lost_rows = counts[0] - seen[0] - new_rows
        lost_steps = counts[1] - seen[1] - new_steps
        if lost_rows > 0 or lost_steps > 0:
            warnings.warn(
                f"RunLog {self.folder}: {max(lost_rows, 0)} recorded rows and "
                f"{max(lost_steps, 0)} steps were overwritten on the device before this poll "
                f"(the recorder holds {recorder.capacity} rows and {recorder.step_capacity} "
                "steps): they are not in the run; poll more often, or build the Recorder "
                "with a larger capacity or step_capacity",
                RuntimeWarning,
                stacklevel=3,
            )

    def _dump(self, history: History, spike: Spike, rows: int = 32) -> None:
        """`spikes/step-N.parquet`: the tidy rows of the last `rows` recorded steps up to the
        spike; `spikes/step-N.json`: the spike and what moved first."""
        folder = self.folder / "spikes"
        folder.mkdir(exist_ok=True)
        frame = history.to_frame()
        recent = history.recorded_steps[history.recorded_steps <= spike.step][-rows:]
        _atomic_parquet(folder / f"step-{spike.step}.parquet", frame[frame.step.isin(recent)])
        summary = {
            "step": spike.step,
            "statistics": list(spike.statistics),
            "first_mover": None if spike.first_mover is None else list(spike.first_mover),
        }
        _atomic_write(folder / f"step-{spike.step}.json", json.dumps(summary).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _atomic_parquet(path: Path, frame) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(temporary, index=False)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def debug_nans(model: Any, loss_fn: Any, batch: Any) -> FloatingPointError | None:
    """The hand-off to `jax.debug_nans` for the step `History.first_nonfinite` names: the
    loss and its gradient, run again de-optimized with `jax_debug_nans`, so JAX stops at
    the primitive that made the first nan (a log, a division, a sqrt at zero), with its
    traceback into your model's code.

    The recorder finds the module and the step inside the compiled step; this drills into
    that one step (give it the model and batch of that step) down to the operation. Slow:
    every primitive runs on its own.

    Args:
        model: the NNX model, as it was at the step to examine.
        loss_fn: `loss_fn(model, batch) -> scalar`, the training loss.
        batch: that step's batch.

    Returns:
        The `FloatingPointError` JAX raised (its traceback points at the operation), or None
        when no nan appeared.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        >>> error = debug_nans(model, lambda m, x: jnp.sum(jnp.log(m(x) - 100)), jnp.ones((1, 2)))
        >>> type(error).__name__
        'FloatingPointError'
    """
    from flax import nnx

    def loss_of(params, rest):
        return loss_fn(nnx.merge(graphdef, params, rest, copy=True), batch)

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    try:  # JAX announces its de-optimized rerun on stdout: the error says it all
        with jax.debug_nans(True), contextlib.redirect_stdout(io.StringIO()):
            jax.grad(loss_of)(params, rest)
    except FloatingPointError as error:
        return error
    return None


__all__ = ["MOVE_FACTOR", "History", "NonFinite", "RunLog", "Spike", "debug_nans"]
