"""Cross-check on the architectures people bring: every activation style torchvision uses.

Random weights (``weights=None``), ten classes and small inputs keep each model fast. Each
architecture stands for one way a network can hold its activations:

==================  ==============================================  =========================
ResNet-18           one ``nn.ReLU`` module shared by several calls  guided
DenseNet            ``nn.ReLU`` modules plus a final ``F.relu``     guided, functional call too
MobileNetV2         ``nn.ReLU6`` modules (run as ``F.hardtanh``)    guided
EfficientNet-B0     SiLU and sigmoid gates, no ReLU at all          refused, activations named
ViT                 GELU, and no convolutional feature maps         refused; Grad-CAM only on
                                                                    the patch embedding
==================  ==============================================  =========================

Grad-CAM is compared with :func:`references.grad_cam_reference` (a bare forward hook), guided
backprop with :func:`references.guided_functions` (the activation functions swapped for
autograd Functions): routes that share no code with the package.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from references import grad_cam_reference, guided_functions, input_gradient
from torch import nn
from torchvision import models
from torchvision.models.vision_transformer import VisionTransformer

from course_utils import grad_cam, guided_backprop, guided_relus

NUM_CLASSES = 10
LABELS = torch.tensor([1, 7])


def _densenet(num_classes: int) -> nn.Module:
    """DenseNet-121's modules and forward (with its final F.relu), shrunk to four small blocks."""
    return models.DenseNet(
        growth_rate=12, block_config=(2, 2, 2, 2), num_init_features=16, num_classes=num_classes
    )


def _vit(num_classes: int) -> nn.Module:
    model = VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=num_classes,
    )
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision starts the head at zero
    return model


def _torchvision(ctor: Callable[..., nn.Module]) -> Callable[[int], nn.Module]:
    return lambda num_classes: ctor(weights=None, num_classes=num_classes)


#: name -> (constructor, Grad-CAM layer, input (H, W), activations guided_backprop must name
#: when it refuses, or None when it guides)
ARCHITECTURES: dict[str, tuple[Callable[[int], nn.Module], str, tuple[int, int], str | None]] = {
    "resnet18": (_torchvision(models.resnet18), "layer4", (64, 96), None),
    "densenet": (_densenet, "features", (64, 96), None),
    "mobilenet_v2": (_torchvision(models.mobilenet_v2), "features", (64, 64), None),
    "efficientnet_b0": (
        _torchvision(models.efficientnet_b0),
        "features",
        (64, 64),
        r"silu \(\d+ calls\), sigmoid",
    ),
    "vit": (_vit, "conv_proj", (32, 32), r"gelu \(2 calls\)"),
}


@pytest.fixture(params=list(ARCHITECTURES))
def architecture(request: pytest.FixtureRequest) -> tuple[str, nn.Module, torch.Tensor]:
    ctor, _, (height, width), _ = ARCHITECTURES[request.param]
    torch.manual_seed(0)
    model = ctor(NUM_CLASSES)
    images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    return request.param, model, images


def _fingerprint(model: nn.Module) -> tuple[list, list, list]:
    hooks = [
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    ]
    state = [v.clone() for v in model.state_dict().values()]
    return hooks, [m.training for m in model.modules()], state


def _assert_unchanged(model: nn.Module, before: tuple[list, list, list]) -> None:
    hooks, training, state = _fingerprint(model)
    assert hooks == before[0], "hooks left behind"
    assert training == before[1], "training flags changed"
    assert all(torch.equal(a, b) for a, b in zip(state, before[2], strict=True)), "state changed"


def test_grad_cam_matches_the_reference(architecture: tuple[str, nn.Module, torch.Tensor]) -> None:
    name, model, images = architecture
    layer = ARCHITECTURES[name][1]
    model.train()
    before = _fingerprint(model)
    ours = grad_cam(model, images, LABELS, layer=layer)
    _assert_unchanged(model, before)
    assert ours.shape == (2, *images.shape[-2:])
    theirs = grad_cam_reference(model, images, LABELS, model.get_submodule(layer))
    flat = theirs.isnan().flatten(1).any(1)  # the reference divides 0 by 0 on a flat map
    assert not flat.all(), "every map flat: the comparison would be empty"
    assert (ours[flat] == 0).all()
    assert torch.allclose(ours[~flat], theirs[~flat], atol=1e-5)


def test_guided_backprop_guides_every_relu_or_refuses_by_name(
    architecture: tuple[str, nn.Module, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, model, images = architecture
    refused = ARCHITECTURES[name][3]
    model.train()
    before = _fingerprint(model)
    if refused is not None:
        with pytest.raises(ValueError, match=rf"runs no ReLU.*{refused}"):
            guided_backprop(model, images, LABELS)
        _assert_unchanged(model, before)
        return
    ours = guided_backprop(model, images, LABELS)
    _assert_unchanged(model, before)
    with guided_functions(monkeypatch):
        theirs = input_gradient(model, images, LABELS)
    scale = theirs.abs().max()
    assert scale > 0
    assert torch.allclose(ours, theirs, atol=1e-5 * float(scale))
    plain = input_gradient(model, images, LABELS)
    assert not torch.allclose(ours, plain, atol=1e-3 * float(scale)), "no guidance happened"


def test_densenets_functional_relu_is_guided_too() -> None:
    """Hooks on the nn.ReLU modules alone miss DenseNet's final F.relu; guided_backprop not."""
    torch.manual_seed(0)
    model = _densenet(NUM_CLASSES).eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours = guided_backprop(model, images, LABELS)
    with guided_relus(model):
        modules_only = input_gradient(model, images, LABELS)
    scale = float(ours.abs().max())
    assert not torch.allclose(ours, modules_only, atol=1e-3 * scale)


def test_vit_token_layers_are_refused_for_grad_cam() -> None:
    model = _vit(NUM_CLASSES)
    with pytest.raises(ValueError, match=r"'encoder' outputs shape \(2, 17, 32\).*\(N, C, h, w\)"):
        grad_cam(model, torch.randn(2, 3, 32, 32), LABELS, layer="encoder")
