#!/usr/bin/env bash
# The whole test suite (`make test`): lint, every Rust test, the chart and GitOps checks.
# Tests that need a real Kubernetes API server run against ../shared/envtest
# (kube-apiserver + etcd on loopback), started here and always stopped on exit.
# Without that folder they print why they are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

envtest_src="${SMTP_RELAY_ENVTEST:-../shared/envtest}"
envtest_dir="$PWD/target/envtest"

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

bash tests/harness/postfix.sh start >/dev/null
bash tests/harness/dovecot.sh start >/dev/null

if [ -f "$envtest_src/up.sh" ] && command -v etcd >/dev/null; then
  # A fresh control plane per run: no objects left over from an earlier one.
  [ -d "$envtest_dir" ] && bash "$envtest_src/down.sh" "$envtest_dir" >/dev/null 2>&1 || true
  rm -rf "$envtest_dir/etcd" "$envtest_dir/certs"
  trap 'bash "$envtest_src/down.sh" "$envtest_dir" >/dev/null 2>&1 || true' EXIT
  kubeconfig=$(bash "$envtest_src/up.sh" "$envtest_dir")
  export SMTP_RELAY_E2E_KUBECONFIG="$kubeconfig"
  # The real-API tests must run, not skip, when a control plane is there.
  export SMTP_RELAY_E2E_REQUIRED=1
  echo "real API server (kube-apiserver v1.28.7 + etcd from $envtest_src): $kubeconfig"
else
  echo "NOTE: real-API tests (tests/e2e.rs, tests/real_api.rs) are SKIPPED:" \
    "no $envtest_src/up.sh or no etcd (apt-get install etcd-server)" >&2
fi

rm -rf target/gitops-captures
cargo test --locked --all-targets
python3 tests/chart/check_chart.py
python3 tests/gitops/check_health.py --require-cel
# The statuses the e2e tests captured from the real API server, through the same checks.
if [ -d target/gitops-captures ]; then python3 tests/gitops/check_health.py --require-cel --dir target/gitops-captures; fi
