# The two commands a newcomer types: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
AXE := build/axe/node_modules/axe-core/axe.min.js

.PHONY: test test-crowded lint typecheck unit system-packages isolation-packages bench-packages crds manifests demo bench clean

# Create the virtualenv and install Cadre with its dev extras; redone when pyproject.toml changes.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Cadre needs Python 3.11 or newer; set PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Tests run on two workers, each taking the next test as it frees up (most of a test's time
# is spent waiting on servers and pods). TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist worksteal

unit: $(STAMP) system-packages $(AXE)
	$(BIN)/pytest $(XDIST)

# axe-core (npm) checks the console's pages for accessibility in the browser tests.
$(AXE):
	@command -v npm >/dev/null && npm install --no-audit --no-fund --silent --prefix build/axe axe-core@4 || \
	  echo "npm missing or unreachable: the accessibility checks skip"

# Debian packages, installed where missing (tools/ensure-packages.sh): bubblewrap, nftables
# and iproute2 isolate the local cluster's pods (their own root, network and policies);
# headless Chromium drives the console's browser tests.
ISOLATION := bwrap:bubblewrap nft:nftables ip:iproute2
system-packages:
	@sh tools/ensure-packages.sh $(ISOLATION) chromium:chromium chromedriver:chromium-driver

isolation-packages:
	@sh tools/ensure-packages.sh $(ISOLATION)

# The suite beside a second local cluster and two busy loops (tools/crowded.py).
test-crowded: $(STAMP)
	$(BIN)/python -m tools.crowded -q $(XDIST)

crds: $(STAMP)
	$(BIN)/cadre crds --output-dir crds
	cp crds/*.yaml charts/cadre/crds/

# Plain manifests for kubectl apply, rendered from the Helm chart (a test checks they are current).
manifests: $(STAMP)
	$(BIN)/python -m tools.manifests
	$(BIN)/python -m tools.argocd

# A Team of agents doing real work on the local cluster; no cluster or API key needed.
# With ANTHROPIC_API_KEY set, the agents use the real model.
demo: $(STAMP) isolation-packages
	$(BIN)/cadre demo

# HAProxy is the egress benchmark's reference: a C relay doing TLS interception's work.
bench-packages:
	@sh tools/ensure-packages.sh haproxy:haproxy

bench: $(STAMP) system-packages bench-packages
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
