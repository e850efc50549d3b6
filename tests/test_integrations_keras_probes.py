"""Keras StateCapture probes and build_efficiency_model, against NumPy references."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from reference import Expected, assert_counts_match, packed_states, sorted_rows

import tensorstate_callbacks as ts
from tensorstate_callbacks import keras as ts_keras
from tensorstate_callbacks.integrations.keras import probes as keras_probes
from tensorstate_callbacks.keras import (
    StateCapture,
    StateReader,
    build_efficiency_model,
    pack_on_device,
    reset_efficiency_model,
)

RNG = np.random.default_rng(7)
IMAGES = RNG.normal(size=(96, 12, 12, 2)).astype("float32")


def functional_net():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((12, 12, 2), name="images")
    x = keras.layers.Conv2D(5, 3, activation="elu", name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="norm_a")(x)
    x = keras.layers.MaxPool2D(name="pool_a")(x)
    x = keras.layers.Conv2D(11, 3, name="conv_b")(x)
    x = keras.layers.Activation("relu", name="relu_b")(x)
    x = keras.layers.Flatten(name="flat")(x)
    outputs = keras.layers.Dense(13, name="fc")(x)
    return keras.Model(inputs, outputs, name="small")


def sequential_net():
    keras.utils.set_random_seed(2)
    return keras.Sequential([
        keras.Input((12, 12, 2)),
        keras.layers.Conv2D(4, 3, name="conv_a"),
        keras.layers.Activation("tanh", name="act"),
        keras.layers.Conv2D(9, 3, name="conv_b"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(3, name="fc"),
    ], name="seq")


def layer_tensor(model, layer_name, where="after"):
    """The NumPy values a probe should see, from a plain Keras model on the layer."""
    layer = model.get_layer(layer_name)
    return keras.Model(model.inputs, layer.output if where == "after" else layer.input).predict(
        IMAGES, verbose=0)


@pytest.mark.parametrize("make", [functional_net, sequential_net])
def test_efficiency_model_predicts_exactly_what_the_model_predicts(make):
    model = make()
    probed = build_efficiency_model(model, attach_to=["Conv2D", "Dense"], method="both")
    expected = model.predict(IMAGES, batch_size=32, verbose=0)
    np.testing.assert_array_equal(probed.predict(IMAGES, batch_size=32, verbose=0), expected)
    assert probed.get_layer("conv_a") is model.get_layer("conv_a")  # shared, same weights
    assert all(probe.state_count > 0 for probe in probed.efficiency_layers)


@pytest.mark.parametrize("make", [functional_net, sequential_net])
@pytest.mark.parametrize("method", ["after", "before"])
def test_probe_counts_equal_numpy(make, method):
    model = make()
    probed = build_efficiency_model(model, attach_to=["Conv2D", "fc"], method=method)
    probed.predict(IMAGES, batch_size=40, verbose=0)  # 96 images: a short last batch
    names = ["conv_a", "conv_b", "fc"]
    suffix = "_states" if method == "after" else "_pre_states"
    assert [probe.name for probe in probed.efficiency_layers] == [n + suffix for n in names]
    for name, probe in zip(names, probed.efficiency_layers, strict=True):
        assert_counts_match(probe, Expected.of_values(layer_tensor(model, name, method)))


def test_both_names_order_and_network_efficiency():
    model = functional_net()
    probed = ts.build_efficiency_model(model, attach_to=["conv_b", "Dense"], method="both")
    assert [probe.name for probe in probed.efficiency_layers] == [
        "conv_b_pre_states", "conv_b_states", "fc_pre_states", "fc_states"]
    probed.predict(IMAGES, verbose=0)
    efficiencies = [probe.efficiency() for probe in probed.efficiency_layers]
    expected = float(np.exp(np.mean(np.log(efficiencies))))
    assert ts.network_efficiency(probed) == pytest.approx(expected, rel=1e-12)


def test_exclude_by_name_and_class():
    model = functional_net()
    by_name = build_efficiency_model(model, attach_to=["Conv2D", "Dense"], exclude=["conv_a"])
    assert [probe.name for probe in by_name.efficiency_layers] == ["conv_b_states", "fc_states"]
    by_class = build_efficiency_model(model, attach_to=["Conv2D", "Dense"], exclude=["Dense"])
    assert [probe.name for probe in by_class.efficiency_layers] == ["conv_a_states",
                                                                    "conv_b_states"]


def test_shared_layer_has_a_probe_per_call_site_and_the_reader_agrees():
    """One probe per call site (``<layer>_call<k>_states`` for k >= 1), as in
    PyTorch; sites of different widths never clash; StateReader (the callback's
    path) counts the same states as build_efficiency_model."""
    from tensorstate_callbacks.integrations.keras.reader import StateReader

    first, second = keras.Input((6,)), keras.Input((6,))
    shared = keras.layers.Dense(9, name="shared")
    act = keras.layers.Activation("relu", name="act")  # shared by sites of widths 9 and 4
    narrow = keras.layers.Dense(4, name="narrow")
    summed = keras.layers.Add()([act(shared(first)), shared(second)])
    model = keras.Model([first, second], act(narrow(summed)))
    probed = build_efficiency_model(model, attach_to=["shared", "act"])
    inputs = [RNG.normal(size=(100, 6)).astype("float32") for _ in range(2)]
    np.testing.assert_array_equal(probed.predict(inputs, batch_size=32, verbose=0),
                                  model.predict(inputs, batch_size=32, verbose=0))
    probes = {probe.name: probe for probe in probed.efficiency_layers}
    assert sorted(probes) == ["act_call1_states", "act_states", "shared_call1_states",
                              "shared_states"]
    first_out, second_out = (shared(x).numpy() for x in inputs)
    assert_counts_match(probes["shared_states"], Expected.of_values(first_out))
    assert_counts_match(probes["shared_call1_states"], Expected.of_values(second_out))
    assert_counts_match(probes["act_states"], Expected.of_values(np.maximum(first_out, 0)))
    assert probes["act_call1_states"].num_neurons == 4
    reader = StateReader(model, attach_to=["shared", "act"])
    reader.count(inputs, batch_size=32)
    for counter in reader.counters:
        probe = probes[counter.name]
        assert counter.state_count == probe.state_count
        np.testing.assert_array_equal(sorted_rows(*counter.items())[0],
                                      sorted_rows(probe.state_ids(), probe.counts())[0])


def test_evaluate_fills_probes_and_reset_empties_them():
    model = functional_net()
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    probed = build_efficiency_model(model, attach_to=["conv_b"])
    labels = RNG.integers(0, 13, size=len(IMAGES))
    assert probed.evaluate(IMAGES, labels, batch_size=32, verbose=0, return_dict=True) == \
        pytest.approx(model.evaluate(IMAGES, labels, batch_size=32, verbose=0,
                                     return_dict=True))
    assert_counts_match(probed.efficiency_layers[0],
                        Expected.of_values(layer_tensor(model, "conv_b")))
    reset_efficiency_model(probed)
    assert probed.efficiency_layers[0].state_count == 0
    probed.predict(IMAGES[:10], verbose=0)
    assert probed.efficiency_layers[0].state_count == 10 * 3 * 3


def test_storage_path_keeps_raw_states_in_order(tmp_path):
    model = sequential_net()
    probed = build_efficiency_model(model, attach_to=["conv_b"], storage_path=tmp_path)
    probed.predict(IMAGES, batch_size=25, verbose=0)
    probe = probed.efficiency_layers[0]
    values = layer_tensor(model, "conv_b")
    np.testing.assert_array_equal(probe.raw_states, packed_states(values))
    np.testing.assert_array_equal(probe.states, values.reshape(-1, 9) > 0)
    assert (tmp_path / "conv_b_states").exists()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64", "int32"])
def test_probe_passes_any_dtype_through_and_counts_it(dtype):
    import tensorflow as tf

    probe = StateCapture(f"{dtype}_states")
    tensor = tf.cast(tf.constant(RNG.normal(size=(50, 19)) * 3), dtype)
    out = probe(tensor)
    assert out.dtype == tensor.dtype
    np.testing.assert_array_equal(tf.cast(out, tf.float64).numpy(),
                                  tf.cast(tensor, tf.float64).numpy())
    assert_counts_match(probe, Expected.of_values(tf.cast(tensor, tf.float64).numpy()))


@pytest.mark.parametrize("neurons", [1, 8, 13, 20])
def test_device_packer_matches_numpy(neurons):
    import tensorflow as tf

    values = RNG.normal(size=(6, 5, neurons)).astype("float32")
    values[0, 0] = 0.0
    values[1, 1, 0] = np.nan
    np.testing.assert_array_equal(pack_on_device(tf.constant(values)).numpy(),
                                  packed_states(values))


@pytest.fixture(params=[False, True], ids=["host", "packed-on-device"])
def packing_on_device(request, monkeypatch):
    """Run the GPU code path (states packed by Keras ops in the graph) on the CPU too."""
    monkeypatch.setattr(keras_probes, "backend_sees_gpu", lambda: request.param)
    return request.param


def test_efficiency_model_probes_on_either_path(packing_on_device):
    model = functional_net()
    probed = build_efficiency_model(model, attach_to=["Conv2D", "fc"])
    np.testing.assert_array_equal(probed.predict(IMAGES, batch_size=40, verbose=0),
                                  model.predict(IMAGES, batch_size=40, verbose=0))
    for name, probe in zip(["conv_a", "conv_b", "fc"], probed.efficiency_layers, strict=True):
        assert_counts_match(probe, Expected.of_values(layer_tensor(model, name)))


@pytest.mark.parametrize("as_dataset", [False, True], ids=["array", "tf.data"])
def test_state_reader_counts_equal_numpy(packing_on_device, as_dataset):
    import tensorflow as tf

    model = sequential_net()
    reader = StateReader(model, attach_to=["Conv2D", "Dense"], method="both")
    assert reader.on_device == packing_on_device
    data = (tf.data.Dataset.from_tensor_slices((IMAGES, np.zeros(len(IMAGES)))).batch(40)
            if as_dataset else IMAGES)
    weights = [w.copy() for w in model.get_weights()]
    for _ in range(2):  # count() starts afresh
        reader.count(data, batch_size=40)
    names = [(layer, where) for layer in ("conv_a", "conv_b", "fc")
             for where in ("before", "after")]
    assert [c.name for c in reader.counters] == [
        ts_keras.probe_name(layer, where) for layer, where in names]
    for (layer, where), counter in zip(names, reader.counters, strict=True):
        assert_counts_match(counter, Expected.of_values(layer_tensor(model, layer, where)))
    for old, new in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_subclassed_model_gets_a_clear_error():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(3, 3)

        def call(self, x):
            return self.conv(x)

    model = Subclassed()
    model(IMAGES[:2])
    message = "no symbolic outputs.*supports Functional models.*subclassed model"
    with pytest.raises(ValueError, match=message):
        build_efficiency_model(model, attach_to=["Conv2D"])


def test_unbuilt_sequential_gets_a_clear_error():
    with pytest.raises(ValueError, match="no symbolic outputs.*Sequential models that start"):
        build_efficiency_model(keras.Sequential([keras.layers.Dense(2)]), attach_to=["Dense"])


def test_bad_arguments_list_what_the_model_contains():
    model = functional_net()
    with pytest.raises(ValueError, match=r"\['Conv3D'\] match no layer.*'Conv2D'.*'pool_a'"):
        build_efficiency_model(model, attach_to=["Conv3D", "Conv2D"])
    with pytest.raises(ValueError, match="method must be one of"):
        build_efficiency_model(model, attach_to=["Conv2D"], method="around")
    with pytest.raises(ValueError, match="excluded"):
        build_efficiency_model(model, attach_to=["Conv2D"], exclude=["Conv2D"])
    with pytest.raises(ValueError, match="attach_to is empty"):
        build_efficiency_model(model, attach_to=[])
    with pytest.raises(ValueError, match="attach_to must be a list"):
        build_efficiency_model(model, attach_to=[2])
    with pytest.raises(TypeError, match="expected a keras.Model"):
        build_efficiency_model(object(), attach_to=["Conv2D"])
    with pytest.raises(TypeError, match="neuron_axis must be an int"):
        StateCapture("x", neuron_axis="last")


def test_metrics_before_any_state_raise():
    probed = build_efficiency_model(functional_net(), attach_to=["conv_a"])
    with pytest.raises(ValueError, match="no states counted yet"):
        probed.efficiency_layers[0].efficiency()


TORCH_BACKEND_SCRIPT = textwrap.dedent("""
    import numpy as np, keras
    from tensorstate_callbacks.keras import build_efficiency_model
    assert keras.backend.backend() == "torch"
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(12, 3, name="conv")(inputs)
    outputs = keras.layers.Dense(4, name="fc")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).normal(size=(20, 10, 10, 3)).astype("float32")
    probed = build_efficiency_model(model, attach_to=["Conv2D", "Dense"])
    assert np.array_equal(probed.predict(images, batch_size=8, verbose=0),
                          model.predict(images, batch_size=8, verbose=0))
    conv = keras.Model(inputs, model.get_layer("conv").output).predict(images, verbose=0)
    packed = np.packbits(conv.reshape(-1, 12) > 0, axis=-1, bitorder="little")
    _, counts = np.unique(packed, axis=0, return_counts=True)
    probe = probed.efficiency_layers[0]
    assert probe.state_count == 20 * 8 * 8 and sorted(probe.counts()) == sorted(counts)
    print("torch backend ok", probe.name, probe.distinct_count)

    import tempfile
    from tensorstate_callbacks.keras import StateSpaceCallback
    model.compile(loss="mse", optimizer="sgd")
    callback = StateSpaceCallback(images, attach_to=["conv"], log_dir=tempfile.mkdtemp(),
                                  accuracy_key=None, log_images=False)
    model.fit(images, np.zeros((20, 4)), epochs=2, batch_size=8, verbose=0,
              callbacks=[callback])
    reports = [(r.epoch, r.layers[0].name, r.layers[0].states) for r in callback.history]
    assert reports == [(0, "conv_states", 1280), (1, "conv_states", 1280)], reports
    print("torch backend callback ok")
""")


def test_torch_backend():
    pytest.importorskip("torch")
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    result = subprocess.run([sys.executable, "-c", TORCH_BACKEND_SCRIPT], env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch backend ok conv_states" in result.stdout
    assert "torch backend callback ok" in result.stdout
