"""Checks for stage 5 (:mod:`course_utils.upsample`): resizing maps and normalising them."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..upsample import normalize_per_image, upsample
from .mistakes import fail, graded
from .probes import as_tensor, call, first_in_stage_order, on_meta, passed, report, same, seeded

__all__ = ["UPSAMPLING_MISTAKES", "check_normalize_per_image", "check_upsample"]


def _align_corners(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(maps[:, None], size, mode="bilinear", align_corners=True)[:, 0]


#: Wrong ways to resize ``(N, h, w)`` maps to ``(H, W)``, by the mistake they stand for.
UPSAMPLING_MISTAKES: list[tuple[str, Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]]] = [
    ("bicubic_overshoot", lambda m, s: upsample(m, s, "bicubic")),
    ("align_corners", _align_corners),
    ("nearest", lambda m, s: upsample(m, s, "nearest")),
    ("nearest", lambda m, s: upsample(m, s, "nearest-exact")),
]


@graded
def check_upsample(fn: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]) -> None:
    """Check ``fn(maps (N, h, w), (H, W)) -> (N, H, W)``, compared with bilinear.

    The target ``(9, 20)`` is non-square and has another aspect ratio than the 3×4 maps,
    so a swapped ``(W, H)`` shows in the shape; the maps contain a sharp peak, on which
    bicubic interpolation overshoots below the minimum. Then a batch of one resized to
    ``images.shape[-2:]`` of a ``(1, 3, 7, 5)`` batch (a ``torch.Size``), and the ``meta``
    device.
    """
    with seeded(3):
        maps = torch.rand(2, 3, 4)
    maps[0, 1, 1] = 5.0  # a peak: bicubic rings around it
    tall = torch.Size([7, 5])
    for what, m, size in [
        ("bilinear (align_corners=False) to (9, 20)", maps, (9, 20)),
        ("batch of one to images.shape[-2:] = (7, 5)", maps[1:], tall),
    ]:
        h, w = int(size[0]), int(size[1])
        expected = upsample(m, (h, w))
        got = as_tensor(call(fn, m.clone(), size), "the upsampled maps").float()
        n = m.shape[0]
        if got.shape == (n, w, h):
            fail("hw_swap", f"shape {tuple(got.shape)} for size (H, W) = ({h}, {w})")
        if n == 1 and got.dim() < 3:
            fail("squeeze_all", f"a batch of one came back with shape {tuple(got.shape)}")
        if not report(what, got, expected):
            found = [
                ([key], f"your values match {key.replace('_', ' ')}")
                for key, wrong in UPSAMPLING_MISTAKES
                if same(got, wrong(m, (h, w)), rtol=1e-4)
            ]
            if got.shape == expected.shape and got.min() < m.min() - 1e-4:
                found.append((["bicubic_overshoot"], f"minimum {float(got.min()):.3f} < the map's"))
            first_in_stage_order(found)
            kind = "wrong_shape" if got.shape != expected.shape else "wrong_values"
            fail(kind, f"{what}: no interpolation mode the check knows gives these values")
    on_meta(lambda: call(fn, torch.empty(2, 3, 4, device="meta"), (9, 20)), "resizing")
    passed("check_upsample")


@graded
def check_normalize_per_image(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(maps (N, H, W)) -> (N, H, W)``: per-image min-max to [0, 1].

    Probes: a batch in which image 1 is 100× brighter than image 0 (per-batch normalisation
    leaves image 0 nearly black) and image 2 sits on an offset of 3 (dividing by the max
    without subtracting the min), then a batch with an all-zero and a constant map
    (0 / 0 = NaN; a guard on ``max > 0`` instead of ``max - min > 0`` misses the constant),
    a batch of one and the ``meta`` device.
    """
    with seeded(4):
        maps = torch.rand(3, 4, 5)
    maps[1] *= 100
    maps[2] += 3
    flat = maps.clone()
    flat[1] = 0.0
    flat[2] = 3.0
    for what, batch in [
        ("bright and dim images", maps),
        ("all-zero and constant maps", flat),
        ("batch of one", maps[2:]),
    ]:
        original = batch.clone()
        got = as_tensor(call(fn, batch), "the normalised maps").float()
        if not torch.equal(batch, original):
            fail("inplace_normalize", "the maps passed in were changed")
        expected = normalize_per_image(original)
        if not report(what, got, expected, rtol=1e-5):
            if got.shape != expected.shape:
                key = "squeeze_all" if got.dim() < expected.dim() else "wrong_shape"
                fail(key, f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
            if got.isnan().any():
                fail("nan_zero_map", f"{int(got.isnan().sum())} NaN values")
            per_batch = (original - original.min()) / (original.max() - original.min())
            if torch.allclose(got, per_batch, atol=1e-5):
                maxima = ", ".join(f"{v:.2f}" for v in got.flatten(1).amax(1).tolist())
                fail("per_batch_norm", f"the images' maxima are {maxima}, not all 1")
            if batch is flat and torch.allclose(got[:1], expected[:1], atol=1e-5):
                fail("flat_not_zero", f"the flat maps became {got[1:].unique().tolist()}")
            fail("wrong_values", "each image should span exactly [0, 1]")
    on_meta(lambda: call(fn, torch.empty(3, 4, 5, device="meta")), "normalising")
    passed("check_normalize_per_image")
