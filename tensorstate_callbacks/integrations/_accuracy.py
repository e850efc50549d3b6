"""The validation accuracy that weighs aIQ, read the same way by both callbacks.

A value aIQ cannot use (missing, not a number, NaN, outside [0, 1] such as a
percentage) never stops training: aIQ is skipped for that measurement, the
efficiencies are still logged, and one warning per kind of problem names the
key and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

__all__ = ["AccuracyReader"]


class AccuracyReader:
    """Reads ``key`` from a metrics mapping as an accuracy in [0, 1], or None.

    Args:
        key: the metrics key (None: aIQ is never computed, and nothing warns).
        source: how the messages name the mapping (e.g. ``"trainer.callback_metrics"``).
        fix: what the user can do when the key is missing.

    Example:
        >>> import warnings
        >>> reader = AccuracyReader("val_acc", "the logs", "log it")
        >>> reader.read({"val_acc": 0.9}, warnings.warn)
        0.9
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     reader.read({"val_acc": 93.5}, warnings.warn), reader.read({"val_acc": 91.0},
        ...                                                                warnings.warn)
        (None, None)
        >>> len(caught), "outside [0, 1]" in str(caught[0].message)
        (1, True)
    """

    def __init__(self, key: str | None, source: str, fix: str):
        self.key = key
        self.source = source
        self.fix = fix
        self._warned: set[str] = set()

    def read(self, metrics: Mapping, warn: Callable[[str], None],
             suffix: str = "") -> float | None:
        """The accuracy in ``metrics``, or None (aIQ skipped) after warning once per problem.

        ``suffix`` is appended to the key (Lightning's ``/dataloader_idx_<k>``
        of a metric logged for one of several dataloaders).
        """
        if self.key is None:
            return None
        key = self.key + suffix
        value = metrics.get(key)
        if value is None:
            return self._skip(warn, "missing", f"no {key!r} in {self.source} (available: "
                                               f"{sorted(metrics)}); logging efficiency without "
                                               f"aIQ. {self.fix}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            return self._skip(warn, "type", f"{key!r} is {value!r}, not a number; aIQ "
                                            "skipped (efficiencies still logged). Log the "
                                            "accuracy as a number in [0, 1]")
        if not math.isfinite(number):
            return self._skip(warn, "finite", f"{key!r} is {number}; aIQ skipped for that "
                                              "measurement (efficiencies still logged)")
        if not 0.0 <= number <= 1.0:
            return self._skip(warn, "range", f"{key!r} is {number}, outside [0, 1]: aIQ "
                                             "weighs an accuracy given as a fraction (a "
                                             "percentage? log accuracy / 100); aIQ skipped "
                                             "(efficiencies still logged)")
        return number

    def _skip(self, warn, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warn(f"StateSpaceCallback: {message}")
        return None
