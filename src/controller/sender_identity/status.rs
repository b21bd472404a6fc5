//! Decide the conditions and the whole status (pure).

use super::*;

/// Reasons of SenderIdentity conditions (relay problems, confirmation, Secret).
pub mod reasons {
    pub const RELAY_NOT_FOUND: &str = "RelayNotFound";
    pub const NO_DEFAULT_RELAY: &str = "NoDefaultRelay";
    pub const NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
    /// Internal: the namespace's labels could not be read; retried, never written.
    pub const NAMESPACE_LOOKUP_FAILED: &str = "NamespaceLookupFailed";
    /// A relay's Ready reason before its first verification (as the identity sees it).
    pub const NOT_VERIFIED: &str = "NotVerified";
    pub const RELAY_NOT_VERIFIED: &str = "RelayNotVerified";
    pub const RELAY_NOT_READY: &str = "RelayNotReady";
    pub const USAGE_NOT_SERVED: &str = "UsageNotServed";
    pub const RELAY_READY: &str = "RelayReady";
    pub const NOT_REQUIRED: &str = "NotRequired";
    pub const SENT: &str = "Sent";
    pub const SENDING: &str = "Sending";
    pub const WAITING_FOR_RELAY: &str = "WaitingForRelay";
    pub const DAILY_LIMIT_REACHED: &str = "DailyLimitReached";
    pub const EXPIRED: &str = "Expired";
    /// Once an attempt is withdrawn after too many wrong codes.
    pub const CODE_ATTEMPTS_EXHAUSTED: &str = "CodeAttemptsExhausted";
    pub const PENDING: &str = "Pending";
    pub const CONFIRMED: &str = "Confirmed";
    pub const CODE_REJECTED: &str = "CodeRejected";
    pub const WAITING: &str = "Waiting";
    pub const WRITTEN: &str = "Written";
    pub const PUBLISHING_NOT_ALLOWED: &str = "PublishingNotAllowed";
    pub const SECRET_WRITE_FAILED: &str = "SecretWriteFailed";
    pub const RELAY_CREDENTIALS_UNAVAILABLE: &str = "RelayCredentialsUnavailable";
    pub const READY: &str = "Ready";
    pub const NOT_READY: &str = "NotReady";
}

/// State of the connection Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretState {
    NotRequested,
    /// Waiting for the identity to be usable.
    Waiting,
    Written(String),
    NotAllowed(String),
    Failed(String, String),
}

/// Is the identity usable (relay Ready, usage served, confirmed or not required)?
pub fn usable(
    relay: &Result<RelayView, RelayProblem>,
    spec: &SenderIdentitySpec,
    c: &ConfirmationStatus,
) -> bool {
    relay
        .as_ref()
        .is_ok_and(|r| r.not_ready.is_none() && unserved_usage(&spec.usage, &r.usage).is_empty())
        && matches!(
            c.state,
            ConfirmationState::Confirmed | ConfirmationState::NotRequired
        )
}

/// RelayReady: the first failing check wins (no relay, not verified yet, not Ready,
/// usage not served), else Ready.
fn relay_condition(spec: &SenderIdentitySpec, relay: &Result<RelayView, RelayProblem>) -> Desired {
    use ConditionStatus::{False, True};
    let d = |s: ConditionStatus, r: &str, m: String| Desired {
        type_: conditions::RELAY_READY,
        status: s,
        reason: r.into(),
        message: m,
    };
    let r = match relay {
        Err(problem) => return d(False, problem.reason(), problem.message()),
        Ok(r) => r,
    };
    // Not failing, only not verified yet: a wait, not a fault (GitOps tools show
    // Progressing for it).
    if let Some((reason, message)) = &r.not_ready {
        return if reason == reasons::NOT_VERIFIED {
            d(
                False,
                reasons::RELAY_NOT_VERIFIED,
                format!(
                    "{} has not been verified yet; the identity waits for it",
                    r.label
                ),
            )
        } else {
            d(
                False,
                reasons::RELAY_NOT_READY,
                format!("{} is not Ready ({reason}): {message}", r.label),
            )
        };
    }
    let missing = unserved_usage(&spec.usage, &r.usage);
    if !missing.is_empty() {
        return d(
            False,
            reasons::USAGE_NOT_SERVED,
            format!("{} does not serve usage {}", r.label, missing.join(", ")),
        );
    }
    d(True, reasons::RELAY_READY, format!("{} is Ready", r.label))
}

/// Decide the conditions (pure).
pub fn desired_conditions(
    spec: &SenderIdentitySpec,
    relay: &Result<RelayView, RelayProblem>,
    p: &Plan,
    secret: &SecretState,
) -> Vec<Desired> {
    use ConditionStatus::{False, True};
    let d = |t: &'static str, s: ConditionStatus, r: &str, m: String| Desired {
        type_: t,
        status: s,
        reason: r.into(),
        message: m,
    };
    let mut out = Vec::new();
    let relay_cond = relay_condition(spec, relay);
    let relay_ok = relay_cond.status == True;
    out.push(relay_cond);

    let c = &p.confirmation;
    let sent = match c.state {
        ConfirmationState::NotRequired => d(
            conditions::CONFIRMATION_SENT,
            True,
            reasons::NOT_REQUIRED,
            "confirmation is not required".into(),
        ),
        ConfirmationState::Confirmed => d(
            conditions::CONFIRMATION_SENT,
            True,
            reasons::SENT,
            format!("confirmation mail sent to {}", c.address),
        ),
        ConfirmationState::Expired if locked_out(c) => d(
            conditions::CONFIRMATION_SENT,
            False,
            CODE_ATTEMPTS_EXHAUSTED,
            format!(
                "{MAX_FAILED_CODES} wrong codes were given: the attempt is withdrawn; annotate {RESEND_ANNOTATION} with a new value to send a new one"
            ),
        ),
        ConfirmationState::Expired => d(
            conditions::CONFIRMATION_SENT,
            False,
            reasons::EXPIRED,
            format!(
                "the confirmation expired at {}; annotate {RESEND_ANNOTATION} with a new value to send a new one",
                c.expires_at.as_deref().unwrap_or("?")
            ),
        ),
        ConfirmationState::Pending => match (&c.send_failure, &c.sent_at, &p.held_back) {
            (_, _, Some(why)) => d(
                conditions::CONFIRMATION_SENT,
                False,
                reasons::DAILY_LIMIT_REACHED,
                why.clone(),
            ),
            (Some(f), _, _) => d(
                conditions::CONFIRMATION_SENT,
                False,
                &f.reason,
                format!(
                    "the relay did not accept the confirmation mail: {}",
                    f.message
                ),
            ),
            (None, Some(at), _) => d(
                conditions::CONFIRMATION_SENT,
                True,
                reasons::SENT,
                format!(
                    "sent to {} at {at}, valid until {}",
                    c.address,
                    c.expires_at.as_deref().unwrap_or("?")
                ),
            ),
            (None, None, _) if !relay_ok => d(
                conditions::CONFIRMATION_SENT,
                False,
                reasons::WAITING_FOR_RELAY,
                "the confirmation mail is sent once the relay is Ready".into(),
            ),
            (None, None, _) => d(
                conditions::CONFIRMATION_SENT,
                False,
                reasons::SENDING,
                format!("sending the confirmation mail to {}", c.address),
            ),
        },
    };
    out.push(sent);

    let confirmed = match (c.state, &p.code) {
        (ConfirmationState::Confirmed, _) => d(
            conditions::CONFIRMED,
            True,
            reasons::CONFIRMED,
            format!("confirmed at {}", c.confirmed_at.as_deref().unwrap_or("?")),
        ),
        (ConfirmationState::NotRequired, _) => d(
            conditions::CONFIRMED,
            True,
            reasons::NOT_REQUIRED,
            "confirmation is not required".into(),
        ),
        (ConfirmationState::Expired, _) if locked_out(c) => d(
            conditions::CONFIRMED,
            False,
            CODE_ATTEMPTS_EXHAUSTED,
            format!("{MAX_FAILED_CODES} wrong codes were given"),
        ),
        // A wrong code leaves the attempt pending (the Ready summary does not flap,
        // so guessing raises no Event); the count of tries left is in the message.
        (ConfirmationState::Pending, Some(Err(Refusal::Mismatch))) => d(
            conditions::CONFIRMED,
            False,
            reasons::PENDING,
            format!(
                "the code in {CODE_ANNOTATION} was wrong ({} of {MAX_FAILED_CODES} tries used); waiting for the owner of {} to open the link or give the code",
                c.failed_codes, c.address
            ),
        ),
        (_, Some(Err(refusal))) => d(
            conditions::CONFIRMED,
            False,
            reasons::CODE_REJECTED,
            format!(
                "the code in {CODE_ANNOTATION} was not accepted: {}",
                refusal.explain()
            ),
        ),
        (ConfirmationState::Expired, _) => d(
            conditions::CONFIRMED,
            False,
            reasons::EXPIRED,
            "the owner did not confirm in time".into(),
        ),
        (ConfirmationState::Pending, _) => d(
            conditions::CONFIRMED,
            False,
            reasons::PENDING,
            format!(
                "waiting for the owner of {} to open the link or give the code",
                c.address
            ),
        ),
    };
    let confirmed_ok = confirmed.status == True;
    out.push(confirmed);

    let secret_ok = match secret {
        SecretState::NotRequested => true,
        SecretState::Waiting => {
            out.push(d(
                conditions::CONNECTION_SECRET_READY,
                False,
                reasons::WAITING,
                "written once the relay is Ready and the address confirmed".into(),
            ));
            false
        }
        SecretState::Written(name) => {
            out.push(d(
                conditions::CONNECTION_SECRET_READY,
                True,
                reasons::WRITTEN,
                format!("connection details in Secret {name}"),
            ));
            true
        }
        SecretState::NotAllowed(m) => {
            out.push(d(
                conditions::CONNECTION_SECRET_READY,
                False,
                reasons::PUBLISHING_NOT_ALLOWED,
                m.clone(),
            ));
            false
        }
        SecretState::Failed(reason, m) => {
            out.push(d(
                conditions::CONNECTION_SECRET_READY,
                False,
                reason,
                m.clone(),
            ));
            false
        }
    };

    let first_false = out.iter().find(|c| c.status != True).cloned();
    out.push(match first_false {
        None if relay_ok && confirmed_ok && secret_ok => d(
            types::READY,
            True,
            reasons::READY,
            format!(
                "{} can send through {}",
                spec.address,
                relay.as_ref().map(|r| r.label.as_str()).unwrap_or("?")
            ),
        ),
        Some(f) => d(types::READY, False, &f.reason, f.message),
        None => d(types::READY, False, reasons::NOT_READY, String::new()),
    });
    out
}

/// From / Reply-To after fallbacks.
pub fn effective_addresses(
    spec: &SenderIdentitySpec,
    relay: Option<&RelayView>,
) -> (String, String) {
    let from = match &spec.display_name {
        Some(n) if !n.is_empty() => format!("\"{}\" <{}>", n.replace('"', "'"), spec.address),
        _ => spec.address.clone(),
    };
    let reply_to = smtp::effective_reply_to(
        spec.reply_to.as_deref(),
        relay
            .and_then(|r| r.no_reply.as_ref())
            .map(|m| m.address.as_str()),
        spec.address.as_str(),
    );
    (from, reply_to.to_string())
}

/// The whole status (pure).
pub fn next_status(
    spec: &SenderIdentitySpec,
    generation: Option<i64>,
    previous: Option<&SenderIdentityStatus>,
    relay: &Result<RelayView, RelayProblem>,
    p: &Plan,
    secret: &SecretState,
    now: Timestamp,
) -> SenderIdentityStatus {
    let desired = desired_conditions(spec, relay, p, secret);
    let empty = Vec::new();
    let (from, reply_to) = effective_addresses(spec, relay.as_ref().ok());
    SenderIdentityStatus {
        observed_generation: generation,
        conditions: merge_conditions(
            previous.map(|s| &s.conditions).unwrap_or(&empty),
            desired,
            generation,
            &rfc3339(now),
        ),
        relay: relay.as_ref().ok().map(|r| r.label.clone()),
        confirmation: Some(p.confirmation.clone()),
        effective_from: Some(from),
        effective_reply_to: Some(reply_to),
        connection_secret: match secret {
            SecretState::Written(n) => Some(n.clone()),
            _ => None,
        },
        // Added by `with_deliverability`.
        deliverability: None,
    }
}

/// A new identity whose relay has never been verified has nothing to report yet:
/// its first status waits for the relay's (which wakes it). At start-up this keeps
/// thousands of "waiting" writes from competing with the relays' own.
pub fn first_status_can_wait(previous: Option<&SenderIdentityStatus>, observed: &Observed) -> bool {
    previous.is_none()
        && observed.relay.as_ref().is_ok_and(|v| {
            v.not_ready
                .as_ref()
                .is_some_and(|(r, _)| r == reasons::NOT_VERIFIED)
        })
}

/// Ready reasons that mean "in progress": no event.
pub const PROGRESS: &[&str] = &[
    reasons::PENDING,
    reasons::SENDING,
    reasons::RELAY_NOT_VERIFIED,
];

pub(super) fn identity_transition(
    previous: Option<&SenderIdentityStatus>,
    next: &SenderIdentityStatus,
) -> Option<relay::Transition> {
    let ready = relay::ready_change(previous.map(|p| p.conditions.as_slice()), &next.conditions)?;
    let is_ready = ready.status == ConditionStatus::True;
    // Waiting is not news: no event while the mail is on its way, the owner has not
    // answered yet or the relay is being verified (the conditions say so). Events are
    // for becoming usable, and for what someone must fix.
    if !is_ready && PROGRESS.contains(&ready.reason.as_str()) {
        return None;
    }
    Some(relay::Transition {
        warning: !is_ready,
        reason: if is_ready {
            reasons::READY.into()
        } else {
            ready.reason.clone()
        },
        note: ready.message.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::api::ConnectionSecretRef;

    #[test]
    fn a_new_identity_waits_silently_for_its_relays_first_verification() {
        let mut w = World::new();
        let observed = |relay: Result<RelayView, RelayProblem>| Observed {
            relay,
            object: None,
            domain: DomainObservation::Unchanged,
            domain_due: None,
        };
        if let Ok(r) = w.relay.as_mut() {
            r.not_ready = Some((reasons::NOT_VERIFIED.into(), "not yet".into()));
        }
        assert!(first_status_can_wait(None, &observed(w.relay.clone())));
        // Once it has a status, or once the relay has one, it reports as usual.
        let (_, _) = w.step("2026-01-01T00:00:00Z", None, None, true);
        assert!(!first_status_can_wait(
            w.status.as_ref(),
            &observed(w.relay.clone())
        ));
        assert!(!first_status_can_wait(None, &observed(relay(false))));
        assert!(!first_status_can_wait(None, &observed(relay(true))));
        assert!(!first_status_can_wait(
            None,
            &observed(Err(RelayProblem::NoDefault))
        ));
        // And waiting makes no event; becoming usable and failures do.
        let waiting = w.status.clone().expect("status");
        assert_eq!(identity_transition(None, &waiting), None);
    }

    #[test]
    fn a_relay_not_verified_yet_is_a_wait_not_a_failure() {
        let mut w = World::new();
        if let Ok(r) = w.relay.as_mut() {
            r.not_ready = Some(("NotVerified".into(), "not yet".into()));
        }
        let (p, _) = w.step("2026-01-01T00:00:00Z", None, None, true);
        assert!(!p.send);
        assert_eq!(
            w.condition(types::READY),
            (ConditionStatus::False, "RelayNotVerified".into())
        );
    }

    #[test]
    fn a_relay_that_is_not_ready_holds_everything_back() {
        let mut w = World::new();
        w.relay = relay(false);
        let (p, _) = w.step("2026-01-01T00:00:00Z", None, None, true);
        assert!(!p.send);
        assert_eq!(
            w.condition(conditions::RELAY_READY),
            (ConditionStatus::False, "RelayNotReady".into())
        );
        assert_eq!(
            w.condition(conditions::CONFIRMATION_SENT),
            (ConditionStatus::False, "WaitingForRelay".into())
        );
        w.relay = Err(RelayProblem::NoDefault);
        w.step("2026-01-01T00:00:01Z", None, None, true);
        assert_eq!(
            w.condition(types::READY),
            (ConditionStatus::False, "NoDefaultRelay".into())
        );
        w.relay = relay(true);
        w.spec.usage = vec!["production".into()];
        let (p, _) = w.step("2026-01-01T00:00:02Z", None, None, true);
        assert!(!p.send);
        assert_eq!(
            w.condition(conditions::RELAY_READY),
            (ConditionStatus::False, "UsageNotServed".into())
        );
    }

    #[test]
    fn not_required_is_ready_with_the_relay_and_fallbacks_apply() {
        let mut w = World::new();
        w.spec.confirmation.required = false;
        let (p, _) = w.step("2026-01-01T00:00:00Z", None, None, true);
        assert!(!p.send);
        assert_eq!(w.condition(types::READY).0, ConditionStatus::True);
        let s = w.status.clone().expect("status");
        assert_eq!(
            s.effective_from.as_deref(),
            Some("\"Sales\" <sales@example.test>")
        );
        assert_eq!(
            s.effective_reply_to.as_deref(),
            Some("no-reply@example.test")
        );
        w.spec.reply_to = Some("team@example.test".into());
        assert_eq!(
            effective_addresses(&w.spec, w.relay.as_ref().ok()).1,
            "team@example.test"
        );
        assert_eq!(effective_addresses(&w.spec, None).1, "team@example.test");
        w.spec.reply_to = None;
        assert_eq!(effective_addresses(&w.spec, None).1, "sales@example.test");
    }

    #[test]
    fn connection_secret_conditions_gate_ready() {
        let w = World::new();
        let mut s = w.spec.clone();
        s.write_connection_secret_to_ref = Some(ConnectionSecretRef {
            name: "mail".into(),
        });
        let p = Plan {
            confirmation: ConfirmationStatus {
                state: ConfirmationState::Confirmed,
                address: s.address.clone(),
                ..Default::default()
            },
            send: false,
            code: None,
            held_back: None,
        };
        let ready = |secret: SecretState| {
            desired_conditions(&s, &w.relay, &p, &secret)
                .into_iter()
                .find(|c| c.type_ == types::READY)
                .map(|c| (c.status, c.reason))
        };
        assert_eq!(
            ready(SecretState::Written("mail".into())),
            Some((ConditionStatus::True, "Ready".into()))
        );
        assert_eq!(
            ready(SecretState::NotAllowed("no".into())),
            Some((ConditionStatus::False, "PublishingNotAllowed".into()))
        );
        assert_eq!(
            ready(SecretState::Waiting).map(|r| r.0),
            Some(ConditionStatus::False)
        );
    }
}
