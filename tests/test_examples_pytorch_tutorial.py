"""The reference docs' PyTorch tutorial runs with this package in its place, and
what it prints equals an independent NumPy computation on the trained model.
The Lightning LeNet-5 example runs and logs to TensorBoard."""

import contextlib
import io
import math
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from reference import Expected, assert_counts_match, packed_states

torch = pytest.importorskip("torch")

EXAMPLES = Path(__file__).parents[1] / "examples"
EXAMPLE = EXAMPLES / "pytorch_tutorial.py"
DOCUMENTED_STATES = {"conv_1_post_states": 5_760_000, "conv_2_post_states": 640_000,
                     "conv_3_post_states": 10_000}


@pytest.fixture(scope="module")
def tutorial():
    """Run the example as ``__main__`` (1 epoch on 2,000 training images; all
    10,000 validation images); return its globals and what it printed."""
    out = io.StringIO()
    env = {"TS_TUTORIAL_EPOCHS": "1", "TS_TUTORIAL_LIMIT": "2000"}
    with mock.patch.dict(os.environ, env), contextlib.redirect_stdout(out):
        names = runpy.run_path(str(EXAMPLE), run_name="__main__")
    return names, out.getvalue()


def printed(pattern, text):
    return [float(value) for value in re.findall(pattern, text)]


def numpy_reference(model, loader):
    """Per conv layer: packed states (np.packbits of output > 0, channels as
    neurons) of every validation image, collected by plain forward hooks."""
    states = {name: [] for name in ("conv_1", "conv_2", "conv_3")}
    handles = [getattr(model, name).register_forward_hook(
        lambda module, inputs, output, name=name: states[name].append(
            packed_states(output.detach().cpu().numpy(), neuron_axis=1)))
        for name in states]
    outputs = []
    with torch.no_grad():
        for x, _ in loader:
            outputs.append(model(x))
    for handle in handles:
        handle.remove()
    return {name: np.concatenate(parts) for name, parts in states.items()}, torch.cat(outputs)


def test_tutorial_prints_the_documented_state_counts(tutorial):
    _, out = tutorial
    counts = dict(re.findall(r"Layer (\w+) number of states: (\d+)", out))
    assert {name: int(value) for name, value in counts.items()} == DOCUMENTED_STATES
    assert re.search(r"Epoch 001/1 \( [\d.]+s\): TrainLoss=[\d.]+", out)


def test_tutorial_metrics_equal_numpy_on_the_trained_model(tutorial):
    names, out = tutorial
    model, valid_dl, probes = names["model"], names["valid_dl"], names["model"].efficiency_layers
    assert names["efficiency_model"] is model
    assert [probe.name for probe in probes] == list(DOCUMENTED_STATES)

    # Capture again, now beside plain hooks that keep every packed state.
    for probe in probes:
        probe.reset_states()
    reference, with_probes = numpy_reference(model, valid_dl)
    efficiencies = []
    for probe, (name, packed) in zip(probes, reference.items()):
        expected = Expected.of_packed(packed, getattr(model, name).out_channels)
        assert probe.state_count == len(packed) == DOCUMENTED_STATES[probe.name]
        assert_counts_match(probe, expected)
        efficiencies.append(expected.efficiency())

    # The printed percentages are these values, rounded to 0.1.
    network = math.prod(efficiencies) ** (1 / 3)
    labels = torch.cat([y for _, y in valid_dl])
    accuracy = (with_probes.argmax(1) == labels).double().mean().item()
    aiq = (network * accuracy**2) ** (1 / 3)
    for pattern, values in [(r"Layer \w+ efficiency: ([\d.]+)%", efficiencies),
                            (r"Network efficiency: ([\d.]+)%", [network]),
                            (r"Network accuracy: ([\d.]+)%", [accuracy]),
                            (r"aIQ: ([\d.]+)%", [aiq])]:
        assert printed(pattern, out) == pytest.approx([100 * v for v in values], abs=0.0501)

    # The probes changed nothing the model computes.
    from tensorstate_callbacks.torch import remove_efficiency_probes

    remove_efficiency_probes(model)
    assert not any(m._forward_hooks for m in model.modules())
    _, without_probes = numpy_reference(model, valid_dl)
    assert torch.equal(with_probes, without_probes)


def test_lightning_example_logs_every_validation_epoch(tmp_path):
    from lightning_helpers import read_scalars

    command = [sys.executable, str(EXAMPLES / "lightning_lenet5.py"), "--epochs", "2",
               "--limit", "400", "--valid-limit", "400", "--logdir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    printed_epochs = re.findall(r"epoch (\d+): (.*)", done.stdout)
    assert [int(epoch) for epoch, _ in printed_epochs] == [0, 1]

    scalars, tags = read_scalars(tmp_path / "lenet5" / "version_0")
    states_per_image = {"model_conv_1_post_states": 576, "model_conv_2_post_states": 64,
                        "model_conv_3_post_states": 1}
    # logged at the global step: 400 images in batches of 200, two steps an epoch
    step_of = {0: 2, 1: 4}
    assert scalars["state_space/epoch"] == [(2, 0), (4, 1)]
    for layer, per_image in states_per_image.items():
        assert scalars[f"state_space/states/{layer}"] == [(2, 400 * per_image),
                                                          (4, 400 * per_image)]
    assert set(tags["histograms"]) == {f"state_space/state_frequency/{layer}"
                                       for layer in states_per_image}
    tags_of = {**{layer: f"state_space/efficiency/{layer}" for layer in states_per_image},
               "network": "state_space/network_efficiency", "accuracy": "state_space/accuracy",
               "aIQ": "state_space/aIQ"}
    for epoch, text in printed_epochs:
        values = {name: float(value) for name, value in re.findall(r"(\w+)=([\d.]+)", text)}
        assert set(values) == set(tags_of)
        for name, tag in tags_of.items():
            assert dict(scalars[tag])[step_of[int(epoch)]] == pytest.approx(values[name],
                                                                            abs=5.1e-4)
