"""The rendered course in a real browser, with the network off: what a lecturer sees in a hall.

One ``make course`` build (a session fixture; set ``COURSE_BUILD=build`` to check an existing
build instead) is opened page by page and deck by deck in headless Chromium (Debian's
``chromium``, driven by Playwright; ``make test`` installs it when missing). The browser is
offline and every request that is not to a local file is refused and recorded. Screenshots
of a few slides are written to ``build/screenshots/`` for a reviewer to look at.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "build" / "screenshots"
SLIDE_W, SLIDE_H = 1280, 720
MIN_FIGURE_TEXT_PX = 14
MACHINE_PATH = re.compile(r"(/work/|/root/|/home/|/tmp/|site-packages|[A-Z]:\\\\Users)")
RAW_MATH = re.compile(r"\$\$|(?<![\w$])\$[^$\s][^$\n]*?\\[a-zA-Z]+[^$\n]*\$")
PLACEHOLDER_ALT = "No description has been provided for this image"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (make test installs it)"
)


def _load_build_course():
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(
        "build_course", ROOT / "scripts" / "build_course.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_course"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built course folder (``build/course``), built once for the session."""
    existing = os.environ.get("COURSE_BUILD")
    if existing:
        return Path(existing).resolve() / "course"
    out = tmp_path_factory.mktemp("build")
    assert _load_build_course().main(["--out", str(out)]) == 0, "make course failed"
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(p.stem for p in _pages(out / "course", slides=False)) == notebooks
    return out / "course"


class Visit:
    """One page opened offline, with every refused request and console error recorded.

    Requests are allowed to the URL schemes and prefixes in ``allowed`` only; any other is
    refused and recorded (``offline=False`` only to reach a local server among them). Console
    errors and warnings are recorded unless their text contains one of :attr:`IGNORED`.
    """

    LOCAL = ("file:", "data:", "blob:", "about:")
    IGNORED: tuple[str, ...] = ("[Violation]",)

    def __init__(
        self, browser, url: str, allowed: tuple[str, ...] = LOCAL, offline: bool = True
    ) -> None:
        self.allowed = allowed
        self.context = browser.new_context(
            offline=offline, viewport={"width": SLIDE_W, "height": SLIDE_H}
        )
        self.problems: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))
        self.page.on(
            "requestfailed", lambda r: self.problems.append(f"failed request: {r.url} {r.failure}")
        )
        self.page.goto(url)

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith(self.allowed):
            route.continue_()
        else:
            self.problems.append(f"network request: {url}")
            route.abort()

    def _console(self, message) -> None:
        if message.type in ("error", "warning") and not any(
            ignored in message.text for ignored in self.IGNORED
        ):
            self.problems.append(f"console {message.type}: {message.text[:300]}")

    def close(self) -> None:
        self.context.close()


def _pages(course: Path, slides: bool) -> list[Path]:
    found = sorted(course.glob("[0-9][0-9]_*.slides.html" if slides else "[0-9][0-9]_*.html"))
    return [p for p in found if slides or not p.name.endswith(".slides.html")]


def _images(page) -> list[dict]:
    return page.eval_on_selector_all(
        "img",
        """imgs => imgs.map(i => ({src: i.currentSrc.slice(0, 60), alt: i.getAttribute('alt'),
            ok: i.complete && i.naturalWidth > 0, scale: parseFloat(i.dataset.scale || 'NaN'),
            font: parseFloat(i.dataset.minFontPx || 'NaN'), visible: i.offsetWidth > 0}))""",
    )


def _check_math(page, html: str) -> list[str]:
    page.wait_for_selector("body[data-mathjax=done]", state="attached", timeout=30_000)
    texts = page.eval_on_selector_all(
        ".jp-RenderedMarkdown",
        """els => els.map(e => { const c = e.cloneNode(true);
            c.querySelectorAll('code, pre, script').forEach(x => x.remove());
            return c.textContent; })""",
    )
    raw = [m.group(0)[:40] for text in texts for m in [RAW_MATH.search(text)] if m]
    typeset = page.locator(".MathJax_CHTML, .MathJax_Display, mjx-container").count()
    body = html[html.find("<main") :]  # the notebook's cells, not the head's scripts and CSS
    markdown = re.findall(
        r'<div class="jp-RenderedHTMLCommon jp-RenderedMarkdown[^>]*>(.*?)</div>', body, re.S
    )
    expects_math = any(RAW_MATH.search(text) or "$$" in text for text in markdown)
    problems = [f"math not typeset: {r!r}" for r in raw]
    if expects_math and not typeset:
        problems.append("the page has math but MathJax typeset nothing")
    return problems


def test_every_page_works_offline(course: Path, browser) -> None:
    pages = _pages(course, slides=False)
    linked = set(re.findall(r'href="([^"]+)"', (course / "index.html").read_text(encoding="utf-8")))
    assert linked == {p.name for p in _pages(course, True) + pages}, "index and pages differ"
    failures = {}
    for path in [course / "index.html", *pages]:
        html = path.read_text(encoding="utf-8")
        visit = Visit(browser, path.as_uri())
        problems = []
        if path.name != "index.html":
            problems += _check_math(visit.page, html)
        for image in _images(visit.page):
            if not image["ok"]:
                problems.append(f"image did not load: {image['src']}")
            if not image["alt"] or image["alt"] == PLACEHOLDER_ALT:
                problems.append(f"image without alt text: {image['src']}")
        problems += visit.problems
        visit.close()
        if problems:
            failures[path.name] = problems
    _fail_with(failures)


def _fail_with(failures: dict[str, list[str]]) -> None:
    """Fail listing every problem of every page (an assert's repr would be truncated)."""
    if failures:
        pytest.fail(
            "\n".join(f"{name}:\n  " + "\n  ".join(problems) for name, problems in failures.items())
        )


def test_no_machine_path_in_any_page(course: Path) -> None:
    found = {}
    for path in sorted(course.glob("*.html")):
        text = re.sub(
            r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+", "", path.read_text(encoding="utf-8")
        )
        hits = sorted({m.group(0) for m in MACHINE_PATH.finditer(text)})
        if hits:
            found[path.name] = hits
    assert not found, found


def _slides(page) -> list[dict]:
    """Visit every slide; measure it after reveal.js and the figure fitting have laid it out."""
    return page.evaluate(
        """async () => {
        const out = [];
        for (const slide of Reveal.getSlides()) {
            const {h, v} = Reveal.getIndices(slide);
            Reveal.slide(h, v);
            await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
            const imgs = [...slide.querySelectorAll('.jp-RenderedImage img')];
            out.push({h, v, height: slide.scrollHeight, width: slide.scrollWidth,
                      heading: (slide.querySelector('h1,h2,h3') || {}).textContent || '',
                      figures: imgs.map(i => ({scale: parseFloat(i.dataset.scale),
                                               font: parseFloat(i.dataset.minFontPx),
                                               alt: i.alt.slice(0, 70)}))});
        }
        return out;
    }"""
    )


NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SMALL_TEXT_ELSEWHERE: dict[str, str] = {}
"""Notebooks whose own plotting code sets figure text too small for a projector (explicit
``fontsize=`` below 11 pt, or figures far wider than a slide): not this test's to fix, so
their check is an expected failure that names the figures; remove an entry once fixed."""


@pytest.fixture(scope="session")
def decks(course: Path, browser) -> dict[str, dict[str, list[str]]]:
    """Visit every deck once: ``{stem: {"problems": [...], "small_text": [...]}}``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    results = {}
    for path in _pages(course, slides=True):
        visit = Visit(browser, path.as_uri())
        page = visit.page
        page.wait_for_selector("body[data-reveal=ready]", state="attached", timeout=30_000)
        problems = _check_math(page, path.read_text(encoding="utf-8"))
        if not page.evaluate("Reveal.isReady()"):
            problems.append("reveal.js is not initialised")
        slides = _slides(page)
        if len(slides) < 3:
            problems.append(f"only {len(slides)} slides: reveal.js did not cut the deck")
        small_text = []
        for s in slides:
            where = f"slide {s['h']}.{s['v']} ({s['heading'][:40]!r})"
            if s["height"] > SLIDE_H + 1 or s["width"] > SLIDE_W + 1:
                problems.append(f"{where} overflows: {s['width']}x{s['height']}")
            for figure in s["figures"]:
                shown = figure["scale"] * figure["font"]
                if not shown >= MIN_FIGURE_TEXT_PX:  # also catches a figure without the size
                    small_text.append(
                        f"{where}: figure text {shown:.1f} px < {MIN_FIGURE_TEXT_PX}"
                        f" ({figure['alt']!r})"
                    )
        for image in _images(page):
            if not image["ok"] or not image["alt"] or image["alt"] == PLACEHOLDER_ALT:
                problems.append(f"image not loaded or without alt text: {image['src']}")
        _screenshots(page, path, slides)
        visit.close()
        results[path.name.removesuffix(".slides.html")] = {
            "problems": problems + visit.problems,
            "small_text": small_text,
        }
    return results


def test_every_deck_works_offline_and_fits_a_projector(course: Path, decks) -> None:
    pages = [p.name.removesuffix(".html") for p in _pages(course, slides=False)]
    assert sorted(decks) == sorted(pages), "every page needs its deck"
    _fail_with({stem: r["problems"] for stem, r in decks.items() if r["problems"]})


@pytest.mark.parametrize(
    "stem",
    [
        pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=SMALL_TEXT_ELSEWHERE[s]))
        if s in SMALL_TEXT_ELSEWHERE
        else s
        for s in NOTEBOOKS
    ],
)
def test_deck_figure_text_is_at_least_14_px(decks, stem: str) -> None:
    """Every figure's smallest text, at the scale the deck shows it, is at least 14 px."""
    if stem not in decks:
        pytest.skip(f"{stem} is not in this build")
    _fail_with({stem: decks[stem]["small_text"]} if decks[stem]["small_text"] else {})


def _screenshots(page, path: Path, slides: list[dict]) -> None:
    """The title slide and the first slide with a figure, of each deck."""
    stem = path.name.removesuffix(".slides.html")
    chosen = {"title": slides[0]}
    with_figure = [s for s in slides if s["figures"]]
    if with_figure:
        chosen["figure"] = with_figure[0]
    for name, s in chosen.items():
        page.evaluate(f"Reveal.slide({s['h']}, {s['v']})")
        page.wait_for_timeout(100)
        page.screenshot(path=str(SCREENSHOTS / f"{stem}-{name}.png"))
