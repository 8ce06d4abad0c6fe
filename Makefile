# Two commands a newcomer needs: `make run` and `make test`. Everything else installs itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-scaleout lint format migrate messages bench bench-page bench-documents bench-gateway

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime $@

migrate: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --noinput

run: migrate
	$(BIN)/python manage.py assistants import assistant/personas/examples/assistants.yaml --keep-existing
	$(BIN)/daphne -b $(HOST) -p $(PORT) config.asgi:application

# The streaming, resume and fault tests a second time with every fast path off
# (config/fastpaths): the libraries' public paths must hold the same guarantees.
PUBLIC_PATH_TESTS ?= tests/test_streaming.py tests/test_resume.py tests/test_recovery.py \
	tests/test_stream_endpoint.py tests/test_llm.py tests/security/test_answer_task_faults.py
test: $(VENV)/.dev
	$(BIN)/python -m pytest
	ASSISTANT_FAST_PATHS=off $(BIN)/python -m pytest $(PUBLIC_PATH_TESTS)

# The scale-out suite (tests/scaleout): two daphne processes over PostgreSQL and Redis.
# Its Redis database is flushed: not 0. `make test` skips it, saying why.
SCALEOUT_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
SCALEOUT_REDIS_URL ?= redis://127.0.0.1:6379/5
test-scaleout: $(VENV)/.dev
	ASSISTANT_SCALEOUT_TESTS=1 DATABASE_URL=$(SCALEOUT_DATABASE_URL) REDIS_URL=$(SCALEOUT_REDIS_URL) \
		$(BIN)/python -m pytest tests/scaleout

# ESLint runs where Node is installed (package.json pins it; installed on first use).
NPM := $(shell command -v npm 2>/dev/null)
node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

lint: $(VENV)/.dev $(if $(NPM),node_modules/.installed)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(if $(NPM),npx --no-install eslint --max-warnings 0 .,@echo "ESLint skipped: Node is not installed")

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

messages: $(VENV)/.dev
	$(BIN)/python manage.py makemessages -l de --ignore=.venv --ignore=tests --ignore=bench --no-obsolete
	cd locale && ../$(BIN)/python ../manage.py compilemessages

# Streaming benchmark (not a test): N concurrent answers per round, Assistant beside a
# classic pass-through proxy (requirements-bench.txt), then IDLE open event streams.
$(VENV)/.bench: requirements.txt requirements-bench.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-bench.txt
	touch $(VENV)/.runtime $@

STREAMS ?= 10 50 100 150 200
IDLE ?= 1000
# REPEAT=3: each round three times per system, in turn; the figures of the median run.
REPEAT ?= 1
# make bench SCALEOUT=1: also Assistant on PostgreSQL and Redis (the scale-out profile; a
# database and a key prefix of its own per round) beside the default profile.
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/6
bench: $(VENV)/.bench
	$(BIN)/python -m bench.run --streams $(STREAMS) --idle $(IDLE) --repeat $(REPEAT) \
		$(if $(SCALEOUT),--scaleout $(SCALEOUT_DATABASE_URL) $(BENCH_REDIS_URL))

# The chat page's benchmark (bench/page.py): opening 500 messages, and the browser's main
# thread while a 10,000-token answer streams at 50 tokens/s (about 4 minutes).
bench-page: $(VENV)/.dev
	$(BIN)/python -m bench.page

# The documents benchmark (bench/documents.py): ingestion in pages/s, retrieval at
# 100,000 chunks on SQLite, the time to first token a retrieved answer adds (~10 min).
bench-documents: $(VENV)/.dev
	$(BIN)/python -m bench.documents

# The gateway benchmark (bench/gateway.py): N streamed completions through /v1/ beside N
# answers through the page's path, CPU per token of each (~5 min).
bench-gateway: $(VENV)/.bench
	$(BIN)/python -m bench.gateway
