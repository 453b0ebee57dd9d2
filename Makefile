# advrec: `make demo` runs the main job, `make test` the test suite; both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/ml-100k/u.data),)
export ADVREC_DATA_DIR ?= $(SHARED_DATA)
endif
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
PYTEST_WORKERS ?= 2

.PHONY: venv demo test bench lint clean

venv: $(STAMP)

# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev,text,privacy,serve,ann]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/advrec demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -q

bench: $(STAMP)
	$(BIN)/python benchmarks/recbole_ml1m.py
	$(BIN)/python benchmarks/cold_start.py
	$(BIN)/python benchmarks/gan.py
	$(BIN)/python benchmarks/augment.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/advrec

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
