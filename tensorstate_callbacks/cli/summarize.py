"""``tensorstate-callbacks summary``: the logged runs as tables, each run's
best-aIQ epoch, and a warning for every event file that could not be read whole.

A run is one event file with state-space metrics (one table per stage and
dataloader in it); rows are keyed by step and carry the epoch.  By default the
probes' columns are their efficiency; ``metric`` puts another per-probe
statistic there, ``per_layer`` gives one row per (step, probe) with all of
them.  A damaged run is marked in the output: its best epoch is the best of
the rows that could be read.

Example:
    >>> import tempfile
    >>> from tensorstate_callbacks.reporting.report import EpochReport
    >>> from tensorstate_callbacks.reporting.tensorboard import open_writer, write_scalars
    >>> logdir = tempfile.mkdtemp()
    >>> writer = open_writer(logdir)
    >>> write_scalars(writer, EpochReport.from_values(0, {"conv": (0.5, 3, 8)}, 0.9, 2, step=49))
    >>> writer.close()
    >>> print(summary([logdir], "table").text.replace(logdir, "LOGDIR"))
    LOGDIR
    <BLANKLINE>
    epoch  step    conv  network_efficiency  accuracy     aIQ
        0    49  0.5000              0.5000    0.9000  0.7399
    <BLANKLINE>
    best aIQ 0.7399 at epoch 0 (step 49)
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from .errors import CommandError
from .tables import FORMATS, format_rows, same_columns

__all__ = ["Summary", "add_summary_arguments", "summary", "summary_command"]

_CEILING_NOTE = ("* at its efficiency ceiling: the number of states measured limits it, "
                 "not the layer (see 'Reading the numbers' in the docs)")


@dataclass
class Summary:
    """What ``summary`` prints.

    Attributes:
        text: the tables (standard output).
        problems: one line per event file that could not be read whole,
            ``<file>: <what was lost>`` (warnings, on standard error).
    """

    text: str
    problems: list[str] = field(default_factory=list)


def _read(logdirs: list[str]) -> tuple[list, list[str]]:
    from ..reporting.events import read_event_files, runs_in

    runs, problems = [], []
    for logdir in logdirs:
        try:
            files = read_event_files(logdir)
        except FileNotFoundError as error:
            raise CommandError(str(error)) from error
        damaged = [f"{read.path}: {problem}" for read in files for problem in read.problems]
        problems += damaged
        try:
            runs += runs_in(files, logdir)
        except ValueError as error:
            unread = "; these event files could not be read whole:" if damaged else ""
            unread += "".join(f"\n  {line}" for line in damaged)
            raise CommandError(f"{error}{unread}") from error
    return runs, problems


def _verdict(run) -> str:
    best = run.best_epoch()
    text = (f"best aIQ {best['aIQ']:.4f} at epoch {best['epoch']} (step {best['step']})"
            if best else "no aIQ logged (no accuracy)")
    if run.damaged:
        text += ("\nDAMAGED: part of the event file could not be read (see the warnings); "
                 "values may be missing, and a best aIQ above is the best of what was read")
    return text


def _table_rows(run, metric: str, per_layer: bool, fmt: str) -> tuple[list[dict], list[str]]:
    """The rows of one run's block, and the notes under its table."""
    if per_layer:
        return run.layer_rows(), []
    rows = run.rows(metric)
    notes = []
    if run.layers and all(row[layer] is None for row in rows for layer in run.layers):
        notes.append(f"{metric} was not logged in this run")
    if metric == "efficiency" and fmt in ("table", "markdown"):
        limited = {(row["step"], row["probe"]) for row in run.layer_rows()
                   if row["sample_limited"]}
        for row in rows:
            for layer in run.layers:
                if (row["step"], layer) in limited:
                    row[layer] = f"{row[layer]:.4f}*"
        if limited:
            notes.append(_CEILING_NOTE)
    return rows, notes


def _json(runs, metric: str, per_layer: bool) -> str:
    out = []
    for run in runs:
        entry = {"run": run.label, "file": run.file, "stage": run.stage,
                 "dataloader": run.dataloader, "damaged": run.damaged,
                 "problems": run.problems}
        if per_layer:
            entry["layers"] = run.layer_rows()
        else:
            entry.update(metric=metric, epochs=run.rows(metric))
        entry["best"] = run.best_epoch()
        out.append(entry)
    return json.dumps(out, indent=2)


def summary(logdirs: list[str], fmt: str = "table", metric: str = "efficiency",
            per_layer: bool = False) -> Summary:
    """Tables of every run under ``logdirs``, each run's best-aIQ epoch, and
    the problems of the event files that could not be read whole.

    Args:
        logdirs: TensorBoard log directories; every event file under each is read.
        fmt: ``"table"`` or ``"markdown"`` (a block per run: heading, table,
            best epoch, a DAMAGED note where the file could not be read
            whole), ``"csv"`` (one table, with a ``run`` column) or ``"json"``
            (per run: its label, file, stage, dataloader, ``damaged``,
            ``problems``, its rows and its best epoch).
        metric: the per-probe statistic of the probes' columns (see
            :data:`~tensorstate_callbacks.reporting.events.LAYER_METRICS`).
        per_layer: one row per (step, probe) with every per-probe statistic
            instead (in json under ``layers``).

    Returns:
        The text and the problems.

    Raises:
        CommandError: a directory is missing, or holds no state-space metrics.

    Example:
        >>> summary(["/no/such/dir"], "table")
        Traceback (most recent call last):
        ...
        tensorstate_callbacks.cli.errors.CommandError: log directory '/no/such/dir' does not exist
    """
    runs, problems = _read(logdirs)
    if fmt == "json":
        return Summary(_json(runs, metric, per_layer), problems)
    if fmt == "csv":
        rows = [{"run": run.label, **row} for run in runs
                for row in (run.layer_rows() if per_layer else run.rows(metric))]
        return Summary(format_rows(same_columns(rows), "csv"), problems)
    blocks = []
    for run in runs:
        heading = run.label if metric == "efficiency" or per_layer \
            else f"{run.label} ({metric} per probe)"
        if run.damaged:
            heading += " [DAMAGED]"
        rows, notes = _table_rows(run, metric, per_layer, fmt)
        table = format_rows(rows, fmt)
        heading = f"## {heading}" if fmt == "markdown" else heading
        blocks.append("\n\n".join([heading, table, *notes, _verdict(run)]))
    return Summary("\n\n".join(blocks), problems)


def add_summary_arguments(parser) -> None:
    """The options of ``summary`` (an :class:`argparse.ArgumentParser`).

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser()
        >>> add_summary_arguments(parser)
        >>> args = parser.parse_args(["runs", "--metric", "coverage", "--strict"])
        >>> args.logdirs, args.format, args.metric, args.per_layer, args.strict
        (['runs'], 'table', 'coverage', False, True)
    """
    from ..reporting.events import LAYER_METRICS

    parser.add_argument("logdirs", nargs="+", metavar="LOGDIR")
    parser.add_argument("--format", choices=FORMATS, default="table")
    view = parser.add_mutually_exclusive_group()
    view.add_argument("--metric", choices=LAYER_METRICS, default="efficiency",
                      help="the per-probe statistic in the probes' columns (default: efficiency)")
    view.add_argument("--per-layer", action="store_true",
                      help="one row per (step, probe) with every per-probe statistic")
    parser.add_argument("--strict", action="store_true",
                        help="exit with code 1 when an event file could not be read whole")


def summary_command(args) -> None:
    """The ``summary`` command: print :func:`summary`, then a ``warning:``
    line on standard error per problem reading an event file.

    Args:
        args: the options of :func:`add_summary_arguments`.

    Raises:
        CommandError: as :func:`summary`; with ``--strict``, also when an
            event file could not be read whole (after printing the tables).
    """
    result = summary(args.logdirs, args.format, args.metric, args.per_layer)
    print(result.text)
    for problem in result.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if args.strict and result.problems:
        raise CommandError(f"{len(result.problems)} problem(s) reading event files "
                           "(see the warnings); failing because of --strict")
