"""The Keras callback's training-time view and its clean-up after failures, in
real model.fit runs: windows of training batches counted from inside fit's own
train step, checked against NumPy on the layers' outputs the test computes
itself before each step, logged at the global step in log_dir/train; the
model's training unchanged; the callback's changes to the model gone after a
validation or a training step fails."""

import textwrap
import warnings

import keras
import numpy as np
import pytest
from reference import Expected
from support import KERAS_SMALL_CONV_NET, run_on_keras_backend
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tensorstate_callbacks.integrations.keras.step_capture import StepCapture
from tensorstate_callbacks.keras import StateSpaceCallback
from tensorstate_callbacks.lenet5_keras import build_lenet5, compile_lenet5, mnist_images

CONVS = ["conv_1", "conv_2", "conv_3"]
BATCH = 50
(X_TRAIN, Y_TRAIN), (X_VALID, Y_VALID) = mnist_images(limit=200)  # 4 training batches an epoch
X_VALID, Y_VALID = X_VALID[:64], Y_VALID[:64]
OUR_ATTRIBUTES = ("train_step", "test_step", "call", "get_metrics_result")


class TrainingBatchOutputs(keras.callbacks.Callback):
    """Before every training step: the convolutions' outputs on the step's batch
    (fit does not shuffle here), with the weights the step is about to use."""

    def __init__(self):
        super().__init__()
        self.outputs = []  # per global step: one array per convolution
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        inputs = X_TRAIN[batch * BATCH:(batch + 1) * BATCH]
        convs = keras.Model(self.model.inputs, [self.model.get_layer(n).output for n in CONVS])
        self.outputs.append([keras.ops.convert_to_numpy(values)
                             for values in convs(inputs, training=True)])


def fit(callbacks, epochs=2, seed=0, **options):
    model = compile_lenet5(build_lenet5(seed=seed), lr=0.01)
    history = model.fit(X_TRAIN, Y_TRAIN, validation_data=(X_VALID, Y_VALID), epochs=epochs,
                        batch_size=BATCH, shuffle=False, verbose=0, callbacks=callbacks,
                        **options)
    return model, history


def test_training_windows_count_the_window_batches_of_fits_own_steps(tmp_path):
    reference = TrainingBatchOutputs()
    watched = StateSpaceCallback(log_dir=tmp_path, log_images=False, train_every_n_steps=3,
                                 train_window=2)
    fit([reference, watched])
    # 4 steps an epoch: windows open at steps 0, 3 and 6; the one at 3 ends with epoch 0
    windows = {2: [0, 1], 4: [3], 8: [6, 7]}
    assert [(report.stage, report.step) for report in watched.history] == [
        ("train", 2), ("train", 4), ("validation", 0), ("train", 8), ("validation", 1)]
    train = [report for report in watched.history if report.stage == "train"]
    for report, (step, batches) in zip(train, windows.items(), strict=True):
        assert report.epoch == (0 if step <= 4 else 1) and report.aIQ is None
        for index, layer in enumerate(report.layers):
            expected = Expected.of_values(
                np.concatenate([reference.outputs[b][index] for b in batches]))
            assert (layer.states, layer.unique_states) == (expected.state_count,
                                                           expected.distinct_count)
            assert layer.efficiency == pytest.approx(expected.efficiency(), rel=1e-12)
    events = EventAccumulator(str(tmp_path / "train"), size_guidance={"scalars": 0})
    events.Reload()
    logged = events.Scalars("state_space/train/efficiency/conv_2_states")
    assert [(e.step, e.value) for e in logged] == [
        (r.step, pytest.approx(r.layers[1].efficiency, rel=1e-6)) for r in train]
    assert not any(tag.startswith("state_space/train")
                   for tag in read_tags(tmp_path / "validation"))


def read_tags(directory):
    events = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    events.Reload()
    return events.Tags()["scalars"]


def test_training_view_changes_nothing_of_the_training(tmp_path):
    plain, plain_history = fit([], seed=5)
    watched = StateSpaceCallback(log_dir=tmp_path, log_images=False, train_every_n_steps=2,
                                 train_window=1)
    model, history = fit([watched], seed=5)
    for old, new in zip(plain.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    for key, values in plain_history.history.items():
        assert history.history[key] == values, key
    assert [r.step for r in watched.history if r.stage == "train"] == [1, 3, 5, 7]
    assert not set(OUR_ATTRIBUTES) & set(vars(model))


def test_steps_continue_across_fits_from_the_optimizer(tmp_path):
    watched = StateSpaceCallback(log_dir=tmp_path, log_images=False, train_every_n_steps=4,
                                 train_window=1)
    model, _ = fit([watched], epochs=1)
    model.fit(X_TRAIN, Y_TRAIN, epochs=1, batch_size=BATCH, verbose=0, callbacks=[watched])
    assert [r.step for r in watched.history if r.stage == "train"] == [1, 5]


class FailAt(keras.callbacks.Callback):
    """Raises in the given hook at the given (epoch, batch)."""

    def __init__(self, hook, epoch, batch):
        super().__init__()
        self.hook, self.when, self._epoch = hook, (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_test_batch_begin(self, batch, logs=None):
        self._fail("test", batch)

    def on_train_batch_begin(self, batch, logs=None):
        self._fail("train", batch)

    def _fail(self, hook, batch):
        if hook == self.hook and (self._epoch, batch) == self.when:
            raise KeyboardInterrupt(f"{hook} batch {batch}")


class FailingValidation(keras.utils.PyDataset):
    """Two validation batches; the second cannot be read once ``failing`` is set."""

    def __init__(self):
        super().__init__()
        self.failing = False

    def __len__(self):
        return 2

    def __getitem__(self, index):
        if self.failing and index == 1:
            raise OSError("the validation data went away")
        return X_VALID[index * 32:(index + 1) * 32], Y_VALID[index * 32:(index + 1) * 32]


class FailFromEpoch(keras.callbacks.Callback):
    def __init__(self, data, epoch):
        super().__init__()
        self.data, self.epoch = data, epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.data.failing = epoch >= self.epoch


def assert_model_is_its_own(model):
    """Nothing of the callback's is left on ``model``: evaluate and fit give
    what a copy of the model gives, and leave it with Keras' own functions."""
    twin = compile_lenet5(build_lenet5(seed=0), lr=0.01)
    twin.set_weights(model.get_weights())
    twin.optimizer.build(twin.trainable_variables)  # momentum and iterations as the model's
    for mine, theirs in zip(model.optimizer.variables, twin.optimizer.variables, strict=True):
        theirs.assign(mine)
    for net in (model, twin):
        net.fit(X_TRAIN, Y_TRAIN, epochs=1, batch_size=BATCH, shuffle=False, verbose=0)
    np.testing.assert_array_equal(model.evaluate(X_VALID, Y_VALID, verbose=0),
                                  twin.evaluate(X_VALID, Y_VALID, verbose=0))
    for mine, theirs in zip(model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert not set(OUR_ATTRIBUTES) & set(vars(model))
    for function in (model.test_function, model.train_function):
        assert not isinstance(getattr(function, "__self__", None), StepCapture)


@pytest.mark.parametrize("failure", ["data", "callback"])
def test_a_validation_that_fails_leaves_the_model_its_own(tmp_path, failure):
    model = compile_lenet5(build_lenet5(seed=0), lr=0.01)
    watched = StateSpaceCallback(log_dir=tmp_path, log_images=False)
    if failure == "data":  # raised inside the compiled test step (tf.data reads it there)
        validation = FailingValidation()
        callbacks, error = [watched, FailFromEpoch(validation, 1)], "went away"
    else:  # raised between two test steps, the callback's changes still in place
        validation, callbacks = (X_VALID, Y_VALID), [FailAt("test", 1, 1), watched]
        error = "test batch 1"
    with pytest.raises(BaseException, match=error):
        model.fit(X_TRAIN, Y_TRAIN, validation_data=validation, epochs=3, batch_size=BATCH,
                  verbose=0, callbacks=callbacks)
    assert [report.epoch for report in watched.history] == [0]
    assert_model_is_its_own(model)
    # the same callback measures again in the next fit, from its first epoch
    model.fit(X_TRAIN, Y_TRAIN, validation_data=(X_VALID, Y_VALID), epochs=1, batch_size=BATCH,
              verbose=0, callbacks=[watched])
    assert [report.epoch for report in watched.history] == [0, 0]
    assert watched.history[-1].layers[0].states == 64 * 24 * 24


def test_a_training_step_that_fails_inside_a_window_leaves_the_model_its_own(tmp_path):
    model = compile_lenet5(build_lenet5(seed=0), lr=0.01)
    watched = StateSpaceCallback(log_dir=tmp_path, log_images=False, train_every_n_steps=1,
                                 train_window=4)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X_TRAIN, Y_TRAIN, epochs=2, batch_size=BATCH, verbose=0,
                  callbacks=[FailAt("train", 1, 2), watched])
    assert [report.step for report in watched.history] == [4]
    assert_model_is_its_own(model)


class ForwardTwice(keras.Model):
    """A Functional model whose own train and test steps run the forward pass twice."""

    def train_step(self, data):
        self(data[0], training=True)
        return super().train_step(data)

    def test_step(self, data):
        self(data[0])
        return super().test_step(data)


def forward_twice(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(6, activation="relu", name="hidden")(inputs)
    model = ForwardTwice(inputs, keras.layers.Dense(2, name="out")(hidden))
    model.compile(loss="mse", optimizer="sgd")
    return model


def test_steps_that_run_the_forward_pass_twice_warn_once_and_train_as_without(tmp_path):
    x = np.random.default_rng(0).random((40, 4)).astype("float32")
    plain, watched_model = forward_twice(1), forward_twice(1)
    plain_history = plain.fit(x, x[:, :2], validation_data=(x, x[:, :2]), epochs=2,
                              batch_size=8, verbose=0)
    watched = StateSpaceCallback(attach_to=["hidden"], log_dir=tmp_path, accuracy_key=None,
                                 train_every_n_steps=2, train_window=1, log_images=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = watched_model.fit(x, x[:, :2], validation_data=(x, x[:, :2]), epochs=2,
                                    batch_size=8, verbose=0, callbacks=[watched])
    messages = [str(w.message) for w in caught if "ran its forward pass 2 times" in str(w.message)]
    assert len(messages) == 2 and "train_step" in messages[0] and "test_step" in messages[1]
    assert watched.history == []
    assert history.history["val_loss"] == plain_history.history["val_loss"]
    for old, new in zip(plain.get_weights(), watched_model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert not set(OUR_ATTRIBUTES) & set(vars(watched_model))


BACKEND_SCRIPT = KERAS_SMALL_CONV_NET + textwrap.dedent("""
    import warnings
    conv = keras.Model(inputs, hidden)
    seen = []

    class Before(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(keras.ops.convert_to_numpy(conv(x[batch * 8:(batch + 1) * 8])))

    watched = StateSpaceCallback(attach_to=["conv"], log_dir={log_dir!r}, log_images=False,
                                 train_every_n_steps=5, train_window=2)
    jax = keras.backend.backend() == "jax"  # its fit holds the weights: no eager call then
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, validation_data=(x, y), epochs=2, batch_size=8, shuffle=False,
                  verbose=0, callbacks=[watched] if jax else [Before(), watched])
    train = [r for r in watched.history if r.stage == "train"]
    if jax:
        assert train == [] and len(watched.history) == 2
        assert sum("cannot count inside fit's training steps" in str(w.message)
                   for w in caught) == 1
    else:
        assert [r.step for r in train] == [2, 7]
        for report, batches in zip(train, [[0, 1], [5, 6]]):
            states = np.concatenate([seen[b] for b in batches]).reshape(-1, 5) > 0
            rows, counts = np.unique(states, axis=0, return_counts=True)
            p = counts / counts.sum()
            assert report.layers[0].states == len(states)
            assert report.layers[0].unique_states == len(rows)
            assert abs(report.layers[0].efficiency - float(-(p * np.log2(p)).sum() / 5)) < 1e-12
    assert not {{"train_step", "test_step", "call"}} & set(vars(model))
    print("backend ok", keras.backend.backend())
""")


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_training_view_on_other_backends(tmp_path, backend):
    """torch: windows counted exactly; JAX: one warning, validation still measured."""
    pytest.importorskip(backend)
    run_on_keras_backend(BACKEND_SCRIPT.format(log_dir=str(tmp_path)), backend)


def test_bad_window_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="train_every_n_steps"):
        StateSpaceCallback(train_every_n_steps=0)
    with pytest.raises(ValueError, match="train_window"):
        StateSpaceCallback(train_window=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        StateSpaceCallback(train_every_n_steps=5, train_window=1)
