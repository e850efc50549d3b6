"""The tensorstate-callbacks command, run for real, and TensorBoard serving its logs."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tensorstate_callbacks import cli

TINY = ["--epochs", "2", "--limit", "300", "--valid-limit", "200", "--batch-size", "100"]


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "tensorstate_callbacks", *args],
                          capture_output=True, text=True, timeout=timeout)


def printed_table(stdout):
    """The final per-epoch table the demo prints: {epoch: {column: value}}."""
    lines = stdout.split("State space per epoch:")[1].strip().splitlines()
    header = lines[0].split()
    rows = {}
    for line in lines[1:]:
        if not line.strip() or not line.split()[0].isdigit():
            break
        values = line.split()
        rows[int(values[0])] = dict(zip(header[1:], map(float, values[1:])))
    return rows


@pytest.fixture(scope="module", params=["lightning", "keras"])
def demo_run(request, tmp_path_factory):
    pytest.importorskip(request.param)
    logdir = tmp_path_factory.mktemp(request.param)
    done = run_cli("demo", "--framework", request.param, "--logdir", str(logdir), *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    return request.param, logdir, done.stdout


def test_demo_prints_table_and_summary_reads_it_back(demo_run):
    framework, logdir, stdout = demo_run
    table = printed_table(stdout)
    assert sorted(table) == [0, 1]
    done = run_cli("summary", str(logdir), "--format", "json")
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)
    assert len(runs) == 1
    epochs = runs[0]["epochs"]
    assert [row["epoch"] for row in epochs] == [0, 1]
    for row in epochs:
        printed = table[row["epoch"]]
        for column, value in printed.items():
            assert row[column] == pytest.approx(value, abs=6e-5)
    best = max(epochs, key=lambda row: row["aIQ"])
    assert runs[0]["best"]["epoch"] == best["epoch"]
    probes = [c for c in table[0] if c.endswith("states")]
    assert len(probes) == 3


def test_summary_formats(demo_run):
    _, logdir, _ = demo_run
    csv_out = run_cli("summary", str(logdir), "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("run,epoch,") and len(csv_out) == 3
    markdown = run_cli("summary", str(logdir), "--format", "markdown").stdout
    assert "| epoch |" in markdown and "best aIQ" in markdown
    table = run_cli("summary", str(logdir)).stdout
    assert "network_efficiency" in table and "best aIQ" in table


def test_error_exits(tmp_path):
    missing = run_cli("summary", str(tmp_path / "missing"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    empty = run_cli("summary", str(tmp_path))
    assert empty.returncode == 1 and "no state-space metrics" in empty.stderr
    bad = run_cli("demo", "--framework", "jax")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    assert run_cli("demo", "--epochs", "0").returncode == 2
    with pytest.raises(cli.CommandError, match=r"pip install 'tensorstate-callbacks\[keras\]'"):
        cli._require("no_such_module_for_this_test", "keras")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_tensorboard_serves_our_plugins(demo_run):
    framework, logdir, _ = demo_run
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
         "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                plugins = get_json(f"{base}/data/plugins_listing")
                scalar_tags = get_json(f"{base}/data/plugin/scalars/tags")
                if any("state_space/aIQ" in tags for tags in scalar_tags.values()):
                    break
            except OSError:
                pass
            assert time.time() < deadline, "tensorboard did not serve our scalars in time"
            time.sleep(1)
        assert plugins["scalars"]["enabled"] and plugins["custom_scalars"]["enabled"]
        assert plugins["images"]["enabled"]
        run, tags = next((r, t) for r, t in scalar_tags.items() if "state_space/aIQ" in t)
        assert {"state_space/network_efficiency", "state_space/accuracy"} <= set(tags)
        assert sum(tag.startswith("state_space/efficiency/") for tag in tags) == 3
        layout = get_json(f"{base}/data/plugin/custom_scalars/layout")
        charts = [chart["title"] for category in layout["category"] for chart in category["chart"]]
        assert "Layer efficiency" in charts and "Network efficiency and aIQ" in charts
        images = get_json(f"{base}/data/plugin/images/tags")
        assert any("state_space/efficiency_over_epochs" in t for t in images.values())
    finally:
        server.kill()
        server.wait(timeout=30)
