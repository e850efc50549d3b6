"""Validate SmallConvNet with the StateSpaceCallback, on one process or under DDP.

Run as a script by tests/test_ddp.py: ``python ddp_script.py DEVICES OUT_JSON``.
Under DDP each rank validates its own, uneven, slice of the data.
"""

import json
import os
import sys

import lightning as L
from lightning_helpers import SmallConvNet, small_data
from torch.utils.data import DataLoader, Subset

from tensorstate_callbacks.lightning import StateSpaceCallback


def main(devices: int, out: str) -> None:
    data = small_data(60, seed=1)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    if devices == 1:
        subset = data
    else:  # uneven: rank 0 gets 37 samples (3 batches), rank 1 gets 23 (2 batches)
        subset = Subset(data, range(0, 37) if rank == 0 else range(37, 60))
    callback = StateSpaceCallback(attach_to=["Conv2d"], accuracy_key=None)
    trainer = L.Trainer(accelerator="cpu", devices=devices, callbacks=[callback],
                        strategy="ddp" if devices > 1 else "auto", logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False)
    trainer.validate(SmallConvNet(), DataLoader(subset, batch_size=16))
    if trainer.global_rank == 0:
        with open(out, "w") as handle:
            json.dump([report.to_dict() for report in callback.history], handle)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
