"""A worker for torch.multiprocessing.spawn: count one share of the states, merge
across the ranks with ``merge_across_ranks`` (gloo, CPU), pickle the counter.

Kept apart from the test module so that the spawned processes import only
torch and the package (not Keras).
"""

import os
import pickle
from pathlib import Path

import torch.distributed as dist

from tensorstate_callbacks import StateCounter
from tensorstate_callbacks.integrations.distributed import merge_across_ranks


def count_and_merge(rank, port, shares, neuron_axis, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=len(shares))
    try:
        counter = StateCounter(f"rank{rank}")
        counter.add(shares[rank], neuron_axis)
        merge_across_ranks([counter])
        (Path(out_dir) / f"rank{rank}.pkl").write_bytes(pickle.dumps(counter))
    finally:
        dist.destroy_process_group()


def load(out_dir, rank):
    return pickle.loads((Path(out_dir) / f"rank{rank}.pkl").read_bytes())
