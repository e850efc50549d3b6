"""Speed of packing and counting states against reading the input once and plain NumPy.

For each float32 input (random with p(fire) = 0.4, and a low-diversity case
drawn from a few thousand patterns) it prints, as milliseconds and as a ratio
to the read time:

- read:        ``arr.sum()``, one pass over the input;
- pack:        ``tensorstate_callbacks.states.pack(arr, neuron_axis)``;
- pack+count:  a fresh ``StateCounter().add(arr, neuron_axis)`` and a read of
               its ``distinct_count`` (so every count is in place);
- batched:     the same, the input added in batches of about ``--batch-rows``
               (65,536) states along axis 0, as probes see a validation epoch,
               on one thread per batch as probes count (the read uses every core);
- numpy:       ``np.packbits(arr > 0, bitorder='little')`` + ``np.unique(axis=0,
               return_counts=True)`` (skipped where it would take more than 60 s,
               estimated from a 1/20 slice).

A second table times counting with labels (``add(..., labels=y)``, one of
``LABELS`` random classes per sample along axis 0, for mutual information)
against counting without, on one counter per kind reused across repeats
(``reset_states()`` in between, as probes do every epoch), the two runs
interleaved, each with a read of ``distinct_count`` as above:

- batched:     ``--batch-rows`` states per ``add``, one thread per batch (LeNet's
               ``conv_1``, 10,000x20x24x24, is added 113 images at a time);
- one add:     the whole input in one ``add``, on every core;
- read:        the *counter read*: ``counter.efficiency()`` on the labelled
               counter right after its last ``add`` of an epoch, so including
               what every first read does (count the buffered rows, fold the
               threads' copies of a dense table, sum the per-label tables);
- statistics:  what the callbacks compute next at each epoch end (reporting's
               ``layer_extras``): ``coverage()``, ``efficiency_ceiling()``,
               ``firing_rates()`` and ``mutual_information()``, each timed, and
               their sum as a ratio to that counter read.

Each time is the median of ``--repeats`` runs.  ``--scale N`` divides the row
counts by N, ``--quick`` by 20.  Run: ``python benchmarks/bench_states.py [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time

import numpy as np

from tensorstate_callbacks import StateCounter
from tensorstate_callbacks.core.packing import num_threads
from tensorstate_callbacks.states import pack

# (label, shape, neuron_axis)
CASES = [
    ("5,760,000x20", (5_760_000, 20), -1),
    ("640,000x50", (640_000, 50), -1),
    ("10,000x100", (10_000, 100), -1),
    ("2,000,000x256", (2_000_000, 256), -1),
    ("200,000x2048", (200_000, 2048), -1),
    ("10,000x20x24x24 (axis 1)", (10_000, 20, 24, 24), 1),
]
P_FIRE = 0.4
PATTERNS = 4_000
NUMPY_LIMIT_S = 60.0
LABELS = 10
STATISTICS = ("coverage", "efficiency_ceiling", "firing_rates", "mutual_information")


def make_input(shape, neuron_axis, diverse, rng):
    """float32 activations; each neuron fires (> 0) with probability P_FIRE."""
    if diverse:
        x = rng.random(shape, dtype=np.float32)
        x -= 1 - P_FIRE
        return x
    # low diversity: every state is one of PATTERNS patterns
    moved = list(shape)
    width = moved.pop(neuron_axis % len(shape))
    table = rng.random((PATTERNS, width), dtype=np.float32) - (1 - P_FIRE)
    states = table[rng.integers(0, PATTERNS, size=int(np.prod(moved)))]
    return np.ascontiguousarray(np.moveaxis(states.reshape(*moved, width), -1, neuron_axis))


def median_time(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_fresh(x, neuron_axis):
    counter = StateCounter("bench")
    counter.add(x, neuron_axis)
    assert counter.distinct_count > 0  # a read: buffered rows counted, thread copies folded in
    return counter


def count_batched(x, neuron_axis, batch_rows):
    """A fresh counter fed ``x`` in batches of about ``batch_rows`` states along axis 0."""
    counter = StateCounter("bench")
    states_per_sample = max(1, x[:1].size // x.shape[neuron_axis])
    step = max(1, batch_rows // states_per_sample)
    for start in range(0, x.shape[0], step):
        counter.add(x[start:start + step], neuron_axis, threads=1)
    assert counter.distinct_count > 0
    return counter


def count_epoch(counter, x, neuron_axis, labels, batch_rows):
    """An epoch into a reused counter: reset, add ``x`` (in batches of about
    ``batch_rows`` states on one thread each, or at once when None), read."""
    counter.reset_states()
    if batch_rows is None:
        counter.add(x, neuron_axis, labels=labels)
    else:
        states_per_sample = max(1, x[:1].size // x.shape[neuron_axis])
        step = max(1, batch_rows // states_per_sample)
        for start in range(0, x.shape[0], step):
            counter.add(x[start:start + step], neuron_axis, threads=1,
                        labels=None if labels is None else labels[start:start + step])
    assert counter.distinct_count > 0


def measure_labels(x, neuron_axis, args, rng):
    """Medians (seconds) of counting without and with labels (interleaved), of
    the labelled counter's read and of each read-time statistic after it."""
    labels = rng.integers(0, LABELS, size=x.shape[0])
    counters = {False: StateCounter("plain"), True: StateCounter("labelled")}
    times = {}
    for mode, batch_rows in (("batched", args.batch_rows), ("one add", None)):
        runs = {False: [], True: []}
        for _ in range(args.repeats + 1):  # the first of each warms up
            for labelled in (False, True):
                start = time.perf_counter()
                count_epoch(counters[labelled], x, neuron_axis, labels if labelled else None,
                            batch_rows)
                runs[labelled].append(time.perf_counter() - start)
        times[mode] = statistics.median(runs[False][1:]), statistics.median(runs[True][1:])
    reads = {name: [] for name in ("read", *STATISTICS)}
    counter = counters[True]
    for _ in range(args.repeats):
        count_epoch(counter, x, neuron_axis, labels, args.batch_rows)
        counter.add(x[:1], neuron_axis, labels=labels[:1], threads=1)  # a fresh last batch
        for name, read in (("read", counter.efficiency), *(
                (name, getattr(counter, name)) for name in STATISTICS)):
            start = time.perf_counter()
            read()
            reads[name].append(time.perf_counter() - start)
    times.update({name: statistics.median(values) for name, values in reads.items()})
    return times


def print_labels_row(case, kind, times):
    read = times["read"]
    spent = sum(times[name] for name in STATISTICS)
    cells = " | ".join(f"{times[name] * 1e3:7.2f} ms" for name in STATISTICS)
    ratios = " | ".join(
        f"{plain * 1e3:8.1f} ms {labelled * 1e3:8.1f} ms {labelled / plain:5.2f}x"
        for plain, labelled in (times["batched"], times["one add"]))
    print(f"| {case:<28} | {kind:<14} | {ratios} | {read * 1e3:7.2f} ms | {cells} "
          f"| {spent / read:6.1%} |", flush=True)


def numpy_reference(x, neuron_axis):
    moved = np.moveaxis(x, neuron_axis, -1)
    states = moved.reshape(-1, moved.shape[-1]) > 0
    packed = np.packbits(states, axis=-1, bitorder="little")
    return np.unique(packed, axis=0, return_counts=True)


def time_numpy(x, neuron_axis, repeats):
    """Median NumPy time, or (None, estimate) when it would exceed NUMPY_LIMIT_S."""
    rows = x.shape[0]
    part = x[: max(1, rows // 20)]
    start = time.perf_counter()
    numpy_reference(part, neuron_axis)
    estimate = (time.perf_counter() - start) * rows / len(part) * 1.3  # sorting: n log n
    if estimate > NUMPY_LIMIT_S:
        return None, estimate
    return median_time(lambda: numpy_reference(x, neuron_axis),
                       1 if estimate > 5 else repeats), estimate


def measure(x, neuron_axis, args):
    """Times (seconds) of read, pack, pack+count and NumPy on one input."""
    distinct = count_fresh(x, neuron_axis).distinct_count  # also warms up (as does:)
    pack(x, neuron_axis)  # the first large outputs cost the OS more to map
    times = {
        "distinct": distinct,
        "read": median_time(x.sum, args.repeats),
        "pack": median_time(lambda: pack(x, neuron_axis), args.repeats),
        "count": median_time(lambda: count_fresh(x, neuron_axis), args.repeats),
        "batched": median_time(lambda: count_batched(x, neuron_axis, args.batch_rows),
                               args.repeats),
        "numpy": None,
        "note": "not run",
    }
    if not args.no_numpy:
        times["numpy"], estimate = time_numpy(x, neuron_axis, args.repeats)
        times["note"] = "" if times["numpy"] else f"skipped (est. {estimate:.0f} s > 60 s)"
        head = x[: min(len(x), 20_000)]  # a cheap cross-check of the distinct count
        keys, _ = numpy_reference(head, neuron_axis)
        assert count_fresh(head, neuron_axis).distinct_count == len(keys), "differs from NumPy"
        assert count_batched(head, neuron_axis, 4096).distinct_count == len(keys)
    return times


def run_case(label, shape, neuron_axis, diverse, args, rng):
    if args.scale > 1:
        shape = (max(1, shape[0] // args.scale),) + shape[1:]
    x = make_input(shape, neuron_axis, diverse, rng)
    row = {} if args.labels_only else measure(x, neuron_axis, args)
    if not args.no_labels:
        row["labels"] = measure_labels(x, neuron_axis, args, rng)
    del x  # free the input before the next size
    gc.collect()
    row["case"] = label + (f" /{args.scale}" if args.scale > 1 else "")
    row["kind"] = "random" if diverse else f"{PATTERNS:,} patterns"
    return row


def cell(seconds, read):
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:9.1f} ms {seconds / read:6.2f}x"


def print_row(row):
    print(f"| {row['case']:<28} | {row['kind']:<14} | {row['distinct']:>10,} "
          f"| {row['read'] * 1e3:8.1f} ms | {cell(row['pack'], row['read'])} "
          f"| {cell(row['count'], row['read'])} | {cell(row['batched'], row['read'])} "
          f"| {cell(row['numpy'], row['read'])} "
          f"{row['note']} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="row counts divided by 20")
    parser.add_argument("--scale", type=int, default=1, help="row counts divided by this")
    parser.add_argument("--repeats", type=int, default=5, help="runs per time (median)")
    parser.add_argument("--no-numpy", action="store_true", help="skip the NumPy reference")
    parser.add_argument("--only", help="run only cases whose label contains this text")
    parser.add_argument("--batch-rows", type=int, default=65_536,
                        help="states per batch of the batched column")
    parser.add_argument("--no-labels", action="store_true", help="skip the labels table")
    parser.add_argument("--labels-only", action="store_true", help="only the labels table")
    args = parser.parse_args()
    args.scale = 20 if args.quick else max(1, args.scale)
    print(f"# bench_states: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, kernel threads={num_threads()}, numpy {np.__version__}, "
          f"median of {args.repeats}; ratios are to the read time (arr.sum())")
    rng = np.random.default_rng(0)
    rows = []
    if not args.labels_only:
        print("| input (float32)              | states         |   distinct |     read    "
              "|        pack           |      pack+count       |   batched pack+count  "
              "|     numpy packbits+unique |")
        print("|" + "---|" * 8)
    for label, shape, axis in CASES:
        if args.only and args.only not in label:
            continue
        for diverse in (True, False):
            rows.append(run_case(label, shape, axis, diverse, args, rng))
            if not args.labels_only:
                print_row(rows[-1])
    if args.no_labels:
        return
    print(f"\n# counting with {LABELS} labels vs without (interleaved), and the read-time "
          "statistics vs the counter read (efficiency() after the last add)")
    print("| input (float32)              | states         "
          "| batched: without, with labels, ratio   | one add: without, with labels, ratio   "
          "| counter read | coverage   | ceiling    | firing     | mutual inf "
          "| statistics / read |")
    print("|" + "---|" * 10)
    for row in rows:
        print_labels_row(row["case"], row["kind"], row["labels"])


if __name__ == "__main__":
    main()
