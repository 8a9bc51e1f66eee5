# Every target creates/uses the project's own virtual environment in .venv.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
APP := $(VENV)/.installed-app
DEV := $(VENV)/.installed-dev

# pip installs without byte-compiling (--no-compile: 23 s instead of 71 s for
# requirements.txt here); Python then writes the .pyc files of the modules a command
# imports, the first time it imports them, unless PYTHONDONTWRITEBYTECODE is set, so it is
# unset for every command below (with it set, each process recompiles: ~8 s per start).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo app browser test test-fast test-experiments lint format venv clean

# The demo needs only the runtime packages; the tests and linters add requirements-dev.txt.
# pip is upgraded first: the venv's bundled pip 23.2 installed requirements.txt slower here.
# setuptools (>= 77, for the editable install) comes with torch.
$(RUNTIME): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-compile -r requirements.txt
	$(BIN)/pip install -q --no-compile --no-deps --no-build-isolation -e .
	touch $@

$(APP): $(RUNTIME) requirements-app.txt
	$(BIN)/pip install -q --no-compile -r requirements-app.txt
	touch $@

$(DEV): $(APP) requirements-dev.txt
	$(BIN)/pip install -q --no-compile -r requirements-dev.txt
	touch $@

# The browser test drives Debian's chromium (Playwright's own browser download is not
# reachable here); installed with apt when missing, as root or through sudo.
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

venv: $(DEV)

# mcm demo chooses its threads itself (the usable CPUs shared between its two training
# processes), so `make demo` is `mcm demo` in the project's environment.
demo: $(RUNTIME)
	HF_HUB_OFFLINE=1 $(BIN)/mcm demo --out demo-out

# The web app on the shipped world teacher and the students `make demo` left in demo-out.
app: $(APP)
	HF_HUB_OFFLINE=1 $(BIN)/mcm app --demo-out demo-out

# The test suite on two pytest-xdist workers, one torch thread each. Each worker takes the
# next test when it finishes one (--maxschedchunk 1), and the tests marked slow come first
# (tests/conftest.py), so the short ones fill the gaps at the end.
# `make test` runs every test, the slow end-to-end ones included: it is what CI runs
# (.ci/run). `make test-fast` leaves out the tests marked slow, for local iterations.
PYTEST := HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --maxschedchunk 1

test: $(DEV) browser
	$(PYTEST)

test-fast: $(DEV) browser
	$(PYTEST) -m "not slow"

# The research scripts' tests (experiments/README.md); not part of `make test`.
test-experiments: $(DEV)
	$(PYTEST) experiments/tests

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/ruff format --check src tests benchmarks experiments

format: $(DEV)
	$(BIN)/ruff format src tests benchmarks experiments
	$(BIN)/ruff check --fix src tests benchmarks experiments

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info
