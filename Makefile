# Both entry points create .venv/ on first use, so each works on a fresh clone by itself.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint report-check clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/auditor demo --out reports/demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check auditor tests benchmarks
	$(VENV)/bin/ruff format --check auditor tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf reports/demo datasets/demo*
