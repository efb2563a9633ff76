# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
ROOT ?= data

.PHONY: run test lint fuzz bench bench-quick clean

# Each target installs what it needs into .venv, from nothing: `make run` the
# package alone, `make test` (and fuzz, bench) the test extras too, `make
# lint` the lint extras. A stamp per set keeps repeated runs quick; a newer
# pyproject.toml installs again.
VENV_READY := $(VENV)/.venv-ready
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
LINT_STAMP := $(VENV)/.installed-lint

$(VENV_READY):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $@

# A compat-mode editable install: twistd finds plugins by scanning sys.path
# directories, which the default (PEP 660) editable mode hides. setuptools
# warns, in a box pip shows even with --quiet, that this mode is
# transitional; that one warning is filtered out (by its text, in the build
# backend and in pip), every other warning and error still shows.
EDITABLE_WARNING := ignore:Compat editable installs:UserWarning
define install
	PYTHONWARNINGS="$${PYTHONWARNINGS:+$$PYTHONWARNINGS,}$(EDITABLE_WARNING)" \
		$(BIN)/python -m pip install --quiet \
		--config-settings editable_mode=compat -e '.$(1)'
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@
endef

$(RUN_STAMP): pyproject.toml | $(VENV_READY)
	$(call install,)

$(TEST_STAMP): pyproject.toml | $(VENV_READY)
	$(call install,[test])

$(LINT_STAMP): pyproject.toml | $(VENV_READY)
	$(call install,[lint])

run: $(RUN_STAMP)
	mkdir -p $(ROOT)
	$(BIN)/twistd --nodaemon --pidfile= httpfstream --root=$(ROOT) --port=tcp:$(PORT)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Hostile input at CI's budget: 10,000 fuzzed requests and frames against a
# live server (make test runs 60); prints the cases per second.
FUZZ_EXAMPLES ?= 10000
fuzz: $(TEST_STAMP)
	HTTPFSTREAM_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s \
		tests/test_hostile.py -k test_malformed_input_never_hurts_others

lint: $(LINT_STAMP)
	$(BIN)/ruff check httpfstream
	$(BIN)/ruff format --check httpfstream
	$(BIN)/mypy httpfstream

# The benchmarks' load generator for the WebSocket scenarios (plain C and
# zlib). What it needs to build is listed in .ci/packages.txt under its
# comment; a machine without zlib's headers gets those Debian packages
# installed with apt-get (as root) first.
FASTGEN_PACKAGES = $(shell awk '/^# builds bench\/fastgen/ {on = 1; next} /^#/ {on = 0} on && NF' .ci/packages.txt 2>/dev/null)
bench/fastgen: bench/fastgen.c
	@echo '#include <zlib.h>' | $(CC) -E -x c - >/dev/null 2>&1 || { \
		echo "bench/fastgen needs zlib's headers: apt-get install $(FASTGEN_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $(FASTGEN_PACKAGES); }
	$(CC) -std=c11 -O2 -Wall -Wextra -o $@ $< -lz

# The benchmark suite (docs/PERFORMANCE.md): a table, and bench/results.json.
bench: $(TEST_STAMP) bench/fastgen
	$(BIN)/python bench/run.py

# Small sizes, for CI: fails only when a follower is not byte-exact (or when
# the generator's checker misses a defect planted in its self-test).
bench-quick: $(TEST_STAMP) bench/fastgen
	bench/fastgen --selftest
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) build *.egg-info bench/fastgen
