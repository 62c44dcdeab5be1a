# Everything a fresh machine needs: `make test` and `make demo` create .venv and install first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.installed-base
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: install test demo bench bench-more clean

# The package and its pinned dependencies (all `make demo` needs) ...
$(BASE): pyproject.toml setup.py constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==26.3
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $(BASE)

# ... and the test extra (pytest; CPU torch and transformers for the parity tests).
$(STAMP): $(BASE)
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests

demo: $(BASE)
	$(BIN)/python -m jepa.demo --workdir runs/demo

# Every benchmark against the PyTorch reference, side by side -> BENCHMARKS.md, benchmarks.json (tens of minutes).
bench: $(STAMP)
	$(BIN)/jepa bench

# The earlier, narrower measurements (input pipeline by worker count, probe grid, probe memory) -> benchmarks/results.md
bench-more: $(STAMP)
	$(BIN)/python -m benchmarks.pipeline
	$(BIN)/python -m benchmarks.probe_grid
	$(BIN)/python -m benchmarks.probe_memory

clean:
	rm -rf $(VENV) runs
