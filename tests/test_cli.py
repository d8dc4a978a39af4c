"""Tests for the `jaxgrad` command: exit codes and messages, and each subcommand's output."""

import argparse
import base64
import html
import importlib.metadata
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest
from flax import nnx

import jaxgrad
from jaxgrad import cli, optim, recording, sweep, theory
from jaxgrad.store import ResultStore

SWEEP_TOML = 'depth = [3, 6]\nwidth = 16\nactivation = ["tanh"]\nsigma_w2 = [1.0, 2.0]\n'
UNWRITABLE = "/sys/jaxgrad-test-out"
"""A folder nobody may create, root included (sysfs refuses new entries)."""


def exit_code(argv):
    """main's return value, or the status argparse exits with."""
    try:
        return cli.main(argv)
    except SystemExit as exit_info:
        return exit_info.code


def toml(text):
    return {"bad.toml": text}


RUN_STUB = {"run/history.json": "{}"}
"""A run folder whose history.json names nothing: refused when read, after --out."""
EMPTY_RUN = {
    "run/history.json": json.dumps(
        {
            key: []
            for key in ("module_names", "module_types", "param_names", "param_owners",
                        "param_shapes", "module_fields", "param_fields")
        }
        | {"activation": None}
    )
}  # fmt: skip
"""A run polled before its first step: names and no parts."""


# Every bad invocation: (argv, a fragment of the one line on stderr, files to write first).
# "results" is a folder holding a sweep's manifest (batch_size 4) and no parts.
BAD_INVOCATIONS = [
    # sweep: the configuration
    (["sweep", "missing.toml"], "no such file: missing.toml", {}),
    (["coord", "."], ". is a folder; give a file (e.g. coord.toml)", {}),
    (["sweep", "bad.toml"], "depth must be ints >= 1, got 0", toml("depth = [0]\n")),
    (["sweep", "bad.toml"], "unknown activation 'foo'", toml('activation = "foo"\n')),
    (["sweep", "bad.toml"], "is not valid TOML", toml("depth = [\n")),
    (["sweep", "bad.toml"], "unknown sweep keys ['depths']", toml("depths = [3]\n")),
    (["sweep", "bad.toml"], "sweep must be a [sweep] table of fields", toml("sweep = 3\n")),
    (
        ["sweep", "bad.toml"],
        "keys ['depth'] sit beside the [sweep] table",
        toml("depth = [3]\n[sweep]\nwidth = 8\n"),
    ),
    (["sweep", "bad.toml"], "sigma_w2 lists 1.0 more than once", toml("sigma_w2 = [1, 1]\n")),
    (["sweep", "bad.toml"], "theory must be true or false, got 'no'", toml('theory = "no"\n')),
    (["sweep", "bad.toml"], "residual must be true or false", toml('residual = "maybe"\n')),
    (["sweep", "bad.toml"], "memory_budget must be an int", toml("memory_budget = true\n")),
    (["sweep", "bad.toml"], "'1 parsec' is not a size", toml('memory_budget = "1 parsec"\n')),
    (["sweep", "bad.toml"], "seed must be ints in [0, 4294967295]", toml(f"seed = {2**64}\n")),
    (["sweep", "bad.toml"], "seed must be ints in [0, 4294967295]", toml("seed = -1\n")),
    (["sweep", "bad.toml"], "'rrelu' draws random slopes", toml('activation = "rrelu"\n')),
    (
        ["sweep", "bad.toml"],
        "batch_size 100000000 (float32) needs about",
        toml("batch_size = 100000000\ndepth = [10]\nwidth = 256\n"),
    ),
    # sweep: devices and the results folder
    (["sweep", "ok.toml", "--devices", "2"], "--devices 2 but only 1 local device exists", {}),
    (["sweep", "ok.toml", "--devices", "0"], "argument --devices: must be >= 1, got 0", {}),
    (["sweep", "ok.toml", "--devices", "-1"], "argument --devices: must be >= 1, got -1", {}),
    (["sweep", "ok.toml", "--out", "afile"], "--out afile is a file, not a folder", {}),
    (["sweep", "ok.toml", "--out", "afile/sub"], "--out afile/sub is under afile", {}),
    (["sweep", "ok.toml", "--out", UNWRITABLE], f"cannot write to --out {UNWRITABLE}", {}),
    (
        ["sweep", "ok.toml", "--out", "results"],
        "results holds a different sweep (batch_size 4 there, 16 here; depth [3] there, [3, 6] "
        "here); use another results folder (--out)",
        {},
    ),
    (
        ["sweep", "ok.toml", "--out", "notes"],
        "notes is not empty (mine.txt) and holds no manifest.json",
        {"notes/mine.txt": "mine"},
    ),
    # demo
    (["demo", "--out", "afile"], "--out afile is a file, not a folder", {}),
    (["demo", "--out", "afile/sub"], "--out afile/sub is under afile, which is a file", {}),
    (["demo", "--out", UNWRITABLE], f"cannot write to --out {UNWRITABLE}", {}),
    # plot
    (["plot", "nowhere"], "nowhere holds no jaxgrad results (no manifest.json)", {}),
    (["plot", "afile"], "afile holds no jaxgrad results", {}),
    (["plot", "results"], "results holds no sweep results yet (0 of 2 networks)", {}),
    (["plot", "results", "--out", "p.txt"], "unknown figure format '.txt'", {}),
    (["plot", "results", "--out", "afile/p.png"], "its folder afile is a file, not a folder", {}),
    (["plot", "results", "--out", f"{UNWRITABLE}/p.png"], "cannot write to --out", {}),
    (["plot", "results", "--out", "fig.png"], "--out fig.png is a folder", {"fig.png/x": ""}),
    (["plot", "results", "--kind", "bogus"], "invalid choice: 'bogus'", {}),
    (["plot", "results", "--width"], "argument --width: expected at least one argument", {}),
    # gain
    (["gain", "relux"], "unknown activation 'relux'", {}),
    (["gain", "rrelu"], "rrelu draws a random slope per element and needs a PRNG key", {}),
    (["gain", "leaky_relu", "nan"], "must be a finite number, got nan", {}),
    (["gain", "leaky_relu", "inf"], "must be a finite number, got inf", {}),
    (["gain", "leaky_relu", "steep"], "expected a number, got 'steep'", {}),
    (["gain", "tanh", "0.2"], "tanh takes no parameter, got 0.2; only leaky_relu (its", {}),
    (["gain", "relu", "0.3"], "relu takes no parameter, got 0.3; only leaky_relu (its", {}),
    # phase
    (["phase", "rrelu"], "rrelu draws a random slope", {}),
    (["phase", "tanh", "--sigma-b2", "-1"], "must be a finite number >= 0", {}),
    (["phase", "tanh", "--sigma-w2-range", "4", "1"], "needs LOW < HIGH, got 4 1", {}),
    (["phase", "tanh", "--sigma-w2-range", "2", "2"], "needs LOW < HIGH, got 2 2", {}),
    (["phase", "tanh", "--sigma-b2", "0", "--out", "p.png"], "largest --sigma-b2, which is 0", {}),
    (["phase", "tanh", "--out", "p.txt"], "unknown figure format '.txt'", {}),
    (["phase", "tanh", "--out", "afile/p.png"], "its folder afile is a file", {}),
    (["phase", "tanh", "--out", f"{UNWRITABLE}/p.png"], "cannot write to --out", {}),
    # spectrum
    (["spectrum", "rrelu"], "rrelu draws a random slope", {}),
    (["spectrum", "tanh", "--depth", "0"], "must be >= 1, got 0", {}),
    (["spectrum", "tanh", "--q-star", "0"], "--q-star: must be a finite number > 0, got 0", {}),
    (["spectrum", "tanh", "--q-star", "nan"], "must be a finite number, got nan", {}),
    (["spectrum", "tanh", "--sigma-w2", "inf"], "must be a finite number, got inf", {}),
    (["spectrum", "tanh", "--seed", str(2**70)], "--seed: must be in [0, 4294967294]", {}),
    (["spectrum", "tanh", "--seed", "-1"], "--seed: must be in [0, 4294967294], got -1", {}),
    (["spectrum", "tanh", "--depth", "10000000"], "need about 3.22e+03 GB (depth x width^2", {}),
    (["spectrum", "tanh", "--out", "s.txt"], "unknown figure format '.txt'", {}),
    (["spectrum", "tanh", "--out", "afile/s.png"], "its folder afile is a file", {}),
    # report
    (["report", "nowhere"], "nowhere holds no recorded run (no history.json); give a folder", {}),
    (["report", "afile"], "afile holds no recorded run (no history.json)", {}),
    (["report", "results"], "results holds no recorded run (no history.json)", {}),
    (["report", "run"], "cannot read the run in run: Expecting", {"run/history.json": "{"}),
    (["report", "run"], "cannot read the run in run: 'module_names' is missing", RUN_STUB),
    (["report", "run"], "run holds no recorded step yet (0 steps); poll the RunLog", EMPTY_RUN),
    (["report", "run", "--out", "r.txt"], "not '.txt'; end the name with .html", RUN_STUB),
    (["report", "run", "--out", "afile/r.html"], "its folder afile is a file", RUN_STUB),
    (["report", "run", "--out", f"{UNWRITABLE}/r.html"], "cannot write to --out", RUN_STUB),
    (
        ["report", "run", "--out", "adir"],
        "--out adir.html is a folder",
        {**RUN_STUB, "adir.html/x": ""},
    ),
    (["report"], "the following arguments are required: RUN_DIR", {}),
    (["frobnicate"], "invalid choice", {}),
    ([], "the following arguments are required: COMMAND", {}),
]


@pytest.mark.parametrize(
    ("argv", "message", "files"),
    BAD_INVOCATIONS,
    ids=[" ".join(argv) + f" [{i}]" for i, (argv, _, _) in enumerate(BAD_INVOCATIONS)],
)
def test_bad_invocation_exits_2_with_one_line(argv, message, files, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a file")
    (tmp_path / "ok.toml").write_text(SWEEP_TOML)
    results = sweep.Sweep(depth=3, width=16, sigma_w2=[1.0, 2.0], batch_size=4)
    ResultStore.for_sweep(tmp_path / "results", results.identity(), results.grid())
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    sweep._chunk_program.cache_clear()
    start = time.perf_counter()
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert err.startswith("jaxgrad")
    assert sweep._chunk_program.cache_info().misses == 0, "refused before any compute"
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "p.png").exists()


@pytest.mark.slow
def test_sweep_then_plot(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(SWEEP_TOML)
    out = tmp_path / "results"
    assert cli.main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "sweep: 2 networks in 1 program, 1 chunks on 1 device; 18 rows" in printed
    assert f"2 networks, 18 rows in {out}" in printed
    frame = ResultStore(out).read()
    assert len(frame) == 2 * (3 + 6)
    assert cli.main(["plot", str(out)]) == 0
    assert cli.main(["plot", str(out), "--kind", "heatmap", "--out", str(tmp_path / "h.png")]) == 0
    assert (out / "profiles.png").stat().st_size > 1000
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A name without a suffix gets .png, and the message names the file written.
    assert cli.main(["plot", str(out), "--out", str(tmp_path / "named")]) == 0
    assert f"-> {tmp_path / 'named.png'}" in capsys.readouterr().out
    assert (tmp_path / "named.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "named").exists()
    assert cli.main(["plot", str(out), "--out", str(tmp_path / "vector.svg")]) == 0
    assert (tmp_path / "vector.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.slow
def test_plot_draws_each_configuration_of_an_extended_folder(tmp_path, capsys):
    """Two runs into one folder: the second adds a width and a seed. Plot reads the
    manifest's networks, one curve per configuration (it used to crash on repeated layers)."""
    out = tmp_path / "results"
    first = tmp_path / "first.toml"
    first.write_text(SWEEP_TOML)
    wider = tmp_path / "wider.toml"
    wider.write_text(SWEEP_TOML.replace("width = 16", "width = [8, 16]") + "seed = [0, 1]\n")
    assert cli.main(["sweep", str(first), "--out", str(out), "--no-progress"]) == 0
    assert cli.main(["sweep", str(wider), "--out", str(out), "--no-progress"]) == 0
    assert "resuming: 2 of 8 networks already in" in capsys.readouterr().err
    frame = ResultStore(out).read()
    assert len(frame) == 8 * (3 + 6)
    assert not frame.duplicated(["seed", "width", "sigma_w2", "depth", "layer"]).any()
    assert cli.main(["plot", str(out)]) == 0
    assert "layer profiles of 4 configurations (width 8, 16; sigma_w2 1, 2)" in (
        capsys.readouterr().out
    )
    assert cli.main(["plot", str(out), "--kind", "heatmap"]) == 2
    assert capsys.readouterr().err == (
        "jaxgrad plot: error: a heatmap draws sigma_w2 against depth for one configuration, "
        "and 2 remain (width 8, 16); choose one with --width\n"
    )
    assert cli.main(["plot", str(out), "--kind", "heatmap", "--width", "8"]) == 0
    assert "heatmap of activation = tanh, init = gaussian, width = 8," in capsys.readouterr().out


PLOT_TOML = (
    'depth = [2, 4]\nwidth = 8\nactivation = ["tanh", "relu"]\n'
    "sigma_w2 = [1.0, 1.5, 2.0, 3.0, 4.0, 5.0]\nseed = [0, 1]\nbatch_size = 4\ntheory = false\n"
)


@pytest.fixture(scope="module")
def plot_results(tmp_path_factory):
    """A results folder of 24 + 6 networks: tanh and relu at six sigma_w2 and seeds 0 and 1,
    then seed 2 of tanh alone (a second run into the same folder)."""
    folder = tmp_path_factory.mktemp("plot")
    (folder / "a.toml").write_text(PLOT_TOML)
    (folder / "b.toml").write_text(
        PLOT_TOML.replace('["tanh", "relu"]', '["tanh"]').replace("[0, 1]", "[2]")
    )
    out = folder / "results"
    for name in ("a.toml", "b.toml"):
        assert cli.main(["sweep", str(folder / name), "--out", str(out), "--no-progress"]) == 0
    return out, ResultStore(out).read()


def capture(monkeypatch, name):
    """Wrap plot.<name> so that the test sees every figure the command drew."""
    from jaxgrad import plot

    drawn = []
    original = getattr(plot, name)

    def wrapper(*args, **kwargs):
        drawn.append(original(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(plot, name, wrapper)
    return drawn


PLOT_REFUSALS = [
    (
        [],
        "12 configurations remain, more than the 10 curves one figure holds (activation relu, "
        "tanh; sigma_w2 1, 1.5, 2, 3, 4, 5); choose with --activation or --sigma-w2",
    ),
    (
        ["--kind", "heatmap"],
        "a heatmap draws sigma_w2 against depth for one configuration, and 2 remain "
        "(activation relu, tanh); choose one with --activation",
    ),
    (["--width", "32"], "--width 32: the results hold no width 32; they hold width 8"),
    (["--activation", "gelu"], "--activation gelu: the results hold no activation gelu; they "
     "hold activation relu, tanh"),
    (["--residual", "maybe"], "--residual maybe: the results hold no residual maybe; they hold "
     "residual false"),
    (
        ["--activation", "relu", "--seed", "2"],
        "--seed 2: no results have seed 2 together with the other filters (those leave seed 0, "
        "1)",
    ),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "message"), PLOT_REFUSALS)
def test_plot_refuses_more_than_a_figure_and_unknown_values(plot_results, capsys, argv, message):
    out, _ = plot_results
    assert exit_code(["plot", str(out), *argv, "--out", str(out / "never.png")]) == 2
    assert capsys.readouterr().err == f"jaxgrad plot: error: {message}\n"
    assert not (out / "never.png").exists()


@pytest.mark.slow
def test_plot_profiles_draw_the_median_over_seeds_and_say_so(plot_results, capsys, monkeypatch):
    out, frame = plot_results
    drawn = capture(monkeypatch, "layer_profiles")
    argv = ["plot", str(out), "--activation", "TANH", "--sigma-w2", "1", "3.0", "--out"]
    assert cli.main([*argv, str(out / "p.png")]) == 0
    assert capsys.readouterr().out == (
        "layer profiles of 2 configurations (sigma_w2 1, 3), activation = tanh, init = "
        "gaussian, width = 8, norm = none, residual = false, dtype = float32, sigma_b2 = 0, "
        "depth 4 (the deepest of 2, 4; --depth chooses), median over 3 seeds (0, 1, 2) -> "
        f"{out / 'p.png'}\n"
    )
    (figure,) = drawn
    std_panel, grad_panel = figure.axes
    assert [t.get_text() for t in std_panel.get_legend().get_texts()] == [
        "sigma_w2 = 1",
        "sigma_w2 = 3",
    ]
    for line, sigma_w2 in zip(std_panel.get_lines(), (1.0, 3.0), strict=True):
        rows = frame[(frame.activation == "tanh") & (frame.sigma_w2 == sigma_w2)]
        rows = rows[rows.depth == 4]
        per_seed = np.stack([rows[rows.seed == s].sort_values("layer").act_std for s in (0, 1, 2)])
        np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3, 4])
        np.testing.assert_allclose(line.get_ydata(), np.median(per_seed, axis=0), rtol=1e-6)
    assert np.allclose([line.get_ydata()[-1] for line in grad_panel.get_lines()], 1.0)
    assert "median over 3 seeds" in figure.get_suptitle()
    assert (out / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # one seed and one depth chosen: relu's six sigma_w2 at depth 2
    assert cli.main(["plot", str(out), "--activation", "relu", "--seed", "1", "--depth", "2"]) == 0
    printed = capsys.readouterr().out
    assert "6 configurations (sigma_w2 1, 1.5, 2, 3, 4, 5)" in printed
    assert ", depth 2, median over seed 1 -> " in printed
    line = drawn[-1].axes[0].get_lines()[1]
    rows = frame[(frame.activation == "relu") & (frame.sigma_w2 == 1.5) & (frame.seed == 1)]
    np.testing.assert_allclose(line.get_ydata(), rows[rows.depth == 2].act_std, rtol=1e-6)


@pytest.mark.slow
def test_plot_heatmap_of_one_configuration(plot_results, capsys, monkeypatch):
    out, frame = plot_results
    drawn = capture(monkeypatch, "gradient_heatmap")
    assert cli.main(["plot", str(out), "--kind", "heatmap", "--activation", "relu"]) == 0
    assert capsys.readouterr().out == (
        "heatmap of activation = relu, init = gaussian, width = 8, norm = none, residual = "
        "false, dtype = float32, sigma_b2 = 0 (sigma_w2 1, 1.5, 2, 3, 4, 5 x depth 2, 4; mean "
        f"over 2 seeds (0, 1)) -> {out / 'heatmap.png'}\n"
    )
    (figure,) = drawn
    cells = figure.axes[0].collections[0].get_array()
    relu = frame[frame.activation == "relu"]
    for row, depth in enumerate((2, 4)):
        for column, sigma_w2 in enumerate((1.0, 1.5, 2.0, 3.0, 4.0, 5.0)):
            ratios = []
            for seed in (0, 1):
                rows = relu[(relu.depth == depth) & (relu.sigma_w2 == sigma_w2)]
                rows = rows[rows.seed == seed].set_index("layer").act_grad_norm
                ratios.append(rows[1] / rows[depth])
            assert cells[row, column] == pytest.approx(np.log10(np.mean(ratios)), abs=1e-6)
    # theory = false: no xi_c, so no 6 xi_c curve and no legend entry for one
    assert figure.axes[0].get_lines() == []
    assert figure.axes[0].get_legend() is None


def test_progress_goes_to_a_log_as_plain_lines(tmp_path, capsys, monkeypatch):
    """stderr is not a terminal here (as in a log file): progress is written as lines, at
    most every sweep.PROGRESS_SECONDS (0 here: a line per chunk), and a resumed run counts
    from what was already there."""
    monkeypatch.setattr(sweep, "PROGRESS_SECONDS", 0.0)
    config = tmp_path / "run.toml"
    toml = SWEEP_TOML.replace("[1.0, 2.0]", "[1.0, 2.0, 3.0]") + "memory_budget = 1\n"
    config.write_text(toml)  # three networks, one per chunk
    out = tmp_path / "results"
    assert cli.main(["sweep", str(config), "--out", str(out)]) == 0
    lines = capsys.readouterr().err.splitlines()
    pattern = r"sweep: {} of {} networks \({}%\), \d+ s{}"
    left = r", about \d+ s left"  # from the chunks after the first (its time is compiling)
    assert len(lines) == 3, lines
    assert re.fullmatch(pattern.format(1, 3, 33, ""), lines[0]), lines
    assert re.fullmatch(pattern.format(2, 3, 66, left), lines[1]), lines
    assert re.fullmatch(pattern.format(3, 3, 100, ""), lines[2]), lines

    config.write_text(toml + "seed = [0, 1]\n")
    assert cli.main(["sweep", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    # the summary counts networks, and says how many this run computed
    assert printed.out.splitlines()[-1] == (
        f"6 networks (3 computed now, 3 already there), {6 * (3 + 6)} rows in {out}"
    )
    lines = printed.err.splitlines()
    assert lines[0] == f"resuming: 3 of 6 networks already in {out}"
    assert re.fullmatch(pattern.format(4, 6, 66, ""), lines[1]), lines
    assert re.fullmatch(pattern.format(5, 6, 83, left), lines[2]), lines
    assert re.fullmatch(pattern.format(6, 6, 100, ""), lines[3]), lines
    assert len(lines) == 4

    # --no-progress: nothing between the first and the last line
    config.write_text(toml + "seed = [0, 1, 2]\n")
    assert cli.main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().err == f"resuming: 6 of 9 networks already in {out}\n"


def test_a_damaged_part_is_set_aside_and_recomputed(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(SWEEP_TOML + "memory_budget = 1\n")  # one network per part
    out = tmp_path / "results"
    assert cli.main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    before = ResultStore(out).read()
    part = sorted((out / "parts").glob("*.parquet"))[0]
    part.write_bytes(b"garbage")
    (out / "parts" / "copy.parquet").write_bytes(b"a stray file")
    capsys.readouterr()
    assert cli.main(["plot", str(out)]) == 0
    err = sorted(capsys.readouterr().err.splitlines())
    assert len(err) == 3
    assert err[0].startswith(f"{out} holds 1 of the 2 networks of its sweep; drawing those")
    assert err[1] == "ignoring parts/copy.parquet: not a jaxgrad part (its name is not a part id)"
    assert err[2].startswith(f"moved damaged part parts/{part.name} to parts/damaged/")
    assert cli.main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    assert f"resuming: 1 of 2 networks already in {out}" in capsys.readouterr().err
    after = ResultStore(out, log=lambda _: None).read()
    key = ["sigma_w2", "depth", "layer"]
    pd.testing.assert_frame_equal(
        after.sort_values(key).reset_index(drop=True),
        before.sort_values(key).reset_index(drop=True),
    )


def mean_square(model, batch):
    return jnp.mean((model(batch[0]) - batch[1]) ** 2)


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    """A run recorded as a user records one: a small MLP under SGD with a learning rate far
    too small (its updates stall), a batch scaled 30 times at step 5 (a spike) and a nan
    input at step 7 (the guard skips the step), polled into a RunLog as it goes."""
    model = nnx.Sequential(
        nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(8, 1, rngs=nnx.Rngs(1))
    )
    x = jax.random.normal(jax.random.key(0), (16, 4))
    y = x.sum(axis=1, keepdims=True)
    optimizer = nnx.Optimizer(model, optim.guard(optax.sgd(1e-9)), wrt=nnx.Param)
    recorder = recording.Recorder(
        model, mean_square, (x, y), every=2, spike_warmup=3, spike_factor=5.0
    )

    @nnx.jit
    def step(model, optimizer, recorder, batch):
        loss, grads = recorder.value_and_grad(model, batch)
        recorder.update(model, optimizer, optimizer.update(model, grads))
        return loss

    folder = tmp_path_factory.mktemp("runs") / "run"
    log = recording.RunLog(folder)
    for index in range(10):
        batch = {5: (30 * x, 30 * y), 7: (x.at[0, 0].set(jnp.nan), y)}.get(index, (x, y))
        step(model, optimizer, recorder, batch)
        if index % 4 == 3:
            log.poll(recorder)
    log.poll(recorder)
    return folder


@pytest.mark.slow
def test_report_of_a_recorded_run(recorded_run, capsys):
    folder = recorded_run
    history = recording.History.read(folder)
    assert np.flatnonzero(history.steps["skipped"]).tolist() == [7]
    assert [spike.step for spike in history.spikes()] == [5]
    diagnosis = jaxgrad.diagnose(history)
    # judged at the first non-finite step (7: the nan input), where it broke; the stalled
    # updates (SGD at 1e-9 barely moves the weights) are a finding beside it
    assert diagnosis.verdict == "exploding"
    assert diagnosis.message.startswith("exploding: at step 7 of the run")

    assert cli.main(["report", str(folder)]) == 0
    recorded = len(history.recorded_steps)
    assert capsys.readouterr().out == (
        f"report of {folder} (10 steps, {recorded} recorded): exploding -> "
        f"{folder / 'report.html'}\n"
    )
    page = (folder / "report.html").read_text()
    assert "<td>steps</td><td>0 to 9 (10 steps)</td>" in page
    loss = history.steps["loss"]
    assert f"<td>{loss[0]:.4g} (step 0), {loss[-1]:.4g} (step 9)</td>" in page
    assert (
        f"<p><b>exploding</b>: {html.escape(diagnosis.message[len('exploding: ') :])}</p>" in page
    )
    for finding in diagnosis.findings:
        cells = [finding.rule, finding.verdict, finding.message, finding.cure or "-"]
        assert "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) in page
    assert any(f.rule == "stalled" and f.cure for f in diagnosis.findings)
    found = history.first_nonfinite()
    assert found == recording.NonFinite(7, "layers.0", "forward", "input")
    assert "Step 7: the input of layers.0 was already non-finite in the forward pass" in page
    (spike,) = history.spikes()
    assert f"<td>5</td><td>{', '.join(spike.statistics)}</td>" in page
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 4
    assert all(base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n") for data in images)
    assert "<img" in page
    assert "src='report" not in page  # nothing but the page itself

    # --out: a name without a suffix gets .html, in a folder created for it
    out = folder.parent / "pages" / "train"
    assert cli.main(["report", str(folder), "--out", str(out)]) == 0
    assert capsys.readouterr().out.endswith(f"-> {out}.html\n")
    assert out.with_suffix(".html").read_text().count("data:image/png;base64,") == 4


def test_phase_prints_the_critical_line(capsys):
    assert cli.main(["phase", "tanh", "--sigma-b2", "0.05"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert float(row[1]) == pytest.approx(float(theory.critical_sigma_w2("tanh", 0.05)), 1e-4)


@pytest.mark.slow
def test_phase_figure_gets_a_suffix(tmp_path, capsys):
    argv = ["phase", "tanh", "--sigma-b2", "0", "0.1", "--out", str(tmp_path / "diagram")]
    assert cli.main(argv) == 0
    assert f"phase diagram -> {tmp_path / 'diagram.png'}" in capsys.readouterr().out
    assert (tmp_path / "diagram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_spectrum_orthogonal_tanh_near_isometry(capsys):
    argv = ["spectrum", "tanh", "--q-star", "0.015625", "--width", "64", "--depth", "2", "4"]
    assert cli.main(argv) == 0
    rows = capsys.readouterr().out.strip().splitlines()[-2:]
    mean_sq = np.array([float(r.split()[1]) for r in rows])
    np.testing.assert_allclose(mean_sq, 1.0, atol=0.05)


def gains(argv, capsys):
    """`jaxgrad gain ...`'s first line and {row label: (value, the row's words)}."""
    assert cli.main(["gain", *argv]) == 0
    head, *lines = capsys.readouterr().out.splitlines()
    rows, label = {}, None
    for line in lines:
        match = re.match(r"  (\S.{13}) (\S+)\s+(.*)", line)
        if match:
            label = match[1].strip()
            rows[label] = [float("nan") if match[2] == "-" else float(match[2]), match[3]]
        else:
            rows[label][1] += " " + line.strip()
    return head, {label: (value, words) for label, (value, words) in rows.items()}


@pytest.mark.slow
def test_spectrum_writes_a_figure(tmp_path, capsys, monkeypatch):
    drawn = capture(monkeypatch, "spectra_histograms")
    argv = ["spectrum", "tanh", "--q-star", "0.015625", "--width", "32", "--depth", "2", "6"]
    assert cli.main([*argv, "--out", str(tmp_path / "spectra")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == f"spectra at depth 2, 6 -> {tmp_path / 'spectra.png'}"
    assert (tmp_path / "spectra.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (figure,) = drawn
    (panel,) = figure.axes
    assert panel.get_title().startswith("tanh, orthogonal weights, width 32, sigma_w2 = ")
    assert [t.get_text() for t in panel.get_legend().get_texts()] == ["L = 2", "L = 6"]
    # every singular value of each depth is counted once, and the table's largest singular
    # value lies in the last bin that holds any
    table = {int(r.split()[0]): float(r.split()[4]) for r in printed[-3:-1]}
    for patch, depth in zip(panel.patches, (2, 6), strict=True):
        data = patch.get_data()
        counts, edges = data.values, data.edges
        assert counts.sum() == 32
        last = np.flatnonzero(counts)[-1]
        assert edges[last] * (1 - 1e-3) <= table[depth] <= edges[last + 1] * (1 + 1e-3)


def test_gain_says_which_number_to_use(capsys):
    head, rows = gains(["relu"], capsys)
    assert head == "gains of relu, for weights drawn with std gain / sqrt(fan_in):"
    assert list(rows) == ["forward gain", "backward gain", "PyTorch table", "std ratio"]
    assert rows["forward gain"][0] == pytest.approx(np.sqrt(2), abs=1e-6)
    assert rows["forward gain"][1].startswith("use this to initialize")
    assert rows["PyTorch table"][0] == pytest.approx(np.sqrt(2), abs=1e-6)
    # std(z) / std(relu(z)) = 1 / sqrt(1/2 - 1/(2 pi)); 100000 samples: ~0.3% sampling error
    assert rows["std ratio"][0] == pytest.approx(1 / np.sqrt(0.5 - 0.5 / np.pi), rel=0.01)
    assert rows["std ratio"][1].startswith("a measurement, not an init gain")


def test_gain_uses_the_parameter_where_it_applies(capsys):
    """leaky_relu's slope and elu's alpha change the gains, against closed forms."""
    _, rows = gains(["leaky_relu", "0.3"], capsys)
    assert rows["forward gain"][0] == pytest.approx(np.sqrt(2 / 1.09), abs=2e-6)
    assert rows["PyTorch table"][0] == pytest.approx(np.sqrt(2 / 1.09), abs=1e-6)

    def elu_gain(alpha):
        # E[elu(z)^2] = 1/2 + alpha^2 (e^2 Phi(-2) - 2 e^(1/2) Phi(-1) + 1/2)
        phi = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))
        negative = math.e**2 * phi(-2) - 2 * math.exp(0.5) * phi(-1) + 0.5
        return 1 / math.sqrt(0.5 + alpha**2 * negative)

    head, rows = gains(["elu", "0.5"], capsys)
    assert head.startswith("gains of elu (alpha 0.5),")
    assert rows["forward gain"][0] == pytest.approx(elu_gain(0.5), abs=2e-6)
    assert np.isnan(rows["PyTorch table"][0])  # PyTorch's table has no elu
    head, rows = gains(["elu"], capsys)
    assert head.startswith("gains of elu (alpha 1, its default),")
    assert rows["forward gain"][0] == pytest.approx(elu_gain(1.0), abs=2e-6)


def test_gain_of_leaky_relu_with_slope_zero_is_relu(capsys):
    """A slope of 0 is a slope (it used to be read as 'none given', so 0.01)."""
    _, rows = gains(["leaky_relu", "0"], capsys)
    assert rows["PyTorch table"][0] == pytest.approx(np.sqrt(2), abs=1e-6)
    assert rows["forward gain"][0] == pytest.approx(np.sqrt(2), abs=1e-6)
    head, rows = gains(["leaky_relu"], capsys)
    assert head.startswith("gains of leaky_relu (negative_slope 0.01, its default),")
    assert rows["PyTorch table"][0] == pytest.approx(np.sqrt(2 / 1.0001), abs=1e-6)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    version = f"jaxgrad {jaxgrad.__version__} (jax {importlib.metadata.version('jax')}, Python "
    assert capsys.readouterr().out.startswith(version)


def subcommands():
    parser = cli.build_parser()
    (choices,) = [a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return choices


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_option_has_help_and_shows_its_default(name):
    parser = subcommands()[name]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = formatter._expand_help(action)
        assert len(text) > 10, (name, action.dest)
        optional = action.option_strings or action.nargs == "?"
        if optional and not isinstance(action, argparse._StoreTrueAction):
            assert "default" in text, (name, action.dest, text)
        if action.default not in (None, False) and not isinstance(action.default, str):
            shown = action.default
            shown = " ".join(map(str, shown)) if isinstance(shown, list) else str(shown)
            assert f"(default: {shown})" in text, (name, action.dest, text)
    assert {"demo", "sweep", "plot", "report", "gain", "phase", "spectrum"} <= set(subcommands())
    parser.format_help()  # no % left unescaped


def test_plot_has_a_filter_for_every_sweep_axis():
    axes = set(sweep.NETWORK_COLUMNS) | {"depth"}
    assert set(cli.PLOT_AXES) == axes
    options = {o for a in subcommands()["plot"]._actions for o in a.option_strings}
    assert {"--" + axis.replace("_", "-") for axis in axes} <= options


def test_console_script_help_lists_every_subcommand():
    result = subprocess.run(
        [sys.executable, "-m", "jaxgrad.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for name in ("demo", "sweep", "plot", "report", "gain", "phase", "spectrum"):
        assert name in result.stdout


def run_command(args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "jaxgrad.cli", *args], capture_output=True, text=True, **kwargs
    )


def test_an_error_that_ctrl_c_turned_into_another_is_still_the_interrupt(monkeypatch, capsys):
    """Ctrl-C raises KeyboardInterrupt wherever Python is; numpy comparing structured arrays
    turned it into a TypeError and a sweep exited 1 with a traceback (CI, np.unique). After
    Ctrl-C any error ends the command as the interrupt; without Ctrl-C the error propagates."""

    def interrupted_inside_a_library(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the next bytecode; sleep is interrupted
        except KeyboardInterrupt:
            raise TypeError("Cannot compare structured arrays") from None
        raise AssertionError("Ctrl-C did not arrive")

    def failing(args):
        raise TypeError("a real bug")

    # a suite run as a background job inherits SIGINT ignored: install Ctrl-C's own handler,
    # as a terminal has it, for the length of the test
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        monkeypatch.setattr(cli, "_cmd_gain", interrupted_inside_a_library)
        assert cli.main(["gain", "relu"]) == 130
        assert capsys.readouterr().err == "jaxgrad gain: interrupted\n"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        monkeypatch.setattr(cli, "_cmd_gain", failing)
        with pytest.raises(TypeError, match="a real bug"):
            cli.main(["gain", "relu"])
    finally:
        signal.signal(signal.SIGINT, inherited)


def interruptible_command(*args: str) -> subprocess.Popen:
    """`jaxgrad *args` in a subprocess that Ctrl-C (SIGINT) interrupts as on a terminal.

    A suite started as a background job of a non-interactive shell inherits SIGINT ignored,
    and Python then installs no handler: the child installs Ctrl-C's own, as a terminal has.
    """
    interruptible = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'jaxgrad'; runpy.run_module('jaxgrad.cli', run_name='__main__')"
    )
    return subprocess.Popen(
        [sys.executable, "-c", interruptible, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_ctrl_c_stops_a_sweep_with_one_line_and_the_rerun_resumes(tmp_path):
    config = tmp_path / "long.toml"
    # One network per chunk (memory_budget = 1), 300 of them: seconds of work.
    seeds = list(range(100))
    config.write_text(
        f"depth = [4, 8]\nwidth = 8\nsigma_w2 = [1.0, 2.0, 3.0]\nseed = {seeds}\n"
        "memory_budget = 1\n"
    )
    out = tmp_path / "out"
    process = interruptible_command("sweep", str(config), "--out", str(out))
    deadline = time.monotonic() + 120
    while not list(out.glob("parts/*.parquet")):
        assert time.monotonic() < deadline, "no part appeared"
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    # stderr is a pipe, so progress comes as plain lines (one every 10 s); the last line
    # says what was saved and how to resume, with no traceback
    *progress, last = stderr.splitlines()
    assert all(re.fullmatch(r"sweep: \d+ of 300 networks .*", line) for line in progress), stderr
    saved = len(ResultStore(out).stored())
    assert 0 < saved < 300
    assert last == (
        f"jaxgrad sweep: interrupted: {saved} of 300 networks saved in {out}; run the same "
        "command again to resume"
    )
    rerun = run_command(["sweep", str(config), "--out", str(out)], timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {saved} of 300 networks already in {out}" in rerun.stderr
    assert len(ResultStore(out).stored()) == 300
    assert len(ResultStore(out).read()) == 300 * (4 + 8)


@pytest.mark.slow
def test_sweep_over_two_host_devices_in_a_subprocess(tmp_path):
    """--devices chooses the device count; orthogonal weights over two host devices used to
    deadlock (a batched QR in the sharded program): a timeout turns a hang into a failure."""
    config = tmp_path / "orthogonal.toml"
    config.write_text(SWEEP_TOML.replace("16", "32") + 'init = "orthogonal"\nseed = [0, 1]\n')
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    results = {}
    for devices in ("2", "1"):
        out = tmp_path / f"on{devices}"
        try:
            done = run_command(
                ["sweep", str(config), "--out", str(out), "--devices", devices],
                env=env,
                timeout=180,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"jaxgrad sweep --devices {devices} hung")
        assert done.returncode == 0, done.stderr
        assert f"chunks on {devices} device" in done.stdout
        results[devices] = ResultStore(out).read()
    key = ["seed", "sigma_w2", "depth", "layer"]
    two, one = (results[d].sort_values(key).reset_index(drop=True) for d in ("2", "1"))
    for name in ("act_std", "grad_norm", "act_grad_norm"):
        np.testing.assert_allclose(two[name], one[name], rtol=1e-5, err_msg=name)


def test_report_of_a_run_without_weights_is_refused_in_one_line(tmp_path, capsys):
    """A run that recorded only layers without weights (a layer norm's scale has one axis)
    has nothing for diagnose to judge: one line and exit status 2, no traceback."""
    model = nnx.Sequential(nnx.Linear(4, 4, rngs=nnx.Rngs(0)), nnx.LayerNorm(4, rngs=nnx.Rngs(1)))
    x = jax.random.normal(jax.random.key(0), (8, 4))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    recorder = recording.Recorder(model, mean_square, (x, x), modules=nnx.LayerNorm)

    @nnx.jit
    def step(model, optimizer, recorder, batch):
        loss, grads = recorder.value_and_grad(model, batch)
        recorder.update(model, optimizer, optimizer.update(model, grads))
        return loss

    step(model, optimizer, recorder, (x, x))
    log = recording.RunLog(tmp_path / "run")
    log.poll(recorder)
    assert cli.main(["report", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"jaxgrad report: error: cannot diagnose the run in {tmp_path / 'run'}: ")
    assert "none of the 1 recorded calls ('layers.1')" in err


def test_ctrl_c_while_the_first_program_compiles_exits_cleanly(tmp_path):
    """Ctrl-C while `jaxgrad coord` compiles its first point: the command says nothing was
    saved and exits with status 130. Tearing the interpreter down while XLA was still
    compiling in its own threads crashed (status 139, a segmentation fault)."""
    config = tmp_path / "coord.toml"
    config.write_text("widths = [32, 64, 96, 128]\ndepths = [2, 3]\nseeds = 2\nsteps = 3\n")
    out = tmp_path / "out"
    process = interruptible_command("coord", str(config), "--out", str(out))
    assert process.stdout.readline().startswith("coord: mup, adam")  # compiling from here
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    # 0 saved; or 1 when the signal landed in XLA's garbage-collection callback, where
    # Python ignores the KeyboardInterrupt: the next progress line (after the first point)
    # raises it again (the run used to go on to the end and exit 0)
    assert re.fullmatch(
        rf"jaxgrad coord: interrupted: [01] of 8 points saved in {re.escape(str(out))}/points; "
        "run the same command again to resume",
        stderr.splitlines()[-1],
    ), stderr
