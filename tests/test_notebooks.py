"""Structural checks on the course notebooks (their *execution* is nbval's job).

Every notebook under ``notebooks/`` (and ``assignments/*.ipynb``, if any) must be

* valid nbformat and committed **without outputs** — no outputs, execution counts, cell
  timing metadata or saved widget state — so diffs stay readable and nothing stale ships;

and every notebook under ``notebooks/`` must also

* be named after its place in the course sequence ``00_welcome`` … ``09_does_it_work``;
* open with a markdown title cell (``# ...``) and close with a markdown cell holding the
  "Summary" / "What's next";
* end plotting cells with ``;`` so no ``[<matplotlib...>]`` repr lands in the output;

and every *stage* notebook (01–07) must hold at least one exercise: a code cell with a
``### BEGIN SOLUTION`` block, followed (in that cell or a later one) by a ``check_...(...)``
call that grades it.

Each rule is a small function returning a list of human-readable problems, so the tests at the
bottom can feed it a synthetic notebook and prove that it actually detects the violation.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import nbformat
import pytest

from course_utils import explorer, viz

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"

#: The course sequence (issue 4): every one must be present, under exactly this name.
SEQUENCE = {
    "00": "00_welcome.ipynb",
    "01": "01_relu_masking.ipynb",
    "02": "02_class_scores.ipynb",
    "03": "03_hooks.ipynb",
    "04": "04_pooling.ipynb",
    "05": "05_upsampling.ipynb",
    "06": "06_guided_backprop.ipynb",
    "07": "07_grad_cam.ipynb",
    "08": "08_explorer.ipynb",
    "09": "09_does_it_work.ipynb",
}
#: Notebooks that teach one stage and therefore must contain an exercise + check.
STAGES = {"01", "02", "03", "04", "05", "06", "07"}

#: Call names that draw: ``plt.imshow(...)``, ``ax.set_title(...)``, ``axes[0].plot(...)``...
_PLOT_ROOTS = {"plt", "ax", "axs", "axes", "fig", "sns"}
# fmt: off
_PLOT_ATTRS = {
    "imshow", "plot", "bar", "barh", "hist", "scatter", "matshow", "pcolormesh", "contour",
    "contourf", "colorbar", "legend", "set_title", "suptitle", "set_xlabel", "set_ylabel",
    "axis", "text", "annotate", "subplots", "figure", "tight_layout", "grid", "axhline",
    "axvline", "fill_between", "stem", "errorbar", "set_axis_off", "savefig",
}
# fmt: on
_NO_OUTPUT_CALLS = {"show", "close"}  # plt.show()/plt.close() return None
#: course_utils functions that return a Figure or Axes (``jet_comparison``, ``show_maps``, ...).
_FIGURE_FUNCTIONS = {
    name
    for module in (viz, explorer)
    for name, function in inspect.getmembers(module, inspect.isfunction)
    if inspect.signature(function).return_annotation in {"Figure", "Axes"}
}
_SOLUTION = "### BEGIN SOLUTION"
_CHECK_CALL = re.compile(r"\bcheck_\w+\s*\(")


def _notebook_paths() -> list[Path]:
    paths = sorted(NOTEBOOK_DIR.glob("*.ipynb")) + sorted((ROOT / "assignments").glob("*.ipynb"))
    return [p for p in paths if ".ipynb_checkpoints" not in p.parts]


def _source(cell: nbformat.NotebookNode) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def format_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Problems found by the nbformat JSON-schema validator (empty when valid)."""
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as err:
        return [f"invalid nbformat: {err.message}"]
    return []


def output_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Outputs, execution counts, timing metadata or widget state committed with the notebook."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i} has {len(cell.outputs)} committed output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has execution_count {cell.execution_count}")
        meta = cell.get("metadata", {})
        for key in ("execution", "ExecuteTime"):
            if key in meta:
                problems.append(f"cell {i} has timing metadata {key!r}")
    if "widgets" in nb.get("metadata", {}):
        problems.append("notebook metadata holds saved ipywidgets state")
    return problems


def frame_problems(nb: nbformat.NotebookNode) -> list[str]:
    """The notebook must open with a ``# Title`` cell and close with a Summary/What's next cell."""
    cells = [c for c in nb.cells if _source(c).strip()]
    if not cells:
        return ["notebook has no non-empty cells"]
    problems = []
    first, last = cells[0], cells[-1]
    if first.cell_type != "markdown" or not _source(first).lstrip().startswith("# "):
        problems.append("first cell is not a markdown title ('# ...')")
    text = _source(last).lower()
    if last.cell_type != "markdown" or not ("summary" in text or "what's next" in text):
        problems.append("last cell is not a markdown 'Summary' / 'What's next' cell")
    return problems


def exercise_problems(nb: nbformat.NotebookNode) -> list[str]:
    """A stage notebook needs a ``### BEGIN SOLUTION`` block followed by a ``check_...()`` call."""
    code = [_source(c) for c in nb.cells if c.cell_type == "code"]
    for i, src in enumerate(code):
        if _SOLUTION in src:
            after = src.split(_SOLUTION, 1)[1]
            later = [after, *code[i + 1 :]]
            if any(_CHECK_CALL.search(_strip_comments(s)) for s in later):
                return []
    if any(_SOLUTION in s for s in code):
        return ["a '### BEGIN SOLUTION' exercise is never followed by a check_...() call"]
    return ["no exercise: no code cell contains '### BEGIN SOLUTION'"]


def _strip_comments(src: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in src.splitlines())


def _call_names(call: ast.Call) -> tuple[str | None, str | None]:
    """``(root, attribute)`` of a call: ``axes[0].imshow(x)`` gives ``("axes", "imshow")``."""
    func = call.func
    attr = func.attr if isinstance(func, ast.Attribute) else None
    node = func
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    root = node.id if isinstance(node, ast.Name) else None
    if attr is None:
        attr = root
    return root, attr


def _is_plot_call(expr: ast.expr) -> bool:
    if not isinstance(expr, ast.Call):
        return False
    root, attr = _call_names(expr)
    if attr in _NO_OUTPUT_CALLS:
        return False
    if root in _PLOT_ROOTS or attr in _PLOT_ATTRS or attr in _FIGURE_FUNCTIONS:
        return True
    return bool(attr and (attr.startswith("plot_") or attr.startswith("show_")))


def plot_semicolon_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Code cells whose last statement is a bare plotting call without a trailing ``;``.

    Such a cell prints the call's return value (``[<matplotlib.lines.Line2D ...>]``,
    ``Text(0.5, 1.0, ...)``) above the figure: noise for readers and a spurious diff for nbval.
    Assignments (``fig, ax = plt.subplots()``) and ``plt.show()`` print nothing and pass.
    """
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        src = _source(cell)
        lines = [ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError:
            continue  # nbval reports broken code; this heuristic only looks at valid cells
        if not tree.body:
            continue
        last = tree.body[-1]
        if isinstance(last, ast.Expr) and _is_plot_call(last.value):
            tail = _strip_comments("\n".join(lines[last.lineno - 1 : last.end_lineno])).rstrip()
            if not tail.endswith(";"):
                problems.append(f"cell {i} ends with a plotting call without ';': {tail[-60:]!r}")
    return problems


def sequence_problems(path: Path) -> list[str]:
    """The file name must be the course-sequence name for its number (``NN_name.ipynb``)."""
    number = path.name[:2]
    expected = SEQUENCE.get(number)
    if expected is None:
        return [f"{path.name} is not numbered 00-09 like the course sequence"]
    if path.name != expected:
        return [f"{path.name} should be named {expected}"]
    return []


# --------------------------------------------------------------------------- real notebooks

NOTEBOOKS = _notebook_paths()
COURSE = [p for p in NOTEBOOKS if p.parent == NOTEBOOK_DIR]


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_valid_and_without_outputs(path: Path) -> None:
    nb = _read(path)
    assert format_problems(nb) + output_problems(nb) == [], (
        f"{path.name}: clear outputs before committing "
        "(jupyter nbconvert --clear-output --inplace NOTEBOOK)"
    )


@pytest.mark.parametrize("path", COURSE, ids=_ids(COURSE))
def test_course_notebook_structure(path: Path) -> None:
    nb = _read(path)
    problems = sequence_problems(path) + frame_problems(nb) + plot_semicolon_problems(nb)
    if path.name[:2] in STAGES:
        problems += exercise_problems(nb)
    assert problems == [], f"{path.name}: " + "; ".join(problems)


@pytest.mark.parametrize("name", sorted(SEQUENCE.values()))
def test_sequence_notebook_present(name: str) -> None:
    assert (NOTEBOOK_DIR / name).exists(), f"the course is missing {name}"


def test_no_duplicate_numbers() -> None:
    numbers = [p.name[:2] for p in COURSE]
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    assert duplicates == [], f"several notebooks share the numbers {duplicates}"


# ------------------------------------------------------------------ the detectors themselves


def _synthetic(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=cells)


def _md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text)


def _code(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(text)


EXERCISE = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n"


def _good() -> nbformat.NotebookNode:
    return _synthetic(
        [
            _md("# 01 · A title\n\nGoals."),
            _code(
                "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.imshow([[0, 1]]);"
            ),
            _code(EXERCISE),
            _code("check_guided_relu(f)"),
            _md("## Summary\n\n...\n\n## What's next\n\n..."),
        ]
    )


def test_detectors_accept_a_clean_notebook() -> None:
    nb = _good()
    assert format_problems(nb) == []
    assert output_problems(nb) == []
    assert frame_problems(nb) == []
    assert exercise_problems(nb) == []
    assert plot_semicolon_problems(nb) == []


def test_detects_committed_outputs_and_counts() -> None:
    nb = _good()
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi\n")]
    nb.cells[3].execution_count = 7
    nb.cells[2].metadata["execution"] = {"iopub.execute_input": "2024-01-01T00:00:00"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    problems = output_problems(nb)
    assert len(problems) == 4, problems
    assert any("committed output" in p for p in problems)
    assert any("execution_count 7" in p for p in problems)


def test_detects_invalid_nbformat() -> None:
    nb = _good()
    nb.cells[0]["cell_type"] = "markdwon"
    assert format_problems(nb) != []


def test_detects_missing_title_and_summary() -> None:
    nb = _good()
    nb.cells = nb.cells[1:-1]
    problems = frame_problems(nb)
    assert any("title" in p for p in problems)
    assert any("Summary" in p for p in problems)


def test_detects_missing_exercise_and_missing_check() -> None:
    no_solution = _good()
    no_solution.cells[2] = _code("def f(x):\n    return x\n")
    assert exercise_problems(no_solution) == [
        "no exercise: no code cell contains '### BEGIN SOLUTION'"
    ]
    unchecked = _good()
    unchecked.cells[3] = _code("# check_guided_relu(f)  (commented out)\nf(1)")
    assert exercise_problems(unchecked) == [
        "a '### BEGIN SOLUTION' exercise is never followed by a check_...() call"
    ]
    check_before = _good()
    check_before.cells[2], check_before.cells[3] = check_before.cells[3], check_before.cells[2]
    assert exercise_problems(check_before) != []


@pytest.mark.parametrize(
    "source",
    [
        "plt.imshow([[0, 1]])",
        "ax.set_title('x')  # trailing comment",
        "axes[0].plot([1, 2])",
        "fig.colorbar(im, ax=ax)",
        "plt.plot(\n    [1, 2],\n)",
        "plot_overlay(img, cam)",
        "jet_comparison()",
        "viz.jet_comparison(cmaps=['jet'])",
    ],
)
def test_detects_plot_call_without_semicolon(source: str) -> None:
    nb = _good()
    nb.cells[1] = _code("import matplotlib.pyplot as plt\n" + source)
    assert len(plot_semicolon_problems(nb)) == 1


@pytest.mark.parametrize(
    "source",
    [
        "plt.imshow([[0, 1]]);",
        "plt.plot(\n    [1, 2],\n);",
        "fig, ax = plt.subplots()",
        "plt.show()",
        "print(plt)",
        "%matplotlib inline\nplt.show()",
        "x = 1\nx",
    ],
)
def test_accepts_silent_plot_cells(source: str) -> None:
    nb = _good()
    nb.cells[1] = _code(source)
    assert plot_semicolon_problems(nb) == []


def test_detects_misnamed_notebook() -> None:
    assert sequence_problems(Path("01_relu_masking.ipynb")) == []
    assert sequence_problems(Path("01_relu.ipynb")) == [
        "01_relu.ipynb should be named 01_relu_masking.ipynb"
    ]
    assert sequence_problems(Path("relu.ipynb")) != []
