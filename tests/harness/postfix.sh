#!/usr/bin/env bash
# Private Postfix instance on 127.0.0.1 for the SMTP relay verification tests.
#
#   tests/harness/postfix.sh start    # idempotent; safe to call concurrently
#   tests/harness/postfix.sh stop
#   tests/harness/postfix.sh status   # exit 0 if running and healthy
#
# Environment:
#   HARNESS_DIR        (default /tmp/smtp-relay-harness)  everything lives here
#   HARNESS_BASE_PORT  (default 25250)  BASE+0 plain, BASE+1 submission, BASE+2 smtps
#
# Never touches /etc/postfix or the system Postfix instance: every postfix
# command is run with "-c $HARNESS_DIR/conf", which has its own
# queue_directory and data_directory. See README.md next to this file.
set -euo pipefail

export PATH="/usr/sbin:/sbin:/usr/bin:/bin:${PATH:-}"
umask 022

HARNESS_DIR="${HARNESS_DIR:-/tmp/smtp-relay-harness}"
HARNESS_BASE_PORT="${HARNESS_BASE_PORT:-25250}"

# Strip trailing slashes so "$HARNESS_DIR.lock" and path comparisons work.
while [[ "$HARNESS_DIR" == */ && "$HARNESS_DIR" != / ]]; do HARNESS_DIR="${HARNESS_DIR%/}"; done

die() { echo "postfix-harness: error: $*" >&2; exit 1; }
log() { echo "postfix-harness: $*" >&2; }

# ---- sanity checks (this script rm -rf's HARNESS_DIR, so be strict) -------
[[ "$HARNESS_DIR" == /* ]] || die "HARNESS_DIR must be an absolute path (got '$HARNESS_DIR')"
[[ "$HARNESS_DIR" =~ ^[A-Za-z0-9._/+-]+$ ]] || die "HARNESS_DIR may only contain [A-Za-z0-9._/+-] (Postfix config values)"
case "$HARNESS_DIR" in
  / | /tmp | /var | /var/tmp | /etc | /usr | /root | /home | /opt | /srv | /run | /dev | /proc | /sys | /boot | /var/spool | /var/spool/postfix | /etc/postfix | /var/lib/postfix)
    die "refusing to use HARNESS_DIR=$HARNESS_DIR" ;;
esac
[[ "$HARNESS_BASE_PORT" =~ ^[0-9]+$ ]] && (( HARNESS_BASE_PORT >= 1024 && HARNESS_BASE_PORT <= 65533 )) \
  || die "HARNESS_BASE_PORT must be a number in 1024..65533 (got '$HARNESS_BASE_PORT')"

PLAIN_PORT=$((HARNESS_BASE_PORT + 0))
SUBMISSION_PORT=$((HARNESS_BASE_PORT + 1))
SMTPS_PORT=$((HARNESS_BASE_PORT + 2))

CONF="$HARNESS_DIR/conf"
QUEUE="$HARNESS_DIR/queue"
DATA="$HARNESS_DIR/data"
TLS="$HARNESS_DIR/tls"
SASL="$HARNESS_DIR/sasl"
MAILBASE="$HARNESS_DIR/mail"
MAILDIR="$MAILBASE/maildir"
MAILLOG="$HARNESS_DIR/maillog"
START_LOG="$HARNESS_DIR/postfix-command.log"
MARKER="$HARNESS_DIR/.smtp-relay-harness"
STAMP="$HARNESS_DIR/.stamp"
LOCK="$HARNESS_DIR.lock"

SASL_REALM="harness.localhost"
SASL_USERS=("relay-user:Correct-Horse-42" "rotated-user:Rotated-Pass-7")

SCRIPT_PATH="$(readlink -f "${BASH_SOURCE[0]}")"

# The stamp ties a running instance to this base port and this version of the
# script: if either changes, "start" rebuilds the instance from scratch.
expected_stamp() {
  local sum
  sum="$(sha256sum "$SCRIPT_PATH" | cut -d' ' -f1)"
  echo "base_port=$HARNESS_BASE_PORT script=$sum"
}

summary() {
  echo "postfix-harness: running plain=127.0.0.1:$PLAIN_PORT submission(STARTTLS)=127.0.0.1:$SUBMISSION_PORT smtps=127.0.0.1:$SMTPS_PORT maildir=$MAILDIR ca=$TLS/ca.crt"
}

# ---- process / port probes -------------------------------------------------

# Prints the master PID if the master of *this* instance is alive.
master_pid() {
  local pidfile="$QUEUE/pid/master.pid" pid cwd
  [[ -r "$pidfile" ]] || return 1
  pid="$(awk 'NR==1 {print $1}' "$pidfile" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against PID reuse: the Postfix master chdir()s to its queue_directory.
  cwd="$(readlink "/proc/$pid/cwd" 2>/dev/null)" || return 1
  [[ "$(readlink -f "$cwd")" == "$(readlink -f "$QUEUE")" ]] || return 1
  echo "$pid"
}

# Connect and expect a "220" greeting (plain and STARTTLS ports).
probe_banner() {
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    IFS= read -r -t 4 line <&3 || exit 1
    printf "QUIT\r\n" >&3 || true
    [[ "$line" == 220* ]]' probe "$1" 2>/dev/null
}

# TCP connect only (implicit-TLS port: the greeting is inside TLS).
probe_connect() {
  timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' probe "$1" 2>/dev/null
}

ports_healthy() {
  probe_banner "$PLAIN_PORT" && probe_banner "$SUBMISSION_PORT" && probe_connect "$SMTPS_PORT"
}

healthy() {
  [[ -f "$MARKER" && -f "$STAMP" ]] || return 1
  [[ "$(cat "$STAMP" 2>/dev/null)" == "$(expected_stamp)" ]] || return 1
  master_pid >/dev/null || return 1
  ports_healthy
}

# Run a postfix command for this instance. fd 9 (the flock) must not leak into
# the daemonised master, and neither may the caller's stdout/stderr (a test
# capturing our output would otherwise wait for EOF forever).
pf() {
  postfix -c "$CONF" "$@" </dev/null >>"$START_LOG" 2>&1 9>&-
}

# Masters of this instance whose HARNESS_DIR was deleted underneath them (no
# pid file left): found via the listening ports, accepted only if the process
# is a Postfix "master" whose cwd is our (deleted) queue directory.
orphan_master_pids() {
  command -v ss >/dev/null 2>&1 || return 0
  local p pid cwd queue
  queue="$(readlink -m "$QUEUE")"
  for p in "$PLAIN_PORT" "$SUBMISSION_PORT" "$SMTPS_PORT"; do
    ss -ltnpH "sport = :$p" 2>/dev/null | grep -o '"master",pid=[0-9]*' | cut -d= -f2
  done | sort -u | while read -r pid; do
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == master ]] || continue
    cwd="$(readlink "/proc/$pid/cwd" 2>/dev/null)" || continue
    if [[ "$cwd" == "$queue (deleted)" ]]; then echo "$pid"; fi
  done
}

kill_orphans() {
  local pid i
  for pid in $(orphan_master_pids); do
    log "killing orphaned harness master pid $pid (its $HARNESS_DIR was deleted)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || continue 2
      sleep 0.1
    done
    kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
  done
}

stop_instance() {
  local pid i
  kill_orphans
  pid="$(master_pid)" || return 0
  log "stopping Postfix instance (master pid $pid)"
  pf stop || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "master $pid did not stop; killing its process group"
  kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  die "could not stop master pid $pid"
}

# ---- instance construction --------------------------------------------------

make_tls() {
  mkdir -p "$TLS"
  cat >"$TLS/openssl.cnf" <<'EOF'
[ req ]
distinguished_name = req_dn
prompt             = no
[ req_dn ]
CN = smtp-relay-harness
[ v3_ca ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
[ v3_server ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid, issuer
EOF
  # ECDSA P-256: fast to generate, supported by rustls/native-tls/OpenSSL.
  openssl req -x509 -new -config "$TLS/openssl.cnf" -extensions v3_ca \
    -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$TLS/ca.key" -out "$TLS/ca.crt" -days 30 \
    -subj "/O=smtp-relay-harness/CN=smtp-relay-harness test CA" >/dev/null 2>&1 \
    || die "openssl: CA generation failed"
  openssl req -new -config "$TLS/openssl.cnf" \
    -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$TLS/server.key" -out "$TLS/server.csr" \
    -subj "/O=smtp-relay-harness/CN=localhost" >/dev/null 2>&1 \
    || die "openssl: server CSR generation failed"
  openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 30 \
    -extfile "$TLS/openssl.cnf" -extensions v3_server -out "$TLS/server.crt" >/dev/null 2>&1 \
    || die "openssl: server certificate signing failed"
  rm -f "$TLS/server.csr"
  chown -R root:postfix "$TLS"
  chmod 0755 "$TLS"
  chmod 0644 "$TLS/ca.crt" "$TLS/server.crt" "$TLS/openssl.cnf"
  chmod 0640 "$TLS/ca.key" "$TLS/server.key"
}

make_sasl() {
  mkdir -p "$SASL"
  # Cyrus reads <smtpd_sasl_path>.conf (upstream: from cyrus_sasl_config_path).
  cat >"$SASL/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN
sasldb_path: $SASL/sasldb2
EOF
  local entry user pass
  for entry in "${SASL_USERS[@]}"; do
    user="${entry%%:*}"
    pass="${entry#*:}"
    # -u must equal smtpd_sasl_local_domain: a bare "relay-user" is looked
    # up as relay-user@$SASL_REALM.
    printf '%s' "$pass" | saslpasswd2 -p -c -f "$SASL/sasldb2" -u "$SASL_REALM" "$user" \
      || die "saslpasswd2 failed for $user"
  done
  chown -R root:postfix "$SASL"
  chmod 0750 "$SASL"
  chmod 0640 "$SASL/smtpd.conf" "$SASL/sasldb2"
  # Debian's Postfix build (debian/patches/07_sasl_config) ignores
  # cyrus_sasl_config_path (observed with 3.7.11 on Debian 12) and
  # always searches "$config_directory/sasl:/usr/lib/sasl" for smtpd.conf, so
  # also expose the same file (hard link) there. Without this Cyrus falls
  # back to /etc/sasldb2 and advertises every installed mechanism.
  install -d -o root -g postfix -m 0750 "$CONF/sasl"
  ln -f "$SASL/smtpd.conf" "$CONF/sasl/smtpd.conf"
}

make_maps() {
  # texthash: read directly, no postmap needed.
  cat >"$CONF/recipient_access" <<'EOF'
rejected@example.test   550 5.1.1 rejected by harness
EOF
  cat >"$CONF/sender_access" <<'EOF'
blocked@example.test    550 5.7.1 sender blocked by harness
EOF
  cat >"$CONF/virtual_mailboxes" <<'EOF'
junk@example.test       maildir/.Junk/
EOF
}

make_main_cf() {
  local uid gid
  uid="$(id -u postfix)"
  gid="$(id -g postfix)"
  cat >"$CONF/main.cf" <<EOF
# Generated by tests/harness/postfix.sh -- test-only Postfix instance.
compatibility_level = 3.6
config_directory = $CONF
queue_directory = $QUEUE
data_directory = $DATA
maillog_file = $MAILLOG
maillog_file_prefixes = $HARNESS_DIR
syslog_name = postfix-harness

myhostname = harness.localhost
mydomain = localhost
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks_style = host
mynetworks = 127.0.0.0/8
smtputf8_enable = no
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
smtpd_banner = \$myhostname ESMTP smtp-relay-harness

# Nothing ever leaves this machine.
relayhost =
default_transport = error:harness delivers nowhere
relay_transport = error:harness delivers nowhere
local_transport = error:harness delivers nowhere

# Every recipient @example.test lands in ONE Maildir: $MAILDIR
virtual_mailbox_domains = example.test
virtual_mailbox_base = $MAILBASE
# ... except junk@example.test, filed in the Maildir++ folder .Junk (the round-trip
# probe's junk folder, read through tests/harness/dovecot.sh).
virtual_mailbox_maps = texthash:$CONF/virtual_mailboxes static:maildir/
virtual_uid_maps = static:$uid
virtual_gid_maps = static:$gid
virtual_minimum_uid = $uid
virtual_mailbox_limit = 0

# Fast delivery / no throttling for tests.
in_flow_delay = 0
# Daemons serve until the harness stops. By default each exits after 100 clients
# (smtpd sessions, cleanup and virtual requests) and is forked, exec'd and configured
# again: make scale sends 10,000 mails through 12,000 SMTP sessions.
max_use = 100000
max_idle = 3600s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_connection_count_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_auth_rate_limit = 0
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
smtpd_junk_command_limit = 1000
smtpd_peername_lookup = no

# TLS material (offered only where a service sets smtpd_tls_security_level).
smtpd_tls_security_level = none
smtpd_tls_cert_file = $TLS/server.crt
smtpd_tls_key_file = $TLS/server.key
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtpd_tls_auth_only = yes

# Cyrus SASL via auxprop/sasldb ($SASL/smtpd.conf). Enabled per service.
smtpd_sasl_auth_enable = no
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $SASL
smtpd_sasl_local_domain = $SASL_REALM
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = noanonymous

# Restrictions. Defaults below are for the plain port (BASE+0); the auth
# ports override them in master.cf. Sender check applies on all ports
# (evaluated at RCPT time, smtpd_delay_reject = yes).
harness_recipient_access = texthash:$CONF/recipient_access
harness_sender_access = texthash:$CONF/sender_access
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions = check_sender_access \$harness_sender_access
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access \$harness_recipient_access, permit_mynetworks, reject
harness_auth_recipient_restrictions = check_recipient_access \$harness_recipient_access, permit_sasl_authenticated, reject
EOF
}

make_master_cf() {
  cat >"$CONF/master.cf" <<EOF
# Generated by tests/harness/postfix.sh. No chroot anywhere.
# service type  private unpriv  chroot  wakeup  maxproc command + args
# BASE+0 plain: no TLS, no AUTH, mail for example.test from mynetworks.
127.0.0.1:$PLAIN_PORT inet n - n - - smtpd
  -o syslog_name=postfix-harness/plain
# BASE+1 submission: STARTTLS required, SASL AUTH (after TLS) required.
127.0.0.1:$SUBMISSION_PORT inet n - n - - smtpd
  -o syslog_name=postfix-harness/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_relay_restrictions=
  -o smtpd_recipient_restrictions=\$harness_auth_recipient_restrictions
# BASE+2 smtps: implicit TLS, SASL AUTH required.
127.0.0.1:$SMTPS_PORT inet n - n - - smtpd
  -o syslog_name=postfix-harness/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_relay_restrictions=
  -o smtpd_recipient_restrictions=\$harness_auth_recipient_restrictions
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
# Deliberately no smtp/relay/lmtp/local client services: nothing can leave.
EOF
}

build_instance() {
  if [[ -e "$HARNESS_DIR" ]]; then
    # Only ever wipe a directory this script created.
    if [[ -f "$MARKER" ]] || [[ -d "$HARNESS_DIR" && -z "$(ls -A "$HARNESS_DIR")" ]]; then
      rm -rf -- "$HARNESS_DIR"
    else
      die "$HARNESS_DIR exists but was not created by this script (no $MARKER); refusing to delete it"
    fi
  fi
  mkdir -p "$HARNESS_DIR"
  chown root:root "$HARNESS_DIR"
  chmod 0755 "$HARNESS_DIR"
  : >"$MARKER"

  mkdir -p "$CONF" "$QUEUE" "$DATA" "$MAILDIR"/{new,cur,tmp}
  chown root:root "$CONF" "$QUEUE"
  chmod 0755 "$CONF" "$QUEUE"
  chown postfix:postfix "$DATA"
  chmod 0700 "$DATA"
  chown -R postfix:postfix "$MAILBASE"
  chmod 0755 "$MAILBASE" "$MAILDIR" "$MAILDIR"/{new,cur,tmp}

  make_tls
  make_sasl
  make_maps
  make_main_cf
  make_master_cf
  chmod 0644 "$CONF/main.cf" "$CONF/master.cf" "$CONF/recipient_access" "$CONF/sender_access" "$CONF/virtual_mailboxes"
}

start_cmd() {
  if ! command -v postfix >/dev/null || ! id postfix >/dev/null 2>&1 || ! command -v saslpasswd2 >/dev/null; then
    die "Postfix and Cyrus SASL are not installed: run 'bash scripts/install-deps.sh --demo' as root (make demo and make test do)"
  fi
  [[ "$(id -u)" == 0 ]] || die "must run as root (postfix start needs it)"
  mkdir -p "$(dirname "$HARNESS_DIR")"
  exec 9>"$LOCK"
  flock -w 180 9 || die "timed out waiting for $LOCK"

  if healthy; then
    summary
    return 0
  fi

  local t0=$SECONDS
  stop_instance

  local p
  for p in "$PLAIN_PORT" "$SUBMISSION_PORT" "$SMTPS_PORT"; do
    if probe_connect "$p"; then
      die "port 127.0.0.1:$p is already in use by another process (not this harness instance)"
    fi
  done

  build_instance

  if ! pf start; then
    log "postfix start failed; last lines of $START_LOG and $MAILLOG:"
    tail -n 20 "$START_LOG" >&2 2>/dev/null || true
    tail -n 20 "$MAILLOG" >&2 2>/dev/null || true
    exit 1
  fi

  local i
  for ((i = 0; i < 150; i++)); do
    if master_pid >/dev/null && ports_healthy; then
      expected_stamp >"$STAMP"
      summary
      return 0
    fi
    sleep 0.1
  done
  log "instance did not become healthy within 15s (after $((SECONDS - t0))s total); last lines of $MAILLOG:"
  tail -n 30 "$MAILLOG" >&2 2>/dev/null || true
  exit 1
}

stop_cmd() {
  [[ "$(id -u)" == 0 ]] || die "must run as root"
  mkdir -p "$(dirname "$HARNESS_DIR")"
  exec 9>"$LOCK"
  flock -w 180 9 || die "timed out waiting for $LOCK"
  stop_instance
  rm -f "$STAMP"
  echo "postfix-harness: stopped"
}

status_cmd() {
  local pid
  if ! pid="$(master_pid)"; then
    echo "postfix-harness: not running"
    return 1
  fi
  if ! ports_healthy; then
    echo "postfix-harness: master pid $pid is running but the ports are not answering"
    return 1
  fi
  summary
}

case "${1:-}" in
  start) start_cmd ;;
  stop) stop_cmd ;;
  status) status_cmd ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
