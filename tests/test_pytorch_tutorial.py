"""The reference docs' PyTorch tutorial runs with this package in its place."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
EXAMPLE = Path(__file__).parents[1] / "examples" / "pytorch_tutorial.py"


def test_tutorial_complete_example_runs():
    env = dict(os.environ, TS_TUTORIAL_EPOCHS="1")
    done = subprocess.run([sys.executable, str(EXAMPLE)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for name, count in [("conv_1", 5_760_000), ("conv_2", 640_000), ("conv_3", 10_000)]:
        assert f"Layer {name}_post_states number of states: {count}" in out
    efficiencies = [float(v) for v in re.findall(r"Layer \S+ efficiency: ([\d.]+)%", out)]
    assert len(efficiencies) == 3 and all(0 < e < 100 for e in efficiencies)
    accuracy = float(re.search(r"Network accuracy: ([\d.]+)%", out).group(1))
    aiq = float(re.search(r"aIQ: ([\d.]+)%", out).group(1))
    network = float(re.search(r"Network efficiency: ([\d.]+)%", out).group(1))
    expected = 100 * ((network / 100) * (accuracy / 100) ** 2) ** (1 / 3)
    assert accuracy > 80 and aiq == pytest.approx(expected, abs=0.15)
