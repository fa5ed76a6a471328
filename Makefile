# The two commands of the README: `make run` and `make test`. Both create .venv and install
# requirements.txt on first use (and again whenever requirements.txt changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
HOST ?= 127.0.0.1
PORT ?= 8501
WORKSPACE ?= demo
PYTEST_ARGS ?=

.PHONY: setup setup-cluster run test bench demo-assets

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

setup: $(STAMP)

# the optional Ray extra for sweeps on a cluster (python -m repair sweep ... --executor ray)
setup-cluster: setup
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-cluster.txt

run: setup
	$(PY) -m workspace info --workspace $(WORKSPACE)
	$(PY) -m streamlit run app.py --server.address $(HOST) --server.port $(PORT) --server.fileWatcherType none -- --workspace $(WORKSPACE)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m tests.benchmarks

# Regenerate the shipped demo weights (assets/demo_shapes.pt) from scratch.
demo-assets: setup
	$(PY) -m workspace.demo build
