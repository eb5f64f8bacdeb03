# The front door: `make run` serves on the embedded default, `make test` runs the whole suite.
# `make run RUN_ARGS="--bind 127.0.0.1:9000"` (or OPERATOR_BIND=...) listens elsewhere; `make demo`
# finds it there by itself, or is told: `make demo URL=http://HOST:PORT` (DEMO_ARGS for more).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test demo bench bench-engine venv clean

$(STAMP): setup.py requirements_dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements_dev.txt
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/operator-service run $(RUN_ARGS)

test: $(STAMP)
	$(BIN)/ruff check operator_service tests bench
	$(BIN)/ruff format --check operator_service tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/operator-service demo $(if $(URL),--url '$(URL)') $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-engine: $(STAMP)
	$(BIN)/python -m bench.engine $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .operator-data .bench *.egg-info
