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

__all__ = ["CountingProbe", "ProbeHealth"]


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

    def entropy(self, alpha=1) -> float:
        """Renyi entropy of order ``alpha`` of the states (base 2)."""
        return self.counter.entropy(alpha)

    def efficiency(self, alpha1=1, alpha2=None) -> float:
        """``entropy(alpha1)`` over ``max_entropy()`` (or over ``entropy(alpha2)``)."""
        return self.counter.efficiency(alpha1, alpha2)

    def max_entropy(self) -> int:
        """The number of neurons."""
        return self.counter.max_entropy()

    def reset_states(self) -> None:
        """Forget every state seen so far."""
        self.counter.reset_states()


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

    def _once(self, warn, kind: str, name: str, message: str) -> None:
        if (kind, name) not in self._warned:
            self._warned.add((kind, name))
            warn(message)
