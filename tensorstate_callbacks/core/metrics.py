"""State-space metrics: Renyi entropy, efficiency, network efficiency and aIQ.

Pure NumPy, log base 2, on plain numbers: ``counts`` are how often each
distinct state occurred (a 1-D array), efficiencies and accuracies are floats.
Nothing here knows about counters, probes or frameworks;
:class:`~tensorstate_callbacks.core.counter.StateCounter` and
:class:`~tensorstate_callbacks.reporting.report.EpochReport` call these
functions.  docs/state-space.md explains the metrics.

Example:
    >>> entropy([1, 1, 2])                    # p = 1/4, 1/4, 1/2
    1.5
    >>> efficiency([1, 1, 2], num_neurons=3)
    0.5
    >>> round(aIQ(network_efficiency([0.25, 1.0]), accuracy=0.9, weight=2), 4)
    0.7399
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real
from typing import NamedTuple

import numpy as np

__all__ = ["ESTIMATORS", "CountSums", "aIQ", "coverage", "efficiency", "efficiency_ceiling",
           "entropy", "entropy_from_sums", "entropy_of_chunks", "js_divergence",
           "mutual_information", "network_efficiency", "ratio", "sums_of_counts",
           "sums_suffice"]

# Estimators of Shannon entropy: the plug-in value (TensorState's) and two
# bias corrections for samples that miss states (see docs/reading-the-numbers.md).
ESTIMATORS = ("plugin", "miller_madow", "chao_shen")


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


def entropy_of_chunks(chunks, total: float, alpha=1, estimator: str = "plugin") -> float:
    """Renyi entropy (base 2) of counts that arrive in chunks.

    Every distinct state must appear in exactly one chunk.  This is what lets a
    counter whose states were spilled to disk stay exact without loading them all.

    Args:
        chunks: iterable of 1-D arrays of counts (numbers >= 0), read once; or,
            for ``estimator="chao_shen"`` (which reads the counts twice), a
            function returning a new such iterable at each call.
        total: the sum of every count of every chunk (the number of states).
        alpha: the order of the entropy: ``1`` Shannon, ``0`` the log of the
            number of distinct states, ``math.inf`` the min-entropy; any
            number >= 0.
        estimator: ``"plugin"`` (the entropy of the observed frequencies),
            ``"miller_madow"`` or ``"chao_shen"`` (bias-corrected estimates of
            Shannon's entropy: ``alpha`` must be 1).

    Returns:
        The entropy in bits, >= 0 (never ``-0.0``).

    Raises:
        ValueError: ``total`` is 0 (no state counted), ``alpha`` is not a
            number >= 0, or a chunk is not a 1-D array of finite counts >= 0.

    Example:
        >>> round(entropy_of_chunks([np.array([1, 1]), np.array([2])], total=4), 6)
        1.5
        >>> entropy_of_chunks([np.array([1, 1]), np.array([2])], total=4, alpha=0)
        1.584962500721156
    """
    estimator = _check_estimator(estimator, alpha)
    if estimator == "plugin":
        chunks = chunks() if callable(chunks) else chunks
        # never -0.0 (a single state has entropy +0.0 for every alpha)
        return max(_entropy_of_chunks(chunks, total, alpha), 0.0) + 0.0
    if total <= 0:
        raise ValueError("cannot compute an entropy: no states were counted")
    if estimator == "miller_madow":
        chunks = list(chunks() if callable(chunks) else chunks)
        distinct = sum(int(np.count_nonzero(_as_counts(chunk))) for chunk in chunks)
        plugin = max(_entropy_of_chunks(chunks, total, 1), 0.0)
        return plugin + (distinct - 1) / (2 * total * math.log(2))
    return _chao_shen(chunks if callable(chunks) else (lambda listed=list(chunks): listed), total)


class CountSums(NamedTuple):
    """Sums over the counts ``c`` of the distinct states: all that the plug-in
    entropy of order 0, 1 and infinity, Miller-Madow's estimate and the
    coverage need.  The compiled tables give them in one pass over their
    counts, in place (see :meth:`CountEngine.sums
    <tensorstate_callbacks.core._engine.CountEngine.sums>`)."""

    distinct: int  #: counts > 0
    singletons: int  #: counts == 1
    largest: int  #: the largest count
    c_log2_c: float  #: the sum of ``c * log2(c)``


def sums_of_counts(chunks: Iterable) -> CountSums:
    """The :class:`CountSums` of counts that arrive in chunks (each distinct
    state in exactly one), with NumPy.

    Example:
        >>> sums_of_counts([np.array([1, 2]), np.array([0, 4])])
        CountSums(distinct=3, singletons=1, largest=4, c_log2_c=10.0)
    """
    distinct = singletons = largest = 0
    c_log2_c = 0.0
    for chunk in chunks:
        counts = _as_counts(chunk)
        repeated = counts[counts > 1].astype(np.float64)
        distinct += int(np.count_nonzero(counts))
        singletons += int(np.count_nonzero(counts == 1))
        largest = max(largest, int(np.max(counts, initial=0)))
        c_log2_c += float(np.sum(repeated * np.log2(repeated)))
    return CountSums(distinct, singletons, largest, c_log2_c)


def sums_suffice(alpha, estimator: str = "plugin") -> bool:
    """Whether :func:`entropy_from_sums` can give this entropy (orders 0, 1 and
    infinity; Miller-Madow's estimate; not Chao-Shen's, which needs every count).

    Example:
        >>> sums_suffice(1), sums_suffice(2), sums_suffice(1, "chao_shen")
        (True, False, False)
    """
    estimator = _check_estimator(estimator, alpha)
    return estimator != "chao_shen" and _check_alpha(alpha) in (0, 1, math.inf)


def entropy_from_sums(sums: CountSums, total: int, alpha=1, estimator: str = "plugin") -> float:
    """The entropy of :func:`entropy_of_chunks` from the :class:`CountSums` of
    the counts (``total`` states), where :func:`sums_suffice`.

    Shannon's entropy is ``log2(N) - sum(c log2 c) / N``: counts of 1, most of
    a wide layer's, add nothing to the sum.

    Raises:
        ValueError: ``total`` is 0, or the sums do not give this entropy.

    Example:
        >>> sums = sums_of_counts([np.array([1, 1, 2])])
        >>> entropy_from_sums(sums, 4), entropy_from_sums(sums, 4, alpha=0)
        (1.5, 1.584962500721156)
        >>> entropy_from_sums(sums, 4, alpha=math.inf)
        1.0
    """
    if not sums_suffice(alpha, estimator):
        raise ValueError(f"the entropy of order {alpha!r} with the {estimator!r} estimator "
                         "needs every count: use entropy_of_chunks")
    if total <= 0:
        raise ValueError("cannot compute an entropy: no states were counted")
    alpha = _check_alpha(alpha)
    if sums.distinct <= 1:
        value = 0.0  # one state: exactly 0, whatever the rounding of the sums
    elif alpha == 0:
        value = math.log2(sums.distinct)
    elif math.isinf(alpha):
        value = -math.log2(sums.largest / total)
    else:
        value = math.log2(total) - sums.c_log2_c / total
    value = max(value, 0.0) + 0.0  # never -0.0
    if estimator == "miller_madow":
        value += (sums.distinct - 1) / (2 * total * math.log(2))
    return value


def _check_estimator(estimator, alpha) -> str:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {list(ESTIMATORS)}, got {estimator!r}")
    if estimator != "plugin" and _check_alpha(alpha) != 1:
        raise ValueError(f"the {estimator!r} estimator corrects Shannon's entropy only: use "
                         f"alpha=1 with it, or estimator='plugin' for alpha={alpha!r}")
    return estimator


def _chao_shen(chunks, total: float) -> float:
    """Coverage-adjusted entropy (Chao & Shen 2003), two passes over the chunks."""
    singletons = sum(int(np.count_nonzero(_as_counts(chunk) == 1)) for chunk in chunks())
    if singletons == total:
        singletons = total - 1  # all singletons: coverage would be 0
    covered = 1.0 - singletons / total
    accumulated = 0.0
    for chunk in chunks():
        p = covered * _as_counts(chunk).astype(np.float64) / total
        p = p[p > 0]
        with np.errstate(divide="ignore"):  # p = 1: (1 - p)**N = 0, log1p(-1) = -inf
            seen = -np.expm1(total * np.log1p(-p))  # 1 - (1 - p)**N, the chance to be seen
        accumulated -= float(np.sum(p * np.log2(p) / seen))
    return max(accumulated, 0.0) + 0.0


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


def entropy(counts, alpha=1, estimator: str = "plugin") -> float:
    """Renyi entropy (base 2) of the state distribution given by ``counts``.

    Args:
        counts: how often each distinct state occurred: a 1-D array (or list)
            of finite numbers >= 0; zeros are ignored.
        alpha: the order: ``1`` is Shannon's entropy ``-sum(p * log2(p))``,
            ``0`` the log of the number of distinct states, ``math.inf`` the
            min-entropy ``-log2(max p)``; any number >= 0.
        estimator: ``"plugin"`` (default, TensorState's value), or for
            ``alpha=1`` a bias-corrected estimate: ``"miller_madow"``
            (plug-in + (K - 1) / (2 N ln 2)) or ``"chao_shen"`` (coverage-adjusted).

    Returns:
        The entropy in bits, >= 0.

    Raises:
        ValueError: no state counted (the counts sum to 0), ``counts`` is not
            a 1-D array of finite numbers >= 0, ``alpha`` is not a number >= 0,
            or an unknown estimator, or a bias-corrected one with ``alpha != 1``.

    Example:
        >>> entropy([1, 1, 1, 1])
        2.0
        >>> round(entropy([3, 1], alpha=math.inf), 6)
        0.415037
        >>> round(entropy([1, 1, 2], estimator="miller_madow"), 6)
        1.860674
    """
    counts = _as_counts(counts)
    return entropy_of_chunks([counts], float(np.sum(counts, dtype=np.float64)), alpha,
                             estimator)


def efficiency(counts, num_neurons: int, alpha1=1, alpha2=None) -> float:
    """Layer efficiency: ``H_alpha1`` over ``num_neurons`` (or over ``H_alpha2``).

    Args:
        counts: how often each distinct state occurred (see :func:`entropy`).
        num_neurons: the width of the states: the largest entropy they can have.
        alpha1: order of the entropy in the numerator.
        alpha2: ``None`` divides by ``num_neurons``; a number divides by the
            entropy of that order instead.

    Returns:
        The efficiency, between 0 and 1 when ``alpha2`` is None.

    Raises:
        ValueError: the denominator is 0 (no neurons, or a single distinct
            state with ``alpha2`` set), or the arguments of :func:`entropy`
            are invalid.

    Example:
        >>> efficiency([1, 1, 1, 1], num_neurons=4)
        0.5
        >>> efficiency([1, 1, 1, 1], num_neurons=4, alpha1=1, alpha2=0)
        1.0
    """
    denominator = float(num_neurons) if alpha2 is None else entropy(counts, alpha2)
    return ratio(entropy(counts, alpha1), denominator, alpha2)


def ratio(numerator: float, denominator: float, alpha2=None) -> float:
    """``numerator / denominator`` for an efficiency, with a clear error at 0.

    Args:
        numerator: an entropy.
        denominator: the number of neurons, or an entropy of order ``alpha2``.
        alpha2: the order of the denominator's entropy (None: the number of
            neurons); only changes the error message.

    Returns:
        The quotient.

    Raises:
        ValueError: ``denominator`` is 0.

    Example:
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
    """Geometric mean of layer efficiencies.

    ``tensorstate_callbacks.network_efficiency`` also takes a model prepared by
    ``build_efficiency_model``; this one takes numbers only.

    Args:
        efficiencies: an iterable of layer efficiencies (finite numbers >= 0).

    Returns:
        Their geometric mean; 0.0 when one of them is 0.

    Raises:
        ValueError: no efficiency, or one that is not finite or is negative.

    Example:
        >>> network_efficiency([0.25, 1.0])
        0.5
        >>> network_efficiency([0.5, 0.0])
        0.0
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

    Args:
        net_efficiency: the network efficiency, in [0, 1].
        accuracy: the accuracy, in [0, 1].
        weight: ``w``, the weight of accuracy (the callbacks' ``beta``), > 0.

    Returns:
        The aIQ, in [0, 1].

    Raises:
        ValueError: ``weight`` is not a number > 0, or ``net_efficiency`` or
            ``accuracy`` is not a number in [0, 1].

    Example:
        >>> round(aIQ(0.5, 1.0, 1), 6)
        0.707107
        >>> round(aIQ(0.25, accuracy=0.9, weight=2), 4)
        0.5872
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


def coverage(counts) -> float:
    """Good-Turing sample coverage ``1 - f1 / N``: the share of the distribution
    that the states seen cover (``f1``: states seen once, ``N``: states).

    Example:
        >>> coverage([1, 1, 2])
        0.5
    """
    counts = _as_counts(counts)
    total = float(np.sum(counts, dtype=np.float64))
    if total <= 0:
        raise ValueError("cannot compute a coverage: no states were counted")
    return 1.0 - int(np.count_nonzero(counts == 1)) / total


def efficiency_ceiling(num_neurons: int, num_states: int) -> float:
    """The largest efficiency ``num_states`` states of ``num_neurons`` neurons can
    show: ``log2(min(2**n, N)) / n``.  A layer at its ceiling reports its
    sample size, not its use of the state space.

    Example:
        >>> round(efficiency_ceiling(100, 2000), 4), efficiency_ceiling(4, 2000)
        (0.1097, 1.0)
    """
    if num_neurons <= 0 or num_states <= 0:
        raise ValueError(f"needs neurons and states > 0, got {num_neurons} and {num_states}")
    return min(float(num_neurons), math.log2(num_states)) / num_neurons


def mutual_information(state_counts, label_counts, joint_counts) -> float:
    """Plug-in mutual information ``H(S) + H(Y) - H(S, Y)`` in bits, from the counts
    of the states, of the labels and of the (state, label) pairs of one sample.

    Example:
        >>> mutual_information([2, 2], [2, 2], [2, 2])   # the state tells the label
        1.0
        >>> mutual_information([4], [2, 2], [2, 2])      # one state: tells nothing
        0.0
    """
    value = entropy(state_counts) + entropy(label_counts) - entropy(joint_counts)
    return max(value, 0.0) + 0.0


def js_divergence(counts_a, counts_b) -> float:
    """Jensen-Shannon divergence in bits between two state distributions given by
    counts aligned state by state (0 where a state was not seen): 0 for the same
    distribution, 1 for distributions without a common state.

    Example:
        >>> js_divergence([1, 1, 0], [1, 1, 0]), js_divergence([1, 0], [0, 3])
        (0.0, 1.0)
    """
    p, q = _as_counts(counts_a).astype(np.float64), _as_counts(counts_b).astype(np.float64)
    if p.shape != q.shape or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("js_divergence needs two non-empty count arrays of one shape")
    p, q = p / p.sum(), q / q.sum()
    mixture = (p + q) / 2
    value = _plugin(mixture) - (_plugin(p) + _plugin(q)) / 2
    return min(max(value, 0.0), 1.0) + 0.0


def _plugin(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-np.sum(p * np.log2(p)))
