# Sluice: `make demo` shows a live canary through a real Envoy; `make test` runs everything CI checks.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
WASM := target/wasm32-wasip1/release/sluice_filter.wasm
# The native build (an Envoy dynamic module). Its profile unwinds so hooks can catch panics.
NATIVE := target/release-native/libsluice_filter_native.so
export ENVOY_BIN ?= $(shell ./scripts/envoy-bin.sh 2>/dev/null)
export SLUICE_WASM ?= $(CURDIR)/$(WASM)
export SLUICE_NATIVE ?= $(CURDIR)/$(NATIVE)

.PHONY: all setup wasm build test fmt-check clippy unit generated-check bench-check demo bench bench-memory generated

all: build

setup:
	@./scripts/setup.sh

wasm: setup
	$(CARGO) build --release --target wasm32-wasip1 -p sluice-filter -p sluice-bench-noop-filter
	@ls -l $(WASM) | awk '{print "sluice_filter.wasm:", $$5, "bytes"}'
	$(CARGO) build --profile release-native -p sluice-filter-native -p sluice-bench-noop-native
	@ls -l $(NATIVE) | awk '{print "libsluice_filter_native.so:", $$5, "bytes"}'

build: wasm
	$(CARGO) build --workspace --bins

fmt-check:
	$(CARGO) fmt --all -- --check

clippy: setup
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p sluice-filter -p sluice-bench-noop-filter --target wasm32-wasip1 -- -D warnings

# Generated files that are checked in must match their generators.
generated-check:
	$(CARGO) build -q -p sluice
	target/debug/sluice crdgen > target/crd.yaml
	diff -u deploy/crd/rollouts.sluice.dev.yaml target/crd.yaml || \
	  { echo "deploy/crd is stale: run 'make generated'"; exit 1; }
	rm -rf target/configmaps && scripts/gen-configmaps.sh target/debug/sluice target/configmaps
	for f in gateway/configmap.yaml sidecar-example/configmap.yaml; do \
	  diff -u deploy/kubernetes/$$f target/configmaps/$$f || \
	  { echo "deploy/kubernetes/$$f is stale: run 'make generated'"; exit 1; }; done

# Regenerates the checked-in generated files: the CRDs and the Envoy bootstrap ConfigMaps.
generated:
	$(CARGO) build -q -p sluice
	target/debug/sluice crdgen > deploy/crd/rollouts.sluice.dev.yaml
	scripts/gen-configmaps.sh target/debug/sluice deploy/kubernetes
	# The analysis and Experiment CRDs: their tests compare, and with this variable rewrite.
	SLUICE_UPDATE_CRDS=1 $(CARGO) test -q -p sluice-analysis --test crds
	SLUICE_UPDATE_CRDS=1 $(CARGO) test -q -p sluice-api --test experiment_crd

# Unit, property and end-to-end tests (real Envoy, real upstreams); the e2e tests also run
# `envoy --mode validate` on every Envoy config in deploy/.
unit: wasm
	$(CARGO) test --workspace --no-fail-fast -- --test-threads 2
	# The filter e2e suites again, against the native build. `--workspace` (not `-p sluice-e2e`)
	# keeps the workspace's feature set, so the build above is reused, not redone.
	SLUICE_FILTER=native $(CARGO) test --workspace --test filter --test invalid_policy --test filter_router_agree -- --test-threads 2

# The benchmark scripts' own tests (their Envoy configs pass `envoy --mode validate`).
bench-check: setup
	python3 -m unittest discover -s bench

test: setup fmt-check clippy wasm unit generated-check bench-check
	@echo "make test: all checks passed"

demo: setup wasm
	$(CARGO) build --workspace --bins
	python3 deploy/demo/demo.py

# The xDS benchmark's clients on CPU 1; it pins the control plane to CPU 0 (BENCH_CONTROL_PLANE_CPUS).
BENCH_XDS_PIN := $(shell command -v taskset >/dev/null && [ "$$(nproc)" -ge 2 ] && echo taskset -c 1)

bench: setup
	$(CARGO) build --release --target wasm32-wasip1 -p sluice-filter -p sluice-bench-noop-filter
	$(CARGO) build --profile release-native -p sluice-filter-native -p sluice-bench-noop-native
	python3 bench/filter_bench.py
	$(CARGO) build --profile control-plane -p sluice -p sluice-bench-xds
	$(BENCH_XDS_PIN) target/control-plane/sluice-bench-xds

# Envoy's memory and idle CPU across 2,000 weight changes (BENCH_CHANGES, BENCH_ROLLOUTS, BENCH_IDLE).
bench-memory: wasm
	$(CARGO) build -p sluice
	python3 bench/envoy_memory.py
