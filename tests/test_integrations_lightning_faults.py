"""Lightning runs under the faults the core guards against: forked DataLoader
workers while the probes' counts are spilled to disk, the ``ddp_fork`` strategy
(two forked CPU processes, gloo), probes the user attached before the callback,
and module names that look like paths.  Logged values are checked against an
independent NumPy computation (lightning_helpers.independent_metrics)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

L = pytest.importorskip("lightning")
import torch  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from lightning_helpers import (  # noqa: E402
    SmallConvNet,
    independent_metrics,
    load_weights,
    read_scalars,
    small_data,
)
from reference import Expected, assert_counts_match, assert_reports_of_one_layer  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from tensorstate_callbacks.lightning import StateSpaceCallback  # noqa: E402
from tensorstate_callbacks.torch import attach_probes, build_efficiency_model  # noqa: E402

PROBES = ["conv_a_post_states", "conv_b_post_states"]


def _assert_logged_as_computed(log_dir, snapshots, valid, steps):
    scalars, _ = read_scalars(log_dir)
    for epoch, (snapshot, step) in enumerate(zip(snapshots, steps, strict=True)):
        layers, network, _, _ = independent_metrics(snapshot, valid)
        for probe, (efficiency, unique, states) in layers.items():
            assert scalars[f"state_space/efficiency/{probe}"][epoch] == (
                step, pytest.approx(efficiency, rel=1e-6))
            assert scalars[f"state_space/unique_states/{probe}"][epoch] == (step, unique)
            assert scalars[f"state_space/states/{probe}"][epoch] == (step, states)
        assert scalars["state_space/network_efficiency"][epoch] == (
            step, pytest.approx(network, rel=1e-6))


DATALOADER_WORKERS = """
import json, sys, warnings
import lightning as L
import torch
from torch.utils.data import DataLoader
sys.path.insert(0, sys.argv[2])
from lightning_helpers import SmallConvNet, WeightRecorder, save_weights, small_data
from lightning.pytorch.loggers import TensorBoardLogger
from tensorstate_callbacks import StateSpaceMemoryWarning
from tensorstate_callbacks.lightning import StateSpaceCallback

out = sys.argv[1]
context = torch.multiprocessing.get_context("fork")
# timeout: a worker that never delivers fails the run instead of hanging it
train = DataLoader(small_data(96, 0), batch_size=16, num_workers=2,
                   multiprocessing_context=context, timeout=120)
valid = DataLoader(small_data(48, 1), batch_size=16, num_workers=2,
                   multiprocessing_context=context, timeout=120)
recorder = WeightRecorder()
callback = StateSpaceCallback(attach_to=["Conv2d"], memory_limit=4096)
trainer = L.Trainer(max_epochs=2, callbacks=[callback, recorder],
                    logger=TensorBoardLogger(out, name="tb", version=0),
                    enable_progress_bar=False, enable_model_summary=False,
                    accelerator="cpu", devices=1, enable_checkpointing=False,
                    num_sanity_val_steps=0)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    trainer.fit(SmallConvNet(), train, valid)
save_weights(recorder.snapshots, f"{out}/snapshots.npz")
json.dump({"spilled": any(issubclass(w.category, StateSpaceMemoryWarning) for w in caught)},
          open(f"{out}/result.json", "w"))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method of DataLoader workers")
def test_dataloader_workers_fork_while_counts_are_spilled(tmp_path):
    """Two forked DataLoader workers per loader, a memory cap that spills every
    probe: the logged numbers are exact, and the parent's spill files outlive
    the workers (only the process that made them removes them).  The training
    runs in a script of its own, as users run it: its main process forks the
    workers (not this test process, whose other threads are pytest's)."""
    # short: the workers' sockets live under TMPDIR too (AF_UNIX paths hold 107 bytes)
    spill_root = Path(tempfile.mkdtemp(prefix="ts-fork-", dir="/tmp"))
    script = tmp_path / "workers.py"
    script.write_text(textwrap.dedent(DATALOADER_WORKERS))
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(Path(__file__).parent)],
                          env={**os.environ, "TMPDIR": str(spill_root)}, capture_output=True,
                          text=True, timeout=600)
    shutil.rmtree(spill_root, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["spilled"], "the counts did not spill: the test proved less than it says"
    snapshots = load_weights(tmp_path / "snapshots.npz")
    unordered = DataLoader(small_data(48, 1), batch_size=16)
    _assert_logged_as_computed(tmp_path / "tb" / "version_0", snapshots, unordered,
                               steps=[6, 12])


DDP_FORK = """
import json, sys, warnings
import lightning as L
import torch
sys.path.insert(0, sys.argv[2])
from lightning_helpers import SmallConvNet, loaders, save_weights
from lightning.pytorch.loggers import TensorBoardLogger
from tensorstate_callbacks.lightning import StateSpaceCallback

out = sys.argv[1]
# the parent counts on threads and holds a counter (spilled) before the fork
from tensorstate_callbacks import StateCounter
import numpy as np
parent = StateCounter("parent", memory_limit=4096, threads=2)
warnings.simplefilter("ignore")
parent.add(np.random.default_rng(0).random((1 << 17, 30)) < 0.5)
train, valid = loaders()
callback = StateSpaceCallback(attach_to=["Conv2d"])
trainer = L.Trainer(max_epochs=2, strategy="ddp_fork", accelerator="cpu", devices=2,
                    callbacks=[callback], logger=TensorBoardLogger(out, name="tb", version=0),
                    enable_progress_bar=False, enable_model_summary=False,
                    enable_checkpointing=False, num_sanity_val_steps=0)
model = SmallConvNet()
trainer.fit(model, train, valid)
save_weights([model.state_dict()], f"{out}/final.npz")
json.dump({"history": [[r.epoch, r.step] for r in callback.history],
           "parent": [parent.state_count, parent.distinct_count]}, open(f"{out}/result.json", "w"))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ddp_fork needs fork")
def test_ddp_fork_two_cpu_processes(tmp_path):
    """strategy="ddp_fork" (2 forked CPU processes, gloo) in a process that
    counted on threads and spilled first: the last epoch's logged values equal
    an independent computation over the whole validation set with the final
    weights, and the parent's own counter is intact after the fork."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(DDP_FORK), str(tmp_path),
                           str(Path(__file__).parent)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["history"] == [[0, 3], [1, 6]]  # 96 samples / 2 ranks / 16 a batch
    rows = np.random.default_rng(0).random((1 << 17, 30)) < 0.5
    expected = Expected.of_values(rows)
    assert result["parent"] == [expected.state_count, expected.distinct_count]
    [final] = load_weights(tmp_path / "final.npz")
    valid = DataLoader(small_data(48, 1), batch_size=16)
    layers, network, _, _ = independent_metrics(final, valid)
    scalars, _ = read_scalars(tmp_path / "tb" / "version_0")
    for probe, (efficiency, unique, states) in layers.items():
        assert scalars[f"state_space/states/{probe}"][-1] == (6, states)
        assert scalars[f"state_space/unique_states/{probe}"][-1] == (6, unique)
        assert scalars[f"state_space/efficiency/{probe}"][-1] == (
            6, pytest.approx(efficiency, rel=1e-6))
    assert scalars["state_space/network_efficiency"][-1] == (6, pytest.approx(network, rel=1e-6))


def _conv_outputs(model, x):
    """conv_a and conv_b outputs of SmallConvNet on x, from plain forward hooks."""
    outputs = {}
    handles = [getattr(model, name).register_forward_hook(
        lambda m, i, o, name=name: outputs.__setitem__(name, o.detach().numpy()))
        for name in ("conv_a", "conv_b")]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return outputs


def test_callback_keeps_probes_the_user_attached_before_it(tmp_path):
    """build_efficiency_model before fit: the callback adds probes of its own and
    leaves the user's attached, counting every forward pass (training and
    validation), exactly."""
    model = build_efficiency_model(SmallConvNet(), attach_to=["Conv2d"])
    users = list(model.efficiency_layers)
    callback = StateSpaceCallback(attach_to=["Conv2d"])
    train = DataLoader(small_data(96, 0), batch_size=16)
    valid = DataLoader(small_data(48, 1), batch_size=16)
    L.Trainer(max_epochs=2, callbacks=[callback], logger=False, enable_progress_bar=False,
              enable_model_summary=False, accelerator="cpu", enable_checkpointing=False,
              num_sanity_val_steps=0).fit(model, train, valid)
    assert list(model.efficiency_layers) == users
    assert [p.name for p in users] == PROBES
    samples = 2 * (96 + 48)  # two epochs of training and validation batches
    assert [p.state_count for p in users] == [samples * 6 * 6, samples * 4 * 4]
    for probe in users:  # still attached after fit: they count a new pass exactly
        probe.reset_states()
    x = small_data(40, 2).tensors[0]
    model.eval()
    outputs = _conv_outputs(model, x)
    for probe, name in zip(users, ("conv_a", "conv_b"), strict=True):
        assert_counts_match(probe, Expected.of_values(outputs[name], neuron_axis=1))
    assert callback.history and not callback._probes  # the callback's own are gone


class PathNamedNet(torch.nn.Module):
    """Modules whose names look like absolute paths (add_module refuses only '.')."""

    def __init__(self):
        super().__init__()
        self.add_module("/etc", torch.nn.Conv2d(1, 3, 3))
        self.add_module("/", torch.nn.ReLU())

    def forward(self, x):
        return getattr(self, "/")(getattr(self, "/etc")(x))


def test_module_names_like_paths_stay_inside_storage_path(tmp_path):
    pytest.importorskip("zarr")
    root = tmp_path / "states"
    net = PathNamedNet()
    probes = attach_probes(net, ["Conv2d", "ReLU"], storage_path=root)
    x = small_data(10, 3).tensors[0]
    with torch.no_grad():
        net(x)
        probes.detach()
        conv = getattr(net, "/etc")(x)  # the reference, with the probes gone
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert written and all(root in p.parents for p in written)
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in probes)
    conv_probe, relu_probe = probes  # in model order: "/etc", then "/"
    for probe, values in ((conv_probe, conv), (relu_probe, torch.relu(conv))):
        assert_counts_match(probe, Expected.of_values(values.numpy(), neuron_axis=1))
        np.testing.assert_array_equal(probe.raw_states.shape[0], probe.state_count)


class WideAndNarrow(L.LightningModule):
    """A 45-neuron layer that sees every input row as it is (distinct states
    by the hundred thousand) and a 4-neuron one."""

    def __init__(self):
        super().__init__()
        self.wide = torch.nn.Linear(45, 45)
        self.narrow = torch.nn.Linear(45, 4)
        with torch.no_grad():
            self.wide.weight.copy_(torch.eye(45))
            self.wide.bias.zero_()

    def forward(self, x):
        return self.narrow(self.wide(x))

    def training_step(self, batch, batch_idx):
        return self(batch[0]).square().mean()

    def validation_step(self, batch, batch_idx):
        self(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.narrow.parameters(), lr=0.0)  # the weights stay


def test_full_disk_while_spilling_never_stops_training(tmp_path, small_filesystem, monkeypatch):
    """The wide probe spills onto a full 1 MiB tmpfs in the middle of the
    forward pass: training goes on, that probe is left out with one warning
    naming the spill directory, the narrow probe is logged exactly, every epoch."""
    monkeypatch.setenv("TMPDIR", str(small_filesystem))
    monkeypatch.setattr("tempfile.tempdir", None)  # spill files go to the full disk
    x = torch.randn(200_000, 45, generator=torch.Generator().manual_seed(0))
    valid = DataLoader(torch.utils.data.TensorDataset(x), batch_size=50_000)
    train = DataLoader(torch.utils.data.TensorDataset(x[:8]), batch_size=8)
    model = WideAndNarrow()
    callback = StateSpaceCallback(attach_to=["Linear"], accuracy_key=None,
                                  memory_limit=64 * 1024, log_histograms=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        L.Trainer(max_epochs=2, callbacks=[callback], accelerator="cpu", devices=1,
                  logger=TensorBoardLogger(tmp_path, name="tb", version=0),
                  enable_progress_bar=False, enable_checkpointing=False,
                  num_sanity_val_steps=0).fit(model, train, valid)
    assert [report.epoch for report in callback.history] == [0, 1]
    with torch.no_grad():
        narrow = model.narrow(x).numpy()
    expected = Expected.of_values(narrow, neuron_axis=1)
    assert_reports_of_one_layer(callback.history, "narrow_post_states", expected)
    messages = [str(w.message) for w in caught if "wide_post_states" in str(w.message)]
    left_out = [m for m in messages if "left out of this measurement" in m]
    assert len(left_out) == 1 and str(small_filesystem) in left_out[0]
    assert len([m for m in messages if "forward pass goes on" in m]) == 1
    scalars, _ = read_scalars(tmp_path / "tb" / "version_0")
    assert "state_space/efficiency/wide_post_states" not in scalars
    assert [step for step, _ in scalars["state_space/efficiency/narrow_post_states"]] == [1, 2]
    assert all(not m._forward_hooks for m in model.modules())
