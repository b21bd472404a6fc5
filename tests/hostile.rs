//! Issue #15 at the controller: relays aimed at internal addresses are refused by
//! the destination policy before any connection, a server that is not SMTP is not
//! quoted in status, and specs that bypassed the CRD (hosts, durations) are
//! InvalidSpec, never a panic. Only loopback is ever connected to.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use smtp_relay_operator::api::{MailboxSpec, SmtpRelaySpec, SmtpRelayStatus, TlsMode, TlsSpec};
use smtp_relay_operator::relay::{RelayRef, evaluate, types};
use smtp_relay_operator::smtp::{Cidr, DestinationPolicy, HostLimiter, Scope};
use smtp_relay_operator::verify::FileSource;

fn spec(host: &str, port: u16) -> SmtpRelaySpec {
    let mut spec: SmtpRelaySpec = serde_json::from_value(serde_json::json!({
        "host": "placeholder.example",
        "defaultSender": {"address": "a@example.com"},
        "verification": {"timeout": "2s"},
    }))
    .expect("spec");
    spec.host = host.to_string();
    spec.port = Some(i32::from(port));
    spec.tls = TlsSpec {
        mode: TlsMode::None,
        ..Default::default()
    };
    spec.default_sender = MailboxSpec {
        address: "a@example.com".into(),
        name: None,
    };
    spec
}

/// Evaluate a relay of `kind` as the controller does, with `policy`; its status.
async fn status_of(
    kind: &'static str,
    spec: &SmtpRelaySpec,
    policy: DestinationPolicy,
) -> SmtpRelayStatus {
    let source = FileSource {
        secrets: BTreeMap::new(),
        config_maps: BTreeMap::new(),
        cluster: None,
    };
    let policy = Arc::new(policy);
    let relay = RelayRef {
        kind,
        namespace: (kind == "SmtpRelay").then_some("team"),
        name: "r",
        generation: Some(1),
        spec,
        status: None,
        default_namespace: "smtp-relay-system",
        destinations: &policy,
        blocklists: None,
    };
    evaluate(&relay, &source, &HostLimiter::new(2), true)
        .await
        .status
        .expect("a status")
}

fn condition(status: &SmtpRelayStatus, t: &str) -> (String, String, String) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} condition: {status:?}"));
    (
        format!("{:?}", c.status),
        c.reason.clone(),
        c.message.clone(),
    )
}

/// A loopback listener that counts the connections it accepts (and says nothing).
fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (port, accepted)
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|c| c.parse().expect("cidr")).collect()
}

/// The issue's "done when": a SmtpRelay aimed at 169.254.169.254 reports
/// DestinationNotAllowed without opening a connection.
#[tokio::test]
async fn a_relay_aimed_at_cloud_metadata_is_refused_without_a_connection() {
    let metadata: IpAddr = "169.254.169.254".parse().expect("ip");
    // Guard: the address is refused by the policy the evaluation uses, so nothing
    // below can connect to it (the policy is checked by the only code that connects).
    assert!(
        DestinationPolicy::default()
            .check(Scope::Namespaced, metadata)
            .is_err()
    );
    assert!(
        DestinationPolicy::default()
            .check(Scope::Cluster, metadata)
            .is_err()
    );
    for kind in ["SmtpRelay", "ClusterSmtpRelay"] {
        let status = status_of(
            kind,
            &spec("169.254.169.254", 80),
            DestinationPolicy::default(),
        )
        .await;
        let (ready, reason, message) = condition(&status, types::READY);
        assert_eq!(
            (ready.as_str(), reason.as_str()),
            ("False", "DestinationNotAllowed"),
            "{kind}: {message}"
        );
        let (connected, reason, message) = condition(&status, types::CONNECTED);
        assert_eq!(
            (connected.as_str(), reason.as_str()),
            ("False", "DestinationNotAllowed")
        );
        assert!(
            message.contains("169.254.169.254")
                && message.contains("169.254.0.0/16")
                && message.contains(kind)
                && message.contains("no connection was opened"),
            "{kind}: {message}"
        );
        let last = status
            .last_verification
            .as_ref()
            .expect("last verification");
        assert_eq!(last.failed_step.as_deref(), Some("connect"));
        assert!(
            status.server.is_none(),
            "nothing answered: {:?}",
            status.server
        );
    }
}

/// Proof that no connection is opened: a listener on loopback counts none while
/// the policy refuses it, by default for a SmtpRelay (also through a DNS name) and
/// by --denied-destinations for a ClusterSmtpRelay; it counts one when allowed.
#[tokio::test]
async fn a_refused_destination_is_never_connected_to() {
    let (port, accepted) = counting_listener();
    let default = DestinationPolicy::default();
    for host in ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"] {
        let status = status_of("SmtpRelay", &spec(host, port), default.clone()).await;
        let (_, reason, message) = condition(&status, types::READY);
        assert_eq!(reason, "DestinationNotAllowed", "{host}: {message}");
        assert!(message.contains("127.0.0.0/8"), "{host}: {message}");
    }
    let denied = DestinationPolicy::new(vec![], cidrs(&["127.0.0.1"]), vec![]);
    let status = status_of("ClusterSmtpRelay", &spec("127.0.0.1", port), denied).await;
    let (_, reason, message) = condition(&status, types::READY);
    assert_eq!(reason, "DestinationNotAllowed", "{message}");
    assert!(
        message.contains("--denied-destinations 127.0.0.1/32"),
        "{message}"
    );
    // The cluster's ranges are refused to SmtpRelays and named as such (loopback
    // stands in for them here).
    let ranges = DestinationPolicy::new(vec![], vec![], cidrs(&["127.0.0.1/32"]));
    let status = status_of("SmtpRelay", &spec("127.0.0.1", port), ranges).await;
    let (_, reason, message) = condition(&status, types::READY);
    assert_eq!(reason, "DestinationNotAllowed");
    assert!(message.contains("--cluster-cidrs"), "{message}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "a refused destination was connected to"
    );

    // Control: allowed, the same listener counts the connection.
    let status = status_of(
        "ClusterSmtpRelay",
        &spec("127.0.0.1", port),
        DestinationPolicy::default(),
    )
    .await;
    assert_ne!(condition(&status, types::READY).1, "DestinationNotAllowed");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// A scripted server that greets with `greeting` and closes.
fn greeting_server(greeting: &'static [u8]) -> u16 {
    use std::io::Write as _;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(greeting);
        }
    });
    port
}

/// Issue #15: what answered is not echoed into status unless it is an SMTP server
/// that greets with 220: a port scanner's results are not readable in status.
#[tokio::test]
async fn what_is_not_an_smtp_greeting_is_not_echoed() {
    let allowed = || DestinationPolicy::allowing(&["127.0.0.0/8"]).expect("cidr");
    for (greeting, reason, code) in [
        (
            &b"-ERR unknown command 'internal-redis-6.2.7'\r\n"[..],
            "ProtocolError",
            None,
        ),
        (
            &b"HTTP/1.1 400 Bad Request\r\nServer: internal-admin-panel\r\n\r\n"[..],
            "ProtocolError",
            None,
        ),
        (
            &b"554 5.3.2 internal-mx.corp.example refuses you\r\n"[..],
            "GreetingRejected",
            Some("554"),
        ),
    ] {
        let port = greeting_server(greeting);
        let status = status_of("SmtpRelay", &spec("127.0.0.1", port), allowed()).await;
        let text = serde_json::to_string(&status).expect("json");
        for secret in [
            "internal-redis",
            "internal-admin-panel",
            "internal-mx",
            "Bad Request",
        ] {
            assert!(!text.contains(secret), "{secret} echoed: {text}");
        }
        let (_, got, message) = condition(&status, types::READY);
        assert_eq!(got, reason, "{message}");
        if let Some(code) = code {
            assert!(message.contains(code), "{message}");
        }
        assert!(
            status.server.as_ref().is_none_or(|s| s.banner.is_none()),
            "{text}"
        );
    }
    // A 220 greeting is an SMTP server: its banner is shown.
    let port = support::fault::start(support::fault::Fault::ResetMidData);
    let status = status_of("SmtpRelay", &spec("127.0.0.1", port), allowed()).await;
    let banner = status.server.as_ref().and_then(|s| s.banner.clone());
    assert_eq!(banner.as_deref(), Some("fault.test ESMTP scripted"));
}

/// Issue #15: specs that bypassed the CRD (an older CRD, a direct etcd write) are
/// refused with InvalidSpec and the field named, never CaBundleInvalid or a panic.
#[tokio::test]
async fn specs_that_bypassed_the_crd_are_invalid_spec() {
    let policy = || DestinationPolicy::allowing(&["127.0.0.0/8"]).expect("cidr");
    for host in support::hosts::MALFORMED_HOSTS.iter().copied() {
        for mode in [TlsMode::None, TlsMode::StartTls] {
            let mut s = spec(host, 2525);
            s.tls.mode = mode;
            let status = status_of("SmtpRelay", &s, policy()).await;
            let (ready, reason, message) = condition(&status, types::READY);
            assert_eq!(
                (ready.as_str(), reason.as_str()),
                ("False", "InvalidSpec"),
                "{host}: {message}"
            );
            assert!(message.starts_with("host "), "{host}: {message}");
        }
    }
    let mut s = spec("relay.example.com", 2525);
    s.tls.mode = TlsMode::Tls;
    s.tls.server_name = Some("1.2.3.4.5".into());
    let (_, reason, message) = condition(&status_of("SmtpRelay", &s, policy()).await, types::READY);
    assert_eq!(reason, "InvalidSpec", "{message}");
    assert!(message.contains("tls.serverName"), "{message}");
    for (field, value) in [
        ("interval", "5124095576030431h"),
        ("interval", "5124095576030430h9h"),
        ("timeout", "0.99999999999999999999s"),
        ("interval", "2562047h47m16.854775808s"),
    ] {
        let mut s = spec("relay.example.com", 2525);
        if field == "interval" {
            s.verification.interval = value.into();
        } else {
            s.verification.timeout = value.into();
        }
        let (_, reason, message) =
            condition(&status_of("SmtpRelay", &s, policy()).await, types::READY);
        assert_eq!(reason, "InvalidSpec", "{value}: {message}");
        assert!(
            message.contains(&format!("verification.{field}")),
            "{message}"
        );
    }
}
