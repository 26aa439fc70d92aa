"""Check for stage 7 (:mod:`course_utils.cam`): Grad-CAM end to end."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..cam import grad_cam
from ..hooks import evaluating
from ..scores import select_scores
from ..upsample import normalize_per_image, upsample
from .guided import squeezenet_probe
from .mistakes import fail, graded
from .probes import (
    LABELS,
    WRONG_TARGETS,
    Target,
    accepts,
    as_tensor,
    call,
    first_in_stage_order,
    guarded_call,
    meta_copy,
    on_meta,
    passed,
    report,
    run_gradient_probes,
    same,
    snapshot,
)
from .upsample import UPSAMPLING_MISTAKES

__all__ = ["check_grad_cam"]

#: The layer the assignment explains: SqueezeNet 1.1's last Fire module.
LAYER = "features.12"
#: Other layers a wrong answer may have recorded.
OTHER_LAYERS = ("features.11", "features.10", "features.9", "features.7")


def _activation_and_gradient(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, layer: str, target: Target
) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's activation and ``∂ target / ∂ activation``, leaving no trace on the model."""
    store: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        store.append(output)
        return output.clone()

    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        with evaluating(model), torch.enable_grad():
            score = target(model(images.detach().clone()), labels)
            (grad,) = torch.autograd.grad(score, store[0])
    finally:
        handle.remove()
    return store[0].detach(), grad


def _wrong_maps(model: nn.Module, images: torch.Tensor) -> list[tuple[list[str], torch.Tensor]]:
    """Every combination of the catalogue's Grad-CAM mistakes, with the maps it gives."""
    size = tuple(images.shape[-2:])
    resizers = [(None, lambda m, s: upsample(m, s)), *UPSAMPLING_MISTAKES]
    out = []
    targets: list[tuple[str | None, Target]] = [
        (None, lambda s, lab: select_scores(s, lab).sum()),
        *WRONG_TARGETS,
    ]
    layers = [(None, LAYER)] + [("wrong_layer", name) for name in OTHER_LAYERS]
    for (target_key, target), (layer_key, layer) in itertools.product(targets, layers):
        acts, grads = _activation_and_gradient(model, images, LABELS, layer, target)
        weightings = [
            (None, grads.mean(dim=(2, 3))),
            ("gradients_rectified", grads.relu().mean(dim=(2, 3))),
            ("gradients_rectified", grads.abs().mean(dim=(2, 3))),
            ("weights_from_activations", acts.mean(dim=(2, 3))),
        ]
        for weight_key, weights in weightings:
            weighted = weights[:, :, None, None] * acts
            for combine_key, coarse in [
                (None, weighted.sum(1).relu()),
                ("missing_relu", weighted.sum(1)),
                ("relu_before_sum", weighted.relu().sum(1)),
            ]:
                for resize_key, resize in resizers:
                    fine = resize(coarse, size)
                    for norm_key, final in [
                        (None, normalize_per_image(fine)),
                        ("per_batch_norm", (fine - fine.min()) / (fine.max() - fine.min())),
                        ("normalize_before_upsample", resize(normalize_per_image(coarse), size)),
                    ]:
                        keys = [
                            k
                            for k in (
                                target_key,
                                layer_key,
                                weight_key,
                                combine_key,
                                resize_key,
                                norm_key,
                            )
                            if k
                        ]
                        if keys:
                            out.append((keys, final))
    return out


@graded
def check_grad_cam(fn: Callable[..., Any]) -> None:
    """Check ``fn(model, images, labels)`` → Grad-CAM maps ``(N, H, W)`` in [0, 1].

    The layer is ``"features.12"``; if ``fn`` takes a ``layer`` argument it is passed as
    ``layer="features.12"``. Compared with :func:`course_utils.grad_cam` on SqueezeNet 1.1
    (random weights) with three non-square 64×80 images of different brightness. A wrong map
    is compared with every combination of the catalogue's mistakes (what was differentiated,
    the layer, the weights, ReLU placement, the upsampling mode, the normalisation) and the
    earliest one in stage order is named. Then the probes of :func:`check_guided_backprop`,
    an all-black image (zero map → NaN) and the ``meta`` device.
    """
    model, images = squeezenet_probe()
    layer_kw = {"layer": LAYER} if accepts(fn, "layer") else {}
    before = snapshot(model, (images[:1], LABELS[:1]))

    def wrapped(m: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = guarded_call(fn, model, before, m, x, labels, **layer_kw)
        cam = as_tensor(out, "the Grad-CAM maps").detach().float()
        n, _, h, w = x.shape
        if cam.shape == (n, w, h):
            fail("hw_swap", f"shape {tuple(cam.shape)} for images of (H, W) = ({h}, {w})")
        if cam.shape != (n, h, w):
            key = "squeeze_all" if n == 1 and cam.dim() < 3 else "wrong_shape"
            fail(key, f"shape {tuple(cam.shape)}, expected {(n, h, w)}")
        return cam

    def reference(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return grad_cam(model, x, labels, layer=LAYER)

    def diagnose(got: torch.Tensor) -> None:
        first_in_stage_order(
            (keys, f"your maps match: {' + '.join(keys)}")
            for keys, wrong in _wrong_maps(model, images)
            if same(got, wrong)
        )

    run_gradient_probes(wrapped, model, images, reference, "Grad-CAM", diagnose)

    black = images.clone()
    black[1] = 0
    with_black = wrapped(model, black, LABELS)
    if not report("batch with an all-black image", with_black, reference(black, LABELS)):
        if with_black.isnan().any():
            fail("nan_zero_map", "the black image's map (all zero before normalising) is NaN")
        fail("flat_not_zero", f"the black image's map became {with_black[1].unique()[:3]}")
    on_meta(
        lambda: call(fn, meta_copy(model), images.to("meta"), LABELS.to("meta"), **layer_kw),
        "Grad-CAM",
    )
    passed("check_grad_cam")
