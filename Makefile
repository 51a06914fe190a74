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

# make test: the whole suite. make test-fast: no synthesis, no training, no review fixtures (~1-2 minutes).
.PHONY: help deps synth test test-fast test-local lint test-multilora check-config schema snapshot-update diagram bench bench-train eval train-local clean review bootstrap-commands

help:
	@echo "make synth            set up, synthesize $(CONFIG) with all rule packs, cfn-lint, summary table"
	@echo "make test             set up and run the test suite"
	@echo "make test-local       finetune local run/serve/batch end to end on the synthesized pipelines (slow)"
	@echo "make test-fast        the edit-test loop: no synthesis, training, review fixtures or local runs"
	@echo "make review           what this change does to every stage vs BASE (default: merge base with main):"
	@echo "                      build/review/review.md (PR comment) + review.json; FAIL_ON=stateful-replacement,..."
	@echo "make bootstrap-commands  the cdk bootstrap --trust commands the delivery pipeline needs"
	@echo "make test-multilora   fine-tune two LoRA adapters and serve them from one base (slow, CPU)"
	@echo "make lint             ruff (lint and format check) and mypy, configured in pyproject.toml"
	@echo "make schema           regenerate config/teams.schema.json from stacks/settings.py"
	@echo "make snapshot-update  accept intended template changes into the test snapshots"
	@echo "make diagram          regenerate docs/architecture.png from the synthesized app"
	@echo "make train-local      fine-tune the packaged MiniLM on samples/sst2 on this CPU (about a minute)"
	@echo "make bench            synthesis benchmark (JSON); make bench-train: training throughput vs HF/TRL (JSON)"
	@echo "make eval             held-out quality with the first settings a user tries (JSON lines; long on a CPU)"

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

# The whole suite, the local pipeline runs and the two-adapter fine-tune included (about 14 minutes on 2 quiet cores).
test: deps
	$(PY) -m pytest

# The synthesized FineTune/BatchInfer pipelines run end to end on this machine (classifier, SmolLM2 LoRA, a spot
# interruption and the failure paths: real trainings, about 4.5 minutes on 2 cores; also in make test).
test-local: deps
	$(PY) -m pytest -m local

# The edit-test loop and the pull-request tier (the workflow runs make synth and make review itself): no
# synthesis, no real training runs, no review fixtures. main runs the full suite.
test-fast: deps
	$(PY) -m pytest -m "not synth and not training and not review and not local"

# Offline review of the working tree against BASE (a git ref; default: the merge base with main), every stack of
# every stage through the CDK's diff engine. The base synthesis is cached in build/review/cache by commit.
BASE ?=
FAIL_ON ?=
TEAM ?=
STAGE ?=
review: deps
	$(PY) scripts/review.py --config $(CONFIG) $(if $(BASE),--base $(BASE)) $(if $(FAIL_ON),--fail-on $(FAIL_ON)) \
	  $(if $(TEAM),--team $(TEAM)) $(if $(STAGE),--stage $(STAGE))

# The `cdk bootstrap --trust` commands the delivery pipeline needs, from the config's delivery section.
bootstrap-commands: $(VENV_STAMP)
	$(PY) scripts/bootstrap_commands.py $(CONFIG)

# Two LoRA fine-tunes on CPU and one base serving both (about a minute on 2 cores; also in make test).
test-multilora: deps
	$(PY) -m pytest -m multilora tests/e2e/test_multi_lora.py

# Configuration in pyproject.toml: ruff's rules and line length, mypy's files and its strict packages.
lint: $(VENV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

schema: $(VENV_STAMP)
	$(PY) scripts/write_schema.py

snapshot-update: deps
	$(PY) -m pytest tests/unit/test_snapshots.py tests/unit/test_rule_packs.py tests/delivery/test_delivery_pipeline.py::test_pipeline_snapshot --snapshot-update

diagram: deps
	$(PY) scripts/diagram.py

bench: deps
	$(PY) bench/synth.py

bench-train: $(VENV_STAMP)
	$(PY) bench/train_throughput.py --steps 6 --batch_size 8

# Dolly (SmolLM2 LoRA) and SST-2 (MiniLM) with the issue's settings, and the docstring-library second domain.
EVAL_CASES ?= dolly sst2 docs-library
EVAL_EXTRA ?=
eval: $(VENV_STAMP)
	$(PY) bench/quality.py $(EVAL_CASES) $(if $(EVAL_EXTRA),--extra "$(EVAL_EXTRA)")

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
