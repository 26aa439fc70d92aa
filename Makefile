# Two commands do all set-up on a fresh machine:  make lab  |  make test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
EXTRAS := dev,instructor,compare

.PHONY: lab lab-sources progress test unit lint install browser course assignments bench clean

# (Re)install whenever the project metadata changes; pip takes torch from the
# machine's wheel cache or constraints when it has them.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# Style, formatting and types: ruff's rules and formatter, then mypy on the package.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: $(STAMP) lint browser
	$(PY) -m pytest

# The quick loop while editing the package: its docstring examples and the unit tests, stop at
# the first failure; no notebooks, no grading or course builds (make test runs everything).
UNIT_SKIP := tests/test_attacks.py tests/test_browser.py tests/test_build_course.py \
             tests/test_live_slides.py
unit: $(STAMP)
	$(PY) -m pytest -q -x course_utils tests $(addprefix --ignore=,$(UNIT_SKIP))

# tests/test_browser.py opens the built course in Debian's Chromium (Playwright drives it; its
# own browser download is not used). Installed here when missing: CI starts on a fresh Debian.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# Jupyter refuses to run as root unless told to (containers, CI boxes often are root).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

# Learners: solution-free copies in workspace/ (git-ignored), created on first use, never
# overwritten; a course update lands in workspace/updates/ and is announced.
WORKSPACE := workspace

lab: $(STAMP)
	$(PY) -m course_utils.workspace update $(WORKSPACE)
	$(VENV)/bin/jupyter lab --notebook-dir=$(WORKSPACE) $(ROOT_FLAG)

# Instructors and lecturers: the sources in notebooks/, solutions included.
lab-sources: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG)

# Run every exercise check of the learner workspace and print the progress table.
progress: $(STAMP)
	$(PY) -m course_utils.workspace progress $(WORKSPACE)

# Releases in dist/assignments/<name>/ (student notebook, Gradescope zip); the solution must
# score full marks and the blank release 0 through the sandboxed grader (python -m grading).
assignments: $(STAMP)
	$(PY) assignments/build.py

# Executed HTML pages + reveal.js decks in build/course/ (offline: assets from third_party/),
# student copies in build/student/.
course: $(STAMP)
	$(PY) scripts/build_course.py

bench: $(STAMP)
	$(PY) benchmarks/bench_cam.py
	$(PY) benchmarks/bench_peers.py
	$(PY) benchmarks/bench_shapes.py
	$(PY) benchmarks/bench_notebooks.py
	$(PY) benchmarks/bench_explorer.py
	$(PY) benchmarks/bench_grade.py

clean:
	rm -rf build dist .pytest_cache .ruff_cache
