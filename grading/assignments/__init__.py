"""The hidden tests of each assignment, run in the grader process (never in a sandbox).

A test is a function ``test(ctx)`` that asks the sandbox for observations through
:class:`Context` and compares them with course_utils' reference, computed here on the
grader's own copies of the inputs and models. Each question is all-or-nothing: every test of
the question must pass. Inputs are drawn at grading time from the OS's entropy.
"""

from __future__ import annotations

import ast
import importlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from grading.sandbox import Sandbox

#: Assignment name -> module of this package holding its ``QUESTIONS``.
MODULES = {"a1_guided_backprop": "a1", "a2_grad_cam": "a2"}


@dataclass
class Context:
    """What a hidden test works with: the submission's sandbox and its code cells."""

    sandbox: Sandbox
    sources: list[str]
    callback: Callable[[str, Any], Any] | None = None

    def seeds(self, count: int) -> list[int]:
        """Fresh seeds from the OS's entropy: no submission can special-case them."""
        return [secrets.randbelow(2**31 - 1) for _ in range(count)]

    def call(
        self,
        function: str,
        *args: Any,
        probe_input: np.ndarray | None = None,
        stand_ins: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """``function(*args)`` in the sandbox (see :func:`grading.scenarios.call`)."""
        params = {
            "function": function,
            "args": list(args),
            "probe_input": probe_input,
            "stand_ins": list(stand_ins),
        }
        return self.sandbox.run("call", params, self.callback if stand_ins else None)

    def scenario(self, name: str, **params: Any) -> dict[str, Any]:
        """Run another scenario of :data:`grading.scenarios.SCENARIOS`."""
        return self.sandbox.run(name, params)

    def defines(self, name: str) -> ast.ClassDef | ast.FunctionDef | None:
        """The last top-level definition of ``name`` in the notebook's code, if any."""
        found = None
        for source in self.sources:
            try:
                tree = ast.parse(source)
            except SyntaxError:
                continue
            for node in tree.body:
                if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
                    found = node
        return found


@dataclass(frozen=True)
class Question:
    """A question: its points and its tests (all must pass)."""

    points: float
    tests: tuple[Callable[[Context], None], ...]
    functions: tuple[str, ...] = field(default=())


def questions(assignment: str) -> dict[str, Question]:
    """The questions of an assignment, in order."""
    if assignment not in MODULES:
        raise ValueError(f"unknown assignment {assignment!r}; known: {sorted(MODULES)}")
    module = importlib.import_module(f"grading.assignments.{MODULES[assignment]}")
    return dict(module.QUESTIONS)


def callback(assignment: str) -> Callable[[str, Any], Any] | None:
    """The grader-side stand-ins of an assignment (``None`` if it has none)."""
    module = importlib.import_module(f"grading.assignments.{MODULES[assignment]}")
    return getattr(module, "stand_in", None)


def images(seed: int, n: int, size: tuple[int, int] = (64, 80)) -> np.ndarray:
    """A fresh ``(n, 3, H, W)`` float32 batch."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, *size, generator=generator).numpy()
