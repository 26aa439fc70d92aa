"""Checks for the gradient machinery: class gradients, layer recorders, swapping ReLUs."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from ..cam import layer_activation_and_gradient
from ..guided import guided_backprop
from ..hooks import evaluating
from ..relu import guided_relus, relu_modules
from ..scores import select_scores
from ._core import (
    CheckFailed,
    as_tensor,
    call,
    close,
    count_hooks,
    deprecated_hook_modules,
    fail,
    passed,
    probe_images,
    report,
    ruined,
    seeded,
    structure,
    tiny_net,
)

__all__ = ["check_class_gradient", "check_recorder", "check_swap_relus"]

GradientFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]

#: Labels for a batch of three; the second set shares no class with the first, the third
#: keeps image 0's label and changes the others.
LABELS = torch.tensor([1, 3, 0])
OTHER_LABELS = torch.tensor([2, 4, 2])
NEIGHBOUR_LABELS = torch.tensor([1, 4, 2])


def input_gradient(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    guided: Iterable[nn.Module] = (),
    *,
    eval_mode: bool = True,
) -> torch.Tensor:
    """``∂ score[i, labels[i]] / ∂ images[i]``, with just the ``guided`` activation modules
    made guided by :func:`course_utils.guided_relus` (none: the plain gradient).

    The checks' reference for partly guided models; with every ReLU guided it equals
    :func:`course_utils.guided_backprop`. ``eval_mode=False`` leaves the training flags
    alone, for models the learner's code has just rebuilt (``model.eval()`` would crash on
    a function stored among the modules).
    """
    guided = list(guided)
    with ExitStack() as stack:
        if eval_mode:
            stack.enter_context(evaluating(model))
        if guided:  # guided_relus refuses an empty selection
            stack.enter_context(guided_relus(model, only=guided))
        stack.enter_context(torch.enable_grad())
        x = images.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(select_scores(model(x), labels).sum(), x)
    return grad


def nchw(value: Any, like: torch.Tensor, what: str) -> torch.Tensor:
    """The learner's gradient as ``(N, C, H, W)``; numpy ``(N, H, W, C)`` is transposed."""
    got = as_tensor(value, what)
    n, c, h, w = like.shape
    if got.shape == (n, h, w, c) and got.shape != like.shape:
        got = got.permute(0, 3, 1, 2)
    if got.shape != like.shape:
        hint = " (a batch dimension was squeezed away)" if got.dim() < 4 else ""
        key = "squeeze_all" if n == 1 and got.dim() < 4 else "wrong_shape"
        fail(key, f"{what} has shape {tuple(got.shape)}, expected {tuple(like.shape)}{hint}")
    return got.detach().float()


def run_gradient_probes(
    fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    model: nn.Module,
    images: torch.Tensor,
    reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    what: str,
    diagnose: Callable[[torch.Tensor], None] | None = None,
) -> None:
    """The probes shared by every "gradient of a class score" check.

    ``fn(model, images, labels)`` must return a tensor comparable with
    ``reference(images, labels)`` (already converted by the caller's ``fn`` wrapper). In order:
    agreement in eval mode (on failure ``diagnose(got)`` gets the first word, then the label
    probes: the predicted class, labels ignored, one-hot over the batch), train mode (no
    eval), the same tensor twice (accumulation), and the caller's images afterwards.
    """

    def fresh(labels: torch.Tensor) -> torch.Tensor:
        with seeded(5):
            return fn(model, images.clone(), labels)

    expected = reference(images, LABELS)
    got = fresh(LABELS)
    if not report(f"{what} vs reference", got, expected):
        if got.shape != expected.shape:
            fail("wrong_shape", f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
        if got.isnan().any():
            fail("nan_zero_map", f"{int(got.isnan().sum())} NaN values")
        if diagnose is not None:
            diagnose(got)
        if torch.allclose(fresh(OTHER_LABELS), got):
            with evaluating(model), torch.no_grad():
                predicted = model(images).argmax(dim=1)
            if close(got, reference(images, predicted)):
                fail(
                    "predicted_not_labels",
                    "your result is the one for the predicted "
                    f"classes {predicted.tolist()}, not for the labels {LABELS.tolist()}",
                )
            fail("hardcoded_backward", "other labels gave the same result")
        neighbour = fresh(NEIGHBOUR_LABELS)
        if not torch.allclose(neighbour[0], got[0]):
            fail(
                "onehot_batch_sum",
                "image 0's result changed when only the *other* images' labels changed",
            )
        fail("wrong_values", f"{what} differs from the reference")

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


def check_class_gradient(fn: GradientFn) -> None:
    """Check ``fn(model, images, labels) -> ∂score/∂images`` of shape ``(N, C, H, W)``.

    Runs on a small seeded CNN with Dropout. Besides agreement with the reference, probes
    that image ``i``'s gradient depends on ``labels[i]`` only (one-hot over the batch,
    hard-coded backward vector), that a model in train mode gives the same answer (eval),
    that a second call on the same tensor does too (accumulation), and that the caller's
    ``images`` come back without ``requires_grad`` or ``.grad``.
    """
    model = tiny_net()
    images = probe_images(3)

    def wrapped(m: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nchw(call(fn, m, x, labels), x, "the gradient")

    run_gradient_probes(
        wrapped, model, images, lambda x, lab: input_gradient(model, x, lab), "gradient"
    )
    passed("check_class_gradient")


def check_recorder(fn: Any) -> None:
    """Check a layer recorder on a CNN whose recorded conv is followed by ``ReLU(inplace=True)``.

    ``fn`` is either a function ``fn(model, layer_name, images, labels) -> (activation,
    gradient)`` or a context-manager class ``fn(model, layer_name)`` with ``.activation`` and
    ``.gradient`` filled while the block runs ``model(images)`` and backpropagates
    ``select_scores(scores, labels).sum()``. Probes: agreement with
    :func:`course_utils.layer_activation_and_gradient`, hooks left on the model, the
    deprecated ``register_backward_hook``, and the in-place ReLU (full backward hooks raise,
    an un-cloned activation is overwritten).
    """
    model = tiny_net()
    images = probe_images(3)
    exp_act, exp_grad = layer_activation_and_gradient(model, images, LABELS, layer="conv")
    hooks = count_hooks(model)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        if inspect.isclass(fn):
            with fn(model, "conv") as rec:
                select_scores(model(images.clone()), LABELS).sum().backward()
            return rec.activation, rec.gradient
        return fn(model, "conv", images.clone(), LABELS)

    try:
        act, grad = call(run)
    except CheckFailed as exc:
        if "BackwardHookFunction" in str(exc.__cause__):
            fail("full_hook_inplace", str(exc.__cause__).split(". ")[0])
        raise
    left = count_hooks(model) - hooks
    print(f"hooks left on the model: {left} {'✓' if left == 0 else '✗'}")
    if left:
        fail("hooks_left", f"{left} hook(s) still registered after the call")
    deprecated = deprecated_hook_modules(model)
    if deprecated:
        fail("deprecated_backward_hook", f"register_backward_hook was used on {deprecated}")
    act = as_tensor(act, "the activation").detach()
    if not report("activation", act, exp_act):
        if torch.allclose(act, exp_act.relu()):
            fail("inplace_alias", "your activation equals ReLU(activation)")
        fail("wrong_values", "the activation differs from the layer's output")
    if grad is None:
        fail("not_differentiable", "no gradient was recorded")
    if not report("gradient", as_tensor(grad, "the gradient").detach(), exp_grad):
        fail("wrong_values", "the gradient differs from ∂score/∂activation")
    passed("check_recorder")


class SwapNet(nn.Module):
    """Probe model: a top-level ReLU, a ReLU nested two deep (like Fire) and a ReLU6.

    Half the ReLU6's channels are shifted to straddle 6, so code that treats ReLU6 as a
    ReLU (no clipping in the forward, no ``x < 6`` mask in the backward) shows.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Sequential(nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(inplace=True))),
            nn.Conv2d(6, 8, 1),
            nn.ReLU6(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5))
        with torch.no_grad():
            self.features[3].bias[:4] += 6.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def check_swap_relus(fn: Callable[[nn.Module], Any]) -> None:
    """Check ``fn(model)``, a context manager making every ReLU/ReLU6 guided inside ``with``.

    On a model with a top-level ReLU, a nested one and a ReLU6: the input gradient inside
    the block must equal :func:`course_utils.guided_backprop` (ReLU6 keeps its clipping at
    6), and afterwards the model must be exactly as before — same module objects, no hooks,
    plain gradients — also when the block raises. A function that modifies the model and
    returns ``None`` is accepted so the check can tell you what it broke.
    """
    with seeded(6):
        model = SwapNet().eval()
    images = probe_images(2)
    labels = LABELS[:2]
    relus = [m for _, m in relu_modules(model)]
    expected = guided_backprop(model, images, labels)
    plain = input_gradient(model, images, labels)
    before, hooks = structure(model), count_hooks(model)

    ctx = call(fn, model)
    if not hasattr(ctx, "__enter__"):
        damage = ruined(model, before) or "fn(model) returned no context manager"
        if damage.startswith("fn") and torch.allclose(input_gradient(model, images, labels), plain):
            fail("wrong_values", f"{damage}; use @contextmanager and yield inside try/finally")
        fail("permanent_swap", damage)

    def inside() -> torch.Tensor:
        with ctx:
            return input_gradient(model, images, labels, eval_mode=False)

    got = call(inside)  # an error of the learner's hooks shows up in this backward pass
    damage = ruined(model, before)
    print(f"model intact after the block: {'✓' if damage is None else '✗'}")
    if damage:
        fail("permanent_swap", damage)
    if count_hooks(model) != hooks:
        fail("hooks_left", f"{count_hooks(model) - hooks} hook(s) left after the block")
    if not report(
        "gradient after the block vs plain", input_gradient(model, images, labels), plain
    ):
        fail("permanent_swap", "the model is still guided after the block")
    if not report("gradient inside the block vs guided", got, expected):
        nested = model.features[2][0][1]
        relu6 = model.features[4]
        for key, skipped in [
            ("no_guided_relus", relus),
            ("missed_nested", [nested]),
            ("relu6_missed", [relu6]),
            ("missed_nested", [nested, relu6]),
        ]:
            partial = [m for m in relus if all(m is not s for s in skipped)]
            if torch.allclose(got, input_gradient(model, images, labels, guided=partial)):
                fail(
                    key,
                    f"the gradient matches guided backprop without {len(skipped)} "
                    "of the activation modules",
                )
        fail("wrong_values", "the gradient inside the block is not the guided gradient")

    ctx = call(fn, model)
    try:
        with ctx:
            raise KeyboardInterrupt  # stands for any error inside the learner's block
    except KeyboardInterrupt:
        pass
    damage = ruined(model, before) or ("hooks left" if count_hooks(model) != hooks else None)
    if damage is None and not torch.allclose(input_gradient(model, images, labels), plain):
        damage = "the model stays guided"
    print(f"model restored after an error inside the block: {'✓' if damage is None else '✗'}")
    if damage:
        fail("not_restored_on_error", damage)
    passed("check_swap_relus")
