"""Where a framework's tensor is packed: one choice, made here.

* A CPU tensor (or NumPy array) goes to the compiled CPU kernel as it is: its
  memory is read in place, whatever its strides.
* A CUDA tensor is packed on its GPU, so only packed bytes reach the host: by
  the CuPy kernel when CuPy is installed (``tensorstate-callbacks[gpu]``), else
  by the framework's own ops (:func:`pack_with_torch`).
* Inside a Keras graph on a GPU, states are packed by Keras ops
  (:func:`pack_with_keras_ops`), which every backend runs on its device.

Every packer writes the compiled kernel's bits: neuron ``i`` is bit ``i % 8``
of byte ``i // 8``; a neuron fires when its value is ``> 0``.
"""

from __future__ import annotations

import sys
from functools import cache

import numpy as np

from .._imports import cupy_available
from ..core.counter import StateCounter
from ..core.packing import neuron_axis_index

__all__ = ["count_tensor", "pack_with_keras_ops", "pack_with_torch"]


def count_tensor(counter: StateCounter, tensor, neuron_axis: int, *, threads: int = 1,
                 labels=None) -> None:
    """Count the states of ``tensor`` (NumPy, PyTorch on any device, CUDA arrays) in ``counter``.

    Args:
        counter: where the states are counted.
        tensor: a NumPy array, a ``torch.Tensor`` (also nested: one state per
            real element of each component) or a CUDA array.
        neuron_axis: the axis of the neurons.
        threads: threads for this batch (a probe inside a forward pass uses one).
        labels: one integer per sample along axis 0 (see ``StateCounter.add``), or None.

    Example:
        >>> counter = StateCounter()
        >>> count_tensor(counter, np.array([[1.0, -1.0]]), neuron_axis=-1)
        >>> counter.state_count
        1
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(tensor, torch.Tensor):
        counter.add(tensor, neuron_axis, threads=threads, labels=labels)
        return
    tensor = tensor.detach()  # nothing here enters autograd
    if tensor.is_nested:  # one state per real element: each component, padding never made
        axis = neuron_axis if neuron_axis < 0 else neuron_axis - 1
        for index, part in enumerate(tensor.unbind()):
            part_labels = None if labels is None else np.repeat(labels[index:index + 1],
                                                                part.shape[0])
            count_tensor(counter, part, axis, threads=threads, labels=part_labels)
        return
    if tensor.device.type == "cpu":
        if tensor.dtype == torch.bfloat16:  # NumPy lacks bfloat16: read its bits
            counter.add(tensor.view(torch.int16).numpy(), neuron_axis, dtype="bfloat16",
                        threads=threads, labels=labels)
        else:
            counter.add(tensor.numpy(), neuron_axis, threads=threads, labels=labels)
    elif tensor.is_cuda and tensor.dtype != torch.bfloat16 and cupy_available():
        counter.add(tensor, neuron_axis, threads=threads, labels=labels)  # CuPy, via DLPack
    else:
        axis = neuron_axis_index(tensor.dim(), neuron_axis)
        counter.add_packed(pack_with_torch(tensor, axis), tensor.shape[axis], threads=threads,
                           labels=labels)


@cache
def _bit_weights(device):
    import torch

    return 2 ** torch.arange(8, device=device, dtype=torch.int32)


def pack_with_torch(tensor, neuron_axis: int) -> np.ndarray:
    """Pack on the tensor's device with torch ops; returns host ``uint8`` states.

    Example:
        >>> import torch
        >>> pack_with_torch(torch.tensor([[1.0, -1.0, 2.0]]), neuron_axis=1)
        array([[5]], dtype=uint8)
    """
    import torch

    num_neurons = tensor.shape[neuron_axis]
    fired = (tensor > 0).movedim(neuron_axis, -1).reshape(-1, num_neurons)
    fired = torch.nn.functional.pad(fired, (0, -num_neurons % 8))
    weights = _bit_weights(tensor.device)
    packed = (fired.view(fired.shape[0], -1, 8).to(torch.int32) * weights).sum(-1)
    return packed.to(torch.uint8).cpu().numpy()


def pack_with_keras_ops(tensor, neuron_axis: int = -1):
    """Pack states with Keras ops on the tensor's device (inside a Keras graph):
    ``uint8[states, ceil(neurons / 8)]``.

    Example:
        >>> import keras
        >>> packed = pack_with_keras_ops(np.array([[1.0, -1.0, 2.0], [0.0, 0.0, 5.0]]))
        >>> keras.ops.convert_to_numpy(packed)
        array([[5],
               [4]], dtype=uint8)
    """
    import keras

    ops = keras.ops
    num_neurons = tensor.shape[neuron_axis]
    fired = ops.cast(ops.greater(ops.moveaxis(tensor, neuron_axis, -1), 0), "int32")
    fired = ops.pad(ops.reshape(fired, (-1, num_neurons)), [[0, 0], [0, -num_neurons % 8]])
    fired = ops.reshape(fired, (-1, (num_neurons + 7) // 8, 8))
    weights = ops.convert_to_tensor(np.array([1 << bit for bit in range(8)], dtype="int32"))
    return ops.cast(ops.sum(fired * weights, axis=-1), "uint8")
