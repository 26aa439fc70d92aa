"""Build the graded assignments: ``python assignments/build.py`` (what ``make assignments`` runs).

For every master notebook ``assignments/<name>.ipynb`` this

* runs ``otter assign``, which writes ``dist/assignments/<name>/student/`` (the release:
  no solutions; public tests only, for ``grader.check``) and the solution notebook in
  ``dist/assignments/<name>/autograder/``;
* checks the release: no solution line, no otter marker, no hidden test name, nothing of
  the ``grading`` package; and that the master's points agree with the grader's;
* writes the Gradescope autograder ``<name>-autograder.zip`` (:func:`gradescope_zip`);
* grades the solution and the blank release through the sandboxed grader
  (:mod:`grading.batch`, the same path as real submissions): the solution must get full marks
  and the blank release 0, both with status ``ok``.

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
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QUESTION_CONFIG = re.compile(r"#\s*BEGIN QUESTION.*?name:\s*(\w+).*?points:\s*([0-9.]+)", re.S)

#: Gradescope's setup script: installs what the grader imports, then the course wheel
#: (course_utils, the reference, and grading, the grader), and bubblewrap if missing.
SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install -r requirements.txt
"$PYTHON" -m pip install --no-deps wheels/*.whl
if ! command -v bwrap >/dev/null; then
    apt-get update && apt-get install -y bubblewrap
fi
"""
#: Gradescope's entry point: grade /autograder/submission, write /autograder/results.
RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this for each submission; GRADESCOPE_ROOT replaces /autograder.
set -euo pipefail
cd "$(dirname "$0")"  # never import a stray grading/ folder from the working directory
exec "${{PYTHON:-python3}}" -m grading.gradescope --assignment {name} "$@"
"""
#: What the grader imports besides the course wheel (installed with --no-deps): the course's
#: own lower bounds (pyproject.toml), without the notebook-only dependencies.
REQUIREMENTS = ("torch>=2.2", "torchvision>=0.17", "numpy>=1.24", "pillow>=10.0", "tqdm>=4.60")


PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w")


class BuildError(RuntimeError):
    """The assignment could not be built, leaks answers, or grades wrongly."""


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


def solution_lines(master: Path) -> list[str]:
    """Solution lines of a master (longer than a trivial ``return x``)."""
    lines: list[str] = []
    for cell in _cells(master):
        if cell["cell_type"] != "code":
            continue
        inside = False
        for line in _source(cell).splitlines():
            marker = line.strip().upper()
            if marker.startswith("# BEGIN SOLUTION"):
                inside = True
            elif marker.startswith("# END SOLUTION"):
                inside = False
            elif inside and len(line.strip()) > 24:
                lines.append(line.strip())
    return lines


def master_points(master: Path) -> dict[str, float]:
    """Question name -> points, from the master's ``# BEGIN QUESTION`` cells."""
    found = {}
    for cell in _cells(master):
        match = QUESTION_CONFIG.search(_source(cell)) if cell["cell_type"] == "raw" else None
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def check_points(master: Path) -> None:
    """The master's points must be the grader's (``grading.assignments``)."""
    from grading.assignments import questions

    grader = {name: float(q.points) for name, q in questions(master.stem).items()}
    if master_points(master) != grader:
        raise BuildError(f"{master.name}: points {master_points(master)} but grader {grader}")


def check_release(master: Path, student_dir: Path) -> None:
    """Fail if the student release holds a solution line, a hidden test or grading code."""
    from grading.assignments import questions

    notebook = student_dir / master.name
    if not notebook.is_file():
        raise BuildError(f"otter assign wrote no student notebook {notebook}")
    text = notebook.read_text(encoding="utf-8")
    lines = solution_lines(master)
    if not lines:
        raise BuildError(f"{master.name}: found no solution to check against")
    leaks = [line for line in lines if json.dumps(line)[1:-1] in text]
    hidden = [t.__name__ for q in questions(master.stem).values() for t in q.tests]
    leaks += [name for name in hidden if name in text]
    leaks += [str(p) for p in student_dir.rglob("*") if p.suffix == ".py" or p.suffix == ".zip"]
    if re.search(r"BEGIN SOLUTION|END SOLUTION|BEGIN TEST CONFIG|hidden:\s*true", text):
        leaks.append("an otter marker")
    if leaks:
        raise BuildError(f"{notebook} leaks: {leaks[:5]}")


def course_wheel(dest: Path) -> Path:
    """A wheel of this repository (course_utils + grading) at its current version."""
    proc = subprocess.run(
        [*PIP_WHEEL, str(dest), str(ROOT)],
        capture_output=True,
        text=True,
    )
    wheels = sorted(dest.glob("course_utils-*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        raise BuildError(f"pip wheel failed: {proc.stderr[-3000:]}")
    return wheels[0]


def gradescope_zip(name: str, dest: Path) -> Path:
    """Write ``dest/<name>-autograder.zip`` following Gradescope's autograder contract."""
    final = dest / f"{name}-autograder.zip"
    with tempfile.TemporaryDirectory() as tmp:
        wheel = course_wheel(Path(tmp))
        with zipfile.ZipFile(final, "w", zipfile.ZIP_DEFLATED) as zf:
            for member, text in (
                ("setup.sh", SETUP_SH),
                ("run_autograder", RUN_AUTOGRADER.format(name=name)),
                ("requirements.txt", "\n".join(REQUIREMENTS) + "\n"),
            ):
                info = zipfile.ZipInfo(member)
                info.external_attr = 0o755 << 16
                zf.writestr(info, text)
            zf.write(wheel, f"wheels/{wheel.name}")
    return final


def check_grades(name: str, out: Path) -> None:
    """The solution scores full marks and the blank release 0, both ``ok``."""
    from grading.batch import grade_many
    from grading.sandbox import Limits

    print(f"[{name}] grading the solution and the blank release ...", flush=True)
    solution = out / "autograder" / f"{name}.ipynb"
    blank = out / "student" / f"{name}.ipynb"
    results = grade_many(
        name,
        [solution, blank],
        out / "solution-gradebook.csv",
        limits=Limits(timeout=600),
        workers=2,
        progress=False,
    )
    for result, wanted in zip(results, ("full", "zero"), strict=True):
        target = result.possible if wanted == "full" else 0.0
        if result.status != "ok" or result.total != target:
            failing = {q: v.message for q, v in result.questions.items() if not v.passed}
            raise BuildError(
                f"{result.submission} scores {result.total:g}/{result.possible:g} (status "
                f"{result.status}; expected {wanted}): {result.detail} {failing}\n"
                f"{result.log_tail[-4000:]}"
            )


def build(master: Path, out_root: Path, *, check: bool = True) -> Path:
    """Build one assignment; return the path of its Gradescope zip.

    ``check=False`` skips grading the solution and the blank release (the tests grade them
    in their own batch).
    """
    out = out_root / master.stem
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    otter = [sys.executable, "-m", "otter", "assign", "--no-pdfs", "--no-run-tests"]
    print(f"[{master.stem}] otter assign ...", flush=True)
    proc = subprocess.run(
        [*otter, master.name, str(out)], cwd=master.parent, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise BuildError(
            f"otter assign failed for {master.name} (exit {proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    for otter_zip in (out / "autograder").glob("*.zip"):  # otter's in-kernel autograder: unused
        otter_zip.unlink()
    check_release(master, out / "student")
    check_points(master)
    final = gradescope_zip(master.stem, out / "autograder")
    if check:
        check_grades(master.stem, out)
    print(f"[{master.stem}] ok: {out / 'student'} and {final}", flush=True)
    return final


def main(argv: list[str] | None = None) -> int:
    """Build the named assignments (default: all); exit status 1 on any failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="master notebook names (default: all)")
    parser.add_argument("--out", default=str(ROOT / "dist" / "assignments"))
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
