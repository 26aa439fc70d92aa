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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from ._validation import check_images, check_model, class_scores, fresh_input
from .cam import grad_cam, guided_grad_cam
from .guided import guided_backprop
from .hooks import LayerRecorder, evaluating, resolve_layer
from .pooling import channel_weights, weighted_cam
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
    gradients for the price of about one backward pass. The result equals ``k`` separate
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
    check_images(images)
    check_model(model, images)
    if images.shape[0] != 1:
        raise ValueError(f"class_cams explains one image (1, C, H, W), got {tuple(images.shape)}")
    if not classes:
        raise ValueError("classes is empty; give at least one class index")
    layer_name, _ = resolve_layer(model, layer)
    frozen = not any(p.requires_grad for p in model.parameters())
    with (
        evaluating(model),
        LayerRecorder(model, layer_name, record_gradient=False) as rec,
        torch.inference_mode(False),
        torch.enable_grad(),
    ):
        scores = class_scores(model, fresh_input(images, requires_grad=frozen))
        index = torch.as_tensor(list(classes), device=scores.device)
        if index.dtype != torch.int64 or index.min() < 0 or index.max() >= scores.shape[1]:
            raise ValueError(f"classes must be ints in 0..{scores.shape[1] - 1}, got {classes}")
        seeds = torch.zeros(len(index), *scores.shape, dtype=scores.dtype, device=scores.device)
        seeds[torch.arange(len(index)), 0, index] = 1.0
        if rec.activation is None or rec.activation.dim() != 4:
            raise ValueError(f"layer {layer_name!r} has no (N, C, h, w) feature maps")
        (grads,) = torch.autograd.grad(
            scores, rec.activation, grad_outputs=seeds, is_grads_batched=True
        )
    activation = rec.activation.detach().expand(len(index), -1, -1, -1)
    cams = weighted_cam(activation, channel_weights(grads[:, 0]))
    return normalize_per_image(upsample(cams, (images.shape[-2], images.shape[-1])))


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

    Creating a figure (axes, colour bar, layout) costs far more than drawing one, so the
    explorer keeps one :class:`ExplanationFigure` and :meth:`draw` only replaces the images'
    data, the bars and the titles. Made for a projector: a 1280 x 560 px picture, shown
    unscaled; the two image panels are 448 px squares (a 224 px model input, doubled pixel
    for pixel), every text at least 14 pt (19 px).

    Args:
        figure: the figure to draw on, of size :attr:`SIZE`; default a new one that pyplot
            does not manage (so a notebook does not also show it at the end of the cell).
    """

    SIZE = (12.8, 5.6)
    DPI = 100

    def __init__(self, figure: Figure | None = None) -> None:
        """Lay out the axes, the colour bar and two empty images."""
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
        self.figure.suptitle(
            format_title(image_name, e.class_name, e.probability), fontsize=SUPTITLE_SIZE, y=0.99
        )
        return self.figure

    def _draw_bars(self, e: Explanation) -> None:
        """One bar per top class (the explained one in colour), named on the bar itself."""
        bars = list(e.top_k)
        if all(i != e.class_index for i, _, _ in bars):  # explaining a class outside the top k
            bars.append((e.class_index, e.class_name, e.probability))
        ax = self.ax_bar
        ax.clear()
        rows = range(len(bars) - 1, -1, -1)  # best on top
        colours = ["tab:orange" if i == e.class_index else "lightgray" for i, _, _ in bars]
        ax.barh(rows, [p for _, _, p in bars], color=colours, height=0.8)
        for row, (_, name, p) in zip(rows, bars, strict=True):
            ax.text(0.02, row, f"{name[:24]}  {p:.2f}", va="center", fontsize=TITLE_SIZE - 1)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.5, max(len(bars), 5) - 0.5)
        ax.set_yticks([])
        ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"], fontsize=TITLE_SIZE - 1)
        ax.set_xlabel("probability", fontsize=TITLE_SIZE - 1)
        ax.set_title("top classes", fontsize=TITLE_SIZE)

    def png(self) -> bytes:
        """The figure as PNG bytes, as the explorer's image widget shows it (fast zlib level).

        The PNG carries its alt text (``Description``) and smallest text size
        (``min_font_px``), which the rendered course uses for its static copy of the app.
        """
        buffer = io.BytesIO()
        info = {
            "Description": describe_figure(self.figure),
            "min_font_px": f"{smallest_text_px(self.figure)}",
        }
        self.figure.savefig(
            buffer, format="png", dpi=self.DPI, metadata=info, pil_kwargs={"compress_level": 1}
        )
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

    Attributes:
        last: the most recent :class:`Explanation` (``None`` before the first).
        controls: the pickers by name (``"image"``, ``"class"``, ``"layer"``, ``"method"``),
            empty until the widgets are built; setting a control's ``value`` updates the app
            as a click would, which is how the notebook tests the app without a browser.

    Made for a projector: one figure is drawn once and updated (:class:`ExplanationFigure`,
    1280 px wide); Grad-CAM is computed for all offered classes of an image at once
    (:func:`class_cams`), so switching the class reuses the forward pass; every drawn view is
    kept, so flipping back to one only swaps the picture. The status line shows how long the
    last update took. ``benchmarks/bench_explorer.py`` measures each kind of change.
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
        self.bundle = bundle
        self.images = dict(images)
        self.start = next(iter(self.images)) if start is None else start
        if self.start not in self.images:
            raise ValueError(f"unknown image {start!r}; choose from {list(self.images)}")
        self.methods = list(methods)
        self.layers = list(layers) if layers else layer_choices(bundle.model, bundle.target_layer)
        for layer in self.layers:
            resolve_layer(bundle.model, layer)  # fail now, not in the middle of a lecture
        self.top_k = top_k
        self.classes = [self._class_index(c) for c in classes]
        self.last: Explanation | None = None
        self._cache: dict[tuple[str, str, int | None, str | None], Explanation] = {}
        self._probabilities: dict[str, torch.Tensor] = {}
        self._widget: Any = None
        self.controls: dict[str, Any] = {}
        self._status: Any = None
        self._figure: ExplanationFigure | None = None
        self._view: Any = None
        self._views: dict[
            tuple[str, str, int | None, str | None], tuple[bytes, str, Explanation]
        ] = {}
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

    def predictions(self, image_name: str) -> list[tuple[int, str, float]]:
        """The classes offered for one image: its ``top_k`` most likely, then ``classes``.

        Returns:
            ``[(index, name, probability), ...]`` with this image's probabilities (cached).
        """
        if image_name not in self.images:
            raise ValueError(f"unknown image {image_name!r}; choose from {list(self.images)}")
        if image_name not in self._probabilities:
            x = _model_input(self.bundle, self.images[image_name])
            self._probabilities[image_name] = _probabilities(self.bundle.model, x)
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
        """:func:`explain` for one of the explorer's images, cached.

        Grad-CAM is computed for all the classes offered for the image at once
        (:func:`class_cams`: one forward, one batched backward), so switching the class
        afterwards is a cache hit.
        """
        if image_name not in self.images:
            raise ValueError(f"unknown image {image_name!r}; choose from {list(self.images)}")
        key = (image_name, method, class_index, None if method == "guided_backprop" else layer)
        if key not in self._cache:
            if method == "grad_cam":
                self._grad_cams(image_name, class_index, layer)
            if key not in self._cache:
                self._cache[key] = explain(
                    self.bundle,
                    self.images[image_name],
                    method,
                    class_index,
                    layer,
                    top_k=self.top_k,
                )
        self.last = self._cache[key]
        return self.last

    def _grad_cams(self, image_name: str, class_index: int | None, layer: str | None) -> None:
        """Cache the Grad-CAMs of every offered class of one image at one layer."""
        layer_name, _ = resolve_layer(self.bundle.model, layer or self.bundle.target_layer)
        offered = self.predictions(image_name)
        classes = [i for i, _, _ in offered]
        if class_index is not None and class_index not in classes:
            classes.append(class_index)
        x = _model_input(self.bundle, self.images[image_name])
        start = time.perf_counter()
        cams = class_cams(self.bundle.model, x, classes, layer_name).cpu().numpy()
        seconds = time.perf_counter() - start
        probs = self._probabilities[image_name]
        image = np.asarray(self.bundle.deprocess(x[0].cpu()))
        top = _top_k(self.bundle, probs, self.top_k)
        for index, cam in zip(classes, cams, strict=True):
            e = Explanation(
                image=image,
                method="grad_cam",
                layer=layer_name,
                class_index=index,
                class_name=self.bundle.class_names[index],
                probability=float(probs[index]),
                top_k=top,
                map=cam,
                seconds=seconds,
            )
            self._cache[(image_name, "grad_cam", index, layer)] = e
            if index == classes[0]:
                self._cache[(image_name, "grad_cam", None, layer)] = e

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
        self._render()
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
        if change["owner"] is self.controls["image"]:
            self._updating = True
            try:  # new image: offer its own top classes, starting with the predicted one
                options = self._class_options(change["new"])
                self.controls["class"].options = options
                self.controls["class"].value = options[0][1]
            finally:
                self._updating = False
        self.controls["layer"].disabled = self.controls["method"].value == "guided_backprop"
        self._render()

    def _render(self) -> None:
        """Show the controls' view: from the cache of drawn views, else compute and draw it.

        The figure is drawn once and updated (:class:`ExplanationFigure`); each drawn view's
        PNG is kept, so going back to a view only swaps the image widget's bytes. The status
        line reports this update's own time.
        """
        start = time.perf_counter()
        c = self.controls
        image_name = c["image"].value
        layer = None if c["method"].value == "guided_backprop" else c["layer"].value
        key = (image_name, c["method"].value, c["class"].value, layer)
        cached = key in self._views
        if not cached:
            if self._figure is None:
                raise RuntimeError("the explorer's widgets are not built; display it first")
            computed_before = len(self._cache)
            explanation = self.explain(image_name, c["method"].value, c["class"].value, layer)
            compute = time.perf_counter() - start
            fig = self._figure.draw(explanation, image_name)
            self._views[key] = (self._figure.png(), describe_figure(fig), explanation)
            fresh = len(self._cache) > computed_before
        png, alt, explanation = self._views[key]
        self.last = explanation
        self._view.value = png
        self._view.tooltip = alt
        total = 1000 * (time.perf_counter() - start)
        if cached:
            detail = "a view shown before"
        elif fresh:
            detail = (
                f"computed in {1000 * compute:.0f} ms, drawn in {total - 1000 * compute:.0f} ms"
            )
        else:
            detail = f"reused a computed map, drawn in {total - 1000 * compute:.0f} ms"
        self._status.value = f"this update: <b>{total:.0f} ms</b> ({detail})"


def explorer(
    bundle: BundleLike, images: Mapping[str, Any] | None = None, **kwargs: Any
) -> Explorer:
    """Create an :class:`Explorer`; make it a cell's last expression to show the app."""
    return Explorer(bundle, images, **kwargs)
