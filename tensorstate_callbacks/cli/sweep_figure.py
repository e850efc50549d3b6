"""The figure of a width sweep: efficiency (with its ceiling), accuracy and aIQ
against the number of parameters.

Top row: network efficiency (solid) with its ceiling (dashed: the geometric
mean of the layers' ceilings, the most the measured states could show), then
accuracy, then aIQ.  Bottom row: each layer's efficiency and ceiling.  One
colour per batch-norm setting; parameters on a log axis.  Drawn with
matplotlib's Agg canvas (no display needed, no pyplot state).

Example:
    >>> import tempfile
    >>> rows = [{"bn": False, "params": p, "accuracy": a, "network_efficiency": e, "aIQ": q,
    ...          "conv_1": e, "conv_1_ceil": 1.0} for p, a, e, q in [(10, 0.9, 0.4, 0.7),
    ...                                                                (40, 0.95, 0.3, 0.66)]]
    >>> path = save_figure(rows, f"{tempfile.mkdtemp()}/sweep.png")
    >>> open(path, "rb").read(8) == b"\\x89PNG\\r\\n\\x1a\\n"
    True
"""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["save_figure"]

_COLOURS = {False: "tab:orange", True: "tab:blue"}


def _layers(rows: list[dict]) -> list[str]:
    """The layer columns of the table: those with a ``<layer>_ceil`` beside them."""
    return [key for key in rows[0] if f"{key}_ceil" in rows[0]]


def _ceilings(group: list[dict], key: str, layers: list[str]) -> list[float] | None:
    """The ceiling line of a panel: a layer's own ceilings; for network efficiency
    their geometric mean (the network efficiency of layers all at their ceiling);
    None for accuracy and aIQ."""
    if key in layers:
        return [row[f"{key}_ceil"] for row in group]
    if key == "network_efficiency" and layers:
        return [math.prod(row[f"{layer}_ceil"] for layer in layers) ** (1 / len(layers))
                for row in group]
    return None


def save_figure(rows: list[dict], path) -> Path:
    """Draw the sweep's table and save it as a PNG.

    Args:
        rows: the table (:func:`~.sweep.table_rows`): ``bn``, ``params``,
            ``accuracy``, ``network_efficiency``, ``aIQ`` and per layer
            ``<layer>`` and ``<layer>_ceil``.
        path: the PNG to write (its directory is created).

    Returns:
        The path written.

    Raises:
        ValueError: ``rows`` is empty.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("the sweep table is empty: nothing to draw")
    layers = _layers(rows)
    columns = max(3, len(layers))
    figure = Figure(figsize=(4 * columns, 7.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, columns, squeeze=False)
    panels = [("network efficiency", "network_efficiency"), ("accuracy", "accuracy"),
              ("aIQ", "aIQ")] + [(f"{layer} efficiency", layer) for layer in layers]
    places = [axes[0, i] for i in range(3)] + [axes[1, i] for i in range(len(layers))]
    settings = sorted({bool(row["bn"]) for row in rows})
    first = settings[0]
    for batch_norm in settings:
        group = sorted((row for row in rows if bool(row["bn"]) == batch_norm),
                       key=lambda row: row["params"])
        params = [row["params"] for row in group]
        label = "batch norm" if batch_norm else "no batch norm"
        style = {"color": _COLOURS[batch_norm], "marker": "o"}
        for (_, key), ax in zip(panels, places):
            ax.plot(params, [row[key] for row in group], label=label, **style)
            ceiling = _ceilings(group, key, layers)
            if ceiling:
                ax.plot(params, ceiling, linestyle="--", color=style["color"],
                        label="ceiling (dashed)" if batch_norm == first else None)
    for (title, _), ax in zip(panels, places):
        ax.set(title=title, xscale="log", xlabel="parameters")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes.flat:
        if not any(ax is place for place in places):
            ax.set_visible(False)
    figure.suptitle("LeNet-5 width sweep on MNIST: last validation epoch of each network")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
