"""The Keras callback's TensorBoard event files: ``log_dir/validation`` and ``log_dir/train``.

Keras' own ``TensorBoard`` callback writes a ``fit``'s validation values to
``log_dir/validation`` and its training values to ``log_dir/train``; the
``StateSpaceCallback`` follows it.  Validation reports go to
``validation`` with the custom-scalars layout and the hparams (once), per-probe
histograms, and the efficiency heat map when training ends; the training-time
view's windows go to ``train`` (scalars only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ...reporting import tensorboard
from ...reporting.report import EpochReport

__all__ = ["RunWriters"]


class RunWriters:
    """One tensorboardX writer per directory of ``log_dir``, opened at first use.

    Args:
        log_dir: the callback's directory.
        hparams: gives the settings for the HParams dashboard (called once).
        histograms: also write per-probe histograms of validation reports.

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from tensorstate_callbacks import StateCounter
        >>> counter = StateCounter("fc_states"); counter.add(np.eye(4))
        >>> report = EpochReport.from_counters(0, {"fc_states": counter}, 0.5, beta=2)
        >>> writers = RunWriters(Path(tempfile.mkdtemp()), lambda: {"beta": 2}, histograms=True)
        >>> writers.write(report, {"fc_states": counter})
        >>> writers.close([report], image=False)
        >>> sorted(path.name for path in writers.log_dir.iterdir())
        ['validation']
    """

    def __init__(self, log_dir: Path, hparams: Callable[[], dict], histograms: bool):
        self.log_dir = Path(log_dir)
        self.hparams = hparams
        self.histograms = histograms
        self._writers: dict = {}

    def directory(self, stage: str) -> Path:
        """``log_dir/train`` for training windows, ``log_dir/validation`` otherwise.

        Example:
            >>> RunWriters(Path("logs"), dict, True).directory("train").as_posix()
            'logs/train'
        """
        return self.log_dir / ("train" if stage == "train" else "validation")

    def open(self, stage: str, probes: Sequence[str] = ()):
        """The writer of ``stage``'s directory (opened now if need be; a
        validation writer gets the layout of ``probes`` and the hparams).

        Open the training writer before training starts: a tensorboardX writer
        opened between two training steps held up TensorFlow's next epoch
        iterator for seconds (docs/performance.md).
        """
        directory = self.directory(stage)
        writer = self._writers.get(directory)
        if writer is None:
            writer = self._writers[directory] = tensorboard.open_writer(directory)
            if stage != "train":
                tensorboard.write_layout(writer, probes)
                tensorboard.write_hparams(writer, self.hparams())
        return writer

    def write(self, report: EpochReport, counters: Mapping) -> None:
        """Write ``report`` (at its step) and, for a validation, the histograms of ``counters``."""
        writer = self.open(report.stage, [layer.name for layer in report.layers])
        tensorboard.write_scalars(writer, report)
        if self.histograms and report.stage != "train":
            counts = {name: counter.counts() for name, counter in counters.items()
                      if counter.state_count}
            tensorboard.write_state_histograms(writer, counts, report.step)
        writer.flush()

    def close(self, history: Sequence[EpochReport], image: bool) -> None:
        """Write the heat map of the validation reports of ``history`` (if
        ``image`` and any was written), and close every writer."""
        validation = self._writers.get(self.directory("validation"))
        if validation is not None and image:  # once: rendering takes about a second
            tensorboard.write_efficiency_image(
                validation, [report for report in history if report.stage != "train"])
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
