"""Fresh wrong answers, written independently of ``tests/mistakes.py``, to measure the checks.

Each case is ``(id, check name, wrong implementation, catalogue key it should be named)``.
They cover the classes of issue 10 (permanent swaps that keep module objects, per-batch
normalisation with another upsampling, hard-coded batch sizes, wrong layers, rectified or
transposed weights, softmax targets, CPU-only allocations, parameter gradients) and new ones.
``tests/test_fresh_mistakes.py`` measures the fail and naming rates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from course_utils import GuidedReLU, normalize_per_image

RELUS = (nn.ReLU, nn.ReLU6)
Case = tuple[str, str, Callable[..., Any], str]

# -- stage 1 ---------------------------------------------------------------------------------


def _relu_fn(forward: Callable[..., Any], backward: Callable[..., Any]) -> Any:
    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(x)
            return forward(x)

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            return backward(x, g)

    return Fn.apply


def _guided(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return g * (x > 0) * (g > 0)


RELU: list[Case] = [
    (
        "relu-ones-cpu",
        "check_guided_relu",
        _relu_fn(lambda x: x * (x > 0).float(), _guided),
        "cpu_only_zeros",
    ),
    (
        "relu-ge",
        "check_guided_relu",
        _relu_fn(torch.relu, lambda x, g: g * (x >= 0) * (g > 0)),
        "wrong_values",
    ),
    ("relu-abs-fwd", "check_guided_relu", _relu_fn(torch.abs, _guided), "forward_not_relu"),
    (
        "relu-grad-out-only",
        "check_guided_relu",
        _relu_fn(torch.relu, lambda x, g: g.relu()),
        "deconvnet_rule",
    ),
    (
        "relu-true-deriv",
        "check_guided_relu",
        _relu_fn(torch.relu, lambda x, g: g * (x > 0).to(g.dtype)),
        "backprop_rule",
    ),
    ("relu-detach", "check_guided_relu", lambda x: torch.relu(x).detach(), "not_differentiable"),
    (
        "relu-clamp-g",
        "check_guided_relu",
        _relu_fn(torch.relu, lambda x, g: (g * (x > 0)).clamp(max=0)),
        "wrong_values",
    ),
]

# -- stage 2 ---------------------------------------------------------------------------------


def _onehot_cpu(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    onehot = torch.zeros(scores.shape)
    onehot[torch.arange(len(labels)), labels.cpu()] = 1.0
    return (scores * onehot.to(scores.dtype)).sum(1)


SELECT: list[Case] = [
    (
        "sel-index-arange",
        "check_select_scores",
        lambda s, lab: s[torch.arange(4), lab],
        "hardcoded_batch_size",
    ),
    (
        "sel-softmax",
        "check_select_scores",
        lambda s, lab: s.softmax(1).gather(1, lab[:, None])[:, 0],
        "softmax_not_score",
    ),
    (
        "sel-logsoftmax",
        "check_select_scores",
        lambda s, lab: F.log_softmax(s, 1).gather(1, lab[:, None])[:, 0],
        "softmax_not_score",
    ),
    ("sel-max", "check_select_scores", lambda s, lab: s.max(1)[0], "predicted_not_labels"),
    (
        "sel-squeeze",
        "check_select_scores",
        lambda s, lab: s.gather(1, lab[:, None]).squeeze(),
        "squeeze_all",
    ),
    (
        "sel-keep-col",
        "check_select_scores",
        lambda s, lab: s.gather(1, lab.unsqueeze(1)),
        "no_squeeze",
    ),
    ("sel-onehot-cpu", "check_select_scores", _onehot_cpu, "cpu_only_tensor"),
    (
        "sel-item",
        "check_select_scores",
        lambda s, lab: torch.tensor([s[i, c].item() for i, c in enumerate(lab.tolist())]),
        "not_differentiable",
    ),
]


def _grad(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, how: str) -> Any:
    model.eval()
    x = images.detach().clone().requires_grad_(True)
    scores = model(x)
    if how == "ones31":
        picked = scores.gather(1, labels.view(-1, 1))
        (g,) = torch.autograd.grad(picked, x, torch.ones(3, 1))
    elif how == "softmax":
        (g,) = torch.autograd.grad(scores.softmax(1).gather(1, labels[:, None]).sum(), x)
    elif how == "onehot-cpu":
        onehot = torch.zeros(len(labels), scores.shape[1])
        onehot[torch.arange(len(labels)), labels] = 1
        (g,) = torch.autograd.grad((scores * onehot).sum(), x)
    elif how == "backward":
        scores.gather(1, labels.view(-1, 1)).sum().backward()
        g = x.grad
    elif how == "mean":
        (g,) = torch.autograd.grad(scores.gather(1, labels.view(-1, 1)).mean(), x)
    elif how == "label-vector":
        mask = torch.zeros_like(scores)
        mask[:, labels] = 1  # every label, every row
        (g,) = torch.autograd.grad((scores * mask).sum(), x)
    elif how == "numpy":
        (g,) = torch.autograd.grad(scores.gather(1, labels.view(-1, 1)).sum(), x)
        return g.numpy().transpose(0, 2, 3, 1)
    elif how == "squeeze-first":
        (g,) = torch.autograd.grad(scores.gather(1, labels.view(-1, 1)).sum(), x)
        return g.squeeze()
    elif how == "argmax":
        (g,) = torch.autograd.grad(scores.gather(1, scores.argmax(1, keepdim=True)).sum(), x)
    elif how == "train":
        model.train()
        (g,) = torch.autograd.grad(model(x).gather(1, labels.view(-1, 1)).sum(), x)
    elif how == "images-grad":
        images.requires_grad_(True)
        (g,) = torch.autograd.grad(model(images).gather(1, labels.view(-1, 1)).sum(), images)
    return g


def _g(how: str) -> Callable[..., Any]:
    return lambda model, images, labels: _grad(model, images, labels, how=how)


GRADIENT: list[Case] = [
    ("grad-ones31", "check_class_gradient", _g("ones31"), "hardcoded_batch_size"),
    ("grad-softmax", "check_class_gradient", _g("softmax"), "softmax_not_score"),
    ("grad-onehot-cpu", "check_class_gradient", _g("onehot-cpu"), "cpu_only_tensor"),
    ("grad-backward", "check_class_gradient", _g("backward"), "param_grads"),
    ("grad-mean", "check_class_gradient", _g("mean"), "wrong_values"),
    ("grad-label-vector", "check_class_gradient", _g("label-vector"), "onehot_batch_sum"),
    ("grad-numpy-ok-then-squeeze", "check_class_gradient", _g("squeeze-first"), "squeeze_all"),
    ("grad-argmax", "check_class_gradient", _g("argmax"), "predicted_not_labels"),
    ("grad-train", "check_class_gradient", _g("train"), "no_eval"),
    ("grad-images", "check_class_gradient", _g("images-grad"), "mutates_images"),
]

# -- stage 3 ---------------------------------------------------------------------------------


def _recorder(*, how: str) -> Callable[..., Any]:
    def record(model: nn.Module, layer: str, images: torch.Tensor, labels: torch.Tensor) -> Any:
        store: dict[str, torch.Tensor] = {}
        if how == "top-only":
            module = getattr(model, layer.split(".")[0])
        elif how == "next-layer":
            names = [n for n, _ in model.named_modules()]
            module = model.get_submodule(names[names.index(layer) + 1])
        else:
            module = model.get_submodule(layer)

        def hook(m: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            store["act"] = output.detach().clone()
            output.register_hook(lambda g: store.__setitem__("grad", g))
            return output.clone()

        handle = module.register_forward_hook(hook)
        scores = model(images)
        picked = scores.gather(1, labels.view(-1, 1)).sum()
        if how == "autograd-on-input":
            x = images.clone().requires_grad_(True)
            handle.remove()
            handle = module.register_forward_hook(hook)
            picked = model(x).gather(1, labels.view(-1, 1)).sum()
        if how == "no-finally-raise":
            raise RuntimeError("forgot the labels")
        picked.backward()
        if how != "no-remove":
            handle.remove()
        act = store["act"]
        if how == "act-relu":
            act = act.relu()
        if how == "grad-mean":
            return act, store["grad"].mean(0, keepdim=True).expand_as(store["grad"])
        return act, store["grad"]

    return record


RECORDER: list[Case] = [
    ("rec-next-layer", "check_layer_recorder", _recorder(how="next-layer"), "wrong_layer"),
    ("rec-top-only", "check_layer_recorder", _recorder(how="top-only"), "wrong_layer"),
    ("rec-no-remove", "check_layer_recorder", _recorder(how="no-remove"), "hooks_left"),
    ("rec-act-relu", "check_layer_recorder", _recorder(how="act-relu"), "inplace_alias"),
    ("rec-grad-mean", "check_layer_recorder", _recorder(how="grad-mean"), "wrong_values"),
    ("rec-raise", "check_layer_recorder", _recorder(how="no-finally-raise"), "crashed"),
]

# -- stage 4 ---------------------------------------------------------------------------------

WEIGHTS: list[Case] = [
    ("w-relu", "check_channel_weights", lambda g: g.relu().mean((2, 3)), "gradients_rectified"),
    ("w-abs", "check_channel_weights", lambda g: g.abs().mean((2, 3)), "gradients_rectified"),
    ("w-amax", "check_channel_weights", lambda g: g.amax((2, 3)), "wrong_values"),
    (
        "w-keepdim-squeezed",  # right on every batch with N > 1 and C > 1
        "check_channel_weights",
        lambda g: g.mean((2, 3), keepdim=True).squeeze(),
        "squeeze_all",
    ),
    (
        "w-view",
        "check_channel_weights",
        lambda g: g.view(2, 3, -1).mean(-1),
        "hardcoded_batch_size",
    ),
    ("w-flatten0", "check_channel_weights", lambda g: g.flatten(2).sum(-1) / 8, "wrong_values"),
    (
        "w-cpu-div",
        "check_channel_weights",
        lambda g: g.sum((2, 3)) / torch.full(g.shape[:2], float(g.shape[2] * g.shape[3])),
        "cpu_only_tensor",
    ),
    ("w-mean1", "check_channel_weights", lambda g: g.mean(1), "wrong_dims"),
    ("w-keep", "check_channel_weights", lambda g: g.mean(-1).mean(-1, keepdim=True), "wrong_dims"),
]

CAM: list[Case] = [
    (
        "cam-batch-squeezed",  # squeeze() removes a batch of one (and a map of height 1)
        "check_weighted_cam",
        lambda a, w: (w[:, :, None, None] * a).sum(1).relu().squeeze(),
        "wrong_shape",
    ),
    (
        "cam-transposed",
        "check_weighted_cam",
        lambda a, w: torch.relu((w.T[:, :, None, None] * a).sum(1)),
        "weights_mismatched",
    ),
    (
        "cam-abs",
        "check_weighted_cam",
        lambda a, w: (w[:, :, None, None] * a).sum(1).abs(),
        "wrong_values",
    ),
    (
        "cam-sum-all",
        "check_weighted_cam",
        lambda a, w: (w.sum(0)[None, :, None, None] * a).sum(1).relu(),
        "wrong_values",
    ),
    (
        "cam-relu-each",
        "check_weighted_cam",
        lambda a, w: (w[:, :, None, None] * a).relu().sum(1),
        "relu_before_sum",
    ),
    (
        "cam-no-relu",
        "check_weighted_cam",
        lambda a, w: torch.einsum("nc,nchw->nhw", w, a),
        "missing_relu",
    ),
    (
        "cam-first-row",
        "check_weighted_cam",
        lambda a, w: (w[0][None, :, None, None] * a).sum(1).relu(),
        "weights_mismatched",
    ),
    (
        "cam-cpu-zeros",
        "check_weighted_cam",
        lambda a, w: torch.maximum((w[:, :, None, None] * a).sum(1), torch.zeros(a.shape[0], 1, 1)),
        "cpu_only_tensor",
    ),
    (
        "cam-mean",
        "check_weighted_cam",
        lambda a, w: (w[:, :, None, None] * a).mean(1).relu(),
        "mean_over_channels",
    ),
]

# -- stage 5 ---------------------------------------------------------------------------------


def _resize(mode: str, **kw: Any) -> Callable[..., Any]:
    return lambda m, size: F.interpolate(m.unsqueeze(1), size=tuple(size), mode=mode, **kw)[:, 0]


UPSAMPLE: list[Case] = [
    ("up-nearest-exact", "check_upsample", _resize("nearest-exact"), "nearest"),
    ("up-area", "check_upsample", _resize("area"), "nearest"),  # area = nearest upwards
    ("up-align", "check_upsample", _resize("bilinear", align_corners=True), "align_corners"),
    (
        "up-bicubic-clamp",
        "check_upsample",
        lambda m, s: _resize("bicubic", align_corners=False)(m, s).clamp(min=0),
        "bicubic_overshoot",
    ),
    ("up-swap", "check_upsample", lambda m, s: _resize("bilinear")(m, (s[1], s[0])), "hw_swap"),
    (
        "up-squeeze",
        "check_upsample",
        lambda m, s: _resize("bilinear", align_corners=False)(m, s).squeeze(),
        "squeeze_all",
    ),
    (
        "up-scale-factor",
        "check_upsample",
        lambda m, s: F.interpolate(m[:, None], scale_factor=3, mode="bilinear")[:, 0],
        "wrong_shape",
    ),
]


def _inplace(maps: torch.Tensor) -> torch.Tensor:
    maps -= maps.amin((1, 2), keepdim=True)
    return normalize_per_image(maps)


NORMALIZE: list[Case] = [
    (
        "n-max-only",
        "check_normalize_per_image",
        lambda m: m / m.flatten(1).amax(1)[:, None, None].clamp(min=1e-8),
        "wrong_values",
    ),
    (
        "n-batch-eps",
        "check_normalize_per_image",
        lambda m: (m - m.min()) / (m.max() - m.min() + 1e-8),
        "per_batch_norm",
    ),
    (
        "n-eps",
        "check_normalize_per_image",
        lambda m: (
            (m - m.amin((1, 2), keepdim=True))
            / (m.amax((1, 2), keepdim=True) - m.amin((1, 2), keepdim=True) + 1e-3)
        ),
        "wrong_values",
    ),
    (
        "n-cpu-where",
        "check_normalize_per_image",
        lambda m: torch.where(
            (m.amax((1, 2), keepdim=True) - m.amin((1, 2), keepdim=True)) > 0,
            (m - m.amin((1, 2), keepdim=True))
            / (m.amax((1, 2), keepdim=True) - m.amin((1, 2), keepdim=True)),
            torch.zeros(m.shape),
        ),
        "cpu_only_tensor",
    ),
    (
        "n-nan",
        "check_normalize_per_image",
        lambda m: (
            (m - m.amin((1, 2), keepdim=True))
            / (m.amax((1, 2), keepdim=True) - m.amin((1, 2), keepdim=True))
        ),
        "nan_zero_map",
    ),
    (
        "n-half",
        "check_normalize_per_image",
        lambda m: torch.nan_to_num(
            (m - m.amin((1, 2), keepdim=True))
            / (m.amax((1, 2), keepdim=True) - m.amin((1, 2), keepdim=True)),
            nan=0.5,
        ),
        "flat_not_zero",
    ),
    ("n-inplace", "check_normalize_per_image", lambda m: _inplace(m), "inplace_normalize"),
    (
        "n-squeeze",
        "check_normalize_per_image",
        lambda m: normalize_per_image(m).squeeze(),
        "squeeze_all",
    ),
]

# -- stage 6 ---------------------------------------------------------------------------------


def _forward_swap(model: nn.Module) -> None:
    """Keeps every module object, but rewrites each activation's forward for good."""
    for module in model.modules():
        if isinstance(module, RELUS):
            module.forward = lambda x, m=module: GuidedReLU.apply(x).clamp(
                max=6.0 if isinstance(m, nn.ReLU6) else float("inf")
            )


@contextmanager
def _forward_swap_ctx(model: nn.Module) -> Iterator[None]:
    _forward_swap(model)
    yield


@contextmanager
def _hooks(
    model: nn.Module,
    *,
    kinds: tuple[type, ...] = RELUS,
    finally_: bool = True,
    children: bool = False,
) -> Iterator[None]:
    modules = model.children() if children else model.modules()
    handles = [
        m.register_forward_hook(lambda mod, i, o: GuidedReLU.apply(o))
        for m in modules
        if isinstance(m, kinds)
    ]
    if not finally_:
        yield
        for h in handles:
            h.remove()
        return
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _pre_hooks(model: nn.Module) -> Iterator[None]:
    """Guided ReLU on the *input* of each activation: ReLU6 loses its clip at 6."""
    handles = [
        m.register_forward_pre_hook(lambda mod, i: (GuidedReLU.apply(i[0]),))
        for m in model.modules()
        if isinstance(m, RELUS)
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _walk(module: nn.Module, prefix: str, *, keep_prefix: bool) -> list[tuple[str, nn.Module]]:
    """Every ReLU/ReLU6 below ``module`` by hand-written recursion over named children."""
    found = []
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix and keep_prefix else name
        if isinstance(child, RELUS):
            found.append((full, child))
        found += _walk(child, full, keep_prefix=keep_prefix)
    return found


def _two_levels(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The assignment's depth: children and grandchildren only."""
    found = [(n, c) for n, c in model.named_children() if isinstance(c, RELUS)]
    for name, child in model.named_children():
        found += [(f"{name}.{n}", c) for n, c in child.named_children() if isinstance(c, RELUS)]
    return found


FIND: list[Case] = [
    (
        "find-no-prefix",
        "check_relu_modules",
        lambda m: _walk(m, "", keep_prefix=False),
        "wrong_module_names",
    ),
    (
        "find-type-is",
        "check_relu_modules",
        lambda m: [(n, x) for n, x in m.named_modules() if type(x) is nn.ReLU],
        "relu6_missed",
    ),
    ("find-two-levels", "check_relu_modules", _two_levels, "missed_nested"),
    (
        "find-repr-names",
        "check_relu_modules",
        lambda m: [(str(x), x) for x in m.modules() if isinstance(x, RELUS)],
        "wrong_module_names",
    ),
    (
        "find-leaky-too",
        "check_relu_modules",
        lambda m: [(n, x) for n, x in m.named_modules() if isinstance(x, (*RELUS, nn.LeakyReLU))],
        "other_activations",
    ),
    (
        "find-dict",
        "check_relu_modules",
        lambda m: {n: x for n, x in m.named_modules() if isinstance(x, RELUS)},
        "modules_without_names",
    ),
]

SWAP: list[Case] = [
    ("swap-forward-attr", "check_guided_relus", _forward_swap_ctx, "permanent_swap"),
    ("swap-relu-only", "check_guided_relus", lambda m: _hooks(m, kinds=(nn.ReLU,)), "relu6_missed"),
    ("swap-children", "check_guided_relus", lambda m: _hooks(m, children=True), "no_guided_relus"),
    (
        "swap-no-finally",
        "check_guided_relus",
        lambda m: _hooks(m, finally_=False),
        "not_restored_on_error",
    ),
    ("swap-fn-none", "check_guided_relus", _forward_swap, "permanent_swap"),
]


def _gb(*, how: str) -> Callable[..., Any]:
    def fn(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Any:
        model.eval()
        if how == "forward-attr":
            _forward_swap(model)
            ctx: Any = contextmanager(lambda: iter([None]))()
        elif how == "top":
            ctx = _hooks(model.features, children=True)
        else:
            ctx = _hooks(model)
        with ctx:
            x = images.detach().clone().requires_grad_(True)
            scores = model(x)
            if how == "softmax":
                target = scores.softmax(1).gather(1, labels[:, None]).sum()
            elif how == "ones31":
                (g,) = torch.autograd.grad(scores.gather(1, labels[:, None]), x, torch.ones(3, 1))
                return g
            elif how == "cpu-onehot":
                target = (scores * F.one_hot(labels.cpu(), 1000).float()).sum()
            elif how == "backward":
                scores.gather(1, labels[:, None]).sum().backward()
                return x.grad
            else:
                target = scores.gather(1, labels[:, None]).sum()
            (g,) = torch.autograd.grad(target, x)
        return g

    return fn


GUIDED: list[Case] = [
    ("gb-forward-attr", "check_guided_backprop", _gb(how="forward-attr"), "permanent_swap"),
    ("gb-softmax", "check_guided_backprop", _gb(how="softmax"), "softmax_not_score"),
    ("gb-ones31", "check_guided_backprop", _gb(how="ones31"), "hardcoded_batch_size"),
    ("gb-cpu-onehot", "check_guided_backprop", _gb(how="cpu-onehot"), "cpu_only_tensor"),
    ("gb-backward", "check_guided_backprop", _gb(how="backward"), "param_grads"),
    ("gb-top", "check_guided_backprop", _gb(how="top"), "missed_nested"),
]

# -- stage 7 ---------------------------------------------------------------------------------


def _gc(**mistakes: Any) -> Callable[..., Any]:
    layer = mistakes.get("layer", "features.12")
    mode = mistakes.get("mode", "bilinear")

    def fn(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Any:
        store: list[torch.Tensor] = []

        def keep(m: nn.Module, i: Any, o: torch.Tensor) -> torch.Tensor:
            store.append(o)
            return o.clone()

        handle = model.get_submodule(layer).register_forward_hook(keep)
        try:
            model.eval()
            scores = model(images.detach().clone())
            if mistakes.get("softmax"):
                scores = scores.log_softmax(1)
            if mistakes.get("onehot_cpu"):
                onehot = torch.zeros(len(labels), scores.shape[1])
                onehot[torch.arange(len(labels)), labels.cpu()] = 1.0
                target = (scores * onehot).sum()
            else:
                target = scores.gather(1, labels[:, None]).sum()
            (grad,) = torch.autograd.grad(target, store[0])
        finally:
            handle.remove()
        acts = store[0].detach()
        weights = acts.mean((2, 3)) if mistakes.get("weights_from_acts") else grad.mean((2, 3))
        if mistakes.get("relu_first"):
            cam = (weights[:, :, None, None] * acts).relu().sum(1)
        else:
            cam = (weights[:, :, None, None] * acts).sum(1).relu()
        size = tuple(images.shape[-2:])
        if mistakes.get("norm_first"):
            cam = normalize_per_image(cam)
        kw = {"align_corners": mistakes.get("align", False)} if "linear" in mode else {}
        if mode == "bicubic":
            kw = {"align_corners": False}
        cam = F.interpolate(cam[:, None], size=size, mode=mode, **kw)[:, 0]
        if mistakes.get("norm_first"):
            return cam
        if mistakes.get("per_batch"):
            return (cam - cam.min()) / (cam.max() - cam.min())
        return normalize_per_image(cam)

    return fn


GRAD_CAM: list[Case] = [
    (
        "cam-batch-squeezed",  # squeeze() removes a batch of one (and a map of height 1)
        "check_weighted_cam",
        lambda a, w: (w[:, :, None, None] * a).sum(1).relu().squeeze(),
        "wrong_shape",
    ),
    (
        "gc-batch-bicubic",
        "check_grad_cam",
        _gc(per_batch=True, mode="bicubic"),
        "bicubic_overshoot",
    ),
    ("gc-batch-nearest", "check_grad_cam", _gc(per_batch=True, mode="nearest"), "nearest"),
    ("gc-align", "check_grad_cam", _gc(align=True), "align_corners"),
    ("gc-batch-align", "check_grad_cam", _gc(align=True, per_batch=True), "align_corners"),
    ("gc-relu-first", "check_grad_cam", _gc(relu_first=True), "relu_before_sum"),
    ("gc-layer11", "check_grad_cam", _gc(layer="features.11"), "wrong_layer"),
    ("gc-logsoftmax", "check_grad_cam", _gc(softmax=True), "softmax_not_score"),
    ("gc-norm-first", "check_grad_cam", _gc(norm_first=True), "normalize_before_upsample"),
    ("gc-weights-acts", "check_grad_cam", _gc(weights_from_acts=True), "weights_from_activations"),
    ("gc-onehot-cpu", "check_grad_cam", _gc(onehot_cpu=True), "cpu_only_tensor"),
    ("gc-bicubic", "check_grad_cam", _gc(mode="bicubic"), "bicubic_overshoot"),
]

CASES: list[Case] = (
    RELU
    + SELECT
    + GRADIENT
    + RECORDER
    + WEIGHTS
    + CAM
    + UPSAMPLE
    + NORMALIZE
    + FIND
    + SWAP
    + GUIDED
    + GRAD_CAM
)


# -- a second set, written after the checks were tuned on the first: measured on its own --------


def _h_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, how: str) -> Any:
    model.eval()
    x = images.detach().clone().requires_grad_(True)
    scores = model(x)
    if how == "expand-ones":
        picked = scores.gather(1, labels.view(-1, 1)).squeeze(1)
        (g,) = torch.autograd.grad(picked, x, torch.ones(1).expand(3))
    elif how == "labels-as-list":
        picked = torch.stack([scores[i, c] for i, c in enumerate([1, 3, 0])])
        (g,) = torch.autograd.grad(picked.sum(), x)
    elif how == "sigmoid":
        (g,) = torch.autograd.grad(scores.sigmoid().gather(1, labels[:, None]).sum(), x)
    elif how == "half-batch":
        (g,) = torch.autograd.grad(scores[:2].gather(1, labels[:2, None]).sum(), x)
    else:
        (g,) = torch.autograd.grad(scores.gather(1, labels[:, None]).sum(), x)
    if how == "abs":
        g = g.abs()
    return g


def _h(how: str) -> Callable[..., Any]:
    return lambda model, images, labels: _h_gradient(model, images, labels, how=how)


@contextmanager
def _h_swap_modules(model: nn.Module) -> Iterator[None]:
    """Swaps in modules and puts them back, but forgets the ReLU6 clip and nested ones."""
    swapped = [(name, child) for name, child in model.named_children() if isinstance(child, RELUS)]

    class Guided(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return GuidedReLU.apply(x)

    for name, _ in swapped:
        setattr(model, name, Guided())
    try:
        yield
    finally:
        for name, child in swapped:
            setattr(model, name, child)


@contextmanager
def _h_backward_hooks(model: nn.Module) -> Iterator[None]:
    """Clamps each activation's output gradient with a tensor hook, never removing the forward
    hooks' handles (kept in a list that is dropped).
    """
    for module in model.modules():
        if isinstance(module, RELUS):
            module.register_forward_hook(lambda m, i, o: o.register_hook(lambda g: g.clamp(min=0)))
    yield


def _h_gb(*, how: str) -> Callable[..., Any]:
    def fn(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Any:
        model.eval()
        x = images.detach().clone().requires_grad_(True)
        relus = [m for m in model.modules() if isinstance(m, RELUS)]
        if how == "last-only":
            relus = relus[-1:]
        handles = [m.register_forward_hook(lambda mod, i, o: GuidedReLU.apply(o)) for m in relus]
        scores = model(x)
        target = scores.sum() if how == "sum-all" else scores.gather(1, labels[:, None]).sum()
        (g,) = torch.autograd.grad(target, x)
        if how != "leak":
            for h in handles:
                h.remove()
        return g.permute(0, 2, 3, 1).numpy() if how == "numpy-nhwc" else g

    return fn


HOLDOUT: list[Case] = [
    (
        "h-relu-sign",
        "check_guided_relu",
        _relu_fn(torch.relu, lambda x, g: g.sign().relu() * (x > 0)),
        "wrong_values",
    ),
    (
        "h-relu-leaky-back",
        "check_guided_relu",
        _relu_fn(torch.relu, lambda x, g: g * (g > 0) * ((x > 0) + 0.01 * (x <= 0))),
        "wrong_values",
    ),
    (
        "h-relu-float-mask",
        "check_guided_relu",
        _relu_fn(lambda x: x * (x > 0).to(torch.float32), _guided),
        "cpu_only_zeros",
    ),
    (
        "h-sel-take",
        "check_select_scores",
        lambda s, lab: s.take(lab + torch.arange(len(lab)) * s.shape[1]),
        "cpu_only_tensor",
    ),
    ("h-grad-expand", "check_class_gradient", _h("expand-ones"), "hardcoded_batch_size"),
    ("h-grad-list", "check_class_gradient", _h("labels-as-list"), "hardcoded_backward"),
    ("h-grad-sigmoid", "check_class_gradient", _h("sigmoid"), "softmax_not_score"),
    ("h-grad-half", "check_class_gradient", _h("half-batch"), "wrong_values"),
    ("h-grad-abs", "check_class_gradient", _h("abs"), "wrong_values"),
    (
        "h-w-median",
        "check_channel_weights",
        lambda g: g.flatten(2).median(-1).values,
        "wrong_values",
    ),
    (
        "h-w-sum-div-c",
        "check_channel_weights",
        lambda g: g.sum((2, 3)) / g.shape[1],
        "wrong_values",
    ),
    (
        "h-cam-clamp-w",
        "check_weighted_cam",
        lambda a, w: (w.clamp(min=0)[:, :, None, None] * a).sum(1),
        "relu_before_sum",
    ),  # the probe's activations are >= 0, so relu(w)·A = relu(w·A)
    (
        "h-up-two-step",
        "check_upsample",
        lambda m, s: F.interpolate(
            F.interpolate(m[:, None], scale_factor=2, mode="bilinear"),
            size=tuple(s),
            mode="bilinear",
        )[:, 0],
        "wrong_values",
    ),
    (
        "h-up-size-wh",
        "check_upsample",
        lambda m, s: F.interpolate(m[:, None], size=(s[-1], s[-2]), mode="bilinear")[:, 0],
        "hw_swap",
    ),
    (
        "h-n-softmax",
        "check_normalize_per_image",
        lambda m: m.flatten(1).softmax(1).view_as(m),
        "wrong_values",
    ),
    ("h-n-global-max", "check_normalize_per_image", lambda m: m / m.max(), "wrong_values"),
    # no ReLU at the top level of SwapNet: nothing is guided
    ("h-swap-children", "check_guided_relus", _h_swap_modules, "no_guided_relus"),
    # the forward hook returns the tensor hook's handle: the forward pass raises
    ("h-swap-leak", "check_guided_relus", _h_backward_hooks, "crashed"),
    # the last ReLU only sees the one-hot gradient (>= 0): guiding it changes nothing
    ("h-gb-last", "check_guided_backprop", _h_gb(how="last-only"), "no_guided_relus"),
    ("h-gb-sum-all", "check_guided_backprop", _h_gb(how="sum-all"), "hardcoded_backward"),
    ("h-gb-leak", "check_guided_backprop", _h_gb(how="leak"), "hooks_left"),
    (
        "h-gc-layer9-nearest",
        "check_grad_cam",
        _gc(layer="features.9", mode="nearest"),
        "wrong_layer",
    ),
    (
        "h-gc-bicubic-batch",
        "check_grad_cam",
        _gc(mode="bicubic", per_batch=True),
        "bicubic_overshoot",
    ),
]

#: Right answers written differently from the references: every check must pass them.
CORRECT_ALTERNATIVES: list[Case] = [
    ("find-recursive", "check_relu_modules", lambda m: _walk(m, "", keep_prefix=True), "correct"),
    (
        "find-class-names",
        "check_relu_modules",
        lambda m: [(n, x) for n, x in m.named_modules() if type(x).__name__ in {"ReLU", "ReLU6"}],
        "correct",
    ),
    (
        "h-sel-index-select",
        "check_select_scores",
        lambda s, lab: s.index_select(1, lab).diagonal(),
        "correct",
    ),
    (
        "h-sel-flatten",
        "check_select_scores",
        lambda s, lab: s.gather(1, lab[:, None]).flatten(),
        "correct",
    ),
    (
        "h-cam-bmm",
        "check_weighted_cam",
        lambda a, w: torch.bmm(w[:, None, :], a.flatten(2)).view(a.shape[0], *a.shape[2:]).relu(),
        "correct",
    ),
    ("h-gb-nhwc", "check_guided_backprop", _h_gb(how="numpy-nhwc"), "correct"),
]
