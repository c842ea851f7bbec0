# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip --disable-pip-version-check
SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip prints a harmless warning per package about missing local indexes on these machines.
QUIET_PIP := { grep -vE "^WARNING: Location|BuildBackendWarning|^ *$$" || true; }

.PHONY: install browser demo test test-fast bench mlflow-ui lint format clean help

help:
	@echo "make demo    - set up .venv and run the end-to-end demo (tiny models, CPU)"
	@echo "make test    - set up .venv and run the whole test suite"
	@echo "make test-fast - only the fast unit tests (skips tests marked slow)"
	@echo "make bench   - benchmarks; results in bench/results/*.json"
	@echo "make mlflow-ui - MLflow UI on http://127.0.0.1:5000 over mlruns/ (Ctrl-C stops)"
	@echo "make lint    - ruff check + format check"
	@echo "make clean   - remove generated data (models, registry, outputs) and .venv"

# torch==2.13.0 is pinned in pyproject.toml: the CPU build on disk; anything looser pulls CUDA.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	$(PIP) install -q -e '.[dev]' 2>&1 | $(QUIET_PIP)
	$(PY) -c "import sdaas, models, torch, apache_beam, diffusers, lightgbm, mlflow, confluent_kafka"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sdaas demo

# the browser test drives the system Chromium (Debian's packages; root here and in CI)
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "installing chromium and chromium-driver (the browser test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

test: $(STAMP) browser
	$(PY) -m pytest; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): the suite is missing" >&2; fi; \
	  exit $$rc

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) bench/profile_bench.py
	$(PY) bench/predictor_bench.py
	$(PY) bench/scheduler_bench.py
	$(PY) bench/serving_bench.py
	$(PY) bench/engine_bench.py
	$(PY) bench/sim_to_real_bench.py
	$(PY) bench/fleet_bench.py
	$(PY) bench/ray_bench.py

mlflow-ui: $(STAMP)
	mkdir -p mlruns/artifacts
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server \
	  --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
	  --default-artifact-root $(CURDIR)/mlruns/artifacts \
	  --host 127.0.0.1 --port 5000 --workers 1

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) data/models data/registry data/outputs
