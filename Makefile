# Quick start:  make run   (set up and open the app on the bundled model)
#               make test  (set up and run the tests)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test bench setup setup-test lint-imports clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-app: pyproject.toml tools/install_torch.py | $(PY)
	$(PY) tools/install_torch.py
	$(PY) -m pip install -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml tools/install_torch.py | $(PY)
	$(PY) tools/install_torch.py
	$(PY) -m pip install -e '.[test,train]'
	touch $@

setup: $(VENV)/.stamp-app
setup-test: $(VENV)/.stamp-test

run: setup
	$(VENV)/bin/workbench

lint-imports: setup-test
	$(VENV)/bin/lint-imports

test: setup-test
	$(VENV)/bin/lint-imports
	QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 $(PY) -m pytest

bench: setup
	$(VENV)/bin/workbench bench --suite all --json bench-results/bench.json

clean:
	rm -rf $(VENV) build *.egg-info
