"""Exact metrics of counts whose distinct states are spread over processes.

Under DDP each process owns a *slice* of the key space: the packed states
that :func:`owners` assigns to it, with their counts summed over every
process.  No process holds the others' slices.  Every metric the package
reports is a function of a few additive quantities of the slices, which
:class:`SliceStatistics` collects and :class:`ReducedCounts` adds up:

* the *count profile* (how many distinct states were seen exactly ``c``
  times, for each ``c``; at most about ``sqrt(2 N)`` entries): ``N``, ``K``,
  ``f1`` and every entropy (any order, every estimator, Chao-Shen included)
  and the coverage follow from it exactly;
* the profile of the (state, label) pairs and the label counts: mutual
  information;
* the firing count of each neuron: firing rates;
* the per-state terms of the Jensen-Shannon divergence from the previous
  measurement, whose slice stays on the process that owns it: drift.

NumPy only; :mod:`tensorstate_callbacks.integrations.distributed` moves the
keys and the statistics between processes.

Example:
    >>> from tensorstate_callbacks.core.counter import StateCounter
    >>> states = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    >>> whole = StateCounter(); whole.add(states)
    >>> slices = [StateCounter(), StateCounter()]   # two processes' slices
    >>> keys, counts = whole.items()
    >>> for part, counter in enumerate(slices):
    ...     mine = owners(keys, 2) == part
    ...     counter.add_counts(keys[mine], counts[mine], 2)
    >>> parts = [SliceStatistics.of(counter) for counter in slices]
    >>> merged = ReducedCounts("fc", 2, parts, slices[0])
    >>> merged.state_count, merged.distinct_count, merged.entropy() == whole.entropy()
    (4, 3, True)
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from . import metrics

__all__ = ["ReducedCounts", "SliceStatistics", "count_profile", "owners"]

_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd constants of a 64-bit multiplicative hash
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)
_PROFILE_CHUNK = 1 << 20  # counts expanded from a profile at a time (bounded memory)


def owners(keys: np.ndarray, parts: int) -> np.ndarray:
    """Which of ``parts`` slices owns each packed key: a hash of its bytes.

    The same key goes to the same slice in every process and at every
    measurement (the hash is fixed, not seeded per process).

    Args:
        keys: ``uint8[n, key_bytes]`` packed states (or the state bytes of
            (state, label) keys, so that a state's pairs go with it).
        parts: the number of slices (processes).

    Returns:
        ``int64[n]`` in ``[0, parts)``.

    Example:
        >>> keys = np.arange(1000).astype("<u2").view(np.uint8).reshape(1000, 2)
        >>> np.bincount(owners(keys, 3)).tolist()      # about a third each
        [301, 351, 348]
    """
    rows, width = keys.shape
    words = (width + 7) // 8
    padded = np.zeros((rows, words * 8), dtype=np.uint8)
    padded[:, :width] = keys
    hashed = np.full(rows, width, dtype=np.uint64)
    for word in padded.view("<u8").T:
        hashed = (hashed ^ word) * _MIX
        hashed ^= hashed >> np.uint64(31)
    hashed = (hashed ^ (hashed >> np.uint64(29))) * _MIX2
    return ((hashed >> np.uint64(32)) % np.uint64(parts)).astype(np.int64)


def count_profile(counts: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(values, multiplicities)``: how many distinct states have each count.

    Args:
        counts: chunks of counts, each distinct state in exactly one.

    Returns:
        ``int64[m]`` sorted count values and ``int64[m]`` how many states have each.

    Example:
        >>> values, multiplicities = count_profile([np.array([1, 3, 1]), np.array([3, 1])])
        >>> values.tolist(), multiplicities.tolist()
        ([1, 3], [3, 2])
    """
    return _add_profiles(np.unique(np.asarray(chunk, dtype=np.int64), return_counts=True)
                         for chunk in counts)


def _add_profiles(profiles: Iterable[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """The profile of the union of disjoint sets of states, from theirs."""
    profiles = list(profiles)
    if not profiles:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    values, where = np.unique(np.concatenate([values for values, _ in profiles]),
                              return_inverse=True)
    total = np.zeros(len(values), dtype=np.int64)
    np.add.at(total, where, np.concatenate([times for _, times in profiles]).astype(np.int64))
    return values.astype(np.int64), total


def _expanded(values: np.ndarray, multiplicities: np.ndarray) -> Iterator[np.ndarray]:
    """The counts a profile stands for, in chunks of at most about
    ``_PROFILE_CHUNK`` entries (a huge multiplicity is split)."""
    pending_values, pending_times, size = [], [], 0
    for value, times in zip(values.tolist(), multiplicities.tolist()):
        while times:
            take = min(times, _PROFILE_CHUNK - size)
            pending_values.append(value)
            pending_times.append(take)
            size, times = size + take, times - take
            if size == _PROFILE_CHUNK:
                yield np.repeat(np.array(pending_values, np.int64), pending_times)
                pending_values, pending_times, size = [], [], 0
    if size:
        yield np.repeat(np.array(pending_values, np.int64), pending_times)


def divergence_terms(previous, current, previous_total: int, current_total: int) -> float:
    """This slice's share of the Jensen-Shannon divergence (bits) between two
    measurements: the sum over its states of
    ``(p log2 p + q log2 q) / 2 - m log2 m``, ``m = (p + q) / 2``, with
    ``p``, ``q`` the states' frequencies in the whole of each measurement.

    Args:
        previous: the previous measurement's slice (a counter; may be empty).
        current: this measurement's slice of the same key space (may be empty).
        previous_total: ``N`` of the whole previous measurement.
        current_total: ``N`` of the whole current one.

    Example:
        >>> from tensorstate_callbacks.core.counter import StateCounter
        >>> a, b = StateCounter(), StateCounter()
        >>> a.add(np.array([[1.0], [0.0]])); b.add(np.array([[1.0], [1.0]]))
        >>> round(divergence_terms(a, b, 2, 2), 4)    # state_divergence(a, b)
        0.3113
    """
    chunks = [*_chunks(previous), *_chunks(current)]
    if not chunks:
        return 0.0
    keys = np.concatenate([keys for keys, _ in chunks])
    previous_rows = sum(len(keys) for keys, _ in _chunks(previous))
    counts = np.concatenate([counts for _, counts in chunks]).astype(np.float64)
    rows = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.shape[1]))).ravel()
    _, where = np.unique(rows, return_inverse=True)
    aligned = np.zeros((2, int(where.max()) + 1), dtype=np.float64)
    np.add.at(aligned[0], where[:previous_rows], counts[:previous_rows] / previous_total)
    np.add.at(aligned[1], where[previous_rows:], counts[previous_rows:] / current_total)
    mixture = aligned.mean(axis=0)
    return float(np.sum((_plogp(aligned[0]) + _plogp(aligned[1])) / 2 - _plogp(mixture)))


def _chunks(counter) -> list:
    return [] if counter is None else list(counter.count_chunks())


def _plogp(p: np.ndarray) -> np.ndarray:
    out = np.zeros_like(p)
    seen = p > 0
    out[seen] = p[seen] * np.log2(p[seen])
    return out


@dataclass
class SliceStatistics:
    """The additive quantities of one process's slice (see the module docstring).

    Attributes:
        profile: ``(values, multiplicities)`` of its states' counts.
        joint_profile: the same of its (state, label) pairs (empty without labels).
        firing: per-neuron firing counts, or None for an empty slice.
        label_counts: the labels this process counted (not a slice: labels
            are few, each process sends its own).
        divergence: its terms of the drift (see :func:`divergence_terms`), or None.

    Example:
        >>> from tensorstate_callbacks.core.counter import StateCounter
        >>> counter = StateCounter(); counter.add(np.array([[1.0], [1.0], [0.0]]))
        >>> SliceStatistics.of(counter).firing.tolist()
        [2]
    """

    profile: tuple[np.ndarray, np.ndarray]
    joint_profile: tuple[np.ndarray, np.ndarray]
    firing: np.ndarray | None
    label_counts: dict = field(default_factory=dict)
    divergence: float | None = None

    @classmethod
    def of(cls, states, joint=None, label_counts=None, divergence=None) -> SliceStatistics:
        """Read a slice: ``states`` and ``joint`` are counters of its states and
        (state, label) pairs (anything with ``count_chunks()``)."""
        firing = states.firing_counts() if states.state_count else None
        return cls(count_profile(counts for _, counts in states.count_chunks()),
                   count_profile(counts for _, counts in _chunks(joint)), firing,
                   dict(label_counts or {}), divergence)


class ReducedCounts:
    """The counts of one layer over every process, read from reduced statistics.

    It answers what a :class:`~tensorstate_callbacks.StateCounter` answers about
    the whole (state and distinct counts, entropies with every estimator,
    efficiency, coverage, ceiling, firing rates, mutual information, the
    multiset of counts), exactly and identically on every process, without
    any process holding every distinct state.  ``local`` is this process's
    slice (kept for the drift of the next measurement); the distinct states
    themselves are not gathered, so :meth:`items` raises.

    Args:
        name: the counter's name.
        num_neurons: the width of the states (None when no process saw any).
        parts: every process's :class:`SliceStatistics`, in rank order (none
            where no process saw a state).
        local: this process's slice of the states (a counter), or None.
        previous: the measurement the drift was computed against, if any.

    Example:
        >>> unlabelled = count_profile([])
        >>> parts = [SliceStatistics((np.array([1]), np.array([2])), unlabelled, np.array([1, 2])),
        ...          SliceStatistics((np.array([2]), np.array([1])), unlabelled, np.array([2, 0]))]
        >>> merged = ReducedCounts("fc", 2, parts)      # counts 1, 1, 2 in two slices
        >>> merged.state_count, merged.distinct_count, merged.entropy()
        (4, 3, 1.5)
        >>> merged.firing_rates().tolist(), merged.coverage()
        ([0.75, 0.5], 0.5)
    """

    def __init__(self, name: str, num_neurons: int | None, parts: list[SliceStatistics],
                 local=None, previous=None):
        self.name = name
        self.num_neurons = num_neurons
        self.local = local
        self._profile = _add_profiles(part.profile for part in parts)
        self._joint_profile = _add_profiles(part.joint_profile for part in parts)
        self.state_count = int(np.dot(*self._profile)) if len(self._profile[0]) else 0
        self.distinct_count = int(self._profile[1].sum())
        firing = [part.firing for part in parts if part.firing is not None]
        self._firing = np.sum(firing, axis=0) if firing else None
        self._label_counts: dict[int, int] = {}
        for part in parts:
            for label, count in part.label_counts.items():
                self._label_counts[label] = self._label_counts.get(label, 0) + count
        terms = [part.divergence for part in parts if part.divergence is not None]
        # a weak reference: measurements must not keep every earlier one alive
        self._previous = weakref.ref(previous) if terms else None
        self._drift = min(max(sum(terms), 0.0), 1.0) + 0.0 if terms else None

    def __repr__(self) -> str:
        return (f"ReducedCounts(name={self.name!r}, num_neurons={self.num_neurons}, "
                f"state_count={self.state_count})")

    def _require_states(self) -> None:
        if not self.state_count:
            raise ValueError(f"{self.name}: no process counted any state yet; run data "
                             "through the model before asking for metrics")

    def _counts(self):
        """A new iterable of every count, chunk by chunk (for metrics.entropy_of_chunks)."""
        return _expanded(*self._profile)

    @property
    def has_labels(self) -> bool:
        """True when the states were counted with labels."""
        return bool(self._label_counts)

    def counts(self) -> np.ndarray:
        """How often each distinct state occurred, in ascending order (the states
        themselves stay spread over the processes).

        Example:
            >>> part = SliceStatistics((np.array([1, 3]), np.array([2, 1])), count_profile([]),
            ...                        np.array([5]))
            >>> ReducedCounts("fc", 1, [part]).counts().tolist()
            [1, 1, 3]
        """
        return np.repeat(*self._profile)

    def items(self):
        """Not available: the distinct states are spread over the processes.

        Raises:
            ValueError: always; read ``local`` (this process's slice) instead.
        """
        raise ValueError(f"{self.name}: the distinct states are spread over the processes "
                         "(each holds one slice, in .local); counts(), entropy() and the "
                         "other metrics are those of the whole")

    state_ids = items

    def max_entropy(self) -> int:
        """The number of neurons."""
        self._require_states()
        return self.num_neurons

    def entropy(self, alpha=1, estimator: str = "plugin") -> float:
        """Renyi entropy (bits) of the whole, as :meth:`StateCounter.entropy
        <tensorstate_callbacks.StateCounter.entropy>`."""
        self._require_states()
        if alpha is None:
            return float(self.num_neurons)
        return metrics.entropy_of_chunks(self._counts, self.state_count, alpha, estimator)

    def efficiency(self, alpha1=1, alpha2=None, estimator: str = "plugin") -> float:
        """``entropy(alpha1)`` over the number of neurons (or over ``entropy(alpha2)``)."""
        denominator = self.max_entropy() if alpha2 is None else self.entropy(alpha2)
        return metrics.ratio(self.entropy(alpha1, estimator), denominator, alpha2)

    def coverage(self) -> float:
        """Good-Turing coverage ``1 - f1 / N`` of the whole."""
        self._require_states()
        values, multiplicities = self._profile
        return 1.0 - int(multiplicities[values == 1].sum()) / self.state_count

    def efficiency_ceiling(self) -> float:
        """``log2(min(2**n, N)) / n``: the largest efficiency N states can show."""
        self._require_states()
        return metrics.efficiency_ceiling(self.num_neurons, self.state_count)

    def firing_rates(self) -> np.ndarray:
        """Per neuron, the fraction of all states in which it fires."""
        self._require_states()
        return self._firing / self.state_count

    def mutual_information(self) -> float:
        """I(state; label) in bits over every process (plug-in, exact).

        Raises:
            ValueError: no state counted, or the states came without labels.
        """
        self._require_states()
        if not self.has_labels:
            raise ValueError(f"{self.name}: no labels were counted; pass labels= to add() "
                             "(one integer per sample) to measure mutual information")
        total = self.state_count
        states = metrics.entropy_of_chunks(self._counts, total)
        joint = metrics.entropy_of_chunks(lambda: _expanded(*self._joint_profile), total)
        labels = metrics.entropy(np.fromiter(self._label_counts.values(), dtype=np.int64))
        return max(states + labels - joint, 0.0) + 0.0

    def divergence_from(self, previous) -> float:
        """The Jensen-Shannon divergence (bits) from ``previous``, computed when
        these counts were merged (``state_divergence(previous, self)`` calls this).

        Raises:
            ValueError: ``previous`` is not the measurement given to the merge.
        """
        if self._drift is None or previous is not self._previous():
            raise ValueError(f"{self.name}: the divergence of counts spread over processes is "
                             "computed by the merge; pass the previous measurement to "
                             "merge_across_ranks(..., previous=...)")
        return self._drift
