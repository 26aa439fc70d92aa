"""Tests for scripts/build_course.py and scripts/tag_slides.py without a browser.

The rendered course itself is checked in Chromium by tests/test_browser.py.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import io
import re
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils import workspace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # build_course imports tag_slides from beside it
_PATH = ROOT / "scripts" / "build_course.py"
_spec = importlib.util.spec_from_file_location("build_course", _PATH)
build_course = importlib.util.module_from_spec(_spec)
sys.modules["build_course"] = build_course  # dataclasses look their module up there
_spec.loader.exec_module(build_course)
import tag_slides  # noqa: E402

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
    stripped = workspace.strip_solutions(SOLVED)
    assert "secret" not in stripped and "42" not in stripped
    assert "BEGIN SOLUTION" not in stripped and "END SOLUTION" not in stripped
    assert stripped.count(workspace.PLACEHOLDER) == 2
    assert "    raise NotImplementedError  # your code here\n" in stripped  # keeps the indent
    assert stripped.endswith("check(answer)\n")
    ast.parse(stripped)


def test_strip_solutions_leaves_plain_cells_alone():
    source = "x = 1\nprint(x)  # ### not a marker\n"
    assert workspace.strip_solutions(source) == source


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
        workspace.strip_solutions(source)


def test_student_notebook_strips_code_cells_only_and_clears_outputs():
    code = nbformat.v4.new_code_cell(SOLVED, execution_count=3)
    code.outputs = [nbformat.v4.new_output("stream", text="42\n")]
    code.metadata["execution"] = {"iopub.status.idle": "2026-01-01"}
    prose = nbformat.v4.new_markdown_cell("Put your code between `### BEGIN SOLUTION` markers.")
    nb = nbformat.v4.new_notebook(cells=[prose, code])
    nb.metadata["widgets"] = {"state": {}}

    student = workspace.student_notebook(nb)
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
        workspace.student_notebook(nb)


def test_title_description_and_index():
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import torch"),
            nbformat.v4.new_markdown_cell(
                "# 05 · Upsampling: from a 7x7 grid to the photo\n\nMore text.\n\n**Goals**"
            ),
        ]
    )
    assert build_course.title_and_description(nb) == (
        "05 · Upsampling",
        "from a 7x7 grid to the photo",
    )
    nb.cells[1].source = "# 09 · Metrics\n\nWe measure\n*how well* it works. More.\n\n## Goals"
    title, description = build_course.title_and_description(nb)
    assert (title, description) == ("09 · Metrics", "We measure *how well* it works.")
    pages = [
        build_course.Page("05_upsampling", "05 · <Upsampling>", "the `(W, H)` trap", 1.0),
        build_course.Page("08_explorer", "08", "d", 1.0, error="NameError: x"),
    ]
    index = build_course.index_html(pages)
    assert '<a href="05_upsampling.slides.html">slides</a>' in index
    assert '<a href="08_explorer.slides.html">slides</a>' in index  # every notebook has a deck
    assert "&lt;Upsampling&gt;" in index and "failed: NameError: x" in index
    assert "the <code>(W, H)</code> trap" in index


def test_main_without_execution_writes_pages_index_and_student_copy(tmp_path):
    assert build_course.main(["--only", "04", "--no-execute", "--out", str(tmp_path)]) == 0
    course, student = tmp_path / "course", tmp_path / "student"
    assert sorted(p.name for p in course.iterdir()) == [
        "04_pooling.html",
        "04_pooling.slides.html",
        "assets",
        "index.html",
    ]
    assert (course / "assets" / "mathjax" / "tex-svg-full.js").is_file()
    assert (course / "assets" / "reveal.js" / "dist" / "reveal.js").is_file()
    for page in ("04_pooling.html", "04_pooling.slides.html"):
        text = (course / page).read_text(encoding="utf-8")
        assert "assets/mathjax/tex-svg-full.js" in text
        assert not re.search(r"(src|href)=\"(https?:)?//", text), f"{page} loads from the web"
    assert '<a href="04_pooling.slides.html">slides</a>' in (course / "index.html").read_text()
    copy = nbformat.read(student / "04_pooling.ipynb", as_version=4)
    code = "\n".join(c.source for c in copy.cells if c.cell_type == "code")
    assert "BEGIN SOLUTION" not in code and workspace.PLACEHOLDER in code
    with pytest.raises(SystemExit, match="no notebook matches"):
        build_course.main(["--only", "99", "--no-execute", "--out", str(tmp_path)])


# ------------------------------------------------------------------ widgets, decks, tags


def _png(text: dict[str, str]) -> str:
    """A tiny base64 PNG with the given text chunks."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="png", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


def _widget_notebook() -> nbformat.NotebookNode:
    """A cell whose output is a VBox holding an Output widget that showed a figure."""
    view = {"model_id": "box", "version_major": 2, "version_minor": 0}
    cell = nbformat.v4.new_code_cell("app")
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data", data={build_course.WIDGET_VIEW: view, "text/plain": "VBox()"}
        )
    ]
    figure = {"output_type": "display_data", "data": {"image/png": "iVBO"}, "metadata": {}}
    picture = {"path": ["value"], "encoding": "base64", "data": _png({"min_font_px": "18.1"})}
    state = {
        "box": {"state": {"children": ["IPY_MODEL_html", "IPY_MODEL_out", "IPY_MODEL_img"]}},
        "html": {"state": {"value": "12 ms"}},
        "out": {"state": {"outputs": [figure]}},
        "img": {
            "state": {"_model_name": "ImageModel", "format": "png", "tooltip": "Figure: dog."},
            "buffers": [picture],
        },
    }
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["widgets"] = {build_course.WIDGET_STATE: {"state": state}}
    return nb, picture


def test_static_widgets_show_what_the_widget_showed():
    nb, picture = _widget_notebook()
    assert build_course.static_widgets(nb) == 1
    outputs = nb.cells[0].outputs
    assert "JupyterLab" in outputs[0]["data"]["text/markdown"]
    assert outputs[1]["data"]["image/png"] == "iVBO" and len(outputs) == 3
    assert outputs[2]["data"]["image/png"] == picture["data"]
    assert outputs[2]["metadata"]["image/png"] == {"alt": "Figure: dog.", "min_font_px": 18.1}
    described = build_course._png_output(_png({"Description": "Figure: cat."}), "tooltip")
    assert described["metadata"]["image/png"] == {"alt": "Figure: cat."}  # the PNG's own words
    assert "widgets" not in nb.metadata
    assert all(build_course.WIDGET_VIEW not in o.get("data", {}) for o in outputs)


def test_deck_tags_every_cell_and_hides_long_code_only_on_slides():
    long_code = "\n".join(f"x{i} = {i}" for i in range(build_course.DECK_CODE_LINES + 1))
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# 01 · Title"),
            nbformat.v4.new_code_cell(long_code + "\nprint(x0)"),
            nbformat.v4.new_code_cell("print(1)"),
            nbformat.v4.new_code_cell("a = 1\nb = 2\nc = 3\nd = 4\nshow_maps(x, m);"),
        ]
    )
    deck = build_course.deck_notebook(nb)
    assert deck.cells[3].metadata["transient"] == {"remove_source": True}  # figure: 5 > 4
    assert all(tag_slides.slide_type(c) for c in deck.cells)
    assert deck.cells[1].metadata["transient"] == {"remove_source": True}
    assert "transient" not in deck.cells[2].metadata
    assert not any("slideshow" in c.metadata for c in nb.cells)  # the original is untouched


def _types(nb):
    return [tag_slides.slide_type(c) for c in nb.cells]


def test_tag_slides_follows_the_structure():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(
        cells=[
            md("# 07 · Title\n\nIntro."),
            code("import torch\n\nfrom x import (\n    a,\n    b,\n)\n_ = torch.manual_seed(0)"),
            md("## 1 · Section"),
            md("A short paragraph."),
            code("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION"),
            code("check_f(f)"),
            code("y = 1\nprint(y)"),
            code("show_maps(photo, maps);"),
            md("What the figure shows."),
            md("### Exercise · g"),
        ]
    )
    assert tag_slides.tag_notebook(nb) == 10
    assert _types(nb) == [
        "slide", "skip", "slide", "-", "notes", "notes", "-", "subslide", "subslide", "subslide",
    ]  # fmt: skip


def test_tag_slides_keeps_explicit_choices_and_is_idempotent():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[md("## A"), code("print(1)"), md("text")])
    nb.cells[1].metadata["slideshow"] = {"slide_type": "fragment"}
    assert tag_slides.tag_notebook(nb) == 2
    assert _types(nb) == ["slide", "fragment", "-"]
    before = nbformat.writes(nb)
    assert tag_slides.tag_notebook(nb) == 0 and nbformat.writes(nb) == before


def test_tag_slides_starts_a_new_slide_when_the_current_one_is_full():
    md = nbformat.v4.new_markdown_cell
    paragraph = "word " * (tag_slides.TEXT_CHARS // 5 * 6)  # about 6 lines
    nb = nbformat.v4.new_notebook(cells=[md("## A"), md(paragraph), md(paragraph), md(paragraph)])
    tag_slides.tag_notebook(nb)
    assert _types(nb) == ["slide", "-", "-", "subslide"]


def test_tag_slides_cli_checks_and_tags(tmp_path):
    path = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("## A")]), path)
    assert tag_slides.main(["--check", str(path)]) == 1
    assert tag_slides.main([str(path)]) == 0
    assert tag_slides.main(["--check", str(path)]) == 0


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("0[78]_*.ipynb")), ids=str)
def test_lecture_notebooks_have_slide_metadata_on_every_cell(path):
    """07 and 08 are tagged in the repository; run scripts/tag_slides.py on the others."""
    nb = nbformat.read(path, as_version=4)
    assert [i for i, c in enumerate(nb.cells) if not tag_slides.slide_type(c)] == []


def test_deck_cuts_a_long_markdown_cell_between_blocks():
    paragraph = "word " * (tag_slides.TEXT_CHARS // 5 * 7)  # about 7 lines
    long_cell = nbformat.v4.new_markdown_cell("## Summary\n\n" + "\n\n".join([paragraph] * 4))
    nb = nbformat.v4.new_notebook(cells=[long_cell])
    deck = build_course.deck_notebook(nb)
    assert len(deck.cells) > 1 and deck.cells[0].source.startswith("## Summary")
    assert [tag_slides.slide_type(c) for c in deck.cells[1:]] == ["subslide"] * (
        len(deck.cells) - 1
    )
    assert "\n\n".join(c.source for c in deck.cells) == long_cell.source  # nothing lost
    assert all(tag_slides.height(c) <= tag_slides.SLIDE_LINES for c in deck.cells)
