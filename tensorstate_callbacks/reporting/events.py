"""Read the state-space metrics back from TensorBoard event files.

Works on logs of both callbacks: scalars written as simple values
(tensorboardX, torch.utils.tensorboard) or as tensors (``tf.summary``).
Only the tags of :mod:`.report` are read: ``state_space/efficiency/<probe>``,
``state_space/network_efficiency``, ``state_space/accuracy`` and
``state_space/aIQ``; the step is the epoch.  ``tensorstate-callbacks summary``
prints what :func:`find_runs` returns.  Needs the ``tensorboard`` extra.

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

from dataclasses import dataclass, field
from pathlib import Path

from .report import TAG_PREFIX

__all__ = ["RunMetrics", "find_runs", "read_run"]

_EFFICIENCY = f"{TAG_PREFIX}/efficiency/"
_NETWORK = {f"{TAG_PREFIX}/network_efficiency": "network_efficiency",
            f"{TAG_PREFIX}/accuracy": "accuracy", f"{TAG_PREFIX}/aIQ": "aIQ"}


@dataclass
class RunMetrics:
    """Per-epoch state-space metrics of one run (one directory of event files).

    Attributes:
        path: the run's directory.
        layers: the probes whose efficiency was logged, in the order first seen.
        epochs: ``{epoch: {name: value}}``; names are the probes and
            ``network_efficiency``, ``accuracy``, ``aIQ``.

    Example:
        >>> run = RunMetrics("runs/a", ["fc"], {0: {"fc": 0.5, "network_efficiency": 0.5}})
        >>> run.rows()
        [{'epoch': 0, 'fc': 0.5, 'network_efficiency': 0.5, 'accuracy': None, 'aIQ': None}]
        >>> run.best_epoch() is None                   # no aIQ logged
        True
    """

    path: str
    layers: list[str] = field(default_factory=list)
    epochs: dict[int, dict] = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """One dict per epoch, in epoch order.

        Returns:
            Dicts with the keys ``epoch``, each layer's name (its efficiency),
            ``network_efficiency``, ``accuracy`` and ``aIQ``; None where a
            value was not logged.

        Example:
            >>> RunMetrics("run", ["fc"], {1: {"fc": 0.4}, 0: {"fc": 0.5}}).rows()[0]["epoch"]
            0
        """
        out = []
        for epoch in sorted(self.epochs):
            values = self.epochs[epoch]
            row = {"epoch": epoch}
            row.update({layer: values.get(layer) for layer in self.layers})
            row.update({name: values.get(name) for name in _NETWORK.values()})
            out.append(row)
        return out

    def best_epoch(self) -> dict | None:
        """The row (see :meth:`rows`) with the highest aIQ.

        Returns:
            That row, or None when no aIQ was logged.

        Example:
            >>> run = RunMetrics("run", [], {0: {"aIQ": 0.5}, 1: {"aIQ": 0.7}, 2: {"aIQ": 0.6}})
            >>> run.best_epoch()["epoch"]
            1
        """
        scored = [row for row in self.rows() if row["aIQ"] is not None]
        return max(scored, key=lambda row: row["aIQ"]) if scored else None


def _scalar_events(accumulator, tag):
    tags = accumulator.Tags()
    if tag in tags.get("scalars", ()):
        return [(event.step, float(event.value)) for event in accumulator.Scalars(tag)]
    from tensorboard.util import tensor_util

    return [(event.step, float(tensor_util.make_ndarray(event.tensor_proto)))
            for event in accumulator.Tensors(tag)]


def read_run(directory) -> RunMetrics:
    """Metrics of the event files directly inside ``directory``.

    Args:
        directory: a directory holding ``events.out.tfevents*`` files
            (sub-directories are not read; see :func:`find_runs`).

    Returns:
        The run's metrics; ``epochs`` is empty when none were logged there.

    Example:
        >>> import tempfile
        >>> from tensorstate_callbacks.reporting.report import EpochReport
        >>> from tensorstate_callbacks.reporting.tensorboard import open_writer, write_scalars
        >>> logdir = tempfile.mkdtemp()
        >>> writer = open_writer(logdir)
        >>> write_scalars(writer, EpochReport.from_values(0, {"fc": (0.5, 3, 8)}, 1.0, 2))
        >>> writer.close()
        >>> run = read_run(logdir)
        >>> run.layers, run.rows()[0]["fc"], round(run.best_epoch()["aIQ"], 4)
        (['fc'], 0.5, 0.7937)
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    run = RunMetrics(str(directory))
    for tag in [*tags.get("scalars", ()), *tags.get("tensors", ())]:
        if tag.startswith(_EFFICIENCY):
            name = tag[len(_EFFICIENCY):]
            if name not in run.layers:
                run.layers.append(name)
        elif tag in _NETWORK:
            name = _NETWORK[tag]
        else:
            continue
        for step, value in _scalar_events(accumulator, tag):
            run.epochs.setdefault(step, {})[name] = value
    return run


def find_runs(logdir) -> list[RunMetrics]:
    """Every run under ``logdir`` (itself or any sub-directory) that holds
    state-space metrics.

    Args:
        logdir: a TensorBoard log directory, as given to ``tensorboard --logdir``.

    Returns:
        One :class:`RunMetrics` per directory of event files with metrics,
        sorted by path.

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
    root = Path(logdir)
    if not root.is_dir():
        raise FileNotFoundError(f"log directory {str(root)!r} does not exist")
    directories = sorted({path.parent for path in root.rglob("events.out.tfevents*")})
    runs = [run for run in map(read_run, directories) if run.epochs]
    if not runs:
        raise ValueError(
            f"no state-space metrics (tags '{TAG_PREFIX}/...') found under {str(root)!r}; "
            "point at the log directory of a run that used a StateSpaceCallback"
        )
    return runs
