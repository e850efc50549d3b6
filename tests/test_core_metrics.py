"""Entropy, efficiency, network efficiency and aIQ against independent formulas."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import renyi_entropy

import tensorstate_callbacks as ts
from tensorstate_callbacks import StateCounter

ALPHAS = [0, 0.5, 1, 2, 3.7, math.inf]
COUNTS = [np.array([5]), np.array([1, 1, 1, 1]), np.array([7, 3, 3, 1, 1, 100, 2])]


@pytest.mark.parametrize("counts", COUNTS)
@pytest.mark.parametrize("alpha", [0, 0.5, 1, 2, 3.7, math.inf])
def test_entropy_matches_formula(counts, alpha):
    assert ts.entropy(counts, alpha) == pytest.approx(renyi_entropy(counts, alpha), abs=1e-12)


@pytest.mark.parametrize("counts", COUNTS + [np.array([1, 0, 3, 1, 2**40])])
@pytest.mark.parametrize("alpha, estimator", [(0, "plugin"), (1, "plugin"),
                                              (math.inf, "plugin"), (1, "miller_madow")])
def test_entropy_from_sums_matches_entropy(counts, alpha, estimator):
    """Entropies from the sums over the counts (what counters read from their
    tables in one pass) equal those from the counts themselves."""
    sums = ts.core.metrics.sums_of_counts([counts[:2], counts[2:]])
    assert sums.distinct == np.count_nonzero(counts)
    assert sums.singletons == np.count_nonzero(counts == 1)
    assert sums.largest == counts.max()
    want = ts.entropy(counts, alpha, estimator)
    got = ts.core.metrics.entropy_from_sums(sums, int(counts.sum()), alpha, estimator)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_entropy_from_sums_of_one_state_is_zero():
    sums = ts.core.metrics.sums_of_counts([np.array([3])])
    assert ts.core.metrics.entropy_from_sums(sums, 3) == 0.0
    assert math.copysign(1, ts.core.metrics.entropy_from_sums(sums, 3, math.inf)) == 1


def test_entropy_from_sums_refuses_what_sums_cannot_give():
    sums = ts.core.metrics.sums_of_counts([np.array([1, 2])])
    assert not ts.core.metrics.sums_suffice(2)
    assert not ts.core.metrics.sums_suffice(1, "chao_shen")
    with pytest.raises(ValueError, match="needs every count"):
        ts.core.metrics.entropy_from_sums(sums, 3, alpha=2)
    with pytest.raises(ValueError, match="no states"):
        ts.core.metrics.entropy_from_sums(sums, 0)


def test_entropy_exact_values():
    assert ts.entropy([1, 1, 1, 1]) == 2.0
    assert ts.entropy([1, 1, 1, 1], alpha=math.inf) == 2.0
    assert ts.entropy([2, 1, 1], alpha=0) == pytest.approx(math.log2(3))
    assert ts.entropy([9]) == 0.0
    value = ts.entropy([10**12, 1], alpha=math.inf)
    assert math.isfinite(value) and value >= 0


def test_efficiency_and_network_efficiency():
    assert ts.efficiency([1, 1, 1, 1], num_neurons=8) == 0.25
    assert ts.efficiency([1, 1, 2], num_neurons=3, alpha1=1, alpha2=0) == pytest.approx(
        renyi_entropy([1, 1, 2], 1) / math.log2(3))
    assert ts.network_efficiency([0.5, 0.125]) == pytest.approx(0.25)
    assert ts.network_efficiency([0.3, 0.0]) == 0.0
    with pytest.raises(ValueError, match="at least one"):
        ts.network_efficiency([])
    with pytest.raises(ValueError, match=">= 0"):
        ts.network_efficiency([0.5, -0.1])


def test_aiq_formula_and_errors():
    assert ts.aIQ(0.25, 1.0, 1) == pytest.approx(0.5)
    assert ts.aIQ(0.3, 0.9, 2) == pytest.approx((0.3 * 0.9**2) ** (1 / 3))
    assert ts.aIQ(np.float32(0.5), np.float64(0.5), 3) == pytest.approx(0.5)
    for weight in (0, -1, None, "2"):
        with pytest.raises(ValueError, match="weight"):
            ts.aIQ(0.5, 0.5, weight)
    for bad in (1.5, -0.1, math.nan, "x"):
        with pytest.raises(ValueError, match="accuracy"):
            ts.aIQ(0.5, bad, 2)
        with pytest.raises(ValueError, match="net_efficiency"):
            ts.aIQ(bad, 0.5, 2)


def test_entropy_input_errors():
    with pytest.raises(ValueError, match="alpha"):
        ts.entropy([1, 2], alpha=-1)
    with pytest.raises(ValueError, match="no states"):
        ts.entropy([])
    with pytest.raises(ValueError, match="finite"):
        ts.entropy([1, -2])


# -- properties (from the former tests/test_core_extra.py) ----------------------------------
@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=50), st.sampled_from(ALPHAS))
def test_entropy_property(counts, alpha):
    value = ts.entropy(counts, alpha)
    assert value == pytest.approx(renyi_entropy(counts, alpha), abs=1e-9)
    assert 0 <= value <= math.log2(len(counts)) + 1e-12


def test_entropy_ignores_zero_counts_and_min_entropy_is_finite():
    for alpha in ALPHAS:
        assert ts.entropy([0, 4, 0, 4], alpha) == pytest.approx(1.0)
    for counts in ([1], [10**15, 1], [1] * 1000, [2**62, 2**62]):
        value = ts.entropy(counts, math.inf)
        assert math.isfinite(value) and value == pytest.approx(renyi_entropy(counts, math.inf))
    assert ts.efficiency([3, 1], num_neurons=4, alpha1=math.inf) == pytest.approx(
        -math.log2(0.75) / 4)


@pytest.mark.parametrize("counts, alpha", [([1, 1], 2000), ([1] * 100_000, 80)])
def test_entropy_large_finite_alpha(counts, alpha):
    assert ts.entropy(counts, alpha) == pytest.approx(renyi_entropy(counts, alpha))


def test_aiq_and_network_efficiency_edges():
    assert ts.aIQ(1.0, 1.0, 0.5) == 1.0
    assert ts.aIQ(0.0, 0.9, 2) == 0.0
    assert ts.aIQ(0.64, 0.0, 3) == 0.0
    assert ts.aIQ(0.125, 0.5, 2) == pytest.approx((0.125 * 0.25) ** (1 / 3))
    with pytest.raises(ValueError, match="weight"):
        ts.aIQ(0.5, 0.5, math.nan)
    assert ts.network_efficiency([0.0]) == 0.0
    assert ts.network_efficiency([0.2, 0.4, 0.8]) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="finite"):
        ts.network_efficiency([0.5, math.nan])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 10**9), min_size=1, max_size=40),
       st.floats(0, 5000).filter(lambda a: abs(a - 1) > 1e-3))
def test_entropy_any_alpha_property(counts, alpha):
    value = ts.entropy(counts, alpha)
    assert math.isfinite(value)
    assert value == pytest.approx(renyi_entropy(counts, alpha), rel=1e-9, abs=1e-9)


def test_efficiency_with_a_zero_denominator_is_a_value_error():
    counter = StateCounter("one")
    counter.add(np.ones((4, 6)))
    for alpha2 in (0, 1, 2, math.inf):
        with pytest.raises(ValueError, match="undefined"):
            counter.efficiency(1, alpha2)
    with pytest.raises(ValueError, match="no neurons"):
        ts.efficiency([1, 2], num_neurons=0)
    assert counter.efficiency() == 0.0


def test_entropy_of_one_state_is_plus_zero():
    counter = StateCounter("one")
    counter.add(np.ones((4, 6)))
    values = [ts.entropy([5], alpha) for alpha in ALPHAS]
    values += [counter.entropy(alpha) for alpha in ALPHAS] + [counter.efficiency(math.inf)]
    assert [math.copysign(1.0, value) for value in values] == [1.0] * len(values)
