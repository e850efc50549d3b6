"""What a measurement reports, and where it goes: :mod:`.report` (one epoch's
metrics and their tags), :mod:`.tensorboard` (writing them), :mod:`.events`
(reading them back).  Depends on the core only."""

from .report import TAG_PREFIX, EpochReport, LayerStats, efficiency_tag

__all__ = ["TAG_PREFIX", "EpochReport", "LayerStats", "efficiency_tag"]
