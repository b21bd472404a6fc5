# smtp-relay-operator — common tasks. `make help` lists them.
CARGO ?= cargo
BIN := target/release/smtp-relay-operator
CHART := charts/smtp-relay-operator

.PHONY: help deps scale build crds demo test test-rust test-chart lint fmt run e2e bench harness

help:
	@echo "make demo     install what the demo needs, build, start the local demo relay, verify the bundled examples (no cluster needed)"
	@echo "make test     install what the tests need, lint, every test: unit, Postfix harness, fake API, and a real"
	@echo "              kube-apiserver + etcd from ../shared/envtest (CRDs, schema, e2e, chart RBAC), chart and GitOps checks"
	@echo "make deps     only install the Debian packages and Python tools the tests need (scripts/install-deps.sh)"
	@echo "make build    release binary at $(BIN)"
	@echo "make crds     regenerate crds/ and the chart's crds/ from the Rust types"
	@echo "make run      run the operator against the cluster in KUBECONFIG"
	@echo "make e2e      end-to-end suite against SMTP_RELAY_E2E_KUBECONFIG"
	@echo "make bench    benchmarks (verification latency, concurrency, decision cost, memory, verify -f on 20,000 relays)"
	@echo "make lint     cargo fmt --check and clippy -D warnings"
	@echo "make scale    2,000 relays + 10,000 identities on a real kube-apiserver: convergence, memory, writes"
	@echo "              (SCALE_RELAYS, SCALE_IDENTITIES, SCALE_NAMESPACES, SCALE_IDLE_SECS for smaller runs)"

build:
	$(CARGO) build --release --locked

crds:
	$(CARGO) run --quiet --locked -- crd --out-dir crds --out-dir $(CHART)/crds

deps:
	bash scripts/install-deps.sh

harness:
	bash tests/harness/postfix.sh start
	bash tests/harness/dovecot.sh start

demo:
	bash scripts/install-deps.sh --demo
	$(MAKE) build harness
	$(CARGO) build --release --locked --example demo_dns
	bash examples/demo/run.sh $(BIN)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

test-rust: harness
	$(CARGO) test --locked --all-targets

test-chart:
	python3 tests/chart/check_chart.py

# Lint, then every test; the real-API tests run against ../shared/envtest, started
# and stopped by scripts/test.sh.
test:
	bash scripts/install-deps.sh
	bash scripts/test.sh

# The real-API tests alone, against the cluster in SMTP_RELAY_E2E_KUBECONFIG.
e2e: harness
	$(CARGO) test --locked --test e2e --test real_api --test real_api_agreement --test chart_cluster

bench: harness
	$(CARGO) bench --locked --bench verification --bench memory --bench verify_load

# The bench starts its own kube-apiserver + etcd and its own Postfix instance.
scale:
	bash scripts/install-deps.sh
	$(CARGO) bench --locked --bench scale

run:
	$(CARGO) run --release --locked -- run
