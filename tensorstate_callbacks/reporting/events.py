"""Read the state-space metrics back from TensorBoard event files.

Works on logs of both callbacks: scalars written as simple values
(tensorboardX, torch.utils.tensorboard) or as tensors (``tf.summary``).
Only the ``state_space/...`` scalars of :mod:`.report` are read.

* A *run* is one event file holding state-space scalars: two trainings that
  log to one directory write two files, and stay two runs.  Event files
  without them (Keras' own ``TensorBoard`` callback, Lightning's losses) are
  not runs.
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
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .._imports import require
from .report import TAG_PREFIX, LayerStats

__all__ = ["LAYER_METRICS", "NETWORK_METRICS", "RunMetrics", "find_runs", "read_event_files",
           "read_run"]

LAYER_METRICS = ("efficiency", "efficiency_ceiling", "coverage", "unique_states", "states",
                 "dead_fraction", "always_on_fraction", "mutual_information", "drift")
"""The per-probe statistics read back, each logged as ``state_space/<statistic>/<probe>``."""
NETWORK_METRICS = ("network_efficiency", "accuracy", "aIQ")
"""The network's scalars read back, each logged as ``state_space/<name>``."""

_EPOCH = "epoch"
_COUNTS = ("unique_states", "states")
_MARKER = f"{TAG_PREFIX}/".encode()
_EVENT_FILES = "events.out.tfevents*"


@dataclass
class RunMetrics:
    """The state-space metrics of one run: one event file.

    Attributes:
        file: the event file.
        label: how tables name the run: its directory when no other run
            shares that directory, else the file's path.
        layers: the probes with per-probe statistics, in the order first seen.
        steps: ``{step: {key: value}}``; a key is the tag without its
            ``state_space/`` prefix (``aIQ``, ``epoch``, ``efficiency/<probe>``).
        problems: what could not be read, one sentence each; empty when the
            file read whole.

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


# -- the TFRecord framing of event files -----------------------------------------
# A record is: u64 length, u32 masked CRC32C of those 8 bytes, the data, u32
# masked CRC32C of the data (little-endian).
_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
_FRAMING = _HEADER.size + _CRC.size


def _crc32c():
    try:
        from google_crc32c import value
    except ImportError:  # the pure-Python implementation tensorboard ships (slower)
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as value
    return value


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclass
class _Loss:
    start: int  # byte offsets of the unreadable span
    end: int
    what: str
    after_record: int  # how many good records came before it


_TRUNCATED = "an incomplete record at the end (the file is truncated)"
_BAD_LENGTH = "a record whose length failed its checksum was skipped"
_BAD_DATA = "a record whose data failed its checksum was skipped"
_NOT_AN_EVENT = "a record that is not an event was skipped"


def _frame(data: bytes, offset: int, crc) -> tuple[int, str | None]:
    """``(end, problem)`` of the record at ``offset``: problem is None when it
    is whole and its checksums hold, else one of the messages above."""
    if len(data) - offset < _FRAMING:
        return len(data), _TRUNCATED
    length, length_crc = _HEADER.unpack_from(data, offset)
    if _masked(crc(data[offset:offset + 8])) != length_crc:
        return offset, _BAD_LENGTH
    end = offset + _FRAMING + length
    if end > len(data):
        return len(data), _TRUNCATED
    body = data[offset + _HEADER.size:end - _CRC.size]
    valid = _masked(crc(body)) == _CRC.unpack_from(data, end - _CRC.size)[0]
    return end, None if valid else _BAD_DATA


def _next_record(data: bytes, offset: int, crc) -> int:
    """Where the next valid record starts after ``offset`` (or the end)."""
    # Records are far shorter than 4 GiB, so a length's high four bytes are zero.
    candidate = data.find(b"\0\0\0\0", offset + 5)
    while candidate != -1:
        if _frame(data, candidate - 4, crc)[1] is None:
            return candidate - 4
        candidate = data.find(b"\0\0\0\0", candidate + 1)
    return len(data)


def _split_records(data: bytes) -> tuple[list[tuple[int, bytes]], list[_Loss]]:
    """The valid records ``(offset, data)`` of an event file's bytes, and the spans lost."""
    crc = _crc32c()
    records, losses, offset = [], [], 0
    while offset < len(data):
        end, problem = _frame(data, offset, crc)
        if problem == _BAD_LENGTH:  # the length is unknown: look for the next good record
            end = _next_record(data, offset, crc)
        if problem is None:
            records.append((offset, data[offset + _HEADER.size:end - _CRC.size]))
        else:
            losses.append(_Loss(offset, end, problem, len(records)))
        offset = end
    return records, losses


# -- events ----------------------------------------------------------------------
def _scalar(value, tensor_util) -> float | None:
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind == "tensor":
        array = tensor_util.make_ndarray(value.tensor)
        return float(array.reshape(())) if array.size == 1 else None
    return None


def _state_space_key(tag: str) -> tuple[str, str | None] | None:
    """``(key, probe)`` of a tag this module reads, else None."""
    if not tag.startswith(f"{TAG_PREFIX}/"):
        return None
    key = tag[len(TAG_PREFIX) + 1:]
    if key in NETWORK_METRICS or key == _EPOCH:
        return key, None
    metric, _, probe = key.partition("/")
    return (key, probe) if metric in LAYER_METRICS and probe else None


def _describe(loss: _Loss, record_steps: list[int | None]) -> str:
    before = [step for step in record_steps[:loss.after_record] if step is not None]
    after = [step for step in record_steps[loss.after_record:] if step is not None]
    if before and after:
        where = (f"at step {after[0]}" if before[-1] == after[0]
                 else f"between step {before[-1]} and step {after[0]}")
    else:
        where = f"after step {before[-1]}" if before else \
            f"before step {after[0]}" if after else "anywhere"
    return f"bytes {loss.start}-{loss.end}: {loss.what}; values logged {where} may be missing"


def read_run(file) -> RunMetrics:
    """The state-space metrics of one event file, and what could not be read.

    Never raises for a damaged or unreadable file: the problem is in
    :attr:`RunMetrics.problems`.

    Args:
        file: an ``events.out.tfevents*`` file.

    Returns:
        Its metrics; ``steps`` is empty when it holds no state-space scalar.

    Raises:
        ImportError: tensorboard is not installed (the message names the extra).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from tensorstate_callbacks.reporting.report import EpochReport
        >>> from tensorstate_callbacks.reporting.tensorboard import open_writer, write_scalars
        >>> logdir = tempfile.mkdtemp()
        >>> writer = open_writer(logdir)
        >>> write_scalars(writer, EpochReport.from_values(0, {"fc": (0.5, 3, 8)}, 1.0, 2))
        >>> writer.close()
        >>> run = read_run(next(Path(logdir).iterdir()))
        >>> run.layers, run.rows()[0]["fc"], round(run.best_epoch()["aIQ"], 4), run.problems
        (['fc'], 0.5, 0.7937, [])
    """
    require("tensorboard", "reading event files")
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    run = RunMetrics(str(file), label=str(file))
    try:
        data = Path(file).read_bytes()
    except OSError as error:
        run.problems.append(f"could not be read ({error.strerror or error}); its values are lost")
        return run
    if not data:
        run.problems.append("is empty (0 bytes): its writer never wrote to it, or it was "
                            "truncated; whatever it held is lost")
        return run
    records, losses = _split_records(data)
    record_steps = []
    for offset, record in records:
        try:
            event = event_pb2.Event.FromString(record)
        except Exception:  # protobuf's DecodeError: the checksums held, so a writer wrote it
            losses.append(_Loss(offset, offset + _FRAMING + len(record), _NOT_AN_EVENT,
                                len(record_steps)))
            record_steps.append(None)
            continue
        record_steps.append(event.step)
        if _MARKER not in record:
            continue
        for value in event.summary.value:
            parsed = _state_space_key(value.tag)
            number = None if parsed is None else _scalar(value, tensor_util)
            if number is None:
                continue
            key, probe = parsed
            run.steps.setdefault(event.step, {})[key] = number
            if probe is not None and probe not in run.layers:
                run.layers.append(probe)
    run.problems.extend(_describe(loss, record_steps)
                        for loss in sorted(losses, key=lambda loss: loss.start))
    return run


def read_event_files(logdir) -> list[RunMetrics]:
    """Every event file under ``logdir`` (itself or any sub-directory), read.

    Args:
        logdir: a TensorBoard log directory, as given to ``tensorboard --logdir``.

    Returns:
        One :class:`RunMetrics` per event file, sorted by path, runs (files
        with state-space scalars, ``steps`` not empty) and others alike, each
        with its ``problems``.  A run's ``label`` is its directory, or the
        file's path where several runs share the directory.

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
    files = [read_run(path) for path in sorted(root.rglob(_EVENT_FILES)) if not path.is_dir()]
    runs_per_directory = {}
    for run in files:
        if run.steps:
            runs_per_directory[run.path] = runs_per_directory.get(run.path, 0) + 1
    for run in files:
        run.label = run.path if runs_per_directory.get(run.path) == 1 else run.file
    return files


def find_runs(logdir) -> list[RunMetrics]:
    """Every run under ``logdir``: the event files that hold state-space metrics.

    Args:
        logdir: a TensorBoard log directory, as given to ``tensorboard --logdir``.

    Returns:
        One :class:`RunMetrics` per event file with metrics, sorted by path;
        look at each one's ``problems`` (see :func:`read_event_files` for the
        damaged files that are not runs).

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
    runs = [run for run in read_event_files(logdir) if run.steps]
    if not runs:
        raise ValueError(
            f"no state-space metrics (tags '{TAG_PREFIX}/...') found under {str(logdir)!r}; "
            "point at the log directory of a run that used a StateSpaceCallback"
        )
    return runs
