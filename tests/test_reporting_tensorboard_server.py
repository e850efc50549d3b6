"""A real ``tensorboard`` server, on loopback, serves what the demo logged.

One tiny demo per framework writes into one log directory; a TensorBoard
server started on it must list our scalar tags for both runs, the
custom-scalars layout of the callbacks and the efficiency image.
"""

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from support import TINY_DEMO, free_port

FRAMEWORKS = ["lightning", "keras"]


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    for framework in FRAMEWORKS:
        pytest.importorskip(framework)
    root = tmp_path_factory.mktemp("runs")
    for framework in FRAMEWORKS:
        done = subprocess.run(
            [sys.executable, "-m", "tensorstate_callbacks", "demo", "--framework", framework,
             "--logdir", str(root), *TINY_DEMO],
            capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def server(logdir):
    """Base URL of a tensorboard server on 127.0.0.1 that has loaded our scalars."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
         "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, "tensorboard exited early"
            try:
                tags = get_json(f"{base}/data/plugin/scalars/tags")
                if sum("state_space/aIQ" in run_tags for run_tags in tags.values()) == 2:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "tensorboard did not serve both runs in time"
            time.sleep(1)
        yield base
    finally:
        process.kill()
        process.wait(timeout=30)


def test_plugins_are_active(server):
    plugins = get_json(f"{server}/data/plugins_listing")
    for plugin in ("scalars", "custom_scalars", "images", "histograms"):
        assert plugins[plugin]["enabled"], plugin


def test_scalar_tags_of_both_runs(server):
    tags = get_json(f"{server}/data/plugin/scalars/tags")
    ours = {run: run_tags for run, run_tags in tags.items() if "state_space/aIQ" in run_tags}
    assert len(ours) == 2
    assert any(run.startswith("lightning") for run in ours)
    assert any(run.startswith("keras") for run in ours)
    for run_tags in ours.values():
        assert {"state_space/network_efficiency", "state_space/accuracy"} <= set(run_tags)
        probes = sorted(t for t in run_tags if t.startswith("state_space/efficiency/"))
        assert len(probes) == 3, probes


def test_scalar_values_are_served_per_step(server, logdir):
    from tensorstate_callbacks.events import find_runs

    tags = get_json(f"{server}/data/plugin/scalars/tags")
    expected = {run.path: run for run in find_runs(logdir)}
    for run, run_tags in tags.items():
        if "state_space/aIQ" not in run_tags:
            continue
        query = urllib.parse.urlencode({"run": run, "tag": "state_space/aIQ"})
        served = get_json(f"{server}/data/plugin/scalars/scalars?{query}")
        steps = [step for _, step, _ in served]
        # Lightning logs at the global step (3 training batches per epoch), Keras at the epoch
        assert steps == ([3, 6] if run.startswith("lightning") else [0, 1])
        metrics = expected[str(logdir / run)]
        for _, step, value in served:
            assert value == pytest.approx(metrics.steps[step]["aIQ"], rel=1e-6)


def test_custom_scalars_layout(server):
    layout = get_json(f"{server}/data/plugin/custom_scalars/layout")
    charts = {chart["title"]: chart for category in layout["category"]
              for chart in category["chart"]}
    assert "Layer efficiency" in charts and "Network efficiency and aIQ" in charts
    assert charts["Layer efficiency"]["multiline"]["tag"] == ["state_space/efficiency/.*"]


def test_efficiency_image(server):
    images = get_json(f"{server}/data/plugin/images/tags")
    runs = [run for run, run_tags in images.items()
            if "state_space/efficiency_over_epochs" in run_tags]
    assert len(runs) == 2, images


def test_hparams_dashboard_compares_runs_by_aiq(server):
    request = urllib.request.Request(
        f"{server}/data/plugin/hparams/experiment", data=b'{"experimentName": ""}',
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        experiment = json.loads(response.read())
    metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert {"state_space/aIQ", "state_space/network_efficiency"} <= metrics
    hparams = {info["name"] for info in experiment["hparamInfos"]}
    assert "state_space/beta" in hparams or "beta" in hparams
