"""One shared thread pool for the compiled kernels, which release the GIL."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, wait
from functools import cache


def num_threads() -> int:
    """Threads the kernels use: ``TENSORSTATE_NUM_THREADS`` or the usable cores.

    >>> num_threads() >= 1
    True
    """
    configured = os.environ.get("TENSORSTATE_NUM_THREADS")
    if configured:
        return max(1, int(configured))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tensorstate")


def run_parallel(tasks: list) -> None:
    """Run zero-argument callables, on the pool when there is more than one.

    >>> results = []
    >>> run_parallel([lambda: results.append(1), lambda: results.append(2)])
    >>> sorted(results)
    [1, 2]
    """
    if len(tasks) <= 1:
        for task in tasks:
            task()
        return
    futures = [_pool(num_threads()).submit(task) for task in tasks]
    # All of them, even when one fails or the wait is interrupted (Ctrl-C):
    # none may still write into its output after we return.
    try:
        wait(futures)
    except BaseException:
        for future in futures:
            future.cancel()
        wait(futures)
        raise
    for future in futures:
        future.result()
