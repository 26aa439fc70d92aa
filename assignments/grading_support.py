"""What the hidden tests of the assignments use: reference values, fresh inputs, guards.

This file ships only inside the autograder zip (``autograder_files`` in each master notebook),
never in the student release. The hidden tests load it with :func:`runpy.run_path` rather than
``import``, so a submission that plants a fake ``grading_support`` in ``sys.modules`` is not
used; a submission that rewrites the file on disk is caught outside the kernel by
:class:`course_utils.grade.IntegrityGuard` (hash and ctime of every grading file).

Three guards run inside the kernel, next to the student's code:

* :func:`reference` hands out a course_utils function only after
  :func:`assert_course_utils_genuine` has checked that no course_utils name was re-bound to
  other code (a submission that sets ``course_utils.cam.channel_weights = my_fn`` would
  otherwise make the reference agree with its own bugs);
* :func:`no_reference_calls` swaps the code of course_utils' graded functions for a tripwire
  while the student's function runs, so re-exporting or calling the reference fails however it
  is spelled (alias, ``getattr``, ``importlib``) — calls that course_utils makes internally
  (e.g. an allowed ``guided_backprop`` calling ``select_scores``) still work;
* :func:`assert_close` compares with plain tensor arithmetic and reports the worst element.

Example:
    >>> gs = runpy.run_path("grading_support.py")  # doctest: +SKIP
    >>> expected = gs["reference"]("select_scores")(scores, labels)  # doctest: +SKIP
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import sysconfig
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

import course_utils

PACKAGE_DIR = Path(course_utils.__file__).resolve().parent
#: This file: its stand-ins (:func:`stand_ins`) may call the reference on a student's behalf.
THIS_FILE = Path(__file__).resolve()

#: course_utils modules whose every function and class is graded content of the assignment:
#: students write their own. A1 may use hooks/scores helpers; A2 may use guided backprop
#: (relu, guided), which is A1's content.
FORBIDDEN_MODULES = {
    "a1": ("relu", "guided", "cam"),
    "a2": ("scores", "hooks", "pooling", "upsample", "cam"),
}


#: id(function) -> (tripwire code, original code) while :func:`no_reference_calls` is active.
_SWAPPED: dict[int, tuple[types.CodeType, types.CodeType]] = {}


def _code_of(fn: types.FunctionType) -> types.CodeType:
    """The function's code, or its original code while our own tripwire stands in for it."""
    swapped = _SWAPPED.get(id(fn))
    if swapped is not None and fn.__code__ is swapped[0]:
        return swapped[1]
    return fn.__code__


#: Marks a failure that means the submission altered course_utils in memory; the runner-side
#: ``course_utils.grade.IntegrityGuard`` looks for it in the test messages.
TAMPER_MARKER = "[course_utils altered in memory]"


class ReferenceCallError(AssertionError):
    """A graded function called (or is) course_utils' reference implementation."""


def _module_files() -> dict[str, Path]:
    return {
        f"course_utils.{path.stem}": path
        for path in sorted(PACKAGE_DIR.glob("*.py"))
        if path.stem != "__init__"
    }


def _defined_and_imported(path: Path) -> tuple[set[str], dict[str, tuple[str, str]]]:
    """Top-level names a course_utils file defines, and those it imports from course_utils."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined: set[str] = set()
    imported: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                imported[alias.asname or alias.name] = (f"course_utils.{node.module}", alias.name)
    return defined, imported


def assert_course_utils_genuine() -> None:
    """Fail if any course_utils function or class was replaced or had its code swapped.

    Every name a course_utils file defines must still be an object whose code lives in that
    file, and every name it imports from a sibling module must still be that sibling's object.
    """
    loaded = {name: sys.modules[name] for name in _module_files() if name in sys.modules}
    for name, module in loaded.items():
        path = Path(module.__file__).resolve()
        defined, imported = _defined_and_imported(path)
        for attr in defined:
            obj = vars(module).get(attr)
            if isinstance(obj, types.FunctionType):
                code = _code_of(inspect.unwrap(obj))  # @contextmanager wraps with __wrapped__
                ok = Path(code.co_filename).resolve() == path
            else:
                ok = isinstance(obj, type) and obj.__module__ == name
                if ok:
                    for member in vars(obj).values():
                        fn = getattr(member, "__func__", member)
                        if isinstance(fn, types.FunctionType):
                            ok = ok and Path(_code_of(fn).co_filename).resolve() == path
            if not ok:
                raise AssertionError(f"{TAMPER_MARKER} {name}.{attr} was replaced at run time")
        for attr, (source, original) in imported.items():
            if source in loaded and vars(module).get(attr) is not vars(loaded[source]).get(
                original
            ):
                raise AssertionError(f"{TAMPER_MARKER} {name}.{attr} was re-bound at run time")


def reference(dotted: str) -> Any:
    """The genuine course_utils object ``"module.name"`` (e.g. ``"cam.grad_cam"``)."""
    module_name, _, attr = dotted.rpartition(".")
    module = importlib.import_module(f"course_utils.{module_name}")
    assert_course_utils_genuine()
    return getattr(module, attr)


def _functions_of(obj: Any) -> Iterator[tuple[Any, str, types.FunctionType]]:
    """(owner, attribute, function) for a function or every plain method of a class.

    A decorated function (``@contextmanager``) yields the function it wraps: that is the code
    that runs, and it has no closure, so its code can be swapped.
    """
    if isinstance(obj, types.FunctionType):
        inner = inspect.unwrap(obj)
        if not inner.__code__.co_freevars:
            yield None, "", inner
    elif isinstance(obj, type):
        for attr, member in vars(obj).items():
            fn = getattr(member, "__func__", member)
            if isinstance(fn, types.FunctionType) and not fn.__code__.co_freevars:
                yield obj, attr, fn


_LIBRARY_DIRS = tuple(
    Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "purelib", "platlib")
)


def _called_from_course_utils(frame: types.FrameType | None) -> bool:
    """Whether the nearest caller that is not library code (torch, contextlib, ...) is
    course_utils itself — as when course_utils' ``guided_backprop`` uses ``guided_relus``
    through ``contextlib`` and torch's hooks — or a stand-in of this file."""
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith("<frozen"):
            path = Path(filename).resolve()
            if path.is_relative_to(PACKAGE_DIR) or path == THIS_FILE:
                return True
            if not any(path.is_relative_to(d) for d in _LIBRARY_DIRS):
                return False
        frame = frame.f_back
    return False


_TRIPWIRE_SOURCE = """\
def tripwire(*args, **kwargs):
    return __grading_tripwire__({key!r}, args, kwargs)
"""


def _forbidden(assignment: str) -> list[str]:
    """``"module.name"`` of every function and class the forbidden modules define."""
    names = []
    for module_name in FORBIDDEN_MODULES[assignment]:
        defined, _ = _defined_and_imported(PACKAGE_DIR / f"{module_name}.py")
        names += [f"{module_name}.{name}" for name in sorted(defined)]
    return names


@contextmanager
def no_reference_calls(assignment: str) -> Iterator[None]:
    """Inside the block, calling a function of ``FORBIDDEN_MODULES[assignment]`` fails unless
    course_utils itself is the caller.

    The guard swaps each function's ``__code__`` (so every alias of the object is covered) for
    a stub that looks at its caller: course_utils' own internal calls run the original code,
    anything else raises :class:`ReferenceCallError`. Codes are restored on exit.
    """
    originals: dict[str, tuple[types.FunctionType, types.CodeType, types.FunctionType]] = {}
    patched_globals: list[dict[str, Any]] = []

    def hit(key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fn, code, runner = originals[key]
        if _called_from_course_utils(sys._getframe(2)):
            return runner(*args, **kwargs)
        raise ReferenceCallError(
            f"the graded code calls course_utils' {key}: write it yourself (this assignment "
            "grades your implementation, not the course package's)"
        )

    try:
        for dotted in _forbidden(assignment):
            module_name, _, attr = dotted.rpartition(".")
            module = importlib.import_module(f"course_utils.{module_name}")
            for owner, member, fn in _functions_of(getattr(module, attr)):
                key = f"{dotted}.{member}" if owner is not None else dotted
                runner = types.FunctionType(
                    fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
                )
                runner.__kwdefaults__ = fn.__kwdefaults__
                namespace: dict[str, Any] = {}
                exec(compile(_TRIPWIRE_SOURCE.format(key=key), "<tripwire>", "exec"), namespace)
                originals[key] = (fn, fn.__code__, runner)
                if "__grading_tripwire__" not in fn.__globals__:
                    fn.__globals__["__grading_tripwire__"] = hit
                    patched_globals.append(fn.__globals__)
                fn.__code__ = namespace["tripwire"].__code__
                _SWAPPED[id(fn)] = (fn.__code__, originals[key][1])
        yield
    finally:
        for fn, code, _ in originals.values():
            fn.__code__ = code
            _SWAPPED.pop(id(fn), None)
        for namespace in patched_globals:
            namespace.pop("__grading_tripwire__", None)


def call_student(assignment: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with course_utils' graded functions out of reach."""
    with no_reference_calls(assignment):
        return fn(*args, **kwargs)


def stand_ins() -> dict[str, Callable[..., Any]]:
    """Assignment 2's earlier answers, implemented by the reference (for :func:`replaced`)."""
    return {
        "select_scores": lambda scores, labels: reference("scores.select_scores")(scores, labels),
        "activation_and_gradient": lambda model, images, labels, layer: reference(
            "cam.layer_activation_and_gradient"
        )(model, images, labels, layer=layer),
        "channel_weights": lambda grads: reference("pooling.channel_weights")(grads),
        "weighted_cam": lambda acts, weights: reference("pooling.weighted_cam")(acts, weights),
        "upsample": lambda maps, size: reference("upsample.upsample")(maps, tuple(size)),
        "normalize_per_image": lambda maps: reference("upsample.normalize_per_image")(maps),
    }


@contextmanager
def replaced(fn: Callable[..., Any], names: dict[str, Any]) -> Iterator[None]:
    """Inside the block, the globals ``fn`` looks up by ``names`` are the given objects.

    Grading the final question with the earlier answers swapped for stand-ins keeps the marks
    independent: a wrong ``normalize_per_image`` loses Q6's points, not Q7's as well. A
    function that does everything inline is graded on its own code.
    """
    namespace = getattr(fn, "__globals__", {})
    saved = {name: namespace[name] for name in names if name in namespace}
    namespace.update(names)
    try:
        yield
    finally:
        for name in names:
            namespace.pop(name, None)
        namespace.update(saved)


def assert_close(
    actual: Any, expected: torch.Tensor, *, atol: float = 1e-5, rtol: float = 1e-4, what: str = ""
) -> None:
    """Shape, dtype family and values of ``actual`` must match ``expected``."""
    label = f"{what}: " if what else ""
    if not isinstance(actual, torch.Tensor):
        raise AssertionError(f"{label}expected a torch.Tensor, got {type(actual).__name__}")
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(
            f"{label}shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
        )
    if not actual.is_floating_point():
        raise AssertionError(f"{label}dtype {actual.dtype}, expected floating point")
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    if not bool(torch.isfinite(a).all()):
        raise AssertionError(f"{label}result contains NaN or inf")
    excess = (a - e).abs() - (atol + rtol * e.abs())
    worst = float(excess.max()) if excess.numel() else 0.0
    if worst > 0:
        index = int(excess.flatten().argmax())
        raise AssertionError(
            f"{label}values differ: element {index} is {float(a.flatten()[index]):.6g}, "
            f"expected {float(e.flatten()[index]):.6g}"
        )


def random_images(seed: int, n: int, size: tuple[int, int] = (64, 80)) -> torch.Tensor:
    """A fresh ``(n, 3, H, W)`` batch; hidden tests draw their seeds at grading time."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, *size, generator=generator)


def squeezenet(seed: int) -> nn.Module:
    """torchvision's SqueezeNet 1.1 with seeded random weights (Fire modules; no download)."""
    from torchvision.models import squeezenet1_1

    torch.manual_seed(seed)
    return squeezenet1_1(weights=None, num_classes=10).eval()


def shapes_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    """The course's trained shapes network, six of its images, their labels and its CAM layer."""
    from course_utils.data import make_shapes
    from course_utils.models import load_model, shapes_to_tensor

    bundle = load_model("shapes")
    batch = make_shapes(6, seed=int(torch.randint(0, 2**31 - 1, ()).item()))
    images = shapes_to_tensor(batch.images)
    return bundle.model, images, torch.as_tensor(batch.labels), bundle.target_layer


def relu6_net(seed: int) -> nn.Module:
    """A small net with ReLU6 and in-place ReLUs nested in a Sequential (the edge cases)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU6(),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()


def state_snapshot(model: nn.Module) -> tuple[Any, ...]:
    """What must be identical before and after a graded call: modules, flags, hooks, grads."""
    return (
        [(name, type(m), m.training) for name, m in model.named_modules()],
        sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules()),
        sum(len(m._forward_pre_hooks) for m in model.modules()),
        [p.grad is None for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()}.keys(),
    )


def seeds(count: int) -> Iterable[int]:
    """Seeds drawn at grading time, so no submission can special-case the hidden inputs."""
    return [int(s) for s in torch.randint(0, 2**31 - 1, (count,), generator=_fresh_generator())]


def _fresh_generator() -> torch.Generator:
    generator = torch.Generator()
    generator.seed()
    return generator
