# Quickstart targets: `make run` plans the bundled sample city, `make test` runs every test.
# Both create the virtualenv .venv and install the project into it when needed.
# `make test` is also the CI gate (.ci/run): ruff, the system packages the tests need
# (tests/system-deps.sh), mypy, then the tests with branch coverage, failing below
# COV_FLOOR percent (the level measured when the gate was set; only ever raised), on
# WORKERS processes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
OUT ?= out/sample
COV_FLOOR := 94
# pytest-xdist workers: one per core, at most 4 (each may start its own PostgreSQL server
# and Chromium); a test module stays on one worker (its module-wide servers are shared)
WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[api,test,lint,postgres,dask,assess,explore,streets]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/matcher plan --needs data/sample/needs.csv --partners data/sample/partners.csv \
		--neighborhoods data/sample/neighborhoods.geojson --out $(OUT) --report
	@echo "outputs: $(OUT)/ (assignments.csv, clusters.csv, need_clusters.csv, unmet.csv, gaps.csv, gaps.geojson, plan.geojson, summary.json, report.html)"

test: lint
	tests/system-deps.sh
	$(BIN)/mypy matcher matcher_api api.py
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --cov \
		--cov-report=term-missing:skip-covered --cov-fail-under=$(COV_FLOOR)

lint: $(VENV)/.installed
	$(BIN)/ruff check .

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/stages.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis .mypy_cache .ruff_cache .coverage
