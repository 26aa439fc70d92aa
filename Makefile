# Two commands do all set-up on a fresh machine:  make lab  |  make test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EXTRAS := dev,instructor,compare

.PHONY: lab test lint install course assignments bench clean

# (Re)install whenever the project metadata changes; pip takes torch from the
# machine's wheel cache or constraints when it has them.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) lint
	$(PY) -m pytest

# Jupyter refuses to run as root unless told to (containers, CI boxes often are root).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG)

# Releases in dist/assignments/<name>/ (student notebook, Gradescope zip); the solution must
# score full marks and the blank release 0 through the sandboxed grader (python -m grading).
assignments: $(STAMP)
	$(PY) assignments/build.py

# Executed HTML pages + reveal.js decks in build/course/, student copies in build/student/.
course: $(STAMP)
	$(PY) scripts/build_course.py

bench: $(STAMP)
	$(PY) benchmarks/bench_cam.py
	$(PY) benchmarks/bench_peers.py
	$(PY) benchmarks/bench_shapes.py
	$(PY) benchmarks/bench_notebooks.py
	$(PY) benchmarks/bench_grade.py

clean:
	rm -rf build dist .pytest_cache .ruff_cache
