"""Grade a batch of submissions: one sandbox each, verdicts computed here.

``python -m grading --assignment a2_grad_cam submissions/a2/ --out grades/a2.csv``

Each submission ends with one status:

====================  ==============================================================
``ok``                graded; the scores are the hidden tests' verdicts
``timeout``           still running after ``--timeout`` seconds; killed, scored 0
``crashed``           the worker died (segfault, ``os._exit``, memory, CPU time) or
                      broke the protocol; scored 0
``invalid notebook``  not a regular file, not a readable notebook, or a notebook of
                      another assignment; scored 0 (never executed)
``changed``           the submission file changed while it was graded; scored 0
====================  ==============================================================

Only this process writes outputs, each atomically (temporary file + :func:`os.replace`):
the CSV gradebook (spreadsheet formulas escaped), one JSON per submission (scores, reason,
SHA-256, log tail) and one Markdown feedback file per submission for the student (each
question's result and, for a failed hidden test, the mistake named by
``course_utils.checks.MISTAKES`` — never the hidden inputs).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grading.assignments import Context, callback, questions
from grading.compare import Failure
from grading.protocol import ProtocolError
from grading.sandbox import Limits, Sandbox, SandboxUnavailable, StudentFailure, sandbox_problem

STATUSES = ("ok", "timeout", "crashed", "invalid notebook", "changed")
#: Largest notebook accepted, in bytes.
MAX_NOTEBOOK_BYTES = 20 << 20
#: Characters that make a spreadsheet read a cell as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class QuestionResult:
    """One question's verdict: points, the first failing test and its mistake key."""

    points: float
    passed: bool = False
    test: str = ""
    message: str = ""
    mistake: str = ""


@dataclass
class SubmissionResult:
    """The verdict on one submission, as written to the gradebook and its JSON file."""

    submission: str
    status: str
    scores: dict[str, float] = field(default_factory=dict)
    total: float = 0.0
    possible: float = 0.0
    seconds: float = 0.0
    sha256: str = ""
    detail: str = ""
    log_tail: str = ""
    questions: dict[str, QuestionResult] = field(default_factory=dict)
    cell_errors: list[str] = field(default_factory=list)


def sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_notebook(path: Path, assignment: str) -> tuple[dict[str, Any] | None, str]:
    """The notebook as JSON, or ``None`` and why it is refused (never follows a link)."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        return None, f"cannot stat: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return None, "not a regular file (link, folder or device): refused without reading"
    if info.st_size > MAX_NOTEBOOK_BYTES:
        return None, f"larger than {MAX_NOTEBOOK_BYTES >> 20} MB"
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_NOTEBOOK_BYTES + 1)
    try:
        notebook = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"not JSON ({type(exc).__name__})"
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        return None, "no list of cells"
    if notebook.get("nbformat") != 4:
        return None, "not an nbformat 4 notebook"
    otter = notebook.get("metadata", {}).get("otter", {})
    name = otter.get("assignment_name") if isinstance(otter, dict) else None
    if name is not None and name != assignment:
        return None, f"a notebook of assignment {str(name)[:40]!r}, not {assignment}"
    return notebook, ""


def _grade_questions(ctx: Context, result: SubmissionResult, assignment: str) -> None:
    for name, question in questions(assignment).items():
        verdict = QuestionResult(points=0.0)
        for test in question.tests:
            verdict.test = test.__name__
            try:
                test(ctx)
            except Failure as failure:
                verdict.message, verdict.mistake = str(failure)[:500], failure.mistake
                break
            except StudentFailure as failure:
                verdict.message, verdict.mistake = str(failure)[:500], "crashed"
                break
        else:
            verdict.passed, verdict.points, verdict.test = True, float(question.points), ""
        result.questions[name] = verdict


def grade_one(
    submission: Path, assignment: str, limits: Limits, *, isolate: bool = True
) -> SubmissionResult:
    """Grade one submission in its own sandbox; never raises for the submission's sake."""
    start = time.monotonic()
    result = SubmissionResult(submission=str(submission), status="crashed")
    result.possible = sum(q.points for q in questions(assignment).values())
    with tempfile.TemporaryDirectory(prefix="grading-") as tmp:
        work = Path(tmp)
        notebook, reason = _read_notebook(submission, assignment)
        if notebook is None:
            result.status, result.detail = "invalid notebook", reason
        else:
            result.sha256 = sha256(submission)
            copy = work / "submission.ipynb"
            shutil.copyfile(submission, copy, follow_symlinks=False)
            if sha256(copy) != result.sha256:
                result.status, result.detail = "changed", "the file changed while copied"
            else:
                _run(copy, notebook, assignment, limits, isolate, result)
            if sha256(submission) != result.sha256:
                result.status, result.detail = "changed", "the file changed during grading"
    if result.status != "ok":
        result.questions = {}
    result.scores = {
        name: result.questions[name].points if name in result.questions else 0.0
        for name in questions(assignment)
    }
    result.total = round(sum(result.scores.values()), 6)
    result.seconds = round(time.monotonic() - start, 2)
    return result


def _run(
    copy: Path,
    notebook: dict[str, Any],
    assignment: str,
    limits: Limits,
    isolate: bool,
    result: SubmissionResult,
) -> None:
    from grading.worker import code_cells

    sandbox = Sandbox(copy, assignment, copy.parent, limits, isolate=isolate)
    try:
        with sandbox:
            result.cell_errors = sandbox.ready()
            ctx = Context(sandbox, code_cells(notebook), callback(assignment))
            _grade_questions(ctx, result, assignment)
        result.status = "ok"
    except TimeoutError:
        result.status = "timeout"
        result.detail = f"still running after {limits.timeout:g} s; sandbox killed"
    except (ProtocolError, OSError) as exc:
        code = sandbox.returncode
        cause = "" if code is None else f" (exit status {code})"
        result.detail = f"the worker died or broke the protocol{cause}: {exc}"[:500]
    result.log_tail = sandbox.log_tail


def escape_cell(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: formula-like starts get a leading ``'``."""
    return f"'{value}" if value.startswith(FORMULA_START) else value


def write_gradebook(
    path: Path, results: Sequence[SubmissionResult], question_names: Sequence[str]
) -> None:
    """Write the CSV gradebook atomically, one row per submission in the given order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["submission", *question_names, "total", "possible", "status", "detail"])
    for r in results:
        writer.writerow(
            [
                escape_cell(r.submission),
                *(f"{r.scores.get(q, 0.0):g}" for q in question_names),
                f"{r.total:g}",
                f"{r.possible:g}",
                r.status,
                escape_cell(r.detail.replace("\n", " ")[:300]),
            ]
        )
    _write_atomic(path, buffer.getvalue())


def feedback(result: SubmissionResult, assignment: str) -> str:
    """The student's feedback, in Markdown.

    Each question's result and, if a hidden test failed, the mistake it points to (named and
    explained by ``course_utils.checks.MISTAKES``); never a hidden input or value.
    """
    from course_utils.checks import MISTAKES

    lines = [f"# Feedback: {assignment}", ""]
    lines.append(f"Status: {result.status}. Score: {result.total:g} / {result.possible:g}.")
    if result.status != "ok":
        lines += ["", f"Your notebook was not graded to the end: {result.status}."]
        if result.status == "timeout":
            lines.append("It ran past the time limit: look for an endless loop or slow code.")
        elif result.status == "crashed":
            lines.append("The Python process running it died (crash, memory or CPU limit).")
        elif result.status == "invalid notebook":
            lines.append(f"The file could not be used: {result.detail}.")
    for name, verdict in result.questions.items():
        lines.append("")
        if verdict.passed:
            lines.append(f"- **{name}**: passed ({verdict.points:g} points)")
            continue
        lines.append(f"- **{name}**: failed (0 points), in the hidden test `{verdict.test}`")
        mistake = MISTAKES.get(verdict.mistake)
        if mistake is not None:
            lines.append(f"  - likely mistake: {mistake.name}")
            lines.append(f"  - hint: {mistake.hint}")
    if result.cell_errors:
        lines += ["", "Cells that raised an error when your notebook was run from the top:"]
        lines += [f"- {error.splitlines()[0][:200]}" for error in result.cell_errors[:10]]
    return "\n".join(lines) + "\n"


def _file_names(submissions: Sequence[Path]) -> list[str]:
    """A safe, unique file stem per submission (odd characters replaced, duplicates hashed)."""
    names, seen = [], set()
    for path in submissions:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", path.stem).lstrip(".") or "submission"
        if name in seen or name != path.stem:
            name = f"{name}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        seen.add(name)
        names.append(name)
    return names


def collect(submissions: Sequence[str | Path]) -> list[Path]:
    """Notebooks named or found (``*.ipynb``, not following links) in the given folders."""
    paths: list[Path] = []
    for item in map(Path, submissions):
        if item.is_dir() and not item.is_symlink():
            paths += sorted(p for p in item.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            paths.append(item)
    return paths


def grade_many(
    assignment: str,
    submissions: Sequence[str | Path],
    out: str | Path,
    *,
    limits: Limits | None = None,
    workers: int = 1,
    isolate: bool = True,
    progress: bool = True,
) -> list[SubmissionResult]:
    """Grade every submission; write the gradebook, JSON and feedback files.

    Args:
        assignment: ``a1_guided_backprop`` or ``a2_grad_cam``.
        submissions: notebooks or folders searched for them.
        out: CSV gradebook path; ``<stem>_results/`` and ``<stem>_feedback/`` go beside it.
        limits: per-submission resource limits (:class:`grading.sandbox.Limits`).
        workers: submissions graded at the same time.
        isolate: ``False`` grades without a sandbox (``--unsafe-no-sandbox``): student code
            then runs as the instructor's user, with only resource limits.
        progress: show a progress bar on stderr.

    Raises:
        SandboxUnavailable: no sandbox can be made here and ``isolate`` is true.
    """
    from tqdm.auto import tqdm

    limits = limits or Limits()
    names = list(questions(assignment))
    paths = collect(submissions)
    if not paths:
        raise ValueError("no submissions given")
    if limits.timeout <= 0 or workers < 1:
        raise ValueError("timeout must be > 0 and workers >= 1")
    if isolate and (problem := sandbox_problem()):
        raise SandboxUnavailable(
            f"{problem}. Refusing to run student code without a sandbox; pass "
            "--unsafe-no-sandbox to do it anyway (see assignments/README.md)."
        )
    out = Path(out)
    json_dir, feedback_dir = (out.with_name(f"{out.stem}_{k}") for k in ("results", "feedback"))
    stems = _file_names(paths)
    results: list[SubmissionResult | None] = [None] * len(paths)
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(paths), desc="grading", unit="nb", disable=not progress) as bar,
    ):
        futures = {
            pool.submit(grade_one, path, assignment, limits, isolate=isolate): i
            for i, path in enumerate(paths)
        }
        for future in as_completed(futures):
            i = futures[future]
            result = future.result()
            results[i] = result
            data = {k: v for k, v in vars(result).items() if k != "questions"}
            data["questions"] = {q: vars(v) for q, v in result.questions.items()}
            _write_atomic(json_dir / f"{stems[i]}.json", json.dumps(data, indent=2))
            _write_atomic(feedback_dir / f"{stems[i]}.md", feedback(result, assignment))
            write_gradebook(out, [r for r in results if r is not None], names)
            bar.set_postfix_str(f"{paths[i].name[:30]}: {result.status}")
            bar.update()
    return [r for r in results if r is not None]
