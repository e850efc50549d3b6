"""Entropy, efficiency, network efficiency and aIQ against independent formulas."""

import math

import numpy as np
import pytest
from reference import renyi_entropy

import tensorstate_callbacks as ts

COUNTS = [np.array([5]), np.array([1, 1, 1, 1]), np.array([7, 3, 3, 1, 1, 100, 2])]


@pytest.mark.parametrize("counts", COUNTS)
@pytest.mark.parametrize("alpha", [0, 0.5, 1, 2, 3.7, math.inf])
def test_entropy_matches_formula(counts, alpha):
    assert ts.entropy(counts, alpha) == pytest.approx(renyi_entropy(counts, alpha), abs=1e-12)


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
