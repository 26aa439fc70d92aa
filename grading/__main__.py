"""``python -m grading``: grade a folder of submissions (see :mod:`grading.batch`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from grading.batch import STATUSES, grade_many
from grading.sandbox import Limits, SandboxUnavailable


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m grading", description=__doc__)
    parser.add_argument("submissions", nargs="+", help="notebooks or folders of notebooks")
    parser.add_argument("--assignment", required=True, help="a1_guided_backprop or a2_grad_cam")
    parser.add_argument("--out", required=True, help="CSV gradebook to write")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per submission")
    parser.add_argument("--memory-mb", type=int, default=6144, help="address space per job")
    parser.add_argument("--workers", type=int, default=1, help="parallel submissions")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="run student code without bubblewrap (only where no sandbox can be made)",
    )
    args = parser.parse_args(argv)
    try:
        results = grade_many(
            args.assignment,
            args.submissions,
            args.out,
            limits=Limits(timeout=args.timeout, memory_mb=args.memory_mb),
            workers=args.workers,
            isolate=not args.unsafe_no_sandbox,
            progress=not args.no_progress,
        )
    except (SandboxUnavailable, ValueError) as exc:
        print(f"grading refused: {exc}", file=sys.stderr)
        return 2
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
