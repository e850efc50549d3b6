"""A probe's epochs on wide layers: its counter's first epoch, a later one, and the read.

    python benchmarks/bench_epochs.py [--repeats 7] [--baseline DIR] [--rounds 3]

For each layer below, a validation epoch as a probe sees it: the batches'
activations (float32, random, so nearly every state is distinct, as in the
first stages of a ResNet) added one batch at a time on one thread, then the
epoch-end read (``efficiency()`` and ``firing_rates()``, what the callbacks
report); "15 probes" counts the same batches into 15 counters alive at once,
as the 15 probes of a ResNet-18's first stage.  Three timings, each the
median of ``--repeats``:

- first epoch:  into new counters (their tables grow from nothing);
- later epoch:  into the same counters after ``reset_states()`` (as probes do
                every epoch: the tables of the last epoch are kept, cleared);
- read:         the epoch-end read alone, of the later epoch.

``--baseline DIR`` also runs another build of the package (a directory that
holds a built ``tensorstate_callbacks``, e.g. ``git archive`` of an earlier
commit with ``python setup.py build_ext --inplace`` run in it): the two
builds run in separate processes, alternating, ``--rounds`` times each, and
the table shows the median of each build's rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

LAYERS = [  # (what, shape of one batch, neuron axis, batches, probes)
    ("ResNet stage 1, 100x64x32x32", (100, 64, 32, 32), 1, 5, 1),
    ("ResNet stage 1, 15 probes", (100, 64, 32, 32), 1, 5, 15),
    ("ResNet stage 2, 100x128x16x16", (100, 128, 16, 16), 1, 5, 1),
    ("ResNet stage 3, 100x256x8x8", (100, 256, 8, 8), 1, 5, 1),
    ("Transformer FF, 32x128x1024", (32, 128, 1024), 2, 8, 1),
]


def epoch(counters, batches, axis) -> tuple[float, float]:
    """(seconds adding the batches to every counter, seconds of their epoch-end reads)."""
    start = time.perf_counter()
    for batch in batches:
        for counter in counters:
            counter.add(batch, axis, threads=1)
    added = time.perf_counter()
    for counter in counters:
        counter.efficiency()
        counter.firing_rates()
    return added - start, time.perf_counter() - added


def measure(repeats: int) -> dict:
    """Median seconds of each timing for each layer, in this process."""
    from tensorstate_callbacks import StateCounter

    rng = np.random.default_rng(0)
    results = {}
    for what, shape, axis, count, probes in LAYERS:
        batches = [rng.standard_normal(shape, dtype=np.float32) for _ in range(count)]
        later = [StateCounter(what) for _ in range(probes)]
        epoch(later, batches, axis)
        first_runs, later_runs, reads = [], [], []
        for _ in range(repeats):
            first_runs.append(sum(epoch([StateCounter(what) for _ in range(probes)], batches,
                                        axis)))
            for counter in later:
                counter.reset_states()
            added, read = epoch(later, batches, axis)
            later_runs.append(added + read)
            reads.append(read)
        results[what] = [statistics.median(runs) for runs in (first_runs, later_runs, reads)]
    return results


def run_build(path: str | None, repeats: int) -> dict:
    """:func:`measure` in a fresh process, importing the package from ``path``
    (None: this checkout's)."""
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.path.abspath(path)
    out = subprocess.run([sys.executable, __file__, "--worker", "--repeats", str(repeats)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline", help="a directory holding another build of the package")
    parser.add_argument("--rounds", type=int, default=3, help="processes per build")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.repeats)))
        return
    builds = {"this build": None}
    if args.baseline:
        builds = {"baseline": args.baseline, **builds}
    rounds = {name: [] for name in builds}
    for _ in range(args.rounds):
        for name, path in builds.items():
            rounds[name].append(run_build(path, args.repeats))
    print(f"\n{args.rounds} processes per build, {args.repeats} epochs each (medians, ms)")
    print("| layer | build | first epoch | later epoch | read of a later epoch |\n"
          "|---|---|---|---|---|")
    for what, *_ in LAYERS:
        for name in builds:
            cells = [statistics.median(run[what][i] for run in rounds[name]) * 1e3
                     for i in range(3)]
            print(f"| {what} | {name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
