"""A Lightning validation epoch of LeNet-5 over 10,000 MNIST images on the CPU,
with the StateSpaceCallback on conv_1/conv_2/conv_3 and without it.

    python benchmarks/bench_lightning.py [--repeats 5] [--images 10000]

Runs alternate (without, with, without, ...) and the medians are compared, so
both see the same machine noise.  Target: ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from tensorstate_callbacks.datasets import load_mnist
from tensorstate_callbacks.lenet5_torch import LitLeNet5
from tensorstate_callbacks.lightning import StateSpaceCallback


def validation_seconds(model, loader, callbacks) -> float:
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=callbacks,
                        enable_progress_bar=False, enable_model_summary=False)
    start = time.perf_counter()
    trainer.validate(model, loader, verbose=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    _, (x_valid, y_valid) = load_mnist(limit=args.images)
    loader = DataLoader(TensorDataset(torch.from_numpy(x_valid), torch.from_numpy(y_valid)),
                        batch_size=200)
    model = LitLeNet5()
    plain, probed = [], []
    validation_seconds(model, loader, [])  # warm-up
    for _ in range(args.repeats):
        plain.append(validation_seconds(model, loader, []))
        callback = StateSpaceCallback(attach_to=["Conv2d"], accuracy_key="val_acc")
        probed.append(validation_seconds(model, loader, [callback]))
    counts = [layer.states for layer in callback.history[-1].layers]
    base, with_callback = statistics.median(plain), statistics.median(probed)
    print(f"LeNet-5 validation epoch, {args.images:,} images, CPU threads: "
          f"{torch.get_num_threads()}, states per layer: {counts}")
    print(f"| run                | median s | runs (s) |\n|---|---|---|")
    print(f"| without callback   | {base:.3f} | {', '.join(f'{t:.3f}' for t in plain)} |")
    print(f"| with callback      | {with_callback:.3f} | "
          f"{', '.join(f'{t:.3f}' for t in probed)} |")
    print(f"| ratio (target <= 1.10) | {with_callback / base:.3f} | |")


if __name__ == "__main__":
    main()
