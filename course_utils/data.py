"""Images for the course: a generated shapes lab with exact masks, and bundled photographs.

The shapes lab exists because Grad-CAM can only be *checked* where the truth is known: every
generated image holds exactly one object of a known class, and we return its exact pixel mask,
so a heatmap's maximum can be scored against it (the "pointing game"). The background is
deliberately cluttered with strokes that belong to no class (straight lines and open arcs), so a
network that scores well must look at the object rather than at the whole image.

The photographs are small JPEGs shipped inside the package (see ``assets/photos/ATTRIBUTION.md``);
loading them needs only Pillow, never scikit-image or a download.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import NamedTuple

import numpy as np
from PIL import Image

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
"""Every class the generator can draw, in the default label order."""

MIN_PHOTO_SIDE = 32
"""Smallest accepted photo side in pixels: below this a CNN sees nothing but padding."""

_CHUNK = 256  # images rendered at once: bounds memory to a few tens of MB for any n


class ShapesBatch(NamedTuple):
    """A batch of generated shapes images; unpacks as ``images, labels, masks``.

    Attributes:
        images: ``(n, size, size, 3)`` uint8 RGB images.
        labels: ``(n,)`` int64 class indices into ``class_names``.
        masks: ``(n, size, size)`` bool, True exactly on the object's pixels.
        class_names: the class name of each label index.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    class_names: tuple[str, ...]


def make_shapes(
    n: int,
    seed: int | Sequence[int],
    *,
    size: int = 64,
    classes: Sequence[str] = SHAPE_CLASSES,
    noise: float = 0.03,
) -> ShapesBatch:
    """Generate ``n`` images, each with one shape of a known class on a cluttered background.

    Every random choice comes from ``numpy.random.default_rng(seed)``, so the same arguments give
    the same images on every machine. Rendering is vectorised over blocks of images (10,000
    images of 64x64 take a few seconds).

    Args:
        n: number of images (>= 1).
        seed: random seed (an int, or a sequence of ints such as ``[run, step]``); the
            training script uses only sequences, so integer seeds are always unseen images.
        size: side of the square images in pixels (>= 32).
        classes: which shapes to draw; label ``i`` means ``classes[i]``.
        noise: standard deviation of the per-pixel Gaussian noise, on a 0..1 intensity scale.
            ``noise=0`` makes every object pixel exactly the object's colour.

    Returns:
        A :class:`ShapesBatch` of uint8 images, int64 labels and bool masks.

    Raises:
        ValueError: for a non-positive ``n``, a too small ``size``, a negative ``noise``, or
            unknown, repeated or no class names.
    """
    classes = _check_classes(classes)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise ValueError(f"size must be an int >= 32, got {size!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    shape_ids = np.array([SHAPE_CLASSES.index(c) for c in classes])
    labels = rng.integers(0, len(classes), n)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), bool)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        images[start:stop], masks[start:stop] = _render(
            rng, shape_ids[labels[start:stop]], size, noise
        )
    return ShapesBatch(images, labels.astype(np.int64), masks, classes)


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(classes, str):
        raise TypeError("classes must be a sequence of class names, not a single string")
    classes = tuple(classes)
    unknown = [c for c in classes if c not in SHAPE_CLASSES]
    if unknown:
        raise ValueError(f"unknown shape classes {unknown}; valid ones are {list(SHAPE_CLASSES)}")
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be non-empty and without repeats, got {list(classes)}")
    return classes


def _render(
    rng: np.random.Generator, shape_ids: np.ndarray, size: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one block of images: background, clutter strokes, then the object on top."""
    b = len(shape_ids)
    grid = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    ys, xs = grid[None, :, None], grid[None, None, :]

    # Smooth background: a random base colour plus a random linear gradient.
    base = rng.uniform(0.25, 0.75, (b, 1, 1, 3)).astype(np.float32)
    slope = rng.uniform(-0.25, 0.25, (b, 2, 1, 1, 3)).astype(np.float32) / size
    centred = grid - size / 2
    img = (
        base
        + slope[:, 0] * centred[None, :, None, None]
        + slope[:, 1] * centred[None, None, :, None]
    )

    # Clutter: strokes that are no class, in random colours, under the object. Each pixel
    # records which layer is on top (0 = background); colours are gathered once at the end.
    top = np.zeros((b, size, size), np.int64)
    palette = [np.zeros((b, 3), np.float32)]
    for stroke in (_lines(rng, b, size, xs, ys), _arcs(rng, b, size, xs, ys)):
        for paint, colour in stroke:
            palette.append(colour)
            top[paint] = len(palette) - 1

    # The object: a random scale, position and rotation, in a colour that contrasts with the
    # background in every channel so it is always visible.
    radius = rng.uniform(0.11, 0.2, b).astype(np.float32) * size
    margin = 1.25 * radius
    cx = rng.uniform(margin, size - margin).astype(np.float32)
    cy = rng.uniform(margin, size - margin).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, b).astype(np.float32)
    sign = rng.choice(np.array([-1.0, 1.0], np.float32), (b, 3))
    colour = np.clip(base[:, 0, 0] + sign * rng.uniform(0.25, 0.45, (b, 3)), 0, 1)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
    u = (dx * cos + dy * sin) / radius[:, None, None]
    v = (dy * cos - dx * sin) / radius[:, None, None]
    mask = np.zeros((b, size, size), bool)
    for shape_id, inside in enumerate(_SHAPE_TESTS):
        rows = np.flatnonzero(shape_ids == shape_id)
        if rows.size:
            mask[rows] = inside(u[rows], v[rows])
    palette.append(colour.astype(np.float32))
    top[mask] = len(palette) - 1

    colours = np.stack(palette, 1)  # (b, layers, 3)
    painted = np.take_along_axis(colours, top.reshape(b, -1, 1), 1).reshape(img.shape)
    img = np.where((top > 0)[..., None], painted, img)

    if noise:
        img += noise * rng.standard_normal(img.shape, np.float32)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8), mask


def _lines(rng, b, size, xs, ys):
    """Yield (pixels, colour) for 3 straight segments per image, 1 to 2.5 px thick."""
    for _ in range(3):
        p0 = rng.uniform(0, size, (b, 2, 1, 1)).astype(np.float32)
        p1 = rng.uniform(0, size, (b, 2, 1, 1)).astype(np.float32)
        half_width = rng.uniform(0.5, 1.25, (b, 1, 1)).astype(np.float32)
        d = p1 - p0
        t = ((xs - p0[:, 0]) * d[:, 0] + (ys - p0[:, 1]) * d[:, 1]) / np.maximum(
            (d**2).sum(1), 1e-6
        )
        t = np.clip(t, 0, 1)
        dist2 = (xs - p0[:, 0] - t * d[:, 0]) ** 2 + (ys - p0[:, 1] - t * d[:, 1]) ** 2
        yield dist2 <= half_width**2, _stroke_colour(rng, b)


def _arcs(rng, b, size, xs, ys):
    """Yield (pixels, colour) for 2 open arcs per image: curved like a circle, never filled."""
    for _ in range(2):
        centre = rng.uniform(0, size, (b, 2, 1, 1)).astype(np.float32)
        radius = rng.uniform(0.06, 0.25, (b, 1, 1)).astype(np.float32) * size
        half_width = rng.uniform(0.5, 1.25, (b, 1, 1)).astype(np.float32)
        start = rng.uniform(0, 2 * np.pi, (b, 1, 1)).astype(np.float32)
        extent = rng.uniform(0.5 * np.pi, 1.4 * np.pi, (b, 1, 1)).astype(np.float32)
        dx, dy = xs - centre[:, 0], ys - centre[:, 1]
        on_ring = np.abs(np.hypot(dx, dy) - radius) <= half_width
        in_sector = np.mod(np.arctan2(dy, dx) - start, 2 * np.pi) <= extent
        yield on_ring & in_sector, _stroke_colour(rng, b)


def _stroke_colour(rng: np.random.Generator, b: int) -> np.ndarray:
    return rng.uniform(0, 1, (b, 3)).astype(np.float32)


# Inside tests in the object's own frame: (u, v) are pixel offsets from the centre, rotated and
# divided by the object's radius. Sizes are chosen so every class covers a similar area.
def _circle(u, v):
    return u**2 + v**2 <= 0.9**2


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8


def _triangle(u, v):
    # Equilateral, circumradius 1.2: inside the three edges at distance 0.6 from the centre.
    inside = np.ones(u.shape, bool)
    for normal in np.deg2rad([90.0, 210.0, 330.0]):
        inside &= u * np.cos(normal) + v * np.sin(normal) <= 0.6
    return inside


def _star(u, v, outer=1.2, inner=0.5):
    # Five points. Fold the polar angle into the half-sector between a tip (angle 0) and the
    # next inner vertex (36 degrees), then test the side of that single straight edge.
    sector = 2 * np.pi / 5
    phi = np.mod(np.arctan2(v, u), sector)
    phi = np.minimum(phi, sector - phi)
    rho = np.hypot(u, v)
    px, py = rho * np.cos(phi), rho * np.sin(phi)
    ix, iy = inner * np.cos(sector / 2), inner * np.sin(sector / 2)
    # Cross product sign of (inner - tip) x (p - tip); the centre gives a positive value.
    return (ix - outer) * py - iy * (px - outer) >= 0


def _cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return ((au <= 1.0) & (av <= 0.3)) | ((av <= 1.0) & (au <= 0.3))


_SHAPE_TESTS = (_circle, _square, _triangle, _star, _cross)  # same order as SHAPE_CLASSES


# ----------------------------------------------------------------------------------------------
# Photographs
# ----------------------------------------------------------------------------------------------


def _photo_dir():
    return resources.files("course_utils") / "assets" / "photos"


def list_photos() -> list[str]:
    """Names of the bundled photographs (file names without ``.jpg``), sorted."""
    return sorted(p.name[: -len(".jpg")] for p in _photo_dir().iterdir() if p.name.endswith(".jpg"))


def load_photo(name: str) -> Image.Image:
    """Load a bundled photograph by name (see :func:`list_photos`) as an RGB PIL image.

    Args:
        name: photo name such as ``"coffee"``.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    names = list_photos()
    if name not in names:
        raise ValueError(f"unknown photo {name!r}; bundled photos are {names}")
    with resources.as_file(_photo_dir() / f"{name}.jpg") as path:
        return to_rgb(Image.open(path))


def to_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """Convert any photo to a loaded RGB PIL image, rejecting ones too small to classify.

    Greyscale is replicated to three channels and transparency is composited on white (the
    usual display convention), so every model sees three colour channels.

    Args:
        image: a PIL image in any mode, or a uint8 array of shape (H, W), (H, W, 3) or (H, W, 4).

    Raises:
        TypeError: for anything that is not a PIL image or a uint8 array.
        ValueError: for an array of another shape, or an image with a side < ``MIN_PHOTO_SIDE``.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"image arrays must be uint8, got {image.dtype}")
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise ValueError(
                f"image arrays must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}"
            )
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a uint8 array, got {type(image).__name__}")
    if min(image.size) < MIN_PHOTO_SIDE:
        raise ValueError(
            f"image of {image.size[0]}x{image.size[1]} pixels is too small; "
            f"both sides must be >= {MIN_PHOTO_SIDE}"
        )
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


Box = tuple[int, int, int, int]
"""``(left, top, right, bottom)`` in pixels, right/bottom exclusive: PIL's ``crop`` order."""


def _boxes() -> dict[str, dict[str, list[int]]]:
    # Read on every call: the file is tiny, and no cache means no state to go stale.
    return json.loads((_photo_dir() / "boxes.json").read_text())


def photo_boxes(name: str) -> dict[str, Box]:
    """All boxes the project annotated on one photo, keyed by object, main object first.

    Boxes are ``(left, top, right, bottom)`` in the photo's own pixels, right/bottom exclusive
    (PIL's ``crop`` convention). ``dog`` has three (dog, bicycle, truck): the demo that a
    class-discriminative map moves when the target class changes.

    Raises:
        ValueError: for a photo without boxes (the message lists the annotated ones).
    """
    boxes = _boxes()
    if name not in boxes:
        raise ValueError(f"photo {name!r} has no boxes; annotated photos: {sorted(boxes)}")
    return {label: (box[0], box[1], box[2], box[3]) for label, box in boxes[name].items()}


def photo_box(name: str, label: str | None = None) -> Box:
    """One box of :func:`photo_boxes`: the object ``label``, or the main object when ``None``."""
    boxes = photo_boxes(name)
    if label is None:
        return next(iter(boxes.values()))
    if label not in boxes:
        raise ValueError(f"photo {name!r} has no box {label!r}; it has {list(boxes)}")
    return boxes[label]


def scaled_box(name: str, label: str | None = None, *, size: tuple[int, int]) -> Box:
    """The box of :func:`photo_box` scaled to an image of ``size = (H, W)`` pixels.

    The photo models squash the whole photo to their input size, so a box maps by plain
    scaling of each axis.

    Args:
        name: photo name, as in :func:`photo_box`.
        label: object name, as in :func:`photo_box` (``None``: the main object).
        size: ``(H, W)`` of the image the box is wanted in — height first, as in
            ``images.shape[-2:]``.

    Example:
        >>> scaled_box("dog", "truck", size=(224, 224))
        (136, 29, 197, 66)
    """
    height, width = size
    photo_w, photo_h = load_photo(name).size
    left, top, right, bottom = photo_box(name, label)
    sx, sy = width / photo_w, height / photo_h
    return round(left * sx), round(top * sy), round(right * sx), round(bottom * sy)


def box_mask(
    name: str, label: str | None = None, *, size: tuple[int, int] | None = None
) -> np.ndarray:
    """The box of :func:`photo_box` as a bool ``(H, W)`` mask, for localisation scores.

    Args:
        name: photo name, as in :func:`photo_box`.
        label: object name, as in :func:`photo_box` (``None``: the main object).
        size: ``(H, W)`` to scale the box to (e.g. a model's 224x224 input, since the photo
            models resize the whole photo); default the photo's own size.

    Example:
        >>> box_mask("dog", "truck", size=(100, 300)).shape
        (100, 300)
    """
    if size is None:
        photo_w, photo_h = load_photo(name).size
        size = (photo_h, photo_w)
    left, top, right, bottom = scaled_box(name, label, size=size)
    mask = np.zeros(size, bool)
    mask[top:bottom, left:right] = True
    return mask
