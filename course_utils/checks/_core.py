"""Shared machinery of the checks: the mistake catalogue, comparisons that print, probes.

Every check follows the same pattern: run the learner's function on small seeded inputs,
print one line per comparison (``✓``/``✗`` with the max abs diff), and on failure raise a
:class:`CheckFailed` naming the most likely mistake from :data:`MISTAKES` with its hint.
The hints are written once, here, so the notebooks and the tests agree on them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

__all__ = ["MISTAKES", "CheckFailed", "Mistake"]


@dataclass(frozen=True)
class Mistake:
    """A classic mistake: a short ``name`` shown to the learner and a ``hint`` to fix it."""

    key: str
    name: str
    hint: str


# fmt: off
_CATALOGUE = [
    # -- generic ---------------------------------------------------------------------------
    Mistake("crashed", "your function raised an error",
            "read the traceback above; the check calls your function exactly as the "
            "exercise describes (argument order, shapes, dtypes)"),
    Mistake("wrong_shape", "wrong output shape",
            "print the shape of every intermediate tensor and compare it with the docstring"),
    Mistake("wrong_values", "wrong values",
            "compare your intermediate tensors with the course_utils reference step by step"),
    Mistake("not_differentiable", "output not connected to autograd",
            "do not call .detach(), .item(), .numpy() or torch.tensor(...) on values that "
            "must be differentiated; keep everything as torch operations"),
    # -- stage 1: ReLU masking -------------------------------------------------------------
    Mistake("forward_not_relu", "forward is not a ReLU",
            "the forward pass must return x where x > 0 and 0 elsewhere: "
            "torch.addcmul(x.new_zeros(()), x, (x > 0).type_as(x))"),
    Mistake("backprop_rule", "plain backprop rule instead of the guided rule",
            "your backward is g·1[x > 0] (the true ReLU derivative); guided backprop also "
            "zeroes negative incoming gradients: multiply by (grad_output > 0) as well"),
    Mistake("deconvnet_rule", "deconvnet rule instead of the guided rule",
            "your backward is g·1[g > 0] and ignores the forward input; save the mask "
            "(x > 0) in forward with ctx.save_for_backward and multiply by it too"),
    Mistake("cpu_only_zeros", "CPU-only torch.zeros(x.size())",
            "torch.zeros(x.size()) always makes a float32 tensor on the CPU, so the function "
            "breaks for CUDA tensors (and other devices/dtypes); use x.new_zeros(()) or "
            "torch.zeros_like(x), which follow x's device and dtype"),
    Mistake("inplace_input", "modified the input in place",
            "an in-place op (x.clamp_(), x[x < 0] = 0, relu_) changed the caller's tensor; "
            "build a new tensor instead"),
    # -- stage 2: class scores -------------------------------------------------------------
    Mistake("squeeze_all", "squeeze() of a batch of one",
            "squeeze() removes every size-1 dimension: for a batch of one the (1, 1) gathered "
            "scores become a 0-d tensor; use .squeeze(1) (or .view(-1)) to drop only the "
            "column you added"),
    Mistake("gather_dim", "gather along the wrong dimension",
            "classes are dimension 1 of the (N, K) scores: "
            "scores.gather(1, labels.view(-1, 1)).squeeze(1)"),
    Mistake("no_squeeze", "the gathered column was not squeezed",
            "gather(1, labels.view(-1, 1)) returns shape (N, 1); drop that column with "
            ".squeeze(1) to get (N,)"),
    Mistake("predicted_not_labels", "used the predicted class instead of the labels",
            "pick scores[i, labels[i]], not the maximum score; the labels say which class "
            "to explain"),
    Mistake("onehot_batch_sum", "one-hot target summed over the batch",
            "each image received the gradient of every label in the batch; backpropagate "
            "each image's own score: select_scores(scores, labels).sum(), or a one-hot "
            "matrix of shape (N, K) multiplied element-wise with the scores (not summed "
            "over the batch first)"),
    Mistake("hardcoded_backward", "hard-coded backward vector",
            "the gradients do not depend on the labels: you backpropagated a fixed class or "
            "torch.ones over all classes; backpropagate the selected scores, e.g. "
            "selected.backward(torch.ones_like(selected)) with selected = scores[i, labels[i]]"),
    Mistake("accumulating_grads", "input gradients accumulating across calls",
            "backward() adds to images.grad, so a second call returns the sum of both; work "
            "on a fresh copy x = images.detach().clone().requires_grad_(True) and use "
            "torch.autograd.grad(score, x)"),
    Mistake("mutates_images", "modified the caller's images",
            "requires_grad_() and .grad were set on the caller's tensor; differentiate with "
            "respect to a private copy: x = images.detach().clone().requires_grad_(True)"),
    Mistake("no_eval", "no model.eval()",
            "in train mode Dropout zeroes random units (results change from call to call) and "
            "BatchNorm uses batch statistics; run the model in eval mode "
            "(with course_utils.evaluating(model): ...) and restore the flag afterwards"),
    # -- stage 3: hooks --------------------------------------------------------------------
    Mistake("hooks_left", "hooks never removed",
            "every register_*_hook returns a handle; call handle.remove() in a finally "
            "block (or use a context manager), otherwise each call adds more hooks"),
    Mistake("deprecated_backward_hook", "deprecated register_backward_hook",
            "the non-full hook reports gradients of the module's *last operation*, which is "
            "not the module's output gradient in general; use register_full_backward_hook, "
            "or better a tensor hook on the output (output.register_hook)"),
    Mistake("full_hook_inplace", "full backward hook on a layer followed by an in-place ReLU",
            "register_full_backward_hook wraps the layer's output in a view that the next "
            "ReLU(inplace=True) is not allowed to modify; record the gradient with a tensor "
            "hook on the output and hand the network a clone (return output.clone() from the "
            "forward hook)"),
    Mistake("inplace_alias", "activation overwritten by an in-place ReLU",
            "the stored activation shares memory with the tensor that the next "
            "ReLU(inplace=True) overwrites, so you recorded ReLU(A) instead of A; store "
            "output.detach().clone() or return output.clone() from the forward hook"),
    # -- stage 4: pooling ------------------------------------------------------------------
    Mistake("sum_not_mean", "sum instead of mean",
            "the channel weight is the *average* gradient over the h·w positions: "
            "gradients.mean(dim=(2, 3))"),
    Mistake("wrong_dims", "pooled over the wrong dimensions",
            "average over the spatial dimensions only: (N, C, h, w).mean(dim=(2, 3)) -> (N, C)"),
    Mistake("keepdim", "kept the pooled dimensions",
            "the weights must have shape (N, C); drop keepdim=True (or .flatten(1))"),
    Mistake("missing_relu", "missing ReLU",
            "Grad-CAM keeps only positive evidence: apply torch.relu to the weighted sum"),
    Mistake("relu_before_sum", "ReLU applied before the weighted sum",
            "sum first, then ReLU: relu(Σ_k α_k A^k), not Σ_k relu(α_k A^k)"),
    Mistake("mean_over_channels", "mean instead of sum over channels",
            "the map is the weighted *sum* Σ_k α_k A^k over channels (dim 1)"),
    Mistake("weights_mismatched", "weights not matched to their image",
            "image i must use its own weights α[i]: (weights[:, :, None, None] * "
            "activations).sum(dim=1)"),
    # -- stage 5: upsampling and normalisation ---------------------------------------------
    Mistake("hw_swap", "(H, W) vs (W, H) swap",
            "PIL's Image.resize takes (width, height) but tensor.shape[-2:] is "
            "(height, width); with F.interpolate pass size=(H, W)"),
    Mistake("align_corners", "align_corners=True",
            "use align_corners=False: pixels are areas, the convention of image libraries"),
    Mistake("bicubic_overshoot", "bicubic interpolation overshoots",
            "bicubic rings: it produces values below the map's minimum (negative heat) and "
            "above its maximum; use mode='bilinear'"),
    Mistake("nearest", "nearest-neighbour interpolation",
            "nearest gives blocky maps; use mode='bilinear' with align_corners=False"),
    Mistake("per_batch_norm", "per-batch normalisation",
            "you took min/max over the whole batch, so one bright image dims the others; "
            "normalise each image separately (maps.flatten(1).min(dim=1) / .max(dim=1))"),
    Mistake("nan_zero_map", "NaN on an all-zero map",
            "an all-zero map has max - min = 0, and 0 / 0 is NaN; map flat maps to zeros "
            "(torch.where(span > 0, ..., 0))"),
    Mistake("flat_not_zero", "flat map not mapped to zeros",
            "a constant map has no evidence anywhere; return zeros for it, not ones or 0.5"),
    Mistake("inplace_normalize", "normalised the caller's maps in place",
            "cam -= cam.min() changes the caller's tensor; compute a new tensor "
            "(maps - low) / span instead"),
    # -- stage 6: swapping ReLUs -----------------------------------------------------------
    Mistake("permanent_swap", "ReLUs swapped permanently",
            "model._modules[name] = GuidedReLU.apply leaves a function where a module was: "
            "model.eval()/state_dict() crash and the model stays guided; attach forward hooks "
            "and remove them on exit (course_utils.guided_relus)"),
    Mistake("missed_nested", "nested ReLUs missed (e.g. inside Fire modules)",
            "iterate over model.modules() (every depth), not model.children() or "
            "model.features only"),
    Mistake("relu6_missed", "ReLU6 not handled",
            "nn.ReLU6 is not a subclass of nn.ReLU; include it (isinstance(m, (nn.ReLU, "
            "nn.ReLU6)))"),
    Mistake("no_guided_relus", "no ReLU was made guided",
            "the gradient equals plain backprop; make every nn.ReLU module use the guided rule"),
    Mistake("not_restored_on_error", "model not restored when the block raises",
            "undo the change in a finally block (a @contextmanager with try/finally), so an "
            "exception inside `with` still leaves the model as it was"),
]
# fmt: on

#: Every mistake the checks can name, by key.
MISTAKES: dict[str, Mistake] = {m.key: m for m in _CATALOGUE}


class CheckFailed(AssertionError):
    """A check failed; ``mistake`` is the catalogue entry the check blames.

    The message reads ``Likely mistake: <name> — <what was observed>`` followed by the hint.
    """

    def __init__(self, mistake: Mistake, detail: str) -> None:
        self.mistake = mistake
        super().__init__(f"Likely mistake: {mistake.name} — {detail}\nHint: {mistake.hint}")


def fail(key: str, detail: str) -> NoReturn:
    """Raise :class:`CheckFailed` for catalogue entry ``key``."""
    raise CheckFailed(MISTAKES[key], detail)


def as_tensor(value: Any, what: str) -> torch.Tensor:
    """Accept a tensor or a numpy array as a learner's output; anything else is a shape error."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    fail("wrong_shape", f"{what} should be a tensor, got {type(value).__name__}")


def max_diff(got: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest absolute difference (``inf`` for NaN or mismatched shapes)."""
    if got.shape != expected.shape:
        return float("inf")
    diff = (got.detach().double().cpu() - expected.detach().double().cpu()).abs()
    return float("inf") if diff.isnan().any() else float(diff.max()) if diff.numel() else 0.0


def close(got: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> bool:
    """Equal up to ``rtol`` relative to the largest reference value (float32 round-off)."""
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    return max_diff(got, expected) <= rtol * max(scale, 1e-6)


def report(what: str, got: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> bool:
    """Print ``what: max abs diff … ✓/✗`` and return whether ``got`` matches ``expected``."""
    ok = close(got, expected, rtol)
    if got.shape != expected.shape:
        print(f"{what}: shape {tuple(got.shape)}, expected {tuple(expected.shape)} ✗")
    else:
        scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
        # Tiny gradients (random-weight networks) are judged relative to their scale.
        rel = f" (relative {max_diff(got, expected) / scale:.1e})" if 0 < scale < 1e-2 else ""
        print(f"{what}: max abs diff {max_diff(got, expected):.1e}{rel} {'✓' if ok else '✗'}")
    return ok


def passed(name: str) -> None:
    """The closing line of a successful check."""
    print(f"{name}: all checks passed ✓")


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the learner's function; an exception becomes a ``crashed`` failure naming it."""
    try:
        return fn(*args, **kwargs)
    except CheckFailed:
        raise
    except Exception as exc:  # the learner's bug, reported with its type and message
        raise CheckFailed(MISTAKES["crashed"], f"{type(exc).__name__}: {exc}") from exc


def accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes a parameter called ``name`` (or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


# -- model state probes ------------------------------------------------------------------

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def count_hooks(model: nn.Module) -> int:
    """Number of module hooks registered anywhere in ``model``."""
    return sum(len(getattr(m, d, {})) for m in model.modules() for d in _HOOK_DICTS)


def deprecated_hook_modules(model: nn.Module) -> list[str]:
    """Modules on which the deprecated ``register_backward_hook`` was ever called.

    Registering a non-full hook sets ``module._is_full_backward_hook = False``, and removing
    the handle does not reset it, so the trace survives a tidy learner.
    """
    return [n or "model" for n, m in model.named_modules() if m._is_full_backward_hook is False]


def structure(model: nn.Module) -> list[tuple[str, int]]:
    """``(name, id)`` of every entry of every ``_modules`` dict, to spot swapped modules."""
    out = []
    stack: list[tuple[str, Any]] = [("", model)]
    while stack:
        prefix, module = stack.pop()
        for name, child in getattr(module, "_modules", {}).items():
            out.append((prefix + name, id(child)))
            if isinstance(child, nn.Module):
                stack.append((prefix + name + ".", child))
    return out


def ruined(model: nn.Module, before: list[tuple[str, int]]) -> str | None:
    """Describe how ``model`` was damaged compared with :func:`structure` ``before``."""
    now = dict(structure(model))
    for name, ident in before:
        if now.get(name) != ident:
            module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            replaced = module._modules.get(name.rsplit(".", 1)[-1])
            return f"model entry {name!r} is now {type(replaced).__name__}, not the original module"
    for probe in (lambda: model.train(model.training), model.state_dict):
        try:
            probe()
        except Exception as exc:  # the damage we are looking for
            return f"the model no longer works: {type(exc).__name__}: {exc}"
    return None


@contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """Run a block with a fixed torch seed, restoring the global RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class TinyNet(nn.Module):
    """A small CNN for probes: conv → in-place ReLU → nested block → dropout → linear.

    Attributes ``conv`` (output followed by an in-place ReLU) and ``block`` (a Fire-like
    module with its own ReLU) are the layers the hook checks record.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.block = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(32, 5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.relu(self.conv(x))))


def tiny_net() -> TinyNet:
    """A freshly initialised :class:`TinyNet` in eval mode (the same weights every time)."""
    with seeded(0):
        return TinyNet().eval()


def probe_images(n: int) -> torch.Tensor:
    """``n`` seeded random images ``(n, 3, 8, 10)``."""
    with seeded(1):
        return torch.randn(n, 3, 8, 10)
