"""Assignment 2 (Grad-CAM): hidden tests, judged against course_utils in the grader."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import course_utils as cu
from course_utils.models import shapes_to_tensor
from grading.assignments import Context, Question, images
from grading.compare import (
    Failure,
    expect_close,
    expect_inputs_untouched,
    expect_model_as_built,
    tensor,
    tensors,
)
from grading.scenarios import build_model

#: Layers Q2 records: ``features.3.squeeze`` feeds an in-place ReLU (an A that was not
#: cloned is overwritten).
Q2_LAYERS = ("features.12", "features.7", "features.3.squeeze")


def _squeezenet(seed: int, train: bool = False) -> dict[str, Any]:
    return {"kind": "squeezenet", "seed": seed, "train": train}


def _labels(seed: int, n: int, classes: int = 10) -> np.ndarray:
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed)).numpy()


def q1_random(ctx: Context) -> None:
    """Random (N, K) scores, N from 1 (a batch of one keeps shape (1,)); still differentiable."""
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)
        for n in (int(torch.randint(2, 6, (), generator=g)), 1):
            k = int(torch.randint(2, 30, (), generator=g))
            scores = torch.randn(n, k, generator=g, dtype=torch.float64)
            labels = torch.randint(0, k, (n,), generator=g)
            observed = ctx.call("select_scores", {"grad_leaf": scores.numpy()}, labels.numpy())
            got = tensor(observed["result"], "scores")
            gathered = scores.gather(1, labels.view(-1, 1))
            expect_close(
                got,
                cu.select_scores(scores, labels),
                "selected scores",
                atol=0,
                rtol=0,
                mistakes={
                    "squeeze_all": gathered.squeeze(),
                    "no_squeeze": gathered,
                    "predicted_not_labels": scores.max(dim=1).values,
                },
            )
            if not observed["result"]["requires_grad"]:
                raise Failure("the selected scores are detached", "not_differentiable")


def q2_three_layers(ctx: Context) -> None:
    """Activation and gradient at three SqueezeNet layers (train mode, in-place ReLU)."""
    (seed,) = ctx.seeds(1)
    spec = _squeezenet(seed, train=True)
    model = build_model(spec)
    batch, labels = images(seed, 3), _labels(seed, 3)
    probe_input = images(seed + 1, 1, (40, 48))
    for layer in Q2_LAYERS:
        observed = ctx.call(
            "activation_and_gradient",
            {"model": spec},
            batch,
            labels,
            layer,
            probe_input=probe_input,
        )
        _check_recording(observed, model, batch, labels, layer)
        expect_inputs_untouched(observed["inputs"], [None, batch, labels, None])
        expect_model_as_built(observed["models"][0], model, probe_input)


def _check_recording(
    observed: dict[str, Any], model: torch.nn.Module, batch: np.ndarray, labels: Any, layer: str
) -> None:
    acts, grads = tensors(observed["result"], 2, f"(A, dA) at {layer}")
    expected_a, expected_grad = cu.layer_activation_and_gradient(
        model, torch.from_numpy(batch), torch.as_tensor(labels), layer=layer
    )
    expect_close(
        acts,
        expected_a,
        f"activation of {layer}",
        mistakes={"inplace_alias": torch.relu(expected_a)},
    )
    expect_close(grads, expected_grad, f"gradient at {layer}", atol=1e-6)
    if any(o["requires_grad"] for o in observed["result"]):
        raise Failure("A and dA must be detached", "not_differentiable")


def q2_shapes_network(ctx: Context) -> None:
    """Activation and gradient on the course's trained shapes network."""
    spec = {"kind": "shapes", "seed": 0, "train": False}
    model = build_model(spec)
    (seed,) = ctx.seeds(1)
    batch = cu.make_shapes(6, seed=seed)
    inputs = shapes_to_tensor(batch.images).numpy()
    layer = cu.load_model("shapes").target_layer
    observed = ctx.call("activation_and_gradient", {"model": spec}, inputs, batch.labels, layer)
    _check_recording(observed, model, inputs, batch.labels, layer)


def q3_random(ctx: Context) -> None:
    """Channel weights of random gradients."""
    for seed in ctx.seeds(3):
        grads = torch.randn(3, 7, 5, 6, generator=torch.Generator().manual_seed(seed))
        observed = ctx.call("channel_weights", grads.numpy())
        expect_close(
            tensor(observed["result"], "weights"),
            cu.channel_weights(grads),
            "channel weights",
            mistakes={
                "sum_not_mean": grads.sum(dim=(2, 3)),
                "keepdim": grads.mean(dim=(2, 3), keepdim=True),
                "wrong_dims": grads.mean(dim=(1, 2)),
            },
        )


def q4_random(ctx: Context) -> None:
    """Weighted maps of random activations and weights."""
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)
        acts, weights = torch.rand(4, 9, 5, 3, generator=g), torch.randn(4, 9, generator=g)
        observed = ctx.call("weighted_cam", acts.numpy(), weights.numpy())
        weighted = weights[:, :, None, None] * acts
        expect_close(
            tensor(observed["result"], "map"),
            cu.weighted_cam(acts, weights),
            "weighted map",
            mistakes={
                "missing_relu": weighted.sum(dim=1),
                "relu_before_sum": torch.relu(weighted).sum(dim=1),
                "mean_over_channels": torch.relu(weighted.mean(dim=1)),
            },
        )


def q5_random(ctx: Context) -> None:
    """Random maps to a non-square (H, W)."""
    size = (37, 53)
    for seed in ctx.seeds(3):
        maps = torch.rand(3, 4, 7, generator=torch.Generator().manual_seed(seed))
        observed = ctx.call("upsample", maps.numpy(), {"tuple": list(size)})

        def mode(
            name: str, target: tuple[int, int] = size, maps: torch.Tensor = maps, **kw: Any
        ) -> torch.Tensor:
            return F.interpolate(maps[:, None], size=target, mode=name, **kw)[:, 0]

        expect_close(
            tensor(observed["result"], "maps"),
            cu.upsample(maps, size),
            "upsampled maps",
            mistakes={
                "hw_swap": mode("bilinear", size[::-1], align_corners=False),
                "align_corners": mode("bilinear", align_corners=True),
                "nearest": mode("nearest"),
                "bicubic_overshoot": mode("bicubic", align_corners=False),
            },
        )


def q6_random_batches(ctx: Context) -> None:
    """Random maps of very different ranges, one of them flat; the caller's maps untouched."""
    for seed in ctx.seeds(3):
        g = torch.Generator().manual_seed(seed)
        maps = torch.rand(4, 9, 11, generator=g) * torch.rand(4, 1, 1, generator=g) * 50
        maps[2] = 5.0
        observed = ctx.call("normalize_per_image", maps.numpy())
        got = tensor(observed["result"], "maps")
        if got.shape == maps.shape and got.is_floating_point() and bool(got[2].isnan().any()):
            raise Failure("a flat map gave NaN", "nan_zero_map")
        expected = cu.normalize_per_image(maps)
        flat_ones = expected.clone()
        flat_ones[2] = 1.0
        low, high = maps.min(), maps.max()
        expect_close(
            got,
            expected,
            "normalised maps",
            mistakes={"per_batch_norm": (maps - low) / (high - low), "flat_not_zero": flat_ones},
        )
        expect_inputs_untouched(observed["inputs"], [maps.numpy()], "inplace_normalize")


#: The earlier answers the final question's stand-ins replace, and A2's allowed reference.
STAND_INS = (
    "select_scores",
    "activation_and_gradient",
    "channel_weights",
    "weighted_cam",
    "upsample",
    "normalize_per_image",
    "guided_backprop",
)


def _from_wire(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, dict) and set(value) == {"model"}:
        return build_model(value["model"])
    if isinstance(value, dict) and set(value) == {"tuple"} and isinstance(value["tuple"], list):
        return [_from_wire(v) for v in value["tuple"]]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError("unexpected stand-in argument")


def stand_in(name: str, wire_args: Any) -> Any:
    """Compute a stand-in (an earlier answer, or ``guided_backprop``) with the reference."""
    args = _from_wire(wire_args)
    if name not in STAND_INS or not isinstance(args, list):
        raise ValueError(f"no stand-in {name}")
    if any(isinstance(a, torch.Tensor) and a.numel() > 4_000_000 for a in args):
        raise ValueError("stand-in inputs too large")
    if name == "activation_and_gradient":
        model, batch, labels, layer = args
        result = cu.layer_activation_and_gradient(model, batch, labels, layer=layer)
        return [t.numpy() for t in result]
    if name == "upsample":
        maps, size = args
        return cu.upsample(maps, (int(size[0]), int(size[1]))).numpy()
    references: dict[str, Callable[..., torch.Tensor]] = {
        "select_scores": cu.select_scores,
        "channel_weights": cu.channel_weights,
        "weighted_cam": cu.weighted_cam,
        "normalize_per_image": cu.normalize_per_image,
        "guided_backprop": cu.guided_backprop,
    }
    reference = references[name]
    return reference(*args).detach().numpy()


def q7_matches_reference(ctx: Context) -> None:
    """Grad-CAM and guided Grad-CAM with Q1-Q6 replaced by the reference (stand-ins).

    A randomly initialised net often has images whose map is all zeros (no feature of the
    layer supports the class), and a zero map cannot tell a wrong answer from a right one:
    the test takes the first of a few fresh seeds whose every map has some signal.
    """
    for seed in ctx.seeds(8):
        spec = _squeezenet(seed)
        model = build_model(spec)
        batch, labels = images(seed, 3), _labels(seed, 3)
        x, y = torch.from_numpy(batch), torch.from_numpy(labels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", cu.FlatMapWarning)
            expected = cu.grad_cam(model, x, y, layer="features.12")
        if bool(expected.flatten(1).amax(dim=1).gt(0).all()):
            break
    observed = ctx.call(
        "grad_cam", {"model": spec}, batch, labels, "features.12", stand_ins=STAND_INS
    )
    expect_close(tensor(observed["result"], "Grad-CAM"), expected, "Grad-CAM", atol=1e-5)
    observed = ctx.call(
        "guided_grad_cam", {"model": spec}, batch, labels, "features.12", stand_ins=STAND_INS
    )
    expect_close(
        tensor(observed["result"], "guided Grad-CAM"),
        cu.guided_grad_cam(model, x, y, layer="features.12"),
        "guided Grad-CAM",
        atol=1e-6,
    )


def q7_shapes_network(ctx: Context) -> None:
    """Grad-CAM on the shapes network, at its own layer."""
    spec = {"kind": "shapes", "seed": 0, "train": False}
    model = build_model(spec)
    (seed,) = ctx.seeds(1)
    batch = cu.make_shapes(6, seed=seed)
    inputs = shapes_to_tensor(batch.images)
    layer = cu.load_model("shapes").target_layer
    observed = ctx.call(
        "grad_cam", {"model": spec}, inputs.numpy(), batch.labels, layer, stand_ins=STAND_INS
    )
    expected = cu.grad_cam(model, inputs, torch.as_tensor(batch.labels), layer=layer)
    expect_close(tensor(observed["result"], "Grad-CAM"), expected, "Grad-CAM (shapes)", atol=1e-5)


QUESTIONS = {
    "q1": Question(1, (q1_random,)),
    "q2": Question(2, (q2_three_layers, q2_shapes_network)),
    "q3": Question(1, (q3_random,)),
    "q4": Question(1, (q4_random,)),
    "q5": Question(1, (q5_random,)),
    "q6": Question(2, (q6_random_batches,)),
    "q7": Question(2, (q7_matches_reference, q7_shapes_network)),
}
