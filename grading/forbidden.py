"""Which course_utils modules a sandbox may hold: the one list of forbidden reference modules.

``course_utils`` is installed wherever the course runs, and its reference implementations
would pass every numerical test. Rather than trapping calls at run time (which student code
in the same process can undo), the sandbox gets a *filtered copy* of the package
(:func:`write_sandbox_package`): every forbidden module is absent, and so is every module
that imports one, directly or through others (``checks``, ``explorer`` and ``guided`` wrap
the reference). A re-export, an ``importlib`` spelling or a code-object copy then has
nothing to reach. The real package is masked inside the sandbox (:mod:`grading.sandbox`).
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

import course_utils

PACKAGE_DIR = Path(course_utils.__file__).resolve().parent

#: course_utils modules whose content an assignment grades: students write their own.
#: ``original`` is the original assignment's solution, kept as a specimen: off limits everywhere.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "a1_guided_backprop": ("relu", "guided", "cam", "original"),
    "a2_grad_cam": ("scores", "hooks", "pooling", "upsample", "cam", "original"),
}
#: Reference functions an assignment may use although their module is absent: the grader
#: computes them (:meth:`grading.worker.Server.remote`). A2 may use A1's ``guided_backprop``.
REMOTE: dict[str, tuple[str, ...]] = {"a1_guided_backprop": (), "a2_grad_cam": ("guided_backprop",)}
#: Other installed libraries that implement the graded methods (the ``compare`` extra):
#: masked in every sandbox, like the real course_utils.
OTHER_IMPLEMENTATIONS = ("captum", "pytorch_grad_cam", "torchcam")


def _units() -> dict[str, list[Path]]:
    """Top-level course_utils modules and subpackages, with their Python files."""
    units: dict[str, list[Path]] = {}
    for path in sorted(PACKAGE_DIR.iterdir()):
        if path.suffix == ".py" and path.stem != "__init__":
            units[path.stem] = [path]
        elif path.is_dir() and (path / "__init__.py").is_file():
            units[path.name] = sorted(path.rglob("*.py"))
    return units


def _import_time_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a module that run when it is imported: function bodies are skipped.

    A function-level import of a forbidden unit cannot break the import of its module; inside
    the sandbox it fails when called, since the forbidden unit is absent. So only import-time
    imports make a unit depend on another.
    """
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))


def _imports(files: list[Path]) -> set[str]:
    """The course_utils units these files import when they are imported."""
    found: set[str] = set()
    for file in files:
        depth = len(file.relative_to(PACKAGE_DIR).parts) - 1
        for node in _import_time_nodes(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level == depth + 1:
                    names = [node.module] if node.module else [a.name for a in node.names]
                    found.update(n.split(".")[0] for n in names)
                elif node.level == 0 and (node.module or "").startswith("course_utils"):
                    rest = (node.module or "").split(".")[1:]
                    found.update(rest[:1] or [a.name for a in node.names])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == "course_utils" and len(parts) > 1:
                        found.add(parts[1])
    return found


def excluded(assignment: str) -> set[str]:
    """Forbidden units of ``assignment`` plus every unit that imports one, transitively."""
    units = _units()
    graph = {name: _imports(files) for name, files in units.items()}
    out = set(FORBIDDEN[assignment])
    grew = True
    while grew:
        grew = False
        for name, deps in graph.items():
            if name not in out and deps & out:
                out.add(name)
                grew = True
    return out


def _filtered_init(assignment: str, dropped: set[str]) -> str:
    """course_utils/__init__.py without the dropped modules' imports and names."""
    tree = ast.parse((PACKAGE_DIR / "__init__.py").read_text(encoding="utf-8"))
    kept: list[ast.stmt] = []
    names: set[str] = set(REMOTE[assignment])
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if (node.module or "").split(".")[0] in dropped:
                continue
            names.update(a.asname or a.name for a in node.names)
        kept.append(node)
    for node in kept:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            node.value = ast.List(elts=[ast.Constant(n) for n in sorted(names)], ctx=ast.Load())
    remote = [
        f'{name} = _remote("{name}")  # computed by the grader' for name in REMOTE[assignment]
    ]
    if remote:
        kept.insert(1, ast.parse("from grading.worker import remote as _remote").body[0])
    return ast.unparse(ast.Module(body=kept, type_ignores=[])) + "\n" + "\n".join(remote) + "\n"


def write_sandbox_package(assignment: str, dest: Path) -> Path:
    """Write the filtered copy of course_utils for ``assignment`` into ``dest/course_utils``."""
    if assignment not in FORBIDDEN:
        raise ValueError(f"unknown assignment {assignment!r}; known: {sorted(FORBIDDEN)}")
    dropped = excluded(assignment)
    target = dest / "course_utils"

    def ignore(directory: str, entries: list[str]) -> set[str]:
        top = Path(directory).resolve() == PACKAGE_DIR
        return {
            e
            for e in entries
            if e == "__pycache__"
            or (top and (e.removesuffix(".py") in dropped or e == "__init__.py"))
        }

    shutil.copytree(PACKAGE_DIR, target, ignore=ignore)
    (target / "__init__.py").write_text(_filtered_init(assignment, dropped), encoding="utf-8")
    return target
