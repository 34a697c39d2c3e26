# One command each, doing all set-up on a fresh machine (a virtual environment in .venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKERS ?= 2

.PHONY: install test test-slow demo clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[test,interop]"
	touch $@

install: $(VENV)/.installed

# The default test run (CI runs exactly this): everything but the tests marked slow.
test: install
	$(PY) -m pytest -n $(WORKERS) -m "not slow" -q

# The slow tests (longer training / multi-process runs).
test-slow: install
	$(PY) -m pytest -n $(WORKERS) -m "slow" -q

clean:
	rm -rf $(VENV) .pytest_cache
