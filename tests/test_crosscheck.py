"""course_utils agrees with the libraries people use: captum and pytorch-grad-cam.

Needs the ``compare`` extra (``pip install -e .[compare]``); skipped without it.

What each library computes, and why the numbers must match:

* captum ``LayerGradCam(relu_attributions=True)`` returns ``ReLU(Σ_k mean(∂y/∂A^k) A^k)`` at the
  layer's resolution; ``LayerAttribution.interpolate(..., "bilinear")`` upsamples it with
  ``F.interpolate(align_corners=False)`` — our convention — and we min-max each image.
* pytorch-grad-cam's ``GradCAM`` computes the same layer map (in numpy), min-max normalises it
  (dividing by ``max + 1e-7``), resizes it with ``cv2.resize`` (``INTER_LINEAR``, pixel-area
  centres: the same as ``align_corners=False``), then — in ``aggregate_multi_layers`` — min-max
  normalises the resized map *again*. Because min-max is invariant to the first, affine
  normalisation, the result equals ours, normalised after upsampling, up to the 1e-7 epsilon.
  (Normalising only *before* upsampling would differ: bilinear upsampling never lands exactly
  on an interior layer pixel, so the upsampled maximum is usually below 1.)
* captum ``GuidedBackprop`` overrides the backward of every ``nn.ReLU`` module with a hook
  returning ``ReLU(grad_input)`` = ``1[x>0]·ReLU(grad_output)``: the guided rule of
  :class:`course_utils.relu.GuidedReLU`. It handles ``nn.ReLU`` only, so both test models use
  ``nn.ReLU`` everywhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, squeezenet1_1

from course_utils.cam import grad_cam
from course_utils.guided import guided_backprop
from course_utils.upsample import normalize_per_image

captum_attr = pytest.importorskip("captum.attr")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
model_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")

TOLERANCE = 1e-5

MODELS = {"squeezenet1_1": (squeezenet1_1, "features.12"), "resnet18": (resnet18, "layer4")}
SIZES = {"non-square": (80, 112), "square": (64, 64)}


@pytest.fixture(autouse=True)
def exact_float32() -> Iterator[None]:
    """On CUDA, TF32 convolutions would let two libraries' runs differ by ~1e-3."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


@pytest.fixture(params=list(MODELS))
def model_and_layer(request: pytest.FixtureRequest, device: str) -> tuple[nn.Module, str]:
    ctor, layer = MODELS[request.param]
    torch.manual_seed(0)
    return ctor(weights=None).to(device).eval(), layer


@pytest.fixture(params=list(SIZES))
def batch(request: pytest.FixtureRequest, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    height, width = SIZES[request.param]
    images = torch.randn(3, 3, height, width, generator=torch.Generator().manual_seed(1))
    return images.to(device), torch.tensor([1, 5, 9], device=device)


def max_abs_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float().cpu() - b.float().cpu()).abs().max().item()


def test_grad_cam_matches_captum_layer_grad_cam(model_and_layer, batch):
    model, layer = model_and_layer
    images, labels = batch
    ours = grad_cam(model, images, labels, layer=layer)
    assert ours.flatten(1).amax(dim=1).sum() > 0, "all maps flat: the comparison would be empty"

    layer_cam = captum_attr.LayerGradCam(model, model.get_submodule(layer)).attribute(
        images, target=labels, relu_attributions=True
    )
    upsampled = captum_attr.LayerAttribution.interpolate(
        layer_cam, tuple(images.shape[-2:]), interpolate_mode="bilinear"
    )
    theirs = normalize_per_image(upsampled[:, 0].detach())
    assert max_abs_difference(ours, theirs) <= TOLERANCE


def test_grad_cam_matches_pytorch_grad_cam(model_and_layer, batch):
    model, layer = model_and_layer
    images, labels = batch
    ours = grad_cam(model, images, labels, layer=layer)
    targets = [model_targets.ClassifierOutputTarget(int(c)) for c in labels]
    with pytorch_grad_cam.GradCAM(model, [model.get_submodule(layer)]) as cam:
        theirs = torch.from_numpy(cam(images, targets=targets))
    assert max_abs_difference(ours, theirs) <= TOLERANCE


def test_grad_cam_predicted_class_matches_pytorch_grad_cam(device):
    torch.manual_seed(0)
    model = squeezenet1_1(weights=None).to(device).eval()
    images = torch.randn(2, 3, 72, 100, generator=torch.Generator().manual_seed(2)).to(device)
    ours = grad_cam(model, images, layer="features.12")  # labels=None: the argmax class
    with pytorch_grad_cam.GradCAM(model, [model.features[12]]) as cam:
        theirs = torch.from_numpy(cam(images, targets=None))
    assert max_abs_difference(ours, theirs) <= TOLERANCE


def test_guided_backprop_matches_captum(model_and_layer, batch):
    model, _ = model_and_layer
    images, labels = batch
    ours = guided_backprop(model, images, labels)
    with warnings.catch_warnings():
        # captum announces that it sets requires_grad and ReLU backward hooks; both expected.
        warnings.simplefilter("ignore", UserWarning)
        theirs = captum_attr.GuidedBackprop(model).attribute(images.clone(), target=labels)
    scale = theirs.abs().max().item()
    assert scale > 0
    assert max_abs_difference(ours, theirs) <= TOLERANCE * scale
