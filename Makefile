# advrec: `make demo` runs the main job, `make test` the test suite; both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
EXTRAS := dev,text,privacy,serve,ann,federated,track
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/ml-100k/u.data),)
export ADVREC_DATA_DIR ?= $(SHARED_DATA)
endif
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
PYTEST_WORKERS ?= 2
# torch/BLAS threads per test worker: 2 workers × 1 thread fill 2 cores; 2 × 2 oversubscribe them (the suite took
# 3 min 54 s instead of 2 min 7 s). Results do not depend on it (tests/test_determinism.py).
PYTEST_THREADS ?= 1

.PHONY: venv demo test bench lint lock clean

venv: $(STAMP) $(VENV)/advrec.toml

# The data home of this install: the project's shared data when it is there, so that `advrec ...` typed in a
# shell finds the datasets as `make` does (read by advrec.data.registry; $ADVREC_DATA_DIR still wins).
$(VENV)/advrec.toml: $(STAMP)
	@if [ -f "$(SHARED_DATA)/ml-100k/u.data" ]; then \
	  printf '# written by make: where advrec finds its datasets\n[data]\nhome = "%s"\n' "$(SHARED_DATA)" > $@; \
	else touch $@; fi

# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build. Every version comes from
# requirements.lock, so a fresh install today resolves what the last `make lock` resolved.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(LOCK) "torch==2.13.0"
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[$(EXTRAS)]"
	touch $(STAMP)

# Re-resolves every dependency from pyproject.toml in a throwaway virtualenv and writes the exact versions to
# requirements.lock. Run it on purpose, then run `make test` and commit the lock on its own.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q "torch==2.13.0"
	.lock-venv/bin/python -m pip install -q -e ".[$(EXTRAS)]"
	{ echo "# Exact versions of every dependency of advrec[$(EXTRAS)], written by \`make lock\`; do not edit."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^#'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .lock-venv

demo: venv
	$(BIN)/advrec demo

test: venv
	OMP_NUM_THREADS=$(PYTEST_THREADS) MKL_NUM_THREADS=$(PYTEST_THREADS) \
	  $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -q

# Peers (implicit) are installed here, not for the tests. SANSA's rows need advrec[sansa] and SuiteSparse.
bench: $(STAMP)
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[$(EXTRAS),bench]"
	$(BIN)/python benchmarks/recbole_ml1m.py
	$(BIN)/python benchmarks/bpr_peers.py
	$(BIN)/python benchmarks/ials.py
	$(BIN)/python benchmarks/gowalla.py
	$(BIN)/python benchmarks/lightgcn_curve.py
	$(BIN)/python benchmarks/data_scale.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/distributed.py
	$(BIN)/python benchmarks/cold_start.py
	$(BIN)/python benchmarks/gan.py
	$(BIN)/python benchmarks/augment.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/advrec

clean:
	rm -rf $(VENV) .lock-venv .pytest_cache .ruff_cache .mypy_cache
