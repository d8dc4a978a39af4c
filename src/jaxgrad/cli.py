"""The `jaxgrad` command.

    jaxgrad demo                 the main results on built-in defaults, as a report
    jaxgrad sweep CONFIG.toml    run a sweep, resumable, results as Parquet parts
    jaxgrad plot RESULTS         figures from a sweep's results
    jaxgrad report RUN_DIR       an HTML report of a training run recorded by RunLog
    jaxgrad gain NAME            the gains of an activation: PyTorch's table, computed, measured
    jaxgrad phase ACTIVATION     the critical line and phase diagram of mean-field theory
    jaxgrad spectrum ACTIVATION  Jacobian spectra of a random network against depth
    jaxgrad coord CONFIG.toml    a coordinate check over width and depth (muP, depth-muP)

Every subcommand has --help, where every option says its default; `jaxgrad --version`
names the versions of jaxgrad, jax and Python. A bad invocation is refused with exit status
2 and one line on stderr saying what is wrong and what would do, before any computation:
bad arguments, an unusable --out (a file, under a file, not writable, a figure with an
unknown suffix), a results folder that holds another sweep, a computation too large for the
machine (the bytes needed and the limit are named), a `plot` filter value the results lack,
or more results than one figure holds (the values left are listed, to choose with filters).
Ctrl-C stops with one line and exit status 130; an interrupted sweep keeps every chunk it
wrote, says how many networks are saved, and resumes when the same command runs again
(saying how many were already there). Without a terminal, sweep progress is written as
plain lines (for a log file).

Where the line is drawn: each command first turns its arguments into library objects and
checks them (a `Sweep`, an activation, the output paths, the device count, the memory
needed, the results folder's manifest). A `ValueError`, `TypeError` or `OSError` raised
there is a bad invocation: exit 2, one line. Once that setup has passed, the computation
runs outside that net: an error there is a bug (or a failing disk) and keeps its traceback,
so that it is reported rather than disguised as bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

from jaxgrad import activations, init

EXAMPLES = """examples:
  jaxgrad demo
  jaxgrad sweep sweep.toml --out runs/tanh
  jaxgrad plot runs/tanh --kind heatmap --activation tanh
  jaxgrad report runs/train
  jaxgrad gain leaky_relu 0.2
  jaxgrad phase tanh --sigma-b2 0.05
  jaxgrad spectrum tanh --weights orthogonal --q-star 0.015625 --depth 2 8 32"""

SEED_MAX = 2**32 - 2
"""The largest --seed: jax.random.key tells apart seeds below 2**32, and spectrum also uses
seed + 1."""


PLOT_AXES = (
    "activation",
    "init",
    "width",
    "norm",
    "residual",
    "dtype",
    "sigma_w2",
    "sigma_b2",
    "seed",
    "depth",
)
"""The sweep axes `plot` filters on, each with its option (`--sigma-w2` for sigma_w2)."""

MAX_CURVES = 10
"""The most configurations one profiles figure draws (one colour each)."""


class UsageError(Exception):
    """Bad input found before any computation: printed as one line, exit status 2.

    Example:
        `main` catches it, prints `jaxgrad COMMAND: error: ...` on stderr and returns 2:

        >>> from jaxgrad import cli
        >>> cli.main(["gain", "relu", "0.3"])  # relu takes no parameter
        2
    """


class Interrupted(Exception):
    """Ctrl-C: printed as one line, exit status 130.

    A command raises it with the line to print (what was saved, how to resume); `main`
    prints `jaxgrad COMMAND: ` and that line on stderr and returns 130.

    Example:
        >>> from jaxgrad.cli import Interrupted
        >>> str(Interrupted("interrupted: 4 of 12 chunks saved; run the same command to resume"))
        'interrupted: 4 of 12 chunks saved; run the same command to resume'
    """


_ctrl_c = {"pressed": False}


@contextlib.contextmanager
def _noting_ctrl_c():
    """Remember a Ctrl-C, then raise KeyboardInterrupt as Python's own handler does.

    The KeyboardInterrupt is raised wherever the main thread is when the signal is handled,
    and code it interrupts may turn it into another error: numpy comparing structured arrays
    raises TypeError when the promotion it tries fails for any reason (a sweep interrupted in
    `np.unique` exited 1 with that traceback). Once Ctrl-C was pressed, any error the command
    ends with is taken as the interrupt. Where SIGINT is ignored (a background job) or
    handled by someone else, or off the main thread, nothing is installed.
    """
    _ctrl_c["pressed"] = False
    if (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def pressed(signum, frame):
        _ctrl_c["pressed"] = True
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, pressed)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _is_interrupt(error: BaseException) -> bool:
    """Whether `error` is Ctrl-C's: a KeyboardInterrupt, or any error after Ctrl-C."""
    return isinstance(error, KeyboardInterrupt) or _ctrl_c["pressed"]


@contextlib.contextmanager
def _refusing(prefix: str = ""):
    """Turn the ValueError, TypeError or OSError of argument-driven setup into a UsageError."""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise UsageError(f"{prefix}{_one_line(error)}") from None
    except OSError as error:
        raise UsageError(f"{prefix}{error.strerror or error}: {error.filename}") from None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _note(message: str) -> None:
    """A progress line on stderr. A Ctrl-C that the code it landed in swallowed (Python
    ignores an exception raised in a garbage-collection callback, which XLA installs, or in
    a `__del__`) takes effect here, at the next line of progress, instead of never."""
    if _ctrl_c["pressed"]:
        raise KeyboardInterrupt
    print(message, file=sys.stderr, flush=True)


def _writable_folder(path: Path, flag: str = "--out") -> Path:
    """Create the folder if needed and prove it writable, or refuse with one line."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"{flag} {path} is under {parent}, which is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UsageError(f"cannot write to {flag} {path}: {error.strerror or error}") from None
    return path


def _figure_path(text: str, flag: str = "--out") -> Path:
    """A figure's path with a suffix matplotlib knows (.png added when there is none), in a
    writable folder; refused with one line otherwise."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(text)
    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix.lower().lstrip(".")
    if not suffix:
        path = path.with_name(f"{path.name}.png")
    elif suffix not in formats:
        known = ", ".join(f".{name}" for name in ("png", "pdf", "svg", "jpg"))
        raise UsageError(
            f"{flag} {text}: unknown figure format '.{suffix}'; end the name with one of "
            f"{known} (or another matplotlib format)"
        )
    return _output_file(path, flag, "figure.png")


def _output_file(path: Path, flag: str, example: str) -> Path:
    """A file to write: not a folder, in a writable folder (created if needed)."""
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name such as {path}/{example}")
    _writable_folder(path.parent, flag=f"{flag} {path}: its folder")
    return path


def _html_path(text: str, flag: str = "--out") -> Path:
    """An HTML file's path (.html added when there is none), in a writable folder."""
    path = Path(text)
    suffix = path.suffix.lower()
    if not suffix:
        path = path.with_name(f"{path.name}.html")
    elif suffix not in (".html", ".htm"):
        raise UsageError(
            f"{flag} {text}: the report is an HTML page, not '{path.suffix}'; end the name with "
            ".html"
        )
    return _output_file(path, flag, "report.html")


def _machine_memory() -> tuple[int, str]:
    from jaxgrad import sweep

    return sweep.machine_memory()


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    head = "  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))
    return "\n".join([head, "-" * len(head), *lines])


def _cmd_demo(args: argparse.Namespace) -> int:
    from jaxgrad import report

    out = _writable_folder(Path(args.out))
    print(f"jaxgrad demo: writing the report to {out}/ ...")
    result = report.build_report(out)
    print()
    print("Takeaways:")
    for number, section in enumerate(result.sections, start=1):
        print(f"{number}. {section.title}: {section.takeaway}")
    for section in result.sections:
        print()
        print(f"{section.title}: {section.text}")
        print()
        print(_table(section.header, section.rows))
    print()
    print(f"report: {out / 'report.html'} and {out / 'report.md'} ({result.seconds:.0f} s)")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    import jax

    from jaxgrad import sweep

    with _refusing("bad sweep configuration: "):
        config = sweep.Sweep.from_toml(args.config)
    available = jax.local_device_count()
    devices = available if args.devices is None else args.devices
    if devices > available:
        raise UsageError(
            f"--devices {devices} but only {available} local "
            f"{'devices exist' if available > 1 else 'device exists'} (on CPU, "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)"
        )
    with _refusing():
        sweep.check_size(config, load=False)
    out = Path(args.out) if args.out else Path(args.config).with_suffix("")
    _writable_folder(out)
    with _refusing():
        sweep.prepare(config, out, devices, load=False, log=_note)
    print(f"sweep: {sweep.describe(config, devices)} -> {out}", flush=True)
    before = _stored_count(config, out, devices)
    try:
        sweep.run(
            config,
            out=out,
            progress=not args.no_progress,
            num_devices=devices,
            load=False,
            log=_note,
        )
    except Exception as error:
        if not _is_interrupt(error):
            raise
        raise Interrupted(_saved(config, out, devices)) from None
    except KeyboardInterrupt:
        raise Interrupted(_saved(config, out, devices)) from None
    already = (
        f" ({config.size - before:,} computed now, {before:,} already there)" if before else ""
    )
    print(f"{config.size:,} networks{already}, {config.rows:,} rows in {out}")
    return 0


def _stored_count(config, out: Path, devices: int) -> int:
    """How many of the sweep's networks the results folder holds."""
    from jaxgrad import sweep
    from jaxgrad.store import ResultStore

    networks = {n for chunk in sweep.plan(config, devices) for n in chunk.networks}
    return len(networks & ResultStore(out, log=lambda _: None).stored().keys())


def _stored_points(points: Path) -> int:
    """How many points of a coordinate check the folder holds (0 when it holds none)."""
    from jaxgrad.store import ResultStore

    try:
        return len(ResultStore(points, log=lambda _: None).stored())
    except ValueError:
        return 0


def _saved(config, out: Path, devices: int) -> str:
    """The interrupted sweep's one line: how much is on disk."""
    done = _stored_count(config, out, devices)
    return (
        f"interrupted: {done} of {config.size} networks saved in {out}; run the same command "
        "again to resume"
    )


def _flag(column: str) -> str:
    return "--" + column.replace("_", "-")


def _value_text(value) -> str:
    """A sweep value as a user types it: 1.5, true, tanh."""
    value = getattr(value, "item", lambda: value)()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _values_text(values) -> str:
    return ", ".join(_value_text(value) for value in sorted(values))


def _matches(value, text: str) -> bool:
    """Whether the typed `text` names the stored `value`."""
    value = getattr(value, "item", lambda: value)()
    if isinstance(value, bool):
        return text.lower() in (("true", "1", "yes") if value else ("false", "0", "no"))
    if isinstance(value, int | float):
        try:
            number = float(text)
        except ValueError:
            return False
        return math.isclose(float(value), number, rel_tol=1e-6, abs_tol=1e-12)
    if text.lower() == str(value).lower():
        return True
    with contextlib.suppress(ValueError, TypeError):
        return activations.name_of(text) == value
    return False


def _filtered(frame, args: argparse.Namespace):
    """The rows the filters keep; a value the results lack is refused, naming what they hold."""
    everything = frame
    for column in PLOT_AXES:
        wanted = getattr(args, column)
        if wanted is None:
            continue
        present = frame[column].unique()
        keep = []
        for text in wanted:
            found = [value for value in present if _matches(value, text)]
            if found:
                keep += found
            elif any(_matches(value, text) for value in everything[column].unique()):
                raise UsageError(
                    f"{_flag(column)} {text}: no results have {column} {text} together with "
                    f"the other filters (those leave {column} {_values_text(present)})"
                )
            else:
                raise UsageError(
                    f"{_flag(column)} {text}: the results hold no {column} {text}; they hold "
                    f"{column} {_values_text(everything[column].unique())}"
                )
        frame = frame[frame[column].isin(keep)]
    return frame


def _varying(frame, columns) -> dict[str, list]:
    """{column: its sorted values} for the columns holding more than one value."""
    return {c: sorted(frame[c].unique()) for c in columns if frame[c].nunique() > 1}


def _choose_hint(varying: dict[str, list]) -> str:
    return "; ".join(f"{c} {_values_text(v)}" for c, v in varying.items())


def _cmd_plot(args: argparse.Namespace) -> int:
    from jaxgrad.store import ResultStore

    results = Path(args.results)
    with _refusing():
        store = ResultStore(results, log=_note)
    out = _figure_path(args.out) if args.out else _figure_path(str(results / f"{args.kind}.png"))
    frame = store.read()
    expected = store.networks()
    if frame.empty:
        raise UsageError(f"{results} holds no sweep results yet (0 of {len(expected)} networks)")
    missing = len(expected - store.stored().keys())
    if missing:
        _note(
            f"{results} holds {len(expected) - missing} of the {len(expected)} networks of its "
            "sweep; drawing those (run the sweep again to compute the rest)"
        )
    chosen = _filtered(frame, args)  # never empty: each filter keeps a value it found
    draw = _plot_heatmap if args.kind == "heatmap" else _plot_profiles
    return draw(chosen, out)


def _seeds_text(frame) -> str:
    seeds = sorted(frame.seed.unique())
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds ({_values_text(seeds)})"


def _fixed_text(frame, columns) -> str:
    return ", ".join(f"{c} = {_value_text(frame[c].iloc[0])}" for c in columns
                     if frame[c].nunique() == 1)  # fmt: skip


def _title(text: str, width: int) -> str:
    """A figure title wrapped at `width` characters, never inside "name = value"."""
    return textwrap.fill(text.replace(" = ", "\u00a0=\u00a0"), width)


def _plot_profiles(frame, out: Path) -> int:
    import numpy as np

    from jaxgrad import plot

    depths = sorted(frame.depth.unique())
    depth = depths[-1]
    frame = frame[frame.depth == depth]
    axes = [c for c in PLOT_AXES if c not in ("seed", "depth")]
    varying = _varying(frame, axes)
    curves_count = len(frame[list(varying)].drop_duplicates()) if varying else 1
    if curves_count > MAX_CURVES:
        flags = " or ".join(_flag(c) for c in varying)
        raise UsageError(
            f"{curves_count} configurations remain, more than the {MAX_CURVES} curves one "
            f"figure holds ({_choose_hint(varying)}); choose with {flags}"
        )
    fields = ["act_std", "act_grad_norm"]
    curves = {}
    groups = frame.groupby(list(varying)) if varying else [((), frame)]
    for values, rows in groups:
        values = values if isinstance(values, tuple) else (values,)
        label = ", ".join(
            f"{c} = {_value_text(v)}" for c, v in zip(varying, values, strict=True)
        ) or _fixed_text(frame, ["sigma_w2"])
        # the median over seeds, layer by layer (one seed: its own values); a seed's nan
        # makes the layer's median nan (pandas' median would skip it), which the figure
        # reports as not drawn rather than hiding
        curves[label] = rows.groupby("layer", as_index=False)[fields].agg(
            lambda column: np.median(column.to_numpy())
        )
    figure = plot.layer_profiles(curves, None, fields=fields, relative_to_last=("act_grad_norm",))
    fixed = _fixed_text(frame, [c for c in axes if c not in varying])
    seeds = _seeds_text(frame)
    depth_note = f"depth {depth}" + (
        f" (the deepest of {_values_text(depths)}; --depth chooses)" if len(depths) > 1 else ""
    )
    title = f"{fixed}; depth {depth}; median over {seeds} at each layer"
    figure.suptitle(_title(title, 110), fontsize=9)
    figure.savefig(out, dpi=plot.DPI)
    drew = f"{len(curves)} configuration{'s' if len(curves) > 1 else ''}"
    if varying:
        drew += f" ({_choose_hint(varying)})"
    print(f"layer profiles of {drew}, {fixed}, {depth_note}, median over {seeds} -> {out}")
    return 0


def _plot_heatmap(frame, out: Path) -> int:
    import numpy as np

    from jaxgrad import plot

    axes = [c for c in PLOT_AXES if c not in ("seed", "depth", "sigma_w2")]
    varying = _varying(frame, axes)
    if varying:
        flags = " or ".join(_flag(c) for c in varying)
        raise UsageError(
            f"a heatmap draws sigma_w2 against depth for one configuration, and "
            f"{len(frame[list(varying)].drop_duplicates())} remain ({_choose_hint(varying)}); "
            f"choose one with {flags}"
        )
    index = ["seed", "sigma_w2", "depth"]
    first = frame[frame.layer == 1].set_index(index)["act_grad_norm"]
    last = frame[frame.layer == frame.depth].set_index(index)
    ratio = (first / last["act_grad_norm"]).groupby(["sigma_w2", "depth"]).mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        table = np.log10(ratio.unstack("sigma_w2"))
    xi_c = last.groupby("sigma_w2")["xi_c"].first().loc[table.columns].to_numpy(np.float64)
    figure = plot.gradient_heatmap(
        table.columns.to_numpy(),
        table.index.to_numpy(),
        table.to_numpy(),
        None,
        xi_c=None if np.isnan(xi_c).all() else xi_c,
        label="log10 ||dL/dh_1|| / ||dL/dh_L|| (mean over seeds)",
    )
    fixed = _fixed_text(frame, axes)
    seeds = _seeds_text(frame)
    title = f"{fixed}; mean over {seeds}"
    figure.axes[0].set_title(_title(title, 70), fontsize=9)
    figure.savefig(out, dpi=plot.DPI)
    shape = f"sigma_w2 {_values_text(table.columns)} x depth {_values_text(table.index)}"
    print(f"heatmap of {fixed} ({shape}; mean over {seeds}) -> {out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from jaxgrad.recording import History

    run = Path(args.run_dir)
    if not (run / "history.json").is_file():
        raise UsageError(
            f"{run} holds no recorded run (no history.json); give a folder written by "
            "jaxgrad.recording.RunLog"
        )
    out = _html_path(args.out) if args.out else _html_path(str(run / "report.html"))
    try:
        history = History.read(run)
    except KeyError as error:
        raise UsageError(f"cannot read the run in {run}: {error} is missing") from None
    except (ValueError, TypeError, OSError) as error:
        raise UsageError(f"cannot read the run in {run}: {_one_line(error)}") from None
    if not len(history.recorded_steps):
        raise UsageError(
            f"{run} holds no recorded step yet ({len(history.steps['step'])} steps); poll the "
            "RunLog after the first recorded step"
        )
    try:
        page, diagnosis = _run_report(history, run)
    except ValueError as error:  # a run that recorded no layer with weights
        raise UsageError(f"cannot diagnose the run in {run}: {_one_line(error)}") from None
    out.write_text(page)
    steps = history.steps["step"]
    print(
        f"report of {run} ({len(steps)} steps, {len(history.recorded_steps)} recorded): "
        f"{diagnosis.verdict} -> {out}"
    )
    return 0


def _nonfinite_sentence(found) -> str:
    """Where a run first went non-finite, in words (`History.first_nonfinite`)."""
    where = {
        ("forward", "input"): f"the input of {found.name} was already non-finite in the "
        "forward pass (the data, or an operation outside the recorded modules, made it)",
        ("forward", "output"): f"{found.name} made a non-finite output from a finite input, "
        "in the forward pass",
        ("backward", "dL/d(output)"): f"the backward pass went non-finite at {found.name}'s "
        "output gradient (made by the backward pass of what uses that output next: the next "
        "recorded call, an operation that is not a recorded module, or the loss)",
        ("parameter", "gradient or weight"): f"the gradient or the weight of {found.name} was "
        "non-finite",
        ("forward", "loss"): "the loss was non-finite and no recorded call's output was (the "
        "loss function made it; or the step was not recorded, and no layer can be named)",
    }.get((found.direction, found.statistic), f"{found.direction} {found.statistic}")
    return f"Step {found.step}: {where}."


def _spike_rows(spikes) -> list[list[str]]:
    """One row per run of consecutive spikes alike in what spiked and what moved first."""
    groups: list[list] = []
    for spike in spikes:
        alike = (spike.statistics, spike.first_mover)
        if groups and groups[-1][1] == spike.step - 1 and groups[-1][2] == alike:
            groups[-1][1] = spike.step
        else:
            groups.append([spike.step, spike.step, alike])
    rows = []
    for first, last, (statistics, mover) in groups:
        steps = str(first) if first == last else f"{first} to {last} ({last - first + 1} steps)"
        moved = (
            "nothing moved (or too few recorded steps before it)"
            if mover is None
            else "{}: {} at step {}".format(*mover)
        )
        rows.append([steps, ", ".join(statistics) or "-", moved])
    return rows


def _run_report(history, run: Path):
    """The HTML page of a recorded run, and its diagnosis."""
    import html

    import numpy as np

    import jaxgrad
    from jaxgrad import plot
    from jaxgrad import report as pages
    from jaxgrad.recording import MOVE_FACTOR

    steps = np.asarray(history.steps["step"], np.int64)
    loss = np.asarray(history.steps["loss"], np.float64)
    recorded = history.recorded_steps
    skipped = steps[np.asarray(history.steps["skipped"], np.float64) > 0]
    spikes = history.spikes()
    found = history.first_nonfinite()
    diagnosis = jaxgrad.diagnose(history)
    last = int(recorded[-1])
    reason = diagnosis.message.removeprefix(f"{diagnosis.verdict}: ")

    def listed(values) -> str:
        return f"{len(values)}: {plot._steps_text(np.asarray(values))}" if len(values) else "none"

    summary = [
        ["steps", f"{int(steps[0])} to {int(steps[-1])} ({steps.size} steps)"],
        ["recorded steps (per-layer statistics)", listed(recorded)],
        ["loss, first and last step", f"{loss[0]:.4g} (step {steps[0]}), {loss[-1]:.4g} "
         f"(step {steps[-1]})"],
        ["model", f"{len(history.module_names)} module calls, {len(history.param_names)} "
         f"parameter rows, activation {history.activation or 'not known'}"],
        ["steps skipped by the guard", listed(skipped)],
        ["spikes flagged by the recorder", listed([spike.step for spike in spikes])],
        ["first non-finite value", "none" if found is None else
         f"step {found.step}: {found.name or '-'}, {found.direction}, {found.statistic}"],
    ]  # fmt: skip
    body = [
        f"<h1>jaxgrad run report: {html.escape(str(run))}</h1>",
        pages.html_table(["", ""], summary, text=True),
        "<h2>Verdict</h2>",
        f"<p><b>{html.escape(diagnosis.verdict)}</b>: {html.escape(reason)}</p>",
        f"<p>jaxgrad.diagnose(history) reads the last recorded step ({last}) and, for the "
        "stalled and died rules, every recorded step. Every rule it checked:</p>",
        pages.html_table(
            ["rule", "verdict", "finding", "cure"],
            [[f.rule, f.verdict, f.message, f.cure or "-"] for f in diagnosis.findings],
            text=True,
        ),
        "<h2>First non-finite value</h2>",
    ]
    if found is None:
        body.append("<p>None: every loss, norm and recorded statistic of the run is finite.</p>")
    else:
        body += [
            f"<p>{html.escape(_nonfinite_sentence(found))} Re-run that step's batch with "
            "jax.debug_nans, or jaxgrad.inspect on it, to drill down.</p>",
            pages.html_table(
                ["step", "where", "pass", "statistic"],
                [[str(found.step), found.name or "-", found.direction, found.statistic]],
                text=True,
            ),
        ]
    body.append("<h2>Spikes</h2>")
    if not spikes:
        body.append("<p>None: no loss or global norm rose above the recorder's threshold.</p>")
    else:
        body += [
            f"<p>The steps the recorder flagged (consecutive steps alike in one row), what "
            "rose there, and the per-layer statistic that first left its earlier range by a "
            f"factor {MOVE_FACTOR:g} (update norms tend to move before gradient norms).</p>",
            pages.html_table(
                ["steps", "what spiked", "moved first"], _spike_rows(spikes), text=True
            ),
        ]
    weights = [n for n in history.param_names if n.endswith((".kernel", ".embedding"))]
    figures = [
        (
            plot.run_norms(history),
            "loss and global norms",
            "The loss and the global gradient and update norms at every step; red circles: "
            "spikes, grey lines: steps the guard skipped, triangles: recorded steps.",
        ),
        (
            plot.run_heatmap(history, "grad_norm"),
            "gradient norm heatmap",
            "The gradient norm of every parameter row (forward order, first at the top) at "
            "every recorded step, log colour scale.",
        ),
        (
            plot.run_heatmap(history, "update_ratio"),
            "update ratio heatmap",
            "||update|| / ||W|| of every parameter row at every recorded step (a common rule "
            "of thumb puts healthy training near 1e-3: far below, the layer barely moves; "
            "near 1, it is rewritten each step).",
        ),
        (
            plot.run_profiles(history, "update_ratio", rows=weights or None),
            "update ratio profiles",
            "||update|| / ||W|| across depth at the first, middle and last recorded steps"
            + (" (weight matrices only)." if weights else "."),
        ),
    ]
    body.append("<h2>Figures</h2>")
    body += [pages.html_figure(figure, alt, caption) for figure, alt, caption in figures]
    return pages.html_page(f"jaxgrad run report: {run}", body), diagnosis


def _cmd_phase(args: argparse.Namespace) -> int:
    low, high = args.sigma_w2_range
    if not low < high:
        raise UsageError(f"--sigma-w2-range needs LOW < HIGH, got {low:g} {high:g}")
    out = None
    if args.out:
        if max(args.sigma_b2) <= 0:
            raise UsageError(
                "the phase diagram spans sigma_b2 from 0 to the largest --sigma-b2, which is 0; "
                "give one > 0 (e.g. --sigma-b2 0 0.3)"
            )
        out = _figure_path(args.out)

    import jax.numpy as jnp
    import numpy as np

    from jaxgrad import theory

    rows = []
    for b2 in args.sigma_b2:
        critical = float(theory.critical_sigma_w2(args.activation, b2))
        rows.append([f"{b2:g}", f"{critical:.5f}"])
    print(f"critical line of {args.activation} (chi1 = 1):")
    print(_table(["sigma_b2", "critical sigma_w2"], rows))
    if out is not None:
        from jaxgrad import plot

        w2 = jnp.linspace(low, high, 25)
        b2 = jnp.linspace(0.0, max(args.sigma_b2), 11)
        diagram = theory.phase_diagram(args.activation, w2, b2)
        critical = theory.critical_sigma_w2(args.activation, b2)
        plot.phase_diagram(diagram, out, critical_sigma_w2=np.asarray(critical))
        print(f"phase diagram -> {out}")
    return 0


def _cmd_coord(args: argparse.Namespace) -> int:
    from jaxgrad import plot, scaling
    from jaxgrad.scaling import config as coord_config

    with _refusing("bad coord configuration: "):
        config = coord_config.CoordConfig.from_toml(args.config)
    out = Path(args.out) if args.out else Path(args.config).with_suffix("")
    _writable_folder(out)
    print(
        f"coord: {config.parametrization}, {config.optimizer} at {config.learning_rate}, "
        f"widths {list(config.widths)}, depths {list(config.depths)}, {config.seeds} seeds, "
        f"{config.steps} steps -> {out}",
        flush=True,
    )
    points = out / "points"
    try:
        check = coord_config.run(
            config,
            progress=lambda w, d: _note(f"  width {w}, depth {d}"),
            out=points,
            log=_note,
        )
    except (ValueError, TypeError) as error:  # a folder or a model the config cannot have
        raise UsageError(_one_line(error)) from None
    except BaseException as error:
        if not _is_interrupt(error):
            raise
        done = _stored_points(points)
        total = len(config.widths) * len(config.depths)
        raise Interrupted(
            f"interrupted: {done} of {total} points saved in {points}; run the same command "
            "again to resume"
        ) from None
    check.to_frame().to_csv(out / "coord.csv", index=False)
    written = ["coord.csv"]
    for against, sizes in (("width", config.widths), ("depth", config.depths)):
        if len(sizes) < 2:
            continue
        table = scaling.slopes(check, against)
        table.to_frame().to_csv(out / f"slopes_{against}.csv", index=False)
        written.append(f"slopes_{against}.csv")
        for statistic in ("mean_abs", "change"):
            figure = f"{against}_{statistic}.png"
            plot.coord_check(check, statistic, against=against, path=out / figure)
            written.append(figure)
        lines = table.summary().splitlines()
        print(lines[0])
        print("\n".join(line for line in lines[1:] if " mean_abs " in line or " change " in line))
    if len(written) == 1:
        print("one width and one depth: no slope to take (give two or more of either)")
    else:  # the verdict over every step, as jaxgrad.diagnose(check) gives it
        import jaxgrad

        print(f"diagnose: {jaxgrad.diagnose(check).message}")
    # an earlier run into the same folder over more widths or depths left tables and figures
    # this one does not write: they would contradict coord.csv
    stale = [
        name
        for against in ("width", "depth")
        for name in (f"slopes_{against}.csv", f"{against}_mean_abs.png", f"{against}_change.png")
        if name not in written and (out / name).is_file()
    ]
    for name in stale:
        (out / name).unlink()
    removed = f" (removed {', '.join(stale)}, an earlier run's)" if stale else ""
    print(f"wrote {', '.join(written)} to {out}{removed}")
    return 0


def _cmd_spectrum(args: argparse.Namespace) -> int:
    out = _figure_path(args.out) if args.out else None

    import jax
    from flax import nnx

    from jaxgrad import jacobian, nn, theory

    width, depths = args.width, tuple(sorted(set(args.depth)))
    needed = 4 * (2 * max(depths) * width * (width + 1) + 8 * width * width + len(depths) * width)
    limit, what = _machine_memory()
    if needed > limit:
        raise UsageError(
            f"a depth-{max(depths)} network of width {width} and its Jacobian need about "
            f"{needed / 1e9:.3g} GB (depth x width^2 weights), more than {what} "
            f"({limit / 1e9:.3g} GB); make --depth or --width smaller"
        )
    with _refusing():
        if args.q_star is not None:
            sigma_w2, sigma_b2 = theory.critical_point_for_q_star(args.activation, args.q_star)
        else:
            sigma_w2, sigma_b2 = args.sigma_w2, args.sigma_b2
    if args.weights == "orthogonal":
        kernel_init = init.orthogonal(math.sqrt(sigma_w2))
    else:
        kernel_init = init.normal(math.sqrt(sigma_w2 / width))
    bias_init = init.normal(math.sqrt(sigma_b2)) if sigma_b2 > 0 else None
    model = nn.MLP(
        width,
        width,
        max(depths),
        activation=args.activation,
        kernel_init=kernel_init,
        bias_init=bias_init,
        rngs=nnx.Rngs(params=jax.random.key(args.seed)),
    )
    q = float(theory.q_star(args.activation, sigma_w2, sigma_b2))
    phi = activations.get(args.activation)
    x = phi(math.sqrt(q) * jax.random.normal(jax.random.key(args.seed + 1), (width,)))
    profile = jacobian.depth_profile(model, x, jax.random.key(args.seed), spectra_at=depths)
    summary = jax.device_get(jacobian.spectrum_summary(profile.spectra))
    rows = []
    for index, depth in enumerate(depths):
        predicted = theory.jacobian_spectrum(
            args.activation, sigma_w2, sigma_b2, depth, args.weights
        )
        rows.append(
            [
                str(depth),
                f"{float(summary.mean_sq[index]):.4g}",
                f"{float(summary.var_sq[index]):.4g}",
                f"{float(predicted.var_sq):.4g}",
                f"{float(summary.max[index]):.4g}",
                f"{float(summary.isometry_score[index]):.3f}",
            ]
        )
    print(
        f"{args.activation}, {args.weights} weights, width {width}, sigma_w2 {sigma_w2:.5g}, "
        f"sigma_b2 {sigma_b2:.3g} (q* = {q:.4g})"
    )
    print(_table(["depth", "mean s^2", "var s^2", "theory var", "max s", "isometry"], rows))
    if out is not None:
        from jaxgrad import plot

        label = (
            f"{args.activation}, {args.weights} weights, width {width}, "
            f"sigma_w2 = {sigma_w2:.4g}, sigma_b2 = {sigma_b2:.3g}"
        )
        plot.spectra_histograms({label: jax.device_get(profile)}, out)
        print(f"spectra at depth {', '.join(map(str, depths))} -> {out}")
    return 0


GAIN_PARAMETERS = {"leaky_relu": "negative_slope", "elu": "alpha"}
"""The activations `jaxgrad gain` takes a parameter for, and which parameter it is."""


def _cmd_gain(args: argparse.Namespace) -> int:
    import jax

    name = activations.name_of(args.name)
    parameter = GAIN_PARAMETERS.get(name)
    if args.param is not None and parameter is None:
        takes = " and ".join(f"{n} (its {p})" for n, p in GAIN_PARAMETERS.items())
        raise UsageError(f"{name} takes no parameter, got {args.param:g}; only {takes} take one")
    params = {parameter: args.param} if args.param is not None else {}
    with _refusing():
        phi = activations.get(name, **params)
    try:
        table = init.calculate_gain(name, args.param)
    except ValueError:
        table = None
    forward = init.computed_gain(phi, "forward")
    backward = init.computed_gain(phi, "backward")
    measured = float(init.empirical_gain(phi, jax.random.key(0)))
    given = f" ({parameter} {args.param:g})" if args.param is not None else ""
    if parameter is not None and args.param is None:
        default = _default_of(name, parameter)
        given = f" ({parameter} {default:g}, its default)"
    rows = [
        (
            "forward gain",
            f"{forward:.6f}",
            "use this to initialize: it keeps the signal's second moment E[h^2] from layer "
            "to layer (1/sqrt(E[phi(z)^2]), z ~ N(0, 1))",
        ),
        (
            "backward gain",
            f"{backward:.6f}",
            "keeps the gradient's second moment instead, with std gain / sqrt(fan_out) "
            "(1/sqrt(E[phi'(z)^2]))",
        ),
        (
            "PyTorch table",
            "-" if table is None else f"{table:.6f}",
            ("not in torch.nn.init.calculate_gain's table" if table is None else
             "torch.nn.init.calculate_gain, to match PyTorch")
            + " (tanh's 5/3 and selu's 3/4 there are conventions, not moments)",
        ),
        (
            "std ratio",
            f"{measured:.6f}",
            "a measurement, not an init gain: std(z)/std(phi(z)) over 100000 samples drops "
            "phi's mean, which the next layer's variance still carries (it equals the "
            "forward gain only when phi(z) has mean 0)",
        ),
    ]  # fmt: skip
    print(f"gains of {name}{given}, for weights drawn with std gain / sqrt(fan_in):")
    for label, value, text in rows:
        head = f"  {label:<14} {value:<9} "
        print(textwrap.fill(text, 92, initial_indent=head, subsequent_indent=" " * len(head)))
    return 0


def _default_of(name: str, parameter: str) -> float:
    """The default value of an activation's parameter (leaky_relu's slope: 0.01)."""
    import inspect

    return inspect.signature(activations.get(name)).parameters[parameter].default


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be in [0, {SEED_MAX}], got {value}")
    return value


def _activation_name(text: str) -> str:
    try:
        name = activations.name_of(text)
    except (ValueError, TypeError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if name == "rrelu":
        raise argparse.ArgumentTypeError(
            "rrelu draws a random slope per element and needs a PRNG key per call, so it has no "
            "fixed gain, mean-field theory or Jacobian; use leaky_relu with a fixed slope"
        )
    return text


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _nonnegative_float(text: str) -> float:
    value = _finite_float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _existing_file(text: str) -> str:
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file (e.g. coord.toml)")
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return text


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; every option's help ends with its default
    (unless it states the default itself, or the option is a flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default is None
            or action.default is False
            or action.default == argparse.SUPPRESS
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return text
        default = action.default
        if isinstance(default, list | tuple):
            default = " ".join(str(value) for value in default)
        return f"{text} (default: {str(default).replace('%', '%%')})"


def _version() -> str:
    from importlib import metadata

    import jaxgrad

    try:
        jax_version = metadata.version("jax")
    except metadata.PackageNotFoundError:  # pragma: no cover - jax is a dependency
        jax_version = "not installed"
    return f"jaxgrad {jaxgrad.__version__} (jax {jax_version}, Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    """The `jaxgrad` command's argument parser: one subcommand per command, each with
    its options, their help and defaults; the parsed namespace's `run` is the command.

    Returns:
        An `argparse.ArgumentParser`.

    Example:
        >>> from jaxgrad import cli
        >>> args = cli.build_parser().parse_args(["phase", "tanh", "--sigma-b2", "0.05"])
        >>> args.command, args.activation, args.sigma_b2, args.sigma_w2_range
        ('phase', 'tanh', [0.05], [1.0, 4.0])
    """
    parser = _Parser(
        prog="jaxgrad",
        description="See, measure and cure vanishing and exploding gradients.",
        formatter_class=_Formatter,
        epilog=EXAMPLES,
    )
    parser.add_argument(
        "--version", action="version", version=_version(), help="print the version and exit"
    )
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND"
    )

    def command(name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=textwrap.fill(description, 88),
            epilog=epilog,
            formatter_class=_Formatter,
        )

    demo = command(
        "demo",
        "the main results on built-in defaults, as a report",
        "Seed experiment, phase diagram, gradient sweep, Jacobian spectra and remedies on "
        "built-in defaults; writes report.html and report.md and prints each section.",
        "example:\n  jaxgrad demo --out jaxgrad-out",
    )
    demo.add_argument("--out", default="jaxgrad-out", help="the report's folder")
    demo.set_defaults(run=_cmd_demo)

    sweep = command(
        "sweep",
        "run a sweep from a TOML file",
        "Probe a grid of random networks and write one row per (network, depth, layer) to "
        "a results folder, a chunk at a time. Ctrl-C keeps every chunk written; the same "
        "command resumes.",
        "example:\n  jaxgrad sweep sweep.toml --out runs/tanh --devices 2\n\n"
        'sweep.toml:\n  depth = [10, 50, 100]\n  activation = ["tanh"]\n'
        "  sigma_w2 = [1.0, 1.5, 2.0, 3.0]\n  sigma_b2 = 0.05\n  seed = [0, 1]\n"
        '  memory_budget = "1GB"\n\n'
        "A rerun into the same --out resumes; one that adds seeds or sigma values extends "
        "it;\none with another batch_size, depth list or dtype is refused. Without a "
        "terminal\n(output to a log), progress is written as plain lines.",
    )
    sweep.add_argument("config", type=_existing_file, help="a TOML file of Sweep fields")
    sweep.add_argument(
        "--out", help="the results folder (default: the config's path without .toml)"
    )
    sweep.add_argument(
        "--devices",
        type=_positive,
        default=None,
        help="local devices to shard each chunk over (default: all of them)",
    )
    sweep.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar, or no progress lines without a terminal (default: shown)",
    )
    sweep.set_defaults(run=_cmd_sweep)

    plot = command(
        "plot",
        "figures from a sweep's results",
        "Draw a sweep's results: layer profiles (activation std and output-gradient norm "
        "against layer, one curve per configuration) or a heatmap (log10 of the gradient "
        "ratio between the first and last layer, over sigma_w2 and depth, for one "
        "configuration). Filters choose what to draw; the command says what it drew, and "
        "refuses with the values left when more remains than one figure holds "
        f"({MAX_CURVES} curves, or one heatmap).",
        "examples:\n  jaxgrad plot runs/tanh\n"
        "  jaxgrad plot runs/tanh --sigma-w2 1 1.5 2 --depth 50\n"
        "  jaxgrad plot runs/grid --kind heatmap --activation relu --init orthogonal "
        "--out heat.png",
    )
    plot.add_argument("results", help="a folder written by `jaxgrad sweep`")
    plot.add_argument(
        "--kind",
        choices=("profiles", "heatmap"),
        default="profiles",
        help="layer profiles of each configuration, or the gradient-ratio heatmap",
    )
    plot.add_argument(
        "--out", help="the figure; .png is added when it has no suffix (default: RESULTS/KIND.png)"
    )
    filters = plot.add_argument_group(
        "filters", "keep only the results with these values (several values: any of them)"
    )
    filter_help = {
        "activation": "activation names",
        "init": "weight inits (gaussian, orthogonal)",
        "width": "widths",
        "norm": "normalizations (none, batch, layer)",
        "residual": "residual or not (true, false)",
        "dtype": "dtypes",
        "sigma_w2": "weight variances",
        "sigma_b2": "bias variances",
        "seed": "seeds (default: all, profiles draw the median over seeds at each layer, "
        "the heatmap the mean ratio)",
        "depth": "depths (default: profiles draw the deepest, the heatmap all)",
    }
    for column in PLOT_AXES:
        text = filter_help[column]
        filters.add_argument(
            _flag(column),
            dest=column,
            nargs="+",
            metavar="VALUE",
            default=None,
            help=text if "default" in text else f"{text} (default: all)",
        )
    plot.set_defaults(run=_cmd_plot)

    gain = command(
        "gain",
        "the gains of an activation, and which to use",
        "The gains of an activation for initializing weights with std gain / sqrt(fan_in): "
        "the forward gain (use this), the backward gain, PyTorch's table, and the measured "
        "std ratio (a diagnostic, not an init gain).",
        "examples:\n  jaxgrad gain tanh\n  jaxgrad gain leaky_relu 0.2\n  jaxgrad gain elu 0.5",
    )
    gain.add_argument("name", type=_activation_name, help="an activation name")
    gain.add_argument(
        "param",
        type=_finite_float,
        nargs="?",
        default=None,
        help="leaky_relu's negative slope (default 0.01) or elu's alpha (default 1); the "
        "other activations take none",
    )
    gain.set_defaults(run=_cmd_gain)

    report = command(
        "report",
        "an HTML report of a recorded training run",
        "A self-contained HTML page of a run written by jaxgrad.recording.RunLog: summary, "
        "verdict and findings with cures, the first non-finite value, spikes and what moved "
        "first, and figures.",
        "examples:\n  jaxgrad report runs/train\n  jaxgrad report runs/train --out train.html",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by RunLog")
    report.add_argument(
        "--out",
        help="the HTML file; .html is added when it has no suffix (default: RUN_DIR/report.html)",
    )
    report.set_defaults(run=_cmd_report)

    phase = command(
        "phase",
        "critical line and phase diagram",
        "Mean-field theory (Poole et al. 2016, Schoenholz et al. 2017): the critical "
        "sigma_w2 (chi1 = 1, the edge of chaos) for each sigma_b2, and with --out the phase "
        "diagram over sigma_w2 and sigma_b2.",
        "examples:\n  jaxgrad phase tanh\n"
        "  jaxgrad phase erf --sigma-b2 0 0.05 0.1 --out phase.png",
    )
    phase.add_argument("activation", type=_activation_name, help="an activation name")
    phase.add_argument(
        "--sigma-b2",
        type=_nonnegative_float,
        nargs="+",
        default=[0.0, 0.01, 0.05, 0.1, 0.2, 0.3],
        help="bias variances of the critical line; the diagram spans 0 to the largest",
    )
    phase.add_argument(
        "--sigma-w2-range",
        type=_nonnegative_float,
        nargs=2,
        default=[1.0, 4.0],
        metavar=("LOW", "HIGH"),
        help="the diagram's sigma_w2 axis (LOW < HIGH)",
    )
    phase.add_argument(
        "--out",
        help="write the phase diagram here; .png is added when the name has no suffix "
        "(default: no figure)",
    )
    phase.set_defaults(run=_cmd_phase)

    spectrum = command(
        "spectrum",
        "Jacobian spectra against depth",
        "Singular values of the input-output Jacobian d h_L / d h_0 of a random MLP at "
        "each depth, beside free-probability theory's variance (Pennington, Schoenholz and "
        "Ganguli 2017); with --out, their histograms.",
        "examples:\n  jaxgrad spectrum tanh --q-star 0.015625\n"
        "  jaxgrad spectrum relu --sigma-w2 2 --weights gaussian --out relu.png",
    )
    spectrum.add_argument("activation", type=_activation_name, help="an activation name")
    spectrum.add_argument(
        "--weights",
        choices=("orthogonal", "gaussian"),
        default="orthogonal",
        help="the weight matrices' distribution",
    )
    spectrum.add_argument(
        "--sigma-w2", type=_nonnegative_float, default=1.0, help="the weight variance"
    )
    spectrum.add_argument(
        "--sigma-b2", type=_nonnegative_float, default=0.0, help="the bias variance"
    )
    spectrum.add_argument(
        "--q-star",
        type=_positive_float,
        default=None,
        help="use instead the critical point (chi1 = 1) whose fixed-point length is this q* "
        "(> 0) (default: --sigma-w2 and --sigma-b2 as given)",
    )
    spectrum.add_argument("--width", type=_positive, default=200, help="the hidden width")
    spectrum.add_argument(
        "--depth", type=_positive, nargs="+", default=[2, 8, 32], help="the depths to measure"
    )
    spectrum.add_argument(
        "--seed", type=_seed, default=0, help=f"the PRNG seed, in [0, {SEED_MAX}]"
    )
    spectrum.add_argument(
        "--out",
        help="write the spectra's histograms here; .png is added when the name has no "
        "suffix (default: no figure)",
    )
    spectrum.set_defaults(run=_cmd_spectrum)

    coord = command(
        "coord",
        "a coordinate check over width and depth",
        "Train a model family a few steps at each width (and depth) and seed, and record each "
        "layer's output size, its change and its updates; write coord.csv, the slopes against "
        "log width (and log depth) with verdicts, and figures as mup draws them. Each point "
        "is saved in OUT/points as it is computed: after Ctrl-C or a kill, the same command "
        "resumes.",
        "example:\n  jaxgrad coord coord.toml --out runs/coord\n\ncoord.toml:\n"
        '  parametrization = "mup"   # sp, mup, depth_mup\n  optimizer = "adam"\n'
        "  widths = [64, 128, 256, 512]\n  depths = [2]\n  seeds = 3\n  steps = 3",
    )
    coord.add_argument("config", type=_existing_file, help="a TOML file of CoordConfig fields")
    coord.add_argument("--out", help="the output folder (default: the config's path without .toml)")
    coord.set_defaults(run=_cmd_coord)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; return its exit status (argparse's own errors exit 2 themselves).

    Args:
        argv: the arguments after `jaxgrad`; default `sys.argv[1:]`.

    Returns:
        0 on success, 2 for bad input refused before any computation (one line on stderr),
        130 after Ctrl-C.

    Example:
        >>> from jaxgrad import cli
        >>> status = cli.main(["gain", "tanh"])  # doctest: +ELLIPSIS
        gains of tanh, for weights drawn with std gain / sqrt(fan_in):
          forward gain   1.592537  use this to initialize: ...
        >>> status
        0
    """
    command = "jaxgrad"
    try:
        with _noting_ctrl_c():
            args = build_parser().parse_args(argv)
            command = f"jaxgrad {args.command}"
            return args.run(args)
    except UsageError as error:
        print(f"{command}: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as interrupted:
        print(f"{command}: {interrupted}", file=sys.stderr)
        return 130
    except Exception as error:
        if not _is_interrupt(error):
            raise
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The `jaxgrad` command's entry point: `main`, then exit with its status.

    After Ctrl-C the process leaves at once (`os._exit`, the standard streams flushed): the
    interrupted command may have left work running in JAX's own threads (a program being
    compiled), and tearing the interpreter down under it crashed (exit 139, a segmentation
    fault, after the 'interrupted' line). What was saved is on disk by then.

    Example:
        >>> import sys
        >>> from jaxgrad import cli
        >>> argv, sys.argv = sys.argv, ["jaxgrad", "--version"]  # as the shell calls it
        >>> try:
        ...     cli.run()
        ... except SystemExit as exit:
        ...     print("status", exit.code)
        ... finally:
        ...     sys.argv = argv
        jaxgrad ...
        status 0
    """
    status = main()
    if status == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
