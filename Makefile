# The two commands a newcomer needs: `make run` and `make test`. Each installs what is missing.
SHELL := /bin/bash
FILTERS := llm-telemetry schema-guard pii-redact prompt-guard rag-acl approval-gate
# The combined module links the four filters without their own entry points (feature `export`
# off): it is built in its own cargo run, as features unify within one.
COMBINED := guard-all
WASM_DIR := target/wasm32-wasip1/release
CARGO ?= cargo

.PHONY: soak setup wasm wasm-fault build run test lint train eval eval-pii schema-suite bench oci clean

setup:
	@./scripts/setup.sh

wasm: setup
	$(CARGO) build --release --target wasm32-wasip1 $(addprefix -p ,$(FILTERS))
	$(CARGO) build --release --target wasm32-wasip1 -p $(COMBINED)
	@ls -l $(WASM_DIR)/*.wasm

# The same filters with the test-only fault-injection feature (a request header traps the VM),
# for the failure matrix's VM-failure rows; profile `fault` (target/wasm32-wasip1/fault).
wasm-fault: setup
	$(CARGO) build --profile fault --target wasm32-wasip1 --features guard-host/fault-injection $(addprefix -p ,$(FILTERS))

build: wasm
	$(CARGO) build --release -p demo-upstream -p guardctl -p approval-service

# ALL=1: every filter in one module (envoy/envoy-all.yaml) instead of four.
run: build
	@ENVOY_CONFIG=$(if $(ALL),envoy/envoy-all.yaml,envoy/envoy.yaml) ./scripts/run.sh

test: wasm wasm-fault
	$(CARGO) test --workspace --no-fail-fast

# Retrain prompt-guard's model from the train split (ship_ok records only) of ../shared/data.
train:
	$(CARGO) run --release -q -p guardctl -- train-injection

# Precision / recall / FPR of prompt-guard's default policy on the test split, and throughput.
eval:
	$(CARGO) run --release -q -p guardctl -- eval-injection

# Precision / recall per type (strict and overlap), look-alike FPR and scan throughput of
# pii-redact's default policy on the test split of ../shared/data/pii.
eval-pii:
	$(CARGO) run --release -q -p guardctl -- eval-pii

# schema-guard's pass rates on the JSON-Schema-Test-Suite (draft 2020-12 and draft-07, format
# asserted) in ../shared/data/json-schema-test-suite, and its validation throughput.
schema-suite:
	$(CARGO) run --release -q -p guardctl -- schema-suite

# Ten minutes of mixed traffic through every filter at a steady rate (not in CI): zero unexpected
# errors, Envoy's RSS flat within 5% after the warm-up, no wasm memory growth. SOAK_ARGS e.g.
# `--seconds 60 --rate 20`, `--all` for the combined module. Results: bench/soak-results.{md,json}.
soak: build
	.venv/bin/python bench/soak.py $(SOAK_ARGS)

# Cost of each filter in a real Envoy (one worker pinned to core 0, load on core 1) against no
# filter, the floor (filters/passthrough) and Envoy's Lua filter; writes bench/results.{md,json}.
# Under 15 minutes on 2 cores once built. BENCH_ARGS=--quick for a smoke run (results in .run/bench).
bench: wasm setup
	@./scripts/bench-setup.sh
	$(CARGO) build --release --target wasm32-wasip1 -p passthrough
	$(CARGO) build --release -p demo-upstream
	.venv/bin/python bench/run.py $(BENCH_ARGS)

# One Istio-compatible Wasm OCI image per module of `make wasm`, pushed to REGISTRY (default
# 127.0.0.1:5000: a local docker-registry is started there if nothing listens) as
# llm-guard/<filter>:TAG (default: the workspace version); prints each image digest and writes
# target/oci/digests.json. See docs/oci.md.
oci: wasm
	@./scripts/oci.sh $(FILTERS) $(COMBINED)

# Every cargo-fuzz target in fuzz/ (nightly) for FUZZ_SECONDS each on a temporary copy of its
# committed seed corpus; one table of runs per target; fails on any crash, timeout or OOM (the
# input is kept in fuzz/artifacts/). FUZZ_TARGETS="a b" for some. See docs/fuzzing.md.
FUZZ_SECONDS ?= 25
fuzz: setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./fuzz/run.sh $(FUZZ_TARGETS)

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target wasm32-wasip1 $(addprefix -p ,$(FILTERS)) -- -D warnings
	$(CARGO) clippy --target wasm32-wasip1 -p $(COMBINED) -- -D warnings

clean:
	$(CARGO) clean
	rm -rf .run
