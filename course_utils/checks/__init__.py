"""Checks that diagnose: run a learner's function, print what was compared, name the mistake.

One file per stage, named like the reference it checks against (``relu``, ``scores``,
``hooks``, ``pooling``, ``upsample``, ``guided``, ``cam``); the mistake catalogue with its hint
ladders and the list of exercises live in :mod:`.mistakes`, the probes every check shares
(printed comparisons, the ``meta``-device probe, the one "model left intact" assertion) in
:mod:`.probes`.

Every ``check_*`` function takes the learner's implementation, runs it on small seeded
inputs, compares it with the reference in :mod:`course_utils` (or with hand-computed
numbers) and prints one line per comparison::

    forward vs relu: max abs diff 0.0e+00 ✓
    backward vs guided rule: max abs diff 2.0e+00 ✗

On failure it raises :class:`CheckFailed` (an ``AssertionError``) naming the likely mistake
from :data:`MISTAKES` with the first hint of its ladder; :func:`hint` gives the next one and,
after a failed attempt, :func:`solution` the worked solution.

Example:
    >>> from course_utils import GuidedReLU
    >>> from course_utils.checks import check_guided_relu
    >>> check_guided_relu(GuidedReLU.apply)  # doctest: +ELLIPSIS
    forward vs relu: ...
    check_guided_relu: all checks passed ✓

"""

from .cam import check_grad_cam
from .guided import check_guided_backprop, check_guided_relus, check_relu_modules
from .hooks import check_layer_recorder
from .mistakes import EXERCISES, MISTAKES, CheckFailed, Exercise, Mistake, hint, solution
from .pooling import check_channel_weights, check_weighted_cam
from .relu import check_guided_relu
from .scores import check_class_gradient, check_select_scores
from .upsample import check_normalize_per_image, check_upsample

__all__ = [
    "EXERCISES",
    "MISTAKES",
    "CheckFailed",
    "Exercise",
    "Mistake",
    "check_channel_weights",
    "check_class_gradient",
    "check_grad_cam",
    "check_guided_backprop",
    "check_guided_relu",
    "check_guided_relus",
    "check_layer_recorder",
    "check_normalize_per_image",
    "check_relu_modules",
    "check_select_scores",
    "check_upsample",
    "check_weighted_cam",
    "hint",
    "solution",
]
