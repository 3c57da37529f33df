# `make test` does all the set-up from nothing: virtual environment, install, tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-slow test-gpu lint demo bench-gpu reproduce docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,all]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples

bench-gpu: $(STAMP)
	$(PY) benchmarks/gpu.py --out benchmarks/results/gpu

reproduce: $(STAMP)
	$(PY) benchmarks/papers.py

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

demo: $(STAMP)
	$(VENV)/bin/scoresde demo

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
