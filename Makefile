# ltemfactory developer targets. Quick start: `make demo`, `make test`.
#
#   make venv       .venv with Python >= 3.11 and the project installed (-e '.[dev,ui,dm,slurm]')
#                   with the exact versions in constraints.txt; reinstalls only when
#                   pyproject.toml or constraints.txt change (stamp file .venv/.installed)
#   make demo       run the workflow on configs/config.yaml with the local profile
#   make lint       snakemake --lint, snakefmt --check, ruff check
#   make test       lint + pytest (fast tests, a few minutes)
#   make test-integration  minutes-long workflow tests: kill-and-resume, determinism, and
#                   the SLURM cluster run (installs Debian's slurm + munge: needs root)
#   make lock       regenerate constraints.txt from a fresh venv (pip freeze --exclude-editable)
#   make clean      remove results/ and .snakemake/ (keeps .venv)
#   make distclean  clean + remove .venv
#
# Extra pip options (e.g. an index that serves CPU-only torch wheels) go in PIP_ARGS:
#   make venv PIP_ARGS='--extra-index-url https://download.pytorch.org/whl/cpu'

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
PIP_ARGS ?=
# Rule shells call `ltemfactory`: put the venv first on PATH for everything we run.
RUN := PATH="$(BIN):$$PATH"

.PHONY: help venv demo lint test test-integration lock clean distclean

help:
	@sed -n '1,16p' Makefile

venv: $(STAMP)

$(VENV)/bin/python:
	@test -n "$(PYTHON)" || { echo "error: python3.11 (or python3 >= 3.11) not found on PATH" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "error: $(PYTHON) is $$($(PYTHON) -V 2>&1); ltemfactory needs Python >= 3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install $(PIP_ARGS) -c constraints.txt $(TORCH) -e '.[dev,ui,dm,slurm]'
	touch $@

demo: venv
	$(RUN) $(BIN)/snakemake --profile configs/profiles/local --configfile configs/config.yaml

lint: venv
	$(RUN) $(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(RUN) $(BIN)/pytest

test-integration: venv
	$(RUN) $(BIN)/pytest -m integration

# Regenerate constraints.txt: fresh venv, unconstrained install of the current pyproject
# requirements (torch pinned), then freeze everything except the project itself. The +cpu
# style local version label is stripped so the pin matches whichever torch build the index
# serves. Review the diff, then run `make venv test`.
lock:
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/pip" install $(PIP_ARGS) $(TORCH) -e '.[dev,ui,dm,slurm]'; \
	{ printf '%s\n' \
	    '# Exact versions of every third-party package in the dev/demo venv (Python 3.11, Linux x86_64).' \
	    "# Used as \`pip install -c constraints.txt $(TORCH) -e '.[dev,ui,dm,slurm]'\` by \`make venv\`." \
	    '# Regenerate with `make lock` (fresh venv, `pip freeze --exclude-editable`); do not edit by hand,' \
	    '# except that torch is written without its local version label (+cpu) so pip can pick the' \
	    '# CPU wheel from a local wheel directory or the matching build from the configured index.'; \
	  "$$tmp/venv/bin/pip" freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'; \
	} > constraints.txt.new; \
	mv constraints.txt.new constraints.txt
	@echo "constraints.txt regenerated; review 'git diff constraints.txt', then run 'make venv test'."

clean:
	rm -rf results .snakemake

distclean: clean
	rm -rf $(VENV)
