"""Figures for the course: heatmap overlays, guided-backprop gradients, and why not ``jet``.

Every function returns the matplotlib :class:`~matplotlib.figure.Figure` or
:class:`~matplotlib.axes.Axes` it drew on and never calls ``plt.show()``: in a notebook the
inline backend displays pyplot figures at the end of the cell (end the line with ``;`` to
hide the returned object's repr), and in a script you call ``plt.show()`` or ``fig.savefig``.

Choices made here, and why:

* **Perceptually uniform colormap by default** (``"inferno"``). Its lightness grows
  steadily with the value, so "brighter" always means "more important". ``jet`` does not:
  its lightness peaks at yellow/cyan in the middle of the range and drops again towards
  red, so the eye sees bright bands and sharp edges that are not in the data.
  :func:`jet_comparison` draws that for a lecture.
* **Heatmaps are shown on a fixed scale** (``vmin=0, vmax=1`` by default), the scale that
  :func:`course_utils.upsample.normalize_per_image` produces. A map outside that range
  raises instead of being silently rescaled, so un-normalised maps are noticed.
* **Heatmap and image must agree on (H, W)**. A map of shape ``(W, H)`` -- PIL's
  ``resize((W, H))`` convention read as ``(H, W)`` -- is reported as exactly that mistake.
* **Gradients are normalised per image for display** (:func:`gradient_to_image`): raw
  guided-backprop gradients are tiny and their scale differs from image to image, so each
  image is divided by its own robust maximum and centred on grey.
* **Lecture-size text, figures no wider than they are shown**: panel titles 14 pt, figure
  titles 16 pt, labels 12 pt, panels up to 4 inches but a figure at most
  :data:`FIGURE_WIDTH` (11.5 in = 1150 px, the width of a course page or slide), so the text
  is not scaled down on the screen.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

__all__ = [
    "DEFAULT_CMAP",
    "LECTURE_RC",
    "add_colorbar",
    "as_display_image",
    "colormap_lightness",
    "describe_figure",
    "format_title",
    "gradient_to_image",
    "jet_comparison",
    "overlay",
    "register_figure_metadata",
    "show_gradients",
    "show_maps",
    "show_overlay",
    "show_values",
    "smallest_text_px",
]

DEFAULT_CMAP = "inferno"
"""Perceptually uniform: lightness increases monotonically from 0 (black) to 1 (pale yellow)."""

TITLE_SIZE = 14
SUPTITLE_SIZE = 16
PANEL_SIZE = 4.0  # inches per panel at most
FIGURE_WIDTH = 11.5
"""Widest figure, in inches: 1150 px at 100 dpi, the width a course page or slide shows it at,
so a figure is not scaled down and its 14 pt (19 px) titles stay 19 px on the screen."""
LABEL_SIZE = 12

ImageLike = Image.Image | np.ndarray | torch.Tensor
ArrayLike = np.ndarray | torch.Tensor


# ----------------------------------------------------------------------------------------------
# Input conversion
# ----------------------------------------------------------------------------------------------


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"expected a numpy array or a torch tensor, got {type(x).__name__}")


def as_display_image(image: ImageLike) -> np.ndarray:
    """Convert an image to a float ``(H, W, 3)`` array in [0, 1] for ``imshow``.

    Args:
        image: a PIL image; a uint8 array ``(H, W)`` / ``(H, W, 3)``; or a float array or
            tensor in [0, 1], channels last ``(H, W, 3)`` or channels first ``(3, H, W)``.
            A *normalised* model input (values below 0 or above 1) is rejected: undo the
            normalisation first with the model bundle's ``deprocess``.

    Raises:
        TypeError: for other types or dtypes.
        ValueError: for other shapes, or float values outside [0, 1].

    Example:
        >>> as_display_image(np.zeros((4, 6, 3), np.uint8)).shape
        (4, 6, 3)
        >>> as_display_image(torch.ones(3, 4, 6)).shape
        (4, 6, 3)
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = _to_numpy(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            f"an image must be (H, W), (H, W, 3) or (3, H, W), got shape {array.shape}; "
            "for a batch, pass one image at a time"
        )
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"image arrays must be uint8 or floating point, got {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError("the image contains NaN or inf")
    low, high = float(array.min()), float(array.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(
            f"float image values span [{low:.2f}, {high:.2f}], not [0, 1]: this looks like a "
            "normalised model input; convert it back with bundle.deprocess(x) first"
        )
    return np.clip(array, 0, 1).astype(np.float32)


def _as_heatmap(
    heatmap: ArrayLike, image_hw: tuple[int, int] | None, vmin: float, vmax: float
) -> np.ndarray:
    """Check a heatmap's shape (against the image), finiteness and range."""
    array = _to_numpy(heatmap)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(
            f"a heatmap must be (H, W) for one image, got shape {array.shape}; "
            "index the batch first, e.g. cams[0]"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"a heatmap must be floating point, got {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(
            "the heatmap contains NaN or inf -- typically 0/0 from min-max normalising an "
            "all-zero map; use course_utils.upsample.normalize_per_image"
        )
    if image_hw is not None and array.shape != image_hw:
        if array.shape == image_hw[::-1]:
            raise ValueError(
                f"heatmap is {array.shape} but the image is (H, W) = {image_hw}: the map was "
                "resized to (W, H). PIL's resize takes (width, height) while tensor shapes "
                "are (height, width); upsample with course_utils.upsample.upsample(maps, (H, W))"
            )
        raise ValueError(
            f"heatmap shape {array.shape} does not match the image's (H, W) = {image_hw}; "
            "upsample it first with course_utils.upsample.upsample(maps, (H, W))"
        )
    if vmin >= vmax:
        raise ValueError(f"vmin must be below vmax, got vmin={vmin}, vmax={vmax}")
    low, high = float(array.min()), float(array.max())
    tolerance = 1e-4 * (vmax - vmin)
    if low < vmin - tolerance or high > vmax + tolerance:
        raise ValueError(
            f"heatmap values span [{low:.3g}, {high:.3g}], outside the colour scale "
            f"[{vmin}, {vmax}]; normalise it (course_utils.upsample.normalize_per_image) or "
            "pass vmin/vmax explicitly"
        )
    return array.astype(np.float32)


def _get_cmap(cmap: str | Colormap) -> Colormap:
    return colormaps[cmap] if isinstance(cmap, str) else cmap


def _grid_figsize(
    image_hw: tuple[int, int], nrows: int, ncols: int, extra_width: float = 0.0
) -> tuple[float, float]:
    """Figure size giving each panel the image's aspect ratio, plus room for titles."""
    height, width = image_hw
    panel_w = PANEL_SIZE * min(max(width / height, 1.0), 1.5)
    panel_w = min(panel_w, (FIGURE_WIDTH - extra_width) / ncols)
    panel_h = panel_w * height / width + 0.5
    return panel_w * ncols + extra_width, panel_h * nrows + 0.5


# ----------------------------------------------------------------------------------------------
# Overlays
# ----------------------------------------------------------------------------------------------


def overlay(
    image: ImageLike,
    heatmap: ArrayLike,
    *,
    cmap: str | Colormap = DEFAULT_CMAP,
    alpha: float = 0.5,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> np.ndarray:
    r"""Blend a colour-mapped heatmap over an image.

    .. math:: \text{out} = \alpha \cdot \text{cmap}(h) + (1 - \alpha) \cdot \text{image}

    A constant ``alpha`` keeps the blend honest: a low value looks dark (in ``inferno``)
    rather than transparent, so an all-zero map does not pass for "nothing to see".

    Args:
        image: anything :func:`as_display_image` accepts, of size ``(H, W)``.
        heatmap: ``(H, W)`` float map, values in ``[vmin, vmax]``.
        cmap: colormap name or object.
        alpha: weight of the heatmap, in [0, 1].
        vmin: the value shown as the colormap's low end.
        vmax: the value shown as the colormap's high end.

    Returns:
        Float ``(H, W, 3)`` array in [0, 1].

    Example:
        >>> overlay(np.zeros((2, 3, 3)), np.ones((2, 3)), alpha=1.0)[0, 0].round(2)
        array([0.99, 1.  , 0.64], dtype=float32)
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = as_display_image(image)
    heat = _as_heatmap(heatmap, rgb.shape[:2], vmin, vmax)
    coloured = _get_cmap(cmap)(Normalize(vmin, vmax, clip=True)(heat))[..., :3]
    return (alpha * coloured + (1 - alpha) * rgb).astype(np.float32)


def format_title(
    image_name: str | None = None,
    class_name: str | None = None,
    probability: float | None = None,
) -> str:
    """A figure title naming the image, the explained class and the model's probability.

    Example:
        >>> format_title("dog_bicycle", "bicycle-built-for-two", 0.4312)
        'dog_bicycle: bicycle-built-for-two (p = 0.43)'
        >>> format_title(class_name="cat")
        'cat'
        >>> format_title("dog", "moving van", 0.000314)
        'dog: moving van (p = 0.00031)'
    """
    if probability is not None and not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    label = class_name or ""
    if probability is not None:
        # Two decimals, except for small probabilities, which would all print as 0.00.
        small = 0 < probability < 0.01
        p = f"{probability:.2g}" if small else f"{probability:.2f}"
        label = f"{label} (p = {p})" if label else f"p = {p}"
    if image_name and label:
        return f"{image_name}: {label}"
    return image_name or label


def add_colorbar(
    ax: Axes, cmap: str | Colormap = DEFAULT_CMAP, vmin: float = 0.0, vmax: float = 1.0
) -> Colorbar:
    """Add a colour bar labelled "importance" next to a heatmap overlay drawn on ``ax``.

    An overlay's colours mean nothing without it: the bar says which colour is 0 (no
    evidence) and which is 1 (the map's maximum).

    Returns:
        The colour bar (``bar.ax`` is its axes).
    """
    mappable = ScalarMappable(Normalize(vmin, vmax), _get_cmap(cmap))
    bar = ax.figure.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("importance", fontsize=TITLE_SIZE)
    bar.ax.tick_params(labelsize=LABEL_SIZE)
    return bar


def show_overlay(
    image: ImageLike,
    heatmap: ArrayLike,
    *,
    image_name: str | None = None,
    class_name: str | None = None,
    probability: float | None = None,
    title: str | None = None,
    cmap: str | Colormap = DEFAULT_CMAP,
    alpha: float = 0.5,
    vmin: float = 0.0,
    vmax: float = 1.0,
    colorbar: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """Draw one heatmap over its image, titled with image name, class and probability.

    Args:
        image: as in :func:`overlay`.
        heatmap: as in :func:`overlay`.
        image_name: the image's name, for the title.
        class_name: the explained class, for the title.
        probability: the model's probability of that class, for the title.
        title: overrides the title composed by :func:`format_title` from the three above.
        cmap: as in :func:`overlay`.
        alpha: as in :func:`overlay`.
        vmin: as in :func:`overlay`.
        vmax: as in :func:`overlay`.
        colorbar: add a colour bar, so the reader can see what the colours mean.
        ax: axes to draw on; a new ``PANEL_SIZE`` figure is created when ``None``.

    Returns:
        The axes drawn on (``ax.figure`` is the figure).

    Example:
        >>> ax = show_overlay(np.zeros((8, 8, 3)), np.eye(8), class_name="cat", probability=0.9)
        >>> ax.get_title()
        'cat (p = 0.90)'
        >>> plt.close(ax.figure)
    """
    blended = overlay(image, heatmap, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax)
    if ax is None:
        figsize = _grid_figsize(blended.shape[:2], 1, 1, extra_width=1.0 if colorbar else 0.0)
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    ax.imshow(blended)
    ax.set_title(title or format_title(image_name, class_name, probability), fontsize=TITLE_SIZE)
    ax.axis("off")
    if colorbar:
        add_colorbar(ax, cmap, vmin, vmax)
    return ax


def show_maps(
    image: ImageLike,
    maps: Mapping[str, ArrayLike],
    *,
    image_name: str | None = None,
    class_name: str | None = None,
    probability: float | None = None,
    cmap: str | Colormap = DEFAULT_CMAP,
    alpha: float = 0.5,
    show_image: bool = True,
    ncols: int | None = None,
) -> Figure:
    """Show the image and several explanations of it side by side.

    Each entry of ``maps`` becomes a panel titled with its key. A 2-D map ``(H, W)`` in
    [0, 1] is overlaid with ``cmap`` (the overlays share one colour bar); an RGB array
    ``(H, W, 3)`` in [0, 1] (for example :func:`gradient_to_image` of a guided-backprop
    gradient) is shown as it is.

    Args:
        image: the image explained (see :func:`as_display_image`).
        maps: panel title -> map, in display order.
        image_name: the image's name, for the figure title (:func:`format_title`).
        class_name: the explained class, for the figure title.
        probability: the model's probability of that class, for the figure title.
        cmap: colormap of the 2-D maps.
        alpha: weight of the 2-D maps over the image.
        show_image: start with a panel of the plain image.
        ncols: panels per row (default: all on one row, at most 4).

    Returns:
        The figure.

    Example:
        >>> fig = show_maps(np.zeros((8, 8, 3)), {"Grad-CAM": np.eye(8)}, class_name="cat")
        >>> [ax.get_title() for ax in fig.axes]
        ['image', 'Grad-CAM', '']
        >>> plt.close(fig)
    """
    if not maps:
        raise ValueError("maps is empty; give at least one {title: map}")
    rgb = as_display_image(image)
    panels: list[tuple[str | None, np.ndarray]] = [("image", rgb)] if show_image else []
    overlays = []
    for name, value in maps.items():
        array = _to_numpy(value)
        if array.ndim == 3 and array.shape[-1] == 3:
            panels.append((name, as_display_image(array)))
            if array.shape[:2] != rgb.shape[:2]:
                raise ValueError(f"map {name!r} is {array.shape[:2]}, image is {rgb.shape[:2]}")
        else:
            overlays.append(len(panels))
            panels.append((name, overlay(rgb, array, cmap=cmap, alpha=alpha)))
    title = format_title(image_name, class_name, probability)
    return _panel_grid(panels, ncols, title, colorbar_for=overlays, cmap=cmap)


def _panel_grid(
    panels: Sequence[tuple[str | None, np.ndarray]],
    ncols: int | None,
    suptitle: str | None,
    colorbar_for: Sequence[int] = (),
    cmap: str | Colormap = DEFAULT_CMAP,
) -> Figure:
    """Draw ``(title, image)`` panels on a grid (at most 4 per row by default), axes off.

    Titles are wrapped to their panel's width, so neighbours never overlap. Panels whose
    index is in ``colorbar_for`` are heatmap overlays: one shared colour bar (0 to 1 in
    ``cmap``) is drawn beside them.
    """
    ncols = ncols or min(len(panels), 4)
    if ncols < 1:
        raise ValueError(f"ncols must be positive, got {ncols}")
    nrows = -(-len(panels) // ncols)
    bar = 0.9 if colorbar_for else 0.0
    figsize = _grid_figsize(panels[0][1].shape[:2], nrows, ncols, extra_width=bar)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained")
    chars = max(12, int((figsize[0] - bar) / ncols * 72 / (0.55 * TITLE_SIZE)))
    for ax, (name, shown) in zip(axes.flat, panels, strict=False):
        ax.imshow(shown)
        if name is not None:
            ax.set_title(textwrap.fill(name, chars, break_on_hyphens=False), fontsize=TITLE_SIZE)
    for ax in axes.flat:
        ax.axis("off")
    for ax in axes.flat[len(panels) :]:
        fig.delaxes(ax)
    if colorbar_for:
        mappable = ScalarMappable(Normalize(0.0, 1.0), _get_cmap(cmap))
        shown_axes = [axes.flat[i] for i in colorbar_for]
        colorbar = fig.colorbar(mappable, ax=shown_axes, fraction=0.05, pad=0.02, shrink=0.9)
        colorbar.set_label("importance", fontsize=LABEL_SIZE)
        colorbar.ax.tick_params(labelsize=LABEL_SIZE)
    if suptitle:
        fig.suptitle(suptitle, fontsize=SUPTITLE_SIZE)
    return fig


# ----------------------------------------------------------------------------------------------
# Guided-backprop gradients
# ----------------------------------------------------------------------------------------------


def gradient_to_image(gradient: ArrayLike, percentile: float = 99.5) -> np.ndarray:
    r"""Map one raw input gradient to a displayable ``(H, W, 3)`` image, normalised per image.

    .. math:: \text{out} = \tfrac12 + \tfrac12\,\operatorname{clip}(g / s, -1, 1),
        \qquad s = \operatorname{percentile}_p |g|

    Zero gradient is mid-grey, positive is brighter, negative darker. Dividing by a high
    percentile of ``|g|`` rather than the maximum keeps a few extreme pixels from turning the
    rest grey. Each image gets its own ``s``: gradients of different images (and classes)
    differ in scale by orders of magnitude, which says nothing about where they point.

    Args:
        gradient: ``(3, H, W)`` (as from :func:`course_utils.guided.guided_backprop`) or
            ``(H, W, 3)`` (as from the assignment's ``GradCam.guided_backprop``).
        percentile: which percentile of ``|g|`` maps to full contrast, in (0, 100].

    Returns:
        Float ``(H, W, 3)`` in [0, 1]; all 0.5 for an all-zero gradient.

    Example:
        >>> g = torch.tensor([[[2.0, -2.0, 0.0, 1.0]]]).repeat(3, 1, 1)  # (3, H=1, W=4)
        >>> gradient_to_image(g, percentile=100)[0, :, 0]
        array([1.  , 0.  , 0.5 , 0.75], dtype=float32)
    """
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    array = _to_numpy(gradient).astype(np.float32)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = np.moveaxis(array, 0, -1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            f"a gradient must be (3, H, W) or (H, W, 3) for one image, got {array.shape}; "
            "index the batch first, e.g. grads[0]"
        )
    if not np.isfinite(array).all():
        raise ValueError("the gradient contains NaN or inf")
    scale = float(np.percentile(np.abs(array), percentile))
    if scale == 0.0:
        scale = float(np.abs(array).max())
    if scale == 0.0:
        return np.full(array.shape, 0.5, np.float32)
    return (0.5 + 0.5 * np.clip(array / scale, -1, 1)).astype(np.float32)


def show_gradients(
    gradients: ArrayLike,
    *,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
    percentile: float = 99.5,
    ncols: int | None = None,
) -> Figure:
    """Show a batch of input gradients, each normalised on its own (:func:`gradient_to_image`).

    Args:
        gradients: ``(N, 3, H, W)`` or ``(N, H, W, 3)``; a single ``(3, H, W)`` works too.
        titles: one per image, e.g. ``"dog: bull mastiff (p = 0.64)"``.
        suptitle: figure title.
        percentile: see :func:`gradient_to_image`.
        ncols: panels per row (default: all on one row, at most 4).

    Returns:
        The figure.

    Example:
        >>> fig = show_gradients(torch.randn(2, 3, 8, 8), titles=["a", "b"])
        >>> [ax.get_title() for ax in fig.axes]
        ['a', 'b']
        >>> plt.close(fig)
    """
    array = _to_numpy(gradients)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"gradients must be (N, 3, H, W) or (N, H, W, 3), got {array.shape}")
    if titles is not None and len(titles) != len(array):
        raise ValueError(f"got {len(titles)} titles for {len(array)} gradients")
    names = titles if titles is not None else [None] * len(array)
    panels = [
        (name, gradient_to_image(g, percentile)) for name, g in zip(names, array, strict=True)
    ]
    return _panel_grid(panels, ncols, suptitle)


# ----------------------------------------------------------------------------------------------
# Small arrays, numbers written in
# ----------------------------------------------------------------------------------------------


def show_values(
    ax: Axes,
    values: ArrayLike,
    title: str | None = None,
    *,
    cmap: str | Colormap = "RdBu_r",
    vmin: float | None = None,
    vmax: float | None = None,
    fmt: str = ".0f",
    fontsize: float = 13,
) -> Axes:
    """Draw a small 2-D array as coloured cells with each value written in its cell.

    For the worked examples (a 4x4 ReLU input, a gradient table, a 3x3 class map): the reader
    can check every number by hand. The text is white on dark cells and black on light ones
    (by the cell colour's CIELAB lightness), whatever the colormap. Ticks are removed; set
    them afterwards to label rows and columns.

    Args:
        ax: the axes to draw on.
        values: ``(rows, cols)`` array or tensor.
        title: panel title.
        cmap: colormap; the default diverging ``"RdBu_r"`` shows positive red, negative blue.
        vmin: low end of the colour scale; by default ``-max|values|``.
        vmax: high end of the colour scale; by default ``max|values|`` (symmetric around 0).
        fmt: format spec of the numbers (``".0f"``, ``".2g"``, ...).
        fontsize: of the numbers.

    Returns:
        ``ax``.

    Example:
        >>> fig, ax = plt.subplots()
        >>> ax = show_values(ax, np.array([[-2.0, 0.0], [1.0, 2.0]]), "x")
        >>> [t.get_text() for t in ax.texts], ax.texts[0].get_color()
        (['-2', '0', '1', '2'], 'white')
        >>> plt.close(fig)
    """
    array = _to_numpy(values).astype(np.float64)
    if array.ndim != 2:
        raise ValueError(f"values must be a 2-D array, got shape {array.shape}")
    if vmin is None or vmax is None:
        limit = float(np.abs(array).max()) or 1.0
        vmin = -limit if vmin is None else vmin
        vmax = limit if vmax is None else vmax
    colormap = _get_cmap(cmap)
    ax.imshow(array, cmap=colormap, vmin=vmin, vmax=vmax)
    dark = _lightness(colormap(Normalize(vmin, vmax, clip=True)(array))[..., :3]) < 50
    for (i, j), v in np.ndenumerate(array):
        colour = "white" if dark[i, j] else "black"
        text = f"{v + 0.0:{fmt}}"  # + 0.0 turns -0.0 into 0.0
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=colour)
    if title is not None:
        ax.set_title(title, fontsize=TITLE_SIZE - 1)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


# ----------------------------------------------------------------------------------------------
# Why not jet
# ----------------------------------------------------------------------------------------------


def colormap_lightness(cmap: str | Colormap, n: int = 256) -> np.ndarray:
    r"""CIELAB lightness :math:`L^*` (0 = black, 100 = white) of ``n`` evenly spaced colours.

    sRGB is linearised, relative luminance :math:`Y = 0.2126R + 0.7152G + 0.0722B` is taken,
    and :math:`L^* = 116 f(Y) - 16` with :math:`f(t) = t^{1/3}` (linear near 0). Lightness is
    what the eye reads as "how strong": a colormap for magnitudes should have it increase
    monotonically.

    Example:
        >>> lightness = colormap_lightness("gray", 3)
        >>> lightness.round(0)
        array([  0.,  54., 100.])
        >>> bool(np.all(np.diff(colormap_lightness("inferno")) > 0))
        True
    """
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    rgb = _get_cmap(cmap)(np.linspace(0, 1, n))[:, :3]
    return _lightness(rgb)


def _lightness(rgb: np.ndarray) -> np.ndarray:
    """CIELAB L* of sRGB values in [0, 1] (any leading shape, last axis RGB)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    y = linear @ np.array([0.2126, 0.7152, 0.0722])
    delta = 6 / 29
    f = np.where(y > delta**3, np.cbrt(y), y / (3 * delta**2) + 4 / 29)
    return 116 * f - 16


def jet_comparison(
    heatmap: ArrayLike | None = None,
    *,
    cmaps: Sequence[str | Colormap] = ("jet", DEFAULT_CMAP),
) -> Figure:
    """A lecture figure showing how ``jet`` invents structure that a uniform colormap does not.

    One row per colormap: the heatmap in colour; the same rendering as the eye reads its
    brightness (CIELAB lightness as grey); and the colormap's lightness against the map
    value. For ``jet`` the lightness rises, peaks around 0.4-0.6 and *falls* again, so a smooth
    bump shows bright rings at mid values and a dark core at its maximum; for ``inferno`` the
    lightness rises steadily, so the brightest spot is the strongest one.

    Args:
        heatmap: ``(H, W)`` map in [0, 1]; default a smooth Gaussian bump, where any band or
            edge you see is the colormap's doing.
        cmaps: the colormaps compared, one row each.

    Returns:
        The figure.

    Example:
        >>> fig = jet_comparison()
        >>> fig.axes[0].get_title()
        'jet'
        >>> plt.close(fig)
    """
    if heatmap is None:
        yy, xx = np.mgrid[-1:1:128j, -1:1:128j]
        heatmap = np.exp(-(xx**2 + yy**2) / 0.3)
    heat = _as_heatmap(heatmap, None, 0.0, 1.0)
    if not cmaps:
        raise ValueError("cmaps is empty")
    values = np.linspace(0, 1, 256)
    fig, axes = plt.subplots(len(cmaps), 3, figsize=(FIGURE_WIDTH, 3.1 * len(cmaps)), squeeze=False)
    for row, cmap in zip(axes, cmaps, strict=True):
        colormap = _get_cmap(cmap)
        name = colormap.name
        coloured = colormap(heat)[..., :3]
        row[0].imshow(coloured)
        row[0].set_title(name, fontsize=TITLE_SIZE)
        row[1].imshow(_lightness(coloured), cmap="gray", vmin=0, vmax=100)
        row[1].set_title(f"{name}, as brightness", fontsize=TITLE_SIZE)
        for ax in row[:2]:
            ax.axis("off")
        lightness = colormap_lightness(colormap, len(values))
        row[2].scatter(values, lightness, c=values, cmap=colormap, s=12)
        row[2].set_xlabel("map value", fontsize=LABEL_SIZE)
        row[2].set_ylabel("lightness L*", fontsize=LABEL_SIZE)
        row[2].set_ylim(0, 100)
        row[2].set_title(f"{name}: lightness vs value", fontsize=TITLE_SIZE)
        row[2].tick_params(labelsize=LABEL_SIZE)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Figures as web page elements: alt text and the smallest text size
# ----------------------------------------------------------------------------------------------


def _shown_texts(fig: Figure) -> list[Text]:
    """The non-empty, visible texts of a figure: titles, labels, tick labels, notes, legends."""
    texts: list[Text] = [t for t in fig.texts if t.get_visible()]
    for name in ("_suptitle", "_supxlabel", "_supylabel"):
        text = getattr(fig, name, None)
        if text is not None and text.get_visible():
            texts.append(text)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, *ax.texts]
        if ax.axison:
            texts += [ax.xaxis.label, ax.yaxis.label]
            texts += [t for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_visible()]
        legend = ax.get_legend()
        if legend is not None:
            texts += legend.get_texts()
    unique = {id(t): t for t in texts if t.get_visible() and t.get_text().strip()}
    return list(unique.values())


def smallest_text_px(fig: Figure) -> float:
    """The smallest font size in the figure, in pixels of the image it is saved as.

    A PNG shown at a scale ``s`` (displayed width / drawn width) shows that text at
    ``s * smallest_text_px(fig)`` pixels: the course's web pages and slides use this to check
    that no figure text is smaller than 14 px on the screen.

    Example:
        >>> fig, ax = plt.subplots(dpi=100)
        >>> _ = ax.set_title("t", fontsize=18)
        >>> _ = ax.axis("off")
        >>> smallest_text_px(fig)
        25.0
        >>> plt.close(fig)
    """
    sizes = [float(t.get_fontsize()) for t in _shown_texts(fig)]
    return round(min(sizes) * fig.dpi / 72, 1) if sizes else 0.0


def describe_figure(fig: Figure) -> str:
    """Alt text for a figure, from its own words: title, panel titles, axis labels, legend.

    Screen readers and a page whose images did not load show this text; it says what the
    figure is about without guessing at what it shows.

    Example:
        >>> fig, (a, b) = plt.subplots(1, 2)
        >>> _ = fig.suptitle("dog"); _ = a.set_title("image"); _ = b.set_title("Grad-CAM")
        >>> _ = b.set_xlabel("x")
        >>> describe_figure(fig)
        'Figure: dog. 2 panels: image; Grad-CAM (x).'
        >>> plt.close(fig)
    """
    parts = []
    suptitle = getattr(fig, "_suptitle", None)
    if suptitle is not None and suptitle.get_text().strip():
        parts.append(f"Figure: {suptitle.get_text().strip()}.")
    else:
        parts.append("Figure.")
    panels, bars = [], []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        if ax.get_label() == "<colorbar>":
            label = ax.get_ylabel() or ax.get_xlabel()
            bars.append(f"colour bar{f' ({label})' if label else ''}")
            continue
        title = " ".join(ax.get_title(loc) for loc in ("left", "center", "right"))
        title = " ".join(title.split())
        labels = [ax.get_xlabel(), ax.get_ylabel()] if ax.axison else []
        labels = [label for label in labels if label]
        legend = ax.get_legend()
        if legend is not None:
            labels.append("legend: " + ", ".join(t.get_text() for t in legend.get_texts()))
        kind = title or ("image" if ax.get_images() else "plot")
        panels.append(kind + (f" ({'; '.join(labels)})" if labels else ""))
    if len(panels) == 1:
        parts.append(f"{panels[0][0].upper()}{panels[0][1:]}.")
    elif panels:
        parts.append(f"{len(panels)} panels: {'; '.join(panels)}.")
    if bars:
        parts.append(f"With {', '.join(bars)}.")
    return " ".join(parts)


LECTURE_RC: dict[str, float] = {
    "font.size": 12,
    "axes.titlesize": 14,
    "axes.labelsize": 12,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 11,
    "figure.titlesize": 16,
}
"""Matplotlib text sizes (pt) for the rendered course: ``make course`` draws every figure with
them, so text that is not sized explicitly is at least 11 pt (15 px at 100 dpi) -- readable
on a projector -- instead of matplotlib's 10 pt default."""


def register_figure_metadata(shell: Any = None) -> None:
    """Attach alt text and the smallest text size to every figure an IPython kernel shows.

    The figure's PNG output then carries ``{"alt": describe_figure(fig), "min_font_px":
    smallest_text_px(fig)}`` as metadata; ``make course`` turns it into the ``<img>``'s ``alt``
    and checks the text size on the slides. The kernel that builds the course calls this at
    start-up; it changes nothing else about how figures are drawn or shown.

    Args:
        shell: the IPython shell; default the running one.

    Raises:
        RuntimeError: outside IPython.
    """
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        raise RuntimeError("register_figure_metadata needs a running IPython shell")

    def metadata(fig: Figure, include: Any = None, exclude: Any = None) -> tuple[dict, dict]:
        return {}, {
            "image/png": {"alt": describe_figure(fig), "min_font_px": smallest_text_px(fig)}
        }

    shell.display_formatter.mimebundle_formatter.for_type(Figure, metadata)
