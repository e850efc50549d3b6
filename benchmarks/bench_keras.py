"""Cost of the Keras StateSpaceCallback's per-epoch measurement.

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

    python benchmarks/bench_keras.py --repeats 5 --batch-size 200
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from tensorstate_callbacks import StateCounter  # noqa: E402
from tensorstate_callbacks.keras import StateSpaceCallback  # noqa: E402
from tensorstate_callbacks.lenet5_keras import build_lenet5, mnist_images  # noqa: E402

CONVS = ["conv_1", "conv_2", "conv_3"]


def seconds(function) -> tuple[float, float]:
    """(wall-clock, process CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=200)
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    main()
