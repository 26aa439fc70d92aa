"""Measure the checks on fresh wrong answers (``tests/mistakes_fresh.py``), issue 10's goal.

Every wrong answer must fail its check with a named mistake (never a crash of the check);
over the whole set at least 97 % fail and at least 90 % are named as expected. Run
``python tests/test_fresh_mistakes.py`` for the per-case table and the rates.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import mistakes_fresh
import pytest

from course_utils import checks

#: What the checks said about each case: (id, expected key, named key or None when it passed).
Outcome = tuple[str, str, str | None]


def run_case(check: Callable[[Any], None], fn: Any) -> str | None:
    """The key the check names, ``None`` if it passes; anything but a CheckFailed propagates."""
    try:
        check(fn)
    except checks.CheckFailed as exc:
        return exc.mistake.key
    return None


def measure(cases: list[mistakes_fresh.Case]) -> list[Outcome]:
    return [
        (case_id, key, run_case(getattr(checks, check), fn)) for case_id, check, fn, key in cases
    ]


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    return measure(mistakes_fresh.CASES)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_fresh_wrong_answers_fail_and_are_named(outcomes: list[Outcome], capsys: Any) -> None:
    failed = [o for o in outcomes if o[2] is not None]
    named = [o for o in outcomes if o[2] == o[1]]
    assert len(failed) >= 0.97 * len(outcomes), [o for o in outcomes if o[2] is None]
    assert len(named) >= 0.90 * len(outcomes), [o for o in outcomes if o[2] != o[1]]


@pytest.mark.parametrize("case", mistakes_fresh.CORRECT_ALTERNATIVES, ids=lambda c: c[0])
def test_right_answers_written_differently_pass(case: mistakes_fresh.Case) -> None:
    assert run_case(getattr(checks, case[1]), case[2]) is None


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_holdout_wrong_answers_fail_and_are_named() -> None:
    outcomes = measure(mistakes_fresh.HOLDOUT)
    assert all(got is not None for _, _, got in outcomes), outcomes
    assert sum(got == key for _, key, got in outcomes) >= 0.90 * len(outcomes), outcomes


if __name__ == "__main__":
    chosen = mistakes_fresh.HOLDOUT if "--holdout" in sys.argv else mistakes_fresh.CASES
    results = measure(chosen)
    for case_id, key, got in results:
        mark = "✓" if got == key else ("PASSED" if got is None else "≠")
        print(f"{case_id:28s} expected {key:26s} named {got!s:26s} {mark}")
    n = len(results)
    failed = sum(got is not None for _, _, got in results)
    named = sum(got == key for _, key, got in results)
    print(
        f"\n{n} fresh wrong answers: {failed} failed ({failed / n:.1%}), "
        f"{named} named correctly ({named / n:.1%}), 0 check crashes"
    )
    sys.exit(0 if failed >= 0.97 * n and named >= 0.90 * n else 1)
