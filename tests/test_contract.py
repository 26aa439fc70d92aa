"""The public API's contract: the model and the images come back exactly as they were."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils import GradCam, GuidedReLU, grad_cam, guided_backprop, guided_grad_cam
from course_utils.cam import FlatMapWarning

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
    with pytest.warns(FlatMapWarning, match="'1'.*every image"):
        cam = grad_cam(net, torch.randn(2, 3, 5, 7), [0, 1], layer="1")
    assert torch.equal(cam, torch.zeros(2, 5, 7))


def test_a_one_by_one_layer_gives_exact_zeros_and_a_warning(
    resnet: nn.Module, images: torch.Tensor
) -> None:
    # avgpool is 1x1: the map is one number per image, spread by bilinear upsampling. Its
    # 1-ulp wiggles must not be stretched to [0, 1] noise.
    with pytest.warns(FlatMapWarning, match=r"'avgpool'.*1x1"):
        cam = grad_cam(resnet, images, [1, 2, 3], layer="avgpool")
    assert torch.equal(cam, torch.zeros_like(cam))


def test_a_tiny_input_at_the_last_block_gives_exact_zeros(resnet: nn.Module) -> None:
    tiny = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    tiny = tiny.to(next(resnet.parameters()).device)
    with pytest.warns(FlatMapWarning, match="layer4"):
        cam = grad_cam(resnet, tiny, [5, 6], layer="layer4")  # 32 / 32: layer4 is 1x1
    assert torch.equal(cam, torch.zeros_like(cam))


def test_squeezenets_classifier_layer_is_not_silently_zero(
    squeezenet: nn.Module, images: torch.Tensor
) -> None:
    with pytest.warns(FlatMapWarning, match="'classifier'"):
        grad_cam(squeezenet, images, [1, 2, 3], layer="classifier")


def test_a_map_with_contrast_gives_no_warning(squeezenet: nn.Module, images: torch.Tensor) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FlatMapWarning)
        cam = grad_cam(squeezenet, images, [1, 2, 3], layer="features.12")
    assert (cam.flatten(1).amax(1) == 1).all()


@pytest.mark.parametrize("method", list(METHODS))
def test_zero_dimensional_label_tensors_mean_one_class_for_all(
    method: str, squeezenet: nn.Module, images: torch.Tensor
) -> None:
    as_int = _as_tensor(METHODS[method](squeezenet, images, 4, "features.12"))
    as_tensor = _as_tensor(METHODS[method](squeezenet, images, torch.tensor(4), "features.12"))
    as_numpy = _as_tensor(METHODS[method](squeezenet, images, np.array(4), "features.12"))
    assert torch.equal(as_tensor, as_int) and torch.equal(as_numpy, as_int)


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
        "channels last",
        lambda m, x: grad_cam(m, x.permute(0, 2, 3, 1), layer="features.12"),
        ValueError,
        r"channels-last.*permute\(0, 3, 1, 2\)",
    ),
    (
        "one channel",
        lambda m, x: guided_backprop(m, x[:, :1]),
        ValueError,
        r"'features.0' expects 3 input channels.*1",
    ),
    (
        "four channels",
        lambda m, x: guided_grad_cam(m, torch.cat([x, x[:, :1]], 1), layer="features.12"),
        ValueError,
        "expects 3 input channels.*4",
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


@pytest.mark.parametrize("method", list(METHODS)[:3])
def test_tensor_kinds_are_the_same_inside_inference_mode(
    method: str, squeezenet: nn.Module, images: torch.Tensor
) -> None:
    with torch.inference_mode():
        out = METHODS[method](squeezenet, images, [2, 3, 4], "features.12")
    assert not out.is_inference(), "an inference tensor cannot be used by autograd later"
    assert not out.requires_grad


# ---------------------------------------------------------------------------------------------
# Guided backprop never degrades silently to the plain gradient
# ---------------------------------------------------------------------------------------------


class _CallsFunctionalRelu(nn.Module):
    """Owns an nn.ReLU module, but its forward calls F.relu: a module hook would never fire."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()  # registered, never called
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))


def test_functional_relu_calls_are_guided_too() -> None:
    net = _CallsFunctionalRelu()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 4])
    ours = guided_backprop(net, x, labels)

    leaf = x.clone().requires_grad_(True)
    scores = net.fc(GuidedReLU.apply(net.conv(leaf)).mean(dim=(2, 3)))
    (expected,) = torch.autograd.grad(scores[torch.arange(2), labels].sum(), leaf)
    (plain,) = torch.autograd.grad(net(leaf)[torch.arange(2), labels].sum(), leaf)
    assert torch.allclose(ours, expected, atol=1e-7)
    assert not torch.allclose(ours, plain, atol=1e-4), "the guided rule made no difference"


@pytest.mark.parametrize(
    ("activation", "name"), [(nn.Hardswish(), "hardswish"), (nn.LeakyReLU(), "leaky_relu")]
)
def test_activations_without_a_guided_rule_are_refused_by_name(
    activation: nn.Module, name: str
) -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3),
        activation,
        nn.Flatten(),
        nn.LazyLinear(3),
    )
    x = torch.randn(1, 3, 8, 8)
    net(x)  # materialise the lazy layer
    with pytest.raises(ValueError, match=rf"{name} \(1 call\).*no guided rule"):
        guided_backprop(net, x, [0])
    assert all(not m._forward_hooks for m in net.modules())


@pytest.mark.parametrize(
    ("activation", "name"), [(nn.SiLU(), "silu"), (nn.GELU(), "gelu"), (nn.Tanh(), "tanh")]
)
def test_a_model_without_any_relu_is_refused_naming_its_activations(
    activation: nn.Module, name: str
) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), activation, nn.Flatten(), nn.Linear(4 * 36, 3))
    with pytest.raises(ValueError, match=rf"runs no ReLU.*{name} \(1 call\)") as info:
        guided_backprop(net, torch.randn(1, 3, 8, 8), [0])
    assert "F.relu" not in str(info.value)


def test_a_relu_off_the_scores_path_does_not_count_as_guidance() -> None:
    class SideBranch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = self.conv(x)
            self.relu(features)  # computed, then thrown away
            return self.fc(features.mean(dim=(2, 3)))

    with pytest.raises(ValueError, match="no ReLU lies between the input and the scores"):
        guided_backprop(SideBranch(), torch.randn(1, 3, 8, 8), [0])
