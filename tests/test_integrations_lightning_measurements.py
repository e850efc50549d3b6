"""What the Lightning callback measures besides fit's validation epochs: several
validation dataloaders, ``trainer.validate()``, opt-in ``trainer.test()`` and
training windows; a ``pytorch_lightning`` Trainer; history after ``ddp_spawn``.
Every value is checked against plain hooks and NumPy (lightning_helpers)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reference import Expected

L = pytest.importorskip("lightning")
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from lightning_helpers import (  # noqa: E402
    ConvNetSteps,
    SmallConvNet,
    independent_metrics,
    load_weights,
    loaders,
    read_scalars,
    small_data,
)
from torch.utils.data import DataLoader  # noqa: E402

from tensorstate_callbacks.lightning import StateSpaceCallback  # noqa: E402
from tensorstate_callbacks.reporting.report import EpochReport  # noqa: E402

PROBES = ["conv_a_post_states", "conv_b_post_states"]


class TwoLoaderNet(SmallConvNet):
    """Logs val_acc per validation dataloader (Lightning adds /dataloader_idx_k)
    and test_acc in test."""

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_acc", (self(x).argmax(1) == y).float().mean())


def trainer(tmp_path, callbacks, **options):
    options = {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False,
               "accelerator": "cpu", "devices": 1, "enable_checkpointing": False,
               "logger": TensorBoardLogger(tmp_path, name="tb", version=0), **options}
    return L.Trainer(callbacks=callbacks, **options)


def assert_report_matches(report, expected, with_aiq=True):
    layers, network, accuracy, aiq = expected
    for layer in report.layers:
        efficiency, unique, states = layers[layer.name]
        assert (layer.unique_states, layer.states) == (unique, states)
        assert layer.efficiency == pytest.approx(efficiency, rel=1e-6)
    assert report.network_efficiency == pytest.approx(network, rel=1e-6)
    if with_aiq:
        assert report.accuracy == pytest.approx(accuracy, abs=1e-6)
        assert report.aIQ == pytest.approx(aiq, rel=1e-5)


def test_two_validation_dataloaders_are_measured_apart(tmp_path):
    train, _ = loaders()
    first = DataLoader(small_data(48, 1), batch_size=16)
    second = DataLoader(small_data(32, 7), batch_size=16)
    model, callback = TwoLoaderNet(), StateSpaceCallback(attach_to=["Conv2d"])
    run = trainer(tmp_path, [callback])
    run.fit(model, train, [first, second])  # one epoch: validation ran on the final weights
    reports = callback.history
    assert [(r.dataloader, r.epoch, r.step) for r in reports] == [(0, 0, 6), (1, 0, 6)]
    scalars, _ = read_scalars(tmp_path / "tb" / "version_0")
    for report, loader in zip(reports, [first, second]):
        expected = independent_metrics(model.state_dict(), loader)
        assert_report_matches(report, expected)
        suffix = f"/dataloader_idx_{report.dataloader}"
        assert scalars["state_space/aIQ" + suffix] == [(6, pytest.approx(expected[3], rel=1e-5))]
        for probe in PROBES:
            states = expected[0][probe][2]
            assert scalars[f"state_space/states/{probe}{suffix}"] == [(6, states)]
        assert run.callback_metrics["state_space/aIQ" + suffix].item() == pytest.approx(
            expected[3], rel=1e-5)
    assert "state_space/aIQ" not in scalars  # every tag names its dataloader


def test_validate_is_measured_and_test_only_when_asked(tmp_path):
    train, valid = loaders()
    model = TwoLoaderNet()
    plain, testing = StateSpaceCallback(attach_to=["Conv2d"]), \
        StateSpaceCallback(attach_to=["conv_a"], measure_test=True)
    run = trainer(tmp_path, [plain, testing])
    run.fit(model, train, valid)
    expected = independent_metrics(model.state_dict(), valid)
    run.validate(model, valid)
    assert [(r.stage, r.step) for r in plain.history] == [("validation", 6)] * 2
    assert_report_matches(plain.history[-1], expected)
    run.test(model, valid)
    assert [r.stage for r in plain.history] == ["validation"] * 2  # test is opt-in
    report = testing.history[-1]
    assert (report.stage, report.step, [layer.name for layer in report.layers]) == \
        ("test", 6, ["conv_a_post_states"])
    efficiency, unique, states = expected[0]["conv_a_post_states"]
    assert (report.layers[0].unique_states, report.layers[0].states) == (unique, states)
    assert report.layers[0].efficiency == pytest.approx(efficiency, rel=1e-6)
    assert report.accuracy == pytest.approx(expected[2], abs=1e-6)  # from test_acc
    scalars, _ = read_scalars(tmp_path / "tb" / "version_0")
    assert scalars["state_space/test/efficiency/conv_a_post_states"] == [
        (6, pytest.approx(efficiency, rel=1e-6))]
    # after fit, trainer.current_epoch counts the finished epochs (Lightning's "epoch")
    assert scalars["state_space/test/epoch"] == [(6, 1)]


class TrainingRecorder(L.Callback):
    """Records the conv outputs of the training batches whose index is in ``batches``."""

    def __init__(self, batches):
        self.batches = set(batches)
        self.outputs = {}
        self._handles = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx not in self.batches:
            return
        for name in ("conv_a", "conv_b"):
            self._handles.append(getattr(pl_module, name).register_forward_hook(
                self._recorder((batch_idx, name))))

    def _recorder(self, key):
        def record(module, inputs, output):
            self.outputs[key] = output.detach().numpy().copy()
        return record

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for handle in self._handles:
            handle.remove()
        self._handles = []


def test_training_windows_count_exactly_their_batches(tmp_path):
    train, valid = loaders()  # 6 training batches per epoch
    callback = StateSpaceCallback(attach_to=["Conv2d"], train_every_n_steps=3, train_window=2)
    recorder = TrainingRecorder(batches=[0, 1, 3, 4])
    model = SmallConvNet()
    run = trainer(tmp_path, [recorder, callback])
    run.fit(model, train, valid)
    windows = [r for r in callback.history if r.stage == "train"]
    assert [(r.epoch, r.step) for r in windows] == [(0, 2), (0, 5)]  # logged after the window
    scalars, _ = read_scalars(tmp_path / "tb" / "version_0")
    for report, batches in zip(windows, [(0, 1), (3, 4)]):
        assert report.aIQ is None
        for layer in report.layers:
            name = layer.name.removesuffix("_post_states")
            expected = Expected.of_values(
                np.concatenate([recorder.outputs[(b, name)] for b in batches]), neuron_axis=1)
            assert (layer.unique_states, layer.states) == (expected.distinct_count,
                                                           expected.state_count)
            assert layer.efficiency == pytest.approx(expected.efficiency(), rel=1e-6)
            assert (report.step, pytest.approx(layer.efficiency, rel=1e-6)) in \
                scalars[f"state_space/train/efficiency/{layer.name}"]
    # the validation measurement holds the validation set only
    validation = [r for r in callback.history if r.stage == "validation"]
    assert_report_matches(validation[0], independent_metrics(model.state_dict(), valid))


def test_pytorch_lightning_trainer_gets_everything(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    from tensorstate_callbacks.pytorch_lightning import StateSpaceCallback as PLCallback

    class PLNet(ConvNetSteps, pl.LightningModule):
        pass

    train, valid = loaders()
    model, callback = PLNet(), PLCallback(attach_to=["Conv2d"])
    pl.Trainer(max_epochs=1, callbacks=[callback], enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu", devices=1,
               enable_checkpointing=False,
               logger=pl.loggers.TensorBoardLogger(tmp_path, name="tb", version=0)).fit(
        model, train, valid)
    assert_report_matches(callback.history[-1], independent_metrics(model.state_dict(), valid))
    scalars, tags = read_scalars(tmp_path / "tb" / "version_0")
    assert [step for step, _ in scalars["state_space/aIQ"]] == [6]
    assert "state_space/efficiency_over_epochs" in tags["images"]  # TensorBoard extras
    assert "custom_scalars__config__" in tags["tensors"]


DDP_SPAWN = """
import json, sys
import lightning as L
sys.path.insert(0, sys.argv[2])
from lightning_helpers import SmallConvNet, loaders, save_weights
from tensorstate_callbacks.lightning import StateSpaceCallback

if __name__ == "__main__":
    train, valid = loaders()
    model, callback = SmallConvNet(), StateSpaceCallback(attach_to=["Conv2d"])
    L.Trainer(max_epochs=1, strategy="ddp_spawn", devices=2, accelerator="cpu", logger=False,
              callbacks=[callback],
              enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
              default_root_dir=sys.argv[1]).fit(model, train, valid)
    reports = callback.history
    assert callback.history == reports  # read once, kept
    save_weights([model.state_dict()], f"{sys.argv[1]}/final.npz")
    json.dump([report.to_dict() for report in reports], open(f"{sys.argv[1]}/history.json", "w"))
"""


@pytest.mark.slow
def test_history_reaches_the_main_process_after_ddp_spawn(tmp_path):
    """A training script (its own process, as users run it) fits with ddp_spawn
    on 2 CPU processes; its main process then reads what rank zero measured."""
    script = tmp_path / "spawn.py"
    script.write_text(DDP_SPAWN)
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [EpochReport.from_dict(item)
               for item in json.loads((tmp_path / "history.json").read_text())]
    assert [(r.epoch, r.step) for r in reports] == [(0, 3)]  # 3 steps per rank
    # the main process's model holds rank zero's final weights; both ranks'
    # validation shards together are the whole validation set
    _, valid = loaders()
    [weights] = load_weights(tmp_path / "final.npz")
    assert_report_matches(reports[0], independent_metrics(weights, valid), with_aiq=False)
