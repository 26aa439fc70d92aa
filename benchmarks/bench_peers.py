"""Grad-CAM and guided backprop: course_utils beside captum, pytorch-grad-cam, torchcam and the
original assignment solution, timed in one run.

Every implementation produces the same thing from the same batch — Grad-CAM maps ``(N, H, W)``
in [0, 1] at the image resolution, or guided-backprop gradients ``(N, 3, H, W)`` — on its own
copy of one seeded SqueezeNet 1.1 (``weights=None``). Repetitions are interleaved (every
repetition runs every implementation once, in a shuffled order), so a slow phase of a shared
machine hits all of them alike; medians are reported.

Two ratios are printed:

* ``x fastest`` — against the fastest implementation of the same method;
* ``x floor`` — against the physical floor: one forward pass plus ``torch.autograd.grad`` of the
  selected scores to the layer's activation (Grad-CAM) or to the input (guided backprop). No
  implementation can skip that work; the rest is overhead (weight gradients from
  ``.backward()``, numpy round trips, per-image loops, re-normalisation).

The last column, ``max|Δ|``, is each result's largest deviation from course_utils — a check
that the timed calls compute the same maps (the original solution does not; see its notes).

Run (needs the ``compare`` extra)::

    python benchmarks/bench_peers.py              # batch 8, 224 x 224, 1 thread, 10 reps
    python benchmarks/bench_peers.py --reps 20 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models import squeezenet1_1

from course_utils.cam import grad_cam
from course_utils.guided import guided_backprop
from course_utils.original import OriginalGradCam
from course_utils.upsample import normalize_per_image, upsample

LAYER = "features.12"

# ----------------------------------------------------------------------------------------------
# The contenders. Each entry: setup(model, images, labels) -> state (untimed; copies, fresh
# tensors), then call(state) -> result tensor (timed).
# ----------------------------------------------------------------------------------------------


@dataclass
class Contender:
    name: str
    setup: Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]
    call: Callable[[Any], torch.Tensor]


def _shared(model, images, labels):
    return model, images, labels


def _floor_grad_cam(state) -> torch.Tensor:
    model, images, labels = state
    store = {}
    handle = model.get_submodule(LAYER).register_forward_hook(
        lambda module, args, out: store.__setitem__("a", out)
    )
    try:
        scores = model(images)
        (grad,) = torch.autograd.grad(scores.gather(1, labels[:, None]).sum(), store["a"])
    finally:
        handle.remove()
    return grad


def _floor_gradient(state) -> torch.Tensor:
    model, images, labels = state
    x = images.detach().requires_grad_(True)
    scores = model(x)
    (grad,) = torch.autograd.grad(scores.gather(1, labels[:, None]).sum(), x)
    return grad


def _course_grad_cam(state) -> torch.Tensor:
    model, images, labels = state
    return grad_cam(model, images, labels, layer=LAYER)


def _course_guided(state) -> torch.Tensor:
    model, images, labels = state
    return guided_backprop(model, images, labels)


def _captum_grad_cam(state) -> torch.Tensor:
    from captum.attr import LayerAttribution, LayerGradCam

    model, images, labels = state
    cam = LayerGradCam(model, model.get_submodule(LAYER)).attribute(
        images, target=labels, relu_attributions=True
    )
    up = LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode="bilinear")
    return normalize_per_image(up[:, 0].detach())


def _captum_guided(state) -> torch.Tensor:
    from captum.attr import GuidedBackprop

    model, images, labels = state
    return GuidedBackprop(model).attribute(images.clone(), target=labels).detach()


def _pgc_grad_cam(state) -> torch.Tensor:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, images, labels = state
    targets = [ClassifierOutputTarget(int(c)) for c in labels]
    with GradCAM(model, [model.get_submodule(LAYER)]) as cam:
        return torch.from_numpy(cam(images, targets=targets))


def _pgc_guided(state) -> torch.Tensor:
    # pytorch-grad-cam's GuidedBackpropReLUModel explains image 0 of its input only, so a batch
    # takes one call per image.
    from pytorch_grad_cam import GuidedBackpropReLUModel

    model, images, labels = state
    explainer = GuidedBackpropReLUModel(model, device=None)
    maps = [explainer(images[i : i + 1].clone(), int(labels[i])) for i in range(len(images))]
    return torch.from_numpy(np.stack(maps)).permute(0, 3, 1, 2)


def _torchcam_grad_cam(state) -> torch.Tensor:
    from torchcam.methods import GradCAM

    model, images, labels = state
    with GradCAM(model, LAYER) as extractor:
        scores = model(images)
        (cam,) = extractor(class_idx=labels.tolist(), scores=scores)
    return normalize_per_image(upsample(cam, tuple(images.shape[-2:])))


def _original_setup(model, images, labels):
    # The original code mutates its model and leaves hooks behind: give it a fresh copy every
    # call, so that it is timed at its best (one hook), and a fresh input (it accumulates X.grad).
    return copy.deepcopy(model), images.clone(), labels.clone()


def _seed_grad_cam(state) -> torch.Tensor:
    model, images, labels = state
    return torch.from_numpy(OriginalGradCam().grad_cam(images, labels, model))


def _seed_guided(state) -> torch.Tensor:
    model, images, labels = state
    gradients = OriginalGradCam().guided_backprop(images, labels, model)
    return torch.from_numpy(gradients).permute(0, 3, 1, 2)


GRAD_CAM = [
    Contender("floor: forward + grad to layer", _shared, _floor_grad_cam),
    Contender("course_utils.grad_cam", _shared, _course_grad_cam),
    Contender("captum LayerGradCam", _shared, _captum_grad_cam),
    Contender("pytorch-grad-cam GradCAM", _shared, _pgc_grad_cam),
    Contender("torchcam GradCAM", _shared, _torchcam_grad_cam),
    Contender("original solution (seed)", _original_setup, _seed_grad_cam),
]
GUIDED = [
    Contender("floor: forward + grad to input", _shared, _floor_gradient),
    Contender("course_utils.guided_backprop", _shared, _course_guided),
    Contender("captum GuidedBackprop", _shared, _captum_guided),
    Contender("pytorch-grad-cam GuidedBackprop", _shared, _pgc_guided),
    Contender("original solution (seed)", _original_setup, _seed_guided),
]


def run(contenders, model, images, labels, reps, rng):
    models = {c.name: copy.deepcopy(model) for c in contenders}  # no one sees another's hooks
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    results: dict[str, torch.Tensor] = {}
    for rep in range(reps + 1):  # repetition 0 warms up and is not counted
        order = list(contenders)
        rng.shuffle(order)
        for contender in order:
            state = contender.setup(models[contender.name], images, labels)
            start = time.perf_counter()
            result = contender.call(state)
            elapsed = time.perf_counter() - start
            if rep:
                times[contender.name].append(elapsed)
            results[contender.name] = result
    return {name: statistics.median(t) for name, t in times.items()}, results


def report(title, contenders, medians, results, reference):
    floor_name = contenders[0].name
    fastest = min(t for name, t in medians.items() if name != floor_name)
    print(f"\n{title}")
    header = ("implementation", "median ms", "x fastest", "x floor", "max|Δ|")
    print("{:34s} {:>10s} {:>10s} {:>8s} {:>9s}".format(*header))
    for contender in contenders:
        name, median = contender.name, medians[contender.name]
        if name == floor_name:
            delta = "-"
        else:
            difference = results[name].float() - results[reference].float()
            delta = f"{difference.abs().max().item():.1e}"
        ratio = "-" if name == floor_name else f"{median / fastest:.2f}"
        to_floor = median / medians[floor_name]
        print(f"{name:34s} {median * 1e3:10.1f} {ratio:>10s} {to_floor:8.2f} {delta:>9s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--size",
        type=int,
        default=224,
        help="square side (the original code needs square)",
    )
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # the original code's deprecated hook, captum's notices
    torch.manual_seed(0)
    model = squeezenet1_1(weights=None).eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=generator)
    labels = torch.arange(args.batch) * 7 % 1000
    rng = random.Random(0)
    print(
        f"SqueezeNet 1.1 (weights=None), CPU, batch {args.batch}, {args.size}x{args.size}, "
        f"{args.threads} thread(s), {args.reps} interleaved repetitions, torch {torch.__version__}"
    )
    for title, contenders, reference in [
        ("Grad-CAM (maps (N, H, W) in [0, 1], layer features.12)", GRAD_CAM, GRAD_CAM[1].name),
        ("Guided backprop (gradients (N, 3, H, W))", GUIDED, GUIDED[1].name),
    ]:
        medians, results = run(contenders, model, images, labels, args.reps, rng)
        report(title, contenders, medians, results, reference)


if __name__ == "__main__":
    main()
