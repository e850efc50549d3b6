"""Metrics from per-slice statistics (core/reduced.py) equal the whole counter's, in
one process: the counts split into slices by ``owners`` as the DDP merge splits
them, without torch (tests/test_integrations_distributed.py runs the real merge)."""

import math

import numpy as np
import pytest
from reference import activations

from tensorstate_callbacks import StateCounter, state_divergence
from tensorstate_callbacks.core.reduced import (
    ReducedCounts,
    SliceStatistics,
    divergence_terms,
    owners,
)

ESTIMATORS = ("plugin", "miller_madow", "chao_shen")


def counted(seed, width, samples=300):
    rng = np.random.default_rng(seed)
    counter = StateCounter("whole")
    counter.add(activations(rng, (samples, width), "float32", repeats=0.7),
                labels=rng.integers(0, 5, size=samples))
    return counter


def sliced(items, num_neurons, parts):
    """The counter's (keys, counts) split among ``parts`` slice counters."""
    keys, counts = items
    slices = [StateCounter(f"slice{part}") for part in range(parts)]
    owner = owners(keys, parts)
    for part, counter in enumerate(slices):
        if np.any(owner == part):
            counter.add_counts(keys[owner == part], counts[owner == part], num_neurons)
    return slices


def reduced(counter, parts, previous=None, previous_slices=None):
    """``counter`` merged from ``parts`` slices (with drift from ``previous``)."""
    width = counter.num_neurons
    states = sliced(counter.items(), width, parts)
    joint_keys, joint_counts = map(np.concatenate, zip(*counter.joint_count_chunks()))
    joint_owner = owners(joint_keys[:, :(width + 7) // 8], parts)
    joints = []
    for part in range(parts):
        joint = StateCounter(f"joint{part}")
        mine = joint_owner == part
        if mine.any():
            joint.add_counts(joint_keys[mine], joint_counts[mine], 8 * joint_keys.shape[1])
        joints.append(joint)
    labels = [counter.label_counts()] + [{}] * (parts - 1)
    statistics = [SliceStatistics.of(
        state, joint, label_counts,
        None if previous is None else divergence_terms(
            previous_slices[part], state, previous.state_count, counter.state_count))
        for part, (state, joint, label_counts) in enumerate(zip(states, joints, labels))]
    return ReducedCounts(counter.name, width, statistics, states[0], previous), states


@pytest.mark.parametrize("width", [5, 20, 70])
@pytest.mark.parametrize("parts", [1, 3, 4])
def test_reduced_statistics_equal_the_whole_counter(width, parts):
    whole = counted(width, width)
    merged, slices = reduced(whole, parts)
    assert sum(part.distinct_count for part in slices) == whole.distinct_count
    assert (merged.state_count, merged.distinct_count) == (whole.state_count,
                                                           whole.distinct_count)
    assert merged.counts().tolist() == sorted(whole.counts().tolist())
    for alpha in (0, 0.5, 1, 2, math.inf, None):
        assert merged.entropy(alpha) == pytest.approx(whole.entropy(alpha), rel=1e-12)
    for estimator in ESTIMATORS:
        assert merged.efficiency(estimator=estimator) == pytest.approx(
            whole.efficiency(estimator=estimator), rel=1e-12)
    assert merged.efficiency(alpha1=2, alpha2=0) == pytest.approx(
        whole.efficiency(alpha1=2, alpha2=0), rel=1e-12)
    assert merged.coverage() == whole.coverage()
    assert merged.efficiency_ceiling() == whole.efficiency_ceiling()
    np.testing.assert_array_equal(merged.firing_rates(), whole.firing_rates())
    assert merged.has_labels
    assert merged.mutual_information() == pytest.approx(whole.mutual_information(), rel=1e-12)


def test_drift_from_slices_equals_state_divergence():
    before, after = counted(1, 12), counted(2, 12)
    after.merge(before)  # share states, so the drift is well inside (0, 1)
    merged_before, slices_before = reduced(before, 3)
    merged_after, _ = reduced(after, 3, merged_before, slices_before)
    expected = state_divergence(before, after)
    assert 0.05 < expected < 0.95
    assert state_divergence(merged_before, merged_after) == pytest.approx(expected, rel=1e-12)


def test_what_merged_counts_cannot_answer_is_a_clear_error():
    merged, _ = reduced(counted(3, 8), 2)
    with pytest.raises(ValueError, match="spread over the processes"):
        merged.items()
    with pytest.raises(ValueError, match="previous=") as caught:
        state_divergence(counted(4, 8), merged)
    assert "merge_across_ranks" in str(caught.value)
    nothing = ReducedCounts("none", None, [])
    assert nothing.state_count == 0
    with pytest.raises(ValueError, match="no process counted"):
        nothing.entropy()


def test_owners_are_fixed_in_range_and_spread():
    keys = np.random.default_rng(0).integers(0, 256, size=(4000, 9), dtype=np.uint8)
    owner = owners(keys, 4)
    np.testing.assert_array_equal(owner, owners(keys.copy(), 4))
    assert set(owner.tolist()) == {0, 1, 2, 3}
    assert np.bincount(owner).min() > 800
    # a state and its (state, label) keys go to one owner: only the state bytes count
    np.testing.assert_array_equal(owners(keys[:, :5], 4), owners(keys[:, :5].copy(), 4))
