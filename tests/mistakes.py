"""Wrong implementations of every exercise, one classic mistake each, for tests/test_checks.py.

Each one is what a learner plausibly writes (several come straight from the original
assignment, :mod:`course_utils.original`). The end-to-end functions are built by
:func:`learner_guided_backprop` and :func:`learner_grad_cam` from switches that default to the
correct choice, so every wrong variant differs from a correct one in exactly one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from course_utils import GuidedReLU, guided_relus, normalize_per_image, select_scores, upsample
from course_utils.original import CustomReLU, OriginalGradCam


def not_attempted(*args: Any) -> Any:
    """The learner edition's unsolved exercise cell."""
    raise NotImplementedError


# -- stage 1: the ReLU rule ---------------------------------------------------------------


#: The assignment's forward: ``torch.zeros(x.size())`` is float32 on the CPU.
CpuZerosReLU = CustomReLU


class BackpropRuleReLU(torch.autograd.Function):
    """Backward is the true derivative ``g·1[x > 0]``: plain backprop."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * (x > 0)


class DeconvRuleReLU(torch.autograd.Function):
    """Backward ``g·1[g > 0]`` ignores the input: the deconvnet rule."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g.clamp(min=0)


class InplaceForwardReLU(torch.autograd.Function):
    """Clamps the caller's tensor in place (grad mode is off inside ``forward``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp_(min=0).clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * (x > 0) * (g > 0)


def leaky_forward(x: torch.Tensor) -> torch.Tensor:
    """Forward is not a ReLU."""
    return F.leaky_relu(x, 0.1)


# -- stage 2: class scores ------------------------------------------------------------------


def squeeze_all(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The assignment's ``gather(...).squeeze()``: 0-d for a batch of one."""
    return scores.gather(1, labels.view(-1, 1)).squeeze()


def gather_dim0(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return scores.gather(0, labels.view(-1, 1)).squeeze(1)


def no_squeeze(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return scores.gather(1, labels.view(-1, 1))


def predicted(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return scores.max(dim=1).values


def detached(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.tensor([scores[i, int(c)].item() for i, c in enumerate(labels)])


def _gradient(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    target: str = "gather",
    use_eval: bool = True,
    copy: bool = True,
    keep_param_grads: bool = False,
) -> torch.Tensor:
    """Input gradient of the class scores with one switchable mistake per keyword."""
    if use_eval:
        model.eval()
    x = images.detach().clone() if copy else images
    x.requires_grad_(True)
    if copy:
        x.grad = None
    scores = model(x)
    if target == "gather":
        scores.gather(1, labels.view(-1, 1)).sum().backward()
    elif target == "onehot_batch_sum":
        onehot = F.one_hot(labels, scores.shape[1]).sum(dim=0)  # (K,): all labels at once
        (scores * onehot).sum().backward()
    elif target == "ones":
        scores.backward(torch.ones_like(scores))  # every class, whatever the labels
    elif target == "class0":
        scores[:, 0].sum().backward()
    elif target == "predicted":
        scores.max(dim=1).values.sum().backward()  # the labels are never read
    if not keep_param_grads:
        model.zero_grad(set_to_none=True)  # backward() also filled every param.grad
    return x.grad


def onehot_batch_sum(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Any:
    return _gradient(model, images, labels, target="onehot_batch_sum")


def ones_backward(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Any:
    return _gradient(model, images, labels, target="ones")


def class0_backward(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Any:
    return _gradient(model, images, labels, target="class0")


def predicted_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Any:
    return _gradient(model, images, labels, target="predicted")


def no_eval_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Any:
    return _gradient(model, images, labels, use_eval=False)


def accumulating_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Any:
    """``images.requires_grad_()`` then ``images.grad``: the assignment's pattern."""
    return _gradient(model, images, labels, copy=False)


def mutating_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Any:
    """No accumulation (``.grad`` is read via autograd.grad), but the caller's tensor is
    switched to ``requires_grad``.
    """
    model.eval()
    images.requires_grad_(True)
    (grad,) = torch.autograd.grad(select_scores(model(images), labels).sum(), images)
    return grad


# -- stage 3: hooks -------------------------------------------------------------------------


def _record(
    model: nn.Module,
    layer: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    backward_hook: str = "tensor",
    clone: bool = True,
    remove: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A hook-based recorder with one switchable mistake per keyword."""
    module = model.get_submodule(layer)
    store: dict[str, torch.Tensor] = {}

    def forward_hook(m: nn.Module, inputs: Any, output: torch.Tensor) -> Any:
        store["act"] = output.detach().clone() if clone else output
        if backward_hook == "tensor":
            output.register_hook(lambda g: store.__setitem__("grad", g))
        return output.clone() if clone else None

    def module_hook(m: nn.Module, grad_in: Any, grad_out: Any) -> None:
        store["grad"] = grad_out[0]

    handles = [module.register_forward_hook(forward_hook)]
    if backward_hook == "deprecated":
        handles.append(module.register_backward_hook(module_hook))
    elif backward_hook == "full":
        handles.append(module.register_full_backward_hook(module_hook))
    model.eval()
    select_scores(model(images), labels).sum().backward()
    if remove:
        for handle in handles:
            handle.remove()
    return store["act"], store["grad"]


def hooks_left(model: nn.Module, layer: str, images: torch.Tensor, labels: torch.Tensor) -> Any:
    return _record(model, layer, images, labels, remove=False)


def deprecated_hook(
    model: nn.Module, layer: str, images: torch.Tensor, labels: torch.Tensor
) -> Any:
    return _record(model, layer, images, labels, backward_hook="deprecated")


def full_hook_inplace(
    model: nn.Module, layer: str, images: torch.Tensor, labels: torch.Tensor
) -> Any:
    """``register_full_backward_hook`` with the network's in-place ReLU downstream."""
    return _record(model, layer, images, labels, backward_hook="full", clone=False)


def aliased_activation(
    model: nn.Module, layer: str, images: torch.Tensor, labels: torch.Tensor
) -> Any:
    """Stores the layer's output itself; the in-place ReLU after it overwrites it."""
    return _record(model, layer, images, labels, clone=False)


# -- stage 6: swapping ReLUs ----------------------------------------------------------------

RELUS = (nn.ReLU, nn.ReLU6)


def relus_among_children(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Looks one level deep only: misses every ReLU inside a block."""
    return [(name, m) for name, m in model.named_children() if isinstance(m, RELUS)]


def relus_without_relu6(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``isinstance(m, nn.ReLU)`` misses ``nn.ReLU6``."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ReLU)]


def relus_by_class_name(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``"ReLU" in type(m).__name__`` also picks up ``LeakyReLU``."""
    return [(name, m) for name, m in model.named_modules() if "ReLU" in type(m).__name__]


def relus_without_names(model: nn.Module) -> list[nn.Module]:
    """The modules alone, without their dotted names."""
    return [m for m in model.modules() if isinstance(m, RELUS)]


def relus_named_by_hand(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Names joined with "/" by hand: ``get_submodule`` cannot find them."""
    return [(n.replace(".", "/"), m) for n, m in model.named_modules() if isinstance(m, RELUS)]


def permanent_swap(model: nn.Module) -> None:
    """The assignment's loop, at every depth: a function replaces each ReLU module."""
    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            if isinstance(child, RELUS):
                module._modules[name] = GuidedReLU.apply


def _guided_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return GuidedReLU.apply(output)


@contextmanager
def _hooked(modules: list[nn.Module], *, finally_: bool = True, remove: bool = True) -> Iterator:
    handles = [m.register_forward_hook(_guided_hook) for m in modules]
    if not finally_:
        yield
        for handle in handles:
            handle.remove()
        return
    try:
        yield
    finally:
        for handle in handles if remove else []:
            handle.remove()


def top_level_only(model: nn.Module) -> Any:
    """Looks only at each direct child of each top-level container (misses Fire's ReLUs)."""
    found = [c for top in model.children() for c in top.children() if isinstance(c, RELUS)]
    return guided_relus(model, only=found)


def relu_only(model: nn.Module) -> Any:
    """``isinstance(m, nn.ReLU)`` misses ``nn.ReLU6``."""
    return guided_relus(model, only=[m for m in model.modules() if isinstance(m, nn.ReLU)])


class GuidedReLUModule(nn.Module):
    """A module around :class:`GuidedReLU`, for swapping in (and back out) by hand."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GuidedReLU.apply(x)


@contextmanager
def relu6_as_relu(model: nn.Module) -> Iterator:
    """Swaps every ReLU *and ReLU6* for a guided ReLU, and back: ReLU6 loses its clip at 6."""
    swapped = [
        (parent, name, child)
        for parent in list(model.modules())
        for name, child in parent._modules.items()
        if isinstance(child, RELUS)
    ]
    for parent, name, _ in swapped:
        parent._modules[name] = GuidedReLUModule()
    try:
        yield
    finally:
        for parent, name, child in swapped:
            parent._modules[name] = child


def hooks_never_removed(model: nn.Module) -> Any:
    return _hooked([m for m in model.modules() if isinstance(m, RELUS)], remove=False)


def nothing_guided(model: nn.Module) -> Any:
    """A context manager that forgets to guide anything."""
    return _hooked([])


@contextmanager
def full_backward_hooks(model: nn.Module) -> Iterator:
    """Clamps each activation's input gradient with ``register_full_backward_hook``: the
    in-place ReLUs then modify the hook's view and the backward pass raises.
    """
    handles = [
        m.register_full_backward_hook(lambda mod, gin, gout: (gin[0].clamp(min=0),))
        for m in model.modules()
        if isinstance(m, RELUS)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def no_finally(model: nn.Module) -> Any:
    """A @contextmanager without try/finally: an error in the block skips the clean-up."""
    return _hooked([m for m in model.modules() if isinstance(m, RELUS)], finally_=False)


# -- stage 4: pooling -----------------------------------------------------------------------


def weights_sum(grads: torch.Tensor) -> torch.Tensor:
    return grads.sum(dim=(2, 3))


def weights_keepdim(grads: torch.Tensor) -> torch.Tensor:
    return grads.mean(dim=(2, 3), keepdim=True)


def weights_wrong_dims(grads: torch.Tensor) -> torch.Tensor:
    return grads.mean(dim=(1, 2))


def cam_no_relu(acts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (weights[:, :, None, None] * acts).sum(dim=1)


def cam_relu_first(acts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return torch.relu(weights[:, :, None, None] * acts).sum(dim=1)


def cam_channel_mean(acts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return torch.relu((weights[:, :, None, None] * acts).mean(dim=1))


def cam_keepdim(acts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return torch.relu((weights[:, :, None, None] * acts).sum(dim=1, keepdim=True))


def cam_first_weights(acts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return torch.relu((weights[0][None, :, None, None] * acts).sum(dim=1))


# -- stage 5: upsampling and normalisation --------------------------------------------------


def pil_resize(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """The assignment: PIL's ``resize`` reads ``(H, W)`` as ``(width, height)``."""
    return np.stack(
        [np.array(Image.fromarray(m.numpy()).resize(size, Image.BILINEAR)) for m in maps]
    )


def _interpolate(maps: torch.Tensor, size: tuple[int, int], **kw: Any) -> torch.Tensor:
    return F.interpolate(maps[:, None], size=size, **kw)[:, 0]


def align_corners(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return _interpolate(maps, size, mode="bilinear", align_corners=True)


def bicubic(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return _interpolate(maps, size, mode="bicubic", align_corners=False)


def nearest(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return _interpolate(maps, size, mode="nearest")


def per_batch(maps: torch.Tensor) -> torch.Tensor:
    """The assignment: ``cam -= cam.min(); cam /= cam.max()`` over the whole batch."""
    maps = maps.clone()
    maps -= maps.min()
    return maps / maps.max()


def per_image_nan(maps: torch.Tensor) -> torch.Tensor:
    low = maps.flatten(1).min(dim=1).values[:, None, None]
    high = maps.flatten(1).max(dim=1).values[:, None, None]
    return (maps - low) / (high - low)


def in_place(maps: torch.Tensor) -> torch.Tensor:
    maps -= maps.flatten(1).min(dim=1).values[:, None, None]
    high = maps.flatten(1).max(dim=1).values[:, None, None]
    return maps / torch.where(high > 0, high, torch.ones_like(high))


def guard_on_max(maps: torch.Tensor) -> torch.Tensor:
    """Guards ``max > 0`` instead of ``max - min > 0``: a constant non-zero map is 0 / 0."""
    low = maps.flatten(1).min(dim=1).values[:, None, None]
    high = maps.flatten(1).max(dim=1).values[:, None, None]
    return torch.where(high > 0, (maps - low) / (high - low), torch.zeros_like(maps))


def flat_to_ones(maps: torch.Tensor) -> torch.Tensor:
    low = maps.flatten(1).min(dim=1).values[:, None, None]
    span = maps.flatten(1).max(dim=1).values[:, None, None] - low
    return torch.where(span > 0, (maps - low) / span.clamp(min=1e-12), torch.ones_like(maps))


# -- stages 6-7: end to end -----------------------------------------------------------------


def learner_guided_backprop(**switches: Any) -> Any:
    """A guided-backprop function; each switch turns on one mistake (see ``_gradient``).

    Switches: ``guided`` ("all", "top", "none", "permanent"), ``remove_hooks``, plus the
    ``_gradient`` keywords ``target``, ``use_eval``, ``copy``.
    """
    guided = switches.pop("guided", "all")
    remove = switches.pop("remove_hooks", True)

    def fn(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Any:
        if guided == "permanent":
            permanent_swap(model)
            return _gradient(model, images, labels, **switches)
        if guided == "top":  # the assignment's loop, without its Fire branch
            chosen = [m for m in model.features.children() if isinstance(m, RELUS)]
        else:
            chosen = [m for m in model.modules() if isinstance(m, RELUS) and guided == "all"]
        with _hooked(chosen, remove=remove):
            return _gradient(model, images, labels, **switches)

    return fn


def learner_grad_cam(
    *,
    normalize: str = "safe",
    resize: str = "interpolate",
    squeeze: str = "dim",
    use_eval: bool = True,
    remove_hooks: bool = True,
    target: str = "gather",
    deprecated_hook: bool = False,
) -> Any:
    """A Grad-CAM function on ``features.12``; each keyword can switch on one mistake."""

    def fn(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Any:
        store: dict[str, torch.Tensor] = {}

        def hook(m: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            store["act"] = output
            if not deprecated_hook:
                output.register_hook(lambda g: store.__setitem__("grad", g))

        def module_hook(m: nn.Module, grad_in: Any, grad_out: Any) -> None:
            store["grad"] = grad_out[0]

        handles = [model.features[12].register_forward_hook(hook)]
        if deprecated_hook:
            handles.append(model.features[12].register_backward_hook(module_hook))
        if use_eval:
            model.eval()
        scores = model(images)
        if target == "gather":
            chosen = scores.gather(1, labels.view(-1, 1))
            chosen = chosen.squeeze() if squeeze == "all" else chosen.squeeze(1)
            chosen.backward(torch.ones_like(chosen))
        else:
            (scores * F.one_hot(labels, scores.shape[1]).sum(dim=0)).sum().backward()
        model.zero_grad(set_to_none=True)
        if remove_hooks:
            for handle in handles:
                handle.remove()
        weights = store["grad"].mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * store["act"]).sum(dim=1)).detach()
        if squeeze == "all":
            cam = cam.squeeze()  # (1, h, w) -> (h, w) for a batch of one
        h, w = images.shape[-2:]
        if resize == "pil":
            cam = torch.from_numpy(pil_resize(cam, (h, w)))
        else:
            cam = upsample(cam, (h, w))
        normalizer = {"nan": per_image_nan, "batch": per_batch, "safe": normalize_per_image}
        return normalizer[normalize](cam)

    return fn


def original_method(name: str) -> Any:
    """``SeedGradCam().<name>`` with the course's argument order ``(model, images, labels)``."""
    return lambda model, images, labels: getattr(OriginalGradCam(), name)(images, labels, model)
