"""The grading pieces one by one: protocol, filtered package, hidden tests, outputs, build.

The hidden tests run here in-process against :class:`InProcess`, a stand-in for the sandbox
that serves the same scenarios through the same encoding (fast: no subprocess). The whole
path through bubblewrap is tests/test_attacks.py's; the Gradescope layout is
tests/test_gradescope.py's.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from grading import batch as batch_module
from grading.assignments import Context, callback, questions
from grading.batch import SubmissionResult, escape_cell, feedback, write_gradebook
from grading.compare import Failure
from grading.forbidden import FORBIDDEN, excluded, write_sandbox_package
from grading.protocol import Channel, ProtocolError, encode
from grading.sandbox import StudentFailure
from grading.scenarios import SCENARIOS
from grading.worker import _from_wire, _to_wire, code_cells

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ protocol
def _round_trip(value: Any, max_bytes: int = 1 << 20) -> Any:
    """``value`` sent through a pipe and read back (the writer in a thread: pipes are small)."""
    read_fd, write_fd = os.pipe()
    data = encode(value)

    def write() -> None:
        with contextlib.suppress(BrokenPipeError):
            os.write(write_fd, data)
        os.close(write_fd)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        return Channel(read_fd, -1, max_bytes=max_bytes).receive()
    finally:
        os.close(read_fd)
        writer.join()


def test_protocol_round_trip_keeps_dtype_shape_and_values() -> None:
    value = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [1, "x", None, float("nan")]}
    back = _round_trip(value)
    assert back["a"].dtype == np.float32 and back["a"].shape == (2, 3)
    assert np.array_equal(back["a"], value["a"])
    assert back["b"][:3] == [1, "x", None] and np.isnan(back["b"][3])


def test_protocol_refuses_objects_and_oversized_messages() -> None:
    with pytest.raises(ProtocolError, match="dtype object"):
        encode({"x": np.array([object()])})
    with pytest.raises(ProtocolError, match="cannot cross"):
        encode({"x": object()})
    with pytest.raises(ProtocolError, match="larger than"):
        _round_trip({"x": np.zeros(1000, np.float64)}, max_bytes=4000)


@pytest.mark.parametrize(
    "header",
    [
        b'{"body": {"__array__": 3}, "arrays": []}',
        b'{"body": 1, "arrays": [{"dtype": "object", "shape": [1]}]}',
        b'{"body": 1, "arrays": [{"dtype": "float32", "shape": [-1]}]}',
        b'{"body": NaN, "arrays": []}',
        b"not json",
    ],
)
def test_protocol_rejects_malformed_headers(header: bytes) -> None:
    import struct

    read_fd, write_fd = os.pipe()
    os.write(write_fd, struct.pack(">I", len(header)) + header + b"\0" * 8)
    os.close(write_fd)
    with pytest.raises(ProtocolError):
        Channel(read_fd, -1).receive()
    os.close(read_fd)


# ------------------------------------------------------------------------------ sandbox package
@pytest.mark.parametrize("assignment", list(FORBIDDEN))
def test_sandbox_package_lacks_every_route_to_the_reference(
    assignment: str, tmp_path: Path
) -> None:
    dropped = excluded(assignment)
    assert set(FORBIDDEN[assignment]) <= dropped
    assert {"checks", "explorer"} <= dropped, "they wrap the reference"
    package = write_sandbox_package(assignment, tmp_path)
    present = {p.stem for p in package.iterdir()}
    assert not present & dropped
    init = (package / "__init__.py").read_text()
    compile(init, "__init__.py", "exec")
    for module in dropped:
        assert f"from .{module} import" not in init
    assert (package / "weights").is_dir() and (package / "models").is_dir()


def test_a2_keeps_guided_backprop_as_a_grader_call() -> None:
    assert "guided" in excluded("a2_grad_cam"), "guided imports scores and hooks (Q1, Q2)"
    assert "relu" not in excluded("a2_grad_cam")


# ------------------------------------------------------------------------------ hidden tests
class InProcess:
    """The sandbox's request loop, in this process, through the real encoding."""

    def __init__(self, source: str) -> None:
        import sys
        import types

        otter = types.ModuleType("otter")
        otter.Notebook = lambda *a, **k: types.SimpleNamespace(check=lambda *a: None)  # type: ignore[attr-defined]
        saved = sys.modules.get("otter")
        sys.modules["otter"] = otter
        try:
            self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
            exec(compile(source, "<student>", "exec"), self.namespace)
        finally:
            if saved is not None:
                sys.modules["otter"] = saved
        self.callback: Any = None

    def remote(self, name: str) -> Any:
        def stand_in(*args: Any) -> Any:
            wire = _round_trip({"args": _to_wire(list(args))})["args"]
            return _from_wire(_round_trip({"value": self.callback(name, wire)})["value"])

        return stand_in

    def run(self, scenario: str, params: dict[str, Any], callback: Any = None) -> Any:
        self.callback = callback
        params = _round_trip(params)
        try:
            value = SCENARIOS[scenario](self.namespace, self.remote, **params)
        except Exception as exc:
            raise StudentFailure(f"{type(exc).__name__}: {exc}") from exc
        return _round_trip(value, max_bytes=1 << 28)


def _solution(assignment: str) -> str:
    cells = json.loads((ROOT / "assignments" / f"{assignment}.ipynb").read_text())["cells"]
    code = [
        c for c in cells if c["cell_type"] == "code" and "def test_" not in "".join(c["source"])
    ]
    return "\n\n".join(
        "\n".join(line for line in "".join(c["source"]).splitlines() if "SOLUTION" not in line)
        for c in code
    )


def _grade(assignment: str, source: str, only: tuple[str, ...] = ()) -> dict[str, tuple[bool, str]]:
    sandbox = InProcess(source)
    ctx = Context(sandbox, [source], callback(assignment))  # type: ignore[arg-type]
    verdicts = {}
    for name, question in questions(assignment).items():
        if only and name not in only:
            continue
        verdicts[name] = (True, "")
        for test in question.tests:
            try:
                test(ctx)
            except Failure as failure:
                verdicts[name] = (False, failure.mistake)
                break
            except StudentFailure:
                verdicts[name] = (False, "crashed")
                break
    return verdicts


@pytest.mark.parametrize("assignment", list(FORBIDDEN))
def test_the_solution_passes_every_hidden_test(assignment: str) -> None:
    verdicts = _grade(assignment, _solution(assignment))
    assert all(ok for ok, _ in verdicts.values()), verdicts


#: (assignment, question, a wrong answer appended to the solution, the mistake it must name)
WRONG_ANSWERS = {
    "per-batch-norm": (
        "a2_grad_cam",
        "q6",
        "def normalize_per_image(maps):\n"
        "    return (maps - maps.min()) / (maps.max() - maps.min())",
        "per_batch_norm",
    ),
    "sum-not-mean": (
        "a2_grad_cam",
        "q3",
        "def channel_weights(grads):\n    return grads.sum(dim=(2, 3))",
        "sum_not_mean",
    ),
    "hw-swap": (
        "a2_grad_cam",
        "q5",
        "def upsample(maps, size):\n    return F.interpolate(maps[:, None], size=tuple(size)[::-1],"
        " mode='bilinear', align_corners=False)[:, 0]",
        "hw_swap",
    ),
    "squeeze-all": (
        "a2_grad_cam",
        "q1",
        "def select_scores(scores, labels):\n"
        "    return scores.gather(1, labels.view(-1, 1)).squeeze()",
        "squeeze_all",
    ),
    "no-clone": (
        "a2_grad_cam",
        "q2",
        """
def activation_and_gradient(model, images, labels, layer):
    recorded = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda m, i, o: recorded.__setitem__("A", o))
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        picked = select_scores(model(images.clone()), labels)
        (grad,) = torch.autograd.grad(picked.sum(), recorded["A"])
    finally:
        handle.remove()
        for m, flag in flags:
            m.training = flag
    return recorded["A"].detach(), grad
""",
        "inplace_alias",
    ),
    "backprop-rule": (
        "a1_guided_backprop",
        "q1",
        """
class GuidedReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x > 0)
        return torch.addcmul(x.new_zeros(()), x, (x > 0).type_as(x))

    @staticmethod
    def backward(ctx, g):
        (positive,) = ctx.saved_tensors
        return g * positive.type_as(g)
""",
        "backprop_rule",
    ),
    "hooks-never-removed": (
        "a1_guided_backprop",
        "q2",
        """
@contextmanager
def guided_relus(model):
    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            m.register_forward_hook(lambda mod, inp, out: GuidedReLUFn.apply(out))
    yield model
""",
        "hooks_left",
    ),
    "relu6-unclipped": (
        "a1_guided_backprop",
        "q2",
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
        "wrong_values",
    ),
    "backward-into-params": (
        "a1_guided_backprop",
        "q3",
        """
def guided_backprop(model, images, labels=None):
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    with guided_relus(model):
        x = images.detach().clone().requires_grad_(True)
        scores = model(x)
        if labels is None:
            labels = scores.argmax(1)
        scores.gather(1, torch.as_tensor(labels).view(-1, 1)).sum().backward()
    for m, flag in flags:
        m.training = flag
    return x.grad
""",
        "accumulating_grads",
    ),
}


@pytest.mark.parametrize("case", list(WRONG_ANSWERS))
def test_hidden_tests_fail_wrong_answers_and_name_the_mistake(case: str) -> None:
    assignment, question, answer, mistake = WRONG_ANSWERS[case]
    # A2's final question must not pay for an earlier mistake (it runs on stand-ins)
    also = ("q7",) if assignment == "a2_grad_cam" and case == "per-batch-norm" else ()
    verdicts = _grade(assignment, _solution(assignment) + "\n\n" + answer, (question, *also))
    assert verdicts[question] == (False, mistake)
    assert all(ok for q, (ok, _) in verdicts.items() if q != question), verdicts


# ------------------------------------------------------------------------------ outputs
def test_csv_cells_that_look_like_formulas_are_escaped(tmp_path: Path) -> None:
    assert [escape_cell(s) for s in ("=1+1", "+x", "-x", "@x", "alice.ipynb")] == [
        "'=1+1",
        "'+x",
        "'-x",
        "'@x",
        "alice.ipynb",
    ]
    out = tmp_path / "gb.csv"
    results = [
        SubmissionResult("=cmd.ipynb", "ok", {"q1": 1.0}, 1.0, 2.0),
        SubmissionResult("b.ipynb", "timeout", {"q1": 0.0}, 0.0, 2.0, detail="-killed\nhard"),
    ]
    write_gradebook(out, results, ["q1", "q2"])
    assert out.read_text(encoding="utf-8").splitlines() == [
        "submission,q1,q2,total,possible,status,detail",
        "'=cmd.ipynb,1,0,1,2,ok,",
        "b.ipynb,0,0,0,2,timeout,'-killed hard",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["gb.csv"]


def test_feedback_uses_the_course_catalogue() -> None:
    from course_utils.checks import MISTAKES

    result = SubmissionResult("s.ipynb", "ok", total=1.0, possible=3.0)
    result.questions = {
        "q1": batch_module.QuestionResult(1.0, passed=True),
        "q2": batch_module.QuestionResult(
            0.0, test="q2_hidden", message="element 3 is 0.5, expected 0.7", mistake="hooks_left"
        ),
    }
    text = feedback(result, "a1_guided_backprop")
    assert "q1**: passed" in text and "q2**: failed" in text
    assert MISTAKES["hooks_left"].name in text and MISTAKES["hooks_left"].hint in text
    assert "0.7" not in text, "hidden values stay with the instructor"


def test_no_sandbox_means_refusal_unless_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from grading.__main__ import main

    monkeypatch.setattr(batch_module, "sandbox_problem", lambda: "no user namespaces")
    blank = ROOT / "tests" / "fixtures" / "submissions" / "a2_blank.ipynb"
    with pytest.raises(batch_module.SandboxUnavailable, match="--unsafe-no-sandbox"):
        batch_module.grade_many("a2_grad_cam", [blank], tmp_path / "g.csv", progress=False)
    assert main(["--assignment", "a2_grad_cam", "--out", str(tmp_path / "g.csv"), str(blank)]) == 2


def test_code_cells_skip_magics_and_shell_lines() -> None:
    notebook = {
        "cells": [
            {"cell_type": "code", "source": ["%matplotlib inline\n", "x = 1\n", "!pip list"]},
            {"cell_type": "code", "source": "%%time\ny = 2"},
            {"cell_type": "markdown", "source": "z = 3"},
        ]
    }
    (cell,) = code_cells(notebook)
    namespace: dict[str, Any] = {}
    exec(cell, namespace)
    assert namespace["x"] == 1 and "y" not in namespace


# ------------------------------------------------------------------------------ build
def test_release_and_zip(releases: dict[str, Path]) -> None:
    from build_helpers import load_build

    build = load_build()
    for name, out in releases.items():
        student = out / "student" / f"{name}.ipynb"
        text = student.read_text(encoding="utf-8")
        assert "BEGIN SOLUTION" not in text and "hidden" not in json.loads(text)["metadata"]
        assert sorted(p.name for p in (out / "student").iterdir()) == [f"{name}.ipynb"]
        assert build.master_points(ROOT / "assignments" / f"{name}.ipynb") == {
            q: float(v.points) for q, v in questions(name).items()
        }
        with zipfile.ZipFile(out / "autograder" / f"{name}-autograder.zip") as zf:
            names = zf.namelist()
            assert {"setup.sh", "run_autograder", "requirements.txt"} <= set(names)
            (wheel,) = [n for n in names if n.endswith(".whl")]
            assert "torch>=" in zf.read("requirements.txt").decode()
            assert f"--assignment {name}" in zf.read("run_autograder").decode()
        assert wheel.startswith("wheels/course_utils-0.1.0-")


def test_a_leaking_release_fails_the_build(releases: dict[str, Path], tmp_path: Path) -> None:
    from build_helpers import load_build

    build = load_build()
    name = "a2_grad_cam"
    leaky = tmp_path / "student"
    leaky.mkdir()
    solution = (releases[name] / "autograder" / f"{name}.ipynb").read_text()
    (leaky / f"{name}.ipynb").write_text(solution)
    with pytest.raises(build.BuildError, match="leaks"):
        build.check_release(ROOT / "assignments" / f"{name}.ipynb", leaky)


def test_unsafe_mode_grades_without_a_sandbox(tmp_path: Path) -> None:
    """``--unsafe-no-sandbox`` runs the same worker as a plain child process."""
    fixtures = ROOT / "tests" / "fixtures" / "submissions"
    (solution, blank) = batch_module.grade_many(
        "a2_grad_cam",
        [fixtures / "a2_per_batch_norm.ipynb", fixtures / "a2_blank.ipynb"],
        tmp_path / "g.csv",
        isolate=False,
        workers=2,
        progress=False,
    )
    assert (solution.status, solution.total, blank.status, blank.total) == ("ok", 8.0, "ok", 0.0)
