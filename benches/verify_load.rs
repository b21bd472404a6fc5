//! Cost of `verify -f` before any connection: 20,000 relay documents (plus the
//! Secrets they reference) written to one temporary file, then read, parsed and
//! validated exactly as `smtp-relay-operator verify` does before it verifies anything.
//!
//! Prints numbers; no pass/fail threshold (the goal, ≤ 2 s for 20,000 relays, is in
//! issue #15 and the README). Nothing here opens a connection.

use std::io::Write as _;
use std::time::Instant;

const RELAYS: usize = 20_000;

fn relay(i: usize) -> String {
    let mode = ["StartTls", "Tls", "None"][i % 3];
    format!(
        r#"---
apiVersion: smtprelay.io/v1alpha1
kind: SmtpRelay
metadata:
  name: relay-{i}
  namespace: team-{ns}
spec:
  title: "Relay number {i} (purchasing)"
  host: smtp-{i}.example.com
  port: {port}
  tls:
    mode: {mode}
  auth:
    mechanism: Plain
    credentialsSecretRef:
      name: relay-credentials
  defaultSender:
    address: apps-{i}@example.com
    name: ACME Applications {i}
  noReply:
    address: no-reply@example.com
  customHeaders:
    - name: X-Campaign
      value: transactional-{i}
    - name: X-Team
      value: team-{ns}
  usage: [purchasing, sales, production]
  verification:
    interval: 1h30m
    timeout: 30s
"#,
        ns = i % 50,
        port = 2525 + (i % 1000),
    )
}

fn secret(ns: usize) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Secret
metadata:
  name: relay-credentials
  namespace: team-{ns}
  labels: {{smtprelay.io/credentials: "true"}}
stringData:
  username: apps@example.com
data:
  password: cGFzc3dvcmQ=
"#
    )
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` only builds and starts
    // this binary, which should not spend CI minutes on measurements.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "verify_load: benchmark; run it with `cargo bench --bench verify_load` (make bench)"
        );
        return;
    }
    let mut text = String::new();
    for ns in 0..50 {
        text.push_str(&secret(ns));
    }
    for i in 0..RELAYS {
        text.push_str(&relay(i));
    }
    let mut file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temporary file");
    file.write_all(text.as_bytes()).expect("write");
    let path = file.path().to_path_buf();

    // Warm-up on a small file, so one-time setup is reported apart.
    let t0 = Instant::now();
    let mut small = smtp_relay_operator::verify::Manifests::default();
    smtp_relay_operator::verify::load_text(&relay(0), "warm-up.yaml", &mut small)
        .expect("warm-up document is valid");
    let first = t0.elapsed();

    let mut runs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let m = smtp_relay_operator::verify::load(std::slice::from_ref(&path))
            .expect("every generated document is valid");
        let took = t.elapsed();
        assert_eq!(m.relays.len(), RELAYS);
        assert_eq!(m.secrets.len(), 50);
        runs.push(took);
    }
    runs.sort();

    // Where the time goes: reading the YAML, then validating each document.
    let t = Instant::now();
    let docs = smtp_relay_operator::manifest::documents(&text).expect("yaml");
    let parse = t.elapsed();
    let t = Instant::now();
    for d in &docs {
        smtp_relay_operator::verify::check_document(&d.value, "bench").expect("valid");
    }
    let check = t.elapsed();
    let relays: Vec<&serde_json::Value> = docs
        .iter()
        .map(|d| &d.value)
        .filter(|v| v["kind"] == "SmtpRelay")
        .collect();
    let validator = smtp_relay_operator::schema::validator("SmtpRelay").expect("validator");
    let t = Instant::now();
    for v in &relays {
        validator.validate(v).expect("valid");
    }
    let schema = t.elapsed();
    let t = Instant::now();
    for v in &relays {
        let m = smtp_relay_operator::schema::validate_metadata(v, true);
        assert!(m.is_empty());
    }
    let metadata = t.elapsed();
    println!(
        "  of which: YAML read {:.3} s, documents checked {:.3} s (schema + CEL {:.3} s, metadata {:.3} s)",
        parse.as_secs_f64(),
        check.as_secs_f64(),
        schema.as_secs_f64(),
        metadata.as_secs_f64()
    );
    let best = runs[0];
    println!(
        "verify load+validate: {RELAYS} relays, {:.1} MB: best {:.3} s, median {:.3} s ({:.1} µs per relay); first document {:.1} ms",
        text.len() as f64 / 1e6,
        best.as_secs_f64(),
        runs[1].as_secs_f64(),
        best.as_secs_f64() * 1e6 / RELAYS as f64,
        first.as_secs_f64() * 1e3,
    );
}
