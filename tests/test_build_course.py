"""Tests for the pure parts of scripts/build_course.py: solution stripping and the index text."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "build_course.py"
_spec = importlib.util.spec_from_file_location("build_course", _PATH)
build_course = importlib.util.module_from_spec(_spec)
sys.modules["build_course"] = build_course  # dataclasses look their module up there
_spec.loader.exec_module(build_course)

SOLVED = '''\
def guided(x):
    """Doc."""
    ### BEGIN SOLUTION
    secret = x * 2
    return secret
    ### END SOLUTION


### BEGIN SOLUTION
answer = 42
### END SOLUTION
check(answer)
'''


def test_strip_solutions_removes_code_and_keeps_valid_python():
    stripped = build_course.strip_solutions(SOLVED)
    assert "secret" not in stripped and "42" not in stripped
    assert "BEGIN SOLUTION" not in stripped and "END SOLUTION" not in stripped
    assert stripped.count(build_course.PLACEHOLDER) == 2
    assert "    raise NotImplementedError  # your code here\n" in stripped  # keeps the indent
    assert stripped.endswith("check(answer)\n")
    ast.parse(stripped)


def test_strip_solutions_leaves_plain_cells_alone():
    source = "x = 1\nprint(x)  # ### not a marker\n"
    assert build_course.strip_solutions(source) == source


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
        ("x = 1\n### END SOLUTION\n", "without a matching"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "inside an open"),
    ],
)
def test_strip_solutions_rejects_broken_markers(source, message):
    with pytest.raises(ValueError, match=message):
        build_course.strip_solutions(source)


def test_student_notebook_strips_code_cells_only_and_clears_outputs():
    code = nbformat.v4.new_code_cell(SOLVED, execution_count=3)
    code.outputs = [nbformat.v4.new_output("stream", text="42\n")]
    code.metadata["execution"] = {"iopub.status.idle": "2026-01-01"}
    prose = nbformat.v4.new_markdown_cell("Put your code between `### BEGIN SOLUTION` markers.")
    nb = nbformat.v4.new_notebook(cells=[prose, code])
    nb.metadata["widgets"] = {"state": {}}

    student = build_course.student_notebook(nb)
    assert student.cells[0].source == prose.source
    cell = student.cells[1]
    assert "secret" not in cell.source and cell.outputs == [] and cell.execution_count is None
    assert "execution" not in cell.metadata and "widgets" not in student.metadata
    assert "secret" in nb.cells[1].source and nb.cells[1].outputs  # the original is untouched
    nbformat.validate(student)


def test_student_notebook_names_the_broken_cell():
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("### BEGIN SOLUTION")]
    )
    with pytest.raises(ValueError, match="cell 1"):
        build_course.student_notebook(nb)


def test_title_description_and_index():
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import torch"),
            nbformat.v4.new_markdown_cell(
                "# 05 · Upsampling: from a 7×7 grid to the photo\n\nMore text.\n\n**Goals**"
            ),
        ]
    )
    assert build_course.title_and_description(nb) == (
        "05 · Upsampling",
        "from a 7×7 grid to the photo",
    )
    nb.cells[1].source = "# 09 · Metrics\n\nWe measure\n*how well* it works. More.\n\n## Goals"
    title, description = build_course.title_and_description(nb)
    assert (title, description) == ("09 · Metrics", "We measure *how well* it works.")
    pages = [
        build_course.Page("05_upsampling", "05 · <Upsampling>", "the `(W, H)` trap", True, 1.0),
        build_course.Page("08_explorer", "08", "d", False, 1.0, error="NameError: x"),
    ]
    index = build_course.index_html(pages)
    assert '<a href="05_upsampling.slides.html">slides</a>' in index
    assert "08_explorer.slides.html" not in index
    assert "&lt;Upsampling&gt;" in index and "failed: NameError: x" in index
    assert "the <code>(W, H)</code> trap" in index


def test_main_without_execution_writes_pages_index_and_student_copy(tmp_path):
    assert build_course.main(["--only", "04", "--no-execute", "--out", str(tmp_path)]) == 0
    course, student = tmp_path / "course", tmp_path / "student"
    assert sorted(p.name for p in course.iterdir()) == [
        "04_pooling.html",
        "04_pooling.slides.html",
        "index.html",
    ]
    assert '<a href="04_pooling.slides.html">slides</a>' in (course / "index.html").read_text()
    copy = nbformat.read(student / "04_pooling.ipynb", as_version=4)
    code = "\n".join(c.source for c in copy.cells if c.cell_type == "code")
    assert "BEGIN SOLUTION" not in code and build_course.PLACEHOLDER in code
    with pytest.raises(SystemExit, match="no notebook matches"):
        build_course.main(["--only", "99", "--no-execute", "--out", str(tmp_path)])
