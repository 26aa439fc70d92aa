"""The public API's contract: the model and the images come back exactly as they were."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from course_utils import GradCam, grad_cam, guided_backprop, guided_grad_cam

METHODS: dict[str, Callable[..., Any]] = {
    "grad_cam": lambda m, x, y, layer: grad_cam(m, x, y, layer=layer),
    "guided_backprop": lambda m, x, y, layer: guided_backprop(m, x, y),
    "guided_grad_cam": lambda m, x, y, layer: guided_grad_cam(m, x, y, layer=layer),
    "GradCam.grad_cam": lambda m, x, y, layer: GradCam(layer).grad_cam(x, y, m),
    "GradCam.guided_backprop": lambda m, x, y, layer: GradCam(layer).guided_backprop(x, y, m),
}
LAYERS = {"squeezenet": "features.12", "resnet": "layer4"}


@pytest.fixture(params=list(LAYERS))
def model_and_layer(request: pytest.FixtureRequest) -> tuple[nn.Module, str]:
    return request.getfixturevalue(request.param), LAYERS[request.param]


def _snapshot(model: nn.Module) -> dict[str, Any]:
    hooks = {
        name: [
            len(d)
            for d in (
                m._forward_hooks,
                m._forward_pre_hooks,
                m._backward_hooks,
                m._backward_pre_hooks,
            )
        ]
        for name, m in model.named_modules()
    }
    return {
        "modules": [
            (n, id(m), type(m), getattr(m, "inplace", None)) for n, m in model.named_modules()
        ],
        "training": [m.training for m in model.modules()],
        "hooks": hooks,
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
    }


def _assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    for key in ("modules", "training", "hooks", "requires_grad"):
        assert before[key] == after[key], f"model's {key} changed"
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"state_dict entry {k} changed"
    for g0, g1 in zip(before["grads"], after["grads"], strict=True):
        assert (g0 is None and g1 is None) or torch.equal(g0, g1), "a param.grad changed"


def _as_tensor(out: Any) -> torch.Tensor:
    return torch.from_numpy(out) if isinstance(out, np.ndarray) else out.cpu()


@pytest.mark.parametrize("method", list(METHODS))
def test_model_comes_back_exactly_as_it_was(
    method: str, model_and_layer: tuple[nn.Module, str], images: torch.Tensor
) -> None:
    model, layer = model_and_layer
    model.train()  # Dropout / BatchNorm in training mode: must be restored, buffers untouched
    # ... with one block in eval mode: mixed flags must come back mixed
    (model.features[3] if hasattr(model, "features") else model.layer1).eval()
    params = list(model.parameters())
    params[0].grad = torch.full_like(params[0], 7.0)  # a pre-existing gradient must survive
    before = _snapshot(model)
    METHODS[method](model, images, [1, 2, 3], layer)
    _assert_same(before, _snapshot(model))
    # and the model still works as a model
    model.eval()
    model.load_state_dict(model.state_dict())
    model(images)


@pytest.mark.parametrize("method", list(METHODS))
def test_images_are_never_touched(method: str, squeezenet: nn.Module, images: torch.Tensor) -> None:
    leaf = images.clone().requires_grad_(True)
    values = images.clone()
    METHODS[method](squeezenet, leaf, None, "features.12")
    assert leaf.grad is None and leaf.requires_grad
    METHODS[method](squeezenet, images, None, "features.12")
    assert images.grad is None and not images.requires_grad
    assert torch.equal(images, values)


@pytest.mark.parametrize("method", list(METHODS))
def test_non_leaf_inputs_frozen_models_and_repeat_calls(
    method: str, squeezenet: nn.Module, images: torch.Tensor
) -> None:
    fn = METHODS[method]
    reference = _as_tensor(fn(squeezenet, images, [0, 5, 9], "features.12"))
    again = _as_tensor(fn(squeezenet, images, [0, 5, 9], "features.12"))
    assert torch.equal(reference, again), "two calls differ (accumulating gradients?)"

    source = images.clone().requires_grad_(True)
    non_leaf = source * 1.0
    assert torch.equal(_as_tensor(fn(squeezenet, non_leaf, [0, 5, 9], "features.12")), reference)
    assert source.grad is None

    squeezenet.requires_grad_(False)
    frozen = _as_tensor(fn(squeezenet, images, [0, 5, 9], "features.12"))
    assert not any(p.requires_grad for p in squeezenet.parameters())
    assert torch.allclose(frozen, reference, atol=1e-6)


@pytest.mark.parametrize("method", ["grad_cam", "guided_backprop", "guided_grad_cam"])
def test_an_images_map_does_not_depend_on_the_rest_of_the_batch(
    method: str, model_and_layer: tuple[nn.Module, str], images: torch.Tensor
) -> None:
    model, layer = model_and_layer
    model.train()  # Dropout / BatchNorm batch statistics would couple the images
    together = METHODS[method](model, images, [4, 4, 4], layer)
    alone = METHODS[method](model, images[1:2], [4], layer)
    scale = together.abs().max()
    assert torch.allclose(together[1:2], alone, atol=1e-5 * float(scale) + 1e-7)


def test_outputs_shapes_ranges_and_devices(squeezenet: nn.Module, images: torch.Tensor) -> None:
    cam = grad_cam(squeezenet, images, layer="features.12")
    assert cam.shape == (3, 64, 96) and cam.device == images.device
    assert cam.min() >= 0 and cam.max() <= 1 and torch.isfinite(cam).all()
    assert guided_backprop(squeezenet, images).shape == images.shape
    assert guided_grad_cam(squeezenet, images, layer="features.12").shape == images.shape
    assert GradCam().guided_backprop(images, [1, 1, 1], squeezenet).shape == (3, 64, 96, 3)
    assert GradCam().grad_cam(images, [1, 1, 1], squeezenet).shape == (3, 64, 96)


def test_batch_of_one_and_layer_given_as_module(resnet: nn.Module, images: torch.Tensor) -> None:
    one = images[:1]
    by_name = grad_cam(resnet, one, [3], layer="layer4")
    assert by_name.shape == (1, 64, 96)
    assert torch.equal(by_name, grad_cam(resnet, one, torch.tensor([3]), layer=resnet.layer4))


def test_labels_none_means_the_predicted_class(squeezenet: nn.Module, images: torch.Tensor) -> None:
    predicted = squeezenet.eval()(images).argmax(1)
    assert torch.equal(
        grad_cam(squeezenet, images, layer="features.12"),
        grad_cam(squeezenet, images, predicted, layer="features.12"),
    )
    assert torch.equal(
        guided_backprop(squeezenet, images), guided_backprop(squeezenet, images, predicted)
    )


def test_a_layer_without_feature_maps_is_rejected(resnet: nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"'fc' outputs shape \(3, 1000\).*\(N, C, h, w\)"):
        grad_cam(resnet, images, layer="fc")
    assert all(not m._forward_hooks for m in resnet.modules())


def test_a_constant_map_is_zeros_not_nan() -> None:
    # A layer whose activations are all zero for this input: 0/0 must not appear.
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.fill_(-1.0)
    cam = grad_cam(net, torch.randn(2, 3, 5, 7), [0, 1], layer="1")
    assert torch.equal(cam, torch.zeros(2, 5, 7))


BAD_CALLS = [
    (
        "labels float",
        lambda m, x: grad_cam(m, x, torch.tensor([1.0, 2, 3]), layer="features.12"),
        TypeError,
        "integer dtype",
    ),
    (
        "labels out of range",
        lambda m, x: guided_backprop(m, x, [1, 1000, 2]),
        ValueError,
        "label 1000 is out of range",
    ),
    (
        "negative label",
        lambda m, x: grad_cam(m, x, [1, -2, 2], layer="features.12"),
        ValueError,
        "label -2",
    ),
    (
        "labels length",
        lambda m, x: guided_grad_cam(m, x, [1, 2], layer="features.12"),
        ValueError,
        "2 labels for a batch of 3",
    ),
    (
        "images 3-D",
        lambda m, x: grad_cam(m, x[0], layer="features.12"),
        ValueError,
        r"\(N, C, H, W\)",
    ),
    ("images int", lambda m, x: guided_backprop(m, (x * 100).long()), TypeError, "floating point"),
    (
        "images empty",
        lambda m, x: grad_cam(m, x[:0], layer="features.12"),
        ValueError,
        "empty batch",
    ),
    ("images list", lambda m, x: guided_backprop(m, x.tolist()), TypeError, "torch.Tensor"),
    (
        "images inf",
        lambda m, x: guided_backprop(m, torch.where(x > 2, float("inf"), x)),
        ValueError,
        "NaN or inf",
    ),
    (
        "images nan",
        lambda m, x: grad_cam(m, x * float("nan"), layer="features.12"),
        ValueError,
        "NaN",
    ),
    (
        "unknown layer",
        lambda m, x: grad_cam(m, x, layer="features.13"),
        ValueError,
        "no layer named 'features.13'.*features.12",
    ),
    (
        "dtype mismatch",
        lambda m, x: grad_cam(m, x.double(), layer="features.12"),
        ValueError,
        "float64",
    ),
    (
        "model not module",
        lambda m, x: grad_cam(lambda t: t, x, layer="features.12"),
        TypeError,
        "nn.Module",
    ),
]


@pytest.mark.parametrize(
    ("case", "call", "error", "message"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS]
)
def test_bad_input_is_named_and_leaves_no_trace(
    case: str,
    call: Callable[..., Any],
    error: type[Exception],
    message: str,
    squeezenet: nn.Module,
    images: torch.Tensor,
) -> None:
    squeezenet.train()
    before = _snapshot(squeezenet)
    with pytest.raises(error, match=message):
        call(squeezenet, images)
    _assert_same(before, _snapshot(squeezenet))


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("method", list(METHODS))
def test_works_inside_no_grad_and_inference_mode(
    context: Callable[[], Any], method: str, squeezenet: nn.Module, images: torch.Tensor
) -> None:
    expected = _as_tensor(METHODS[method](squeezenet, images, [2, 3, 4], "features.12"))
    with context():
        inside = _as_tensor(METHODS[method](squeezenet, images, [2, 3, 4], "features.12"))
    assert torch.equal(inside, expected)
