"""Stage 6 — guided backpropagation end to end.

The gradient of the chosen class score with respect to the input pixels, computed with every
ReLU's backward replaced by the guided rule (:class:`course_utils.relu.GuidedReLU`). Compared
with the assignment's version, the model is not modified (hooks, removed afterwards), the
caller's images get no ``.grad``, and :func:`torch.autograd.grad` leaves ``param.grad`` alone.
"""

from __future__ import annotations

import torch
from torch import nn

from ._validation import check_images, check_model, class_scores, fresh_input
from .hooks import evaluating
from .relu import guided_relus
from .scores import LabelsLike, select_scores

__all__ = ["guided_backprop"]


def guided_backprop(
    model: nn.Module, images: torch.Tensor, labels: LabelsLike | None = None
) -> torch.Tensor:
    r"""Guided-backpropagation saliency: :math:`\partial y^c / \partial x` under the guided rule.

    Args:
        model: classifier returning ``(N, K)`` scores; all its ``nn.ReLU``/``nn.ReLU6``
            modules (any depth, in place or not) are made guided for this call only.
        images: preprocessed batch ``(N, C, H, W)`` on the model's device.
        labels: class per image (see :func:`course_utils.scores.as_labels`); ``None`` uses
            each image's predicted class.

    Returns:
        Raw guided gradients, shape ``(N, C, H, W)``, on the images' device.

    Example:
        >>> from torchvision.models import squeezenet1_1
        >>> net = squeezenet1_1(weights=None)
        >>> guided_backprop(net, torch.randn(1, 3, 64, 80), [3]).shape
        torch.Size([1, 3, 64, 80])
    """
    check_images(images)
    check_model(model, images)
    # Gradients are needed even if the caller is in no_grad or inference mode.
    with (
        evaluating(model),
        guided_relus(model),
        torch.inference_mode(False),
        torch.enable_grad(),
    ):
        x = fresh_input(images, requires_grad=True)
        scores = class_scores(model, x)
        chosen = scores.argmax(dim=1) if labels is None else labels
        (grad,) = torch.autograd.grad(select_scores(scores, chosen).sum(), x)
    return grad
