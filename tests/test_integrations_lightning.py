"""Real Lightning fits with the StateSpaceCallback, read back from TensorBoard."""

import warnings

import pytest

L = pytest.importorskip("lightning")
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from lightning_helpers import (  # noqa: E402
    SmallConvNet,
    WeightRecorder,
    independent_metrics,
    loaders,
    read_scalars,
)

from tensorstate_callbacks.lightning import StateSpaceCallback  # noqa: E402

PROBES = ["conv_a_post_states", "conv_b_post_states"]


def fit(tmp_path, callback, epochs=3, extra_callbacks=(), model=None, **trainer_options):
    train, valid = loaders()
    logger = [TensorBoardLogger(tmp_path, name="tb", version=0),
              CSVLogger(tmp_path, name="csv", version=0)]
    trainer = L.Trainer(max_epochs=epochs, callbacks=[callback, *extra_callbacks],
                        logger=logger, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", devices=1, enable_checkpointing=False,
                        **trainer_options)
    trainer.fit(model or SmallConvNet(), train, valid)
    return trainer, valid


def test_logged_values_match_independent_computation(tmp_path):
    recorder = WeightRecorder()
    callback = StateSpaceCallback(attach_to=["Conv2d"], accuracy_key="val_acc", beta=2)
    trainer, valid = fit(tmp_path, callback, extra_callbacks=[recorder], num_sanity_val_steps=2)
    scalars, tags = read_scalars(tmp_path / "tb" / "version_0")
    assert len(recorder.snapshots) == 3
    for epoch, snapshot in enumerate(recorder.snapshots):
        step = 6 * (epoch + 1)  # the global step: 6 training batches per epoch
        layers, network, accuracy, aiq = independent_metrics(snapshot, valid)
        for probe, (efficiency, unique, states) in layers.items():
            assert scalars[f"state_space/efficiency/{probe}"][epoch] == (step, pytest.approx(
                efficiency, rel=1e-6))
            assert scalars[f"state_space/unique_states/{probe}"][epoch] == (step, unique)
            # exactly the validation set: nothing from training batches or the sanity check
            assert scalars[f"state_space/states/{probe}"][epoch] == (step, states)
        assert scalars["state_space/network_efficiency"][epoch] == (step, pytest.approx(
            network, rel=1e-6))
        assert scalars["state_space/accuracy"][epoch] == (step, pytest.approx(accuracy, abs=1e-6))
        assert scalars["state_space/aIQ"][epoch] == (step, pytest.approx(aiq, rel=1e-5))
        assert scalars["state_space/epoch"][epoch] == (step, epoch)
    assert [(r.epoch, r.step) for r in callback.history] == [(0, 6), (1, 12), (2, 18)]
    assert "state_space/efficiency_over_epochs" in tags["images"]
    assert "custom_scalars__config__" in tags["tensors"]
    assert {f"state_space/state_frequency/{p}" for p in PROBES} <= set(tags["histograms"])
    csv_text = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text()
    assert "state_space/aIQ" in csv_text and "state_space/efficiency/conv_a_post_states" in csv_text


def test_hooks_removed_after_fit_and_after_a_crash(tmp_path):
    model = SmallConvNet()
    fit(tmp_path, StateSpaceCallback(attach_to=["Conv2d"]), epochs=1, model=model)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert not hasattr(model, "efficiency_layers")

    class Crashes(SmallConvNet):
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 1:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    crashing = Crashes()
    with pytest.raises(RuntimeError, match="boom"):
        fit(tmp_path / "crash", StateSpaceCallback(attach_to=["Conv2d"]), model=crashing)
    assert all(not m._forward_hooks for m in crashing.modules())


class HooksSeen(L.Callback):
    """How many hooks the module's submodules carry at each kind of batch."""

    def __init__(self):
        self.seen = {}

    def _see(self, kind, pl_module):
        count = sum(len(m._forward_hooks) + len(m._forward_pre_hooks)
                    for m in pl_module.modules())
        self.seen.setdefault(kind, set()).add(count)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._see("train", pl_module)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx,
                                  dataloader_idx=0):
        self._see("sanity check" if trainer.sanity_checking else "validation", pl_module)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._see("test", pl_module)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._see("predict", pl_module)


class Predicts(SmallConvNet):
    def test_step(self, batch, batch_idx):
        return self.validation_step(batch, batch_idx)

    def predict_step(self, batch, batch_idx):
        return self(batch[0])


def test_hooks_only_while_measuring(tmp_path):
    """Training steps, the sanity check, an unmeasured test and predict run the
    model without our hooks (PyTorch's fast paths stay on); validation has them."""
    model, seen = Predicts(), HooksSeen()
    trainer, valid = fit(tmp_path, StateSpaceCallback(attach_to=["Conv2d"]), epochs=2,
                         extra_callbacks=[seen], model=model, num_sanity_val_steps=1)
    assert seen.seen["validation"] == {3}  # two probes and the pass hook
    assert seen.seen["train"] == seen.seen["sanity check"] == {0}
    for run in (trainer.test, trainer.predict):
        run(model, valid)
    assert seen.seen["test"] == seen.seen["predict"] == {0}


def test_missing_accuracy_warns_once_and_skips_aiq(tmp_path):
    callback = StateSpaceCallback(attach_to=["conv_b"], accuracy_key="val_acc")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, callback, epochs=3, model=SmallConvNet(log_accuracy=False))
    ours = [w for w in caught if "val_acc" in str(w.message)]
    assert len(ours) == 1 and "aIQ" in str(ours[0].message)
    scalars, _ = read_scalars(tmp_path / "tb" / "version_0")
    assert "state_space/aIQ" not in scalars
    assert [step for step, _ in scalars["state_space/network_efficiency"]] == [6, 12, 18]


def test_resume_continues_history(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    callback = StateSpaceCallback(attach_to=["Conv2d"])
    train, valid = loaders()
    L.Trainer(max_epochs=2, callbacks=[callback, checkpoints], logger=False,
              enable_progress_bar=False, accelerator="cpu").fit(SmallConvNet(), train, valid)
    resumed = StateSpaceCallback(attach_to=["Conv2d"])
    L.Trainer(max_epochs=3, callbacks=[resumed], logger=TensorBoardLogger(tmp_path, name="r"),
              enable_progress_bar=False, accelerator="cpu", enable_checkpointing=False).fit(
        SmallConvNet(), train, valid, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [r.epoch for r in resumed.history] == [0, 1, 2]
    assert resumed.history[0].network_efficiency == callback.history[0].network_efficiency
    scalars, _ = read_scalars(tmp_path / "r" / "version_0")
    assert [step for step, _ in scalars["state_space/network_efficiency"]] == [18]


def test_argument_and_setup_errors(tmp_path):
    for kwargs, match in [({"method": "inside"}, "method"), ({"beta": 0}, "beta"),
                          ({"attach_to": []}, "attach_to"), ({"accuracy_key": 3}, "accuracy_key")]:
        with pytest.raises(ValueError, match=match):
            StateSpaceCallback(**kwargs)
    with pytest.raises(ValueError, match="Linear"):
        fit(tmp_path, StateSpaceCallback(attach_to=["Conv3d"]), epochs=1)


@pytest.mark.parametrize("options, epochs, logged", [
    # (epoch, global step) of each validation; 6 training batches per epoch
    ({"val_check_interval": 0.5}, 2, [(0, 3), (0, 6), (1, 9), (1, 12)]),
    ({"check_val_every_n_epoch": 2}, 4, [(1, 12), (3, 24)]),
])
def test_steps_are_global_steps_and_reports_carry_epochs(tmp_path, options, epochs, logged):
    callback = StateSpaceCallback(attach_to=["Conv2d"])
    fit(tmp_path, callback, epochs=epochs, **options)
    scalars, _ = read_scalars(tmp_path / "tb" / "version_0")
    steps = [step for _, step in logged]
    assert [step for step, _ in scalars["state_space/aIQ"]] == steps
    assert scalars["state_space/epoch"] == [(step, epoch) for epoch, step in logged]
    assert [(report.epoch, report.step) for report in callback.history] == logged
