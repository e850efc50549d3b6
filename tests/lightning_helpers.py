"""Small LightningModules and event-file readers shared by the Lightning tests."""

import lightning as L
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class SmallConvNet(L.LightningModule):
    """Two convolutions and a head; logs val_acc (synced across ranks)."""

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
