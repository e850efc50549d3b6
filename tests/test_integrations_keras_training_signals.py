"""The Keras StateSpaceCallback's values as training signals, in real model.fit runs:
measured inside fit's own validation, in the logs of every callback whatever its
place in the list (ModelCheckpoint, EarlyStopping, CSVLogger, History), following
validation_freq, beside Keras' own TensorBoard; the in-fit counts against a second
pass and against NumPy on activations the test computes itself; other backends."""

import csv
import math
import textwrap
import warnings

import keras
import numpy as np
import pytest
from reference import Expected, assert_counts_match, sorted_rows
from support import KERAS_SMALL_CONV_NET, run_on_keras_backend
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tensorstate_callbacks.keras import StateSpaceCallback
from tensorstate_callbacks.lenet5_keras import build_lenet5, compile_lenet5, mnist_images

CONVS = ["conv_1", "conv_2", "conv_3"]
AIQ = "val_state_space/aIQ"
(X_TRAIN, Y_TRAIN), (X_VALID, Y_VALID) = mnist_images(limit=200)
X_VALID, Y_VALID = X_VALID[:64], Y_VALID[:64]


def callback(tmp_path, **options):
    return StateSpaceCallback(log_dir=tmp_path, log_images=False, log_histograms=False,
                              **options)


def fit(callbacks, epochs=2, seed=0, model=None, **options):
    model = model or compile_lenet5(build_lenet5(seed=seed), lr=0.01)
    history = model.fit(X_TRAIN, Y_TRAIN, validation_data=(X_VALID, Y_VALID), epochs=epochs,
                        batch_size=50, verbose=0, callbacks=callbacks, **options)
    return model, history


def fit_warning_about(about, model, callbacks):
    """Fit for 2 epochs; the history and the messages of the warnings that mention ``about``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, history = fit(callbacks, model=model)
    return history, [str(w.message) for w in caught if about in str(w.message)]


def read_events(directory):
    events = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


class Weights(keras.callbacks.Callback):
    """The model's weights at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append([w.copy() for w in self.model.get_weights()])


class SecondPass(keras.callbacks.Callback):
    """At every epoch's end (before the callback under test resets its counters),
    compare its counts with a second pass over the validation data and with
    NumPy on the layers' outputs."""

    def __init__(self, watched, tmp_path):
        super().__init__()
        self.watched = watched
        self.second = StateSpaceCallback((X_VALID, Y_VALID), log_dir=tmp_path / "second",
                                         labels=True, batch_size=50)  # fit's batches
        self.compared = []

    def on_epoch_end(self, epoch, logs=None):
        self.second.set_model(self.model)
        self.second.on_train_begin()
        report = self.second.measure(epoch, logs["val_accuracy"])
        outputs = keras.Model(self.model.inputs,
                              [self.model.get_layer(n).output for n in CONVS]).predict(
            X_VALID, verbose=0)
        for ours, theirs, values in zip(self.watched.reader.counters,
                                        self.second.reader.counters, outputs, strict=True):
            np.testing.assert_array_equal(*(sorted_rows(*c.items())[0] for c in (ours, theirs)))
            np.testing.assert_array_equal(*(sorted_rows(*c.items())[1] for c in (ours, theirs)))
            assert ours.mutual_information() == theirs.mutual_information()
            assert_counts_match(ours, Expected.of_values(values))
        self.compared.append((epoch, report))


def test_in_fit_measurement_equals_a_second_pass_on_the_same_weights(tmp_path):
    watched = callback(tmp_path, labels=True, in_logs="all")
    second = SecondPass(watched, tmp_path)
    _, history = fit([second, watched], epochs=2)
    assert [epoch for epoch, _ in second.compared] == [0, 1]
    for (epoch, expected), report in zip(second.compared, watched.history, strict=True):
        assert report.epoch == report.step == epoch
        assert report.layers == expected.layers  # every statistic, mutual information included
        assert report.aIQ == expected.aIQ
        assert history.history[AIQ][epoch] == report.aIQ
    assert watched.history[0].layers[0].states == 64 * 24 * 24


def test_training_and_keras_logs_are_the_same_with_and_without_the_callback(tmp_path):
    plain, plain_history = fit([], epochs=2, seed=3)
    watched, watched_history = fit([callback(tmp_path)], epochs=2, seed=3)
    for old, new in zip(plain.get_weights(), watched.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    for key, values in plain_history.history.items():
        assert watched_history.history[key] == values, key
    assert sorted(set(watched_history.history) - set(plain_history.history)) == [
        AIQ, *(f"val_state_space/efficiency/{n}_states" for n in CONVS),
        "val_state_space/network_efficiency"]
    assert "test_step" not in vars(watched) and "get_metrics_result" not in vars(watched)
    np.testing.assert_array_equal(  # evaluate() after fit: Keras' own test function again
        plain.evaluate(X_VALID, Y_VALID, verbose=0),
        watched.evaluate(X_VALID, Y_VALID, verbose=0))


def test_model_checkpoint_keeps_the_weights_of_the_best_aiq(tmp_path):
    path = tmp_path / "best.weights.h5"
    checkpoint = keras.callbacks.ModelCheckpoint(path, monitor=AIQ, mode="max",
                                                 save_best_only=True, save_weights_only=True)
    weights, watched = Weights(), callback(tmp_path)
    model, history = fit([checkpoint, watched, weights], epochs=4)
    scores = history.history[AIQ]
    assert scores == [report.aIQ for report in watched.history]
    assert len(set(scores)) > 1
    model.load_weights(path)
    for saved, kept in zip(model.get_weights(), weights.epochs[int(np.argmax(scores))],
                           strict=True):
        np.testing.assert_array_equal(saved, kept)


@pytest.mark.parametrize("place", ["before", "after"])
def test_early_stopping_stops_on_aiq_wherever_it_sits(tmp_path, place):
    # improvement means aIQ rising by 1 (never): it stops after patience=1 epoch
    stopper = keras.callbacks.EarlyStopping(monitor=AIQ, mode="max", min_delta=1.0, patience=1)
    watched = callback(tmp_path)
    callbacks = [stopper, watched] if place == "before" else [watched, stopper]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. "metric ... not available"
        warnings.filterwarnings("ignore", message=".*at its ceiling")
        _, history = fit(callbacks, epochs=5)
    assert stopper.stopped_epoch == 1
    assert len(history.history[AIQ]) == 2
    assert stopper.best == history.history[AIQ][0]


def test_csv_logger_rows_equal_history(tmp_path):
    path = tmp_path / "log.csv"
    watched = callback(tmp_path, in_logs="all")
    _, history = fit([keras.callbacks.CSVLogger(str(path)), watched], epochs=2)
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    keys = [key for key in history.history if "state_space" in key]
    assert len(keys) == 3 * 7 + 3  # per probe 7 statistics; network efficiency, accuracy, aIQ
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    for key in keys:
        assert [float(row[key]) for row in rows] == history.history[key], key
    for report, row in zip(watched.history, rows, strict=True):
        assert float(row["val_state_space/unique_states/conv_2_states"]) == \
            report.layers[1].unique_states
        assert float(row["val_state_space/accuracy"]) == float(row["val_accuracy"])


def test_validation_freq_measures_the_epochs_fit_validates(tmp_path):
    watched = StateSpaceCallback(log_dir=tmp_path, log_images=False)
    _, history = fit([watched], epochs=4, validation_freq=2)
    assert [report.epoch for report in watched.history] == [1, 3]
    assert len(history.history[AIQ]) == 2 and len(history.history["loss"]) == 4
    events = read_events(tmp_path / "validation")
    for tag in ("state_space/aIQ", "state_space/efficiency/conv_1_states"):
        assert [event.step for event in events.Scalars(tag)] == [1, 3]
    assert [event.value for event in events.Scalars("state_space/epoch")] == [1, 3]
    assert [event.value for event in events.Scalars("state_space/aIQ")] == pytest.approx(
        history.history[AIQ], rel=1e-6)


@pytest.mark.parametrize("place", ["before", "after"])
def test_keras_tensorboard_in_the_same_log_dir_writes_no_second_series(tmp_path, place):
    board = keras.callbacks.TensorBoard(log_dir=str(tmp_path))
    watched = callback(tmp_path)
    _, history = fit([board, watched] if place == "before" else [watched, board], epochs=2)
    tags = {}
    for run in ("train", "validation"):
        for path in sorted((tmp_path / run).glob("events.out.tfevents.*")):
            events = read_events(path)
            for kind in ("scalars", "tensors"):
                for tag in events.Tags()[kind]:
                    tags.setdefault(tag, []).append(f"{run}/{path.name}")
    state_space = sorted(tag for tag in tags if "state_space" in tag)
    assert all(tag.startswith("state_space/") for tag in state_space), state_space
    assert all(len(tags[tag]) == 1 for tag in state_space)  # one series, one file
    assert tags["state_space/aIQ"][0].startswith("validation/")
    ours = read_events(tmp_path / "validation")
    assert [event.value for event in ours.Scalars("state_space/aIQ")] == pytest.approx(
        history.history[AIQ], rel=1e-6)
    keras_own = {"epoch_loss", "epoch_accuracy", "evaluation_loss_vs_iterations"}
    assert keras_own <= {tag for tag, where in tags.items()
                         if any(run.startswith("validation/") for run in where)}
    assert "on_epoch_end" not in vars(board)  # its own methods again after fit


def test_unusable_accuracy_keeps_training_and_logs_nan_aiq(tmp_path):
    percent = keras.metrics.MeanMetricWrapper(
        lambda y, p: 100.0 * keras.metrics.sparse_categorical_accuracy(y, p), name="percent")
    model = build_lenet5(seed=0)
    model.compile(optimizer="sgd", metrics=[percent],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    watched = callback(tmp_path, accuracy_key="val_percent")
    history, messages = fit_warning_about("outside [0, 1]", model, [watched])
    assert len(messages) == 1 and "'val_percent'" in messages[0]
    assert len(history.history["loss"]) == 2
    assert all(math.isnan(value) for value in history.history[AIQ])
    assert all(report.aIQ is None and report.network_efficiency > 0
               for report in watched.history)


def test_steps_per_execution_above_one_warns_once_and_training_goes_on(tmp_path):
    model = compile_lenet5(build_lenet5(seed=0), lr=0.01)
    model.compile(optimizer="sgd", loss=model.loss, metrics=["accuracy"], steps_per_execution=2)
    watched = callback(tmp_path)
    history, messages = fit_warning_about("steps_per_execution", model, [watched])
    assert len(messages) == 1 and "StateSpaceCallback((x_val, y_val))" in messages[0]
    assert watched.history == [] and len(history.history["val_loss"]) == 2


BACKEND_SCRIPT = KERAS_SMALL_CONV_NET + textwrap.dedent("""
    watched = StateSpaceCallback(attach_to=["conv"], log_dir={log_dir!r}, labels=True,
                                 log_images=False)
    stopper = keras.callbacks.EarlyStopping(monitor="val_state_space/aIQ", mode="max",
                                            min_delta=1.0, patience=1)

    class Compare(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            second = StateSpaceCallback((x, y), attach_to=["conv"], log_dir={log_dir!r},
                                        labels=True, batch_size=8)
            second.set_model(self.model); second.on_train_begin()
            report = second.measure(epoch, logs["val_accuracy"])
            ours, theirs = watched.reader.counters[0], second.reader.counters[0]
            assert ours.state_count == theirs.state_count == 40 * 16
            rows = [sorted(zip(map(bytes, keys), counts.tolist()))
                    for keys, counts in (ours.items(), theirs.items())]
            assert rows[0] == rows[1]
            assert ours.mutual_information() == theirs.mutual_information()
            self.report = report

    compare = Compare()
    history = model.fit(x, y, validation_data=(x, y), epochs=5, batch_size=8, verbose=0,
                        callbacks=[stopper, compare, watched])
    assert stopper.stopped_epoch == 1, stopper.stopped_epoch
    assert history.history["val_state_space/aIQ"][-1] == watched.history[-1].aIQ
    assert watched.history[-1].layers == compare.report.layers
    print("backend ok", keras.backend.backend())
""")


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_in_fit_measurement_on_other_backends(tmp_path, backend):
    """torch and JAX: measured inside fit's validation, equal to a second pass,
    EarlyStopping listed before the callback stops on aIQ."""
    pytest.importorskip(backend)
    run_on_keras_backend(BACKEND_SCRIPT.format(log_dir=str(tmp_path)), backend)
