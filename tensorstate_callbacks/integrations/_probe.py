"""The probe API both frameworks' probes share, read from a composed counter.

A probe is whatever a framework needs to see a layer's tensors (a PyTorch
forward hook, a Keras layer) plus a :class:`~tensorstate_callbacks.StateCounter`
in ``self.counter`` that counts them.  :class:`CountingProbe` gives every probe
the reference TensorState probe API by reading that counter, so the PyTorch
and Keras probes answer the same questions the same way.
"""

from __future__ import annotations

import numpy as np

from ..core.counter import StateCounter

__all__ = ["CountingProbe", "ProbeHealth", "labels_of", "snapshot", "without_incomplete"]


class CountingProbe:
    """Mixin: the TensorState probe API of a probe whose counter is ``self.counter``.

    Example:
        >>> class Probe(CountingProbe):
        ...     def __init__(self):
        ...         self.counter = StateCounter("probe")
        >>> probe = Probe()
        >>> probe.counter.add(np.array([[1.0, -1.0], [2.0, 3.0]]))
        >>> probe.state_count, probe.distinct_count, probe.efficiency()
        (2, 2, 0.5)
    """

    counter: StateCounter

    @property
    def state_count(self) -> int:
        """Number of states seen, repeats included."""
        return self.counter.state_count

    @property
    def distinct_count(self) -> int:
        """Number of distinct states seen."""
        return self.counter.distinct_count

    @property
    def num_neurons(self) -> int | None:
        """Width of the states (None before the first batch)."""
        return self.counter.num_neurons

    @property
    def raw_states(self) -> np.ndarray:
        """Every packed state in arrival order (needs ``storage_path``)."""
        return self.counter.raw_states

    @property
    def states(self) -> np.ndarray:
        """Every state as ``bool[state_count, num_neurons]`` (needs ``storage_path``)."""
        return self.counter.states

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """``(state_ids, counts)``: every distinct packed state and how often it occurred."""
        return self.counter.items()

    def counts(self) -> np.ndarray:
        """How often each distinct state occurred (aligned with :meth:`state_ids`)."""
        return self.counter.counts()

    def state_ids(self) -> np.ndarray:
        """The distinct packed states, one row each."""
        return self.counter.state_ids()

    def entropy(self, alpha=1, estimator: str = "plugin") -> float:
        """Renyi entropy of order ``alpha`` of the states (base 2)."""
        return self.counter.entropy(alpha, estimator)

    def efficiency(self, alpha1=1, alpha2=None, estimator: str = "plugin") -> float:
        """``entropy(alpha1)`` over ``max_entropy()`` (or over ``entropy(alpha2)``)."""
        return self.counter.efficiency(alpha1, alpha2, estimator)

    def max_entropy(self) -> int:
        """The number of neurons."""
        return self.counter.max_entropy()

    def reset_states(self) -> None:
        """Forget every state seen so far."""
        self.counter.reset_states()

    def take_counts(self) -> StateCounter:
        """Hand over the counter of the states seen so far and count on in a
        new, empty one with the same settings (raw states are not stored in it).

        Example:
            >>> class Probe(CountingProbe):
            ...     def __init__(self):
            ...         self.counter = StateCounter("probe")
            >>> probe = Probe()
            >>> probe.counter.add(np.ones((3, 2)))
            >>> taken = probe.take_counts()
            >>> taken.state_count, probe.state_count, probe.counter.name
            (3, 0, 'probe')
        """
        taken = self.counter
        self.counter = StateCounter(taken.name, memory_limit=taken.memory_limit,
                                    spill_dir=taken.spill_dir, threads=taken.threads)
        return taken

    def coverage(self) -> float:
        """Good-Turing coverage of the states seen (see StateCounter.coverage)."""
        return self.counter.coverage()

    def efficiency_ceiling(self) -> float:
        """The largest efficiency this many states can show."""
        return self.counter.efficiency_ceiling()

    def firing_rates(self) -> np.ndarray:
        """Per neuron, the fraction of states in which it fires."""
        return self.counter.firing_rates()

    @property
    def has_labels(self) -> bool:
        """True when the states were counted with labels."""
        return self.counter.has_labels

    def mutual_information(self) -> float:
        """I(state; label) in bits (see StateCounter.mutual_information)."""
        return self.counter.mutual_information()


class ProbeHealth:
    """Warns, once per probe, about a measurement that would mislead silently.

    * A probe that saw nothing while others did: its module never ran as a
      module (a fused fast path, such as ``nn.MultiheadAttention``'s
      ``out_proj`` in eval mode, or a branch not taken).
    * A probe that saw one distinct state: its efficiency is 0, which makes
      the network efficiency and aIQ 0 (e.g. a softmax output layer).

    Example:
        >>> import warnings
        >>> a, b = StateCounter("a_states"), StateCounter("b_states")
        >>> a.add(np.ones((4, 3)))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     ProbeHealth().check({"a_states": a, "b_states": b}, warnings.warn)
        >>> [str(w.message).split(":")[0] for w in caught]
        ['a_states', 'b_states']
    """

    def __init__(self):
        self._warned: set[tuple[str, str]] = set()

    def check(self, counters, warn) -> None:
        """Look at ``{probe name: counter}`` after a measurement; ``warn(message)`` reports."""
        ran = [name for name, counter in counters.items() if counter.state_count]
        if not ran:
            return
        for name, counter in counters.items():
            if not counter.state_count:
                self._once(warn, "silent", name,
                           f"{name}: saw no state while {len(ran)} other probe(s) did; its "
                           "module never ran as a module (a fused fast path, e.g. "
                           "nn.MultiheadAttention's out_proj or a TransformerEncoderLayer's "
                           "inner layers in eval mode, or a branch not taken). Probe a module "
                           "that is called, or leave this one out with exclude=[...]")
            elif counter.distinct_count == 1:
                self._once(warn, "single", name,
                           f"{name}: all {counter.state_count:,} states are the same one, so "
                           "its efficiency is 0 and so are the network efficiency and aIQ "
                           "(typical of a softmax or other all-positive output). Leave it out "
                           "with exclude=[...]")

    def check_complete(self, counters, kept, warn) -> None:
        """Warn once per probe of ``counters`` that is not in ``kept`` because
        its counts are incomplete (here, or on another DDP rank)."""
        for name, counter in counters.items():
            if name not in kept:
                reason = counter.incomplete or "its counts are incomplete on another rank " \
                                               "(that rank's warning says why)"
                self._once(warn, "incomplete", name,
                           f"{name}: {reason}. Its metrics are left out of this measurement; "
                           "the next one counts afresh (training goes on)")

    def check_report(self, report, warn) -> None:
        """Warn once per probe whose efficiency sits at its sample-size ceiling
        (see :attr:`~tensorstate_callbacks.reporting.report.LayerStats.sample_limited`)."""
        for layer in report.layers:
            if layer.sample_limited:
                self._once(warn, "ceiling", layer.name,
                           f"{layer.name}: efficiency {layer.efficiency:.4f} is at its ceiling "
                           f"{layer.efficiency_ceiling:.4f} = log2({layer.states:,} states) / "
                           "neurons: that many states cannot show more, so the number measures "
                           "the sample, not the layer. Measure on more data, probe a layer of "
                           "fewer neurons, or read the efficiency against state_space/"
                           f"efficiency_ceiling/{layer.name}")

    def _once(self, warn, kind: str, name: str, message: str) -> None:
        if (kind, name) not in self._warned:
            self._warned.add((kind, name))
            warn(message)


def without_incomplete(counters) -> dict:
    """``{name: counter}`` of ``counters`` whose counts are complete (see
    :attr:`StateCounter.incomplete`): the ones a measurement can report.

    Example:
        >>> a = StateCounter("a"); a.add(np.ones((2, 3)))
        >>> list(without_incomplete({"a": a}))
        ['a']
    """
    return {name: counter for name, counter in counters.items() if counter.incomplete is None}


def snapshot(counter: StateCounter) -> StateCounter:
    """A copy of ``counter``'s counts (for the drift of the next measurement).

    Example:
        >>> counter = StateCounter("fc")
        >>> counter.add(np.ones((3, 2)))
        >>> copy = snapshot(counter); counter.reset_states()
        >>> copy.state_count, counter.state_count
        (3, 0)
    """
    copy = StateCounter(counter.name, memory_limit=counter.memory_limit)
    copy.merge(counter)
    return copy


def labels_of(batch, getter="auto"):
    """One integer per sample of ``batch`` as a NumPy array, or None.

    ``getter``: ``"auto"`` takes ``batch[1]`` of a tuple or list and
    ``batch["labels"]`` or ``batch["label"]`` of a dict; a callable returns
    them; None gives None.  Class indices are taken as they are, one-hot (or
    probability) rows by their largest entry; anything else gives None.

    Example:
        >>> labels_of((np.zeros((3, 4)), np.array([2, 0, 1]))).tolist()
        [2, 0, 1]
        >>> labels_of({"x": 0, "label": np.eye(3)[[1, 1, 0]]}).tolist()
        [1, 1, 0]
        >>> labels_of(np.zeros(3)) is None
        True
    """
    if getter is None:
        return None
    if callable(getter):
        value = getter(batch)
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        value = batch[1]
    elif isinstance(batch, dict):
        value = batch.get("labels", batch.get("label"))
    else:
        value = None
    if value is None:
        return None
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    value = np.asarray(value)
    if value.ndim == 2 and value.shape[1] > 1:
        value = value.argmax(axis=1)
    elif value.ndim == 2:
        value = value[:, 0]
    if value.ndim != 1 or value.dtype.kind not in "iub":
        if value.ndim == 1 and value.dtype.kind == "f" and np.all(value == np.round(value)):
            return value.astype(np.int64)
        return None
    return value.astype(np.int64)
