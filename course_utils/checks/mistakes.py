"""The mistake catalogue, its hint ladders and the exercises: one source of truth.

Every check names one :class:`Mistake` when it fails. A mistake carries a short ``name`` and a
*ladder* of hints, from a diagnosis ("what your numbers show") to a pointer at the tool that
fixes it; no hint spells out the solution line. The first rung is printed with the failure;
:func:`hint` climbs the ladder of the exercise that failed last, and once an exercise has
failed, :func:`solution` shows its worked solution (from the instructor notebooks).

The exercises themselves are listed once, in :data:`EXERCISES`: id, notebook, check, title.
Their ids (``"04.weights"``) are what a learner types in ``hint("04.weights")``, what the
notebooks' exercise cells start with (``# exercise 04.weights``) and what the progress table
shows.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, ParamSpec, TypeVar

__all__ = [
    "EXERCISES",
    "MISTAKES",
    "CheckFailed",
    "Exercise",
    "Mistake",
    "hint",
    "solution",
]


@dataclass(frozen=True)
class Mistake:
    """A classic mistake: a short ``name`` and a ladder of ``hints``, gentlest first."""

    key: str
    name: str
    hints: tuple[str, ...]

    @property
    def hint(self) -> str:
        """The first rung of the ladder: printed with every failure that names the mistake."""
        return self.hints[0]


def _m(key: str, name: str, *hints: str) -> Mistake:
    return Mistake(key, name, hints)


# The catalogue in stage order (generic, 1 relu ... 7 cam): when several mistakes are present
# at once, the checks name the one of the earliest stage, because fixing it changes the rest.
# fmt: off
_CATALOGUE = [
    # -- generic ---------------------------------------------------------------------------
    _m("not_attempted", "exercise not attempted yet",
       "the function still raises NotImplementedError: replace that line with your code",
       "reread the exercise's markdown cell: it says what goes in and what comes out"),
    _m("crashed", "your function raised an error",
       "read the error above; the check calls your function exactly as the exercise "
       "describes (argument order, shapes, dtypes)",
       "run your function by hand on a small tensor of the shapes the exercise gives and "
       "print the shape of every intermediate result"),
    _m("wrong_shape", "wrong output shape",
       "print the shape of every intermediate tensor and compare it with the docstring",
       "the exercise's docstring gives the output shape; which dimension is extra or missing?"),
    _m("wrong_values", "wrong values",
       "the output has the right shape but not the right numbers; compare your intermediate "
       "tensors with the course_utils reference of this stage, step by step",
       "work one entry by hand, as in the notebook's worked example, and find the first "
       "step where your numbers leave the hand computation"),
    _m("not_differentiable", "output not connected to autograd",
       "the result must stay in the autograd graph so a backward pass can run through it",
       ".detach(), .item(), .numpy() and torch.tensor(...) cut the graph; keep the whole "
       "computation in torch operations on the input"),
    _m("cpu_only_tensor", "a tensor created on the CPU instead of the input's device",
       "your code fails when the inputs live on another device (the check uses PyTorch's "
       "'meta' device, which stands in for a GPU): a tensor you create is pinned to the CPU",
       "torch.zeros/ones/tensor/arange without device= always allocate on the CPU; make new "
       "tensors from an existing one (x.new_zeros, torch.ones_like, device=x.device)"),
    # -- stage 1: ReLU masking -------------------------------------------------------------
    _m("forward_not_relu", "forward is not a ReLU",
       "the forward pass must return x where x > 0 and 0 elsewhere",
       "compare your forward with torch.relu on a tensor holding negative numbers and a 0"),
    _m("backprop_rule", "plain backprop rule instead of the guided rule",
       "your backward is the true ReLU derivative g·1[x > 0]: negative incoming gradients "
       "went through",
       "the guided rule needs a second mask, built from the incoming gradient itself"),
    _m("deconvnet_rule", "deconvnet rule instead of the guided rule",
       "your backward is g·1[g > 0]: it ignores where the forward input was negative",
       "the forward input is gone by the time backward runs; store what you need with "
       "ctx.save_for_backward"),
    _m("cpu_only_zeros", "CPU-only torch.zeros(x.size())",
       "your ReLU fails, or changes dtype, for a tensor that is not float32 on the CPU",
       "torch.zeros(x.size()) always makes a float32 tensor on the CPU; build the zero from "
       "x itself so it follows x's device and dtype (notebook 01, section 4)"),
    _m("inplace_input", "modified the input in place",
       "an in-place op (x.clamp_(), x[x < 0] = 0, relu_) changed the caller's tensor",
       "build a new tensor instead of writing into the one you were given"),
    # -- stage 2: class scores -------------------------------------------------------------
    _m("squeeze_all", "squeeze() of a batch of one",
       "a batch of one lost its batch dimension: something removed every size-1 dimension",
       "squeeze() with no argument removes all of them; name the one dimension to drop"),
    _m("gather_dim", "gather along the wrong dimension",
       "you indexed the scores along the batch dimension; the classes are dimension 1 of the "
       "(N, K) scores",
       "gather(dim, index) walks along `dim`; on a non-square (N, K) matrix the wrong dim "
       "reads the wrong entries or goes out of range"),
    _m("no_squeeze", "the gathered column was not squeezed",
       "the result has shape (N, 1) where (N,) is expected",
       "gather keeps the index's shape; drop the extra column dimension afterwards"),
    _m("predicted_not_labels", "used the predicted class instead of the labels",
       "your result is the one for each image's highest-scoring class; the labels say which "
       "class to explain",
       "look for max/argmax in your code: the labels argument should decide the class"),
    _m("onehot_batch_sum", "one-hot target summed over the batch",
       "each image received the gradient of every label in the batch: image 0's result "
       "changed when only the other images' labels changed",
       "a one-hot target needs one row per image, shape (N, K); one vector of length K with "
       "a 1 at every label is broadcast to all images (notebook 02, section 4)"),
    _m("hardcoded_backward", "hard-coded backward vector",
       "the result does not depend on the labels the way it should: you backpropagated a "
       "fixed class, or ones over all K classes",
       "backpropagate the selected scores (one per image), not the whole (N, K) score "
       "matrix or a class number written into the code"),
    _m("hardcoded_batch_size", "works only for the example's batch size",
       "your function works for a batch of 3 and fails for other batch sizes: a shape is "
       "written into the code",
       "derive every size from the inputs (len(labels), images.shape[0], torch.ones_like)"),
    _m("softmax_not_score", "a probability (softmax, sigmoid) instead of the raw class score",
       "you differentiated a probability; Grad-CAM and guided backprop explain the raw score "
       "(the logit) of the class",
       "a softmax couples the classes: its gradient mixes in every other class's evidence. "
       "Select the class score straight from the model's output"),
    _m("accumulating_grads", "input gradients accumulating across calls",
       "a second call on the same tensor returned twice the first: backward() adds to .grad",
       "differentiate with respect to a private copy of the images and ask autograd for the "
       "gradient directly (torch.autograd.grad) instead of reading .grad"),
    _m("mutates_images", "modified the caller's images",
       "requires_grad or .grad was set on the caller's tensor",
       "differentiate with respect to a private copy (detach, then clone)"),
    _m("param_grads", "filled the model's parameter gradients",
       "after your call the model's param.grad are set: backward() also writes the "
       "gradient of every weight",
       "torch.autograd.grad(outputs, inputs) returns just the gradient you ask for and "
       "touches no .grad"),
    _m("no_eval", "no model.eval()",
       "results differ when the model comes in train mode: Dropout and BatchNorm behave "
       "differently while training",
       "run the model in eval mode and hand it back in the mode it came in "
       "(course_utils.evaluating does both)"),
    # -- stage 3: hooks --------------------------------------------------------------------
    _m("hooks_left", "hooks never removed",
       "after your call the model still carries hooks, so every later call adds more",
       "every register_*_hook returns a handle; remove it in a finally block or a context "
       "manager's exit"),
    _m("deprecated_backward_hook", "deprecated register_backward_hook",
       "the non-full backward hook reports gradients of the module's last operation, not "
       "of its output in general",
       "a tensor hook on the layer's output (registered from a forward hook) reads exactly "
       "the gradient you need"),
    _m("full_hook_inplace", "full backward hook on a layer followed by an in-place ReLU",
       "register_full_backward_hook wraps the layer's output in a view that the next "
       "ReLU(inplace=True) may not modify",
       "read the gradient with a tensor hook on the output, and hand the network a copy of "
       "the output from the forward hook"),
    _m("inplace_alias", "activation overwritten by an in-place ReLU",
       "your activation has no negative entries: you kept a reference to a tensor that the "
       "next ReLU(inplace=True) overwrote",
       "keep a copy, or let the forward hook return a copy for the rest of the network "
       "(notebook 03, section 1)"),
    _m("wrong_layer", "recorded the wrong layer",
       "your result matches another layer of the model, not the one asked for",
       "find the layer by its dotted name (model.get_submodule) and check the shape of what "
       "you record against the layer's output"),
    # -- stage 4: pooling ------------------------------------------------------------------
    _m("sum_not_mean", "sum instead of mean",
       "every weight is h·w times too large",
       "the channel weight is the average gradient over the spatial positions"),
    _m("wrong_dims", "pooled over the wrong dimensions",
       "you averaged over a dimension that is not spatial",
       "(N, C, h, w): only the last two dimensions are positions"),
    _m("keepdim", "kept the pooled dimensions",
       "the result has size-1 dimensions that should be gone",
       "the expected shape is in the docstring; keepdim=True keeps them"),
    _m("missing_relu", "missing ReLU",
       "your map has negative values: Grad-CAM keeps only positive evidence",
       "apply a ReLU to the weighted sum (notebook 04, section 5)"),
    _m("relu_before_sum", "ReLU applied before the weighted sum",
       "negative weighted channels were removed before they could cancel anything",
       "sum over channels first, then the ReLU"),
    _m("gradients_rectified", "gradients made non-negative before pooling",
       "your weights equal the mean of ReLU(gradient) or |gradient|: negative gradients, "
       "evidence *against* the class, were lost",
       "pool the gradients exactly as they come; only the final map gets a ReLU"),
    _m("weights_from_activations", "weights pooled from the activations, not the gradients",
       "your channel weights are averages of the activations A; they must say how much the "
       "class score changes with each channel",
       "the weights come from ∂score/∂A; the activations enter only in the weighted sum"),
    _m("mean_over_channels", "mean instead of sum over channels",
       "your map is C times too small",
       "the map is a weighted *sum* over channels"),
    _m("weights_mismatched", "weights not matched to their image",
       "an image's map used another image's weights (or the weights were transposed)",
       "weights[i] belongs to activations[i]; line the (N, C) weights up with the first two "
       "dimensions of the (N, C, h, w) activations"),
    # -- stage 5: upsampling and normalisation ---------------------------------------------
    _m("hw_swap", "(H, W) vs (W, H) swap",
       "your maps have the image's width and height exchanged",
       "PIL's Image.resize takes (width, height); tensor shapes are (height, width)"),
    _m("align_corners", "align_corners=True",
       "your values match bilinear interpolation with align_corners=True, which stretches "
       "the map so its corner cells sit on the image's corner pixels",
       "pixels are areas: image libraries use align_corners=False (notebook 05 shows both)"),
    _m("bicubic_overshoot", "bicubic interpolation overshoots",
       "your values go below the map's minimum (or match mode='bicubic'): bicubic rings "
       "around sharp peaks",
       "use an interpolation that stays within its neighbours' range (notebook 05, "
       "section 2)"),
    _m("nearest", "nearest-neighbour interpolation",
       "your map is made of blocks: it matches mode='nearest'",
       "use the smooth mode that blends the four nearest cells"),
    _m("normalize_before_upsample", "normalised before upsampling",
       "your map was scaled to [0, 1] on the coarse grid and resized afterwards",
       "resize first, then normalise: the interpolated map has its own minimum and maximum"),
    _m("per_batch_norm", "per-batch normalisation",
       "one bright image dims the others: you took min/max over the whole batch",
       "normalise each image with its own minimum and maximum (flatten from dim 1)"),
    _m("nan_zero_map", "NaN on an all-zero map",
       "a map with max == min gives 0 / 0 = NaN",
       "treat a flat map separately: it has no evidence anywhere"),
    _m("flat_not_zero", "flat map not mapped to zeros",
       "a constant map has no evidence anywhere; it should come out as zeros",
       "check what your code does when max - min is 0"),
    _m("inplace_normalize", "normalised the caller's maps in place",
       "the maps passed in were changed (cam -= cam.min() writes into them)",
       "compute a new tensor instead of writing into the one you were given"),
    # -- stage 6: swapping ReLUs -----------------------------------------------------------
    _m("modules_without_names", "modules listed without their names",
       "each item must be a pair: the dotted name, then the module; you returned bare "
       "modules (or names)",
       "one iterator of nn.Module walks every depth and yields the dotted name with each "
       "module"),
    _m("wrong_module_names", "names that do not lead to their module",
       "model.get_submodule(name) must give back the module listed with that name",
       "build no names by hand: the iterator that walks every depth already yields each "
       "module's dotted name"),
    _m("other_activations", "activations that are not ReLU or ReLU6 listed",
       "LeakyReLU, SiLU and friends have another backward rule: the guided rule is defined "
       "for ReLU and ReLU6 only",
       "test the module's type (isinstance), not whether its class name contains 'ReLU'"),
    _m("permanent_swap", "ReLUs swapped permanently",
       "after your call the model is not the model it was: a module was replaced, its "
       "forward rewritten, or its gradients stay guided",
       "leave the modules alone and attach hooks for the duration of a with block, removed "
       "on exit (course_utils.guided_relus shows the pattern)"),
    _m("missed_nested", "nested ReLUs missed (e.g. inside Fire modules)",
       "some activations deeper in the model were not made guided",
       "model.modules() walks every depth; children() and model.features do not"),
    _m("relu6_missed", "ReLU6 not handled",
       "the ReLU6 modules were not made guided",
       "nn.ReLU6 is not a subclass of nn.ReLU; test for both types"),
    _m("no_guided_relus", "no ReLU was made guided",
       "the gradient equals plain backprop",
       "make every activation module use the guided rule while the block runs"),
    _m("not_restored_on_error", "model not restored when the block raises",
       "an exception inside the with block left the model changed",
       "undo the change in a finally block, so clean-up runs on every way out"),
]
# fmt: on

#: Every mistake the checks can name, by key.
MISTAKES: dict[str, Mistake] = {m.key: m for m in _CATALOGUE}

#: Stage order of the catalogue, for choosing among combined mistakes.
STAGE_ORDER: dict[str, int] = {m.key: i for i, m in enumerate(_CATALOGUE)}


@dataclass(frozen=True)
class Exercise:
    """One exercise of the course: its id, notebook, the check that grades it, a title."""

    id: str
    notebook: str
    check: str
    title: str


# fmt: off
EXERCISES: dict[str, Exercise] = {e.id: e for e in [
    Exercise("01.guided_relu", "01_relu_masking", "check_guided_relu",
             "a guided ReLU that runs on any device"),
    Exercise("02.select_scores", "02_class_scores", "check_select_scores",
             "each image's score, any batch size"),
    Exercise("02.class_gradient", "02_class_scores", "check_class_gradient",
             "the input gradient of each image's class score"),
    Exercise("03.layer_recorder", "03_hooks", "check_layer_recorder",
             "record any layer's activation and gradient"),
    Exercise("04.weights", "04_pooling", "check_channel_weights",
             "channel weights for a batch"),
    Exercise("04.cam", "04_pooling", "check_weighted_cam", "the weighted map for a batch"),
    Exercise("05.upsample", "05_upsampling", "check_upsample",
             "resize maps to a non-square image"),
    Exercise("05.normalize", "05_upsampling", "check_normalize_per_image",
             "per-image normalisation"),
    Exercise("06.relu_modules", "06_guided_backprop", "check_relu_modules",
             "find every ReLU and ReLU6"),
    Exercise("06.guided_relus", "06_guided_backprop", "check_guided_relus",
             "guided ReLUs for one block of code"),
    Exercise("06.guided_backprop", "06_guided_backprop", "check_guided_backprop",
             "guided backprop end to end"),
    Exercise("07.grad_cam", "07_grad_cam", "check_grad_cam", "Grad-CAM end to end"),
]}
# fmt: on

_BY_CHECK = {e.check: e for e in EXERCISES.values()}


class CheckFailed(AssertionError):
    """A check failed; ``mistake`` is the catalogue entry the check blames.

    The message reads ``Likely mistake: <name> — <what was observed>`` followed by the first
    hint and, when the check belongs to an exercise, how to ask for the next one.
    """

    def __init__(self, mistake: Mistake, detail: str) -> None:
        self.mistake = mistake
        self.detail = detail
        super().__init__(f"Likely mistake: {mistake.name} — {detail}\nHint: {mistake.hint}")


def fail(key: str, detail: str) -> NoReturn:
    """Raise :class:`CheckFailed` for catalogue entry ``key``."""
    raise CheckFailed(MISTAKES[key], detail)


# -- the learner's session: attempts, hints shown -----------------------------------------


@dataclass
class _Attempts:
    """What happened to one exercise in this Python session."""

    mistake: Mistake | None = None  # the last failure's mistake; None after a pass
    failed: bool = False  # at least one failed attempt (unlocks the solution)
    rung: int = 1  # hints shown for ``mistake`` so far (the failure shows the first)
    history: list[str] = field(default_factory=list)


_SESSION: dict[str, _Attempts] = {}
_LAST: list[str] = []  # the exercise whose check ran last (one element at most)

#: Environment variable naming a JSON-lines file to which every check appends its result;
#: the progress table (``course_utils.workspace``) sets it while it runs the notebooks.
RESULTS_ENV = "COURSE_CHECK_RESULTS"


def _record(exercise: Exercise, error: CheckFailed | None) -> None:
    state = _SESSION.setdefault(exercise.id, _Attempts())
    _LAST[:] = [exercise.id]
    if error is None:
        state.mistake, state.rung = None, 1
        state.history.append("passed")
    else:
        if state.mistake is not error.mistake:
            state.rung = 1
        state.mistake = error.mistake
        state.failed = state.failed or error.mistake.key != "not_attempted"
        state.history.append(error.mistake.key)
    path = os.environ.get(RESULTS_ENV)
    if path:
        line = {"exercise": exercise.id, "mistake": None if error is None else error.mistake.key}
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


P = ParamSpec("P")
R = TypeVar("R")


def graded(check: Callable[P, R]) -> Callable[P, R]:
    """Make ``check`` an exercise check: remember its result and point at the next hint."""
    exercise = _BY_CHECK[check.__name__]

    @functools.wraps(check)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = check(*args, **kwargs)
        except CheckFailed as error:
            _record(exercise, error)
            more = len(error.mistake.hints) > 1
            error.args = (
                f"{error.args[0]}\nMore help: "
                + (f'hint("{exercise.id}") for the next hint, ' if more else "")
                + f'solution("{exercise.id}") for the worked solution',
            )
            raise
        _record(exercise, None)
        return result

    return run


def _resolve(exercise: str | None) -> Exercise:
    if exercise is None:
        if not _LAST:
            raise ValueError("no check has run yet in this session; run an exercise's check")
        exercise = _LAST[0]
    if exercise not in EXERCISES:
        raise ValueError(f"unknown exercise {exercise!r}; the exercises are {sorted(EXERCISES)}")
    return EXERCISES[exercise]


def hint(exercise: str | None = None) -> str:
    """Print (and return) the next hint for the mistake ``exercise``'s check named last.

    Args:
        exercise: an id such as ``"04.weights"`` (the first line of the exercise cell);
            default: the exercise whose check ran last.

    Example:
        >>> text = hint("04.weights")  # doctest: +ELLIPSIS
        04.weights...
        >>> text.startswith("04.weights")
        True

    """
    ex = _resolve(exercise)
    state = _SESSION.get(ex.id)
    if state is None or state.mistake is None:
        text = (
            f"{ex.id}: no failed attempt in this session yet — run the check cell; when it "
            "names a mistake, ask again"
        )
    else:
        ladder = state.mistake.hints
        if state.rung < len(ladder):
            state.rung += 1
            text = f"{ex.id} · {state.mistake.name} · hint {state.rung}/{len(ladder)}: "
            text += ladder[state.rung - 1]
        else:
            text = (
                f"{ex.id} · {state.mistake.name}: that was the last hint "
                f"({len(ladder)}/{len(ladder)}). solution({ex.id!r}) shows the worked solution"
            )
    print(text)
    return text


_EXERCISE_LINE = re.compile(r"^#\s*exercise\s+(\S+)", re.MULTILINE)
SOLUTIONS_FILE = ".solutions.json"


def _solutions_near(start: Path) -> dict[str, str] | None:
    for folder in [start, *start.parents]:
        candidate = folder / SOLUTIONS_FILE
        if candidate.is_file():
            loaded: dict[str, str] = json.loads(candidate.read_text(encoding="utf-8"))
            return loaded
    return None


def solutions_of(cells: list[tuple[str, str]]) -> dict[str, str]:
    """``{exercise id: cell source}`` for the code cells that start with ``# exercise <id>``.

    Args:
        cells: ``(cell_type, source)`` pairs of a notebook.

    """
    found = {}
    for kind, source in cells:
        match = _EXERCISE_LINE.match(source) if kind == "code" else None
        if match:
            found[match.group(1)] = source
    return found


def solution(exercise: str | None = None) -> str:
    """Print (and return) the worked solution of ``exercise`` after a failed attempt.

    The solutions come from the instructor notebooks: the learner workspace keeps them in
    ``.solutions.json``; in the sources the solution is the exercise cell itself.

    Raises:
        ValueError: no failed attempt at this exercise in this session (try first), or the
            solutions are not available here.

    """
    ex = _resolve(exercise)
    state = _SESSION.get(ex.id)
    if state is None or not state.failed:
        raise ValueError(
            f"{ex.id}: run its check first; the worked solution opens after a failed attempt "
            f"(and hint({ex.id!r}) helps before that)"
        )
    solutions = _solutions_near(Path.cwd())
    if solutions is None or ex.id not in solutions:
        raise ValueError(
            f"no worked solution for {ex.id} here: the learner workspace (make lab) keeps "
            f"them in {SOLUTIONS_FILE}"
        )
    text = solutions[ex.id]
    print(text)
    return text
