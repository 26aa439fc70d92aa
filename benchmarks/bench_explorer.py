"""Explorer latency in a lecture: how long each kind of control change takes to show.

Builds the 08 explorer headless (EfficientNet-Lite0, the dog, chelsea and coffee photos), then
drives its controls the way a lecturer clicks, timing each change from setting the control's
value to the new view being ready (computed and drawn). Kinds of change:

* ``class``: another of the image's offered classes (never shown before);
* ``layer``: another layer, Grad-CAM (never shown before);
* ``method``: guided backprop / guided Grad-CAM (never shown before);
* ``image``: another photo (never shown before);
* ``revisit``: back to a view already shown.

Goals (issue 11): every first view <= 300 ms, a revisit <= 100 ms, on this 2-core CPU. It
also times the Grad-CAMs of all top-k classes of one image from one forward and one batched
backward (:func:`course_utils.explorer.class_cams`) against k separate ``grad_cam`` calls.

Usage::

    .venv/bin/python benchmarks/bench_explorer.py          # prints median and p90 per kind
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")

import torch

from course_utils import grad_cam
from course_utils.data import load_photo
from course_utils.explorer import Explorer, layer_choices
from course_utils.models import load_model

GOALS_MS = {"revisit": 100.0}
DEFAULT_GOAL_MS = 300.0


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def main() -> int:
    torch.manual_seed(0)
    bundle = load_model("efficientnet_lite0")
    photos = {name: load_photo(name) for name in ["dog", "chelsea", "coffee"]}
    app = Explorer(bundle, photos, top_k=5, classes=["bicycle-built-for-two", "moving van"])
    start = time.perf_counter()
    _ = app.widget
    first_ms = 1000 * (time.perf_counter() - start)
    print(f"first view (widgets, forward, Grad-CAM, figure): {first_ms:.0f} ms")
    controls = app.controls
    layers = layer_choices(bundle.model, bundle.target_layer)[-4:]
    times: dict[str, list[float]] = defaultdict(list)
    seen: list[tuple[str, object]] = []

    def change(kind: str, name: str, value: object) -> None:
        begin = time.perf_counter()
        controls[name].value = value
        times[kind].append(1000 * (time.perf_counter() - begin))
        seen.append((name, value))

    for image in photos:
        if controls["image"].value != image:
            change("image", "image", image)
        for _, index in list(controls["class"].options)[1:]:
            change("class", "class", index)
        for layer in layers[:-1]:
            change("layer", "layer", layer)
        controls["layer"].value = layers[-1]
        for method in ("guided_backprop", "guided_grad_cam"):
            change("method", "method", method)
        controls["method"].value = "grad_cam"
    (first, *_), (second, *_) = app.predictions("dog")[:2]
    revisits = [("image", "chelsea"), ("image", "dog"), ("class", second), ("class", first)]
    for name, value in revisits * 3:
        begin = time.perf_counter()
        controls[name].value = value
        times["revisit"].append(1000 * (time.perf_counter() - begin))

    print(f"\n{'change':10s} {'n':>3s} {'median ms':>10s} {'p90 ms':>8s} {'goal ms':>8s}")
    worst = 0.0
    for kind in ("class", "layer", "method", "image", "revisit"):
        values = times[kind]
        goal = GOALS_MS.get(kind, DEFAULT_GOAL_MS)
        median, p90 = statistics.median(values), _p90(values)
        worst = max(worst, p90 / goal)
        print(f"{kind:10s} {len(values):3d} {median:10.0f} {p90:8.0f} {goal:8.0f}")
    print(f"status line after the last change: {app._status.value!r}")

    _bench_class_cams(bundle, photos["dog"])
    print(f"\nworst p90 / goal: {worst:.2f} ({'met' if worst <= 1 else 'MISSED'})")
    return 0 if worst <= 1 else 1


def _bench_class_cams(bundle, photo, k: int = 5, repeats: int = 7) -> None:
    """One forward + one batched backward for k classes vs k separate grad_cam calls."""
    try:
        from course_utils.explorer import class_cams
    except ImportError:
        print("\n(class_cams not available in this version)")
        return
    x = bundle.preprocess(photo)[None]
    with torch.no_grad():
        classes = bundle.model(x)[0].topk(k).indices.tolist()
    layer = bundle.target_layer

    def separate() -> torch.Tensor:
        return torch.cat([grad_cam(bundle.model, x, [c], layer=layer) for c in classes])

    def batched() -> torch.Tensor:
        return class_cams(bundle.model, x, classes, layer)

    torch.testing.assert_close(batched(), separate(), atol=1e-5, rtol=1e-4)
    timings: dict[str, list[float]] = {"separate": [], "batched": []}
    for _ in range(repeats):  # interleaved, so both see the same machine load
        for name, fn in (("separate", separate), ("batched", batched)):
            begin = time.perf_counter()
            fn()
            timings[name].append(1000 * (time.perf_counter() - begin))
    sep, bat = (statistics.median(timings[n]) for n in ("separate", "batched"))
    print(
        f"\nGrad-CAM of the top {k} classes, one image: {k} grad_cam calls {sep:.0f} ms, "
        f"one forward + one batched backward {bat:.0f} ms (x{sep / bat:.1f} faster)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
