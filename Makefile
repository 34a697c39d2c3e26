# One command each, doing all set-up on a fresh machine (a virtual environment in .venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKERS ?= 2

.PHONY: install test test-slow demo clean device-bundle

DEMO_WORKDIR ?= runs/demo

# The demo needs only the library; the tests add pytest and the parity-test extras (torch CPU,
# diffusers), which the library itself never imports.
$(VENV)/.installed-lib: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-lib
	$(PY) -m pip install -e ".[test,interop]"
	touch $@

install: $(VENV)/.installed-test

# The default test run (CI runs exactly this): the linter (ruff.toml), then everything but the
# tests marked slow. --dist loadscope keeps a module's tests on one worker, so a module's trained
# fixture (a tiny base, a tiny family) is built once, not once per worker.
test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(WORKERS) --dist loadscope --no-loadscope-reorder -m "not slow" -q \
		--durations=15

# The slow tests (longer training / multi-process runs).
test-slow: $(VENV)/.installed-test
	$(PY) -m pytest -n $(WORKERS) -m "slow" -q

# The main job on the embedded default: starting from the shipped text-to-image base of the
# synthetic cartoon world (nuwa_xl_jax/assets/synthetic_base), train the T-KLVAE's temporal layers,
# the global and the local MTD, then generate a 226-frame video from
# configs/storyboards/cartoon.txt (its measured time: the README's table, the one place it is
# stated).
# Running it again resumes (or, once done, only prints where the outputs are).
demo: $(VENV)/.installed-lib
	$(PY) -m nuwa_xl_jax.train --config=configs/synthetic.py --workdir=$(DEMO_WORKDIR)

# What benchmarks/device_check.py needs beyond an accelerator machine's jax, flax, optax, orbax,
# absl and numpy: ml_collections, as a pure-Python wheel that the script imports from
# .device_bundle/ (git-ignored, well under 64 MiB) without installing anything there.
device-bundle: $(VENV)/.installed-lib
	rm -rf .device_bundle && mkdir -p .device_bundle
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		-d .device_bundle ml_collections
	du -sh .device_bundle

clean:
	rm -rf $(VENV) .pytest_cache
