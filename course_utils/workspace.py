"""The learner workspace: solution-free copies of the notebooks, and the progress table.

``make lab`` runs ``python -m course_utils.workspace update workspace`` and opens JupyterLab
there. The workspace is a git-ignored folder holding:

* ``NN_name.ipynb`` — each course notebook with every ``### BEGIN SOLUTION`` ... ``### END
  SOLUTION`` block replaced by ``raise NotImplementedError  # your code here``. Created on
  first use and **never overwritten**: the learner's work stays theirs.
* ``updates/NN_name.ipynb`` — when the course changes a notebook the learner already has,
  its new version lands here and ``update`` says so; the learner's copy is untouched.
* ``.course.json`` — which version of each notebook the learner was given.
* ``.solutions.json`` — the worked solutions, shown by ``course_utils.checks.solution`` only
  after a failed attempt.

``python -m course_utils.workspace progress workspace`` (``make progress``, and the last cell
of notebook 00) runs every notebook of the workspace up to its last check and prints one row
per exercise: passed, not attempted, or the mistake the check named.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .checks.mistakes import EXERCISES, MISTAKES, RESULTS_ENV, SOLUTIONS_FILE, solutions_of

__all__ = ["progress", "strip_solutions", "student_notebook", "update_workspace"]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
PLACEHOLDER = "raise NotImplementedError  # your code here"
MANIFEST = ".course.json"
UPDATES = "updates"
#: The instructor notebooks, next to the package in a source checkout.
SOURCES = Path(__file__).resolve().parents[1] / "notebooks"


def strip_solutions(source: str) -> str:
    r"""Replace every solution block of a code cell's source by a placeholder line.

    The markers and everything between them go; one ``raise NotImplementedError  # your code
    here`` line, indented like the ``### BEGIN SOLUTION`` marker, takes their place, so a
    function body stays syntactically valid and running the cell unsolved fails loudly.

    Args:
        source: the cell's source.

    Returns:
        The source without solutions (unchanged when it has no markers).

    Raises:
        ValueError: a block is opened twice, closed without being opened, or never closed --
            publishing such a notebook would leak or mangle a solution.

    Example:
        >>> print(strip_solutions("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n"
        ...                       "    ### END SOLUTION\n"))
        def f(x):
            raise NotImplementedError  # your code here
        <BLANKLINE>
    """
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(keepends=True), start=1):
        marker = line.strip()
        if marker.startswith(BEGIN):
            if inside:
                raise ValueError(f"line {number}: {BEGIN!r} inside an open solution block")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            newline = "\n" if line.endswith("\n") else ""
            out.append(f"{indent}{PLACEHOLDER}{newline}")
        elif marker.startswith(END):
            if not inside:
                raise ValueError(f"line {number}: {END!r} without a matching {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN!r} is never closed by {END!r}")
    return "".join(out)


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` for students: solutions stripped from code cells, no outputs or state.

    Markdown cells are left alone (they may *talk about* the markers).

    Raises:
        ValueError: from :func:`strip_solutions`, naming the cell.
    """
    nb = copy.deepcopy(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        try:
            cell.source = strip_solutions(cell.source)
        except ValueError as err:
            raise ValueError(f"cell {index}: {err}") from None
        cell.outputs = []
        cell.execution_count = None
        for key in ("execution", "ExecuteTime"):
            cell.metadata.pop(key, None)
    nb.metadata.pop("widgets", None)
    return nb


def _digest(nb: nbformat.NotebookNode) -> str:
    return hashlib.sha256(nbformat.writes(nb).encode("utf-8")).hexdigest()[:16]


@dataclass
class UpdateReport:
    """What :func:`update_workspace` did, notebook by notebook."""

    created: list[str]
    changed: list[str]  # the course changed a notebook the learner has: see updates/
    unchanged: list[str]


def update_workspace(workspace: Path, sources: Path = SOURCES) -> UpdateReport:
    """Create or refresh the learner workspace from the instructor notebooks in ``sources``.

    New notebooks are copied without solutions; a notebook the learner already has is never
    overwritten: if the course changed it since it was handed out, the new version goes to
    ``updates/`` and the report lists it. The worked solutions are refreshed every time.
    """
    workspace.mkdir(parents=True, exist_ok=True)
    manifest_path = workspace / MANIFEST
    given: dict[str, str] = (
        json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.exists() else {}
    )
    report = UpdateReport([], [], [])
    solutions: dict[str, str] = {}
    for path in sorted(sources.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        solutions.update(solutions_of([(c.cell_type, c.source) for c in nb.cells]))
        learner = student_notebook(nb)
        digest = _digest(learner)
        target = workspace / path.name
        if not target.exists():
            nbformat.write(learner, target)
            given[path.name] = digest
            report.created.append(path.name)
        elif given.get(path.name) != digest:
            (workspace / UPDATES).mkdir(exist_ok=True)
            nbformat.write(learner, workspace / UPDATES / path.name)
            report.changed.append(path.name)
        else:
            report.unchanged.append(path.name)
    manifest_path.write_text(json.dumps(given, indent=1, sort_keys=True), encoding="utf-8")
    (workspace / SOLUTIONS_FILE).write_text(json.dumps(solutions, indent=1), encoding="utf-8")
    return report


# -- progress ----------------------------------------------------------------------------------


def _until_last_check(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``nb`` cut after its last exercise check cell (the rest only illustrates)."""
    checks = {e.check for e in EXERCISES.values()}
    last = max(
        (
            i
            for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and any(f"{name}(" in c.source for name in checks)
        ),
        default=-1,
    )
    nb = copy.deepcopy(nb)
    nb.cells = nb.cells[: last + 1]
    return nb


def run_checks(workspace: Path, timeout: int = 300) -> dict[str, str | None]:
    """Run each workspace notebook up to its last check; ``{exercise id: mistake key}``.

    A missing key means the exercise's check never ran; ``None`` means it passed.
    """
    from nbclient import NotebookClient

    results: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "results.jsonl"
        previous = os.environ.get(RESULTS_ENV)
        os.environ[RESULTS_ENV] = str(log)  # the kernel inherits it; every check appends
        try:
            for notebook in sorted({e.notebook for e in EXERCISES.values()}):
                path = workspace / f"{notebook}.ipynb"
                if not path.exists():
                    continue
                nb = _until_last_check(nbformat.read(path, as_version=4))
                client = NotebookClient(
                    nb,
                    timeout=timeout,
                    allow_errors=True,
                    resources={"metadata": {"path": str(workspace)}},
                )
                client.execute()
        finally:
            if previous is None:
                os.environ.pop(RESULTS_ENV, None)
            else:
                os.environ[RESULTS_ENV] = previous
        if log.exists():
            for line in log.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                # The first result counts: later cells may feed a check the assignment's
                # code on purpose, to show what it names.
                results.setdefault(row["exercise"], row["mistake"])
    return results


def progress_table(results: dict[str, str | None]) -> str:
    """One row per exercise: notebook, exercise, and passed / not attempted / the mistake."""
    rows = [("notebook", "exercise", "result")]
    for exercise in EXERCISES.values():
        if exercise.id not in results:
            result = "not run (an earlier cell failed?)"
        elif results[exercise.id] is None:
            result = "passed ✓"
        elif results[exercise.id] == "not_attempted":
            result = "not attempted"
        else:
            result = f"✗ {MISTAKES[str(results[exercise.id])].name}"
        rows.append((exercise.notebook, f"{exercise.id}  {exercise.title}", result))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{a:{widths[0]}}  {b:{widths[1]}}  {c}" for a, b, c in rows]
    lines.insert(1, "-" * len(lines[0]))
    done = sum(1 for v in results.values() if v is None)
    lines.append(f"\n{done} of {len(EXERCISES)} exercises passed")
    return "\n".join(lines)


def progress(workspace: Path | str | None = None) -> str:
    """Print (and return) the progress table of the learner workspace.

    Args:
        workspace: the workspace folder; default: the current folder if it is one.
    """
    folder = Path.cwd() if workspace is None else Path(workspace)
    if not (folder / MANIFEST).exists():
        # The folder's name only: this message lands in rendered course pages, which must not
        # show the machine's paths.
        where = "This folder" if workspace is None else f"'{folder.name}'"
        text = (
            f"{where} is not a learner workspace (no {MANIFEST}). Your progress is measured "
            "in the workspace that `make lab` opens; these are the instructor sources."
        )
    else:
        text = progress_table(run_checks(folder))
    print(text)
    return text


def main(argv: list[str] | None = None) -> int:
    """Command line: ``update WORKSPACE`` or ``progress WORKSPACE``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["update", "progress"])
    parser.add_argument("workspace", type=Path)
    args = parser.parse_args(argv)
    if args.command == "progress":
        progress(args.workspace)
        return 0
    report = update_workspace(args.workspace)
    for name in report.created:
        print(f"new in your workspace: {name}")
    for name in report.changed:
        print(
            f"the course changed {name}: its new version is in "
            f"{args.workspace / UPDATES / name}; your copy is untouched"
        )
    print(f"learner workspace: {args.workspace} ({len(report.unchanged)} notebooks unchanged)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
