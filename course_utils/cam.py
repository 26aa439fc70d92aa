r"""Stage 7 — Grad-CAM and guided Grad-CAM, plus the assignment's ``GradCam`` API.

.. math::
    L^c = \operatorname{normalize}\Big(\operatorname{upsample}\big(
        \operatorname{ReLU}(\textstyle\sum_k \alpha_k^c A^k)\big)\Big),
    \qquad \alpha_k^c = \frac{1}{hw}\sum_{i,j}\frac{\partial y^c}{\partial A^k_{ij}}

Each step is a named function of its stage module (:mod:`course_utils.hooks`,
:mod:`course_utils.pooling`, :mod:`course_utils.upsample`); this file only chains them.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from ._validation import check_images, check_model, class_scores, fresh_input, gradients_on
from .guided import guided_backprop
from .hooks import LayerRecorder, evaluating, resolve_layer
from .pooling import channel_weights, weighted_cam
from .scores import LabelsLike, select_scores
from .upsample import normalize_per_image, upsample

__all__ = [
    "FlatMapWarning",
    "GradCam",
    "grad_cam",
    "guided_grad_cam",
    "layer_activation_and_gradient",
]

Layer = nn.Module | str


class FlatMapWarning(UserWarning):
    """Every image's Grad-CAM map is constant at the layer: the result is all zeros."""


def layer_activation_and_gradient(
    model: nn.Module, images: torch.Tensor, labels: LabelsLike | None = None, *, layer: Layer
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass, and a backward pass that stops at ``layer``.

    Because image ``i``'s score depends only on image ``i`` (in eval mode), differentiating
    the *sum* of the selected scores gives every image its own gradient in one pass — the
    same as the assignment's ``backward(torch.ones_like(scores))``.

    Args:
        model: as in :func:`grad_cam`.
        images: as in :func:`grad_cam`.
        labels: as in :func:`grad_cam`.
        layer: as in :func:`grad_cam`.

    Returns:
        ``(A, dA)``: the layer's output and ``∂y^c/∂A``, detached, both ``(N, C, h, w)``.
    """
    check_images(images)
    check_model(model, images)
    with (
        evaluating(model),
        LayerRecorder(model, layer, record_gradient=False) as rec,
        gradients_on(),
    ):
        x = fresh_input(images, requires_grad=False)
        scores = class_scores(model, x)
        activation = rec.activation
        if activation is None:
            raise ValueError(f"layer {rec.name!r} did not run during the forward pass")
        if activation.dim() != 4:
            raise ValueError(
                f"layer {rec.name!r} outputs shape {tuple(activation.shape)}; Grad-CAM needs "
                "a convolutional layer with (N, C, h, w) feature maps"
            )
        chosen = scores.argmax(dim=1) if labels is None else labels
        picked = select_scores(scores, chosen)
        (grads,) = torch.autograd.grad(picked.sum(), activation, allow_unused=True)
    if grads is None:
        raise ValueError(f"the class scores do not depend on layer {rec.name!r}")
    return activation.detach(), grads


def grad_cam(
    model: nn.Module, images: torch.Tensor, labels: LabelsLike | None = None, *, layer: Layer
) -> torch.Tensor:
    """Grad-CAM heatmaps at the images' resolution, each scaled to [0, 1].

    Args:
        model: classifier returning ``(N, K)`` scores. It is run in eval mode and handed
            back unchanged (no hooks, same training flags, ``param.grad`` untouched).
        images: preprocessed batch ``(N, C, H, W)`` on the model's device; not modified.
        labels: class per image (any integer dtype, a list of ints, or one int for all);
            ``None`` uses each image's predicted class.
        layer: the convolutional layer to explain — a submodule or its dotted name, e.g.
            ``"features.12"`` (SqueezeNet 1.1) or ``"layer4"`` (ResNet).

    Returns:
        Tensor ``(N, H, W)`` with values in [0, 1]. A map that is constant at the layer's
        resolution carries no location — no feature supports the class, or the layer is 1x1 —
        and comes back as exact zeros.

    Warns:
        FlatMapWarning: when every image's map is constant (a 1x1 layer such as ``avgpool``,
            an input so small that the layer shrinks to one pixel, a layer after the spatial
            pooling, or a layer whose maps are identically zero).

    Example:
        >>> from torchvision.models import squeezenet1_1
        >>> net = squeezenet1_1(weights=None)
        >>> grad_cam(net, torch.randn(2, 3, 64, 80), layer="features.12").shape
        torch.Size([2, 64, 80])
    """
    activations, gradients = layer_activation_and_gradient(model, images, labels, layer=layer)
    with gradients_on():  # ordinary tensors, also under the caller's inference_mode
        cam = weighted_cam(activations, channel_weights(gradients))
        low, high = torch.aminmax(cam.flatten(1), dim=1)
        if bool((low == high).all()):
            _warn_flat(resolve_layer(model, layer)[0], tuple(cam.shape[1:]))
        return normalize_per_image(upsample(cam, (images.shape[-2], images.shape[-1])))


def _warn_flat(name: str, size: tuple[int, ...]) -> None:
    height, width = size
    why = (
        "a 1x1 layer has no spatial detail: choose an earlier convolutional layer or a larger input"
        if height * width == 1
        else "no feature of this layer supports the classes asked for; try another layer"
    )
    warnings.warn(
        f"Grad-CAM at layer {name!r} ({height}x{width}) is constant for every image, so every "
        f"map is all zeros: {why}",
        FlatMapWarning,
        stacklevel=3,
    )


def guided_grad_cam(
    model: nn.Module, images: torch.Tensor, labels: LabelsLike | None = None, *, layer: Layer
) -> torch.Tensor:
    """Guided Grad-CAM: guided-backprop detail masked by the Grad-CAM region.

    Guided backprop is sharp but hardly class-specific; Grad-CAM is class-specific but
    coarse. Their pixel-wise product keeps the fine detail only where the class is.

    Returns:
        Tensor ``(N, C, H, W)``: ``guided_backprop(...) * grad_cam(...)[:, None]``.

    Example:
        >>> from torchvision.models import squeezenet1_1
        >>> net = squeezenet1_1(weights=None)
        >>> guided_grad_cam(net, torch.randn(1, 3, 64, 64), [7], layer="features.12").shape
        torch.Size([1, 3, 64, 64])
    """
    cam = grad_cam(model, images, labels, layer=layer)
    detail = guided_backprop(model, images, labels)
    with gradients_on():
        return detail * cam[:, None]


class GradCam:
    """The assignment's API, for students of that course, backed by the correct functions.

    Args:
        layer: layer for :meth:`grad_cam`; defaults to SqueezeNet 1.1's last Fire module.

    Example:
        >>> from torchvision.models import squeezenet1_1
        >>> net = squeezenet1_1(weights=None)
        >>> X, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
        >>> GradCam().guided_backprop(X, y, net).shape
        (2, 64, 64, 3)
        >>> GradCam(layer="features.12").grad_cam(X, y, net).shape
        (2, 64, 64)
    """

    def __init__(self, layer: Layer = "features.12") -> None:
        self.layer = layer

    def guided_backprop(
        self, X_tensor: torch.Tensor, y_tensor: LabelsLike | None, gc_model: nn.Module
    ) -> np.ndarray:
        """Guided backprop as a numpy array ``(N, H, W, C)``, channels last for plotting."""
        grads = guided_backprop(gc_model, X_tensor, y_tensor)
        return grads.permute(0, 2, 3, 1).cpu().numpy()

    def grad_cam(
        self, X_tensor: torch.Tensor, y_tensor: LabelsLike | None, gc_model: nn.Module
    ) -> np.ndarray:
        """Grad-CAM as a numpy array ``(N, H, W)`` in [0, 1]."""
        return grad_cam(gc_model, X_tensor, y_tensor, layer=self.layer).cpu().numpy()
