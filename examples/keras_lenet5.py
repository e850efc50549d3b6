"""Train the tutorial's Keras LeNet-5 on offline MNIST and watch its state space.

The StateSpaceCallback logs layer efficiency, network efficiency and aIQ to
``<log-dir>/validation`` after every epoch, beside Keras' own TensorBoard
callback writing to the same ``<log-dir>``:

    python examples/keras_lenet5.py --epochs 5
    tensorboard --logdir logs/keras_lenet5
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from tensorstate_callbacks.keras import StateSpaceCallback  # noqa: E402
from tensorstate_callbacks.lenet5_keras import (  # noqa: E402
    build_lenet5,
    compile_lenet5,
    mnist_images,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first LIMIT training and validation images")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--log-dir", default="logs/keras_lenet5")
    args = parser.parse_args(argv)

    (x_train, y_train), (x_valid, y_valid) = mnist_images(limit=args.limit)
    model = compile_lenet5(build_lenet5(seed=0), lr=args.lr)
    state_space = StateSpaceCallback((x_valid, y_valid), attach_to=["Conv2D"],
                                     log_dir=args.log_dir, batch_size=200)
    model.fit(x_train, y_train, validation_data=(x_valid, y_valid), epochs=args.epochs,
              batch_size=200, verbose=2,
              callbacks=[keras.callbacks.TensorBoard(log_dir=args.log_dir), state_space])
    for report in state_space.history:
        layers = ", ".join(f"{layer.name} {layer.efficiency:.3f}" for layer in report.layers)
        print(f"epoch {report.epoch}: {layers}; network efficiency "
              f"{report.network_efficiency:.3f}, aIQ {report.aIQ:.3f}")
    print(f"TensorBoard logs in {args.log_dir}")


if __name__ == "__main__":
    main()
