"""The reference docs' Tensorflow tutorial runs as written and counts the documented states."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reference import Expected, assert_counts_match

import tensorstate_callbacks as ts
from tensorstate_callbacks.lenet5_keras import build_lenet5, mnist_images

EXAMPLE = Path(__file__).parents[1] / "examples" / "tensorflow_tutorial.py"
DOCUMENTED_STATES = {"conv_1_states": 5_760_000, "conv_2_states": 640_000,
                     "conv_3_states": 10_000}


def test_complete_example_runs_and_prints_the_documented_state_counts():
    env = {**os.environ, "TS_TUTORIAL_EPOCHS": "1", "TS_TUTORIAL_LIMIT": "1000"}
    result = subprocess.run([sys.executable, str(EXAMPLE)], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    counts = dict(re.findall(r"Layer (\w+) number of states: (\d+)", out))
    assert {name: int(value) for name, value in counts.items()} == DOCUMENTED_STATES
    efficiencies = [float(v) / 100 for v in re.findall(r"Layer \w+ efficiency: ([\d.]+)%", out)]
    assert len(efficiencies) == 3 and all(0 < e <= 1 for e in efficiencies)
    network = float(re.search(r"Network efficiency: ([\d.]+)%", out).group(1)) / 100
    accuracy = float(re.search(r"Network accuracy: ([\d.]+)%", out).group(1)) / 100
    aiq = float(re.search(r"aIQ: ([\d.]+)%", out).group(1)) / 100
    # the printed values are rounded to 0.1 %
    assert network == pytest.approx(math.prod(efficiencies) ** (1 / 3), abs=2e-3)
    assert aiq == pytest.approx((network * accuracy**2) ** (1 / 3), abs=2e-3)


def test_tutorial_flow_on_10000_images_matches_numpy():
    import keras

    (_, _), (images, _) = mnist_images()
    model = build_lenet5(seed=0)
    efficiency_model = ts.build_efficiency_model(model, attach_to=["Conv2D"], method="after")
    predictions = efficiency_model.predict(images, batch_size=200, verbose=0)
    np.testing.assert_array_equal(predictions, model.predict(images, batch_size=200, verbose=0))
    probes = {probe.name: probe for probe in efficiency_model.efficiency_layers}
    assert {name: probe.state_count for name, probe in probes.items()} == DOCUMENTED_STATES
    for name in ("conv_1", "conv_2", "conv_3"):
        values = keras.Model(model.inputs, model.get_layer(name).output).predict(
            images, batch_size=200, verbose=0)
        assert_counts_match(probes[f"{name}_states"], Expected.of_values(values))
    ts.reset_efficiency_model(efficiency_model)
    assert all(probe.state_count == 0 for probe in probes.values())
