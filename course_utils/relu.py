"""Stage 1 — ReLU masking and the guided-backpropagation rule.

The forward pass of a ReLU is a mask: keep ``x`` where ``x > 0``. The three classic
"backward" rules differ only in which mask they apply to the incoming gradient ``g``:

* backpropagation (the true derivative):  ``g · 1[x > 0]``
* deconvnet (Zeiler & Fergus):            ``g · 1[g > 0]``
* guided backpropagation (Springenberg):  ``g · 1[x > 0] · 1[g > 0]``

:class:`GuidedReLU` implements the last one as a :class:`torch.autograd.Function`, and
:func:`guided_relus` gives every ``nn.ReLU``/``nn.ReLU6`` module of a model the same rule for
the duration of a ``with`` block, then leaves the model exactly as it was.
:class:`ActivationCalls` goes one step further for :func:`course_utils.guided_backprop`: it
sees every activation the forward pass *runs* — modules and ``F.relu`` calls alike — guides the
ReLUs among them and counts the rest, so that guided backprop never degrades silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

__all__ = ["ActivationCalls", "GuidedReLU", "guided_relus", "relu_modules"]

#: Module types whose backward pass :func:`guided_relus` rewrites.
RELU_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)

#: Activation functions the guided rule applies to (``hardtanh`` from 0, i.e. ReLU6, too).
GUIDED_ACTIVATIONS = frozenset({"relu", "relu6"})
#: Rectifier-like activations with no guided rule: a network mixing them with ReLUs would get
#: a silent mix of guided and plain gradients, so :func:`course_utils.guided_backprop` refuses.
UNGUIDED_ACTIVATIONS = frozenset(
    {
        "celu",
        "elu",
        "gelu",
        "hardshrink",
        "hardswish",
        "hardtanh",
        "leaky_relu",
        "mish",
        "prelu",
        "rrelu",
        "selu",
        "silu",
        "softplus",
        "softshrink",
        "threshold",
    }
)
#: Saturating gates (attention, squeeze-and-excitation): named in messages, never refused.
GATE_ACTIVATIONS = frozenset({"sigmoid", "hardsigmoid", "tanh"})
_ACTIVATIONS = GUIDED_ACTIVATIONS | UNGUIDED_ACTIVATIONS | GATE_ACTIVATIONS


class GuidedReLU(torch.autograd.Function):
    r"""ReLU whose backward pass follows the guided-backpropagation rule.

    .. math::
        y = x \odot \mathbb{1}[x > 0], \qquad
        \frac{\partial L}{\partial x} \leftarrow g \odot \mathbb{1}[x > 0] \odot \mathbb{1}[g > 0]

    The forward is written with ``torch.addcmul`` like the assignment, but it adds to a
    0-d zero made with ``x.new_zeros(())``: that scalar lives on ``x``'s device with ``x``'s
    dtype and broadcasts, so nothing full-size is allocated and nothing is pinned to the CPU
    (the assignment's ``torch.zeros(x.size())`` fails for CUDA tensors).

    The backward is *not* the derivative of the forward — that is the point of guided
    backprop. :func:`torch.autograd.gradcheck` alone does not notice: it probes with
    non-negative upstream gradients, which the ``1[g > 0]`` mask lets through. Behind a
    sign flip (``-GuidedReLU.apply(x)``) it fails, as it should.

    Example:
        >>> x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
        >>> y = GuidedReLU.apply(x)
        >>> y.backward(torch.tensor([5.0, -4.0, 1.0]))
        >>> x.grad
        tensor([0., 0., 1.])
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        """ReLU as ``addcmul(0, x, 1[x > 0])``; keeps the mask for the backward pass."""
        positive = x > 0  # kept as bool: a quarter of the memory of a float mask
        ctx.save_for_backward(positive)
        return torch.addcmul(x.new_zeros(()), x, positive.type_as(x))

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        """The guided rule: pass ``g`` where both ``x > 0`` and ``g > 0``."""
        (positive,) = ctx.saved_tensors
        return torch.addcmul(
            grad_output.new_zeros(()), grad_output.clamp(min=0), positive.type_as(grad_output)
        )


def _activation_name(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict) -> str | None:
    """The activation a torch function call computes (``"relu"`` for ``F.relu``, ``relu_``...)."""
    name = getattr(func, "__name__", "").strip("_")
    if name == "hardtanh":  # nn.ReLU6 runs F.hardtanh(x, 0.0, 6.0)
        low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        return "relu6" if low == 0 else "hardtanh"
    return name if name in _ACTIVATIONS else None


class ActivationCalls(TorchFunctionMode):
    """Count every activation function a forward pass runs; optionally guide the ReLUs.

    A ``TorchFunctionMode`` sees each torch function call made while it is active, whether it
    comes from an ``nn.ReLU`` module (which calls ``F.relu``), from ``F.relu`` or
    ``torch.relu`` written into a ``forward``, from a ``Tensor.relu()`` method or an in-place
    variant. With ``guide=True`` each ReLU/ReLU6 output gets the tensor hook of
    :func:`guided_relus` (zero the negative incoming gradients), so functional calls are
    guided exactly like modules, and :attr:`fired` counts the hooks that ran in the backward
    pass — proof that guidance actually happened.

    Attributes:
        calls: activation name -> number of calls during the forward pass.
        fired: number of guided hooks that ran in backward passes so far.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.SiLU())
        >>> with ActivationCalls() as seen:
        ...     _ = net(torch.ones(1, 2))
        >>> dict(seen.calls)
        {'relu': 1, 'silu': 1}
    """

    def __init__(self, *, guide: bool = False) -> None:
        super().__init__()
        self.guide = guide
        self.calls: Counter[str] = Counter()
        self.fired = 0

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Iterable[type],
        args: tuple[Any, ...] = (),
        kwargs: dict | None = None,
    ) -> Any:
        """Run ``func``, then count it (and hook its output) if it is an activation."""
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = _activation_name(func, args, kwargs)
        if name is not None:
            self.calls[name] += 1
            if (
                self.guide
                and name in GUIDED_ACTIVATIONS
                and isinstance(out, torch.Tensor)
                and out.requires_grad
            ):
                out.register_hook(self._clamp_and_count)
        return out

    def _clamp_and_count(self, grad: torch.Tensor) -> torch.Tensor:
        self.fired += 1
        return _clamp_negative(grad)

    def described(self, names: Iterable[str]) -> str:
        """``"silu (49 calls), sigmoid (16 calls)"`` for the given activation names."""
        wanted = set(names)
        return ", ".join(
            f"{name} ({n} call{'s' if n > 1 else ''})"
            for name, n in self.calls.most_common()
            if name in wanted
        )

    def refuse_unguidable(self, model: nn.Module) -> None:
        """Raise unless the forward pass ran ReLUs and no activation without a guided rule.

        Raises:
            ValueError: the pass ran no ReLU/ReLU6 (the message names the activations it
                ran), or it ran rectifier-like activations the guided rule does not cover.
        """
        kind = type(model).__name__
        if not any(self.calls[name] for name in GUIDED_ACTIVATIONS):
            found = self.described(UNGUIDED_ACTIVATIONS | GATE_ACTIVATIONS) or "none at all"
            raise ValueError(
                f"{kind} runs no ReLU or ReLU6 in its forward pass (activations it runs: "
                f"{found}), so guided backprop has no rule to apply; it is defined for ReLU "
                "networks. Grad-CAM works on any CNN."
            )
        unguided = self.described(UNGUIDED_ACTIVATIONS)
        if unguided:
            raise ValueError(
                f"{kind} runs {unguided} besides its ReLUs; these activations have no guided "
                "rule, so the result would silently mix guided and plain gradients. Guided "
                "backprop is defined for ReLU networks; Grad-CAM works on any CNN."
            )


def relu_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``nn.ReLU``/``nn.ReLU6`` module of ``model`` at any depth, with its dotted name.

    A module object used at several places (ResNet re-uses one ``relu``) appears once.
    """
    return [(name, m) for name, m in model.named_modules() if isinstance(m, RELU_TYPES)]


def _clamp_negative(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp(min=0)


@contextmanager
def guided_relus(model: nn.Module, only: Iterable[nn.Module] | None = None) -> Iterator[list[str]]:
    """Route every ReLU/ReLU6 module of ``model`` through :class:`GuidedReLU` inside a block.

    Unlike writing ``GuidedReLU.apply`` into ``model._modules`` (which leaves a function where
    a module was, so the next ``model.eval()`` or ``state_dict()`` crashes), this attaches a
    forward hook to each activation module and removes every hook on exit — also when the
    block raises. The module objects, their ``inplace`` flags and the weights are untouched.

    How: the guided rule factors into the two masks of the introduction,
    ``g · 1[x > 0] · 1[g > 0]`` = (backprop mask) ∘ (deconvnet mask). The module's own
    backward already applies ``1[x > 0]`` (ReLU6: ``1[0 < x < 6]``), so the forward hook only
    puts a tensor hook on the module's *output* that zeroes negative incoming gradients.
    The result equals :class:`GuidedReLU` exactly (a test checks it) at the cost of one
    ``clamp`` per activation in the backward pass — no extra forward work, which matters on
    a light network like SqueezeNet where elementwise passes are a large share of the time.
    Hooking the output (not the input) is also what keeps in-place ReLUs correct.

    Args:
        model: network containing ``nn.ReLU``/``nn.ReLU6`` modules (at any depth, Fire
            modules and in-place ReLUs included). Activations called functionally
            (``F.relu`` inside ``forward``) cannot be reached by module hooks;
            :func:`course_utils.guided_backprop` reaches them with :class:`ActivationCalls`.
        only: make just these activation modules of ``model`` guided (default: all of them),
            e.g. to see what a guided backprop that misses the Fire modules' ReLUs produces.

    Yields:
        The dotted names of the activation modules that were made guided.

    Raises:
        ValueError: if the model has no ReLU/ReLU6 module (or ``only`` selects none, or
            names a module that is not one of the model's activations), since guided
            backprop would silently degrade to the plain gradient.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
        >>> with guided_relus(net) as names:
        ...     names
        ['1']
        >>> len(net[1]._forward_hooks)
        0
    """
    found = relu_modules(model)
    if only is not None:
        chosen = {id(m) for m in only}
        known = {id(m) for _, m in found}
        if not chosen <= known:
            raise ValueError("`only` must list nn.ReLU/nn.ReLU6 modules of the model")
        found = [(name, m) for name, m in found if id(m) in chosen]
        if not found:
            raise ValueError("`only` selects no activation module; nothing would be guided")
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no nn.ReLU or nn.ReLU6 module, so guided backprop "
            "has nothing to rewrite (activations called as F.relu inside forward() cannot "
            "be hooked; use nn.ReLU modules)."
        )
    handles: list[RemovableHandle] = []

    def clamp_output_gradient(
        module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        if output.requires_grad:
            handles.append(output.register_hook(_clamp_negative))

    try:
        for _, module in found:
            handles.append(module.register_forward_hook(clamp_output_gradient))
        yield [name for name, _ in found]
    finally:
        for handle in handles:
            handle.remove()
