"""The PyTorch Lightning ``StateSpaceCallback``.

>>> from tensorstate_callbacks.lightning import StateSpaceCallback
>>> callback = StateSpaceCallback(attach_to=["Conv2d"], accuracy_key="val_acc", beta=2)

During each validation epoch (``fit``'s and ``trainer.validate()``'s, never
the sanity check) probes count the states of the chosen layers; at its end the
callback merges the counts of every DDP rank, computes per-layer efficiency,
network efficiency and aIQ, logs them through every logger of the trainer (the
``state_space/...`` tags of :mod:`tensorstate_callbacks.reporting.report`, at
step ``trainer.global_step``, with ``state_space/epoch`` = the training epoch)
from rank zero, adds TensorBoard extras when a TensorBoardLogger is present,
and resets the probes.  The same values go into ``trainer.callback_metrics``
under their tags, so ``ModelCheckpoint(monitor="state_space/aIQ", mode="max")``
and ``EarlyStopping`` can act on them.  An accuracy aIQ cannot use (missing,
NaN, a percentage) skips aIQ with one warning.

Several validation dataloaders are measured separately: their tags end in
Lightning's ``/dataloader_idx_<k>`` and aIQ weighs ``<accuracy_key>/dataloader_idx_<k>``.
Opt-in: ``trainer.test()`` (``measure_test=True``, tags ``state_space/test/...``)
and a training-time view (``train_every_n_steps``: a window of training
batches every N steps, tags ``state_space/train/...``).  Users of
``import pytorch_lightning`` take the same callback from
:mod:`tensorstate_callbacks.pytorch_lightning`.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from ..core.counter import StateCounter
from ..reporting import tensorboard
from ..reporting.report import EpochReport
from ._accuracy import AccuracyReader
from ._probe import ProbeHealth, labels_of
from ._selection import check_method
from ._validation import (
    ArgumentTypeError,
    check_accuracy_key,
    check_beta,
    check_estimator,
    check_neuron_axis,
    check_positive_int,
    names,
)
from .distributed import detached, merge_across_ranks
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
        measure_test: also measure ``trainer.test()`` (tags
            ``state_space/test/...``, aIQ from ``test_accuracy_key``).
        test_accuracy_key: the ``callback_metrics`` key of the test accuracy.
        train_every_n_steps: also measure the training batches of a window
            every this many optimizer steps (None: never), logged at the
            global step under ``state_space/train/...`` (no aIQ).  The probes
            then see the model in training mode (dropout active).
        train_window: how many training batches one such window counts.

    Several instances with different layers can share one Trainer: each owns
    its probes, and its :attr:`state_key` tells their checkpoint states apart.
    Every measurement is kept in :attr:`history` (also in the main process
    after ``strategy="ddp_spawn"`` or ``"ddp_fork"``, read from rank zero).

    Raises:
        ValueError: a malformed argument (at construction), or ``attach_to``
            matching no module of the model (at ``setup``).

    Example:
        >>> callback = StateSpaceCallback(attach_to=["Conv2d"], beta=2)
        >>> callback.state_key
        "StateSpaceCallback{'attach_to': ['Conv2d'], 'exclude': [], 'method': 'after'}"
    """

    _tensorboard_logger: type = TensorBoardLogger
    """The TensorBoardLogger class of the Lightning package the Trainer comes from."""

    def __init__(self, attach_to=("Conv2d",), exclude=(), method: str = "after",
                 accuracy_key: str | None = "val_acc", beta: float = 2.0,
                 neuron_axis=None, output_selector=None, log_histograms: bool = True,
                 log_images: bool = True, log_hparams: bool = True, progress_bar: bool = False,
                 estimator: str = "plugin", labels=None, drift: bool = False,
                 memory_limit: int | None = None, measure_test: bool = False,
                 test_accuracy_key: str | None = "test_acc",
                 train_every_n_steps: int | None = None, train_window: int = 10):
        self.attach_to = names(attach_to, "attach_to")
        if not self.attach_to:
            raise ValueError("attach_to is empty: name at least one module class or module name")
        self.exclude = names(exclude, "exclude")
        check_method(method)
        self.method = method
        self.accuracy_key = check_accuracy_key(accuracy_key)
        self.test_accuracy_key = check_accuracy_key(test_accuracy_key)
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
        self.memory_limit = memory_limit
        self.measure_test = bool(measure_test)
        self.train_every_n_steps = check_positive_int(train_every_n_steps, "train_every_n_steps")
        self.train_window = check_positive_int(train_window, "train_window", allow_none=False)
        self._history: list[EpochReport] = []
        self.validation_epochs = 0  # validation measurements so far
        self._probes: ProbeList | list = []
        self._health = ProbeHealth()
        self._accuracy_readers = {
            stage: AccuracyReader(key, "trainer.callback_metrics",
                                  "Log the accuracy under that key or pass "
                                  f"{'test_' if stage == 'test' else ''}accuracy_key=...")
            for stage, key in (("validation", self.accuracy_key),
                               ("test", self.test_accuracy_key), ("train", None))}
        self._stage: str | None = None  # what the probes are counting now
        self._dataloader = 0  # the dataloader of the batches being counted
        self._parked: dict[int, dict[str, StateCounter]] = {}  # earlier dataloaders' counts
        self._previous: dict = {}  # {(stage, dataloader): {probe: counts}} for drift
        self._window_left = 0  # training batches left in the open training window
        self._last_window_step = -1
        self._layout_written = False
        self._owner_pid = os.getpid()  # ranks started by ddp_spawn/ddp_fork hand history back
        self._handover = Path(tempfile.gettempdir(), f"tensorstate-history-{uuid.uuid4().hex}.json")

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(attach_to=self.attach_to, exclude=self.exclude,
                                        method=self.method)

    @property
    def history(self) -> list[EpochReport]:
        """Every measurement's report, oldest first (validation, test and training)."""
        if os.getpid() == self._owner_pid and self._handover.exists():
            self._take_handover()
        return self._history

    @history.setter
    def history(self, reports: list[EpochReport]) -> None:
        self._history = list(reports)

    # -- lifecycle -------------------------------------------------------------
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._probes:
            return
        self._probes = attach_probes(pl_module, attach_to=self.attach_to, exclude=self.exclude,
                                     method=self.method, neuron_axis=self.neuron_axis,
                                     output_selector=self.output_selector,
                                     memory_limit=self.memory_limit)
        self._probes.enabled = False
        if self.log_hparams and stage == "fit" and trainer.is_global_zero:
            self._write_hparams(trainer, pl_module)

    def _write_hparams(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before the trainer logs the module's hparams: TensorBoard shows the
        # first hparams of a run, so ours carry the module's too.
        hparams = {**dict(getattr(pl_module, "hparams", {})), **self._hparams()}
        for logger in trainer.loggers:
            if isinstance(logger, self._tensorboard_logger):
                tensorboard.write_hparams(logger.experiment, hparams, extra_metrics=["hp_metric"])

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._remove_probes()
        if os.getpid() != self._owner_pid and trainer.is_global_zero:
            self._hand_over()

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self._remove_probes()

    def _remove_probes(self) -> None:
        if self._probes:
            self._probes.detach()
        self._probes = []
        self._stage = None

    # -- what the probes count -------------------------------------------------
    def _begin(self, stage: str) -> None:
        """Start counting the batches of ``stage`` from nothing."""
        for probe in self._probes:
            probe.reset_states()
        self._parked = {}
        self._dataloader = 0
        self._stage = stage
        self._probes.enabled = True

    def _batch_start(self, batch: Any, dataloader_idx: int) -> None:
        self._probes.new_pass()  # a step may not call the model itself
        if dataloader_idx != self._dataloader:  # dataloaders run one after the other
            self._parked[self._dataloader] = {probe.name: probe.take_counts()
                                              for probe in self._probes}
            self._dataloader = dataloader_idx
        self._probes.labels = labels_of(batch, self.labels)

    # -- validation ------------------------------------------------------------
    @override
    def on_validation_epoch_start(self, trainer: L.Trainer,
                                  pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._probes:
            return
        if self._stage == "train":  # a validation inside a training window ends it
            self._finish(trainer, "train", several=False)
        self._begin("validation")

    @override
    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                  batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._stage == "validation":
            self._batch_start(batch, dataloader_idx)

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stage != "validation":
            return
        self._finish(trainer, "validation", several=len(trainer.num_val_batches) > 1)
        self.validation_epochs += 1

    # -- test (opt-in) ---------------------------------------------------------
    @override
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.measure_test and self._probes:
            self._begin("test")

    @override
    def on_test_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                            batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._stage == "test":
            self._batch_start(batch, dataloader_idx)

    @override
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stage == "test":
            self._finish(trainer, "test", several=len(trainer.num_test_batches) > 1)

    # -- training-time view (opt-in) -------------------------------------------
    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if self.train_every_n_steps is None or not self._probes:
            return
        step = trainer.global_step
        if self._stage is None and step % self.train_every_n_steps == 0 \
                and step != self._last_window_step:
            self._last_window_step = step
            self._window_left = self.train_window
            self._begin("train")
        if self._stage == "train":
            self._batch_start(batch, 0)

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._stage != "train":
            return
        self._window_left -= 1
        if self._window_left == 0:
            self._finish(trainer, "train", several=False)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stage == "train":  # a window longer than the rest of the epoch
            self._finish(trainer, "train", several=False)

    # -- one measurement's end -------------------------------------------------
    def _finish(self, trainer: L.Trainer, stage: str, several: bool) -> None:
        """Report what the probes counted for ``stage``: one report per dataloader."""
        self._probes.enabled = False
        self._stage = None
        measured = {**self._parked,
                    self._dataloader: {probe.name: probe.counter for probe in self._probes}}
        self._parked = {}
        for dataloader, counters in sorted(measured.items()):
            self._report(trainer, stage, dataloader if several else None, counters)
        for probe in self._probes:
            probe.reset_states()

    def _report(self, trainer: L.Trainer, stage: str, dataloader: int | None,
                counters: dict[str, StateCounter]) -> None:
        merged = merge_across_ranks(counters, previous=self._previous.get((stage, dataloader)))
        # every rank: a fault (a full disk while spilling) may hit one rank only
        self._health.check_complete(counters, merged, warnings.warn)
        counters = merged
        self._health.check(counters, rank_zero_warn)
        where = dict(step=trainer.global_step, stage=stage, dataloader=dataloader)
        if not any(counter.state_count for counter in counters.values()):
            rank_zero_warn(f"StateSpaceCallback: the {stage} measurement at step "
                           f"{trainer.global_step} ran no data through {list(counters)}; "
                           "nothing logged for it")
            return
        suffix = "" if dataloader is None else f"/dataloader_idx_{dataloader}"
        accuracy = self._accuracy_readers[stage].read(trainer.callback_metrics, rank_zero_warn,
                                                      suffix)
        key = (stage, dataloader)
        report = EpochReport.from_counters(
            trainer.current_epoch, counters, accuracy, self.beta, estimator=self.estimator,
            extras=True, previous=self._previous.get(key), **where)
        self._health.check_report(report, rank_zero_warn)
        if self.drift:
            self._previous[key] = {name: detached(counter) for name, counter in counters.items()
                                   if counter.state_count}
        self._history.append(report)
        self._publish(trainer, report)
        if trainer.is_global_zero:
            self._log(trainer, report, counters)

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
            shown = {tag: scalars[tag] for tag in (report.tag("network_efficiency"),
                                                   report.tag("aIQ")) if tag in scalars}
            trainer.progress_bar_metrics.update(shown)

    def _log(self, trainer: L.Trainer, report: EpochReport,
             counters: dict[str, StateCounter]) -> None:
        scalars = report.scalars(with_epoch=True)
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=report.step)
            if isinstance(logger, self._tensorboard_logger):
                self._log_tensorboard_extras(logger.experiment, report, counters)

    def _log_tensorboard_extras(self, writer, report: EpochReport,
                                counters: dict[str, StateCounter]) -> None:
        if report.stage != "validation" or report.dataloader not in (None, 0):
            return  # one dashboard: the (first) validation data's
        if not self._layout_written:
            self._layout_written = True
            tensorboard.write_layout(writer, [layer.name for layer in report.layers])
        if self.log_histograms:
            counts = {name: counter.counts() for name, counter in counters.items()
                      if counter.state_count}
            tensorboard.write_state_histograms(writer, counts, report.step)
        if self.log_images:
            tensorboard.write_efficiency_image(
                writer, [past for past in self._history
                         if past.stage == "validation" and past.dataloader == report.dataloader])
        writer.flush()

    def _hparams(self) -> dict:
        return {"state_space/beta": self.beta, "state_space/attach_to": ",".join(self.attach_to),
                "state_space/method": self.method}

    # -- history across processes and checkpoints ------------------------------
    def _hand_over(self) -> None:
        """Rank zero of processes started by ddp_spawn/ddp_fork leaves the
        history where the process that made this callback reads it."""
        partial = self._handover.with_suffix(".partial")
        partial.write_text(json.dumps([report.to_dict() for report in self._history]))
        partial.replace(self._handover)

    def _take_handover(self) -> None:
        data = json.loads(self._handover.read_text())
        self._handover.unlink()
        self._history = [EpochReport.from_dict(item) for item in data]
        self.validation_epochs = sum(report.stage == "validation" for report in self._history)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": [report.to_dict() for report in self._history],
                "validation_epochs": self.validation_epochs}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._history = [EpochReport.from_dict(item) for item in state_dict.get("history", [])]
        self.validation_epochs = state_dict.get("validation_epochs", len(self._history))
