"""The same activations through every way into a count, each against one NumPy reference.

Every case (dense ``(B, F)`` and channels-first ``(B, C, H, W)`` activations;
widths 1, 7, 8, 20 (the dense table), 33, 65 (wide keys) and 300; float32,
float16, bool and int8; NaN, +-inf and +-0 among the floats) goes through

* ``StateCounter.add``, ``add_packed`` and ``add_counts`` (several batches),
  ``merge`` of two counters fed halves, and a pickle round trip between halves;
* a PyTorch probe (``ts.build_efficiency_model``), the activations captured
  independently by a forward hook of the test;
* a Keras probe (``build_efficiency_model``) and the Keras ``StateReader``, the
  activations captured independently by a Keras sub-model (channels-first cases
  go to Keras channels-last: the same states);
* and one case through ``merge_across_ranks`` in two gloo processes,

and each count must equal :class:`reference.Expected` exactly
(:func:`reference.assert_counts_match`).  The Keras cases share one model with
one input per case, so that Keras traces once.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import pytest
from reference import Expected, activations, assert_counts_match, packed_states, unique_counts
from support import free_port

import tensorstate_callbacks as ts
from tensorstate_callbacks import StateCounter
from tensorstate_callbacks.core.packing import pack

BATCH = 48
WIDTHS = [1, 7, 8, 20, 33, 65, 300]
DTYPES = ["float32", "float16", "bool", "int8"]
LAYOUTS = {"dense": ((), -1), "channels_first": ((2, 3), 1)}  # (spatial dims, neuron axis)


@dataclass(frozen=True)
class Case:
    layout: str
    width: int
    dtype: str

    def __str__(self):
        return f"{self.layout}-{self.width}-{self.dtype}"

    @property
    def neuron_axis(self) -> int:
        return LAYOUTS[self.layout][1]

    @property
    def shape(self) -> tuple:
        spatial, axis = LAYOUTS[self.layout]
        return (BATCH, self.width, *spatial) if axis == 1 else (BATCH, *spatial, self.width)

    @property
    def values(self) -> np.ndarray:
        return VALUES[self]

    @property
    def expected(self) -> Expected:
        return Expected.of_values(self.values, self.neuron_axis)

    @property
    def channels_last(self) -> np.ndarray:
        """The same states with the neurons on the last axis (what Keras gets)."""
        return np.ascontiguousarray(np.moveaxis(self.values, self.neuron_axis, -1))

    @property
    def layer_name(self) -> str:
        return f"act_{self.layout}_{self.width}_{self.dtype}"


CASES = [Case(layout, width, dtype) for layout in LAYOUTS for width in WIDTHS
         for dtype in DTYPES]
VALUES = {case: activations(np.random.default_rng(index), case.shape, case.dtype,
                            case.neuron_axis) for index, case in enumerate(CASES)}
CUTS = [0, 5, 5, 31]  # batches along the batch axis: empty, 5, empty, 26, 17


def batches(values, cuts=CUTS):
    return np.split(values, cuts)


def halves(values):
    return values[:BATCH // 3], values[BATCH // 3:]


def test_cases_hold_what_they_should():
    assert len(CASES) == len(set(CASES)) == 56
    for case in CASES:
        expected = case.expected
        assert case.values.dtype == np.dtype(case.dtype)
        assert expected.num_neurons == case.width
        assert 1 < expected.distinct_count < expected.state_count  # repeats, not one state
        if case.dtype.startswith("float"):
            assert np.isnan(case.values).any() and np.isinf(case.values).any()
            assert np.signbit(case.values[case.values == 0]).any()
    assert {case.expected.keys.shape[1] for case in CASES} == {1, 3, 5, 9, 38}


def test_the_check_can_fail():
    case = Case("dense", 20, "float32")
    counter = way_add(case)
    assert_counts_match(counter, case.expected)
    for wrong in (Expected(case.expected.keys, case.expected.counts, 21),  # width
                  Expected(case.expected.keys, case.expected.counts + 1, 20),  # counts
                  Expected(case.expected.keys[::-1], case.expected.counts, 20)):  # rows
        with pytest.raises(AssertionError):
            assert_counts_match(counter, wrong)
    counter.add(case.values[:1])  # one state more
    with pytest.raises(AssertionError):
        assert_counts_match(counter, case.expected)


# -- StateCounter ----------------------------------------------------------------------
def way_add(case):
    counter = StateCounter("add")
    for part in batches(case.values):
        counter.add(part, neuron_axis=case.neuron_axis)
    return counter


def way_add_packed(case):
    counter = StateCounter("add_packed")
    for part in batches(case.values):
        counter.add_packed(pack(part, case.neuron_axis), case.width)
    return counter


def way_add_counts(case):
    counter = StateCounter("add_counts")
    for part in halves(case.values):
        keys, counts = unique_counts(packed_states(part, case.neuron_axis))
        counter.add_counts(keys, counts, case.width)
    return counter


def way_merge(case):
    left, right = StateCounter("left"), StateCounter("right")
    first, second = halves(case.values)
    left.add(first, case.neuron_axis)
    right.add(second, case.neuron_axis)
    left.merge(right)
    return left


def way_pickle(case):
    counter = StateCounter("pickled")
    first, second = halves(case.values)
    counter.add(first, case.neuron_axis)
    counter = pickle.loads(pickle.dumps(counter))
    counter.add(second, case.neuron_axis)
    return pickle.loads(pickle.dumps(counter))


COUNTER_WAYS = [way_add, way_add_packed, way_add_counts, way_merge, way_pickle]


@pytest.mark.parametrize("way", COUNTER_WAYS, ids=lambda way: way.__name__[4:])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_counter(case, way):
    assert_counts_match(way(case), case.expected)


# -- PyTorch -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_torch_probe(case, torch):
    class Passthrough(torch.nn.Module):
        def forward(self, x):
            return x.clone()

    model = torch.nn.Sequential(Passthrough())
    seen = []
    hook = model[0].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    ts.build_efficiency_model(model, attach_to=["Passthrough"], neuron_axis=case.neuron_axis)
    with torch.no_grad():
        for part in batches(case.values):
            model(torch.from_numpy(part))
    hook.remove()
    captured = torch.cat(seen).numpy()
    np.testing.assert_array_equal(captured, case.values)
    probe, = model.efficiency_layers
    assert_counts_match(probe, Expected.of_values(captured, case.neuron_axis))
    assert_counts_match(probe, case.expected)


# -- Keras ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keras_counts():
    """One Keras model, one input and one Identity layer per case; its probes and a
    StateReader count every case, and a sub-model captures each layer's output."""
    keras = pytest.importorskip("keras")
    from tensorstate_callbacks.keras import StateReader, build_efficiency_model, probe_name

    inputs = [keras.Input(case.channels_last.shape[1:], dtype=case.dtype, name=f"in_{index}")
              for index, case in enumerate(CASES)]
    # float layers in their own dtype (no cast to float32); others are never cast
    outputs = [keras.layers.Identity(name=case.layer_name,
                                     **({"dtype": case.dtype} if "float" in case.dtype else {}))(x)
               for case, x in zip(CASES, inputs, strict=True)]
    model = keras.Model(inputs, outputs)
    data = [case.channels_last for case in CASES]
    names = [case.layer_name for case in CASES]
    captured = keras.Model(model.inputs, [model.get_layer(n).output for n in names]).predict(
        data, batch_size=20, verbose=0)
    probed = build_efficiency_model(model, attach_to=names)
    probed.predict(data, batch_size=20, verbose=0)  # 48 samples: a short last batch
    probes = {probe.name: probe for probe in probed.efficiency_layers}
    reader = StateReader(model, attach_to=names)
    reader.count(data, batch_size=20)
    readers = {counter.name: counter for counter in reader.counters}
    return {case: (captured[index], probes[probe_name(case.layer_name, "after")],
                   readers[probe_name(case.layer_name, "after")])
            for index, case in enumerate(CASES)}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_keras_probe(case, keras_counts):
    captured, probe, _ = keras_counts[case]
    np.testing.assert_array_equal(packed_states(captured), packed_states(case.channels_last))
    assert_counts_match(probe, Expected.of_values(captured))
    assert_counts_match(probe, case.expected)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_keras_state_reader(case, keras_counts):
    captured, _, counter = keras_counts[case]
    assert_counts_match(counter, Expected.of_values(captured))
    assert_counts_match(counter, case.expected)


# -- DDP -------------------------------------------------------------------------------------
DDP_CASE = Case("channels_first", 65, "float16")


def test_ddp_merge_across_ranks(tmp_path, torch):
    """Two gloo processes count uneven shares (rank 1 sees fewer distinct states)
    and merge; both ranks then hold the counts of all the activations."""
    import ddp_merge

    shares = [DDP_CASE.values[:31], DDP_CASE.values[31:]]
    torch.multiprocessing.spawn(ddp_merge.count_and_merge, nprocs=2, join=True,
                                args=(free_port(), shares, DDP_CASE.neuron_axis, str(tmp_path)))
    for rank in range(2):
        assert_counts_match(ddp_merge.load(tmp_path, rank), DDP_CASE.expected)
