//! The confirmation endpoint under attack, served for real on loopback (its own
//! accept loop, as `run` serves it) in front of the in-memory API server: slow
//! clients, many clients spending their budgets, guessing, framing and cross-site
//! posts, odd paths. A valid link still confirms through all of it.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use smtp_relay_operator::api::{ConfirmationState, SenderIdentity};
use smtp_relay_operator::confirm::server::{ConfirmState, Limits, serve};
use smtp_relay_operator::confirm::{self, ConfirmKey, Secrets, TOKEN};
use smtp_relay_operator::metrics::Metrics;
use support::fake_api::FakeApi;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const NS: &str = "team";

fn identity_path(name: &str) -> String {
    format!("/apis/smtprelay.io/v1alpha1/namespaces/{NS}/senderidentities/{name}")
}

/// An identity whose confirmation mail was sent; the token of its link.
fn pending_identity(fake: &FakeApi, key: &ConfirmKey, name: &str) -> String {
    let s = Secrets::generate();
    let now = jiff::Timestamp::now();
    fake.put(
        &identity_path(name),
        json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
               "metadata": {"name": name, "namespace": NS, "generation": 1},
               "spec": {"address": format!("{name}@example.test"), "displayName": "<b>IT Security</b>"},
               "status": {"confirmation": {
                   "state": "Pending", "address": format!("{name}@example.test"),
                   "attemptId": s.attempt_id, "attempts": 1,
                   "sentAt": confirm::rfc3339(now),
                   "expiresAt": confirm::rfc3339(now + jiff::SignedDuration::from_hours(1)),
                   "tokenDigest": key.digest(TOKEN, &s.attempt_id, &s.token)}}}),
    );
    s.token
}

struct Endpoint {
    addr: SocketAddr,
    state: Arc<ConfirmState>,
    fake: FakeApi,
    key: ConfirmKey,
}

async fn endpoint(limits: Limits) -> Endpoint {
    let fake = FakeApi::default();
    let key = ConfirmKey::new(b"endpoint-test-key-endpoint-test!");
    let state = Arc::new(ConfirmState::new(
        fake.client(),
        key.clone(),
        Arc::new(Metrics::new()),
        vec![],
        Some("http://confirm.example.test".into()),
        limits,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, Arc::clone(&state)));
    Endpoint {
        addr,
        state,
        fake,
        key,
    }
}

/// A connection from a chosen loopback source address.
async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(to).await
}

/// One request; (status, headers and body as text). Status 0 when the server
/// closed the connection without answering.
async fn request(
    source: Ipv4Addr,
    to: SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
) -> (u16, String) {
    let Ok(mut s) = connect_from(source, to).await else {
        return (0, String::new());
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: confirm.example.test\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn state_of(e: &Endpoint, name: &str) -> ConfirmationState {
    let i: SenderIdentity =
        serde_json::from_value(e.fake.get(&identity_path(name)).expect("identity")).expect("typed");
    i.status
        .and_then(|s| s.confirmation)
        .map(|c| c.state)
        .expect("confirmation")
}

const OWNER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[tokio::test]
async fn five_hundred_slow_clients_neither_exhaust_the_process_nor_block_the_owner() {
    // The defaults (512 in all, 8 per client), with shorter timeouts to see them act.
    let limits = Limits {
        header_timeout: Duration::from_secs(2),
        connection_timeout: Duration::from_secs(6),
        ..Limits::default()
    };
    let e = endpoint(limits.clone()).await;
    let token = pending_identity(&e.fake, &e.key, "sales");
    // 500 connections from 50 addresses, each sending half a request line and then
    // nothing (slow loris).
    let mut slow = Vec::new();
    for i in 0..500u32 {
        let source = Ipv4Addr::new(127, 0, 1, (10 + i % 50) as u8);
        if let Ok(mut s) = connect_from(source, e.addr).await {
            let _ = s.write_all(b"GET /confirm/team/sa").await;
            slow.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 8 per address are held, the rest closed at once.
    let open = e.state.connections.count();
    assert!(
        open <= 50 * limits.max_connections_per_client && open <= limits.max_connections,
        "{open} connections held open"
    );
    // The owner (another address) still confirms while the slow ones hang.
    let path = format!("/confirm/{NS}/sales/{token}");
    let (code, page) = request(OWNER, e.addr, "GET", &path, "").await;
    assert_eq!(code, 200, "{page}");
    let (code, page) = request(OWNER, e.addr, "POST", &path, "").await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(state_of(&e, "sales"), ConfirmationState::Confirmed);
    // Connections that never finish their headers are closed by the server.
    let deadline = Instant::now() + limits.header_timeout * 4;
    let mut closed = 0;
    for s in &mut slow {
        let mut buf = [0u8; 256];
        let left = deadline.saturating_duration_since(Instant::now());
        // End of stream or reset (unread bytes make the close a reset): closed.
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    assert_eq!(closed, slow.len(), "slow connections left open");
    let deadline = Instant::now() + Duration::from_secs(5);
    while e.state.connections.count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(e.state.connections.count(), 0);
}

#[tokio::test]
async fn many_clients_spending_their_budgets_cannot_starve_the_owner() {
    let e = endpoint(Limits::default()).await;
    let token = pending_identity(&e.fake, &e.key, "billing");
    let reads_before = e.fake.requests().len();
    // 28 addresses, each spending its whole budget guessing the owner's link.
    for client in 0..28u8 {
        let source = Ipv4Addr::new(127, 0, 2, 10 + client);
        let mut limited = false;
        for guess in 0..=Limits::default().per_client {
            let (code, _) = request(
                source,
                e.addr,
                "POST",
                &format!("/confirm/{NS}/billing/guess-{client}-{guess}"),
                "",
            )
            .await;
            assert!(code == 404 || code == 429, "{code}");
            limited |= code == 429;
        }
        assert!(limited, "client {client} was never limited");
    }
    // The guesses cost the API server a bounded number of reads.
    let reads = e.fake.requests().len() - reads_before;
    assert!(
        reads <= Limits::default().lookups_per_identity as usize,
        "{reads} API requests for one identity"
    );
    let (code, page) = request(
        OWNER,
        e.addr,
        "POST",
        &format!("/confirm/{NS}/billing/{token}"),
        "",
    )
    .await;
    assert_eq!(code, 200, "the owner's valid link: {page}");
    assert_eq!(state_of(&e, "billing"), ConfirmationState::Confirmed);
}

#[tokio::test]
async fn pages_cannot_be_framed_and_cross_site_posts_are_refused() {
    let e = endpoint(Limits::default()).await;
    let token = pending_identity(&e.fake, &e.key, "ops");
    let path = format!("/confirm/{NS}/ops/{token}");
    let (code, page) = request(OWNER, e.addr, "GET", &path, "").await;
    assert_eq!(code, 200);
    let lower = page.to_ascii_lowercase();
    assert!(lower.contains("x-frame-options: deny"), "{page}");
    assert!(
        lower.contains(
            "content-security-policy: default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'"
        ),
        "{page}"
    );
    assert!(lower.contains("cache-control: no-store"));
    // The requester's display name is shown escaped and marked as theirs.
    assert!(
        page.contains("given by the requester") && page.contains("&lt;b&gt;IT Security"),
        "{page}"
    );
    for header in [
        "Origin: https://evil.example\r\n",
        "Sec-Fetch-Site: cross-site\r\n",
        "Origin: null\r\n",
    ] {
        let (code, _) = request(OWNER, e.addr, "POST", &path, header).await;
        assert_eq!(code, 403, "{header}");
        assert_eq!(state_of(&e, "ops"), ConfirmationState::Pending);
    }
    let (code, _) = request(
        OWNER,
        e.addr,
        "POST",
        &path,
        "Origin: http://confirm.example.test\r\nSec-Fetch-Site: same-origin\r\n",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(state_of(&e, "ops"), ConfirmationState::Confirmed);
    // A body is refused past a few bytes.
    let mut s = connect_from(OWNER, e.addr).await.expect("connect");
    let body = "x".repeat(64 * 1024);
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: confirm.example.test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn odd_paths_never_reach_the_api_server() {
    let e = endpoint(Limits::default()).await;
    let before = e.fake.requests().len();
    for path in [
        "/confirm/../..",
        "/confirm/team/../x",
        "/confirm/team/..",
        "/confirm/team/%2e%2e/token",
        "/confirm/Team/sales/token",
        "/confirm/team/sales/tok%20en",
        "/confirm/team/-x/token",
        "/confirm/team.x/sales/token",
    ] {
        let (code, _) = request(OWNER, e.addr, "GET", path, "").await;
        assert!(code == 404 || code == 400, "{path}: {code}");
    }
    assert_eq!(e.fake.requests().len(), before, "the API server was asked");
}
