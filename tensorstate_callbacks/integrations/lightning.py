"""The PyTorch Lightning ``StateSpaceCallback``.

>>> from tensorstate_callbacks.lightning import StateSpaceCallback
>>> callback = StateSpaceCallback(attach_to=["Conv2d"], accuracy_key="val_acc", beta=2)

During each validation epoch (never training batches, never the sanity check)
probes count the states of the chosen layers; at its end the callback merges
the counts of every DDP rank, computes per-layer efficiency, network
efficiency and aIQ, logs them through every logger of the trainer (the
``state_space/...`` tags of :mod:`tensorstate_callbacks.reporting.report`,
step = validation epoch index) from rank zero, adds TensorBoard extras when a
TensorBoardLogger is present, and resets the probes.  The same values go into
``trainer.callback_metrics`` under their tags, so ``ModelCheckpoint(monitor=
"state_space/aIQ", mode="max")`` and ``EarlyStopping`` can act on them.  An
accuracy aIQ cannot use (missing, NaN, a percentage) skips aIQ with one warning.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from typing_extensions import override

from ..reporting import tensorboard
from ..reporting.report import TAG_PREFIX, EpochReport
from ._accuracy import AccuracyReader
from ._probe import ProbeHealth, labels_of, snapshot
from ._selection import check_method
from ._validation import (
    ArgumentTypeError,
    check_accuracy_key,
    check_beta,
    check_estimator,
    check_neuron_axis,
    names,
)
from .distributed import merge_across_ranks
from .torch import ProbeList, attach_probes

__all__ = ["StateSpaceCallback"]


class StateSpaceCallback(L.Callback):
    """Measure the state space of chosen layers every validation epoch.

    Args:
        attach_to: module class names (subclasses match) or module names to probe.
        exclude: module names (or classes) to leave out.
        method: ``'after'`` (outputs), ``'before'`` (inputs) or ``'both'``.
        accuracy_key: key of ``trainer.callback_metrics`` holding the validation
            accuracy in [0, 1]; when absent, efficiency is logged and aIQ skipped.
        beta: aIQ weight of accuracy (> 0).
        neuron_axis: the neuron axis of every probe (an int), or a mapping from
            probe, module or class name patterns to axes; by default each probe
            takes the features of what it sees (see
            :func:`tensorstate_callbacks.torch.attach_probes`).
        output_selector: picks the tensor, or ``(tensor, mask)``, a probe reads
            (a callable, or a mapping like ``neuron_axis``); see
            :class:`tensorstate_callbacks.torch.StateCaptureHook`.
        log_histograms: write a histogram of log2(state occurrences) per probe.
        log_images: write a heat map of efficiency over epochs.
        log_hparams: register the callback's settings with TensorBoard's HParams.
        progress_bar: also show network efficiency and aIQ in the progress bar.
        estimator: the entropy estimator of the efficiencies: ``"plugin"``
            (TensorState's), ``"miller_madow"`` or ``"chao_shen"``.
        labels: how to get one integer label per sample from a validation
            batch, for ``state_space/mutual_information/<probe>``: ``"auto"``
            takes ``batch[1]`` of a tuple or list, ``batch["labels"]`` or
            ``batch["label"]`` of a dict (class indices, or one-hot rows);
            a callable ``f(batch)`` returns them; None (default) uses no
            labels: counting (state, label) pairs costs more than counting
            states (see docs/performance.md).
        drift: also log ``state_space/drift/<probe>``, the Jensen-Shannon
            divergence from the previous measurement (keeps a copy of every
            probe's counts between measurements).
        memory_limit: bytes of count tables per probe before spilling to disk.

    Several instances with different layers can share one Trainer: each owns
    its probes, and its :attr:`state_key` tells their checkpoint states apart.

    Raises:
        ValueError: a malformed argument (at construction), or ``attach_to``
            matching no module of the model (at ``setup``).

    Example:
        >>> callback = StateSpaceCallback(attach_to=["Conv2d"], beta=2)
        >>> callback.state_key
        "StateSpaceCallback{'attach_to': ['Conv2d'], 'exclude': [], 'method': 'after'}"
    """

    def __init__(self, attach_to=("Conv2d",), exclude=(), method: str = "after",
                 accuracy_key: str | None = "val_acc", beta: float = 2.0,
                 neuron_axis=None, output_selector=None, log_histograms: bool = True,
                 log_images: bool = True, log_hparams: bool = True, progress_bar: bool = False,
                 estimator: str = "plugin", labels=None, drift: bool = False,
                 memory_limit: int | None = None):
        self.attach_to = names(attach_to, "attach_to")
        if not self.attach_to:
            raise ValueError("attach_to is empty: name at least one module class or module name")
        self.exclude = names(exclude, "exclude")
        check_method(method)
        self.method = method
        self.accuracy_key = check_accuracy_key(accuracy_key)
        self.beta = check_beta(beta)
        self.neuron_axis = check_neuron_axis(neuron_axis, allow_mapping=True)
        self.output_selector = output_selector
        self.log_histograms = log_histograms
        self.log_images = log_images
        self.log_hparams = log_hparams
        self.progress_bar = progress_bar
        self.estimator = check_estimator(estimator)
        if not (labels is None or labels == "auto" or callable(labels)):
            raise ArgumentTypeError(f"labels must be 'auto', None or a function of the batch, "
                                    f"got {labels!r}")
        self.labels = labels
        self.drift = bool(drift)
        self._previous: dict = {}  # each probe's counts at the last measurement (drift)
        self.memory_limit = memory_limit
        self.history: list[EpochReport] = []
        self.validation_epochs = 0  # index (step) of the next validation epoch
        self._probes: ProbeList | list = []
        self._health = ProbeHealth()
        self._accuracy_reader = AccuracyReader(
            self.accuracy_key, "trainer.callback_metrics",
            "Log the validation accuracy under that key or pass accuracy_key=...")
        self._layout_written = False

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(attach_to=self.attach_to, exclude=self.exclude,
                                        method=self.method)

    # -- lifecycle -------------------------------------------------------------
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._probes:
            return
        self._probes = attach_probes(pl_module, attach_to=self.attach_to, exclude=self.exclude,
                                     method=self.method, neuron_axis=self.neuron_axis,
                                     output_selector=self.output_selector,
                                     memory_limit=self.memory_limit)
        self._set_capturing(False)
        if self.log_hparams:
            self._write_hparams(trainer, pl_module)

    @rank_zero_only
    def _write_hparams(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before the trainer logs the module's hparams: TensorBoard shows the
        # first hparams of a run, so ours carry the module's too.
        hparams = {**dict(getattr(pl_module, "hparams", {})), **self._hparams()}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                tensorboard.write_hparams(logger.experiment, hparams, extra_metrics=["hp_metric"])

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._remove_probes()

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self._remove_probes()

    def _remove_probes(self) -> None:
        if self._probes:
            self._probes.detach()
        self._probes = []

    def _set_capturing(self, enabled: bool) -> None:
        self._probes.enabled = enabled

    @override
    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                  batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._probes:
            self._probes.new_pass()  # validation_step may not call the module itself
            self._probes.labels = None if trainer.sanity_checking else labels_of(batch,
                                                                                   self.labels)

    # -- validation ------------------------------------------------------------
    @override
    def on_validation_epoch_start(self, trainer: L.Trainer,
                                  pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for probe in self._probes:
            probe.reset_states()
        self._set_capturing(True)

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._probes:
            return
        self._set_capturing(False)
        epoch = self.validation_epochs
        self.validation_epochs += 1
        merge_across_ranks([probe.counter for probe in self._probes])
        self._health.check({probe.name: probe for probe in self._probes}, rank_zero_warn)
        if not any(probe.state_count for probe in self._probes):
            rank_zero_warn(
                f"StateSpaceCallback: validation epoch {epoch} ran no data through "
                f"{[probe.name for probe in self._probes]}; nothing logged for it")
            return
        report = EpochReport.from_counters(
            epoch, {probe.name: probe for probe in self._probes},
            self._accuracy(trainer), self.beta, estimator=self.estimator, extras=True,
            previous=self._previous,
        )
        self._health.check_report(report, rank_zero_warn)
        if self.drift:
            self._previous = {probe.name: snapshot(probe.counter) for probe in self._probes
                              if probe.state_count}
        self.history.append(report)
        self._publish(trainer, report)
        self._log(trainer, report)
        for probe in self._probes:
            probe.reset_states()

    def _accuracy(self, trainer: L.Trainer) -> float | None:
        return self._accuracy_reader.read(trainer.callback_metrics, rank_zero_warn)

    def _publish(self, trainer: L.Trainer, report: EpochReport) -> None:
        """Put the report's values in ``trainer.callback_metrics`` under their tags
        (on every rank: the merged counts are the same everywhere), so that
        ModelCheckpoint, EarlyStopping and LR schedulers can monitor them; they
        act in ``on_validation_end``, after every callback's epoch end, so the
        order of the callbacks list does not matter."""
        scalars = report.scalars()
        trainer.callback_metrics.update(
            {tag: torch.tensor(value, dtype=torch.float32) for tag, value in scalars.items()})
        if self.progress_bar:
            shown = {tag: value for tag, value in scalars.items()
                     if tag in (f"{TAG_PREFIX}/network_efficiency", f"{TAG_PREFIX}/aIQ")}
            trainer.progress_bar_metrics.update(shown)

    @rank_zero_only
    def _log(self, trainer: L.Trainer, report: EpochReport) -> None:
        scalars = report.scalars()
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=report.epoch)
            if isinstance(logger, TensorBoardLogger):
                self._log_tensorboard_extras(logger.experiment, report)

    def _log_tensorboard_extras(self, writer, report: EpochReport) -> None:
        if not self._layout_written:
            self._layout_written = True
            tensorboard.write_layout(writer, [layer.name for layer in report.layers])
        if self.log_histograms:
            counts = {probe.name: probe.counts() for probe in self._probes if probe.state_count}
            tensorboard.write_state_histograms(writer, counts, report.epoch)
        if self.log_images:
            tensorboard.write_efficiency_image(writer, self.history)
        writer.flush()

    def _hparams(self) -> dict:
        return {"state_space/beta": self.beta, "state_space/attach_to": ",".join(self.attach_to),
                "state_space/method": self.method}

    # -- checkpointing ---------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": [report.to_dict() for report in self.history],
                "validation_epochs": self.validation_epochs}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [EpochReport.from_dict(item) for item in state_dict.get("history", [])]
        self.validation_epochs = state_dict.get("validation_epochs", len(self.history))
