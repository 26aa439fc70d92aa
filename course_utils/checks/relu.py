"""Check for stage 1 (:mod:`course_utils.relu`): the guided ReLU rule on every device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .mistakes import CheckFailed, fail, graded
from .probes import as_tensor, call, passed, report

__all__ = ["check_guided_relu"]

# Every sign combination of input x and incoming gradient g, so the three rules differ.
_X = torch.tensor([[-2.0, -1.0, 1.0, 2.0], [3.0, -3.0, 0.0, -0.5]])  # 0: the mask is x > 0
_G = torch.tensor([[1.0, -1.0, 2.0, -2.0], [-1.5, 1.5, 0.5, 4.0]])


def _relu_backward(fn: Callable[..., Any], x: torch.Tensor, g: torch.Tensor) -> tuple[Any, Any]:
    x = x.clone().requires_grad_(True)
    original = x.detach().clone()
    y = call(fn, x)
    if not isinstance(y, torch.Tensor) or not y.requires_grad:
        fail("not_differentiable", "the output does not require grad, so no backward can run")
    if x.device.type != "meta" and not torch.equal(x.detach(), original):
        fail("inplace_input", "the input tensor changed during the call")
    if y.shape != x.shape:
        fail("wrong_shape", f"output shape {tuple(y.shape)} for an input of {tuple(x.shape)}")
    call(y.backward, g)
    return y, x.grad


@graded
def check_guided_relu(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check a guided ReLU ``fn(x) -> y`` such as ``MyGuidedReLU.apply``.

    Compares forward with ``relu`` and backward with the guided rule
    ``g·1[x > 0]·1[g > 0]`` on a 2×4 example covering every sign combination, then reruns on
    float64, float16 and on the ``'meta'`` device (and CUDA when available) to catch code that
    only works for float32 CPU tensors.

    Example:
        >>> from course_utils import GuidedReLU
        >>> check_guided_relu(GuidedReLU.apply)  # doctest: +ELLIPSIS
        forward vs relu: max abs diff 0.0e+00 ✓
        ...

    """
    y, grad = _relu_backward(fn, _X, _G)
    y = as_tensor(y, "forward output")
    if not report("forward vs relu", y.detach(), torch.relu(_X)):
        fail("forward_not_relu", "the forward output is not max(x, 0)")
    guided = _G * (_X > 0) * (_G > 0)
    if grad is None:
        fail("not_differentiable", "x.grad is None after backward")
    if not report("backward vs guided rule", grad, guided):
        if torch.equal(grad, _G * (_X > 0)):
            fail("backprop_rule", "negative incoming gradients were passed through")
        if torch.equal(grad, _G * (_G > 0)):
            fail("deconvnet_rule", "gradients flowed where the input was negative")
        fail("wrong_values", "the backward pass matches none of the three ReLU rules")
    devices = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])
    runs = [(torch.float64, "cpu"), (torch.float16, "cpu")]
    for dtype, device in runs + [(torch.float32, d) for d in devices]:
        try:
            y, grad = _relu_backward(fn, _X.to(device, dtype), _G.to(device, dtype))
        except CheckFailed as exc:
            error = exc.__cause__ or exc.mistake.name
            fail("cpu_only_zeros", f"fails for a {dtype} tensor on {device!r}: {error}")
        ok = y.dtype == dtype and y.device.type == device and grad.device.type == device
        print(
            f"{str(dtype)[6:]} on {device}: output {str(y.dtype)[6:]} on {y.device.type} "
            f"{'✓' if ok else '✗'}"
        )
        if not ok:
            fail("cpu_only_zeros", f"a {dtype} input on {device!r} gave {y.dtype} on {y.device}")
        if device != "meta" and not report(f"{device} backward", grad.cpu().float(), guided):
            fail("wrong_values", f"the backward differs on {device} {dtype}")
    passed("check_guided_relu")
