"""The per-probe statistics both callbacks log (coverage, ceiling, dead and
always-on fractions, mutual information, drift), read back from real
TensorBoard event files and checked against NumPy on activations the test
captured itself; the sample-limit warning."""

import math
import warnings

import numpy as np
import pytest
from reference import packed_states, unique_counts

L = pytest.importorskip("lightning")
keras = pytest.importorskip("keras")
import torch  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from lightning_helpers import SmallConvNet, loaders, read_scalars  # noqa: E402

from tensorstate_callbacks.keras import StateSpaceCallback as KerasCallback  # noqa: E402
from tensorstate_callbacks.lightning import StateSpaceCallback  # noqa: E402


def entropy_bits(counts):
    p = np.asarray(counts, dtype=np.float64) / np.sum(counts)
    return float(-np.sum(p * np.log2(p)))


def expected_statistics(activations, labels_per_state, previous=None):
    """What the callbacks should log for states ``activations`` (rows of neurons)."""
    packed = packed_states(activations)
    keys, counts = unique_counts(packed)
    n, total = activations.shape[1], len(activations)
    fired = activations > 0
    joint = np.concatenate([packed, labels_per_state[:, None].astype(np.uint8)], axis=1)
    _, joint_counts = np.unique(joint, axis=0, return_counts=True)
    _, label_counts = np.unique(labels_per_state, return_counts=True)
    values = {
        "coverage": 1 - np.sum(counts == 1) / total,
        "efficiency_ceiling": min(n, math.log2(total)) / n,
        "dead_fraction": float(np.mean(~fired.any(axis=0))),
        "always_on_fraction": float(np.mean(fired.all(axis=0))),
        "mutual_information": entropy_bits(counts) + entropy_bits(label_counts)
        - entropy_bits(joint_counts),
    }
    if previous is not None:
        old_keys, old_counts = previous
        every = np.unique(np.concatenate([keys, old_keys]), axis=0)

        def distribution(rows, row_counts):
            aligned = np.zeros(len(every))
            for row, count in zip(rows, row_counts):
                aligned[np.all(every == row, axis=1)] = count
            return aligned / aligned.sum()

        p, q = distribution(keys, counts), distribution(old_keys, old_counts)
        h = lambda v: -np.sum(v[v > 0] * np.log2(v[v > 0]))  # noqa: E731
        values["drift"] = float(h((p + q) / 2) - (h(p) + h(q)) / 2)
    return values, (keys, counts)


class Capture(L.Callback):
    """Records conv_b's outputs and the labels of every validation batch (not the sanity check)."""

    def __init__(self):
        self.epochs = []

    def setup(self, trainer, pl_module, stage):
        pl_module.conv_b.register_forward_hook(self._hook)
        self._on = False

    def on_validation_epoch_start(self, trainer, pl_module):
        self._on = not trainer.sanity_checking
        if self._on:
            self.epochs.append(([], []))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self._on:
            self.epochs[-1][1].append(batch[1].numpy())

    def on_validation_epoch_end(self, trainer, pl_module):
        self._on = False

    def _hook(self, module, inputs, output):
        if self._on:
            self.epochs[-1][0].append(output.detach().numpy().copy())


def test_lightning_logs_every_statistic_as_numpy_computes_it(tmp_path):
    train, valid = loaders()
    capture = Capture()
    ours = StateSpaceCallback(attach_to=["conv_b"], log_histograms=False, log_images=False,
                              labels="auto", drift=True)
    trainer = L.Trainer(max_epochs=2, callbacks=[capture, ours], accelerator="cpu",
                        logger=TensorBoardLogger(tmp_path, name="tb"), enable_progress_bar=False,
                        enable_model_summary=False)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        trainer.fit(SmallConvNet(), train, valid)
    scalars, _ = read_scalars(tmp_path / "tb" / "version_0")
    previous = None
    for epoch, (outputs, labels) in enumerate(capture.epochs):
        x = np.concatenate(outputs)  # (B, C, H, W): states per pixel, labels per sample
        rows = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
        per_state = np.repeat(np.concatenate(labels), x.shape[2] * x.shape[3])
        expected, previous = expected_statistics(rows, per_state, previous)
        if epoch == 0:
            assert "drift" not in expected
        for statistic, value in expected.items():
            logged = scalars[f"state_space/{statistic}/conv_b_post_states"]
            step = 6 * (epoch + 1)  # the global step: 6 training batches per epoch
            assert dict(logged)[step] == pytest.approx(value, abs=1e-6), statistic
            layer = ours.history[epoch].layers[0]
            assert getattr(layer, statistic) == pytest.approx(value, abs=1e-12), statistic
    assert len(capture.epochs) == 2


def test_keras_logs_the_statistics_with_labels_from_y(tmp_path):
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    inputs = keras.Input((6, 6, 2))
    hidden = keras.layers.Conv2D(7, 3, activation="relu", name="conv")(inputs)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(hidden))
    model = keras.Model(inputs, out)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  optimizer="sgd", metrics=["accuracy"])
    x = rng.normal(size=(60, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, size=60)
    callback = KerasCallback((x, keras.utils.to_categorical(y, 3)), attach_to=["conv"],
                             log_dir=tmp_path, log_images=False, log_histograms=False,
                             labels=True)
    model.fit(x, keras.utils.to_categorical(y, 3).argmax(1), validation_data=(x, y), epochs=1,
              verbose=0, callbacks=[callback])
    activations = keras.Model(inputs, hidden).predict(x, verbose=0)
    expected, _ = expected_statistics(activations.reshape(-1, 7), np.repeat(y, 16))
    layer = callback.history[0].layers[0]
    for statistic, value in expected.items():
        assert getattr(layer, statistic) == pytest.approx(value, abs=1e-12), statistic


def test_sample_limited_layer_warns_once_with_its_ceiling(tmp_path):
    class Wide(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(8, 64)  # 64 neurons, 48 validation samples: at the ceiling

        def forward(self, x):
            return self.fc(x.flatten(1)[:, :8])

        def training_step(self, batch, batch_idx):
            return self(batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self(batch[0])
            self.log("val_acc", 0.5)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    train, valid = loaders()
    ours = StateSpaceCallback(attach_to=["fc"], log_histograms=False, log_images=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        L.Trainer(max_epochs=2, callbacks=[ours], logger=False, enable_progress_bar=False,
                  enable_model_summary=False, accelerator="cpu",
                  default_root_dir=tmp_path).fit(Wide(), train, valid)
    messages = [str(w.message) for w in caught if "at its ceiling" in str(w.message)]
    assert len(messages) == 1
    ceiling = math.log2(48) / 64
    assert f"{ceiling:.4f}" in messages[0] and "fc_post_states" in messages[0]
    assert ours.history[0].layers[0].efficiency == pytest.approx(ceiling)
    assert ours.history[0].layers[0].sample_limited
