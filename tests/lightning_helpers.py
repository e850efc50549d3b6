"""Small LightningModules, an independent reference and event-file readers shared
by the Lightning tests."""

import copy
import math

import lightning as L
import numpy as np
import torch
from reference import Expected
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class ConvNetSteps:
    """Two convolutions and a head; logs val_acc (synced across ranks).  Mixed
    into a LightningModule of either package (``lightning`` or ``pytorch_lightning``)."""

    def __init__(self, lr=0.05, log_accuracy=True):
        super().__init__()
        torch.manual_seed(0)
        self.conv_a = nn.Conv2d(1, 6, 3)
        self.conv_b = nn.Conv2d(6, 10, 3)
        self.head = nn.Linear(10, 3)
        self.lr = lr
        self.log_accuracy = log_accuracy

    def forward(self, x):
        x = torch.relu(self.conv_a(x))
        x = torch.relu(self.conv_b(x))
        return self.head(x.mean((2, 3)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        accuracy = (self(x).argmax(1) == y).float().mean()
        if self.log_accuracy:
            self.log("val_acc", accuracy, sync_dist=True, reduce_fx="mean")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class SmallConvNet(ConvNetSteps, L.LightningModule):
    """The test network as a ``lightning`` module."""


class WeightRecorder(L.Callback):
    """Keeps the weights each validation epoch ran with (sanity check excluded)."""

    def __init__(self):
        self.snapshots = []

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.snapshots.append(copy.deepcopy(pl_module.state_dict()))


def save_weights(state_dicts, path):
    """Save a list of state dicts as NumPy arrays (``np.savez``); :func:`load_weights`
    reads them back.  Not torch.save/torch.load: in the full suite, torch's
    weights-only unpickler in a pytest worker has failed to read the storages a
    training script saved (an earlier test in the worker is the suspect)."""
    np.savez(path, **{f"{index}/{name}": value.detach().cpu().numpy()
                      for index, state_dict in enumerate(state_dicts)
                      for name, value in state_dict.items()})


def load_weights(path):
    """The list of state dicts :func:`save_weights` saved (torch tensors)."""
    state_dicts = {}
    with np.load(path) as saved:
        for key in saved.files:
            index, name = key.split("/", 1)
            state_dicts.setdefault(int(index), {})[name] = torch.from_numpy(saved[key])
    return [state_dicts[index] for index in sorted(state_dicts)]


def independent_metrics(state_dict, valid_loader, beta=2.0):
    """Efficiencies, accuracy and aIQ of SmallConvNet's convolutions on
    ``valid_loader``, recomputed with plain forward hooks and NumPy."""
    model = SmallConvNet()
    model.load_state_dict(state_dict)
    model.eval()
    outputs = {"conv_a": [], "conv_b": []}
    for name in outputs:
        getattr(model, name).register_forward_hook(
            lambda m, i, o, name=name: outputs[name].append(o.detach().numpy()))
    correct = total = 0
    with torch.no_grad():
        for x, y in valid_loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    result = {}
    for name, chunks in outputs.items():
        expected = Expected.of_values(np.concatenate(chunks), neuron_axis=1)
        result[f"{name}_post_states"] = (expected.efficiency(), expected.distinct_count,
                                         expected.state_count)
    network = math.exp(np.mean([math.log(e) for e, _, _ in result.values()]))
    accuracy = correct / total
    return result, network, accuracy, (network * accuracy**beta) ** (1 / (beta + 1))


def small_data(n=96, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=generator)
    y = (x.mean((1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()
    return TensorDataset(x, y)


def loaders(batch_size=16, n=96):
    return (DataLoader(small_data(n, 0), batch_size=batch_size),
            DataLoader(small_data(n // 2, 1), batch_size=batch_size))


def read_scalars(log_dir):
    """{tag: [(step, value)]} of every scalar in the event files under log_dir."""
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0,
                                                                "histograms": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    scalars = {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
               for tag in tags["scalars"]}
    return scalars, tags
