"""The shapes lab generator and the bundled photographs (course_utils.data)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from course_utils.data import (
    MIN_PHOTO_SIDE,
    SHAPE_CLASSES,
    box_mask,
    list_photos,
    load_photo,
    make_shapes,
    photo_box,
    photo_boxes,
    scaled_box,
    to_rgb,
)


@pytest.fixture(scope="module")
def clean():
    """Noise-free images: every object pixel has exactly the object's colour."""
    return make_shapes(300, 7, noise=0.0)


def test_shapes_types_and_balance():
    images, labels, masks, names = make_shapes(500, 1)
    assert images.shape == (500, 64, 64, 3) and images.dtype == np.uint8
    assert labels.shape == (500,) and labels.dtype == np.int64
    assert masks.shape == (500, 64, 64) and masks.dtype == bool
    assert names == SHAPE_CLASSES
    counts = np.bincount(labels, minlength=len(SHAPE_CLASSES))
    assert counts.min() > 500 / len(SHAPE_CLASSES) / 2  # every class drawn, none dominating


def test_shapes_deterministic_per_seed():
    a, b, c = make_shapes(50, 3), make_shapes(50, 3), make_shapes(50, 4)
    for x, y in zip(a[:3], b[:3], strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.images, c.images)
    np.testing.assert_array_equal(make_shapes(5, [0, 1]).images, make_shapes(5, [0, 1]).images)
    assert not np.array_equal(make_shapes(5, [0, 1]).images, make_shapes(5, [0, 2]).images)


def test_mask_is_exactly_the_object_pixels(clean):
    for image, mask in zip(clean.images, clean.masks, strict=True):
        colours = np.unique(image[mask], axis=0)
        assert len(colours) == 1, "the object is painted in one colour"
        same_colour = (image == colours[0]).all(-1)
        np.testing.assert_array_equal(same_colour, mask)


def test_masks_are_whole_objects_inside_the_image(clean):
    areas = clean.masks.sum((1, 2))
    assert areas.min() > 60 and areas.max() < 0.15 * 64 * 64
    border = clean.masks[:, [0, -1], :].any((1, 2)) | clean.masks[:, :, [0, -1]].any((1, 2))
    assert not border.any(), "objects are never cut by the image border"


def test_mask_geometry_matches_the_class(clean):
    fill = []  # mask area / bounding-box area, per image
    for mask in clean.masks:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        fill.append(mask.sum() / ((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)))
    fill = np.array(fill)
    circle = fill[clean.labels == SHAPE_CLASSES.index("circle")]
    star = fill[clean.labels == SHAPE_CLASSES.index("star")]
    assert np.all(np.abs(circle - np.pi / 4) < 0.08)  # a disc fills pi/4 of its box
    assert star.max() < circle.min()  # a star is spiky: it fills less of its box


def test_class_subset_relabels():
    batch = make_shapes(100, 0, classes=("star", "circle"), size=48)
    assert batch.class_names == ("star", "circle")
    assert set(np.unique(batch.labels)) == {0, 1}
    assert batch.images.shape == (100, 48, 48, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": 0}, ValueError, "n must be"),
        ({"size": 16}, ValueError, "size must be"),
        ({"noise": -1.0}, ValueError, "noise"),
        ({"classes": ("circle", "hexagon")}, ValueError, "hexagon.*valid ones"),
        ({"classes": ()}, ValueError, "non-empty"),
        ({"classes": "circle"}, TypeError, "single string"),
    ],
)
def test_shapes_bad_arguments(kwargs, error, match):
    args = {"n": 4, "seed": 0, **kwargs}
    with pytest.raises(error, match=match):
        make_shapes(**args)


def test_bundled_photos_load_as_rgb():
    names = list_photos()
    assert len(names) >= 6 and {"coffee", "chelsea", "dog"} <= set(names)
    for name in names:
        photo = load_photo(name)
        assert photo.mode == "RGB" and max(photo.size) == 320


def test_unknown_photo_lists_the_valid_ones():
    with pytest.raises(ValueError, match="coffee"):
        load_photo("no-such-photo")


def test_greyscale_and_rgba_are_converted():
    grey = to_rgb(Image.new("L", (40, 40), 100))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (100, 100, 100)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :20] = (255, 0, 0, 255)  # opaque red, then fully transparent
    out = np.asarray(to_rgb(rgba))
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[0, 30]) == (255, 255, 255)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (Image.new("RGB", (MIN_PHOTO_SIDE - 1, 100)), ValueError, "too small"),
        (np.zeros((40, 40, 3), np.float32), TypeError, "uint8"),
        (np.zeros((40, 40, 2), np.uint8), ValueError, "must be"),
        ("coffee.jpg", TypeError, "PIL image"),
    ],
)
def test_bad_images_are_rejected(image, error, match):
    with pytest.raises(error, match=match):
        to_rgb(image)


def test_boxes_lie_inside_their_photos():
    assert list(photo_boxes("dog")) == ["dog", "bicycle", "truck"]
    for name in ("dog", "coffee", "rocket"):
        width, height = load_photo(name).size
        for left, top, right, bottom in photo_boxes(name).values():
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
    assert photo_box("dog") == photo_boxes("dog")["dog"]


def test_box_mask_scales_with_the_model_input():
    mask = box_mask("coffee")
    left, top, right, bottom = photo_box("coffee")
    assert mask.shape == load_photo("coffee").size[::-1]
    assert mask.sum() == (right - left) * (bottom - top)
    scaled = box_mask("dog", "truck", size=(224, 224))
    assert scaled.shape == (224, 224) and scaled[:, :112].sum() == 0  # the truck is on the right


def test_box_sizes_are_height_first_like_the_rest_of_the_package():
    photo_w, photo_h = load_photo("dog").size
    left, top, right, bottom = photo_box("dog", "truck")
    # Twice the photo's height, the same width: only the rows scale.
    size = (2 * photo_h, photo_w)
    assert scaled_box("dog", "truck", size=size) == (left, 2 * top, right, 2 * bottom)
    mask = box_mask("dog", "truck", size=size)
    assert mask.shape == size and mask.sum() == (right - left) * 2 * (bottom - top)


def test_bad_box_requests():
    with pytest.raises(ValueError, match="annotated photos"):
        photo_boxes("chelsea")
    with pytest.raises(ValueError, match="bicycle"):
        photo_box("dog", "cat")


def test_photos_load_without_heavy_packages():
    code = (
        "import sys; from course_utils.data import list_photos, load_photo; "
        "[load_photo(n) for n in list_photos()]; "
        "print(sorted(m for m in ('skimage', 'scipy', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_bundled_photo_has_its_source_and_licence_written_down():
    from importlib import resources

    folder = resources.files("course_utils") / "assets" / "photos"
    attribution = (folder / "ATTRIBUTION.md").read_text()
    licence = (folder / "LICENSE").read_text()
    for name in list_photos():
        assert f"`{name}.jpg`" in attribution, name
        assert f"{name}.jpg" in licence, name
