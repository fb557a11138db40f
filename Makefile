# `make test` sets up both stacks CI tests (idempotent; the first run builds mmcv for each,
# 10-20 min apiece on 2 cores) and runs the full suite on the current stack, including the
# cross-stack checkpoint tests, and the compatibility suite on the legacy stack.
VENV ?= .venv
LEGACY_VENV ?= .venv-legacy
PY := $(VENV)/bin/python
LEGACY_PY := $(LEGACY_VENV)/bin/python

.PHONY: setup setup-legacy test test-current test-legacy demo clean
setup:
	bash tools/setup_env.sh

setup-legacy:
	VENV=$(LEGACY_VENV) bash tools/setup_env.sh --stack legacy

test: setup setup-legacy
	$(MAKE) test-legacy
	MMSEG_INCNEXT_LEGACY_PYTHON=$(abspath $(LEGACY_PY)) $(PY) -m pytest tests -q

test-current: setup
	$(PY) -m pytest tests -q

# torch 2.1 + numpy 1.26: the whole suite but the cross-stack tests, which the current
# stack's run drives with both interpreters.
test-legacy: setup-legacy
	$(LEGACY_PY) -m pytest tests -q -m "not current_stack_only"

demo: setup
	$(PY) tools/run_demo.py

clean:
	rm -rf $(VENV) $(LEGACY_VENV) work_dirs
