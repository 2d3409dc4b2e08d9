# Every pip call goes through constraints.txt (torch==2.13.0, the CPU wheel).
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/pip install -q -c constraints.txt
STAMP   := $(VENV)/.stamp-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
HOST    ?= 127.0.0.1
PORT    ?= 8080
PYTEST  := $(BIN)/pytest -n 2 --dist loadgroup

.PHONY: run install dev test test-fast lint bench clean promtool

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e '.[dev]'
	rm -f $(VENV)/.stamp-*; touch $(STAMP)

install: $(STAMP)

## make run: install and serve on 127.0.0.1:8080 with SQLite + ./.modelplane, example model included
run: install
	$(BIN)/modelplane serve --host $(HOST) --port $(PORT) --example --example-embeddings

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# promtool (Debian's prometheus package) checks /metrics and exported alert rules in the tests.
promtool:
	@command -v promtool >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null)

## make test: lint + the whole suite (CI runs this)
test: lint promtool
	$(PYTEST)

## make test-fast: everything but the slow end-to-end tests
test-fast: install promtool
	$(PYTEST) -m "not slow"

## make bench: every benchmark (bench/serving.py needs wrk; it makes MLServer's venv itself, once)
bench: install
	command -v wrk || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .modelplane .pytest_cache .mypy_cache .ruff_cache
