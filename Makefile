# sessiond: `make run` starts everything locally, `make test` runs the test suite.
# Both build .venv from nothing but python3 + pip, and re-sync it only when
# pyproject.toml or uv.lock change (stamp file .venv/.synced).

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.synced
PYTEST_ARGS ?=

.PHONY: all run test chaos lint format bench bench-perf venv clean clean-data proto

all: test

$(STAMP): pyproject.toml uv.lock
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@test -x $(VENV)/bin/uv || $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv
	$(VENV)/bin/uv sync --frozen --quiet
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/sessiond dev

test: $(STAMP)
	$(VENV)/bin/pytest -q --durations=10 --ignore=tests/bench $(PYTEST_ARGS) tests

# the full chaos suite: 100+ faults from a printed seed under load, then a 10,000-connection
# reconnect storm (tests/chaos/run.py; CHAOS_ARGS="--seed N" reruns a schedule)
CHAOS_ARGS ?=
chaos: $(STAMP)
	$(VENV)/bin/python -m tests.chaos.run --faults 120 $(CHAOS_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	@set -e; for f in tests/bench/*.py; do \
		[ -e "$$f" ] || continue; \
		case "$$(basename "$$f")" in _*|conftest.py) continue;; esac; \
		echo "== $$f"; $(VENV)/bin/python "$$f"; \
	done

# regenerates gateway/grpc/sessiond_pb2*.py from gateway/grpc/sessiond.proto (committed)
proto: $(STAMP)
	$(VENV)/bin/python -m gateway.grpc.codegen

# issue 19's figures in one run (docs/benchmarks.md): every `RESULT` line, then a summary
bench-perf: $(STAMP)
	@set -e; log=$$(mktemp); \
	$(VENV)/bin/python tests/bench/bench_gateway.py 2>&1 | tee $$log; \
	$(VENV)/bin/python tests/bench/bench_runtime.py 2>&1 | tee -a $$log; \
	echo "== summary"; grep '^RESULT' $$log; rm -f $$log

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# removes the embedded Redis/PostgreSQL data of `make run`
clean-data:
	rm -rf .sessiond
