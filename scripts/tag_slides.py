"""Tag every cell of the course notebooks for slides, from each notebook's structure.

``metadata.slideshow.slide_type`` decides what reveal.js (``make course``) and RISE show:
``"slide"`` starts a slide, ``"subslide"`` a slide below it, ``"-"`` continues the current one,
``"notes"`` goes to the speaker notes, ``"skip"`` is left out. This script fills it in for the
cells that have none, so a notebook reads as a page and presents as a deck without anyone
tagging cells by hand; a type someone chose is never changed, so running it again changes
nothing.

The rules, in order (a slide holds about :data:`SLIDE_LINES` lines of 24 px text):

* a ``#`` or ``##`` heading starts a slide, a ``###`` heading a subslide;
* setup code (only imports, seeds and a ``torch.manual_seed``) is skipped;
* an exercise's solution (``### BEGIN SOLUTION``) and its ``check_*`` call go to the notes:
  the lecture shows the task, the speaker sees the answer;
* code that defines helpers without showing anything goes to the notes when it is long;
* code that draws a figure starts a subslide, and so does the cell after it: a figure gets
  the slide's room;
* any other cell continues the slide while the estimate fits, else starts a subslide.

Usage::

    .venv/bin/python scripts/tag_slides.py notebooks/*.ipynb          # tag, write back
    .venv/bin/python scripts/tag_slides.py --check notebooks/*.ipynb  # exit 1 if any is untagged
"""

from __future__ import annotations

import argparse
import ast
import math
import re
import sys
from pathlib import Path

import nbformat

SLIDE_LINES = 19
"""Lines of 24 px text (32 px apart) that fit in a 1280x720 slide's 672 px of content."""
TEXT_CHARS = 88  # characters of 24 px body text per line across 1208 px
CODE_CHARS = 105  # characters of 18 px code per line
CODE_LINE = 0.75  # an 18 px code line is 3/4 of a text line
LONG_DEFINITIONS = 12  # code lines beyond which a cell that only defines goes to the notes

_FIGURE = re.compile(r"(\bshow_\w+\(|\bplt\.|\.imshow\(|\bplot_\w+\(|jet_comparison\(|\bfig\b)")


def slide_type(cell: nbformat.NotebookNode) -> str | None:
    """The cell's slide type, or ``None`` when it has none."""
    return cell.metadata.get("slideshow", {}).get("slide_type") or None


def _text_lines(source: str) -> float:
    """Estimated height of a markdown cell, in 24 px lines."""
    lines = 0.0
    paragraph = ""
    for raw in [*source.splitlines(), ""]:
        line = raw.strip()
        starts_block = bool(re.match(r"([-*+]|\d+\.|#{1,6}|\||\$\$)", line))
        if (not line or starts_block) and paragraph:
            lines += math.ceil(len(paragraph) / TEXT_CHARS) + 0.3
            paragraph = ""
        if line.startswith("#"):
            lines += 1.6
        elif line.startswith("$$") or line.startswith("|"):
            lines += 1.2
        elif line:
            paragraph = f"{paragraph} {line}".strip()
    return lines


def _code_lines(source: str) -> float:
    """Estimated height of a code cell's input, in 24 px lines (long lines wrap)."""
    rows = sum(max(1, math.ceil(len(line) / CODE_CHARS)) for line in source.splitlines())
    return rows * CODE_LINE + 0.5


def _output_lines(source: str) -> float:
    """A guess at a code cell's printed output (the notebooks are committed without it)."""
    prints = source.count("print(") + source.count("print_table(") * 4
    in_loop = re.search(r"^\s*for .*:\n(\s+.*\n)*?\s+print\(", source + "\n", re.MULTILINE)
    return prints * CODE_LINE + (3 if in_loop else 0)


def draws_figure(source: str) -> bool:
    """Whether a code cell draws a figure (its last statement ends with ``;`` or plots)."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
    return code.rstrip().endswith(";") or bool(_FIGURE.search(code))


def _statements(source: str) -> list[ast.stmt] | None:
    """The cell's top-level statements; ``None`` when it is not plain Python (magics)."""
    try:
        return ast.parse(source).body
    except SyntaxError:
        return None


def _is_setup(source: str) -> bool:
    """Only imports and seeding: nothing to show on a slide."""
    body = _statements(source)
    return bool(body) and all(
        isinstance(node, (ast.Import, ast.ImportFrom)) or "manual_seed" in ast.unparse(node)
        for node in body or []
    )


def _only_defines(source: str) -> bool:
    """Only definitions (functions, classes, constants, imports): nothing is printed or drawn."""
    body = _statements(source)
    kinds = (ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign, ast.Import, ast.ImportFrom)
    return bool(body) and not draws_figure(source) and all(isinstance(n, kinds) for n in body or [])


def height(cell: nbformat.NotebookNode) -> float:
    """Estimated height of a shown cell, in 24 px lines; a figure takes a whole slide."""
    if cell.cell_type == "markdown":
        return _text_lines(cell.source)
    if draws_figure(cell.source):
        return SLIDE_LINES
    return _code_lines(cell.source) + _output_lines(cell.source)


def choose(cell: nbformat.NotebookNode, used: float, after_figure: bool) -> str:
    """The slide type for one untagged cell.

    Args:
        cell: the cell.
        used: estimated lines already on the current slide.
        after_figure: the previous shown cell drew a figure.
    """
    source = cell.source
    if cell.cell_type == "markdown":
        first = source.lstrip().split("\n", 1)[0]
        if first.startswith(("# ", "## ")):
            return "slide"
        if first.startswith("### ") or after_figure or used + height(cell) > SLIDE_LINES:
            return "subslide"
        return "-"
    if cell.cell_type != "code" or not source.strip() or _is_setup(source):
        return "skip"
    if "### BEGIN SOLUTION" in source or re.search(r"^\s*check_\w+\(", source, re.MULTILINE):
        return "notes"
    if _only_defines(source) and _code_lines(source) > LONG_DEFINITIONS * CODE_LINE:
        return "notes"
    if draws_figure(source) or after_figure or used + height(cell) > SLIDE_LINES:
        return "subslide"
    return "-"


def tag_notebook(nb: nbformat.NotebookNode) -> int:
    """Fill in the slide type of every cell that has none; return how many were filled.

    Cells that already have a type keep it and still count for the running estimate of the
    current slide's height.
    """
    used, after_figure, changed = 0.0, False, 0
    for cell in nb.cells:
        current = slide_type(cell)
        if current is None:
            current = choose(cell, used, after_figure)
            slideshow = dict(cell.metadata.get("slideshow", {}), slide_type=current)
            cell.metadata["slideshow"] = nbformat.from_dict(slideshow)
            changed += 1
        if current in ("notes", "skip"):
            continue
        used = height(cell) + (used if current in ("-", "fragment") else 0.0)
        after_figure = cell.cell_type == "code" and draws_figure(cell.source)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="only report untagged cells")
    args = parser.parse_args(argv)
    missing = 0
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        changed = tag_notebook(nb)
        if args.check:
            missing += changed
            if changed:
                print(f"{path}: {changed} cell(s) without a slide type")
        elif changed:
            nbformat.write(nb, path)
            print(f"{path}: tagged {changed} cell(s)")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
