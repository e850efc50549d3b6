"""PyTorch probes against states computed independently from the layer outputs."""

import numpy as np
import pytest
from reference import Expected, assert_counts_match, packed_states

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import tensorstate_callbacks as ts  # noqa: E402
from tensorstate_callbacks.lenet5_torch import LeNet5  # noqa: E402
from tensorstate_callbacks.torch import attach_probes, remove_efficiency_probes  # noqa: E402


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 30)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x))


class MyConv(nn.Conv2d):  # a subclass must match attach_to=['Conv2d']
    pass


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = MyConv(3, 11, 3)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.blocks = nn.Sequential(Block(), Block())
        self.head = nn.Linear(30, 4)

    def forward(self, x):
        x = self.pool(self.conv(x)).flatten(1)[:, :12]
        x = self.blocks[0](x)
        return self.head(x)


def outputs_of(model, module, x):
    """The module's outputs, recorded by a plain hook of this test."""
    seen = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    model(x)
    handle.remove()
    return torch.cat(seen)


def test_probes_match_layer_outputs_and_names():
    torch.manual_seed(0)
    model, x = Net(), torch.randn(40, 3, 9, 9)
    conv_out = outputs_of(model, model.conv, x)
    fc_out = outputs_of(model, model.blocks[0].fc, x)
    ts.build_efficiency_model(model, attach_to=["Conv2d", "blocks.0.fc"], method="after")
    model(x)
    probes = {p.name: p for p in model.efficiency_layers}
    assert list(probes) == ["conv_post_states", "blocks_0_fc_post_states"]
    assert_counts_match(probes["conv_post_states"], Expected.of_values(conv_out.numpy(), 1))
    assert_counts_match(probes["blocks_0_fc_post_states"], Expected.of_values(fc_out.numpy(), -1))
    assert probes["conv_post_states"].state_count == 40 * 7 * 7
    efficiencies = [probe.efficiency() for probe in probes.values()]
    assert ts.network_efficiency(model) == pytest.approx(np.sqrt(np.prod(efficiencies)))
    ts.reset_efficiency_model(model)
    assert all(p.state_count == 0 for p in model.efficiency_layers)
    remove_efficiency_probes(model)


def test_before_both_and_exclude():
    model, x = Net(), torch.randn(8, 3, 9, 9)
    ts.build_efficiency_model(model, attach_to=["Linear"], exclude=["head"], method="both")
    model(x)
    names = [p.name for p in model.efficiency_layers]
    assert names == ["blocks_0_fc_pre_states", "blocks_0_fc_post_states",
                     "blocks_1_fc_pre_states", "blocks_1_fc_post_states"]
    pre = model.efficiency_layers[0]
    assert pre.max_entropy() == 12 and pre.state_count == 8
    assert model.efficiency_layers[2].state_count == 0  # blocks[1] never runs
    remove_efficiency_probes(model)


def test_outputs_gradients_and_hooks_unchanged():
    torch.manual_seed(1)
    model, x = Net(), torch.randn(6, 3, 9, 9)
    foreign = model.conv.register_forward_hook(lambda m, i, o: None)
    before_hooks = len(model.conv._forward_hooks)
    reference_out = model(x)
    reference_out.sum().backward()
    reference_grad = model.conv.weight.grad.clone()
    model.zero_grad()
    ts.build_efficiency_model(model, attach_to=["Conv2d", "Linear"], method="both")
    assert len(model.conv._forward_hooks) == before_hooks + 1
    out = model(x)
    out.sum().backward()
    assert torch.equal(out, reference_out)
    assert torch.equal(model.conv.weight.grad, reference_grad)
    ts.build_efficiency_model(model, attach_to=["Conv2d"])  # rebuilding replaces, never stacks
    assert len(model.conv._forward_hooks) == before_hooks + 1
    remove_efficiency_probes(model)
    assert len(model.conv._forward_hooks) == before_hooks
    assert foreign.id in model.conv._forward_hooks
    assert all(len(m._forward_pre_hooks) == 0 for m in model.modules())


def hooks_on(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_paused_probes_leave_the_model_without_hooks():
    torch.manual_seed(4)
    model, x = Net(), torch.randn(5, 3, 9, 9)
    conv_out = outputs_of(model, model.conv, x)
    probes = attach_probes(model, ["Conv2d", "Linear"])
    assert hooks_on(model) > 0
    probes.enabled = False
    assert hooks_on(model) == 0
    model(x)  # paused: not counted
    probes.enabled = True
    model(x)
    assert_counts_match(probes[0], Expected.of_values(conv_out.numpy(), 1))
    probes.detach()
    assert hooks_on(model) == 0
    probes.enabled = True  # detached probes stay off the model
    assert hooks_on(model) == 0


def test_resumed_probe_on_the_models_own_input_keeps_its_call_site():
    """The pass hook starts each pass before any probe's pre-hook on the model
    itself, after a pause too: the model's one call stays call site 0."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    batches = [torch.randn(5, 4) for _ in range(4)]
    probes = attach_probes(model, ["Sequential"], method="before")
    model(batches[0])
    probes.enabled = False
    model(batches[1])  # paused: not counted
    probes.enabled = True
    model(batches[2])
    model(batches[3])
    assert [probe.name for probe in probes] == ["model_pre_states"]
    counted = torch.cat([batches[0], batches[2], batches[3]])
    assert_counts_match(probes[0], Expected.of_values(counted.numpy(), -1))
    probes.detach()
    assert hooks_on(model) == 0


def test_probes_read_the_modules_own_input_and_output_whatever_other_hooks_do():
    torch.manual_seed(6)
    model, x = Net(), torch.randn(5, 3, 9, 9)
    conv_in = x.numpy()
    with torch.no_grad():  # .forward skips hooks: what the module makes of what it receives
        conv_out = model.conv.forward(x.abs() - 1)
    replace_input = model.conv.register_forward_pre_hook(lambda m, i: (i[0].abs(),))
    replace_output = model.conv.register_forward_hook(lambda m, i, o: torch.ones_like(o))
    probes = attach_probes(model, ["MyConv"], method="both")
    replace_input_later = model.conv.register_forward_pre_hook(lambda m, i: (i[0] - 1,))
    for _ in range(2):  # as attached, then paused and resumed (hooks put back)
        for probe in probes:
            probe.reset_states()
        model(x)
        before, after = probes
        assert_counts_match(before, Expected.of_values(conv_in, 1))
        assert_counts_match(after, Expected.of_values(conv_out.numpy(), 1))
        probes.enabled = False
        probes.enabled = True
    probes.detach()
    for handle in (replace_input, replace_output, replace_input_later):
        handle.remove()


def test_paused_probes_keep_the_fused_transformer_path():
    torch.manual_seed(5)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(3, 7, 16)
    calls = []
    for block in model.layers:  # counted without a hook: a hook turns the fused path off
        forward = block.linear1.forward
        block.linear1.forward = lambda t, forward=forward: (calls.append(1), forward(t))[1]
    with torch.no_grad():
        reference = model(x)
    assert not calls  # PyTorch's fused path ran
    probes = attach_probes(model, ["Linear"])
    with torch.no_grad():
        model(x)
    linear1 = next(probe for probe in probes if "linear1" in probe.name)
    assert len(calls) == 2 and linear1.state_count == 3 * 7
    probes.enabled = False
    with torch.no_grad():
        paused = model(x)
    assert len(calls) == 2 and torch.equal(paused, reference)
    probes.detach()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_precision_and_channels_last(dtype):
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 13, 3).to(dtype)
    model = nn.Sequential(conv)
    x = torch.randn(5, 3, 10, 10, dtype=dtype).to(memory_format=torch.channels_last)
    expected = model(x).detach()
    assert not expected.is_contiguous()  # the probe reads channels-last memory in place
    ts.build_efficiency_model(model, attach_to=["Conv2d"])
    model(x)
    values = expected.float().numpy()  # NumPy has no bfloat16; the states are the same
    assert_counts_match(model.efficiency_layers[0], Expected.of_values(values, 1))
    remove_efficiency_probes(model)


def test_torch_ops_packer_matches_kernel():
    from tensorstate_callbacks.torch import pack_with_torch

    x = torch.randn(4, 19, 5, 6)
    x[0, 0, 0, 0] = float("nan")
    np.testing.assert_array_equal(pack_with_torch(x, 1), packed_states(x.numpy(), 1))


def test_tuple_outputs_and_selector():
    class TwoOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(5, 9, batch_first=True)

        def forward(self, x):
            return self.lstm(x)[0]

    model, x = TwoOut(), torch.randn(3, 4, 5)
    seq_out = model(x).detach()
    ts.build_efficiency_model(model, attach_to=["LSTM"])
    model(x)
    # the first tensor of (out, (h, c))
    assert_counts_match(model.efficiency_layers[0], Expected.of_values(seq_out.numpy(), -1))
    ts.build_efficiency_model(model, attach_to=["LSTM"], output_selector=lambda o: o[1][0])
    model(x)
    assert model.efficiency_layers[0].state_count == 3  # h_n: (1, batch, 9)
    remove_efficiency_probes(model)


def test_torch_compile_still_captures():
    torch.manual_seed(3)
    model, x = Net(), torch.randn(4, 3, 9, 9)
    conv_out = outputs_of(model, model.conv, x)
    ts.build_efficiency_model(model, attach_to=["Conv2d"])
    compiled = torch.compile(model, backend="eager")
    out = compiled(x)
    assert torch.allclose(out, model(x))
    probe = model.efficiency_layers[0]
    assert probe.state_count == 2 * 4 * 7 * 7
    ts.reset_efficiency_model(model)
    compiled(x)
    assert_counts_match(probe, Expected.of_values(conv_out.numpy(), 1))
    remove_efficiency_probes(model)


def test_bad_arguments_list_what_the_model_has():
    model = Net()
    with pytest.raises(ValueError, match=r"Conv3d.*contains the classes.*MyConv"):
        ts.build_efficiency_model(model, attach_to=["Conv3d"])
    with pytest.raises(ValueError, match="method"):
        ts.build_efficiency_model(model, attach_to=["Conv2d"], method="around")
    with pytest.raises(ValueError, match="excluded"):
        ts.build_efficiency_model(model, attach_to=["Conv2d"], exclude=["conv"])
    with pytest.raises(ValueError, match="empty"):
        ts.build_efficiency_model(model, attach_to=[])
    assert not hasattr(model, "efficiency_layers")


def test_tutorial_state_counts_on_10000_images():
    from tensorstate_callbacks.datasets import load_mnist

    torch.manual_seed(0)
    _, (x_valid, _) = load_mnist()
    model = ts.build_efficiency_model(LeNet5(), attach_to=["Conv2d"], method="after")
    model.eval()
    with torch.no_grad():
        for batch in torch.from_numpy(x_valid).split(200):
            model(batch)
    counts = {layer.name: layer.state_count for layer in model.efficiency_layers}
    assert counts == {"conv_1_post_states": 5_760_000, "conv_2_post_states": 640_000,
                      "conv_3_post_states": 10_000}
    for layer in model.efficiency_layers:
        assert 0 < layer.efficiency() < 1
    remove_efficiency_probes(model)
