//! Builders shared by the relay unit tests.

use super::*;
use crate::api::{AuthSpec, CredentialsSecretRef, MailboxSpec, TlsSpec, VerificationSpec};
use crate::smtp::{Failure, FailureReason, ServerFacts};

pub fn spec(mode: TlsMode, auth: bool, recipient: bool) -> SmtpRelaySpec {
    SmtpRelaySpec {
        title: None,
        host: "relay.example.test".into(),
        port: None,
        tls: TlsSpec {
            mode,
            ..Default::default()
        },
        auth: auth.then(|| AuthSpec {
            mechanism: AuthMechanismSpec::Plain,
            credentials_secret_ref: CredentialsSecretRef {
                name: "creds".into(),
                username_key: "username".into(),
                password_key: "password".into(),
                namespace: None,
            },
        }),
        default_sender: MailboxSpec {
            address: "a@example.test".into(),
            name: None,
        },
        no_reply: None,
        custom_headers: vec![],
        usage: vec![],
        verification: VerificationSpec {
            recipient: recipient.then(|| "inbox@example.test".into()),
            ..Default::default()
        },
        deliverability: Default::default(),
    }
}

/// An outcome where every step up to `fail_at` passed and `fail_at` failed.
pub fn outcome(fail_at: Option<(Step, FailureReason)>) -> Outcome {
    let mut steps = Vec::new();
    for s in Step::ALL {
        steps.push((s, Duration::from_millis(1)));
        if fail_at.is_some_and(|(f, _)| f == s) {
            break;
        }
    }
    Outcome {
        steps,
        failure: fail_at.map(|(step, reason)| Failure {
            step,
            reason,
            code: Some(535),
            message: "server replied 535 no".into(),
        }),
        server: ServerFacts {
            banner: Some("mx ESMTP".into()),
            tls_version: Some("TLSv1.3".into()),
            ..Default::default()
        },
        message_id: fail_at.is_none().then(|| "<id@example.test>".into()),
        total: Duration::from_millis(11),
    }
}

pub fn status_of(conds: &[Desired], t: &str) -> Option<(ConditionStatus, String)> {
    conds
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status, c.reason.clone()))
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}
