"""Read the state-space metrics back from TensorBoard event files.

Works on logs of both callbacks: scalars written as simple values
(tensorboardX, torch.utils.tensorboard) or as tensors (``tf.summary``).
Only the ``state_space/...`` scalars of :mod:`.report` are read.

* A *run* is one event file holding state-space scalars: two trainings that
  log to one directory write two files, and stay two runs.  Event files
  without them (Keras' own ``TensorBoard`` callback, Lightning's losses) are
  not runs.  Measurements of the test data, of training windows or of one of
  several dataloaders (see :meth:`.EpochReport.tag`) are runs of their own.
* Rows are keyed by the step the values were logged at; the training epoch
  is the ``state_space/epoch`` scalar of that step (logs written before it
  existed: epoch = step).
* Every record is checked against the checksums of its TFRecord framing.  A
  damaged record is skipped and the reading goes on at the next good one; what
  was lost, and between which steps, is listed in the run's ``problems``.
  An unreadable, empty or truncated file has problems too.  TensorBoard's own
  reader stops at the first bad record without a word.

``tensorstate-callbacks summary`` prints what :func:`read_event_files` returns.
Needs the ``tensorboard`` extra.

Example:
    >>> import tempfile
    >>> from tensorstate_callbacks.reporting.report import EpochReport
    >>> from tensorstate_callbacks.reporting.tensorboard import open_writer, write_scalars
    >>> logdir = tempfile.mkdtemp()
    >>> writer = open_writer(f"{logdir}/run_a")
    >>> for epoch, accuracy in enumerate([0.5, 0.9]):
    ...     write_scalars(writer, EpochReport.from_values(epoch, {"fc": (0.5, 3, 8)},
    ...                                                   accuracy, beta=2))
    >>> writer.close()
    >>> [(run.path.endswith("run_a"), run.best_epoch()["epoch"]) for run in find_runs(logdir)]
    [(True, 1)]
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .._imports import require
from .report import STAGES, TAG_PREFIX, LayerStats
from .tfrecord import FRAMING, Loss, split_records

__all__ = ["LAYER_METRICS", "NETWORK_METRICS", "EventFile", "RunMetrics", "find_runs",
           "read_event_file", "read_event_files", "read_run", "runs_in"]

LAYER_METRICS = ("efficiency", "efficiency_ceiling", "coverage", "unique_states", "states",
                 "dead_fraction", "always_on_fraction", "mutual_information", "drift")
"""The per-probe statistics read back, each logged as ``state_space/<statistic>/<probe>``."""
NETWORK_METRICS = ("network_efficiency", "accuracy", "aIQ")
"""The network's scalars read back, each logged as ``state_space/<name>``."""

_EPOCH = "epoch"
_COUNTS = ("unique_states", "states")
_MARKER = f"{TAG_PREFIX}/".encode()
_EVENT_FILES = "events.out.tfevents*"
_DATALOADER = re.compile(r"dataloader_idx_(\d+)")
_NOT_AN_EVENT = "a record that is not an event was skipped"


@dataclass
class RunMetrics:
    """The state-space metrics of one run: one event file (one stage and
    dataloader of it, where it holds more than validation metrics).

    Attributes:
        file: the event file.
        label: how tables name the run (see :func:`read_event_files`).
        layers: the probes with per-probe statistics, in the order first seen.
        steps: ``{step: {key: value}}``; a key is the tag without its prefix,
            stage and dataloader (``aIQ``, ``epoch``, ``efficiency/<probe>``).
        problems: what could not be read from the file, one sentence each;
            empty when it read whole.
        stage: ``"validation"``, or ``"test"``/``"train"`` (see
            :meth:`.EpochReport.tag`).
        dataloader: the index of the dataloader measured, where several were
            measured apart; else None.

    Example:
        >>> run = RunMetrics("runs/a/events.out.tfevents.1", "runs/a", ["fc"],
        ...                  {7: {"efficiency/fc": 0.5, "network_efficiency": 0.5}})
        >>> run.rows()
        [{'epoch': 7, 'step': 7, 'fc': 0.5, 'network_efficiency': 0.5, 'accuracy': None, 'aIQ': None}]
        >>> run.best_epoch() is None, run.damaged            # no aIQ logged, nothing lost
        (True, False)
    """  # noqa: E501

    file: str
    label: str = ""
    layers: list[str] = field(default_factory=list)
    steps: dict[int, dict[str, float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    stage: str = "validation"
    dataloader: int | None = None

    @property
    def path(self) -> str:
        """The directory of the run's event file."""
        return str(Path(self.file).parent)

    @property
    def damaged(self) -> bool:
        """True when part of the file could not be read: values may be missing."""
        return bool(self.problems)

    def _epoch(self, step: int):
        if not any(_EPOCH in values for values in self.steps.values()):
            return step  # logged before the epoch had its own scalar: the step was the epoch
        epoch = self.steps[step].get(_EPOCH)
        return None if epoch is None else int(epoch)

    def _value(self, step: int, key: str, metric: str):
        value = self.steps[step].get(key)
        return int(value) if value is not None and metric in _COUNTS else value

    def rows(self, metric: str = "efficiency") -> list[dict]:
        """One dict per logged step, in step order.

        Args:
            metric: the per-probe statistic in the probes' columns, one of
                :data:`LAYER_METRICS`.

        Returns:
            Dicts with the keys ``epoch``, ``step``, each probe's name (its
            ``metric``), ``network_efficiency``, ``accuracy`` and ``aIQ``;
            None where a value was not logged (or was lost).

        Raises:
            ValueError: ``metric`` is not one of :data:`LAYER_METRICS`.

        Example:
            >>> run = RunMetrics("f", "run", ["fc"],
            ...                  {9: {"epoch": 1, "coverage/fc": 0.9}, 4: {"epoch": 0}})
            >>> [(row["epoch"], row["step"], row["fc"]) for row in run.rows("coverage")]
            [(0, 4, None), (1, 9, 0.9)]
        """
        if metric not in LAYER_METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(LAYER_METRICS)}")
        out = []
        for step in sorted(self.steps):
            row = {"epoch": self._epoch(step), "step": step}
            row.update({layer: self._value(step, f"{metric}/{layer}", metric)
                        for layer in self.layers})
            row.update({name: self.steps[step].get(name) for name in NETWORK_METRICS})
            out.append(row)
        return out

    def layer_rows(self) -> list[dict]:
        """One dict per logged (step, probe), in step order, then probe order.

        Returns:
            Dicts with the keys ``epoch``, ``step``, ``probe``, each of
            :data:`LAYER_METRICS` (None where not logged) and
            ``sample_limited``: True when the efficiency is within 5% of its
            ceiling below 1, so it measures the number of states more than the
            layer (see :attr:`LayerStats.sample_limited`).

        Example:
            >>> run = RunMetrics("f", "run", ["conv"], {0: {"efficiency/conv": 0.1097,
            ...                  "efficiency_ceiling/conv": 0.1097, "states/conv": 2000.0}})
            >>> row = run.layer_rows()[0]
            >>> row["probe"], row["states"], row["coverage"], row["sample_limited"]
            ('conv', 2000, None, True)
        """
        out = []
        for step in sorted(self.steps):
            for layer in self.layers:
                values = {metric: self._value(step, f"{metric}/{layer}", metric)
                          for metric in LAYER_METRICS}
                if all(value is None for value in values.values()):
                    continue
                row = {"epoch": self._epoch(step), "step": step, "probe": layer, **values}
                row["sample_limited"] = values["efficiency"] is not None and LayerStats(
                    layer, values["efficiency"], 0, 0,
                    efficiency_ceiling=values["efficiency_ceiling"]).sample_limited
                out.append(row)
        return out

    def best_epoch(self) -> dict | None:
        """The row (see :meth:`rows`) with the highest aIQ; the earliest on a tie.

        Of a damaged run (:attr:`damaged`) this is the best of the rows that
        could be read, which need not be the best of the run.

        Returns:
            That row, or None when no aIQ was logged.

        Example:
            >>> run = RunMetrics("f", "run", [],
            ...                  {0: {"aIQ": 0.5}, 1: {"aIQ": 0.7}, 2: {"aIQ": 0.6}})
            >>> run.best_epoch()["epoch"]
            1
        """
        scored = [row for row in self.rows()
                  if row["aIQ"] is not None and math.isfinite(row["aIQ"])]
        return max(scored, key=lambda row: row["aIQ"]) if scored else None


# -- reading ---------------------------------------------------------------------
@dataclass
class EventFile:
    """One event file, read: its runs and what could not be read.

    Attributes:
        path: the file.
        runs: one :class:`RunMetrics` per stage and dataloader logged in it
            (validation first); empty when it holds no state-space scalar.
        problems: what could not be read (shared with its runs).
    """

    path: str
    runs: list[RunMetrics] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _scalar(value, tensor_util) -> float | None:
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind == "tensor":
        array = tensor_util.make_ndarray(value.tensor)
        return float(array.reshape(())) if array.size == 1 else None
    return None


def _parse_tag(tag: str):
    """``((stage, dataloader), key, probe)`` of a tag this module reads, else None.

    Tags look like ``state_space[/<stage>]/<key>[/dataloader_idx_<k>]`` (see
    :meth:`.EpochReport.tag`); a key is a network metric, ``epoch``, or
    ``<statistic>/<probe>``.
    """
    parts = tag.split("/")
    if parts[0] != TAG_PREFIX or len(parts) < 2:
        return None
    parts = parts[1:]
    stage = parts.pop(0) if parts[0] in STAGES and parts[0] != "validation" else "validation"
    dataloader = _DATALOADER.fullmatch(parts[-1]) if len(parts) > 1 else None
    if dataloader:
        parts.pop()
    series = (stage, None if dataloader is None else int(dataloader[1]))
    if len(parts) == 1 and parts[0] in (*NETWORK_METRICS, _EPOCH):
        return series, parts[0], None
    if len(parts) == 2 and parts[0] in LAYER_METRICS:
        return series, "/".join(parts), parts[1]
    return None


def _describe(loss: Loss, record_steps: list[int | None]) -> str:
    before = [step for step in record_steps[:loss.after_record] if step is not None]
    after = [step for step in record_steps[loss.after_record:] if step is not None]
    if before and after:
        where = (f"at step {after[0]}" if before[-1] == after[0]
                 else f"between step {before[-1]} and step {after[0]}")
    else:
        where = f"after step {before[-1]}" if before else \
            f"before step {after[0]}" if after else "anywhere"
    return f"bytes {loss.start}-{loss.end}: {loss.what}; values logged {where} may be missing"


def read_event_file(path) -> EventFile:
    """The state-space metrics of one event file, and what could not be read.

    Never raises for a damaged or unreadable file: the problem is in
    :attr:`EventFile.problems` (and each run's ``problems``).

    Args:
        path: an ``events.out.tfevents*`` file.

    Returns:
        The file's runs, one per stage and dataloader, and its problems.

    Raises:
        ImportError: tensorboard is not installed (the message names the extra).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from tensorstate_callbacks.reporting.report import EpochReport
        >>> from tensorstate_callbacks.reporting.tensorboard import open_writer, write_scalars
        >>> writer = open_writer(tempfile.mkdtemp())
        >>> write_scalars(writer, EpochReport.from_values(0, {"fc": (0.5, 3, 8)}, 1.0, 2))
        >>> write_scalars(writer, EpochReport.from_values(0, {"fc": (0.25, 2, 8)}, 1.0, 2,
        ...                                               stage="test"))
        >>> writer.close()
        >>> read = read_event_file(next(Path(writer.logdir).iterdir()))
        >>> [(run.stage, run.rows()[0]["fc"]) for run in read.runs], read.problems
        ([('validation', 0.5), ('test', 0.25)], [])
    """
    require("tensorboard", "reading event files")
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    read = EventFile(str(path))
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        read.problems.append(f"could not be read ({error.strerror or error}); "
                             "whatever it held is lost")
        return read
    if not data:
        read.problems.append("is empty (0 bytes): its writer never wrote to it, or it was "
                             "truncated; whatever it held is lost")
        return read
    records, losses = split_records(data)
    series, record_steps = {}, []
    for offset, record in records:
        try:
            event = event_pb2.Event.FromString(record)
        except Exception:  # protobuf's DecodeError: the checksums held, so a writer wrote it
            losses.append(Loss(offset, offset + FRAMING + len(record), _NOT_AN_EVENT,
                               len(record_steps)))
            record_steps.append(None)
            continue
        record_steps.append(event.step)
        if _MARKER not in record:
            continue
        for value in event.summary.value:
            parsed = _parse_tag(value.tag)
            number = None if parsed is None else _scalar(value, tensor_util)
            if number is None:
                continue
            (stage, dataloader), key, probe = parsed
            run = series.setdefault((stage, dataloader), RunMetrics(
                read.path, problems=read.problems, stage=stage, dataloader=dataloader))
            run.steps.setdefault(event.step, {})[key] = number
            if probe is not None and probe not in run.layers:
                run.layers.append(probe)
    read.problems.extend(_describe(loss, record_steps)
                         for loss in sorted(losses, key=lambda loss: loss.start))
    read.runs = [series[key] for key in sorted(
        series, key=lambda key: (STAGES.index(key[0]), -1 if key[1] is None else key[1]))]
    return read


def read_run(path, stage: str = "validation", dataloader: int | None = None) -> RunMetrics:
    """The metrics of one stage and dataloader in one event file.

    Args:
        path: an ``events.out.tfevents*`` file.
        stage: ``"validation"``, ``"test"`` or ``"train"``.
        dataloader: the dataloader's index where several were measured apart,
            else None.

    Returns:
        The run; its ``steps`` are empty when nothing of it was logged there.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from tensorstate_callbacks.reporting.tensorboard import open_writer
        >>> writer = open_writer(tempfile.mkdtemp())
        >>> writer.add_scalar("state_space/test/aIQ", 0.5, 3); writer.close()
        >>> file = next(Path(writer.logdir).iterdir())
        >>> read_run(file, "test").rows()[0]["aIQ"], read_run(file).steps
        (0.5, {})
    """
    read = read_event_file(path)
    found = [run for run in read.runs if (run.stage, run.dataloader) == (stage, dataloader)]
    return found[0] if found else RunMetrics(read.path, problems=read.problems, stage=stage,
                                             dataloader=dataloader)


def _label(run: RunMetrics, shared: bool) -> str:
    where = run.file if shared else run.path
    series = [] if run.stage == "validation" else [run.stage]
    if run.dataloader is not None:
        series.append(f"dataloader {run.dataloader}")
    return f"{where} [{', '.join(series)}]" if series else where


def read_event_files(logdir) -> list[EventFile]:
    """Every event file under ``logdir`` (itself or any sub-directory), read.

    Each run gets its :attr:`RunMetrics.label`: the directory of its file,
    or the file's path where another event file of that directory has runs
    too; then its stage and dataloader in brackets, unless validation.

    Args:
        logdir: a TensorBoard log directory, as given to ``tensorboard --logdir``.

    Returns:
        One :class:`EventFile` per event file, sorted by path, with runs or without.

    Raises:
        FileNotFoundError: ``logdir`` does not exist.

    Example:
        >>> import tempfile
        >>> read_event_files(tempfile.mkdtemp())
        []
    """
    root = Path(logdir)
    if not root.is_dir():
        raise FileNotFoundError(f"log directory {str(root)!r} does not exist")
    files = [read_event_file(path) for path in sorted(root.rglob(_EVENT_FILES))
             if not path.is_dir()]
    with_runs = Counter(str(Path(read.path).parent) for read in files if read.runs)
    for read in files:
        for run in read.runs:
            run.label = _label(run, shared=with_runs[run.path] > 1)
    return files


def runs_in(files: list[EventFile], logdir) -> list[RunMetrics]:
    """The runs of event files read from ``logdir`` (:func:`read_event_files`).

    Args:
        files: the files read.
        logdir: where they were read from (for the message).

    Returns:
        Their runs, in the order of the files.

    Raises:
        ValueError: none of them holds state-space metrics.

    Example:
        >>> runs_in([EventFile("runs/events.out.tfevents.1")], "runs")
        Traceback (most recent call last):
        ...
        ValueError: no state-space metrics (tags 'state_space/...') found under 'runs'; point at the log directory of a run that used a StateSpaceCallback
    """  # noqa: E501
    runs = [run for read in files for run in read.runs]
    if not runs:
        raise ValueError(
            f"no state-space metrics (tags '{TAG_PREFIX}/...') found under {str(logdir)!r}; "
            "point at the log directory of a run that used a StateSpaceCallback"
        )
    return runs


def find_runs(logdir) -> list[RunMetrics]:
    """Every run under ``logdir``: each stage and dataloader of each event file
    that holds state-space metrics.

    Args:
        logdir: a TensorBoard log directory, as given to ``tensorboard --logdir``.

    Returns:
        The runs, sorted by file, then stage and dataloader; look at each
        one's ``problems`` (:func:`read_event_files` also gives the damaged
        files without runs).

    Raises:
        FileNotFoundError: ``logdir`` does not exist.
        ValueError: no run under it holds state-space metrics.

    Example:
        >>> import tempfile
        >>> find_runs(tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        ValueError: no state-space metrics (tags 'state_space/...') found under ...
    """
    return runs_in(read_event_files(logdir), logdir)
