"""The shapes lab's network: a small SqueezeNet-style classifier with committed weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import SHAPE_CLASSES, to_rgb
from .bundle import WeightsError, normalizer, uint8_to_tensor

__all__ = ["SHAPES_FORMAT", "SHAPES_WEIGHTS", "Fire", "ShapesNet", "shapes_to_tensor"]

SHAPES_MEAN = (0.5, 0.5, 0.5)
SHAPES_STD = (0.25, 0.25, 0.25)
SHAPES_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "shapes.pt"
SHAPES_FORMAT = "course_utils.shapes/1"  # tag written by train_shapes, checked when loading

_normalize, shapes_deprocess = normalizer(SHAPES_MEAN, SHAPES_STD)


def shapes_to_tensor(images: Image.Image | np.ndarray) -> torch.Tensor:
    """The shapes network's preprocessing: images keep their size, only scale and normalise.

    Args:
        images: one image (PIL, or uint8 ``(H, W, 3)``) or a uint8 batch ``(N, H, W, 3)``
            as returned by :func:`~course_utils.data.make_shapes`.

    Returns:
        ``(3, H, W)`` or ``(N, 3, H, W)`` float32, normalised as in training.

    Example:
        >>> shapes_to_tensor(np.zeros((2, 64, 48, 3), np.uint8)).shape
        torch.Size([2, 3, 64, 48])
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.dtype != np.uint8 or images.shape[-1] != 3:
            raise ValueError(
                f"a batch must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}"
            )
        return _normalize(uint8_to_tensor(images))
    return _normalize(uint8_to_tensor(np.array(to_rgb(images))))


def shapes_state(checkpoint: object, path: Path) -> object:
    """The state dict inside a checkpoint written by ``train_shapes``, after checking its tags."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != SHAPES_FORMAT:
        raise WeightsError(
            f"{path} is not a shapes checkpoint (one written by "
            "python -m course_utils.train_shapes); re-run that script to recreate it"
        )
    if checkpoint.get("class_names") != list(SHAPE_CLASSES):
        raise WeightsError(
            f"{path} was trained on classes {checkpoint.get('class_names')}, but "
            f"make_shapes draws {list(SHAPE_CLASSES)}; re-run python -m "
            "course_utils.train_shapes"
        )
    return checkpoint["state_dict"]


class Fire(nn.Module):
    """SqueezeNet's Fire module: a 1x1 squeeze, then parallel 1x1 and 3x3 expands, concatenated.

    Attribute names follow torchvision's ``Fire`` so the course's code reads the same on both;
    a BatchNorm after the squeeze keeps the small network quick to train.

    Args:
        in_channels: channels of the input.
        squeeze: channels after the 1x1 squeeze.
        expand: channels of each expand branch (the output has ``2 * expand``).
    """

    def __init__(self, in_channels: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1, bias=False)
        self.squeeze_bn = nn.BatchNorm2d(squeeze)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Squeeze, then the two expand branches side by side on the channel axis."""
        x = self.squeeze_activation(self.squeeze_bn(self.squeeze(x)))
        return torch.cat(
            [
                self.expand1x1_activation(self.expand1x1(x)),
                self.expand3x3_activation(self.expand3x3(x)),
            ],
            1,
        )


class ShapesNet(nn.Module):
    """A SqueezeNet-style classifier for the shapes lab (about 90k parameters).

    Designed for localisation: the last Fire module (``features.9``, the default Grad-CAM
    layer) keeps an 8x8 grid for 64x64 inputs, and the head is a 1x1 convolution followed by
    global average pooling -- so each class score is the mean of a spatial class map and
    Grad-CAM on ``features.9`` is exactly that map (CAM), with no ReLU in between to hide
    negative evidence.

    Args:
        num_classes: number of outputs.
    """

    def __init__(self, num_classes: int = len(SHAPE_CLASSES)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False),  # 0: 32x32 for 64x64 inputs
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            Fire(32, 16, 32),
            nn.MaxPool2d(2),  # 4: 16x16
            Fire(64, 16, 48),
            Fire(96, 32, 64),
            nn.MaxPool2d(2),  # 7: 8x8
            Fire(128, 32, 64),
            Fire(128, 32, 64),  # 9: the Grad-CAM layer
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.2),
            nn.Conv2d(128, num_classes, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(N, num_classes)``."""
        return self.classifier(self.features(x))
