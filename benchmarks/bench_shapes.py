"""Accuracy and Grad-CAM pointing game of the shapes network, against two baselines.

Run ``python benchmarks/bench_shapes.py``. On 1,000 fresh images (integer seed 2024; training
only ever uses ``[seed, step]`` seeds) it prints, for

* the committed network (``load_model("shapes")``),
* the same architecture with random weights (``weights=None``),
* the image centre (a "heatmap" peaking in the middle of every image),

the top-1 accuracy and the pointing game: the share of images whose heatmap maximum lies inside
the object's exact mask. Grad-CAM explains the true class, at the bundle's default layer.
The goals of issue 3 are accuracy >= 0.95 and pointing >= 0.90 for the trained network.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from course_utils import grad_cam
from course_utils.data import SHAPE_CLASSES, make_shapes
from course_utils.models import ModelBundle, load_model


def pointing(heatmaps: np.ndarray, masks: np.ndarray) -> float:
    """Share of images whose heatmap argmax (first one on ties) is an object pixel."""
    n = len(masks)
    peak = heatmaps.reshape(n, -1).argmax(1)
    return masks.reshape(n, -1)[np.arange(n), peak].mean().item()


def evaluate(bundle: ModelBundle, batch, chunk: int = 250) -> tuple[float, float]:
    """Top-1 accuracy and Grad-CAM pointing game of one model on a shapes batch."""
    x = bundle.preprocess(batch.images)
    correct, cams = [], []
    for start in range(0, len(x), chunk):
        xs, ys = x[start : start + chunk], batch.labels[start : start + chunk]
        with torch.no_grad():
            correct.append(bundle.model(xs).argmax(1).numpy() == ys)
        cams.append(grad_cam(bundle.model, xs, ys, layer=bundle.target_layer).numpy())
    return np.concatenate(correct).mean().item(), pointing(np.concatenate(cams), batch.masks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = make_shapes(args.n, args.seed)
    size = batch.images.shape[1]
    yy, xx = np.mgrid[:size, :size]
    centre = -np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2)  # peaks at the centre
    start = time.perf_counter()
    rows = [
        ("trained (load_model('shapes'))", *evaluate(load_model("shapes"), batch)),
        ("random weights (weights=None)", *evaluate(load_model("shapes", weights=None), batch)),
        (
            "image centre",
            float("nan"),
            pointing(np.broadcast_to(centre, batch.masks.shape), batch.masks),
        ),
    ]
    print(
        f"shapes lab: {args.n} fresh images (seed {args.seed}), {len(SHAPE_CLASSES)} classes, "
        f"chance accuracy {1 / len(SHAPE_CLASSES):.2f}"
    )
    print(f"{'model':34s} {'accuracy':>9s} {'pointing':>9s}")
    for name, acc, point in rows:
        acc_text = "-" if np.isnan(acc) else f"{acc:.3f}"
        print(f"{name:34s} {acc_text:>9s} {point:9.3f}")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
