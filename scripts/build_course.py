"""Build the rendered course (``make course``): executed HTML pages, slide decks, student copies.

Writes, from ``notebooks/NN_*.ipynb``:

* ``build/course/NN_name.html`` -- each notebook executed top to bottom, as a web page;
* ``build/course/NN_name.slides.html`` -- a reveal.js deck for each notebook whose cells carry
  ``metadata.slideshow.slide_type`` tags (reveal.js is loaded from a CDN by the browser; the
  build itself downloads nothing);
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
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter, SlidesExporter
from nbconvert.preprocessors import ExecutePreprocessor

from course_utils.workspace import PLACEHOLDER, strip_solutions, student_notebook  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
REVEAL_CDN = "https://cdn.jsdelivr.net/npm/reveal.js@4.6.1"


# ----------------------------------------------------------------------------------------------
# Course pages
# ----------------------------------------------------------------------------------------------


@dataclass
class Page:
    """What the index needs to know about one built notebook."""

    stem: str
    title: str
    description: str
    has_slides: bool
    seconds: float
    error: str | None = None


def title_and_description(nb: nbformat.NotebookNode) -> tuple[str, str]:
    """The notebook's name and one-line description, from its ``# title`` cell.

    The course's titles read ``# NN · Name: what it is about``; the part after the first
    colon is the description. A title without a colon keeps its whole text as the name, and
    the first sentence of the cell's first paragraph describes it.

    Example:
        >>> cell = nbformat.v4.new_markdown_cell
        >>> title_and_description(nbformat.v4.new_notebook(cells=[cell(
        ...     "# 05 · Upsampling: from a 7×7 map to the photo\\n\\nMore text.")]))
        ('05 · Upsampling', 'from a 7×7 map to the photo')
        >>> title_and_description(nbformat.v4.new_notebook(cells=[cell(
        ...     "# 09 · Metrics\\n\\nWe measure *how well* it works. More.\\n\\n## Goals")]))
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


def has_slide_tags(nb: nbformat.NotebookNode) -> bool:
    return any(cell.metadata.get("slideshow", {}).get("slide_type") for cell in nb.cells)


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int) -> str | None:
    """Run ``nb`` in place; return ``None``, or the error text of the failing cell."""
    runner = ExecutePreprocessor(timeout=timeout, kernel_name="python3", store_widget_state=True)
    try:
        runner.preprocess(nb, {"metadata": {"path": str(cwd)}})
    except CellExecutionError as err:
        return str(err).strip().splitlines()[-1]
    return None


def build_page(
    path: Path, nb: nbformat.NotebookNode, course: Path, *, run: bool, timeout: int
) -> Page:
    """Execute ``nb`` (read from ``path``) in place and write its page and slide deck."""
    title, description = title_and_description(nb)
    start = time.perf_counter()
    error = execute(nb, path.parent, timeout) if run else None
    seconds = time.perf_counter() - start

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    (course / f"{path.stem}.html").write_text(body, encoding="utf-8")
    slides = has_slide_tags(nb)
    if slides:
        exporter = SlidesExporter(reveal_url_prefix=REVEAL_CDN, reveal_scroll=True)
        deck, _ = exporter.from_notebook_node(nb)
        (course / f"{path.stem}.slides.html").write_text(deck, encoding="utf-8")
    return Page(path.stem, title or path.stem, description, slides, seconds, error)


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
        links = [f'<a href="{page.stem}.html">page</a>']
        if page.has_slides:
            links.append(f'<a href="{page.stem}.slides.html">slides</a>')
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
