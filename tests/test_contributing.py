"""CONTRIBUTING.md's recipes against the lists they touch: no recipe step may go stale."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import course_utils

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "course_utils"
CONTRIBUTING = (ROOT / "CONTRIBUTING.md").read_text()
README = (ROOT / "README.md").read_text()


def _stage_modules() -> dict[int, str]:
    """Stage number -> module name, for every module whose docstring opens ``Stage N —``."""
    stages = {}
    for path in sorted(PACKAGE.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        match = re.match(r"Stage (\d+) —", doc)
        if match:
            stages[int(match.group(1))] = path.stem
    return stages


def _package_table() -> set[str]:
    """Module names in the first column of the table in course_utils' docstring."""
    lines = (course_utils.__doc__ or "").splitlines()
    first_columns = [line.split("  ")[0] for line in lines if line.startswith("``")]
    return {name for column in first_columns for name in re.findall(r"``(\w+)``", column)}


def _readme_stage_files() -> set[str]:
    """File names in the README's "One file per stage" table."""
    section = README.split("One file per stage", 1)[1].split("\n\n", 2)[1]
    return set(re.findall(r"`(\w+(?:\.py|/))`", section))


def test_the_stages_are_numbered_one_to_n_without_gaps() -> None:
    stages = _stage_modules()
    assert sorted(stages) == list(range(1, len(stages) + 1)), stages
    assert len(stages) >= 7


def test_every_stage_module_is_in_the_package_table_and_the_readme() -> None:
    table, readme = _package_table(), _readme_stage_files()
    for module in _stage_modules().values():
        assert module in table, f"{module} is missing from course_utils' docstring table"
        assert f"{module}.py" in readme, f"{module}.py is missing from the README's table"


def test_every_stage_name_is_exported_by_the_package() -> None:
    for module in _stage_modules().values():
        names = importlib.import_module(f"course_utils.{module}").__all__
        missing = sorted(set(names) - set(course_utils.__all__))
        assert not missing, f"course_utils.{module} exports {missing}, course_utils does not"
    for name in course_utils.__all__:
        assert hasattr(course_utils, name), f"__all__ names {name}, which does not exist"


def test_every_module_the_package_imports_or_lists_exists_and_is_listed() -> None:
    table = _package_table()
    for name in table:
        assert (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name).is_dir(), name
    imported = {
        node.module.split(".")[0]
        for node in ast.walk(ast.parse((PACKAGE / "__init__.py").read_text()))
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
    }
    assert imported <= table, f"imported but not in the docstring table: {imported - table}"


def test_every_readme_stage_file_exists() -> None:
    for name in _readme_stage_files():
        assert (PACKAGE / name).exists(), f"the README lists {name}, which is not in course_utils"


@pytest.mark.parametrize(
    "path",
    sorted(
        set(
            re.findall(
                r"`((?:course_utils|grading|tests|notebooks|assignments|scripts)/[^`<>*]+)`",
                CONTRIBUTING,
            )
        )
    ),
)
def test_every_path_a_recipe_names_exists(path: str) -> None:
    assert (ROOT / path).exists(), f"CONTRIBUTING.md names {path}, which does not exist"


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("METHODS", "tests/test_contract.py"),
        ("ARCHITECTURES", "tests/test_architectures.py"),
        ("SEQUENCE", "tests/test_notebooks.py"),
        ("STAGES", "tests/test_notebooks.py"),
        ("CORRECT", "tests/test_checks.py"),
        ("WRONG", "tests/test_checks.py"),
        ("_CATALOGUE", "course_utils/checks/mistakes.py"),
        ("QUESTIONS", "grading/assignments/a2.py"),
        ("FORBIDDEN", "grading/forbidden.py"),
        ("WRONG_ANSWERS", "tests/test_grade.py"),
        ("ATTACKS", "tests/attacks.py"),
        ("FIXTURE_EXPECT", "tests/test_attacks.py"),
    ],
)
def test_every_list_a_recipe_names_is_defined_where_it_says(name: str, where: str) -> None:
    assert f"`{name}`" in CONTRIBUTING and f"`{where}`" in CONTRIBUTING
    tree = ast.parse((ROOT / where).read_text())
    defined = {
        target.id
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    assert name in defined, f"CONTRIBUTING.md says {where} defines {name}; it does not"


def test_the_make_targets_the_loop_names_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"^make (\w+)", CONTRIBUTING, re.M):
        assert re.search(rf"^{target}:", makefile, re.M), f"make {target} is not a target"
