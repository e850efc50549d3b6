"""PyTorch probes on tiny versions of the model families researchers train.

Every probe is checked against plain NumPy on the activations this test
captures itself, with its own forward hooks, on the axis the features are on.
"""

import warnings

import numpy as np
import pytest
from reference import packed_states, sorted_rows, unique_counts

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import tensorstate_callbacks as ts  # noqa: E402
from tensorstate_callbacks.cli.demos.resnet_torch import ResNet  # noqa: E402
from tensorstate_callbacks.integrations._probe import ProbeHealth  # noqa: E402
from tensorstate_callbacks.torch import attach_probes  # noqa: E402


class Recorder:
    """Records the outputs of modules (every call) with hooks of the test's own."""

    def __init__(self, modules):
        self.seen = {id(m): [] for m in modules}
        self.handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, module, inputs, output):
        value = output[0] if isinstance(output, tuple) else output
        self.seen[id(module)].append(value.detach().clone())

    def calls(self, module):
        return self.seen[id(module)]

    def remove(self):
        for handle in self.handles:
            handle.remove()


def features_last(tensor, axis):
    """float32 NumPy rows of neurons (one state each) from a tensor or a nested tensor."""
    if tensor.is_nested:
        return torch.cat([part.reshape(-1, part.shape[-1]) for part in tensor.unbind()]).numpy()
    return torch.movedim(tensor.float(), axis, -1).reshape(-1, tensor.shape[axis]).numpy()


def assert_counts(probe, tensors, axis):
    """The probe's counts equal NumPy's on ``tensors`` (one per batch) read along ``axis``."""
    rows = np.concatenate([features_last(t, axis) for t in tensors])
    keys, counts = unique_counts(packed_states(rows))
    got_keys, got_counts = sorted_rows(probe.state_ids(), probe.counts())
    assert probe.num_neurons == rows.shape[1], probe.name
    np.testing.assert_array_equal(got_keys, keys, err_msg=probe.name)
    np.testing.assert_array_equal(got_counts, counts, err_msg=probe.name)


# -- a CIFAR-shaped ResNet (cli/demos/resnet_torch.py): inplace ReLU, BatchNorm, shared ReLU modules
def test_resnet_with_inplace_and_shared_relu_counts_every_call_site():
    torch.manual_seed(0)
    model = ResNet(stem=8, stages=[(8, 1), (16, 2)]).eval()
    x = torch.randn(6, 3, 16, 16)
    probes = attach_probes(model, ["ReLU", "BatchNorm2d"])
    layer1, layer2 = model.blocks
    relus = [model.act, layer1.relu, layer2.relu]
    recorder = Recorder(relus + [layer1.bn1, layer2.bn2])
    for _ in range(2):
        with torch.no_grad():
            out = model(x)
    recorder.remove()
    names = {p.name: p for p in probes}
    assert {"blocks_0_relu_post_states", "blocks_0_relu_call1_post_states",
            "blocks_1_relu_post_states", "blocks_1_relu_call1_post_states"} <= set(names)
    for name, module, call in [("act_post_states", model.act, 0),
                               ("blocks_0_relu_post_states", layer1.relu, 0),
                               ("blocks_0_relu_call1_post_states", layer1.relu, 1),
                               ("blocks_1_relu_call1_post_states", layer2.relu, 1),
                               ("blocks_0_bn1_post_states", layer1.bn1, 0)]:
        calls = recorder.calls(module)
        per_pass = len(calls) // 2
        assert_counts(names[name], calls[call::per_pass], axis=1)
    assert names["blocks_1_relu_call1_post_states"].num_neurons == 16
    probes.detach()
    with torch.no_grad():
        np.testing.assert_array_equal(model(x), out)  # outputs unchanged, hooks gone
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_wide_probes_count_each_epoch_exactly_into_the_tables_they_keep():
    """Epochs of a ResNet with 72- and 40-channel layers (hash tables of wide
    and of narrow states, split into shards past 16,384 states) and of a
    Transformer's 96-wide feed-forward layers: after each reset the probes
    count into the tables of the epoch before, and every epoch's counts and
    firing rates equal NumPy's on that epoch's activations alone."""
    torch.manual_seed(4)
    resnet = ResNet(stem=72, stages=[(72, 1), (40, 2)]).eval()
    layer = nn.TransformerEncoderLayer(24, 2, dim_feedforward=96, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False).eval()
    cases = [(resnet, ["Conv2d", "BatchNorm2d"], 1,
              [[torch.randn(n, 3, 24, 24) for _ in range(3)] for n in (12, 4, 16)]),
             (encoder, ["Linear"], -1,
              [[torch.randn(n, 40, 24) for _ in range(3)] for n in (30, 10, 40)])]
    for model, attach_to, axis, epochs in cases:
        probes = attach_probes(model, attach_to)
        recorder = Recorder([probe.module for probe in probes])
        engines = None
        for batches in epochs:
            for probe in probes:
                probe.reset_states()
            recorder.seen = {key: [] for key in recorder.seen}
            with torch.no_grad():
                for batch in batches:
                    model(batch)
            measured = [probe for probe in probes if recorder.calls(probe.module)]
            assert len(measured) >= len(probes) - 1  # the attention's out_proj never runs
            for probe in measured:
                seen = recorder.calls(probe.module)
                assert_counts(probe, seen, axis)
                rows = np.concatenate([features_last(t, axis) for t in seen])
                np.testing.assert_array_equal(probe.counter.firing_rates(),
                                              (rows > 0).mean(axis=0))
            if engines is not None:  # the same tables, cleared
                assert [p.counter._engine for p in measured] == engines
            engines = [p.counter._engine for p in measured]
        recorder.remove()
        probes.detach()


# -- a GPT/ViT-style MLP and a BERT-shaped block with its own activation class -----------------
class GELUActivation(nn.Module):  # as the BERT code base names its own GELU
    def forward(self, x):
        return nn.functional.gelu(x)


class BertIntermediate(nn.Module):
    def __init__(self, hidden, intermediate):
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)
        self.intermediate_act_fn = GELUActivation()

    def forward(self, x):
        return self.intermediate_act_fn(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, hidden=12, intermediate=20):
        super().__init__()
        self.attention = nn.MultiheadAttention(hidden, 2, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.intermediate = BertIntermediate(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):
        x = self.norm(x + self.attention(x, x, x, need_weights=False)[0])
        return self.norm(x + self.dropout(self.output(self.intermediate(x))))


class MLP(nn.Module):  # the MLP of a GPT or ViT block
    def __init__(self, width=12, hidden=24):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(0.0)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(self.drop(self.act(self.fc1(x))))


@pytest.mark.parametrize("model_class, attach_to, expected", [
    (MLP, ["GELU", "Dropout"], {"act_post_states": ("act", 24), "drop_post_states": ("drop", 24)}),
    (BertLayer, ["GELUActivation", "BertIntermediate", "Dropout"],
     {"intermediate_intermediate_act_fn_post_states": ("intermediate.intermediate_act_fn", 20),
      "intermediate_post_states": ("intermediate", 20), "dropout_post_states": ("dropout", 12)}),
])
def test_sequence_activations_have_the_features_as_neurons(model_class, attach_to, expected):
    """A GELU (or a block) on (B, S, F) has F neurons, and sequences of another
    length in the next batch are counted on (the sequence axis is not the neurons)."""
    torch.manual_seed(1)
    model = model_class().train()
    probes = {p.name: p for p in attach_probes(model, attach_to)}
    modules = {name: model.get_submodule(path) for name, (path, _) in expected.items()}
    recorder = Recorder(list(modules.values()))
    batches = [torch.randn(4, length, 12) for length in (7, 11, 3)]
    for batch in batches:
        model(batch)
    recorder.remove()
    for name, (_, width) in expected.items():
        assert probes[name].num_neurons == width
        assert probes[name].state_count == 4 * (7 + 11 + 3)
        assert_counts(probes[name], recorder.calls(modules[name]), axis=-1)


# -- nn.TransformerEncoder, batch_first both ways, padding masks, train and eval ----------------
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_transformer_encoder(batch_first, padded, training):
    torch.manual_seed(2)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0,
                                       batch_first=batch_first)
    model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=True)
    model.train(training)
    probes = {p.name: p for p in attach_probes(model, ["TransformerEncoderLayer"])}
    recorder = Recorder(list(model.layers))
    lengths = [5, 9, 2]
    x = torch.randn(3, 9, 16)
    mask = torch.arange(9)[None, :] >= torch.tensor(lengths)[:, None] if padded else None
    source = x if batch_first else x.transpose(0, 1)
    with torch.set_grad_enabled(training):
        out = model(source, src_key_padding_mask=mask)
    recorder.remove()
    for index, module in enumerate(model.layers):
        probe = probes[f"layers_{index}_post_states"]
        seen = recorder.calls(module)
        assert_counts(probe, seen, axis=-1)
        assert probe.num_neurons == 16
        if seen[0].is_nested:  # PyTorch's fast path: only the real tokens exist
            assert probe.state_count == sum(lengths)
    expected_shape = (3, 9, 16) if batch_first else (9, 3, 16)
    assert out.shape == expected_shape


def test_padding_mask_selector_counts_only_real_tokens():
    torch.manual_seed(3)
    model = MLP().eval()
    lengths = torch.tensor([3, 6])
    x = torch.randn(2, 6, 12)
    mask = torch.arange(6)[None, :] < lengths[:, None]  # True for real tokens
    probes = attach_probes(model, ["GELU"], output_selector=lambda out: (out, mask))
    recorder = Recorder([model.act])
    model(x)
    recorder.remove()
    (probe,) = probes
    assert probe.state_count == int(lengths.sum())
    real = recorder.calls(model.act)[0][mask]
    assert_counts(probe, [real], axis=-1)


# -- an LSTM and a depthwise-separable (MobileNet-like) net --------------------------------------
def test_lstm_output_states():
    torch.manual_seed(4)
    model = nn.Sequential(nn.LSTM(5, 9, batch_first=True))
    probes = attach_probes(model, ["LSTM"])
    recorder = Recorder([model[0]])
    for length in (4, 6):
        model(torch.randn(3, length, 5))
    recorder.remove()
    assert_counts(probes[0], recorder.calls(model[0]), axis=-1)
    assert probes[0].state_count == 3 * (4 + 6)


class DepthwiseSeparable(nn.Module):
    def __init__(self):
        super().__init__()
        self.depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.pointwise = nn.Conv2d(6, 10, 1)
        self.act = nn.ReLU6()

    def forward(self, x):
        return self.act(self.pointwise(self.act(self.depthwise(x))))


def test_depthwise_separable_net():
    torch.manual_seed(5)
    model = DepthwiseSeparable()
    probe_list = attach_probes(model, ["Conv2d", "ReLU6"])
    recorder = Recorder([model.depthwise, model.act])
    model(torch.randn(2, 6, 5, 5).to(memory_format=torch.channels_last))
    recorder.remove()
    probes = {p.name: p for p in probe_list}  # after the pass: it found the second call site
    assert_counts(probes["depthwise_post_states"], recorder.calls(model.depthwise), axis=1)
    assert_counts(probes["act_post_states"], recorder.calls(model.act)[:1], axis=1)
    assert_counts(probes["act_call1_post_states"], recorder.calls(model.act)[1:], axis=1)
    assert probes["act_call1_post_states"].num_neurons == 10


# -- overrides, a wrong axis, unreadable tensors, warnings ------------------------------------
def test_neuron_axis_override_by_pattern_and_wrong_axis_fails_at_once():
    model = MLP()
    probes = attach_probes(model, ["GELU", "fc1"], neuron_axis={"act*": 1})
    model(torch.randn(2, 5, 12))
    by_name = {p.name: p for p in probes}
    assert by_name["act_post_states"].num_neurons == 5  # the override: the sequence axis
    assert by_name["fc1_post_states"].num_neurons == 24
    with pytest.raises(ValueError, match=r"act_post_states.*had 5 neurons and now has 7.*"
                                         r"neuron_axis=\{'act_post_states'"):
        model(torch.randn(2, 7, 12))
    probes.detach()
    with pytest.raises(TypeError, match="neuron_axis must be an int, or a mapping"):
        attach_probes(model, ["GELU"], neuron_axis="last")


def test_unreadable_tensors_are_skipped_with_one_warning_and_float8_is_read():
    class Odd(nn.Module):
        def __init__(self, make):
            super().__init__()
            self.make = make

        def forward(self, x):
            return self.make(x)

    sparse = Odd(lambda x: x.to_sparse())
    scalar = Odd(lambda x: x.sum())
    eight = Odd(lambda x: x.to(torch.float8_e4m3fn))
    model = nn.Sequential(nn.Linear(3, 4), eight)
    probes = attach_probes(model, ["Odd"])
    x = torch.randn(10, 3)
    expected = model(x).detach().float()
    assert_counts(probes[0], [expected], axis=-1)
    for odd in (sparse, scalar):
        probes = attach_probes(odd, ["Odd"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            odd(x)
            odd(x)
        messages = [str(w.message) for w in caught if "skipped" in str(w.message)]
        assert len(messages) == 1 and "model_post_states" in messages[0]
        assert probes[0].state_count == 0
        probes.detach()


class WithFastPath(nn.Module):
    """``side`` is a submodule that forward never calls as a module (as a fused
    fast path uses a submodule's weights directly)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.softmax = nn.Softmax(dim=-1)
        self.side = nn.Linear(3, 3)

    def forward(self, x):
        return nn.functional.linear(self.softmax(self.fc(x)), self.side.weight)


def test_health_warnings_name_the_probe_and_the_fix():
    model = WithFastPath()
    probes = attach_probes(model, ["Linear", "Softmax"])
    model(torch.randn(20, 4))
    health = ProbeHealth()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # once each
            health.check({p.name: p for p in probes}, warnings.warn)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert messages[0].startswith("side_post_states: saw no state while 2 other probe(s) did")
    assert messages[1].startswith("softmax_post_states: all 20 states are the same one")
    assert all("exclude=" in message for message in messages)
    efficiencies = [p.efficiency() for p in probes if p.state_count]
    assert ts.network_efficiency(efficiencies) == 0.0
