# Sluice developer entry points. `make demo` and `make test` work on a fresh clone
# of a machine with Python 3.11+ and Node 20: they create .venv and node_modules first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Offline, quiet CDK: no telemetry, no notices, no jsii banner about Node 20.
export CDK_DISABLE_CLI_TELEMETRY := true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
CDK := npx --no-install cdk --no-notices

.PHONY: install demo test lint synth synth-prod bench bench-peers clean

install: $(STAMP)

# The zip scoring flavour's layer: linux arm64 wheels for the Lambda runtime (see infra/constructs/runtime.py),
# hash-locked like the images (requirements-zip-hashed.txt: `uv pip compile` of requirements-zip.txt).
# --no-compile: pip would byte-compile with this machine's Python, .pyc files the 3.14 runtime ignores (20 MB).
SCORING_LAYER := build/layers/scoring

$(STAMP): requirements.txt pyproject.toml package.json package-lock.json containers/scoring/requirements-zip-hashed.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -rf $(SCORING_LAYER) && $(BIN)/python -m pip install --quiet --only-binary=:all: \
		--platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --implementation cp \
		--python-version 3.14 --no-compile --target $(SCORING_LAYER)/python \
		--require-hashes -r containers/scoring/requirements-zip-hashed.txt
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## The main job: synthesize the app and run the Sluice lifecycle on the embedded local AWS.
demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(CDK) synth --quiet --output cdk.out
	$(BIN)/sluice demo --assembly cdk.out $(DEMO_ARGS)

## The whole test suite (unit, handlers, infra, local end to end) plus ruff and mypy.
test: $(STAMP) lint
	$(BIN)/pytest $(PYTEST_ARGS)

## ruff, then mypy (strict for the runtime and the CDK app; files and flags in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

synth: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(CDK) synth --quiet --output cdk.out

synth-prod: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(CDK) synth --quiet --output cdk.out -c stage=prod

bench: $(STAMP)
	$(BIN)/python -m bench

## Peer tools the benchmarks compare against, each set in a venv of its own (their pins clash
## with the runtime's): MLflow and BentoML for bench_serving, Evidently, NannyML and
## alibi-detect for bench_drift. Without them those benchmarks skip the peers and say so.
bench-peers:
	$(PYTHON) -m venv build/serving-peers-venv
	build/serving-peers-venv/bin/python -m pip install --quiet -r bench/requirements-peers-serving.txt
	$(PYTHON) -m venv bench/.peers-venv
	bench/.peers-venv/bin/python -m pip install --quiet -r bench/requirements-peers.txt

clean:
	rm -rf cdk.out .pytest_cache .ruff_cache demo-output
