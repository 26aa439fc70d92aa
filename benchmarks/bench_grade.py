"""Seconds per submission: the sandboxed grader vs plain ``otter run``, same notebooks.

Run: ``python benchmarks/bench_grade.py [--count 40] [--workers 2]``

Builds A2's otter autograder with ``otter assign`` (public tests only: the hidden tests now
live in the grader), makes ``--count`` submissions from the committed fixtures (solution,
per-batch mistake, blank, 30 MB of prints, in turn), then grades them twice with ``--workers``
in parallel: with :func:`grading.batch.grade_many` (one bubblewrap sandbox per submission,
every hidden test), and with ``python -m otter run`` per notebook (a Jupyter kernel each, no
sandbox, no hidden test). Prints both, and the ratio against the goal (at most 1.3 times otter's
seconds per submission). Exits non-zero over the goal.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from grading.batch import grade_many

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "submissions"
KINDS = ("a2_solution", "a2_per_batch_norm", "a2_blank", "a2_prints_megabytes")
GOAL = 1.3


def otter_zip(work: Path) -> Path:
    """A2's otter autograder zip, as ``otter assign`` writes it."""
    out = work / "otter-dist"
    command = ["-m", "otter", "assign", "--no-pdfs", "--no-run-tests", "a2_grad_cam.ipynb"]
    subprocess.run(
        [sys.executable, *command, str(out)],
        cwd=ROOT / "assignments",
        check=True,
        capture_output=True,
    )
    (found,) = (out / "autograder").glob("*.zip")
    return found


def main() -> int:
    """Time both graders; print seconds per submission and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subs = work / "submissions"
        subs.mkdir()
        paths = []
        for i in range(args.count):
            kind = KINDS[i % len(KINDS)]
            paths.append(subs / f"{i:03d}_{kind}.ipynb")
            shutil.copyfile(FIXTURES / f"{kind}.ipynb", paths[-1])
        autograder = otter_zip(work)

        start = time.monotonic()
        results = grade_many(
            "a2_grad_cam", paths, work / "gb.csv", workers=args.workers, progress=False
        )
        ours = (time.monotonic() - start) / args.count
        statuses = sorted({r.status for r in results})

        def otter_run(path: Path) -> int:
            out = work / "otter-out" / path.stem
            out.mkdir(parents=True)
            cmd = [sys.executable, "-m", "otter", "run", "-a", str(autograder), "-o", str(out)]
            return subprocess.run([*cmd, str(path)], capture_output=True).returncode

        start = time.monotonic()
        with ThreadPoolExecutor(args.workers) as pool:
            codes = list(pool.map(otter_run, paths))
        theirs = (time.monotonic() - start) / args.count
    print(f"{args.count} submissions, {args.workers} workers")
    print(f"sandboxed grader (all hidden tests): {ours:6.2f} s/submission  statuses {statuses}")
    print(
        f"plain otter run (public tests only): {theirs:6.2f} s/submission  exit codes {set(codes)}"
    )
    print(f"ratio {ours / theirs:.2f} (goal <= {GOAL})")
    return 0 if ours / theirs <= GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
