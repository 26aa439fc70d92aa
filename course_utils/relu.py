"""Stage 1 — ReLU masking and the guided-backpropagation rule.

The forward pass of a ReLU is a mask: keep ``x`` where ``x > 0``. The three classic
"backward" rules differ only in which mask they apply to the incoming gradient ``g``:

* backpropagation (the true derivative):  ``g · 1[x > 0]``
* deconvnet (Zeiler & Fergus):            ``g · 1[g > 0]``
* guided backpropagation (Springenberg):  ``g · 1[x > 0] · 1[g > 0]``

:class:`GuidedReLU` implements the last one as a :class:`torch.autograd.Function`, and
:func:`guided_relus` gives every ``nn.ReLU``/``nn.ReLU6`` module of a model the same rule for
the duration of a ``with`` block, then leaves the model exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["GuidedReLU", "guided_relus", "relu_modules"]

#: Module types whose backward pass :func:`guided_relus` rewrites.
RELU_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)


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
        positive = x > 0  # kept as bool: a quarter of the memory of a float mask
        ctx.save_for_backward(positive)
        return torch.addcmul(x.new_zeros(()), x, positive.type_as(x))

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (positive,) = ctx.saved_tensors
        return torch.addcmul(
            grad_output.new_zeros(()), grad_output.clamp(min=0), positive.type_as(grad_output)
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
            (``F.relu`` inside ``forward``) cannot be reached by hooks.
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
