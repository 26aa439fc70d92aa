"""Stage 5 — bringing a coarse map up to the image and onto a [0, 1] scale.

Two traps of the assignment live here. PIL's ``Image.resize`` wants ``(width, height)``,
but ``tensor.shape[-2:]`` is ``(height, width)``: on a non-square image the map comes back
transposed-stretched. And ``cam -= cam.min(); cam /= cam.max()`` normalises over the whole
*batch* (one bright image dims all the others) and divides 0 by 0 — NaN — when a map is all
zero. Here resizing is done by :func:`torch.nn.functional.interpolate` with an explicit
``(H, W)``, and normalisation is per image with flat maps mapped to zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["normalize_per_image", "upsample"]


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize ``(N, h, w)`` maps to ``(N, H, W)``.

    Bilinear with ``align_corners=False`` treats pixels as areas, the same convention as
    image resizing libraries, and — unlike bicubic — cannot overshoot below 0 ("ringing").

    Args:
        maps: tensor of shape ``(N, h, w)``.
        size: target ``(H, W)`` — height first, as in ``images.shape[-2:]``.
        mode: any ``F.interpolate`` mode for 2-D data (``"bilinear"``, ``"bicubic"``,
            ``"nearest"``); the notebooks compare them.

    Example:
        >>> upsample(torch.zeros(2, 3, 4), (30, 40)).shape
        torch.Size([2, 30, 40])
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3 or not maps.is_floating_point():
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a floating-point (N, h, w) tensor, got {shape}")
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be (H, W) with two positive ints, got {size!r}")
    align = False if mode in ("bilinear", "bicubic") else None
    out = F.interpolate(
        maps[:, None], size=(int(size[0]), int(size[1])), mode=mode, align_corners=align
    )
    return out[:, 0]


def normalize_per_image(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each image's map to [0, 1] independently.

    A map that is constant (e.g. all zero because no feature supports the class) has no
    contrast to stretch; it becomes all zeros instead of ``0 / 0 = NaN``. "Constant" allows a
    contrast of up to 8 float epsilons of the map's magnitude (about 1e-6 in float32): bilinear
    upsampling adds rounding noise of up to about 3 epsilons to a constant map, and stretching
    that to [0, 1] would draw pure noise.

    Args:
        maps: tensor ``(N, ...)``; every trailing dimension belongs to one image.

    Raises:
        ValueError: the maps contain NaN or infinity (normally a sign that the model or
            the input produced non-finite values).

    Example:
        >>> normalize_per_image(torch.tensor([[1.0, 3.0], [0.0, 0.0]]))
        tensor([[0., 1.],
                [0., 0.]])
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() < 2 or not maps.is_floating_point():
        raise ValueError("maps must be a floating-point tensor of shape (N, ...)")
    flat = maps.flatten(1)
    low, high = torch.aminmax(flat, dim=1, keepdim=True)  # one pass; NaN/inf propagate here
    span = high - low
    if not torch.isfinite(span).all():
        raise ValueError("maps contain NaN or inf; check the model's output for this input")
    rounding = 8 * torch.finfo(maps.dtype).eps * torch.maximum(low.abs(), high.abs())
    contrast = span > rounding
    # A flat map is multiplied by 0 (not divided by its ~0 span), which gives exact zeros.
    scale = torch.where(contrast, span, torch.ones_like(span))
    return ((flat - low) / scale * contrast).view_as(maps)
