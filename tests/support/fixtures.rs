//! Builders shared by the integration tests and the benchmarks (benches include this
//! folder with `#[path]`). The unit tests' builders live next to the code they test
//! (`src/relay/fixtures.rs`, `src/controller/sender_identity/fixtures.rs`).

use std::time::Duration;

use serde_json::json;
use smtp_relay_operator::api::{MailboxSpec, RelayKindRef, SenderIdentitySpec, SmtpRelaySpec};
use smtp_relay_operator::controller::sender_identity::RelayView;
use smtp_relay_operator::smtp::{Outcome, ServerFacts, Step};

/// A SmtpRelay spec with only what is required (STARTTLS, no AUTH).
pub fn relay_spec() -> SmtpRelaySpec {
    serde_json::from_value(json!({
        "host": "relay.example.test",
        "defaultSender": {"address": "a@example.test"},
    }))
    .expect("relay spec")
}

/// A successful STARTTLS verification session, every step 1 ms.
pub fn verified_outcome() -> Outcome {
    Outcome {
        steps: [
            Step::Dns,
            Step::Connect,
            Step::Greeting,
            Step::Ehlo,
            Step::StartTls,
            Step::Tls,
            Step::Ehlo,
            Step::Quit,
        ]
        .into_iter()
        .map(|s| (s, Duration::from_millis(1)))
        .collect(),
        failure: None,
        server: ServerFacts {
            banner: Some("mx ESMTP".into()),
            extensions: vec!["PIPELINING".into(), "AUTH PLAIN LOGIN".into()],
            auth_mechanisms: vec!["PLAIN".into(), "LOGIN".into()],
            tls_version: Some("TLSv1.3".into()),
            certificate_not_after: Some("2027-01-01T00:00:00Z".into()),
            certificate_unverified: false,
        },
        message_id: None,
        total: Duration::from_millis(3),
    }
}

/// The view an identity has of a Ready SmtpRelay "corporate" serving `sales`.
pub fn ready_relay_view() -> RelayView {
    RelayView {
        label: "SmtpRelay corporate".into(),
        kind: RelayKindRef::SmtpRelay,
        name: "corporate".into(),
        not_ready: None,
        usage: vec!["sales".into()],
        no_reply: None,
        default_sender: MailboxSpec {
            address: "noreply@example.test".into(),
            name: None,
        },
        publishing_allowed: true,
        unconfirmed_allowed: true,
        binding: "SmtpRelay bench/corporate via smtp.example.test:587 (StartTls, no credentials)"
            .into(),
    }
}

/// SenderIdentity number `i` on relay "corporate"; every other one skips confirmation.
pub fn identity_spec(i: usize) -> SenderIdentitySpec {
    serde_json::from_value(json!({
        "address": format!("sender-{i}@example.test"),
        "displayName": format!("Sender {i}"),
        "usage": ["sales"],
        "relayRef": {"kind": "SmtpRelay", "name": "corporate"},
        "confirmation": {"required": i.is_multiple_of(2)},
    }))
    .expect("identity spec")
}
