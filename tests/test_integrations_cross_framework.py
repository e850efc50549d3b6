"""Keras and PyTorch measure the same states for the same weights and data.

A small conv net is built in Keras, its weights are ported to PyTorch (conv
kernel (kh, kw, in, out) -> (out, in, kh, kw), dense kernel (in, out) -> (out,
in)), and both run in float64 so the two frameworks' activations differ only
by rounding far below the smallest |activation|: no state can flip at 0.
"""



import keras
import numpy as np
import pytest
from reference import sorted_rows

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")

from tensorstate_callbacks import torch as ts_torch  # noqa: E402
from tensorstate_callbacks.keras import StateSpaceCallback, build_efficiency_model  # noqa: E402
from tensorstate_callbacks.lightning import StateSpaceCallback as LightningCallback  # noqa: E402

LAYERS = ["conv_a", "conv_b", "fc"]
# NHWC float64 values that float32 holds exactly (Keras' data adapter casts inputs to float32)
IMAGES = np.random.default_rng(5).normal(size=(64, 10, 10, 3)).astype("float32").astype("float64")


def keras_net():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((10, 10, 3), dtype="float64")
    x = keras.layers.Conv2D(6, 3, name="conv_a", dtype="float64")(inputs)
    x = keras.layers.Activation("relu", dtype="float64")(x)
    x = keras.layers.Conv2D(10, 3, name="conv_b", dtype="float64",
                            bias_initializer=keras.initializers.RandomNormal(seed=1))(x)
    x = keras.layers.GlobalAveragePooling2D(dtype="float64")(x)
    outputs = keras.layers.Dense(5, name="fc", dtype="float64",
                                 bias_initializer=keras.initializers.RandomNormal(seed=2))(x)
    return keras.Model(inputs, outputs)


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_a = torch.nn.Conv2d(3, 6, 3)
        self.relu = torch.nn.ReLU()
        self.conv_b = torch.nn.Conv2d(6, 10, 3)
        self.fc = torch.nn.Linear(10, 5)

    def forward(self, x):
        x = self.conv_b(self.relu(self.conv_a(x)))
        return self.fc(x.mean(dim=(2, 3)))


def ported(model):
    """A TorchNet (float64) carrying the Keras model's weights."""
    net = TorchNet().double().eval()
    with torch.no_grad():
        for name in ("conv_a", "conv_b"):
            kernel, bias = model.get_layer(name).get_weights()
            getattr(net, name).weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1)))
            getattr(net, name).bias.copy_(torch.from_numpy(bias))
        kernel, bias = model.get_layer("fc").get_weights()
        net.fc.weight.copy_(torch.from_numpy(kernel.T))
        net.fc.bias.copy_(torch.from_numpy(bias))
    return net


def nchw():
    return torch.from_numpy(IMAGES.transpose(0, 3, 1, 2).copy())


def test_ported_nets_agree_far_from_zero():
    model = keras_net()
    net = ported(model)
    outputs = keras.Model(model.inputs, [model.get_layer(n).output for n in LAYERS]).predict(
        IMAGES, verbose=0)
    captured = {}
    hooks = [getattr(net, n).register_forward_hook(
        lambda m, i, o, n=n: captured.__setitem__(n, o.detach().numpy())) for n in LAYERS]
    with torch.no_grad():
        net(nchw())
    for hook in hooks:
        hook.remove()
    for name, keras_values in zip(LAYERS, outputs, strict=True):
        torch_values = captured[name]
        if torch_values.ndim == 4:
            torch_values = torch_values.transpose(0, 2, 3, 1)
        np.testing.assert_allclose(torch_values, keras_values, rtol=0, atol=1e-12)
        assert np.abs(keras_values).min() > 1e-9  # so rounding cannot flip a state


def test_keras_and_pytorch_probes_count_the_same_states():
    model = keras_net()
    probed = build_efficiency_model(model, attach_to=["Conv2D", "Dense"])
    probed.predict(IMAGES, batch_size=16, verbose=0)
    net = ts_torch.build_efficiency_model(ported(model), attach_to=["Conv2d", "Linear"])
    with torch.no_grad():
        for batch in torch.split(nchw(), 16):
            net(batch)
    keras_probes = {p.name: p for p in probed.efficiency_layers}
    torch_probes = {p.name: p for p in net.efficiency_layers}
    assert sorted(torch_probes) == [f"{n}_post_states" for n in LAYERS]
    for name in LAYERS:
        kp, tp = keras_probes[f"{name}_states"], torch_probes[f"{name}_post_states"]
        assert kp.state_count == tp.state_count > 0
        for got, want in zip(sorted_rows(kp.state_ids(), kp.counts()),
                             sorted_rows(tp.state_ids(), tp.counts()), strict=True):
            np.testing.assert_array_equal(got, want)
        assert kp.efficiency() == pytest.approx(tp.efficiency(), rel=1e-12)
        assert kp.efficiency() > 0
    ts_torch.remove_efficiency_probes(net)


class LitNet(L.LightningModule):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def validation_step(self, batch, batch_idx):
        self.log("val_acc", 0.5)
        return self.net(batch[0])


def test_keras_and_lightning_callbacks_log_the_same_efficiencies(tmp_path):
    model = keras_net()
    keras_callback = StateSpaceCallback(IMAGES, attach_to=["Conv2D", "Dense"],
                                        log_dir=tmp_path, batch_size=16, log_images=False)
    keras_callback.set_model(model)
    keras_callback.on_train_begin()
    keras_callback.on_epoch_end(0, {"val_accuracy": 0.5})
    keras_callback.on_train_end()

    lightning_callback = LightningCallback(attach_to=["Conv2d", "Linear"], accuracy_key="val_acc")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(nchw()), batch_size=16)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[lightning_callback])
    trainer.validate(LitNet(ported(model)), loader, verbose=False)

    keras_report, = keras_callback.history
    lightning_report, = lightning_callback.history
    lightning_layers = {layer.name: layer for layer in lightning_report.layers}
    for layer in keras_report.layers:
        other = lightning_layers[f"net_{layer.name[:-len('_states')]}_post_states"]
        assert (layer.states, layer.unique_states) == (other.states, other.unique_states)
        assert layer.efficiency == pytest.approx(other.efficiency, rel=1e-12)
    assert keras_report.network_efficiency == pytest.approx(
        lightning_report.network_efficiency, rel=1e-12)
    assert keras_report.aIQ == pytest.approx(lightning_report.aIQ, rel=1e-12)
