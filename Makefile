# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8080
ROOT ?= data

.PHONY: run test lint fuzz bench bench-quick clean

# A compat-mode editable install: twistd finds plugins by scanning sys.path
# directories, which the default (PEP 660) editable mode hides.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=compat -e '.[test,lint]'
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

run: $(STAMP)
	mkdir -p $(ROOT)
	$(BIN)/twistd --nodaemon --pidfile= httpfstream --root=$(ROOT) --port=tcp:$(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Hostile input at CI's budget: 10,000 fuzzed requests and frames against a
# live server (make test runs 60); prints the cases per second.
FUZZ_EXAMPLES ?= 10000
fuzz: $(STAMP)
	HTTPFSTREAM_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s \
		tests/test_hostile.py -k test_malformed_input_never_hurts_others

lint: $(STAMP)
	$(BIN)/ruff check httpfstream
	$(BIN)/ruff format --check httpfstream
	$(BIN)/mypy httpfstream

# The benchmarks' load generator for the WebSocket scenarios (plain C).
bench/fastgen: bench/fastgen.c
	$(CC) -std=c11 -O2 -Wall -Wextra -o $@ $<

# The benchmark suite (docs/PERFORMANCE.md): a table, and bench/results.json.
bench: $(STAMP) bench/fastgen
	$(BIN)/python bench/run.py

# Small sizes, for CI: fails only when a follower is not byte-exact (or when
# the generator's checker misses a defect planted in its self-test).
bench-quick: $(STAMP) bench/fastgen
	bench/fastgen --selftest
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) build *.egg-info bench/fastgen
