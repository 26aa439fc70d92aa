"""A live-lecture explorer: pick an image, a class, a layer and a method; see the explanation.

Two halves, kept apart on purpose:

* :func:`explain` is plain Python -- model in, :class:`Explanation` out, no widgets -- so it
  is unit-tested headless and usable from any script;
* :class:`Explorer` wraps it in ipywidgets for a notebook. Its widgets are built only when
  the explorer is displayed (or :attr:`Explorer.widget` is read), so creating one, or
  calling :meth:`Explorer.explain`, costs no front end.

Example (in a notebook)::

    from course_utils.explorer import explorer
    from course_utils.models import load_model
    explorer(load_model("efficientnet_lite0"))   # last line of the cell: shows the app
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torch import nn

from ._validation import check_images, check_model, class_scores, fresh_input, gradients_on
from .cam import grad_cam, guided_grad_cam
from .guided import guided_backprop
from .hooks import LayerRecorder, evaluating, resolve_layer
from .pooling import channel_weights, weighted_cam
from .relu import ActivationCalls
from .upsample import normalize_per_image, upsample
from .viz import (
    DEFAULT_CMAP,
    SUPTITLE_SIZE,
    TITLE_SIZE,
    add_colorbar,
    describe_figure,
    format_title,
    gradient_to_image,
    overlay,
    smallest_text_px,
)

__all__ = [
    "METHODS",
    "BundleLike",
    "Explanation",
    "ExplanationFigure",
    "Explorer",
    "class_cams",
    "explain",
    "explorer",
    "layer_choices",
    "plot_explanation",
]

#: How many explanations (maps, drawn views) an :class:`Explorer` keeps; the oldest go first.
#: A drawn view costs about 2.5 MB, so a lecture's back-and-forth stays cached while a long
#: session stays within a small JupyterHub's memory.
KEPT_VIEWS = 64


def _keep(cache: dict[Any, Any], key: Hashable, value: Any) -> None:
    """Store ``value`` under ``key`` and forget the oldest entries beyond :data:`KEPT_VIEWS`."""
    cache[key] = value
    while len(cache) > KEPT_VIEWS:
        del cache[next(iter(cache))]


METHODS: dict[str, str] = {
    "grad_cam": "Grad-CAM",
    "guided_backprop": "guided backprop",
    "guided_grad_cam": "guided Grad-CAM",
}
"""Method key -> display name. Grad-CAM methods need a layer; guided backprop does not."""


class BundleLike(Protocol):
    """What :func:`explain` needs from a model bundle (:class:`course_utils.models.ModelBundle`)."""

    model: nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    deprocess: Callable[[torch.Tensor], np.ndarray]
    class_names: Sequence[str]
    target_layer: str


@dataclass(frozen=True)
class Explanation:
    """One explanation of one image, with what is needed to draw and title it.

    Attributes:
        image: the model's input converted back for display, ``(H, W, 3)`` in [0, 1].
        method: a key of :data:`METHODS`.
        layer: the explained layer's dotted name; ``None`` for guided backprop.
        class_index, class_name: the explained class.
        probability: the model's softmax probability for that class.
        top_k: ``[(index, name, probability), ...]`` of the most likely classes, best first.
        map: ``(H, W)`` in [0, 1] for Grad-CAM; the raw gradient ``(H, W, 3)`` for the
            guided methods (see :attr:`display_map`).
        seconds: wall time spent computing ``map``.
    """

    image: np.ndarray
    method: str
    layer: str | None
    class_index: int
    class_name: str
    probability: float
    top_k: list[tuple[int, str, float]]
    map: np.ndarray
    seconds: float

    @property
    def display_map(self) -> np.ndarray:
        """``map`` ready for ``imshow``: gradients normalised per image, heatmaps as they are."""
        return gradient_to_image(self.map) if self.map.ndim == 3 else self.map

    @property
    def method_label(self) -> str:
        """E.g. ``"Grad-CAM @ blocks.15"``; just ``"guided backprop"`` (it has no layer)."""
        return METHODS[self.method] + (f" @ {self.layer}" if self.layer else "")

    def title(self, image_name: str | None = None) -> str:
        """E.g. ``"dog_bicycle: Grad-CAM @ blocks.15 for bicycle (p = 0.43)"``."""
        label = format_title(class_name=self.class_name, probability=self.probability)
        return format_title(image_name, f"{self.method_label} for {label}")


def _model_input(bundle: BundleLike, image: Any) -> torch.Tensor:
    """A PIL image / uint8 array goes through ``bundle.preprocess``; a tensor is taken as is."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3:
            raise ValueError(
                f"a tensor image must be one preprocessed image (C, H, W), got "
                f"{tuple(image.shape)}; explain one image at a time"
            )
        x = image
    elif isinstance(image, (Image.Image, np.ndarray)):
        x = bundle.preprocess(image)
    else:
        raise TypeError(
            f"image must be a PIL image, a uint8 array or a preprocessed tensor, "
            f"got {type(image).__name__}"
        )
    device = next(bundle.model.parameters()).device
    return x.to(device)[None]


def _probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with evaluating(model), torch.no_grad():
        return torch.softmax(model(x).float(), dim=1)[0].cpu()


def _top_k(bundle: BundleLike, probs: torch.Tensor, k: int) -> list[tuple[int, str, float]]:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be a positive int, got {k!r}")
    values, indices = probs.topk(min(k, probs.numel()))
    return [
        (int(i), bundle.class_names[int(i)], float(p))
        for p, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def explain(
    bundle: BundleLike,
    image: Any,
    method: str = "grad_cam",
    class_index: int | None = None,
    layer: str | None = None,
    *,
    top_k: int = 5,
) -> Explanation:
    """Explain one image's class with one method -- the explorer's compute step, no widgets.

    Args:
        bundle: model bundle (see :class:`BundleLike`); its model is run in eval mode and
            handed back unchanged.
        image: PIL image or uint8 ``(H, W, 3)`` array (preprocessed with
            ``bundle.preprocess``), or an already preprocessed ``(C, H, W)`` tensor.
        method: ``"grad_cam"``, ``"guided_backprop"`` or ``"guided_grad_cam"``.
        class_index: the class to explain; ``None`` explains the predicted class.
        layer: dotted layer name for the Grad-CAM methods; ``None`` uses
            ``bundle.target_layer``. Ignored by guided backprop.
        top_k: how many top classes to list in :attr:`Explanation.top_k`.

    Returns:
        An :class:`Explanation`.

    Raises:
        ValueError: unknown method or layer, class index out of range.

    Example:
        >>> from types import SimpleNamespace
        >>> from torchvision.models import squeezenet1_1
        >>> net = squeezenet1_1(weights=None, num_classes=3).eval()
        >>> bundle = SimpleNamespace(model=net, preprocess=None, target_layer="features.12",
        ...     deprocess=lambda x: x.clamp(0, 1).movedim(-3, -1).numpy(),
        ...     class_names=["a", "b", "c"])
        >>> e = explain(bundle, torch.rand(3, 64, 64), "grad_cam", class_index=2)
        >>> e.class_name, e.layer, e.map.shape
        ('c', 'features.12', (64, 64))
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    x = _model_input(bundle, image)
    probs = _probabilities(bundle.model, x)
    num_classes = probs.numel()
    if num_classes != len(bundle.class_names):
        raise ValueError(
            f"the model outputs {num_classes} scores but the bundle names "
            f"{len(bundle.class_names)} classes"
        )
    if class_index is None:
        class_index = int(probs.argmax())
    elif isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)):
        raise TypeError(f"class_index must be an int or None, got {type(class_index).__name__}")
    elif not 0 <= class_index < num_classes:
        raise ValueError(f"class_index {class_index} is out of range 0..{num_classes - 1}")
    class_index = int(class_index)
    layer_name: str | None = None
    start = time.perf_counter()
    if method == "guided_backprop":
        result = guided_backprop(bundle.model, x, [class_index])[0].permute(1, 2, 0)
    else:
        layer_name, _ = resolve_layer(bundle.model, layer or bundle.target_layer)
        if method == "grad_cam":
            result = grad_cam(bundle.model, x, [class_index], layer=layer_name)[0]
        else:
            result = guided_grad_cam(bundle.model, x, [class_index], layer=layer_name)[0]
            result = result.permute(1, 2, 0)
    seconds = time.perf_counter() - start

    return Explanation(
        image=np.asarray(bundle.deprocess(x[0].cpu())),
        method=method,
        layer=layer_name,
        class_index=class_index,
        class_name=bundle.class_names[class_index],
        probability=float(probs[class_index]),
        top_k=_top_k(bundle, probs, top_k),
        map=result.detach().cpu().numpy(),
        seconds=seconds,
    )


def class_cams(
    model: nn.Module, images: torch.Tensor, classes: Sequence[int], layer: str
) -> torch.Tensor:
    """Grad-CAM of one image for several classes: one forward pass, one batched backward.

    Switching the explained class should not re-run the network: the layer's activation
    ``A`` is the same for every class, only ``∂y^c/∂A`` differs. One forward pass records
    ``A``; ``torch.autograd.grad(..., is_grads_batched=True)`` then backpropagates ``k``
    one-hot vectors at once (vectorised over the batch of seeds), giving the ``k``
    gradients for the price of about one backward pass near the output -- the backward runs
    only from the scores down to ``layer``. The result equals ``k`` separate
    :func:`course_utils.cam.grad_cam` calls (``benchmarks/bench_explorer.py`` times both).

    Args:
        model: classifier; run in eval mode and handed back unchanged.
        images: one preprocessed image ``(1, C, H, W)``; not modified.
        classes: the ``k`` class indices to explain.
        layer: dotted name of the convolutional layer.

    Returns:
        ``(k, H, W)`` maps in [0, 1], one per class, in the order of ``classes``.

    Raises:
        ValueError: more than one image, no classes, a class out of range, a bad layer.

    Example:
        >>> from torchvision.models import squeezenet1_1
        >>> net = squeezenet1_1(weights=None, num_classes=4)
        >>> class_cams(net, torch.randn(1, 3, 64, 80), [2, 0], "features.12").shape
        torch.Size([2, 64, 80])
    """
    layer_name, _ = resolve_layer(model, layer)
    return _ForwardPass(model, images, [layer_name]).cams(layer_name, classes, keep=False)


class _SwitchableGuide(ActivationCalls):
    """:class:`~course_utils.relu.ActivationCalls` whose guided hooks act only when switched on.

    The hooks stay on the kept graph's ReLU outputs: off, they pass gradients through (a
    Grad-CAM backward); on, they apply the guided rule (a guided backprop backward).
    """

    def __init__(self) -> None:
        super().__init__(guide=True)
        self.active = False

    def _clamp_and_count(self, grad: torch.Tensor) -> torch.Tensor | None:  # type: ignore[override]
        return super()._clamp_and_count(grad) if self.active else None


class _ForwardPass:
    """One image's forward pass, kept with its autograd graph: every map is a backward.

    A Grad-CAM needs the layer's activation ``A`` (forward) and ``∂y^c/∂A`` (backward from
    the class score); guided backprop needs ``∂y^c/∂x`` with the guided rule at every ReLU
    (backward). The forward pass depends on none of class, layer and method -- when every
    layer of interest is recorded in it and its ReLU outputs carry guided hooks that can be
    switched on -- so one pass serves them all: its graph is kept, and each request
    backpropagates from the kept scores (for a Grad-CAM only down to its layer, near the
    output a small fraction of a forward pass). The explorer keeps the current image's
    pass; :func:`class_cams` makes a throwaway one.

    The kept graph holds the model's parameters and the pass's saved activations (tens of
    MB for a 224 x 224 EfficientNet-Lite0), so keep one pass, not one per image, and do not
    change the model's weights while a pass is kept.

    Args:
        model: classifier; run in eval mode and handed back unchanged (no hooks stay).
        images: one preprocessed image ``(1, C, H, W)``; not modified.
        layers: dotted names of the layers to record.

    Attributes:
        probabilities: the model's softmax probabilities for the image, ``(num_classes,)``.

    Raises:
        ValueError: more than one image, a bad layer or model output.

    Example:
        >>> from torchvision.models import squeezenet1_1
        >>> net = squeezenet1_1(weights=None, num_classes=4)
        >>> kept = _ForwardPass(net, torch.randn(1, 3, 64, 80), ["features.9", "features.12"])
        >>> kept.cams("features.9", [3]).shape, kept.cams("features.12", [0, 1]).shape
        (torch.Size([1, 64, 80]), torch.Size([2, 64, 80]))
        >>> kept.guided(2).shape
        torch.Size([1, 3, 64, 80])
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, layers: Sequence[str]) -> None:
        """Run the forward pass, recording ``layers`` and the ReLU outputs; keep its graph."""
        check_images(images)
        check_model(model, images)
        if images.shape[0] != 1:
            raise ValueError(f"explain one image (1, C, H, W) at a time, got {tuple(images.shape)}")
        self._model = model  # the guided rule's refusals name it
        self._guide = _SwitchableGuide()
        with ExitStack() as stack:
            stack.enter_context(evaluating(model))
            recorders = [
                stack.enter_context(LayerRecorder(model, layer, record_gradient=False))
                for layer in layers
            ]
            stack.enter_context(gradients_on())
            self._input = fresh_input(images, requires_grad=True)  # guided backprop's target
            with self._guide:
                self._scores = class_scores(model, self._input)
        self._activations = {rec.name: rec.activation for rec in recorders}
        self._size = (images.shape[-2], images.shape[-1])
        self.probabilities = torch.softmax(self._scores.detach().float(), dim=1)[0].cpu()

    def _seeds(self, classes: Sequence[int]) -> torch.Tensor:
        """One one-hot ``∂/∂scores`` per class: ``(k, 1, num_classes)``."""
        if not classes:
            raise ValueError("classes is empty; give at least one class index")
        scores = self._scores
        index = torch.as_tensor(list(classes), device=scores.device)
        if index.dtype != torch.int64 or index.min() < 0 or index.max() >= scores.shape[1]:
            raise ValueError(f"classes must be ints in 0..{scores.shape[1] - 1}, got {classes}")
        seeds = torch.zeros(len(index), *scores.shape, dtype=scores.dtype, device=scores.device)
        seeds[torch.arange(len(index)), 0, index] = 1.0
        return seeds

    def cams(self, layer: str, classes: Sequence[int], *, keep: bool = True) -> torch.Tensor:
        """Grad-CAMs of ``classes`` at ``layer``: one backward, batched over the classes.

        Args:
            layer: a recorded layer's dotted name.
            classes: the class indices to explain.
            keep: keep the graph for later calls; ``False`` frees it (no later call then).

        Returns:
            ``(k, H, W)`` maps in [0, 1], equal to :func:`course_utils.cam.grad_cam`'s.
        """
        if layer not in self._activations:
            raise ValueError(
                f"layer {layer!r} was not recorded; recorded: {list(self._activations)}"
            )
        activation = self._activations[layer]
        if activation is None or activation.dim() != 4:
            raise ValueError(f"layer {layer!r} has no (N, C, h, w) feature maps")
        seeds = self._seeds(classes)
        batched = len(seeds) > 1  # vmap has a cost of its own; one class needs none
        with gradients_on():
            (grads,) = torch.autograd.grad(
                self._scores,
                activation,
                grad_outputs=seeds if batched else seeds[0],
                is_grads_batched=batched,
                retain_graph=keep,
                allow_unused=True,
            )
            if grads is None:
                raise ValueError(f"the class scores do not depend on layer {layer!r}")
            grads = grads[:, 0] if batched else grads
            maps = activation.detach().expand(len(seeds), -1, -1, -1)
            cams = weighted_cam(maps, channel_weights(grads))
            return normalize_per_image(upsample(cams, self._size))

    def guided(self, class_index: int) -> torch.Tensor:
        """Guided backprop of one class, ``(1, C, H, W)``: one backward, guided hooks on.

        Equal to :func:`course_utils.guided.guided_backprop` (same hooks, same rule), and
        refused for the same models.
        """
        self._guide.refuse_unguidable(self._model)
        fired = self._guide.fired
        self._guide.active = True
        try:
            with gradients_on():
                (grad,) = torch.autograd.grad(
                    self._scores,
                    self._input,
                    grad_outputs=self._seeds([class_index])[0],
                    retain_graph=True,
                )
        finally:
            self._guide.active = False
        if self._guide.fired == fired:
            raise ValueError(
                f"{type(self._model).__name__} runs ReLUs, but none lies between the input "
                "and the scores, so guided backprop would be the plain gradient"
            )
        return grad


def layer_choices(model: nn.Module, target_layer: str) -> list[str]:
    """Layers worth offering next to ``target_layer``: its convolutional siblings, in order.

    Grad-CAM is usually run on the last convolutional block; comparing it with earlier blocks
    of the same stack (SqueezeNet's ``features.*``, EfficientNet's ``stem``, ``blocks.*``,
    ``head``) shows the trade-off between resolution and class specificity. A sibling counts
    if it contains a ``Conv2d``; a sibling that is a plain container (``Sequential``,
    ``ModuleList``) of several convolutional blocks is replaced by those blocks.
    Parameter-free layers (ReLU, pooling) repeat a neighbour's map and linear heads have no
    map, so both are left out.

    Example:
        >>> from torchvision.models import squeezenet1_1
        >>> layer_choices(squeezenet1_1(weights=None), "features.12")[-3:]
        ['features.10', 'features.11', 'features.12']
    """
    name, _ = resolve_layer(model, target_layer)
    parent_name, _, _ = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    prefix = f"{parent_name}." if parent_name else ""
    choices = []
    for child_name, child in parent.named_children():
        blocks = [
            f"{prefix}{child_name}.{sub_name}"
            for sub_name, sub in child.named_children()
            if _has_conv(sub)
        ]
        stack = isinstance(child, (nn.Sequential, nn.ModuleList)) and len(blocks) > 1
        if stack and prefix + child_name != name:
            choices += blocks
        elif _has_conv(child):
            choices.append(prefix + child_name)
    return choices if name in choices else [*choices, name]


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


class ExplanationFigure:
    """The explorer's three panels -- image, explanation, top classes -- drawn once, updated.

    Creating a figure (axes, colour bar, layout) costs far more than drawing one, and
    drawing all of it (tick labels, colour bar, layout of the titles) far more than drawing
    what changes. So :meth:`draw` only replaces the images' data, the bars and the texts,
    and :meth:`png` draws only those artists over a cached picture of the rest (blitting;
    one cached picture with the colour bar and one without, redrawn when the image size
    changes). The picture equals a full redraw pixel for pixel.

    Made for a projector: a 1280 x 560 px picture, shown unscaled; the two image panels
    are 448 px squares (a 224 px model input, doubled pixel for pixel), every text at least
    13 pt (18 px).

    Args:
        figure: the figure to draw on, of size :attr:`SIZE`; default a new one that pyplot
            does not manage (so a notebook does not also show it at the end of the cell).
    """

    SIZE = (12.8, 5.6)
    DPI = 100

    def __init__(self, figure: Figure | None = None) -> None:
        """Lay out the axes, the colour bar, two empty images and the titles."""
        self.figure = figure or Figure(figsize=self.SIZE, dpi=self.DPI)
        width, height = (self.DPI * side for side in self.SIZE)

        def box(
            left: float, bottom: float, w: float, h: float
        ) -> tuple[float, float, float, float]:
            return (left / width, bottom / height, w / width, h / height)

        # Fixed positions, in pixels: no layout engine runs on an update.
        self.ax_img = self.figure.add_axes(box(8, 16, 448, 448))
        self.ax_map = self.figure.add_axes(box(468, 16, 448, 448))
        self.ax_bar = self.figure.add_axes(box(1010, 66, 262, 398))
        self._colorbar = add_colorbar(self.ax_map, DEFAULT_CMAP)
        self._colorbar.ax.set_position(box(926, 16, 16, 448))
        self.ax_map.set_position(box(468, 16, 448, 448))  # the colour bar took some of it
        empty = np.zeros((2, 2, 3), np.uint8)
        self._image = self.ax_img.imshow(empty, interpolation="nearest")
        self._map = self.ax_map.imshow(empty, interpolation="nearest")
        for ax in (self.ax_img, self.ax_map):
            ax.axis("off")
        self._suptitle = self.figure.suptitle(" ", fontsize=SUPTITLE_SIZE, y=0.99)
        ax = self.ax_bar
        ax.set_xlim(0, 1)
        ax.set_yticks([])
        ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"], fontsize=TITLE_SIZE - 1)
        ax.set_xlabel("probability", fontsize=TITLE_SIZE - 1)
        ax.set_title("top classes", fontsize=TITLE_SIZE)
        for side in ("left", "top", "right"):  # no frame line under a bar's ends
            ax.spines[side].set_visible(False)
        self._bars: list[tuple[Rectangle, Text]] = []
        self._size: tuple[int, int] | None = None  # the image size the backgrounds are for
        self._backgrounds: dict[bool, Any] = {}  # colour bar shown -> the rest, drawn
        self._drawn: dict[Hashable, Any] = {}  # how a panel's artists look -> its pixels

    def draw(self, explanation: Explanation, image_name: str | None = None) -> Figure:
        """Show ``explanation``; return the figure."""
        e = explanation
        height, width = e.image.shape[:2]
        shown = overlay(e.image, e.map) if e.map.ndim == 2 else e.display_map
        panels = ((self._image, e.image, self.ax_img), (self._map, shown, self.ax_map))
        for artist, data, ax in panels:
            artist.set_data((np.clip(data, 0, 1) * 255 + 0.5).astype(np.uint8))
            artist.set_extent((-0.5, width - 0.5, height - 0.5, -0.5))
            ax.set_xlim(-0.5, width - 0.5)
            ax.set_ylim(height - 0.5, -0.5)
        self.ax_img.set_title(image_name or "image", fontsize=TITLE_SIZE)
        self.ax_map.set_title(e.method_label, fontsize=TITLE_SIZE)
        self._colorbar.ax.set_visible(e.map.ndim == 2)  # gradients have no importance scale
        self._draw_bars(e)
        self._suptitle.set_text(format_title(image_name, e.class_name, e.probability))
        return self.figure

    def _draw_bars(self, e: Explanation) -> None:
        """One bar per top class (the explained one in colour), named on the bar itself."""
        bars = list(e.top_k)
        if all(i != e.class_index for i, _, _ in bars):  # explaining a class outside the top k
            bars.append((e.class_index, e.class_name, e.probability))
        ax = self.ax_bar
        while len(self._bars) < len(bars):  # bars are made once and then reused
            bar = Rectangle((0, 0), 0, 0.8, linewidth=0)
            ax.add_patch(bar)
            self._bars.append((bar, ax.text(0.02, 0, "", va="center", fontsize=TITLE_SIZE - 1)))
        for row, (bar, label) in enumerate(self._bars):
            shown = row < len(bars)
            bar.set_visible(shown)
            label.set_visible(shown)
            if shown:
                index, name, p = bars[row]
                y = len(bars) - 1 - row  # best on top
                bar.set_y(y - 0.4)
                bar.set_width(p)
                bar.set_facecolor("tab:orange" if index == e.class_index else "lightgray")
                label.set_y(y)
                label.set_text(f"{name[:24]}  {p:.2f}")
        ax.set_ylim(-0.5, max(len(bars), 5) - 0.5)

    def _panels(self) -> list[tuple[bool, list[Artist]]]:
        """The artists :meth:`draw` changes, by panel, in the order a full redraw draws them.

        Panels do not overlap. Each comes with whether its drawn pixels are worth keeping:
        the image panel changes only with the image, the bars and the suptitle with the
        image and the class; the explanation panel changes with everything.
        """
        bars: list[Artist] = [bar for bar, _ in self._bars] + [label for _, label in self._bars]
        return [
            (True, [self._image, self.ax_img.title]),
            (False, [self._map, self.ax_map.title]),
            (True, bars),
            (True, [self._suptitle]),
        ]

    def pixels(self) -> np.ndarray:
        """The figure as ``(H, W, 4)`` uint8 RGBA pixels: the changing artists over a cache.

        The rest (axes, tick labels, colour bar) is drawn once per colour bar state and image
        size and kept; each call restores it and draws only the changing artists on top --
        or restores a panel's pixels drawn before, when its artists look as they did then.
        """
        canvas = self.figure.canvas
        if not isinstance(canvas, FigureCanvasAgg):
            canvas = FigureCanvasAgg(self.figure)
        if self._image.get_size() != self._size:  # the image panels' boxes change with it
            self._size = self._image.get_size()
            self._backgrounds.clear()
            self._drawn.clear()
        key = self._colorbar.ax.get_visible()
        panels = self._panels()
        if key in self._backgrounds:
            canvas.restore_region(self._backgrounds[key])
        else:
            changing = [artist for _, artists in panels for artist in artists]
            for artist in changing:
                artist.set_animated(True)  # left out of the full draw
            try:
                canvas.draw()
            finally:
                for artist in changing:
                    artist.set_animated(False)
            self._backgrounds[key] = canvas.copy_from_bbox(self.figure.bbox)
        renderer = canvas.get_renderer()
        limits = tuple(ax.get_xlim() + ax.get_ylim() for ax in (self.ax_img, self.ax_bar))
        for keep, artists in panels:
            shown = [artist for artist in artists if artist.get_visible()]
            looks = (key, limits, tuple(_looks(artist) for artist in shown))
            if keep and looks in self._drawn:
                canvas.restore_region(self._drawn[looks])
                continue
            for artist in shown:
                self.figure.draw_artist(artist)
            if keep and shown:  # antialiasing reaches a pixel or two beyond the extents
                box = Bbox.union([artist.get_window_extent(renderer) for artist in shown])
                inside = Bbox.intersection(box.padded(3), self.figure.bbox)
                if inside is not None:
                    self._drawn[looks] = canvas.copy_from_bbox(inside)
        return np.asarray(canvas.buffer_rgba())

    def png(self) -> bytes:
        """The figure as PNG bytes, as the explorer's image widget shows it (fast zlib level).

        The PNG carries its alt text (``Description``) and smallest text size
        (``min_font_px``), which the rendered course uses for its static copy of the app.
        """
        info = PngInfo()
        info.add_text("Description", describe_figure(self.figure))
        info.add_text("min_font_px", f"{smallest_text_px(self.figure)}")
        buffer = io.BytesIO()
        rgba = self.pixels()
        height, width = rgba.shape[:2]
        picture = Image.frombuffer("RGBA", (width, height), rgba, "raw", "RGBA", 0, 1)
        picture = picture.convert("RGB")  # the figure is opaque
        picture.save(buffer, format="png", pnginfo=info, compress_level=1)
        return buffer.getvalue()


def plot_explanation(explanation: Explanation, image_name: str | None = None) -> Figure:
    """Three panels: the image, the explanation (with its colour bar), the top classes.

    A class explained from outside the top classes gets its own bar at the bottom.

    Returns:
        The figure, a pyplot figure: a notebook shows it at the end of the cell.
    """
    figure = plt.figure(figsize=ExplanationFigure.SIZE, dpi=ExplanationFigure.DPI)
    return ExplanationFigure(figure).draw(explanation, image_name)


class Explorer:
    """The ipywidgets app: image, class, layer and method pickers over :func:`explain`.

    Args:
        bundle: model bundle (see :class:`BundleLike`).
        images: name -> PIL image (or uint8 array); default: every bundled photo
            (:func:`course_utils.data.list_photos`).
        methods: method keys offered (default: all of :data:`METHODS`).
        layers: layer names offered; default :func:`layer_choices` around
            ``bundle.target_layer``.
        top_k: classes offered in the class picker (the image's most likely ones).
        classes: classes offered for every image in addition, by index or name -- e.g. the
            objects of a multi-object photo that are not among its top classes.
        start: the image shown first (default: the first of ``images``).
        threads: CPU threads torch uses for the explorer's computations; ``None`` leaves
            torch's setting. One image is too little work to share: on a laptop whose
            cores also run the browser and the kernel's I/O, torch's threads wait for each
            other, and one thread was up to 7x faster than two on a 2-core machine.

    Attributes:
        last: the most recent :class:`Explanation` (``None`` before the first).
        controls: the pickers by name (``"image"``, ``"class"``, ``"layer"``, ``"method"``),
            empty until the widgets are built; setting a control's ``value`` updates the app
            as a click would, which is how the notebook tests the app without a browser.

    Made for a projector: one figure is drawn once and updated (:class:`ExplanationFigure`,
    1280 px wide, only the changing artists redrawn). The current image's forward pass is
    kept with its graph (:class:`_ForwardPass`: every offered layer recorded, guided hooks
    that can be switched on), so a new class, layer or method costs one backward pass
    from the kept scores, not a forward; guided Grad-CAM multiplies two cached maps. Every
    drawn view is kept, so flipping back to one only swaps the picture. The status line
    shows how long this update took, from the click to the new picture.
    ``benchmarks/bench_explorer.py`` measures each kind of change.
    Display the object (last line of a cell) or its :attr:`widget`.
    """

    def __init__(
        self,
        bundle: BundleLike,
        images: Mapping[str, Any] | None = None,
        *,
        methods: Sequence[str] = tuple(METHODS),
        layers: Sequence[str] | None = None,
        top_k: int = 5,
        classes: Sequence[int | str] = (),
        start: str | None = None,
        threads: int | None = 1,
    ) -> None:
        """Check the configuration now: nothing should fail in the middle of a lecture."""
        if images is None:
            from .data import list_photos, load_photo

            images = {name: load_photo(name) for name in list_photos()}
        if not images:
            raise ValueError("images is empty; give at least one {name: image}")
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"unknown or no methods {unknown}; choose from {list(METHODS)}")
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        self.bundle = bundle
        self.images = dict(images)
        self.start = next(iter(self.images)) if start is None else start
        if self.start not in self.images:
            raise ValueError(f"unknown image {start!r}; choose from {list(self.images)}")
        self.methods = list(methods)
        offered = list(layers) if layers else layer_choices(bundle.model, bundle.target_layer)
        # Names as resolve_layer spells them; fail now, not in the middle of a lecture.
        self.layers = [resolve_layer(bundle.model, layer)[0] for layer in offered]
        self.top_k = top_k
        self.classes = [self._class_index(c) for c in classes]
        self.threads = threads
        self.last: Explanation | None = None
        self._inputs: dict[str, tuple[torch.Tensor, np.ndarray]] = {}
        self._probabilities: dict[str, torch.Tensor] = {}
        self._kept: tuple[str, _ForwardPass] | None = None
        self._maps: dict[tuple[str, str, int, str | None], np.ndarray] = {}
        self._cache: dict[tuple[str, str, int, str | None], Explanation] = {}
        self._widget: Any = None
        self.controls: dict[str, Any] = {}
        self._status: Any = None
        self._figure: ExplanationFigure | None = None
        self._view: Any = None
        self._views: dict[tuple[str, str, int, str | None], tuple[bytes, Explanation]] = {}
        self._updating = False

    def _class_index(self, cls: int | str) -> int:
        names = list(self.bundle.class_names)
        if isinstance(cls, str):
            if cls not in names:
                raise ValueError(f"unknown class name {cls!r}")
            return names.index(cls)
        if isinstance(cls, bool) or not isinstance(cls, int) or not 0 <= cls < len(names):
            raise ValueError(f"class index must be an int in 0..{len(names) - 1}, got {cls!r}")
        return cls

    def _input(self, image_name: str) -> tuple[torch.Tensor, np.ndarray]:
        """The image's model input ``(1, C, H, W)`` and its display copy, made once."""
        if image_name not in self.images:
            raise ValueError(f"unknown image {image_name!r}; choose from {list(self.images)}")
        if image_name not in self._inputs:
            with _threads(self.threads):
                x = _model_input(self.bundle, self.images[image_name])
                shown = np.asarray(self.bundle.deprocess(x[0].cpu()))
            self._inputs[image_name] = (x, shown)
        return self._inputs[image_name]

    def _forward(self, image_name: str) -> _ForwardPass:
        """The image's kept forward pass; a new image's replaces the previous one's."""
        if self._kept is None or self._kept[0] != image_name:
            x, _ = self._input(image_name)
            self._kept = None  # free the old graph before building the new one
            with _threads(self.threads):
                kept = _ForwardPass(self.bundle.model, x, self.layers)
            if kept.probabilities.numel() != len(self.bundle.class_names):
                raise ValueError(
                    f"the model outputs {kept.probabilities.numel()} scores but the bundle "
                    f"names {len(self.bundle.class_names)} classes"
                )
            self._kept = (image_name, kept)
            self._probabilities[image_name] = kept.probabilities
        return self._kept[1]

    def predictions(self, image_name: str) -> list[tuple[int, str, float]]:
        """The classes offered for one image: its ``top_k`` most likely, then ``classes``.

        Returns:
            ``[(index, name, probability), ...]`` with this image's probabilities (cached).
        """
        if image_name not in self._probabilities:
            self._forward(image_name)
        probs = self._probabilities[image_name]
        offered = _top_k(self.bundle, probs, self.top_k)
        shown = {index for index, _, _ in offered}
        offered += [
            (i, self.bundle.class_names[i], float(probs[i])) for i in self.classes if i not in shown
        ]
        return offered

    def explain(
        self,
        image_name: str,
        method: str = "grad_cam",
        class_index: int | None = None,
        layer: str | None = None,
    ) -> Explanation:
        """:func:`explain` for one of the explorer's images and layers, cached.

        The maps are computed from the kept forward pass and reused: a Grad-CAM is one
        backward pass, guided backprop is computed once per image and class, guided
        Grad-CAM multiplies the two. They equal :func:`course_utils.cam.grad_cam`,
        :func:`course_utils.guided.guided_backprop` and
        :func:`course_utils.cam.guided_grad_cam` (``tests/test_explorer.py`` checks).

        Raises:
            ValueError: unknown image, method or class, a layer the explorer does not offer.
        """
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
        offered = self.predictions(image_name)
        probs = self._probabilities[image_name]
        if class_index is None:
            class_index = offered[0][0]
        elif isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)):
            raise TypeError(f"class_index must be an int or None, got {type(class_index).__name__}")
        elif not 0 <= class_index < probs.numel():
            raise ValueError(f"class_index {class_index} is out of range 0..{probs.numel() - 1}")
        class_index = int(class_index)
        layer_name = None
        if method != "guided_backprop":
            layer_name = resolve_layer(self.bundle.model, layer or self.bundle.target_layer)[0]
            if layer_name not in self.layers:
                raise ValueError(f"layer {layer_name!r} is not offered; offered: {self.layers}")
        key = (image_name, method, class_index, layer_name)
        if key not in self._cache:
            start = time.perf_counter()
            with _threads(self.threads):
                result = self._map(image_name, method, class_index, layer_name)
            explanation = Explanation(
                image=self._input(image_name)[1],
                method=method,
                layer=layer_name,
                class_index=class_index,
                class_name=self.bundle.class_names[class_index],
                probability=float(probs[class_index]),
                top_k=_top_k(self.bundle, probs, self.top_k),
                map=result,
                seconds=time.perf_counter() - start,
            )
            _keep(self._cache, key, explanation)
            self.last = explanation
            return explanation
        self.last = self._cache[key]
        return self.last

    def _map(self, image_name: str, method: str, class_index: int, layer: str | None) -> np.ndarray:
        """One method's map, from the cached maps and the kept forward pass where possible."""
        key = (image_name, method, class_index, layer)
        if key in self._maps:
            return self._maps[key]
        if method == "guided_grad_cam":  # guided backprop masked by Grad-CAM
            detail = self._map(image_name, "guided_backprop", class_index, None)
            cam = self._map(image_name, "grad_cam", class_index, layer)
            result = detail * cam[..., None]
        elif layer is None:  # guided backprop: one guided backward from the kept pass
            gradient = self._forward(image_name).guided(class_index)[0]
            result = gradient.permute(1, 2, 0).cpu().numpy()
        else:  # Grad-CAM: one backward pass from the kept forward pass
            heatmap = self._forward(image_name).cams(layer, [class_index])[0]
            result = heatmap.cpu().numpy()
        _keep(self._maps, key, result)
        return result

    # ------------------------------------------------------------------------------ widgets

    @property
    def widget(self) -> Any:
        """The app as an ``ipywidgets.VBox`` (built on first access)."""
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _build(self) -> Any:
        import ipywidgets as w

        start = time.perf_counter()
        first = self.start
        style = {"description_width": "60px"}
        layout = w.Layout(width="320px")
        self.controls = {
            "image": w.Dropdown(
                options=list(self.images),
                value=first,
                description="image",
                style=style,
                layout=layout,
            ),
            "class": w.Dropdown(
                options=self._class_options(first),
                description="class",
                style=style,
                layout=layout,
            ),
            "layer": w.Dropdown(
                options=self.layers,
                value=self._default_layer(),
                description="layer",
                style=style,
                layout=layout,
            ),
            "method": w.ToggleButtons(
                options=[(METHODS[m], m) for m in self.methods],
                value=self.methods[0],
                description="method",
                style=style,
            ),
        }
        self._status = w.HTML()
        self._figure = ExplanationFigure()
        width, _ = ExplanationFigure.SIZE
        self._view = w.Image(
            format="png",
            layout=w.Layout(width="100%", max_width=f"{width * ExplanationFigure.DPI:.0f}px"),
        )
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self._render(start)
        c = self.controls
        return w.VBox(
            [
                w.HBox([c["image"], c["class"], c["layer"]]),
                c["method"],
                self._status,
                self._view,
            ]
        )

    def _default_layer(self) -> str:
        """The layer selected at start: the bundle's target layer if offered, else the last."""
        target = resolve_layer(self.bundle.model, self.bundle.target_layer)[0]
        return target if target in self.layers else self.layers[-1]

    def _class_options(self, image_name: str) -> list[tuple[str, int]]:
        return [(f"{name} ({p:.2f})", i) for i, name, p in self.predictions(image_name)]

    def _on_change(self, change: dict[str, Any]) -> None:
        if self._updating:
            return
        start = time.perf_counter()  # the update starts with the click, new class list included
        if change["owner"] is self.controls["image"]:
            self._updating = True
            try:  # new image: offer its own top classes, starting with the predicted one
                options = self._class_options(change["new"])
                self.controls["class"].options = options
                self.controls["class"].value = options[0][1]
            finally:
                self._updating = False
        self.controls["layer"].disabled = self.controls["method"].value == "guided_backprop"
        self._render(start)

    def _render(self, start: float) -> None:
        """Show the controls' view: from the cache of drawn views, else compute and draw it.

        The figure is drawn once and updated (:class:`ExplanationFigure`); each drawn view's
        PNG is kept, so going back to a view only swaps the image widget's bytes. The status
        line reports this update's own time, counted from ``start`` (the click).
        """
        c = self.controls
        image_name = c["image"].value
        layer = None if c["method"].value == "guided_backprop" else c["layer"].value
        key = (image_name, c["method"].value, c["class"].value, layer)
        cached = key in self._views
        if not cached:
            if self._figure is None:
                raise RuntimeError("the explorer's widgets are not built; display it first")
            explanation = self.explain(image_name, c["method"].value, c["class"].value, layer)
            computed = time.perf_counter()
            self._figure.draw(explanation, image_name)
            # The PNG carries its own alt text; an Image widget's ``tooltip`` must stay unset:
            # ipywidgets 8.1's ImageView fails to render with one ("Could not create a view").
            _keep(self._views, key, (self._figure.png(), explanation))
            drawn = time.perf_counter() - computed
        else:  # the most recently shown views are the last to be forgotten
            self._views[key] = self._views.pop(key)
        png, explanation = self._views[key]
        self.last = explanation
        self._view.value = png
        total = 1000 * (time.perf_counter() - start)
        if cached:
            detail = "a view shown before"
        else:
            detail = f"computed in {total - 1000 * drawn:.0f} ms, drawn in {1000 * drawn:.0f} ms"
        self._status.value = f"this update: <b>{total:.0f} ms</b> ({detail})"


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Run torch on ``count`` CPU threads inside the block; ``None`` changes nothing."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _looks(artist: Artist) -> Hashable:
    """What decides an artist's pixels, of what :meth:`ExplanationFigure.draw` changes."""
    if isinstance(artist, AxesImage):
        return hash(np.asarray(artist.get_array()).tobytes()), tuple(artist.get_extent())
    if isinstance(artist, Text):
        return artist.get_text(), artist.get_position()
    if isinstance(artist, Rectangle):
        return artist.get_bbox().bounds, tuple(artist.get_facecolor())
    raise TypeError(f"no appearance key for {type(artist).__name__}")


def explorer(
    bundle: BundleLike, images: Mapping[str, Any] | None = None, **kwargs: Any
) -> Explorer:
    """Create an :class:`Explorer`; make it a cell's last expression to show the app."""
    return Explorer(bundle, images, **kwargs)
