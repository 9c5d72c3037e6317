# Quickstart targets: `make run` plans the bundled sample city, `make test` runs every test.
# Both create the virtualenv .venv and install the project into it when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
OUT ?= out/sample

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[api,test,lint]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/matcher plan --needs data/sample/needs.csv --partners data/sample/partners.csv \
		--neighborhoods data/sample/neighborhoods.geojson --out $(OUT) --report
	@echo "outputs: $(OUT)/ (assignments.csv, clusters.csv, need_clusters.csv, unmet.csv, gaps.csv, gaps.geojson, plan.geojson, summary.json, report.html)"

test: $(VENV)/.installed
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check matcher tests examples benchmarks data

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/stages.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
