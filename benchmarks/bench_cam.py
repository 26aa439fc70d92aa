"""Speed of course_utils' Grad-CAM and guided backprop against the physical floor.

Run: ``python benchmarks/bench_cam.py [--batch 16] [--repeats 7]``

On SqueezeNet 1.1 (random weights: speed does not depend on them), CPU, it times, interleaved
in one run so that machine noise hits every variant alike:

* the floor for Grad-CAM: forward + ``torch.autograd.grad`` to ``features.12``;
* the floor for guided backprop: forward + ``torch.autograd.grad`` to the input;
* ``course_utils.grad_cam`` / ``course_utils.guided_backprop``;
* a faithful copy of the assignment's original solution (:mod:`course_utils.original`), each call on
  a fresh deep copy of the model since the original ruins the one it gets.

and prints the best (minimum) CPU time of each, with the median beside it, and the ratios.
CPU time of this process (``time.process_time``) with one intra-op thread by default, because
on a shared machine other people's work inflates wall time but not our CPU time; noise only
ever adds time, so the minimum is the most repeatable estimate. ``--clock wall`` and
``--threads N`` measure wall time instead, e.g. on a quiet machine.
Goals: grad_cam / floor <= 1.05,
guided_backprop / floor <= 1.10, speed-up over the original >= 1.8x.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torchvision.models import squeezenet1_1

import course_utils
from course_utils.original import OriginalGradCam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    torch.manual_seed(0)
    model = squeezenet1_1(weights=None).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 1000, (args.batch,))
    layer = model.features[12]

    def floor_cam() -> None:
        store = {}
        handle = layer.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
        try:
            scores = model(x)
            torch.autograd.grad(scores.gather(1, y[:, None]).sum(), store["a"])
        finally:
            handle.remove()

    def floor_guided() -> None:
        xi = x.detach().requires_grad_(True)
        torch.autograd.grad(model(xi).gather(1, y[:, None]).sum(), xi)

    def fresh() -> torch.nn.Module:
        return copy.deepcopy(model)

    variants: dict[str, tuple[Callable[[], object], Callable[[], object] | None]] = {
        "floor: forward + grad to features.12": (floor_cam, None),
        "course_utils.grad_cam": (
            lambda: course_utils.grad_cam(model, x, y, layer="features.12"), None),
        "original GradCam.grad_cam": (None, fresh),
        "floor: forward + grad to input": (floor_guided, None),
        "course_utils.guided_backprop": (lambda: course_utils.guided_backprop(model, x, y), None),
        "original GradCam.guided_backprop": (None, fresh),
    }  # fmt: skip
    original = OriginalGradCam()
    times: dict[str, list[float]] = {name: [] for name in variants}
    warnings.simplefilter("ignore")  # the original's deprecated backward hook
    for rep in range(args.repeats + 1):  # first round is a warm-up
        for name, (fn, make_model) in variants.items():
            if make_model is not None:  # the original needs a model it may ruin
                victim, xi = make_model(), x.clone()
                method = original.grad_cam if "grad_cam" in name else original.guided_backprop
                start = clock()
                method(xi, y, victim)
            else:
                start = clock()
                fn()
            if rep:
                times[name].append(clock() - start)

    med = {name: min(t) for name, t in times.items()}
    print(
        f"SqueezeNet 1.1, batch {args.batch}, {args.size}x{args.size}, CPU, "
        f"{torch.get_num_threads()} thread(s), {args.clock} time, "
        f"{args.repeats} interleaved runs (best / median)"
    )
    for name, t in times.items():
        print(f"  {name:<40} {min(t) * 1000:8.1f} ms / {statistics.median(t) * 1000:8.1f} ms")
    cam_floor = med["course_utils.grad_cam"] / med["floor: forward + grad to features.12"]
    gb_floor = med["course_utils.guided_backprop"] / med["floor: forward + grad to input"]
    cam_speedup = med["original GradCam.grad_cam"] / med["course_utils.grad_cam"]
    gb_speedup = med["original GradCam.guided_backprop"] / med["course_utils.guided_backprop"]
    print(f"grad_cam / floor         = {cam_floor:.3f}   (goal <= 1.05)")
    print(f"guided_backprop / floor  = {gb_floor:.3f}   (goal <= 1.10)")
    print(f"speed-up over original: grad_cam {cam_speedup:.2f}x, "
          f"guided_backprop {gb_speedup:.2f}x   (goal >= 1.8x)")  # fmt: skip


if __name__ == "__main__":
    main()
