# Two commands for a newcomer: `make book` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
STAMP := $(VENV)/.installed

.PHONY: install test book chapter bench lint clean

# Reinstall whenever the dependency list changes; the pip config on some machines prints
# harmless "Location ... is ignored" warnings, filtered here.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing svae_core and its pinned dependencies into $(VENV) ..."
	@$(PY) -m pip install -q --upgrade pip 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@$(PY) -m pip install -q -e '.[dev]' 2>&1 | { grep -v -e "is ignored: it is neither" -e "BuildBackendWarning" || true; }
	@$(PY) -c "import svae_core, jax, flax, optax, dynamax, papermill, jupyter_book"
	@touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

book: $(STAMP)
	$(PY) book/build.py --profile $(PROFILE)

# Rerun one chapter: make chapter NAME=message_passing PROFILE=full
chapter: $(STAMP)
	$(PY) book/build.py --profile $(PROFILE) --only $(NAME)

bench: $(STAMP)
	$(PY) benchmarks/smoother.py

lint: $(STAMP)
	$(VENV)/bin/ruff check svae_core tests benchmarks book

clean:
	rm -rf _build book/_executed
