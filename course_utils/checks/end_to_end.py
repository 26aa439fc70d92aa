"""End-to-end checks on SqueezeNet 1.1 (random weights, offline) with non-square images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchvision.models import squeezenet1_1

from ..cam import grad_cam, layer_activation_and_gradient
from ..guided import guided_backprop
from ..pooling import channel_weights, weighted_cam
from ..relu import relu_modules
from ..upsample import upsample
from ._core import (
    MISTAKES,
    CheckFailed,
    accepts,
    as_tensor,
    call,
    count_hooks,
    deprecated_hook_modules,
    fail,
    passed,
    report,
    ruined,
    seeded,
    structure,
)
from .gradients import LABELS, input_gradient, nchw, run_gradient_probes

__all__ = ["check_grad_cam", "check_guided_backprop"]

#: The layer the assignment explains: SqueezeNet 1.1's last Fire module.
LAYER = "features.12"


def squeezenet_probe() -> tuple[nn.Module, torch.Tensor]:
    """Seeded SqueezeNet 1.1 (eval) and three 64×80 images, the second one brighter."""
    with seeded(17):  # a seed where every probe label gives a non-empty map
        model = squeezenet1_1(weights=None).eval()
        images = torch.randn(3, 3, 64, 80)
    images[1] *= 3
    return model, images


def _guarded(
    fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], Any],
    model: nn.Module,
    convert: Callable[[Any, torch.Tensor], torch.Tensor],
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Wrap ``fn`` so that every call is followed by the model-integrity probes."""
    before, hooks = structure(model), count_hooks(model)

    def wrapped(m: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        try:
            out = convert(call(fn, m, x, labels), x)
        except CheckFailed as exc:
            damage = ruined(model, before)
            if damage and exc.mistake is MISTAKES["crashed"]:
                fail("permanent_swap", f"{damage} ({exc.__cause__})")
            raise
        damage = ruined(model, before)
        if damage:
            fail("permanent_swap", damage)
        if count_hooks(model) != hooks:
            fail("hooks_left", f"{count_hooks(model) - hooks} hook(s) left on the model")
        deprecated = deprecated_hook_modules(model)
        if deprecated:
            fail("deprecated_backward_hook", f"register_backward_hook was used on {deprecated}")
        return out

    return wrapped


def batch_of_one(
    wrapped: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    model: nn.Module,
    images: torch.Tensor,
    reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    """The last probe: a batch of one, where a crash almost always means ``squeeze()``."""
    try:
        one = wrapped(model, images[:1].clone(), LABELS[:1])
    except CheckFailed as exc:
        if exc.mistake is MISTAKES["crashed"]:
            fail("squeeze_all", f"a batch of one crashed: {exc.__cause__}")
        raise
    if not report("batch of one", one, reference(images[:1], LABELS[:1])):
        fail("wrong_values", "a batch of one differs from the reference")


def check_guided_backprop(fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]) -> None:
    """Check ``fn(model, images, labels)`` → guided-backprop gradients, end to end.

    ``fn`` may return a tensor ``(N, C, H, W)`` or, like the assignment, a numpy array
    ``(N, H, W, C)``. Compared with :func:`course_utils.guided_backprop` on SqueezeNet 1.1
    (random weights) and three non-square 64×80 images; probes the model after every call
    (swapped modules, hooks left), the labels (one-hot over the batch, hard-coded vector),
    train mode, two calls on one tensor, the caller's images and a batch of one.
    """
    model, images = squeezenet_probe()
    wrapped = _guarded(fn, model, lambda out, x: nchw(out, x, "the guided gradient"))

    def reference(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return guided_backprop(model, x, labels)

    def diagnose(got: torch.Tensor) -> None:
        relus = [m for _, m in relu_modules(model)]
        top = [m for m in model.features.children() if m in relus]
        scale = float(got.abs().max())
        for key, guided in [("no_guided_relus", []), ("missed_nested", top)]:
            partly = input_gradient(model, images, LABELS, guided)
            if torch.allclose(got, partly, rtol=1e-3, atol=1e-4 * scale):
                fail(
                    key,
                    "your gradient equals the gradient with "
                    f"{len(guided)} of the {len(relus)} ReLUs guided",
                )

    run_gradient_probes(wrapped, model, images, reference, "guided gradient", diagnose)
    batch_of_one(wrapped, model, images, reference)
    passed("check_guided_backprop")


def check_grad_cam(fn: Callable[..., Any]) -> None:
    """Check ``fn(model, images, labels)`` → Grad-CAM maps ``(N, H, W)`` in [0, 1].

    The layer is ``"features.12"``; if ``fn`` takes a ``layer`` argument it is passed as
    ``layer="features.12"``. Compared with :func:`course_utils.grad_cam` on SqueezeNet 1.1
    (random weights) with three non-square 64×80 images of different brightness; besides
    the gradient probes of :func:`check_guided_backprop` it probes an all-black image
    (zero map → NaN), per-batch normalisation and the (H, W) / (W, H) swap.
    """
    model, images = squeezenet_probe()
    layer_kw = {"layer": LAYER} if accepts(fn, "layer") else {}

    def convert(out: Any, x: torch.Tensor) -> torch.Tensor:
        cam = as_tensor(out, "the Grad-CAM maps").detach().float()
        n, _, h, w = x.shape
        if cam.shape == (n, w, h):
            fail("hw_swap", f"shape {tuple(cam.shape)} for images of (H, W) = ({h}, {w})")
        if cam.shape != (n, h, w):
            key = "squeeze_all" if n == 1 and cam.dim() < 3 else "wrong_shape"
            fail(key, f"shape {tuple(cam.shape)}, expected {(n, h, w)}")
        return cam

    wrapped = _guarded(lambda m, x, lab: fn(m, x, lab, **layer_kw), model, convert)

    def reference(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return grad_cam(model, x, labels, layer=LAYER)

    def diagnose(got: torch.Tensor) -> None:
        acts, grads = layer_activation_and_gradient(model, images, LABELS, layer=LAYER)
        raw = upsample(weighted_cam(acts, channel_weights(grads)), tuple(images.shape[-2:]))
        per_batch = (raw - raw.min()) / (raw.max() - raw.min())
        if torch.allclose(got, per_batch, atol=1e-4):
            maxima = ", ".join(f"{v:.2f}" for v in got.flatten(1).amax(1).tolist())
            fail("per_batch_norm", f"the images' maxima are {maxima}, not all 1")

    run_gradient_probes(wrapped, model, images, reference, "Grad-CAM", diagnose)

    black = images.clone()
    black[1] = 0
    with_black = wrapped(model, black, LABELS)
    if not report("batch with an all-black image", with_black, reference(black, LABELS)):
        if with_black.isnan().any():
            fail("nan_zero_map", "the black image's map (all zero before normalising) is NaN")
        fail("flat_not_zero", f"the black image's map became {with_black[1].unique()[:3]}")
    batch_of_one(wrapped, model, images, reference)
    passed("check_grad_cam")
