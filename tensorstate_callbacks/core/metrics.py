"""State-space metrics: Renyi entropy, efficiency, network efficiency and aIQ.

Pure NumPy, log base 2.  ``counts`` are how often each distinct state occurred.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real

import numpy as np


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or math.isnan(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a number >= 0 (or math.inf), got {alpha!r}")
    return float(alpha)


def _as_counts(counts) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.dtype.kind not in "iuf" or counts.ndim != 1:
        raise ValueError(
            f"counts must be a 1-D array of numbers, got {counts.dtype} with shape {counts.shape}"
        )
    if counts.size and (not np.all(np.isfinite(counts)) or counts.min() < 0):
        raise ValueError("counts must be finite and >= 0")
    return counts


def entropy_of_chunks(chunks: Iterable, total: float, alpha=1) -> float:
    """Renyi entropy of counts that arrive in chunks; ``total`` is their sum.

    Every distinct state must appear in exactly one chunk.  This is what lets a
    counter whose states were spilled to disk stay exact without loading them all.

    >>> round(entropy_of_chunks([np.array([1, 1]), np.array([2])], total=4), 6)
    1.5
    """
    # never -0.0 (a single state has entropy +0.0 for every alpha)
    return max(_entropy_of_chunks(chunks, total, alpha), 0.0) + 0.0


def _entropy_of_chunks(chunks: Iterable, total: float, alpha) -> float:
    alpha = _check_alpha(alpha)
    if total <= 0:
        raise ValueError(
            "cannot compute an entropy: no states were counted (run data through the "
            "probes, or add() arrays, first)"
        )
    if alpha == 1:
        accumulated = 0.0
        for chunk in chunks:
            p = _as_counts(chunk).astype(np.float64) / total
            p = p[p > 0]
            accumulated -= float(np.sum(p * np.log2(p)))
        return max(accumulated, 0.0)
    if alpha == 0:
        distinct = sum(int(np.count_nonzero(_as_counts(chunk))) for chunk in chunks)
        return math.log2(distinct)
    if math.isinf(alpha):
        largest = max((float(np.max(_as_counts(c), initial=0)) for c in chunks), default=0.0)
        return -math.log2(largest / total)
    # log2(sum p**alpha), accumulated as scale + log2(rest) so that large
    # alphas never underflow to log2(0).
    scale, rest = -math.inf, 0.0
    for chunk in chunks:
        p = _as_counts(chunk).astype(np.float64) / total
        p = p[p > 0]
        if not p.size:
            continue
        terms = alpha * np.log2(p)
        top = float(terms.max())
        if top > scale:
            rest, scale = rest * 2.0 ** (scale - top), top
        rest += float(np.sum(np.exp2(terms - scale)))
    return max((scale + math.log2(rest)) / (1 - alpha), 0.0)


def entropy(counts, alpha=1) -> float:
    """Renyi entropy (base 2) of the state distribution given by ``counts``.

    ``alpha=1`` is Shannon's entropy, ``alpha=0`` the log of the number of
    distinct states, ``alpha=math.inf`` the min-entropy ``-log2(max p)``.

    >>> entropy([1, 1, 1, 1])
    2.0
    >>> round(entropy([3, 1], alpha=math.inf), 6)
    0.415037
    """
    counts = _as_counts(counts)
    return entropy_of_chunks([counts], float(np.sum(counts, dtype=np.float64)), alpha)


def efficiency(counts, num_neurons: int, alpha1=1, alpha2=None) -> float:
    """Layer efficiency: ``H_alpha1`` over ``num_neurons`` (or over ``H_alpha2``).

    >>> efficiency([1, 1, 1, 1], num_neurons=4)
    0.5
    """
    denominator = float(num_neurons) if alpha2 is None else entropy(counts, alpha2)
    return ratio(entropy(counts, alpha1), denominator, alpha2)


def ratio(numerator: float, denominator: float, alpha2=None) -> float:
    """``numerator / denominator`` for an efficiency, with a clear error at 0.

    >>> ratio(1.0, 4.0)
    0.25
    """
    if denominator == 0:
        what = "the layer has no neurons" if alpha2 is None else (
            f"the order-{alpha2} entropy is 0 (a single distinct state)")
        raise ValueError(f"efficiency is undefined: {what}; use alpha2=None to divide by the "
                         "number of neurons")
    return numerator / denominator


def network_efficiency(efficiencies) -> float:
    """Geometric mean of layer efficiencies (floats; ``tensorstate_callbacks.network_efficiency``
    also takes a model prepared by ``build_efficiency_model``).

    >>> network_efficiency([0.25, 1.0])
    0.5
    """
    values = np.asarray(list(efficiencies), dtype=np.float64)
    if values.size == 0:
        raise ValueError("network_efficiency needs at least one layer efficiency")
    if not np.all(np.isfinite(values)) or values.min() < 0:
        raise ValueError(f"efficiencies must be finite and >= 0, got {values.tolist()}")
    if values.min() == 0:
        return 0.0
    return float(np.exp(np.mean(np.log(values))))


def aIQ(net_efficiency: float, accuracy: float, weight: float) -> float:  # noqa: N802
    """Artificial intelligence quotient: ``(efficiency * accuracy**w) ** (1 / (w + 1))``.

    >>> round(aIQ(0.5, 1.0, 1), 6)
    0.707107
    """
    if isinstance(weight, bool) or not isinstance(weight, Real) or not weight > 0:
        raise ValueError(f"aIQ weight must be a number > 0, got {weight!r}")
    values = []
    for name, value in (("net_efficiency", net_efficiency), ("accuracy", accuracy)):
        try:
            values.append(float(value))
        except (TypeError, ValueError):
            values.append(math.nan)
        if not 0.0 <= values[-1] <= 1.0:
            raise ValueError(f"aIQ {name} must be a number in [0, 1], got {value!r}")
    efficiency_value, accuracy_value = values
    return (efficiency_value * accuracy_value**weight) ** (1.0 / (weight + 1.0))
