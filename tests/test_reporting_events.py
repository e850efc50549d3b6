"""Event files read back: runs told apart, epoch and step, per-probe statistics,
and real damage (flipped bits, truncation, unreadable and empty files) never
hidden.  Every file here is written by a real TensorBoard writer."""

import os
import time

import numpy as np
import pytest

pytest.importorskip("tensorboardX")
pytest.importorskip("tensorboard")

from tensorboard.compat.tensorflow_stub import errors  # noqa: E402
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New  # noqa: E402

from tensorstate_callbacks.reporting.events import (  # noqa: E402
    LAYER_METRICS,
    find_runs,
    read_event_file,
    read_event_files,
    read_run,
)
from tensorstate_callbacks.reporting.report import EpochReport, LayerStats  # noqa: E402
from tensorstate_callbacks.reporting.tensorboard import open_writer, write_scalars  # noqa: E402
from tensorstate_callbacks.reporting.tfrecord import (  # noqa: E402
    BAD_DATA,
    BAD_LENGTH,
    TRUNCATED,
    frame,
    split_records,
)

f32 = np.float32  # scalars are stored as float32


def report(epoch, step, accuracy, efficiencies, **where):
    """A report whose probes have every per-probe statistic, derived from the efficiency;
    an efficiency below 0.3 is at its ceiling (sample-limited)."""
    values = {name: (e, 10 + i, 100 + i) for i, (name, e) in enumerate(efficiencies.items())}
    extras = {name: {"coverage": e / 2, "efficiency_ceiling": e if e < 0.3 else min(1.0, 2 * e),
                     "dead_fraction": e / 4, "always_on_fraction": e / 8,
                     "mutual_information": e / 3, "drift": e / 5}
              for name, e in efficiencies.items()}
    return EpochReport.from_values(epoch, values, accuracy, beta=2, extras=extras, step=step,
                                   **where)


def event_files(directory):
    return set(directory.glob("events.out.tfevents*")) if directory.exists() else set()


def new_writer(directory):
    """A writer of a new event file in ``directory``, beside those there."""
    if event_files(directory):
        time.sleep(1.1)  # tensorboardX names files by the second
    return open_writer(directory)


def write_run(directory, reports):
    """One real run: a tensorboardX writer of ``directory``; returns its event file."""
    before = event_files(directory)
    writer = new_writer(directory)
    for item in reports:
        write_scalars(writer, item)
    writer.close()
    (new,) = event_files(directory) - before
    return new


def two_validations_per_epoch(accuracies, efficiency=0.4):
    """Epoch e measured at steps 10e+4 and 10e+9 (as val_check_interval=0.5 does)."""
    return [report(i // 2, 10 * (i // 2) + (4 if i % 2 == 0 else 9), accuracy,
                   {"conv_1": efficiency + 0.01 * i, "fc_1": efficiency / 2})
            for i, accuracy in enumerate(accuracies)]


def stored(value):
    return None if value is None else f32(value)


def expected_rows(reports):
    return [{"epoch": r.epoch, "step": r.step,
             **{layer.name: stored(layer.efficiency) for layer in r.layers},
             "network_efficiency": stored(r.network_efficiency),
             "accuracy": stored(r.accuracy), "aIQ": stored(r.aIQ)} for r in reports]


def tensorboard_records(path):
    """The records TensorBoard's reader yields (its own, without TensorFlow): like
    its event loader, it ends at the first record that fails a check."""
    reader, records = PyRecordReader_New(str(path)), []
    while True:
        try:
            reader.GetNext()
        except (errors.OutOfRangeError, errors.DataLossError):
            return records
        records.append(reader.record())


# -- runs, epochs and steps ------------------------------------------------------
def test_two_runs_sharing_a_directory_are_two_runs(tmp_path):
    first = two_validations_per_epoch([0.5, 0.6, 0.9, 0.7])
    second = two_validations_per_epoch([0.3, 0.95], efficiency=0.2)
    shared = tmp_path / "shared"
    files = [write_run(shared, first), write_run(shared, second)]
    alone = write_run(tmp_path / "alone", first[:1])
    keras_own = new_writer(shared)  # Keras' TensorBoard callback beside ours: not a run
    keras_own.add_scalar("epoch_loss", 1.5, 0)
    keras_own.add_scalar("epoch_accuracy", 0.5, 0)
    keras_own.close()

    runs = find_runs(tmp_path)
    assert [run.file for run in runs] == [str(alone), *map(str, files)]
    assert [run.label for run in runs] == [str(alone.parent), str(files[0]), str(files[1])]
    assert len(read_event_files(tmp_path)) == 4
    for run, reports in zip(runs, [first[:1], first, second]):
        assert run.rows() == expected_rows(reports)
        assert run.layers == ["conv_1", "fc_1"] and not run.damaged
    assert (runs[1].best_epoch()["epoch"], runs[1].best_epoch()["step"]) == (1, 14)
    assert (runs[2].best_epoch()["epoch"], runs[2].best_epoch()["step"]) == (0, 9)


def test_logs_without_epoch_scalar_use_the_step_as_epoch(tmp_path):
    writer = open_writer(tmp_path)  # as the callbacks wrote before the epoch had its scalar
    for epoch, aiq in enumerate([0.4, 0.6, 0.5]):
        writer.add_scalar("state_space/efficiency/conv_states", 0.3, epoch)
        writer.add_scalar("state_space/aIQ", aiq, epoch)
    writer.close()
    (run,) = find_runs(tmp_path)
    assert [(row["epoch"], row["step"], row["aIQ"]) for row in run.rows()] == \
        [(0, 0, f32(0.4)), (1, 1, f32(0.6)), (2, 2, f32(0.5))]
    assert run.best_epoch()["epoch"] == 1


def test_tensor_scalars_as_tf_summary_writes_them(tmp_path):
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.util.tensor_util import make_tensor_proto
    from tensorboardX.proto import summary_pb2 as tensorboardx_summary

    writer = open_writer(tmp_path)
    scalars = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"))
    for step, (efficiency, aiq) in enumerate([(0.25, 0.5), (0.375, 0.75)]):
        values = [Summary.Value(tag=tag, tensor=make_tensor_proto(np.float32(value)),
                                metadata=scalars)
                  for tag, value in [("state_space/efficiency/dense_states", efficiency),
                                     ("state_space/aIQ", aiq), ("state_space/epoch", step)]]
        as_written = tensorboardx_summary.Summary.FromString(
            Summary(value=values).SerializeToString())
        writer.file_writer.add_summary(as_written, step)
    writer.close()
    (run,) = find_runs(tmp_path)
    assert [(row["epoch"], row["dense_states"], row["aIQ"]) for row in run.rows()] == \
        [(0, 0.25, 0.5), (1, 0.375, 0.75)]


def test_stages_and_dataloaders_are_runs_of_their_own(tmp_path):
    validation = two_validations_per_epoch([0.5, 0.7])
    others = [report(0, 9, 0.8, {"conv_1": 0.1}, dataloader=1),
              report(1, 9, 0.6, {"conv_1": 0.2}, stage="test"),
              report(0, 3, None, {"conv_1": 0.3}, stage="train"),
              report(0, 9, 0.9, {"conv_1": 0.4}, stage="test", dataloader=0)]
    file = write_run(tmp_path, validation + others)
    runs = read_event_file(file).runs
    assert [(run.stage, run.dataloader) for run in runs] == \
        [("validation", None), ("validation", 1), ("test", None), ("test", 0), ("train", None)]
    assert [run.label for run in find_runs(tmp_path)] == \
        [str(tmp_path), f"{tmp_path} [dataloader 1]", f"{tmp_path} [test]",
         f"{tmp_path} [test, dataloader 0]", f"{tmp_path} [train]"]
    assert runs[0].rows() == expected_rows(validation)
    for run, item in zip(runs[1:], [others[0], others[1], others[3], others[2]]):
        assert run.rows() == expected_rows([item])
    assert read_run(file, "test", 0).rows() == expected_rows([others[3]])
    assert read_run(file, "test", 5).steps == {}


def test_every_per_probe_statistic(tmp_path):
    reports = two_validations_per_epoch([0.5, 0.6, 0.7])
    write_run(tmp_path, reports)
    (run,) = find_runs(tmp_path)
    by_key = {(row["step"], row["probe"]): row for row in run.layer_rows()}
    assert len(by_key) == 2 * len(reports)
    for item in reports:
        for layer in item.layers:
            row = by_key[item.step, layer.name]
            assert row["epoch"] == item.epoch
            for metric in LAYER_METRICS:
                expected = getattr(layer, metric)
                assert row[metric] == (expected if isinstance(expected, int) else f32(expected))
            limited = LayerStats(layer.name, f32(layer.efficiency), 0, 0,
                                 efficiency_ceiling=f32(layer.efficiency_ceiling))
            assert row["sample_limited"] == limited.sample_limited
        for metric in LAYER_METRICS:
            (row,) = [row for row in run.rows(metric) if row["step"] == item.step]
            assert row["conv_1"] == by_key[item.step, "conv_1"][metric]
    assert any(row["sample_limited"] for row in by_key.values())
    assert not all(row["sample_limited"] for row in by_key.values())
    with pytest.raises(ValueError, match="unknown metric 'entropy'; choose one of efficiency"):
        run.rows("entropy")


# -- the TFRecord framing ----------------------------------------------------------
def test_records_of_a_whole_file_are_tensorboards(tmp_path):
    file = write_run(tmp_path, two_validations_per_epoch([0.5, 0.6]))
    records, losses = split_records(file.read_bytes())
    assert losses == []
    assert [record for _, record in records] == tensorboard_records(file)


# -- damage --------------------------------------------------------------------------
REPORTS = two_validations_per_epoch([0.5, 0.9, 0.6, 0.7, 0.65, 0.8])  # best: epoch 0, step 9


def scalars(run):
    return {(step, key): value for step, values in run.steps.items()
            for key, value in values.items()}


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A run's event file and what a whole read of it gives."""
    file = write_run(tmp_path_factory.mktemp("whole"), REPORTS)
    return file.read_bytes(), scalars(read_run(file))


def record_holding(data, text):
    """(offset, length) of the first record whose data contains ``text``."""
    return next((offset, len(record)) for offset, record in split_records(data)[0]
                if text in record)


def test_a_flipped_bit_loses_one_value_and_says_which_steps(tmp_path, logged):
    data, whole = logged
    offset, length = record_holding(data, b"state_space/aIQ")  # the first aIQ: step 4
    damaged = bytearray(data)
    damaged[offset + 12 + length // 2] ^= 0x10
    file = tmp_path / "events.out.tfevents.1.host"
    file.write_bytes(bytes(damaged))

    records = [record for start, record in split_records(data)[0] if start < offset]
    assert tensorboard_records(file) == records  # it stops there: the later epochs are gone

    (run,) = find_runs(tmp_path)
    lost = set(whole) - set(scalars(run))
    assert lost == {(4, "aIQ")}
    assert {key: scalars(run)[key] for key in scalars(run)} == \
        {key: value for key, value in whole.items() if key not in lost}
    end = offset + 16 + length
    assert run.problems == [f"bytes {offset}-{end}: {BAD_DATA}; values logged at step 4 "
                            "may be missing"]
    assert run.damaged and run.best_epoch()["step"] == 9


def test_a_flipped_bit_in_a_length_resumes_at_the_next_record(tmp_path, logged):
    data, whole = logged
    offset, _ = record_holding(data, b"state_space/network_efficiency")
    damaged = bytearray(data)
    damaged[offset] ^= 0x01  # the record's length
    (tmp_path / "events.out.tfevents.1.host").write_bytes(bytes(damaged))
    (run,) = find_runs(tmp_path)
    assert set(whole) - set(scalars(run)) == {(4, "network_efficiency")}
    assert BAD_LENGTH in run.problems[0] and "at step 4" in run.problems[0]


def test_every_single_bit_flip_is_seen_and_no_value_is_wrong(tmp_path, logged):
    data, whole = logged
    file = tmp_path / "events.out.tfevents.1.host"
    rng = np.random.default_rng(0)
    positions = rng.choice(len(data) * 8, size=400, replace=False)
    for position in positions:
        damaged = bytearray(data)
        damaged[position // 8] ^= 1 << (position % 8)
        file.write_bytes(bytes(damaged))
        read = read_event_file(file)
        got = {key: value for run in read.runs for key, value in scalars(run).items()}
        assert len(read.problems) == 1, position
        assert all(whole[key] == value for key, value in got.items()), position
        assert len(set(whole) - set(got)) <= 1, position  # one scalar per record


def test_a_truncated_file_keeps_what_came_before(tmp_path, logged):
    data, whole = logged
    offset, length = record_holding(data, b"state_space/aIQ")
    file = tmp_path / "events.out.tfevents.1.host"
    file.write_bytes(data[:offset + length // 2])
    (run,) = find_runs(tmp_path)
    assert set(scalars(run)) == {key for key in whole
                                 if key[0] == 4 and key[1] not in ("aIQ", "epoch")}
    assert run.problems == [f"bytes {offset}-{offset + length // 2}: {TRUNCATED}; values "
                            "logged after step 4 may be missing"]


def test_a_record_that_is_not_an_event(tmp_path, logged):
    data, whole = logged
    offset, length = record_holding(data, b"state_space/aIQ")
    end = offset + 16 + length
    file = tmp_path / "events.out.tfevents.1.host"
    garbage = frame(b"\xff\xff not a protocol buffer")
    file.write_bytes(data[:end] + garbage + data[end:])
    (run,) = find_runs(tmp_path)
    assert scalars(run) == whole
    assert run.problems == [f"bytes {end}-{end + len(garbage)}: a record that is not an "
                            "event was skipped; values logged at step 4 may be missing"]


def unreadable_file(path, how):
    if how == "dangling symlink":
        path.symlink_to(path.parent / "moved-away")
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads a file whatever its mode")
        path.write_bytes(b"")
        path.chmod(0)


@pytest.mark.parametrize("how", ["dangling symlink", "mode 000"])
def test_unreadable_and_empty_files_are_named(tmp_path, logged, how):
    data, whole = logged
    (tmp_path / "events.out.tfevents.1.host").write_bytes(data)
    unreadable_file(tmp_path / "events.out.tfevents.2.host", how)
    (tmp_path / "events.out.tfevents.3.host").write_bytes(b"")
    files = read_event_files(tmp_path)
    assert [len(read.runs) for read in files] == [1, 0, 0]
    assert scalars(files[0].runs[0]) == whole and files[0].problems == []
    reason = "No such file or directory" if how == "dangling symlink" else "Permission denied"
    assert files[1].problems == [f"could not be read ({reason}); whatever it held is lost"]
    assert files[2].problems[0].startswith("is empty (0 bytes)")
