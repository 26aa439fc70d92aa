"""The autograder zip on Gradescope's layout, in a clean environment built from the zip alone.

A fresh virtual environment (not the development one) gets only what the zip's ``setup.sh``
installs (its ``requirements.txt`` and the course wheel it carries); a temporary folder plays
``/autograder`` (``source/``, ``submission/``, ``results/``, via ``GRADESCOPE_ROOT``); then
``run_autograder`` grades the solution and the blank release through the same sandboxed
grader. pip uses this machine's configuration (local wheel folders) plus
tests/fixtures/gradescope-constraints.txt. Opt-in (``GRADESCOPE_CLEAN_ENV=1``): installing
torch takes minutes, too long for every ``make test``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grading.sandbox import sandbox_problem

CONSTRAINTS = Path(__file__).parent / "fixtures" / "gradescope-constraints.txt"
#: Opt-in: installing torch into a fresh environment takes minutes (CUDA wheels here).
OPT_IN = "GRADESCOPE_CLEAN_ENV"
pytestmark = [
    pytest.mark.skipif(
        sandbox_problem() is not None, reason=f"no sandbox here: {sandbox_problem()}"
    ),
    pytest.mark.skipif(
        os.environ.get(OPT_IN) != "1",
        reason=f"set {OPT_IN}=1 to build a clean environment (installs torch: minutes)",
    ),
]


@pytest.fixture(scope="module")
def gradescope(releases: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    name = "a2_grad_cam"
    work = tmp_path_factory.mktemp("gradescope")
    venv = work / "venv"
    base = Path(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
    root = work / "autograder"
    source = root / "source"
    with zipfile.ZipFile(releases[name] / "autograder" / f"{name}-autograder.zip") as zf:
        zf.extractall(source)
    for script in ("setup.sh", "run_autograder"):
        (source / script).chmod(0o755)
    machine_pip = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    env = {
        **machine_pip,  # this machine's pip configuration (local wheel folders)
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(work)),
        "PYTHON": str(venv / "bin" / "python"),
        "PIP_CONSTRAINT": str(CONSTRAINTS),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "GRADESCOPE_ROOT": str(root),
    }
    setup = subprocess.run(
        ["bash", str(source / "setup.sh")], env=env, capture_output=True, text=True
    )
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    where = subprocess.run(
        [env["PYTHON"], "-c", "import grading, course_utils; print(grading.__file__)"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    scores = {}
    for kind, notebook in (
        ("solution", releases[name] / "autograder" / f"{name}.ipynb"),
        ("blank", releases[name] / "student" / f"{name}.ipynb"),
    ):
        submission, results = root / "submission", root / "results"
        for folder in (submission, results):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        shutil.copyfile(notebook, submission / f"{name}.ipynb")
        run = subprocess.run(
            [str(source / "run_autograder")], env=env, cwd=root, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr[-3000:]
        scores[kind] = json.loads((results / "results.json").read_text())
    return {"scores": scores, "where": where, "venv": venv}


def test_the_grader_comes_from_the_clean_environment(gradescope: dict) -> None:
    assert gradescope["where"].startswith(str(gradescope["venv"]))
    assert os.path.commonpath([gradescope["where"], str(Path(__file__).parents[1])]) != str(
        Path(__file__).parents[1]
    )


def test_solution_full_marks_blank_zero(gradescope: dict) -> None:
    solution, blank = gradescope["scores"]["solution"], gradescope["scores"]["blank"]
    assert solution["score"] == 10.0, solution["output"]
    assert [t["score"] for t in solution["tests"]] == [1.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0]
    assert blank["score"] == 0.0
    assert sum(t["max_score"] for t in blank["tests"]) == 10.0
    assert "q6**: failed" in blank["output"]
