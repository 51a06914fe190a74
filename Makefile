# finetune-stack: `make synth` and `make test` set everything up from nothing (Python venv + pinned Node/CDK CLI).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= config/teams.yaml
CDK_OUT ?= cdk.out

# The project's Node 22 and CDK CLI first: jsii then runs on a supported Node and prints no end-of-life banner.
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export JSII_NODE := $(CURDIR)/node_modules/.bin/node
# No network from the CLI: no notices fetch, no telemetry, no update check.
export CDK_DISABLE_CLI_TELEMETRY := true
export CDK_DISABLE_VERSION_CHECK := true
CDK := cdk --no-notices

VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

# make test: the whole suite. make test-fast: no synthesis and no training (the edit-test loop, ~1-2 minutes).
.PHONY: help deps synth test test-fast lint check-config schema snapshot-update diagram bench bench-train train-local clean

help:
	@echo "make synth            set up, synthesize $(CONFIG) with all rule packs, cfn-lint, summary table"
	@echo "make test             set up and run the test suite"
	@echo "make test-fast        the tests that need no synthesis and no training run (unit, handlers, contract)"
	@echo "make lint             ruff (lint and format check) and mypy, configured in pyproject.toml"
	@echo "make schema           regenerate config/teams.schema.json from stacks/settings.py"
	@echo "make snapshot-update  accept intended template changes into the test snapshots"
	@echo "make diagram          regenerate docs/architecture.png from the synthesized app"
	@echo "make train-local      fine-tune the packaged MiniLM on samples/sst2 on this CPU (about a minute)"
	@echo "make bench            synthesis benchmark (JSON); make bench-train: training throughput (JSON)"

$(VENV_STAMP): requirements.txt requirements-dev.txt training_code/requirements.txt $(wildcard requirements-models.txt)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	if [ -f requirements-models.txt ]; then $(PY) -m pip install --quiet --no-deps -r requirements-models.txt; fi
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

deps: $(VENV_STAMP) $(NODE_STAMP)

check-config: $(VENV_STAMP)
	$(PY) app.py --check $(CONFIG)

synth: deps check-config
	rm -rf $(CDK_OUT)
	$(CDK) synth --quiet --output $(CDK_OUT) -c config=$(CONFIG)
	$(PY) scripts/synth_report.py $(CDK_OUT)

test: deps
	$(PY) -m pytest

test-fast: deps
	$(PY) -m pytest -m "not synth and not training"

# Configuration in pyproject.toml: ruff's rules and line length, mypy's files and its strict packages.
lint: $(VENV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

schema: $(VENV_STAMP)
	$(PY) scripts/write_schema.py

snapshot-update: deps
	$(PY) -m pytest tests/unit/test_snapshots.py tests/unit/test_rule_packs.py --snapshot-update

diagram: deps
	$(PY) scripts/diagram.py

bench: deps
	$(PY) bench/synth.py

bench-train: $(VENV_STAMP)
	$(PY) bench/train_throughput.py --steps 5 --batch_size 8

# The packaged all-MiniLM-L6-v2, full fine-tuning on the shipped SST-2 sample; prints base vs fine-tuned metrics.
train-local: $(VENV_STAMP)
	rm -rf build/train-local
	$(PY) training_code/train.py --task classification --base_model local:minilm \
	  --train samples/sst2/train.jsonl --validation samples/sst2/validation.jsonl \
	  --epochs 2 --batch_size 32 --learning_rate 1.5e-4 --warmup_ratio 0.1 --max_seq_length 64 \
	  --save_steps 0 --logging_steps 10 --progress true \
	  --model_dir build/train-local/model --output_dir build/train-local/output \
	  --checkpoint_dir build/train-local/checkpoints
	$(PY) -c "import json; r = json.load(open('build/train-local/model/evaluation.json')); \
	  print(json.dumps({k: {m: v for m, v in r[k].items() if m != 'confusion_matrix'} for k in ('base', 'fine_tuned')}, indent=2))"

clean:
	rm -rf $(CDK_OUT) .pytest_cache
