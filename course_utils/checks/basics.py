"""Checks for the small building blocks: ReLU rule, score selection, pooling, resizing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..pooling import channel_weights, weighted_cam
from ..scores import select_scores
from ..upsample import normalize_per_image, upsample
from ._core import CheckFailed, as_tensor, call, fail, passed, report, seeded

__all__ = [
    "check_channel_weights",
    "check_guided_relu",
    "check_normalize",
    "check_select_scores",
    "check_upsample",
    "check_weighted_cam",
]

# Every sign combination of input x and incoming gradient g, so the three rules differ.
_X = torch.tensor([[-2.0, -1.0, 1.0, 2.0], [3.0, -3.0, 0.5, -0.5]])
_G = torch.tensor([[1.0, -1.0, 2.0, -2.0], [-1.5, 1.5, 0.5, 4.0]])


def _relu_backward(fn: Callable[..., Any], x: torch.Tensor, g: torch.Tensor) -> tuple[Any, Any]:
    x = x.clone().requires_grad_(True)
    original = x.detach().clone()
    y = call(fn, x)
    if not isinstance(y, torch.Tensor) or not y.requires_grad:
        fail("not_differentiable", "the output does not require grad, so no backward can run")
    if x.device.type != "meta" and not torch.equal(x.detach(), original):
        fail("inplace_input", "the input tensor changed during the call")
    call(y.backward, g)
    return y, x.grad


def check_guided_relu(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check a guided ReLU ``fn(x) -> y`` such as ``MyGuidedReLU.apply``.

    Compares forward with ``relu`` and backward with the guided rule
    ``g·1[x > 0]·1[g > 0]`` on a 2×4 example covering every sign combination, then reruns on
    float64 and on the ``'meta'`` device (and CUDA when available) to catch code that only
    works for float32 CPU tensors.

    Example:
        >>> from course_utils import GuidedReLU
        >>> check_guided_relu(GuidedReLU.apply)  # doctest: +ELLIPSIS
        forward vs relu: max abs diff 0.0e+00 ✓
        ...
    """
    y, grad = _relu_backward(fn, _X, _G)
    y = as_tensor(y, "forward output")
    if not report("forward vs relu", y.detach(), torch.relu(_X)):
        fail("forward_not_relu", "the forward output is not max(x, 0)")
    guided = _G * (_X > 0) * (_G > 0)
    if grad is None:
        fail("not_differentiable", "x.grad is None after backward")
    if not report("backward vs guided rule", grad, guided):
        if torch.equal(grad, _G * (_X > 0)):
            fail("backprop_rule", "negative incoming gradients were passed through")
        if torch.equal(grad, _G * (_G > 0)):
            fail("deconvnet_rule", "gradients flowed where the input was negative")
        fail("wrong_values", "the backward pass matches none of the three ReLU rules")
    devices = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])
    for dtype, device in [(torch.float64, "cpu")] + [(torch.float32, d) for d in devices]:
        try:
            y, grad = _relu_backward(fn, _X.to(device, dtype), _G.to(device, dtype))
        except CheckFailed as exc:
            error = exc.__cause__ or exc.mistake.name
            fail("cpu_only_zeros", f"fails for a {dtype} tensor on {device!r}: {error}")
        ok = y.dtype == dtype and y.device.type == device and grad.device.type == device
        print(
            f"{str(dtype)[6:]} on {device}: output {str(y.dtype)[6:]} on {y.device.type} "
            f"{'✓' if ok else '✗'}"
        )
        if not ok:
            fail("cpu_only_zeros", f"a {dtype} input on {device!r} gave {y.dtype} on {y.device}")
        if device != "meta" and not report(f"{device} backward", grad.cpu().float(), guided):
            fail("wrong_values", f"the backward differs on {device} {dtype}")
    passed("check_guided_relu")


def check_select_scores(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(scores, labels) -> (N,)`` picking ``scores[i, labels[i]]``.

    Probes: a square and a rectangular score matrix (a wrong ``gather`` dimension indexes
    out of range or picks other entries), labels that differ from the predicted classes,
    and a batch of one (``squeeze()`` makes it 0-d).
    """
    with seeded(2):
        scores = torch.randn(4, 6)
    labels = scores.argmin(dim=1)  # never the prediction, so argmax cannot pass
    for what, s, lab in [
        ("square (4, 4) scores", scores[:, :4].contiguous(), scores[:, :4].argmin(dim=1)),
        ("(4, 6) scores", scores, labels),
    ]:
        s = s.clone().requires_grad_(True)
        try:
            out = call(fn, s, lab)
        except CheckFailed as exc:  # indexing out of range: the class index went to dim 0
            if isinstance(exc.__cause__, (IndexError, RuntimeError)):
                fail("gather_dim", f"{what}: {type(exc.__cause__).__name__}: {exc.__cause__}")
            raise
        out = as_tensor(out, "the selected scores")
        expected = select_scores(s, lab)
        if out.shape == (s.shape[0], 1):
            fail("no_squeeze", f"{what}: shape {tuple(out.shape)}, expected ({s.shape[0]},)")
        if not report(what, out.detach(), expected.detach()):
            if out.shape == expected.shape and torch.equal(out.detach(), s.detach().amax(1)):
                fail("predicted_not_labels", "you returned each row's maximum")
            if out.shape == expected.shape and torch.equal(out.detach(), s.detach()[lab, 0]):
                fail("gather_dim", "you picked scores[labels[i], 0]: gather(0, ...)")
            kind = "wrong_shape" if out.shape != expected.shape else "wrong_values"
            fail(kind, f"{what}: got shape {tuple(out.shape)}, expected {tuple(expected.shape)}")
        if not out.requires_grad:
            fail("not_differentiable", "the selected scores do not require grad")
    one = call(fn, scores[:1].clone(), labels[:1])
    one = as_tensor(one, "the selected score")
    print(f"batch of one: shape {tuple(one.shape)} {'✓' if one.shape == (1,) else '✗'}")
    if one.shape != (1,):
        fail("squeeze_all", f"a batch of one gave shape {tuple(one.shape)}, expected (1,)")
    passed("check_select_scores")


def check_channel_weights(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(gradients (N, C, h, w)) -> (N, C)`` against the hand-computed mean.

    Uses ``arange`` gradients of shape ``(2, 3, 2, 4)``: image ``n``, channel ``c`` has the
    mean ``32n + 8c + 3.5``, so the sum (×8), the wrong axes and a leftover ``keepdim`` give
    recognisably different numbers.
    """
    grads = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4)
    expected = torch.tensor([[3.5, 11.5, 19.5], [27.5, 35.5, 43.5]])
    assert torch.equal(expected, channel_weights(grads))  # the hand computation is right
    got = as_tensor(call(fn, grads.clone()), "the weights")
    if got.shape == (2, 3, 1, 1) and torch.allclose(got.flatten(1), expected):
        fail("keepdim", "shape (2, 3, 1, 1), expected (2, 3)")
    if not report("weights vs hand-computed means", got, expected):
        if got.shape == expected.shape and torch.allclose(got, expected * 8):
            fail("sum_not_mean", "every weight is h·w = 8 times too large")
        if got.shape != expected.shape:
            fail("wrong_dims", f"shape {tuple(got.shape)}, expected (N, C) = (2, 3)")
        fail("wrong_values", f"got {got.tolist()}, expected {expected.tolist()}")
    passed("check_channel_weights")


def check_weighted_cam(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(activations (N, C, h, w), weights (N, C)) -> (N, h, w)``.

    Two images, two channels, a 1×3 map with hand-computed numbers: image 0 has weights
    (1, -1) on maps (1, 2, 3) and (3, 1, 0) → sums (-2, 1, 3) → ReLU (0, 1, 3); image 1
    has weights (2, 1) → (5, 5, 6).
    """
    acts = torch.tensor([[[[1.0, 2.0, 3.0]], [[3.0, 1.0, 0.0]]]] * 2)
    weights = torch.tensor([[1.0, -1.0], [2.0, 1.0]])
    raw = torch.tensor([[[-2.0, 1.0, 3.0]], [[5.0, 5.0, 6.0]]])
    expected = raw.clamp(min=0)
    assert torch.equal(expected, weighted_cam(acts, weights))
    got = as_tensor(call(fn, acts.clone(), weights.clone()), "the map")
    if got.shape == (2, 1, 1, 3):
        fail("keepdim", "shape (2, 1, 1, 3), expected (N, h, w) = (2, 1, 3); sum over dim 1")
    if not report("map vs hand-computed", got, expected):
        if got.shape != expected.shape:
            fail("wrong_shape", f"shape {tuple(got.shape)}, expected (2, 1, 3)")
        candidates = {
            "missing_relu": raw,
            "relu_before_sum": (weights[:, :, None, None] * acts).clamp(min=0).sum(1),
            "mean_over_channels": expected / 2,
            "weights_mismatched": (weights[0][None, :, None, None] * acts).sum(1).clamp(min=0),
        }
        detail = f"got {got.flatten(1).tolist()}, expected {expected.flatten(1).tolist()}"
        for key, wrong in candidates.items():
            if torch.allclose(got, wrong):
                fail(key, detail)
        fail("wrong_values", detail)
    passed("check_weighted_cam")


def check_upsample(fn: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]) -> None:
    """Check ``fn(maps (N, h, w), (H, W)) -> (N, H, W)``, compared with bilinear.

    The target ``(9, 20)`` is non-square and has another aspect ratio than the 3×4 maps,
    so a swapped ``(W, H)`` shows in the shape; the maps contain a sharp peak, on which
    bicubic interpolation overshoots below the minimum.
    """
    with seeded(3):
        maps = torch.rand(2, 3, 4)
    maps[0, 1, 1] = 5.0  # a peak: bicubic rings around it
    size = (9, 20)
    expected = upsample(maps, size)
    got = as_tensor(call(fn, maps.clone(), size), "the upsampled maps").float()
    if got.shape == (2, 20, 9):
        fail("hw_swap", "shape (2, 20, 9) for size (H, W) = (9, 20)")
    if not report("bilinear (align_corners=False)", got, expected):
        if got.shape != expected.shape:
            fail("wrong_shape", f"shape {tuple(got.shape)}, expected (2, 9, 20)")

        if got.min() < maps.min() - 1e-4 or torch.allclose(got, upsample(maps, size, "bicubic")):
            fail(
                "bicubic_overshoot",
                f"minimum {float(got.min()):.3f} < the maps' minimum {float(maps.min()):.3f}",
            )
        corners = F.interpolate(maps[:, None], size, mode="bilinear", align_corners=True)
        if torch.allclose(got, corners[:, 0], atol=1e-5):
            fail("align_corners", "your values match align_corners=True")
        if torch.allclose(got, upsample(maps, size, "nearest")):
            fail("nearest", "your values match mode='nearest'")
        fail("wrong_values", "the values match no interpolation mode the check knows")
    passed("check_upsample")


def check_normalize(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(maps (N, H, W)) -> (N, H, W)``: per-image min-max to [0, 1].

    Probes: a batch in which image 1 is 100× brighter than image 0 (per-batch normalisation
    leaves image 0 nearly black) and image 2 sits on an offset of 3 (dividing by the max
    without subtracting the min), then a batch with an all-zero and a constant map
    (0 / 0 = NaN; a guard on ``max > 0`` instead of ``max - min > 0`` misses the constant).
    """
    with seeded(4):
        maps = torch.rand(3, 4, 5)
    maps[1] *= 100
    maps[2] += 3
    flat = maps.clone()
    flat[1] = 0.0
    flat[2] = 3.0
    for what, batch in [("bright and dim images", maps), ("all-zero and constant maps", flat)]:
        original = batch.clone()
        got = as_tensor(call(fn, batch), "the normalised maps").float()
        if not torch.equal(batch, original):
            fail("inplace_normalize", "the maps passed in were changed")
        expected = normalize_per_image(original)
        if not report(what, got, expected, rtol=1e-5):
            if got.shape != expected.shape:
                fail("wrong_shape", f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
            if got.isnan().any():
                fail("nan_zero_map", f"{int(got.isnan().sum())} NaN values")
            per_batch = (original - original.min()) / (original.max() - original.min())
            if torch.allclose(got, per_batch, atol=1e-5):
                maxima = ", ".join(f"{v:.2f}" for v in got.flatten(1).amax(1).tolist())
                fail("per_batch_norm", f"the images' maxima are {maxima}, not all 1")
            if batch is flat and torch.allclose(got[:1], expected[:1], atol=1e-5):
                fail("flat_not_zero", f"the flat maps became {got[1:].unique().tolist()}")
            fail("wrong_values", "each image should span exactly [0, 1]")
    passed("check_normalize")
