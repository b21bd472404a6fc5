//! Memory of the operator process with full caches: 2,000 SmtpRelays and 10,000
//! SenderIdentities, with and without 20,000 unrelated 10 KiB Secrets in the cluster.
//!
//! The cluster is the in-memory fake API server (tests/support/fake_api.rs) served
//! over HTTP on 127.0.0.1, answering paged and metadata-only lists as a real API
//! server does; the operator is the release binary, run as a child process with a
//! kubeconfig pointing at it. Peak RSS is the child's VmHWM. Prints numbers only.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_api::FakeApi;

const RELAYS: usize = 2_000;
const IDENTITIES: usize = 10_000;
const NAMESPACES: usize = 20;

fn populate(fake: &FakeApi, unrelated_secrets: usize) {
    // Relays are verified and not due: nothing connects to this port.
    let closed = support::closed_port().port;
    let now = smtp_relay_operator::confirm::rfc3339(jiff::Timestamp::now());
    fake.put(
        "/api/v1/namespaces/smtp-relay-system/secrets/smtp-relay-operator-confirmation-key",
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "smtp-relay-operator-confirmation-key", "namespace": "smtp-relay-system"},
               "data": {"key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}}),
    );
    for i in 0..RELAYS {
        let ns = format!("team-{}", i % NAMESPACES);
        fake.put(
            &format!("/apis/smtprelay.io/v1alpha1/namespaces/{ns}/smtprelays/relay-{i}"),
            json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
                   "metadata": {"name": format!("relay-{i}"), "namespace": ns},
                   "spec": {"title": format!("Relay number {i}"), "host": "127.0.0.1", "port": closed,
                            "tls": {"mode": "None"}, "usage": ["sales", "purchasing"],
                            "defaultSender": {"address": format!("relay-{i}@example.test"), "name": "ACME"},
                            "customHeaders": [{"name": "X-Team", "value": ns}]},
                   "status": {"observedGeneration": 1, "port": closed,
                       "conditions": [{"type": "Ready", "status": "True", "reason": "Verified",
                                       "message": "relay verified in 3 ms", "lastTransitionTime": now, "observedGeneration": 1}],
                       "lastVerification": {"time": now, "result": "Succeeded", "inputs": "g1",
                                            "durationMs": {"dns": 0, "connect": 0, "total": 3}}}}),
        );
    }
    for i in 0..IDENTITIES {
        let ns = format!("team-{}", i % NAMESPACES);
        let relay = (i % RELAYS) - (i % RELAYS) % NAMESPACES + i % NAMESPACES;
        fake.put(
            &format!("/apis/smtprelay.io/v1alpha1/namespaces/{ns}/senderidentities/id-{i}"),
            json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
                   "metadata": {"name": format!("id-{i}"), "namespace": ns},
                   "spec": {"address": format!("sender-{i}@example.test"), "displayName": format!("Sender {i}"),
                            "usage": ["sales"], "confirmation": {"required": false},
                            "relayRef": {"kind": "SmtpRelay", "name": format!("relay-{relay}")}}}),
        );
    }
    let blob = "x".repeat(10 * 1024);
    for i in 0..unrelated_secrets {
        let ns = format!("apps-{}", i % 100);
        fake.put(
            &format!("/api/v1/namespaces/{ns}/secrets/app-secret-{i}"),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": format!("app-secret-{i}"), "namespace": ns,
                                "labels": {"app": format!("app-{i}")}},
                   "data": {"blob": blob}}),
        );
    }
}

fn vm(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn measure(unrelated_secrets: usize) -> (f64, f64, Duration) {
    let fake = FakeApi::default();
    populate(&fake, unrelated_secrets);
    let addr = fake.clone().serve().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n"
        ),
    )
    .expect("kubeconfig");
    let start = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_smtp-relay-operator"))
        // Tests and benches never ask the system resolver.
        .env("SMTP_RELAY_DELIVERABILITY_CHECKS", "false")
        .args([
            "run",
            "--namespace",
            "smtp-relay-system",
            "--metrics-addr",
            "127.0.0.1:0",
            "--confirmation-addr",
            "127.0.0.1:0",
            "--allowed-destinations",
            "127.0.0.0/8",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("operator binary");
    let pid = child.id();
    // Settled: every identity has had its status written once.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let written = fake
            .writes()
            .iter()
            .filter(|(_, p)| p.ends_with("/status") && p.contains("/senderidentities/"))
            .count();
        if written >= IDENTITIES || Instant::now() > deadline {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the operator exited early: {status}");
        }
    }
    let settled = start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hwm = vm(pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    let rss = vm(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0;
    let _ = child.kill();
    let _ = child.wait();
    (hwm, rss, settled)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` only builds and starts
    // this binary, which should not spend CI minutes on measurements.
    if !std::env::args().any(|a| a == "--bench") {
        println!("memory: benchmark; run it with `cargo bench --bench memory` (make bench)");
        return;
    }
    println!("## Memory: {RELAYS} SmtpRelays + {IDENTITIES} SenderIdentities in the caches");
    let (base_hwm, base_rss, t0) = measure(0).await;
    println!(
        "without unrelated Secrets : peak RSS {base_hwm:6.1} MiB, RSS after settling {base_rss:6.1} MiB (settled in {:.1}s)",
        t0.as_secs_f64()
    );
    let (hwm, rss, t1) = measure(20_000).await;
    println!(
        "with 20,000 x 10 KiB Secrets: peak RSS {hwm:6.1} MiB, RSS after settling {rss:6.1} MiB (settled in {:.1}s)",
        t1.as_secs_f64()
    );
    println!(
        "unrelated Secrets add      : {:+.1} MiB peak, {:+.1} MiB settled",
        hwm - base_hwm,
        rss - base_rss
    );
}
