"""What the sandbox worker does with a student's functions, and the models both sides build.

Each scenario receives the notebook's namespace and plain parameters (arrays, numbers,
strings, model specs) from the grader, calls the student's code, and returns *observations*:
plain data the grader checks against its own, independent computation. Observations are
chosen so that faking one means computing the right thing: for instance "the model is as it
was" is judged from a plain gradient computed on the model after the call (a hook left behind
or a changed weight changes it), not from a flag the worker reports.

Models are built from a spec on both sides (:func:`build_model`: seeded torchvision
SqueezeNet 1.1, a small ReLU6/in-place-ReLU net, the course's shapes network), so the grader
holds an identical copy without any object crossing the boundary.

Bound into the sandbox (read-only); imports only torch, torchvision, numpy, course_utils'
allowed modules and :mod:`grading.protocol`.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

#: Model kinds a spec may name.
MODEL_KINDS = ("squeezenet", "relu6_net", "shapes")
#: The spec of every model :func:`build_model` made, so a stand-in can name it to the grader.
SPECS: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()
_BUILDING = threading.Lock()


#: Makes a function that the grader computes: arguments and result cross the boundary as data.
Remote = Callable[[str], Callable[..., Any]]


class StudentError(Exception):
    """The student's code raised, or returned something that is not what was asked."""


def build_model(spec: dict[str, Any]) -> nn.Module:
    """A model from its spec: ``{"kind": ..., "seed": int, "train": bool}``.

    ``squeezenet``: torchvision's SqueezeNet 1.1, 10 classes, seeded random weights (Fire
    modules, in-place ReLUs, Dropout). ``relu6_net``: ReLU6 and a nested in-place ReLU, its
    first convolution scaled so that many outputs exceed 6 (else a lost ReLU6 clip would go
    unnoticed). ``shapes``: the course's trained shapes network.
    """
    kind, seed = spec.get("kind"), spec.get("seed", 0)
    if kind not in MODEL_KINDS or type(seed) is not int or not 0 <= seed < 2**31:
        raise ValueError(f"bad model spec {str(spec)[:100]}")
    with _BUILDING:  # the global RNG is shared by the grader's threads
        model = _build(kind, seed)
    model.train(bool(spec.get("train", False)))
    SPECS[model] = dict(spec)
    return model


def _build(kind: str, seed: int) -> nn.Module:
    model: nn.Module
    if kind == "squeezenet":
        from torchvision.models import squeezenet1_1

        torch.manual_seed(seed)
        model = squeezenet1_1(weights=None, num_classes=10)
    elif kind == "relu6_net":
        torch.manual_seed(seed)
        first = nn.Conv2d(3, 8, 3, padding=1)
        model = nn.Sequential(
            first,
            nn.ReLU6(),
            nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True)),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 5),
        )
        with torch.no_grad():
            first.weight.mul_(20)
    else:
        from course_utils.models import load_model

        model = load_model("shapes").model
    return model


def tensor_of(value: Any) -> torch.Tensor:
    """A grader-sent array as a fresh tensor."""
    return torch.from_numpy(np.array(value))


def observe(value: Any, what: str = "the result") -> Any:
    """A student's return value as data: exactly a ``torch.Tensor`` (or tuples of them).

    Subclasses are refused: only the bytes of a plain tensor are sent, so a class that lies
    in its comparisons has nothing to lie to.
    """
    if type(value) is torch.Tensor:
        return {
            "array": value.detach().cpu().contiguous().numpy().copy(),
            "requires_grad": bool(value.requires_grad),
        }
    if type(value) in (tuple, list) and len(value) <= 8:
        return [observe(v, f"{what}[{i}]") for i, v in enumerate(value)]
    raise StudentError(f"{what} is a {type(value).__name__}, not a torch.Tensor")


def hook_count(model: nn.Module) -> int:
    """Forward and backward hooks (and pre-hooks) left on any module."""
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def probe(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """The model after a student's call, observed.

    Its plain output and input gradient in eval mode, training flags, module types, hooks and
    how many ``param.grad`` were set.

    The gradient is the one the grader checks: a leftover hook, a guided ReLU still in place
    or a changed weight changes it.
    """
    flags = [m.training for m in model.modules()]
    state = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        (grad,) = torch.autograd.grad(out[:, 1].sum(), xi)
    finally:
        for m, flag in state:
            m.training = flag
    return {
        "out": out.detach().numpy().copy(),
        "grad": grad.numpy().copy(),
        "training": flags,
        "types": [
            f"{n}:{type(m).__module__}.{type(m).__qualname__}" for n, m in model.named_modules()
        ],
        "param_grads": sum(p.grad is not None for p in model.parameters()),
        "hooks": hook_count(model),
    }


def argument(value: Any) -> Any:
    """A grader-sent argument as the object the student's function takes.

    Arrays become tensors (``{"grad_leaf": array}``: one that requires grad),
    ``{"model": spec}`` a model (:func:`build_model`), ``{"tuple": [...]}`` a tuple.
    """
    if isinstance(value, np.ndarray):
        return tensor_of(value)
    if isinstance(value, dict) and set(value) == {"grad_leaf"}:
        return tensor_of(value["grad_leaf"]).requires_grad_(True)
    if isinstance(value, dict) and set(value) == {"model"}:
        return build_model(value["model"])
    if isinstance(value, dict) and set(value) == {"tuple"}:
        return tuple(value["tuple"])
    return value


@contextlib.contextmanager
def replaced(namespace: dict[str, Any], names: dict[str, Any]) -> Iterator[None]:
    """Inside the block, the notebook globals ``names`` are the given objects (stand-ins)."""
    saved = {n: namespace[n] for n in names if n in namespace}
    namespace.update(names)
    try:
        yield
    finally:
        for n in names:
            namespace.pop(n, None)
        namespace.update(saved)


def call(
    namespace: dict[str, Any],
    remote: Remote,
    *,
    function: str,
    args: list[Any],
    probe_input: Any = None,
    stand_ins: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Call the notebook's ``function`` on the grader's arguments and observe everything.

    ``stand_ins`` names notebook globals (earlier answers) that the grader computes for the
    duration of the call (:data:`Remote`): the final question is then graded on its own.
    Returns the result (:func:`observe`), each tensor argument as it is afterwards (inputs
    must stay untouched, without ``.grad``) and, for each model argument, :func:`probe`.
    """
    fn = namespace.get(function)
    if not callable(fn):
        raise StudentError(f"the notebook defines no function {function}")
    values = [argument(a) for a in args]
    given = [v.clone() if isinstance(v, torch.Tensor) else None for v in values]
    with replaced(namespace, {name: remote(name) for name in stand_ins}):
        result = fn(*values)
    inputs = [
        None
        if before is None
        else {
            "array": v.detach().numpy().copy(),
            "requires_grad": bool(v.requires_grad),
            "has_grad": v.grad is not None,
        }
        for v, before in zip(values, given, strict=True)
    ]
    probes = [
        probe(v, tensor_of(probe_input))
        for v in values
        if isinstance(v, nn.Module) and probe_input is not None
    ]
    return {"result": observe(result), "inputs": inputs, "models": probes}


def guided_relu_function(
    namespace: dict[str, Any], remote: Remote, *, x: np.ndarray, out_grad: np.ndarray
) -> dict[str, Any]:
    """A1 Q1: ``GuidedReLUFn.apply(x)`` forward, and the gradient ``backward(out_grad)`` gives."""
    fn = namespace.get("GuidedReLUFn")
    if not isinstance(fn, type) or not hasattr(fn, "apply"):
        raise StudentError("the notebook defines no autograd Function GuidedReLUFn")
    xi = tensor_of(x).requires_grad_(True)
    y = fn.apply(xi)
    observed = observe(y, "the forward output")
    if type(y) is torch.Tensor and y.requires_grad:
        y.backward(tensor_of(out_grad))
    grad = xi.grad
    return {"forward": observed, "grad": None if grad is None else observe(grad, "x.grad")}


def guided_relus_block(
    namespace: dict[str, Any],
    remote: Remote,
    *,
    model: dict[str, Any],
    x: np.ndarray,
    unit: int,
    raise_inside: bool,
) -> dict[str, Any]:
    """A1 Q2: the student's context manager on a model built from ``model``.

    Inside ``with guided_relus(net)``: the output and the input gradient of class ``unit``;
    with ``raise_inside``, a ``KeyError`` raised in the block instead. Afterwards the model
    is probed (:func:`probe`): it must be exactly as it was.
    """
    manager = namespace.get("guided_relus")
    if not callable(manager):
        raise StudentError("the notebook defines no guided_relus")
    net = build_model(model)
    inputs = tensor_of(x)
    inside: dict[str, Any] = {}
    if raise_inside:
        with contextlib.suppress(KeyError), manager(net):
            raise KeyError("raised inside the block")
    else:
        with manager(net):
            xi = inputs.clone().requires_grad_(True)
            out = net(xi)
            (grad,) = torch.autograd.grad(out[:, unit].sum(), xi)
            inside = {"out": observe(out), "grad": observe(grad)}
    return {"inside": inside, "after": probe(net, inputs)}


#: Scenario name -> function; the worker serves exactly these.
SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "call": call,
    "guided_relu_function": guided_relu_function,
    "guided_relus_block": guided_relus_block,
}
