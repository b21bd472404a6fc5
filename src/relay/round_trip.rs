//! The round-trip probe (`spec.verification.roundTrip`): the mailbox target from the
//! spec and its Secret, the token on the test message, and the pure decision of the
//! Delivered condition. Delivered never changes Ready: Ready says the relay accepts
//! mail, Delivered whether that mail reached the mailbox.

use super::*;
use crate::api::{AuthenticationVerdicts, DeliveryStatus, MailboxProtocol, RoundTripSpec};
use crate::mailbox::{self, Probe};

/// Reasons of the Delivered condition.
pub mod delivery_reasons {
    pub const DELIVERED: &str = "Delivered";
    pub const DELIVERED_TO_JUNK: &str = "DeliveredToJunk";
    pub const NOT_DELIVERED: &str = "NotDelivered";
    pub const MAILBOX_UNREACHABLE: &str = "MailboxUnreachable";
    pub const MAILBOX_AUTH_REJECTED: &str = "MailboxAuthRejected";
}

/// What became of the round trip in one verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The test message was not accepted, or the relay's inputs could not be used.
    NotAttempted,
    /// The mailbox's own inputs (Secret, CA bundle, spec) could not be used.
    Problem {
        reason: &'static str,
        message: String,
    },
    /// The probe ran.
    Probed(Probe),
}

/// The mailbox to look into, with the round trip's timeout and the versions of its
/// inputs (for the relay's fingerprint).
#[derive(Debug)]
pub struct MailboxResolved {
    pub target: mailbox::Target,
    pub timeout: Duration,
}

fn problem(reason: &'static str, message: String) -> Delivery {
    Delivery::Problem { reason, message }
}

/// Observe: the mailbox target from the spec, its credentials Secret and CA bundle.
/// `versions` gets the inputs' versions, whatever the result.
pub async fn resolve_mailbox(
    relay: &RelayRef<'_>,
    rt: &RoundTripSpec,
    source: &impl Source,
    versions: &mut Vec<String>,
) -> Result<MailboxResolved, Delivery> {
    let timeout = parse_duration("verification.roundTrip.timeout", &rt.timeout)
        .map_err(|p| problem(p.reason, p.message))?;
    if !(Duration::from_secs(5)..=Duration::from_secs(900)).contains(&timeout) {
        return Err(problem(
            reasons::INVALID_SPEC,
            "verification.roundTrip.timeout must be between 5s and 15m".into(),
        ));
    }
    for (field, value) in [
        ("verification.roundTrip.host", Some(&rt.host)),
        (
            "verification.roundTrip.tls.serverName",
            rt.tls.server_name.as_ref(),
        ),
    ] {
        if let Some(value) = value
            && let Err(why) = crate::api::check_host(value)
        {
            return Err(problem(
                reasons::INVALID_SPEC,
                format!("{field} {:?} {why}", crate::table::clip(value, 64)),
            ));
        }
    }
    let port = match rt.port {
        None => rt.protocol.default_port(rt.tls.mode),
        Some(p) => u16::try_from(p).ok().filter(|p| *p != 0).ok_or_else(|| {
            problem(
                reasons::INVALID_SPEC,
                format!("verification.roundTrip.port {p} is out of range"),
            )
        })?,
    };
    let r = &rt.credentials_secret_ref;
    let ns = relay.ref_namespace(r.namespace.as_deref());
    let (username, password, version) = read_credentials(source, ns, r)
        .await
        .map_err(|p| problem(p.reason, p.message))?;
    versions.push(format!("m{version}"));
    let ca_bundle_pem = match &rt.tls.ca_bundle_ref {
        None => None,
        Some(ca) => {
            let ns = relay.ref_namespace(ca.namespace.as_deref());
            let (pem, version) = read_ca_bundle(source, ns, ca).await.map_err(|e| match e {
                CaBundleError::Unreadable(e) => {
                    problem(reasons::CA_BUNDLE_NOT_FOUND, e.to_string())
                }
                CaBundleError::Missing(m) => problem(reasons::CA_BUNDLE_NOT_FOUND, m),
            })?;
            versions.push(format!("n{version}"));
            Some(pem)
        }
    };
    let (security, tls) = tls_settings(&rt.host, &rt.tls, ca_bundle_pem).map_err(|e| match e {
        smtp::TlsSetupError::CaBundle(m) => problem(reasons::CA_BUNDLE_INVALID, m),
        smtp::TlsSetupError::ServerName(m) => problem(reasons::INVALID_SPEC, m),
    })?;
    let folders = if rt.folders.is_empty() {
        crate::api::DEFAULT_FOLDERS
            .iter()
            .map(|f| f.to_string())
            .collect()
    } else {
        rt.folders.clone()
    };
    Ok(MailboxResolved {
        target: mailbox::Target {
            protocol: match rt.protocol {
                MailboxProtocol::Imap => mailbox::Protocol::Imap,
                MailboxProtocol::Pop3 => mailbox::Protocol::Pop3,
            },
            host: rt.host.clone(),
            port,
            security,
            tls,
            username,
            password: smtp::Password::new(password),
            folders,
            destinations: smtp::Destinations::new(
                Arc::clone(relay.destinations),
                relay.destination_scope(),
            ),
        },
        timeout,
    })
}

/// When the relay accepted DATA: the session's start plus every step before QUIT.
pub fn data_accepted_at(start: tokio::time::Instant, outcome: &Outcome) -> tokio::time::Instant {
    start
        + outcome
            .steps
            .iter()
            .filter(|(s, _)| *s != Step::Quit)
            .map(|(_, d)| *d)
            .sum::<Duration>()
}

/// Decide (pure): the Delivered condition and `lastVerification.delivery`.
pub fn delivery_decision(delivery: &Delivery) -> (Desired, Option<DeliveryStatus>) {
    use ConditionStatus::{False, True, Unknown};
    use delivery_reasons as r;
    let d = |status, reason: &str, message: String| Desired {
        type_: types::DELIVERED,
        status,
        reason: reason.to_string(),
        message,
    };
    let status = |reason: &str| DeliveryStatus {
        reason: reason.to_string(),
        ..Default::default()
    };
    match delivery {
        Delivery::NotAttempted => (
            d(
                Unknown,
                reasons::NOT_ATTEMPTED,
                "the relay did not accept the test message".into(),
            ),
            None,
        ),
        Delivery::Problem { reason, message } => (
            d(Unknown, reason, format!("mailbox: {message}")),
            Some(status(reason)),
        ),
        Delivery::Probed(Probe::Found { found, latency }) => {
            let ms = i64::try_from(latency.as_millis()).unwrap_or(i64::MAX);
            let v = &found.verdicts;
            let delivery = DeliveryStatus {
                reason: if found.junk {
                    r::DELIVERED_TO_JUNK
                } else {
                    r::DELIVERED
                }
                .into(),
                latency_ms: Some(ms),
                folder: Some(found.folder.clone()),
                authentication_results: (!v.is_empty()).then(|| AuthenticationVerdicts {
                    spf: v.spf.clone(),
                    dkim: v.dkim.clone(),
                    dmarc: v.dmarc.clone(),
                }),
            };
            let verdicts = delivery
                .authentication_results
                .as_ref()
                .map(|a| {
                    let one = |n: &str, x: &Option<String>| {
                        format!("{n}={}", x.as_deref().unwrap_or("none"))
                    };
                    format!(
                        " ({}, {}, {})",
                        one("spf", &a.spf),
                        one("dkim", &a.dkim),
                        one("dmarc", &a.dmarc)
                    )
                })
                .unwrap_or_default();
            let condition = if found.junk {
                d(
                    False,
                    r::DELIVERED_TO_JUNK,
                    format!(
                        "test message arrived in {} ms but was filed in {:?}, a junk folder{verdicts}",
                        ms, found.folder
                    ),
                )
            } else {
                d(
                    True,
                    r::DELIVERED,
                    format!(
                        "test message arrived in {:?} in {ms} ms{verdicts}",
                        found.folder
                    ),
                )
            };
            (condition, Some(delivery))
        }
        Delivery::Probed(Probe::NotFound { waited }) => (
            d(
                False,
                r::NOT_DELIVERED,
                format!(
                    "test message not found in the mailbox after {} s",
                    waited.as_secs()
                ),
            ),
            Some(status(r::NOT_DELIVERED)),
        ),
        Delivery::Probed(Probe::Failed(e)) => {
            let reason = match e {
                mailbox::MailboxError::AuthRejected(_) => r::MAILBOX_AUTH_REJECTED,
                _ => r::MAILBOX_UNREACHABLE,
            };
            (d(Unknown, reason, e.to_string()), Some(status(reason)))
        }
    }
}

/// Add the Delivered condition (before Ready) and `lastVerification.delivery` to a
/// freshly decided status.
pub fn with_delivery(
    mut status: SmtpRelayStatus,
    previous: Option<&SmtpRelayStatus>,
    delivery: &Delivery,
    now: Timestamp,
) -> SmtpRelayStatus {
    let (desired, record) = delivery_decision(delivery);
    let now_text = now.round(jiff::Unit::Second).unwrap_or(now).to_string();
    let empty = Vec::new();
    let merged = merge_conditions(
        previous.map(|p| &p.conditions).unwrap_or(&empty),
        vec![desired],
        status.observed_generation,
        &now_text,
    );
    let at = status
        .conditions
        .iter()
        .position(|c| c.type_ == types::READY)
        .unwrap_or(status.conditions.len());
    status.conditions.splice(at..at, merged);
    if let Some(l) = status.last_verification.as_mut() {
        l.delivery = record;
    }
    status
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::mailbox::{Found, MailboxError, Verdicts};
    use ConditionStatus::{False, True, Unknown};

    fn found(folder: &str, junk: bool) -> Delivery {
        Delivery::Probed(Probe::Found {
            found: Found {
                folder: folder.into(),
                junk,
                verdicts: Verdicts {
                    spf: Some("pass".into()),
                    dkim: None,
                    dmarc: Some("fail".into()),
                },
            },
            latency: Duration::from_millis(1234),
        })
    }

    #[test]
    fn every_probe_outcome_has_its_condition() {
        let table: Vec<(Delivery, ConditionStatus, &str)> = vec![
            (found("INBOX", false), True, "Delivered"),
            (found("Junk", true), False, "DeliveredToJunk"),
            (
                Delivery::Probed(Probe::NotFound {
                    waited: Duration::from_secs(120),
                }),
                False,
                "NotDelivered",
            ),
            (
                Delivery::Probed(Probe::Failed(MailboxError::Unreachable("refused".into()))),
                Unknown,
                "MailboxUnreachable",
            ),
            (
                Delivery::Probed(Probe::Failed(MailboxError::Timeout("slow".into()))),
                Unknown,
                "MailboxUnreachable",
            ),
            (
                Delivery::Probed(Probe::Failed(MailboxError::AuthRejected("no".into()))),
                Unknown,
                "MailboxAuthRejected",
            ),
            (
                problem(reasons::SECRET_NOT_FOUND, "gone".into()),
                Unknown,
                reasons::SECRET_NOT_FOUND,
            ),
            (Delivery::NotAttempted, Unknown, reasons::NOT_ATTEMPTED),
        ];
        for (delivery, status, reason) in table {
            let (d, record) = delivery_decision(&delivery);
            assert_eq!(
                (d.type_, d.status, d.reason.as_str()),
                (types::DELIVERED, status, reason)
            );
            match delivery {
                Delivery::NotAttempted => assert_eq!(record, None),
                _ => assert_eq!(record.map(|r| r.reason), Some(reason.to_string())),
            }
        }
        let (d, record) = delivery_decision(&found("Junk", true));
        let record = record.expect("recorded");
        assert_eq!(record.latency_ms, Some(1234));
        assert_eq!(record.folder.as_deref(), Some("Junk"));
        let verdicts = record.authentication_results.expect("verdicts");
        assert_eq!(verdicts.spf.as_deref(), Some("pass"));
        assert_eq!(verdicts.dmarc.as_deref(), Some("fail"));
        assert!(
            d.message.contains("spf=pass, dkim=none, dmarc=fail"),
            "{}",
            d.message
        );
    }

    #[test]
    fn delivered_sits_before_ready_and_never_changes_it() {
        let s = spec(TlsMode::StartTls, true, true);
        let t0 = ts("2026-01-01T00:00:00Z");
        let base = next_status(&s, Some(1), None, "g1", &Ok(outcome(None)), t0);
        for delivery in [
            Delivery::Probed(Probe::NotFound {
                waited: Duration::from_secs(1),
            }),
            found("INBOX", false),
        ] {
            let next = with_delivery(base.clone(), None, &delivery, t0);
            let types: Vec<&str> = next.conditions.iter().map(|c| c.type_.as_str()).collect();
            assert_eq!(types[types.len() - 2..], [types::DELIVERED, types::READY]);
            assert_eq!(next.conditions.last(), base.conditions.last());
            assert_eq!(next.consecutive_failures, 0);
            assert_eq!(
                transition(Some(&base), &next),
                None,
                "no event for Delivered"
            );
        }
    }
}
