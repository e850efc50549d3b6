"""Independent plain-NumPy references the tests compare against, and the one
check every way of counting states is held to.

In the spirit of torchmetrics' ``MetricTester``: whatever fed a counter (a
``StateCounter`` method, a merge, a pickle round trip, a PyTorch or Keras probe,
the Keras ``StateReader``, a DDP merge), :func:`assert_counts_match` compares it
with :class:`Expected`, computed here from the activations (or packed states)
with nothing but NumPy: the same sorted (state, count) rows, ``state_count``,
``distinct_count``, ``max_entropy()``, Renyi entropies and efficiency.

Nothing here imports the package or a framework.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

ALPHAS = (0, 1, 2, math.inf)
# Entropies and efficiencies agree to this (absolute and relative): they are
# computed from the same integer counts, so only rounding differs.
TOLERANCE = 1e-12


def packed_states(x, neuron_axis=-1):
    """np.packbits of (x > 0) with neurons last, one row per state."""
    x = np.asarray(x)
    moved = np.moveaxis(x, neuron_axis, -1)
    fired = moved.reshape(-1, moved.shape[-1]) > 0
    return np.packbits(fired, axis=-1, bitorder="little")


def unique_counts(packed):
    """Distinct rows and their counts, sorted by the rows' bytes."""
    if len(packed) == 0:
        return packed, np.zeros(0, dtype=np.int64)
    return np.unique(packed, axis=0, return_counts=True)


def renyi_entropy(counts, alpha):
    """Renyi entropy (base 2) of the distribution of ``counts`` (zero counts ignored)."""
    p = np.asarray(counts, dtype=np.float64)
    p = p[p > 0] / p.sum()
    if alpha == 0:
        return math.log2(p.size)
    if alpha == 1:
        return float(-(p * np.log2(p)).sum())
    if math.isinf(alpha):
        return float(-np.log2(p.max()))
    # scaled by the largest p so that large alphas do not underflow
    top = p.max()
    return float((alpha * np.log2(top) + np.log2(((p / top) ** alpha).sum())) / (1 - alpha))


def sorted_rows(keys, counts):
    """(keys, counts) in a canonical order, for comparing tables."""
    order = np.lexsort(keys.T[::-1]) if len(keys) else np.zeros(0, dtype=np.int64)
    return keys[order], np.asarray(counts)[order]


@dataclass(frozen=True)
class Expected:
    """What any counter of some states must report: computed with NumPy alone.

    >>> expected = Expected.of_values(np.array([[1.0, -1.0], [2.0, 0.0], [0.0, 3.0]]))
    >>> expected.state_count, expected.distinct_count, expected.keys.tolist()
    (3, 2, [[1], [2]])
    """

    keys: np.ndarray  # uint8[distinct, bytes], sorted
    counts: np.ndarray  # int64[distinct]
    num_neurons: int

    @classmethod
    def of_values(cls, values, neuron_axis: int = -1) -> Expected:
        """From activations: every position off ``neuron_axis`` is one state."""
        values = np.asarray(values)
        return cls.of_packed(packed_states(values, neuron_axis), values.shape[neuron_axis])

    @classmethod
    def of_packed(cls, packed, num_neurons: int) -> Expected:
        """From packed states (``uint8[n, ceil(num_neurons / 8)]``)."""
        keys, counts = unique_counts(np.asarray(packed))
        return cls(keys, np.asarray(counts, dtype=np.int64), int(num_neurons))

    @property
    def state_count(self) -> int:
        return int(self.counts.sum())

    @property
    def distinct_count(self) -> int:
        return len(self.counts)

    def entropy(self, alpha=1) -> float:
        return renyi_entropy(self.counts, alpha)

    def efficiency(self) -> float:
        return self.entropy(1) / self.num_neurons


def assert_counts_match(counter, expected: Expected, *, alphas=ALPHAS,
                        tolerance: float = TOLERANCE) -> None:
    """``counter`` (a StateCounter or a probe) holds exactly the states of ``expected``.

    Rows and counts are compared exactly, as are ``state_count``,
    ``distinct_count`` and ``max_entropy()``; ``entropy(alpha)`` for each of
    ``alphas`` and ``efficiency()`` to ``tolerance`` (absolute or relative).
    """
    got_keys, got_counts = sorted_rows(counter.state_ids(), counter.counts())
    np.testing.assert_array_equal(got_keys, expected.keys)
    np.testing.assert_array_equal(got_counts, expected.counts)
    assert counter.state_count == expected.state_count
    assert counter.distinct_count == expected.distinct_count
    assert counter.max_entropy() == expected.num_neurons
    for alpha in alphas:
        value = counter.entropy(alpha)
        assert not math.isnan(value), f"entropy({alpha}) is NaN"
        assert value == pytest.approx(expected.entropy(alpha), rel=tolerance, abs=tolerance), \
            f"entropy({alpha})"
    assert counter.efficiency() == pytest.approx(expected.efficiency(), rel=tolerance,
                                                 abs=tolerance)


def assert_reports_of_one_layer(history, name: str, expected: Expected) -> None:
    """Every report of ``history`` holds one layer, ``name``, whose states, distinct
    states and efficiency are those of ``expected``."""
    for report in history:
        (layer,) = report.layers
        assert layer.name == name
        assert (layer.states, layer.unique_states) == (expected.state_count,
                                                       expected.distinct_count)
        assert layer.efficiency == pytest.approx(expected.efficiency(), rel=1e-9)


# -- activations -----------------------------------------------------------------------
DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64",
          "uint8", "uint16", "uint32", "uint64", "bool"]
# Float values that test the "> 0" rule: NaN, infinities, signed zeros, subnormals.
EDGE_VALUES = (np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45, 5e-324, 1.0, -1.0)


def random_array(rng, shape, dtype, specials=EDGE_VALUES, every=7):
    """Values of ``dtype`` for packing tests: bools (40 % True), integers in [-3, 3],
    or normal floats with every ``every``-th value one of ``specials``.

    >>> random_array(np.random.default_rng(0), (2, 3), "int8").dtype
    dtype('int8')
    """
    if dtype == "bool":
        return rng.random(shape) < 0.4
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        low, high = max(info.min, -3), min(info.max, 3)
        return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    values = rng.standard_normal(shape)
    values.flat[::every] = rng.choice(specials, size=values.flat[::every].shape)
    return values.astype(dtype)


SPECIALS = (np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0)


def activations(rng, shape, dtype, neuron_axis=-1, repeats=0.5):
    """Activations of ``dtype`` with states that repeat (a ``repeats`` share of
    the states is drawn from a few patterns) and, for floats, NaN, +-inf and +-0
    among the values.

    >>> x = activations(np.random.default_rng(0), (50, 9), "int8")
    >>> x.shape, x.dtype.name
    ((50, 9), 'int8')
    """
    dtype = np.dtype(dtype)
    moved_shape = list(shape)
    width = moved_shape.pop(neuron_axis)
    states = int(np.prod(moved_shape))
    if dtype == np.bool_:
        values = rng.random((states, width)) < 0.5
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = rng.integers(max(info.min, -3), min(info.max, 3), size=(states, width),
                              endpoint=True)
        values.flat[::11] = info.min
        values.flat[5::11] = info.max
    else:
        values = rng.standard_normal((states, width))
        where = rng.random(values.shape) < 0.15
        values[where] = rng.choice(SPECIALS, size=int(where.sum()))
    values = values.astype(dtype)
    repeated = rng.random(states) < repeats
    patterns = values[rng.integers(0, states, size=min(states, 5))]
    values[repeated] = patterns[rng.integers(0, len(patterns), size=int(repeated.sum()))]
    if dtype.kind == "f":  # every special value at least once
        values.flat[rng.choice(values.size, size=len(SPECIALS), replace=False)] = SPECIALS
    values = values.reshape(*moved_shape, width)
    return np.ascontiguousarray(np.moveaxis(values, -1, neuron_axis))
