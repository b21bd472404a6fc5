# smtp-relay-operator — common tasks. `make help` lists them.
CARGO ?= cargo
BIN := target/release/smtp-relay-operator
CHART := charts/smtp-relay-operator

.PHONY: help build crds demo test test-rust test-chart lint fmt run e2e bench harness

help:
	@echo "make demo     build, start the local demo relay, verify the bundled examples (no cluster needed)"
	@echo "make test     lint, every test (unit, Postfix harness, mock API, CRDs, chart); e2e skips without a cluster"
	@echo "make build    release binary at $(BIN)"
	@echo "make crds     regenerate crds/ and the chart's crds/ from the Rust types"
	@echo "make run      run the operator against the cluster in KUBECONFIG"
	@echo "make e2e      end-to-end suite against SMTP_RELAY_E2E_KUBECONFIG"
	@echo "make bench    benchmarks (verification latency, concurrency, decision cost)"
	@echo "make lint     cargo fmt --check and clippy -D warnings"

build:
	$(CARGO) build --release --locked

crds:
	$(CARGO) run --quiet --locked -- crd --out-dir crds --out-dir $(CHART)/crds

harness:
	bash tests/harness/postfix.sh start

demo: build harness
	bash examples/demo/run.sh $(BIN)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

test-rust: harness
	$(CARGO) test --locked --all-targets

test-chart:
	python3 tests/chart/check_chart.py

test: lint test-rust test-chart

e2e: harness
	$(CARGO) test --locked --test e2e -- --nocapture --test-threads=1

bench: harness
	$(CARGO) bench --locked --bench verification --bench memory

run:
	$(CARGO) run --release --locked -- run
