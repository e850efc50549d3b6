"""The DDP merge on real gloo processes: exact, identical on every rank, and
never waiting forever for a rank that failed.

Every rank counts an uneven share of the activations (one rank none at all);
``merge_across_ranks`` must then give every rank the numbers of one process
that saw everything (plain NumPy on the activations), labels, mutual
information and drift included, while each rank keeps only its slice of the
distinct states.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reference import activations, packed_states, renyi_entropy, unique_counts
from support import free_port

torch = pytest.importorskip("torch")

import ddp_merge  # noqa: E402  (imports torch)

from tensorstate_callbacks import StateCounter  # noqa: E402

SCRIPT = Path(__file__).with_name("ddp_script.py")
# (shape, neuron axis, dtype) of each counter: a dense-table width and a wide one
LAYERS = {"dense": ((240, 20), -1, "float32"), "conv": ((60, 65, 3, 3), 1, "float16")}


# -- data and NumPy references ---------------------------------------------------------------
def measurement(seed, world, empty_rank, big_label=False, keep=None):
    """Activations and labels of each layer, cut unevenly among ``world`` ranks
    (``empty_rank`` gets none); ``keep`` reuses part of an earlier measurement."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, 40), size=world - 2, replace=False))
    result = {}
    for name, (shape, axis, dtype) in LAYERS.items():
        values = activations(rng, shape, dtype, neuron_axis=axis, repeats=0.6)
        labels = rng.integers(0, 10, size=shape[0])
        if keep is not None:  # half of the samples seen again: a drift well inside (0, 1)
            values[: shape[0] // 2] = whole(keep[name])[0][: shape[0] // 2]
        if big_label:  # 2-byte labels on the last rank with data, 1-byte on the others
            labels[-1] = 300
        bounds = [0, *(cuts * shape[0] // 40).tolist(), shape[0]]
        shares = [values[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        label_shares = [labels[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        shares.insert(empty_rank, None)
        label_shares.insert(empty_rank, None)
        result[name] = (shares, label_shares, axis)
    return result


def whole(layer):
    """All ranks' activations and labels of a layer, in one array each."""
    shares, labels, axis = layer
    return (np.concatenate([s for s in shares if s is not None]),
            np.concatenate([y for y in labels if y is not None]), axis)


def reference(layer):
    """What one process seeing every activation must report, with NumPy alone."""
    values, labels, axis = whole(layer)
    packed = packed_states(values, axis)
    keys, counts = unique_counts(packed)
    per_sample = len(packed) // len(labels)
    label_column = np.repeat(labels.astype("<i8"), per_sample).view(np.uint8).reshape(-1, 8)
    _, joint_counts = unique_counts(np.concatenate([packed, label_column], axis=1))
    _, label_counts = np.unique(labels, return_counts=True)
    label_counts = label_counts * per_sample
    width = values.shape[axis]
    total = len(packed)
    return {"keys": keys, "counts": counts, "width": width, "total": total,
            "firing": np.unpackbits(packed, axis=1, bitorder="little")[:, :width].sum(axis=0),
            "mutual_information": renyi_entropy(counts, 1) + renyi_entropy(label_counts, 1)
            - renyi_entropy(joint_counts, 1)}


def js_reference(first, second):
    """Jensen-Shannon divergence (bits) between two measurements of a layer."""
    a, b = reference(first), reference(second)
    keys = np.unique(np.concatenate([a["keys"], b["keys"]]), axis=0)

    def aligned(ref):
        p = np.zeros(len(keys))
        where = {row.tobytes(): i for i, row in enumerate(keys)}
        for row, count in zip(ref["keys"], ref["counts"]):
            p[where[row.tobytes()]] = count
        return p / p.sum()

    p, q = aligned(a), aligned(b)
    mixture = (p + q) / 2
    return renyi_entropy(mixture, 1) - (renyi_entropy(p, 1) + renyi_entropy(q, 1)) / 2


def one_process(layer):
    """A StateCounter fed every activation (for the bias-corrected estimators)."""
    values, labels, axis = whole(layer)
    counter = StateCounter("whole")
    counter.add(values, axis, labels=labels)
    return counter


def run_ranks(worker, world, *args):
    torch.multiprocessing.spawn(worker, nprocs=world, join=True, args=(free_port(), *args))


# -- exact and identical -----------------------------------------------------------------------
@pytest.mark.parametrize(("world", "empty_rank", "memory_limit", "round_bytes"), [
    (2, 1, 4096, None),    # spilled counters (and slices), rank 1 sees nothing
    (4, 2, None, 2000),    # four ranks, rank 2 sees nothing, rounds of ~100 rows
], ids=["2-ranks-spilled", "4-ranks-many-rounds"])
def test_merge_equals_one_process_on_every_rank(tmp_path, world, empty_rank, memory_limit,
                                                 round_bytes):
    first = measurement(1, world, empty_rank, big_label=True)
    second = measurement(2, world, (empty_rank + 1) % world, keep=first)
    run_ranks(ddp_merge.measure_twice, world, [first, second], str(tmp_path), memory_limit,
              round_bytes)
    results = [ddp_merge.written(tmp_path, rank) for rank in range(world)]

    for index, data in enumerate([first, second]):
        for name, layer in data.items():
            expected = reference(layer)
            got = [result[index][name] for result in results]
            slices = [stats.pop("slice") for stats in got]
            spilled = [stats.pop("spilled") for stats in got]
            # every rank got the very same numbers
            for other in got[1:]:
                assert other == got[0]
            stats = got[0]
            assert stats["state_count"] == expected["total"]
            assert stats["distinct_count"] == len(expected["counts"])
            assert stats["max_entropy"] == expected["width"]
            assert stats["counts"] == sorted(expected["counts"].tolist())
            for alpha in ddp_merge.ALPHAS:
                assert stats[f"entropy({alpha})"] == pytest.approx(
                    renyi_entropy(expected["counts"], alpha), rel=1e-12, abs=1e-12)
            singletons = int(np.count_nonzero(expected["counts"] == 1))
            assert stats["coverage"] == 1 - singletons / expected["total"]
            assert stats["efficiency_ceiling"] == pytest.approx(
                min(expected["width"], math.log2(expected["total"])) / expected["width"])
            np.testing.assert_array_equal(stats["firing_rates"],
                                          expected["firing"] / expected["total"])
            assert stats["has_labels"]
            assert stats["mutual_information"] == pytest.approx(
                expected["mutual_information"], rel=1e-12, abs=1e-12)
            counter = one_process(layer)
            for estimator in ddp_merge.ESTIMATORS:
                assert stats[f"efficiency[{estimator}]"] == pytest.approx(
                    counter.efficiency(estimator=estimator), rel=1e-12)
            if index == 1:
                assert 0.05 < stats["drift"] < 0.95
                assert stats["drift"] == pytest.approx(js_reference(first[name], layer),
                                                       rel=1e-12, abs=1e-12)
            # the slices: disjoint, together exactly the counts of every state,
            # none holding them all
            held = [items for items in slices if items is not None]
            keys = np.concatenate([k for k, _ in held])
            counts = np.concatenate([c for _, c in held])
            order = np.lexsort(keys.T[::-1])
            np.testing.assert_array_equal(keys[order], expected["keys"])
            np.testing.assert_array_equal(counts[order], expected["counts"])
            assert max(len(k) for k, _ in held) < len(expected["counts"])
            if memory_limit is not None:
                assert any(spilled)


# -- ranks that disagree, a rank that fails -------------------------------------------------------
def test_ranks_with_states_of_different_widths_all_raise_a_clear_error(tmp_path):
    run_ranks(ddp_merge.merge_widths, 2, str(tmp_path))
    for rank in range(2):
        message = ddp_merge.written(tmp_path, rank)
        assert message is not None and "different widths [3, 4]" in message


def test_a_failed_rank_makes_the_others_raise_after_the_timeout(tmp_path):
    """Rank 1 raises before the merge; rank 0 must give up after the merge's
    timeout with an error that names it, not wait for the 30-minute default."""
    context = torch.multiprocessing.start_processes(
        ddp_merge.fail_or_merge, args=(free_port(), str(tmp_path), 3), nprocs=2, join=False,
        start_method="spawn")
    survivor, failed = context.processes
    survivor.join(timeout=240)
    failed.join(timeout=30)
    assert survivor.exitcode == 0, "rank 0 still waiting or crashed"
    assert failed.exitcode != 0
    kind, message = ddp_merge.written(tmp_path, 0)
    assert kind == "RuntimeError"
    assert "did not take part within 3 s" in message
    assert "TENSORSTATE_MERGE_TIMEOUT" in message


# -- the Lightning callback under DDP ------------------------------------------------------------
def run_script(devices, out, *extra, **env):
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               PYTHONPATH=str(SCRIPT.parent), **env)
    return subprocess.run([sys.executable, str(SCRIPT), str(devices), str(out), *extra],
                          env=env, capture_output=True, text=True, timeout=400)


def results_of(devices, out):
    done = run_script(devices, out)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(path.read_text()) for path in sorted(Path(out).glob("rank*.json"))]


def test_lightning_ddp_logs_what_one_process_logs(tmp_path):
    """Two validation epochs (drift), labels (mutual information), uneven data per
    rank: every logged number equals one process's, on both ranks."""
    (single,) = results_of(1, tmp_path / "single")
    ranks = results_of(2, tmp_path / "ddp")
    assert len(ranks) == 2
    assert ranks[0]["callback_metrics"] == ranks[1]["callback_metrics"]
    assert ranks[0]["history"] == ranks[1]["history"]
    assert len(single["history"]) == len(ranks[0]["history"]) == 2
    assert set(single["callback_metrics"]) == set(ranks[0]["callback_metrics"])
    for one, two in zip(single["history"], ranks[0]["history"]):
        assert [layer["states"] for layer in two["layers"]] == [60 * 6 * 6, 60 * 4 * 4]
        for a, b in zip(one["layers"], two["layers"]):
            assert (a["name"], a["states"], a["unique_states"]) == \
                (b["name"], b["states"], b["unique_states"])
            for key, value in a.items():
                if isinstance(value, float):
                    assert b[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
        assert two["layers"][0]["mutual_information"] is not None
    assert ranks[0]["history"][1]["layers"][0]["drift"] is not None


def test_lightning_rank_that_fails_ends_the_run_with_the_merge_error(tmp_path):
    """Rank 1 raises in validation_step: the run ends with an error, not a
    30-minute wait.  Either rank 0 reaches the merge first and gives up after
    TENSORSTATE_MERGE_TIMEOUT, or Lightning's launcher sees rank 1 exit first and
    stops rank 0 (which wins depends on the machine's load; the merge's own
    timeout is tested without Lightning above)."""
    done = run_script(2, tmp_path, "fail", TENSORSTATE_MERGE_TIMEOUT="5")
    assert done.returncode != 0
    assert "rank 1 failed in validation_step" in done.stderr
    assert "merge_across_ranks: rank 0 of 2 gave up" in done.stderr or \
        "Forcefully terminating all other processes" in done.stderr
