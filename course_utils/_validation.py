"""Input checks shared by the public functions: fail early, name the problem."""

from __future__ import annotations

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
    """Raise if ``model`` is not a module or lives on another device/dtype than ``images``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
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
