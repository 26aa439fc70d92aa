"""Gradescope's side of the contract: ``run_autograder`` calls ``python -m grading.gradescope``.

Gradescope unpacks the autograder zip in ``/autograder/source``, runs ``setup.sh`` once when
building its image, then for each submission puts the student's files in
``/autograder/submission`` and runs ``/autograder/source/run_autograder``, which must write
``/autograder/results/results.json``. This module grades the submitted notebook with the same
sandboxed grader as ``python -m grading`` and writes that file: one entry per question, with
the student's feedback (:func:`grading.batch.feedback`). ``GRADESCOPE_ROOT`` (or ``--root``)
replaces ``/autograder``, so the layout can be rehearsed in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grading.assignments import questions
from grading.batch import feedback, grade_many
from grading.sandbox import Limits, SandboxUnavailable

ROOT_ENV = "GRADESCOPE_ROOT"


def _pick(submission_dir: Path, assignment: str) -> list[Path]:
    named = submission_dir / f"{assignment}.ipynb"
    if named.exists() or named.is_symlink():
        return [named]
    return sorted(submission_dir.glob("*.ipynb"))[:1]


def results_json(assignment: str, submission_dir: Path, *, isolate: bool = True) -> dict[str, Any]:
    """Grade the submission folder; Gradescope's ``results.json`` content."""
    found = _pick(submission_dir, assignment)
    points = {name: float(q.points) for name, q in questions(assignment).items()}
    if not found:
        return {
            "score": 0.0,
            "output": f"No notebook found: submit {assignment}.ipynb.",
            "tests": [{"name": q, "score": 0.0, "max_score": p} for q, p in points.items()],
        }
    with tempfile.TemporaryDirectory(prefix="gradescope-") as tmp:
        (result,) = grade_many(
            assignment,
            found,
            Path(tmp) / "gradebook.csv",
            limits=Limits(),
            isolate=isolate,
            progress=False,
        )
    text = feedback(result, assignment)
    tests = []
    for name, max_score in points.items():
        verdict = result.questions.get(name)
        tests.append(
            {
                "name": name,
                "score": result.scores.get(name, 0.0),
                "max_score": max_score,
                "status": "passed" if verdict is not None and verdict.passed else "failed",
            }
        )
    return {"score": result.total, "output": text, "tests": tests, "stdout_visibility": "hidden"}


def main(argv: Sequence[str] | None = None) -> int:
    """Grade ``<root>/submission`` and write ``<root>/results/results.json``."""
    parser = argparse.ArgumentParser(prog="python -m grading.gradescope")
    parser.add_argument("--assignment", required=True)
    parser.add_argument("--root", default=os.environ.get(ROOT_ENV, "/autograder"))
    parser.add_argument("--unsafe-no-sandbox", action="store_true")
    args = parser.parse_args(argv)
    root = Path(args.root)
    out = root / "results" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = results_json(
            args.assignment, root / "submission", isolate=not args.unsafe_no_sandbox
        )
    except SandboxUnavailable as exc:
        data = {"score": 0.0, "output": f"The autograder could not run: {exc}"}
        out.write_text(json.dumps(data, indent=2), encoding="utf-8")
        print(exc, file=sys.stderr)
        return 2
    out.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
