"""The Lightning callback's values drive training: ModelCheckpoint and
EarlyStopping monitor them wherever the callback sits in the list, and a bad
accuracy never stops training."""

import warnings

import pytest

L = pytest.importorskip("lightning")
import torch  # noqa: E402
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint  # noqa: E402
from lightning_helpers import SmallConvNet, loaders  # noqa: E402

from tensorstate_callbacks.lightning import StateSpaceCallback  # noqa: E402


def fit(tmp_path, callbacks, epochs=3, model=None):
    train, valid = loaders()
    trainer = L.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(model or SmallConvNet(), train, valid)
    return trainer


@pytest.mark.parametrize("ours_first", [True, False])
def test_model_checkpoint_keeps_the_best_aiq(tmp_path, ours_first):
    ours = StateSpaceCallback(attach_to=["Conv2d"], log_histograms=False, log_images=False)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="state_space/aIQ",
                                 mode="max", save_top_k=1, filename="{epoch}")
    trainer = fit(tmp_path, [ours, checkpoint] if ours_first else [checkpoint, ours])
    scores = [report.aIQ for report in ours.history]
    assert len(scores) == 3
    assert checkpoint.best_model_score.item() == pytest.approx(max(scores), rel=1e-6)
    assert checkpoint.best_model_path.endswith(f"epoch={scores.index(max(scores))}.ckpt")
    metrics = trainer.callback_metrics
    assert metrics["state_space/aIQ"].item() == pytest.approx(scores[-1], rel=1e-6)
    for layer in ours.history[-1].layers:
        assert metrics[f"state_space/efficiency/{layer.name}"].item() == pytest.approx(
            layer.efficiency, rel=1e-6)


@pytest.mark.parametrize("ours_first", [True, False])
def test_early_stopping_on_network_efficiency(tmp_path, ours_first):
    ours = StateSpaceCallback(attach_to=["Conv2d"], log_histograms=False, log_images=False)
    stopper = EarlyStopping(monitor="state_space/network_efficiency", mode="max", patience=0,
                            min_delta=1.0)  # no epoch can improve by 1: stop after the second
    trainer = fit(tmp_path, [ours, stopper] if ours_first else [stopper, ours], epochs=6)
    assert trainer.current_epoch == 2 and len(ours.history) == 2
    assert stopper.stopped_epoch == 1


class PercentAccuracy(SmallConvNet):
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", 100 * (self(x).argmax(1) == y).float().mean())


def test_percent_accuracy_skips_aiq_with_one_warning(tmp_path):
    ours = StateSpaceCallback(attach_to=["Conv2d"], log_histograms=False, log_images=False,
                              progress_bar=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fit(tmp_path, [ours], epochs=2, model=PercentAccuracy())
    ours_warnings = [str(w.message) for w in caught if "outside [0, 1]" in str(w.message)]
    assert len(ours_warnings) == 1 and "'val_acc'" in ours_warnings[0]
    assert [report.aIQ for report in ours.history] == [None, None]
    assert all(report.network_efficiency > 0 for report in ours.history)
    assert "state_space/aIQ" not in trainer.callback_metrics
    assert torch.isclose(trainer.callback_metrics["state_space/network_efficiency"],
                         torch.tensor(ours.history[-1].network_efficiency))
    assert "state_space/network_efficiency" in trainer.progress_bar_metrics


def test_two_callbacks_with_different_layers_in_one_trainer(tmp_path):
    """Each callback owns its probes and its checkpoint state (state_key)."""
    first = StateSpaceCallback(attach_to=["conv_a"], log_histograms=False, log_images=False)
    second = StateSpaceCallback(attach_to=["conv_b"], log_histograms=False, log_images=False)
    assert first.state_key != second.state_key
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    model = SmallConvNet()
    trainer = fit(tmp_path, [first, second, checkpoint], epochs=2, model=model)
    assert [layer.name for layer in first.history[-1].layers] == ["conv_a_post_states"]
    assert [layer.name for layer in second.history[-1].layers] == ["conv_b_post_states"]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    assert saved[first.state_key]["history"][0]["layers"][0]["name"] == "conv_a_post_states"
    assert saved[second.state_key]["history"][0]["layers"][0]["name"] == "conv_b_post_states"
    assert trainer.callback_metrics["state_space/efficiency/conv_b_post_states"].item() == \
        pytest.approx(second.history[-1].layers[0].efficiency, rel=1e-6)
