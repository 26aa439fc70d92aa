"""assignments/build.py loaded as a module (the assignments folder is not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_build() -> ModuleType:
    """The build script as a module."""
    spec = importlib.util.spec_from_file_location(
        "assignments_build", ROOT / "assignments/build.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
