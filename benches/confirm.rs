//! Does the confirmation endpoint's timing tell whether an identity exists? Median
//! and p90 time of a refused POST for (a) an identity with a pending confirmation
//! and a wrong token, (b) a name that does not exist, (c) an identity with nothing
//! pending, through the real accept loop on 127.0.0.1 in front of the in-memory API
//! server, and of the token check alone. Prints numbers only; asserts nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use smtp_relay_operator::api::SenderIdentity;
use smtp_relay_operator::confirm::server::{ConfirmState, Limits, judge, serve};
use smtp_relay_operator::confirm::{self, ConfirmKey, Secrets, TOKEN};
use support::fake_api::FakeApi;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TRIES: usize = 300;

fn put_identity(fake: &FakeApi, key: &ConfirmKey, name: &str, pending: bool) {
    let s = Secrets::generate();
    let now = jiff::Timestamp::now();
    let status = if pending {
        json!({"confirmation": {"state": "Pending", "address": format!("{name}@example.test"),
            "attemptId": s.attempt_id, "attempts": 1, "sentAt": confirm::rfc3339(now),
            "expiresAt": confirm::rfc3339(now + jiff::SignedDuration::from_hours(1)),
            "tokenDigest": key.digest(TOKEN, &s.attempt_id, &s.token)}})
    } else {
        json!({})
    };
    fake.put(
        &format!("/apis/smtprelay.io/v1alpha1/namespaces/team/senderidentities/{name}"),
        json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
               "metadata": {"name": name, "namespace": "team"},
               "spec": {"address": format!("{name}@example.test")}, "status": status}),
    );
}

async fn post(addr: std::net::SocketAddr, path: &str) -> Duration {
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(out.starts_with(b"HTTP/1.1 404"), "refused as expected");
    started.elapsed()
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
    format!("p50 {:>8.1?}  p90 {:>8.1?}", at(0.5), at(0.9))
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("confirm: benchmark; run it with `cargo bench --bench confirm`");
        return;
    }
    let fake = FakeApi::default();
    let key = ConfirmKey::new(b"bench-key-bench-key-bench-key-32");
    put_identity(&fake, &key, "pending", true);
    put_identity(&fake, &key, "idle", false);
    let state = Arc::new(ConfirmState::new(
        fake.client(),
        key.clone(),
        Arc::new(smtp_relay_operator::metrics::Metrics::new()),
        vec![],
        None,
        Limits {
            per_client: u32::MAX,
            ..Limits::default()
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, state));
    let token = "A".repeat(22);
    println!("refused POST through the endpoint ({TRIES} each, interleaved):");
    let cases = [
        ("pending identity, wrong token", "pending"),
        ("no such identity", "absent"),
        ("identity, nothing pending", "idle"),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for _ in 0..TRIES {
        for (i, (_, name)) in cases.iter().enumerate() {
            times[i].push(post(addr, &format!("/confirm/team/{name}/{token}")).await);
        }
    }
    for ((what, _), t) in cases.iter().zip(times) {
        println!("  {what:<32} {}", summary(t));
    }
    // The check alone, without I/O.
    let pending: SenderIdentity = serde_json::from_value(
        fake.get("/apis/smtprelay.io/v1alpha1/namespaces/team/senderidentities/pending")
            .expect("identity"),
    )
    .expect("typed");
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..10_000 {
        let t = Instant::now();
        let _ = judge(Some(&pending), &key, &token);
        with.push(t.elapsed());
        let t = Instant::now();
        let _ = judge(None, &key, &token);
        without.push(t.elapsed());
    }
    println!("token check alone (10,000 each):");
    println!(
        "  {:<32} {}",
        "pending identity, wrong token",
        summary(with)
    );
    println!("  {:<32} {}", "no identity", summary(without));
}
