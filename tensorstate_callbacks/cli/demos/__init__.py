"""Demo models (LeNet-5 for PyTorch/Lightning and Keras) and offline data sets,
for the ``demo`` command, the examples, the benchmarks and the tests."""
