"""Tests for the `jaxgrad` command: exit codes and messages, and each subcommand's output."""

import subprocess
import sys

import numpy as np
import pytest

from jaxgrad import cli, theory
from jaxgrad.store import ResultStore

SWEEP_TOML = 'depth = [3, 6]\nwidth = 16\nactivation = ["tanh"]\nsigma_w2 = [1.0, 2.0]\n'


def exit_code(argv):
    """main's return value, or the status argparse exits with."""
    try:
        return cli.main(argv)
    except SystemExit as exit_info:
        return exit_info.code


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep", "missing.toml"], "no such file: missing.toml"),
        (["gain", "relux"], "unknown activation 'relux'"),
        (["spectrum", "tanh", "--depth", "0"], "must be >= 1, got 0"),
        (["phase", "tanh", "--sigma-b2", "-1"], "must be a finite number >= 0"),
        (["plot", "nowhere"], "nowhere holds no sweep results"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert exit_code(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("depth = [0]\n", "depth must be ints >= 1, got 0"),
        ('activation = "foo"\n', "unknown activation 'foo'"),
        ("depth = [\n", "is not valid TOML"),
        ("depths = [3]\n", "unknown sweep keys ['depths']"),
    ],
)
def test_bad_sweep_configuration_is_refused_before_compute(toml, message, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    assert cli.main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sweep_then_plot(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(SWEEP_TOML)
    out = tmp_path / "results"
    assert cli.main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    frame = ResultStore(out).read()
    assert len(frame) == 2 * (3 + 6)
    assert cli.main(["plot", str(out)]) == 0
    assert cli.main(["plot", str(out), "--kind", "heatmap", "--out", str(tmp_path / "h.png")]) == 0
    assert (out / "profiles.png").stat().st_size > 1000
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_phase_prints_the_critical_line(capsys):
    assert cli.main(["phase", "tanh", "--sigma-b2", "0.05"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert float(row[1]) == pytest.approx(float(theory.critical_sigma_w2("tanh", 0.05)), 1e-4)


def test_spectrum_orthogonal_tanh_near_isometry(capsys):
    argv = ["spectrum", "tanh", "--q-star", "0.015625", "--width", "64", "--depth", "2", "4"]
    assert cli.main(argv) == 0
    rows = capsys.readouterr().out.strip().splitlines()[-2:]
    mean_sq = np.array([float(r.split()[1]) for r in rows])
    np.testing.assert_allclose(mean_sq, 1.0, atol=0.05)


def test_gain_prints_table_and_computed_values(capsys):
    assert cli.main(["gain", "relu"]) == 0
    out = capsys.readouterr().out
    assert "calculate_gain    1.414214" in out
    assert "computed forward  1.414214" in out


def test_console_script_help_lists_every_subcommand():
    result = subprocess.run(
        [sys.executable, "-m", "jaxgrad.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for name in ("demo", "sweep", "plot", "gain", "phase", "spectrum"):
        assert name in result.stdout
