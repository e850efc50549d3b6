"""The Keras StateSpaceCallback in real model.fit runs, read back from TensorBoard."""

import warnings

import keras
import numpy as np
import pytest
from reference import Expected
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)

from tensorstate_callbacks.keras import StateSpaceCallback
from tensorstate_callbacks.lenet5_keras import (
    build_lenet5,
    compile_lenet5,
    mnist_images,
)

CONVS = ["conv_1", "conv_2", "conv_3"]
# what the callback logs per probe by default (reporting/report.py); mutual information
# (labels=True) and drift (drift=True) are opt-in
LAYER_KINDS = ("efficiency", "unique_states", "states", "coverage", "efficiency_ceiling",
               "dead_fraction", "always_on_fraction")
(X_TRAIN, Y_TRAIN), (X_VALID, Y_VALID) = mnist_images(limit=300)
X_VALID, Y_VALID = X_VALID[:120], Y_VALID[:120]


class Reference(keras.callbacks.Callback):
    """Independently recompute, from plain layer outputs, what the callback should log."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        outputs = keras.Model(model.inputs, [model.get_layer(n).output for n in CONVS]).predict(
            X_VALID, verbose=0)
        layers = {}
        for name, values in zip(CONVS, outputs, strict=True):
            expected = Expected.of_values(values)
            layers[f"{name}_states"] = (expected.efficiency(), expected.distinct_count,
                                        expected.state_count)
        network = float(np.exp(np.mean(np.log([e for e, _, _ in layers.values()]))))
        accuracy = logs["val_accuracy"]
        self.epochs.append({"layers": layers, "network": network, "accuracy": accuracy,
                            "aIQ": (network * accuracy**2) ** (1 / 3),
                            "logged aIQ": logs["val_state_space/aIQ"]})


def fit(callbacks, epochs=2, seed=0):
    model = compile_lenet5(build_lenet5(seed=seed), lr=0.01)
    model.fit(X_TRAIN, Y_TRAIN, validation_data=(X_VALID, Y_VALID), epochs=epochs,
              batch_size=50, shuffle=True, verbose=0, callbacks=callbacks)
    return model


def read_events(directory):
    events = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0,
                                                             "histograms": 0, "images": 0})
    events.Reload()
    return events


def test_logged_scalars_equal_an_independent_computation(tmp_path):
    callback = StateSpaceCallback((X_VALID, Y_VALID), attach_to=["Conv2D"], log_dir=tmp_path,
                                  batch_size=64)
    reference = Reference()
    fit([callback, reference], epochs=3)
    events = read_events(tmp_path / "validation")
    assert set(events.Tags()["scalars"]) == {
        f"state_space/{kind}/{name}_states" for kind in LAYER_KINDS
        for name in CONVS} | {f"state_space/{tag}" for tag in ("network_efficiency", "accuracy",
                                                                 "aIQ", "epoch")}
    assert len(callback.history) == 3
    for probe in (f"{name}_states" for name in CONVS):
        for kind, index in (("efficiency", 0), ("unique_states", 1), ("states", 2)):
            tag = f"state_space/{kind}/{probe}"
            logged = events.Scalars(tag)
            assert [event.step for event in logged] == [0, 1, 2]
            expected = [epoch["layers"][probe][index] for epoch in reference.epochs]
            assert [event.value for event in logged] == pytest.approx(expected, rel=1e-6)
    assert [e.value for e in events.Scalars("state_space/states/conv_1_states")] == [
        120 * 24 * 24] * 3
    for tag, key in (("network_efficiency", "network"), ("accuracy", "accuracy"),
                     ("aIQ", "aIQ")):
        logged = events.Scalars(f"state_space/{tag}")
        assert [event.step for event in logged] == [0, 1, 2]
        assert [event.value for event in logged] == pytest.approx(
            [epoch[key] for epoch in reference.epochs], rel=1e-6)
    for epoch, report in enumerate(callback.history):
        assert report.epoch == report.step == epoch
        assert reference.epochs[epoch]["logged aIQ"] == report.aIQ  # in the logs of fit
        assert report.network_efficiency == pytest.approx(reference.epochs[epoch]["network"],
                                                          rel=1e-12)
    assert {f"state_space/state_frequency/{n}_states" for n in CONVS} <= set(
        events.Tags()["histograms"])
    assert "state_space/efficiency_over_epochs" in events.Tags()["images"]
    assert callback.reader.counters[0].state_count == 0  # reset after epoch


def test_sits_beside_keras_tensorboard_callback(tmp_path):
    callback = StateSpaceCallback((X_VALID, Y_VALID), attach_to=["conv_3"], log_dir=tmp_path,
                                  log_histograms=False, log_images=False)
    fit([keras.callbacks.TensorBoard(log_dir=str(tmp_path)), callback], epochs=2)
    events = read_events(tmp_path / "validation")
    assert [e.step for e in events.Scalars("state_space/efficiency/conv_3_states")] == [0, 1]
    assert "epoch_loss" in events.Tags()["tensors"]  # Keras' own (tf.summary) scalars
    assert len(list((tmp_path / "validation").glob("events.out.tfevents.*"))) == 2


def test_missing_accuracy_logs_efficiency_and_warns_once(tmp_path):
    callback = StateSpaceCallback(X_VALID, attach_to=["conv_2"], log_dir=tmp_path,
                                  accuracy_key="val_top5", log_histograms=False,
                                  log_images=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit([callback], epochs=2)
    messages = [str(w.message) for w in caught if "StateSpaceCallback" in str(w.message)]
    assert len(messages) == 1 and "'val_top5'" in messages[0]
    tags = read_events(tmp_path / "validation").Tags()["scalars"]
    assert "state_space/efficiency/conv_2_states" in tags
    assert "state_space/aIQ" not in tags and "state_space/accuracy" not in tags
    assert all(report.aIQ is None for report in callback.history)


def test_measurement_leaves_weights_alone(tmp_path):
    model = fit([], epochs=1)
    callback = StateSpaceCallback((X_VALID, Y_VALID), attach_to=["Conv2D", "Dense"],
                                  method="both", log_dir=tmp_path)
    callback.set_model(model)
    callback.on_train_begin()
    before = [w.copy() for w in model.get_weights()]
    predictions = model.predict(X_VALID, verbose=0)
    callback.on_epoch_end(0, {"val_accuracy": 0.5})
    callback.on_train_end()
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(model.predict(X_VALID, verbose=0), predictions)
    assert [layer.name for layer in callback.history[0].layers][:2] == [
        "conv_1_pre_states", "conv_1_states"]


def test_training_is_the_same_with_and_without_the_callback(tmp_path):
    plain = fit([], epochs=2, seed=3)
    callback = StateSpaceCallback((X_VALID, Y_VALID), log_dir=tmp_path)
    watched = fit([callback], epochs=2, seed=3)
    for old, new in zip(plain.get_weights(), watched.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert len(callback.history) == 2


def test_bad_arguments_fail_early(tmp_path):
    data = (X_VALID, Y_VALID)
    with pytest.raises(ValueError, match="in_logs must be one of"):
        StateSpaceCallback(data, in_logs="some")
    with pytest.raises(ValueError, match="x, \\(x, y\\) or"):
        StateSpaceCallback((X_VALID, Y_VALID, None, None))
    with pytest.raises(TypeError, match="cannot read batches again every epoch"):
        StateSpaceCallback(iter([X_VALID]))
    with pytest.raises(ValueError, match="holds no samples"):
        StateSpaceCallback(X_VALID[:0])
    with pytest.raises(ValueError, match="method must be one of"):
        StateSpaceCallback(data, method="inside")
    with pytest.raises(ValueError, match="beta must be a number > 0"):
        StateSpaceCallback(data, beta=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        StateSpaceCallback(data, batch_size=0)
    with pytest.raises(ValueError, match="attach_to is empty"):
        StateSpaceCallback(data, attach_to=[])
    with pytest.raises(TypeError, match="attach_to must be a list"):
        StateSpaceCallback(data, attach_to=[3])
    with pytest.raises(TypeError, match="accuracy_key must be"):
        StateSpaceCallback(data, accuracy_key=1)
    with pytest.raises(ValueError, match=r"\['Conv1D'\] match no layer.*'conv_1'"):
        fit([StateSpaceCallback(data, attach_to=["Conv1D"], log_dir=tmp_path)], epochs=1)
    with pytest.raises(ValueError, match=r"sample shape \(784,\).*\(28, 28, 1\)"):
        fit([StateSpaceCallback(X_VALID.reshape(-1, 784), log_dir=tmp_path)], epochs=1)
    assert not (tmp_path / "validation").exists()  # nothing written before the checks pass
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot write TensorBoard logs"):
        fit([StateSpaceCallback(data, log_dir=tmp_path / "file")], epochs=1)


def test_dataset_validation_data_measures_the_same_as_arrays(tmp_path):
    import tensorflow as tf

    model = fit([], epochs=1)
    dataset = tf.data.Dataset.from_tensor_slices((X_VALID, Y_VALID)).batch(33)
    reports = []
    for data in ((X_VALID, Y_VALID), dataset):
        callback = StateSpaceCallback(data, method="before", log_dir=tmp_path,
                                      accuracy_key=None, log_images=False)
        callback.set_model(model)
        callback.on_train_begin()
        reports.append(callback.measure(0, None))
    assert [layer.name for layer in reports[0].layers] == [f"{n}_pre_states" for n in CONVS]
    assert reports[0].layers == reports[1].layers
    assert reports[0].layers[0].states == 120 * 28 * 28
