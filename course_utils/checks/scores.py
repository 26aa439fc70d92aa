"""Checks for stage 2 (:mod:`course_utils.scores`): selecting scores, the class gradient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..scores import select_scores
from .mistakes import CheckFailed, fail, graded
from .probes import (
    LABELS,
    WRONG_TARGETS,
    as_tensor,
    call,
    first_in_stage_order,
    guarded_call,
    input_gradient,
    meta_copy,
    on_meta,
    passed,
    probe_images,
    report,
    run_gradient_probes,
    same,
    seeded,
    snapshot,
    tiny_net,
)

__all__ = ["check_class_gradient", "check_select_scores", "nchw"]


def _select_once(
    fn: Callable[[torch.Tensor, torch.Tensor], Any], what: str, s: torch.Tensor, lab: torch.Tensor
) -> None:
    s = s.clone().requires_grad_(True)
    try:
        out = call(fn, s, lab)
    except CheckFailed as exc:  # indexing out of range: the class index went to dim 0
        cause = exc.__cause__
        if exc.mistake.key == "crashed" and s.shape[0] < s.shape[1]:
            fail("gather_dim", f"{what}: {type(cause).__name__}: {cause}")
        raise
    out = as_tensor(out, "the selected scores")
    expected = select_scores(s, lab)
    n = s.shape[0]
    if n == 1 and out.dim() == 0:
        fail("squeeze_all", f"a batch of one gave shape {tuple(out.shape)}, expected (1,)")
    if out.shape == (n, 1):
        fail("no_squeeze", f"{what}: shape {tuple(out.shape)}, expected ({n},)")
    if not report(what, out.detach(), expected.detach()):
        detached, got = s.detach(), out.detach()
        found = []
        if int(lab.max()) < n and same(got, detached[lab, 0]):
            found.append((["gather_dim"], "you picked scores[labels[i], 0]"))
        if same(got, detached.amax(1)):
            found.append((["predicted_not_labels"], "you returned each row's maximum"))
        for probabilities in (detached.softmax(1), detached.log_softmax(1), detached.sigmoid()):
            if same(got, select_scores(probabilities, lab)):
                found.append((["softmax_not_score"], "you returned (log-)probabilities"))
        first_in_stage_order(found)
        kind = "wrong_shape" if out.shape != expected.shape else "wrong_values"
        fail(kind, f"{what}: got shape {tuple(out.shape)}, expected {tuple(expected.shape)}")
    if not out.requires_grad:
        fail("not_differentiable", "the selected scores do not require grad")


@graded
def check_select_scores(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(scores, labels) -> (N,)`` picking ``scores[i, labels[i]]``.

    Probes: a rectangular ``(4, 6)`` and a tall ``(7, 3)`` score matrix with signed values
    (a wrong ``gather`` dimension indexes out of range or picks other entries), labels that
    differ from the predicted classes, a batch of one (``squeeze()`` makes it 0-d), and the
    ``meta`` device (a one-hot or index tensor created on the CPU).
    """
    with seeded(2):
        scores = torch.randn(4, 6)
        tall = torch.randn(7, 3)
    probes = [("(4, 6) scores", scores), ("(7, 3) scores", tall), ("batch of one", scores[:1])]
    for i, (what, s) in enumerate(probes):
        try:
            _select_once(fn, what, s.contiguous(), s.argmin(dim=1))  # never the prediction
        except CheckFailed as exc:
            if i and exc.mistake.key == "crashed":
                key = "squeeze_all" if s.shape[0] == 1 else "hardcoded_batch_size"
                fail(key, f"{what}: works for a batch of 4, fails here: {exc.detail}")
            raise

    def run() -> None:
        s = torch.empty(4, 6, device="meta", requires_grad=True)
        call(fn, s, torch.tensor([5, 0, 2, 1], device="meta"))

    on_meta(run, "selection")
    passed("check_select_scores")


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


def diagnose_targets(
    got: torch.Tensor,
    gradient: Callable[[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]], torch.Tensor],
) -> list[tuple[list[str], str]]:
    """Which wrong target (what was differentiated) ``got`` matches, as candidate mistakes."""
    scale = float(got.abs().max()) or 1.0
    found = []
    for key, target in WRONG_TARGETS:
        candidate = gradient(target)
        if got.shape == candidate.shape and torch.allclose(
            got, candidate, rtol=1e-3, atol=1e-4 * scale
        ):
            found.append(([key], "your gradient is that of another quantity than the class score"))
    return found


@graded
def check_class_gradient(fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]) -> None:
    """Check ``fn(model, images, labels) -> ∂score/∂images`` of shape ``(N, C, H, W)``.

    Runs on a small seeded CNN with Dropout and non-square images. Besides agreement with
    the reference, probes that image ``i``'s gradient depends on ``labels[i]`` only (one-hot
    over the batch, hard-coded backward vector, softmax), that a model in train mode gives
    the same answer (eval), that a second call on the same tensor does too (accumulation),
    that the caller's ``images`` and the model's ``param.grad`` come back untouched, batches
    of one and four, and the ``meta`` device.
    """
    model = tiny_net()
    images = probe_images(3)
    before = snapshot(model)

    def wrapped(m: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nchw(guarded_call(fn, model, before, m, x, labels), x, "the gradient")

    def diagnose(got: torch.Tensor) -> None:
        first_in_stage_order(
            diagnose_targets(got, lambda t: input_gradient(model, images, LABELS, target=t))
        )

    run_gradient_probes(
        wrapped, model, images, lambda x, lab: input_gradient(model, x, lab), "gradient", diagnose
    )
    on_meta(
        lambda: call(fn, meta_copy(model), images.to("meta"), LABELS.to("meta")), "the gradient"
    )
    passed("check_class_gradient")
