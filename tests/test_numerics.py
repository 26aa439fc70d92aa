"""Numbers: hand-computed on a tiny conv net, and an independent autograd computation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from references import grad_cam_reference
from torch import nn

from course_utils import (
    channel_weights,
    grad_cam,
    guided_backprop,
    guided_grad_cam,
    normalize_per_image,
    upsample,
    weighted_cam,
)


@pytest.fixture
def tiny(device: str) -> tuple[nn.Module, torch.Tensor]:
    """Conv 1x1 with weights [1, -1] -> ReLU -> mean -> linear V; input x = -4..4 on 3x3.

    A_0 = relu(x), A_1 = relu(-x); score_c = sum_k V[c, k] * mean(A_k), so
    d score_c / d A_k = V[c, k] / 9 everywhere.
    """
    net = nn.Sequential(
        nn.Conv2d(1, 2, 1, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2, 2, bias=False),
    )
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        net[4].weight.copy_(torch.tensor([[2.0, 1.0], [-1.0, 3.0]]))
    x = (torch.arange(9.0) - 4).view(1, 1, 3, 3)
    return net.to(device), x.to(device)


def test_grad_cam_by_hand(tiny: tuple[nn.Module, torch.Tensor], device: str) -> None:
    net, x = tiny
    # class 0: alpha = [2/9, 1/9] -> cam = (2 relu(x) + relu(-x)) / 9, max 8/9 at x = 4
    expected0 = torch.tensor([[4.0, 3, 2], [1, 0, 2], [4, 6, 8]]) / 8
    # class 1: alpha = [-1/9, 3/9] -> cam = relu(3 relu(-x) - relu(x)) / 9, max 12/9 at x = -4
    expected1 = torch.tensor([[12.0, 9, 6], [3, 0, 0], [0, 0, 0]]) / 12
    batch = torch.cat([x, x])
    cam = grad_cam(net, batch, [0, 1], layer="1")
    assert torch.allclose(cam, torch.stack([expected0, expected1]).to(device), atol=1e-6)


def test_guided_backprop_by_hand(tiny: tuple[nn.Module, torch.Tensor], device: str) -> None:
    net, x = tiny
    batch = torch.cat([x, x])
    grads = guided_backprop(net, batch, [0, 1])[:, 0]
    pos, neg = (x[0, 0] > 0).float(), (x[0, 0] < 0).float()
    # class 0: both upstream gradients positive -> dx = 2/9 1[x>0] - 1/9 1[x<0]
    # class 1: the relu(x) branch gets -1/9 < 0 and is blocked -> dx = -3/9 1[x<0]
    expected = torch.stack([(2 * pos - neg) / 9, -3 * neg / 9])
    assert torch.allclose(grads, expected, atol=1e-7)
    assert torch.allclose(
        guided_grad_cam(net, batch, [0, 1], layer="1")[:, 0],
        expected * grad_cam(net, batch, [0, 1], layer="1"),
    )


class _GuidedRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0) * (g > 0)


class _SwappedRelu(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GuidedRelu.apply(x)


def _independent_guided_backprop(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Guided backprop by swapping the ReLU modules of a deep copy (the test's own route)."""
    clone = copy.deepcopy(model).eval()
    for name, module in list(clone.named_modules()):
        if isinstance(module, nn.ReLU):
            parent, _, attr = name.rpartition(".")
            setattr(clone.get_submodule(parent), attr, _SwappedRelu())
    x = x.clone().requires_grad_(True)
    scores = clone(x)
    (grad,) = torch.autograd.grad(scores[torch.arange(len(x)), labels].sum(), x)
    return grad


@pytest.mark.parametrize(("name", "layer"), [("squeezenet", "features.12"), ("resnet", "layer4")])
def test_agrees_with_an_independent_computation(
    request: pytest.FixtureRequest, name: str, layer: str, images: torch.Tensor
) -> None:
    model = request.getfixturevalue(name)
    labels = torch.tensor([7, 0, 999], device=images.device)
    ours = grad_cam(model, images, labels, layer=layer)
    theirs = grad_cam_reference(model, images, labels, model.get_submodule(layer))
    assert torch.allclose(ours, theirs, atol=1e-5)
    ours = guided_backprop(model, images, labels)
    theirs = _independent_guided_backprop(model, images, labels)
    assert torch.allclose(ours, theirs, atol=1e-5 * float(theirs.abs().max()))


def test_stage_functions_by_hand() -> None:
    grads = torch.tensor([[[[1.0, 3.0]], [[-2.0, -2.0]]]])  # (1, 2, 1, 2)
    assert torch.equal(channel_weights(grads), torch.tensor([[2.0, -2.0]]))
    acts = torch.tensor([[[[1.0, 2.0]], [[1.0, 0.0]]]])
    # 2*[1, 2] - 2*[1, 0] = [0, 4]; a negative total would be clipped by the ReLU
    assert torch.equal(
        weighted_cam(acts, torch.tensor([[2.0, -2.0]])), torch.tensor([[[0.0, 4.0]]])
    )
    assert torch.equal(weighted_cam(acts, torch.tensor([[-1.0, 0.0]])), torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        weighted_cam(acts, torch.ones(2))
    with pytest.raises(ValueError, match=r"\(N, C, h, w\)"):
        channel_weights(torch.ones(2, 3))


def test_upsample_is_height_first_and_does_not_ring() -> None:
    maps = torch.zeros(2, 2, 3)
    maps[:, 0, 2] = 1.0  # a corner spike: bicubic would undershoot below 0 next to it
    up = upsample(maps, (20, 30))
    assert up.shape == (2, 20, 30)
    assert up.min() >= 0 and up.max() <= 1
    assert upsample(maps, (20, 30), mode="bicubic").min() < 0  # why bilinear is the default
    assert torch.equal(up, F.interpolate(maps[:, None], (20, 30), mode="bilinear")[:, 0])
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        upsample(maps, (20,))
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        upsample(maps[0], (4, 4))


def test_normalisation_is_per_image_and_never_nan() -> None:
    maps = torch.tensor(
        [[[0.0, 2.0], [1.0, 4.0]], [[10.0, 20.0], [30.0, 50.0]], [[3.0, 3.0], [3.0, 3.0]]]
    )
    out = normalize_per_image(maps)
    assert torch.equal(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))  # not dimmed by image 1
    assert torch.equal(out[1], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.equal(out[2], torch.zeros(2, 2))  # flat map: zeros, not 0/0
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="NaN or inf"):
            normalize_per_image(torch.tensor([[0.0, 1.0], [bad, 1.0]]))


@pytest.mark.parametrize("value", [0.0, 1e-3, 7.3, 12345.678])
def test_an_upsampled_constant_map_normalises_to_exact_zeros(value: float) -> None:
    # Bilinear upsampling of a constant adds rounding wiggles of about one ulp; they carry no
    # information and must not be stretched to the full [0, 1] range.
    up = upsample(torch.full((2, 1, 1), value), (37, 53))
    out = normalize_per_image(up)
    assert torch.equal(out, torch.zeros_like(out))
    small_contrast = torch.tensor([[value, value * (1 + 1e-4) + 1e-4]])
    assert torch.equal(normalize_per_image(small_contrast), torch.tensor([[0.0, 1.0]]))
