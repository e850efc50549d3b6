"""Validate SmallConvNet twice with the StateSpaceCallback (labels, drift), on one
process or under DDP.

Run as a script by tests/test_integrations_distributed.py:
``python ddp_script.py DEVICES OUT_DIR [fail]``.  Under DDP each rank validates
its own, uneven, slice of the data; the second validation sees other samples
(drift).  Every rank writes its history and its callback_metrics to
``OUT_DIR/rank<r>.json``.  With ``fail``, rank 1 raises in its first
validation step.
"""

import json
import os
import sys
from pathlib import Path

import lightning as L
from lightning_helpers import SmallConvNet, small_data
from torch.utils.data import ConcatDataset, DataLoader, Subset

from tensorstate_callbacks.lightning import StateSpaceCallback


class FailingOnRankOne(SmallConvNet):
    def validation_step(self, batch, batch_idx):
        if self.global_rank == 1:
            raise RuntimeError("rank 1 failed in validation_step")
        return super().validation_step(batch, batch_idx)


def main(devices: int, out: str, fail: bool = False) -> None:
    first = small_data(60, seed=1)
    second = ConcatDataset([Subset(first, range(30)), small_data(30, seed=2)])
    rank = int(os.environ.get("LOCAL_RANK", 0))
    callback = StateSpaceCallback(attach_to=["Conv2d"], accuracy_key=None, labels="auto",
                                  drift=True)
    trainer = L.Trainer(accelerator="cpu", devices=devices, callbacks=[callback],
                        strategy="ddp" if devices > 1 else "auto", logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False)
    model = FailingOnRankOne(log_accuracy=False) if fail else SmallConvNet()
    for data in (first, second):
        if devices > 1:  # uneven: rank 0 gets 37 samples (3 batches), rank 1 gets 23 (2)
            data = Subset(data, range(0, 37) if rank == 0 else range(37, 60))
        trainer.validate(model, DataLoader(data, batch_size=16))
    metrics = {tag: float(value) for tag, value in trainer.callback_metrics.items()
               if tag.startswith("state_space")}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{trainer.global_rank}.json").write_text(json.dumps(
        {"history": [report.to_dict() for report in callback.history],
         "callback_metrics": metrics}))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3:] == ["fail"])
