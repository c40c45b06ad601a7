# Two commands for a fresh machine (each sets itself up, idempotently):
#   make run    create .venv, install pinned dependencies, run the default workflow end to end
#   make test   same setup, then run the test suite
#   make lint   ruff check, snakefmt --check, snakemake --lint (CI runs it before make test)
VENV := .venv
PYTHON := $(VENV)/bin/python
CORES ?= 2
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run test lint dry-run report clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements.txt
	$(PYTHON) -m pip install --quiet --no-deps -e .
	touch $@

run: setup
	snakemake --cores $(CORES)
	snakemake --report results/report.zip

test: setup
	$(PYTHON) -m pytest -q

lint: setup
	ruff check .
	snakefmt --check .
	snakemake --lint

dry-run: setup
	for c in config/*.yaml; do snakemake -n --quiet rules --configfile $$c || exit 1; done

clean:
	rm -rf results/* .snakemake
