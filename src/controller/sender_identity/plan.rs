//! Decide the confirmation (pure, clock and fresh secrets passed in).

use super::*;

/// Everything decide needs, already observed.
pub struct Facts<'a> {
    pub generation: Option<i64>,
    pub spec: &'a SenderIdentitySpec,
    pub status: Option<&'a SenderIdentityStatus>,
    /// The relay, or (reason, message) why there is none to use.
    pub relay: &'a Result<RelayView, RelayProblem>,
    pub code_annotation: Option<&'a str>,
    pub resend_annotation: Option<&'a str>,
    pub page_url: Option<String>,
    pub key: &'a ConfirmKey,
    /// Secrets for a new attempt, used only if one is decided.
    pub fresh: &'a Secrets,
    pub now: Timestamp,
    /// Confirmation mails this operator sent to this address in the last 24 hours,
    /// whatever object asked (deleting and recreating an identity resets its status,
    /// not this).
    pub address_sends_today: usize,
}

/// The confirmation decided for this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub confirmation: ConfirmationStatus,
    /// Send the mail for `confirmation.attempt_id` (its status is written after it).
    pub send: bool,
    /// A code given in the annotation was checked (the annotation must be removed).
    pub code: Option<Result<(), Refusal>>,
    /// Why no mail was sent although one is wanted (daily limit).
    pub held_back: Option<String>,
}

pub(super) fn parse_ts(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|t| t.parse().ok())
}

/// Usage not served by the relay, if any.
pub fn unserved_usage<'a>(identity: &'a [String], relay: &[String]) -> Vec<&'a str> {
    if relay.is_empty() {
        return Vec::new();
    }
    identity
        .iter()
        .filter(|u| !relay.contains(u))
        .map(String::as_str)
        .collect()
}

/// Decide the confirmation (pure).
pub fn plan(f: &Facts<'_>) -> Plan {
    let address = f.spec.address.as_str();
    let previous = f.status.and_then(|s| s.confirmation.clone());
    let day_ago = f.now - jiff::SignedDuration::from_hours(24);
    let recent: Vec<String> = previous
        .as_ref()
        .map(|c| c.recent_attempts.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| parse_ts(Some(t)).is_some_and(|t| t > day_ago))
        .collect();
    let last_resend = previous
        .as_ref()
        .and_then(|c| c.last_resend_request.clone());
    // A confirmation is about one address, proven through one relay and destination:
    // a new address, relay or destination starts from scratch (the mail that proved
    // ownership must have travelled through the relay the identity now uses).
    let binding = f.relay.as_ref().ok().map(|r| r.binding.as_str());
    let same_binding = |c: &ConfirmationStatus| {
        c.state == ConfirmationState::NotRequired
            || c.attempt_id.is_none()
            || binding.is_none_or(|b| c.relay.as_deref() == Some(b))
    };
    let mut c = match previous.filter(|c| c.address == address) {
        Some(c) if same_binding(&c) => c,
        // Same address, another relay or destination: mails already sent still count.
        Some(c) => ConfirmationStatus {
            address: address.into(),
            attempts: c.attempts,
            last_resend_request: last_resend,
            ..Default::default()
        },
        None => ConfirmationStatus {
            address: address.into(),
            last_resend_request: last_resend,
            ..Default::default()
        },
    };
    c.recent_attempts = recent;
    c.page_url = f.page_url.clone();
    let mut out = Plan {
        confirmation: c.clone(),
        send: false,
        code: None,
        held_back: None,
    };
    // Skipping confirmation is the relay's decision as much as the requester's.
    let may_skip = f.relay.as_ref().is_ok_and(|r| r.unconfirmed_allowed);
    if !f.spec.confirmation.required && may_skip {
        // A code is meaningless here; it is still taken off the object.
        out.code = f.code_annotation.map(|_| Err(Refusal::NoAttempt));
        out.confirmation = ConfirmationStatus {
            state: ConfirmationState::NotRequired,
            address: address.into(),
            recent_attempts: c.recent_attempts,
            last_resend_request: c.last_resend_request,
            ..Default::default()
        };
        return out;
    }
    if c.state == ConfirmationState::NotRequired {
        c = ConfirmationStatus {
            address: address.into(),
            recent_attempts: c.recent_attempts,
            last_resend_request: c.last_resend_request,
            page_url: c.page_url,
            ..Default::default()
        };
    }
    if let Some(code) = f.code_annotation {
        let result = confirm::check(&c, address, f.key, CODE, code, f.now);
        match result {
            Ok(()) => c = confirm::confirmed(&c, f.now),
            // Codes are short: a few wrong ones withdraw the attempt (a new mail
            // needs smtprelay.io/resend, itself bounded per day).
            Err(Refusal::Mismatch) => {
                c.failed_codes = c.failed_codes.saturating_add(1);
                if c.failed_codes >= MAX_FAILED_CODES {
                    c.state = ConfirmationState::Expired;
                    c.token_digest = None;
                    c.code_digest = None;
                }
            }
            Err(_) => {}
        }
        out.code = Some(result);
    }
    if c.state == ConfirmationState::Confirmed {
        out.confirmation = c;
        return out;
    }
    let expired = c.state == ConfirmationState::Pending
        && c.sent_at.is_some()
        && parse_ts(c.expires_at.as_deref()).is_none_or(|t| f.now >= t);
    if expired || c.state == ConfirmationState::Expired {
        c.state = ConfirmationState::Expired;
        c.token_digest = None;
        c.code_digest = None;
    }
    let resend_requested = f
        .resend_annotation
        .is_some_and(|r| Some(r) != c.last_resend_request.as_deref());
    let never_sent = c.attempt_id.is_none();
    // An attempt recorded but never sent (a relay that refused the mail, or an older
    // operator that recorded attempts before mailing them): its secrets are gone, so
    // it is replaced, never resent.
    let unsent =
        c.attempt_id.is_some() && c.sent_at.is_none() && c.state == ConfirmationState::Pending;
    let retry_due = match &c.send_failure {
        Some(failure) => parse_ts(Some(&failure.time)).is_none_or(|t| {
            f.now.duration_since(t)
                >= jiff::SignedDuration::try_from(SEND_RETRY).unwrap_or_default()
        }),
        None => true,
    };
    let wants_new = resend_requested || never_sent || (unsent && retry_due);
    let relay_ready = f.relay.as_ref().is_ok_and(|r| r.not_ready.is_none());
    let usage_ok = f
        .relay
        .as_ref()
        .is_ok_and(|r| unserved_usage(&f.spec.usage, &r.usage).is_empty());
    if wants_new && relay_ready && usage_ok {
        if c.recent_attempts.len().max(f.address_sends_today) >= MAX_ATTEMPTS_PER_DAY {
            out.held_back = Some(format!(
                "{MAX_ATTEMPTS_PER_DAY} confirmation mails were sent in the last 24 hours; try again later"
            ));
            if resend_requested {
                c.last_resend_request = f.resend_annotation.map(str::to_string);
            }
        } else {
            let ttl = parse_duration("confirmation.ttl", &f.spec.confirmation.ttl)
                .unwrap_or(Duration::from_secs(24 * 3600));
            let expires = f.now + jiff::SignedDuration::try_from(ttl).unwrap_or_default();
            let id = &f.fresh.attempt_id;
            c.state = ConfirmationState::Pending;
            c.attempt_id = Some(id.clone());
            c.token_digest = Some(f.key.digest(TOKEN, id, &f.fresh.token));
            c.code_digest = Some(
                f.key
                    .digest(CODE, id, &confirm::normalize_code(&f.fresh.code)),
            );
            c.sent_at = None;
            c.send_failure = None;
            c.failed_codes = 0;
            c.relay = binding.map(str::to_string);
            c.expires_at = Some(rfc3339(expires));
            c.attempts = c.attempts.saturating_add(1);
            c.recent_attempts.push(rfc3339(f.now));
            if resend_requested {
                c.last_resend_request = f.resend_annotation.map(str::to_string);
            }
            out.send = true;
        }
    }
    out.confirmation = c;
    out
}

/// Record the outcome of sending the confirmation mail (pure).
pub fn after_send(
    c: &ConfirmationStatus,
    outcome: &smtp::Outcome,
    now: Timestamp,
) -> ConfirmationStatus {
    let mut c = c.clone();
    match &outcome.failure {
        None => {
            c.sent_at = Some(rfc3339(now));
            c.send_failure = None;
        }
        Some(f) => {
            c.sent_at = None;
            c.token_digest = None;
            c.code_digest = None;
            c.send_failure = Some(SendFailure {
                time: rfc3339(now),
                reason: f.reason.as_str().into(),
                message: format!("{} failed: {}", f.step, f.message),
            });
        }
    }
    c
}

/// When to look again: at expiry while pending, after a send failure's retry delay,
/// otherwise every 10 minutes (to heal a deleted connection Secret).
pub fn requeue_after(c: &ConfirmationStatus, now: Timestamp) -> Duration {
    let ten_minutes = Duration::from_secs(600);
    if c.state == ConfirmationState::Pending {
        if c.send_failure.is_some() {
            return SEND_RETRY;
        }
        if let Some(t) = parse_ts(c.expires_at.as_deref()) {
            let left = Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO);
            return (left + Duration::from_secs(1)).min(ten_minutes);
        }
    }
    ten_minutes
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn first_reconcile_sends_once_then_waits_for_the_owner() {
        let mut w = World::new();
        let (p, fresh) = w.step("2026-01-01T00:00:00Z", None, None, true);
        assert!(p.send);
        let c = w
            .status
            .as_ref()
            .and_then(|s| s.confirmation.clone())
            .expect("c");
        assert_eq!(c.attempt_id.as_deref(), Some(fresh.attempt_id.as_str()));
        assert_eq!(c.sent_at.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(c.expires_at.as_deref(), Some("2026-01-02T00:00:00Z"));
        assert_eq!(c.attempts, 1);
        assert_eq!(
            w.condition(conditions::CONFIRMATION_SENT),
            (ConditionStatus::True, "Sent".into())
        );
        assert_eq!(
            w.condition(conditions::CONFIRMED),
            (ConditionStatus::False, "Pending".into())
        );
        assert_eq!(w.condition(types::READY).0, ConditionStatus::False);
        let (p, _) = w.step("2026-01-01T01:00:00Z", None, None, true);
        assert!(!p.send, "no second mail for a live attempt");
        // Status never holds the token or the code.
        let text = serde_json::to_string(&w.status).expect("json");
        assert!(!text.contains(&fresh.token) && !text.contains(&fresh.code));
        assert!(!text.contains(&confirm::normalize_code(&fresh.code)));
    }

    #[test]
    fn the_code_annotation_confirms_and_a_wrong_code_is_rejected() {
        let mut w = World::new();
        let (_, fresh) = w.step("2026-01-01T00:00:00Z", None, None, true);
        let (p, _) = w.step("2026-01-01T00:10:00Z", Some("WRONG-CODE"), None, true);
        assert_eq!(p.code, Some(Err(Refusal::Mismatch)));
        assert_eq!(
            w.condition(conditions::CONFIRMED),
            (ConditionStatus::False, "Pending".into())
        );
        let (p, _) = w.step(
            "2026-01-01T00:11:00Z",
            Some(&fresh.code.to_lowercase()),
            None,
            true,
        );
        assert_eq!(p.code, Some(Ok(())));
        assert_eq!(w.state(), ConfirmationState::Confirmed);
        assert_eq!(
            w.condition(types::READY),
            (ConditionStatus::True, "Ready".into())
        );
        let c = w
            .status
            .as_ref()
            .and_then(|s| s.confirmation.clone())
            .expect("c");
        assert_eq!((c.token_digest, c.code_digest), (None, None), "single use");
    }

    #[test]
    fn expiry_needs_an_explicit_resend_and_resends_are_bounded() {
        let mut w = World::new();
        let (_, first) = w.step("2026-01-01T00:00:00Z", None, None, true);
        let (p, _) = w.step("2026-01-02T00:00:01Z", Some(&first.code), None, true);
        assert_eq!(
            p.code,
            Some(Err(Refusal::Expired)),
            "an expired code is refused as expired"
        );
        assert_eq!(w.state(), ConfirmationState::Expired);
        assert_eq!(
            w.condition(conditions::CONFIRMATION_SENT),
            (ConditionStatus::False, "Expired".into())
        );
        let (p, _) = w.step("2026-01-02T00:00:02Z", None, None, true);
        assert!(!p.send, "no automatic resend after expiry");
        let (p, second) = w.step("2026-01-02T00:01:00Z", None, Some("1"), true);
        assert!(p.send);
        assert_ne!(second.attempt_id, first.attempt_id);
        let (p, _) = w.step("2026-01-02T00:02:00Z", None, Some("1"), true);
        assert!(!p.send, "the same resend value is one request");
        // Superseded: the first attempt's code no longer works.
        let (p, _) = w.step("2026-01-02T00:03:00Z", Some(&first.code), Some("1"), true);
        assert_eq!(p.code, Some(Err(Refusal::Mismatch)));
        for i in 2..=10 {
            w.step(
                &format!("2026-01-02T00:{:02}:00Z", 3 + i),
                None,
                Some(&i.to_string()),
                true,
            );
        }
        let c = w
            .status
            .as_ref()
            .and_then(|s| s.confirmation.clone())
            .expect("c");
        assert_eq!(c.recent_attempts.len(), MAX_ATTEMPTS_PER_DAY, "daily cap");
        assert_eq!(
            w.condition(conditions::CONFIRMATION_SENT),
            (ConditionStatus::False, "DailyLimitReached".into())
        );
        // A day later the window has moved on.
        let (p, _) = w.step("2026-01-03T01:00:00Z", None, Some("11"), true);
        assert!(p.send);
    }

    #[test]
    fn an_attempt_recorded_but_never_sent_is_replaced_never_resent() {
        let mut w = World::new();
        let fresh = Secrets::generate();
        let p = plan(&w.facts(&fresh, "2026-01-01T00:00:00Z", 0));
        assert!(p.send);
        // Recorded, never sent (an older operator died between the two).
        w.status = Some(next_status(
            &w.spec,
            Some(1),
            None,
            &w.relay,
            &p,
            &SecretState::NotRequested,
            ts("2026-01-01T00:00:00Z"),
        ));
        let crashed_attempt = p.confirmation.attempt_id.clone();
        let (p2, fresh2) = w.step("2026-01-01T00:00:05Z", None, None, true);
        assert!(p2.send, "a new attempt replaces the unsent one");
        assert_ne!(p2.confirmation.attempt_id, crashed_attempt);
        assert_eq!(
            p2.confirmation.attempt_id.as_deref(),
            Some(fresh2.attempt_id.as_str())
        );
        // The unsent attempt's secrets can never confirm.
        let c = w
            .status
            .as_ref()
            .and_then(|s| s.confirmation.clone())
            .expect("c");
        assert!(
            confirm::check(
                &c,
                "sales@example.test",
                &w.key,
                TOKEN,
                &fresh.token,
                ts("2026-01-01T00:01:00Z")
            )
            .is_err()
        );
        let (p3, _) = w.step("2026-01-01T00:00:06Z", None, None, true);
        assert!(!p3.send);
    }

    #[test]
    fn a_refused_mail_is_retried_later_as_a_new_attempt() {
        let mut w = World::new();
        let (p, _) = w.step("2026-01-01T00:00:00Z", None, None, false);
        assert!(p.send);
        assert_eq!(
            w.condition(conditions::CONFIRMATION_SENT),
            (ConditionStatus::False, "RecipientRejected".into())
        );
        let (p, _) = w.step("2026-01-01T00:00:30Z", None, None, true);
        assert!(!p.send, "retry waits");
        let (p, _) = w.step("2026-01-01T00:01:01Z", None, None, true);
        assert!(p.send);
        assert_eq!(
            w.condition(conditions::CONFIRMATION_SENT),
            (ConditionStatus::True, "Sent".into())
        );
    }

    #[test]
    fn an_address_change_discards_the_confirmation() {
        let mut w = World::new();
        let (_, fresh) = w.step("2026-01-01T00:00:00Z", None, None, true);
        w.step("2026-01-01T00:01:00Z", Some(&fresh.code), None, true);
        assert_eq!(w.state(), ConfirmationState::Confirmed);
        w.spec.address = "other@example.test".into();
        let (p, _) = w.step("2026-01-01T00:02:00Z", None, None, true);
        assert!(p.send);
        assert_eq!(w.state(), ConfirmationState::Pending);
        let c = w
            .status
            .as_ref()
            .and_then(|s| s.confirmation.clone())
            .expect("c");
        assert_eq!((c.address.as_str(), c.attempts), ("other@example.test", 1));
        assert_eq!(
            c.recent_attempts.len(),
            2,
            "resend budget survives address changes"
        );
    }

    #[test]
    fn a_cluster_relay_decides_whether_confirmation_may_be_skipped() {
        let mut w = World::new();
        w.spec.confirmation.required = false;
        if let Ok(r) = w.relay.as_mut() {
            r.kind = RelayKindRef::ClusterSmtpRelay;
            r.unconfirmed_allowed = false;
        }
        let (p, _) = w.step("2026-01-01T00:00:00Z", None, None, true);
        assert!(p.send, "the relay does not allow unconfirmed senders");
        assert_eq!(w.state(), ConfirmationState::Pending);
        if let Ok(r) = w.relay.as_mut() {
            r.unconfirmed_allowed = true;
        }
        w.step("2026-01-01T00:01:00Z", None, None, true);
        assert_eq!(w.state(), ConfirmationState::NotRequired);
    }

    #[test]
    fn recreating_an_identity_does_not_reset_the_daily_bound() {
        let w = World::new();
        let fresh = Secrets::generate();
        let p = plan(&w.facts(&fresh, "2026-01-01T00:00:00Z", MAX_ATTEMPTS_PER_DAY));
        assert!(!p.send);
        assert!(p.held_back.is_some());
    }

    #[test]
    fn requeue_follows_expiry() {
        let now = ts("2026-01-01T00:00:00Z");
        let c = ConfirmationStatus {
            state: ConfirmationState::Pending,
            expires_at: Some("2026-01-01T00:02:00Z".into()),
            ..Default::default()
        };
        assert_eq!(requeue_after(&c, now), Duration::from_secs(121));
        let far = ConfirmationStatus {
            expires_at: Some("2026-01-02T00:00:00Z".into()),
            ..c.clone()
        };
        assert_eq!(requeue_after(&far, now), Duration::from_secs(600));
    }
}
