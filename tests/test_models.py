"""The course's models, loaded offline (course_utils.models)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from course_utils import grad_cam
from course_utils.data import SHAPE_CLASSES, box_mask, list_photos, load_photo, make_shapes
from course_utils.metrics import pointing_game
from course_utils.models import (
    MODEL_NAMES,
    SHAPES_FORMAT,
    SPECS,
    ShapesNet,
    WeightsError,
    load_model,
)
from course_utils.train_shapes import accuracy

DOG_CLASSES = range(151, 269)  # ImageNet's dog breeds are outputs 151..268
SQUEEZENET_FILE = "squeezenet1_1-b8a52dc0.pth"


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def photo_probs(lite0):
    """Softmax of EfficientNet-Lite0 on every bundled photo, keyed by photo name."""
    names = list_photos()
    batch = torch.stack([lite0.preprocess(load_photo(n)) for n in names])
    with torch.no_grad():
        return dict(zip(names, lite0.model(batch).softmax(1), strict=True))


@pytest.fixture(scope="module")
def shapes():
    return load_model("shapes")


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty torch cache, downloads not allowed, and any download attempt is a failure."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("COURSE_ALLOW_DOWNLOAD", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub" / "checkpoints" / SQUEEZENET_FILE


def top(probs, k=1):
    return probs.topk(k).indices.tolist()


def test_lite0_top1_on_the_bundled_photos(lite0, photo_probs):
    names = lite0.class_names
    assert names[top(photo_probs["coffee"])[0]] == "espresso"
    assert photo_probs["coffee"].max() > 0.6
    assert names[top(photo_probs["chelsea"])[0]] in {"tabby", "tiger cat", "Egyptian cat"}
    assert top(photo_probs["dog"])[0] in DOG_CLASSES
    assert names[top(photo_probs["grace_hopper"])[0]] == "military uniform"
    # ImageNet has no rocket class; the launch pad wins, space-related classes are close behind.
    assert {"missile", "projectile", "space shuttle"} & {
        names[i] for i in top(photo_probs["rocket"], 5)
    }


@pytest.mark.parametrize(
    ("photo", "box", "class_name"),
    [
        ("dog", "dog", "German shepherd"),
        ("dog", "bicycle", "mountain bike"),  # same photo, other class: the map must move
        ("coffee", "cup", "espresso"),
        ("rocket", "rocket", "missile"),
    ],
)
def test_lite0_grad_cam_peaks_inside_the_annotated_box(lite0, photo, box, class_name):
    x = lite0.preprocess(load_photo(photo))[None]
    label = lite0.class_names.index(class_name)
    cam = grad_cam(lite0.model, x, [label], layer=lite0.target_layer)[0]
    row, col = divmod(cam.argmax().item(), cam.shape[1])
    assert box_mask(photo, box, size=(224, 224))[row, col]


def test_lite0_expects_inputs_scaled_to_minus_one_one(lite0):
    white = lite0.preprocess(Image.new("RGB", (50, 80), (255, 255, 255)))
    black = lite0.preprocess(Image.new("RGB", (50, 80), (0, 0, 0)))
    assert white.shape == (3, 224, 224)
    torch.testing.assert_close(white, torch.ones_like(white))
    torch.testing.assert_close(black, -torch.ones_like(black))


def test_lite0_every_relu6_is_its_own_module_used_once(lite0):
    """Guided backprop swaps activation *modules*: none may be shared or functional."""
    relus = [m for m in lite0.model.modules() if isinstance(m, nn.ReLU6)]
    assert len(relus) == 1 + 1 + 15 * 2 + 1  # stem, first block, 15 expanding blocks, head
    calls = {id(m): 0 for m in relus}
    handles = [
        m.register_forward_hook(lambda m, i, o: calls.__setitem__(id(m), calls[id(m)] + 1))
        for m in relus
    ]
    try:
        with torch.no_grad():
            lite0.model(torch.zeros(1, 3, 64, 64))
    finally:
        for h in handles:
            h.remove()
    assert set(calls.values()) == {1}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_bundle_contents(name):
    bundle = load_model(name, weights=None)
    assert bundle.name == name and not bundle.model.training
    assert bundle.target_layer in dict(bundle.model.named_modules())
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundle.name = "other"
    image = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    x = bundle.preprocess(image)
    with torch.no_grad():
        logits = bundle.model(x[None])
    assert logits.shape == (1, len(bundle.class_names))
    shown = bundle.deprocess(x)
    assert shown.shape == (*x.shape[1:], 3) and shown.min() >= 0 and shown.max() <= 1


def test_random_weights_are_reproducible_and_leave_the_global_rng_alone():
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    a = load_model("shapes", weights=None).model.state_dict()
    assert torch.equal(torch.rand(3), expected)
    b = load_model("shapes", weights=None).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_photo_preprocess_round_trip(lite0):
    photo = load_photo("coffee")
    shown = lite0.deprocess(lite0.preprocess(photo))
    expected = np.asarray(photo.resize((224, 224), Image.Resampling.BICUBIC)) / 255
    np.testing.assert_allclose(shown, expected, atol=1e-5)
    assert lite0.deprocess(torch.zeros(2, 3, 8, 8)).shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match="deprocess expects"):
        lite0.deprocess(torch.zeros(8, 8))


def test_greyscale_rgba_and_tiny_photos(lite0):
    assert lite0.preprocess(Image.new("L", (60, 60))).shape == (3, 224, 224)
    assert lite0.preprocess(Image.new("RGBA", (60, 60))).shape == (3, 224, 224)
    with pytest.raises(ValueError, match="too small"):
        lite0.preprocess(Image.new("RGB", (8, 8)))


def test_shapes_accuracy_and_pointing_on_fresh_images(shapes):
    batch = make_shapes(200, 31_337)  # an integer seed: never seen in training
    assert accuracy(shapes.model, batch) >= 0.9
    x = shapes.preprocess(batch.images)
    cams = grad_cam(shapes.model, x, batch.labels, layer=shapes.target_layer)
    assert pointing_game(cams, batch.masks).double().mean() >= 0.8


def test_shapes_preprocess_batch_round_trip(shapes):
    images = make_shapes(4, 0).images
    x = shapes.preprocess(images)
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32
    np.testing.assert_allclose(shapes.deprocess(x), images / 255, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        shapes.preprocess(images.astype(np.float32))


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"efficientnet_lite0.*squeezenet1_1.*shapes"):
        load_model("resnet50")
    with pytest.raises(TypeError, match="weights"):
        load_model("shapes", weights=3)


def test_squeezenet_without_cached_weights_fails_fast_and_explains(offline_cache):
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        load_model("squeezenet1_1")
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "COURSE_ALLOW_DOWNLOAD=1" in message
    assert str(offline_cache) in message and "https://download.pytorch.org" in message
    assert "weights=None" in message


def test_squeezenet_uses_the_cache_and_downloads_only_when_allowed(offline_cache, monkeypatch):
    reference = load_model("squeezenet1_1", weights=None).model

    def fake_download(url, dst, progress=True):
        assert url.endswith(SQUEEZENET_FILE)
        torch.save(reference.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(WeightsError):
        load_model("squeezenet1_1")  # still not allowed: nothing is fetched
    assert not offline_cache.exists()
    load_model("squeezenet1_1", allow_download=True)
    assert offline_cache.is_file()

    monkeypatch.setattr(torch.hub, "download_url_to_file", None)  # from now on: cache only
    model = load_model("squeezenet1_1").model
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True)
    )
    monkeypatch.setenv("COURSE_ALLOW_DOWNLOAD", "1")
    assert load_model("squeezenet1_1").name == "squeezenet1_1"


def test_a_failed_download_is_a_weights_error(offline_cache, monkeypatch):
    from urllib.error import URLError

    def offline(url, dst, progress=True):
        with open(dst, "wb") as partial:
            partial.write(b"\x00" * 10)  # a download cut short
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match=r"could not download.*URLError.*name resolution"):
        load_model("squeezenet1_1", allow_download=True)
    assert not offline_cache.exists(), "a partial download must not stay in the cache"


def test_squeezenet_random_weights_run_offline(offline_cache):
    bundle = load_model("squeezenet1_1", weights=None)
    assert bundle.target_layer == "features.12" and len(bundle.class_names) == 1000
    assert bundle.class_names[967] == "espresso"


def test_corrupt_weights_file(tmp_path, offline_cache):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    for name in MODEL_NAMES:
        with pytest.raises(WeightsError, match="corrupt"):
            load_model(name, weights=bad)
    offline_cache.parent.mkdir(parents=True)
    offline_cache.write_bytes(b"\x00" * 100)  # a truncated download in the cache
    with pytest.raises(WeightsError, match="corrupt"):
        load_model("squeezenet1_1")


def test_wrong_weights_file(tmp_path):
    squeeze = tmp_path / "squeeze.pt"
    torch.save(load_model("squeezenet1_1", weights=None).model.state_dict(), squeeze)
    with pytest.raises(WeightsError, match="not a shapes checkpoint"):
        load_model("shapes", weights=squeeze)
    with pytest.raises(WeightsError, match="does not hold 'efficientnet_lite0' weights"):
        load_model("efficientnet_lite0", weights=squeeze)
    shapes = tmp_path / "shapes.pt"
    squeeze_state = load_model("squeezenet1_1", weights=None).model.state_dict()
    torch.save(
        {"format": SHAPES_FORMAT, "class_names": list(SHAPE_CLASSES), "state_dict": squeeze_state},
        shapes,
    )
    with pytest.raises(WeightsError, match="missing"):
        load_model("shapes", weights=shapes)
    torch.save({"format": SHAPES_FORMAT, "class_names": ["circle"], "state_dict": {}}, shapes)
    with pytest.raises(WeightsError, match="trained on classes"):
        load_model("shapes", weights=shapes)
    with pytest.raises(WeightsError, match="not found"):
        load_model("shapes", weights=tmp_path / "absent.pt")


def test_predict_lists_the_most_likely_classes_best_first(shapes):
    batch = make_shapes(3, 77)
    for image, label in zip(batch.images, batch.labels, strict=True):
        top = shapes.predict(image, top_k=3)
        assert [len(t) for t in top] == [3, 3, 3]
        probabilities = [p for _, _, p in top]
        assert probabilities == sorted(probabilities, reverse=True) and probabilities[0] > 0.5
        assert top[0][:2] == (int(label), SHAPE_CLASSES[label])
    x = shapes.preprocess(batch.images[0])
    assert shapes.predict(x, top_k=2) == shapes.predict(batch.images[0], top_k=2)
    everything = shapes.predict(x, top_k=50)  # at most the number of classes
    assert len(everything) == len(SHAPE_CLASSES)
    assert sum(p for _, _, p in everything) == pytest.approx(1.0, abs=1e-5)
    assert not shapes.model.training


@pytest.mark.parametrize(
    ("image", "top_k", "error", "match"),
    [
        (np.zeros((64, 64, 3), np.uint8), 0, ValueError, "top_k"),
        (np.zeros((64, 64, 3), np.uint8), True, ValueError, "top_k"),
        (torch.zeros(2, 3, 64, 64), 1, ValueError, r"\(C, H, W\)"),
        ("coffee.jpg", 1, TypeError, "PIL image"),
    ],
)
def test_predict_rejects_bad_input(shapes, image, top_k, error, match):
    with pytest.raises(error, match=match):
        shapes.predict(image, top_k=top_k)


def test_the_spec_table_alone_drives_loading(monkeypatch):
    """A new model is one row of SPECS: load_model has no branch on the name."""
    row = SPECS["shapes"]._replace(
        build=lambda: ShapesNet(num_classes=3),
        target_layer="features.8",
        class_names=lambda: ["a", "b", "c"],
    )
    monkeypatch.setitem(SPECS, "three_shapes", row)
    bundle = load_model("three_shapes", weights=None)
    assert bundle.name == "three_shapes" and bundle.target_layer == "features.8"
    assert bundle.class_names == ["a", "b", "c"]
    assert bundle.model.classifier[1].out_channels == 3
    assert MODEL_NAMES == ("efficientnet_lite0", "squeezenet1_1", "shapes")
