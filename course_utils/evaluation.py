"""Scoring the three methods on images with known answers: the glue of notebook 09.

:mod:`course_utils.metrics` scores one batch of maps; this module produces those maps for the
three methods, the baselines they must beat, the annotated photos with their boxes at the
model's input size, and the tables the notebook and ``benchmarks/bench_shapes.py`` print.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from .cam import grad_cam
from .data import Box, list_photos, load_photo, photo_boxes, scaled_box
from .guided import guided_backprop
from .metrics import box_localization, energy_in_mask, pointing_game, saliency_magnitude
from .models import ModelBundle
from .scores import LabelsLike, as_labels

__all__ = [
    "METHOD_NAMES",
    "AnnotatedPhotos",
    "annotated_photos",
    "best_object_class",
    "centre_baseline",
    "format_table",
    "localization_scores",
    "saliency_maps",
]

METHOD_NAMES: tuple[str, ...] = ("Grad-CAM", "guided backprop", "guided Grad-CAM")
"""The methods :func:`saliency_maps` computes, in the order of its result."""

#: ImageNet classes that name each annotated object of the bundled photos, by class name or
#: by a range of class indices (the 118 dog breeds are outputs 151..268).
OBJECT_CLASSES: dict[str, range | tuple[str, ...]] = {
    "dog": range(151, 269),
    "bicycle": ("mountain bike", "bicycle-built-for-two"),
    "truck": ("pickup", "tow truck", "trailer truck", "garbage truck"),
    "cup": ("espresso", "cup", "coffee mug"),
    "rocket": ("missile", "projectile", "space shuttle"),
}


def saliency_maps(
    model: nn.Module,
    images: torch.Tensor,
    labels: LabelsLike,
    *,
    layer: nn.Module | str,
    batch_size: int = 32,
) -> dict[str, torch.Tensor]:
    r"""Grad-CAM, guided backprop and guided Grad-CAM as ``(N, H, W)`` maps, ready to score.

    The guided gradients become maps by their magnitude :math:`\sum_c |g_c|`
    (:func:`~course_utils.metrics.saliency_magnitude`); guided Grad-CAM is the gradient times
    the Grad-CAM map, computed once per batch instead of calling both methods twice.

    Args:
        model: classifier returning ``(N, K)`` scores.
        images: preprocessed batch ``(N, C, H, W)``.
        labels: the class to explain per image (see :func:`~course_utils.scores.as_labels`).
        layer: Grad-CAM's layer.
        batch_size: images per call, to bound the memory of the backward passes.

    Returns:
        ``{method name: (N, H, W) map}`` in the order of :data:`METHOD_NAMES`.

    Example:
        >>> from torchvision.models import squeezenet1_1
        >>> maps = saliency_maps(squeezenet1_1(), torch.randn(3, 3, 64, 64), 1, layer="features.12")
        >>> {name: tuple(m.shape) for name, m in maps.items()}  # doctest: +NORMALIZE_WHITESPACE
        {'Grad-CAM': (3, 64, 64), 'guided backprop': (3, 64, 64), 'guided Grad-CAM': (3, 64, 64)}
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    targets = as_labels(labels, len(images), num_classes=torch.iinfo(torch.int64).max)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in METHOD_NAMES}
    for x, y in zip(images.split(batch_size), targets.split(batch_size), strict=True):
        cam = grad_cam(model, x, y, layer=layer)
        gradient = guided_backprop(model, x, y)
        for name, m in zip(
            METHOD_NAMES,
            (cam, saliency_magnitude(gradient), saliency_magnitude(gradient * cam[:, None])),
            strict=True,
        ):
            parts[name].append(m)
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def centre_baseline(n: int, size: tuple[int, int]) -> torch.Tensor:
    """The "image centre" baseline: a Gaussian bump in the middle of every image.

    A map that knows nothing about the image, only that photographers and generators tend to
    put objects near the centre. Its standard deviation is a quarter of the shorter side, so it
    is non-negative mass for the energy score, and its maximum is the centre pixel for the
    pointing game.

    Args:
        n: number of images.
        size: ``(H, W)``.

    Returns:
        ``(n, H, W)`` float32, 1 at the centre (an expanded view: do not write into it).

    Example:
        >>> centre_baseline(2, (5, 7))[0].argmax().item() == 2 * 7 + 3
        True
    """
    height, width = size
    ys = torch.arange(height, dtype=torch.float32) - (height - 1) / 2
    xs = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
    sigma = min(height, width) / 4
    bump = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))
    return bump.expand(n, height, width)


def localization_scores(
    maps: torch.Tensor,
    masks: torch.Tensor,
    *,
    tolerance: float | None = None,
    boxes: Sequence[Box] | None = None,
) -> dict[str, float]:
    """The means over a batch of every localisation score the course reports.

    Args:
        maps: ``(N, H, W)`` non-negative maps.
        masks: ``(N, H, W)`` bool, True on the object.
        tolerance: also report the pointing game within this many pixels.
        boxes: also report the Grad-CAM paper's box protocol against these true boxes.

    Returns:
        ``{"pointing game", ["pointing (±t px)"], "energy in mask", ["mean IoU", "IoU ≥ 0.5"]}``.

    Example:
        >>> maps = torch.zeros(1, 4, 4); maps[0, 1, 1] = 1.0
        >>> masks = torch.zeros(1, 4, 4, dtype=torch.bool); masks[0, :2, :2] = True
        >>> localization_scores(maps, masks, boxes=[(0, 0, 2, 2)])
        {'pointing game': 1.0, 'energy in mask': 1.0, 'mean IoU': 0.25, 'IoU ≥ 0.5': 0.0}
    """
    scores = {"pointing game": pointing_game(maps, masks).double().mean().item()}
    if tolerance is not None:
        hits = pointing_game(maps, masks, tolerance=tolerance)
        scores[f"pointing (±{tolerance:g} px)"] = hits.double().mean().item()
    scores["energy in mask"] = energy_in_mask(maps, masks).double().mean().item()
    if boxes is not None:
        iou, correct = box_localization(maps, boxes)
        scores["mean IoU"] = iou.double().mean().item()
        scores["IoU ≥ 0.5"] = correct.double().mean().item()
    return scores


def format_table(rows: Mapping[str, Mapping[str, float]], digits: int = 3) -> str:
    """Lay out ``{row name: {column: number}}`` as an aligned text table.

    Every row must have the first row's columns.

    Example:
        >>> rows = {"a": {"x": 0.5, "long name": 1.0}, "bb": {"x": 0.25, "long name": 0}}
        >>> print(format_table(rows))
                   x  long name
        a      0.500      1.000
        bb     0.250      0.000
    """
    if not rows:
        raise ValueError("no rows to format")
    columns = list(next(iter(rows.values())))
    for name, row in rows.items():
        if list(row) != columns:
            raise ValueError(f"row {name!r} has columns {list(row)}, expected {columns}")
    label = max(len(name) for name in rows) + 2
    widths = [max(len(c), digits + 3) + 2 for c in columns]
    lines = [" " * label + "".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))]
    for name, row in rows.items():
        cells = "".join(f"{row[c]:>{w}.{digits}f}" for c, w in zip(columns, widths, strict=True))
        lines.append(f"{name:<{label}}{cells}")
    return "\n".join(lines)


def best_object_class(class_names: Sequence[str], scores: torch.Tensor, obj: str) -> int:
    """Index of the best-scoring class among those that name a boxed object.

    A box says "cup"; ImageNet says "espresso", "cup" or "coffee mug". We explain the one the
    model scores highest.

    Args:
        class_names: the model's class names (ImageNet order).
        scores: ``(K,)`` scores of one image.
        obj: an object name of :data:`OBJECT_CLASSES` (the labels of ``boxes.json``).

    Example:
        >>> from course_utils.models import imagenet_classes
        >>> names = imagenet_classes()
        >>> scores = torch.zeros(1000); scores[names.index("coffee mug")] = 1.0
        >>> names[best_object_class(names, scores, "cup")]
        'coffee mug'
    """
    if obj not in OBJECT_CLASSES:
        raise ValueError(f"no classes known for object {obj!r}; known: {list(OBJECT_CLASSES)}")
    named = OBJECT_CLASSES[obj]
    candidates = torch.tensor(
        list(named) if isinstance(named, range) else [class_names.index(c) for c in named]
    )
    return int(candidates[scores[candidates].argmax()])


class AnnotatedPhotos(NamedTuple):
    """The bundled photos that have boxes, ready for a photo model.

    Attributes:
        names: photo names.
        objects: each photo's main annotated object (its first box).
        images: ``(N, 3, H, W)`` preprocessed for the model.
        boxes: the main object's box in the model's input pixels ``(left, top, right, bottom)``.
        masks: ``(N, H, W)`` bool, True inside that box.
        labels: ``(N,)`` the class to explain: the best-scoring class naming the object.
    """

    names: list[str]
    objects: list[str]
    images: torch.Tensor
    boxes: list[Box]
    masks: torch.Tensor
    labels: torch.Tensor


def annotated_photos(bundle: ModelBundle) -> AnnotatedPhotos:
    """Every bundled photo with boxes, preprocessed for ``bundle``, with box, mask and label.

    The photo models squash each photo to their input size, so a box maps by plain scaling
    (:func:`~course_utils.data.scaled_box`); the mask is drawn from that same box.

    Example:
        >>> from course_utils.models import load_model
        >>> photos = annotated_photos(load_model("efficientnet_lite0"))
        >>> photos.names, tuple(photos.masks.shape)
        (['coffee', 'dog', 'rocket'], (3, 224, 224))
    """
    names = [n for n in list_photos() if _has_boxes(n)]
    objects = [next(iter(photo_boxes(n))) for n in names]
    images = torch.stack([bundle.preprocess(load_photo(n)) for n in names])
    size = (images.shape[-2], images.shape[-1])
    boxes = [scaled_box(n, o, size=size) for n, o in zip(names, objects, strict=True)]
    masks = torch.zeros(len(names), *size, dtype=torch.bool)
    for mask, (left, top, right, bottom) in zip(masks, boxes, strict=True):
        mask[top:bottom, left:right] = True
    device = next(bundle.model.parameters()).device
    with torch.no_grad():
        scores = bundle.model.eval()(images.to(device)).cpu()
    labels = torch.tensor(
        [best_object_class(bundle.class_names, s, o) for s, o in zip(scores, objects, strict=True)]
    )
    return AnnotatedPhotos(names, objects, images, boxes, masks, labels)


def _has_boxes(name: str) -> bool:
    try:
        photo_boxes(name)
    except ValueError:
        return False
    return True
