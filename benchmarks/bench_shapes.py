"""Accuracy and Grad-CAM pointing game of the shapes network, against two baselines.

Run ``python benchmarks/bench_shapes.py``. On 1,000 fresh images (integer seed 2024; training
only ever uses ``[seed, step]`` seeds) it prints, for

* the committed network (``load_model("shapes")``),
* the same architecture with random weights (``weights=None``),
* the image centre (:func:`course_utils.evaluation.centre_baseline`, the same baseline as
  notebook 09),

the top-1 accuracy and the pointing game: the share of images whose heatmap maximum lies inside
the object's exact mask. Grad-CAM explains the true class, at the bundle's default layer.
The goals for the trained network are accuracy >= 0.95 and pointing >= 0.90.
"""

from __future__ import annotations

import argparse
import time

import torch

from course_utils import grad_cam
from course_utils.data import SHAPE_CLASSES, ShapesBatch, make_shapes
from course_utils.evaluation import centre_baseline
from course_utils.metrics import pointing_game
from course_utils.models import ModelBundle, load_model
from course_utils.train_shapes import accuracy


def pointing(maps: torch.Tensor, batch: ShapesBatch) -> float:
    """Share of images whose heatmap maximum lies on the object's mask."""
    return pointing_game(maps, batch.masks).double().mean().item()


def evaluate(bundle: ModelBundle, batch: ShapesBatch, chunk: int = 250) -> tuple[float, float]:
    """Top-1 accuracy and Grad-CAM pointing game of one model on a shapes batch."""
    x = bundle.preprocess(batch.images)
    labels = torch.from_numpy(batch.labels)
    cams = torch.cat(
        [
            grad_cam(bundle.model, xs, ys, layer=bundle.target_layer)
            for xs, ys in zip(x.split(chunk), labels.split(chunk), strict=True)
        ]
    )
    return accuracy(bundle.model, batch), pointing(cams, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = make_shapes(args.n, args.seed)
    centre = centre_baseline(args.n, (batch.masks.shape[1], batch.masks.shape[2]))
    start = time.perf_counter()
    rows = [
        ("trained (load_model('shapes'))", *evaluate(load_model("shapes"), batch)),
        ("random weights (weights=None)", *evaluate(load_model("shapes", weights=None), batch)),
        ("image centre", None, pointing(centre, batch)),
    ]
    print(
        f"shapes lab: {args.n} fresh images (seed {args.seed}), {len(SHAPE_CLASSES)} classes, "
        f"chance accuracy {1 / len(SHAPE_CLASSES):.2f}"
    )
    print(f"{'model':34s} {'accuracy':>9s} {'pointing':>9s}")
    for name, acc, point in rows:
        acc_text = "-" if acc is None else f"{acc:.3f}"
        print(f"{name:34s} {acc_text:>9s} {point:9.3f}")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
