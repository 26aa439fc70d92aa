"""Hostile submissions against the sandboxed grader (attacks listed in tests/attacks.py).

Every attack, the committed fixtures in tests/fixtures/submissions/ and a few hygiene cases
(odd file names, a symlink, a FIFO, duplicate names) are graded in one batch of two workers;
the two that must run into the time limit get a second, short batch. The tests then read the
verdicts, the files around the batch and the processes left.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from attacks import ATTACKS, PRELUDE

from grading.batch import grade_many
from grading.sandbox import SANDBOX_UID_BASE, Limits, sandbox_problem

psutil = pytest.importorskip("psutil")
pytestmark = pytest.mark.skipif(
    sandbox_problem() is not None, reason=f"no sandbox here: {sandbox_problem()}"
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "submissions"
FULL = {
    "a2_grad_cam": {"q1": 1.0, "q2": 2.0, "q3": 1.0, "q4": 1.0, "q5": 1.0, "q6": 2.0, "q7": 2.0},
    "a1_guided_backprop": {"q1": 3.0, "q2": 3.0, "q3": 4.0},
}
#: committed fixtures (A2): name -> expectation, in the attacks' vocabulary
FIXTURE_EXPECT = {
    "a2_solution": "full",
    "a2_blank": "zero",
    "a2_kernel_crash": "status:crashed",  # ctypes.string_at(0): a segfault
    "a2_invalid_json": "status:invalid notebook",
    "a2_prints_megabytes": "full",  # 30 MB of print(): output volume must not matter
    "a2_rewrites_tests": "zero",  # otter-era attack: rewrites test files (none are visible)
    "a2_per_batch_norm": "only:q6",  # the original assignment's batch-wide min-max
    "a2_reexports_reference": "only:q6",
    "a2_patches_reference": "only:q6",  # per-batch answer + patching a reference module
}
SLOW = {"a2_infinite_loop": "status:timeout", "sleeps_past_deadline": "status:timeout"}


def _notebook(assignment: str, kind: str, releases: dict[str, Path]) -> dict:
    folder = "autograder" if kind == "solution" else "student"
    return json.loads((releases[assignment] / folder / f"{assignment}.ipynb").read_text())


def _digest(path: Path) -> str:
    if path.is_symlink() or not path.is_file():
        return f"{path.lstat().st_mode}:{os.readlink(path) if path.is_symlink() else ''}"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _digest(p) for p in sorted(folder.rglob("*"))}


def _our_sandbox_processes() -> list[int]:
    """Processes of this test's sandbox uids (as root), or children left by this process."""
    pids = [p.pid for p in psutil.Process().children(recursive=True)]
    if os.geteuid() == 0:
        low = SANDBOX_UID_BASE + (os.getpid() % 10_000) * 1000
        for proc in psutil.process_iter(["uids"]):
            if low <= proc.info["uids"].real < low + 1000:
                pids.append(proc.pid)
    return pids


@pytest.fixture(scope="session")
def batch(releases: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("attack-batch")
    subs, outside = root / "submissions", root / "outside"
    subs.mkdir()
    outside.mkdir()
    canary = outside / "canary.txt"
    canary.write_text("untouched")
    gradebook = outside / "gradebook.csv"
    slow_book = outside / "slow.csv"
    expect: dict[str, tuple[str, str]] = {}  # stem -> (assignment, expectation)
    for name, attack in ATTACKS.items():
        assignment, kind = attack.base.split(":")
        notebook = _notebook(assignment, kind, releases)
        code = PRELUDE + attack.code
        for key, value in {
            "{gradebook}": gradebook,
            "{canary}": canary,
            "{own}": subs / f"{name}.ipynb",
            "{other}": subs / "a2_solution.ipynb",
            "{package}": ROOT / "course_utils",
        }.items():
            code = code.replace(key, str(value))
        notebook["cells"].append(
            {
                "cell_type": "code",
                "metadata": {},
                "outputs": [],
                "execution_count": None,
                "source": code,
            }
        )
        (subs / f"{name}.ipynb").write_text(json.dumps(notebook))
        expect[name] = (assignment, SLOW.get(name, attack.expect))
    for name, expectation in {**FIXTURE_EXPECT, "a2_infinite_loop": ""}.items():
        shutil.copyfile(FIXTURES / f"{name}.ipynb", subs / f"{name}.ipynb")
        expect[name] = ("a2_grad_cam", SLOW.get(name, expectation))
    blank = FIXTURES / "a2_blank.ipynb"
    shutil.copyfile(blank, subs / "=HYPERLINK(1).ipynb")
    for folder in ("dup_a", "dup_b"):
        (subs / folder).mkdir()
        shutil.copyfile(blank, subs / folder / "same.ipynb")
    (subs / "passwd.ipynb").symlink_to("/etc/passwd")
    os.mkfifo(subs / "fifo.ipynb")
    slow = [subs / f"{n}.ipynb" for n in SLOW]
    a2 = [p for p in [*subs.glob("*.ipynb"), *subs.glob("dup_*/*.ipynb")] if p not in slow]
    a2 = [p for p in a2 if expect.get(p.stem, ("a2_grad_cam",))[0] == "a2_grad_cam"]
    a1 = [subs / f"{n}.ipynb" for n, (a, _) in expect.items() if a == "a1_guided_backprop"]
    before = _tree(subs)
    watched = {d: _tree(d) for d in (ROOT / "course_utils", ROOT / "grading", ROOT / "assignments")}
    secret = uuid.uuid4().hex
    private_tmp = root / "tmp"
    private_tmp.mkdir()
    start = time.monotonic()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADING_TEST_SECRET", secret)
        mp.setattr(tempfile, "tempdir", str(private_tmp))
        mp.chdir(subs)  # relative names in the gradebook: "=HYPERLINK(1).ipynb" starts a cell
        limits = Limits(timeout=150)
        a2 = [p.relative_to(subs) for p in a2]
        results = grade_many("a2_grad_cam", a2, gradebook, limits=limits, workers=2, progress=False)
        results += grade_many(
            "a1_guided_backprop", a1, outside / "a1.csv", limits=limits, workers=2, progress=False
        )
        results += grade_many(
            "a2_grad_cam", slow, slow_book, limits=Limits(timeout=15), workers=2, progress=False
        )
    print(f"attack batch: {len(results)} submissions in {time.monotonic() - start:.0f} s")
    written = gradebook.read_bytes()
    time.sleep(5)  # the escape attack's daemon would strike after 4 s
    return {
        "results": {Path(r.submission).name: r for r in results},
        "expect": expect,
        "rows": list(csv.DictReader(gradebook.open(encoding="utf-8"))),
        "gradebook": gradebook,
        "written": written,
        "before": before,
        "after": _tree(subs),
        "watched": watched,
        "canary": canary,
        "secret": secret,
        "tmp": private_tmp,
        "outside": outside,
        "left": _our_sandbox_processes(),
    }


def _expected_scores(assignment: str, expectation: str) -> tuple[str | None, dict[str, float]]:
    full = FULL[assignment]
    if expectation == "full":
        return "ok", full
    if expectation.startswith("only:"):
        return "ok", {**full, **dict.fromkeys(expectation[5:].split(","), 0.0)}
    if expectation.startswith("status:"):
        return expectation[7:], dict.fromkeys(full, 0.0)
    return None, dict.fromkeys(full, 0.0)  # "zero": any status, no points


@pytest.mark.parametrize("name", [*ATTACKS, *FIXTURE_EXPECT, "a2_infinite_loop"])
def test_each_submission_gets_its_verdict(batch: dict, name: str) -> None:
    assignment, expectation = batch["expect"][name]
    result = batch["results"][f"{name}.ipynb"]
    status, scores = _expected_scores(assignment, expectation)
    failing = {q: v.message for q, v in result.questions.items() if not v.passed}
    assert result.scores == scores, (result.status, result.detail, failing, result.log_tail[-800:])
    if status is not None:
        assert result.status == status, (result.detail, result.log_tail[-800:])


def test_submissions_are_byte_identical(batch: dict) -> None:
    assert batch["after"] == batch["before"]


def test_no_process_outlives_its_job(batch: dict) -> None:
    assert batch["left"] == []


def test_nothing_outside_the_job_changes(batch: dict) -> None:
    assert batch["canary"].read_text() == "untouched"
    assert batch["gradebook"].read_bytes() == batch["written"], "rewritten after the batch"
    for folder, tree in batch["watched"].items():
        assert _tree(folder) == tree, f"{folder} changed"
    planted = [p for p in batch["outside"].rglob("*") if p.name in ("planted.txt", "fill")]
    assert planted == []
    assert list(batch["tmp"].iterdir()) == [], "temporary folders left behind"


def test_secrets_stay_with_the_grader(batch: dict) -> None:
    log = batch["results"]["exfiltrates_secrets.ipynb"].log_tail
    assert "FILES" in log and "ENV" in log, "the probe ran"
    assert "/grading/lib/grading/worker.py" in log, "the probe sees what it may see"
    for secret in (
        batch["secret"],  # the grader's environment
        "grading/assignments",  # the hidden tests
        "compare.py",  # the scoring
        "gradebook",  # the batch's outputs
        "a2_blank.ipynb",  # other submissions
        "pytest",  # the batch's command line
        "upsample.py",  # the reference
    ):
        assert secret not in log


def test_hygiene_of_odd_files(batch: dict) -> None:
    results = batch["results"]
    assert results["passwd.ipynb"].status == "invalid notebook"
    assert results["fifo.ipynb"].status == "invalid notebook"
    text = batch["gradebook"].read_text(encoding="utf-8")
    assert "root:" not in text
    row = next(r for r in batch["rows"] if "HYPERLINK" in r["submission"])
    assert row["submission"].startswith("'"), "a formula-like cell is escaped"
    assert all(not r["detail"].startswith(("=", "+", "-", "@")) for r in batch["rows"])
    json_names = sorted(p.name for p in batch["outside"].glob("gradebook_results/same*.json"))
    assert len(json_names) == 2, json_names


def test_feedback_names_the_mistake_without_hidden_values(batch: dict) -> None:
    feedback = (batch["outside"] / "gradebook_feedback" / "a2_per_batch_norm.md").read_text()
    assert "q6**: failed" in feedback
    assert "per-batch normalisation" in feedback  # MISTAKES["per_batch_norm"].name
    assert "q5**: passed" in feedback
    assert "element" not in feedback and "expected" not in feedback
