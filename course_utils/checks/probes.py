"""Probes shared by the checks: printed comparisons, probe models and inputs, model integrity.

Every check runs the learner's function on small seeded inputs, prints one line per
comparison (``✓``/``✗`` with the max abs diff) and, on failure, raises a
:class:`~course_utils.checks.mistakes.CheckFailed` naming the mistake. What several checks
need lives here once: the comparison helpers, :func:`call` (a learner's exception becomes a
named failure, never a crash of the check), the ``meta``-device probe that finds tensors
created on the CPU without a GPU, and :func:`assert_model_intact`, the one assertion that a
model came back exactly as it was.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..hooks import evaluating
from ..relu import guided_relus
from ..scores import select_scores
from .mistakes import MISTAKES, STAGE_ORDER, CheckFailed, fail

# -- comparisons that print ---------------------------------------------------------------


def as_tensor(value: Any, what: str) -> torch.Tensor:
    """Accept a tensor or a numpy array as a learner's output; anything else is a shape error."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype != object:
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


def same(got: torch.Tensor, candidate: torch.Tensor, rtol: float = 1e-3) -> bool:
    """Shape-safe "is this the candidate?" test for diagnoses (never raises on shapes)."""
    return got.shape == candidate.shape and close(got, candidate, rtol)


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
    """Call the learner's function; an exception becomes a named failure (never a crash)."""
    try:
        return fn(*args, **kwargs)
    except CheckFailed:
        raise
    except NotImplementedError as exc:
        raise CheckFailed(MISTAKES["not_attempted"], "NotImplementedError") from exc
    except Exception as exc:  # the learner's bug, reported with its type and message
        raise CheckFailed(MISTAKES["crashed"], f"{type(exc).__name__}: {exc}") from exc


def accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes a parameter called ``name`` (or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


def first_in_stage_order(found: Iterable[tuple[list[str], str]]) -> None:
    """Fail with the earliest-stage mistake of the simplest candidate explanation, if any.

    One mistake that explains the output beats a combination that does too; among equally
    simple explanations, and inside a combination, the earliest stage is named first.

    Args:
        found: ``(mistake keys, detail)`` for each candidate wrong computation that the
            learner's output matched; several keys mean a combination of mistakes.

    """
    ranked = sorted(found, key=lambda kd: (len(kd[0]), min(STAGE_ORDER[k] for k in kd[0])))
    if ranked:
        keys, detail = ranked[0]
        first = min(keys, key=STAGE_ORDER.__getitem__)
        others = [MISTAKES[k].name for k in keys if k != first]
        also = f" (also: {', '.join(others)}; fix this one first)" if others else ""
        fail(first, detail + also)


# -- devices ---------------------------------------------------------------------------------

#: Messages PyTorch gives when tensors of two devices meet.
DEVICE_CLASH = re.compile(
    r"expected device|same device|two devices|not on the expected device|device type", re.I
)


def _zeros_like_on_cpu(t: torch.Tensor) -> torch.Tensor:
    """Stand-in values for a ``meta`` tensor: zeros, and True for tests (``isfinite().all()``)."""
    return (
        torch.ones(t.shape, dtype=t.dtype)
        if t.dtype == torch.bool
        else torch.zeros(t.shape, dtype=t.dtype)
    )


def _moves_to_cpu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    return isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu"


_READS_VALUES = (
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__bool__,
    torch.Tensor.__index__,
)


class _MetaStandsForAGpu(TorchFunctionMode):
    """Let code read values off ``meta`` tensors as it could off a GPU: zeros stand in.

    ``.cpu()``, ``.to("cpu")``, ``.numpy()``, ``.item()`` and ``.tolist()`` of a ``meta``
    tensor would raise (there are no values); returning zeros lets the learner's code run on
    to the line where a CPU tensor meets a device tensor, which is the clash a GPU shows.
    """

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        tensor = args[0] if args else None
        if isinstance(tensor, torch.Tensor) and tensor.is_meta:
            if func is torch.Tensor.cpu or (
                func is torch.Tensor.to and _moves_to_cpu(args, kwargs)
            ):
                return _zeros_like_on_cpu(tensor)
            if func is torch.Tensor.numpy:
                return _zeros_like_on_cpu(tensor).numpy()
            if func in _READS_VALUES:
                return func(_zeros_like_on_cpu(tensor))
        return func(*args, **kwargs)


def on_meta(run: Callable[[], Any], what: str) -> None:
    """Run ``run`` (which builds its inputs on the ``meta`` device) and name a device clash.

    ``meta`` tensors have shapes but no data, so they stand in for a GPU on any machine: a
    tensor the learner creates on the CPU clashes with them exactly as it would with CUDA
    tensors. Values read off them come back as zeros (:class:`_MetaStandsForAGpu`); other
    errors prove nothing and are ignored.
    """
    try:
        with _MetaStandsForAGpu():
            run()
    except CheckFailed as exc:
        cause = exc.__cause__
        if cause is not None and DEVICE_CLASH.search(str(cause)):
            fail("cpu_only_tensor", f"{what} on the 'meta' device: {cause}")
        print(f"{what} on the 'meta' device: not testable here (no values on meta) ✓")
        return
    print(f"{what} on the 'meta' device: no CPU-only tensor ✓")


# -- probe models and inputs -------------------------------------------------------------------


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
        """Scores ``(N, K)`` of a batch ``(N, C, H, W)``."""
        return self.head(self.block(self.relu(self.conv(x))))


def tiny_net() -> TinyNet:
    """A freshly initialised :class:`TinyNet` in eval mode (the same weights every time)."""
    with seeded(0):
        return TinyNet().eval()


def probe_images(n: int, seed: int = 1) -> torch.Tensor:
    """``n`` seeded random images ``(n, 3, 8, 10)`` (non-square)."""
    with seeded(seed):
        return torch.randn(n, 3, 8, 10)


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the ``meta`` device (the original keeps its weights)."""
    return copy.deepcopy(model).to("meta")


# -- the model comes back exactly as it was ----------------------------------------------------

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


def _ruined(model: nn.Module, before: list[tuple[str, int]]) -> str | None:
    now = dict(structure(model))
    for name, ident in before:
        if now.get(name) != ident:
            module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            replaced = module._modules.get(name.rsplit(".", 1)[-1])
            return f"model entry {name!r} is now {type(replaced).__name__}, not the original module"
    for name, module in model.named_modules():
        if "forward" in vars(module):
            return f"module {name or 'model'!r} has its forward replaced"
    for probe in (lambda: model.train(model.training), model.state_dict):
        try:
            probe()
        except Exception as exc:  # the damage we are looking for
            return f"the model no longer works: {type(exc).__name__}: {exc}"
    return None


def input_gradient(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    guided: Iterable[nn.Module] = (),
    *,
    target: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    eval_mode: bool = True,
) -> torch.Tensor:
    """``∂ target(scores, labels) / ∂ images`` with just the ``guided`` modules made guided.

    The default target is ``select_scores(scores, labels).sum()``, so this is the plain
    gradient of each image's class score (no ``guided``) or guided backprop (every ReLU).
    ``eval_mode=False`` leaves the training flags alone, for models the learner's code has
    just rebuilt (``model.eval()`` would crash on a function stored among the modules).
    """
    guided = list(guided)
    with ExitStack() as stack:
        if eval_mode:
            stack.enter_context(evaluating(model))
        if guided:  # guided_relus refuses an empty selection
            stack.enter_context(guided_relus(model, only=guided))
        stack.enter_context(torch.enable_grad())
        x = images.detach().clone().requires_grad_(True)
        scores = model(x)
        score = select_scores(scores, labels).sum() if target is None else target(scores, labels)
        (grad,) = torch.autograd.grad(score, x)
    return grad


@dataclass
class Snapshot:
    """What :func:`assert_model_intact` compares against: taken before the learner's call."""

    structure: list[tuple[str, int]]
    hooks: int
    plain: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # images, labels, gradient


def snapshot(model: nn.Module, probe: tuple[torch.Tensor, torch.Tensor] | None = None) -> Snapshot:
    """Record ``model``'s modules, hooks and (given probe images and labels) plain gradient.

    Every parameter's ``.grad`` is cleared, so any gradient found later was the learner's.
    """
    for param in model.parameters():
        param.grad = None
    plain = None
    if probe is not None:
        images, labels = probe
        plain = (images, labels, input_gradient(model, images, labels))
    return Snapshot(structure(model), count_hooks(model), plain)


def guarded_call(
    fn: Callable[..., Any], model: nn.Module, before: Snapshot, *args: Any, **kwargs: Any
) -> Any:
    """Call the learner's ``fn`` and assert ``model`` intact afterwards, also when it raised.

    A crash that left the model damaged is named after the damage, its cause.
    """
    try:
        out = call(fn, *args, **kwargs)
    except CheckFailed:
        assert_model_intact(model, before)
        raise
    assert_model_intact(model, before)
    return out


def assert_model_intact(
    model: nn.Module, before: Snapshot, *, when: str = "after your call", params: bool = True
) -> None:
    """The one "model left intact" assertion: fail naming what the learner's code changed.

    In order: replaced modules or forwards, a model that no longer works, hooks left behind,
    the deprecated backward hook, parameter gradients filled (unless ``params=False``), and
    — when the snapshot holds one — a plain gradient that is no longer plain (a guided swap
    that outlived the call, whatever form it took).
    """
    damage = _ruined(model, before.structure)
    if damage:
        fail("permanent_swap", f"{when}: {damage}")
    left = count_hooks(model) - before.hooks
    if left:
        fail("hooks_left", f"{when}: {left} hook(s) still registered on the model")
    deprecated = deprecated_hook_modules(model)
    if deprecated:
        fail("deprecated_backward_hook", f"register_backward_hook was used on {deprecated}")
    filled = [n for n, p in model.named_parameters() if p.grad is not None]
    if params and filled:
        for param in model.parameters():
            param.grad = None
        fail("param_grads", f"{when}: {len(filled)} parameter(s) have .grad, e.g. {filled[0]!r}")
    if before.plain is not None:
        images, labels, plain = before.plain
        if not close(input_gradient(model, images, labels), plain):
            fail("permanent_swap", f"{when}: the model's plain gradient is no longer plain")


# -- the probes of every "gradient of a class score" check -----------------------------------

#: Labels for a batch of three; the second set shares no class with the first, the third
#: keeps image 0's label and changes the others.
LABELS = torch.tensor([1, 3, 0])
OTHER_LABELS = torch.tensor([2, 4, 2])
NEIGHBOUR_LABELS = torch.tensor([1, 4, 2])
#: A batch of four, so code written for three images shows.
FOUR_LABELS = torch.tensor([2, 0, 4, 1])

Target = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _onehot_batch_sum(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    every = torch.zeros(scores.shape[1], dtype=scores.dtype)
    every[labels] = 1.0
    return (scores * every).sum()


#: Wrong things to differentiate, by the mistake they stand for (the right one is
#: ``select_scores(scores, labels).sum()``).
WRONG_TARGETS: list[tuple[str, Target]] = [
    ("onehot_batch_sum", _onehot_batch_sum),
    ("predicted_not_labels", lambda s, lab: s.amax(dim=1).sum()),
    ("hardcoded_backward", lambda s, lab: s.sum()),
    ("hardcoded_backward", lambda s, lab: s[:, 0].sum()),
    ("softmax_not_score", lambda s, lab: select_scores(s.softmax(dim=1), lab).sum()),
    ("softmax_not_score", lambda s, lab: select_scores(s.log_softmax(dim=1), lab).sum()),
    ("softmax_not_score", lambda s, lab: select_scores(s.sigmoid(), lab).sum()),
]

GradientFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def run_gradient_probes(
    fn: GradientFn,
    model: nn.Module,
    images: torch.Tensor,
    reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    what: str,
    diagnose: Callable[[torch.Tensor], None],
) -> None:
    """The probes shared by every "gradient of a class score" check, in stage order.

    ``fn(model, images, labels)`` (the caller's wrapper: converts the output and asserts the
    model intact) must match ``reference(images, labels)``. On a mismatch ``diagnose(got)``
    searches the catalogue's wrong computations (it fails when one matches), then the label
    probes run. Afterwards: train mode (no eval), the same tensor twice (accumulation), the
    caller's images, batches of one and four.
    """

    def fresh(labels: torch.Tensor) -> torch.Tensor:
        with seeded(5):
            return fn(model, images.clone(), labels)

    expected = reference(images, LABELS)
    got = fresh(LABELS)
    if not report(f"{what} vs reference", got, expected):
        if got.isnan().any():
            fail("nan_zero_map", f"{int(got.isnan().sum())} NaN values")
        diagnose(got)
        with seeded(6):
            again = fn(model, images.clone(), LABELS)
        model.eval()
        if not torch.allclose(again, got):
            fail("no_eval", "two calls on the same images differ: Dropout is active")
        if torch.allclose(fresh(OTHER_LABELS), got):
            fail("hardcoded_backward", "other labels gave the same result")
        if not torch.allclose(fresh(NEIGHBOUR_LABELS)[0], got[0]):
            fail(
                "onehot_batch_sum",
                "image 0's result changed when only the *other* images' labels changed",
            )
        fail("wrong_values", f"{what} differs from the reference")

    other = fresh(OTHER_LABELS)
    if not report(f"{what} for other labels", other, reference(images, OTHER_LABELS)):
        fail("hardcoded_backward", "right for the example's labels, wrong for other labels")

    model.train()
    in_train = fresh(LABELS)
    left_in_train = model.training
    model.eval()
    if not report(f"{what}, model handed over in train mode", in_train, expected):
        fail("no_eval", "results differ when the model comes in train mode (Dropout active)")
    if not left_in_train:
        print(
            "note: the model came in train mode and was handed back in eval mode; "
            "course_utils.evaluating(model) restores the caller's flag"
        )

    images = images.clone()
    first = fn(model, images, LABELS).clone()
    second = fn(model, images, LABELS)
    if not report(f"{what}, second call on the same tensor", second, expected):
        if torch.allclose(second, first * 2, rtol=1e-3, atol=1e-7):
            fail("accumulating_grads", "the second call returned twice the first")
        fail("wrong_values", "the second call on the same images differs from the first")
    untouched = not images.requires_grad and images.grad is None
    print(f"caller's images untouched: {'✓' if untouched else '✗'}")
    if not untouched:
        fail(
            "mutates_images",
            f"images.requires_grad={images.requires_grad}, "
            f"images.grad is {'set' if images.grad is not None else 'None'}",
        )
    other_batch_sizes(fn, model, images, reference, what)


def other_batch_sizes(
    fn: GradientFn,
    model: nn.Module,
    images: torch.Tensor,
    reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    what: str,
) -> None:
    """Batches of four and of one: a hard-coded size fails both, ``squeeze()`` only the one."""
    four = torch.cat([images, images[:1].flip(-1)])
    results: dict[int, CheckFailed | None] = {}
    for n, x, labels in [(4, four, FOUR_LABELS), (1, images[:1], LABELS[:1])]:
        try:
            got = fn(model, x.clone(), labels)
        except CheckFailed as exc:
            results[n] = exc
            continue
        results[n] = None
        if not report(f"{what}, batch of {n}", got, reference(x, labels)):
            if n == 4:
                fail("hardcoded_batch_size", "a batch of four gives other values")
            fail("wrong_values", "a batch of one differs from the reference")
    four_failed, one_failed = results[4], results[1]
    if four_failed is not None and one_failed is not None:
        if four_failed.mistake.key in ("crashed", "wrong_shape"):
            fail("hardcoded_batch_size", f"batches of 4 and 1 fail: {four_failed.detail}")
        raise four_failed
    if four_failed is not None:
        raise four_failed
    if one_failed is not None:
        if one_failed.mistake.key in ("crashed", "wrong_shape", "squeeze_all"):
            fail("squeeze_all", f"only a batch of one fails: {one_failed.detail}")
        raise one_failed
