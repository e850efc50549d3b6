"""One TensorBoard writer interface for both callbacks.

Every function takes a ``writer`` with the ``SummaryWriter`` API shared by
``tensorboardX`` and ``torch.utils.tensorboard`` (``add_scalar``,
``add_custom_scalars``, ``add_histogram``, ``add_image``, ``file_writer``).
The Lightning callback passes its TensorBoardLogger's writer; the Keras
callback opens :func:`open_writer` at ``log_dir/validation``.

What goes where (tags under ``state_space``, see :mod:`.report`):

* Scalars: :func:`write_scalars`, every tag of :meth:`.EpochReport.scalars`.
* Custom scalars: :func:`write_layout`, the charts of :func:`custom_scalars_layout`.
* Histograms: :func:`write_state_histograms`, ``state_space/state_frequency/<probe>``.
* Images: :func:`write_efficiency_image`, ``state_space/efficiency_over_epochs``.
* HParams: :func:`write_hparams`.

Needs the ``tensorboard`` extra (tensorboardX, tensorboard, matplotlib).

Example:
    >>> import tempfile
    >>> from tensorstate_callbacks.reporting.report import EpochReport
    >>> writer = open_writer(tempfile.mkdtemp())
    >>> report = EpochReport.from_values(0, {"conv": (0.5, 3, 8)}, accuracy=0.9, beta=2)
    >>> write_layout(writer); write_scalars(writer, report)
    >>> write_state_histograms(writer, {"conv": np.array([5, 2, 1])}, step=0)
    >>> write_efficiency_image(writer, [report]); write_hparams(writer, {"beta": 2})
    >>> writer.close()
"""

from __future__ import annotations

import io
import itertools
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from .._imports import require
from .report import TAG_PREFIX, EpochReport

__all__ = ["HISTOGRAM_PREFIX", "IMAGE_TAG", "custom_scalars_layout", "efficiency_image",
           "open_writer", "write_efficiency_image", "write_hparams", "write_layout",
           "write_scalars", "write_state_histograms"]

IMAGE_TAG = f"{TAG_PREFIX}/efficiency_over_epochs"
"""Tag of the heat map of layer efficiency over epochs."""
HISTOGRAM_PREFIX = f"{TAG_PREFIX}/state_frequency"
"""Prefix of the per-probe histograms of state occurrences."""

_writers_opened = itertools.count()


def open_writer(log_dir):
    """A tensorboardX ``SummaryWriter`` at ``log_dir``.

    Callers open it when they first write (the Keras callback at its first
    epoch's end), so no empty run appears.  Its event file's name ends in the
    process id and a counter, so writers opened in one directory within the
    same second never share a file.

    Args:
        log_dir: the run's directory (created if needed).

    Returns:
        The writer; close it when done.

    Raises:
        ImportError: tensorboardX is not installed (the message names the extra).

    Example:
        >>> import os, tempfile
        >>> log_dir = tempfile.mkdtemp()
        >>> writer = open_writer(log_dir)
        >>> first, second = open_writer(log_dir), open_writer(log_dir)
        >>> writer.close(); first.close(); second.close()
        >>> sorted(name.split(".")[0] for name in os.listdir(log_dir))
        ['events', 'events', 'events']
    """
    tensorboard_x = require("tensorboardX", "writing TensorBoard logs")
    # Event files are named by the second: two writers opened in one directory
    # within a second would write one file.  The process and a counter keep apart.
    suffix = f".{os.getpid()}.{next(_writers_opened)}"
    return tensorboard_x.SummaryWriter(str(log_dir), filename_suffix=suffix)


def custom_scalars_layout(probes=()) -> dict:
    """Layout for TensorBoard's custom-scalars plugin.

    One category, "State space", with three charts: every layer's efficiency;
    network efficiency, aIQ and accuracy; distinct states per layer.  With
    ``probes``, a second category shows each probe's efficiency beside its
    ceiling (the most its number of states can show).

    Args:
        probes: the probe names (their charts of efficiency and ceiling).

    Returns:
        ``{category: {chart: ["Multiline", [tag regexes]]}}``, the format of
        ``SummaryWriter.add_custom_scalars``.

    Example:
        >>> sorted(custom_scalars_layout()["State space"])
        ['Layer efficiency', 'Network efficiency and aIQ', 'Unique states per layer']
    """
    layout = {
        "State space": {
            "Layer efficiency": ["Multiline", [rf"{TAG_PREFIX}/efficiency/.*"]],
            "Network efficiency and aIQ": [
                "Multiline",
                [rf"{TAG_PREFIX}/network_efficiency", rf"{TAG_PREFIX}/aIQ",
                 rf"{TAG_PREFIX}/accuracy"],
            ],
            "Unique states per layer": ["Multiline", [rf"{TAG_PREFIX}/unique_states/.*"]],
        }
    }
    if probes:
        layout["Efficiency and its ceiling"] = {
            probe: ["Multiline", [f"{TAG_PREFIX}/efficiency/{re.escape(probe)}$",
                                  f"{TAG_PREFIX}/efficiency_ceiling/{re.escape(probe)}$"]]
            for probe in probes
        }
    return layout


def write_layout(writer, probes=()) -> None:
    """Write the custom-scalars layout (once per run is enough).

    Args:
        writer: a ``SummaryWriter`` (tensorboardX or torch.utils.tensorboard).

    Example:
        >>> import tempfile
        >>> writer = open_writer(tempfile.mkdtemp())
        >>> write_layout(writer); writer.close()
    """
    writer.add_custom_scalars(custom_scalars_layout(probes))


def write_scalars(writer, report: EpochReport) -> None:
    """Write every scalar of ``report``, and its epoch, at ``report.step``.

    Args:
        writer: a ``SummaryWriter``.
        report: the epoch's report; its tags are :meth:`.EpochReport.scalars`.

    Example:
        >>> import tempfile
        >>> from tensorstate_callbacks.reporting.report import EpochReport
        >>> writer = open_writer(tempfile.mkdtemp())
        >>> report = EpochReport.from_values(4, {"fc": (0.5, 3, 8)}, 0.9, beta=2)
        >>> write_scalars(writer, report); writer.close()
    """
    for tag, value in report.scalars(with_epoch=True).items():
        writer.add_scalar(tag, value, report.step)


def write_state_histograms(writer, counts_by_probe: Mapping[str, np.ndarray], step: int) -> None:
    """Histogram of log2(occurrences) of each distinct state, per probe.

    Written as ``state_space/state_frequency/<probe>``; probes without states
    are left out.

    Args:
        writer: a ``SummaryWriter``.
        counts_by_probe: ``{probe name: counts}`` (``StateCounter.counts()``).
        step: the step of the measurement (see :attr:`.EpochReport.step`).

    Example:
        >>> import tempfile
        >>> writer = open_writer(tempfile.mkdtemp())
        >>> write_state_histograms(writer, {"fc": np.array([8, 2, 1])}, step=0)
        >>> writer.close()
    """
    for probe, counts in counts_by_probe.items():
        if len(counts):
            values = np.log2(np.asarray(counts, dtype=np.float64))
            writer.add_histogram(f"{HISTOGRAM_PREFIX}/{probe}", values, step)


def efficiency_image(history: Sequence[EpochReport]) -> np.ndarray:
    """Heat map of layer efficiency (rows) over measurements (columns).

    Args:
        history: one report per measurement, oldest first; a layer missing
            from one is left blank.  Columns are labelled by epoch, or by
            ``epoch:step`` when some epoch was measured more than once.

    Returns:
        The picture as ``uint8[height, width, 3]`` RGB, drawn with matplotlib.

    Example:
        >>> report = EpochReport.from_values(0, {"a": (0.5, 2, 4)}, accuracy=None, beta=2)
        >>> image = efficiency_image([report])
        >>> image.dtype, image.ndim, image.shape[2]
        (dtype('uint8'), 3, 3)
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(layer.name for report in history for layer in report.layers))
    grid = np.full((len(names), len(history)), np.nan)
    for column, report in enumerate(history):
        for layer in report.layers:
            grid[names.index(layer.name), column] = layer.efficiency
    figure = Figure(figsize=(max(4.0, 1.0 + 0.5 * len(history)), 1.2 + 0.45 * len(names)), dpi=100)
    axes = figure.add_subplot()
    shown = axes.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0,
                        vmax=max(1e-9, float(np.nanmax(grid))))
    axes.set_yticks(range(len(names)), names, fontsize=8)
    epochs = [report.epoch for report in history]
    repeated = len(set(epochs)) < len(epochs)
    labels = [f"{report.epoch}:{report.step}" if repeated else str(report.epoch)
              for report in history]
    axes.set_xticks(range(len(history)), labels, fontsize=8)
    axes.set_xlabel("epoch:step" if repeated else "epoch")
    axes.set_title("layer efficiency")
    figure.colorbar(shown, ax=axes)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="raw", dpi=100)
    width, height = (int(v) for v in figure.canvas.get_width_height())
    rgba = np.frombuffer(buffer.getvalue(), dtype=np.uint8).reshape(height, width, 4)
    return np.ascontiguousarray(rgba[..., :3])


def write_efficiency_image(writer, history: Sequence[EpochReport]) -> None:
    """Write the heat map of ``history`` at the step of its last report.

    Written as ``state_space/efficiency_over_epochs``, every epoch again with
    the whole history, so TensorBoard's image slider shows how it grew.

    Args:
        writer: a ``SummaryWriter``.
        history: one report per epoch so far, oldest first (not empty).

    Example:
        >>> import tempfile
        >>> from tensorstate_callbacks.reporting.report import EpochReport
        >>> writer = open_writer(tempfile.mkdtemp())
        >>> report = EpochReport.from_values(0, {"fc": (0.5, 3, 8)}, None, beta=2)
        >>> write_efficiency_image(writer, [report]); writer.close()
    """
    writer.add_image(IMAGE_TAG, efficiency_image(history), history[-1].step, dataformats="HWC")


def write_hparams(writer, hparams: Mapping[str, object], extra_metrics: Sequence[str] = ()) -> None:
    """Register ``hparams`` in this run for TensorBoard's HParams dashboard.

    aIQ and network efficiency (and ``extra_metrics``) are the metrics the
    dashboard compares runs by.  TensorBoard shows the first hparams written
    to a run.

    Args:
        writer: a tensorboardX or torch.utils.tensorboard ``SummaryWriter``.
        hparams: ``{name: value}``; values other than bool, int, float and str
            are written as their ``str``.
        extra_metrics: more scalar tags to show beside aIQ and network efficiency.

    Example:
        >>> import tempfile
        >>> writer = open_writer(tempfile.mkdtemp())
        >>> write_hparams(writer, {"beta": 2.0, "attach_to": ["Conv2d"]})
        >>> writer.close()
    """
    if type(writer).__module__.startswith("torch."):  # torch.utils.tensorboard's writer
        from torch.utils.tensorboard.summary import hparams as hparams_summary
    else:
        from tensorboardX.summary import hparams as hparams_summary
    clean = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
    metrics = {f"{TAG_PREFIX}/aIQ": 0.0, f"{TAG_PREFIX}/network_efficiency": 0.0}
    metrics.update(dict.fromkeys(extra_metrics, 0.0))
    experiment, start, end = hparams_summary(clean, metrics)
    for summary in (experiment, start, end):
        writer.file_writer.add_summary(summary)
