"""Build the graded assignments: ``python assignments/build.py`` (what ``make assignments`` runs).

For every master notebook ``assignments/<name>.ipynb`` this runs ``otter assign``, which
writes ``dist/assignments/<name>/student/`` (the release: no solutions, no hidden tests) and
``dist/assignments/<name>/autograder/`` (solution notebook and autograder zip). Then it

* renames the zip to ``<name>-autograder.zip`` (otter stamps it with the time);
* grades the solution notebook with that zip through the batch grader
  (:mod:`course_utils.grade`, the same path as real submissions, IntegrityGuard included):
  every public and hidden test must pass, i.e. full marks with status ``ok``;
* checks the release: no solution line, no hidden test, no ``grading_support.py``.

Any failure stops the build with a non-zero exit status.

Usage::

    python assignments/build.py [--out dist/assignments] [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HIDDEN_TEST = re.compile(r"hidden:\s*true.*?def\s+(test_\w+)", flags=re.DOTALL)


class BuildError(RuntimeError):
    """The assignment could not be built or its student release would leak answers."""


def masters(names: list[str] | None = None) -> list[Path]:
    """The master notebooks to build, all of ``assignments/*.ipynb`` by default."""
    found = sorted(p for p in HERE.glob("*.ipynb") if not p.name.startswith("."))
    if names:
        by_name = {p.stem: p for p in found}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise BuildError(f"no master notebook named {missing}; have {sorted(by_name)}")
        found = [by_name[n] for n in names]
    return found


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def secrets(master: Path) -> tuple[list[str], list[str]]:
    """Solution lines (longer than a trivial ``return x``) and hidden test names of a master."""
    lines: list[str] = []
    hidden: list[str] = []
    in_solution_cells = False
    for cell in _cells(master):
        text = _source(cell)
        if cell["cell_type"] == "raw":
            stripped = text.strip().upper()
            if stripped.startswith("# BEGIN SOLUTION"):
                in_solution_cells = True
            elif stripped.startswith("# END SOLUTION"):
                in_solution_cells = False
            continue
        if cell["cell_type"] != "code":
            continue
        hidden += HIDDEN_TEST.findall(text)
        inside = False
        for line in text.splitlines():
            marker = line.strip().upper()
            if marker.startswith("# BEGIN SOLUTION"):
                inside = True
            elif marker.startswith("# END SOLUTION"):
                inside = False
            elif (inside or (in_solution_cells and "# SOLUTION" in line)) and len(
                line.strip()
            ) > 24:
                lines.append(line.strip())
    return lines, hidden


def check_release(master: Path, student_dir: Path) -> None:
    """Fail if the student release contains a solution line, a hidden test or grading files."""
    notebook = student_dir / master.name
    if not notebook.is_file():
        raise BuildError(f"otter assign wrote no student notebook {notebook}")
    text = notebook.read_text(encoding="utf-8")
    solution_lines, hidden_tests = secrets(master)
    if not solution_lines or not hidden_tests:
        raise BuildError(f"{master.name}: found no solution or no hidden test to check against")
    leaks = [line for line in solution_lines if json.dumps(line)[1:-1] in text]
    leaks += [name for name in hidden_tests if name in text]
    leaks += [p.name for p in student_dir.rglob("grading_support.py")]
    if re.search(r"BEGIN SOLUTION|END SOLUTION|BEGIN TEST CONFIG", text):
        leaks.append("an otter marker")
    if leaks:
        raise BuildError(f"{notebook} leaks: {leaks[:5]}")


def check_solution(master: Path, autograder: Path, out: Path) -> None:
    """Grade the solution notebook like a submission; anything short of full marks fails."""
    from course_utils.grade import grade_many

    print(f"[{master.stem}] grading the solution with every public and hidden test ...", flush=True)
    (result,) = grade_many(
        autograder,
        [out / "autograder" / master.name],
        out / "solution-gradebook.csv",
        timeout=900,
        progress=False,
    )
    if result.status != "ok" or result.total != result.possible:
        failing = [q for q, score in result.scores.items() if score == 0]
        raise BuildError(
            f"the solution of {master.name} scores {result.total:g}/{result.possible:g} "
            f"(status {result.status}; zero on {failing}): {result.detail}\n"
            f"{result.log_tail[-6000:]}"
        )


def build(master: Path, out_root: Path, *, check: bool = True) -> Path:
    """Run otter assign on one master notebook; return the path of its autograder zip.

    ``check=False`` skips grading the solution (tests/test_grade.py grades it in its batch).
    """
    out = out_root / master.stem
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    otter = [
        sys.executable,
        "-m",
        "otter",
        "assign",
        "--no-pdfs",
        "--no-run-tests",
        master.name,
        str(out),
    ]
    print(f"[{master.stem}] otter assign ...", flush=True)
    proc = subprocess.run(otter, cwd=master.parent, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(
            f"otter assign failed for {master.name} (exit {proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    zips = sorted((out / "autograder").glob(f"{master.stem}-autograder*.zip"))
    if len(zips) != 1:
        raise BuildError(f"expected one autograder zip in {out / 'autograder'}, found {zips}")
    final = zips[0].with_name(f"{master.stem}-autograder.zip")
    zips[0].rename(final)
    check_release(master, out / "student")
    if check:
        check_solution(master, final, out)
    print(f"[{master.stem}] ok: {out / 'student'} and {final}", flush=True)
    return final


def main(argv: list[str] | None = None) -> int:
    """Build the named assignments (default: all); exit status 1 on any failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="master notebook names (default: all)")
    parser.add_argument("--out", default=str(HERE.parent / "dist" / "assignments"))
    args = parser.parse_args(argv)
    try:
        for master in masters(args.names):
            build(master, Path(args.out).resolve())
    except BuildError as exc:
        print(f"assignment build failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
