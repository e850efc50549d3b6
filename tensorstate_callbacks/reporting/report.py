"""What one validation epoch measured: per-layer and network metrics, and
their TensorBoard tags (the same for the Lightning and Keras callbacks).

Every scalar of a validation measurement is logged under the prefix
``state_space`` (the step: Lightning's ``trainer.global_step``, Keras' epoch;
``state_space/epoch`` carries the training epoch at that step):

* ``state_space/efficiency/<probe>``: the layer's efficiency;
* ``state_space/unique_states/<probe>``: its number of distinct states;
* ``state_space/states/<probe>``: its number of states, repeats included;
* ``state_space/coverage/<probe>``: the Good-Turing coverage of its states;
* ``state_space/efficiency_ceiling/<probe>``: the largest efficiency that many
  states can show (an efficiency at its ceiling measures the sample size);
* ``state_space/dead_fraction/<probe>`` and ``state_space/always_on_fraction/<probe>``:
  the share of its neurons that never fire, and that always fire;
* ``state_space/mutual_information/<probe>``: I(state; label) in bits, when the
  callback has labels;
* ``state_space/drift/<probe>``: the Jensen-Shannon divergence (bits) from its
  states at the previous measurement;
* ``state_space/network_efficiency``: the geometric mean of the efficiencies;
* ``state_space/accuracy`` and ``state_space/aIQ``: only when an accuracy is known.

``<probe>`` is the probe's name (``conv_1_post_states`` for PyTorch,
``conv_1_states`` for Keras; docs/architecture.md lists the conventions).
Measurements of other stages put the stage after the prefix
(``state_space/test/aIQ``, ``state_space/train/efficiency/<probe>``); those
of one of several dataloaders end in Lightning's ``/dataloader_idx_<k>``.

Example:
    >>> report = EpochReport.from_values(3, {"conv_1_states": (0.5, 12, 40)}, 0.9, beta=2)
    >>> for tag, value in report.scalars().items():
    ...     print(f"{tag} {value:.4f}")
    state_space/efficiency/conv_1_states 0.5000
    state_space/unique_states/conv_1_states 12.0000
    state_space/states/conv_1_states 40.0000
    state_space/network_efficiency 0.5000
    state_space/accuracy 0.9000
    state_space/aIQ 0.7399
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..core.counter import state_divergence
from ..core.metrics import aIQ, network_efficiency

__all__ = ["STAGES", "TAG_PREFIX", "EpochReport", "LayerStats", "efficiency_tag",
           "layer_extras"]

TAG_PREFIX = "state_space"
"""The first part of every TensorBoard tag this package writes."""
STAGES = ("validation", "test", "train")
"""What a report measured: validation data (tags without a stage), test data
or a window of training steps."""


def efficiency_tag(probe: str) -> str:
    """TensorBoard tag of a probe's efficiency.

    Args:
        probe: the probe's name.

    Returns:
        ``state_space/efficiency/<probe>``.

    Example:
        >>> efficiency_tag("conv_1_post_states")
        'state_space/efficiency/conv_1_post_states'
    """
    return f"{TAG_PREFIX}/efficiency/{probe}"


@dataclass
class LayerStats:
    """Metrics of one probe over one validation epoch.

    Attributes:
        name: the probe's name.
        efficiency: the layer's efficiency (entropy over number of neurons).
        unique_states: how many distinct states the probe saw.
        states: how many states it saw, repeats included.
        coverage: Good-Turing coverage of its states (None where not computed).
        efficiency_ceiling: the largest efficiency that many states can show.
        dead_fraction: the share of its neurons that never fired.
        always_on_fraction: the share of its neurons that always fired.
        mutual_information: I(state; label) in bits (None without labels).
        drift: Jensen-Shannon divergence from the previous measurement (bits).

    Example:
        >>> LayerStats("fc_states", efficiency=0.25, unique_states=3, states=10)
        LayerStats(name='fc_states', efficiency=0.25, unique_states=3, states=10)
    """

    name: str
    efficiency: float
    unique_states: int
    states: int
    coverage: float | None = field(default=None, repr=False)
    efficiency_ceiling: float | None = field(default=None, repr=False)
    dead_fraction: float | None = field(default=None, repr=False)
    always_on_fraction: float | None = field(default=None, repr=False)
    mutual_information: float | None = field(default=None, repr=False)
    drift: float | None = field(default=None, repr=False)

    @property
    def sample_limited(self) -> bool:
        """True when the layer has more possible states than states were seen
        (ceiling < 1) and its efficiency is within 5% of that ceiling: the
        number then says how many states were measured, not how the layer uses
        its neurons.

        Example:
            >>> LayerStats("conv", 0.1097, 2000, 2000, efficiency_ceiling=0.1097).sample_limited
            True
        """
        ceiling = self.efficiency_ceiling
        return ceiling is not None and ceiling < 1.0 and self.efficiency >= 0.95 * ceiling


_EXTRAS = ("coverage", "efficiency_ceiling", "dead_fraction", "always_on_fraction",
           "mutual_information", "drift")


def layer_extras(counter, previous=None) -> dict[str, float]:
    """The per-probe statistics beyond efficiency of a counter (or probe) that saw states.

    Args:
        counter: a :class:`~tensorstate_callbacks.StateCounter` or a probe.
        previous: a counter of the same probe's states at the previous
            measurement, for ``drift``; None for no drift.

    Example:
        >>> import numpy as np
        >>> from tensorstate_callbacks import StateCounter
        >>> counter = StateCounter()
        >>> counter.add(np.array([[1.0, -1.0], [1.0, 2.0]]))
        >>> layer_extras(counter)
        {'coverage': 0.0, 'efficiency_ceiling': 0.5, 'dead_fraction': 0.0, 'always_on_fraction': 0.5}
    """  # noqa: E501
    rates = counter.firing_rates()
    extras = {"coverage": counter.coverage(), "efficiency_ceiling": counter.efficiency_ceiling(),
              "dead_fraction": float(np.mean(rates == 0.0)),
              "always_on_fraction": float(np.mean(rates == 1.0))}
    if counter.has_labels:
        extras["mutual_information"] = counter.mutual_information()
    if previous is not None and previous.state_count and \
            previous.num_neurons == counter.num_neurons:
        extras["drift"] = state_divergence(previous, counter)
    return extras


@dataclass
class EpochReport:
    """Metrics of every probe, the network efficiency, accuracy and aIQ of one epoch.

    Build one with :meth:`from_counters` (from probes) or :meth:`from_values`;
    both callbacks keep one per epoch in their ``history``.

    Attributes:
        epoch: the training epoch the measurement belongs to.
        layers: one :class:`LayerStats` per probe that saw states.
        network_efficiency: the geometric mean of the layers' efficiencies.
        accuracy: the validation accuracy, or None when none was logged.
        aIQ: ``(network_efficiency * accuracy**beta) ** (1 / (beta + 1))``,
            or None without an accuracy.
        beta: the weight of accuracy in aIQ.
        skipped_layers: probes that saw no state this epoch.

    Example:
        >>> report = EpochReport.from_values(0, {"fc": (0.25, 3, 10)}, accuracy=1.0, beta=2)
        >>> report.network_efficiency, round(report.aIQ, 4)
        (0.25, 0.63)
        >>> sorted(report.scalars())[:3]
        ['state_space/aIQ', 'state_space/accuracy', 'state_space/efficiency/fc']
    """

    epoch: int
    layers: list[LayerStats]
    network_efficiency: float
    accuracy: float | None = None
    aIQ: float | None = None  # noqa: N815
    beta: float = 2.0
    skipped_layers: list[str] = field(default_factory=list)
    step: int | None = None
    stage: str = "validation"
    dataloader: int | None = None

    def __post_init__(self):
        if self.step is None:
            self.step = self.epoch
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")

    @classmethod
    def from_values(cls, epoch: int, values: Mapping[str, tuple[float, int, int]],
                    accuracy: float | None, beta: float,
                    skipped_layers: list[str] | None = None,
                    extras: Mapping[str, Mapping[str, float]] | None = None,
                    **where) -> EpochReport:
        """Build a report from each probe's numbers.

        Args:
            epoch: the epoch (step) of the report.
            values: ``{probe name: (efficiency, unique_states, states)}``.
            accuracy: the validation accuracy in [0, 1], or None (then no aIQ).
            beta: the weight of accuracy in aIQ (> 0).
            skipped_layers: names of probes that saw no state.
            extras: ``{probe name: {statistic: value}}`` for the optional
                fields of :class:`LayerStats` (see :func:`layer_extras`).
            **where: ``step``, ``stage`` and ``dataloader`` (see the attributes).

        Returns:
            The report, with network efficiency and aIQ computed.

        Raises:
            ValueError: ``values`` is empty, or an efficiency, the accuracy or
                ``beta`` is out of range (see :mod:`~tensorstate_callbacks.core.metrics`).

        Example:
            >>> report = EpochReport.from_values(
            ...     1, {"a": (0.25, 3, 10), "b": (1.0, 4, 10)}, accuracy=None, beta=2)
            >>> report.network_efficiency, report.aIQ
            (0.5, None)
        """
        if not values:
            raise ValueError("no probe recorded any state this epoch")
        extras = extras or {}
        layers = [LayerStats(name, float(e), int(u), int(s), **extras.get(name, {}))
                  for name, (e, u, s) in values.items()]
        net = network_efficiency([layer.efficiency for layer in layers])
        score = None if accuracy is None else aIQ(net, accuracy, beta)
        return cls(epoch, layers, net, None if accuracy is None else float(accuracy), score,
                   float(beta), list(skipped_layers or []), **where)

    @classmethod
    def from_counters(cls, epoch: int, counters: Mapping, accuracy: float | None,
                      beta: float, *, estimator: str = "plugin", extras: bool = False,
                      previous: Mapping | None = None, **where) -> EpochReport:
        """Build a report from probes or counters.

        Args:
            epoch: the epoch (step) of the report.
            counters: ``{name: probe}``; a probe is anything with
                ``state_count``, ``distinct_count`` and ``efficiency()``
                (a :class:`~tensorstate_callbacks.StateCounter`, a probe).
                Those that saw no state are listed in ``skipped_layers``.
            accuracy: the validation accuracy in [0, 1], or None (then no aIQ).
            beta: the weight of accuracy in aIQ (> 0).
            estimator: the entropy estimator of the efficiencies (see
                :func:`tensorstate_callbacks.core.metrics.entropy`).
            extras: also compute the statistics of :func:`layer_extras`
                (counters or probes with the StateCounter API).
            previous: ``{name: counter}`` of the previous measurement, for drift.
            **where: ``step``, ``stage`` and ``dataloader`` (see the attributes).

        Returns:
            The report.

        Raises:
            ValueError: no probe saw a state, or the accuracy or ``beta`` is out of range.

        Example:
            >>> import numpy as np
            >>> from tensorstate_callbacks import StateCounter
            >>> fc, idle = StateCounter("fc"), StateCounter("idle")
            >>> fc.add(np.array([[1.0, 0.0], [0.0, 1.0]]))
            >>> report = EpochReport.from_counters(0, {"fc": fc, "idle": idle}, 1.0, beta=1)
            >>> report.layers[0], report.skipped_layers
            (LayerStats(name='fc', efficiency=0.5, unique_states=2, states=2), ['idle'])
        """
        values, skipped, statistics = {}, [], {}
        for name, counter in counters.items():
            if counter.state_count == 0:
                skipped.append(name)
                continue
            efficiency = counter.efficiency(estimator=estimator) if estimator != "plugin" \
                else counter.efficiency()
            values[name] = (efficiency, counter.distinct_count, counter.state_count)
            if extras:
                statistics[name] = layer_extras(counter, (previous or {}).get(name))
        return cls.from_values(epoch, values, accuracy, beta, skipped, statistics, **where)

    def tag(self, name: str) -> str:
        """The TensorBoard tag of ``name`` (e.g. ``"aIQ"``, ``"efficiency/fc"``)
        for this report's stage and dataloader.

        Example:
            >>> report = EpochReport.from_values(0, {"fc": (0.5, 3, 8)}, None, beta=2,
            ...                                  stage="test", dataloader=1)
            >>> report.tag("efficiency/fc")
            'state_space/test/efficiency/fc/dataloader_idx_1'
        """
        stage = "" if self.stage == "validation" else f"/{self.stage}"
        suffix = "" if self.dataloader is None else f"/dataloader_idx_{self.dataloader}"
        return f"{TAG_PREFIX}{stage}/{name}{suffix}"

    def scalars(self, with_epoch: bool = False) -> dict[str, float]:
        """Every scalar of the report under its TensorBoard tag (see :meth:`tag`).

        Per probe ``state_space/efficiency/<probe>``,
        ``state_space/unique_states/<probe>``, ``state_space/states/<probe>`` and
        the statistics of :func:`layer_extras` that were computed; then
        ``state_space/network_efficiency``, and ``state_space/accuracy`` and
        ``state_space/aIQ`` when the accuracy is known.  The callbacks log them
        at step = :attr:`step`.

        Args:
            with_epoch: also ``state_space/epoch``, the training epoch (what
                the callbacks write to loggers, so a step maps to its epoch).

        Returns:
            ``{tag: value}``, values as floats.

        Example:
            >>> report = EpochReport.from_values(0, {"fc": (0.5, 3, 8)}, None, beta=2)
            >>> for tag, value in report.scalars().items():
            ...     print(tag, value)
            state_space/efficiency/fc 0.5
            state_space/unique_states/fc 3.0
            state_space/states/fc 8.0
            state_space/network_efficiency 0.5
        """
        out = {}
        for layer in self.layers:
            out[self.tag(f"efficiency/{layer.name}")] = layer.efficiency
            out[self.tag(f"unique_states/{layer.name}")] = float(layer.unique_states)
            out[self.tag(f"states/{layer.name}")] = float(layer.states)
            for statistic in _EXTRAS:
                value = getattr(layer, statistic)
                if value is not None:
                    out[self.tag(f"{statistic}/{layer.name}")] = float(value)
        out[self.tag("network_efficiency")] = self.network_efficiency
        if self.accuracy is not None:
            out[self.tag("accuracy")] = self.accuracy
            out[self.tag("aIQ")] = self.aIQ
        if with_epoch:
            out[self.tag("epoch")] = float(self.epoch)
        return out

    def to_dict(self) -> dict:
        """Plain-data form, for ``state_dict()`` and JSON.

        Returns:
            A dict of the fields, layers as dicts.

        Example:
            >>> report = EpochReport.from_values(0, {"fc": (0.5, 3, 8)}, None, beta=2)
            >>> report.to_dict()["layers"][0]["efficiency"]
            0.5
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EpochReport:
        """Inverse of :meth:`to_dict`.

        Args:
            data: what :meth:`to_dict` returned (or its JSON round trip).

        Returns:
            An equal report.

        Example:
            >>> report = EpochReport.from_values(0, {"fc": (0.5, 3, 8)}, 0.9, beta=2)
            >>> EpochReport.from_dict(report.to_dict()) == report
            True
        """
        data = dict(data)
        known = {f.name for f in fields(LayerStats)}
        data["layers"] = [LayerStats(**{k: v for k, v in layer.items() if k in known})
                          for layer in data["layers"]]
        return cls(**data)

    def is_finite(self) -> bool:
        """True when every metric is a finite number.

        Example:
            >>> EpochReport.from_values(0, {"fc": (0.5, 3, 8)}, None, beta=2).is_finite()
            True
        """
        return all(math.isfinite(value) for value in self.scalars().values())
