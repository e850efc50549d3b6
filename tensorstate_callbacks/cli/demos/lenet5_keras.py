"""The Keras LeNet-5 of the TensorState Tensorflow tutorial, and offline MNIST for it.

Used by the Keras example, the ``demo`` command, the benchmark and the tests.
Also importable as ``tensorstate_callbacks.lenet5_keras``.

Example:
    >>> model = compile_lenet5(build_lenet5(seed=0))
    >>> [layer.name for layer in model.layers if layer.name.startswith("conv")]
    ['conv_1', 'conv_2', 'conv_3']
    >>> model.output_shape
    (None, 10)
"""

from __future__ import annotations

import keras

__all__ = ["build_lenet5", "compile_lenet5", "mnist_images"]


def build_lenet5(seed: int | None = 0) -> keras.Model:
    """LeNet-5 exactly as the tutorial builds it: input ``(28, 28, 1)`` named
    ``input``; ``conv_1``/``conv_2``/``conv_3`` (ELU, He-normal, L2 0.0005), each
    followed by batch normalization; ``maxp_1``, ``maxp_2``; ``flatten``; ``pred``
    (10 logits).

    Args:
        seed: seeds Python, NumPy and the backend first (the tutorial's
            ``tf.random.set_seed(0)``); ``None`` leaves the seeds alone.

    Returns:
        The uncompiled Functional model.

    Example:
        >>> build_lenet5(seed=0).get_layer("conv_2").output.shape
        (None, 8, 8, 50)
    """
    if seed is not None:
        keras.utils.set_random_seed(seed)
    reg = keras.regularizers.l2(0.0005)
    kwargs = {"activation": "elu", "kernel_initializer": "he_normal",
              "kernel_regularizer": reg, "bias_regularizer": reg}
    input_layer = keras.layers.Input(shape=(28, 28, 1), name="input")
    conv_1 = keras.layers.Conv2D(20, 5, name="conv_1", **kwargs)(input_layer)
    norm_1 = keras.layers.BatchNormalization(epsilon=0.00001, momentum=0.9)(conv_1)
    maxp_1 = keras.layers.MaxPool2D((2, 2), name="maxp_1")(norm_1)
    conv_2 = keras.layers.Conv2D(50, 5, name="conv_2", **kwargs)(maxp_1)
    norm_2 = keras.layers.BatchNormalization(epsilon=0.00001, momentum=0.9)(conv_2)
    maxp_2 = keras.layers.MaxPool2D((2, 2), name="maxp_2")(norm_2)
    conv_3 = keras.layers.Conv2D(100, 4, name="conv_3", **kwargs)(maxp_2)
    norm_3 = keras.layers.BatchNormalization(epsilon=0.00001, momentum=0.9)(conv_3)
    flatten = keras.layers.Flatten(name="flatten")(norm_3)
    pred = keras.layers.Dense(10, name="pred")(flatten)
    return keras.Model(inputs=input_layer, outputs=pred)


def compile_lenet5(model: keras.Model, lr: float = 0.001) -> keras.Model:
    """Compile as the tutorial does: SGD with Nesterov momentum 0.9, sparse
    cross-entropy on logits, and ``accuracy`` (so ``fit()`` logs ``val_accuracy``).

    Args:
        model: the model to compile (usually :func:`build_lenet5`'s).
        lr: the learning rate.

    Returns:
        ``model`` itself, compiled.

    Example:
        >>> model = compile_lenet5(build_lenet5(seed=0), lr=0.01)
        >>> model.compiled, round(float(model.optimizer.learning_rate), 6)
        (True, 0.01)
    """
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="loss"),
        metrics=["accuracy"],
    )
    return model


def mnist_images(limit: int | None = None):
    """Offline MNIST shaped for the model, with images ``float32[n, 28, 28, 1]`` in [0, 1].

    Args:
        limit: keep the first ``limit`` images of each split (None: all).

    Returns:
        ``(x_train, y_train), (x_valid, y_valid)``.

    Raises:
        ImportError: the MNIST data are not installed (see ``datasets.load_mnist``).

    Example:
        >>> (x_train, y_train), (x_valid, y_valid) = mnist_images(limit=20)
        >>> x_train.shape, y_valid.shape
        ((20, 28, 28, 1), (20,))
    """
    from .datasets import load_mnist

    (x_train, y_train), (x_valid, y_valid) = load_mnist(limit=limit)
    return ((x_train.reshape(-1, 28, 28, 1), y_train),
            (x_valid.reshape(-1, 28, 28, 1), y_valid))
