# The two commands a newcomer needs: `make run` and `make test`. Each installs what is missing.
SHELL := /bin/bash
FILTERS := llm-telemetry prompt-guard
WASM_DIR := target/wasm32-wasip1/release
CARGO ?= cargo

.PHONY: setup wasm build run test test-unit test-e2e lint clean

setup:
	@./scripts/setup.sh

wasm: setup
	$(CARGO) build --release --target wasm32-wasip1 $(addprefix -p ,$(FILTERS))
	@ls -l $(WASM_DIR)/*.wasm

build: wasm
	$(CARGO) build --release -p demo-upstream -p guardctl

run: build
	@./scripts/run.sh

test: wasm
	$(CARGO) test --workspace --no-fail-fast

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target wasm32-wasip1 $(addprefix -p ,$(FILTERS)) -- -D warnings

clean:
	$(CARGO) clean
	rm -rf .run
