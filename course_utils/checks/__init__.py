"""Checks that diagnose: run a learner's function, print what was compared, name the mistake.

Every ``check_*`` function takes the learner's implementation, runs it on small seeded
inputs, compares it with the reference in :mod:`course_utils` (or with hand-computed
numbers) and prints one line per comparison, CS231n style::

    forward vs relu: max abs diff 0.0e+00 ✓
    backward vs guided rule: max abs diff 2.0e+00 ✗

On failure it raises :class:`CheckFailed` (an ``AssertionError``) whose message names the
likely mistake from :data:`MISTAKES` and a hint::

    Likely mistake: plain backprop rule instead of the guided rule — negative incoming
    gradients were passed through
    Hint: your backward is g·1[x > 0] ...

Example:
    >>> from course_utils import GuidedReLU
    >>> from course_utils.checks import check_guided_relu
    >>> check_guided_relu(GuidedReLU.apply)  # doctest: +ELLIPSIS
    forward vs relu: ...
    check_guided_relu: all checks passed ✓
"""

from ._core import MISTAKES, CheckFailed, Mistake
from .basics import (
    check_channel_weights,
    check_guided_relu,
    check_normalize,
    check_select_scores,
    check_upsample,
    check_weighted_cam,
)
from .end_to_end import check_grad_cam, check_guided_backprop
from .gradients import check_class_gradient, check_recorder, check_swap_relus

__all__ = [
    "MISTAKES",
    "CheckFailed",
    "Mistake",
    "check_channel_weights",
    "check_class_gradient",
    "check_grad_cam",
    "check_guided_backprop",
    "check_guided_relu",
    "check_normalize",
    "check_recorder",
    "check_select_scores",
    "check_swap_relus",
    "check_upsample",
    "check_weighted_cam",
]
