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

__all__ = ["CHANNELS", "LeNet5", "LitLeNet5", "mnist_dataloaders", "parameter_count",
           "scaled_channels"]


CHANNELS = (20, 50, 100)
"""Output channels of LeNet-5's three convolutions at width 1."""


def scaled_channels(width: float) -> tuple[int, int, int]:
    """The channels of LeNet-5's convolutions at ``width`` times the tutorial's.

    Args:
        width: the multiplier (> 0); each count is rounded to the nearest
            integer, and at least 1.

    Returns:
        ``(conv_1, conv_2, conv_3)`` output channels.

    Raises:
        ValueError: ``width`` is not a positive number.

    Example:
        >>> scaled_channels(1), scaled_channels(1 / 8), scaled_channels(2)
        ((20, 50, 100), (2, 6, 12), (40, 100, 200))
    """
    if not width > 0:
        raise ValueError(f"width must be a positive number (a channel multiplier), got {width!r}")
    return tuple(max(1, round(count * width)) for count in CHANNELS)


def parameter_count(model: nn.Module) -> int:
    """The number of trainable parameters of ``model``.

    Example:
        >>> parameter_count(nn.Linear(3, 2))
        8
    """
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels, eps=0.00001, momentum=0.9) if batch_norm else nn.Identity()


class LeNet5(nn.Module):
    """LeNet-5 as in the TensorState PyTorch tutorial (ELU, batch norm), at any width.

    Takes ``float32[n, 784]`` (or ``[n, 1, 28, 28]``) images, returns 10 logits.
    The defaults are the tutorial's network; ``width`` scales the channels of
    every convolution (20, 50 and 100 at width 1) and ``batch_norm=False``
    replaces each batch norm by an identity (same module names).

    Args:
        width: the channel multiplier (> 0); each convolution keeps at least one
            channel (see :func:`scaled_channels`).
        batch_norm: normalise after each convolution's activation.

    Raises:
        ValueError: ``width`` is not a positive number.

    Example:
        >>> LeNet5()(torch.zeros(2, 784)).shape
        torch.Size([2, 10])
        >>> narrow = LeNet5(width=0.25, batch_norm=False)
        >>> narrow.conv_3.out_channels, type(narrow.norm_3).__name__
        (25, 'Identity')
        >>> parameter_count(LeNet5()), parameter_count(narrow)
        (107020, 6727)
    """

    def __init__(self, width: float = 1.0, batch_norm: bool = True):
        super().__init__()
        channels = scaled_channels(width)
        self.conv_1 = nn.Conv2d(1, channels[0], kernel_size=5, stride=1)
        self.elu_1 = nn.ELU()
        self.norm_1 = _norm(channels[0], batch_norm)
        self.maxp_1 = nn.MaxPool2d(2, stride=2)
        self.conv_2 = nn.Conv2d(channels[0], channels[1], kernel_size=5, stride=1)
        self.elu_2 = nn.ELU()
        self.norm_2 = _norm(channels[1], batch_norm)
        self.maxp_2 = nn.MaxPool2d(2, stride=2)
        self.conv_3 = nn.Conv2d(channels[1], channels[2], kernel_size=4, stride=1)
        self.elu_3 = nn.ELU()
        self.norm_3 = _norm(channels[2], batch_norm)
        self.flatten = nn.Flatten()
        self.pred = nn.Linear(channels[2], 10)
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
        lr: the learning rate.
        width: the channel multiplier of :class:`LeNet5`.
        batch_norm: whether :class:`LeNet5` normalises.

    ``hparams`` holds the three arguments and ``parameters``, the network's
    parameter count, so TensorBoard's HParams tab can compare networks by size.

    Example:
        >>> LitLeNet5(lr=0.05).hparams.lr
        0.05
        >>> dict(LitLeNet5(width=0.5, batch_norm=False).hparams)
        {'lr': 0.01, 'width': 0.5, 'batch_norm': False, 'parameters': 27095}
    """

    def __init__(self, lr: float = 0.01, width: float = 1.0, batch_norm: bool = True):
        super().__init__()
        self.save_hyperparameters()
        self.model = LeNet5(width=width, batch_norm=batch_norm)
        self.hparams["parameters"] = parameter_count(self.model)
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
