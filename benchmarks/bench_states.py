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

Each time is the median of ``--repeats`` runs.  ``--quick`` divides the row
counts by 20.  Run: ``python benchmarks/bench_states.py [--quick]``.
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
    if args.quick:
        shape = (max(1, shape[0] // 20),) + shape[1:]
    x = make_input(shape, neuron_axis, diverse, rng)
    row = measure(x, neuron_axis, args)
    del x  # free the input before the next size
    gc.collect()
    row["case"] = label + (" /20" if args.quick else "")
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
    parser.add_argument("--repeats", type=int, default=5, help="runs per time (median)")
    parser.add_argument("--no-numpy", action="store_true", help="skip the NumPy reference")
    parser.add_argument("--only", help="run only cases whose label contains this text")
    parser.add_argument("--batch-rows", type=int, default=65_536,
                        help="states per batch of the batched column")
    args = parser.parse_args()
    print(f"# bench_states: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, kernel threads={num_threads()}, numpy {np.__version__}, "
          f"median of {args.repeats}; ratios are to the read time (arr.sum())")
    print("| input (float32)              | states         |   distinct |     read    "
          "|        pack           |      pack+count       |   batched pack+count  "
          "|     numpy packbits+unique |")
    print("|" + "---|" * 8)
    rng = np.random.default_rng(0)
    for label, shape, axis in CASES:
        if args.only and args.only not in label:
            continue
        for diverse in (True, False):
            print_row(run_case(label, shape, axis, diverse, args, rng))


if __name__ == "__main__":
    main()
