//! Shared logic of SmtpRelay and ClusterSmtpRelay: observe (resolve Secrets),
//! verify (one SMTP session), decide (pure: facts → status and event).
//!
//! The offline `verify` command runs [`evaluate`] with a file-backed [`Source`];
//! the controller runs it with the API server behind the same trait.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::api::{
    AuthMechanismSpec, CaBundleKind, Condition, ConditionStatus, LastTest, LastVerification,
    ServerStatus, SmtpRelaySpec, SmtpRelayStatus, TlsMode,
};
use crate::smtp::{self, HostLimiter, Outcome, Step};

mod conditions;
#[cfg(test)]
mod fixtures;
mod inputs;
mod references;
mod round_trip;
mod schedule;
mod status;
mod test_send;
mod trend;

pub use conditions::*;
pub use inputs::*;
pub use references::*;
pub use round_trip::*;
pub use schedule::*;
pub use status::*;
pub use test_send::*;
pub use trend::*;

/// Condition types, in the order they are written.
pub use crate::api::relay_conditions as types;

/// Reasons that are not SMTP failures (those come from [`FailureReason`]).
pub mod reasons {
    pub const VERIFIED: &str = "Verified";
    pub const RESOLVED: &str = "Resolved";
    pub const NOT_REQUIRED: &str = "NotRequired";
    pub const NOT_ATTEMPTED: &str = "NotAttempted";
    pub const CONNECTED: &str = "Connected";
    pub const TLS_ESTABLISHED: &str = "TlsEstablished";
    pub const TLS_DISABLED: &str = "TlsDisabled";
    pub const CERTIFICATE_NOT_VERIFIED: &str = "CertificateNotVerified";
    pub const AUTHENTICATED: &str = "Authenticated";
    pub const ACCEPTED: &str = "Accepted";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";
    pub const SECRET_FORBIDDEN: &str = "SecretForbidden";
    pub const SECRET_NOT_LABELLED: &str = "SecretNotLabelled";
    pub const CA_BUNDLE_NOT_FOUND: &str = "CaBundleNotFound";
    pub const CA_BUNDLE_INVALID: &str = "CaBundleInvalid";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The API server could not be asked (timeout, 5xx): retried, not reported.
    pub const SOURCE_UNAVAILABLE: &str = "SourceUnavailable";
    pub const HONOURED: &str = "Honoured";
    pub const DEFAULT_CONFLICT: &str = "DefaultConflict";
}
/// Which relay is being evaluated.
#[derive(Clone, Debug)]
pub struct RelayRef<'a> {
    /// "SmtpRelay" or "ClusterSmtpRelay".
    pub kind: &'static str,
    /// Object namespace (SmtpRelay) — None for ClusterSmtpRelay.
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a SmtpRelaySpec,
    pub status: Option<&'a SmtpRelayStatus>,
    /// Namespace for ClusterSmtpRelay references without one (the operator's).
    pub default_namespace: &'a str,
    /// Where the operator may connect (the relay's kind picks the defaults).
    pub destinations: &'a Arc<smtp::DestinationPolicy>,
    /// DNS blocklist lookups with each verification; None: not checked.
    pub blocklists: Option<&'a crate::deliverability::Checker>,
}

impl RelayRef<'_> {
    pub fn label(&self) -> String {
        match self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    /// The destination rules of this relay's kind: only a ClusterSmtpRelay (no
    /// namespace) gets the cluster administrator's defaults.
    pub fn destination_scope(&self) -> smtp::Scope {
        if self.kind == "ClusterSmtpRelay" && self.namespace.is_none() {
            smtp::Scope::Cluster
        } else {
            smtp::Scope::Namespaced
        }
    }

    /// Namespace a reference resolves in: a SmtpRelay always reads its own.
    fn ref_namespace<'b>(&'b self, explicit: Option<&'b str>) -> &'b str {
        match self.namespace {
            Some(own) => own,
            None => explicit.unwrap_or(self.default_namespace),
        }
    }
}

/// Result of evaluating one relay.
#[derive(Debug)]
pub struct Evaluation {
    /// The status to write; None when nothing is due (write nothing).
    pub status: Option<SmtpRelayStatus>,
    pub transition: Option<Transition>,
    /// When to look again.
    pub requeue: Duration,
    pub outcome: Option<Outcome>,
}

/// Observe → verify → decide for one relay. With `force`, verify even if not due.
pub async fn evaluate(
    relay: &RelayRef<'_>,
    source: &impl Source,
    limiter: &HostLimiter,
    force: bool,
) -> Evaluation {
    let resolved = resolve(relay, source).await;
    let interval = schedule(relay.spec)
        .map(|(i, _)| i)
        .unwrap_or(Duration::from_secs(3600));
    // The round trip's mailbox: its inputs join the relay's fingerprint.
    let mut mailbox_versions = Vec::new();
    let mailbox = match &relay.spec.verification.round_trip {
        Some(rt) if relay.spec.verification.recipient.is_some() => {
            Some(resolve_mailbox(relay, rt, source, &mut mailbox_versions).await)
        }
        _ => None,
    };
    let inputs = match &resolved {
        Ok(r) => std::iter::once(r.inputs.clone())
            .chain(mailbox_versions)
            .collect::<Vec<_>>()
            .join("/"),
        Err(p) => format!("g{}/{}", relay.generation.unwrap_or(0), p.reason),
    };
    // A failed read of a Secret says nothing about the relay: try again soon, and
    // neither flip Ready nor count a failure (the offline `verify` reports it).
    if !force
        && let Err(p) = &resolved
        && p.reason == reasons::SOURCE_UNAVAILABLE
    {
        tracing::warn!(reason = %p.message, "cannot read the relay's inputs; retrying");
        return Evaluation {
            status: None,
            transition: None,
            requeue: Duration::from_secs(15),
            outcome: None,
        };
    }
    if !force
        && let Due::In(wait) = verification_due(
            relay.status,
            relay.generation,
            &inputs,
            interval,
            Timestamp::now(),
        )
    {
        return Evaluation {
            status: None,
            transition: None,
            requeue: wait,
            outcome: None,
        };
    }
    let blocklist = async {
        let checker = relay.blocklists.filter(|c| !c.zones().is_empty())?;
        let now = Timestamp::now().round(jiff::Unit::Second).ok()?.to_string();
        match checker
            .sending_addresses(&relay.spec.deliverability, &relay.spec.host, true)
            .await
        {
            Ok(addresses) => Some(checker.check_blocklists(&addresses, &now).await),
            Err(crate::deliverability::Miss::NotFound) => {
                Some(checker.check_blocklists(&[], &now).await)
            }
            // No answer about the relay's own addresses: a temporary failure (the last
            // answers are kept), not a configuration problem.
            Err(crate::deliverability::Miss::Temporary(e)) => Some(crate::api::BlocklistStatus {
                checked_at: now,
                zones: checker.zones().to_vec(),
                unanswered: vec![crate::api::BlocklistEntry {
                    address: relay.spec.host.clone(),
                    zone: "-".into(),
                    code: None,
                    reason: format!("no answer resolving the relay host: {e}"),
                }],
                ..Default::default()
            }),
        }
    };
    let token = mailbox
        .as_ref()
        .map(|_| crate::mailbox::Token::new(&relay.label()));
    // The session, then (with a round trip) the mailbox probe, while the blocklists
    // are asked.
    let session = async {
        let mut sent = tokio::time::Instant::now();
        let verified = match resolved {
            Ok(mut r) => {
                if let (Some(t), Some(m)) = (&token, r.target.message.as_mut()) {
                    m.headers
                        .push((crate::mailbox::PROBE_HEADER.into(), t.value.clone()));
                }
                let _permit = limiter.acquire(&r.target.host).await;
                let start = tokio::time::Instant::now();
                let outcome = smtp::verify(&r.target).await;
                sent = data_accepted_at(start, &outcome);
                Ok(outcome)
            }
            Err(p) => Err(p),
        };
        let delivery = match (mailbox, &verified, &token) {
            (None, ..) => None,
            (Some(Err(problem)), ..) => Some(problem),
            (Some(Ok(m)), Ok(o), Some(t)) if o.passed(Step::Data) => {
                let probe = crate::mailbox::probe(&m.target, t, sent, m.timeout).await;
                tracing::info!(?probe, "round-trip probe");
                Some(Delivery::Probed(probe))
            }
            (Some(Ok(_)), ..) => Some(Delivery::NotAttempted),
        };
        (verified, delivery)
    };
    let ((verified, delivery), blocklist) = futures::join!(session, blocklist);
    let next = next_status(
        relay.spec,
        relay.generation,
        relay.status,
        &inputs,
        &verified,
        Timestamp::now(),
    );
    let mut next = with_blocklist(
        next,
        relay.status,
        blocklist,
        relay.generation,
        Timestamp::now(),
    );
    if let Some(d) = &delivery {
        next = with_delivery(next, relay.status, d, Timestamp::now());
    }
    let transition = transition(relay.status, &next);
    let requeue = if next.consecutive_failures == 0 {
        interval
    } else {
        retry_delay(next.consecutive_failures, interval)
    };
    Evaluation {
        status: Some(next),
        transition,
        requeue,
        outcome: verified.ok(),
    }
}
