# Two commands for a new user: `make test` and `make demo`. Both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of torch lies on this machine's disk; installing it first keeps pip from
# resolving a multi-GB CUDA build for the `torch>=2.6` requirement.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# two pytest workers (pytest-xdist), one thread each; a file's tests stay on one worker, in order
PYTEST_WORKERS ?= 2

.PHONY: venv test demo clean package-check

$(VENV)/.installed: setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests

demo: venv
	$(PY) examples/demo.py --output demo_output

# The package as users get it: a wheel (not the editable install) in a fresh environment, used
# from outside the source tree. setuptools never prunes build/lib, so it is cleared first (a
# module moved away would otherwise still ship).
PKG_VENV ?= build/package-check-venv
package-check: venv
	rm -rf build/lib build/bdist.* dist $(PKG_VENV)
	$(PY) -m pip wheel -q --no-deps -w dist .
	python3 -m venv $(PKG_VENV)
	$(PKG_VENV)/bin/pip install -q --upgrade pip
	$(PKG_VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(PKG_VENV)/bin/pip install -q dist/biomegatron_nemo-*.whl
	cd $(PKG_VENV) && ./bin/python $(CURDIR)/tests/packaging/check_installed.py

clean:
	rm -rf demo_output nemo_experiments .pytest_cache build dist

# ---------------------------------------------------------------------------------------------
# gpu-wheels: the Python 3.12 wheels the lent GPU machine lacks (it has torch, lightning,
# transformers, tokenizers, sentencepiece, safetensors, numpy, pytest; no network), into a
# git-ignored folder that travels with the working tree (64 MiB in all, tree included).
# benchmarks/gpu_install.py installs from it there without an index; docs/benchmarks/gpu.md
# says why each is here and what is deliberately left out (scipy/scikit-learn, wandb, datasets…).
GPU_WHEELS ?= gpu_wheels
GPU_PY_VERSION ?= 3.12
GPU_PIP ?= $(PY) -m pip
# pip matches platform tags exactly: list every manylinux level up to 2.28 (the machine's glibc is newer).
GPU_PLATFORMS := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
	manylinux2014_x86_64 manylinux_2_12_x86_64 manylinux2010_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64 any
# Hard imports of megatron-core, nemo.core / nemo.utils.exp_manager and this package.
GPU_BINARY_REQS := megatron-core==0.16.1 nemo_toolkit==3.0.0 lightning==2.4.0 \
	hydra-core==1.3.2 omegaconf==2.3.0 pysbd==0.3.4 psutil==7.2.2 wrapt==2.5.2 einops==0.8.2 \
	onnx==1.23.2 protobuf==7.36.2 ml_dtypes==0.6.0 pandas==3.1.1 python-dateutil==2.9.0.post0 six==1.17.0 \
	tensorboardX==2.6.5 nv-one-logger-core==2.3.1 nv-one-logger-training-telemetry==2.3.1 \
	nv-one-logger-pytorch-lightning-integration==2.3.1 StrEnum==0.4.15 overrides==7.7.0 toml==0.10.2 \
	pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 pip==26.3
# Published as source only: built here (pure Python, so the wheel fits any interpreter).
GPU_SDIST_REQS := seqeval==1.2.2 antlr4-python3-runtime==4.9.3

.PHONY: gpu-wheels
gpu-wheels:
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(GPU_PIP) download -q --no-deps --only-binary=:all: --python-version $(GPU_PY_VERSION) \
		--implementation cp $(addprefix --platform ,$(GPU_PLATFORMS)) -d $(GPU_WHEELS) $(GPU_BINARY_REQS)
	$(GPU_PIP) wheel -q --no-deps -w $(GPU_WHEELS) $(GPU_SDIST_REQS)
	# setuptools stages files in build/lib and never prunes it: a module moved away would ship.
	rm -rf build/lib build/bdist.*
	$(GPU_PIP) wheel -q --no-deps -w $(GPU_WHEELS) .
	@du -sh $(GPU_WHEELS); ls $(GPU_WHEELS)
