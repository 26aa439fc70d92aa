"""What every model of the course comes with: the :class:`ModelBundle` and its processing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import to_rgb

__all__ = ["ImageLike", "ModelBundle", "WeightsError", "imagenet_classes"]

ImageLike = Image.Image | np.ndarray
"""A photo: a PIL image, or a uint8 array ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(RuntimeError):
    """Pretrained weights are missing, corrupt, do not fit the architecture, or fail to download.

    Every failure to get a model's weights raises this one type, with a message saying what
    to do, so a notebook can catch it and fall back to random weights.
    """


@dataclass(frozen=True)
class ModelBundle:
    """A model together with what is needed to feed it and read its output.

    Attributes:
        model: the network, in eval mode.
        name: the name given to :func:`~course_utils.models.load_model`.
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
    preprocess: Callable[[Any], torch.Tensor]
    deprocess: Callable[[torch.Tensor], np.ndarray]
    class_names: list[str]
    target_layer: str

    def predict(
        self, image: ImageLike | torch.Tensor, top_k: int = 5
    ) -> list[tuple[int, str, float]]:
        """The ``top_k`` most likely classes of one image: ``[(index, name, probability), ...]``.

        Args:
            image: a PIL image or uint8 array (run through :attr:`preprocess`), or one
                preprocessed ``(C, H, W)`` tensor.
            top_k: how many classes, best first (at most the number of classes).

        Raises:
            TypeError: ``image`` is none of the above.
            ValueError: a tensor that is not one ``(C, H, W)`` image, or ``top_k < 1``.

        Example:
            >>> from course_utils import load_model, make_shapes
            >>> bundle, shape = load_model("shapes"), make_shapes(1, seed=0)
            >>> shape.class_names[shape.labels[0]], bundle.predict(shape.images[0], top_k=1)[0][1]
            ('cross', 'cross')
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        if isinstance(image, torch.Tensor):
            if image.dim() != 3:
                raise ValueError(
                    f"a tensor image must be one preprocessed image (C, H, W), got "
                    f"{tuple(image.shape)}"
                )
            x = image
        elif isinstance(image, (Image.Image, np.ndarray)):
            x = self.preprocess(image)
        else:
            raise TypeError(
                "image must be a PIL image, a uint8 array or a preprocessed (C, H, W) tensor, "
                f"got {type(image).__name__}"
            )
        # Imported here, not at module level: the graders' sandboxes ship the models without the
        # hooks stage when an assignment asks students to write it (grading/forbidden.py).
        from ..hooks import evaluating

        device = next(self.model.parameters()).device
        with evaluating(self.model), torch.no_grad():
            probabilities = torch.softmax(self.model(x.to(device)[None]).float(), dim=1)[0]
        values, indices = probabilities.cpu().topk(min(top_k, probabilities.numel()))
        return [
            (int(i), self.class_names[int(i)], float(p))
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names in output order; shipped with torchvision, no download."""
    from torchvision.models import SqueezeNet1_1_Weights

    return list(SqueezeNet1_1_Weights.IMAGENET1K_V1.meta["categories"])


def uint8_to_tensor(array: np.ndarray) -> torch.Tensor:
    """``(..., H, W, 3)`` uint8 -> ``(..., 3, H, W)`` float in [0, 1]; never shares memory."""
    return torch.tensor(array, dtype=torch.float32).movedim(-1, -3).div_(255)


Normalize = Callable[[torch.Tensor], torch.Tensor]
Deprocess = Callable[[torch.Tensor], np.ndarray]


def normalizer(mean: Sequence[float], std: Sequence[float]) -> tuple[Normalize, Deprocess]:
    """``(normalize, deprocess)`` for per-channel statistics ``mean`` and ``std``."""
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


def photo_processing(
    mean: Sequence[float], std: Sequence[float], size: int = 224
) -> tuple[Callable[[ImageLike], torch.Tensor], Deprocess]:
    """``(preprocess, deprocess)`` for a photo model: squash to ``size`` x ``size``, normalise.

    We squash rather than centre-crop: the heatmap then covers the entire photo (the truck at
    the edge of ``dog`` stays in view), box annotations map by plain scaling, and photos of
    different shapes still stack into one batch. On the bundled photos EfficientNet-Lite0 is as
    accurate this way as with "short side to 224, crop 224" (coffee: espresso 0.81 vs 0.86
    cropped; chelsea: Egyptian cat 0.77 vs 0.35).
    """
    normalize, deprocess = normalizer(mean, std)

    def preprocess(image: ImageLike) -> torch.Tensor:
        resized = to_rgb(image).resize((size, size), Image.Resampling.BICUBIC)
        return normalize(uint8_to_tensor(np.array(resized)))

    return preprocess, deprocess
