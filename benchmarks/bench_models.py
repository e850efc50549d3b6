"""Lightning validation of models researchers train, with and without the callback.

    python benchmarks/bench_models.py [--repeats 5] [--images 500] [--sequences 256]
                                      [--epochs 3] [--profile]

* A CIFAR-shaped ResNet-18 (BasicBlocks 64-128-256-512, 1x1 projection
  shortcuts) over 500 random 32x32 images, batch 100: without the callback,
  with probes on every Conv2d, and on every Conv2d, BatchNorm2d and ReLU call
  site (each block's ReLU module runs twice: two probes).
* A 4-layer ``nn.TransformerEncoder`` (d=256, 4 heads, feed-forward 1024,
  batch first) over 256 random sequences of 128 tokens, batch 32: without the
  callback, with forward hooks that do nothing on every Linear during
  validation, and with probes on every Linear (the attention's ``out_proj``
  never runs as a module in PyTorch's attention, so its probes stay empty).
  Without hooks PyTorch runs each encoder layer as one fused kernel in eval
  mode; any forward hook on a submodule turns that off (PyTorch's rule), and
  a layer's activations cannot be read without one: the do-nothing hooks show
  what that alone costs, apart from the callback's own work.

Each table is followed by the same configurations inside ``fit`` (``--epochs``
epochs of one training batch each): the validations after the first, which
is what each epoch of training costs once the callback's counters have
measured one epoch (their tables are kept, cleared, from epoch to epoch).

Runs alternate between configurations (the order rotates every repeat), so
every configuration sees the same machine noise; the table shows median wall
times, the ratio of medians and the median of each repeat's ratio, and the
wall time spent inside the callback (its probes' hooks and its epoch end)
over the median wall time without it: the ratio the work it adds accounts
for, the steadiest figure on a shared machine whose load drifts.  Targets
(issue "Right numbers on the models researchers train"): <= 1.10 for the conv
probes and the Transformer, <= 1.25 for the 50-odd probes.  ``--profile`` adds
a cProfile of one probed ResNet run, this package's functions only.
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
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tensorstate_callbacks.cli.demos.resnet_torch import ResNet
from tensorstate_callbacks.lightning import StateSpaceCallback
from tensorstate_callbacks.torch import StateCaptureHook


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
        self.head = nn.Linear(256, 10)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


class Classifier(L.LightningModule):
    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x):
        return self.network(x)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


class ValidationClock(L.Callback):
    """Wall seconds of each validation run inside ``fit`` (its epoch start and
    end hooks included, every callback's)."""

    def __init__(self):
        self.seconds = []

    def on_validation_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        self.seconds.append(time.perf_counter() - self._start)


def validate(model, loader, callbacks) -> float:
    """Wall seconds of one ``trainer.validate`` run."""
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=callbacks,
                        enable_progress_bar=False, enable_model_summary=False)
    start = time.perf_counter()
    trainer.validate(model, loader, verbose=False)
    return time.perf_counter() - start


def later_epochs(model, loader, callbacks, epochs: int) -> float:
    """Median wall seconds of the validations after the first in a ``fit`` of
    ``epochs`` epochs (one training batch each): what every epoch of training
    costs once the callback's counters have measured one epoch."""
    clock = ValidationClock()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, max_epochs=epochs,
                        limit_train_batches=1, num_sanity_val_steps=0,
                        callbacks=[*callbacks, clock], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, loader, loader)
    model.eval()
    return statistics.median(clock.seconds[1:])


def loader(shape: tuple[int, ...], count: int, batch: int) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(count, *shape, generator=generator)
    y = torch.randint(0, 10, (count,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


class TimedCallback(StateSpaceCallback):
    """The callback, adding up the wall seconds spent in its probes' captures
    (every probe's, call sites made during a pass included) and its
    validation epoch end.  One runs at a time."""

    spent = [0.0]  # the running callback's seconds, added to by every capture

    def __init__(self, attach_to: list[str]):
        super().__init__(attach_to=attach_to, accuracy_key="val_acc", log_histograms=False,
                         log_images=False, log_hparams=False)
        TimedCallback.spent[0] = 0.0

    @staticmethod
    def timed(function):
        def run(*args):
            start = time.perf_counter()
            try:
                return function(*args)
            finally:
                TimedCallback.spent[0] += time.perf_counter() - start
        return run

    @property
    def inside(self) -> float:
        return TimedCallback.spent[0]

    def on_validation_epoch_end(self, trainer, pl_module):
        self.timed(super().on_validation_epoch_end)(trainer, pl_module)


StateCaptureHook.capture = TimedCallback.timed(StateCaptureHook.capture)


class EmptyHooks(L.Callback):
    """Forward hooks that do nothing on every module of a class, during validation."""

    def __init__(self, class_name: str):
        self.class_name = class_name
        self.handles = []

    def on_validation_epoch_start(self, trainer, pl_module):
        self.handles = [module.register_forward_hook(lambda *_: None)
                        for module in pl_module.modules()
                        if type(module).__name__ == self.class_name]

    def on_validation_epoch_end(self, trainer, pl_module):
        for handle in self.handles:
            handle.remove()


def callbacks_for(configuration) -> list[L.Callback]:
    """None: no callback; a list of class names: the (timed) callback on them;
    a callback: itself."""
    if configuration is None:
        return []
    if isinstance(configuration, list):
        return [TimedCallback(configuration)]
    return [configuration]


def measure(name: str, model, data, configurations: dict, repeats: int) -> None:
    """Alternate the configurations (see callbacks_for) and print one table."""
    for configuration in configurations.values():  # warm-ups
        validate(model, data, callbacks_for(configuration))
    times = {label: [] for label in configurations}
    inside = {label: [] for label in configurations}
    probes = {}
    labels = list(configurations)
    for repeat in range(repeats):
        for label in labels[repeat % len(labels):] + labels[:repeat % len(labels)]:
            callbacks = callbacks_for(configurations[label])
            times[label].append(validate(model, data, callbacks))
            if callbacks and isinstance(callbacks[0], TimedCallback):
                inside[label].append(callbacks[0].inside)
                probes[label] = len(callbacks[0].history[-1].layers) + len(
                    callbacks[0].history[-1].skipped_layers)
    base_label = labels[0]
    base = statistics.median(times[base_label])
    print(f"\n{name}, torch threads {torch.get_num_threads()}, {repeats} repeats")
    print("| configuration | probes | median wall s | ratio of medians | median of ratios |"
          " s inside the callback | ratio from it | runs (s) |\n|---|---|---|---|---|---|---|---|")
    for label in labels:
        wall = statistics.median(times[label])
        paired = statistics.median(t / b for t, b in zip(times[label], times[base_label]))
        spent = statistics.median(inside[label]) if inside[label] else 0.0
        print(f"| {label} | {probes.get(label, 0)} | {wall:.3f} | {wall / base:.3f} | "
              f"{paired:.3f} | {spent:.3f} | {1 + spent / base:.3f} | "
              f"{', '.join(f'{t:.2f}' for t in times[label])} |")


def measure_later_epochs(model, data, configurations: dict, repeats: int, epochs: int) -> None:
    """Alternate the configurations as :func:`measure` does, each a ``fit`` of
    ``epochs`` epochs timed by :func:`later_epochs`, and print one table."""
    times = {label: [] for label in configurations}
    labels = list(configurations)
    for repeat in range(repeats):
        for label in labels[repeat % len(labels):] + labels[:repeat % len(labels)]:
            callbacks = callbacks_for(configurations[label])
            times[label].append(later_epochs(model, data, callbacks, epochs))
    base = statistics.median(times[labels[0]])
    print(f"\nthe same inside fit: validations 2 to {epochs} of each run, {repeats} repeats")
    print("| configuration | median s of a later validation | ratio of medians |"
          " median of ratios | runs (s) |\n|---|---|---|---|---|")
    for label in labels:
        wall = statistics.median(times[label])
        paired = statistics.median(t / b for t, b in zip(times[label], times[labels[0]]))
        print(f"| {label} | {wall:.3f} | {wall / base:.3f} | {paired:.3f} | "
              f"{', '.join(f'{t:.2f}' for t in times[label])} |")


def callback_for(attach_to: list[str]) -> StateSpaceCallback:
    return StateSpaceCallback(attach_to=attach_to, accuracy_key="val_acc", log_histograms=False,
                              log_images=False, log_hparams=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=500, help="ResNet images (batch 100)")
    parser.add_argument("--sequences", type=int, default=256,
                        help="Transformer sequences (batch 32)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs of the fit whose later validations are timed (< 2: none)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    resnet = Classifier(ResNet()).eval()
    images = loader((3, 32, 32), args.images, 100)
    models = [
        (f"CIFAR-shaped ResNet-18, {args.images} images, batch 100", resnet, images, {
            "without callback": None,
            "Conv2d": ["Conv2d"],
            "Conv2d + BatchNorm2d + ReLU": ["Conv2d", "BatchNorm2d", "ReLU"]}),
        (f"TransformerEncoder, 4 layers, d=256, {args.sequences} sequences of 128, batch 32",
         Classifier(Encoder()).eval(), loader((128, 256), args.sequences, 32), {
             "without callback": None,
             "forward hooks doing nothing": EmptyHooks("Linear"),
             "Linear": ["Linear"]}),
    ]
    for name, model, data, configurations in models:
        measure(name, model, data, configurations, args.repeats)
        if args.epochs >= 2:
            measure_later_epochs(model, data, configurations, args.repeats, args.epochs)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        validate(resnet, images, [callback_for(["Conv2d", "BatchNorm2d", "ReLU"])])
        profiler.disable()
        print("\nProfile of one ResNet run with 50-odd probes (this package, by own time):")
        pstats.Stats(profiler).sort_stats("tottime").print_stats("tensorstate_callbacks", 15)


if __name__ == "__main__":
    main()
