"""Keras models beyond LeNet: multi-input, shared layers, depthwise-separable,
Sequential without Input, other backends; each against NumPy on activations
the test computes itself with a sub-model."""

import textwrap
import warnings

import numpy as np
import pytest
from reference import packed_states, sorted_rows, unique_counts
from support import run_on_keras_backend

keras = pytest.importorskip("keras")

from tensorstate_callbacks.keras import StateSpaceCallback  # noqa: E402

RNG = np.random.default_rng(7)


def expected_rows(values):
    keys, counts = unique_counts(packed_states(values, neuron_axis=-1))
    return keys, counts


def assert_counter_matches(counter, values):
    keys, counts = expected_rows(values)
    got_keys, got_counts = sorted_rows(*counter.items())
    np.testing.assert_array_equal(got_keys, keys, err_msg=counter.name)
    np.testing.assert_array_equal(got_counts, counts, err_msg=counter.name)


def two_input_model():
    keras.utils.set_random_seed(3)
    image = keras.Input((8, 8, 2), name="image")
    meta = keras.Input((5,), name="meta")
    x = keras.layers.SeparableConv2D(6, 3, name="sep")(image)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    y = keras.layers.Dense(7, activation="relu", name="meta_fc")(meta)
    joined = keras.layers.Concatenate()([x, y])
    out = keras.layers.Dense(3, activation="softmax", name="head")(joined)
    model = keras.Model([image, meta], out)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("form", ["list", "tuple", "dict"])
def test_multi_input_model_in_fit(tmp_path, form):
    model = two_input_model()
    images = RNG.normal(size=(40, 8, 8, 2)).astype("float32")
    meta = RNG.normal(size=(40, 5)).astype("float32")
    labels = RNG.integers(0, 3, size=40)
    x = {"list": [images, meta], "tuple": (images, meta),
         "dict": {"image": images, "meta": meta}}[form]
    callback = StateSpaceCallback((x, labels), attach_to=["sep", "depthwise", "meta_fc"],
                                  log_dir=tmp_path, log_images=False, log_histograms=False)
    model.fit(x, labels, validation_data=(x, labels), epochs=1, batch_size=16, verbose=0,
              callbacks=[callback])
    assert [report.epoch for report in callback.history] == [0]
    counters = {counter.name: counter for counter in callback.reader.counters}
    callback.reader.count(x, batch_size=16)  # the trained weights, as the test sees them
    for layer in ("sep", "depthwise", "meta_fc"):
        values = keras.Model(model.inputs, model.get_layer(layer).output).predict(
            [images, meta], verbose=0)
        assert_counter_matches(counters[f"{layer}_states"], values)


def test_softmax_output_probe_warns_that_it_zeroes_aiq(tmp_path):
    model = two_input_model()
    x = [RNG.normal(size=(20, 8, 8, 2)).astype("float32"),
         RNG.normal(size=(20, 5)).astype("float32")]
    labels = RNG.integers(0, 3, size=20)
    callback = StateSpaceCallback((x, labels), attach_to=["Dense"], log_dir=tmp_path,
                                  log_images=False, log_histograms=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, labels, validation_data=(x, labels), epochs=2, verbose=0,
                  callbacks=[callback])
    messages = [str(w.message) for w in caught if "head_states" in str(w.message)]
    assert len(messages) == 1  # once, though two epochs measured it
    assert "efficiency is 0" in messages[0] and "exclude=" in messages[0]
    assert callback.history[-1].network_efficiency == 0.0


def test_sequential_without_input_is_measured_from_the_first_epoch(tmp_path):
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.layers.Dense(12, activation="relu", name="hidden"),
                              keras.layers.Dense(2, name="out")])
    model.compile(loss="mse", optimizer="sgd")
    x = RNG.normal(size=(30, 4)).astype("float32")
    y = RNG.normal(size=(30, 2)).astype("float32")
    callback = StateSpaceCallback((x, y), attach_to=["hidden"], log_dir=tmp_path,
                                  accuracy_key=None, log_images=False, log_histograms=False)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    assert [report.epoch for report in callback.history] == [0, 1]
    callback.reader.count(x)
    values = keras.Model(model.inputs, model.get_layer("hidden").output).predict(x, verbose=0)
    assert_counter_matches(callback.reader.counters[0], values)
    with pytest.raises(ValueError, match=r"\['nothing'\] match no layer"):
        model2 = keras.Sequential([keras.layers.Dense(3)])
        model2.compile(loss="mse")
        model2.fit(x, y[:, :1].repeat(3, 1), epochs=1, verbose=0,
                   callbacks=[StateSpaceCallback((x, y), attach_to=["nothing"],
                                                 log_dir=tmp_path)])


BACKEND_SCRIPT = textwrap.dedent("""
    import numpy as np, keras
    import tensorstate_callbacks as ts
    from tensorstate_callbacks.keras import StateSpaceCallback
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    hidden = keras.layers.Conv2D(5, 3, activation="relu", name="conv")(inputs)
    out = keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, out)
    x = rng.normal(size=(24, 6, 6, 1)).astype("float32")
    values = keras.ops.convert_to_numpy(keras.Model(inputs, hidden)(x))
    bits = np.packbits(values.reshape(-1, 5) > 0, axis=-1, bitorder="little")
    keys, counts = np.unique(bits, axis=0, return_counts=True)
    if keras.backend.backend() == "jax":  # no side effects in a jitted graph: the reader only
        try:
            ts.build_efficiency_model(model, attach_to=["conv"])
            raise AssertionError("probes inside a JAX model should be refused")
        except NotImplementedError as error:
            assert "StateReader (and the callback) work with any" in str(error)
    else:
        probed = ts.build_efficiency_model(model, attach_to=["conv"])
        probed.predict(x, batch_size=8, verbose=0)
        probe = probed.efficiency_layers[0]
        order = np.lexsort(probe.state_ids().T[::-1])
        assert (probe.state_ids()[order] == keys).all()
        assert (probe.counts()[order] == counts).all()
    model.compile(loss="mse", optimizer="sgd")
    callback = StateSpaceCallback((x, None), attach_to=["conv"], log_dir={log_dir!r},
                                  accuracy_key=None, log_images=False)
    model.fit(x, rng.normal(size=(24, 2)).astype("float32"), epochs=1, verbose=0,
              callbacks=[callback])
    assert callback.history[0].layers[0].states == 24 * 16
    callback.reader.count(x)  # the trained weights, against NumPy on them
    values = keras.ops.convert_to_numpy(keras.Model(inputs, hidden)(x))
    bits = np.packbits(values.reshape(-1, 5) > 0, axis=-1, bitorder="little")
    keys, counts = np.unique(bits, axis=0, return_counts=True)
    counter = callback.reader.counters[0]
    order = np.lexsort(counter.state_ids().T[::-1])
    assert (counter.state_ids()[order] == keys).all() and (counter.counts()[order] == counts).all()
    print("backend ok", keras.backend.backend())
""")


@pytest.mark.parametrize("backend", ["torch", "tensorflow", "jax"])
def test_build_efficiency_model_and_callback_on_other_backends(tmp_path, backend):
    """``ts.build_efficiency_model`` routes a Keras model to the Keras integration
    on every backend (under torch a Keras model is also a torch Module); the
    callback measures on every backend, JAX included."""
    pytest.importorskip(backend)
    run_on_keras_backend(BACKEND_SCRIPT.format(log_dir=str(tmp_path)), backend)
