"""Cost of the Keras StateSpaceCallback: its measurement, and model.fit end to end.

LeNet-5 of the tutorial, 10,000 MNIST images (28x28x1).  In one process,
interleaved, ``--repeats`` times each (medians reported):

* ``predict``       a plain ``model.predict`` over the images (the baseline);
* ``measure``       the callback's measurement: the probed forward pass, packing,
                    counting and the epoch's report (``callback.measure``);
* ``on_epoch_end``  all the callback does per epoch: measure, write scalars,
                    histograms and the efficiency image, reset;
* ``count only``    packing and counting the same activations, already in memory
                    (where the time beyond the forward pass goes).

Target: ``measure / predict <= 1.20``.  Both wall-clock and process CPU time
are reported: on a shared, loaded machine the wall-clock ratio is noisy, while
CPU time counts only the work this process does.

End to end (``--case fit``): ``model.fit`` with validation data, validation-heavy
(``--train`` 2,000 training and ``--valid`` 10,000 validation images), a fresh
LeNet-5 per run, ``--epochs`` epochs, without and with ``StateSpaceCallback()``
(defaults: the convolutions, measured inside fit's own validation, histograms
every epoch, the heat map at the end), runs interleaved.  An epoch's time runs from
``on_epoch_begin`` to the end of every callback's ``on_epoch_end``; the first
epoch (tracing) is left out.  Target: ``with / without <= 1.15``.
``--second-pass`` adds ``with data``: the callback given the validation data,
measuring it in a loop of its own (a second forward pass).

Training-time view (``--case training``): training epochs over ``--valid``
images (no validation) without the callback, with a validation-only callback
(it should cost nothing while training) and with ``train_every_n_steps=10,
train_window=2`` (a fifth of the batches counted inside fit's train step).

    python benchmarks/bench_keras.py --repeats 5 --batch-size 200
    python benchmarks/bench_keras.py --case fit --repeats 3 --epochs 3 --second-pass
    python benchmarks/bench_keras.py --case training --repeats 3 --epochs 3
"""

import argparse
import os
import statistics
import tempfile
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from tensorstate_callbacks import StateCounter  # noqa: E402
from tensorstate_callbacks.keras import StateSpaceCallback  # noqa: E402
from tensorstate_callbacks.lenet5_keras import (  # noqa: E402
    build_lenet5,
    compile_lenet5,
    mnist_images,
)

CONVS = ["conv_1", "conv_2", "conv_3"]


def seconds(function) -> tuple[float, float]:
    """(wall-clock, process CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


class EpochTimes(keras.callbacks.Callback):
    """(wall-clock, process CPU) seconds of every epoch; listed last, so an
    epoch ends after every other callback's ``on_epoch_end``."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        wall, cpu = self._start
        self.epochs.append((time.perf_counter() - wall, time.process_time() - cpu))


def interleaved_fits(callbacks_of, x, y, validation_data, args) -> dict:
    """Epoch times ``{name: [(wall, cpu), ...]}`` of ``model.fit`` with each
    configuration's callbacks, a fresh LeNet-5 per run, runs interleaved; the
    first epoch (tracing) left out."""
    times = {name: [] for name in callbacks_of}
    for _ in range(args.repeats):
        for name in times:
            model = compile_lenet5(build_lenet5(seed=0))
            timer = EpochTimes()
            model.fit(x, y, validation_data=validation_data, epochs=args.epochs,
                      batch_size=args.batch_size, verbose=0,
                      callbacks=[*callbacks_of[name](), timer])
            times[name].extend(timer.epochs[1:])
    return times


def print_ratios(times, target: float) -> None:
    """Median epoch times against ``without``, and the ratios of the others to it."""
    print(f"{'fit':<12}{'epoch wall s':>14}{'/ without':>11}{'epoch cpu s':>13}{'/ without':>11}")
    base = [statistics.median(t[column] for t in times["without"]) for column in (0, 1)]
    for name, values in times.items():
        wall, cpu = (statistics.median(t[column] for t in values) for column in (0, 1))
        print(f"{name:<12}{wall:>14.3f}{wall / base[0]:>11.2f}{cpu:>13.3f}{cpu / base[1]:>11.2f}")
    for name in list(times)[1:]:
        for column, label in ((0, "wall"), (1, "cpu")):
            ratio = statistics.median(t[column] for t in times[name]) / base[column]
            print(f"{name} / without ({label}) = {ratio:.2f} "
                  f"(target <= {target:.2f}: {'met' if ratio <= target else 'missed'})")


def bench_fit(args) -> None:
    """``model.fit`` with validation data, without and with the callback, interleaved."""
    (x_train, y_train), (x_valid, y_valid) = mnist_images()
    x_train, y_train = x_train[:args.train], y_train[:args.train]
    x_valid, y_valid = x_valid[:args.valid], y_valid[:args.valid]
    callbacks_of = {
        "without": lambda: [],
        "with": lambda: [StateSpaceCallback(log_dir=tempfile.mkdtemp())],
        "with data": lambda: [StateSpaceCallback((x_valid, y_valid), log_dir=tempfile.mkdtemp(),
                                                 batch_size=args.batch_size)],
    }
    if not args.second_pass:
        del callbacks_of["with data"]
    times = interleaved_fits(callbacks_of, x_train, y_train, (x_valid, y_valid), args)
    print(f"model.fit, LeNet-5, {len(x_train):,} training and {len(x_valid):,} validation "
          f"images, batch size {args.batch_size}, {args.epochs} epochs (first left out), "
          f"{args.repeats} interleaved runs each, backend {keras.backend.backend()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print_ratios(times, 1.15)


def bench_training(args) -> None:
    """Training epochs (no validation) without the callback, with a
    validation-only one, and with the training-time view, interleaved."""
    (x_train, y_train), _ = mnist_images()
    x_train, y_train = x_train[:args.valid], y_train[:args.valid]  # training-heavy
    callbacks_of = {
        "without": lambda: [],
        "val only": lambda: [StateSpaceCallback(log_dir=tempfile.mkdtemp())],
        "window": lambda: [StateSpaceCallback(log_dir=tempfile.mkdtemp(),
                                              train_every_n_steps=10, train_window=2)],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fit() never validated": the point here
        times = interleaved_fits(callbacks_of, x_train, y_train, None, args)
    print(f"model.fit, LeNet-5, {len(x_train):,} training images, no validation, batch size "
          f"{args.batch_size}, {args.epochs} epochs (first left out), {args.repeats} "
          f"interleaved runs each, backend {keras.backend.backend()}, load average "
          f"{os.getloadavg()[0]:.1f}; window: train_every_n_steps=10, train_window=2")
    print_ratios(times, 1.15)


def bench_measure(args) -> None:
    """The callback's measurement on data of its own against ``model.predict``."""
    (_, _), (images, labels) = mnist_images()
    model = build_lenet5(seed=0)
    callback = StateSpaceCallback((images, labels), attach_to=["Conv2D"],
                                  log_dir=tempfile.mkdtemp(), batch_size=args.batch_size)
    callback.set_model(model)
    callback.on_train_begin()
    activations = keras.Model(model.inputs, [model.get_layer(n).output for n in CONVS]).predict(
        images, batch_size=args.batch_size, verbose=0)

    def count_only():
        for values in activations:
            counter = StateCounter("bench")
            for start in range(0, len(values), args.batch_size):
                counter.add(values[start:start + args.batch_size])
            counter.efficiency()

    runs = {
        "predict": lambda: model.predict(images, batch_size=args.batch_size, verbose=0),
        "measure": lambda: callback.measure(0, 0.9),
        "on_epoch_end": lambda: callback.on_epoch_end(0, {"val_accuracy": 0.9}),
        "count only": count_only,
    }
    for run in runs.values():  # warm up: tracing, first allocations
        run()
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(seconds(run))
    callback.on_train_end()

    print(f"LeNet-5, {len(images):,} images, batch size {args.batch_size}, "
          f"{args.repeats} repeats, backend {keras.backend.backend()}")
    print(f"{'run':<14}{'wall s':>9}{'/ predict':>11}{'cpu s':>9}{'/ predict':>11}")
    ratios = {}
    for column, label in ((0, "wall"), (1, "cpu")):
        base = statistics.median(t[column] for t in times["predict"])
        ratios[label] = {name: statistics.median(t[column] for t in values) / base
                         for name, values in times.items()}
    for name, values in times.items():
        wall = statistics.median(t[0] for t in values)
        cpu = statistics.median(t[1] for t in values)
        print(f"{name:<14}{wall:>9.3f}{ratios['wall'][name]:>11.2f}{cpu:>9.3f}"
              f"{ratios['cpu'][name]:>11.2f}")
    for label in ("wall", "cpu"):
        ratio = ratios[label]["measure"]
        print(f"measure / predict ({label}) = {ratio:.2f} "
              f"(target <= 1.20: {'met' if ratio <= 1.2 else 'missed'})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["measure", "fit", "training", "both"],
                        default="both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--valid", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--second-pass", action="store_true",
                        help="also fit with the data given to the callback (a second pass)")
    args = parser.parse_args(argv)
    if args.case in ("fit", "both"):
        bench_fit(args)
    if args.case == "training":
        bench_training(args)
    if args.case in ("measure", "both"):
        bench_measure(args)


if __name__ == "__main__":
    main()
