"""The evaluation glue of notebook 09 (course_utils.evaluation), against direct computations."""

from __future__ import annotations

import pytest
import torch

from course_utils import grad_cam, guided_backprop, guided_grad_cam, make_shapes
from course_utils.data import box_mask, photo_boxes, scaled_box
from course_utils.evaluation import (
    METHOD_NAMES,
    OBJECT_CLASSES,
    annotated_photos,
    best_object_class,
    centre_baseline,
    format_table,
    localization_scores,
    saliency_maps,
)
from course_utils.metrics import saliency_magnitude
from course_utils.models import imagenet_classes, load_model


@pytest.fixture(scope="module")
def shapes():
    return load_model("shapes")


def test_saliency_maps_are_the_three_methods_batch_by_batch(shapes):
    batch = make_shapes(5, 11)
    x, y = shapes.preprocess(batch.images), torch.from_numpy(batch.labels)
    maps = saliency_maps(shapes.model, x, y, layer=shapes.target_layer, batch_size=2)
    assert list(maps) == list(METHOD_NAMES)
    layer = shapes.target_layer
    torch.testing.assert_close(maps["Grad-CAM"], grad_cam(shapes.model, x, y, layer=layer))
    torch.testing.assert_close(
        maps["guided backprop"], saliency_magnitude(guided_backprop(shapes.model, x, y))
    )
    torch.testing.assert_close(
        maps["guided Grad-CAM"],
        saliency_magnitude(guided_grad_cam(shapes.model, x, y, layer=layer)),
    )
    with pytest.raises(ValueError, match="batch_size"):
        saliency_maps(shapes.model, x, y, layer=layer, batch_size=0)


@pytest.mark.parametrize("size", [(5, 7), (8, 6), (64, 64)])
def test_centre_baseline_peaks_in_the_middle_height_first(size):
    height, width = size
    maps = centre_baseline(3, size)
    assert maps.shape == (3, height, width)
    peak = divmod(int(maps[0].argmax()), width)
    assert peak == ((height - 1) // 2, (width - 1) // 2)
    assert maps.max() == pytest.approx(1.0, abs=0.2) and maps.min() > 0
    torch.testing.assert_close(maps[0], maps[0].flip(0).flip(1))  # symmetric about the centre


def test_localization_scores_by_hand():
    maps = torch.zeros(2, 10, 10)
    maps[0, 2:4, 2:4] = 1.0  # on the object, half its box
    maps[1, 8, 8] = 1.0  # 4.24 px off the object
    masks = torch.zeros(2, 10, 10, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True
    scores = localization_scores(maps, masks, tolerance=3, boxes=[(2, 2, 6, 6)] * 2)
    assert scores == pytest.approx(
        {
            "pointing game": 0.5,
            "pointing (±3 px)": 0.5,
            "energy in mask": 0.5,
            "mean IoU": (4 / 16 + 0) / 2,
            "IoU ≥ 0.5": 0.0,
        }
    )
    assert list(localization_scores(maps, masks)) == ["pointing game", "energy in mask"]


def test_format_table_aligns_columns_and_checks_them():
    text = format_table({"one": {"a": 1.0, "bb": 0.5}, "three": {"a": 0.25, "bb": 2.0}}, digits=2)
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1  # every line as wide as the header
    assert lines[1].split() == ["one", "1.00", "0.50"]
    with pytest.raises(ValueError, match="columns"):
        format_table({"one": {"a": 1.0}, "two": {"b": 1.0}})
    with pytest.raises(ValueError, match="no rows"):
        format_table({})


def test_best_object_class_picks_among_the_objects_classes():
    names = imagenet_classes()
    scores = torch.zeros(1000)
    scores[names.index("tabby")] = 9.0  # the best class overall, but not a dog
    scores[200] = 2.0  # a dog breed
    scores[names.index("pickup")] = 3.0
    assert best_object_class(names, scores, "dog") == 200
    assert names[best_object_class(names, scores, "truck")] == "pickup"
    assert set(OBJECT_CLASSES) >= {o for n in ("dog", "coffee", "rocket") for o in photo_boxes(n)}
    with pytest.raises(ValueError, match="known"):
        best_object_class(names, scores, "teapot")


def test_annotated_photos_boxes_masks_and_labels_agree():
    bundle = load_model("efficientnet_lite0")
    photos = annotated_photos(bundle)
    assert photos.names == ["coffee", "dog", "rocket"]
    assert photos.objects == ["cup", "dog", "rocket"]
    assert photos.images.shape == (3, 3, 224, 224)
    for i, (name, obj) in enumerate(zip(photos.names, photos.objects, strict=True)):
        assert photos.boxes[i] == scaled_box(name, obj, size=(224, 224))
        assert torch.equal(photos.masks[i], torch.from_numpy(box_mask(name, obj, size=(224, 224))))
    named = [bundle.class_names[int(c)] for c in photos.labels]
    assert named[0] in OBJECT_CLASSES["cup"] and int(photos.labels[1]) in OBJECT_CLASSES["dog"]
    assert named[2] in OBJECT_CLASSES["rocket"]
