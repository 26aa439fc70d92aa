"""Checks for stage 6 (:mod:`course_utils.guided`, :func:`course_utils.guided_relus`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchvision.models import squeezenet1_1

from ..guided import guided_backprop
from ..relu import relu_modules
from .mistakes import fail, graded
from .probes import (
    LABELS,
    WRONG_TARGETS,
    assert_model_intact,
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
    seeded,
    snapshot,
)
from .scores import nchw

__all__ = [
    "SwapNet",
    "check_guided_backprop",
    "check_guided_relus",
    "check_relu_modules",
    "squeezenet_probe",
]


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
        shifted = self.get_submodule("features.3")
        assert isinstance(shifted, nn.Conv2d) and shifted.bias is not None
        with torch.no_grad():
            shifted.bias[:4] += 6.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, K)`` of a batch ``(N, C, H, W)``."""
        return self.head(self.features(x))


class LookalikeNet(nn.Module):
    """Probe model for :func:`check_relu_modules`: look-alike activations next to real ones.

    ``LeakyReLU`` and ``SiLU`` must be left out (a test on the class *name* containing
    ``"ReLU"`` picks up the first). One ``ReLU`` object is used at two places; listing it
    under both names is accepted (hooking it twice applies the guided rule twice, which
    changes nothing).
    """

    def __init__(self) -> None:
        super().__init__()
        shared = nn.ReLU()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 1), shared, nn.LeakyReLU(0.1))
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(4, 4, 1), nn.SiLU(), nn.ReLU6())])
        self.again = shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(N, 4, H, W)`` of a batch ``(N, 3, H, W)``."""
        return self.again(self.blocks[0](self.stem(x)))


def _listed(got: Any, model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The learner's answer as ``(name, module)`` pairs whose names resolve in ``model``."""
    try:
        pairs = list(got)
    except TypeError:
        fail("wrong_values", f"fn(model) returned {type(got).__name__}, not a list")
    for item in pairs:
        if isinstance(item, nn.Module) or not (
            isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
        ):
            fail("modules_without_names", f"an item of the list is {type(item).__name__}")
        name, module = item
        try:
            found = model.get_submodule(name) if name else model
        except AttributeError:
            fail("wrong_module_names", f"{name!r} is not a name in the model")
        if found is not module:
            fail("wrong_module_names", f"model.get_submodule({name!r}) is another module")
    return pairs


@graded
def check_relu_modules(fn: Callable[[nn.Module], Any]) -> None:
    """Check ``fn(model)`` → ``[(dotted name, module), ...]`` for every ReLU/ReLU6.

    Compared (in any order) with :func:`course_utils.relu_modules` on :class:`SwapNet` (a ReLU
    nested two blocks deep, a ReLU6), :class:`LookalikeNet` (LeakyReLU and SiLU to leave
    out, one ReLU used at two places) and SqueezeNet 1.1 (ReLUs in Fire modules and the classifier).
    Every name must resolve to its module with ``model.get_submodule``; the model must be
    left as it was.
    """
    with seeded(6):
        probes = {
            "SwapNet": SwapNet().eval(),
            "LookalikeNet": LookalikeNet().eval(),
            "SqueezeNet 1.1": squeezenet1_1(weights=None).eval(),
        }
    for label, model in probes.items():
        before = snapshot(model)
        pairs = _listed(guarded_call(fn, model, before, model), model)
        expected = relu_modules(model)
        got_ids = [id(module) for _, module in pairs]
        want = {id(module): name for name, module in expected}
        missing = [name for i, name in want.items() if i not in got_ids]
        extra = [type(module).__name__ for _, module in pairs if id(module) not in want]
        ok = not (missing or extra)
        print(
            f"{label}: {len(pairs)} listed, {len(expected)} expected, {len(missing)} missing, "
            f"{len(extra)} not ReLU/ReLU6 {'✓' if ok else '✗'}"
        )
        if extra:
            fail("other_activations", f"you listed {sorted(set(extra))} on {label}")
        relu6 = [name for name, m in expected if isinstance(m, nn.ReLU6) and name in missing]
        if len(missing) > len(relu6):
            fail("missed_nested", f"{label}: {[n for n in missing if n not in relu6][:3]} missing")
        if relu6:
            fail("relu6_missed", f"{label}: {relu6} missing")
    passed("check_relu_modules")


@graded
def check_guided_relus(fn: Callable[[nn.Module], Any]) -> None:
    """Check ``fn(model)``, a context manager making every ReLU/ReLU6 guided inside ``with``.

    On a model with a top-level ReLU, a nested one and a ReLU6: the input gradient inside
    the block must equal :func:`course_utils.guided_backprop` (ReLU6 keeps its clipping at
    6), and afterwards the model must be exactly as before — same module objects and
    forwards, no hooks, plain gradients — also when the block raises. A function that
    modifies the model and returns ``None`` is accepted so the check can say what it broke.
    """
    with seeded(6):
        model = SwapNet().eval()
    images = probe_images(2)
    labels = LABELS[:2]
    relus = [m for _, m in relu_modules(model)]
    expected = guided_backprop(model, images, labels)
    before = snapshot(model, (images, labels))

    ctx = call(fn, model)
    if not hasattr(ctx, "__enter__"):
        assert_model_intact(model, before, when="after fn(model)")
        fail("wrong_values", "fn(model) returned no context manager; use @contextmanager")

    def inside() -> torch.Tensor:
        with ctx:
            return input_gradient(model, images, labels, eval_mode=False)

    got = call(inside)  # an error of the learner's hooks shows up in this backward pass
    assert_model_intact(model, before, when="after the block")
    print("model intact after the block ✓")
    if not report("gradient inside the block vs guided", got, expected):
        nested = model.get_submodule("features.2.0.1")
        relu6 = model.get_submodule("features.4")
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
    try:
        assert_model_intact(model, before, when="after an error inside the block")
    except AssertionError as exc:
        fail("not_restored_on_error", str(exc).split("\n")[0].split(" — ", 1)[-1])
    print("model restored after an error inside the block ✓")
    passed("check_guided_relus")


def squeezenet_probe() -> tuple[nn.Module, torch.Tensor]:
    """Seeded SqueezeNet 1.1 (eval) and three 64×80 images, the second one brighter."""
    with seeded(17):  # a seed where every probe label gives a non-empty map
        model = squeezenet1_1(weights=None).eval()
        images = torch.randn(3, 3, 64, 80)
    images[1] *= 3
    return model, images


@graded
def check_guided_backprop(fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]) -> None:
    """Check ``fn(model, images, labels)`` → guided-backprop gradients, end to end.

    ``fn`` may return a tensor ``(N, C, H, W)`` or, like the assignment, a numpy array
    ``(N, H, W, C)``. Compared with :func:`course_utils.guided_backprop` on SqueezeNet 1.1
    (random weights) and three non-square 64×80 images; after every call the model must be
    intact (modules, forwards, hooks, ``param.grad``, and a re-run plain gradient that is
    still plain); probes the labels (one-hot over the batch, hard-coded vector, softmax),
    train mode, two calls on one tensor, the caller's images, batches of one and four, and
    the ``meta`` device.
    """
    model, images = squeezenet_probe()
    before = snapshot(model, (images[:1], LABELS[:1]))

    def wrapped(m: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nchw(guarded_call(fn, model, before, m, x, labels), x, "the guided gradient")

    def reference(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return guided_backprop(model, x, labels)

    def diagnose(got: torch.Tensor) -> None:
        relus = [m for _, m in relu_modules(model)]
        top = [m for m in model.get_submodule("features").children() if m in relus]
        scale = float(got.abs().max()) or 1.0
        found = []
        for guided_key, guided in [(None, relus), ("no_guided_relus", []), ("missed_nested", top)]:
            for target_key, target in [(None, None), *WRONG_TARGETS]:
                keys = [k for k in (target_key, guided_key) if k]
                if not keys:
                    continue
                wrong = input_gradient(model, images, LABELS, guided, target=target)
                if torch.allclose(got, wrong, rtol=1e-3, atol=1e-4 * scale):
                    found.append((keys, f"your gradient matches {' + '.join(keys)}"))
        first_in_stage_order(found)

    run_gradient_probes(wrapped, model, images, reference, "guided gradient", diagnose)
    on_meta(
        lambda: call(fn, meta_copy(model), images.to("meta"), LABELS.to("meta")),
        "guided backprop",
    )
    passed("check_guided_backprop")
