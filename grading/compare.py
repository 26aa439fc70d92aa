"""Judging observations in the grader process: rebuild tensors, compare, name the mistake.

A failed check raises :class:`Failure` with a message for the instructor (it may quote
values) and the key of the likely mistake in ``course_utils.checks.MISTAKES`` — the same
catalogue the course notebooks use — for the student's feedback file, which never quotes
hidden inputs or values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from grading.scenarios import probe


class Failure(AssertionError):
    """A hidden test failed; ``mistake`` names the likely cause (a ``MISTAKES`` key)."""

    def __init__(self, message: str, mistake: str = "wrong_values") -> None:
        """Keep the instructor's message and the mistake key."""
        super().__init__(message)
        self.mistake = mistake


def tensor(observed: Any, what: str) -> torch.Tensor:
    """An observed tensor (``{"array": ndarray, "requires_grad": bool}``) as a torch tensor."""
    if not (
        isinstance(observed, dict)
        and set(observed) == {"array", "requires_grad"}
        and type(observed["array"]) is np.ndarray
    ):
        raise Failure(f"{what}: expected one tensor", "wrong_shape")
    return torch.from_numpy(observed["array"])


def tensors(observed: Any, count: int, what: str) -> list[torch.Tensor]:
    """A tuple of ``count`` observed tensors."""
    if not isinstance(observed, list) or len(observed) != count:
        raise Failure(f"{what}: expected a tuple of {count} tensors", "wrong_shape")
    return [tensor(o, f"{what}[{i}]") for i, o in enumerate(observed)]


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> bool:
    if actual.shape != expected.shape or not actual.is_floating_point():
        return False
    a, e = actual.to(torch.float64), expected.detach().to(torch.float64)
    if not bool(torch.isfinite(a).all()):
        return False
    return bool(((a - e).abs() <= _tolerance(e, atol, rtol)).all())


def _tolerance(expected: torch.Tensor, atol: float, rtol: float) -> float:
    """The tolerance ``atol + rtol * max|expected|``.

    Relative to the tensor's scale, not each element's, so float32 rounding that differs
    between two processes (e.g. oneDNN choosing another kernel for another memory alignment)
    never fails a near-zero element.
    """
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    return atol + rtol * scale


def expect_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    what: str,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    mistakes: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """``actual`` must have ``expected``'s shape, a floating dtype and close, finite values.

    ``mistakes`` maps a ``MISTAKES`` key to what that mistake would return on the same
    inputs: the first one that ``actual`` matches names the failure.
    """
    if _close(actual, expected, atol, rtol):
        return
    for key, wrong in (mistakes or {}).items():
        if _close(actual, wrong, atol, rtol):
            raise Failure(f"{what}: matches the mistake {key!r}", key)
    if tuple(actual.shape) != tuple(expected.shape):
        raise Failure(
            f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}", "wrong_shape"
        )
    if not actual.is_floating_point():
        raise Failure(f"{what}: dtype {actual.dtype}, expected floating point", "wrong_values")
    if not bool(torch.isfinite(actual).all()):
        raise Failure(f"{what}: contains NaN or inf", "wrong_values")
    excess = (actual.double() - expected.double()).abs() - _tolerance(expected, atol, rtol)
    index = int(excess.flatten().argmax())
    raise Failure(
        f"{what}: values differ (element {index}: {float(actual.flatten()[index]):.6g}, "
        f"expected {float(expected.flatten()[index]):.6g})"
    )


def expect_inputs_untouched(
    observed: list[Any], sent: list[Any], mistake: str = "mutates_images"
) -> None:
    """Every tensor argument is as the grader sent it, without ``requires_grad`` or ``.grad``."""
    for index, (after, before) in enumerate(zip(observed, sent, strict=False)):
        if not isinstance(before, np.ndarray):
            continue
        if not isinstance(after, dict) or type(after.get("array")) is not np.ndarray:
            raise Failure(f"argument {index} was not observed after the call", mistake)
        if after["requires_grad"] or after["has_grad"]:
            raise Failure(f"argument {index} got requires_grad or a .grad", mistake)
        if after["array"].shape != before.shape or not np.array_equal(
            after["array"], before, equal_nan=True
        ):
            raise Failure(f"argument {index} was modified in place", mistake)


def expect_model_as_built(observed: Any, model: nn.Module, probe_input: np.ndarray) -> None:
    """The sandbox's model after the call behaves exactly like the grader's untouched copy.

    ``model`` is the grader's own copy, built from the same spec. Its plain output and input
    gradient must match the sandbox's (a leftover hook, a guided ReLU left in place or a
    changed weight changes the gradient); its modules, training flags, hooks and
    ``param.grad`` must be as built.
    """
    if not isinstance(observed, dict):
        raise Failure("the model was not observed after the call", "hooks_left")
    expected = probe(model, torch.from_numpy(probe_input))
    if observed.get("types") != expected["types"]:
        raise Failure("modules were replaced or added", "permanent_swap")
    if observed.get("hooks") != 0:
        raise Failure(f"{observed.get('hooks')} hooks left on the model", "hooks_left")
    if observed.get("training") != expected["training"]:
        raise Failure("training flags were not restored", "no_eval")
    if observed.get("param_grads") != 0:
        raise Failure(
            "param.grad was set (backward() instead of autograd.grad)", "accumulating_grads"
        )
    for key in ("out", "grad"):
        got = observed.get(key)
        if type(got) is not np.ndarray or not _close(
            torch.from_numpy(got), torch.from_numpy(expected[key]), 1e-6, 1e-4
        ):
            raise Failure(f"the model behaves differently after the call ({key})", "hooks_left")
