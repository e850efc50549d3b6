"""A CIFAR-shaped residual network in PyTorch, built by hand (no torchvision).

The ResNet of He et al. (2016) as CIFAR papers use it: a 3x3 stem without
max-pooling, BasicBlocks of two 3x3 convolutions with BatchNorm, one ReLU
module per block called twice (after the first convolution and after the
sum: two call sites, two probes), and 1x1 projection shortcuts where the
shape changes.  The default stages make ResNet-18 (64-128-256-512 channels);
small stages make a network quick enough for tests.  It is the model the
benchmarks and tests try the probes on beyond LeNet-5.

Example:
    >>> import torch
    >>> net = ResNet(stem=8, stages=[(8, 1), (16, 2)]).eval()
    >>> net(torch.zeros(2, 3, 16, 16)).shape
    torch.Size([2, 10])
    >>> sum(isinstance(m, torch.nn.Conv2d) for m in ResNet().modules())   # ResNet-18
    20
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["RESNET18_STAGES", "BasicBlock", "ResNet"]

RESNET18_STAGES = ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1))
"""(channels, stride) of ResNet-18's eight BasicBlocks."""


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm, a shortcut, and one inplace ReLU module called twice.

    Args:
        channels_in: channels of the block's input.
        channels: channels of its output.
        stride: stride of its first convolution (and of the projection).
    """

    def __init__(self, channels_in: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)  # called twice per forward: two call sites
        self.shortcut = nn.Sequential()
        if stride != 1 or channels_in != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(channels_in, channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A 3x3 stem (convolution, BatchNorm, ReLU), BasicBlocks, average pooling, a linear head.

    Args:
        stem: channels of the stem.
        stages: ``(channels, stride)`` of each block, in order (default: ResNet-18's).
        classes: outputs of the head.
    """

    def __init__(self, stem: int = 64, stages: Sequence[tuple[int, int]] = RESNET18_STAGES,
                 classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(stem)
        self.act = nn.ReLU()
        blocks, channels_in = [], stem
        for channels, stride in stages:
            blocks.append(BasicBlock(channels_in, channels, stride))
            channels_in = channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels_in, classes)

    def forward(self, x):
        x = self.blocks(self.act(self.bn(self.stem(x))))
        return self.head(x.mean((2, 3)))
