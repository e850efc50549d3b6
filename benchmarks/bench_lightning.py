"""A Lightning validation epoch of LeNet-5 over 10,000 MNIST images on the CPU,
with the StateSpaceCallback on conv_1/conv_2/conv_3 and without it.

    python benchmarks/bench_lightning.py [--repeats 7] [--images 10000] [--profile]
                                         [--training]

Runs alternate (without/with, then with/without, ...) and medians are compared,
so both see the same machine noise (the fastest runs are the least disturbed
ones, so their ratio is shown too).  Wall time and process CPU time (all
threads) are both reported.  Then, in runs of their own (reading three clocks
around every hook costs about a tenth of the hooks' time, which the ratio
must not include), the CPU time spent inside the callback itself
(its probes' hooks and its validation-epoch end), which busy neighbours on a
shared machine disturb least (it includes torch's OpenMP workers spinning
meanwhile; OMP_WAIT_POLICY=PASSIVE leaves only our own work), the CPU time of
the training thread inside the callback (the probes run there, one thread
each; the epoch end's reads also use the kernels' thread pool, not counted
here), and the wall time spent inside the callback (hooks and epoch end):
over the wall time without the callback, it gives the ratio the work we add
accounts for.  The median of each repeat's with/without ratio is
shown too: it is the steadiest on a machine whose load drifts.  Target: ratio
<= 1.10.  ``--profile`` adds a cProfile of one run with the callback,
restricted to this package's functions.  TENSORSTATE_NUM_THREADS=1 runs the
compiled kernels on the calling thread only.

``--training`` adds the cost of the training-time view: one training epoch
(``--images`` training images, batch 200, no validation) without the
callback, with a validation-only callback (it should cost nothing while
training), and with ``train_every_n_steps=10, train_window=2`` (a fifth of
the batches counted), interleaved the same way.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from tensorstate_callbacks.datasets import load_mnist
from tensorstate_callbacks.lenet5_torch import LitLeNet5
from tensorstate_callbacks.lightning import StateSpaceCallback


def validate(model, loader, callbacks) -> tuple[float, float]:
    """(wall s, CPU s) of one ``trainer.validate`` run."""
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=callbacks,
                        enable_progress_bar=False, enable_model_summary=False)
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.validate(model, loader, verbose=False)
    return time.perf_counter() - wall, time.process_time() - cpu


class TimedCallback(StateSpaceCallback):
    """The callback, adding up the seconds spent in its hooks and epoch end."""

    def __init__(self):
        super().__init__(attach_to=["Conv2d"], accuracy_key="val_acc")
        self.cpu_seconds = 0.0
        self.thread_seconds = 0.0
        self.wall_seconds = 0.0

    def _timed(self, function):
        def run(*args):
            start, own, wall = time.process_time(), time.thread_time(), time.perf_counter()
            function(*args)
            self.cpu_seconds += time.process_time() - start
            self.thread_seconds += time.thread_time() - own
            self.wall_seconds += time.perf_counter() - wall
        return run

    def setup(self, trainer, pl_module, stage):
        super().setup(trainer, pl_module, stage)
        for probe in self._probes:
            probe.capture = self._timed(probe.capture)

    def on_validation_epoch_end(self, trainer, pl_module):
        self._timed(super().on_validation_epoch_end)(trainer, pl_module)


def train(model, loader, callbacks) -> tuple[float, float]:
    """(wall s, CPU s) of one training epoch, without validation."""
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=callbacks,
                        max_epochs=1, limit_val_batches=0, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.fit(model, loader)
    return time.perf_counter() - wall, time.process_time() - cpu


def training_view(loader, repeats: int) -> None:
    """The table of the training-time view's cost."""
    configurations = {
        "without callback": lambda: [],
        "validation-only callback": lambda: [StateSpaceCallback(attach_to=["Conv2d"])],
        "train_every_n_steps=10, train_window=2": lambda: [StateSpaceCallback(
            attach_to=["Conv2d"], train_every_n_steps=10, train_window=2)],
    }
    runs = {label: [] for label in configurations}
    train(LitLeNet5(), loader, [])  # warm-up
    for repeat in range(repeats):
        labels = list(configurations)
        labels = labels[repeat % len(labels):] + labels[:repeat % len(labels)]
        for label in labels:
            torch.manual_seed(0)
            runs[label].append(train(LitLeNet5(), loader, configurations[label]()))
    print("\nTraining-time view: one training epoch, batch 200\n"
          "| run | median wall s | median CPU s | fastest wall s | wall runs (s) |\n"
          "|---|---|---|---|---|")
    base = row("without callback", runs["without callback"])
    for label in list(configurations)[1:]:
        measured = row(label, runs[label])
        print(f"| ratio to without | {measured[0] / base[0]:.3f} | {measured[1] / base[1]:.3f} "
              f"| {measured[2] / base[2]:.3f} | |")


def row(label: str, runs: list[tuple[float, float]]) -> tuple[float, float, float]:
    wall = statistics.median(run[0] for run in runs)
    cpu = statistics.median(run[1] for run in runs)
    fastest = min(run[0] for run in runs)
    print(f"| {label} | {wall:.3f} | {cpu:.3f} | {fastest:.3f} | "
          f"{', '.join(f'{run[0]:.2f}' for run in runs)} |")
    return wall, cpu, fastest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--training", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    _, (x_valid, y_valid) = load_mnist(limit=args.images)
    loader = DataLoader(TensorDataset(torch.from_numpy(x_valid), torch.from_numpy(y_valid)),
                        batch_size=200)
    model = LitLeNet5()
    validate(model, loader, [])  # warm-ups
    validate(model, loader, [TimedCallback()])
    plain, probed, inside, own, spent = [], [], [], [], []
    for repeat in range(args.repeats):
        order = (False, True) if repeat % 2 == 0 else (True, False)
        for with_callback in order:
            if with_callback:
                callback = StateSpaceCallback(attach_to=["Conv2d"], accuracy_key="val_acc")
                probed.append(validate(model, loader, [callback]))
            else:
                plain.append(validate(model, loader, []))
    for _ in range(max(1, args.repeats // 2)):  # apart: reading clocks in every hook costs
        timed = TimedCallback()
        validate(model, loader, [timed])
        inside.append(timed.cpu_seconds)
        own.append(timed.thread_seconds)
        spent.append(timed.wall_seconds)
    counts = [layer.states for layer in callback.history[-1].layers]
    print(f"LeNet-5 validation epoch, {args.images:,} images, batch 200, torch threads "
          f"{torch.get_num_threads()}, states per layer {counts}")
    print("| run | median wall s | median CPU s | fastest wall s | wall runs (s) |\n"
          "|---|---|---|---|---|")
    base = row("without callback", plain)
    measured = row("with callback", probed)
    paired = statistics.median(w[0] / p[0] for w, p in zip(probed, plain))
    print(f"| ratio (target <= 1.10) | {measured[0] / base[0]:.3f} | "
          f"{measured[1] / base[1]:.3f} | {measured[2] / base[2]:.3f} | "
          f"median of each repeat's ratio: {paired:.3f} |")
    everything = statistics.median(inside)
    print(f"| CPU inside the callback (all threads) | | {everything:.3f} | | "
          f"ratio from it: {1 + everything / base[1]:.3f} |")
    mine = statistics.median(own)
    print(f"| CPU of the training thread in the callback | {mine:.3f} | | | "
          f"ratio from it: {1 + mine / base[0]:.3f} (wall) |")
    waited = statistics.median(spent)
    print(f"| wall time inside the callback | {waited:.3f} | | | "
          f"ratio from it: {1 + waited / base[0]:.3f} |")

    if args.training:
        (x_train, y_train), _ = load_mnist(limit=args.images)
        training_view(DataLoader(TensorDataset(torch.from_numpy(x_train), torch.from_numpy(
            y_train)), batch_size=200), args.repeats)

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        validate(model, loader, [TimedCallback()])
        profiler.disable()
        stats = pstats.Stats(profiler).sort_stats("tottime")
        print("\nProfile of one run with the callback (this package's functions, by own time):")
        stats.print_stats("tensorstate_callbacks", 12)


if __name__ == "__main__":
    main()
