# django-freshcache: developer and CI entry points.  `make help` lists the targets.
#
# Everything is installed by the project itself: virtualenvs (scripts/venv.sh, skipped
# when up to date), and redis-server / postgresql via apt-get when missing
# (scripts/services.sh).  Test runs start private servers on free loopback ports and
# stop them afterwards.
#
# Knobs for the test targets (see scripts/test-matrix.sh):
#   make test LEGS=main                      only the main leg
#   make test COMBOS=postgres-redis          one combination on every leg
#   make test EXTRA_COMBOS=all               all four combinations on dj42/dj6 too
#   make test PYTEST_ARGS='-x -k stamps'     extra pytest arguments

SHELL := /bin/bash
.DEFAULT_GOAL := help

LEGS ?= main dj42 dj6
COMBOS ?=
EXTRA_COMBOS ?= sqlite-locmem postgres-redis
PYTEST_ARGS ?=
export LEGS COMBOS EXTRA_COMBOS PYTEST_ARGS

VENV := .venv
PY := $(VENV)/bin/python

.PHONY: help venv venvs lint format test test-full test-quick services-shell \
	demo stress bench docs clean distclean

help: ## list the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-z-]+:.*## / { printf "  make %-14s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

venv: ## create/update .venv (Python 3.11, Django 5.2, extras test+lint)
	@scripts/venv.sh main

venvs: venv ## create/update the venvs of every leg
	@scripts/venv.sh dj42
	@scripts/venv.sh dj6

lint: venv ## ruff check, ruff format --check, mypy
	@scripts/lint.sh

format: venv ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Lint runs first; the tests run even when lint fails, and either failing fails the run.
test: ## lint, then every leg x combination with private PostgreSQL + Redis
	@scripts/test-matrix.sh --lint

test-full: ## like test, with all four combinations on the extra legs too
	@EXTRA_COMBOS=all scripts/test-matrix.sh --lint

test-quick: ## main leg, sqlite + locmem only: no servers, no lint
	@LEGS=main COMBOS=sqlite-locmem scripts/test-matrix.sh

services-shell: venv ## a shell with private PostgreSQL + Redis and FRESHCACHE_TEST_* set
	@scripts/with-services.sh bash

demo: venv ## run the example project's demo
	@if [ -f example/manage.py ]; then \
		$(PY) example/manage.py demo; \
	else \
		echo "demo: not yet (arrives with the ORM caching issue)"; \
	fi

stress: venv ## long freshness suites (STRESS_STEPS per configuration), writes docs/reliability.md
	@scripts/stress.sh

# Knobs for bench (see docs/benchmarks.md): QUICK=1 (a ~2-minute smoke run), LONG=1 (adds the
# 10x longer Redis-memory run), LIBS=freshcache,cacheops (a subset), BENCH_ARGS (more run.py flags),
# BACKEND=cluster (freshcache on the Redis Cluster vs one Redis vs no cache: the page's
# "freshcache on Redis Cluster" section; the default, BACKEND=redis, leaves the cluster out).
QUICK ?=
LONG ?=
LIBS ?=
BACKEND ?=
BENCH_ARGS ?=
bench: ## freshcache vs no cache, cacheops, cachalot -> docs/benchmarks.md (QUICK=1, LONG=1, BACKEND=cluster)
	@benchmarks/bench.sh $(if $(filter 1 yes true,$(QUICK)),--quick) \
		$(if $(filter 1 yes true,$(LONG)),--long) $(if $(BACKEND),--backend $(BACKEND)) \
		$(if $(LIBS),--libs $(LIBS)) $(BENCH_ARGS)

docs: ## build the documentation into site/ (if mkdocs.yml exists)
	@if [ -f mkdocs.yml ]; then \
		scripts/venv.sh docs && .venv-docs/bin/mkdocs build --strict --site-dir site; \
	else \
		echo "docs: no mkdocs.yml yet"; \
	fi

clean: ## remove caches and build artefacts (keeps the venvs)
	rm -rf build dist site .mypy_cache .ruff_cache .pytest_cache .hypothesis .coverage htmlcov
	find . -path ./.git -prune -o -path './.venv*' -prune -o \
		\( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +

distclean: clean ## clean, and remove the venvs too
	rm -rf .venv .venv-dj42 .venv-dj6 .venv-docs
