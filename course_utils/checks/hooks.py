"""Check for stage 3 (:mod:`course_utils.hooks`): recording a layer with hooks."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ..cam import layer_activation_and_gradient
from ..scores import select_scores
from .mistakes import CheckFailed, fail, graded
from .probes import (
    LABELS,
    as_tensor,
    assert_model_intact,
    call,
    first_in_stage_order,
    meta_copy,
    on_meta,
    passed,
    probe_images,
    report,
    same,
    snapshot,
    tiny_net,
)

__all__ = ["check_layer_recorder"]

#: The layers recorded: a top-level conv and a conv nested in a block; both are followed by
#: ``ReLU(inplace=True)``.
LAYERS = ("conv", "block.0")


def _record(
    fn: Any, model: nn.Module, layer: str, images: torch.Tensor, labels: torch.Tensor
) -> tuple[Any, Any]:
    if inspect.isclass(fn):
        recorder: Any = fn  # a context-manager class with .activation and .gradient
        with recorder(model, layer) as rec:
            select_scores(model(images.clone()), labels).sum().backward()
        return rec.activation, rec.gradient
    result = fn(model, layer, images.clone(), labels)
    if not isinstance(result, tuple) or len(result) != 2:
        fail("wrong_shape", f"expected (activation, gradient), got {type(result).__name__}")
    return result


def _other_layers(
    model: nn.Module, layer: str, act: torch.Tensor, grad: torch.Tensor | None
) -> list[tuple[list[str], str]]:
    found = []
    for name, _ in model.named_modules():
        if name in ("", layer):
            continue
        try:
            other_act, other_grad = layer_activation_and_gradient(
                model, probe_images(3), LABELS, layer=name
            )
        except (ValueError, RuntimeError):  # layers without a tensor output, or no gradient
            continue
        if same(act, other_act) or (grad is not None and same(grad, other_grad)):
            found.append((["wrong_layer"], f"asked for {layer!r}, got the output of {name!r}"))
    return found


@graded
def check_layer_recorder(fn: Any) -> None:
    """Check a layer recorder on a CNN whose recorded convs are followed by in-place ReLUs.

    ``fn`` is either a function ``fn(model, layer_name, images, labels) -> (activation,
    gradient)`` or a context-manager class ``fn(model, layer_name)`` with ``.activation`` and
    ``.gradient`` filled while the block runs ``model(images)`` and backpropagates
    ``select_scores(scores, labels).sum()``. Two layers are recorded, a top-level one and a
    nested one named with a dot (``"block.0"``). Probes: agreement with
    :func:`course_utils.layer_activation_and_gradient`, hooks left on the model, the
    deprecated ``register_backward_hook``, the in-place ReLU (full backward hooks raise, an
    un-cloned activation is overwritten), the wrong layer, and the ``meta`` device.
    """
    model = tiny_net()
    images = probe_images(3)
    for layer in LAYERS:
        exp_act, exp_grad = layer_activation_and_gradient(model, images, LABELS, layer=layer)
        before = snapshot(model)
        try:
            act, grad = call(_record, fn, model, layer, images, LABELS)
        except CheckFailed as exc:
            if "BackwardHookFunction" in str(exc.__cause__):
                fail("full_hook_inplace", str(exc.__cause__).split(". ")[0])
            raise
        assert_model_intact(model, before, params=False)
        print(f"{layer}: hooks removed, no deprecated hook ✓")
        act = as_tensor(act, "the activation").detach().float()
        grad = None if grad is None else as_tensor(grad, "the gradient").detach().float()
        if not report(f"{layer}: activation", act, exp_act):
            aliased = grad is None or same(grad, exp_grad)  # the gradient is still ∂/∂A
            if aliased and same(act, exp_act.relu()) and (exp_act < 0).any():
                fail("inplace_alias", "your activation equals ReLU(activation)")
            first_in_stage_order(_other_layers(model, layer, act, grad))
            kind = "wrong_shape" if act.shape != exp_act.shape else "wrong_values"
            fail(kind, f"the activation differs from the output of {layer!r}")
        if grad is None:
            fail("not_differentiable", "no gradient was recorded")
        if not report(f"{layer}: gradient", grad, exp_grad):
            first_in_stage_order(_other_layers(model, layer, act, grad))
            kind = "wrong_shape" if grad.shape != exp_grad.shape else "wrong_values"
            fail(kind, f"the gradient differs from ∂score/∂activation of {layer!r}")

    meta = meta_copy(model)
    on_meta(
        lambda: call(_record, fn, meta, "conv", images.to("meta"), LABELS.to("meta")),
        "recording",
    )
    passed("check_layer_recorder")
