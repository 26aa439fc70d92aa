"""The project's metadata: environment.yml agrees with pyproject.toml, CI runs `make test`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
#: PyPI name -> conda-forge name, where they differ.
CONDA_NAMES = {"torch": "pytorch"}


def _split(requirement: str) -> tuple[str, str]:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    return match.group(1).lower(), match.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = dict(_split(d) for d in env["dependencies"] if isinstance(d, str))
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pip = dict(_split(d) for d in pip_section if not d.startswith("-"))

    assert conda["python"] == project["requires-python"].replace(" ", "")
    for requirement in project["dependencies"]:
        name, spec = _split(requirement)
        found = conda.get(CONDA_NAMES.get(name, name), pip.get(name))
        assert found is not None, f"{name} is in pyproject.toml but not in environment.yml"
        assert found == spec, f"{name}: pyproject says {spec!r}, environment.yml {found!r}"
    assert "-e ." in pip_section, "environment.yml must install the course_utils package itself"
    assert "jupyterlab" in conda, "Binder/JupyterHub users need JupyterLab"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [
        line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert commands == ["make test"]
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make lab" in readme


def test_readme_usage_example_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Using `course_utils`\n\n```python\n(.*?)```", readme, re.S)
    assert block, "README lost its usage example"
    namespace: dict[str, object] = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    assert tuple(namespace["cam"].shape) == (2, 224, 300)
    assert tuple(namespace["saliency"].shape) == tuple(namespace["images"].shape)


def test_the_version_is_written_once() -> None:
    from importlib.metadata import version

    import course_utils

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert version("course_utils") == course_utils.__version__
