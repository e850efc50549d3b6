"""The counter's engine against plain NumPy: hypothesis-chosen batch sequences, big
threaded and sharded batches, add_counts, spilling to disk, threads, copies.
"""

import math
import threading
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import Expected, assert_counts_match, packed_states, renyi_entropy, unique_counts

from tensorstate_callbacks import StateCounter, StateSpaceMemoryWarning
from tensorstate_callbacks.states import pack

ALPHAS = [0, 0.5, 1, 2, 3.7, math.inf]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 140), st.lists(st.integers(0, 300), min_size=1, max_size=12),
       st.integers(1, 64), st.data())
def test_counter_batches_property(width, sizes, patterns, data):
    rng = np.random.default_rng(width * 7919 + sum(sizes))
    table = rng.standard_normal((patterns, width)).astype(np.float32)
    batches = [table[rng.integers(0, patterns, size=n)] for n in sizes]
    counter = StateCounter("layer")
    for batch in batches:
        how = data.draw(st.sampled_from(["add", "fortran", "packed"]))
        if how == "add":
            counter.add(batch)
        elif how == "fortran":
            counter.add(np.asfortranarray(batch.T), neuron_axis=0)
        else:
            counter.add_packed(packed_states(batch), width)
    everything = packed_states(np.concatenate(batches))
    if len(everything) == 0:
        with pytest.raises(ValueError, match="no states"):
            counter.entropy()
        return
    assert_counts_match(counter, Expected.of_packed(everything, width), alphas=ALPHAS)


@pytest.mark.parametrize("width", [3, 16, 20, 24, 64, 65, 1000, 4096])
def test_counter_big_batches_threaded_and_sharded(width):
    rng = np.random.default_rng(width)
    rows = 200_000 if width <= 64 else 70_000 if width <= 1000 else 20_000
    x = (rng.random((rows, width)) < 0.5).astype(np.uint8)
    x[rows // 2:] = x[: rows - rows // 2]  # every state at least twice
    counter = StateCounter("wide")
    counter.add(x[:66_000])
    counter.add(x[66_000:66_001])
    counter.add(x[66_001:66_001])
    counter.add(x[66_001:])
    assert_counts_match(counter, Expected.of_values(x), alphas=ALPHAS)


def test_counter_other_inputs():
    rng = np.random.default_rng(8)
    counter = StateCounter("vec")
    one = rng.standard_normal(30)
    counter.add(one)  # 1-D: a single state
    assert counter.state_count == 1 and counter.max_entropy() == 30
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = rng.standard_normal((500, 30)).astype(ml_dtypes.bfloat16)
    counter.add(x.view(np.int16), dtype="bfloat16")
    counter.add(x)
    expected = np.concatenate([packed_states(one[None]), packed_states(x.astype(np.float32)),
                               packed_states(x.astype(np.float32))])
    assert_counts_match(counter, Expected.of_packed(expected, 30), alphas=ALPHAS)


@pytest.mark.parametrize("width", [8, 40])
def test_add_counts_with_zero_counts(width):
    ids = np.zeros((3, (width + 7) // 8), dtype=np.uint8)
    ids[:, 0] = [1, 2, 3]
    counter = StateCounter("z")
    counter.add_counts(ids, np.array([0, 5, 0]), width)
    assert counter.distinct_count == 1
    assert counter.state_ids().tolist() == [ids[1].tolist()]
    assert counter.counts().tolist() == [5]


def test_add_counts_rejects_negative_counts():
    with pytest.raises(ValueError, match="count"):
        StateCounter("n").add_counts(np.array([[1], [2]], np.uint8), np.array([-1, 3]), 8)


def test_add_counts_shape_errors():
    counter = StateCounter("s")
    with pytest.raises(ValueError, match="row"):
        counter.add_counts(np.array([[1], [2]], np.uint8), np.array([1, 2, 3]), 8)
    with pytest.raises(ValueError, match="width"):
        StateCounter("w").add_counts(np.zeros((2, 2), np.uint8), np.array([1, 2]), 8)


@pytest.mark.parametrize("width", [11, 30, 700])
def test_spill_everything_stays_exact(width, tmp_path):
    rng = np.random.default_rng(width)
    x = rng.random((30_000, width)) < 0.5
    if width == 11:  # 2048 possible states: the cap must be tiny to spill
        limit = 4 * 1024
    else:
        limit = 64 * 1024
    spilled = StateCounter("spilled", memory_limit=limit, spill_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for part in np.array_split(x, [0, 1, 1, 4_999, 17_777]):
            spilled.add(part)
        spilled.add(x[:1000])  # repeats of states already on disk
    memory_warnings = [w for w in caught if issubclass(w.category, StateSpaceMemoryWarning)]
    assert len(memory_warnings) == 1, [str(w.message) for w in caught]
    assert spilled.name in str(memory_warnings[0].message)
    assert spilled.is_spilled
    expected = packed_states(np.concatenate([x, x[:1000]]))
    assert_counts_match(spilled, Expected.of_packed(expected, width), alphas=ALPHAS)

    in_memory = StateCounter("memory")
    in_memory.add(x[:5000])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StateSpaceMemoryWarning)
        in_memory.merge(spilled)  # spilled into in-memory
        other = StateCounter("other", memory_limit=limit, spill_dir=tmp_path)
        other.add(x[::-1])
        other.merge(spilled)  # spilled into spilled
    assert_counts_match(in_memory, Expected.of_packed(
        np.concatenate([packed_states(x[:5000]), expected]), width), alphas=ALPHAS)
    assert_counts_match(other, Expected.of_packed(
        np.concatenate([packed_states(x), expected]), width), alphas=ALPHAS)
    assert not in_memory.is_spilled and other.is_spilled

    for counter in (spilled, other):
        counter.reset_states()
        assert not counter.is_spilled
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no states"):
        spilled.entropy()


def test_spill_reset_and_refill(tmp_path):
    x = np.random.default_rng(9).random((20_000, 40)) < 0.5
    counter = StateCounter("again", memory_limit=64 * 1024, spill_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StateSpaceMemoryWarning)
        for _ in range(2):
            counter.add(x)
            assert counter.is_spilled
            assert_counts_match(counter, Expected.of_values(x), alphas=[1, math.inf])
            counter.reset_states()
    assert list(tmp_path.iterdir()) == []


def test_threads_feeding_separate_counters_with_big_batches():
    rng = np.random.default_rng(10)
    batches = [(rng.random((int(n), 30)) < 0.3).astype(np.float32)
               for n in rng.choice([0, 1, 7, 70_000, 90_001], size=24)]
    expected = packed_states(np.concatenate(batches))
    counters = [StateCounter(f"t{i}") for i in range(3)]
    errors = []

    def feed(counter, order):
        try:
            for i in order:
                counter.add(batches[i])
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=feed, args=(c, rng.permutation(len(batches))))
               for c in counters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for counter in counters:
        assert_counts_match(counter, Expected.of_packed(expected, 30), alphas=[0, 1, math.inf])


def _resident_mib():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


def test_short_lived_threads_do_not_leak():
    rng = np.random.default_rng(11)
    counter = StateCounter("leak")
    counter.add(rng.random((40_000, 40)) < 0.5)  # > 16,384 distinct: sharded tables
    batch = rng.random((60_000, 40)) < 0.5  # < 65,536 rows: counted in the caller's thread
    counter.add(batch)
    before = _resident_mib()
    for _ in range(100):  # as torch.nn.DataParallel runs hooks in new threads every batch
        thread = threading.Thread(target=counter.add, args=(batch,))
        thread.start()
        thread.join()
    assert _resident_mib() - before < 40  # the leak is about 1.4 MiB per thread here
    assert counter.state_count == 40_000 + 101 * 60_000


def test_large_alpha_on_a_spilled_counter(tmp_path):
    x = np.random.default_rng(12).random((30_000, 40)) < 0.5
    spilled = StateCounter("spilled", memory_limit=64 * 1024, spill_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StateSpaceMemoryWarning)
        spilled.add(x)
        spilled.add(x[:10])
    assert spilled.is_spilled
    _, counts = unique_counts(packed_states(np.concatenate([x, x[:10]])))
    for alpha in (50, 500, 5000):
        assert spilled.entropy(alpha) == pytest.approx(renyi_entropy(counts, alpha), rel=1e-9)


def test_integer_like_memory_limit_and_long_double():
    assert StateCounter("n", memory_limit=np.int64(4096)).memory_limit == 4096
    x = np.random.default_rng(13).standard_normal((9, 21)).astype(np.longdouble)
    np.testing.assert_array_equal(pack(x), packed_states(x))


@pytest.mark.parametrize("width", [6, 40, 300])
def test_counter_deepcopy_and_pickle(width):
    import copy
    import pickle

    x = np.random.default_rng(width).random((3000, width)) < 0.5
    original = StateCounter("orig", store_states=True)
    original.add(x)
    for clone in (copy.deepcopy(original), pickle.loads(pickle.dumps(original))):
        clone.add(x[:10])  # must not change the original
        assert_counts_match(clone, Expected.of_values(np.concatenate([x, x[:10]])), alphas=ALPHAS)
        np.testing.assert_array_equal(clone.states, np.concatenate([x, x[:10]]))
    assert_counts_match(original, Expected.of_values(x), alphas=ALPHAS)


SHARED_COUNTER_SCRIPT = """
import threading
import numpy as np
from tensorstate_callbacks import StateCounter
rng = np.random.default_rng(0)
batches = [rng.random((int(n), 30)) < 0.5 for n in rng.integers(1000, 30000, size=40)]
packed = np.packbits(np.concatenate(batches), axis=1, bitorder="little")
keys, counts = np.unique(packed, axis=0, return_counts=True)
for trial in range(3):
    counter = StateCounter("shared")
    def feed(part):
        for batch in part:
            counter.add(batch)
    threads = [threading.Thread(target=feed, args=(batches[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.state_count == len(packed), (counter.state_count, len(packed))
    assert sorted(counter.counts().tolist()) == sorted(counts.tolist())
print("ok")
"""


def test_threads_sharing_one_counter():
    # As torch.nn.DataParallel feeds one probe from one thread per replica.  In a
    # subprocess, so that heap corruption fails this test instead of killing pytest.
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", SHARED_COUNTER_SCRIPT], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


@pytest.mark.parametrize("width, rows, how", [
    (12, 1 << 20, "dense, threaded copies"), (40, 30_000, "hashed, sharded"),
    (100, 5_000, "wide"), (12, 3_000, "labelled"), (30, 20_000, "spilled")])
def test_reads_between_batches_see_every_state(width, rows, how, tmp_path):
    """Entropy, coverage and firing counts, read after each batch (a counter
    reads them from its tables once they last changed), equal NumPy's over
    every state counted so far, however the counts are kept."""
    rng = np.random.default_rng(width)
    limit = 64 * 1024 if how == "spilled" else None
    counter = StateCounter("layer", memory_limit=limit, spill_dir=tmp_path)
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StateSpaceMemoryWarning)
        for _ in range(3):
            x = rng.random((rows, width)) < rng.uniform(0.2, 0.8)
            if how == "labelled":
                counter.add(x, labels=rng.integers(0, 3, rows))
            else:
                counter.add(x, threads=2 if how.startswith("dense") else None)
            seen.append(x)
            everything = np.concatenate(seen)
            _, counts = unique_counts(packed_states(everything))
            for alpha in (0, 1, math.inf):
                assert counter.entropy(alpha) == pytest.approx(renyi_entropy(counts, alpha),
                                                               rel=1e-12, abs=1e-12)
            assert counter.coverage() == 1 - np.count_nonzero(counts == 1) / len(everything)
            np.testing.assert_array_equal(counter.firing_counts(), everything.sum(axis=0))
            assert counter.distinct_count == len(counts)
    assert counter.is_spilled == (how == "spilled")


@pytest.mark.parametrize("width", [24, 64, 65, 300])
def test_reset_keeps_the_hash_tables_for_the_next_epoch(width):
    """A layer's next epoch counts into the tables of the last (cleared, not
    made anew), exactly, with fewer and with more states than before, and
    rows still buffered at the reset are forgotten."""
    rng = np.random.default_rng(width)
    epochs = [(rng.random((rows, width)) < 0.5).astype(np.float32)
              for rows in (40_000, 5_000, 60_000)]
    counter = StateCounter("layer")
    engine = None
    for x in epochs:
        counter.add(x[:100])  # buffered: forgotten by the reset below
        counter.reset_states()
        for start in range(0, len(x), 4_096):  # probe-sized batches, buffered
            counter.add(x[start:start + 4_096], threads=1)
        counter.add(x[:7])
        expected = np.concatenate([x, x[:7]])
        assert_counts_match(counter, Expected.of_values(expected), alphas=[0, 1, math.inf])
        assert engine is None or counter._engine is engine  # the same tables again
        engine = counter._engine


def test_reset_then_another_width_or_labels_counts_anew():
    rng = np.random.default_rng(3)
    counter = StateCounter("layer")
    counter.add(rng.random((30_000, 40)) < 0.5)
    counter.reset_states()
    other = rng.random((20_000, 70)) < 0.5  # another width: new tables
    counter.add(other)
    assert_counts_match(counter, Expected.of_values(other), alphas=[1])
    counter.reset_states()
    labels = rng.integers(0, 3, size=len(other))
    counter.add(other, labels=labels)
    assert_counts_match(counter, Expected.of_values(other), alphas=[1])
    counter.reset_states()
    counter.add(other[:500])
    assert_counts_match(counter, Expected.of_values(other[:500]), alphas=[1])


def test_a_failed_first_batch_after_reset_leaves_the_counter_usable():
    rng = np.random.default_rng(4)
    x = rng.random((30_000, 40)) < 0.5
    counter = StateCounter("layer")
    counter.add(x)
    counter.reset_states()
    with pytest.raises(TypeError):
        counter.add(np.array([["a", "b"]]))
    counter.add(x[:9_000])
    assert_counts_match(counter, Expected.of_values(x[:9_000]), alphas=[1])
