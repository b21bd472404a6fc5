#!/usr/bin/env bash
# Install everything `make demo` and `make test` need on a fresh Debian machine.
# Idempotent and quiet when everything is already there; used by `make demo`,
# `make test` and `.ci/run`. Needs root (or sudo) only when something is missing.
#
#   scripts/install-deps.sh          # Debian packages + Python tools
#   scripts/install-deps.sh --demo   # only what the demo needs (Postfix harness)
set -euo pipefail
cd "$(dirname "$0")/.."

# Postfix harness (tests/harness/postfix.sh): Postfix, Cyrus SASL with its PLAIN/LOGIN
# plugins (no command of their own, so ask dpkg), openssl for its CA.
packages="postfix sasl2-bin libsasl2-modules openssl ca-certificates"
# Dovecot harness (tests/harness/dovecot.sh): the round-trip probe's IMAP and POP3
# mailbox over the Postfix harness's Maildir (the demo shows a delivered message).
packages="$packages dovecot-imapd dovecot-pop3d"
if [ "${1:-}" != "--demo" ]; then
  # Real Kubernetes API server for the tests (../shared/envtest needs etcd) and the
  # Lua interpreters that run the Argo CD health checks (5.4, and 5.1 as Argo CD's
  # gopher-lua speaks).
  packages="$packages etcd-server lua5.4 lua5.1 xz-utils curl"
  # pdftotext reads `kubectl smtprelay export --format pdf` back (tests/plugin.rs).
  packages="$packages poppler-utils"
fi

missing=""
for pkg in $packages; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root to install:$missing" >&2; exit 1; }
    SUDO="sudo"
  fi
  echo "install-deps: installing$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ "${1:-}" != "--demo" ]; then
  # promtool checks and unit-tests the chart's PrometheusRule (tests/chart). It comes
  # from Debian's prometheus package, unpacked without installing it: installing
  # would pull in the web UI's libraries and start a Prometheus server.
  promtool="target/tools/promtool"
  if ! command -v promtool >/dev/null && [ ! -x "$promtool" ]; then
    echo "install-deps: unpacking promtool from Debian's prometheus package" >&2
    tmp=$(mktemp -d)
    if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
      ${SUDO:-} apt-get update -qq
      (cd "$tmp" && apt-get download prometheus >/dev/null)
    fi
    mkdir -p "$tmp/root" "$(dirname "$promtool")"
    dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp/root" ./usr/bin/promtool
    mv "$tmp/root/usr/bin/promtool" "$promtool"
    rm -rf "$tmp"
  fi
  if ! python3 -c 'import helm_python, kubernetes_validate, celpy' 2>/dev/null; then
    echo "install-deps: installing Python tools (tests/chart, tests/gitops requirements)" >&2
    python3 -m pip install --quiet --disable-pip-version-check \
      -r tests/chart/requirements.txt -r tests/gitops/requirements.txt
  fi
  if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^clippy' \
      && rustup component list --installed 2>/dev/null | grep -q '^rustfmt' \
      || rustup component add rustfmt clippy >/dev/null 2>&1 || true
  fi
fi
