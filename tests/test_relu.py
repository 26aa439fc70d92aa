"""GuidedReLU and guided_relus against hand-computed tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_utils import GuidedReLU, guided_relus, relu_modules


def test_forward_is_relu_and_keeps_dtype(device: str) -> None:
    x = torch.tensor([[-2.0, -0.0, 0.0, 1.5]], dtype=torch.float64, device=device)
    y = GuidedReLU.apply(x)
    assert y.dtype == torch.float64 and y.device == x.device
    assert torch.equal(y, torch.relu(x))


def test_forward_allocates_nothing_on_the_cpu() -> None:
    # The assignment's torch.zeros(x.size()) lands on the CPU; with a 'meta' tensor (or a CUDA
    # one) addcmul then fails with a device mismatch. Ours must stay on x's device.
    x = torch.empty(4, 5, device="meta")
    assert GuidedReLU.apply(x).device.type == "meta"


def test_backward_is_the_guided_rule(device: str) -> None:
    x = torch.tensor([[-1.0, 2.0], [3.0, 0.0]], device=device, requires_grad=True)
    g = torch.tensor([[5.0, -4.0], [1.0, 2.0]], device=device)
    GuidedReLU.apply(x).backward(g)
    # grad_in = g * 1[x > 0] * 1[g > 0]: only x=3 with g=1 survives.
    assert torch.equal(x.grad, torch.tensor([[0.0, 0.0], [1.0, 0.0]], device=device))


def _two_layer(inplace: bool, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    net = nn.Sequential(
        nn.Linear(3, 4, bias=False), act(inplace=inplace), nn.Linear(4, 2, bias=False)
    )
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]))
        net[2].weight.copy_(torch.tensor([[1.0, -1, 2, -3], [0, 1, 1, 1]]))
    return net


@pytest.mark.parametrize("inplace", [False, True])
def test_guided_relus_apply_the_rule_inside_a_model(inplace: bool) -> None:
    net = _two_layer(inplace)
    x = torch.tensor([[2.0, -1.0, 8.0]], requires_grad=True)
    with guided_relus(net):
        net(x)[0, 0].backward()
    # hidden pre-activation h = [2, -1, 8, 9]; upstream gradient = row 0 of W2 = [1, -1, 2, -3]
    # guided mask 1[h>0]*1[g>0] = [1, 0, 1, 0] -> dh = [1, 0, 2, 0]; dx = W1^T dh
    assert torch.equal(x.grad, torch.tensor([[1.0, 0.0, 2.0]]))


def test_relu6_uses_its_own_saturation() -> None:
    net = nn.Sequential(nn.ReLU6())
    x = torch.tensor([-1.0, 3.0, 7.0, 2.0], requires_grad=True)
    with guided_relus(net):
        net(x).backward(torch.tensor([1.0, 1.0, 1.0, -1.0]))
    # guided ReLU6: g * 1[0 < x < 6] * 1[g > 0]
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 0.0, 0.0]))


def test_values_unchanged_and_hooks_removed_even_on_error() -> None:
    net = _two_layer(inplace=True)
    x = torch.randn(5, 3)
    expected = net(x)
    with pytest.raises(RuntimeError, match="boom"), guided_relus(net):
        assert torch.equal(net(x), expected)
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in net.modules())
    assert isinstance(net[1], nn.ReLU) and net[1].inplace


def test_finds_nested_relus_and_rejects_models_without_any() -> None:
    inner = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU6(inplace=True))
    net = nn.Sequential(inner, nn.ReLU())
    assert [n for n, _ in relu_modules(net)] == ["0.1", "1"]
    with pytest.raises(ValueError, match=r"no nn\.ReLU"):
        guided_relus(nn.Sequential(nn.Linear(2, 2))).__enter__()


def test_gradcheck_sees_the_guided_rule_only_with_negative_upstream_gradients() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    # gradcheck probes with unit (positive) upstream gradients: the guided rule then equals the
    # ReLU derivative, so the bare Function passes ...
    assert torch.autograd.gradcheck(GuidedReLU.apply, (x,))
    # ... but behind a sign flip the upstream gradient is negative and gets blocked.
    assert not torch.autograd.gradcheck(lambda t: -GuidedReLU.apply(t), (x,), raise_exception=False)


def test_guided_relus_equal_swapping_in_guided_relu_functions() -> None:
    """The hook route (clamp at the output + the module's own mask) is GuidedReLU exactly."""
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(inplace=True), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)
    )
    x = torch.randn(5, 6, requires_grad=True)
    with guided_relus(net):
        (hooked,) = torch.autograd.grad(net(x)[:, 2].sum(), x)

    h = x
    for layer in net:
        h = GuidedReLU.apply(h) if isinstance(layer, nn.ReLU) else layer(h)
    (direct,) = torch.autograd.grad(h[:, 2].sum(), x)
    assert torch.allclose(hooked, direct, atol=1e-6)
    assert not torch.allclose(hooked, torch.autograd.grad(net(x)[:, 2].sum(), x)[0])


def test_only_some_activations_can_be_made_guided() -> None:
    net = _two_layer(inplace=False)
    outer = nn.Sequential(nn.ReLU(), net)
    x = torch.tensor([[2.0, -1.0, 8.0]], requires_grad=True)
    with guided_relus(outer, only=[net[1]]) as names:
        outer(x)[0, 0].backward()
    assert names == ["1.1"]
    assert torch.equal(x.grad, torch.tensor([[1.0, 0.0, 2.0]]))  # as the hand computation
    with pytest.raises(ValueError, match="`only` must list"):
        guided_relus(outer, only=[net[0]]).__enter__()
    with pytest.raises(ValueError, match="selects no activation"):
        guided_relus(outer, only=[]).__enter__()
