# framewire: every developer task, each creating .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Installed once per change of pyproject.toml: a second run reuses .venv.
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 65432

FUZZ_SECONDS ?= 180
SOAK_SECONDS ?= 60

.PHONY: serve test test-wire test-deploy test-compiled compiled compiled-wheel compiled-copy pure docs docs-check mutate mutate-smoke lint typecheck pytest bench soak fuzz clean

# A venv (.venv, or make serve's .venv-serve) with an up-to-date pip; never
# removed by make as an intermediate file.
.PRECIOUS: %/bin/python
%/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "framewire needs Python 3.11 or newer; $(PYTHON) is " + sys.version.split()[0])'
	$(PYTHON) -m venv $*
	$*/bin/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# make serve runs framewire as a user installs it (`pip install .`: the hot
# path compiled with mypyc where a C compiler is present, hatch_build.py), in
# a venv of its own: .venv holds the editable, pure-Python install that the
# tests and tools use. Reinstalled when a source file changes.
SERVE_VENV := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed
$(SERVE_STAMP): pyproject.toml hatch_build.py $(shell find src -name '*.py') | $(SERVE_VENV)/bin/python
	@echo "make serve: installing framewire into $(SERVE_VENV), its hot path compiled with mypyc"
	@echo "make serve: (about a minute the first time, and after a change to the source; then at once)"
	$(SERVE_VENV)/bin/python -m pip install --quiet .
	$(SERVE_VENV)/bin/framewire --version
	@touch $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	$(SERVE_VENV)/bin/framewire serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks fuzz dev examples docs/vectors mkdocs_hooks.py hatch_build.py
	$(BIN)/ruff format --check src tests benchmarks fuzz dev examples docs/vectors mkdocs_hooks.py hatch_build.py

typecheck: $(STAMP)
	$(BIN)/mypy --strict

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

# The core beside a plain struct+json loop, then every server beside the
# peers with one load client; writes docs/performance.md and its chart.
# framewire runs as `pip install .` builds it where a compiler is (the
# wheel's compiled modules, in compiled-copy); the targets also measure the
# pure-Python build (.venv's) in each pair.
bench: $(BENCH_STAMP) compiled-copy
	PYTHONPATH=build/compiled/src $(BIN)/python benchmarks/bench_core.py --json-out .venv/core-bench.json
	$(BIN)/python benchmarks/targets.py --build build/compiled/src
	PYTHONPATH=build/compiled/src $(BIN)/python benchmarks/calls.py --build build/compiled/src
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server from the system's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	PYTHONPATH=build/compiled/src $(BIN)/python benchmarks/pubsub.py --build build/compiled/src
	$(BIN)/python benchmarks/compare.py --build build/compiled/src --core .venv/core-bench.json

# The Wireshark dissector checked for real: installs tshark from the system's
# packages when it is missing, captures loopback traffic, dissects it.
test-wire: $(STAMP)
	@command -v tshark >/dev/null 2>&1 || { \
	  echo "installing tshark from the system's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark >/dev/null; }
	FRAMEWIRE_REQUIRE_TSHARK=1 $(BIN)/pytest -m wire tests/test_wireshark.py

# HAProxy for real in front of three framewire servers (deploy/haproxy.cfg),
# and in front of two brokers on a real Redis (--hub): installs haproxy and
# redis-server from the system's packages when they are missing.
test-deploy: $(STAMP)
	@command -v haproxy >/dev/null 2>&1 || { \
	  echo "installing haproxy from the system's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }
	@command -v systemd-socket-activate >/dev/null 2>&1 || { \
	  echo "installing systemd's tools from the system's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; }
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server from the system's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	FRAMEWIRE_REQUIRE_HAPROXY=1 $(BIN)/pytest -m deploy tests/test_deploy.py

# The hot path compiled with mypyc (docs/performance.md, "The compiled
# build"): the wheel pip builds from this tree (hatch_build.py), made to
# compile or fail (FRAMEWIRE_BUILD=compiled). Its compiled modules are what
# the targets below take, so that what CI tests is what `pip install` makes.
WHEEL_DIR := build/wheel
compiled-wheel: $(STAMP)
	rm -rf $(WHEEL_DIR)
	FRAMEWIRE_BUILD=compiled $(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir $(WHEEL_DIR) .

# `make compiled` puts the compiled modules beside their sources in src/,
# where Python imports them first (the editable .venv then runs them: an edit
# to one of their sources has no effect until `make compiled` again); `make
# pure` takes them away. `framewire --version` says which build runs.
COMPILED_OUTPUT := src/*.so src/framewire/*.so src/framewire/*/*.so
compiled: compiled-wheel
	rm -f $(COMPILED_OUTPUT)
	$(BIN)/python dev/wheel_extensions.py $(WHEEL_DIR)/framewire-*.whl src
	$(BIN)/framewire --version

pure:
	rm -f $(COMPILED_OUTPUT)
	$(BIN)/framewire --version

# A copy of the tree with the wheel's compiled modules in it, in
# build/compiled (the working tree stays pure): test-compiled runs the suite
# in it, bench measures it.
compiled-copy: compiled-wheel
	rm -rf build/compiled && mkdir -p build/compiled
	tar --exclude=./.venv --exclude=./.venv-serve --exclude=./.git --exclude=./build --exclude=./mutants --exclude=./site \
	  --exclude='*.so' -cf - . | tar -xf - -C build/compiled
	$(BIN)/python dev/wheel_extensions.py $(WHEEL_DIR)/framewire-*.whl build/compiled/src
	cd build/compiled && PYTHONPATH=src $(CURDIR)/$(BIN)/python -c 'import sys; from framewire._build import COMPILED_MODULES, compiled_modules; sys.exit(compiled_modules() != list(COMPILED_MODULES))' \
	  || { echo "the compiled build did not load"; exit 1; }
	cd build/compiled && PYTHONPATH=src $(CURDIR)/$(BIN)/python -m framewire --version

# The whole suite against the compiled build.
test-compiled: compiled-copy
	cd build/compiled && PYTHONPATH=src $(CURDIR)/$(BIN)/pytest -q

DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,docs]'
	@touch $(DOCS_STAMP)

# The documentation site (MkDocs Material, the API from the docstrings):
# any warning fails the build.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The built site as a reader gets it: every page loaded in headless Chromium
# (the Debian package, installed when missing) must render, and no link or
# image inside the site may be broken (dev/check_site.py).
docs-check: docs
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium from the system's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	$(BIN)/python dev/check_site.py site

MUTATE_STAMP := $(VENV)/.installed-mutate
$(MUTATE_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,mutate]'
	@touch $(MUTATE_STAMP)

# Mutation testing (mutmut, configured in pyproject.toml): the core, the
# connection engine and the clients against their tests, then the score per
# module. Long (tens of minutes); see docs/mutation.md.
# Each mutant's tests run with at most MUTATE_MEMORY KiB of address space: a
# mutant that allocates without end (decoder feed's pos += 2 -> pos = 2
# decodes the same bytes for ever) then meets MemoryError in about a minute
# and is killed by its test, instead of growing to the machine's memory
# (19 GiB in 4 minutes) until the OOM killer ends it and mutmut counts it
# as a survivor.
MUTATE_MEMORY := 4194304
mutate: $(MUTATE_STAMP)
	rm -rf mutants
	ulimit -v $(MUTATE_MEMORY) && $(BIN)/mutmut run
	$(BIN)/python dev/mutation_summary.py --floor 90

# The short version CI runs: the decoder's mutants against the decoder's
# own tests (the sans-I/O ones: a few minutes), held to its score.
SMOKE_TESTS := test_protocol.py,test_message.py,test_decoder_rules.py,test_vectors.py,test_documented.py
mutate-smoke: $(MUTATE_STAMP)
	rm -rf mutants
	ulimit -v $(MUTATE_MEMORY) && FRAMEWIRE_ONLY_TESTS=$(SMOKE_TESTS) $(BIN)/mutmut run "framewire.core.decoder*"
	$(BIN)/python dev/mutation_summary.py "framewire.core.decoder*" --floor 90

# 60 s of a few hundred pipelining connections, every answer checked, RSS drift printed.
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --duration $(SOAK_SECONDS)

# Coverage-guided fuzzing (atheris is installed on first use): the decoder,
# the response path and the tools' printing, FUZZ_SECONDS each.
FUZZ_TARGETS := decoder response tools
fuzz: $(STAMP)
	@$(BIN)/python -c 'import atheris' 2>/dev/null || $(BIN)/python -m pip install --quiet atheris
	@for target in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus-work/$$target; \
	  echo "fuzzing $$target for $(FUZZ_SECONDS) s"; \
	  $(BIN)/python fuzz/fuzz_$$target.py -max_total_time=$(FUZZ_SECONDS) fuzz/corpus-work/$$target fuzz/corpus || exit 1; \
	done

clean:
	rm -rf $(VENV) $(SERVE_VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis site mutants build $(COMPILED_OUTPUT)
