"""Tests for the sweep engine and the result store."""

import math
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import nnx

import jaxgrad
from jaxgrad import nn, sweep, theory
from jaxgrad.store import ResultStore

KEYS = [
    "seed",
    "activation",
    "init",
    "width",
    "norm",
    "residual",
    "sigma_w2",
    "sigma_b2",
    "depth",
    "layer",
]
STATS = [
    "pre_mean",
    "pre_std",
    "act_mean",
    "act_std",
    "grad_norm",
    "grad_norm_bias",
    "act_grad_norm",
    "weight_norm",
]
SMALL = {
    "depth": (3, 7),
    "width": (24,),
    "activation": ("tanh",),
    "sigma_w2": (0.8, 1.5),
    "sigma_b2": (0.0, 0.05),
    "seed": (0, 1),
    "batch_size": 6,
}


def sorted_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEYS).reset_index(drop=True)


def assert_frames_close(left, right, rtol=1e-5):
    left, right = sorted_frame(left), sorted_frame(right)
    pd.testing.assert_frame_equal(left[KEYS], right[KEYS])
    for name in STATS:
        np.testing.assert_allclose(left[name], right[name], rtol=rtol, atol=1e-7, err_msg=name)
    np.testing.assert_array_equal(left["first_nonfinite_layer"], right["first_nonfinite_layer"])


def mlp_of_point(config: sweep.Sweep):
    """The single network of a one-point sweep rebuilt as an nn.MLP with the same weights
    (sqrt(sigma_w2) W0, sqrt(sigma_b2) b0), with its input batch and loss key."""
    (group,), (seed,) = config.groups(), config.seed
    (sigma_w2, sigma_b2), depth = config.points()[0], config.max_depth
    weight_key, input_key, loss_key = jax.random.split(jax.random.key(seed), 3)
    kernels, biases = sweep._unit_weights(group, depth, weight_key, jnp.float32)
    model = nn.MLP(group.width, group.width, depth, activation=group.activation, rngs=nnx.Rngs(0))
    model.blocks.linear.kernel[...] = math.sqrt(sigma_w2) * kernels
    model.blocks.linear.bias[...] = math.sqrt(sigma_b2) * biases
    x = jax.random.normal(input_key, (config.batch_size, group.width))
    return model, x, loss_key


@pytest.mark.slow
def test_sweep_point_equals_probe_of_the_same_mlp():
    """The sweep's network is jaxgrad's MLP: rebuild one point as an nn.MLP with the same
    weights (sqrt(sigma_w2) W0, sqrt(sigma_b2) b0) and probe it with the same loss."""
    config = sweep.Sweep(
        depth=(5,),
        width=(16,),
        activation=("tanh",),
        sigma_w2=(1.7,),
        sigma_b2=(0.1,),
        seed=(3,),
        batch_size=4,
    )
    frame = sweep.run(config, progress=False)
    model, x, loss_key = mlp_of_point(config)
    stats = jaxgrad.probe(model, x, jaxgrad.random_projection_loss(loss_key))
    for name in STATS:
        np.testing.assert_allclose(frame[name], getattr(stats, name), rtol=2e-5, err_msg=name)


@pytest.mark.slow
def test_one_program_per_group():
    config = sweep.Sweep(**{**SMALL, "activation": ("tanh", "relu"), "norm": (None, "layer")})
    assert len(config.groups()) == 4
    sweep._chunk_program.cache_clear()
    frame = sweep.run(config, progress=False)
    assert sweep._chunk_program.cache_info().misses == 4
    # Every network and reported depth has its layers: 4 groups x 4 points x 2 seeds x (3 + 7).
    assert len(frame) == 4 * 4 * 2 * (3 + 7)
    assert not frame.duplicated(KEYS).any()


@pytest.mark.slow
def test_shallower_depths_equal_separate_runs():
    """Depth 3's rows come from the depth-7 network's prefix (forward) and its extra
    backward head; they equal a sweep of depth 3 alone."""
    both = sweep.run(sweep.Sweep(**SMALL), progress=False)
    alone = sweep.run(sweep.Sweep(**{**SMALL, "depth": (3,)}), progress=False)
    assert_frames_close(both[both.depth == 3], alone)
    deep = sweep.run(sweep.Sweep(**{**SMALL, "depth": (7,)}), progress=False)
    assert_frames_close(both[both.depth == 7], deep)


def test_chunked_equals_unchunked():
    config = sweep.Sweep(**SMALL)
    group = config.groups()[0]
    tiny = sweep.bytes_per_point(config, group) + 2 * sweep.weight_bytes(config, group)
    chunked_config = sweep.Sweep(**{**SMALL, "memory_budget": tiny})
    assert sweep.chunk_size(chunked_config, group, 4, 1) == 1
    assert len(sweep.plan(chunked_config, 1)) == 8
    assert len(sweep.plan(config, 1)) == 2
    assert_frames_close(
        sweep.run(chunked_config, progress=False), sweep.run(config, progress=False)
    )


CHUNKING = {
    "depth": (3, 12),
    "width": (24,),
    "activation": ("tanh", "relu"),
    "sigma_w2": (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0),
    "sigma_b2": (0.0, 0.05, 0.3),
    "seed": (0,),
    "batch_size": 6,
}


def assert_equal_to_float32_rounding(left, right):
    """Theory columns exactly equal; probe statistics to float32 rounding: norms and stds to
    rtol 2e-5, means (near zero, so relative error means nothing) to 1e-5 of their std."""
    left, right = sorted_frame(left), sorted_frame(right)
    pd.testing.assert_frame_equal(left[KEYS], right[KEYS])
    for name in ("q_star", "chi1", "xi_q", "xi_c"):
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)
    for name in ("pre_std", "act_std", "grad_norm", "grad_norm_bias", "act_grad_norm"):
        np.testing.assert_allclose(left[name], right[name], rtol=2e-5, err_msg=name)
    np.testing.assert_array_equal(left["weight_norm"], right["weight_norm"])
    for mean, std in (("pre_mean", "pre_std"), ("act_mean", "act_std")):
        scale = 1e-5 * right[std].to_numpy()
        np.testing.assert_array_less(np.abs(left[mean] - right[mean]), scale + 1e-30)
    np.testing.assert_array_equal(left["first_nonfinite_layer"], right["first_nonfinite_layer"])


@pytest.mark.slow
def test_numbers_do_not_depend_on_the_chunk_size():
    """One point per chunk against all 21 points in one: the theory columns (computed one
    point at a time) are equal (vmapped over the chunk, xi_c differed by 0.6% for tanh and
    33% for relu); the probe statistics agree to float32 rounding (the vmapped size changes
    XLA's matrix-product blocking: measured up to 7e-6 relative on gradient norms, 1e-6 on
    stds, 3e-7 of the std on means)."""
    config = sweep.Sweep(**CHUNKING)
    group = config.groups()[0]
    tiny = sweep.bytes_per_point(config, group) + 2 * sweep.weight_bytes(config, group)
    one_at_a_time = sweep.Sweep(**{**CHUNKING, "memory_budget": tiny})
    assert {chunk.size for chunk in sweep.plan(one_at_a_time, 1)} == {1}
    assert {chunk.size for chunk in sweep.plan(config, 1)} == {21}
    whole = sweep.run(config, progress=False, num_devices=1)
    single = sweep.run(one_at_a_time, progress=False, num_devices=1)
    assert_equal_to_float32_rounding(single, whole)
    assert whole["q_star"].notna().any()
    assert whole["xi_c"].notna().any()


@pytest.mark.slow
def test_theory_columns_match_theory():
    frame = sweep.run(sweep.Sweep(**SMALL), progress=False)
    for (w2, b2), rows in frame.groupby(["sigma_w2", "sigma_b2"]):
        assert rows["chi1"].iloc[0] == pytest.approx(float(theory.chi1("tanh", w2, b2)), rel=1e-5)
    orthogonal = sweep.run(sweep.Sweep(**{**SMALL, "init": ("orthogonal",)}), progress=False)
    assert orthogonal["chi1"].isna().all()


def test_rows_record_their_configuration_and_provenance():
    frame = sweep.run(sweep.Sweep(**SMALL), progress=False)
    assert set(frame["jax_version"]) == {jax.__version__}
    assert set(frame["jaxgrad_version"]) == {jaxgrad.__version__}
    assert set(frame["device_kind"]) == {jax.local_devices()[0].device_kind}
    assert set(frame["seed"]) == {0, 1}
    assert (frame["layer"] <= frame["depth"]).all()


@pytest.mark.slow
def test_nonfinite_networks_are_recorded_per_depth():
    config = sweep.Sweep(
        depth=(5, 60),
        width=(32,),
        activation=("linear",),
        sigma_w2=(400.0,),
        seed=(0,),
        batch_size=4,
    )
    frame = sweep.run(config, progress=False)
    shallow = frame[frame.depth == 5]
    deep = frame[frame.depth == 60]
    assert (shallow["first_nonfinite_layer"] == -1).all()
    first = int(deep["first_nonfinite_layer"].iloc[0])
    assert 10 < first < 60
    assert np.isfinite(deep[deep.layer < first]["act_std"]).all()


def test_store_is_append_only_and_resumes(tmp_path):
    config = sweep.Sweep(**SMALL)
    first = sweep.run(config, out=tmp_path, progress=False)
    parts = sorted((tmp_path / "parts").iterdir())
    mtimes = [p.stat().st_mtime_ns for p in parts]
    again = sweep.run(config, out=tmp_path, progress=False)
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "parts").iterdir())] == mtimes
    assert_frames_close(first, again, rtol=0)
    # A wider sweep into the same folder computes only what is new.
    wider = sweep.Sweep(**{**SMALL, "seed": (0, 1, 2)})
    stored = ResultStore(tmp_path).stored()
    new = [c for c in sweep.plan(wider, 1) if not set(c.networks) <= stored.keys()]
    assert {c.seed for c in new} == {2}
    frame = sweep.run(wider, out=tmp_path, progress=False)
    assert len(list((tmp_path / "parts").glob("*.parquet"))) == len(parts) + 1
    assert_frames_close(frame[frame.seed < 2], first, rtol=0)
    # A narrower rerun reads only its own networks.
    narrow = sweep.run(sweep.Sweep(**{**SMALL, "seed": (1,)}), out=tmp_path, progress=False)
    assert set(narrow["seed"]) == {1}
    assert_frames_close(narrow, first[first.seed == 1], rtol=0)


@pytest.mark.slow
def test_another_chunking_neither_duplicates_nor_recomputes(tmp_path):
    """Stored with one point per chunk, then rerun with one chunk per seed (and the other
    way): every network is found, none is computed twice, none is stored twice."""
    config = sweep.Sweep(**SMALL)
    group = config.groups()[0]
    tiny = sweep.bytes_per_point(config, group) + 2 * sweep.weight_bytes(config, group)
    chunked = sweep.Sweep(**{**SMALL, "memory_budget": tiny})
    first = sweep.run(chunked, out=tmp_path, progress=False)
    parts = sorted((tmp_path / "parts").glob("*.parquet"))
    assert len(parts) == 8
    sweep._chunk_program.cache_clear()
    again = sweep.run(config, out=tmp_path, progress=False)
    assert sweep._chunk_program.cache_info().misses == 0, "nothing was recomputed"
    assert sorted((tmp_path / "parts").glob("*.parquet")) == parts
    assert_frames_close(again, first, rtol=0)
    assert not again.duplicated(KEYS).any()
    # Half stored by the big chunks, half missing: the small chunks compute only the rest.
    other = tmp_path / "other"
    sweep.run(sweep.Sweep(**{**SMALL, "sigma_b2": (0.0,)}), out=other, progress=False)
    resumed = sweep.run(chunked, out=other, progress=False)
    assert len(list((other / "parts").glob("*.parquet"))) == 2 + 4
    assert_frames_close(resumed, first, rtol=0)


def test_another_sweep_is_refused_before_any_compute(tmp_path):
    sweep.run(sweep.Sweep(**SMALL), out=tmp_path, progress=False)
    parts = sorted((tmp_path / "parts").iterdir())
    sweep._chunk_program.cache_clear()
    for change, message in [
        ({"batch_size": 7}, "batch_size 6 there, 7 here"),
        ({"depth": (3,)}, "depth [3, 7] there, [3] here"),
        ({"dtype": "bfloat16"}, "dtype ['float32'] there, ['bfloat16'] here"),
        ({"jacobian_probes": 2}, "jacobian_probes 0 there, 2 here"),
    ]:
        with pytest.raises(ValueError, match="holds a different sweep") as error:
            sweep.run(sweep.Sweep(**{**SMALL, **change}), out=tmp_path, progress=False)
        assert message in str(error.value)
    assert sweep._chunk_program.cache_info().misses == 0
    assert sorted((tmp_path / "parts").iterdir()) == parts


def test_a_damaged_part_is_recomputed(tmp_path, capsys):
    config = sweep.Sweep(**SMALL)
    first = sweep.run(config, out=tmp_path, progress=False)
    part = sorted((tmp_path / "parts").glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:100])
    (tmp_path / "parts" / "stray.parquet").write_bytes(b"not a part")
    capsys.readouterr()
    again = sweep.run(config, out=tmp_path, progress=False)
    err = capsys.readouterr().err
    assert f"moved damaged part parts/{part.name} to parts/damaged/{part.name}" in err
    assert "ignoring parts/stray.parquet" in err
    assert "resuming: 4 of 8 networks already in" in err
    assert_frames_close(again, first, rtol=0)
    assert part.exists(), "the same networks give the same part id"


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from jaxgrad import sweep, store
    original = store.ResultStore.write
    def slow_write(self, networks, frame):
        part_id = original(self, networks, frame)
        print("wrote", part_id, flush=True)
        return part_id
        time.sleep(0.5)
    store.ResultStore.write = slow_write
    config = sweep.Sweep(depth=(3, 7), width=(24,), activation=("tanh",), sigma_w2=(0.8, 1.5),
                         sigma_b2=(0.0, 0.05), seed=tuple(range(8)), batch_size=6)
    sweep.run(config, out=sys.argv[1], progress=False)
    """
)


@pytest.mark.slow
def test_resume_after_sigkill_leaves_no_gap_and_no_duplicate(tmp_path):
    script = tmp_path / "kill_me.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, str(script), str(out)], stdout=subprocess.PIPE, text=True
    )
    written = 0
    for line in process.stdout:
        written += line.startswith("wrote")
        if written == 3:
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    parts = list((out / "parts").glob("*.parquet"))
    assert 3 <= len(parts) < 8, "the run was killed part-way"
    config = sweep.Sweep(**{**SMALL, "seed": tuple(range(8))})
    resumed = sweep.run(config, out=out, progress=False)
    assert len(list((out / "parts").glob("*.parquet"))) == 8
    assert not resumed.duplicated(KEYS).any()
    assert len(resumed) == 8 * 4 * (3 + 7)
    assert_frames_close(resumed, sweep.run(config, progress=False))


SHARD_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    from jaxgrad import sweep
    assert jax.local_device_count() == 2, jax.local_device_count()
    out, init = sys.argv[1], sys.argv[2]
    config = sweep.Sweep(depth=(3, 7), width=(32,), activation=("tanh",), init=init,
                         sigma_w2=(0.8, 1.2, 1.5, 2.0, 3.0), sigma_b2=(0.0, 0.05),
                         seed=(0, 1), batch_size=6)
    sweep.run(config, out=out + "/two", progress=False, num_devices=2)
    print("two devices done", flush=True)
    sweep.run(config, out=out + "/one", progress=False, num_devices=1)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
def test_sharded_over_two_host_devices_equals_one_device(tmp_path, init):
    """Two host devices against one, in a subprocess. Orthogonal weights need a batched QR,
    which deadlocked inside the sharded program (0% CPU, forever): the timeout turns a hang
    into a failure."""
    script = tmp_path / "shard.py"
    script.write_text(SHARD_SCRIPT)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    try:
        result = subprocess.run(
            [sys.executable, str(script), str(tmp_path), init],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the sweep over two devices hung: {error.stdout!r}")
    assert result.returncode == 0, result.stderr[-2000:]
    two = ResultStore(tmp_path / "two").read()
    one = ResultStore(tmp_path / "one").read()
    assert len(two) == 10 * 2 * (3 + 7)
    # The same program on half the points per device: equal to float32 rounding.
    assert_equal_to_float32_rounding(two, one)


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        ({"depth": 0}, ValueError, "depth must be ints >= 1, got 0"),
        ({"depth": 3.0}, TypeError, "depth must be ints >= 1, got 3.0"),
        ({"width": [8, 16, 8]}, ValueError, "width lists 8 more than once"),
        ({"activation": "tanhh"}, ValueError, "unknown activation 'tanhh'"),
        ({"activation": ["tanh", "Tanh"]}, ValueError, "activation lists 'tanh' more than once"),
        ({"activation": "rrelu"}, ValueError, "'rrelu' draws random slopes and needs a PRNG"),
        ({"activation": 3}, TypeError, "activation must be names"),
        ({"init": "uniform"}, ValueError, "init must be one of gaussian, orthogonal"),
        ({"norm": "group"}, ValueError, "norm must be one of none, batch, layer"),
        ({"norm": [None, "none"]}, ValueError, "norm lists None more than once"),
        ({"sigma_w2": -1.0}, ValueError, "sigma_w2 must be >= 0"),
        ({"sigma_w2": [1, 1.0]}, ValueError, "sigma_w2 lists 1.0 more than once"),
        ({"sigma_b2": [0.0, 0.1, 0.0]}, ValueError, "sigma_b2 lists 0.0 more than once"),
        ({"sigma_w2": "1.0"}, TypeError, "sigma_w2 must be a real number"),
        ({"sigma_w2": {"a": 1}}, TypeError, "sigma_w2 must be a value or a list of values"),
        ({"seed": [0, 0]}, ValueError, "seed lists 0 more than once"),
        ({"seed": 2**64}, ValueError, r"seed must be ints in \[0, 4294967295\]"),
        ({"seed": 2**32}, ValueError, r"seed must be ints in \[0, 4294967295\]"),
        ({"seed": -1}, ValueError, r"seed must be ints in \[0, 4294967295\]"),
        ({"seed": 1.5}, TypeError, "seed must be ints"),
        ({"dtype": "int8"}, ValueError, "dtype must be one of"),
        ({"residual": "yes"}, TypeError, "residual must be true or false"),
        ({"residual": "maybe"}, TypeError, "residual must be true or false, got 'maybe'"),
        ({"residual": [True, True]}, ValueError, "residual lists True more than once"),
        ({"depth": [3, 3]}, ValueError, "depth lists 3 more than once"),
        ({"theory": "no"}, TypeError, "theory must be true or false, got 'no'"),
        ({"theory": 1}, TypeError, "theory must be true or false, got 1"),
        ({"batch_size": 4.0}, TypeError, "batch_size must be an int, got 4.0"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
        ({"jacobian_probes": True}, TypeError, "jacobian_probes must be an int >= 0"),
        ({"jacobian_probes": -2}, ValueError, "jacobian_probes must be an int >= 0, got -2"),
        ({"memory_budget": True}, TypeError, "memory_budget must be an int number of bytes"),
        ({"memory_budget": 1e9}, TypeError, "memory_budget must be an int number of bytes"),
        ({"memory_budget": "1 parsec"}, ValueError, "memory_budget '1 parsec' is not a size"),
        ({"memory_budget": 0}, ValueError, "memory_budget must be a positive number of bytes"),
        ({"memory_budget": "0GB"}, ValueError, "memory_budget must be a positive number"),
        ({"widths": 3}, ValueError, r"unknown sweep keys \['widths'\]"),
    ],
)
def test_bad_configuration_raises_when_built(values, error, match):
    with pytest.raises(error, match=match):
        sweep.Sweep.from_dict(values)


def test_values_are_normalized():
    config = sweep.Sweep(activation=["Swish", "tanh"], sigma_w2=[1, 2], memory_budget="1.5GiB")
    assert config.activation == ("silu", "tanh")
    assert config.sigma_w2 == (1.0, 2.0)
    assert config.memory_budget == 3 * 2**29
    assert sweep.Sweep(memory_budget="512MB").memory_budget == 512 * 10**6
    assert sweep.Sweep(seed=np.int64(3)).seed == (3,)
    with pytest.raises(TypeError, match="a sweep is a table of its fields, got 3"):
        sweep.Sweep.from_dict(3)


@pytest.mark.parametrize(
    ("num_devices", "error", "match"),
    [
        (-1, ValueError, r"num_devices must be in \[1, 1\] \(the local devices\), got -1"),
        (0, ValueError, r"num_devices must be in \[1, 1\]"),
        (2, ValueError, r"num_devices must be in \[1, 1\]"),
        (1.0, TypeError, "num_devices must be an int"),
        (True, TypeError, "num_devices must be an int"),
    ],
)
def test_bad_device_count_raises_before_compute(num_devices, error, match, tmp_path):
    assert jax.local_device_count() == 1
    with pytest.raises(error, match=match):
        sweep.run(sweep.Sweep(**SMALL), out=tmp_path / "out", num_devices=num_devices)
    assert not (tmp_path / "out").exists()


def test_a_sweep_too_large_for_the_machine_is_refused_before_any_allocation(tmp_path, monkeypatch):
    limit, _ = sweep.machine_memory()
    huge = sweep.Sweep(depth=(10,), width=(256,), batch_size=100_000_000)
    needed = 4 * 10 * 100_000_000 * 256 * 4
    assert needed > limit
    with pytest.raises(ValueError, match=r"one network of width 256, depth 10, batch_size "):
        sweep.run(huge, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    many = sweep.Sweep(depth=(100,), width=(8,), seed=tuple(range(20000)), sigma_w2=[1.0, 2.0])
    monkeypatch.setattr(sweep, "machine_memory", lambda: (10**9, "the physical memory"))
    with pytest.raises(ValueError, match=r"4,000,000 result rows need about 1.92 GB in memory"):
        sweep.check_size(many)
    sweep.check_size(many, load=False)
    assert sweep.describe(many, 1) == (
        "40,000 networks in 1 program, 20,000 chunks on 1 device; 4,000,000 rows "
        "(about 1.92 GB in memory, less on disk)"
    )


def test_from_toml(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('depth = [4, 8]\nactivation = ["relu"]\nsigma_w2 = [1.0, 2.0]\nnorm = "none"\n')
    config = sweep.Sweep.from_toml(path)
    assert config.depth == (4, 8)
    assert config.norm == (None,)
    assert config.size == 2
    table = tmp_path / "table.toml"
    table.write_text('[sweep]\nwidth = 32\nmemory_budget = "1GB"\n')
    assert sweep.Sweep.from_toml(table).width == (32,)
    assert sweep.Sweep.from_toml(table).memory_budget == 10**9
    for text, error, message in [
        ("depth = [4,\n", ValueError, "is not valid TOML"),
        ("sweep = 3\n", TypeError, "sweep must be a [sweep] table of fields, got sweep = 3"),
        ("width = 8\n[sweep]\ndepth = 3\n", ValueError, "keys ['width'] sit beside the [sweep]"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(error) as raised:
            sweep.Sweep.from_toml(bad)
        assert message in str(raised.value)
    with pytest.raises(ValueError, match="does not exist"):
        sweep.Sweep.from_toml(tmp_path / "missing.toml")


TWO_PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=process_id)
    from jaxgrad import sweep
    config = sweep.Sweep(depth=(3, 7), width=(24,), activation=("tanh", "relu"),
                         sigma_w2=(0.8, 1.5), sigma_b2=(0.0, 0.05), seed=(0, 1), batch_size=6)
    frame = sweep.run(config, out=out, progress=False, timeout=120)
    mine = len(sweep.plan(config)[process_id::2])
    assert mine == 2, mine
    print("rows", len(frame), "chunks", mine, flush=True)
    """
)


@pytest.mark.slow
def test_two_processes_on_loopback_equal_one_process(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "two.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    out = tmp_path / "shared"
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(index), str(port), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-2000:]
        # Each process computed its half of the chunks and returned the whole result.
        assert "rows 160 chunks 2" in stdout
    config = sweep.Sweep(**{**SMALL, "activation": ("tanh", "relu")})
    assert_frames_close(ResultStore(out).read(), sweep.run(config, progress=False))


@pytest.mark.slow
def test_jacobian_column_matches_depth_profile():
    """The sweep's Hutchinson column against jaxgrad.jacobian on the same MLP and input
    (exact mean squared singular value from the exact spectrum), within 5 standard errors."""
    from jaxgrad import jacobian

    config = sweep.Sweep(
        depth=(6,),
        width=(32,),
        activation=("tanh",),
        sigma_w2=(1.8,),
        sigma_b2=(0.05,),
        seed=(4,),
        batch_size=4,
        jacobian_probes=256,
    )
    frame = sweep.run(config, progress=False)
    model, x, _ = mlp_of_point(config)
    x0 = x[0]
    profile = jacobian.depth_profile(model, x0, jax.random.key(0), spectra_at=tuple(range(1, 7)))
    exact_sq = np.asarray(profile.spectra, np.float64) ** 2
    exact = exact_sq.mean(axis=1)
    # Hutchinson with Gaussian probes: Var ||Jv||^2 = 2 sum(s^4); over P probes and / n.
    stderr = np.sqrt(2 * (exact_sq**2).sum(axis=1) / 256) / 32
    np.testing.assert_array_less(np.abs(frame["mean_sq_singular_value"] - exact), 5 * stderr)


def test_dtype_is_a_grouping_axis():
    config = sweep.Sweep(**{**SMALL, "dtype": ("float32", "bfloat16")})
    assert len(config.groups()) == 2
    frame = sweep.run(config, progress=False)
    single = frame[frame.dtype == "float32"].drop(columns="dtype")
    half = frame[frame.dtype == "bfloat16"].drop(columns="dtype")
    assert len(single) == len(half) == 4 * 2 * (3 + 7)
    # bfloat16 has an 8-bit mantissa: the layer stds agree to a few per cent at these depths.
    np.testing.assert_allclose(
        sorted_frame(half)["act_std"], sorted_frame(single)["act_std"], rtol=0.05
    )
    with pytest.raises(ValueError, match="float64 needs jax_enable_x64"):
        sweep.Sweep(dtype="float64")
