"""Stage 6 — guided backpropagation end to end.

The gradient of the chosen class score with respect to the input pixels, computed with every
ReLU's backward replaced by the guided rule (:class:`course_utils.relu.GuidedReLU`). Compared
with the assignment's version, the model is not modified (hooks, removed afterwards), the
caller's images get no ``.grad``, and :func:`torch.autograd.grad` leaves ``param.grad`` alone.
"""

from __future__ import annotations

import torch
from torch import nn

from ._validation import check_images, check_model, class_scores, fresh_input, gradients_on
from .hooks import evaluating
from .relu import ActivationCalls
from .scores import LabelsLike, select_scores

__all__ = ["guided_backprop"]


def guided_backprop(
    model: nn.Module, images: torch.Tensor, labels: LabelsLike | None = None
) -> torch.Tensor:
    r"""Guided-backpropagation saliency: :math:`\partial y^c / \partial x` under the guided rule.

    The rule — it never degrades silently to the plain gradient:

    * every ReLU and ReLU6 the forward pass *runs* is guided: ``nn.ReLU``/``nn.ReLU6``
      modules (any depth, shared, in place), and ``F.relu``, ``torch.relu``, ``x.relu()`` or
      ``F.relu6`` called inside a ``forward`` (DenseNet's last ReLU is one) — a
      :class:`~course_utils.relu.ActivationCalls` mode sees each call;
    * a model that runs no ReLU at all (SiLU, GELU: EfficientNet, ViT) is refused, and the
      message names the activations it does run;
    * a model that runs rectifier-like activations without a guided rule next to its ReLUs
      (Hardswish in MobileNetV3, LeakyReLU, GELU, ...) is refused by name, since the result
      would be a mix of guided and plain gradients; saturating gates (sigmoid, tanh) are allowed;
    * if no guided hook fires in the backward pass (every ReLU lies off the path from the input
      to the scores), the call is refused too.

    Args:
        model: classifier returning ``(N, K)`` scores. It is run in eval mode and handed back
            unchanged.
        images: preprocessed batch ``(N, C, H, W)`` on the model's device.
        labels: class per image (see :func:`course_utils.scores.as_labels`); ``None`` uses
            each image's predicted class.

    Returns:
        Raw guided gradients, shape ``(N, C, H, W)``, on the images' device.

    Raises:
        ValueError: bad images or labels, or a model the rule above refuses.

    Example:
        >>> from torchvision.models import squeezenet1_1
        >>> net = squeezenet1_1(weights=None)
        >>> guided_backprop(net, torch.randn(1, 3, 64, 80), [3]).shape
        torch.Size([1, 3, 64, 80])
    """
    check_images(images)
    check_model(model, images)
    with evaluating(model), gradients_on():
        x = fresh_input(images, requires_grad=True)
        with ActivationCalls(guide=True) as activations:
            scores = class_scores(model, x)
        activations.refuse_unguidable(model)
        chosen = scores.argmax(dim=1) if labels is None else labels
        (grad,) = torch.autograd.grad(select_scores(scores, chosen).sum(), x)
    if activations.fired == 0:
        raise ValueError(
            f"{type(model).__name__} runs ReLUs, but no ReLU lies between the input and the "
            "scores, so guided backprop would be the plain gradient"
        )
    return grad
