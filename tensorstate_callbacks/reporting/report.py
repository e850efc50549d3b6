"""What one validation epoch measured: per-layer and network metrics, and
their TensorBoard tags (the same for the Lightning and Keras callbacks)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from ..core.metrics import aIQ, network_efficiency

__all__ = ["TAG_PREFIX", "EpochReport", "LayerStats", "efficiency_tag"]

TAG_PREFIX = "state_space"


def efficiency_tag(probe: str) -> str:
    """TensorBoard tag of a probe's efficiency.

    >>> efficiency_tag("conv_1_post_states")
    'state_space/efficiency/conv_1_post_states'
    """
    return f"{TAG_PREFIX}/efficiency/{probe}"


@dataclass
class LayerStats:
    """Metrics of one probe over one validation epoch."""

    name: str
    efficiency: float
    unique_states: int
    states: int


@dataclass
class EpochReport:
    """Metrics of every probe, the network efficiency, accuracy and aIQ of one epoch.

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

    @classmethod
    def from_values(cls, epoch: int, values: Mapping[str, tuple[float, int, int]],
                    accuracy: float | None, beta: float,
                    skipped_layers: list[str] | None = None) -> EpochReport:
        """Build from ``{probe: (efficiency, unique_states, states)}``."""
        if not values:
            raise ValueError("no probe recorded any state this epoch")
        layers = [LayerStats(name, float(e), int(u), int(s)) for name, (e, u, s) in values.items()]
        net = network_efficiency([layer.efficiency for layer in layers])
        score = None if accuracy is None else aIQ(net, accuracy, beta)
        return cls(epoch, layers, net, None if accuracy is None else float(accuracy), score,
                   float(beta), list(skipped_layers or []))

    @classmethod
    def from_counters(cls, epoch: int, counters: Mapping, accuracy: float | None,
                      beta: float) -> EpochReport:
        """Build from probes (anything with ``state_count``, ``efficiency()`` and
        ``distinct_count``); probes that saw no state are listed in ``skipped_layers``."""
        values, skipped = {}, []
        for name, counter in counters.items():
            if counter.state_count == 0:
                skipped.append(name)
                continue
            values[name] = (counter.efficiency(), counter.distinct_count, counter.state_count)
        return cls.from_values(epoch, values, accuracy, beta, skipped)

    def scalars(self) -> dict[str, float]:
        """``{tag: value}`` for every scalar of DESIGN.md, logged at step = epoch."""
        out = {}
        for layer in self.layers:
            out[efficiency_tag(layer.name)] = layer.efficiency
            out[f"{TAG_PREFIX}/unique_states/{layer.name}"] = float(layer.unique_states)
            out[f"{TAG_PREFIX}/states/{layer.name}"] = float(layer.states)
        out[f"{TAG_PREFIX}/network_efficiency"] = self.network_efficiency
        if self.accuracy is not None:
            out[f"{TAG_PREFIX}/accuracy"] = self.accuracy
            out[f"{TAG_PREFIX}/aIQ"] = self.aIQ
        return out

    def to_dict(self) -> dict:
        """Plain-data form, for ``state_dict()`` and JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EpochReport:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["layers"] = [LayerStats(**layer) for layer in data["layers"]]
        return cls(**data)

    def is_finite(self) -> bool:
        """True when every metric is a finite number."""
        return all(math.isfinite(value) for value in self.scalars().values())
