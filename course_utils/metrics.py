r"""Does a saliency map mean anything? Scores against ground truth, and sanity checks.

A heatmap that *looks* right proves little. This module measures it:

* **Pointing game** (Zhang et al., 2016) — a hit if the map's maximum lands on the object:

  .. math:: \text{hit} = \big[\, \min_{q \in M} \lVert \arg\max_p S_p - q \rVert_2 \le t \,\big]

  with mask :math:`M` and pixel tolerance :math:`t` (0: the maximum must be *on* the mask).
* **Energy inside the mask** (Wang et al., Score-CAM 2020) — how much of the map's mass is on
  the object: :math:`E = \sum_{p \in M} S_p \,/\, \sum_p S_p` for a non-negative map :math:`S`.
* **Box protocol** of the Grad-CAM paper (Selvaraju et al., 2017, §4.1) — threshold the map at
  15 % of its maximum, keep the largest connected segment, take its bounding box, and count a
  correct localisation when its intersection-over-union with the true box is at least 0.5.
* **Spearman rank correlation** between two maps, for the model-randomisation sanity check
  of Adebayo et al. (2018): :math:`\rho = \operatorname{corr}(\operatorname{rank} S,
  \operatorname{rank} S')`, ties given their average rank.
* :func:`cascading_randomization` — re-initialise a copy of the model layer by layer from the
  output down, so a map can be recomputed after each step.

Maps are batches ``(N, H, W)`` (torch tensors or numpy arrays); results are torch tensors with
one value per image. Guided-backprop gradients ``(N, C, H, W)`` become maps with
:func:`saliency_magnitude`.

Example:
    >>> maps = torch.zeros(1, 4, 4); maps[0, 1, 2] = 1.0
    >>> mask = torch.zeros(1, 4, 4, dtype=torch.bool); mask[0, 1:3, 1:3] = True
    >>> pointing_game(maps, mask), energy_in_mask(maps, mask)
    (tensor([True]), tensor([1.]))
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from .data import Box

__all__ = [
    "box_iou",
    "box_localization",
    "cascading_randomization",
    "energy_in_mask",
    "label_components",
    "largest_component_box",
    "pointing_game",
    "saliency_magnitude",
    "spearman",
]

# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def _as_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    return value


def _maps(maps: Any) -> torch.Tensor:
    maps = _as_tensor("maps", maps)
    if maps.dim() != 3:
        raise ValueError(
            f"maps must have shape (N, H, W), got {tuple(maps.shape)}"
            + (" (reduce channels with saliency_magnitude first)" if maps.dim() == 4 else "")
            + (" (add a batch dimension with maps[None])" if maps.dim() == 2 else "")
        )
    if maps.shape[0] == 0 or min(maps.shape[1:]) == 0:
        raise ValueError(f"maps must not be empty, got shape {tuple(maps.shape)}")
    if maps.dtype == torch.bool:
        raise TypeError("maps must be numeric, got bool; did you swap maps and masks?")
    maps = maps.double()
    if not torch.isfinite(maps).all():
        raise ValueError("maps contain NaN or inf")
    return maps


def _masks(masks: Any, maps: torch.Tensor) -> torch.Tensor:
    masks = _as_tensor("masks", masks)
    if masks.dtype != torch.bool:
        raise TypeError(f"masks must be bool (True on the object), got {masks.dtype}")
    if masks.shape == maps.shape[1:]:
        masks = masks.expand_as(maps)
    if masks.shape != maps.shape:
        raise ValueError(
            f"masks of shape {tuple(masks.shape)} do not match maps of shape "
            f"{tuple(maps.shape)}; resize the map to the image (course_utils.upsample) first"
        )
    empty = (~masks.flatten(1).any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"masks of images {empty} are empty: there is no object to point at")
    return masks.to(maps.device)


# ----------------------------------------------------------------------------------------------
# Maps from gradients
# ----------------------------------------------------------------------------------------------


def saliency_magnitude(saliency: Any, reduce: str = "sum") -> torch.Tensor:
    r"""Turn per-channel gradients ``(N, C, H, W)`` into one non-negative map ``(N, H, W)``.

    A gradient's sign says in which direction a pixel should change, not whether it matters,
    so the magnitude is taken first: ``reduce="sum"`` gives :math:`\sum_c |g_c|` (what the
    energy metric measures), ``reduce="max"`` gives :math:`\max_c |g_c|` (Simonyan et al.).

    Example:
        >>> saliency_magnitude(torch.tensor([[[[1.0]], [[-2.0]]]]))
        tensor([[[3.]]])
    """
    saliency = _as_tensor("saliency", saliency)
    if saliency.dim() != 4:
        raise ValueError(f"saliency must have shape (N, C, H, W), got {tuple(saliency.shape)}")
    if reduce == "sum":
        return saliency.abs().sum(dim=1)
    if reduce == "max":
        return saliency.abs().amax(dim=1)
    raise ValueError(f"reduce must be 'sum' or 'max', got {reduce!r}")


# ----------------------------------------------------------------------------------------------
# Pointing game and energy
# ----------------------------------------------------------------------------------------------


def pointing_game(maps: Any, masks: Any, *, tolerance: float = 0) -> torch.Tensor:
    """Does each map's maximum fall on (or within ``tolerance`` pixels of) the object?

    Args:
        maps: ``(N, H, W)`` heatmaps at the image resolution.
        masks: ``(N, H, W)`` bool, True on the object (or one ``(H, W)`` mask for all).
        tolerance: Euclidean distance in pixels the maximum may lie off the mask. The original
            pointing game uses 15 px on ~224 px images, forgiving the coarse maps of late layers.

    Returns:
        Bool tensor ``(N,)``. Ties for the maximum go to the first pixel in row-major order; a
        constant map (e.g. an all-zero Grad-CAM) points nowhere and counts as a miss.

    Raises:
        ValueError: shape mismatch, an empty mask, non-finite maps, or a negative tolerance.

    Example:
        >>> maps = torch.zeros(2, 5, 5); maps[:, 0, 0] = 1.0
        >>> mask = torch.zeros(5, 5, dtype=torch.bool); mask[2:, 2:] = True
        >>> pointing_game(maps, mask).tolist(), pointing_game(maps, mask, tolerance=3).tolist()
        ([False, False], [True, True])
    """
    maps = _maps(maps)
    masks = _masks(masks, maps)
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance!r}")
    height, width = maps.shape[1:]
    flat = maps.flatten(1)
    peak = flat.argmax(dim=1)
    rows, cols = (peak // width).double(), (peak % width).double()
    ys = torch.arange(height, dtype=torch.float64, device=maps.device)
    xs = torch.arange(width, dtype=torch.float64, device=maps.device)
    dy = ys[None, :, None] - rows[:, None, None]
    dx = xs[None, None, :] - cols[:, None, None]
    dist2 = dy.square() + dx.square()
    near = (masks & (dist2.sqrt() <= tolerance)).flatten(1).any(dim=1)
    constant = flat.amax(dim=1) == flat.amin(dim=1)
    return near & ~constant


def energy_in_mask(maps: Any, masks: Any) -> torch.Tensor:
    r"""Fraction of each map's mass that lies on the object, :math:`\sum_M S / \sum S`.

    A uniform map scores the object's area fraction — the baseline to beat; a map entirely on
    the object scores 1.

    Args:
        maps: ``(N, H, W)`` non-negative heatmaps (take :func:`saliency_magnitude` of raw
            gradients first).
        masks: ``(N, H, W)`` bool, True on the object (or one ``(H, W)`` mask for all).

    Returns:
        Float tensor ``(N,)`` in [0, 1]; an all-zero map has no mass to place and scores 0.

    Raises:
        ValueError: shape mismatch, an empty mask, negative or non-finite map values.

    Example:
        >>> mask = torch.tensor([[True, False], [False, False]])
        >>> energy_in_mask(torch.ones(1, 2, 2), mask)
        tensor([0.2500])
    """
    maps = _maps(maps)
    masks = _masks(masks, maps)
    if (maps < 0).any():
        raise ValueError(
            "maps must be non-negative to be read as mass; use saliency_magnitude (|gradient|) "
            "or clamp(min=0)"
        )
    total = maps.flatten(1).sum(dim=1)
    inside = (maps * masks).flatten(1).sum(dim=1)
    return torch.where(total > 0, inside / torch.where(total > 0, total, 1.0), 0.0).float()


# ----------------------------------------------------------------------------------------------
# Box protocol
# ----------------------------------------------------------------------------------------------


def label_components(foreground: Any, connectivity: int = 4) -> torch.Tensor:
    """Label the connected regions of a bool image batch ``(N, H, W)``.

    Pure torch, so no SciPy is needed: every foreground pixel starts with its own flat index
    plus one as label; each round, a pixel takes the largest label among itself and its
    neighbours, then jumps to the label of the pixel that label came from (which has travelled
    further). Labels only ever name pixels of the same region, so at convergence every region
    carries the index of its last pixel — the same partition as ``scipy.ndimage.label``, with
    different numbers.

    Args:
        foreground: bool ``(N, H, W)``.
        connectivity: 4 (edge neighbours, SciPy's default) or 8 (diagonals too).

    Returns:
        int64 ``(N, H, W)``: 0 on the background, a positive region id elsewhere.

    Example:
        >>> fg = torch.tensor([[[True, False, True], [True, False, False]]])
        >>> label_components(fg)
        tensor([[[4, 0, 3],
                 [4, 0, 0]]])
    """
    fg = _as_tensor("foreground", foreground)
    if fg.dtype != torch.bool or fg.dim() != 3:
        raise ValueError(
            f"foreground must be a bool (N, H, W) tensor, got {fg.dtype} {tuple(fg.shape)}"
        )
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    height, width = fg.shape[1:]
    index = torch.arange(1, height * width + 1, device=fg.device).view(1, height, width)
    labels = torch.where(fg, index, 0)
    shifts = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        shifts += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    while True:
        padded = nn.functional.pad(labels, (1, 1, 1, 1))
        grown = labels
        for dy, dx in shifts:
            neighbour = padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            grown = torch.maximum(grown, neighbour)
        grown = torch.where(fg, grown, 0)
        # Pointer jump: adopt the current label of the pixel our label is named after.
        flat = grown.flatten(1)
        jumped = flat.gather(1, (flat - 1).clamp(min=0)).view_as(grown)
        grown = torch.where(fg, torch.maximum(grown, jumped), 0)
        if torch.equal(grown, labels):
            return labels
        labels = grown


def largest_component_box(
    maps: Any, threshold: float = 0.15, *, connectivity: int = 4
) -> list[Box | None]:
    """Grad-CAM's box from a heatmap: threshold, largest segment, its bounding box.

    Args:
        maps: ``(N, H, W)`` heatmaps (non-negative, e.g. Grad-CAM in [0, 1]).
        threshold: fraction of each map's maximum a pixel must reach (0.15 in the paper).
        connectivity: 4 or 8, see :func:`label_components`.

    Returns:
        One ``(left, top, right, bottom)`` box per image (right/bottom exclusive), or ``None``
        for a map whose maximum is not positive (nothing to segment). Equal-sized largest
        segments: the one with the highest region id (last pixel in row-major order) wins.

    Example:
        >>> m = torch.zeros(1, 6, 6); m[0, 1:3, 1:4] = 1.0; m[0, 5, 5] = 1.0
        >>> largest_component_box(m)
        [(1, 1, 4, 3)]
    """
    maps = _maps(maps)
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold is a fraction of the maximum in [0, 1], got {threshold!r}")
    peak = maps.flatten(1).amax(dim=1)
    labels = label_components(maps >= threshold * peak[:, None, None], connectivity)
    boxes: list[Box | None] = []
    for image_labels, top_value in zip(labels, peak, strict=True):
        if top_value <= 0:
            boxes.append(None)
            continue
        counts = torch.bincount(image_labels.flatten())
        counts[0] = 0
        # argmax returns the first maximum; flip to prefer the highest id on ties (documented).
        biggest = counts.numel() - 1 - int(counts.flip(0).argmax())
        rows, cols = (image_labels == biggest).nonzero(as_tuple=True)
        boxes.append((int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1))
    return boxes


def _check_box(box: Any) -> Box:
    if box is None or len(box) != 4:
        raise ValueError(f"a box is (left, top, right, bottom), got {box!r}")
    left, top, right, bottom = (int(v) for v in box)
    if right <= left or bottom <= top:
        raise ValueError(f"box {box!r} is empty: right/bottom must exceed left/top")
    return left, top, right, bottom


def box_iou(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection over union of two ``(left, top, right, bottom)`` boxes (exclusive ends).

    Example:
        >>> box_iou((0, 0, 2, 2), (1, 0, 3, 2))
        0.3333333333333333
    """
    la, ta, ra, ba = _check_box(a)
    lb, tb, rb, bb = _check_box(b)
    inter = max(0, min(ra, rb) - max(la, lb)) * max(0, min(ba, bb) - max(ta, tb))
    union = (ra - la) * (ba - ta) + (rb - lb) * (bb - tb) - inter
    return inter / union


def box_localization(
    maps: Any,
    boxes: Sequence[Sequence[int]],
    *,
    threshold: float = 0.15,
    min_iou: float = 0.5,
    connectivity: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Grad-CAM paper's localisation score: IoU of the map's box with the true box.

    Args:
        maps: ``(N, H, W)`` heatmaps at the image resolution.
        boxes: one true ``(left, top, right, bottom)`` box per image, in the map's pixels.
        threshold: see :func:`largest_component_box`.
        min_iou: IoU needed for a correct localisation (0.5 in the paper).
        connectivity: see :func:`label_components`.

    Returns:
        ``(iou, hit)``: float ``(N,)`` IoUs (0 where the map gives no box) and bool ``(N,)``
        ``iou >= min_iou``.

    Example:
        >>> m = torch.zeros(1, 8, 8); m[0, 2:6, 2:6] = 1.0
        >>> box_localization(m, [(2, 2, 6, 7)])
        (tensor([0.8000]), tensor([True]))
    """
    maps = _maps(maps)
    if len(boxes) != maps.shape[0]:
        raise ValueError(f"got {len(boxes)} boxes for {maps.shape[0]} maps; give one per map")
    height, width = maps.shape[1:]
    for box in boxes:
        left, top, right, bottom = _check_box(box)
        if left < 0 or top < 0 or right > width or bottom > height:
            raise ValueError(
                f"box {tuple(box)} lies outside the {height}x{width} map; scale boxes to the "
                "map's resolution first"
            )
    predicted = largest_component_box(maps, threshold, connectivity=connectivity)
    iou = torch.tensor(
        [0.0 if p is None else box_iou(p, t) for p, t in zip(predicted, boxes, strict=True)],
        dtype=torch.float32,
    )
    return iou, iou >= min_iou


# ----------------------------------------------------------------------------------------------
# Sanity checks
# ----------------------------------------------------------------------------------------------


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 0..P-1 along dim 1 of ``(N, P)``, tied values sharing the mean of their ranks.

    After sorting, a run of equal values occupies positions ``first..last``; each member gets
    ``(first + last) / 2``. ``first`` is a running maximum of run starts, ``last`` a running
    minimum (from the right) of run ends — no Python loop over images or values.
    """
    sorted_values, order = values.sort(dim=1)
    n, p = values.shape
    position = torch.arange(p, device=values.device).expand(n, p)
    starts = torch.ones_like(sorted_values, dtype=torch.bool)
    starts[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, position, 0).cummax(dim=1).values
    last = torch.where(ends, position, p).flip(1).cummin(dim=1).values.flip(1)
    ranks = torch.empty_like(sorted_values, dtype=torch.float64)
    ranks.scatter_(1, order, (first + last).double() / 2)
    return ranks


def spearman(a: Any, b: Any) -> torch.Tensor:
    r"""Spearman rank correlation between two batches of maps, one value per image.

    .. math:: \rho = \frac{\operatorname{cov}(r_a, r_b)}{\sigma_{r_a}\,\sigma_{r_b}}

    where :math:`r` are the ranks of the flattened pixels, ties sharing their average rank (as
    ``scipy.stats.spearmanr``). Ranks make the score blind to any monotone rescaling, so two
    differently normalised maps that order the pixels alike score 1.

    Args:
        a: ``(N, H, W)`` maps (or ``(N, ...)``; each image is flattened).
        b: maps of the same shape as ``a``.

    Returns:
        Float tensor ``(N,)`` in [-1, 1]; NaN where either map is constant (no ordering to
        compare — e.g. a Grad-CAM that went all zero), as in SciPy.

    Example:
        >>> x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> spearman(x, x ** 3), spearman(x, -x)
        (tensor([1.]), tensor([-1.]))
    """
    a, b = _as_tensor("a", a), _as_tensor("b", b)
    if a.shape != b.shape or a.dim() < 2 or a.shape[0] == 0:
        raise ValueError(
            f"a and b must be (N, ...) batches of the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    a, b = a.flatten(1).double(), b.flatten(1).double()
    if a.shape[1] < 2:
        raise ValueError("each map needs at least two pixels to rank")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("maps contain NaN or inf")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    denominator = (ra.square().sum(dim=1) * rb.square().sum(dim=1)).sqrt()
    rho = (ra * rb).sum(dim=1) / torch.where(denominator > 0, denominator, 1.0)
    return torch.where(denominator > 0, rho, torch.nan).float()


def _reinitializable(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules in ``module``'s subtree that own parameters and can ``reset_parameters()``."""
    return [
        (name, sub)
        for name, sub in module.named_modules()
        if hasattr(sub, "reset_parameters") and any(True for _ in sub.parameters(recurse=False))
    ]


def cascading_randomization(
    model: nn.Module, *, layers: Sequence[str] | None = None, seed: int = 0
) -> Iterator[tuple[str, nn.Module]]:
    """Re-initialise a copy of ``model`` one layer at a time, from the output down.

    The "cascading model-parameter randomisation" test of Adebayo et al. (2018): if a saliency
    method explains the *model*, its maps must change once the learned weights are gone. After
    each step the copy has random weights in that layer and every layer above it. Each module
    is reset by its own ``reset_parameters()`` — the initialisation the network started from
    (for BatchNorm: weight 1, bias 0 and fresh running statistics).

    Args:
        model: the trained network; it is deep-copied and never modified.
        layers: dotted names to randomise, in the order to do it (top first). A name may be a
            block (e.g. a Fire module): every re-initialisable module inside it is reset in
            that step. Default: every module owning parameters and a ``reset_parameters``
            method (conv, linear, norm layers), in reverse registration order — the
            output-to-input order for networks that register their layers in forward order,
            as torchvision's do.
        seed: seed for the new weights; the global random state is left as it was.

    Yields:
        ``(layer_name, randomised_copy)``. It is the *same* copy each time, randomised one layer
        further — compute what you need before advancing, or ``copy.deepcopy`` it.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2, 3))
        >>> [name for name, _ in cascading_randomization(net)]
        ['3', '0']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if layers is None:
        order = [name for name, _ in reversed(_reinitializable(model)) if name]
    else:
        if isinstance(layers, str):
            raise TypeError("layers must be a sequence of names, not a single string")
        order = list(layers)
        modules = dict(model.named_modules())
        unknown = [name for name in order if not name or name not in modules]
        if unknown:
            raise ValueError(f"{type(model).__name__} has no layers named {unknown}")
        empty = [name for name in order if not _reinitializable(modules[name])]
        if empty:
            raise ValueError(
                f"cannot re-initialise {empty}: nothing inside has its own parameters and "
                "reset_parameters"
            )
    if not order:
        raise ValueError("the model has no layers with parameters to randomise")
    clone = copy.deepcopy(model)
    for step, name in enumerate(order):
        # A private seed per step; fork_rng puts the global (CPU and CUDA) state back after.
        step_seed = int(np.random.SeedSequence([seed, step]).generate_state(1)[0])
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(step_seed)
            for _, module in reversed(_reinitializable(clone.get_submodule(name))):
                # nn.Module's __getattr__ is typed Tensor | Module; the filter checked the method.
                cast(Callable[[], None], module.reset_parameters)()
        yield name, clone
