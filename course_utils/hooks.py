"""Stage 3 — hooks: reading a layer's activation and gradient, and leaving no trace.

The assignment registers a forward hook and the deprecated ``register_backward_hook`` and
never removes either, so every call adds two more hooks. This module does it the way
captum does:

* a **forward hook** records the layer's output ``A`` and hands the rest of the network a
  *clone*, so an in-place ReLU downstream cannot overwrite ``A`` (or the autograd node
  behind it);
* the gradient ``∂score/∂A`` comes from a **tensor hook** on ``A`` (for ``.backward()``
  users) or directly from :func:`torch.autograd.grad` (what :func:`course_utils.grad_cam`
  does — it leaves every ``param.grad`` untouched and stops at ``A``);
* every handle lives in a context manager and is removed in ``finally``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import torch
from torch import nn

__all__ = ["LayerRecorder", "evaluating", "resolve_layer"]


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> tuple[str, nn.Module]:
    """Find ``layer`` inside ``model`` and return ``(dotted_name, module)``.

    Args:
        model: the network.
        layer: a submodule of ``model``, or its dotted name such as ``"features.12"``
            (SqueezeNet) or ``"layer4"`` (ResNet).

    Raises:
        TypeError: ``layer`` is neither a module nor a string.
        ValueError: the name does not exist (the message lists close and valid names), or
            the module is not part of ``model``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> resolve_layer(net, "0")[0]
        '0'
    """
    names = {id(m): n for n, m in model.named_modules()}
    if isinstance(layer, nn.Module):
        if id(layer) not in names:
            raise ValueError(f"the given {type(layer).__name__} module is not part of the model")
        return names[id(layer)], layer
    if not isinstance(layer, str):
        raise TypeError(f"layer must be an nn.Module or a dotted name, got {type(layer).__name__}")
    try:
        return layer, model.get_submodule(layer)
    except AttributeError:
        valid = [n for n in names.values() if n]
        close = difflib.get_close_matches(layer, valid, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"{type(model).__name__} has no layer named {layer!r}.{hint} "
            f"Some valid names: {', '.join(valid[:8])}{', ...' if len(valid) > 8 else ''}"
        ) from None


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode, then restore every module's ``training`` flag.

    Eval mode matters: SqueezeNet's Dropout would otherwise zero random channels (the map
    changes from call to call) and BatchNorm would use — and update — batch statistics.
    Restoring per module (not just ``model.train(was_training)``) keeps mixed states intact.
    """
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


class LayerRecorder:
    """Context manager recording one layer's activation and, optionally, its gradient.

    Attributes:
        name: dotted name of the recorded layer.
        activation: the layer's output from the last forward pass, still attached to the
            autograd graph (call ``.detach()`` before plotting). ``None`` before a forward.
        gradient: ``∂(backpropagated quantity)/∂activation``, filled by a tensor hook when
            ``.backward()`` runs through the layer. ``None`` until then.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten())
        >>> x = torch.randn(1, 1, 4, 4)
        >>> with LayerRecorder(net, "0") as rec:
        ...     net(x).sum().backward()
        >>> rec.activation.shape, rec.gradient.shape
        (torch.Size([1, 2, 2, 2]), torch.Size([1, 2, 2, 2]))
        >>> len(net[0]._forward_hooks)
        0
    """

    def __init__(
        self, model: nn.Module, layer: nn.Module | str, *, record_gradient: bool = True
    ) -> None:
        self.model = model
        self.name, self.module = resolve_layer(model, layer)
        self.record_gradient = record_gradient
        self.activation: torch.Tensor | None = None
        self.gradient: torch.Tensor | None = None
        self._handles: list[Any] = []

    def _forward_hook(
        self, module: nn.Module, inputs: tuple[Any, ...], output: Any
    ) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"layer {self.name!r} returns {type(output).__name__}, not a tensor; "
                "choose a layer whose output is a single feature-map tensor"
            )
        if self.activation is not None:
            raise ValueError(
                f"layer {self.name!r} ran twice in one forward pass (a shared module); "
                "its activation is ambiguous, so record a layer that runs once"
            )
        if not output.requires_grad and torch.is_grad_enabled():
            # Everything upstream is frozen (or the input needs no grad): start the graph
            # here, so that ∂score/∂A still exists without differentiating down to the input.
            output = output.detach().requires_grad_(True)
        self.activation = output
        if self.record_gradient and output.requires_grad:
            self._handles.append(output.register_hook(self._save_gradient))
        # Downstream layers receive a copy: an in-place op there cannot alias `output`.
        return output.clone()

    def _save_gradient(self, grad: torch.Tensor) -> None:
        self.gradient = grad.detach()

    def _new_forward_pass(self, model: nn.Module, inputs: tuple[Any, ...]) -> None:
        # Each call of the whole model starts a fresh recording.
        self.activation = None
        self.gradient = None

    def __enter__(self) -> LayerRecorder:
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._new_forward_pass))
            self._handles.append(self.module.register_forward_hook(self._forward_hook))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
