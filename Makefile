# callvault: every recurring action has a target here. `make demo` and `make test` are
# the two commands a new machine needs; both install what they use into .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATE ?= .local/state.json
export SAM_CLI_TELEMETRY := 0
export PYTHONPATH := $(CURDIR):$(CURDIR)/layers/callvault
# Python 3.13, the Lambda runtime's, compiles the layer to bytecode (layers/callvault/Makefile
# also looks on PATH and in pyenv); `make python313` installs one here.
PY313 := $(VENV)/python3.13
export PYTHON313 ?= $(wildcard $(CURDIR)/$(PY313)/bin/python3.13)

.PHONY: venv demo local test unit integration lint format typecheck validate build python313 bench bench-transfer bench-cold-start bench-fair-sharing deploy-dev deploy-prod clean register-sources

venv: $(STAMP)

$(STAMP): requirements-dev.txt layers/callvault/requirements.txt layers/callvault/requirements-tracing.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	# The project itself, editable: the core package and the `callvault` operator command.
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --editable .
	# The venv finds the local runtime (local/, tests/) without PYTHONPATH.
	printf '%s\n' "$(CURDIR)/layers/callvault" "$(CURDIR)" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/callvault-dev.pth"
	touch $(STAMP)

## The main job, locally: AWS stand-in + PBX simulator + real handlers; archive calls, verify them.
demo: venv
	$(BIN)/python -m local.demo

## Start the local stack and keep it up (Ctrl-C stops it). SOURCES= picks another sources file.
local: venv
	$(BIN)/python -m local --sources $(or $(SOURCES),local/sources.yaml) --state $(STATE)

## The whole suite: lint, types, template checks, unit and integration tests.
test: venv lint typecheck
	$(BIN)/python -m pytest

unit: venv
	$(BIN)/python -m pytest tests/unit

integration: venv
	$(BIN)/python -m pytest tests/integration

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Each function is its own `app` module, so they are checked one at a time.
typecheck: venv
	$(BIN)/mypy layers/callvault/callvault local bench
	for app in functions/*/app.py; do $(BIN)/mypy $$app || exit 1; done

validate: venv
	$(BIN)/sam validate --lint

## Build the Lambda artifacts. With no Python 3.13 at hand (PYTHON313, PATH), it first tries
## `make python313` (Debian, Ubuntu) so the layer ships bytecode; failing that, sources only.
build: venv
	if [ -z "$(PYTHON313)" ] && ! command -v python3.13 >/dev/null; then \
		$(MAKE) --no-print-directory python313 || echo "build: no Python 3.13 installed; the layer ships without bytecode"; fi
	py=$(CURDIR)/$(PY313)/bin/python3.13; if [ -x "$$py" ]; then export PYTHON313="$$py"; fi; $(BIN)/sam build

## Python 3.13 for `make build` on a machine without one: Debian 13's python3.13, unpacked into
## .venv/python3.13 with the C library it was built for (no system package changes; needs
## apt-get and dpkg-deb, as on Debian and Ubuntu). `make build` only runs compileall in it; the
## whole standard library (and the C libraries of its ssl, ctypes, lzma… modules) is there so that
## `make bench-cold-start PYTHON_FOR_BENCH=…` can run the handlers under the runtime's Python.
PY313_PACKAGES := python3.13-minimal libpython3.13-minimal libpython3.13-stdlib libc6 libexpat1 zlib1g \
	libssl3t64 libffi8 libbz2-1.0 liblzma5 libmpdec4 libzstd1 libuuid1 libsqlite3-0
PY313_APT = -o Dir::Etc::SourceList=$(CURDIR)/$(PY313)/apt/sources.list -o Dir::Etc::SourceParts=- \
	-o Dir::State::Lists=$(CURDIR)/$(PY313)/apt/lists -o Dir::Cache=$(CURDIR)/$(PY313)/apt/cache
python313: $(PY313)/bin/python3.13

$(PY313)/bin/python3.13:
	rm -rf $(PY313) && mkdir -p $(PY313)/apt/lists/partial $(PY313)/apt/cache/archives/partial $(PY313)/bin
	echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main' \
		> $(PY313)/apt/sources.list
	apt-get -qq $(PY313_APT) update
	cd $(PY313)/apt && apt-get -qq $(PY313_APT) download $(PY313_PACKAGES)
	for package in $(PY313)/apt/*.deb; do dpkg-deb -x "$$package" $(PY313)/root || exit 1; done
	# Started through its own loader, so it runs with its own C library, whatever the system's.
	loader=$$(ls $(CURDIR)/$(PY313)/root/usr/lib/*-linux-gnu/ld-linux*.so.*) && \
		printf '#!/bin/sh\nexec "%s" --library-path "%s" "%s" "$$@"\n' \
			"$$loader" "$$(dirname "$$loader")" "$(CURDIR)/$(PY313)/root/usr/bin/python3.13" > $@
	chmod +x $@
	rm -rf $(PY313)/apt
	# Its standard library compiled once, as a runtime's is (Debian compiles it when installing).
	$@ -m compileall -q $(PY313)/root/usr/lib/python3.13 >/dev/null
	$@ -c 'import sys; print("installed", sys.executable, sys.version.split()[0])'

bench: venv
	$(BIN)/python -m bench

## Issue 9's transfer benchmark: five ways to copy a URL into S3 at 1 MiB, 100 MiB and 1 GiB, a
## transfer broken at 50 %, handler cold starts (docs/benchmarks.md). BENCH_ARGS= passes options.
bench-transfer: venv
	$(BIN)/python -m bench.transfer $(BENCH_ARGS)

## Handler cold starts alone, with and without bytecode in the layer (docs/benchmarks.md). Under the
## Lambda runtime's Python: `make python313`, then PYTHON_FOR_BENCH=.venv/python3.13/bin/python3.13.
bench-cold-start: venv
	$(BIN)/python -m bench.cold_start --python $(or $(PYTHON_FOR_BENCH),$(BIN)/python) $(BENCH_ARGS)

## Issue 11's fair sharing: a quick PBX's call-to-archive delay alone, beside a busy slow PBX,
## and the same without the slow PBX's limit (docs/benchmarks.md). BENCH_ARGS= passes options.
bench-fair-sharing: venv
	$(BIN)/python -m bench.fair_sharing $(BENCH_ARGS)

deploy-dev: build
	$(BIN)/sam deploy --config-env dev

deploy-prod: build
	$(BIN)/sam deploy --config-env prod

clean:
	rm -rf .aws-sam .local .pytest_cache .mypy_cache .ruff_cache

## Register (create or update) the sources of SOURCES in Secrets Manager for STAGE
## (KMS_KEY_ARN: the stack's KmsKeyArn, to encrypt them with it).
# SOURCES has no default here: the only file in the repository is the local sample, whose
# tokens are public and whose provider addresses are loopback.
STAGE ?= dev
register-sources: venv
	$(if $(SOURCES),,$(error register-sources needs SOURCES=your-sources.yaml (there is no default; see docs/deploy.md)))
	$(BIN)/python -m callvault.register --stage $(STAGE) $(if $(KMS_KEY_ARN),--kms-key-id $(KMS_KEY_ARN)) $(SOURCES)
