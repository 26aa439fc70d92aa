"""The batch grader against hostile submissions (tests/fixtures/submissions/).

The A2 autograder is built once per session with ``otter assign`` (assignments/build.py), then
the fixtures are graded in one parallel batch — otter's per-submission cost (kernel start,
imports) dominates, so a single batch keeps the file to a few minutes on two cores. The
infinite loop is graded in a second, short-timeout batch.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import runpy
import uuid
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("otter", reason="grading needs the instructor extra (otter-grader)")
psutil = pytest.importorskip("psutil")

from course_utils.grade import (  # noqa: E402
    JOB_ENV,
    TAMPER_MARKER,
    SubmissionResult,
    grade_many,
    read_questions,
    scan_code,
    write_gradebook,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "submissions"
FULL = {"q1": 1.0, "q2": 2.0, "q3": 1.0, "q4": 1.0, "q5": 1.0, "q6": 2.0, "q7": 2.0}
ZERO = dict.fromkeys(FULL, 0.0)

#: fixture -> (status, scores per question). Each hostile case is explained where it is used.
EXPECTED = {
    "a2_solution": ("ok", FULL),
    "a2_blank": ("ok", ZERO),
    # a segfault (ctypes.string_at(0)) kills the kernel mid-notebook
    "a2_kernel_crash": ("crashed", ZERO),
    # half a notebook: not JSON
    "a2_invalid_json": ("invalid notebook", ZERO),
    # the solution plus 30 MB of print(): output volume must not matter
    "a2_prints_megabytes": ("ok", FULL),
    # rewrites tests/*.py to always pass and grading_support.py to a stub: IntegrityGuard
    "a2_rewrites_tests": ("tampered", ZERO),
    # the seed assignment's batch-wide min-max: loses exactly Q6 (Q7 uses stand-ins)
    "a2_per_batch_norm": ("ok", {**FULL, "q6": 0.0}),
    # Q6 is `return course_utils.normalize_per_image(maps)`: the tripwire fails Q6 only
    "a2_reexports_reference": ("ok", {**FULL, "q6": 0.0}),
    # per-batch mistake plus `course_utils.upsample.normalize_per_image = mine`: the hidden
    # tests see a reference that is no longer genuine, and IntegrityGuard flags the submission
    "a2_patches_reference": ("tampered", ZERO),
}


def _load_build():
    spec = importlib.util.spec_from_file_location(
        "assignments_build", ROOT / "assignments" / "build.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def a2_autograder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh A2 release + autograder zip (the release is checked for leaks on the way)."""
    build = _load_build()
    (master,) = build.masters(["a2_grad_cam"])
    return build.build(master, tmp_path_factory.mktemp("dist"), check=False)


def _digests() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in FIXTURES.iterdir()}


@pytest.fixture
def run_marker(monkeypatch: pytest.MonkeyPatch) -> str:
    """An environment variable that this test's grading processes (and only they) inherit."""
    marker = uuid.uuid4().hex
    monkeypatch.setenv("COURSE_GRADE_TEST_RUN", marker)
    return marker


def _leftover_jobs(marker: str) -> list[int]:
    """Grading processes of this test still alive (other test runs may grade meanwhile)."""
    pids = []
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
            if JOB_ENV in env and env.get("COURSE_GRADE_TEST_RUN") == marker:
                pids.append(proc.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
            continue
    return pids


@pytest.fixture(scope="session")
def batch(a2_autograder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every fixture but the infinite loop, graded in one batch of two workers."""
    out = tmp_path_factory.mktemp("grading") / "gradebook.csv"
    submissions = [FIXTURES / f"{name}.ipynb" for name in EXPECTED]
    before = _digests()
    results = grade_many(a2_autograder, submissions, out, timeout=240, workers=2, progress=False)
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    return {"results": results, "rows": rows, "out": out, "before": before, "after": _digests()}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_fixture_gets_its_expected_grade(batch: dict, name: str) -> None:
    status, scores = EXPECTED[name]
    (row,) = [r for r in batch["rows"] if Path(r["submission"]).stem == name]
    got = {q: float(row[q]) for q in FULL}
    assert (row["status"], got) == (status, scores), row["detail"]
    assert float(row["total"]) == sum(scores.values())
    assert float(row["possible"]) == sum(FULL.values())


def test_gradebook_and_json_agree(batch: dict) -> None:
    rows = batch["rows"]
    assert [Path(r["submission"]).stem for r in rows] == list(EXPECTED), "input order kept"
    assert list(rows[0]) == ["submission", *FULL, "total", "possible", "status", "detail"]
    json_dir = batch["out"].with_name("gradebook_results")
    for row in rows:
        data = json.loads((json_dir / f"{Path(row['submission']).stem}.json").read_text())
        assert data["status"] == row["status"]
        assert data["total"] == float(row["total"])
        assert data["sha256"] == batch["before"][Path(row["submission"]).name]
    leftovers = [p for p in batch["out"].parent.rglob("*.tmp")]
    assert not leftovers, f"atomic writes left temporary files: {leftovers}"


def test_tampering_is_explained(batch: dict) -> None:
    rows = {Path(r["submission"]).stem: r["detail"] for r in batch["rows"]}
    assert "q1.py was modified" in rows["a2_rewrites_tests"]
    assert "grading_support.py was modified" in rows["a2_rewrites_tests"]
    assert "q6: course_utils was altered in memory" in rows["a2_patches_reference"]


def test_submissions_are_never_modified(batch: dict) -> None:
    assert batch["after"] == batch["before"]


def test_infinite_loop_times_out_and_the_batch_goes_on(
    a2_autograder: Path, tmp_path: Path, run_marker: str
) -> None:
    before = _digests()
    loop, invalid = FIXTURES / "a2_infinite_loop.ipynb", FIXTURES / "a2_invalid_json.ipynb"
    results = grade_many(
        a2_autograder, [loop, invalid], tmp_path / "gb.csv", timeout=25, workers=1, progress=False
    )
    assert [(r.status, r.total) for r in results] == [("timeout", 0.0), ("invalid notebook", 0.0)]
    assert results[0].seconds < 60, "the loop must be killed at the time limit"
    assert not _leftover_jobs(run_marker), "no kernel or grading process may outlive its job"
    assert _digests() == before


def test_memory_limit_turns_into_a_crash(
    a2_autograder: Path, tmp_path: Path, run_marker: str
) -> None:
    (result,) = grade_many(
        a2_autograder,
        [FIXTURES / "a2_solution.ipynb"],
        tmp_path / "g.csv",
        timeout=120,
        memory_mb=400,
        progress=False,
    )
    assert (result.status, result.total) == ("crashed", 0.0), result.detail
    assert not _leftover_jobs(run_marker)


def test_release_holds_no_answers(a2_autograder: Path) -> None:
    student = a2_autograder.parents[1] / "student" / "a2_grad_cam.ipynb"
    text = student.read_text(encoding="utf-8")
    assert "test_q6_random_batches" not in text, "a hidden test leaked"
    assert "test_q6_two_images" in json.loads(text)["metadata"]["otter"]["tests"]["q6"]
    assert "maps.flatten(1)" not in text, "the solution leaked"
    assert not list(student.parent.rglob("grading_support.py"))


def test_read_questions(a2_autograder: Path) -> None:
    assert read_questions(a2_autograder) == FULL


def test_scan_code_flags_grader_internals_only() -> None:
    assert scan_code(['grader = otter.Notebook("a2.ipynb")', "# Checker in a comment"]) == []
    assert scan_code(["from otter.execute import Checker"]) == [
        "uses otter.execute",
        "uses the name Checker",
    ]
    assert scan_code(['open("tests/q1.py", "w")']) == ['mentions a grading file in "tests/q1.py"']


def test_write_gradebook_is_atomic_and_ordered(tmp_path: Path) -> None:
    out = tmp_path / "gb.csv"
    out.write_text("old", encoding="utf-8")
    results = [
        SubmissionResult("b.ipynb", "ok", {"q1": 1.0}, 1.0, 2.0),
        SubmissionResult("a.ipynb", "timeout", {"q1": 0.0}, 0.0, 2.0, detail="killed\nhard"),
    ]
    write_gradebook(out, results, {"q1": 1.0, "q2": 1.0})
    assert out.read_text(encoding="utf-8").splitlines() == [
        "submission,q1,q2,total,possible,status,detail",
        "b.ipynb,1,0,1,2,ok,",
        "a.ipynb,0,0,0,2,timeout,killed hard",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["gb.csv"]


def test_bad_arguments_are_refused(a2_autograder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timeout"):
        grade_many(a2_autograder, [FIXTURES / "a2_blank.ipynb"], tmp_path / "g.csv", timeout=0)
    with pytest.raises(ValueError, match="no submissions"):
        grade_many(a2_autograder, [tmp_path], tmp_path / "g.csv")
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(ValueError, match="no tests"):
        read_questions(empty)


def test_the_tamper_marker_is_the_same_on_both_sides() -> None:
    gs = runpy.run_path(str(ROOT / "assignments" / "grading_support.py"))
    assert gs["TAMPER_MARKER"] == TAMPER_MARKER


def _master(name: str) -> tuple[str, dict[str, str]]:
    """A master notebook's solution code, and its test cells by test function name."""
    code, tests, in_tests = [], {}, False
    for cell in json.loads((ROOT / "assignments" / f"{name}.ipynb").read_text("utf-8"))["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "raw":
            in_tests = {"# BEGIN TESTS": True, "# END TESTS": False}.get(source.strip(), in_tests)
        elif cell["cell_type"] == "code" and in_tests:
            tests[source.split("def ", 1)[1].split("(", 1)[0]] = source
        elif cell["cell_type"] == "code":
            code += [line for line in source.splitlines() if "SOLUTION" not in line]
    return "\n".join(code), tests


#: (master, hidden test, an answer that breaks a stated requirement the test must catch)
WRONG_ANSWERS = [
    # recomputing the ReLU from the hook's input: ReLU6 no longer clips at 6
    (
        "a1_guided_backprop",
        "test_q2_fire_relu6_inplace",
        """
@contextmanager
def guided_relus(model):
    handles = [m.register_forward_hook(lambda mod, inp, out: GuidedReLUFn.apply(inp[0]))
               for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
""",
    ),
    # the reference reached through another course_utils module that wraps it
    (
        "a1_guided_backprop",
        "test_q3_matches_reference_random",
        """
from course_utils.checks.gradients import input_gradient

def guided_backprop(model, images, labels=None):
    relus = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    if labels is None:
        labels = model.eval()(images).argmax(1)
    return input_gradient(model, images, torch.as_tensor(labels), guided=relus)
""",
    ),
    # no eval mode (Dropout changes the gradient) / no clone (an in-place ReLU overwrites A)
    *[
        (
            "a2_grad_cam",
            "test_q2_matches_reference",
            f"""
def activation_and_gradient(model, images, labels, layer):
    recorded = {{}}
    def keep(mod, inputs, output):
        recorded["A"] = output
        return {"output.clone()" if mistake == "eval" else "None"}
    flags = [(m, m.training) for m in model.modules()]
    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        {"" if mistake == "eval" else "model.eval()"}
        picked = select_scores(model(images.clone()), labels)
        (grad,) = torch.autograd.grad(picked.sum(), recorded["A"])
    finally:
        handle.remove()
        for m, flag in flags:
            m.training = flag
    return recorded["A"].detach(), grad
""",
        )
        for mistake in ("eval", "clone")
    ],
]


@pytest.mark.parametrize(
    ("master", "test", "answer"),
    WRONG_ANSWERS,
    ids=["relu6-unclipped", "reference-via-checks", "no-eval-mode", "no-clone"],
)
def test_hidden_tests_fail_wrong_answers(
    master: str, test: str, answer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run in this process (no otter): the solution passes the hidden test, the answer fails."""
    solution, tests = _master(master)
    monkeypatch.chdir(ROOT / "assignments")  # the tests load grading_support.py from there
    namespace = {"__name__": "__main__"}
    exec(compile(solution, "<solution>", "exec"), namespace)
    exec(compile(tests[test], "<test>", "exec"), dict(namespace))
    exec(compile(answer, "<student>", "exec"), namespace)
    with pytest.raises(AssertionError):
        exec(compile(tests[test], "<test>", "exec"), dict(namespace))
