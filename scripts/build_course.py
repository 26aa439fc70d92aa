"""Build the rendered course (``make course``): executed HTML pages, slide decks, student copies.

Writes, from ``notebooks/NN_*.ipynb``:

* ``build/course/NN_name.html`` -- each notebook executed top to bottom, as a web page;
* ``build/course/NN_name.slides.html`` -- a reveal.js deck of each notebook for a 1280x720
  projector; cells without a ``metadata.slideshow.slide_type`` are tagged on the fly by
  ``scripts/tag_slides.py``'s rules (the notebook files are not changed);
* ``build/course/assets/`` -- MathJax and reveal.js (pinned copies in ``third_party/``): the
  pages and decks load nothing from the network;
* ``build/course/index.html`` -- the course map: title, one-line description and links;
* ``build/student/NN_name.ipynb`` -- the notebooks with every ``### BEGIN SOLUTION`` ...
  ``### END SOLUTION`` block replaced by ``raise NotImplementedError  # your code here`` and all
  outputs cleared, for handing out.

Usage::

    .venv/bin/python scripts/build_course.py                 # everything
    .venv/bin/python scripts/build_course.py --only 05 07    # some notebooks (by number prefix)
    .venv/bin/python scripts/build_course.py --no-execute    # render as committed (no outputs)

A notebook that fails to execute is still rendered (with its error) and marked in the index;
the script then exits with status 1, so ``make course`` fails loudly.

Widgets cannot run without a kernel, so a widget output (the explorer of 08) is replaced by
what it showed when the notebook ran -- its output area's figure -- with a note that it is
interactive in JupyterLab. Figures are drawn with lecture-size text and carry alt text and
their smallest text size (:data:`KERNEL_START`).
"""

from __future__ import annotations

import argparse
import base64
import copy
import html
import io
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter, SlidesExporter
from nbconvert.preprocessors import ExecutePreprocessor
from nbformat.v4 import new_markdown_cell
from PIL import Image as PILImage
from tag_slides import SLIDE_LINES, draws_figure, height, slide_type, tag_notebook
from traitlets.config import Config

from course_utils.workspace import student_notebook

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "templates"
ASSETS = "assets"  # folder next to the pages, and its URL relative to them
THIRD_PARTY = ROOT / "third_party"  # pinned copies with their licences (see its README)
DECK_CODE_LINES = 16
"""A code cell longer than this shows only its output on a slide (the page shows all)."""
DECK_FIGURE_CODE_LINES = 4
"""The same for a cell that draws a figure: the figure needs the slide's height."""
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
KERNEL_START = [
    "import matplotlib as _mpl, course_utils.viz as _viz",
    "_mpl.rcParams.update(_viz.LECTURE_RC); _viz.register_figure_metadata()",
    "del _mpl, _viz",
]
"""Run by the building kernel before the first cell: lecture-size figure text
(:data:`course_utils.viz.LECTURE_RC`), alt text and text size on every figure."""


# ----------------------------------------------------------------------------------------------
# Course pages
# ----------------------------------------------------------------------------------------------


@dataclass
class Page:
    """What the index needs to know about one built notebook."""

    stem: str
    title: str
    description: str
    seconds: float
    error: str | None = None


def title_and_description(nb: nbformat.NotebookNode) -> tuple[str, str]:
    r"""The notebook's name and one-line description, from its ``# title`` cell.

    The course's titles read ``# NN · Name: what it is about``; the part after the first
    colon is the description. A title without a colon keeps its whole text as the name, and
    the first sentence of the cell's first paragraph describes it.

    Example:
        >>> cell = nbformat.v4.new_markdown_cell
        >>> title_and_description(nbformat.v4.new_notebook(cells=[cell(
        ...     "# 05 · Upsampling: from a 7x7 map to the photo\n\nMore text.")]))
        ('05 · Upsampling', 'from a 7x7 map to the photo')
        >>> title_and_description(nbformat.v4.new_notebook(cells=[cell(
        ...     "# 09 · Metrics\n\nWe measure *how well* it works. More.\n\n## Goals")]))
        ('09 · Metrics', 'We measure *how well* it works.')
    """
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        lines = cell.source.strip().splitlines()
        if not lines or not lines[0].startswith("# "):
            continue
        title = lines[0][2:].strip()
        name, colon, subtitle = title.partition(":")
        if colon and subtitle.strip():
            return name.strip(), subtitle.strip()
        paragraph: list[str] = []
        for line in lines[1:]:
            if line.strip() and not line.lstrip().startswith("#"):
                paragraph.append(line.strip())
            elif paragraph:
                break
        text = " ".join(paragraph)
        first = re.match(r".+?[.!?](?=\s|$)", text)
        return title, first.group(0) if first else text
    return "", ""


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int) -> str | None:
    """Run ``nb`` in place; return ``None``, or the error text of the failing cell.

    The kernel talks over local sockets (IPC) in a temporary folder rather than TCP ports (no
    "running over TCP without encryption" warning), and runs :data:`KERNEL_START` first.
    """
    with tempfile.TemporaryDirectory(prefix="course-kernel-") as sockets:
        config = Config({"KernelManager": {"transport": "ipc", "ip": f"{sockets}/kernel"}})
        runner = ExecutePreprocessor(
            timeout=timeout,
            kernel_name="python3",
            store_widget_state=True,
            extra_arguments=[f"--IPKernelApp.exec_lines={KERNEL_START!r}"],
            config=config,
        )
        try:
            runner.preprocess(nb, {"metadata": {"path": str(cwd)}})
        except CellExecutionError as err:
            return str(err).strip().splitlines()[-1]
    return None


def _widget_outputs(model_id: str, state: dict) -> list[dict]:
    """What a widget and its children show, as outputs: ``Output`` contents, ``Image`` PNGs.

    An ``Image`` widget's bytes are stored as a base64 buffer; the PNG's ``Description`` (the
    explorer writes :func:`course_utils.viz.describe_figure` there), else the widget's
    ``tooltip``, becomes the picture's alt text.
    """
    widget = state.get(model_id, {})
    model = widget.get("state", {})
    outputs = list(model.get("outputs", []))
    if model.get("_model_name") == "ImageModel" and model.get("format") == "png":
        for buffer in widget.get("buffers", []):
            if buffer.get("path") == ["value"] and buffer.get("encoding") == "base64":
                outputs.append(_png_output(buffer["data"], model.get("tooltip")))
    for child in model.get("children", []):
        outputs += _widget_outputs(str(child).removeprefix("IPY_MODEL_"), state)
    return outputs


def _png_output(data: str, alt: str | None) -> nbformat.NotebookNode:
    """A PNG display output; alt text and text size from the PNG's own text chunks if any.

    The explorer writes ``Description`` (alt text) and ``min_font_px`` into its PNGs
    (:meth:`course_utils.explorer.ExplanationFigure.png`).
    """
    metadata: dict[str, object] = {"alt": alt or "the widget's picture"}
    with PILImage.open(io.BytesIO(base64.b64decode(data))) as picture:
        chunks = getattr(picture, "text", {})
    if chunks.get("Description"):
        metadata["alt"] = chunks["Description"]
    if chunks.get("min_font_px"):
        metadata["min_font_px"] = float(chunks["min_font_px"])
    return nbformat.v4.new_output(
        "display_data", data={"image/png": data}, metadata={"image/png": metadata}
    )


def static_widgets(nb: nbformat.NotebookNode) -> int:
    """Replace each widget output by what it showed when it ran; return how many.

    A static page has no kernel, so a live widget would be an empty box (and needs a widget
    renderer from the network). Its output areas' contents -- the explorer's figure -- are
    kept, after a line saying where the app is interactive. The notebook's widget state is
    then dropped.
    """
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    replaced = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                outputs.append(output)
                continue
            note = nbformat.v4.new_output(
                "display_data",
                data={
                    "text/markdown": "*Interactive in JupyterLab (`make lab`); "
                    "below, the view it showed when this page was built.*"
                },
            )
            shown = [nbformat.from_dict(o) for o in _widget_outputs(view["model_id"], state)]
            outputs += [note, *shown]
            replaced += 1
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return replaced


def deck_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of the executed ``nb`` for slides: every cell tagged, long code inputs hidden.

    Cells without a slide type get one from :func:`tag_slides.tag_notebook`. A code cell of
    more than :data:`DECK_CODE_LINES` lines (:data:`DECK_FIGURE_CODE_LINES` if it draws a
    figure) would crowd its output off the slide, so the deck shows its output only
    (``transient.remove_source``); the page shows everything.
    """
    nb = copy.deepcopy(nb)
    tag_notebook(nb)
    nb.cells = [part for cell in nb.cells for part in _split_markdown(cell)]
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        limit = DECK_FIGURE_CODE_LINES if draws_figure(cell.source) else DECK_CODE_LINES
        if len(cell.source.splitlines()) > limit:
            cell.metadata["transient"] = {"remove_source": True}
    return nb


def _split_markdown(cell: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """A markdown cell too long for one slide, cut at blank lines into slide-sized parts.

    The first part keeps the cell's slide type; the others continue it on subslides. A block
    (paragraph, list, table) is never cut, so a single block longer than a slide stays whole.
    """
    if cell.cell_type != "markdown" or slide_type(cell) in ("skip", "notes"):
        return [cell]
    parts: list[str] = []
    for block in re.split(r"\n\s*\n", cell.source):
        if parts and height(new_markdown_cell(parts[-1] + "\n\n" + block)) <= SLIDE_LINES:
            parts[-1] += "\n\n" + block
        else:
            parts.append(block)
    if len(parts) == 1:
        return [cell]
    first = copy.deepcopy(cell)
    first.source = parts[0]
    rest = [
        new_markdown_cell(part, metadata={"slideshow": {"slide_type": "subslide"}})
        for part in parts[1:]
    ]
    return [first, *rest]


def copy_assets(course: Path) -> None:
    """Put MathJax and reveal.js in ``course/assets`` (replacing what was there)."""
    assets = course / ASSETS
    for name in ("mathjax", "reveal.js"):
        shutil.rmtree(assets / name, ignore_errors=True)
        shutil.copytree(THIRD_PARTY / name, assets / name)


def _exporter(kind: type[HTMLExporter], template: str) -> HTMLExporter:
    return kind(
        extra_template_basedirs=[str(TEMPLATES)],
        extra_template_paths=[str(TEMPLATES)],
        template_name=template,
    )


def build_page(
    path: Path, nb: nbformat.NotebookNode, course: Path, *, run: bool, timeout: int
) -> Page:
    """Execute ``nb`` (read from ``path``) in place and write its page and slide deck."""
    title, description = title_and_description(nb)
    start = time.perf_counter()
    error = execute(nb, path.parent, timeout) if run else None
    seconds = time.perf_counter() - start
    static_widgets(nb)

    resources = {"course_assets": ASSETS}
    body, _ = _exporter(HTMLExporter, "course_page").from_notebook_node(nb, resources)
    (course / f"{path.stem}.html").write_text(body, encoding="utf-8")
    deck, _ = _exporter(SlidesExporter, "course_slides").from_notebook_node(
        deck_notebook(nb), resources
    )
    (course / f"{path.stem}.slides.html").write_text(deck, encoding="utf-8")
    return Page(path.stem, title or path.stem, description, seconds, error)


def inline_markdown(text: str) -> str:
    """Escape ``text`` for HTML and render the inline markdown a description may hold.

    Example:
        >>> inline_markdown("the *guided* rule on `x < 0` & **ReLU6**")
        'the <em>guided</em> rule on <code>x &lt; 0</code> &amp; <strong>ReLU6</strong>'
    """
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def index_html(pages: list[Page]) -> str:
    """The course map: one row per notebook with its description and links."""
    rows = []
    for page in pages:
        links = [
            f'<a href="{page.stem}.html">page</a>',
            f'<a href="{page.stem}.slides.html">slides</a>',
        ]
        status = (
            f'<span class="error">failed: {html.escape(page.error)}</span>' if page.error else ""
        )
        rows.append(
            "<tr>"
            f'<td><a href="{page.stem}.html">{html.escape(page.title)}</a></td>'
            f"<td>{inline_markdown(page.description)} {status}</td>"
            f"<td>{' · '.join(links)}</td>"
            "</tr>"
        )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Guided backprop and Grad-CAM, step by step</title>
<style>
  body {{ font-family: system-ui, sans-serif; max-width: 62rem; margin: 2rem auto;
         padding: 0 1rem; line-height: 1.5; }}
  table {{ border-collapse: collapse; width: 100%; }}
  td {{ border-top: 1px solid #ddd; padding: 0.5rem; vertical-align: top; }}
  td:first-child {{ white-space: nowrap; font-weight: 600; }}
  .error {{ color: #b00020; font-weight: 600; }}
</style>
</head>
<body>
<h1>Guided backprop and Grad-CAM, step by step</h1>
<p>Each page is a notebook of the course, executed. Slides open as reveal.js decks
(arrow keys to move, <kbd>S</kbd> for speaker notes). To run the code yourself:
<code>make lab</code>.</p>
<table>
{chr(10).join(rows)}
</table>
</body>
</html>
"""


def select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    if not only:
        return notebooks
    chosen = [p for p in notebooks if any(p.name.startswith(prefix) for prefix in only)]
    if not chosen:
        raise SystemExit(f"no notebook matches {only}; have {[p.name for p in notebooks]}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    parser.add_argument("--out", type=Path, default=ROOT / "build")
    parser.add_argument("--only", nargs="+", help="notebook name prefixes, e.g. 05 07")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    parser.add_argument("--no-execute", action="store_true", help="render without running")
    args = parser.parse_args(argv)

    notebooks = select(sorted(args.notebooks.glob("[0-9][0-9]_*.ipynb")), args.only)
    course, student = args.out / "course", args.out / "student"
    course.mkdir(parents=True, exist_ok=True)
    student.mkdir(parents=True, exist_ok=True)
    copy_assets(course)

    pages = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        nbformat.write(student_notebook(nb), student / path.name)
        page = build_page(path, nb, course, run=not args.no_execute, timeout=args.timeout)
        state = f"FAILED ({page.error})" if page.error else "ok"
        print(f"{path.name:32s} {page.seconds:6.1f} s  {state}", flush=True)
        pages.append(page)
    (course / "index.html").write_text(index_html(pages), encoding="utf-8")
    print(f"wrote {course / 'index.html'} and {len(pages)} student notebook(s) in {student}")
    return 1 if any(page.error for page in pages) else 0


if __name__ == "__main__":
    sys.exit(main())
