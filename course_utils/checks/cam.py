"""Check for stage 7 (:mod:`course_utils.cam`): Grad-CAM end to end."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
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


def _activations_and_gradients(
    model: nn.Module, images: torch.Tensor, layers: list[str], targets: list[Target]
) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """``[target][layer] -> (activation, ∂ target / ∂ activation)`` from one forward pass.

    Leaves no trace on the model: the hooks are removed and no ``.grad`` is written.
    """
    store: dict[str, torch.Tensor] = {}
    handles = []
    for name in layers:

        def keep(module: nn.Module, inputs: Any, output: torch.Tensor, name: str = name) -> Any:
            store[name] = output
            return output.clone()

        handles.append(model.get_submodule(name).register_forward_hook(keep))
    try:
        with evaluating(model), torch.enable_grad():
            scores = model(images.detach().clone())
            recorded = [store[name] for name in layers]
            out = []
            for target in targets:
                grads = torch.autograd.grad(target(scores, LABELS), recorded, retain_graph=True)
                out.append([(a.detach(), g) for a, g in zip(recorded, grads, strict=True)])
    finally:
        for handle in handles:
            handle.remove()
    return out


def _wrong_maps(model: nn.Module, images: torch.Tensor) -> Iterator[tuple[list[str], torch.Tensor]]:
    """The maps of the catalogue's Grad-CAM mistakes, alone and in pairs, computed lazily.

    Six choices make a Grad-CAM map: what is differentiated, the layer, the weights, where
    the ReLU goes, the upsampling and the normalisation. Each wrong option is one mistake;
    every combination of at most two wrong options is yielded with its keys.
    """
    size = tuple(images.shape[-2:])
    targets: list[tuple[str | None, Target]] = [
        (None, lambda s, lab: select_scores(s, lab).sum()),
        *WRONG_TARGETS,
    ]
    layers = [(None, LAYER)] + [("wrong_layer", name) for name in OTHER_LAYERS]
    weightings = [None, "gradients_rectified", "gradients_absolute", "weights_from_activations"]
    combines = [None, "missing_relu", "relu_before_sum"]
    resizers = [(None, lambda m, s: upsample(m, s)), *UPSAMPLING_MISTAKES]
    norms = [None, "per_batch_norm", "normalize_before_upsample"]

    everything = _activations_and_gradients(
        model, images, [name for _, name in layers], [target for _, target in targets]
    )

    def recorded(t: int, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return everything[t][layer]

    @functools.cache
    def coarse(t: int, layer: int, weighting: int, combine: int) -> torch.Tensor:
        acts, grads = recorded(t, layer)
        weights = {
            None: grads.mean(dim=(2, 3)),
            "gradients_rectified": grads.relu().mean(dim=(2, 3)),
            "gradients_absolute": grads.abs().mean(dim=(2, 3)),
            "weights_from_activations": acts.mean(dim=(2, 3)),
        }[weightings[weighting]]
        weighted = weights[:, :, None, None] * acts
        return [weighted.sum(1).relu(), weighted.sum(1), weighted.relu().sum(1)][combine]

    choices = [range(len(targets)), range(len(layers)), range(len(weightings))]
    choices += [range(len(combines)), range(len(resizers)), range(len(norms))]
    for picked in itertools.product(*choices):
        t, layer, weighting, combine, resize, norm = picked
        if sum(1 for i in picked if i) > 2 or not any(picked):
            continue
        if weightings[weighting] == "weights_from_activations" and t:
            continue  # no gradient enters: the target makes no difference
        keys = [
            targets[t][0],
            layers[layer][0],
            "gradients_rectified" if weighting in (1, 2) else weightings[weighting],
            combines[combine],
            resizers[resize][0],
            norms[norm],
        ]
        small = coarse(t, layer, weighting, combine)
        resizer = resizers[resize][1]
        if norms[norm] == "normalize_before_upsample":
            final = resizer(normalize_per_image(small), size)
        else:
            fine = resizer(small, size)
            if norms[norm] is None:
                final = normalize_per_image(fine)
            else:
                final = (fine - fine.min()) / (fine.max() - fine.min())
        yield [k for k in keys if k], final


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
