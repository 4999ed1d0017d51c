# Quick start: `make repro` (the default suite, end to end) and `make test` (the whole test suite).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

.PHONY: install repro repro-dvc rehearse test test-fast dataset dag ui mlflow-png snakemake clean-runs

install: $(STAMP)

# Reinstall only when the project's requirements change; a second run reuses the environment. --no-compile: Python
# compiles a module's bytecode when it is first imported, not all ~40,000 files of the dependencies up front (measured
# on one core: install 183 -> 107 s; the first import of torch, torchvision, MLflow, Accelerate, clean-fid and
# matplotlib then takes 15.7 s instead of 5.5, once).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile -e '.[test]'
	@touch $(STAMP)

# Fashion-MNIST from the Debian package when it is missing and we can install it; else say how.
dataset:
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	    sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; \
	  else \
	    echo "note: Fashion-MNIST not found in $(FMNIST); install it with 'sudo apt-get install dataset-fashion-mnist'"; \
	    echo "      (or let the download stage fetch it: torchvision downloads it where there is internet)"; \
	  fi; \
	fi

dag: install
	$(BIN)/python -m pipeline dag

# The DAG of dvc.yaml, run by Snakemake on every core, one stage per core with one thread each (measured on 2 cores:
# two 1-thread train steps side by side give 1.41x the throughput of one 2-thread step). DVC decides what is stale:
# `pipeline stale` lists the outputs of every stage that `dvc status` names or whose provenance stamp differs from its
# inputs' fingerprint, and Snakemake is forced to rerun them (its own file-time triggers add the rest). Then
# `pipeline commit` records in dvc.lock only stages whose outputs were made by their current code, params and data,
# refusing the others by name (exit 1), so that `dvc status` / `dvc repro` see the results as theirs.
# `make repro-dvc` (= `dvc repro`) runs the same stages one at a time.
CORES ?= $(shell nproc 2>/dev/null || echo 2)
SUITE ?= default
repro: install dataset dag .dvc/config
	@stale="$$($(BIN)/python -m pipeline stale --suite $(SUITE))" && \
	  OMP_NUM_THREADS=1 $(BIN)/snakemake -c $(CORES) --config suite=$(SUITE) $${stale:+--forcerun $$stale}
	$(BIN)/python -m pipeline commit --suite $(SUITE)
	$(BIN)/dvc status $(if $(filter default,$(SUITE)),dvc.yaml,pipelines/$(SUITE)/dvc.yaml)

# The dress rehearsal of a suite before its GPU hours (README, "Dress rehearsal"): every stage of its DAG at miniature
# scale on this machine's CPUs, on the real dataset where data/raw/<dataset> exists, else on its synthetic stand-in,
# as suite rehearsal-$(SUITE) (pipelines/, runs/ and reports/rehearsal-$(SUITE)/); then every report cell is checked.
rehearse: install
	$(BIN)/python -m pipeline rehearse --suite $(SUITE) --cores $(CORES)

repro-dvc: install dataset dag .dvc/config
	$(BIN)/dvc repro

.dvc/config:
	$(BIN)/dvc init --no-scm -q 2>/dev/null || $(BIN)/dvc init -q

# One pytest worker per core, each taking whole test files (module fixtures such as the end-to-end smoke repro run
# once), the longest files first (tests/conftest.py LONGEST_FIRST; --no-loadscope-reorder keeps that order, where
# pytest-xdist would start the files with most tests first and leave the few-test, minutes-long rehearsal file to the
# end); the SLURM file last, its run started in the background at the session's start (tests/slurm_background.py).
# `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= $(CORES)
test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -x --timeout=900 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The inner loop: every test file but the slow ones (conftest.SLOW_FILES: end-to-end runs, trainings, subprocess
# stages, the browser), `make test` runs everything.
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -x --timeout=300 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow"

snakemake: install dataset
	OMP_NUM_THREADS=1 $(BIN)/snakemake -c $(CORES)

# MLflow's UI over the project's SQLite store (or $MLFLOW_TRACKING_URI), on loopback only: http://127.0.0.1:5000
# (`make ui MLFLOW_PORT=5001` when 5000 is taken). Stop it with Ctrl-C. It prints the URL of the suite's results:
# the "Model training" runs table, one row per experiment and sampler with FD, NFE and the sampler's settings.
MLFLOW_PORT ?= 5000
ui: install
	@echo "MLflow UI: http://127.0.0.1:$(MLFLOW_PORT)  (store: $(MLFLOW_TRACKING_URI))"
	@echo "results of suite $(SUITE): $$($(BIN)/python -m pipeline mlflow_view --suite $(SUITE) --base http://127.0.0.1:$(MLFLOW_PORT) 2>/dev/null || echo '(none yet: run the suite)')"
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(MLFLOW_PORT) --backend-store-uri $(MLFLOW_TRACKING_URI)

# reports/<suite>/mlflow.png: that results view in headless Chromium (a temporary server over the store). After
# `make repro`: the report stage rewrites reports/<suite>/ and drops it; .dvcignore keeps it out of DVC's hash.
mlflow-png: install
	$(BIN)/python -m pipeline mlflow_view --suite $(SUITE) --screenshot reports/$(SUITE)/mlflow.png
