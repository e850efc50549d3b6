"""StateCounter: exact streaming counts, merging, the memory cap, raw storage."""

import math
import pickle
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from reference import (
    Expected,
    assert_counts_match,
    packed_states,
    unique_counts,
)

import tensorstate_callbacks as ts
from tensorstate_callbacks import StateCounter, StateSpaceMemoryWarning

ALPHAS = [0, 1, 2, math.inf]


def low_diversity(rng, rows, width, patterns=300):
    table = rng.standard_normal((patterns, width)).astype(np.float32)
    return table[rng.integers(0, patterns, size=rows)]


def assert_matches_reference(counter, x, neuron_axis=-1):
    assert_counts_match(counter, Expected.of_values(x, neuron_axis))


@pytest.mark.parametrize("width", [5, 20, 21, 50, 64, 65, 300, 4096])
@pytest.mark.parametrize("diverse", [True, False])
def test_counts_over_many_batches(width, diverse):
    rng = np.random.default_rng(width)
    rows = 90_000 if width <= 64 else 3_000
    x = rng.standard_normal((rows, width)).astype(np.float32) if diverse else \
        low_diversity(rng, rows, width)
    counter = StateCounter("layer")
    cuts = np.sort(rng.integers(0, rows, size=6))
    for part in np.split(x, cuts):  # includes empty and one-row-ish batches
        counter.add(part)
    counter.add(x[:1])
    assert_matches_reference(counter, np.concatenate([x, x[:1]]))


def test_threaded_path_and_channels_first():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 24, 40, 40)).astype(np.float32)  # 64,000 states per batch
    counter = StateCounter("conv")
    counter.add(x, neuron_axis=1)
    counter.add(x[:5], neuron_axis=1)
    assert_matches_reference(counter, np.concatenate([x, x[:5]]), neuron_axis=1)


def test_buffered_batches_are_counted_exactly(monkeypatch):
    """Small batches are packed straight into the counter's row buffer: filling it,
    overflowing it, a batch too big to buffer, a read, a copy and a reset must
    all see every row."""
    from tensorstate_callbacks.core import _row_buffer as row_buffer

    monkeypatch.setattr(row_buffer, "MAX_BYTES", 1 << 20)  # a smaller buffer: a quicker test
    rng = np.random.default_rng(7)
    rows = (1 << 20) // 7  # the buffer's rows of 7-byte (50-neuron) states
    # counted at once (the counter splits into shards), buffered, read (flushed),
    # buffered until one overflows the buffer, too big to buffer, empty, buffered
    sizes = [rows // 3, rows // 3, 5, rows // 3, rows // 3, rows // 3 + 1, rows * 3 // 5, 0, 3]
    parts = [rng.random((size, 50)) < 0.5 for size in sizes]  # all distinct, or nearly
    counter = StateCounter("buffered")
    for index, part in enumerate(parts):
        counter.add(part)
        if index == 2:
            assert counter.distinct_count == len(unique_counts(packed_states(
                np.concatenate(parts[:3])))[1])
    assert_matches_reference(pickle.loads(pickle.dumps(counter)), np.concatenate(parts))
    counter.add(parts[0][:10])
    assert_matches_reference(counter, np.concatenate(parts + [parts[0][:10]]))
    counter.add(parts[1][:10])
    counter.reset_states()
    counter.add(parts[2])
    assert_matches_reference(counter, parts[2])
    assert len(pickle.dumps(counter)) < 10_000  # 5 states; the buffer stays behind


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("diverse", [True, False])
def test_batch_of_several_chunks_into_shards(threads, diverse):
    """A batch of several partitioning chunks, into shards that already hold
    keys: mostly distinct rows are sketched ahead (each shard is sized once for
    the whole batch), repeated ones are not."""
    from tensorstate_callbacks.core import _table

    rng = np.random.default_rng(threads)
    rows = _table.CHUNK_ROWS * threads * 5 // 2
    patterns = rng.random((rows if diverse else 3_000, 40)) < 0.5
    x = patterns if diverse else patterns[rng.integers(0, len(patterns), size=rows)]
    counter = StateCounter("chunks", threads=threads)
    counter.add(x[:20_000])  # 20,000 distinct states: the counter splits into shards
    counter.add(x)
    assert_matches_reference(counter, np.concatenate([x[:20_000], x]))


@pytest.mark.parametrize("width", [20, 50, 100])  # dense table, keys in slots, in the arena
def test_parallel_counting_is_exact(width):
    """Batches big enough for the threaded path (partition by rows, insert by
    shards), unweighted and weighted (add_counts), give the single-thread counts."""
    rng = np.random.default_rng(width)
    half = 550_000 if width <= 20 else 100_000  # a dense table needs 2**20 rows to go parallel
    x = np.concatenate([rng.standard_normal((half, width)).astype(np.float32),
                        low_diversity(rng, half, width, patterns=5_000)])
    counters = [StateCounter(f"threads={threads}", threads=threads) for threads in (1, 2)]
    for counter in counters:
        counter.add(x)
        assert_matches_reference(counter, x)
    rebuilt = StateCounter("weighted", threads=2)
    rebuilt.add_counts(counters[1].state_ids(), counters[1].counts(), width)
    assert_matches_reference(rebuilt, x)


def test_merge_and_add_counts_are_exact():
    rng = np.random.default_rng(1)
    a, b = low_diversity(rng, 5000, 70), low_diversity(rng, 3000, 70)
    left, right = StateCounter("a"), StateCounter("b")
    left.add(a)
    right.add(b)
    left.merge(right)
    assert_matches_reference(left, np.concatenate([a, b]))
    rebuilt = StateCounter("c")
    rebuilt.add_counts(left.state_ids(), left.counts(), 70)
    assert_matches_reference(rebuilt, np.concatenate([a, b]))
    left.merge(StateCounter("empty"))
    assert left.state_count == 8000
    with pytest.raises(ValueError, match="neurons"):
        left.merge(_counter_of(np.ones((3, 8))))
    with pytest.raises(ValueError, match="itself"):
        left.merge(left)


def _counter_of(x, **options):
    counter = StateCounter("x", **options)
    counter.add(x)
    return counter


def test_reset_and_errors_on_empty():
    counter = _counter_of(np.ones((3, 4)))
    counter.reset_states()
    assert counter.state_count == 0 and counter.num_neurons is None
    for call in (counter.entropy, counter.efficiency, counter.counts, counter.max_entropy):
        with pytest.raises(ValueError, match="no states"):
            call()
    counter.add(np.ones((2, 9)))  # a new width is fine after a reset
    assert counter.max_entropy() == 9


def test_width_change_and_bad_packed_input():
    counter = _counter_of(np.ones((3, 4)))
    with pytest.raises(ValueError, match="4"):
        counter.add(np.ones((3, 5)))
    with pytest.raises(ValueError, match="padding"):
        counter.add_packed(np.array([[0xFF]], dtype=np.uint8), 4)
    with pytest.raises(ValueError, match="shape"):
        counter.add_packed(np.zeros((2, 2), dtype=np.uint8), 4)


@pytest.mark.parametrize("width", [12, 40, 200])
def test_memory_cap_spills_and_stays_exact(width, tmp_path):
    rng = np.random.default_rng(width)
    x = rng.standard_normal((60_000, width)).astype(np.float32)
    reference = _counter_of(x)
    counter = StateCounter("big", memory_limit=64 * 1024, spill_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for part in np.array_split(x, 7):
            counter.add(part)
    spills = [w for w in caught if issubclass(w.category, StateSpaceMemoryWarning)]
    assert len(spills) == 1 and "memory_limit" in str(spills[0].message)
    assert counter.is_spilled
    assert_matches_reference(counter, x)
    merged = StateCounter("merged", memory_limit=64 * 1024, spill_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StateSpaceMemoryWarning)
        merged.merge(counter)
        merged.merge(reference)
    assert_matches_reference(merged, np.concatenate([x, x]))
    assert any(tmp_path.iterdir())
    counter.reset_states()
    merged.reset_states()
    assert not any(tmp_path.iterdir())


def test_memory_limit_and_threads_validation():
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="memory_limit"):
            StateCounter(memory_limit=bad)
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            StateCounter(threads=bad)
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            StateCounter().add(np.ones((2, 3)), threads=bad)
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            StateCounter().add_packed(np.ones((2, 1), np.uint8), 3, threads=bad)
    counter = StateCounter(threads=2)
    x = np.random.default_rng(1).standard_normal((300_000, 8))  # large enough for threads
    counter.add(x, threads=1)
    assert_matches_reference(counter, x)


@pytest.mark.parametrize("on_disk", [False, True])
def test_raw_storage_keeps_order(on_disk, tmp_path):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((100_003, 21)).astype(np.float32)
    path = tmp_path / "conv_states" if on_disk else None
    counter = StateCounter("conv", store_states=not on_disk, storage_path=path)
    for part in np.array_split(x, 9):  # sharded after two parts: later parts are buffered
        counter.add(part)
    np.testing.assert_array_equal(counter.raw_states, packed_states(x))
    assert_matches_reference(counter, x)
    np.testing.assert_array_equal(counter.states, x > 0)
    if on_disk:
        np.testing.assert_array_equal(zarr.open_array(str(path))[:], packed_states(x))
    counter.reset_states()
    assert counter.raw_states.shape[0] == 0


def test_storage_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="storage path"):
        StateCounter(storage_path=blocker / "states")
    with pytest.raises(ValueError, match="store_states"):
        _ = _counter_of(np.ones((2, 3))).raw_states


def test_concurrent_counters_lose_nothing():
    rng = np.random.default_rng(6)
    batches = [rng.standard_normal((rng.integers(1, 400), 30)) for _ in range(300)]
    counters = [StateCounter(f"t{i}") for i in range(4)]

    def feed(counter):
        for batch in batches:
            counter.add(batch)

    threads = [threading.Thread(target=feed, args=(c,)) for c in counters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for counter in counters:
        assert_matches_reference(counter, np.concatenate(batches))


@pytest.mark.parametrize("threads", [2, 3])
def test_parallel_chunk_with_fewer_rows_than_threads(threads):
    """The last chunk of a threaded count can leave a thread no rows: it must not
    re-insert its share of the chunk before (which once counted 262,144 rows twice)."""
    from tensorstate_callbacks.core import _table

    rows = _table.CHUNK_ROWS * threads + threads - 1
    x = np.random.default_rng(threads).standard_normal((rows, 40)).astype(np.float32)
    counter = StateCounter("chunks", threads=threads)
    counter.add(x)
    assert_matches_reference(counter, x)


OUT_OF_MEMORY = """
import resource
import numpy as np
from tensorstate_callbacks import StateCounter
keys = np.random.default_rng(0).integers(0, 256, size=(2_000_000, 64), dtype=np.uint8)
counter = StateCounter("oom", threads=1)
counter.add_packed(keys[:1000], 512)
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + (64 << 20), resource.RLIM_INFINITY))
try:
    counter.add_packed(keys, 512)   # 2,000,000 distinct states need far more than 64 MiB
except MemoryError:
    print("MemoryError")
try:
    counter.entropy()
except RuntimeError as error:
    print(error)
counter.reset_states()
counter.add_packed(keys[:10], 512)
print(counter.distinct_count, counter.state_count)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and RLIMIT_AS")
def test_running_out_of_memory_is_reported_not_hidden():
    """A real out-of-memory (an address-space limit) while counting: add() raises
    MemoryError, every later read says the counts are incomplete, reset recovers."""
    out = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == "MemoryError"
    assert "ran out of memory" in out[1] and "reset_states()" in out[1]
    assert out[2] == "10 10"


def test_import_is_framework_free():
    code = ("import sys, tensorstate_callbacks; "
            "print('torch' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_public_api_names():
    for name in ("compress_states", "decompress_states", "sort_states", "entropy", "aIQ",
                 "network_efficiency", "build_efficiency_model", "reset_efficiency_model"):
        assert callable(getattr(ts, name))
