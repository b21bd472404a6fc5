//! Decide: the whole next status of a relay and the event for a Ready transition
//! (pure, clock passed in).

use super::*;

/// Milliseconds per step (steps seen twice, like EHLO before and after STARTTLS, add up).
pub fn durations_ms(outcome: &Outcome) -> BTreeMap<String, i64> {
    let mut map = BTreeMap::new();
    for (step, d) in &outcome.steps {
        *map.entry(step.as_str().to_string()).or_insert(0) +=
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    }
    map.insert(
        "total".into(),
        i64::try_from(outcome.total.as_millis()).unwrap_or(i64::MAX),
    );
    map
}

/// Microseconds per step (added up like [`durations_ms`]), and `total`.
pub fn durations_micros(outcome: &Outcome) -> BTreeMap<String, i64> {
    let mut map = BTreeMap::new();
    for (step, d) in &outcome.steps {
        let us = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let entry = map.entry(step.as_str().to_string()).or_insert(0i64);
        *entry = entry.saturating_add(us);
    }
    map.insert(
        "total".into(),
        i64::try_from(outcome.total.as_micros()).unwrap_or(i64::MAX),
    );
    map
}

/// A Kubernetes event to publish on a Ready transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// Decide the event for a change of the Ready condition (none on periodic successes).
pub fn transition(
    previous: Option<&SmtpRelayStatus>,
    next: &SmtpRelayStatus,
) -> Option<Transition> {
    let ready = ready_change(previous.map(|p| p.conditions.as_slice()), &next.conditions)?;
    Some(if ready.status == ConditionStatus::True {
        Transition {
            warning: false,
            reason: "Verified".into(),
            note: ready.message.clone(),
        }
    } else {
        Transition {
            warning: true,
            reason: "VerificationFailed".into(),
            note: format!("{}: {}", ready.reason, ready.message),
        }
    })
}

/// The new Ready condition, when its status or reason differs from before (pure).
/// Events are emitted on these changes only, never on a repeated outcome.
pub fn ready_change<'a>(
    previous: Option<&[Condition]>,
    next: &'a [Condition],
) -> Option<&'a Condition> {
    let find = |cs: &'a [Condition]| cs.iter().find(|c| c.type_ == types::READY);
    let now = find(next)?;
    let before = previous.and_then(|p| p.iter().find(|c| c.type_ == types::READY));
    match before {
        Some(b) if b.status == now.status && b.reason == now.reason => None,
        _ => Some(now),
    }
}

/// Decide: the whole next status from the previous one and what was observed.
pub fn next_status(
    spec: &SmtpRelaySpec,
    generation: Option<i64>,
    previous: Option<&SmtpRelayStatus>,
    inputs: &str,
    verified: &Result<Outcome, InputProblem>,
    now: Timestamp,
) -> SmtpRelayStatus {
    let now_text = now.round(jiff::Unit::Second).unwrap_or(now).to_string();
    let port = effective_port(spec).ok();
    let desired = desired_conditions(spec, port, verified);
    let empty = Vec::new();
    let conditions = merge_conditions(
        previous.map(|p| &p.conditions).unwrap_or(&empty),
        desired,
        generation,
        &now_text,
    );
    let succeeded = matches!(verified, Ok(o) if o.succeeded());
    let consecutive_failures = if succeeded {
        0
    } else {
        previous
            .map(|p| p.consecutive_failures)
            .unwrap_or(0)
            .saturating_add(1)
    };
    let (server, last_verification) = match verified {
        Ok(o) => (
            Some(ServerStatus {
                banner: o.server.banner.clone(),
                extensions: o.server.extensions.clone(),
                auth_mechanisms: o.server.auth_mechanisms.clone(),
                tls_version: o.server.tls_version.clone(),
                certificate_not_after: o.server.certificate_not_after.clone(),
            })
            .filter(|s| *s != ServerStatus::default())
            // A session that never reached the server keeps what we knew.
            .or_else(|| previous.and_then(|p| p.server.clone())),
            LastVerification {
                time: now_text.clone(),
                result: if succeeded {
                    RESULT_SUCCEEDED
                } else {
                    RESULT_FAILED
                }
                .into(),
                failed_step: o.failure.as_ref().map(|f| f.step.as_str().to_string()),
                duration_ms: durations_ms(o),
                duration_micros: durations_micros(o),
                message_id: o.message_id.clone(),
                delivery: None,
                inputs: inputs.to_string(),
            },
        ),
        Err(p) => (
            previous.and_then(|p| p.server.clone()),
            LastVerification {
                time: now_text.clone(),
                result: RESULT_FAILED.into(),
                failed_step: Some(
                    match p.condition {
                        types::CREDENTIALS_RESOLVED => "credentials",
                        types::SECURE_TRANSPORT => "tls",
                        _ => "spec",
                    }
                    .into(),
                ),
                duration_ms: BTreeMap::new(),
                duration_micros: BTreeMap::new(),
                message_id: None,
                delivery: None,
                inputs: inputs.to_string(),
            },
        ),
    };
    let total_micros = last_verification
        .duration_micros
        .get("total")
        .copied()
        .unwrap_or(0);
    let recent_verifications = Some(next_trend(
        previous.and_then(|p| p.recent_verifications.as_ref()),
        total_micros,
        succeeded,
    ));
    SmtpRelayStatus {
        observed_generation: generation,
        conditions,
        port: port.map(i32::from),
        server,
        last_verification: Some(last_verification),
        consecutive_failures,
        last_test: previous.and_then(|p| p.last_test.clone()),
        blocklist: previous.and_then(|p| p.blocklist.clone()),
        recent_verifications,
    }
}

/// Add the blocklist results of this verification (pure): the NotListed condition,
/// placed before Ready, and `status.blocklist`, keeping the last answers when no zone
/// answered. `None` (no --dnsbl-zones) removes both.
pub fn with_blocklist(
    mut next: SmtpRelayStatus,
    previous: Option<&SmtpRelayStatus>,
    fresh: Option<crate::api::BlocklistStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> SmtpRelayStatus {
    let now_text = now.round(jiff::Unit::Second).unwrap_or(now).to_string();
    next.conditions.retain(|c| c.type_ != types::NOT_LISTED);
    let Some(fresh) = fresh else {
        next.blocklist = None;
        return next;
    };
    let kept = crate::deliverability::verdict::keep_last_blocklist(
        previous.and_then(|p| p.blocklist.as_ref()),
        fresh,
        now,
    );
    let mut j = crate::deliverability::verdict::blocklist_condition(&kept);
    if let Some(t) = &kept.temporary_failure {
        j.message = format!(
            "kept from {}: no zone answered at {} ({}). {}",
            kept.checked_at, t.time, t.message, j.message
        );
    }
    let empty = Vec::new();
    let condition = merge_conditions(
        previous.map(|p| &p.conditions).unwrap_or(&empty),
        vec![Desired {
            type_: types::NOT_LISTED,
            status: j.status,
            reason: j.reason.to_string(),
            message: j.message,
        }],
        generation,
        &now_text,
    );
    let at = next
        .conditions
        .iter()
        .position(|c| c.type_ == types::READY)
        .unwrap_or(next.conditions.len());
    next.conditions.splice(at..at, condition);
    next.blocklist = Some(kept);
    next
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::smtp::{Failure, FailureReason};

    #[test]
    fn events_only_on_transitions() {
        let s = spec(TlsMode::StartTls, false, false);
        let t0 = ts("2026-01-01T00:00:00Z");
        let ok = next_status(&s, Some(1), None, "g1", &Ok(outcome(None)), t0);
        let first = transition(None, &ok).expect("first verification is a transition");
        assert!(!first.warning);
        let again = next_status(&s, Some(1), Some(&ok), "g1", &Ok(outcome(None)), t0);
        assert_eq!(
            transition(Some(&ok), &again),
            None,
            "periodic success is silent"
        );
        let bad = next_status(
            &s,
            Some(1),
            Some(&again),
            "g1",
            &Ok(outcome(Some((
                Step::Connect,
                FailureReason::ConnectionRefused,
            )))),
            t0,
        );
        let t = transition(Some(&again), &bad).expect("failure is a transition");
        assert!(t.warning && t.note.starts_with("ConnectionRefused"));
        assert_eq!(bad.consecutive_failures, 1);
        let worse = next_status(
            &s,
            Some(1),
            Some(&bad),
            "g1",
            &Ok(outcome(Some((
                Step::Connect,
                FailureReason::ConnectionRefused,
            )))),
            t0,
        );
        assert_eq!(worse.consecutive_failures, 2);
        assert_eq!(transition(Some(&bad), &worse), None);
        let other = next_status(
            &s,
            Some(1),
            Some(&worse),
            "g1",
            &Ok(outcome(Some((Step::Greeting, FailureReason::Timeout)))),
            t0,
        );
        assert!(
            transition(Some(&worse), &other).is_some(),
            "a new reason is a transition"
        );
    }

    #[test]
    fn an_unchanged_verification_produces_an_identical_status_apart_from_time() {
        let s = spec(TlsMode::StartTls, true, false);
        let t0 = ts("2026-01-01T00:00:00Z");
        let a = next_status(&s, Some(1), None, "g1/s1", &Ok(outcome(None)), t0);
        let b = next_status(&s, Some(1), Some(&a), "g1/s1", &Ok(outcome(None)), t0);
        // Only the rolling summary moves: it gained this verification.
        let trend = |x: &SmtpRelayStatus| x.recent_verifications.clone().expect("trend");
        assert_eq!((trend(&a).count, trend(&b).count), (1, 2));
        assert_eq!(trend(&b).outcomes, "SS");
        let without_trend = |x: &SmtpRelayStatus| SmtpRelayStatus {
            recent_verifications: None,
            ..x.clone()
        };
        assert_eq!(without_trend(&a), without_trend(&b));
        assert_eq!(a.port, Some(587));
        assert_eq!(a.observed_generation, Some(1));
    }

    #[test]
    fn durations_are_kept_in_microseconds_and_feed_the_trend() {
        let s = spec(TlsMode::StartTls, false, false);
        let t0 = ts("2026-01-01T00:00:00Z");
        let mut fast = outcome(None);
        fast.steps = vec![
            (Step::Connect, Duration::from_micros(180)),
            (Step::Ehlo, Duration::from_micros(90)),
            (Step::Ehlo, Duration::from_micros(60)),
        ];
        fast.total = Duration::from_micros(420);
        let ok = next_status(&s, Some(1), None, "g1", &Ok(fast), t0);
        let lv = ok.last_verification.clone().expect("last verification");
        assert_eq!(lv.duration_ms.get("connect"), Some(&0), "ms round to 0");
        assert_eq!(lv.duration_micros.get("connect"), Some(&180));
        assert_eq!(
            lv.duration_micros.get("ehlo"),
            Some(&150),
            "EHLO twice adds up"
        );
        assert_eq!(lv.duration_micros.get("total"), Some(&420));
        let failed = next_status(
            &s,
            Some(1),
            Some(&ok),
            "g1",
            &Ok(outcome(Some((Step::Auth, FailureReason::AuthRejected)))),
            t0,
        );
        let t = failed.recent_verifications.expect("trend");
        assert_eq!((t.count, t.failures, t.outcomes.as_str()), (2, 1, "SF"));
        assert_eq!(t.total_micros, vec![420, 11_000]);
        assert_eq!((t.p50_micros, t.p95_micros), (Some(420), Some(420)));
    }

    #[test]
    fn a_failed_session_keeps_what_the_server_said_before() {
        let s = spec(TlsMode::StartTls, false, false);
        let t0 = ts("2026-01-01T00:00:00Z");
        let ok = next_status(&s, Some(1), None, "g1", &Ok(outcome(None)), t0);
        let refused = Outcome {
            failure: Some(Failure {
                step: Step::Connect,
                reason: FailureReason::ConnectionRefused,
                code: None,
                message: "refused".into(),
            }),
            ..Default::default()
        };
        let next = next_status(&s, Some(1), Some(&ok), "g1", &Ok(refused), t0);
        assert_eq!(next.server, ok.server);
    }
}
