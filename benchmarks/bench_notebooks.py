"""Time and peak kernel memory of every course notebook, against the course's budgets.

Run: ``python benchmarks/bench_notebooks.py [notebooks/05_upsampling.ipynb ...]``

Binder and JupyterHub give a course 1-2 GB, so every kernel must stay under 1.5 GB; a
notebook should run in seconds (≤ 40 s each, ≤ 3 min for the suite under nbval on 2 cores).
Each notebook is executed in a fresh kernel with one extra cell appended that reads the
kernel's own peak resident memory (``getrusage(RUSAGE_SELF).ru_maxrss``), so the number is
the kernel's, not this process's. Prints one row per notebook and the ratios to the budgets.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S, BUDGET_MB, SUITE_S = 40.0, 1536.0, 180.0
PEAK_CELL = (
    "import resource as _r, sys as _s\n"
    "_kb = _r.getrusage(_r.RUSAGE_SELF).ru_maxrss\n"
    "print('PEAK_MB', _kb / 1024 if _s.platform != 'darwin' else _kb / 2**20)"
)


def run(path: Path) -> tuple[float, float]:
    """Execute ``path`` in a fresh kernel; return (seconds, peak kernel MB)."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
    client = NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    return seconds, float(text.split("PEAK_MB")[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    print(f"{'notebook':<28} {'seconds':>8} {'x 40 s':>7} {'peak MB':>8} {'x 1.5 GB':>9}")
    total, worst = 0.0, 0.0
    for path in paths:
        seconds, peak = run(path)
        total += seconds
        worst = max(worst, peak / BUDGET_MB, seconds / BUDGET_S)
        print(
            f"{path.name:<28} {seconds:8.1f} {seconds / BUDGET_S:7.2f} "
            f"{peak:8.0f} {peak / BUDGET_MB:9.2f}"
        )
    print(f"{'all, one after another':<28} {total:8.1f} {total / SUITE_S:7.2f} (x 3 min)")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
