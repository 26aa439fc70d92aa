"""LayerRecorder, resolve_layer and evaluating: lifecycle and aliasing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_utils import LayerRecorder, evaluating, resolve_layer


def _all_hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


def test_records_the_pre_inplace_activation_and_its_gradient() -> None:
    net = _net()
    x = torch.randn(2, 1, 5, 5)
    conv_out = net[0](x).detach()
    assert (conv_out < 0).any()  # so an aliasing bug would be visible
    with LayerRecorder(net, "0") as rec:
        net(x)[:, 1].sum().backward()
    # the in-place ReLU downstream did not overwrite what we recorded
    assert torch.equal(rec.activation.detach(), conv_out)
    expected = torch.zeros_like(conv_out)
    expected[:, 1] = (conv_out[:, 1] > 0).float() / 25
    assert torch.allclose(rec.gradient, expected)
    assert _all_hooks(net) == 0


def test_every_hook_removed_when_the_block_raises() -> None:
    net = _net()
    with pytest.raises(KeyError), LayerRecorder(net, net[0]):
        net(torch.randn(1, 1, 4, 4)).sum().backward()
        raise KeyError("user error inside the block")
    assert _all_hooks(net) == 0


def test_each_forward_pass_starts_a_new_recording() -> None:
    net = _net()
    with LayerRecorder(net, "0") as rec:
        net(torch.randn(1, 1, 4, 4))
        first = rec.activation
        net(torch.randn(2, 1, 4, 4))
    assert rec.activation is not first and rec.activation.shape[0] == 2


def test_a_layer_running_twice_is_rejected() -> None:
    shared = nn.Conv2d(1, 1, 1)
    net = nn.Sequential(shared, shared)
    with pytest.raises(ValueError, match="ran twice"), LayerRecorder(net, shared):
        net(torch.randn(1, 1, 2, 2))
    assert _all_hooks(net) == 0


def test_resolve_layer_by_name_module_and_errors() -> None:
    net = nn.Sequential(nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU()), nn.Flatten())
    assert resolve_layer(net, "0.1") == ("0.1", net[0][1])
    assert resolve_layer(net, net[0][0]) == ("0.0", net[0][0])
    with pytest.raises(ValueError, match=r"no layer named '0\.2'.*Did you mean"):
        resolve_layer(net, "0.2")
    with pytest.raises(ValueError, match="not part of the model"):
        resolve_layer(net, nn.ReLU())
    with pytest.raises(TypeError, match="dotted name"):
        resolve_layer(net, 3)


def test_evaluating_restores_mixed_training_flags() -> None:
    net = nn.Sequential(nn.Dropout(), nn.BatchNorm1d(2))
    net.train()
    net[1].eval()
    with pytest.raises(RuntimeError), evaluating(net):
        assert not any(m.training for m in net.modules())
        raise RuntimeError
    assert [m.training for m in net.modules()] == [True, True, False]


def test_gradient_recorded_even_when_nothing_upstream_requires_grad() -> None:
    net = _net().requires_grad_(False)
    x = torch.randn(1, 1, 4, 4)  # no requires_grad anywhere: the recorder starts the graph
    with LayerRecorder(net, "0") as rec:
        net(x).sum().backward()
    assert rec.gradient is not None and x.grad is None
    assert all(p.grad is None for p in net.parameters())
    with torch.no_grad(), LayerRecorder(net, "0") as rec:
        net(x)  # under no_grad there is nothing to record but the activation
    assert rec.activation is not None and rec.gradient is None
