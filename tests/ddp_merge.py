"""Workers for torch.multiprocessing.spawn: count shares of states on several gloo
processes, merge them with ``merge_across_ranks``, write what each rank got.

Kept apart from the test modules so that the spawned processes import only
torch and the package (not Keras).
"""

import math
import os
import pickle
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch.distributed as dist

from tensorstate_callbacks import StateCounter, state_divergence
from tensorstate_callbacks.integrations import distributed
from tensorstate_callbacks.integrations.distributed import detached, merge_across_ranks

ALPHAS = (0, 0.5, 1, 2, math.inf)
ESTIMATORS = ("plugin", "miller_madow", "chao_shen")


def _join(rank, port, world):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _write(out_dir, rank, value):
    (Path(out_dir) / f"rank{rank}.pkl").write_bytes(pickle.dumps(value))


def written(out_dir, rank):
    """What rank ``rank`` wrote."""
    return pickle.loads((Path(out_dir) / f"rank{rank}.pkl").read_bytes())


# -- one counter, for tests/test_reference_paths.py ------------------------------------------
class Gathered:
    """One rank's merged counts, whose distinct states are the union of every
    rank's slice: the StateCounter read API of ``assert_counts_match``."""

    def __init__(self, merged, slices):
        self.merged = merged
        self._keys = np.concatenate([keys for keys, _ in slices])
        self._counts = np.concatenate([counts for _, counts in slices]).astype(np.int64)

    def state_ids(self):
        return self._keys

    def counts(self):
        return self._counts

    def __getattr__(self, name):
        return getattr(self.merged, name)


def count_and_merge(rank, port, shares, neuron_axis, out_dir):
    """Count ``shares[rank]``, merge, write the merged counts and this rank's slice."""
    _join(rank, port, len(shares))
    try:
        counter = StateCounter(f"rank{rank}")
        counter.add(shares[rank], neuron_axis)
        merged = merge_across_ranks({"states": counter})["states"]
        local = merged.local
        _write(out_dir, rank, (merged, local.items() if local.state_count else None))
    finally:
        dist.destroy_process_group()


def load(out_dir, rank):
    """Rank ``rank``'s merged counts (of :func:`count_and_merge`), with the
    distinct states of every rank's slice."""
    results = [written(out_dir, other) for other in range(len(list(Path(out_dir).glob("rank*"))))]
    return Gathered(results[rank][0], [items for _, items in results if items is not None])


# -- every statistic, over two measurements --------------------------------------------------
def statistics(counts):
    """Every number a report reads from merged counts (or a StateCounter)."""
    values = {"state_count": counts.state_count, "distinct_count": counts.distinct_count,
              "max_entropy": counts.max_entropy(), "coverage": counts.coverage(),
              "efficiency_ceiling": counts.efficiency_ceiling(),
              "firing_rates": counts.firing_rates().tolist(),
              "counts": sorted(counts.counts().tolist()),
              "has_labels": counts.has_labels}
    for alpha in ALPHAS:
        values[f"entropy({alpha})"] = counts.entropy(alpha)
    for estimator in ESTIMATORS:
        values[f"efficiency[{estimator}]"] = counts.efficiency(estimator=estimator)
    if counts.has_labels:
        values["mutual_information"] = counts.mutual_information()
    return values


def measure_twice(rank, port, measurements, out_dir, memory_limit=None, round_bytes=None):
    """``measurements[m][name] = (shares, labels, neuron_axis)``: per measurement
    and counter, one array (and labels, or None) per rank.  Counts and merges
    each measurement (the second with the first as ``previous``, for drift);
    writes, per measurement, every statistic of each merged counter, its
    drift, and this rank's slice.  ``round_bytes`` shrinks the exchange's
    rounds (so that ranks send different numbers of rounds)."""
    world = len(next(iter(measurements[0].values()))[0])
    if round_bytes is not None:
        distributed._ROUND_BYTES = round_bytes
    _join(rank, port, world)
    try:
        counters, previous, written = {}, {}, []
        for measurement in measurements:
            for name, (shares, labels, neuron_axis) in measurement.items():
                counter = counters.setdefault(name, StateCounter(name, memory_limit=memory_limit))
                counter.reset_states()
                if shares[rank] is not None:
                    counter.add(shares[rank], neuron_axis,
                                labels=None if labels is None else labels[rank])
            merged = merge_across_ranks(counters, previous=previous)
            result = {}
            for name, counts in merged.items():
                result[name] = statistics(counts) if counts.state_count else {"state_count": 0}
                if name in previous:
                    result[name]["drift"] = state_divergence(previous[name], counts)
                local = counts.local
                result[name]["slice"] = local.items() if local is not None and \
                    local.state_count else None
                result[name]["spilled"] = counters[name].is_spilled
            written.append(result)
            previous = {name: detached(counts) for name, counts in merged.items()
                        if counts.state_count}
        _write(out_dir, rank, written)
    finally:
        dist.destroy_process_group()


# -- ranks that disagree, a rank that fails before the merge ---------------------------------
def merge_widths(rank, port, out_dir):
    """Rank ``r`` counts states of ``3 + r`` neurons; writes what the merge raised."""
    _join(rank, port, 2)
    try:
        counter = StateCounter("fc")
        counter.add(np.ones((4, 3 + rank)))
        try:
            merge_across_ranks({"fc": counter})
            _write(out_dir, rank, None)
        except ValueError as error:
            _write(out_dir, rank, str(error))
    finally:
        dist.destroy_process_group()


def fail_or_merge(rank, port, out_dir, timeout_s):
    """Rank 1 raises before the merge; rank 0 merges and writes what it raised."""
    _join(rank, port, 2)
    if rank == 1:
        raise RuntimeError("rank 1 failed mid-epoch")
    counter = StateCounter("fc")
    counter.add(np.ones((4, 3)))
    try:
        merge_across_ranks({"fc": counter}, timeout=timedelta(seconds=timeout_s))
        _write(out_dir, rank, None)
    except Exception as error:  # noqa: BLE001 - the test reads what the merge raised
        _write(out_dir, rank, (type(error).__name__, str(error)))
