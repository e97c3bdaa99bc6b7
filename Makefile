# callvault: every recurring action has a target here. `make demo` and `make test` are
# the two commands a new machine needs; both install what they use into .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATE ?= .local/state.json
export SAM_CLI_TELEMETRY := 0
export PYTHONPATH := $(CURDIR):$(CURDIR)/layers/callvault

.PHONY: venv demo local test unit integration lint format typecheck validate build bench bench-transfer deploy-dev deploy-prod clean register-sources

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

build: venv
	$(BIN)/sam build

bench: venv
	$(BIN)/python -m bench

## Issue 9's transfer benchmark: five ways to copy a URL into S3 at 1 MiB, 100 MiB and 1 GiB, a
## transfer broken at 50 %, handler cold starts (docs/benchmarks.md). BENCH_ARGS= passes options.
bench-transfer: venv
	$(BIN)/python -m bench.transfer $(BENCH_ARGS)

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
