"""Faults and bad input that must give exact numbers or a clear error (part of
the fault work): configuration, argument types, fork, data files."""

import multiprocessing
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from reference import packed_states, unique_counts

from tensorstate_callbacks import StateCounter
from tensorstate_callbacks.core.counter import parse_bytes


@pytest.mark.parametrize("text, expected", [("1073741824", 1 << 30), ("1e9", 10**9),
                                            ("4GiB", 4 << 30), ("512 MB", 512 * 10**6),
                                            ("1.5g", 15 * 10**8)])
def test_memory_limit_forms(monkeypatch, text, expected):
    assert parse_bytes(text) == expected
    monkeypatch.setenv("TENSORSTATE_MEMORY_LIMIT", text)
    assert StateCounter().memory_limit == expected


@pytest.mark.parametrize("text", ["lots", "", "-5", "0.5", "4GiBs", "nan", "inf"])
def test_unparsable_memory_limit_names_the_variable(monkeypatch, text):
    monkeypatch.setenv("TENSORSTATE_MEMORY_LIMIT", text)
    with pytest.raises(ValueError, match="TENSORSTATE_MEMORY_LIMIT: .*write it like"):
        StateCounter()


def test_bad_axis_and_zero_neurons_leave_the_counter_usable():
    counter = StateCounter()
    x = np.random.default_rng(0).normal(size=(50, 6))
    counter.add(x, 1)
    for axis in (1.0, True, "1"):
        with pytest.raises(TypeError, match="neuron_axis must be an int"):
            counter.add(x, axis)
    with pytest.raises(ValueError, match="num_neurons must be >= 1"):
        counter.add_counts(np.zeros((2, 0), np.uint8), np.array([1, 1]), 0)
    counter.add(x, 1)
    keys, counts = unique_counts(packed_states(np.concatenate([x, x])))
    assert counter.state_count == 100 and counter.distinct_count == len(keys)


def _child_counts(connection, rows):
    counter = StateCounter("child")
    counter.add(rows)  # large: counted on several threads inside the compiled kernel
    connection.send((counter.state_count, counter.distinct_count))


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_forked_child_counts_after_the_parent_counted_on_threads():
    rows = (np.random.default_rng(1).random((1 << 18, 40)) < 0.5).astype(np.float32)
    parent = StateCounter("parent", threads=2)
    parent.add(rows)  # threads ran in the parent before the fork
    expected = (parent.state_count, parent.distinct_count)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_counts, args=(send, rows))
    child.start()
    assert receive.poll(120), "the forked child did not answer within 120 s"
    assert receive.recv() == expected
    child.join(30)
    assert child.exitcode == 0


def test_mnist_is_never_read_from_the_working_directory(tmp_path):
    """A ``mnist/data/mnist.pkl.gz`` in the current directory is not unpickled."""
    pytest.importorskip("importlib.metadata")
    fake = tmp_path / "mnist" / "data"
    fake.mkdir(parents=True)
    (fake / "mnist.pkl.gz").write_bytes(b"not a pickle: loading this would be a bug")
    (tmp_path / "mnist" / "__init__.py").write_text("")
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, "")
        from tensorstate_callbacks.datasets import load_mnist, mnist_available
        if mnist_available():
            (x, y), _ = load_mnist(limit=5)
            print("loaded", x.shape)
        else:
            print("not installed")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={**os.environ})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() in ("loaded (5, 784)", "not installed")
