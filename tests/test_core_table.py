"""The compiled counting core (``core._table``), called directly and checked
against plain NumPy (``np.unique`` over rows): exact counts per state."""

import numpy as np
import pytest

from tensorstate_callbacks.core import _pack, _table

CHUNK = _table.CHUNK_ROWS


def as_rows(keys):
    """One sortable np.void per row of a uint8[n, width] array."""
    keys = np.ascontiguousarray(keys)
    return keys.view(np.dtype((np.void, keys.shape[1]))).ravel()


def reference(keys, weights=None):
    """Distinct rows (sorted) and their counts; zero counts dropped."""
    rows, inverse = np.unique(as_rows(keys), return_inverse=True)
    counts = np.zeros(len(rows), dtype=np.uint64)
    np.add.at(counts, inverse.ravel(), np.uint64(1) if weights is None else weights)
    keep = counts != 0
    return rows[keep], counts[keep]


def contents(tables):
    """Every table's (state, count) pairs together, sorted by state."""
    keys, counts = zip(*(table.items() for table in tables))
    rows, counts = as_rows(np.concatenate(keys)), np.concatenate(counts)
    order = np.argsort(rows, kind="stable")
    return rows[order], counts[order]


def assert_counts(tables, keys, weights=None):
    """The tables hold exactly the states of ``keys`` with their counts, each
    state in one table only."""
    want_rows, want_counts = reference(keys, weights)
    got_rows, got_counts = contents(tables)
    assert len(got_rows) == len(want_rows)
    np.testing.assert_array_equal(got_rows, want_rows)
    np.testing.assert_array_equal(got_counts, want_counts)
    assert sum(table.distinct for table in tables) == len(want_rows)
    for table in tables:
        np.testing.assert_array_equal(np.sort(table.counts()), np.sort(table.items()[1]))


def make_keys(rng, rows, width, patterns=None):
    """uint8[rows, width]: random rows, or rows drawn from ``patterns`` random ones."""
    if patterns is None:
        return rng.integers(0, 256, size=(rows, width), dtype=np.uint8)
    pool = rng.integers(0, 256, size=(patterns, width), dtype=np.uint8)
    return pool[rng.integers(0, patterns, size=rows)]


def hash_tables(width, shards):
    return [_table.CountTable(width) for _ in range(shards)]


# -- hash tables ----------------------------------------------------------------------

@pytest.mark.parametrize("width", [1, 3, 8, 9, 33])  # keys in slots (<= 8 bytes), in the arena
@pytest.mark.parametrize("shards", [1, 256])
@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_count_rows_matches_numpy(width, shards, threads):
    rng = np.random.default_rng(width * 1000 + shards + threads)
    keys = np.concatenate([make_keys(rng, 6_000, width), make_keys(rng, 14_000, width, 500)])
    tables = hash_tables(width, shards)
    _table.count_rows(tables, keys, threads=threads)
    assert_counts(tables, keys)


@pytest.mark.parametrize("width", [2, 8, 12])
@pytest.mark.parametrize("shards", [1, 256])
@pytest.mark.parametrize("threads", [1, 3])
def test_weighted_counts(width, shards, threads):
    """Each row counts its weight; rows of weight 0 add no state."""
    rng = np.random.default_rng(width + shards + threads)
    keys = make_keys(rng, 30_000, width, 2_000)
    weights = rng.integers(0, 4, size=len(keys), dtype=np.uint64)
    weights[::7] = 1 << 40  # counts beyond 32 bits stay exact
    tables = hash_tables(width, shards)
    _table.count_rows(tables, keys, weights, threads=threads)
    assert_counts(tables, keys, weights)
    zero = make_keys(rng, 50, width)
    before = contents(tables)
    _table.count_rows(tables, zero, np.zeros(50, dtype=np.uint64), threads=threads)
    np.testing.assert_array_equal(contents(tables)[0], before[0])


@pytest.mark.parametrize("width", [4, 16])
def test_threads_fill_the_same_shards(width):
    """A state's shard depends on its hash alone, not on the threads."""
    rng = np.random.default_rng(width)
    keys = make_keys(rng, 40_000, width, 10_000)
    by_threads = []
    for threads in (1, 4):
        tables = hash_tables(width, 256)
        _table.count_rows(tables, keys, threads=threads)
        by_threads.append([contents([table]) for table in tables])
    for (rows_1, counts_1), (rows_4, counts_4) in zip(*by_threads):
        np.testing.assert_array_equal(rows_1, rows_4)
        np.testing.assert_array_equal(counts_1, counts_4)


@pytest.mark.parametrize("width", [5, 10])
def test_counts_add_up_over_calls(width):
    """Counting into tables that already hold states: a single table that grows
    many times, and shards fed batch after batch."""
    rng = np.random.default_rng(width)
    batches = [make_keys(rng, rows, width, patterns)
               for rows, patterns in ((50_000, None), (20_000, 3_000), (1, None), (30_000, None))]
    for shards, threads in ((1, 1), (256, 2)):
        tables = hash_tables(width, shards)
        for batch in batches:
            _table.count_rows(tables, batch, threads=threads)
        assert_counts(tables, np.concatenate(batches))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("diverse", [True, False])
def test_batch_of_several_chunks(threads, diverse):
    """More rows than one chunk per thread, into shards that already hold
    states: mostly distinct rows are sketched ahead, repeated ones are not."""
    rng = np.random.default_rng(threads + 10 * diverse)
    rows = CHUNK * threads * 2 + 123
    keys = make_keys(rng, rows, 5, None if diverse else 5_000)
    tables = hash_tables(5, 256)
    _table.count_rows(tables, keys[:20_000], threads=threads)
    _table.count_rows(tables, keys, threads=threads)
    assert_counts(tables, np.concatenate([keys[:20_000], keys]))


@pytest.mark.parametrize("threads", [2, 3])
def test_last_chunk_with_fewer_rows_than_threads(threads):
    """Threads left without rows in the last chunk must not count their share
    of the chunk before again."""
    rng = np.random.default_rng(threads)
    keys = make_keys(rng, CHUNK * threads + threads - 1, 6)
    weights = rng.integers(1, 3, size=len(keys), dtype=np.uint64)
    tables = hash_tables(6, 256)
    _table.count_rows(tables, keys, weights, threads=threads)
    assert_counts(tables, keys, weights)


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_fewer_rows_than_threads(rows):
    keys = make_keys(np.random.default_rng(rows), rows, 9)
    tables = hash_tables(9, 256)
    _table.count_rows(tables, keys, threads=4)
    assert_counts(tables, keys)


def test_more_threads_than_shards():
    keys = make_keys(np.random.default_rng(0), 5_000, 3, 700)
    tables = hash_tables(3, 2)
    _table.count_rows(tables, keys, threads=_table.MAX_THREADS + 5)
    assert_counts(tables, keys)


# -- dense tables ---------------------------------------------------------------------

def dense_keys(rng, rows, bits):
    """States of ``bits`` neurons as little-endian bytes (the high bits clear)."""
    states = rng.integers(0, 1 << bits, size=rows, dtype=np.uint64)
    return np.ascontiguousarray(states.view(np.uint8).reshape(rows, 8)[:, :(bits + 7) // 8])


@pytest.mark.parametrize("bits", [1, 8, 13, 20])
@pytest.mark.parametrize("copies", [1, 2, 4])
@pytest.mark.parametrize("weighted", [False, True])
def test_dense_counts_and_fold(bits, copies, weighted):
    """Counting into several copies of a dense table (one thread each), then
    folding them into the first, gives the counts of one table."""
    rng = np.random.default_rng(bits * 10 + copies)
    keys = dense_keys(rng, 50_001, bits)
    weights = rng.integers(0, 3, size=len(keys), dtype=np.uint64) if weighted else None
    tables = [_table.CountTable((bits + 7) // 8, bits) for _ in range(copies)]
    _table.count_dense(tables, keys, weights)
    shares = [contents([table])[1] for table in tables]
    total = len(keys) if weights is None else int(weights.sum())
    assert sum(int(counts.sum()) for counts in shares) == total
    for copy in tables[1:]:
        _table.fold_dense(tables[0], copy)
        assert copy.distinct == 0 and len(copy.counts()) == 0
    assert_counts(tables[:1], keys, weights)
    if copies > 1:  # each copy counted a share of the rows: none held them all
        assert all(counts.sum() < total for counts in shares)
    keys = tables[0].items()[0].astype(np.uint64)
    states = (keys << (8 * np.arange(keys.shape[1], dtype=np.uint64))).sum(axis=1)
    assert np.all(np.diff(states) > 0)  # in increasing order of the states as integers


@pytest.mark.parametrize("bits", [3, 12, 20])
@pytest.mark.parametrize("per_sample", [1, 7])
@pytest.mark.parametrize("threads", [1, 3])
def test_dense_slabs_count_each_label_apart(bits, per_sample, threads):
    """Each sample's states go to its label's slab: slab k holds exactly the
    states of the samples labelled k, whatever the threads."""
    rng = np.random.default_rng(bits + per_sample + threads)
    samples = 3_001
    keys = dense_keys(rng, samples * per_sample, bits)
    slab_of = rng.integers(0, 5, size=samples).astype(np.int32)
    slabs = [_table.CountTable((bits + 7) // 8, bits, narrow=True) for _ in range(5)]
    for part in (slice(0, 1000), slice(1000, samples)):  # counts add up over calls
        rows = slice(part.start * per_sample, part.stop * per_sample)
        _table.count_dense_slabs(slabs, keys[rows], per_sample, slab_of[part], threads)
    label_of_row = np.repeat(slab_of, per_sample)
    for slab, table in enumerate(slabs):
        assert_counts([table], keys[label_of_row == slab])
    # a byte a cell, and the 32-bit cells and list of the counts past 255 (made by the first)
    assert slabs[0].is_narrow and slabs[0].memory == _table.narrow_memory(bits) == 9 << bits
    total = _table.CountTable((bits + 7) // 8, bits)  # 64-bit counts: the sum over labels
    _table.sum_dense(total, slabs)
    assert_counts([total], keys)


@pytest.mark.parametrize("threads", [1, 2])
def test_slab_counts_past_a_byte_are_exact(threads):
    """A slab keeps a byte a count, and what passes 255 in cells of its own:
    counts either side of 255, 510 and 765, counted one by one (on threads)
    and with weights (merging), read as items, counts and the sum over
    labels, with the pairs' sums, against NumPy; the slabs' memory comes back
    zeroed from the cache of freed tables."""
    rng = np.random.default_rng(threads)
    bits = 10
    for _ in range(2):  # the second time from the freed tables
        slabs = [_table.CountTable(2, bits, narrow=True) for _ in range(3)]
        targets = np.array([1, 254, 255, 256, 257, 509, 510, 511, 765, 766, 1000, 70_000])
        states = rng.choice(1 << bits, size=len(targets), replace=False)
        rows = np.repeat(states, targets)  # each state `target` times, one slab per state
        slab_of_row = np.repeat(np.arange(len(targets)) % 3, targets).astype(np.int32)
        order = rng.permutation(len(rows))
        rows, slab_of_row = rows[order], slab_of_row[order]
        keys = rows.astype("<u2").view(np.uint8).reshape(-1, 2)
        half = len(rows) // 2
        _table.count_dense_slabs(slabs, keys[:half], 1, slab_of_row[:half], threads)
        _table.count_dense_slabs(slabs, keys[half:], 1, slab_of_row[half:], threads)
        weighted = rng.choice(np.setdiff1d(np.arange(1 << bits), states), size=4, replace=False)
        weights = np.array([200, 255, 256, 3_000_000], np.uint64)
        for extra in (weights, weights):  # twice: past a byte from below and from above
            _table.count_narrow(slabs[0], weighted.astype("<u2").view(np.uint8).reshape(-1, 2),
                                extra)
        for slab, table in enumerate(slabs):
            expected = {int(state): int(target) for state, target, index
                        in zip(states, targets, range(len(targets))) if index % 3 == slab}
            if slab == 0:
                expected.update({int(state): 2 * int(w) for state, w in zip(weighted, weights)})
            got_keys, got_counts = table.items()
            got = dict(zip(got_keys.view("<u2").reshape(-1).tolist(), got_counts.tolist()))
            assert got == expected and table.distinct == len(expected)
            np.testing.assert_array_equal(table.counts(), got_counts)
        pairs = np.concatenate([slab.counts() for slab in slabs])
        total = _table.CountTable(2, bits)
        sums = _table.sum_dense(total, slabs)
        expected = numpy_sums(pairs)
        assert sums[:3] == expected[:3] and sums[3] == pytest.approx(expected[3], rel=1e-12)
        total_keys, total_counts = total.items()
        assert total_counts.sum() == pairs.sum() and len(total_counts) == len(pairs)
        del slabs, total


def test_sum_dense_of_more_slabs_than_a_16_bit_sum_holds():
    """The slabs' bytes are added up in 16-bit sums of up to 257 slabs (255
    each at most) before the 64-bit total: 300 slabs of full bytes, some
    past 255, sum exactly."""
    bits = 3
    every_state = np.arange(1 << bits, dtype=np.uint8).reshape(-1, 1)
    slabs = [_table.CountTable(1, bits, narrow=True) for _ in range(300)]
    expected = np.zeros(1 << bits, np.uint64)
    for index, slab in enumerate(slabs):
        weights = np.full(1 << bits, 255, np.uint64)
        weights[index % (1 << bits)] = 1000 + index  # past a byte
        _table.count_narrow(slab, every_state, weights)
        expected += weights
    total = _table.CountTable(1, bits)
    sums = _table.sum_dense(total, slabs)
    keys, counts = total.items()
    np.testing.assert_array_equal(keys[:, 0], np.arange(1 << bits))
    np.testing.assert_array_equal(counts, expected)
    pairs = np.concatenate([slab.counts() for slab in slabs])
    reference_sums = numpy_sums(pairs)
    assert sums[:3] == reference_sums[:3]
    assert sums[3] == pytest.approx(reference_sums[3], rel=1e-12)


def numpy_sums(counts):
    """(distinct, singletons, largest, sum c log2 c) of counts, by NumPy."""
    counts = counts[counts > 0].astype(np.float64)
    return (len(counts), int(np.sum(counts == 1)), int(counts.max(initial=0)),
            float(np.sum(counts * np.log2(counts))))


@pytest.mark.parametrize("rows_per_round", [40, 3_000])
def test_sum_dense_gives_the_total_and_the_sums_of_the_pairs(rows_per_round):
    """Summing the slabs again after each round of counting into them (the
    total overwritten), the total and the pairs' sums (read in the same pass)
    equal NumPy's; slabs taken from the cache start empty."""
    rng = np.random.default_rng(rows_per_round)
    bits, labels = 12, 3  # lists of 256 cells
    slabs = [_table.CountTable(2, bits, narrow=True) for _ in range(labels)]
    total = _table.CountTable(2, bits)
    keys, slab_of = np.empty((0, 2), np.uint8), np.empty(0, np.int32)
    for round_ in range(4):
        more = dense_keys(rng, rows_per_round, bits)
        more[::3] = more[0]  # counts above 1
        more_slabs = rng.integers(0, labels, size=len(more)).astype(np.int32)
        more_slabs[:5] = 0
        _table.count_dense_slabs(slabs, more, 1, more_slabs)
        keys, slab_of = np.concatenate([keys, more]), np.concatenate([slab_of, more_slabs])
        pairs = [reference(keys[slab_of == slab])[1] for slab in range(labels)]
        expected = numpy_sums(np.concatenate(pairs))
        got = _table.sum_dense(total if round_ % 2 else None, slabs)  # None: sums alone
        assert got[:3] == expected[:3] and got[3] == pytest.approx(expected[3], rel=1e-12)
    assert_counts([total], keys)
    del slabs
    fresh = [_table.CountTable(2, bits, narrow=True) for _ in range(2 * labels)]
    every_state = np.arange(1 << bits, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
    for slab in fresh:  # from the cache of freed tables (or fresh memory)
        _table.count_dense_slabs([slab], every_state, 1 << bits, np.zeros(1, np.int32))
        assert slab.distinct == 1 << bits and set(slab.counts().tolist()) == {1}


@pytest.mark.parametrize("width", [1, 3, 9, 256])
def test_firing_counts_from_byte_histograms_equal_numpy(width):
    """Each bit's count of states with it set, from the byte histograms, equals
    NumPy's sum over the unpacked keys (counts near 2**63 too: exact in 64 bits)."""
    rng = np.random.default_rng(width)
    keys = rng.integers(0, 256, size=(500, width), dtype=np.uint8)
    counts = rng.integers(1, 1 << 50, size=500, dtype=np.uint64)
    counts[0] = (1 << 62) + 1  # past float64's exact integers
    hist = np.zeros((width, 256), np.uint64)
    _table.byte_histograms(keys, counts, hist)
    bits = np.unpackbits(keys, axis=1, bitorder="little").astype(bool)
    expected = [sum(int(c) for c, fired in zip(counts, column) if fired) for column in bits.T]
    assert _table.firing_counts(hist).tolist() == expected
    with pytest.raises(ValueError, match="256 columns"):
        _table.firing_counts(np.zeros((2, 255), np.uint64))


@pytest.mark.parametrize("large_cells", [50, 200])
def test_slab_sums_equal_numpy(large_cells):
    """The sums over a slab's counts (tallied by value below 64, one by one
    above): merged (weighted) counts, small and large, then unit counts that
    carry cells past 64, give NumPy's sums."""
    rng = np.random.default_rng(large_cells)
    slab = _table.CountTable(2, 12, narrow=True)
    states = rng.permutation(1 << 12)[:1000].astype(np.uint16)
    weights = rng.integers(1, 33, size=1000, dtype=np.uint64)
    weights[:large_cells] = rng.integers(64, 1 << 20, size=large_cells, dtype=np.uint64)
    keys = states.view(np.uint8).reshape(-1, 2)
    _table.count_narrow(slab, keys, weights)
    _table.count_narrow(slab, keys[:900], np.ones(900, np.uint64))  # counts move up by one
    again = np.repeat(keys[990:], 40, axis=0)  # a few cells go past 64 one count at a time
    _table.count_dense_slabs([slab], again, len(again), np.zeros(1, np.int32))
    expected = numpy_sums(slab.counts())
    got = _table.sum_dense(None, [slab])
    assert got[:3] == expected[:3] and got[3] == pytest.approx(expected[3], rel=1e-12)
    with pytest.raises(ValueError, match="dense_bits=21"):
        _table.narrow_memory(21)


@pytest.mark.parametrize("word_bits", [3, 16, 21, 32])
def test_word_sums_equal_numpy(word_bits):
    """The sums over how often each distinct word occurs, by the counting sort,
    equal NumPy's, with counts past the frequencies kept (64) too."""
    rng = np.random.default_rng(word_bits)
    words = rng.integers(0, 1 << word_bits, size=20_000, dtype=np.uint64).astype(np.uint32)
    words[:500] = words[0]  # one word 500 times or more
    expected = numpy_sums(np.unique(words, return_counts=True)[1])
    got = _table.word_sums(words, word_bits)
    assert got[:3] == expected[:3] and got[3] == pytest.approx(expected[3], rel=1e-12)
    values, counts = _table.word_counts(words, word_bits)
    expected_values, expected_counts = np.unique(words, return_counts=True)
    np.testing.assert_array_equal(values, expected_values)
    np.testing.assert_array_equal(counts, expected_counts)
    assert _table.word_sums(np.empty(0, np.uint32), word_bits) == (0, 0, 0, 0.0)
    with pytest.raises(ValueError, match="word_bits=33"):
        _table.word_sums(words, 33)
    if word_bits < 32:
        with pytest.raises(ValueError, match=f"below 2\\*\\*{word_bits}"):
            _table.word_sums(np.array([1 << word_bits], np.uint32), word_bits)


def test_label_counts_equal_bincount_within_the_limit():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 1000, size=50_000)
    np.testing.assert_array_equal(_table.label_counts(labels, 1000), np.bincount(labels))
    assert _table.label_counts(np.append(labels, 1000), 1000) is None  # past the limit
    assert _table.label_counts(np.append(labels, -1), 1000) is None  # negative
    assert _table.label_counts(np.empty(0, np.int64), 1000) is None
    np.testing.assert_array_equal(_table.label_counts(np.array([5]), 6), [0, 0, 0, 0, 0, 1])


def test_word_buffers_reuse_memory_given_back():
    """A word buffer's memory goes back to the core's cache when its array is
    freed, and serves the next buffer; an array cut from a buffer keeps it."""
    first = _table.word_buffer(1000)
    assert first.dtype == np.uint32 and first.shape == (1000,) and first.flags.writeable
    first[:] = np.arange(1000)
    address = first.ctypes.data
    part = first[10:20]
    del first
    np.testing.assert_array_equal(part, np.arange(10, 20))  # still held by `part`
    del part
    again = _table.word_buffer(900)  # of the same size class: the block given back
    assert again.ctypes.data == address
    again[:] = 7
    assert np.all(again == 7) and again.shape == (900,)
    assert _table.word_buffer(0).shape == (0,)
    with pytest.raises(ValueError, match="words=-1"):
        _table.word_buffer(-1)


@pytest.mark.parametrize("bits, per_sample", [(6, 1), (6, 5), (20, 3)])
def test_pair_words_put_the_label_index_above_the_state(bits, per_sample):
    rng = np.random.default_rng(bits + per_sample)
    keys = dense_keys(rng, 100 * per_sample, bits)
    index = rng.integers(0, 1 << (32 - bits), size=100).astype(np.int32)
    states = np.zeros(len(keys), np.uint64)
    for byte in range(keys.shape[1]):
        states |= keys[:, byte].astype(np.uint64) << np.uint64(8 * byte)
    expected = states | np.repeat(index, per_sample).astype(np.uint64) << np.uint64(bits)
    np.testing.assert_array_equal(_table.pair_words(keys, per_sample, index, bits), expected)
    with pytest.raises(ValueError, match="label indices must be in"):
        _table.pair_words(keys, per_sample, np.full(100, 1 << (32 - bits), np.int32), bits)
    with pytest.raises(ValueError, match="are not 99 samples"):
        _table.pair_words(keys, per_sample, index[:99], bits)


def test_narrow_dense_tables_count_weights():
    """A dense table of byte counts takes weighted rows (merged counts) and
    reads back 64-bit arrays, as the 64-bit table does."""
    rng = np.random.default_rng(5)
    keys = dense_keys(rng, 20_000, 12)
    weights = rng.integers(0, 1 << 16, size=len(keys), dtype=np.uint64)
    narrow, wide = _table.CountTable(2, 12, narrow=True), _table.CountTable(2, 12)
    _table.count_narrow(narrow, keys, weights)
    _table.count_dense([wide], keys, weights)
    assert_counts([narrow], keys, weights)
    np.testing.assert_array_equal(narrow.counts(), wide.counts())
    assert narrow.distinct == wide.distinct and narrow.counts().dtype == np.uint64


def test_dense_slabs_bad_arguments():
    slabs = [_table.CountTable(1, 8, narrow=True), _table.CountTable(1, 8, narrow=True)]
    keys = np.zeros((6, 1), np.uint8)
    with pytest.raises(ValueError, match="6 rows are not 4 samples of 2 rows"):
        _table.count_dense_slabs(slabs, keys, 2, np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="slab_of must index the 2 slabs"):
        _table.count_dense_slabs(slabs, keys, 3, np.array([0, 2], np.int32))
    with pytest.raises(ValueError, match="count_dense takes dense tables"):
        _table.count_dense_slabs([_table.CountTable(1)], keys, 6, np.zeros(1, np.int32))
    with pytest.raises(ValueError, match="threads=0"):
        _table.count_dense_slabs(slabs, keys, 6, np.zeros(1, np.int32), threads=0)
    with pytest.raises(ValueError, match="expected dense tables of byte counts"):
        _table.count_dense_slabs([_table.CountTable(1, 8)], keys, 6, np.zeros(1, np.int32))
    with pytest.raises(ValueError, match="expected dense tables of 64-bit counts"):
        _table.count_dense(slabs, keys)
    with pytest.raises(ValueError, match="64-bit counts of the slabs' width"):
        _table.sum_dense(_table.CountTable(1, 7), slabs)
    with pytest.raises(ValueError, match="fold_dense needs two dense tables of 64-bit"):
        _table.fold_dense(_table.CountTable(1, 8), slabs[0])
    with pytest.raises(ValueError, match="narrow=True is for dense tables"):
        _table.CountTable(1, narrow=True)


def numpy_byte_histograms(keys, counts):
    """hist[j, v]: the counts of the rows whose byte j is v, by np.add.at."""
    hist = np.zeros((keys.shape[1], 256), np.uint64)
    for column in range(keys.shape[1]):
        np.add.at(hist[column], keys[:, column], counts)
    return hist


@pytest.mark.parametrize("width, bits", [(1, 5), (2, 13), (3, 20), (1, 0), (7, 0), (20, 0)])
def test_byte_histograms_match_numpy(width, bits):
    """Byte histograms read from dense, narrow and wide hash tables in place,
    and from arrays, equal NumPy's on the states counted."""
    rng = np.random.default_rng(width + bits)
    keys = dense_keys(rng, 40_000, bits) if bits else make_keys(rng, 40_000, width, 900)
    weights = rng.integers(1, 5, size=len(keys), dtype=np.uint64)
    table = _table.CountTable(width, bits)
    if bits:
        _table.count_dense([table], keys, weights)
    else:
        _table.count_rows([table], keys, weights)
    want = numpy_byte_histograms(keys, weights)
    from_table = np.zeros((width, 256), np.uint64)
    table.add_byte_histograms(from_table)
    np.testing.assert_array_equal(from_table, want)
    from_arrays = np.zeros((width, 256), np.uint64)
    _table.byte_histograms(*table.items(), from_arrays)
    np.testing.assert_array_equal(from_arrays, want)
    with pytest.raises(ValueError, match=rf"uint64\[{width}, 256\]"):
        table.add_byte_histograms(np.zeros((width + 1, 256), np.uint64))


@pytest.mark.parametrize("width, bits, shards", [(1, 1, 1), (1, 5, 1), (3, 20, 1), (1, 0, 1),
                                                 (8, 0, 4), (9, 0, 1), (20, 0, 16)])
@pytest.mark.parametrize("histograms", [False, True])
def test_read_tables_matches_numpy(width, bits, shards, histograms):
    """What counters read from their tables (dense, narrow or wide hash tables,
    several shards together) in one pass equals what NumPy finds from the
    states counted: distinct states, singletons, the largest count, sum c
    log2 c, and (when asked) the byte histograms."""
    rng = np.random.default_rng(width + bits + shards)
    keys = dense_keys(rng, 40_000, bits) if bits else make_keys(rng, 40_000, width, 30_000)
    weights = rng.integers(1, 3, size=len(keys), dtype=np.uint64) * (rng.random(len(keys)) < 0.7)
    if bits:
        tables = [_table.CountTable(width, bits)]
        _table.count_dense(tables, keys, weights)
    else:
        tables = hash_tables(width, shards)
        _table.count_rows(tables, keys, weights)
    _, counts = reference(keys, weights)
    out = np.zeros((width, 256), np.uint64) if histograms else None
    distinct, singletons, largest, c_log2_c = _table.read_tables(tables, out)
    assert (distinct, singletons, largest) == (len(counts), int(np.sum(counts == 1)),
                                               int(counts.max()))
    floats = counts.astype(np.float64)
    assert c_log2_c == pytest.approx(float(np.sum(floats * np.log2(floats))), rel=1e-13)
    if histograms:
        np.testing.assert_array_equal(out, numpy_byte_histograms(keys, weights))


def test_read_tables_of_no_states_and_bad_tables():
    assert _table.read_tables([_table.CountTable(3), _table.CountTable(3)]) == (0, 0, 0, 0.0)
    assert _table.read_tables([_table.CountTable(1, 4)], np.zeros((1, 256), np.uint64)) == (
        0, 0, 0, 0.0)
    with pytest.raises(ValueError, match="64-bit counts"):
        _table.read_tables([_table.CountTable(1, 4, narrow=True)])
    with pytest.raises(ValueError, match="one width"):
        _table.read_tables([_table.CountTable(1), _table.CountTable(2)])
    with pytest.raises(TypeError, match="CountTable"):
        _table.read_tables([np.zeros(3)])


def test_dense_and_hash_tables_agree():
    keys = dense_keys(np.random.default_rng(1), 30_000, 12)
    dense, hashed = _table.CountTable(2, 12), _table.CountTable(2)
    _table.count_dense([dense], keys)
    _table.count_rows([hashed], keys)
    np.testing.assert_array_equal(contents([dense])[1], contents([hashed])[1])
    assert dense.is_dense and not hashed.is_dense
    assert dense.memory == 8 << 12


# -- spill partitions -----------------------------------------------------------------

@pytest.mark.parametrize("width", [2, 8, 20])
@pytest.mark.parametrize("bits", [0, 1, 6, _table.MAX_PARTITION_BITS])
def test_partitions_stable_and_in_range(width, bits):
    rng = np.random.default_rng(width + bits)
    keys = make_keys(rng, 20_000, width, 4_000)
    parts = _table.partitions(keys, bits)
    assert parts.dtype == np.int32 and parts.shape == (len(keys),)
    assert parts.min() >= 0 and parts.max() < 1 << bits
    rows, inverse = np.unique(as_rows(keys), return_inverse=True)
    first = np.zeros(len(rows), dtype=np.int32)
    first[inverse.ravel()] = parts
    np.testing.assert_array_equal(parts, first[inverse.ravel()])  # one partition per state
    np.testing.assert_array_equal(_table.partitions(keys[::-1].copy(), bits), parts[::-1])
    if 1 <= bits <= 6:  # 4,000 states fill every partition
        assert len(np.unique(parts)) == 1 << bits


def test_partitions_spread_over_shards():
    """The states of one shard fall in every partition: the two use different
    bits of the hash."""
    keys = make_keys(np.random.default_rng(0), 200_000, 4)
    tables = hash_tables(4, 256)
    _table.count_rows(tables, keys)
    shard_keys, _ = tables[0].items()
    assert len(np.unique(_table.partitions(shard_keys, 3))) == 8


# -- edges and errors ----------------------------------------------------------------

def test_empty_input():
    empty = np.empty((0, 3), dtype=np.uint8)
    tables = hash_tables(3, 256)
    _table.count_rows(tables, empty, threads=4)
    _table.count_rows(tables, empty, np.empty(0, dtype=np.uint64))
    assert sum(table.distinct for table in tables) == 0
    keys, counts = tables[0].items()
    assert keys.shape == (0, 3) and counts.shape == (0,) and tables[0].counts().shape == (0,)
    dense = [_table.CountTable(2, 10), _table.CountTable(2, 10)]
    _table.count_dense(dense, np.empty((0, 2), dtype=np.uint8))
    assert dense[0].distinct == 0
    assert _table.partitions(empty, 4).shape == (0,)


def test_bad_arguments_raise_clear_errors():
    keys = np.zeros((10, 2), dtype=np.uint8)
    tables = hash_tables(2, 4)
    with pytest.raises(ValueError, match="power of two"):
        _table.count_rows(hash_tables(2, 3), keys)
    with pytest.raises(ValueError, match="power of two"):
        _table.count_rows(hash_tables(2, 512), keys)
    with pytest.raises(ValueError, match="power of two"):
        _table.count_rows([], keys)
    with pytest.raises(ValueError, match="do not fit tables of 3-byte states"):
        _table.count_rows(hash_tables(3, 4), keys)
    with pytest.raises(ValueError, match="one per row"):
        _table.count_rows(tables, keys, np.ones(9, dtype=np.uint64))
    with pytest.raises(ValueError, match="threads=0"):
        _table.count_rows(tables, keys, threads=0)
    with pytest.raises(ValueError, match="count_rows hash tables"):
        _table.count_rows([_table.CountTable(2, 10)], keys)
    with pytest.raises(ValueError, match="count_dense takes dense tables"):
        _table.count_dense(hash_tables(2, 1), keys)
    with pytest.raises(ValueError, match="different widths"):
        _table.count_dense([_table.CountTable(2, 10), _table.CountTable(2, 11)], keys)
    with pytest.raises(ValueError, match="no tables"):
        _table.count_dense([], keys)
    with pytest.raises(ValueError, match="one per thread"):
        _table.count_dense([_table.CountTable(1, 1)] * (_table.MAX_THREADS + 1),
                           np.zeros((10, 1), dtype=np.uint8))
    with pytest.raises(TypeError, match="CountTable"):
        _table.count_rows([object()], keys)
    with pytest.raises(ValueError, match="key_bytes=0"):
        _table.CountTable(0)
    with pytest.raises(ValueError, match="dense_bits=9"):
        _table.CountTable(1, 9)  # 9 neurons need 2 bytes
    with pytest.raises(ValueError, match="dense_bits=21"):
        _table.CountTable(3, 21)
    with pytest.raises(ValueError, match="one width"):
        _table.fold_dense(_table.CountTable(2, 10), _table.CountTable(2, 11))
    dense = _table.CountTable(2, 10)
    with pytest.raises(ValueError, match="two different tables"):
        _table.fold_dense(dense, dense)
    for bits in (-1, _table.MAX_PARTITION_BITS + 1):
        with pytest.raises(ValueError, match="partition_bits"):
            _table.partitions(keys, bits)
    with pytest.raises(ValueError):  # not C-contiguous
        _table.count_rows(tables, np.zeros((10, 4), dtype=np.uint8)[:, ::2])
    assert sum(table.distinct for table in tables) == 0  # nothing was counted


# -- the packing kernel, called directly -------------------------------------------

def test_kinds_are_numpy_dtype_names():
    assert set(_pack.KINDS) == {
        "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
        "uint32", "uint64", "float16", "bfloat16"}
    assert sorted(_pack.KINDS.values()) == list(range(len(_pack.KINDS)))
    for name in set(_pack.KINDS) - {"bfloat16"}:
        assert np.dtype(name).name == name


@pytest.mark.parametrize("threads", [1, 2, 3, 4, 64])
@pytest.mark.parametrize("neuron_axis", [1, 2])  # contiguous neurons, strided neurons
def test_pack_rows_on_threads(threads, neuron_axis):
    x = np.random.default_rng(threads).standard_normal((5, 7, 11)).astype(np.float32)
    moved = np.moveaxis(x, neuron_axis, -1)  # (outer, states, neurons), a view
    out = np.empty((5 * moved.shape[1], (moved.shape[2] + 7) // 8), dtype=np.uint8)
    _pack.pack_rows(x.__array_interface__["data"][0], moved.shape, moved.strides,
                    _pack.KINDS["float32"], out, threads)
    want = np.packbits(moved.reshape(-1, moved.shape[2]) > 0, axis=-1, bitorder="little")
    np.testing.assert_array_equal(out, want)


def test_pack_rows_bad_arguments():
    x = np.ones((4, 9), dtype=np.float32)
    address = x.__array_interface__["data"][0]
    out = np.empty((4, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="unknown element kind"):
        _pack.pack_rows(address, (1, 4, 9), (0, 36, 4), len(_pack.KINDS), out, 1)
    with pytest.raises(ValueError, match="the view needs"):
        _pack.pack_rows(address, (1, 4, 9), (0, 36, 4), 0, np.empty((4, 1), np.uint8), 1)
    with pytest.raises(ValueError, match="threads=0"):
        _pack.pack_rows(address, (1, 4, 9), (0, 36, 4), 0, out, 0)
    with pytest.raises(ValueError, match="3 entries"):
        _pack.pack_rows(address, (4, 9), (36, 4), 0, out, 1)
