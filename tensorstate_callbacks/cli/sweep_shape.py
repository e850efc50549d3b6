"""Whether a width sweep's table has the shape Schaub & Hotaling (2020) report, in words.

The paper's claims, and how each is decided from the table of
:func:`~.sweep.table_rows` (rows with ``width``, ``bn``, ``params``,
``accuracy``, ``network_efficiency`` and ``aIQ``; widths ordered by ``params``
within each batch-norm setting):

1. *Efficiency falls as width grows*: network efficiency decreases from each
   width to the next wider one, in every batch-norm setting.
2. *Accuracy levels off*: the step to the widest network changes accuracy by
   less than :data:`LEVEL_OFF` (one percentage point), in every setting.
3. *aIQ peaks at a small width*: the network of the highest aIQ has fewer
   parameters than the most accurate one, in every setting.
4. *Batch norm raises efficiency*: at every width trained both ways, network
   efficiency is higher with batch norm.

With the optional ``sample_limited`` column (layers within 5% of their
ceiling), the evidence says where a ceiling, not the network, decides.

A claim the table cannot test (one width only, one batch-norm setting only)
says so and counts neither way.

Example:
    >>> rows = [{"width": w, "bn": bn, "params": p, "accuracy": a,
    ...          "network_efficiency": e, "aIQ": q}
    ...         for w, bn, p, a, e, q in [("1/2", False, 100, 0.95, 0.40, 0.75),
    ...                                   ("1", False, 400, 0.96, 0.30, 0.70),
    ...                                   ("2", False, 1600, 0.962, 0.20, 0.61)]]
    >>> for sentence in paper_shape(rows):
    ...     print(sentence)
    Efficiency falls as width grows: yes (without batch norm 0.400 at width 1/2 to 0.200 at width 2).
    Accuracy levels off: yes (the step from width 1 to 2 changes accuracy by +0.20 points without batch norm).
    aIQ peaks at a small width: yes (without batch norm the highest aIQ, 0.750 at width 1/2, is 1.20 points less accurate than the most accurate network, width 2, with 16x fewer parameters).
    Batch norm raises efficiency: not tested (the sweep trained only without batch norm).
    The paper's shape holds here (3 of 3 claims tested).
"""  # noqa: E501

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LEVEL_OFF", "Claim", "claims", "paper_shape", "sample_limit_notes"]

LEVEL_OFF = 0.01
"""Accuracy levels off when the last width step changes it by less than this."""

_NEEDED = ("width", "bn", "params", "accuracy", "network_efficiency", "aIQ")


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims, checked on a table.

    Attributes:
        name: the claim, e.g. ``"Efficiency falls as width grows"``.
        holds: True or False, or None when the table cannot test it.
        evidence: the numbers that decided it.
    """

    name: str
    holds: bool | None
    evidence: str

    @property
    def sentence(self) -> str:
        """``"<name>: yes|no|not tested (<evidence>)."``"""
        answer = {True: "yes", False: "no", None: "not tested"}[self.holds]
        return f"{self.name}: {answer} ({self.evidence})."


def _setting(batch_norm: bool) -> str:
    return "with batch norm" if batch_norm else "without batch norm"


def _limited(row: dict) -> set[str]:
    """The layers a row marks as sample-limited (its optional ``sample_limited`` column)."""
    return set(filter(None, (row.get("sample_limited") or "").split(",")))


def _groups(rows: list[dict]) -> dict[bool, list[dict]]:
    """{batch norm: its rows, fewest parameters first}; rows are checked first."""
    for row in rows:
        missing = [key for key in _NEEDED if row.get(key) is None]
        if missing:
            raise ValueError(f"a row of the sweep table lacks {missing}: {row}; every row needs "
                             f"{list(_NEEDED)} (see tensorstate_callbacks.cli.sweep.table_rows)")
    groups: dict[bool, list[dict]] = {}
    for row in rows:
        groups.setdefault(bool(row["bn"]), []).append(row)
    return {bn: sorted(group, key=lambda row: row["params"])
            for bn, group in sorted(groups.items())}


def _efficiency_falls(groups) -> Claim:
    name = "Efficiency falls as width grows"
    tested = {bn: group for bn, group in groups.items() if len(group) > 1}
    if not tested:
        return Claim(name, None, "needs two widths or more")
    rises = [f"{_setting(bn)} it rises from width {a['width']} ({a['network_efficiency']:.3f})"
             f" to {b['width']} ({b['network_efficiency']:.3f})"
             for bn, group in tested.items() for a, b in zip(group, group[1:])
             if b["network_efficiency"] >= a["network_efficiency"]]
    if rises:
        return Claim(name, False, "; ".join(rises))
    evidence = ", ".join(
        f"{_setting(bn)} {group[0]['network_efficiency']:.3f} at width {group[0]['width']} to "
        f"{group[-1]['network_efficiency']:.3f} at width {group[-1]['width']}"
        for bn, group in tested.items())
    if any(_limited(row) for group in tested.values() for row in group):
        evidence += ("; part of the fall is the ceiling's: a sample-limited layer's efficiency "
                     "falls with its ceiling as it widens")
    return Claim(name, True, evidence)


def _accuracy_levels_off(groups) -> Claim:
    name = "Accuracy levels off"
    tested = {bn: group for bn, group in groups.items() if len(group) > 1}
    if not tested:
        return Claim(name, None, "needs two widths or more")
    steps = {bn: group[-1]["accuracy"] - group[-2]["accuracy"] for bn, group in tested.items()}
    evidence = ", ".join(
        f"the step from width {group[-2]['width']} to {group[-1]['width']} changes accuracy by "
        f"{100 * steps[bn]:+.2f} points {_setting(bn)}" for bn, group in tested.items())
    return Claim(name, all(abs(step) < LEVEL_OFF for step in steps.values()), evidence)


def _aiq_peaks_small(groups) -> Claim:
    name = "aIQ peaks at a small width"
    tested = {bn: group for bn, group in groups.items() if len(group) > 1}
    if not tested:
        return Claim(name, None, "needs two widths or more")
    holds, parts = True, []
    for bn, group in tested.items():
        best_aiq = max(group, key=lambda row: row["aIQ"])
        best_accuracy = max(group, key=lambda row: row["accuracy"])
        if best_aiq["params"] < best_accuracy["params"]:
            parts.append(
                f"{_setting(bn)} the highest aIQ, {best_aiq['aIQ']:.3f} at width "
                f"{best_aiq['width']}, is "
                f"{100 * (best_accuracy['accuracy'] - best_aiq['accuracy']):.2f} points less "
                f"accurate than the most accurate network, width {best_accuracy['width']}, with "
                f"{best_accuracy['params'] / best_aiq['params']:,.0f}x fewer parameters")
        else:
            holds = False
            parts.append(f"{_setting(bn)} the highest aIQ, {best_aiq['aIQ']:.3f}, is at width "
                         f"{best_aiq['width']}, no narrower than the most accurate network "
                         f"(width {best_accuracy['width']})")
    return Claim(name, holds, "; ".join(parts))


def _batch_norm_raises(groups) -> Claim:
    name = "Batch norm raises efficiency"
    if len(groups) < 2:
        only = _setting(next(iter(groups), False))
        return Claim(name, None, f"the sweep trained only {only}")
    plain = {row["width"]: row for row in groups[False]}
    paired = [(row, plain[row["width"]]) for row in groups[True] if row["width"] in plain]
    if not paired:
        return Claim(name, None, "no width was trained both with and without batch norm")
    parts, higher = [], 0
    for with_bn, without in paired:
        gain = with_bn["network_efficiency"] - without["network_efficiency"]
        higher += gain > 0
        pinned = sorted(_limited(with_bn) & _limited(without))
        parts.append(f"{gain:+.4f} at {with_bn['width']}" + (
            f" [{', '.join(pinned)} at {'its' if len(pinned) == 1 else 'their'} ceiling either "
            f"way]" if pinned else ""))
    evidence = (f"network efficiency is higher with batch norm at {higher} of {len(paired)} "
                f"widths; with minus without, by width: {', '.join(parts)}")
    return Claim(name, higher == len(paired), evidence)


def claims(rows: list[dict]) -> list[Claim]:
    """The paper's four claims, checked on a sweep table (see the module's docstring).

    Args:
        rows: the table (:func:`~.sweep.table_rows`).

    Returns:
        The claims in the paper's order.

    Raises:
        ValueError: a row lacks a value the claims need.

    Example:
        >>> rows = [{"width": "1", "bn": bn, "params": 10, "accuracy": 0.9,
        ...          "network_efficiency": e, "aIQ": 0.7} for bn, e in [(False, 0.3), (True, 0.2)]]
        >>> [claim.holds for claim in claims(rows)]
        [None, None, None, False]
    """
    groups = _groups(rows)
    return [_efficiency_falls(groups), _accuracy_levels_off(groups), _aiq_peaks_small(groups),
            _batch_norm_raises(groups)]


def paper_shape(rows: list[dict]) -> list[str]:
    """Whether the table has the paper's shape: a sentence per claim, then the verdict.

    Args:
        rows: the table (:func:`~.sweep.table_rows`).

    Returns:
        One sentence per claim (:meth:`Claim.sentence`), then "The paper's
        shape holds here", "holds in part" or "does not hold here", with how
        many of the claims it could test hold.

    Raises:
        ValueError: a row lacks a value the claims need.

    Example:
        >>> rows = [{"width": w, "bn": False, "params": p, "accuracy": a,
        ...          "network_efficiency": 0.3, "aIQ": q}
        ...         for w, p, a, q in [("1", 10, 0.90, 0.60), ("2", 40, 0.97, 0.65)]]
        >>> paper_shape(rows)[-1]
        "The paper's shape does not hold here (0 of 3 claims tested)."
    """
    checked = claims(rows)
    tested = [claim for claim in checked if claim.holds is not None]
    held = sum(claim.holds for claim in tested)
    if tested and held == len(tested):
        verdict = "holds here"
    elif held:
        verdict = "holds in part"
    else:
        verdict = "does not hold here"
    return [claim.sentence for claim in checked] + [
        f"The paper's shape {verdict} ({held} of {len(tested)} claims tested)."]


def sample_limit_notes(rows: list[dict]) -> list[str]:
    """A sentence per layer that is sample-limited in some run of the table.

    Args:
        rows: the table (:func:`~.sweep.table_rows`), whose ``sample_limited``
            column names the layers within 5% of their ceiling.

    Returns:
        The sentences (none when no layer is sample-limited).

    Example:
        >>> rows = [{"width": "1", "bn": True, "sample_limited": "conv_3"},
        ...         {"width": "2", "bn": False, "sample_limited": "conv_2,conv_3"},
        ...         {"width": "1/2", "bn": False, "sample_limited": None}]
        >>> for note in sample_limit_notes(rows):
        ...     print(note)
        conv_3 is sample-limited at width 1 with batch norm, 2 without batch norm: its efficiency is within 5% of its ceiling log2(states measured) / neurons, so there it says how many states were measured, not how the layer uses its neurons; read it as a lower bound.
        conv_2 is sample-limited at width 2 without batch norm: its efficiency is within 5% of its ceiling log2(states measured) / neurons, so there it says how many states were measured, not how the layer uses its neurons; read it as a lower bound.
    """  # noqa: E501
    where: dict[str, list[str]] = {}
    for row in rows:
        for layer in (row.get("sample_limited") or "").split(","):
            if layer:
                where.setdefault(layer, []).append(f"{row['width']} {_setting(row['bn'])}")
    return [f"{layer} is sample-limited at width {', '.join(runs)}: its efficiency is within 5% "
            f"of its ceiling log2(states measured) / neurons, so there it says how many states "
            f"were measured, not how the layer uses its neurons; read it as a lower bound."
            for layer, runs in sorted(where.items(), key=lambda item: -len(item[1]))]
