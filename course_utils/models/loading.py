"""One table of the course's models, and the loader it drives.

Adding a model is one :class:`ModelSpec` row in :data:`SPECS`: :func:`load_model` has no
branch on a model's name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ..data import SHAPE_CLASSES
from .bundle import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelBundle,
    WeightsError,
    imagenet_classes,
    photo_processing,
)
from .efficientnet_lite import LITE_MEAN, LITE_STD, EfficientNetLite, lite0_weights_file, lite_key
from .shapes import SHAPES_WEIGHTS, ShapesNet, shapes_deprocess, shapes_state, shapes_to_tensor
from .squeezenet import ALLOW_DOWNLOAD_ENV, squeezenet, squeezenet_weights_file

__all__ = ["MODEL_NAMES", "SPECS", "ModelSpec", "load_model"]

Processing = tuple[Callable[[Any], torch.Tensor], Callable[[torch.Tensor], np.ndarray]]


def _same_state(checkpoint: object, path: Path) -> object:
    return checkpoint


def _same_key(key: str) -> str:
    return key


class ModelSpec(NamedTuple):
    """Everything :func:`load_model` needs to know about one model.

    Attributes:
        build: makes the architecture with random weights.
        target_layer: dotted name of the default Grad-CAM layer.
        processing: makes ``(preprocess, deprocess)``.
        class_names: returns the class names in output order.
        weights_file: ``allow_download -> path`` of the pretrained weights.
        unpack: ``(checkpoint, path) -> state dict`` (checks a checkpoint's own format).
        rename: maps a checkpoint key to the architecture's key.
    """

    build: Callable[[], nn.Module]
    target_layer: str
    processing: Callable[[], Processing]
    class_names: Callable[[], list[str]]
    weights_file: Callable[[bool], Path]
    unpack: Callable[[object, Path], object] = _same_state
    rename: Callable[[str], str] = _same_key


SPECS: dict[str, ModelSpec] = {
    "efficientnet_lite0": ModelSpec(
        build=EfficientNetLite,
        target_layer="head",
        processing=lambda: photo_processing(LITE_MEAN, LITE_STD),
        class_names=imagenet_classes,
        weights_file=lite0_weights_file,
        rename=lite_key,
    ),
    "squeezenet1_1": ModelSpec(
        build=squeezenet,
        target_layer="features.12",
        processing=lambda: photo_processing(IMAGENET_MEAN, IMAGENET_STD),
        class_names=imagenet_classes,
        weights_file=squeezenet_weights_file,
    ),
    "shapes": ModelSpec(
        build=ShapesNet,
        target_layer="features.9",
        processing=lambda: (shapes_to_tensor, shapes_deprocess),
        class_names=lambda: list(SHAPE_CLASSES),
        weights_file=lambda allow_download: SHAPES_WEIGHTS,
        unpack=shapes_state,
    ),
}
"""Model name -> how to build, feed and load it; the one list of the course's models."""

MODEL_NAMES: tuple[str, ...] = tuple(SPECS)

WeightsArg = str | os.PathLike | None


def load_model(
    name: str, *, weights: WeightsArg = "default", allow_download: bool | None = None
) -> ModelBundle:
    """Load one of the course's models, in eval mode, with its pre/post-processing.

    Args:
        name: one of ``MODEL_NAMES``: ``"efficientnet_lite0"``, ``"squeezenet1_1"``, ``"shapes"``.
        weights: ``"default"`` for the model's pretrained weights, ``None`` for random
            initialisation (offline, for the mechanics only), or the path of a weights file.
        allow_download: download missing pretrained weights into the torch cache (only
            ``squeezenet1_1``'s are not bundled). ``None`` reads the environment variable
            ``COURSE_ALLOW_DOWNLOAD`` (``1`` allows); downloads are off otherwise so nothing
            ever waits on a network.

    Returns:
        A :class:`~course_utils.models.ModelBundle`.

    Raises:
        ValueError: for an unknown ``name`` (the message lists the valid ones).
        TypeError: for ``weights`` that are neither ``"default"``, ``None`` nor a path.
        WeightsError: for every failure to get the weights: missing (the message says how to
            get them), a failed download, a file that cannot be read or does not fit.

    Example:
        >>> bundle = load_model("shapes")
        >>> bundle.target_layer, bundle.class_names[:2], bundle.model.training
        ('features.9', ['circle', 'square'], False)
    """
    if name not in SPECS:
        raise ValueError(f"unknown model {name!r}; valid names are {list(MODEL_NAMES)}")
    if not (weights is None or isinstance(weights, (str, os.PathLike))):
        raise TypeError(f"weights must be 'default', None or a path, got {type(weights).__name__}")
    if allow_download is None:
        allow_download = os.environ.get(ALLOW_DOWNLOAD_ENV, "") == "1"
    spec = SPECS[name]
    # Random weights are seeded without touching the caller's random state, so weights=None
    # gives the same network every time.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = spec.build()
    if weights is not None:
        path = spec.weights_file(allow_download) if weights == "default" else Path(weights)
        state = spec.unpack(_read(path, name), path)
        _load_state(model, state, name, path, spec.rename)
    model.eval()
    preprocess, deprocess = spec.processing()
    return ModelBundle(model, name, preprocess, deprocess, spec.class_names(), spec.target_layer)


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


def _load_state(
    model: nn.Module, state: object, name: str, path: Path, rename: Callable[[str], str]
) -> None:
    """Load a state dict, checking it fits the architecture before touching the model."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors for {name!r}")
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
