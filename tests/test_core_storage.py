"""Raw packed states kept by a counter: in memory or in a zarr store on disk.

A store writes only inside its own directory, deletes only what it wrote,
keeps names inside the root, and belongs to the process that made it.
"""

import gc
import multiprocessing
import sys

import numpy as np
import pytest
from reference import packed_states

from tensorstate_callbacks import StateCounter
from tensorstate_callbacks.core.storage import store_path


@pytest.mark.parametrize("width", [5, 21, 100, 2048 * 8])
def test_raw_storage_odd_batches(width, tmp_path):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(width)
    rows = 3_001 if width < 1000 else 300
    x = rng.standard_normal((rows, width)).astype(np.float32)
    path = tmp_path / "layer.zarr"
    memory, disk = StateCounter("m", store_states=True), StateCounter("d", storage_path=path)
    cuts = [0, 0, 1, 2, 77, 78, rows // 2 + 1, rows - 1]
    for part in np.split(x, cuts):
        memory.add(part)
        disk.add(part)
    for counter in (memory, disk):
        np.testing.assert_array_equal(counter.raw_states, packed_states(x))
        np.testing.assert_array_equal(counter.states, x > 0)
    stored = zarr.open_array(str(path), mode="r")
    assert stored.metadata.zarr_format == 3
    assert stored.shape == (rows, (width + 7) // 8) and stored.dtype == np.uint8
    assert any("blosc" in type(codec).__name__.lower() for codec in stored.compressors)
    np.testing.assert_array_equal(stored[:], packed_states(x))


def test_storage_path_errors(tmp_path):
    a_file = tmp_path / "plain"
    a_file.write_bytes(b"x")
    for bad in (a_file, a_file / "sub", a_file / "sub" / "deeper"):
        with pytest.raises(ValueError, match="storage path"):
            StateCounter("bad", storage_path=bad)
    with pytest.raises(ValueError, match="storage path"):
        StateCounter("bad", spill_dir=a_file / "spill")
    for bad in (0, -1, 2.5, "1GB"):
        with pytest.raises(ValueError, match="memory_limit"):
            StateCounter("bad", memory_limit=bad)


def test_storage_path_never_deletes_user_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("keep")
    (tmp_path / "sub" / "data.csv").write_text("keep")
    x = np.random.default_rng(14).standard_normal((50, 12))
    try:  # refusing a non-empty directory is fine, but only when the counter is created
        counter = StateCounter("user", storage_path=tmp_path)
    except ValueError as error:
        assert str(tmp_path) in str(error)
    else:
        counter.add(x)
        np.testing.assert_array_equal(counter.raw_states, packed_states(x))
    assert (tmp_path / "notes.txt").read_text() == "keep"
    assert (tmp_path / "sub" / "data.csv").read_text() == "keep"


def test_two_counters_on_one_storage_path(tmp_path):
    rng = np.random.default_rng(15)
    x, y = rng.standard_normal((40, 4)), rng.standard_normal((30, 9))
    first = StateCounter("first", storage_path=tmp_path / "states")
    first.add(x)
    try:
        second = StateCounter("second", storage_path=tmp_path / "states")
    except ValueError as error:
        assert "states" in str(error)
    else:
        second.add(y)
        np.testing.assert_array_equal(second.raw_states, packed_states(y))
    first.add(x)
    np.testing.assert_array_equal(first.raw_states, packed_states(np.concatenate([x, x])))


def _write_states(path, x):
    counter = StateCounter("writer", storage_path=path)
    counter.add(x)
    del counter
    gc.collect()  # frees the path for the next store


@pytest.mark.parametrize("intruder", ["notes.txt", "sub/data.csv", "c/readme.txt",
                                      "c/0/notes.txt"])
def test_an_old_store_with_other_files_is_refused_and_kept(tmp_path, intruder):
    """A directory with this package's marker but also files it did not write is
    refused when the counter is created; nothing there is deleted."""
    pytest.importorskip("zarr")
    x = np.random.default_rng(16).standard_normal((40, 12))
    path = tmp_path / "states"
    _write_states(path, x)
    (path / intruder).parent.mkdir(parents=True, exist_ok=True)
    (path / intruder).write_text("keep")
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    with pytest.raises(ValueError, match="did not write"):
        StateCounter("second", storage_path=path)
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before
    assert (path / intruder).read_text() == "keep"


def test_an_old_store_of_ours_alone_is_replaced(tmp_path):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(17)
    x, y = rng.standard_normal((3000, 12)), rng.standard_normal((20, 12))
    path = tmp_path / "states"
    _write_states(path, x)
    counter = StateCounter("second", storage_path=path)
    counter.add(y)
    np.testing.assert_array_equal(counter.raw_states, packed_states(y))
    np.testing.assert_array_equal(zarr.open_array(str(path), mode="r")[:], packed_states(y))
    assert [p.name for p in tmp_path.iterdir()] == ["states"]  # nothing written beside it


@pytest.mark.parametrize("name", ["/etc", "../outside", "..", ".", "", "a/b", "a/../../b"])
def test_store_names_cannot_leave_the_root(tmp_path, name):
    with pytest.raises(ValueError, match="one plain directory name"):
        store_path(tmp_path, name)


def test_store_names_stay_inside_the_root(tmp_path):
    for name in ("conv_1_post_states", "..hidden", "a..b", "layer name"):
        assert store_path(tmp_path, name).parent == tmp_path


def _child_adds(connection, counter, x):
    try:
        counter.add(x)
        connection.send(("added", counter.state_count))
    except ValueError as error:
        connection.send((str(error), counter.state_count))


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_forked_child_cannot_append_to_the_parents_store(tmp_path):
    pytest.importorskip("zarr")
    x = np.random.default_rng(18).standard_normal((30, 9))
    counter = StateCounter("parent", storage_path=tmp_path / "states")
    counter.add(x)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_adds, args=(send, counter, x))
    child.start()
    assert receive.poll(120), "the forked child did not answer"
    message, child_count = receive.recv()
    child.join(30)
    assert "forked process cannot append" in message and str(tmp_path / "states") in message
    assert child_count == 30  # refused before counting: the child's counter is as it was
    np.testing.assert_array_equal(counter.raw_states, packed_states(x))
