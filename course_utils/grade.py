"""Batch grading of otter-grader submissions that one bad notebook cannot hang or fool.

``otter run`` grades one notebook with no time or memory limit: a ``while True`` in a
submission stops a whole batch. This command grades each submission in its own process group,
with a wall-clock limit and an address-space limit, and keeps going whatever happens::

    python -m course_utils.grade --autograder dist/assignments/a2_grad_cam/autograder/\
a2_grad_cam-autograder.zip submissions/*.ipynb --out gradebook.csv --workers 2

Each submission ends with one status:

==================  ==============================================================
``ok``              graded; the scores are otter's
``timeout``         still running after ``--timeout`` seconds; killed, scored 0
``crashed``         the grading process or kernel died (segfault, ``os._exit``,
                    out of memory) or otter failed; scored 0
``invalid notebook``  not a readable notebook (bad JSON, wrong assignment); scored 0
``tampered``        :class:`IntegrityGuard` saw grading files or course_utils change,
                    or grader internals named in the code; scored 0, for review
==================  ==============================================================

Outputs, each written atomically (temporary file + :func:`os.replace`): the CSV gradebook
(one row per submission, one column per question, ``total``, ``possible``, ``status``) and
one JSON per submission in ``--json-dir`` with the scores, the reason and the last lines of
the grading log. Submissions are copied before grading and never opened for writing.

:class:`IntegrityGuard` is an otter plugin, listed in the master notebooks' ``plugins``, so it
also runs when the autograder zip is used elsewhere (Gradescope, ``otter run``). It works
outside the kernel, in otter's runner process.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tokenize
import uuid
import zipfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "IntegrityGuard",
    "SubmissionResult",
    "grade_many",
    "main",
    "read_questions",
    "write_gradebook",
]

STATUSES = ("ok", "timeout", "crashed", "invalid notebook", "tampered")
PLUGIN_NAME = "course_utils.grade.IntegrityGuard"
JOB_ENV = "COURSE_GRADE_JOB"
LOG_TAIL_BYTES = 20_000

try:  # the plugin base class comes with the `instructor` extra (otter-grader)
    from otter.plugins import AbstractOtterPlugin
except ImportError:  # pragma: no cover - grading needs otter; the CLI says so
    AbstractOtterPlugin = object  # type: ignore[assignment,misc]


# --------------------------------------------------------------------------------------------
# Tamper detection inside otter's runner process
# --------------------------------------------------------------------------------------------

#: Names a submission has no reason to use: otter's result machinery and the grading helpers.
SUSPICIOUS_NAMES = frozenset(
    {"Checker", "GradingResults", "IntegrityGuard", "grading_support", "__grading_tripwire__"}
)
#: String fragments that point at grading files.
SUSPICIOUS_STRINGS = ("grading_support", "tests/", "tests\\", "otter_config", "results.pkl")
#: The course_utils modules the hidden tests take their reference values from.
REFERENCE_MODULES = (
    "__init__",
    "_validation",
    "relu",
    "scores",
    "hooks",
    "pooling",
    "upsample",
    "guided",
    "cam",
    "models",
    "data",
)
#: Written by the hidden tests' helper (assignments/grading_support.py) when a course_utils
#: function was replaced in memory; such a submission is flagged like one that edits files.
TAMPER_MARKER = "[course_utils altered in memory]"
_OTTER_ATTRIBUTE = re.compile(r"\botter\s*\.\s*(\w+)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fingerprints(paths: Iterable[Path]) -> dict[str, tuple[str, int, int]]:
    """SHA-256, inode and ctime of each file among ``paths``, by path."""
    return {
        str(p): (_sha256(p), p.stat().st_ino, p.stat().st_ctime_ns)
        for p in sorted(paths)
        if p.is_file()
    }


def scan_code(sources: Iterable[str]) -> list[str]:
    """Reasons to suspect code cells of reaching for the grader (empty list: nothing seen).

    Looks at tokens, so comments and Markdown do not count; ``otter.Notebook`` (the grader
    object every student notebook creates) is fine, any other ``otter.<name>`` is not.

    Example:
        >>> scan_code(['grader = otter.Notebook("a1.ipynb")'])
        []
        >>> scan_code(['from otter.execute import Checker'])
        ['uses the name Checker']
    """
    reasons: list[str] = []
    for source in sources:
        code = "\n".join(
            line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        try:
            tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
        except (tokenize.TokenError, SyntaxError, IndentationError):
            tokens = []
        for tok in tokens:
            if tok.type == tokenize.NAME and tok.string in SUSPICIOUS_NAMES:
                reasons.append(f"uses the name {tok.string}")
            elif tok.type == tokenize.STRING and any(s in tok.string for s in SUSPICIOUS_STRINGS):
                reasons.append(f"mentions a grading file in {tok.string[:60]}")
        for match in _OTTER_ATTRIBUTE.finditer(code):
            if match.group(1) != "Notebook":
                reasons.append(f"uses otter.{match.group(1)}")
    return sorted(set(reasons))


class IntegrityGuard(AbstractOtterPlugin):
    """otter plugin: zero the score of a submission that touched the grading files.

    Before the kernel starts it records the SHA-256, inode and ctime of every test file and
    every support file shipped in the autograder (``grading_support.py``), the SHA-256 of the
    course_utils sources the reference comes from (:data:`REFERENCE_MODULES`), and scans the
    code cells (:func:`scan_code`). After grading it compares: a file rewritten and then
    restored still has a new ctime, which a normal user cannot set back. It also checks that
    every test file produced a result, and reads the test messages for the hidden tests' report
    of a course_utils function replaced in memory. On any finding the scores become 0 and the
    reasons are stored as plugin data (``tampered``/``reasons``) for the batch grader and shown
    as the submission's output.

    In-kernel tricks that leave no file behind (monkeypatching torch or otter in memory) are
    out of its reach; :mod:`grading_support` checks for the common ones inside the kernel, and
    only process isolation (a container per submission) rules them out.
    """

    @staticmethod
    def _snapshot() -> dict[str, tuple[Any, ...]]:
        """Grading files by content, inode and ctime; course_utils' sources by content.

        A grading file lives only as long as this run, so any new ctime is the submission's
        doing. course_utils is the instructor's install: only a change of content counts.
        """
        import course_utils

        grading = [
            p
            for p in Path.cwd().rglob("*")
            if p.suffix != ".ipynb" and "__pycache__" not in p.parts
        ]
        root = Path(course_utils.__file__).resolve().parent
        package = [root / f"{name}.py" for name in REFERENCE_MODULES]
        return {**_fingerprints(grading), **{k: v[:1] for k, v in _fingerprints(package).items()}}

    def before_execution(self, submission: Any) -> Any:
        cells = getattr(submission, "cells", [])
        sources = [c.get("source", "") for c in cells if c.get("cell_type") == "code"]
        self._state = {
            "before": self._snapshot(),
            "tests": sorted(p.stem for p in Path("tests").glob("*.py")),
            "reasons": scan_code(sources),
        }
        return submission

    def after_grading(self, results: Any) -> None:
        state = getattr(self, "_state", None)
        if state is None:
            reasons = ["the integrity snapshot was not taken before execution"]
        else:
            reasons = list(state["reasons"])
            after = self._snapshot()
            for path, print_before in state["before"].items():
                print_after = after.get(path)
                if print_after is None:
                    reasons.append(f"{Path(path).name} was deleted")
                elif print_after != print_before:
                    reasons.append(f"{Path(path).name} was modified during grading")
            for path in sorted(after.keys() - state["before"].keys()):
                if Path(path).parent.name == "tests":
                    reasons.append(f"{Path(path).name} appeared in tests/")
            missing = set(state["tests"]) - set(results.results)
            reasons += [f"no result for test file {name}" for name in sorted(missing)]
            for name, test_file in sorted(results.results.items()):
                for case in getattr(test_file, "test_case_results", []):
                    if TAMPER_MARKER in str(getattr(case, "message", "")):
                        reasons.append(f"{name}: course_utils was altered in memory")
                        break
        if reasons:
            for name in results.results:
                results.update_score(name, 0)
            results.set_output("Submission flagged for review: " + "; ".join(reasons))
        results.set_plugin_data(PLUGIN_NAME, {"tampered": bool(reasons), "reasons": reasons})


# --------------------------------------------------------------------------------------------
# One submission, in a child process
# --------------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then :func:`os.replace` it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json_atomic(path: Path, data: Any) -> None:
    _write_atomic(path, json.dumps(data, indent=2, sort_keys=True))


def _verdict(submission: str, autograder: str) -> dict[str, Any]:
    """Validate the notebook and run otter on it: ``status``, ``detail`` and ``scores``."""
    import nbformat

    try:
        nbformat.validate(nbformat.read(submission, as_version=4))
    except Exception as exc:  # any unreadable notebook is the student's, not the grader's
        return {"status": "invalid notebook", "detail": f"{type(exc).__name__}: {exc}"}
    from otter.run import main as otter_run
    from otter.run.run_autograder.utils import OtterRuntimeError

    try:
        results = otter_run(submission, autograder=autograder, output_dir=None, no_logo=True)
    except OtterRuntimeError as exc:
        status = "invalid notebook" if "assignment" in str(exc) else "crashed"
        return {"status": status, "detail": str(exc)}
    if results.catastrophic_error is not None:
        return {"status": "crashed", "detail": f"otter: {results.catastrophic_error!r}"}
    scores = {name: float(results.get_score(name)) for name in results.results}
    guard = results.get_plugin_data(PLUGIN_NAME)
    if guard is None:
        return {"status": "ok", "scores": scores, "detail": "IntegrityGuard plugin not configured"}
    if guard["tampered"]:
        return {"status": "tampered", "scores": scores, "detail": "; ".join(guard["reasons"])}
    return {"status": "ok", "scores": scores, "detail": ""}


def _grade_one_in_child(submission: str, autograder: str, out: str) -> int:
    """Body of the child process: write :func:`_verdict`'s answer, or ``crashed``, to ``out``."""
    try:
        verdict = _verdict(submission, autograder)
    except Exception as exc:
        verdict = {"status": "crashed", "detail": f"{type(exc).__name__}: {exc}"[:2000]}
    _write_json_atomic(Path(out), {"scores": {}, **verdict})
    return 0


# --------------------------------------------------------------------------------------------
# The batch, in the parent process
# --------------------------------------------------------------------------------------------


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


def read_questions(autograder: str | Path) -> dict[str, float]:
    """Question names and their points, read from the autograder zip's ``tests/*.py``."""
    questions: dict[str, float] = {}
    with zipfile.ZipFile(autograder) as zf:
        for name in zf.namelist():
            if re.fullmatch(r"tests/[^/]+\.py", name):
                text = zf.read(name).decode("utf-8")
                match = re.search(r"^points\s*=\s*([0-9.]+)", text, flags=re.MULTILINE)
                questions[Path(name).stem] = float(match.group(1)) if match else 0.0
    if not questions:
        raise ValueError(f"{autograder} holds no tests/*.py: is it an otter autograder zip?")
    return dict(sorted(questions.items(), key=lambda kv: _natural(kv[0])))


def _natural(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _child_setup(memory_mb: int | None) -> Callable[[], None]:
    def preexec() -> None:
        os.setsid()  # own process group: a timeout kills the child and what it started
        if memory_mb:
            limit = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return preexec


def _kill_job(proc: subprocess.Popen[bytes], job: str) -> None:
    """Kill the child's process group, its descendants and anything still carrying ``job``.

    Jupyter starts kernels in a session of their own, so the process group is not enough;
    the job id in the environment also finds a process that daemonised itself.
    """
    import psutil

    victims: list[psutil.Process] = []
    try:
        parent = psutil.Process(proc.pid)
        victims = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        pass
    for candidate in psutil.process_iter(["pid"]):
        try:
            if candidate.environ().get(JOB_ENV) == job:
                victims.append(candidate)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()
    psutil.wait_procs(victims, timeout=5)
    proc.wait()


def grade_one(
    submission: Path,
    autograder: Path,
    questions: dict[str, float],
    *,
    timeout: float,
    memory_mb: int | None,
) -> SubmissionResult:
    """Grade one submission in a fresh process group; never raises for the submission's sake."""
    start = time.monotonic()
    result = SubmissionResult(
        submission=str(submission), status="crashed", possible=sum(questions.values())
    )
    try:
        result.sha256 = _sha256(submission)
    except OSError as exc:
        result.status, result.detail = "invalid notebook", f"cannot read: {exc}"
        return result
    job = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="course-grade-") as tmp:
        work = Path(tmp)
        copy = work / "submission" / submission.name
        copy.parent.mkdir()
        shutil.copyfile(submission, copy)
        verdict_path, log_path = work / "verdict.json", work / "grading.log"
        env = {**os.environ, JOB_ENV: job, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "course_utils.grade",
                    "--child",
                    str(copy),
                    "--autograder",
                    str(autograder),
                    "--verdict",
                    str(verdict_path),
                ],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_child_setup(memory_mb),
            )
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_job(proc, job)
        with log_path.open("rb") as log:
            log.seek(max(0, log_path.stat().st_size - LOG_TAIL_BYTES))
            result.log_tail = log.read().decode("utf-8", errors="replace")
        if timed_out:
            result.status = "timeout"
            result.detail = f"still running after {timeout:g} s; process group killed"
        elif verdict_path.is_file():
            verdict = json.loads(verdict_path.read_text(encoding="utf-8"))
            result.status, result.detail = verdict["status"], verdict["detail"]
            if result.status == "ok":
                result.scores = {q: float(verdict["scores"].get(q, 0.0)) for q in questions}
        else:
            code = proc.returncode
            cause = f"signal {-code}" if code < 0 else f"exit code {code}"
            result.detail = f"the grading process died ({cause}) before giving a verdict"
    result.scores = {q: result.scores.get(q, 0.0) for q in questions}
    result.total = round(sum(result.scores.values()), 6)
    result.seconds = round(time.monotonic() - start, 2)
    return result


def write_gradebook(
    path: Path, results: Sequence[SubmissionResult], questions: dict[str, float]
) -> None:
    """Write the CSV gradebook atomically, one row per submission in the given order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["submission", *questions, "total", "possible", "status", "detail"])
    for r in results:
        writer.writerow(
            [
                r.submission,
                *(f"{r.scores.get(q, 0.0):g}" for q in questions),
                f"{r.total:g}",
                f"{r.possible:g}",
                r.status,
                r.detail.replace("\n", " ")[:300],
            ]
        )
    _write_atomic(path, buffer.getvalue())


def _json_names(submissions: Sequence[Path]) -> list[str]:
    names, seen = [], set()
    for path in submissions:
        name = path.stem
        if name in seen:
            name = f"{path.stem}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        seen.add(name)
        names.append(f"{name}.json")
    return names


def grade_many(
    autograder: str | Path,
    submissions: Sequence[str | Path],
    out: str | Path,
    *,
    json_dir: str | Path | None = None,
    timeout: float = 300.0,
    memory_mb: int | None = 8192,
    workers: int = 1,
    progress: bool = True,
) -> list[SubmissionResult]:
    """Grade every submission and write the gradebook and the per-submission JSON files.

    Args:
        autograder: the otter autograder zip made by ``make assignments``.
        submissions: notebooks (``.ipynb``) or folders searched for them.
        out: CSV gradebook path.
        json_dir: where ``<submission>.json`` files go; default ``<out stem>_results/`` next
            to the gradebook.
        timeout: wall-clock seconds per submission before its processes are killed.
        memory_mb: address-space limit per submission (``RLIMIT_AS``); ``None`` for none.
        workers: submissions graded at the same time.
        progress: show a tqdm progress bar on stderr.

    Returns:
        The results, in the order of ``submissions`` (after expanding folders).
    """
    from tqdm.auto import tqdm

    autograder = Path(autograder).resolve()
    questions = read_questions(autograder)
    out = Path(out)
    json_dir = Path(json_dir) if json_dir else out.with_name(f"{out.stem}_results")
    paths: list[Path] = []
    for item in map(Path, submissions):
        paths += sorted(item.rglob("*.ipynb")) if item.is_dir() else [item]
    if not paths:
        raise ValueError("no submissions given")
    if timeout <= 0 or workers < 1:
        raise ValueError("timeout must be > 0 and workers >= 1")
    names = _json_names(paths)
    results: list[SubmissionResult | None] = [None] * len(paths)
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(paths), desc="grading", unit="nb", disable=not progress) as bar,
    ):
        futures = {
            pool.submit(
                grade_one, p.resolve(), autograder, questions, timeout=timeout, memory_mb=memory_mb
            ): i
            for i, p in enumerate(paths)
        }
        for future in as_completed(futures):
            i = futures[future]
            result = future.result()
            result.submission = str(paths[i])
            results[i] = result
            _write_json_atomic(json_dir / names[i], vars(result))
            write_gradebook(out, [r for r in results if r is not None], questions)
            bar.set_postfix_str(f"{paths[i].name}: {result.status}")
            bar.update()
    return [r for r in results if r is not None]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m course_utils.grade",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("submissions", nargs="+", help="notebooks or folders of notebooks")
    parser.add_argument("--autograder", required=True, help="otter autograder zip")
    parser.add_argument("--out", help="CSV gradebook to write")
    parser.add_argument("--json-dir", help="folder for per-submission JSON")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per submission")
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=8192,
        help="address-space limit per submission in MiB (0: none)",
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel submissions")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--verdict", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _grade_one_in_child(args.submissions[0], args.autograder, args.verdict)
    if not args.out:
        parser.error("--out is required")
    results = grade_many(
        args.autograder,
        args.submissions,
        args.out,
        json_dir=args.json_dir,
        timeout=args.timeout,
        memory_mb=args.memory_mb or None,
        workers=args.workers,
        progress=not args.no_progress,
    )
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
