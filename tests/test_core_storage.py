"""Raw packed states kept by a counter: in memory or in a zarr store on disk.

(Moved from the former tests/test_core_extra.py.)
"""

import numpy as np
import pytest
from reference import packed_states

from tensorstate_callbacks import StateCounter


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
