"""Stage 2 — selecting each image's own class score.

``scores.gather(1, labels.view(-1, 1))`` picks, for row ``i``, the column ``labels[i]``.
The assignment then calls ``.squeeze()``, which removes *every* size-1 dimension: for a
batch of one the ``(1, 1)`` result becomes a 0-d tensor and the code downstream that
indexes the batch breaks. :func:`select_scores` squeezes only the dimension it added.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["as_labels", "select_scores"]

LabelsLike = torch.Tensor | np.ndarray | Sequence[int] | int


def as_labels(
    labels: LabelsLike, batch_size: int, num_classes: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Validate class labels and return them as a ``(N,)`` int64 tensor on ``device``.

    Args:
        labels: one integer class per image (tensor or array of any integer dtype, or a list
            of ints), or a single integer — an ``int``, a numpy integer, a 0-d tensor or
            array — meaning "this class for every image".
        batch_size: ``N``, the number of images the labels must match.
        num_classes: ``K``; every label must lie in ``[0, K)``.
        device: where the returned tensor lives (the scores' device).

    Raises:
        TypeError: labels that are not integers (floats, bools, strings).
        ValueError: wrong length or shape, or a label outside ``[0, num_classes)``.

    Example:
        >>> as_labels([3, 1], batch_size=2, num_classes=5)
        tensor([3, 1])
    """
    if isinstance(labels, bool):
        raise TypeError("labels must be integers, got a bool")
    if isinstance(labels, (int, np.integer)):
        labels = torch.full((batch_size,), int(labels), dtype=torch.int64)
    elif isinstance(labels, np.ndarray):
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"labels must have an integer dtype, got numpy {labels.dtype}")
        labels = torch.from_numpy(labels.astype(np.int64))
    elif isinstance(labels, torch.Tensor):
        if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
            raise TypeError(
                f"labels must have an integer dtype (e.g. torch.long), got {labels.dtype}; "
                "class indices are whole numbers"
            )
    elif isinstance(labels, Sequence) and not isinstance(labels, (str, bytes)):
        bad = [v for v in labels if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
        if bad:
            raise TypeError(f"labels must be a list of ints, found {bad[0]!r}")
        labels = torch.tensor([int(v) for v in labels], dtype=torch.int64)
    else:
        raise TypeError(
            "labels must be a tensor, array or list of ints, or an int; "
            f"got {type(labels).__name__}"
        )

    if labels.dim() == 0:  # a 0-d tensor or array: one class for every image
        labels = labels.expand(batch_size)
    if labels.dim() != 1:
        raise ValueError(
            f"labels must be 1-D with one class per image, got shape {tuple(labels.shape)}"
        )
    if labels.numel() != batch_size:
        raise ValueError(f"got {labels.numel()} labels for a batch of {batch_size} images")
    labels = labels.to(device=device, dtype=torch.int64)
    if batch_size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            culprit = low if low < 0 else high
            raise ValueError(
                f"label {culprit} is out of range: the model has {num_classes} classes, "
                f"so labels must lie in [0, {num_classes - 1}]"
            )
    return labels


def select_scores(scores: torch.Tensor, labels: LabelsLike) -> torch.Tensor:
    """Pick each image's score for its own class: ``out[i] = scores[i, labels[i]]``.

    Args:
        scores: class scores (logits) of shape ``(N, K)``.
        labels: see :func:`as_labels`.

    Returns:
        Tensor of shape ``(N,)`` — also ``(1,)`` for a batch of one — still attached to the
        autograd graph, so ``out.sum()`` can be differentiated.

    Example:
        >>> scores = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
        >>> select_scores(scores, [1, 0])
        tensor([0.9000, 0.8000])
        >>> select_scores(scores[:1], [1]).shape
        torch.Size([1])
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a (N, num_classes) tensor, got {shape}")
    index = as_labels(labels, scores.shape[0], scores.shape[1], scores.device)
    return scores.gather(1, index.view(-1, 1)).squeeze(1)
