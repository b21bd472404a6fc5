//! Decide: the conditions that describe a verification, and their merge with the
//! previous ones (pure).

use super::*;

/// A condition before merging with the previous status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
}

fn desired(
    type_: &'static str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
) -> Desired {
    Desired {
        type_,
        status,
        reason: reason.to_string(),
        message: message.into(),
    }
}

fn condition_of_step(step: Step) -> &'static str {
    match step {
        Step::Dns | Step::Connect | Step::Greeting | Step::Ehlo | Step::Quit => types::CONNECTED,
        Step::Tls | Step::StartTls => types::SECURE_TRANSPORT,
        Step::Auth => types::AUTHENTICATED,
        Step::Mail | Step::Rcpt | Step::Data => types::TEST_MESSAGE_ACCEPTED,
    }
}

/// Decide: the conditions that describe a verification (or why none could run).
pub fn desired_conditions(
    spec: &SmtpRelaySpec,
    port: Option<u16>,
    verified: &Result<Outcome, InputProblem>,
) -> Vec<Desired> {
    use ConditionStatus::{False, True, Unknown};
    let wants_test = spec.verification.recipient.is_some();
    let mut out = Vec::new();
    let not_attempted = |t| desired(t, Unknown, reasons::NOT_ATTEMPTED, "not attempted");

    let outcome = match verified {
        Err(problem) => {
            let mut push = |t: &'static str, default_ok: Option<Desired>| {
                if problem.condition == t {
                    out.push(desired(t, False, problem.reason, &problem.message));
                } else if let Some(d) = default_ok {
                    out.push(d);
                } else {
                    out.push(not_attempted(t));
                }
            };
            push(
                types::CREDENTIALS_RESOLVED,
                spec.auth.is_none().then(|| {
                    desired(
                        types::CREDENTIALS_RESOLVED,
                        True,
                        reasons::NOT_REQUIRED,
                        "no authentication configured",
                    )
                }),
            );
            push(types::CONNECTED, None);
            push(types::SECURE_TRANSPORT, None);
            push(types::AUTHENTICATED, None);
            if wants_test {
                push(types::TEST_MESSAGE_ACCEPTED, None);
            }
            out.push(desired(
                types::READY,
                False,
                problem.reason,
                &problem.message,
            ));
            return out;
        }
        Ok(o) => o,
    };

    let failure = outcome.failure.as_ref();
    let failed_condition = failure.map(|f| condition_of_step(f.step));
    let failed_desired = |t: &'static str| -> Option<Desired> {
        let f = failure?;
        (condition_of_step(f.step) == t).then(|| desired(t, False, f.reason.as_str(), &f.message))
    };
    // Conditions before the failing one passed; those after it were not attempted.
    let attempted =
        |t: &'static str, step: Step| outcome.passed(step) || failed_condition == Some(t);

    out.push(match &spec.auth {
        None => desired(
            types::CREDENTIALS_RESOLVED,
            True,
            reasons::NOT_REQUIRED,
            "no authentication configured",
        ),
        Some(a) => desired(
            types::CREDENTIALS_RESOLVED,
            True,
            reasons::RESOLVED,
            format!(
                "credentials read from Secret {}",
                a.credentials_secret_ref.name
            ),
        ),
    });

    let port = port.unwrap_or_else(|| spec.tls.mode.default_port());
    out.push(failed_desired(types::CONNECTED).unwrap_or_else(|| {
        if !outcome.passed(Step::Connect) {
            return not_attempted(types::CONNECTED);
        }
        desired(
            types::CONNECTED,
            True,
            reasons::CONNECTED,
            match outcome.server.banner.as_deref() {
                Some(banner) => format!("{}:{port} answered: {banner}", spec.host),
                None => format!("connected to {}:{port}", spec.host),
            },
        )
    }));

    let secure = match (spec.tls.mode, failed_desired(types::SECURE_TRANSPORT)) {
        (_, Some(d)) => d,
        (TlsMode::None, _) => desired(
            types::SECURE_TRANSPORT,
            False,
            reasons::TLS_DISABLED,
            "tls.mode is None: credentials and mail travel in clear text",
        ),
        _ if !outcome.passed(Step::Tls) => not_attempted(types::SECURE_TRANSPORT),
        _ => {
            let version = outcome.server.tls_version.as_deref().unwrap_or("TLS");
            let expiry = outcome
                .server
                .certificate_not_after
                .as_deref()
                .map(|t| format!(", certificate valid until {t}"))
                .unwrap_or_default();
            if outcome.server.certificate_unverified {
                desired(
                    types::SECURE_TRANSPORT,
                    True,
                    reasons::CERTIFICATE_NOT_VERIFIED,
                    format!(
                        "{version} established but the certificate was NOT verified (tls.insecureSkipVerify){expiry}"
                    ),
                )
            } else {
                desired(
                    types::SECURE_TRANSPORT,
                    True,
                    reasons::TLS_ESTABLISHED,
                    format!("{version} established, certificate verified{expiry}"),
                )
            }
        }
    };
    out.push(secure);

    out.push(match (&spec.auth, failed_desired(types::AUTHENTICATED)) {
        (_, Some(d)) => d,
        (None, _) => desired(
            types::AUTHENTICATED,
            True,
            reasons::NOT_REQUIRED,
            "no authentication configured",
        ),
        (Some(a), _) if attempted(types::AUTHENTICATED, Step::Auth) => desired(
            types::AUTHENTICATED,
            True,
            reasons::AUTHENTICATED,
            format!(
                "AUTH {} accepted",
                match a.mechanism {
                    AuthMechanismSpec::Plain => "PLAIN",
                    AuthMechanismSpec::Login => "LOGIN",
                }
            ),
        ),
        _ => not_attempted(types::AUTHENTICATED),
    });

    if wants_test {
        out.push(match failed_desired(types::TEST_MESSAGE_ACCEPTED) {
            Some(d) => d,
            None if outcome.passed(Step::Data) => desired(
                types::TEST_MESSAGE_ACCEPTED,
                True,
                reasons::ACCEPTED,
                format!(
                    "test message {} accepted for {}",
                    outcome.message_id.as_deref().unwrap_or(""),
                    spec.verification.recipient.as_deref().unwrap_or("")
                ),
            ),
            None => not_attempted(types::TEST_MESSAGE_ACCEPTED),
        });
    }

    out.push(match failure {
        Some(f) => desired(
            types::READY,
            False,
            f.reason.as_str(),
            format!("{} failed: {}", f.step, f.message),
        ),
        None => desired(
            types::READY,
            True,
            reasons::VERIFIED,
            format!("relay verified in {} ms", outcome.total.as_millis()),
        ),
    });
    out
}

/// Merge desired conditions into the previous ones: `lastTransitionTime` only moves
/// when the status (True/False/Unknown) changes.
pub fn merge_conditions(
    previous: &[Condition],
    desired: Vec<Desired>,
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|d| {
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == d.status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.to_string());
            Condition {
                type_: d.type_.to_string(),
                status: d.status,
                last_transition_time,
                reason: d.reason,
                message: d.message,
                observed_generation: generation,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::smtp::{Failure, FailureReason};
    use ConditionStatus::{False, True, Unknown};

    #[test]
    fn every_failure_lands_on_its_condition_and_ready() {
        use FailureReason as R;
        // (failing step, reason, condition that must be False, conditions that must be True, Unknown)
        type Row = (
            Step,
            R,
            &'static str,
            &'static [&'static str],
            &'static [&'static str],
        );
        let table: &[Row] = &[
            (
                Step::Dns,
                R::DnsFailure,
                types::CONNECTED,
                &[types::CREDENTIALS_RESOLVED],
                &[
                    types::SECURE_TRANSPORT,
                    types::AUTHENTICATED,
                    types::TEST_MESSAGE_ACCEPTED,
                ],
            ),
            (
                Step::Connect,
                R::ConnectionRefused,
                types::CONNECTED,
                &[],
                &[types::SECURE_TRANSPORT, types::AUTHENTICATED],
            ),
            (
                Step::Greeting,
                R::Timeout,
                types::CONNECTED,
                &[],
                &[types::SECURE_TRANSPORT, types::AUTHENTICATED],
            ),
            (
                Step::StartTls,
                R::StartTlsNotOffered,
                types::SECURE_TRANSPORT,
                &[types::CONNECTED],
                &[types::AUTHENTICATED, types::TEST_MESSAGE_ACCEPTED],
            ),
            (
                Step::Tls,
                R::CertificateInvalid,
                types::SECURE_TRANSPORT,
                &[types::CONNECTED],
                &[types::AUTHENTICATED],
            ),
            (
                Step::Tls,
                R::TlsHandshakeFailed,
                types::SECURE_TRANSPORT,
                &[types::CONNECTED],
                &[types::AUTHENTICATED],
            ),
            (
                Step::Auth,
                R::AuthRejected,
                types::AUTHENTICATED,
                &[types::CONNECTED, types::SECURE_TRANSPORT],
                &[types::TEST_MESSAGE_ACCEPTED],
            ),
            (
                Step::Auth,
                R::AuthMechanismUnsupported,
                types::AUTHENTICATED,
                &[types::SECURE_TRANSPORT],
                &[types::TEST_MESSAGE_ACCEPTED],
            ),
            (
                Step::Mail,
                R::SenderRejected,
                types::TEST_MESSAGE_ACCEPTED,
                &[types::AUTHENTICATED, types::SECURE_TRANSPORT],
                &[],
            ),
            (
                Step::Rcpt,
                R::RecipientRejected,
                types::TEST_MESSAGE_ACCEPTED,
                &[types::AUTHENTICATED],
                &[],
            ),
            (
                Step::Data,
                R::ConnectionLost,
                types::TEST_MESSAGE_ACCEPTED,
                &[types::AUTHENTICATED],
                &[],
            ),
        ];
        let s = spec(TlsMode::StartTls, true, true);
        for (step, reason, failed, trues, unknowns) in table {
            let d = desired_conditions(&s, None, &Ok(outcome(Some((*step, *reason)))));
            let ctx = format!("{step} {reason}");
            assert_eq!(
                status_of(&d, failed),
                Some((False, reason.as_str().into())),
                "{ctx}"
            );
            assert_eq!(
                status_of(&d, types::READY),
                Some((False, reason.as_str().into())),
                "{ctx}"
            );
            for t in *trues {
                assert_eq!(status_of(&d, t).map(|x| x.0), Some(True), "{ctx}: {t}");
            }
            for t in *unknowns {
                assert_eq!(
                    status_of(&d, t),
                    Some((Unknown, reasons::NOT_ATTEMPTED.into())),
                    "{ctx}: {t}"
                );
            }
            assert_eq!(
                d.last().map(|c| c.type_),
                Some(types::READY),
                "Ready is last"
            );
        }
    }

    #[test]
    fn a_failure_before_the_network_claims_no_connection() {
        let o = Outcome {
            steps: vec![],
            failure: Some(Failure {
                step: Step::Mail,
                reason: FailureReason::InvalidTarget,
                code: None,
                message: "invalid sender".into(),
            }),
            ..Default::default()
        };
        let d = desired_conditions(&spec(TlsMode::StartTls, false, true), None, &Ok(o));
        assert_eq!(
            status_of(&d, types::CONNECTED),
            Some((Unknown, reasons::NOT_ATTEMPTED.into()))
        );
        assert_eq!(
            status_of(&d, types::READY),
            Some((False, "InvalidTarget".into()))
        );
    }

    #[test]
    fn success_is_verified_and_every_condition_true() {
        let d = desired_conditions(
            &spec(TlsMode::StartTls, true, true),
            None,
            &Ok(outcome(None)),
        );
        assert!(d.iter().all(|c| c.status == True), "{d:?}");
        assert_eq!(
            status_of(&d, types::READY),
            Some((True, reasons::VERIFIED.into()))
        );
        assert_eq!(
            status_of(&d, types::TEST_MESSAGE_ACCEPTED),
            Some((True, reasons::ACCEPTED.into()))
        );
        assert_eq!(d.len(), 6);
    }

    #[test]
    fn no_recipient_means_no_test_condition_and_no_auth_means_not_required() {
        let d = desired_conditions(&spec(TlsMode::Tls, false, false), None, &Ok(outcome(None)));
        assert_eq!(status_of(&d, types::TEST_MESSAGE_ACCEPTED), None);
        assert_eq!(
            status_of(&d, types::AUTHENTICATED),
            Some((True, reasons::NOT_REQUIRED.into()))
        );
        assert_eq!(
            status_of(&d, types::CREDENTIALS_RESOLVED),
            Some((True, reasons::NOT_REQUIRED.into()))
        );
    }

    #[test]
    fn plain_text_mode_is_ready_but_says_it_is_not_secure() {
        let d = desired_conditions(&spec(TlsMode::None, false, false), None, &Ok(outcome(None)));
        assert_eq!(
            status_of(&d, types::SECURE_TRANSPORT),
            Some((False, reasons::TLS_DISABLED.into()))
        );
        assert_eq!(status_of(&d, types::READY).map(|x| x.0), Some(True));
    }

    #[test]
    fn unverified_certificate_is_reported() {
        let mut o = outcome(None);
        o.server.certificate_unverified = true;
        let d = desired_conditions(&spec(TlsMode::Tls, false, false), None, &Ok(o));
        assert_eq!(
            status_of(&d, types::SECURE_TRANSPORT),
            Some((True, reasons::CERTIFICATE_NOT_VERIFIED.into()))
        );
    }

    #[test]
    fn input_problems_land_on_their_condition() {
        let s = spec(TlsMode::StartTls, true, true);
        for (condition, reason) in [
            (types::CREDENTIALS_RESOLVED, reasons::SECRET_NOT_FOUND),
            (types::CREDENTIALS_RESOLVED, reasons::SECRET_KEY_MISSING),
            (types::SECURE_TRANSPORT, reasons::CA_BUNDLE_NOT_FOUND),
            (types::READY, reasons::INVALID_SPEC),
        ] {
            let p = InputProblem {
                condition,
                reason,
                message: "explained".into(),
            };
            let d = desired_conditions(&s, None, &Err(p));
            assert_eq!(status_of(&d, condition), Some((False, reason.into())));
            assert_eq!(status_of(&d, types::READY), Some((False, reason.into())));
            assert_eq!(
                status_of(&d, types::CONNECTED),
                Some((Unknown, reasons::NOT_ATTEMPTED.into()))
            );
            assert_eq!(d.iter().filter(|c| c.type_ == types::READY).count(), 1);
        }
    }

    #[test]
    fn transition_time_moves_only_with_status() {
        let old = merge_conditions(
            &[],
            vec![desired(types::READY, True, reasons::VERIFIED, "a")],
            Some(1),
            "2026-01-01T00:00:00Z",
        );
        let same = merge_conditions(
            &old,
            vec![desired(types::READY, True, reasons::VERIFIED, "b")],
            Some(2),
            "2026-02-01T00:00:00Z",
        );
        assert_eq!(same[0].last_transition_time, "2026-01-01T00:00:00Z");
        assert_eq!(same[0].observed_generation, Some(2));
        let changed = merge_conditions(
            &same,
            vec![desired(types::READY, False, "Timeout", "c")],
            Some(2),
            "2026-03-01T00:00:00Z",
        );
        assert_eq!(changed[0].last_transition_time, "2026-03-01T00:00:00Z");
    }
}
