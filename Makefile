# Soul Serve. `make serve` and `make test` set everything up on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
CONFIG ?= config/serve.local.yaml
POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/soul
export SOUL_DATA_DIR ?= $(CURDIR)/var
export HF_HUB_OFFLINE := 1

.PHONY: setup serve serve-postgres test test-fast chromium lint fuzz clean

setup: $(VENV)/.installed $(SOUL_DATA_DIR)/models/tiny-compact-x4.safetensors

# torch first and pinned: that takes the local CPU wheel instead of gigabytes of CUDA packages.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

# the last of the tiny models `soul models tiny` builds (it keeps those that exist)
$(SOUL_DATA_DIR)/models/tiny-compact-x4.safetensors: $(VENV)/.installed
	$(BIN)/soul models tiny

serve: setup
	PORT=$(PORT) SOUL_PUBLIC_BASE_URL=$${SOUL_PUBLIC_BASE_URL:-http://127.0.0.1:$(PORT)} \
		$(BIN)/soul serve --config $(CONFIG)

# The same graph with its catalog on PostgreSQL (the database is created if missing).
serve-postgres: setup
	SOUL_DATABASE_URL=$(POSTGRES_URL) $(BIN)/soul db init
	SOUL_DATABASE_URL=$(POSTGRES_URL) $(MAKE) serve

# Two workers: the unit tests in one, the modules on the shared graph in the other, and the
# modules with a Ray of their own in whichever is free first (tests/integration/conftest.py).
PYTEST_PARALLEL := -n 2 --dist loadgroup

test: setup chromium
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

# The unit tests and the integration tests on the one shared graph: without the modules that
# start their own (PostgreSQL, `soul serve`, the notebooks), which `make test` runs too.
test-fast: setup chromium
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not slow"

# The studio's browser tests drive Debian's Chromium (Playwright cannot download its own here);
# installed when missing and apt-get can (as root). Without it those tests skip, saying why.
chromium:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
		else echo "no Chromium: the browser tests will skip (apt-get install chromium chromium-driver)"; fi; \
	fi

# Schemathesis over every route of a running graph, longer than the run in `make test`.
FUZZ_EXAMPLES ?= 200
fuzz: setup
	SOUL_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SOUL_FUZZ_SEED=$$(date +%s) \
		$(BIN)/python -m pytest -s tests/integration/test_fuzz.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# `make bench-<scenario>` runs `soul bench <scenario>` (the scenarios: serve_app/bench/__init__.py);
# BENCH_ARGS adds options. The sizes the docs report, for the scenarios that take one:
bench-faults: BENCH_ARGS ?= --concurrency 8
bench-keys: BENCH_ARGS ?= --keys 10000 100000 1000000
bench-probes: BENCH_ARGS ?= --keys 100000 1000000
bench-rebuild: BENCH_ARGS ?= --keys 10000 100000
bench-projects: BENCH_ARGS ?= --keys 10000
bench-zipf: BENCH_ARGS ?= --requests 120 --concurrency 4
bench-%: setup
	$(BIN)/soul bench $* $(BENCH_ARGS)

clean:
	rm -rf $(SOUL_DATA_DIR) .pytest_cache .mypy_cache .ruff_cache
