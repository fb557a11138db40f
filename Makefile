# `make test` sets up the stacks CI tests (idempotent; the first run builds mmcv for each,
# 10-20 min apiece on 2 cores) and runs, side by side (make -j3, each suite's output shown
# when it ends): the suite on the current stack; on the legacy stack, the tests whose outcome
# can depend on torch or numpy, a share of the stack-independent ones (each of those runs
# once), and the cross-stack checkpoint test with both interpreters; and the mmdeploy tests
# on the legacy stack with mmdeploy 1.3.1 (its own venv, no mmcv build).
VENV ?= .venv
LEGACY_VENV ?= .venv-legacy
MMDEPLOY_VENV ?= .venv-mmdeploy
PY := $(VENV)/bin/python
LEGACY_PY := $(LEGACY_VENV)/bin/python
MMDEPLOY_PY := $(MMDEPLOY_VENV)/bin/python

.PHONY: setup setup-legacy setup-mmdeploy test test-current test-legacy test-mmdeploy demo \
	clean
setup:
	bash tools/setup_env.sh

setup-legacy:
	VENV=$(LEGACY_VENV) bash tools/setup_env.sh --stack legacy

setup-mmdeploy:
	VENV=$(MMDEPLOY_VENV) bash tools/setup_env.sh --stack mmdeploy

# The three suites share the cores: each gets a third of them (at least one). With torch's
# default (every core each) they oversubscribe them, and OpenMP's waiting threads take the
# time of the working ones.
SUITE_THREADS := $(shell echo $$(( ($$(nproc) + 2) / 3 )))
test:
	$(MAKE) -j3 --output-sync=target setup setup-legacy setup-mmdeploy
	OMP_NUM_THREADS=$(SUITE_THREADS) $(MAKE) -j3 --output-sync=target test-legacy test-mmdeploy \
		test-current

test-current: setup
	$(PY) -m pytest tests -q --durations=40 -m "not legacy_stack_only"

# torch 2.1 + numpy 1.26: the whole suite but the stack-independent tests the current suite
# runs and the ones only the current stack has (a setuptools-free install); the
# stack-independent tests placed here to balance the suites' time (legacy_stack_only); and
# the cross-stack test, driving the current stack's interpreter too.
test-legacy: setup-legacy setup
	MMSEG_INCNEXT_OTHER_PYTHON=$(abspath $(PY)) $(LEGACY_PY) -m pytest tests -q --durations=40 \
		-m "not current_stack_only and not stack_independent"

# mmdeploy's export and its ONNX Runtime backend and SDK against PyTorch (the other stacks
# skip tests/test_deploy/test_mmdeploy.py: they have no mmdeploy).
test-mmdeploy: setup-mmdeploy
	$(MMDEPLOY_PY) -m pytest tests/test_deploy/test_mmdeploy.py -q

demo: setup
	$(PY) tools/run_demo.py

clean:
	rm -rf $(VENV) $(LEGACY_VENV) $(MMDEPLOY_VENV) work_dirs
