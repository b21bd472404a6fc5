//! Benchmarks (prints numbers; no pass/fail thresholds — targets are in the README).
//!
//! 1. One full verification (DNS → connect → STARTTLS → AUTH → test message → QUIT)
//!    through the project's code, and lettre's stock transport on the same relay.
//! 2. 200 relays verified concurrently: wall time and max sessions per host.
//! 3. The pure decision functions over 2,000 relays: time and allocations per pass.
//! 4. Timeouts: a tarpit fails at `timeout`, and does not hold up other relays.
//!
//! Needs the Postfix harness: `make bench` starts it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use smtp_relay_operator::smtp::{
    self, AuthMechanism, Credentials, HostLimiter, Mailbox, Password, Security, Target,
    TestMessage, TlsSettings,
};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static A: Counting = Counting;

fn full_target(h: &support::Harness) -> Target {
    Target {
        host: "localhost".into(),
        port: h.submission_port,
        security: Security::StartTls,
        tls: TlsSettings {
            ca_bundle_pem: Some(h.ca_pem()),
            ..Default::default()
        },
        credentials: Some(Credentials {
            mechanism: AuthMechanism::Plain,
            username: support::USER.into(),
            password: Password::new(support::PASSWORD),
        }),
        message: Some(
            TestMessage {
                from: Mailbox {
                    name: Some("Bench".into()),
                    address: "bench@example.test".into(),
                },
                no_reply: None,
                to: "bench@example.test".into(),
                custom_headers: vec![],
                relay_label: "SmtpRelay bench/latency".into(),
            }
            .outgoing(),
        ),
        timeout: Duration::from_secs(10),
        destinations: support::loopback_destinations(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn ours(t: &Target, n: usize) -> Vec<Duration> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let o = smtp::verify(t).await;
        v.push(start.elapsed());
        assert!(o.succeeded(), "{o:?}");
    }
    v.sort();
    v
}

async fn stock_lettre(h: &support::Harness, n: usize) -> Vec<Duration> {
    use lettre::transport::smtp::authentication::Credentials as LC;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(&h.ca_pem()).expect("ca"))
        .build_rustls()
        .expect("tls");
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        // A new transport per verification: one session each, like ours.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("localhost")
            .port(h.submission_port)
            .tls(Tls::Required(tls.clone()))
            .credentials(LC::new(support::USER.into(), support::PASSWORD.into()))
            .timeout(Some(Duration::from_secs(10)))
            .build();
        let msg = Message::builder()
            .from("Bench <bench@example.test>".parse().expect("from"))
            .to("bench@example.test".parse().expect("to"))
            .subject("stock lettre")
            .body(String::from("bench"))
            .expect("msg");
        transport.send(msg).await.expect("stock send");
        v.push(start.elapsed());
    }
    v.sort();
    v
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` only builds and starts
    // this binary, which should not spend CI minutes on measurements.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "verification: benchmark; run it with `cargo bench --bench verification` (make bench)"
        );
        return;
    }
    let h = support::harness();
    let n: usize = std::env::var("BENCH_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let t = full_target(h);

    println!(
        "## 1. One full verification (STARTTLS + AUTH PLAIN + test message), {n} sessions, loopback Postfix"
    );
    let _ = ours(&t, 3).await; // warm-up
    let mine = ours(&t, n).await;
    let stock = stock_lettre(h, n).await;
    let (p50, p95) = (percentile(&mine, 0.5), percentile(&mine, 0.95));
    let (s50, s95) = (percentile(&stock, 0.5), percentile(&stock, 0.95));
    println!(
        "smtp-relay-operator verify : p50 {:7.2} ms   p95 {:7.2} ms",
        ms(p50),
        ms(p95)
    );
    println!(
        "lettre AsyncSmtpTransport  : p50 {:7.2} ms   p95 {:7.2} ms",
        ms(s50),
        ms(s95)
    );
    println!("ratio (stock / ours, p50)  : {:.1}x", ms(s50) / ms(p50));

    println!("\n## 2. 200 relays verified concurrently, per-host cap 2");
    let limiter = Arc::new(HostLimiter::new(2));
    let start = Instant::now();
    let jobs = (0..200).map(|i| {
        let limiter = Arc::clone(&limiter);
        let mut t = t.clone();
        if let Some(m) = t.message.as_mut() {
            m.subject = format!("bench relay-{i}");
        }
        async move {
            let _permit = limiter.acquire(&t.host).await;
            smtp::verify(&t).await.succeeded()
        }
    });
    let results = futures::future::join_all(jobs).await;
    let wall = start.elapsed();
    println!(
        "wall {:.1} ms for 200 verifications ({} ok), max concurrent sessions on {}: {}",
        ms(wall),
        results.iter().filter(|ok| **ok).count(),
        t.host,
        limiter.max_observed(&t.host)
    );
    let limiter = Arc::new(HostLimiter::new(8));
    let start = Instant::now();
    let jobs = (0..200).map(|_| {
        let limiter = Arc::clone(&limiter);
        let t = t.clone();
        async move {
            let _permit = limiter.acquire(&t.host).await;
            smtp::verify(&t).await.succeeded()
        }
    });
    futures::future::join_all(jobs).await;
    println!(
        "same with cap 8: wall {:.1} ms, max concurrent {}",
        ms(start.elapsed()),
        limiter.max_observed(&t.host)
    );

    println!(
        "\n## 3. Decision functions over 2,000 relays (observed facts → status, change detection)"
    );
    decision_bench();

    println!("\n## 4. Timeouts");
    let port = support::fault::start(support::fault::Fault::Tarpit);
    let mut tarpit = Target {
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        tls: TlsSettings::default(),
        credentials: None,
        message: None,
        timeout: Duration::from_secs(2),
        destinations: support::loopback_destinations(),
    };
    let start = Instant::now();
    let (slow, fast) = tokio::join!(smtp::verify(&tarpit), async {
        let s = Instant::now();
        let o = smtp::verify(&t).await;
        (o.succeeded(), s.elapsed())
    });
    let took = start.elapsed();
    println!(
        "tarpit with timeout 2s failed after {:.0} ms ({:?}, {:+.1}% of timeout); a healthy relay verified meanwhile in {:.2} ms (ok={})",
        ms(took),
        slow.failure.map(|f| f.reason),
        (took.as_secs_f64() / 2.0 - 1.0) * 100.0,
        ms(fast.1),
        fast.0
    );
    tarpit.timeout = Duration::from_millis(500);
    let start = Instant::now();
    smtp::verify(&tarpit).await;
    println!(
        "tarpit with timeout 500ms failed after {:.0} ms",
        ms(start.elapsed())
    );
}

fn decision_bench() {
    use smtp_relay_operator::relay::next_status;
    let spec = support::fixtures::relay_spec();
    let outcome = support::fixtures::verified_outcome();
    let now: jiff::Timestamp = "2026-06-01T00:00:00Z".parse().expect("ts");
    let previous: Vec<_> = (0..2000)
        .map(|i| next_status(&spec, Some(i), None, "g1", &Ok(outcome.clone()), now))
        .collect();
    let verified = Ok(outcome);
    let start = Instant::now();
    let allocs0 = ALLOCS.load(Ordering::Relaxed);
    let mut changed = 0;
    for (i, prev) in previous.iter().enumerate() {
        let next = next_status(&spec, Some(i as i64), Some(prev), "g1", &verified, now);
        if &next != prev {
            changed += 1;
        }
    }
    let took = start.elapsed();
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs0;
    println!(
        "2,000 relays: {:.2} ms per full pass ({:.2} µs per relay), {} allocations ({:.0} per relay), {} changed (expected 0)",
        ms(took),
        took.as_secs_f64() * 1e6 / 2000.0,
        allocs,
        allocs as f64 / 2000.0,
        changed
    );
    identity_bench(now);
}

/// 10,000 SenderIdentities: plan the confirmation and decide the status, then
/// detect that nothing changed (struct comparison, no serialisation).
fn identity_bench(now: jiff::Timestamp) {
    use smtp_relay_operator::api::SenderIdentitySpec;
    use smtp_relay_operator::confirm::{ConfirmKey, Secrets};
    use smtp_relay_operator::controller::sender_identity::{
        Facts, RelayView, SecretState, next_status, plan,
    };
    let key = ConfirmKey::new(b"bench-key-bench-key-bench-key-32");
    let relay: Result<RelayView, smtp_relay_operator::controller::sender_identity::RelayProblem> =
        Ok(support::fixtures::ready_relay_view());
    let specs: Vec<SenderIdentitySpec> =
        (0..10_000).map(support::fixtures::identity_spec).collect();
    let fresh = Secrets::generate();
    let decide =
        |spec: &SenderIdentitySpec,
         previous: Option<&smtp_relay_operator::api::SenderIdentityStatus>| {
            let f = Facts {
                generation: Some(1),
                spec,
                status: previous,
                relay: &relay,
                code_annotation: None,
                resend_annotation: None,
                page_url: None,
                key: &key,
                fresh: &fresh,
                now,
                address_sends_today: 0,
            };
            let mut p = plan(&f);
            if p.send {
                // As if the mail went out: the steady state is "sent, pending".
                p.confirmation = smtp_relay_operator::controller::sender_identity::after_send(
                    &p.confirmation,
                    &Default::default(),
                    now,
                );
            }
            next_status(
                spec,
                Some(1),
                previous,
                &relay,
                &p,
                &SecretState::NotRequested,
                now,
            )
        };
    let previous: Vec<_> = specs.iter().map(|s| decide(s, None)).collect();
    let allocs0 = ALLOCS.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut changed = 0;
    for (spec, prev) in specs.iter().zip(&previous) {
        if &decide(spec, Some(prev)) != prev {
            changed += 1;
        }
    }
    let took = start.elapsed();
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs0;
    println!(
        "10,000 identities: {:.2} ms per full pass ({:.2} µs per identity), {} allocations ({:.0} per identity), {} changed (expected 0)",
        ms(took),
        took.as_secs_f64() * 1e6 / 10_000.0,
        allocs,
        allocs as f64 / 10_000.0,
        changed
    );
}
