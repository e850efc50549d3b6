"""Which axis of a tensor seen by a PyTorch probe holds the neurons.

The neurons are the *features* of a tensor: the channels of a
convolution-like tensor ``(B, C, ...)`` (dim 1), the last dim of a dense or
sequence tensor ``(B, F)``, ``(B, S, F)``.  The rule, in order:

1. ``neuron_axis=`` given for the probe (an int, or a mapping from probe
   names, module names or class names, with ``fnmatch`` patterns, to an int).
2. A tensor of at most 2 dims, or a nested (ragged) tensor: the last dim.
3. A module that defines its layout: convolutions, batch/instance/group norm,
   pooling, padding, channel dropout, upsampling -> dim 1; linear, embedding,
   attention, layer/RMS norm, recurrent and transformer layers -> last dim.
4. Any other module (activations, dropout, identity, whole blocks, custom
   classes): the layout of the last layout-defining module that ran before it
   in the forward pass (a :class:`LayoutTracker` watches them until every
   probe has decided), on the axis whose size is that module's number of
   neurons.  So a GELU after a Linear on ``(B, S, F)`` has ``F`` neurons and a
   ReLU after a BatchNorm2d has ``C``.
5. Nothing ran before it: dim 1 for 3+ dims (PyTorch's channels-first default).

A probe decides once, at its first batch, and keeps that axis.  An axis whose
size then changes between batches is not a neuron axis (it is a batch or
sequence axis): the probe raises a ValueError naming itself and the override.
"""

from __future__ import annotations

from functools import lru_cache

import torch

__all__ = ["LayoutTracker", "first_tensor", "layout_kind", "neuron_axis_from_context"]

CHANNELS = "channels"
FEATURES = "features"

# Class names (anywhere in a module's MRO) that fix the layout of its output.
_CHANNELS_FIRST = frozenset({
    "_ConvNd", "_BatchNorm", "_InstanceNorm", "GroupNorm", "_MaxPoolNd", "_AvgPoolNd",
    "_AdaptiveAvgPoolNd", "_AdaptiveMaxPoolNd", "_LPPoolNd", "_MaxUnpoolNd", "Dropout1d",
    "Dropout2d", "Dropout3d", "FeatureAlphaDropout", "PixelShuffle", "PixelUnshuffle",
    "Upsample", "LocalResponseNorm", "CrossMapLRN2d", "ChannelShuffle", "_ConstantPadNd",
    "_ReflectionPadNd", "_ReplicationPadNd", "_CircularPadNd",
})
_FEATURES_LAST = frozenset({
    "Linear", "Bilinear", "Embedding", "EmbeddingBag", "MultiheadAttention", "LayerNorm",
    "RMSNorm", "RNNBase", "RNNCellBase", "TransformerEncoderLayer", "TransformerDecoderLayer",
    "TransformerEncoder", "TransformerDecoder", "Transformer",
})


@lru_cache(maxsize=256)  # bounded: torch.fx makes a class per GraphModule
def layout_kind(module_class: type) -> str | None:
    """``"channels"``, ``"features"`` or None (the module does not fix its layout).

    Example:
        >>> layout_kind(torch.nn.Conv2d), layout_kind(torch.nn.Linear), layout_kind(torch.nn.GELU)
        ('channels', 'features', None)
    """
    names = {cls.__name__ for cls in module_class.__mro__}
    if names & _CHANNELS_FIRST:
        return CHANNELS
    if names & _FEATURES_LAST:
        return FEATURES
    return None


def first_tensor(value):
    """The first tensor in ``value`` (a tensor, or a tuple, list or dict holding one), or None."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


class LayoutTracker:
    """Watches the layout-defining modules of a model during forward passes.

    ``last`` is ``(kind, neurons)`` of the last one that ran: what a module that
    does not fix its own layout (an activation, a block) receives.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.GELU())
        >>> tracker = LayoutTracker(net)
        >>> _ = net(torch.zeros(2, 7, 3)); tracker.last
        ('features', 5)
        >>> tracker.remove()
    """

    def __init__(self, model: torch.nn.Module):
        self.last: tuple[str, int] | None = None
        self._handles = []
        for module in model.modules():
            kind = layout_kind(type(module))
            if kind is not None:
                self._handles.append(module.register_forward_hook(self._watcher(kind)))

    def _watcher(self, kind: str):
        def seen(module, inputs, output) -> None:
            tensor = first_tensor(output)
            if tensor is None or tensor.dim() == 0 or tensor.is_nested:
                return
            axis = 1 if kind == CHANNELS and tensor.dim() >= 3 else -1
            self.last = (kind, tensor.shape[axis])

        return seen

    def remove(self) -> None:
        """Remove every hook of the tracker."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def neuron_axis_from_context(module_class: type, tensor: torch.Tensor,
                             last: tuple[str, int] | None) -> int:
    """The automatic neuron axis (rules 2-5 of the module docstring).

    Example:
        >>> x = torch.zeros(2, 7, 16)
        >>> neuron_axis_from_context(torch.nn.GELU, x, ("features", 16))
        -1
        >>> neuron_axis_from_context(torch.nn.ReLU, torch.zeros(2, 8, 5, 5), ("channels", 8))
        1
    """
    if tensor.dim() <= 2 or tensor.is_nested:
        return -1
    kind = layout_kind(module_class)
    if kind is not None:
        return 1 if kind == CHANNELS else -1
    if last is None:
        return 1
    kind, neurons = last
    preferred, other = (1, -1) if kind == CHANNELS else (-1, 1)
    if tensor.shape[preferred] == neurons or tensor.shape[other] != neurons:
        return preferred
    return other
