# `make test` sets up .venv (idempotent; the first run builds mmcv, ~10 min) and runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test demo clean
setup:
	bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests -q

demo: setup
	$(PY) tools/run_demo.py

clean:
	rm -rf $(VENV) work_dirs
