"""The learner edition (issue 10): workspace, hint ladder, worked solutions, progress table."""

from __future__ import annotations

import ast
import io
import json
import keyword
import re
import subprocess
import textwrap
import tokenize
from pathlib import Path
from typing import Any

import mistakes as m
import nbformat
import pytest

from course_utils import checks, workspace
from course_utils.checks import EXERCISES, MISTAKES, check_channel_weights, hint, solution
from course_utils.checks import mistakes as catalogue

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "notebooks"


@pytest.fixture(autouse=True)
def fresh_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts a new learner session (no attempts, no hints shown)."""
    monkeypatch.setattr(catalogue, "_SESSION", {})
    monkeypatch.setattr(catalogue, "_LAST", [])


# -- hints and solutions ---------------------------------------------------------------------


def test_every_mistake_has_a_ladder_and_unique_name() -> None:
    for mistake in MISTAKES.values():
        assert mistake.hint == mistake.hints[0] and len(mistake.hints) >= 2, mistake.key
    names = [mk.name for mk in MISTAKES.values()]
    assert len(names) == len(set(names))


def _solution_lines() -> set[str]:
    """Every non-trivial line inside the notebooks' solution blocks."""
    lines = set()
    for path in SOURCES.glob("0*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            inside = False
            for line in cell.source.splitlines():
                if "### BEGIN SOLUTION" in line:
                    inside = True
                elif "### END SOLUTION" in line:
                    inside = False
                elif inside and len(line.strip()) > 12:
                    lines.add(line.strip())
    return lines


def test_hints_never_print_a_solution_line() -> None:
    solutions = _solution_lines()
    assert solutions, "no solution blocks found"
    for mistake in MISTAKES.values():
        for text in mistake.hints:
            leaked = [line for line in solutions if line in text]
            assert leaked == [], f"{mistake.key} hint prints {leaked}"


def test_the_ladder_climbs_then_opens_the_solution(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / catalogue.SOLUTIONS_FILE).write_text(json.dumps({"04.weights": "SOLVED"}))
    with pytest.raises(ValueError, match="run its check first"):
        solution("04.weights")
    assert "no failed attempt" in hint("04.weights")
    with pytest.raises(AssertionError) as info:
        check_channel_weights(m.weights_sum)
    message = str(info.value)
    ladder = MISTAKES["sum_not_mean"].hints
    assert ladder[0] in message and 'hint("04.weights")' in message
    assert ladder[1] in hint()  # no argument: the exercise whose check ran last
    assert "last hint" in hint("04.weights")
    assert solution("04.weights") == "SOLVED"


def test_a_pass_resets_the_ladder() -> None:
    with pytest.raises(AssertionError):
        check_channel_weights(m.weights_sum)
    check_channel_weights(lambda g: g.mean(dim=(2, 3)))
    assert "no failed attempt" in hint("04.weights")


def test_unknown_exercise_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown exercise '4\.weights'"):
        hint("4.weights")


def test_every_exercise_is_in_its_notebook() -> None:
    """Each exercise id heads a solution cell of its notebook, and its check is called there
    (07 belongs to the lectures: only its check call is required).
    """
    for exercise in EXERCISES.values():
        nb = nbformat.read(SOURCES / f"{exercise.notebook}.ipynb", as_version=4)
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        assert any(f"{exercise.check}(" in src for src in code), exercise.id
        assert hasattr(checks, exercise.check)
        if exercise.notebook != "07_grad_cam":
            cells = [(c.cell_type, c.source) for c in nb.cells]
            assert exercise.id in catalogue.solutions_of(cells), exercise.id


# -- exercises that need thought: the answer is not in the cells above ---------------------

#: Names that stay themselves in a skeleton: libraries, not the author's variables.
_LIBRARIES = {"torch", "F", "nn", "np", "None"}
#: Expressions that can carry an answer (a bare name or attribute chain cannot).
_EXPRESSIONS = (ast.Call, ast.BinOp, ast.Compare, ast.Lambda, ast.Subscript)
#: An expression with fewer informative tokens (a method, a number, a string, a library) is
#: generic — ``x.clone()``, ``torch.relu(a)`` — and may appear anywhere.
_INFORMATIVE = 3


def skeleton(node: ast.expr) -> tuple[str, int]:
    """``node``'s code with every variable renamed ``_``, and its number of informative tokens.

    Renaming makes ``alpha = dA.mean(dim=(2, 3))`` above an exercise and ``gradients.mean(dim=
    (2, 3))`` in its solution the same text; ``torch.nn.functional`` is spelled ``F`` and the
    flags ``True``/``False`` count as variables, so a copied call with a flipped flag matches.
    """
    code = ast.unparse(node).replace("torch.nn.functional.", "F.")
    kinds = (tokenize.NAME, tokenize.OP, tokenize.NUMBER, tokenize.STRING)
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type in kinds]
    out, informative = [], 0
    for k, tok in enumerate(tokens):
        text = tok.string
        after_dot = k > 0 and tokens[k - 1].string == "."
        keyword_arg = k + 1 < len(tokens) and tokens[k + 1].string == "="
        variable = tok.type == tokenize.NAME and not keyword.iskeyword(text)
        if text in {"True", "False"} or (
            variable and text not in _LIBRARIES and not after_dot and not keyword_arg
        ):
            text = "_"
        elif tok.type != tokenize.OP and text != "None":
            informative += 1
        out.append(text)
    return "".join(out), informative


def _expressions(source: str) -> dict[str, str]:
    """``{skeleton: code}`` of every informative expression in ``source`` (none if unparsable)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, _EXPRESSIONS):
            shape, informative = skeleton(node)
            if informative >= _INFORMATIVE:
                found[shape] = ast.unparse(node)
    return found


def _markdown_code(nb: nbformat.NotebookNode) -> dict[str, str]:
    """Expressions in the notebook's markdown code spans and blocks: a learner reads them all."""
    found: dict[str, str] = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for span in re.findall(r"```(?:python)?\n(.*?)```|`([^`\n]+)`", cell.source, re.S):
                found.update(_expressions(textwrap.dedent(span[0] or span[1])))
    return found


def answer_above_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Exercises whose solution repeats an expression shown before the learner writes it.

    For each ``# exercise`` cell, every informative expression of its solution block is
    compared, variables renamed, with every expression of the notebook's earlier code cells
    and of its markdown anywhere (a summary below the exercise is read too): a worked example
    must show the idea on another case, not the answer under other names.
    """
    problems = []
    prose = _markdown_code(nb)
    for i, cell in enumerate(nb.cells):
        block = re.search(r"### BEGIN SOLUTION\n(.*?)\n[ \t]*### END SOLUTION", cell.source, re.S)
        if cell.cell_type != "code" or not cell.source.startswith("# exercise") or not block:
            continue
        above = dict(prose)
        for earlier in nb.cells[:i]:
            if earlier.cell_type == "code":
                above.update(_expressions(earlier.source))
        for shape, code in _expressions(textwrap.dedent(block.group(1))).items():
            if shape in above:
                exercise = cell.source.split()[2]
                problems.append(f"{exercise}: `{code}` is already shown as `{above[shape]}`")
    return problems


@pytest.mark.parametrize("path", sorted(SOURCES.glob("0*.ipynb")), ids=lambda p: p.stem)
def test_the_answer_is_not_in_the_cells_above(path: Path) -> None:
    assert answer_above_problems(nbformat.read(path, as_version=4)) == []


def test_answer_above_is_found_under_other_names() -> None:
    cells = [
        nbformat.v4.new_code_cell("alpha = dA.mean(dim=(2, 3))  # worked example"),
        nbformat.v4.new_code_cell(
            "# exercise 04.weights\ndef w(gradients):\n    ### BEGIN SOLUTION\n"
            "    return gradients.mean(dim=(2, 3))\n    ### END SOLUTION\n"
        ),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    assert answer_above_problems(nb) == [
        "04.weights: `gradients.mean(dim=(2, 3))` is already shown as `dA.mean(dim=(2, 3))`"
    ]
    cells[0].source = "alpha = dA[0, 0].mean()  # one image, one channel: another case"
    assert answer_above_problems(nb) == []
    nb.cells.append(nbformat.v4.new_markdown_cell("Summary: weights are `g.mean(dim=(2, 3))`."))
    assert answer_above_problems(nb) == [
        "04.weights: `gradients.mean(dim=(2, 3))` is already shown as `g.mean(dim=(2, 3))`"
    ]


# -- the workspace ---------------------------------------------------------------------------

SOLVED = (
    "# exercise 04.weights\ndef f(g):\n    ### BEGIN SOLUTION\n    return 42\n"
    "    ### END SOLUTION\n"
)


def _sources(folder: Path, body: str = SOLVED) -> Path:
    folder.mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(body)])
    nbformat.write(nb, folder / "04_pooling.ipynb")
    return folder


def test_workspace_is_created_without_solutions_and_never_overwritten(tmp_path: Path) -> None:
    sources, ws = _sources(tmp_path / "src"), tmp_path / "ws"
    report = workspace.update_workspace(ws, sources)
    assert report.created == ["04_pooling.ipynb"]
    copy = ws / "04_pooling.ipynb"
    assert "42" not in copy.read_text() and workspace.PLACEHOLDER in copy.read_text()
    assert json.loads((ws / catalogue.SOLUTIONS_FILE).read_text()) == {"04.weights": SOLVED}

    nb = nbformat.read(copy, as_version=4)
    nb.cells[0].source = SOLVED.replace("42", "41")  # the learner's work
    nbformat.write(nb, copy)
    assert workspace.update_workspace(ws, sources).unchanged == ["04_pooling.ipynb"]
    assert "41" in copy.read_text()

    _sources(sources, SOLVED.replace("def f", "def f_new"))  # the course changes
    report = workspace.update_workspace(ws, sources)
    assert report.changed == ["04_pooling.ipynb"]
    assert "41" in copy.read_text(), "the learner's copy was overwritten"
    assert "f_new" in (ws / workspace.UPDATES / "04_pooling.ipynb").read_text()


def test_workspace_is_ignored_by_git_ruff_and_pytest() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "workspace/01_relu_masking.ipynb"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "workspace/ is not git-ignored"
    pyproject = (ROOT / "pyproject.toml").read_text()
    testpaths = re.search(r"testpaths = \[(.*)\]", pyproject)
    assert testpaths and "workspace" not in testpaths.group(1)
    assert "WORKSPACE := workspace" in (ROOT / "Makefile").read_text()


def test_progress_outside_a_workspace_says_where_to_run_it(capsys: Any) -> None:
    text = workspace.progress(SOURCES)
    assert "not a learner workspace" in text
    assert str(SOURCES.parent) not in text, "a machine path would land in the rendered pages"


def test_progress_table_names_each_result() -> None:
    table = workspace.progress_table(
        {"04.weights": None, "04.cam": "relu_before_sum", "05.upsample": "not_attempted"}
    )
    assert re.search(r"04\.weights .*passed ✓", table)
    assert re.search(r"04\.cam .*✗ " + re.escape(MISTAKES["relu_before_sum"].name), table)
    assert re.search(r"05\.upsample .*not attempted", table)
    assert re.search(r"01\.guided_relu .*not run", table)
    assert "1 of 12 exercises passed" in table


def test_progress_runs_the_workspace_checks(tmp_path: Path) -> None:
    """End to end in a kernel: one wrong exercise, one unsolved exercise."""
    sources = tmp_path / "src"
    sources.mkdir()
    cells = [
        nbformat.v4.new_code_cell(
            "# exercise 04.weights\ndef w(g):\n    ### BEGIN SOLUTION\n"
            "    return g.mean(dim=(2, 3))\n    ### END SOLUTION\n"
        ),
        nbformat.v4.new_code_cell(
            "from course_utils.checks import check_channel_weights\ncheck_channel_weights(w)"
        ),
        nbformat.v4.new_code_cell(
            "# exercise 04.cam\ndef c(a, w):\n    ### BEGIN SOLUTION\n    return a.sum(1)\n"
            "    ### END SOLUTION\n"
        ),
        nbformat.v4.new_code_cell(
            "from course_utils.checks import check_weighted_cam\ncheck_weighted_cam(c)"
        ),
    ]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), sources / "04_pooling.ipynb")
    ws = tmp_path / "ws"
    workspace.update_workspace(ws, sources)
    nb = nbformat.read(ws / "04_pooling.ipynb", as_version=4)
    nb.cells[0].source = "def w(g):\n    return g.sum(dim=(2, 3))\n"  # the learner's try
    nbformat.write(nb, ws / "04_pooling.ipynb")
    results = workspace.run_checks(ws, timeout=120)
    assert results == {"04.weights": "sum_not_mean", "04.cam": "not_attempted"}
