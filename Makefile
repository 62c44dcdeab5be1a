# Everything a fresh machine needs: `make test` and `make demo` create .venv and install first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==26.3
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests

demo: $(STAMP)
	$(BIN)/python -m jepa.demo --workdir runs/demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks.pipeline

clean:
	rm -rf $(VENV) runs
