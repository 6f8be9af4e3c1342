# examples/steps/steps.mk - rebuild the example wasm steps reproducibly.
#
#   make -f examples/steps/steps.mk steps              # rebuild examples/steps/*.wasm
#   make -f examples/steps/steps.mk steps OUT=/tmp/x   # build into another directory
#   make -f examples/steps/steps.mk steps-check        # fresh build == committed files?
#
# Toolchain: PyPI ziglang 0.17.0 (`$(BIN)/python -m ziglang cc -target wasm32-wasi`),
# pulled in by the test extras. The compiler flags live in build.py, shared with
# tests/sandbox/test_examples_build.py; the same sources and ziglang version give
# byte-identical modules on any machine. Set ZIG_GLOBAL_CACHE_DIR to choose zig's cache
# (the first build fills it in ~20 s; later builds take a few seconds).

STEPS_MK  := $(lastword $(MAKEFILE_LIST))
STEPS_DIR := $(patsubst %/,%,$(dir $(STEPS_MK)))

BIN ?= .venv/bin
OUT ?= $(STEPS_DIR)
# Must equal ZIGLANG_VERSION in build.py (build.py refuses to run otherwise).
ZIGLANG_VERSION := 0.17.0

STEPS_SRC  := $(sort $(wildcard $(STEPS_DIR)/*.c))
STEPS_WASM := $(patsubst $(STEPS_DIR)/%.c,$(OUT)/%.wasm,$(STEPS_SRC))

.PHONY: steps steps-check

# Always runs the compiler (zig's cache makes that cheap): a toolchain change must show
# up even when no source changed. build.py rewrites a .wasm only if its bytes change.
steps:
	$(BIN)/python $(STEPS_DIR)/build.py --zig-version $(ZIGLANG_VERSION) --out $(OUT)

steps-check:
	$(BIN)/python $(STEPS_DIR)/build.py --zig-version $(ZIGLANG_VERSION) --check
