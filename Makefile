# Two commands for a new user: `make test` and `make demo`. Both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of torch lies on this machine's disk; installing it first keeps pip from
# resolving a multi-GB CUDA build for the `torch>=2.6` requirement.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: venv test demo clean

$(VENV)/.installed: setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: venv
	$(PY) examples/demo.py --output demo_output

clean:
	rm -rf demo_output nemo_experiments .pytest_cache
