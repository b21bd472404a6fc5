#!/usr/bin/env bash
# The demo: verify the bundled example relays against the local demo relay (the
# Postfix harness on 127.0.0.1), exactly as the controller would, with no cluster.
# Usage: examples/demo/run.sh [path/to/smtp-relay-operator]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-target/release/smtp-relay-operator}"
dns_bin="$(dirname "$bin")/examples/demo_dns"
harness_dir="${HARNESS_DIR:-/tmp/smtp-relay-harness}"

bash tests/harness/postfix.sh start >/dev/null
# The demo mailbox (IMAP/POP3 over the relay's Maildir) for the round-trip example.
bash tests/harness/dovecot.sh start >/dev/null

# The demo relay's certificate is issued by a CA generated at harness start: hand it
# to the examples as the Secret they reference (demo/harness-ca, key ca.crt).
ca_manifest="$(mktemp --suffix=.yaml)"
trap 'rm -f "$ca_manifest"' EXIT
{
  printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: harness-ca\n  namespace: demo\nstringData:\n  ca.crt: |\n'
  sed 's/^/    /' "$harness_dir/tls/ca.crt"
} >"$ca_manifest"

# The demo's DNS zone on loopback (a real authoritative DNS server): the sender
# domains' SPF/DKIM/DMARC/MX and the blocklist are read from it, never the internet.
coproc DNS { "$dns_bin" examples/demo/dns/zone.txt; }
dns_pid=$DNS_PID
read -r _ dns_addr <&"${DNS[0]}"
trap 'rm -f "$ca_manifest"; kill "$dns_pid" 2>/dev/null || true' EXIT
dns=(--dns-server "$dns_addr" --dnsbl-zones dnsbl.test)
nodns=(--deliverability-checks=false)

echo "== smtp-relay-operator verify --allowed-destinations 127.0.0.0/8 --dns-server $dns_addr --dnsbl-zones dnsbl.test -f examples/demo"
echo "   (local relay: plain :25250, STARTTLS+AUTH :25251, implicit TLS+AUTH :25252;"
echo "    local mailbox: IMAP+STARTTLS :25260, for the round trip of demo/round-trip;"
echo "    local DNS: $dns_addr, the zone examples/demo/dns/zone.txt)"
echo
set +e
# The demo relay is on loopback, which relays may only reach when allowed.
"$bin" verify --allowed-destinations 127.0.0.0/8 "${dns[@]}" -f examples/demo -f "$ca_manifest"
code=$?
set -e
echo
echo "exit code $code (0 = all relays Ready, 1 = some relay is not, 2 = unusable input)."
echo "Three relays work; the others are broken on purpose: each line above says which step failed and why."
echo "demo/round-trip's test message was followed to the mailbox: see its Delivered line above."
echo "The SenderIdentity blocks show each DNS check with its RFC result and the record read;"
echo "demo/legacy-billing sets enforce, and its domain's SPF does not name the relay."
echo "Full status of the relay with the wrong password, as the controller writes it:"
echo
# verify exits 1 for this relay (it is not Ready): that is the point here.
"$bin" verify --allowed-destinations 127.0.0.0/8 "${nodns[@]}" -f examples/demo/03-wrong-password.yaml -f "$ca_manifest" -o yaml 2>/dev/null || true
echo
echo "The round trip of demo/round-trip (status.lastVerification.delivery and the Delivered condition):"
echo
"$bin" verify --allowed-destinations 127.0.0.0/8 "${nodns[@]}" -f examples/demo/01-working-starttls.yaml -f examples/demo/07-round-trip.yaml -f "$ca_manifest" -o yaml 2>/dev/null \
  | grep -E -A8 '^ +delivery:|type: Delivered' | grep -v -E '^ +(inputs|observedGeneration):' || true
# The demo succeeds when it shows what it should: working relays Ready, broken ones not.
[ "$code" -eq 1 ]
