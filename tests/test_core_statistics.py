"""Sample limits, estimators, firing rates, labels and divergence of a
StateCounter, against plain NumPy on the same activations."""

import math
import pickle
import warnings

import numpy as np
import pytest
from reference import packed_states, unique_counts

import tensorstate_callbacks as ts
from tensorstate_callbacks import StateCounter
from tensorstate_callbacks.core import metrics
from tensorstate_callbacks.core._joint import JointCounts, distinct_labels

RNG = np.random.default_rng(11)


def plugin(counts):
    p = np.asarray(counts, dtype=np.float64) / np.sum(counts)
    return float(-np.sum(p * np.log2(p)))


def chao_shen_reference(counts):
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    f1 = np.sum(counts == 1)
    f1 = n - 1 if f1 == n else f1
    pa = (1 - f1 / n) * counts / n
    return float(-np.sum(pa * np.log2(pa) / (1 - (1 - pa) ** n)))


@pytest.mark.parametrize("counts", [[1, 1, 1, 1], [5, 3, 1, 1], [1], [7, 1], [2, 2, 2]])
def test_estimators_equal_their_formulas(counts):
    n, k = sum(counts), len(counts)
    assert metrics.entropy(counts) == pytest.approx(plugin(counts), abs=1e-12)
    assert metrics.entropy(counts, estimator="miller_madow") == pytest.approx(
        plugin(counts) + (k - 1) / (2 * n * math.log(2)), abs=1e-12)
    assert metrics.entropy(counts, estimator="chao_shen") == pytest.approx(
        chao_shen_reference(counts), abs=1e-12)
    assert metrics.coverage(counts) == 1 - sum(c == 1 for c in counts) / n


def test_estimator_errors():
    with pytest.raises(ValueError, match="Shannon's entropy only.*alpha=1"):
        metrics.entropy([1, 2], alpha=2, estimator="chao_shen")
    with pytest.raises(ValueError, match="estimator must be one of"):
        metrics.entropy([1, 2], estimator="nsb")


def test_bias_corrections_approach_the_true_entropy_from_few_samples():
    """A uniform distribution over 2**12 states, sampled 2,000 times: plug-in is
    far below 12 bits, the corrections are closer (Chao-Shen closest)."""
    samples = RNG.integers(0, 1 << 12, size=2000)
    _, counts = np.unique(samples, return_counts=True)
    values = {name: metrics.entropy(counts, estimator=name) for name in metrics.ESTIMATORS}
    assert values["plugin"] < values["miller_madow"] < values["chao_shen"] <= 12.5
    assert abs(values["chao_shen"] - 12) < abs(values["plugin"] - 12)


@pytest.mark.parametrize("width, layout", [(20, "dense"), (50, "hashed"), (130, "wide"),
                                           (50, "spilled")])
def test_counter_statistics_match_numpy(width, layout):
    x = RNG.normal(size=(3000, width)) + RNG.normal(size=width)  # neurons with their own rates
    x[:, 3] = -1.0  # a dead neuron
    x[:, 4] = 2.0   # an always-on one
    counter = StateCounter("layer", memory_limit=4096 if layout == "spilled" else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ts.StateSpaceMemoryWarning)
        for part in np.array_split(x, 7):
            counter.add(part)
    assert counter.is_spilled == (layout == "spilled")
    keys, counts = unique_counts(packed_states(x))
    assert counter.coverage() == pytest.approx(1 - np.sum(counts == 1) / len(x), abs=1e-15)
    assert counter.efficiency_ceiling() == pytest.approx(min(width, math.log2(3000)) / width)
    np.testing.assert_allclose(counter.firing_rates(), (x > 0).mean(axis=0), rtol=0, atol=1e-15)
    rates = counter.firing_rates()
    assert rates[3] == 0.0 and rates[4] == 1.0
    for name in metrics.ESTIMATORS:
        assert counter.entropy(estimator=name) == pytest.approx(
            metrics.entropy(counts, estimator=name), rel=1e-12)
        assert counter.efficiency(estimator=name) == pytest.approx(
            metrics.entropy(counts, estimator=name) / width, rel=1e-12)


def joint_reference(states_packed, labels_per_state):
    joint = np.concatenate([states_packed, labels_per_state[:, None].astype(np.uint8)], axis=1)
    _, joint_counts = np.unique(joint, axis=0, return_counts=True)
    _, state_counts = np.unique(states_packed, axis=0, return_counts=True)
    _, label_counts = np.unique(labels_per_state, return_counts=True)
    return plugin(state_counts) + plugin(label_counts) - plugin(joint_counts)


def test_mutual_information_with_labels_per_sample_is_exact_and_survives_merge_and_pickle():
    images = RNG.normal(size=(400, 6, 5, 5))  # (B, C, H, W): 25 states per sample
    labels = RNG.integers(0, 4, size=400)
    images[:, 0] += labels[:, None, None] - 1.5  # channel 0 tells something about the label
    halves = [StateCounter("a"), StateCounter("b")]
    for counter, part in zip(halves, np.array_split(np.arange(400), 2)):
        for batch in np.array_split(part, 5):
            counter.add(images[batch], neuron_axis=1, labels=labels[batch])
    halves[0].merge(halves[1])
    merged = pickle.loads(pickle.dumps(halves[0]))
    packed = packed_states(images, neuron_axis=1)
    expected = joint_reference(packed, np.repeat(labels, 25))
    assert expected > 0.05
    assert merged.mutual_information() == pytest.approx(expected, rel=1e-12)
    assert halves[0].mutual_information() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="every batch of a counter has labels or none"):
        merged.add(images[:2], neuron_axis=1)
    with pytest.raises(ValueError, match="one integer per sample along axis 0"):
        StateCounter().add(images[:3], neuron_axis=1, labels=labels[:2])
    with pytest.raises(ValueError, match="no labels were counted"):
        unlabelled = StateCounter()
        unlabelled.add(images[:3], neuron_axis=1)
        unlabelled.mutual_information()


def labelled_images(channels, offset):
    """(B, C, H, W) images whose channel 0 tells something about the label:
    labels 0-1 (+ offset) in the first half of the samples, 2-3 in the second."""
    labels = np.concatenate([RNG.integers(0, 2, size=200), RNG.integers(2, 4, size=200)])
    images = RNG.normal(size=(400, channels, 4, 4))
    images[:, 0] += labels[:, None, None] - 1.5
    return images, labels + offset


@pytest.mark.parametrize("layout, channels, memory_limit", [
    ("words, then slabs (merged)", 6, None),
    # 2 slabs of 576 bytes fit a quarter (64 cells: a byte, and 32-bit cells
    # and a list of 32-bit states for the counts past 255)
    ("slabs, then hashed and spilled", 6, 4608),
    ("hashed", 24, None),  # states too wide for dense tables
])
@pytest.mark.parametrize("offset", [0, 1000, -5])  # labels of 1, 2 and 8 bytes
def test_mutual_information_is_exact_in_every_layout_of_the_pairs(layout, channels,
                                                                  memory_limit, offset):
    """Counters of each half (its own labels), merged, then counting more,
    pickled: the mutual information equals NumPy's at every step."""
    images, labels = labelled_images(channels, offset)
    packed = packed_states(images, neuron_axis=1)
    per_state = np.repeat(labels, 16)

    def expected(samples):
        rows = np.repeat(samples, 16) * 16 + np.tile(np.arange(16), len(samples))
        return joint_reference(packed[rows], per_state[rows] - min(offset, 0))

    halves = [StateCounter(f"half{i}", memory_limit=memory_limit) for i in range(2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ts.StateSpaceMemoryWarning)
        for counter, samples in zip(halves, (np.arange(0, 160), np.arange(200, 400))):
            for batch, threads in zip(np.array_split(samples, 4), (1, 2, 1, 2)):
                counter.add(images[batch], neuron_axis=1, labels=labels[batch], threads=threads)
        assert halves[1].mutual_information() == pytest.approx(
            expected(np.arange(200, 400)), rel=1e-12)
        merged = halves[0]
        merged.merge(halves[1])
        assert merged.mutual_information() == pytest.approx(
            expected(np.r_[0:160, 200:400]), rel=1e-12)
        merged.add(images[160:200], neuron_axis=1, labels=labels[160:200])
        restored = pickle.loads(pickle.dumps(merged))
        restored.add(images[:50], neuron_axis=1, labels=labels[:50])
    assert merged.mutual_information() == pytest.approx(expected(np.arange(400)), rel=1e-12)
    _, state_counts = unique_counts(packed)  # the states alone, counted with their labels
    np.testing.assert_array_equal(np.sort(merged.counts()), np.sort(state_counts))
    np.testing.assert_array_equal(merged.firing_rates(), (images > 0).mean(axis=(0, 2, 3)))
    assert restored.mutual_information() == pytest.approx(
        expected(np.r_[0:400, 0:50]), rel=1e-12)
    spilled = any(warning.category is ts.StateSpaceMemoryWarning for warning in caught)
    assert spilled == (memory_limit is not None)  # the pairs went to disk, the states not


@pytest.mark.parametrize("layout, channels, memory_limit, read_after", [
    ("words", 16, None, (3, 7)),  # changed words read twice: they stay words
    ("words, then slabs: read often", 16, None, range(8)),  # the fourth read moves them
    # 4 labels of 12 neurons: words pay up to 1,024 (a sixteenth of the slabs' cells)
    ("words, then slabs: past what words pay", 12, None, (0, 3, 7)),
    ("words, then hashed: past their memory", 16, 64 << 10, (0, 3, 7)),  # 1,365 words fit
])
def test_pairs_buffered_as_words_are_exact_and_move_on(layout, channels, memory_limit,
                                                       read_after):
    """A narrow layer's pairs are buffered as words and counted at the read:
    the mutual information equals NumPy's after each read, and the states'
    counts np.unique's, while they stay words and after they move to slabs
    or a hash engine (then counting on there)."""
    images, labels = labelled_images(channels, 0)
    packed = packed_states(images, neuron_axis=1)
    per_state = np.repeat(labels, 16)
    counter = StateCounter("words", memory_limit=memory_limit)
    for index, batch in enumerate(np.array_split(np.arange(400), 8)):
        with warnings.catch_warnings():  # the hashed pairs spill: warned elsewhere
            warnings.simplefilter("ignore", ts.StateSpaceMemoryWarning)
            counter.add(images[batch], neuron_axis=1, labels=labels[batch])
        if index in read_after:
            rows = (batch[-1] + 1) * 16
            expected = joint_reference(packed[:rows], per_state[:rows])
            assert counter.mutual_information() == pytest.approx(expected, rel=1e-12)
            assert counter.mutual_information() == pytest.approx(expected, rel=1e-12)
    joint = counter._joint
    assert (joint._words is not None, bool(joint._slabs), joint._hashed is not None) == (
        layout == "words", "slabs" in layout, "hashed" in layout)
    _, state_counts = unique_counts(packed)
    np.testing.assert_array_equal(np.sort(counter.counts()), np.sort(state_counts))
    keys = np.concatenate([packed, per_state[:, None].astype(np.uint8)], axis=1)
    _, pair_counts = np.unique(keys, axis=0, return_counts=True)
    chunks = list(counter.joint_count_chunks())  # words move to slabs for this
    np.testing.assert_array_equal(np.sort(np.concatenate([c for _, c in chunks])),
                                  np.sort(pair_counts))
    assert counter.mutual_information() == pytest.approx(
        joint_reference(packed, per_state), rel=1e-12)


def test_a_counter_whose_last_measurement_had_many_pairs_starts_with_slabs():
    """Each measurement of a counter starts its pairs as words, unless the one
    before had more than words pay for (then slabs from the first batch)."""
    images, labels = labelled_images(12, 0)  # words pay up to 512 with 2 labels, 1,024 with 4
    counter = StateCounter("epochs")
    # 256 pairs: words; 6,400: words, then slabs; 256 after 6,400: slabs
    for samples, words in ((16, True), (400, False), (16, False)):
        counter.reset_states()
        counter.add(images[:samples], neuron_axis=1, labels=labels[:samples])
        assert (counter._joint._words is not None) == words
        packed = packed_states(images[:samples], neuron_axis=1)
        assert counter.mutual_information() == pytest.approx(
            joint_reference(packed, np.repeat(labels[:samples], 16)), rel=1e-12)


def test_words_of_each_measurement_are_exact_in_reused_buffers():
    """Each measurement buffers its words in memory that the one before gave
    back (holding its words), sized by the one before: fewer words than
    before, then more (the buffer grows), each exact against NumPy."""
    images, labels = labelled_images(16, 0)
    counter = StateCounter("epochs")
    for first, samples in ((0, 200), (100, 40), (40, 360), (0, 8)):
        counter.reset_states()
        batches = np.array_split(np.arange(first, first + samples), 4)
        for batch in batches:
            counter.add(images[batch], neuron_axis=1, labels=labels[batch])
        assert counter._joint._words is not None
        packed = packed_states(images[first:first + samples], neuron_axis=1)
        per_state = np.repeat(labels[first:first + samples], 16)
        assert counter.mutual_information() == pytest.approx(
            joint_reference(packed, per_state), rel=1e-12)
        keys = np.concatenate([packed, per_state[:, None].astype(np.uint8)], axis=1)
        _, pair_counts = np.unique(keys, axis=0, return_counts=True)
        got = np.concatenate([c for _, c in counter.joint_count_chunks()])
        np.testing.assert_array_equal(np.sort(got), np.sort(pair_counts))


@pytest.mark.parametrize("labels", [
    np.array([3, 1, 3, 3, 0, 9]),
    np.arange(12, dtype=np.int64)[::2],  # not contiguous
    np.array([70_000, 5, 70_000]),  # past the labels counted by value: sorted
    np.array([-4, 2, -4]),
])
def test_distinct_labels_equal_numpy_unique(labels):
    values, counts = distinct_labels(labels)
    expected_values, expected_counts = np.unique(labels, return_counts=True)
    np.testing.assert_array_equal(values, expected_values)
    np.testing.assert_array_equal(counts, expected_counts)


def test_pairs_whose_counts_pass_32_bits_move_to_the_hashed_layout():
    """Per-label tables hold counts below 2**32 (a byte, and 32 bits past
    255): merged counts that would pass 2**32 - 1 move every pair to the
    hashed layout, and stay exact."""
    joint = JointCounts("layer", state_neurons=4, label_bytes=1, memory_limit=1 << 30)
    keys = np.array([[3, 1], [3, 2], [5, 1]], np.uint8)  # (state, label)
    expected = {(3, 1): 2**32 - 3, (3, 2): 7, (5, 1): 1}  # the label 1 slab: 2**32 - 2
    joint.count(keys, np.array(list(expected.values()), np.uint64), threads=1)
    for added in (1, 5):  # to 2**32 - 1 (the most a slab holds), then past it
        joint.count(keys[:1], np.array([added], np.uint64), threads=1)
        expected[3, 1] += added
        got = {tuple(key): int(count) for chunk_keys, chunk_counts in joint.count_chunks()
               for key, count in zip(chunk_keys.tolist(), chunk_counts)}
        assert got == expected


def test_state_divergence_is_jensen_shannon_in_bits():
    a_rows = (RNG.random((500, 6)) < 0.3).astype(np.float32)
    b_rows = (RNG.random((700, 6)) < 0.6).astype(np.float32)
    a, b = StateCounter("a"), StateCounter("b")
    a.add(a_rows)
    b.add(b_rows)
    keys = np.unique(np.concatenate([packed_states(a_rows), packed_states(b_rows)]), axis=0)

    def distribution(rows):
        packed = packed_states(rows)
        return np.array([np.all(packed == key, axis=1).sum() for key in keys]) / len(rows)

    p, q = distribution(a_rows), distribution(b_rows)
    m = (p + q) / 2

    def h(v):
        v = v[v > 0]
        return -np.sum(v * np.log2(v))

    assert ts.state_divergence(a, b) == pytest.approx(h(m) - (h(p) + h(q)) / 2, abs=1e-12)
    assert ts.state_divergence(a, a) == 0.0
    disjoint = StateCounter()
    disjoint.add(np.full((5, 6), -1.0))
    only_ones = StateCounter()
    only_ones.add(np.ones((5, 6)))
    assert ts.state_divergence(disjoint, only_ones) == 1.0


@pytest.mark.parametrize("width", [24, 64, 70, 130, 2050])
@pytest.mark.parametrize("rows", [1_000, 40_000])
def test_firing_counts_of_states_seen_once_and_repeated(width, rows):
    """Hash tables add up the bits of their states counted once apart from the
    repeated ones' byte histograms: exact either way, past the 255 states a
    byte lane holds, on one table and on shards, with a partial last word."""
    rng = np.random.default_rng(width + rows)
    rows = min(rows, 4_000_000 // width)
    x = (rng.random((rows, width)) < rng.random(width)).astype(np.float32)
    x[rows // 3: rows // 2] = x[: rows // 2 - rows // 3]  # states seen twice
    x[-300:] = x[0]  # one state seen 300 times
    counter = StateCounter("layer")
    for part in np.array_split(x, 5):
        counter.add(part)
    np.testing.assert_array_equal(counter.firing_counts(), (x > 0).sum(axis=0))
