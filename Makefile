# agentcom: every entry point a newcomer or CI needs. `make demo` and `make test` are the two
# commands of the README; `make ci` is what .ci/run calls on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
NPM ?= npm
JEST := node_modules/.bin/jest
DEMO_TASKS ?=

.PHONY: help deps system-tools build check format lint typecheck test test-faults ci demo cluster cluster-down clean

help:
	@echo "make demo   start Redis, 3 hub replicas and 4 sidecars, and run tasks (DEMO_TASKS=N to run N and exit)"
	@echo "make test   build and run every test (unit, integration, end-to-end, browser, fault) with real processes"
	@echo "make ci     what CI runs: install what is missing, format check, lint, typecheck, tests, pack-test, demo"
	@echo "make cluster [N=3] / make cluster-down   Redis, N hubs and HAProxy on loopback (the compose topology)"
	@echo "make test-faults [FULL=1], make pack-test, make bench [QUICK=1]: see README.md"

## Installs what a fresh machine lacks: node_modules (npm ci) and, through apt-get, the Debian
## packages the tests drive for real: redis-server, haproxy, nginx, chromium.
deps: node_modules/.installed system-tools

node_modules/.installed: package-lock.json
	$(NPM) ci --no-audit --no-fund
	@touch $@

SYSTEM_TOOLS := redis-server:redis-server haproxy:haproxy nginx:nginx chromium:chromium strace:strace
system-tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing with apt-get:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	    || { echo "could not install:$$missing"; exit 1; }; \
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
test: deps build tools/pm2
	$(JEST) --runInBand $(JEST_ARGS)

## The fault scenarios alone (they are part of `make test` too); FULL=1 runs the issue's full sizes.
test-faults: deps build
	FULL=$(FULL) $(JEST) --runInBand test/faults

ci: deps check test pack-test
	DEMO_TASKS=20 $(MAKE) --no-print-directory demo

demo: deps build
	node scripts/demo.mjs

N ?= 3
## The compose topology on loopback: Redis, N hubs, HAProxy (docker/haproxy.cfg.template).
cluster: deps system-tools build
	node scripts/cluster.mjs up $(N)

cluster-down:
	node scripts/cluster.mjs down

clean:
	rm -rf shared/dist hub/dist sidecar/dist sidecar/build .tsbuild .agentcom node_modules/.installed
	find . -name '*.tsbuildinfo' -not -path './node_modules/*' -delete

.PHONY: pack-test tools/pm2

## The sidecar as users get it: `npm pack`, `npm install -g --offline` of the tarball into a temp
## prefix (so the bundle must need nothing else), then sidecar/scripts/pack-test.mjs runs the
## installed binary against a real hub and a private redis-server.
pack-test: build system-tools
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  $(NPM) pack -w agentcom-sidecar --pack-destination "$$tmp" --silent >/dev/null; \
	  tarball=$$(ls "$$tmp"/agentcom-sidecar-*.tgz); \
	  $(NPM) install -g --offline --no-audit --no-fund --prefix "$$tmp/prefix" "$$tarball" >/dev/null; \
	  node sidecar/scripts/pack-test.mjs --tarball "$$tarball" --prefix "$$tmp/prefix"

## pm2 (AGPL-3.0) as a dev tool for the sidecar's pm2 test: never a dependency of a package.
tools/pm2: .tools/pm2/node_modules/.bin/pm2

.tools/pm2/node_modules/.bin/pm2:
	$(NPM) install --prefix .tools/pm2 --no-save --no-audit --no-fund pm2@7.0.4

## Benchmarks (test/bench, see test/bench/README.md): each starts its own redis-server, hub
## replicas and load processes, prints one JSON line; the run writes test/bench/RESULTS.md and
## results.json. `make bench QUICK=1`: the small version (under 2 minutes). Not part of test/ci.
QUICK ?=
BENCH_ENTRIES = test/bench/run.ts $(wildcard test/bench/bench-*.ts) test/bench/load-agents.ts \
  test/bench/raw-bullmq.ts test/bench/redis-io-counter.ts test/bench/floor-hub.ts \
  test/bench/rate-sweep.ts
.PHONY: bench bench-bundle bench-render
bench: deps build bench-bundle
	QUICK=$(QUICK) node .tmp/bench/run.js $(BENCH_ARGS)

## RESULTS.md again from results.json (after editing the text around the figures); runs nothing.
bench-render: bench-bundle
	QUICK=$(QUICK) node .tmp/bench/run.js --render

bench-bundle: node_modules/.installed
	node_modules/.bin/esbuild $(BENCH_ENTRIES) --bundle --platform=node --target=node20 --format=cjs \
	  --packages=external --alias:@agentcom/shared=./shared/src/index.ts --outdir=.tmp/bench \
	  --log-level=warning
