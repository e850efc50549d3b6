"""Exact merge of state counts across processes (DDP) with torch.distributed.

Each rank counts its own states.  At the end of a measurement
:func:`merge_across_ranks` merges them without any rank holding every rank's
table: the ranks exchange their distinct states (``all_to_all``, a few tens
of MiB per round) so that each owns the slice of the key space that a hash of
the packed state assigns to it, with the counts summed over every rank; then
each sends the few additive statistics of its slice (count profile, firing
counts, label and (state, label) profiles, drift terms; see
:mod:`tensorstate_callbacks.core.reduced`) to every rank, which all compute
the same, exact metrics.  Rank zero logs them.

The merge runs on a gloo process group of its own (CPU tensors, whatever the
training backend, gloo or nccl) whose operations time out after ``timeout``
(default :data:`DEFAULT_TIMEOUT`, 5 minutes, or the environment variable
``TENSORSTATE_MERGE_TIMEOUT`` in seconds): a rank that failed before the
merge makes the others raise a ``RuntimeError`` naming the timeout instead of
waiting for the 30-minute default of torch.distributed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from ..core.counter import StateCounter
from ..core.reduced import ReducedCounts, SliceStatistics, divergence_terms, owners
from ._probe import snapshot, without_incomplete

__all__ = ["DEFAULT_TIMEOUT", "detached", "merge_across_ranks"]

DEFAULT_TIMEOUT = timedelta(minutes=5)
"""How long a rank waits for the others at each step of the merge."""

_ROUND_BYTES = 32 << 20  # bytes of (state, count) rows a rank sends per round


class _Layout(NamedTuple):
    """What one rank's counter holds, as every rank must know it before the exchange."""

    name: str
    num_neurons: int | None
    labelled: bool | None
    label_bytes: int
    state_count: int
    incomplete: bool = False


def merge_across_ranks(counters: Mapping[str, StateCounter], *, previous: Mapping | None = None,
                       timeout: timedelta | float | None = None) -> dict:
    """The counts of every rank, merged exactly, identical on every rank.

    Every rank must call this with counters of the same names in the same
    order.  Outside torch.distributed (or with one process) the counters
    themselves come back.  The counters are left as they are.

    Args:
        counters: ``{name: counter}`` of this rank.
        previous: ``{name: merged counts}`` of the previous measurement (what
            this function returned then, through :func:`detached`): the
            drift from it is computed now, so that
            ``state_divergence(previous[name], merged[name])`` answers it.
        timeout: the longest a rank waits for the others at one step, as a
            ``timedelta`` or in seconds (default :data:`DEFAULT_TIMEOUT`).

    Returns:
        ``{name: counts}``: with several processes a
        :class:`~tensorstate_callbacks.core.reduced.ReducedCounts` per counter
        (the metrics of all ranks' states; ``.local`` is this rank's slice).
        A counter whose counts are incomplete on any rank (see
        ``StateCounter.incomplete``) is left out, on every rank alike.

    Raises:
        ValueError: the ranks hold different counters, or states of different
            widths, or one has labels where another has none.
        RuntimeError: a rank did not take part within ``timeout`` (it failed,
            or is stuck); the message names the timeout.

    Example:
        >>> counter = StateCounter("fc")
        >>> counter.add(np.array([[1.0, -1.0], [2.0, 3.0]]))
        >>> merge_across_ranks({"fc": counter})["fc"] is counter    # one process
        True
    """
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return without_incomplete(counters)
    timeout = _timeout(timeout)
    with _merge_group(timeout) as group:
        layouts = _all_gather(group, [_layout(name, counter) for name, counter in counters.items()])
        if len({tuple(layout.name for layout in rank) for rank in layouts}) != 1:
            raise ValueError(f"merge_across_ranks: the ranks hold different counters: "
                             f"{[[layout.name for layout in rank] for rank in layouts]}")
        incomplete = {layout.name for rank in layouts for layout in rank if layout.incomplete}
        return {name: _merge(group, counter, [rank[index] for rank in layouts],
                             (previous or {}).get(name))
                for index, (name, counter) in enumerate(counters.items())
                if name not in incomplete}


def detached(counts):
    """``counts`` (what :func:`merge_across_ranks` returned) in a form that
    outlives its counter's next ``reset_states()``, for the next merge's drift:
    a counter is copied, merged counts (already apart from it) come back as
    they are.

    Example:
        >>> counter = StateCounter("fc"); counter.add(np.ones((3, 2)))
        >>> kept = detached(counter); counter.reset_states()
        >>> kept.state_count
        3
    """
    return counts if isinstance(counts, ReducedCounts) else snapshot(counts)


def _timeout(timeout) -> timedelta:
    if timeout is None:
        configured = os.environ.get("TENSORSTATE_MERGE_TIMEOUT")
        if configured is None:
            return DEFAULT_TIMEOUT
        try:
            timeout = float(configured)
        except ValueError:
            raise ValueError(f"TENSORSTATE_MERGE_TIMEOUT={configured!r} is not a number of "
                             "seconds; write it like 300") from None
    if not isinstance(timeout, timedelta):
        timeout = timedelta(seconds=float(timeout))
    if not timeout.total_seconds() > 0:
        raise ValueError(f"the merge timeout must be positive, got {timeout}")
    return timeout


@contextmanager
def _merge_group(timeout: timedelta) -> Iterator:
    """A gloo group of every rank whose operations give up after ``timeout``;
    its errors (a rank that does not come) name the timeout and the fix."""
    try:
        group = dist.new_group(backend="gloo", timeout=timeout)
        try:
            yield group
        finally:
            dist.destroy_process_group(group)
    except RuntimeError as error:
        if type(error) is not RuntimeError and not isinstance(error, dist.DistError):
            raise  # the counters' own errors (spill files, incomplete counts) as they are
        raise RuntimeError(
            f"merge_across_ranks: rank {dist.get_rank()} of {dist.get_world_size()} gave up "
            f"merging the state counts: another rank failed or did not take part within "
            f"{timeout.total_seconds():g} s (see that rank's own error; a slow rank needs a "
            "longer timeout=, or TENSORSTATE_MERGE_TIMEOUT in seconds)"
        ) from error


def _all_gather(group, value) -> list:
    values = [None] * dist.get_world_size(group)
    dist.all_gather_object(values, value, group=group)
    return values


def _layout(name: str, counter: StateCounter) -> _Layout:
    if counter.incomplete is not None:
        return _Layout(name, None, None, 0, 0, incomplete=True)
    label_bytes = 0
    if counter.has_labels:
        first = next(counter.joint_count_chunks(), None)
        label_bytes = 0 if first is None else first[0].shape[1] - (counter.num_neurons + 7) // 8
    labelled = counter.has_labels if counter.state_count else None
    return _Layout(name, counter.num_neurons, labelled, label_bytes, counter.state_count)


def _merge(group, counter: StateCounter, layouts: list[_Layout], previous) -> ReducedCounts:
    """Exchange one counter's keys, then reduce the statistics of the slices."""
    name = layouts[0].name
    widths = {layout.num_neurons for layout in layouts if layout.num_neurons is not None}
    labelled = {layout.labelled for layout in layouts if layout.labelled is not None}
    if len(widths) > 1:
        raise ValueError(f"{name}: the ranks saw states of different widths {sorted(widths)}; "
                         "every rank must probe the same layers")
    if len(labelled) > 1:
        raise ValueError(f"{name}: some ranks counted labels and others none; give every "
                         "rank's batches labels, or none")
    if not widths:
        return ReducedCounts(name, None, [])
    width, label_bytes = widths.pop(), max(layout.label_bytes for layout in layouts)
    states = _slice_counter(name, counter)
    joint = _slice_counter(f"{name} (state, label)", counter) if labelled == {True} else None
    _exchange(group, counter, states, joint, width, label_bytes)
    if not isinstance(previous, ReducedCounts) or not previous.state_count or \
            previous.num_neurons != width:
        previous = None  # no drift (a counter of one process cannot be compared slice by slice)
    divergence = None if previous is None else divergence_terms(
        previous.local, states, previous.state_count,
        sum(layout.state_count for layout in layouts))
    parts = _all_gather(group, SliceStatistics.of(states, joint, counter.label_counts(),
                                                  divergence))
    if joint is not None:
        joint.reset_states()  # only its profile was needed
    return ReducedCounts(name, width, parts, states, previous)


def _slice_counter(name: str, counter: StateCounter) -> StateCounter:
    return StateCounter(name, memory_limit=counter.memory_limit, spill_dir=counter.spill_dir,
                        threads=counter.threads)


def _exchange(group, counter: StateCounter, states: StateCounter, joint: StateCounter | None,
              width: int, label_bytes: int) -> None:
    """Send every local (state, count) row, and (state, label) row, to the rank
    owning its state; count what this rank owns into ``states`` and ``joint``.

    Rounds of at most ``_ROUND_BYTES`` per rank, until no rank has rows left."""
    state_bytes = (width + 7) // 8
    tables = [(_rounds(counter.count_chunks(), state_bytes), states, state_bytes, width)]
    if joint is not None:
        joint_bytes = state_bytes + label_bytes
        tables.append((_rounds(_widened(counter.joint_count_chunks(), joint_bytes), joint_bytes),
                       joint, joint_bytes, 8 * joint_bytes))
    world = dist.get_world_size(group)
    while True:
        batches = [next(rounds, None) for rounds, *_ in tables]
        sending = [_by_owner(batch, key_bytes, state_bytes, world)
                   for batch, (_, _, key_bytes, _) in zip(batches, tables)]
        plan = torch.zeros((world, 1 + len(tables)), dtype=torch.int64)
        plan[:, 0] = int(any(batch is not None for batch in batches))
        for column, (_, rows_per_rank) in enumerate(sending, start=1):
            plan[:, column] = torch.from_numpy(rows_per_rank)
        received = torch.empty_like(plan)
        dist.all_to_all_single(received, plan, group=group)
        if not received[:, 0].any():  # every rank sees every rank's flag: all stop together
            return
        for column, ((rows, rows_per_rank), (_, into, _, neurons)) in enumerate(
                zip(sending, tables), start=1):
            keys, counts = _send_rows(group, rows, rows_per_rank, received[:, column].tolist())
            if len(keys):
                into.add_counts(keys, counts, neurons)


def _rounds(chunks, key_bytes: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The ``(keys, counts)`` chunks regrouped into rounds of at most
    ``_ROUND_BYTES`` of rows (a chunk larger than that is split)."""
    limit = max(1, _ROUND_BYTES // (key_bytes + 8))
    pending, size = [], 0
    for keys, counts in chunks:
        for start in range(0, len(keys), limit):
            piece = keys[start:start + limit], counts[start:start + limit]
            if size + len(piece[0]) > limit:
                yield _joined(pending)
                pending, size = [], 0
            pending.append(piece)
            size += len(piece[0])
    if pending:
        yield _joined(pending)


def _joined(pieces: list) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([keys for keys, _ in pieces]), np.concatenate([c for _, c in pieces])


def _widened(chunks, key_bytes: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(state, label) keys with their labels zero-extended to the widest label of
    any rank (labels of 1 and 2 bytes are never negative)."""
    for keys, counts in chunks:
        if keys.shape[1] < key_bytes:
            wider = np.zeros((len(keys), key_bytes), dtype=np.uint8)
            wider[:, :keys.shape[1]] = keys
            keys = wider
        yield keys, counts


def _by_owner(batch, key_bytes: int, state_bytes: int,
              world: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``key bytes + 8-byte count`` ordered by the rank owning their
    state, and how many rows go to each rank."""
    if batch is None:
        return np.empty((0, key_bytes + 8), dtype=np.uint8), np.zeros(world, dtype=np.int64)
    keys, counts = batch
    owner = owners(keys[:, :state_bytes], world)
    order = np.argsort(owner, kind="stable")
    rows = np.empty((len(keys), key_bytes + 8), dtype=np.uint8)
    rows[:, :key_bytes] = keys[order]
    rows[:, key_bytes:] = counts[order].astype("<u8").view(np.uint8).reshape(-1, 8)
    return rows, np.bincount(owner, minlength=world).astype(np.int64)


def _send_rows(group, rows: np.ndarray, rows_per_rank: np.ndarray,
               incoming: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One ``all_to_all`` of rows (every rank calls it, sending or not);
    returns the received ``(keys, counts)``."""
    row_bytes = rows.shape[1]
    received = torch.empty(sum(incoming) * row_bytes, dtype=torch.uint8)
    dist.all_to_all_single(received, torch.from_numpy(rows.reshape(-1)),
                           [rows * row_bytes for rows in incoming],
                           [rows * row_bytes for rows in rows_per_rank.tolist()], group=group)
    table = received.numpy().reshape(-1, row_bytes)
    return np.ascontiguousarray(table[:, :-8]), table[:, -8:].copy().view("<u8").ravel()
