# Two commands for a newcomer: `make book` and `make test`. Both create .venv when missing.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
STAMP := $(VENV)/.installed

.PHONY: install test book chapter bench lint clean

# Reinstall whenever the dependency list changes. pip's chatter (index warnings, setuptools
# deprecation notices) goes to .venv/install.log, which is printed only if the install fails.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing svae_core and its pinned dependencies into $(VENV) (log: $(VENV)/install.log) ..."
	@{ $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -e '.[dev]'; } \
		> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@$(PY) -c "import svae_core, jax, flax, optax, dynamax, papermill, jupyter_book"
	@touch $@

install: $(STAMP)

# Two workers, whole files each (the book's tests share one smoke build): most of the suite is
# XLA compiling, which is single-threaded, so two cores halve the wall time.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=10

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
