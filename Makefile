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

.PHONY: serve test test-wire test-deploy test-compiled compiled compiled-copy pure docs mutate mutate-smoke lint typecheck pytest bench soak fuzz clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "framewire needs Python 3.11 or newer; $(PYTHON) is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# Serving needs only framewire itself (the test tools are make test's).
SERVE_STAMP := $(VENV)/.installed-serve
$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/framewire serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks fuzz dev docs/vectors mkdocs_hooks.py
	$(BIN)/ruff format --check src tests benchmarks fuzz dev docs/vectors mkdocs_hooks.py

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
# peers with one load client; writes docs/performance.md and its chart. The
# targets are measured on the default (pure) build, with the compiled build
# of a copy of the tree (compiled-copy) beside it in each pair.
bench: $(BENCH_STAMP) compiled-copy
	$(BIN)/python benchmarks/bench_core.py --json-out .venv/core-bench.json
	$(BIN)/python benchmarks/targets.py --compiled build/compiled/src
	$(BIN)/python benchmarks/compare.py --core .venv/core-bench.json

# The Wireshark dissector checked for real: installs tshark from the system's
# packages when it is missing, captures loopback traffic, dissects it.
test-wire: $(STAMP)
	@command -v tshark >/dev/null 2>&1 || { \
	  echo "installing tshark from the system's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark >/dev/null; }
	FRAMEWIRE_REQUIRE_TSHARK=1 $(BIN)/pytest -m wire tests/test_wireshark.py

# HAProxy for real in front of three framewire servers (deploy/haproxy.cfg):
# installs haproxy from the system's packages when it is missing.
test-deploy: $(STAMP)
	@command -v haproxy >/dev/null 2>&1 || { \
	  echo "installing haproxy from the system's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }
	FRAMEWIRE_REQUIRE_HAPROXY=1 $(BIN)/pytest -m deploy tests/test_deploy.py

# The hot path compiled with mypyc (docs/performance.md): the message, the
# decoder and the connection engine. `make compiled` builds them beside their sources,
# where Python imports them first; `make pure` goes back to pure Python.
# `framewire --version` says which is running.
COMPILED := framewire/core/message.py framewire/core/decoder.py framewire/server/engine.py
# What `make compiled` leaves in src/ (removed by `make pure` and `make clean`).
COMPILED_OUTPUT := src/build src/*__mypyc*.so src/framewire/core/message.*.so src/framewire/core/decoder.*.so src/framewire/server/engine.*.so
compiled: $(STAMP)
	cd src && ../$(BIN)/mypyc $(COMPILED) >/dev/null
	$(BIN)/framewire --version

pure:
	rm -rf $(COMPILED_OUTPUT)
	$(BIN)/framewire --version

# A copy of the tree with the hot path compiled, in build/compiled (the
# working tree stays pure): test-compiled runs the suite in it, bench measures it.
compiled-copy: $(STAMP)
	rm -rf build/compiled && mkdir -p build/compiled
	tar --exclude=./.venv --exclude=./.git --exclude=./build --exclude=./mutants --exclude=./site -cf - . \
	  | tar -xf - -C build/compiled
	cd build/compiled/src && $(CURDIR)/$(BIN)/mypyc $(COMPILED) >/dev/null
	cd build/compiled && PYTHONPATH=src $(CURDIR)/$(BIN)/python -m framewire --version \
	  | grep -q "compiled with mypyc: message, decoder, engine" || { echo "the compiled build did not load"; exit 1; }

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
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis site mutants build $(COMPILED_OUTPUT)
