"""Exact merge of state counts across processes (DDP) with torch.distributed.

Each rank counts its own states.  At the end of a validation epoch every
rank's distinct states and counts are gathered (padded to equal shapes, since
ranks may hold different numbers of distinct states, or none) and every rank
rebuilds the same, global counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist

from ..core.counter import StateCounter

__all__ = ["merge_across_ranks"]


def _device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor)
    return parts


def merge_across_ranks(counters: Sequence[StateCounter]) -> None:
    """Replace each counter's counts by the exact sum over all ranks.

    Every rank must call this with its counters in the same order.  Does
    nothing when torch.distributed is not initialised or has one process.
    """
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return
    device = _device()
    for counter in counters:
        items = counter.items() if counter.state_count else None
        distinct = 0 if items is None else len(items[1])
        width = -1 if counter.num_neurons is None else counter.num_neurons
        meta = torch.tensor([distinct, width], dtype=torch.int64, device=device)
        metas = [m.tolist() for m in _gather(meta)]
        widths = {w for _, w in metas if w >= 0}
        if not widths:
            continue
        if len(widths) > 1:
            raise ValueError(f"{counter.name}: ranks saw states of different widths {widths}")
        width = widths.pop()
        rows = max(n for n, _ in metas)
        keys = torch.zeros((rows, (width + 7) // 8), dtype=torch.uint8, device=device)
        counts = torch.zeros(rows, dtype=torch.int64, device=device)
        if items is not None:
            keys[:distinct] = torch.from_numpy(items[0])
            counts[:distinct] = torch.from_numpy(items[1].astype(np.int64))
        all_keys, all_counts = _gather(keys), _gather(counts)
        counter.reset_counts()  # raw states stored on this rank stay
        for (n, _), rank_keys, rank_counts in zip(metas, all_keys, all_counts):
            if n:
                counter.add_counts(rank_keys[:n].cpu().numpy(), rank_counts[:n].cpu().numpy(),
                                   width)
