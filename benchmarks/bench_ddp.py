"""Time and memory of the DDP merge (``merge_across_ranks``) on 1, 2 and 4 gloo processes.

Each rank counts its share of ``--distinct`` distinct states of ``--width``
neurons (each seen twice on average), then merges.  Two layouts:

- even:   the distinct states spread evenly over the ranks;
- skewed: rank 0 holds them all, the other ranks 10 states each (the case
          where the former merge grew a rank holding 10 states by hundreds of MB).

For each it prints, per rank, the merge's wall time and how far the merge
raised the rank's resident memory above what it held before (peak RSS
sampled every millisecond from /proc/self/statm during the merge), for the
merge by key slices and, as a baseline, for the former merge (every rank
all-gathers every rank's table and rebuilds the whole: ``--baseline``).

Run: ``python benchmarks/bench_ddp.py [--distinct 500000] [--width 64] [--baseline]``.
Timings on a shared machine are noisy; compare rows of one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tensorstate_callbacks import StateCounter
from tensorstate_callbacks.integrations.distributed import merge_across_ranks

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakRSS:
    """The largest RSS seen while inside the ``with`` block (sampled every ms)."""

    def __enter__(self):
        self.start = self.peak = rss()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while self._running:
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def share(rank: int, world: int, layout: str, distinct: int, width: int) -> np.ndarray:
    """This rank's packed states: each distinct state twice on average."""
    rng = np.random.default_rng(1234)
    keys = rng.integers(0, 256, size=(distinct, (width + 7) // 8), dtype=np.uint8)
    if width % 8:
        keys[:, -1] &= (1 << (width % 8)) - 1
    if layout == "skewed":
        mine = keys if rank == 0 else keys[:10]
    else:
        mine = keys[rank::world]
    return np.concatenate([mine, mine[: len(mine) // 2], mine[len(mine) // 2:]])


def gather_everything(counter: StateCounter, width: int) -> None:
    """The former merge: every rank all-gathers every rank's table (padded to the
    largest) and recounts the whole."""
    keys, counts = counter.items()
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(counts)]))
    rows = max(int(size) for size in sizes)
    padded_keys = torch.zeros((rows, keys.shape[1]), dtype=torch.uint8)
    padded_counts = torch.zeros(rows, dtype=torch.int64)
    padded_keys[:len(keys)] = torch.from_numpy(keys)
    padded_counts[:len(counts)] = torch.from_numpy(counts.astype(np.int64))
    all_keys = [torch.empty_like(padded_keys) for _ in range(world)]
    all_counts = [torch.empty_like(padded_counts) for _ in range(world)]
    dist.all_gather(all_keys, padded_keys)
    dist.all_gather(all_counts, padded_counts)
    counter.reset_counts()
    for size, rank_keys, rank_counts in zip(sizes, all_keys, all_counts):
        n = int(size)
        counter.add_counts(rank_keys[:n].numpy(), rank_counts[:n].numpy(), width)
    counter.distinct_count  # noqa: B018 - every count in place


def worker(rank, world, port, layout, distinct, width, method, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        counter = StateCounter("bench", threads=1)
        counter.add_packed(share(rank, world, layout, distinct, width), width)
        counter.distinct_count  # noqa: B018 - counted before the clock starts
        dist.barrier()
        with PeakRSS() as memory:
            start = time.perf_counter()
            if method == "slices":
                merged = merge_across_ranks({"bench": counter})["bench"]
                merged.entropy()
            else:
                gather_everything(counter, width)
                counter.entropy()
            seconds = time.perf_counter() - start
        queue.put((rank, seconds, memory.growth, memory.start))
    finally:
        dist.destroy_process_group()


def run(world, layout, distinct, width, method, port):
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=worker, args=(rank, world, port, layout, distinct,
                                                      width, method, queue))
                 for rank in range(world)]
    for process in processes:
        process.start()
    results = sorted(queue.get(timeout=600) for _ in processes)
    for process in processes:
        process.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--distinct", type=int, default=500_000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--baseline", action="store_true",
                        help="also time the former merge (every rank gathers every table)")
    args = parser.parse_args()
    print(f"{args.distinct:,} distinct states of {args.width} neurons, each seen twice on "
          f"average; gloo on {platform.node()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'layout':<8} {'method':<8} {'world':>5} {'rank':>4} {'merge s':>9} "
          f"{'RSS growth MB':>14} {'RSS before MB':>14}")
    methods = ["slices", "gather"] if args.baseline else ["slices"]
    port = 29_500 + os.getpid() % 1000
    for layout in ("even", "skewed"):
        for world in args.worlds:
            if layout == "skewed" and world == 1:
                continue
            for method in methods:
                port += 1
                for rank, seconds, growth, before in run(world, layout, args.distinct,
                                                         args.width, method, port):
                    print(f"{layout:<8} {method:<8} {world:>5} {rank:>4} {seconds:>9.3f} "
                          f"{growth / 1e6:>14.1f} {before / 1e6:>14.1f}")


if __name__ == "__main__":
    main()
