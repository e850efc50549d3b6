"""Two real processes (DDP, gloo) log exactly what one process logs on the same data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import free_port

pytest.importorskip("lightning")

SCRIPT = Path(__file__).with_name("ddp_script.py")


def run(devices, out):
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               PYTHONPATH=str(SCRIPT.parent))
    done = subprocess.run([sys.executable, str(SCRIPT), str(devices), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(Path(out).read_text())


def test_ddp_merge_equals_single_process(tmp_path):
    single = run(1, tmp_path / "single.json")
    merged = run(2, tmp_path / "ddp.json")
    assert len(single) == len(merged) == 1
    one, two = single[0], merged[0]
    assert [layer["name"] for layer in one["layers"]] == [layer["name"] for layer in two["layers"]]
    assert [layer["states"] for layer in two["layers"]] == [60 * 6 * 6, 60 * 4 * 4]
    for a, b in zip(one["layers"], two["layers"]):
        assert (a["states"], a["unique_states"]) == (b["states"], b["unique_states"])
        assert a["efficiency"] == pytest.approx(b["efficiency"], rel=1e-12)
    assert one["network_efficiency"] == pytest.approx(two["network_efficiency"], rel=1e-12)
