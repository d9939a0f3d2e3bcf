# cloudnn developer workflow. CI runs `make test` (see .ci/run).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/python -m pip
# torch first and pinned: a bare `torch` requirement would pull a CUDA build
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed
# the cloud provider distributions in this repository, with their emulators
PROVIDERS := $(wildcard providers/*/pyproject.toml)

.PHONY: demo test bench lint format venv install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt $(PROVIDERS)
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -c constraints.txt -e ".[dev]" \
		$(foreach p,$(PROVIDERS),-e "$(dir $(p))[testing]")
	touch $(STAMP)

venv install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/run_demo.py

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	@# each provider's suite in a session of its own: every test folder has a
	@# conftest.py, and one session would import only the first as `conftest`
	@set -e; for p in $(dir $(PROVIDERS)); do $(BIN)/python -m pytest -q $$p; done

bench: $(STAMP)
	$(BIN)/python benchmarks/cli_startup.py
	$(BIN)/python benchmarks/train_overhead.py
	$(BIN)/python benchmarks/serve.py
	$(BIN)/python benchmarks/polling.py
	$(BIN)/python benchmarks/plan.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
