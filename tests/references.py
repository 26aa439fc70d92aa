"""Independent reference computations the tests compare course_utils with.

Each is written a different way from the package: Grad-CAM with a bare forward hook, guided
backprop by swapping the activation *functions* of ``torch.nn.functional`` for autograd
Functions (no hooks, no torch-function mode).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def grad_cam_reference(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, layer: nn.Module
) -> torch.Tensor:
    """Grad-CAM written out with a plain forward hook and torch.autograd.grad."""
    store = {}

    def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        store["A"] = output
        return output.clone()

    handle = layer.register_forward_hook(keep)
    try:
        scores = model.eval()(x)
        target = scores[torch.arange(len(x)), labels].sum()
        (dA,) = torch.autograd.grad(target, store["A"])
    finally:
        handle.remove()
    cam = F.relu((dA.mean(dim=(2, 3), keepdim=True) * store["A"]).sum(1))
    cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo = cam.flatten(1).min(1).values[:, None, None]
    hi = cam.flatten(1).max(1).values[:, None, None]
    return ((cam - lo) / (hi - lo)).detach()


class _GuidedClamp(torch.autograd.Function):
    """``clamp(x, 0, high)`` whose backward is ``g · 1[0 < x < high] · 1[g > 0]``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, high: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.high = high
        return x.clamp(min=0) if math.isinf(high) else x.clamp(0, high)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return g * ((x > 0) & (x < ctx.high) & (g > 0)), None


@contextmanager
def guided_functions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Replace F.relu / F.relu6 / F.hardtanh(min 0) by guided versions inside the block.

    ``nn.ReLU`` and ``nn.ReLU6`` modules call these functions too, so modules and functional
    calls are both guided — the behaviour ``guided_backprop`` promises, reached another way.
    """
    hardtanh = F.hardtanh

    def guided_hardtanh(
        x: torch.Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace=False
    ):
        if min_val == 0:
            return _GuidedClamp.apply(x, max_val)
        return hardtanh(x, min_val, max_val, inplace)

    with monkeypatch.context() as patch:
        patch.setattr(F, "relu", lambda x, inplace=False: _GuidedClamp.apply(x, math.inf))
        patch.setattr(F, "relu6", lambda x, inplace=False: _GuidedClamp.apply(x, 6.0))
        patch.setattr(F, "hardtanh", guided_hardtanh)
        yield


def input_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """∂(sum of each image's labelled score)/∂x, by plain autograd, in eval mode."""
    leaf = x.detach().clone().requires_grad_(True)
    scores = model.eval()(leaf)
    (grad,) = torch.autograd.grad(scores[torch.arange(len(x)), labels].sum(), leaf)
    return grad
