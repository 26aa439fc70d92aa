"""Checks for stage 4 (:mod:`course_utils.pooling`): channel weights and the weighted map."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..pooling import channel_weights, weighted_cam
from .mistakes import CheckFailed, fail, graded
from .probes import as_tensor, call, first_in_stage_order, on_meta, passed, report, same, seeded

__all__ = ["check_channel_weights", "check_weighted_cam"]


@graded
def check_channel_weights(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(gradients (N, C, h, w)) -> (N, C)`` against the hand-computed mean.

    First ``arange`` gradients of shape ``(2, 3, 2, 4)``: image ``n``, channel ``c`` has the
    mean ``32n + 8c + 3.5``, so the sum (×8), the wrong axes and a leftover ``keepdim`` give
    recognisably different numbers. Then signed gradients of shape ``(3, 5, 3, 2)`` (N ≠ C,
    h ≠ w), where a ReLU or ``abs`` on the gradients shows; one image with one channel, where a
    bare ``squeeze()`` removes the batch; and the ``meta`` device.
    """
    grads = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4)
    expected = torch.tensor([[3.5, 11.5, 19.5], [27.5, 35.5, 43.5]])
    assert torch.equal(expected, channel_weights(grads))  # the hand computation is right
    with seeded(7):
        signed = torch.randn(3, 5, 3, 2)
    for what, g, exp in [
        ("weights vs hand-computed means", grads, expected),
        ("weights of signed (3, 5, 3, 2) gradients", signed, channel_weights(signed)),
        (
            "weights of one image, one channel (1, 1, 3, 2)",
            signed[:1, :1],
            signed[:1, :1].mean((2, 3)),
        ),
    ]:
        got = as_tensor(call(fn, g.clone()), "the weights").float()
        n, c = exp.shape
        if n == 1 and got.dim() < 2:
            fail(
                "squeeze_all",
                f"one image with one channel gave shape {tuple(got.shape)}, expected (1, 1)",
            )
        if got.shape == (n, c, 1, 1) and same(got.flatten(1), exp):
            fail("keepdim", f"shape {tuple(got.shape)}, expected ({n}, {c})")
        if not report(what, got, exp):
            found = []
            for key, wrong in [
                ("sum_not_mean", g.sum(dim=(2, 3))),
                ("gradients_rectified", g.relu().mean(dim=(2, 3))),
                ("gradients_rectified", g.abs().mean(dim=(2, 3))),
            ]:
                if same(got, wrong):
                    found.append(
                        (
                            [key],
                            f"{what}: got {[round(v, 3) for v in got.flatten()[:3].tolist()]} ...",
                        )
                    )
            first_in_stage_order(found)
            if g is signed and got.shape == expected.shape:
                fail("hardcoded_batch_size", f"shape {tuple(got.shape)}, the first probe's")
            if got.shape != exp.shape:
                fail("wrong_dims", f"shape {tuple(got.shape)}, expected (N, C) = ({n}, {c})")
            fail("wrong_values", f"{what}: the weights differ from the spatial means")
    on_meta(lambda: call(fn, torch.empty(3, 5, 3, 2, device="meta")), "the weights")
    passed("check_channel_weights")


def _cam_candidates(acts: torch.Tensor, weights: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    weighted = weights[:, :, None, None] * acts
    out = [
        ("missing_relu", weighted.sum(1)),
        ("relu_before_sum", weighted.clamp(min=0).sum(1)),
        ("mean_over_channels", weighted.sum(1).clamp(min=0) / acts.shape[1]),
        ("weights_mismatched", (weights[:1, :, None, None] * acts).sum(1).clamp(min=0)),
        ("weights_mismatched", (weights.flip(0)[:, :, None, None] * acts).sum(1).clamp(min=0)),
    ]
    if weights.shape[0] == weights.shape[1]:
        out.append(("weights_mismatched", weighted_cam(acts, weights.T.contiguous())))
    return out


@graded
def check_weighted_cam(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(activations (N, C, h, w), weights (N, C)) -> (N, h, w)``.

    Three images, two channels (N ≠ C), a 1×3 map with hand-computed numbers: weights
    (1, -1), (2, 1), (-1, 1) on maps (1, 2, 3) and (3, 1, 0) give sums (-2, 1, 3), (5, 5, 6),
    (2, -1, -3) before the ReLU. A function that fails there is rerun on a square probe
    (N = C) to tell transposed weights from other mistakes. Then a batch of one (a bare
    ``squeeze()`` removes it) and the ``meta`` device.
    """
    acts = torch.tensor([[[[1.0, 2.0, 3.0]], [[3.0, 1.0, 0.0]]]] * 3)
    weights = torch.tensor([[1.0, -1.0], [2.0, 1.0], [-1.0, 1.0]])
    expected = torch.tensor([[[-2.0, 1.0, 3.0]], [[5.0, 5.0, 6.0]], [[2.0, -1.0, -3.0]]]).relu()
    assert torch.equal(expected, weighted_cam(acts, weights))
    with seeded(8):
        square_acts, square_weights = torch.randn(3, 3, 2, 4), torch.randn(3, 3)
    for what, a, w in [
        ("map vs hand-computed", acts, weights),
        ("square probe (N = C = 3)", square_acts, square_weights),
        ("one image (1, 3, 2, 4)", square_acts[:1], square_weights[:1]),
    ]:
        exp = weighted_cam(a, w)
        try:
            got = as_tensor(call(fn, a.clone(), w.clone()), "the map").float()
        except CheckFailed as exc:
            if a is acts and exc.mistake.key == "crashed":
                square = as_tensor(call(fn, square_acts, square_weights), "the map")
                if same(square.float(), weighted_cam(square_acts, square_weights.T.contiguous())):
                    fail("weights_mismatched", f"{exc.detail}; on N = C it uses weights.T")
            raise
        if a.shape[0] == 1 and got.dim() < 3:
            fail("squeeze_all", f"one image gave shape {tuple(got.shape)}, expected (1, h, w)")
        if got.shape == (a.shape[0], 1, *a.shape[2:]):
            fail("keepdim", f"shape {tuple(got.shape)}, expected (N, h, w): no channel dimension")
        if not report(what, got, exp):
            detail = (
                f"{what}: got {got.flatten(1)[:2].tolist()}, expected {exp.flatten(1)[:2].tolist()}"
            )
            first_in_stage_order(
                [([key], detail) for key, wrong in _cam_candidates(a, w) if same(got, wrong)]
            )
            kind = "wrong_shape" if got.shape != exp.shape else "wrong_values"
            fail(kind, detail)
    on_meta(
        lambda: call(fn, torch.empty(3, 2, 4, 5, device="meta"), torch.empty(3, 2, device="meta")),
        "the map",
    )
    passed("check_weighted_cam")
