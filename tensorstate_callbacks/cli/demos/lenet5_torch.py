"""The PyTorch LeNet-5 of the TensorState tutorial, and a LightningModule around it.

Used by the examples, the ``demo`` command, the benchmarks and the tests.
Also importable as ``tensorstate_callbacks.lenet5_torch``.

Example:
    >>> [name for name, _ in LeNet5().named_children() if name.startswith("conv")]
    ['conv_1', 'conv_2', 'conv_3']
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

__all__ = ["LeNet5", "LitLeNet5", "mnist_dataloaders"]


class LeNet5(nn.Module):
    """LeNet-5 exactly as in the TensorState PyTorch tutorial (ELU, batch norm).

    Takes ``float32[n, 784]`` (or ``[n, 1, 28, 28]``) images, returns 10 logits.

    Example:
        >>> LeNet5()(torch.zeros(2, 784)).shape
        torch.Size([2, 10])
    """

    def __init__(self):
        super().__init__()
        self.conv_1 = nn.Conv2d(1, 20, kernel_size=5, stride=1)
        self.elu_1 = nn.ELU()
        self.norm_1 = nn.BatchNorm2d(20, eps=0.00001, momentum=0.9)
        self.maxp_1 = nn.MaxPool2d(2, stride=2)
        self.conv_2 = nn.Conv2d(20, 50, kernel_size=5, stride=1)
        self.elu_2 = nn.ELU()
        self.norm_2 = nn.BatchNorm2d(50, eps=0.00001, momentum=0.9)
        self.maxp_2 = nn.MaxPool2d(2, stride=2)
        self.conv_3 = nn.Conv2d(50, 100, kernel_size=4, stride=1)
        self.elu_3 = nn.ELU()
        self.norm_3 = nn.BatchNorm2d(100, eps=0.00001, momentum=0.9)
        self.flatten = nn.Flatten()
        self.pred = nn.Linear(100, 10)
        for layer in (self.conv_1, self.conv_2, self.conv_3, self.pred):
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, data):
        x = data.view(-1, 1, 28, 28)
        x = self.conv_1(x)
        x = self.maxp_1(self.norm_1(self.elu_1(x)))
        x = self.conv_2(x)
        x = self.maxp_2(self.norm_2(self.elu_2(x)))
        x = self.conv_3(x)
        x = self.norm_3(self.elu_3(x))
        x = self.pred(self.flatten(x))
        return x.view(-1, x.size(1))


def mnist_dataloaders(batch_size: int = 200, limit: int | None = None, valid_limit=None):
    """Train and validation DataLoaders of offline MNIST (see ``datasets.load_mnist``).

    Args:
        batch_size: the batch size of both loaders.
        limit: keep the first ``limit`` training images (None: all 50,000).
        valid_limit: keep the first ``valid_limit`` validation images
            (None: as many as ``limit``, or all 10,000).

    Returns:
        ``(train, valid)``: the training loader shuffles, the validation one does not.

    Raises:
        ImportError: the MNIST data are not installed.

    Example:
        >>> train, valid = mnist_dataloaders(batch_size=50, limit=100)
        >>> len(train.dataset), next(iter(valid))[0].shape
        (100, torch.Size([50, 784]))
    """
    from torch.utils.data import DataLoader, TensorDataset

    from .datasets import load_mnist

    (x_train, y_train), (x_valid, y_valid) = load_mnist(limit=max(limit or 0, valid_limit or 0)
                                                        or None)
    x_train, y_train = x_train[:limit], y_train[:limit]
    x_valid, y_valid = x_valid[:valid_limit or limit], y_valid[:valid_limit or limit]
    train = TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train))
    valid = TensorDataset(torch.from_numpy(x_valid), torch.from_numpy(y_valid))
    return (DataLoader(train, batch_size=batch_size, shuffle=True),
            DataLoader(valid, batch_size=batch_size))


class LitLeNet5(L.LightningModule):
    """A LightningModule training :class:`LeNet5` as the tutorial does (SGD with
    Nesterov momentum, weight decay); logs ``val_acc`` and ``val_loss``.

    The network is ``self.model``, so the Lightning callback's probes are named
    ``model_conv_1_post_states`` and so on.

    Args:
        lr: the learning rate (saved in ``hparams``).

    Example:
        >>> LitLeNet5(lr=0.05).hparams.lr
        0.05
    """

    def __init__(self, lr: float = 0.01):
        super().__init__()
        self.save_hyperparameters()
        self.model = LeNet5()
        self.loss = nn.CrossEntropyLoss()

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", self.loss(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9,
                               weight_decay=0.0005, nesterov=True)
