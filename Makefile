# Qflow: every target sets up what it needs on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: test test-fast test-interop lint typecheck sentinel demo bench steps sim sim-soak clean

# The virtualenv is rebuilt whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Qflow needs Python >= 3.11, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test,interop]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

sentinel: $(STAMP)
	$(BIN)/qflow sentinel check .

test: lint typecheck sentinel
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m 'not slow' -q

# Only the interop tests against a real Kubo (the `interop` extra; `make test` runs them
# too, and they skip where the extra has no wheel for the platform).
test-interop: $(STAMP)
	$(BIN)/pytest -m kubo tests/interop

# Deterministic simulation (docs/testing.md): the CI seed set, and the long soak.
sim: $(STAMP)
	$(BIN)/python -m qflow_node.sim ci

sim-soak: $(STAMP)
	$(BIN)/python -m qflow_node.sim soak

demo: $(STAMP)
	bash examples/demo.sh

bench: $(STAMP)
	@set -e; for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f; done

# Rebuild the example wasm steps reproducibly (ziglang comes with the test extras).
steps: $(STAMP)
	$(MAKE) -f examples/steps/steps.mk steps BIN=$(CURDIR)/$(BIN)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
