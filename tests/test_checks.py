"""The mistake catalogue: every classic mistake is caught by its check and named.

For each wrong implementation in ``tests/mistakes.py`` the matching check must raise an
``AssertionError`` whose message names that mistake (its catalogue name and hint), and the
reference implementations from ``course_utils`` must pass every check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import mistakes as m
import mistakes_fresh
import pytest
import torch

import course_utils as cu
from course_utils.cam import layer_activation_and_gradient
from course_utils.checks import (
    MISTAKES,
    CheckFailed,
    check_channel_weights,
    check_class_gradient,
    check_grad_cam,
    check_guided_backprop,
    check_guided_relu,
    check_guided_relus,
    check_layer_recorder,
    check_normalize_per_image,
    check_relu_modules,
    check_select_scores,
    check_upsample,
    check_weighted_cam,
)

# The deprecated-hook implementation makes torch warn, as it should for a learner.
pytestmark = pytest.mark.filterwarnings("ignore:Using a non-full backward hook:FutureWarning")


def reference_class_gradient(model: Any, images: torch.Tensor, labels: Any) -> torch.Tensor:
    with cu.evaluating(model):
        x = images.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(cu.select_scores(model(x), labels).sum(), x)
    return grad


def reference_recorder(model: Any, layer: str, images: torch.Tensor, labels: Any) -> Any:
    return layer_activation_and_gradient(model, images, labels, layer=layer)


CORRECT: list[tuple[Callable[[Any], None], Any]] = [
    (check_guided_relu, cu.GuidedReLU.apply),
    (check_select_scores, cu.select_scores),
    (check_class_gradient, reference_class_gradient),
    (check_class_gradient, m.learner_guided_backprop(guided="none")),
    (check_layer_recorder, reference_recorder),
    (check_layer_recorder, cu.LayerRecorder),
    (check_relu_modules, cu.relu_modules),
    (check_guided_relus, cu.guided_relus),
    (check_channel_weights, cu.channel_weights),
    (check_weighted_cam, cu.weighted_cam),
    (check_upsample, cu.upsample),
    (check_normalize_per_image, cu.normalize_per_image),
    (check_guided_backprop, cu.guided_backprop),
    (check_guided_backprop, m.learner_guided_backprop()),
    (check_guided_backprop, lambda model, x, y: cu.GradCam().guided_backprop(x, y, model)),
    (check_grad_cam, cu.grad_cam),
    (check_grad_cam, m.learner_grad_cam()),
]

WRONG: list[tuple[str, Callable[[Any], None], Any, str]] = [
    # (id, check, wrong implementation, catalogue key it must name)
    ("not-attempted", check_weighted_cam, m.not_attempted, "not_attempted"),
    ("relu-cpu-zeros", check_guided_relu, m.CpuZerosReLU.apply, "cpu_only_zeros"),
    ("relu-backprop", check_guided_relu, m.BackpropRuleReLU.apply, "backprop_rule"),
    ("relu-deconvnet", check_guided_relu, m.DeconvRuleReLU.apply, "deconvnet_rule"),
    ("relu-inplace", check_guided_relu, m.InplaceForwardReLU.apply, "inplace_input"),
    ("relu-leaky", check_guided_relu, m.leaky_forward, "forward_not_relu"),
    ("scores-squeeze", check_select_scores, m.squeeze_all, "squeeze_all"),
    ("scores-gather-dim", check_select_scores, m.gather_dim0, "gather_dim"),
    ("scores-no-squeeze", check_select_scores, m.no_squeeze, "no_squeeze"),
    ("scores-predicted", check_select_scores, m.predicted, "predicted_not_labels"),
    ("scores-detached", check_select_scores, m.detached, "not_differentiable"),
    ("grad-onehot-sum", check_class_gradient, m.onehot_batch_sum, "onehot_batch_sum"),
    ("grad-ones", check_class_gradient, m.ones_backward, "hardcoded_backward"),
    ("grad-class0", check_class_gradient, m.class0_backward, "hardcoded_backward"),
    ("grad-predicted", check_class_gradient, m.predicted_gradient, "predicted_not_labels"),
    ("grad-no-eval", check_class_gradient, m.no_eval_gradient, "no_eval"),
    ("grad-accumulate", check_class_gradient, m.accumulating_gradient, "accumulating_grads"),
    ("grad-mutates", check_class_gradient, m.mutating_gradient, "mutates_images"),
    ("rec-hooks-left", check_layer_recorder, m.hooks_left, "hooks_left"),
    ("rec-deprecated", check_layer_recorder, m.deprecated_hook, "deprecated_backward_hook"),
    ("rec-full-inplace", check_layer_recorder, m.full_hook_inplace, "full_hook_inplace"),
    ("rec-alias", check_layer_recorder, m.aliased_activation, "inplace_alias"),
    ("find-children", check_relu_modules, m.relus_among_children, "missed_nested"),
    ("find-relu6", check_relu_modules, m.relus_without_relu6, "relu6_missed"),
    ("find-name-test", check_relu_modules, m.relus_by_class_name, "other_activations"),
    ("find-no-names", check_relu_modules, m.relus_without_names, "modules_without_names"),
    ("find-bad-names", check_relu_modules, m.relus_named_by_hand, "wrong_module_names"),
    ("swap-permanent", check_guided_relus, m.permanent_swap, "permanent_swap"),
    ("swap-nested", check_guided_relus, m.top_level_only, "missed_nested"),
    ("swap-relu6", check_guided_relus, m.relu_only, "relu6_missed"),
    ("swap-hooks-left", check_guided_relus, m.hooks_never_removed, "hooks_left"),
    ("swap-no-finally", check_guided_relus, m.no_finally, "not_restored_on_error"),
    ("swap-nothing", check_guided_relus, m.nothing_guided, "no_guided_relus"),
    ("swap-full-hooks", check_guided_relus, m.full_backward_hooks, "crashed"),
    ("swap-relu6-as-relu", check_guided_relus, m.relu6_as_relu, "wrong_values"),
    ("weights-sum", check_channel_weights, m.weights_sum, "sum_not_mean"),
    ("weights-keepdim", check_channel_weights, m.weights_keepdim, "keepdim"),
    ("weights-dims", check_channel_weights, m.weights_wrong_dims, "wrong_dims"),
    ("cam-no-relu", check_weighted_cam, m.cam_no_relu, "missing_relu"),
    ("cam-relu-first", check_weighted_cam, m.cam_relu_first, "relu_before_sum"),
    ("cam-mean", check_weighted_cam, m.cam_channel_mean, "mean_over_channels"),
    ("cam-keepdim", check_weighted_cam, m.cam_keepdim, "keepdim"),
    ("cam-weights", check_weighted_cam, m.cam_first_weights, "weights_mismatched"),
    ("up-pil-swap", check_upsample, m.pil_resize, "hw_swap"),
    ("up-align", check_upsample, m.align_corners, "align_corners"),
    ("up-bicubic", check_upsample, m.bicubic, "bicubic_overshoot"),
    ("up-nearest", check_upsample, m.nearest, "nearest"),
    ("norm-batch", check_normalize_per_image, m.per_batch, "per_batch_norm"),
    ("norm-nan", check_normalize_per_image, m.per_image_nan, "nan_zero_map"),
    ("norm-inplace", check_normalize_per_image, m.in_place, "inplace_normalize"),
    ("norm-ones", check_normalize_per_image, m.flat_to_ones, "flat_not_zero"),
    ("norm-guard-max", check_normalize_per_image, m.guard_on_max, "nan_zero_map"),
    (
        "gb-permanent",
        check_guided_backprop,
        m.learner_guided_backprop(guided="permanent"),
        "permanent_swap",
    ),
    (
        "gb-original-swap",
        check_guided_backprop,
        m.learner_guided_backprop(guided="permanent", use_eval=False, copy=False),
        "permanent_swap",
    ),
    (
        "gb-hooks-left",
        check_guided_backprop,
        m.learner_guided_backprop(remove_hooks=False),
        "hooks_left",
    ),
    (
        "gb-plain",
        check_guided_backprop,
        m.learner_guided_backprop(guided="none"),
        "no_guided_relus",
    ),
    ("gb-nested", check_guided_backprop, m.learner_guided_backprop(guided="top"), "missed_nested"),
    ("gb-no-eval", check_guided_backprop, m.learner_guided_backprop(use_eval=False), "no_eval"),
    (
        "gb-accumulate",
        check_guided_backprop,
        m.learner_guided_backprop(copy=False),
        "accumulating_grads",
    ),
    (
        "gb-onehot-sum",
        check_guided_backprop,
        m.learner_guided_backprop(target="onehot_batch_sum"),
        "onehot_batch_sum",
    ),
    (
        "gb-ones",
        check_guided_backprop,
        m.learner_guided_backprop(target="ones"),
        "hardcoded_backward",
    ),
    (
        "gb-predicted",
        check_guided_backprop,
        m.learner_guided_backprop(target="predicted"),
        "predicted_not_labels",
    ),
    ("gc-batch-norm", check_grad_cam, m.learner_grad_cam(normalize="batch"), "per_batch_norm"),
    ("gc-nan", check_grad_cam, m.learner_grad_cam(normalize="nan"), "nan_zero_map"),
    ("gc-pil-swap", check_grad_cam, m.learner_grad_cam(resize="pil"), "hw_swap"),
    ("gc-squeeze", check_grad_cam, m.learner_grad_cam(squeeze="all"), "squeeze_all"),
    ("gc-no-eval", check_grad_cam, m.learner_grad_cam(use_eval=False), "no_eval"),
    ("gc-hooks-left", check_grad_cam, m.learner_grad_cam(remove_hooks=False), "hooks_left"),
    (
        "gc-deprecated",
        check_grad_cam,
        m.learner_grad_cam(deprecated_hook=True),
        "deprecated_backward_hook",
    ),
    (
        "gc-onehot-sum",
        check_grad_cam,
        m.learner_grad_cam(target="onehot_batch_sum"),
        "onehot_batch_sum",
    ),
]


@pytest.mark.parametrize(("check", "fn"), CORRECT, ids=lambda v: getattr(v, "__name__", None))
def test_correct_implementation_passes(check: Callable[[Any], None], fn: Any, capsys: Any) -> None:
    check(fn)
    assert "all checks passed" in capsys.readouterr().out


@pytest.mark.parametrize(("check", "fn", "key"), [w[1:] for w in WRONG], ids=[w[0] for w in WRONG])
def test_mistake_is_named(check: Callable[[Any], None], fn: Any, key: str, capsys: Any) -> None:
    mistake = MISTAKES[key]
    with pytest.raises(AssertionError, match=re.escape(f"Likely mistake: {mistake.name}")) as info:
        check(fn)
    assert isinstance(info.value, CheckFailed) and info.value.mistake is mistake
    assert mistake.hint in str(info.value)
    assert "✗" in capsys.readouterr().out or key in NAMED_BEFORE_COMPARING


@pytest.mark.parametrize(
    ("check", "name", "key"),
    [
        (check_guided_relu, "CustomReLU", "cpu_only_zeros"),
        (check_guided_backprop, "guided_backprop", "permanent_swap"),
        (check_grad_cam, "grad_cam", "hooks_left"),  # stage 3 comes before its (W, H) swap
    ],
)
def test_the_assignment_code_is_diagnosed(
    check: Callable[[Any], None], name: str, key: str
) -> None:
    """The original assignment's code, transcribed, fails each check with its first mistake."""
    fn = m.CpuZerosReLU.apply if name == "CustomReLU" else m.original_method(name)
    with pytest.raises(CheckFailed) as info:
        check(fn)
    assert info.value.mistake is MISTAKES[key]


#: Mistakes detected before any value comparison is printed (a crash, a shape, a flag).
NAMED_BEFORE_COMPARING = {
    "not_attempted",
    "crashed",
    "cpu_only_zeros",
    "inplace_input",
    "not_differentiable",
    "gather_dim",
    "no_squeeze",
    "squeeze_all",
    "keepdim",
    "hw_swap",
    "inplace_normalize",
    "full_hook_inplace",
    "deprecated_backward_hook",
    "permanent_swap",
    "hooks_left",
    "not_restored_on_error",
    "modules_without_names",
    "wrong_module_names",
}


def test_every_seed_mistake_is_covered() -> None:
    """The classic mistakes of issue 4 each have at least one wrong implementation."""
    classic = {
        "onehot_batch_sum",
        "hardcoded_backward",
        "hooks_left",
        "deprecated_backward_hook",
        "full_hook_inplace",
        "permanent_swap",
        "cpu_only_zeros",
        "per_batch_norm",
        "nan_zero_map",
        "hw_swap",
        "no_eval",
        "squeeze_all",
        "accumulating_grads",
    }
    assert classic <= {w[3] for w in WRONG}


def test_every_specific_mistake_is_exercised() -> None:
    """Each catalogue entry beyond the generic ones is named for some wrong implementation,
    so no entry is dead and no diagnosis goes untested.
    """
    generic = {"crashed", "wrong_shape", "wrong_values"}
    assert set(MISTAKES) - generic <= {w[3] for w in WRONG} | {c[3] for c in mistakes_fresh.CASES}


def test_mistake_names_are_unique() -> None:
    names = [mk.name for mk in MISTAKES.values()]
    assert len(names) == len(set(names))
