# Both entry points create .venv/ on first use, so each works on a fresh clone by itself.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed

.PHONY: demo test test-quick lint report-check docs screenshots clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --no-cache-dir --upgrade pip
	$(VENV)/bin/pip install -q --no-cache-dir -e '.[test,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/auditor demo --out reports/demo

# -n auto: a worker per core, at most 4 (each holds torch and its fixtures, a few GB), each
# file on one worker (its module fixtures built once), each worker on one thread
# (tests/conftest.py); --durations: the slowest tests, so that what makes the suite long
# shows in every CI log
TEST_WORKERS := -n auto --maxprocesses 4 --dist loadfile
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q $(TEST_WORKERS) --durations=30

# The edit loop: every test not marked slow (about 2 minutes on 2 cores).
test-quick: $(STAMP)
	$(VENV)/bin/python -m pytest -q $(TEST_WORKERS) -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check auditor tests benchmarks
	$(VENV)/bin/ruff format --check auditor tests benchmarks
	$(VENV)/bin/mypy

# Render the demo's report and turn it into pictures a person can check:
# a headless Chromium screenshot of the HTML's first screen, and the PDF's pages as PNGs.
report-check: $(STAMP)
	test -f reports/demo/shortcut/summary.json || $(MAKE) demo
	$(VENV)/bin/auditor report reports/demo/shortcut
	command -v pdftoppm >/dev/null && command -v chromium >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q poppler-utils chromium)
	mkdir -p reports/report-check
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
		--disable-background-networking --disable-component-update --disable-sync \
		--user-data-dir=$$(mktemp -d) --window-size=1200,1400 \
		--screenshot=reports/report-check/html-first-screen.png \
		file://$(CURDIR)/reports/demo/shortcut/report.html
	pdftoppm -r 60 -png reports/demo/shortcut/report.pdf reports/report-check/pdf-page
	@echo "Pictures in reports/report-check/"

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(VENV)/bin/pip install -q --no-cache-dir -e '.[docs]'
	touch $(DOCS_STAMP)

# The documentation site (mkdocs.yml, docs/) into site/. --strict: a warning (a broken link,
# a page left out of the navigation, a docstring mkdocstrings cannot read) fails the build.
# NO_MKDOCS_2_WARNING silences the theme's banner about its own future, which is no warning
# about these docs.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

# The documentation's pictures of the demo's report (runs the demo first when there is none).
screenshots: $(STAMP)
	$(VENV)/bin/python docs/screenshots.py

clean:
	rm -rf reports/demo datasets/demo*
