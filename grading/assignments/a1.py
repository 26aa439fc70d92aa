"""Assignment 1 (guided backpropagation): hidden tests, judged against course_utils."""

from __future__ import annotations

import ast
from typing import Any

import numpy as np
import torch

import course_utils as cu
from course_utils.models import shapes_to_tensor
from grading.assignments import Context, Question, images
from grading.compare import (
    Failure,
    expect_close,
    expect_inputs_untouched,
    expect_model_as_built,
    tensor,
)
from grading.scenarios import build_model


def q1_forward_uses_addcmul(ctx: Context) -> None:
    """The forward is written with ``torch.addcmul`` (the question asks for it)."""
    cls = ctx.defines("GuidedReLUFn")
    forward = None
    if isinstance(cls, ast.ClassDef):
        forward = next(
            (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "forward"), None
        )
    if forward is None or "addcmul" not in ast.unparse(forward):
        raise Failure("GuidedReLUFn.forward does not use torch.addcmul", "forward_not_relu")


def q1_random_tensors(ctx: Context) -> None:
    """Forward and guided backward on random float64 tensors, exactly."""
    for seed in [*ctx.seeds(3), None]:
        if seed is None:  # the public example: zeros and ties included
            x = torch.tensor([-1.0, 2.0, 3.0, 0.0], dtype=torch.float64)
            g = torch.tensor([5.0, -4.0, 1.0, 2.0], dtype=torch.float64)
        else:
            gen = torch.Generator().manual_seed(seed)
            x = torch.randn(2, 5, 7, 3, generator=gen, dtype=torch.float64).round(decimals=1)
            g = torch.randn(x.shape, generator=gen, dtype=torch.float64).round(decimals=1)
        observed = ctx.scenario("guided_relu_function", x=x.numpy(), out_grad=g.numpy())
        forward = tensor(observed["forward"], "forward")
        if forward.dtype != torch.float64:
            raise Failure(f"the forward returned {forward.dtype} for float64", "cpu_only_zeros")
        ref_x = x.clone().requires_grad_(True)
        out = cu.GuidedReLU.apply(ref_x)
        out.backward(g)
        expect_close(forward, out.detach(), "forward", atol=0, rtol=0)
        if observed["grad"] is None:
            raise Failure("backward gave no gradient", "not_differentiable")
        positive = (x > 0).double()
        assert ref_x.grad is not None
        expect_close(
            tensor(observed["grad"], "backward"),
            ref_x.grad,
            "backward",
            atol=0,
            rtol=0,
            mistakes={"backprop_rule": g * positive, "deconvnet_rule": g * (g > 0).double()},
        )


def _nets(seed: int) -> list[dict[str, Any]]:
    return [{"kind": "squeezenet", "seed": seed}, {"kind": "relu6_net", "seed": seed}]


def _plain_and_guided(spec: dict[str, Any], x: np.ndarray, unit: int) -> tuple[Any, Any, Any]:
    model = build_model(spec)
    xi = torch.from_numpy(x).requires_grad_(True)
    out = model(xi)
    (plain,) = torch.autograd.grad(out[:, unit].sum(), xi)
    with cu.guided_relus(model):
        xi = torch.from_numpy(x).requires_grad_(True)
        (guided,) = torch.autograd.grad(model(xi)[:, unit].sum(), xi)
    return out.detach(), plain, guided


def q2_fire_relu6_inplace(ctx: Context) -> None:
    """Guided inside the block, untouched after it.

    Inside: same forward, guided gradient (Fire modules, ReLU6, in-place ReLUs); after it:
    the model exactly as built.
    """
    for seed in ctx.seeds(2):
        x = images(seed, 2, (40, 48))
        for spec in _nets(seed):
            observed = ctx.scenario(
                "guided_relus_block", model=spec, x=x, unit=1, raise_inside=False
            )
            out, plain, guided = _plain_and_guided(spec, x, 1)
            inside = observed["inside"]
            expect_close(tensor(inside["out"], "forward"), out, "forward inside the block")
            expect_close(
                tensor(inside["grad"], "gradient"),
                guided,
                "guided gradient",
                atol=1e-6,
                mistakes={"no_guided_relus": plain},
            )
            expect_model_as_built(observed["after"], build_model(spec), x)


def q2_restores_after_error(ctx: Context) -> None:
    """An exception inside the block still leaves the model exactly as built."""
    (seed,) = ctx.seeds(1)
    spec = {"kind": "squeezenet", "seed": seed}
    x = images(seed, 1, (40, 48))
    observed = ctx.scenario("guided_relus_block", model=spec, x=x, unit=1, raise_inside=True)
    try:
        expect_model_as_built(observed["after"], build_model(spec), x)
    except Failure as failure:
        raise Failure(str(failure), "not_restored_on_error") from None


def _check_guided(ctx: Context, spec: dict[str, Any], batch: np.ndarray, labels: Any) -> None:
    model = build_model(spec)
    probe_input = batch[:1]
    observed = ctx.call("guided_backprop", {"model": spec}, batch, labels, probe_input=probe_input)
    chosen = None if labels is None else torch.as_tensor(labels)
    expected = cu.guided_backprop(model, torch.from_numpy(batch), chosen)
    got = tensor(observed["result"], "guided gradients")
    mistakes = {}
    if len(batch) == 1:
        mistakes["squeeze_all"] = expected[0]
    expect_close(got, expected, "guided gradients", atol=1e-6, mistakes=mistakes)
    expect_inputs_untouched(observed["inputs"], [None, batch, labels])
    expect_model_as_built(observed["models"][0], model, probe_input)


def q3_matches_reference_random(ctx: Context) -> None:
    """Random nets, given and predicted labels, and a batch of one.

    The nets come in train mode: eval mode is the student's job.
    """
    (seed,) = ctx.seeds(1)
    batch = images(seed, 3)
    labels = torch.randint(0, 5, (3,), generator=torch.Generator().manual_seed(seed)).numpy()
    for spec in _nets(seed):
        spec = {**spec, "train": True}
        for chosen in (labels, None):
            _check_guided(ctx, spec, batch, chosen)
    _check_guided(ctx, {"kind": "squeezenet", "seed": seed, "train": True}, batch[:1], labels[:1])


def q3_shapes_network(ctx: Context) -> None:
    """The course's trained shapes network in train mode."""
    (seed,) = ctx.seeds(1)
    shapes = cu.make_shapes(6, seed=seed)
    batch = shapes_to_tensor(shapes.images).numpy()
    _check_guided(ctx, {"kind": "shapes", "seed": 0, "train": True}, batch, shapes.labels)


QUESTIONS = {
    "q1": Question(3, (q1_forward_uses_addcmul, q1_random_tensors)),
    "q2": Question(3, (q2_fire_relu6_inplace, q2_restores_after_error)),
    "q3": Question(4, (q3_matches_reference_random, q3_shapes_network)),
}
