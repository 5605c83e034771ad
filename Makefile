# agentcom: every entry point a newcomer or CI needs. `make demo` and `make test` are the two
# commands of the README; `make ci` is what .ci/run calls on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
NPM ?= npm
JEST := node_modules/.bin/jest
DEMO_TASKS ?=

.PHONY: help deps redis-server build check format lint typecheck test test-unit ci demo clean

help:
	@echo "make demo   start Redis, 3 hub replicas and 4 sidecars, and run tasks (DEMO_TASKS=N to run N and exit)"
	@echo "make test   build and run every test (unit, integration, end-to-end) against real redis-server processes"
	@echo "make ci     what CI runs: install what is missing, format check, lint, typecheck, tests, demo"

## Installs what a fresh machine lacks: node_modules (npm ci) and redis-server (apt-get).
deps: node_modules/.installed redis-server

node_modules/.installed: package-lock.json
	$(NPM) ci --no-audit --no-fund
	@touch $@

redis-server:
	@if ! command -v redis-server >/dev/null 2>&1; then \
	  echo "redis-server not found: installing it with apt-get"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	  command -v redis-server >/dev/null || { echo "could not install redis-server"; exit 1; }; \
	fi

## Compiles shared and hub (tsc --build) and bundles the sidecar (esbuild).
build: node_modules/.installed
	node_modules/.bin/tsc --build
	$(NPM) run --silent bundle -w agentcom-sidecar

format:
	node_modules/.bin/prettier --write .

check: node_modules/.installed
	node_modules/.bin/prettier --check .
	node_modules/.bin/eslint .
	$(MAKE) --no-print-directory typecheck

typecheck: node_modules/.installed
	node_modules/.bin/tsc --build
	node_modules/.bin/tsc -p test

## Every test. Suites run one at a time: each starts its own redis-server, hubs and sidecars.
test: deps build
	$(JEST) --runInBand $(JEST_ARGS)

ci: deps check test
	DEMO_TASKS=20 $(MAKE) --no-print-directory demo

demo: deps build
	node scripts/demo.mjs

clean:
	rm -rf shared/dist hub/dist sidecar/dist sidecar/build .tsbuild .agentcom node_modules/.installed
	find . -name '*.tsbuildinfo' -not -path './node_modules/*' -delete
