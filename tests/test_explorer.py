"""Tests for course_utils.explorer: the headless compute step, and the widgets without a kernel."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import io
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import squeezenet1_1

import course_utils.explorer as explorer_module
from course_utils import grad_cam, guided_backprop, guided_grad_cam
from course_utils.explorer import (
    ExplanationFigure,
    Explorer,
    class_cams,
    explain,
    layer_choices,
    plot_explanation,
)

NAMES = ["circle", "square", "triangle", "star", "cross"]
MEAN, STD = 0.5, 0.25


def _preprocess(image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255
    return (torch.from_numpy(array).permute(2, 0, 1) - MEAN) / STD


def _deprocess(x: torch.Tensor) -> np.ndarray:
    return (x * STD + MEAN).clamp(0, 1).movedim(-3, -1).numpy()


@pytest.fixture
def bundle() -> SimpleNamespace:
    """The bundle protocol of course_utils.models, on a small random SqueezeNet."""
    torch.manual_seed(0)
    net = squeezenet1_1(weights=None, num_classes=len(NAMES)).eval()
    return SimpleNamespace(
        model=net,
        preprocess=_preprocess,
        deprocess=_deprocess,
        class_names=NAMES,
        target_layer="features.12",
    )


@pytest.fixture
def photos() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "wide": rng.integers(0, 256, (48, 80, 3), dtype=np.uint8),
        "tall": rng.integers(0, 256, (80, 48, 3), dtype=np.uint8),
    }


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _softmax(bundle, image) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(bundle.model(_preprocess(image)[None]), 1)[0]


# ------------------------------------------------------------------ explain


def test_grad_cam_explains_the_predicted_class_by_default(bundle, photos):
    e = explain(bundle, photos["wide"], "grad_cam")
    probs = _softmax(bundle, photos["wide"])
    assert e.class_index == int(probs.argmax()) == e.top_k[0][0]
    assert e.class_name == NAMES[e.class_index]
    assert e.probability == pytest.approx(float(probs.max()))
    assert e.layer == "features.12"
    expected = grad_cam(bundle.model, _preprocess(photos["wide"])[None], layer="features.12")
    np.testing.assert_allclose(e.map, expected[0].numpy(), atol=1e-6)
    assert e.map.shape == (48, 80) and e.image.shape == (48, 80, 3)


def test_explicit_class_and_layer_are_used(bundle, photos):
    e = explain(bundle, photos["tall"], "grad_cam", class_index=3, layer="features.9")
    assert (e.class_index, e.class_name, e.layer) == (3, "star", "features.9")
    probs = _softmax(bundle, photos["tall"])
    assert e.probability == pytest.approx(float(probs[3]))
    x = _preprocess(photos["tall"])[None]
    np.testing.assert_allclose(
        e.map, grad_cam(bundle.model, x, [3], layer="features.9")[0].numpy(), atol=1e-6
    )


def test_guided_methods_return_channels_last_gradients(bundle, photos):
    x = _preprocess(photos["wide"])[None]
    gb = explain(bundle, photos["wide"], "guided_backprop", class_index=1, layer="features.3")
    assert gb.layer is None  # guided backprop has no layer
    expected = guided_backprop(bundle.model, x, [1])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(gb.map, expected, atol=1e-7)
    assert gb.display_map.shape == (48, 80, 3)
    assert gb.display_map.min() >= 0.0 and gb.display_map.max() <= 1.0

    ggc = explain(bundle, photos["wide"], "guided_grad_cam", class_index=1)
    cam = grad_cam(bundle.model, x, [1], layer="features.12")[0].numpy()
    np.testing.assert_allclose(ggc.map, expected * cam[..., None], atol=1e-7)


def test_tensor_input_matches_image_input(bundle, photos):
    from_image = explain(bundle, photos["wide"], class_index=2)
    from_tensor = explain(bundle, _preprocess(photos["wide"]), class_index=2)
    np.testing.assert_allclose(from_image.map, from_tensor.map)
    with pytest.raises(ValueError, match="one image at a time"):
        explain(bundle, _preprocess(photos["wide"])[None])


def test_model_is_handed_back_unchanged(bundle, photos):
    bundle.model.train()
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    for method in ("grad_cam", "guided_backprop", "guided_grad_cam"):
        explain(bundle, photos["wide"], method)
    assert bundle.model.training
    assert all(not m._forward_hooks and not m._backward_hooks for m in bundle.model.modules())
    assert all(p.grad is None for p in bundle.model.parameters())
    for key, value in bundle.model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_explain_rejects_bad_arguments(bundle, photos):
    with pytest.raises(ValueError, match="unknown method"):
        explain(bundle, photos["wide"], "gradcam")
    with pytest.raises(ValueError, match="out of range"):
        explain(bundle, photos["wide"], class_index=len(NAMES))
    with pytest.raises(TypeError, match="class_index"):
        explain(bundle, photos["wide"], class_index=1.0)
    with pytest.raises(ValueError, match="no layer named"):
        explain(bundle, photos["wide"], layer="features.99")
    with pytest.raises(TypeError, match="PIL"):
        explain(bundle, [[0, 1]])
    wrong = SimpleNamespace(**{**vars(bundle), "class_names": NAMES[:2]})
    with pytest.raises(ValueError, match="names 2 classes"):
        explain(wrong, photos["wide"])


def test_unknown_layer_is_refused(bundle, photos):
    with pytest.raises(ValueError, match="no layer named"):
        Explorer(bundle, photos, layers=["features.99"])


def test_extra_classes_are_offered_and_plotted(bundle, photos):
    app = Explorer(bundle, photos, top_k=2, classes=["cross", 0])
    probs = _softmax(bundle, photos["wide"])  # computed here without the explorer
    offered = app.predictions("wide")
    top = offered[:2]
    assert [i for i, _, _ in top] == probs.argsort(descending=True).tolist()[:2]
    extra = [i for i in (NAMES.index("cross"), 0) if i not in {j for j, _, _ in top}]
    assert [i for i, _, _ in offered[2:]] == extra
    probs = _softmax(bundle, photos["wide"])
    for i, name, p in offered:
        assert name == NAMES[i] and p == pytest.approx(float(probs[i]), abs=1e-6)
    with pytest.raises(ValueError, match="unknown class name"):
        Explorer(bundle, photos, classes=["hexagon"])
    with pytest.raises(ValueError, match="class index"):
        Explorer(bundle, photos, classes=[len(NAMES)])


def test_plot_adds_a_bar_for_a_class_outside_the_top(bundle, photos):
    probs = _softmax(bundle, photos["wide"])
    least = int(probs.argmin())
    e = explain(bundle, photos["wide"], class_index=least, top_k=2)
    fig = plot_explanation(e)
    labels = [t.get_text() for t in fig.axes[2].texts]
    assert len(labels) == 3 and labels[-1].startswith(NAMES[least])  # the extra bar comes last


def test_layer_choices_expand_a_stack_of_blocks():
    from torch import nn

    class Net(nn.Module):  # EfficientNet's layout: stem, blocks.*, head, linear classifier
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6())
            self.blocks = nn.Sequential(
                nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU6()), nn.Identity(), nn.Conv2d(4, 4, 1)
            )
            self.head = nn.Sequential(nn.Conv2d(4, 8, 1), nn.ReLU6())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(8, 3)

    assert layer_choices(Net(), "head") == ["stem", "blocks.0", "blocks.2", "head"]
    assert layer_choices(Net(), "blocks.2") == ["blocks.0", "blocks.2"]


# ------------------------------------------------------------------ speed: reuse, don't redo


def test_class_cams_equal_separate_grad_cam_calls(bundle, photos):
    x = _preprocess(photos["wide"])[None]
    classes = [3, 0, 4]
    cams = class_cams(bundle.model, x, classes, "features.12")
    assert cams.shape == (3, 48, 80)
    for cam, c in zip(cams, classes, strict=True):
        expected = grad_cam(bundle.model, x, [c], layer="features.12")[0]
        torch.testing.assert_close(cam, expected, atol=1e-5, rtol=1e-4)
    assert all(p.grad is None for p in bundle.model.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in bundle.model.modules())


def test_class_cams_rejects_bad_requests(bundle, photos):
    x = _preprocess(photos["wide"])[None]
    with pytest.raises(ValueError, match="one image"):
        class_cams(bundle.model, x.expand(2, -1, -1, -1), [0], "features.12")
    with pytest.raises(ValueError, match="empty"):
        class_cams(bundle.model, x, [], "features.12")
    with pytest.raises(ValueError, match="classes must be ints"):
        class_cams(bundle.model, x, [len(NAMES)], "features.12")
    with pytest.raises(ValueError, match="no layer named"):
        class_cams(bundle.model, x, [0], "features.99")


def _count_forwards(model) -> list[int]:
    """Count the model's forward passes (the caller removes the hook: ``calls.remove()``)."""
    calls = [0]

    def count(module, inputs):
        calls[0] += 1

    calls.append(model.register_forward_pre_hook(count))
    return calls


def test_explorer_runs_one_forward_per_image_and_equals_the_library_functions(bundle, photos):
    app = Explorer(bundle, photos, top_k=3)
    x = _preprocess(photos["wide"])[None]
    offered = [i for i, _, _ in app.predictions("wide")]
    requests = [
        (c, layer) for layer in ("features.12", "features.9", "features.12") for c in offered
    ]
    counter = _count_forwards(bundle.model)
    try:
        maps = {(c, layer): app.explain("wide", "grad_cam", c, layer) for c, layer in requests}
        gb = app.explain("wide", "guided_backprop", offered[1])
        ggc = app.explain("wide", "guided_grad_cam", offered[1], "features.9")
        assert counter[0] == 0  # predictions() ran the one kept forward pass for them all
        app.explain("tall", "guided_backprop")
        assert counter[0] == 1  # a new image, a new pass
    finally:
        counter[1].remove()
    for (c, layer), e in maps.items():
        expected = grad_cam(bundle.model, x, [c], layer=layer)[0].numpy()
        np.testing.assert_allclose(e.map, expected, atol=1e-6)
        assert (e.class_index, e.layer, e.top_k) == (c, layer, app.predictions("wide"))
    expected = guided_backprop(bundle.model, x, [offered[1]])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(gb.map, expected, atol=1e-7)
    expected = guided_grad_cam(bundle.model, x, [offered[1]], layer="features.9")
    np.testing.assert_allclose(ggc.map, expected[0].permute(1, 2, 0).numpy(), atol=1e-7)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in bundle.model.modules())
    assert all(p.grad is None for p in bundle.model.parameters())


def test_explorer_keeps_only_the_current_images_forward_pass(bundle, photos):
    import gc
    import weakref

    app = Explorer(bundle, photos)
    app.explain("wide")
    kept = weakref.ref(app._kept[1])
    app.explain("tall")
    gc.collect()
    assert kept() is None  # the previous image's graph was freed
    assert app.explain("wide").class_index == app.predictions("wide")[0][0]


def test_explorer_threads_are_restored_and_checked(bundle, photos):
    before = torch.get_num_threads()
    app = Explorer(bundle, photos, threads=1)
    app.explain("wide", "guided_grad_cam")
    assert torch.get_num_threads() == before
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            Explorer(bundle, photos, threads=bad)


def test_explorer_explain_rejects_bad_requests(bundle, photos):
    app = Explorer(bundle, photos, layers=["features.9", "features.12"])
    with pytest.raises(ValueError, match="not offered"):
        app.explain("wide", "grad_cam", 0, "features.3")
    with pytest.raises(ValueError, match="unknown method"):
        app.explain("wide", "gradcam")
    with pytest.raises(ValueError, match="out of range"):
        app.explain("wide", class_index=len(NAMES))
    with pytest.raises(ValueError, match="unknown image"):
        app.explain("nope")


def test_blitted_picture_equals_a_full_redraw(bundle, photos):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    probs = _softmax(bundle, photos["wide"])
    top, second, least = int(probs.argmax()), int(probs.argsort()[-2]), int(probs.argmin())
    explanations = [  # each step keeps some panels, redraws others
        explain(bundle, photos["wide"], class_index=top, top_k=3),
        explain(bundle, photos["wide"], class_index=second, top_k=3),  # same image panel
        explain(bundle, photos["tall"], "guided_backprop", top_k=3),  # new size, no colour bar
        explain(bundle, photos["wide"], class_index=least, top_k=3),  # one bar more
        explain(bundle, photos["wide"], "guided_backprop", class_index=top, top_k=3),
        explain(bundle, photos["wide"], class_index=top, top_k=3),  # every kept panel again
    ]
    figure = ExplanationFigure()
    for e in explanations:
        picture = figure.draw(e, "wide").canvas and figure.pixels()[..., :3].copy()
        fresh = ExplanationFigure()
        fresh.draw(e, "wide")
        canvas = FigureCanvasAgg(fresh.figure)
        canvas.draw()  # everything, the slow way
        np.testing.assert_array_equal(picture, np.asarray(canvas.buffer_rgba())[..., :3])
    with Image.open(io.BytesIO(figure.png())) as png:
        assert png.size == (1280, 560) and png.text["Description"].startswith("Figure: wide")


def test_explorer_updates_one_figure_and_reuses_drawn_views(bundle, photos):
    app = Explorer(bundle, photos, top_k=3)
    _ = app.widget
    figure, view = app._figure.figure, app._view
    first_png = bytes(view.value)
    assert first_png.startswith(b"\x89PNG") and "this update" in app._status.value
    assert app.last.image.shape[:2] == (48, 80)  # starts on the first image

    app.controls["image"].value = "tall"
    assert app._figure.figure is figure and bytes(view.value) != first_png  # same figure, new view
    assert "computed in" in app._status.value
    app.controls["image"].value = "wide"  # back to a view already drawn
    assert bytes(view.value) == first_png and "shown before" in app._status.value
    with Image.open(io.BytesIO(bytes(view.value))) as picture:  # alt text for the page
        assert (
            "Figure" in picture.text["Description"] and "top classes" in picture.text["Description"]
        )
    assert view.tooltip is None  # a tooltip breaks ipywidgets 8.1's ImageView in JupyterLab


def test_explorer_forgets_its_oldest_views_and_recomputes_them_alike(bundle, photos, monkeypatch):
    monkeypatch.setattr(explorer_module, "KEPT_VIEWS", 3)
    app = Explorer(bundle, photos, top_k=3)
    _ = app.widget
    first_png = bytes(app._view.value)
    first_map = app.last.map.copy()
    for cls in [c for c, _, _ in app.predictions("wide")][1:]:
        app.controls["class"].value = cls
    app.controls["method"].value = "guided_backprop"
    app.controls["method"].value = "guided_grad_cam"
    assert max(len(app._views), len(app._cache), len(app._maps)) <= 3
    app.controls["method"].value = "grad_cam"
    app.controls["class"].value = app.predictions("wide")[0][0]  # the first view, forgotten
    assert "computed in" in app._status.value
    np.testing.assert_array_equal(app.last.map, first_map)
    assert bytes(app._view.value) == first_png


def test_explorer_starts_on_the_given_image(bundle, photos):
    app = Explorer(bundle, photos, start="tall")
    _ = app.widget
    assert app.controls["image"].value == "tall" and app.last.image.shape[:2] == (80, 48)
    with pytest.raises(ValueError, match="unknown image"):
        Explorer(bundle, photos, start="nope")


def test_explorer_refuses_guided_backprop_where_the_library_does(bundle, photos):
    from torch import nn

    torch.manual_seed(0)
    silu = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)
    ).eval()
    app = Explorer(SimpleNamespace(**{**vars(bundle), "model": silu}), photos, layers=["0"])
    x = _preprocess(photos["wide"])[None]
    with pytest.raises(ValueError, match="runs no ReLU") as library:
        guided_backprop(silu, x, [0])
    with pytest.raises(ValueError, match="runs no ReLU") as ours:
        app.explain("wide", "guided_backprop", 0)
    assert str(ours.value) == str(library.value)
    assert app.explain("wide", "grad_cam", 0, "0").map.shape == (48, 80)  # Grad-CAM still works
