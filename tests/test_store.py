"""Tests for the results folder: its manifest, its parts, damaged and stray files."""

import json

import pandas as pd
import pytest

from jaxgrad.store import MANIFEST, ResultStore

IDENTITY = {"results_format": 2, "batch_size": 4, "depth": [3, 6]}
GRID = {"seed": [0, 1], "sigma_w2": [1.0, 2.0]}
COLUMNS = ["seed", "sigma_w2", "layer", "x"]


def rows(networks, value=1.0):
    """Two rows (layers 1 and 2) per (seed, sigma_w2) network."""
    records = [
        {"seed": seed, "sigma_w2": w2, "layer": layer, "x": value + layer}
        for seed, w2 in networks
        for layer in (1, 2)
    ]
    return pd.DataFrame(records, columns=COLUMNS)


def new_store(root, grid=GRID, identity=IDENTITY, messages=None):
    log = None if messages is None else messages.append
    return ResultStore.for_sweep(root, identity, grid, part_columns=COLUMNS, log=log)


def test_manifest_records_the_sweep_and_is_written_atomically(tmp_path):
    store = new_store(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["identity"] == IDENTITY
    assert manifest["network_columns"] == ["seed", "sigma_w2"]
    assert manifest["grids"] == [GRID]
    assert store.networks() == {(0, 1.0), (0, 2.0), (1, 1.0), (1, 2.0)}
    # No temporary file is left beside it.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".manifest.lock",
        MANIFEST,
        "parts",
    ]


@pytest.mark.parametrize(
    ("identity", "message"),
    [
        ({**IDENTITY, "batch_size": 8}, "batch_size 4 there, 8 here"),
        ({**IDENTITY, "depth": [3]}, "depth [3, 6] there, [3] here"),
        ({**IDENTITY, "dtype": ["bfloat16"]}, "dtype 'unset' there, ['bfloat16'] here"),
    ],
)
def test_another_sweep_is_refused_naming_what_differs(tmp_path, identity, message):
    new_store(tmp_path)
    with pytest.raises(ValueError, match="holds a different sweep") as error:
        new_store(tmp_path, identity=identity)
    assert message in str(error.value)
    assert "use another results folder (--out)" in str(error.value)
    assert len(str(error.value).splitlines()) == 1


def test_a_folder_that_is_not_a_results_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty .*notes.txt.* holds no manifest.json"):
        new_store(tmp_path)
    with pytest.raises(ValueError, match="holds no jaxgrad results"):
        ResultStore(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="is not a readable manifest"):
        ResultStore(tmp_path)


def test_grids_join_and_a_subset_adds_nothing(tmp_path):
    new_store(tmp_path)
    more_seeds = {"seed": [0, 1, 2], "sigma_w2": [1.0, 2.0]}
    store = new_store(tmp_path, grid=more_seeds)
    assert store.manifest["grids"] == [more_seeds]  # the first grid is within the new one
    other = {"seed": [5], "sigma_w2": [3.0]}
    store = new_store(tmp_path, grid=other)
    assert store.manifest["grids"] == [more_seeds, other]
    store = new_store(tmp_path, grid={"seed": [0], "sigma_w2": [2.0]})
    assert store.manifest["grids"] == [more_seeds, other]
    assert len(store.networks()) == 3 * 2 + 1


def test_part_ids_depend_on_the_networks_not_their_order(tmp_path):
    store = new_store(tmp_path)
    first = store.write([(0, 1.0), (0, 2.0)], rows([(0, 1.0), (0, 2.0)]))
    assert store.part_id([(0, 2.0), (0, 1.0)]) == first
    assert store.write([(0, 2.0), (0, 1.0)], rows([(0, 1.0), (0, 2.0)], 5.0)) == first
    assert store.read()["x"].tolist() == [2.0, 3.0, 2.0, 3.0]  # append-only: first write stays


def test_each_network_is_read_once_and_only_the_wanted_ones(tmp_path):
    store = new_store(tmp_path)
    store.write([(0, 1.0), (0, 2.0)], rows([(0, 1.0), (0, 2.0)]))
    # Another chunking stored (0, 2.0) again, with (1, 1.0): it must not be read twice.
    store.write([(0, 2.0), (1, 1.0)], rows([(0, 2.0), (1, 1.0)], 10.0))
    frame = store.read()
    assert len(frame) == 3 * 2
    assert not frame.duplicated(["seed", "sigma_w2", "layer"]).any()
    assert set(store.stored()) == {(0, 1.0), (0, 2.0), (1, 1.0)}
    only = store.read([(1, 1.0)])
    assert only[["seed", "sigma_w2"]].drop_duplicates().values.tolist() == [[1, 1.0]]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: b"garbage" * 50,
    ],
    ids=["truncated", "garbage"],
)
def test_a_damaged_part_is_moved_aside_and_counted_missing(tmp_path, damage):
    messages = []
    store = new_store(tmp_path, messages=messages)
    part_id = store.write([(0, 1.0)], rows([(0, 1.0)]))
    store.write([(1, 1.0)], rows([(1, 1.0)]))
    path = store.path(part_id)
    path.write_bytes(damage(path.read_bytes()))
    reopened = ResultStore(tmp_path, log=messages.append)
    assert set(reopened.stored()) == {(1, 1.0)}
    assert len(reopened.read()) == 2
    assert not path.exists()
    assert (tmp_path / "parts" / "damaged" / path.name).exists()
    assert len(messages) == 1
    assert f"moved damaged part parts/{path.name} to parts/damaged/{path.name}" in messages[0]
    assert "recomputed" in messages[0]


def test_a_part_with_wrong_columns_is_damaged(tmp_path):
    messages = []
    store = new_store(tmp_path, messages=messages)
    store.write([(0, 1.0)], rows([(0, 1.0)]).drop(columns="x"))
    assert store.stored() == {}
    assert "wrong columns (missing ['x'], unexpected [])" in messages[0]


def test_stray_files_are_ignored_with_a_message_and_never_read(tmp_path):
    messages = []
    store = new_store(tmp_path, messages=messages)
    store.write([(0, 1.0)], rows([(0, 1.0)]))
    rows([(1, 2.0)]).to_parquet(tmp_path / "parts" / "mine.parquet")
    (tmp_path / "parts" / "notes.parquet").write_text("not parquet")
    other = ResultStore.for_sweep(tmp_path / "other", {"batch_size": 9}, GRID, log=messages.append)
    foreign = other.write([(1, 2.0)], rows([(1, 2.0)]))
    other.path(foreign).rename(store.path(foreign))
    (tmp_path / "parts" / ".abc.123.tmp").write_bytes(b"partial")  # an interrupted write
    assert set(store.stored()) == {(0, 1.0)}
    assert set(store.stored()) == {(0, 1.0)}  # each file reported once
    assert len(store.read()) == 2
    assert sorted(messages) == [
        f"ignoring parts/{foreign}.parquet: a part of another sweep",
        "ignoring parts/mine.parquet: not a jaxgrad part (its name is not a part id)",
        "ignoring parts/notes.parquet: not a jaxgrad part (its name is not a part id)",
    ]
    assert (tmp_path / "parts" / "notes.parquet").exists()  # a stray is left where it is
