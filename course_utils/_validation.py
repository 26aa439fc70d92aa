"""Input checks shared by the public functions: fail early, name the problem."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def check_images(images: Any) -> None:
    """Raise if ``images`` is not a non-empty, finite, floating-point ``(N, C, H, W)`` tensor."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(
            f"images must have shape (N, C, H, W), got {tuple(images.shape)}"
            + (" (add a batch dimension with images[None])" if images.dim() == 3 else "")
        )
    if not images.is_floating_point():
        raise TypeError(
            f"images must be floating point (preprocessed), got {images.dtype}; "
            "convert uint8 pixels with the model's preprocess or .float() / 255"
        )
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (N = 0)")
    if min(images.shape[1:]) == 0:
        raise ValueError(f"images has an empty dimension: {tuple(images.shape)}")
    # A sum is one cheap pass and NaN/inf propagate through it; only a suspicious sum (or an
    # overflow of huge finite values) pays for the elementwise test.
    if not torch.isfinite(images.sum()) and not torch.isfinite(images).all():
        raise ValueError("images contain NaN or inf")


def check_model(model: Any, images: torch.Tensor) -> None:
    """Raise if ``model`` cannot take ``images``: device, dtype, or channels its stem expects.

    The channel check reads the first registered ``nn.Conv2d`` (the stem of every torchvision
    CNN, the patch embedding of a ViT), so the commonest slip — a channels-last ``(N, H, W, 3)``
    batch, or a greyscale/RGBA one — is named before the model runs instead of surfacing as
    torch's convolution error from deep inside it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    stem = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if stem is not None and images.shape[1] != stem[1].in_channels:
        name, expected = stem[0], stem[1].in_channels
        if images.shape[-1] == expected:
            raise ValueError(
                f"images of shape {tuple(images.shape)} look channels-last (N, H, W, C), but "
                f"the model's first convolution {name!r} wants (N, {expected}, H, W); use "
                "images.permute(0, 3, 1, 2)"
            )
        hint = (
            {
                1: "; repeat greyscale with images.expand(-1, 3, -1, -1)",
                4: "; drop alpha with images[:, :3]",
            }.get(images.shape[1], "")
            if expected == 3
            else ""
        )
        raise ValueError(
            f"the model's first convolution {name!r} expects {expected} input channels, but "
            f"images have {images.shape[1]} (shape {tuple(images.shape)}){hint}"
        )
    param = next(model.parameters(), None)
    if param is None:
        return
    if param.device != images.device:
        raise ValueError(
            f"model is on {param.device} but images are on {images.device}; "
            f"move one of them, e.g. images.to({str(param.device)!r})"
        )
    if param.dtype != images.dtype:
        raise ValueError(
            f"model weights are {param.dtype} but images are {images.dtype}; "
            f"use images.to({param.dtype})"
        )


@contextmanager
def gradients_on() -> Iterator[None]:
    """Compute gradients even inside the caller's ``no_grad`` or ``inference_mode``.

    Everything the public functions return is computed inside this block, so they return
    ordinary tensors in every context (an inference tensor could not be used by autograd
    later, and the kind would differ between functions).
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


def fresh_input(images: torch.Tensor, *, requires_grad: bool) -> torch.Tensor:
    """A private copy of ``images``, detached from the caller's graph.

    Cloning keeps the caller's tensor untouched (its ``requires_grad``, its ``.grad`` and its
    values, even if the model does something in place) and makes non-leaf inputs and frozen
    models work alike. Only guided backprop needs ``requires_grad``: Grad-CAM stops at the
    layer, and asking for the input's gradient would make the first layers save more.
    """
    return images.detach().clone().requires_grad_(requires_grad)


def class_scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` and check that it returns ``(N, K)`` class scores."""
    scores = model(x)
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or scores.shape[0] != x.shape[0]:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"the model must return (N, num_classes) scores, got {shape}")
    return scores
