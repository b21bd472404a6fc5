//! SenderIdentity: observe (relay, namespace, annotations) → decide (pure) → apply
//! (status before sending, the confirmation mail, the connection Secret).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::{Context, Error, error_action, instrumented, jittered, publish};
use crate::api::{
    ClusterSmtpRelay, ConditionStatus, ConfirmationState, ConfirmationStatus, MailboxSpec,
    RelayKindRef, SendFailure, SenderIdentity, SenderIdentitySpec, SenderIdentityStatus, SmtpRelay,
    SmtpRelaySpec, SmtpRelayStatus, TlsMode,
};
use crate::confirm::{self, CODE, ConfirmKey, Refusal, Secrets, TOKEN, rfc3339};
use crate::k8s::MANAGER;
use crate::k8s::source::KubeSource;
use crate::relay::{self, Desired, RelayRef, merge_conditions, parse_duration, types};
use crate::smtp;

pub use crate::api::{CODE_ANNOTATION, RESEND_ANNOTATION};
/// Internal: the namespace's labels could not be read; retried, never written.
const NAMESPACE_LOOKUP_FAILED: &str = "NamespaceLookupFailed";
/// At most this many confirmation mails per identity in 24 hours.
pub const MAX_ATTEMPTS_PER_DAY: usize = 5;
/// Wait before retrying a confirmation mail the relay did not accept.
pub const SEND_RETRY: Duration = Duration::from_secs(60);
/// Wrong codes accepted for one attempt before it is withdrawn.
pub const MAX_FAILED_CODES: i32 = 5;
/// Reason once an attempt is withdrawn after too many wrong codes.
pub const CODE_ATTEMPTS_EXHAUSTED: &str = "CodeAttemptsExhausted";

/// Was the current attempt withdrawn for wrong codes?
pub fn locked_out(c: &ConfirmationStatus) -> bool {
    c.state == ConfirmationState::Expired && c.failed_codes >= MAX_FAILED_CODES
}

/// Identity condition types.
pub use crate::api::identity_conditions as conditions;

/// Confirmation mails sent per address in the last 24 hours, in the leader's memory.
#[derive(Debug, Default)]
pub struct SendLog(std::sync::Mutex<BTreeMap<String, Vec<Timestamp>>>);

impl SendLog {
    fn with<T>(
        &self,
        now: Timestamp,
        f: impl FnOnce(&mut BTreeMap<String, Vec<Timestamp>>) -> T,
    ) -> T {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let day_ago = now - jiff::SignedDuration::from_hours(24);
        map.retain(|_, times| {
            times.retain(|t| *t > day_ago);
            !times.is_empty()
        });
        f(&mut map)
    }

    pub fn count(&self, address: &str, now: Timestamp) -> usize {
        self.with(now, |m| {
            m.get(&address.to_ascii_lowercase()).map_or(0, Vec::len)
        })
    }

    pub fn record(&self, address: &str, now: Timestamp) {
        self.with(now, |m| {
            m.entry(address.to_ascii_lowercase()).or_default().push(now)
        });
    }
}

/// What the identity needs to know about its relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayView {
    /// e.g. "SmtpRelay corporate", "ClusterSmtpRelay shared".
    pub label: String,
    pub kind: RelayKindRef,
    pub name: String,
    /// (reason, message) of the relay's Ready condition when it is not True.
    pub not_ready: Option<(String, String)>,
    pub usage: Vec<String>,
    pub no_reply: Option<MailboxSpec>,
    pub default_sender: MailboxSpec,
    pub publishing_allowed: bool,
    /// May identities on this relay skip confirmation? (Always for a namespaced
    /// SmtpRelay, whose owner is the identity's namespace; ClusterSmtpRelays opt in.)
    pub unconfirmed_allowed: bool,
    /// The relay and its destination, as a confirmation is bound to them.
    pub binding: String,
}

/// What a confirmation is bound to: the relay (kind, namespace, name) and where it
/// delivers (host, port, TLS mode, credentials Secret). Title, sender names, headers
/// or verification settings do not change it.
pub fn relay_binding(
    kind: RelayKindRef,
    namespace: Option<&str>,
    name: &str,
    spec: &SmtpRelaySpec,
    secret_namespace: &str,
) -> String {
    let relay = match namespace {
        Some(ns) => format!("{kind:?} {ns}/{name}"),
        None => format!("{kind:?} {name}"),
    };
    let port = spec
        .port
        .map(|p| p.to_string())
        .unwrap_or_else(|| spec.tls.mode.default_port().to_string());
    let credentials = match &spec.auth {
        Some(a) => {
            let r = &a.credentials_secret_ref;
            format!(
                "credentials {}/{}",
                r.namespace.as_deref().unwrap_or(secret_namespace),
                r.name
            )
        }
        None => "no credentials".into(),
    };
    format!(
        "{relay} via {}:{port} ({:?}, {credentials})",
        spec.host, spec.tls.mode
    )
}

/// Build the view of a relay from its spec and status.
pub fn relay_view(
    kind: RelayKindRef,
    name: &str,
    spec: &SmtpRelaySpec,
    status: Option<&SmtpRelayStatus>,
    publishing_allowed: bool,
    unconfirmed_allowed: bool,
    binding: String,
) -> RelayView {
    let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == types::READY));
    let not_ready = match ready {
        Some(c) if c.status == ConditionStatus::True => None,
        Some(c) => Some((c.reason.clone(), c.message.clone())),
        None => Some((
            "NotVerified".into(),
            "the relay has not been verified yet".into(),
        )),
    };
    RelayView {
        label: format!("{kind:?} {name}"),
        kind,
        name: name.into(),
        not_ready,
        usage: spec.usage.clone(),
        no_reply: spec.no_reply.clone(),
        default_sender: spec.default_sender.clone(),
        publishing_allowed,
        unconfirmed_allowed,
        binding,
    }
}

/// Does a label selector match these labels? (matchLabels and matchExpressions.)
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Everything decide needs, already observed.
pub struct Facts<'a> {
    pub generation: Option<i64>,
    pub spec: &'a SenderIdentitySpec,
    pub status: Option<&'a SenderIdentityStatus>,
    /// The relay, or (reason, message) why there is none to use.
    pub relay: &'a Result<RelayView, (&'static str, String)>,
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
    /// Send the mail for `confirmation.attempt_id` (persist the status first).
    pub send: bool,
    /// A code given in the annotation was checked (the annotation must be removed).
    pub code: Option<Result<(), Refusal>>,
    /// Why no mail was sent although one is wanted (daily limit).
    pub held_back: Option<String>,
}

fn parse_ts(s: Option<&str>) -> Option<Timestamp> {
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
    // An attempt persisted but never sent (crash between persisting and sending, or a
    // relay that refused the mail): its secrets are gone, so it is replaced, never resent.
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
    relay: &Result<RelayView, (&'static str, String)>,
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

/// Decide the conditions (pure).
pub fn desired_conditions(
    spec: &SenderIdentitySpec,
    relay: &Result<RelayView, (&'static str, String)>,
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
    let relay_cond = match relay {
        Err((reason, message)) => d(conditions::RELAY_READY, False, reason, message.clone()),
        Ok(r) => match (&r.not_ready, unserved_usage(&spec.usage, &r.usage)) {
            // Not failing, only not verified yet: a wait, not a fault (GitOps tools
            // show Progressing for it).
            (Some((reason, _)), _) if reason == "NotVerified" => d(
                conditions::RELAY_READY,
                False,
                "RelayNotVerified",
                format!(
                    "{} has not been verified yet; the identity waits for it",
                    r.label
                ),
            ),
            (Some((reason, message)), _) => d(
                conditions::RELAY_READY,
                False,
                "RelayNotReady",
                format!("{} is not Ready ({reason}): {message}", r.label),
            ),
            (None, missing) if !missing.is_empty() => d(
                conditions::RELAY_READY,
                False,
                "UsageNotServed",
                format!("{} does not serve usage {}", r.label, missing.join(", ")),
            ),
            (None, _) => d(
                conditions::RELAY_READY,
                True,
                "RelayReady",
                format!("{} is Ready", r.label),
            ),
        },
    };
    let relay_ok = relay_cond.status == True;
    out.push(relay_cond);

    let c = &p.confirmation;
    let sent = match c.state {
        ConfirmationState::NotRequired => d(
            conditions::CONFIRMATION_SENT,
            True,
            "NotRequired",
            "confirmation is not required".into(),
        ),
        ConfirmationState::Confirmed => d(
            conditions::CONFIRMATION_SENT,
            True,
            "Sent",
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
            "Expired",
            format!(
                "the confirmation expired at {}; annotate {RESEND_ANNOTATION} with a new value to send a new one",
                c.expires_at.as_deref().unwrap_or("?")
            ),
        ),
        ConfirmationState::Pending => match (&c.send_failure, &c.sent_at, &p.held_back) {
            (_, _, Some(why)) => d(
                conditions::CONFIRMATION_SENT,
                False,
                "DailyLimitReached",
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
                "Sent",
                format!(
                    "sent to {} at {at}, valid until {}",
                    c.address,
                    c.expires_at.as_deref().unwrap_or("?")
                ),
            ),
            (None, None, _) if !relay_ok => d(
                conditions::CONFIRMATION_SENT,
                False,
                "WaitingForRelay",
                "the confirmation mail is sent once the relay is Ready".into(),
            ),
            (None, None, _) => d(
                conditions::CONFIRMATION_SENT,
                False,
                "Sending",
                format!("sending the confirmation mail to {}", c.address),
            ),
        },
    };
    out.push(sent);

    let confirmed = match (c.state, &p.code) {
        (ConfirmationState::Confirmed, _) => d(
            conditions::CONFIRMED,
            True,
            "Confirmed",
            format!("confirmed at {}", c.confirmed_at.as_deref().unwrap_or("?")),
        ),
        (ConfirmationState::NotRequired, _) => d(
            conditions::CONFIRMED,
            True,
            "NotRequired",
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
            "Pending",
            format!(
                "the code in {CODE_ANNOTATION} was wrong ({} of {MAX_FAILED_CODES} tries used); waiting for the owner of {} to open the link or give the code",
                c.failed_codes, c.address
            ),
        ),
        (_, Some(Err(refusal))) => d(
            conditions::CONFIRMED,
            False,
            "CodeRejected",
            format!(
                "the code in {CODE_ANNOTATION} was not accepted: {}",
                refusal.explain()
            ),
        ),
        (ConfirmationState::Expired, _) => d(
            conditions::CONFIRMED,
            False,
            "Expired",
            "the owner did not confirm in time".into(),
        ),
        (ConfirmationState::Pending, _) => d(
            conditions::CONFIRMED,
            False,
            "Pending",
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
                "Waiting",
                "written once the relay is Ready and the address confirmed".into(),
            ));
            false
        }
        SecretState::Written(name) => {
            out.push(d(
                conditions::CONNECTION_SECRET_READY,
                True,
                "Written",
                format!("connection details in Secret {name}"),
            ));
            true
        }
        SecretState::NotAllowed(m) => {
            out.push(d(
                conditions::CONNECTION_SECRET_READY,
                False,
                "PublishingNotAllowed",
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
            "Ready",
            format!(
                "{} can send through {}",
                spec.address,
                relay.as_ref().map(|r| r.label.as_str()).unwrap_or("?")
            ),
        ),
        Some(f) => d(types::READY, False, &f.reason, f.message),
        None => d(types::READY, False, "NotReady", String::new()),
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
    relay: &Result<RelayView, (&'static str, String)>,
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
    }
}

/// The published connection Secret to withdraw, if any (pure): it was renamed or is
/// no longer wanted, the address is no longer confirmed, or the relay no longer
/// allows this namespace or publishing. A relay that is merely not Ready keeps it,
/// so applications are not broken by a passing relay failure.
pub fn revoked_secret<'a>(
    published: Option<&'a str>,
    wanted: Option<&str>,
    confirmation: ConfirmationState,
    publishing_allowed: &Result<bool, &str>,
) -> Option<&'a str> {
    let published = published?;
    let gone = wanted != Some(published);
    let unconfirmed = !matches!(
        confirmation,
        ConfirmationState::Confirmed | ConfirmationState::NotRequired
    );
    let disallowed = match publishing_allowed {
        Ok(allowed) => !allowed,
        Err(reason) => matches!(
            *reason,
            "NamespaceNotAllowed" | "RelayNotFound" | "NoDefaultRelay"
        ),
    };
    (gone || unconfirmed || disallowed).then_some(published)
}

/// Keys of the connection Secret.
pub fn connection_data(
    spec: &SenderIdentitySpec,
    relay: &RelayView,
    target: &smtp::Target,
    mode: TlsMode,
    custom_headers: &[(String, String)],
) -> BTreeMap<String, String> {
    let (from, reply_to) = effective_addresses(spec, Some(relay));
    let mut data = BTreeMap::from([
        ("host".to_string(), target.host.clone()),
        ("port".to_string(), target.port.to_string()),
        ("tlsMode".to_string(), format!("{mode:?}")),
        ("from".to_string(), from),
        ("fromAddress".to_string(), spec.address.clone()),
        ("replyTo".to_string(), reply_to),
        ("relay".to_string(), relay.label.clone()),
        (
            "customHeaders".to_string(),
            custom_headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\n"))
                .collect::<String>(),
        ),
        (
            "signature".to_string(),
            spec.signature.clone().unwrap_or_default(),
        ),
    ]);
    if let Some(n) = &spec.display_name {
        data.insert("fromName".into(), n.clone());
    }
    if let Some(c) = &target.credentials {
        data.insert("username".into(), c.username.clone());
        data.insert("password".into(), c.password.expose().to_string());
    }
    data
}

// ---------------------------------------------------------------- observe & apply

async fn observe_relay(
    ctx: &Context,
    namespace: &str,
    spec: &SenderIdentitySpec,
) -> Result<
    (
        RelayView,
        Option<Arc<SmtpRelay>>,
        Option<Arc<ClusterSmtpRelay>>,
    ),
    (&'static str, String),
> {
    match &spec.relay_ref {
        Some(r) if r.kind == RelayKindRef::SmtpRelay => {
            let found =
                ctx.relays.state().into_iter().find(|o| {
                    o.name_any() == r.name && o.namespace().as_deref() == Some(namespace)
                });
            let relay = found.ok_or((
                "RelayNotFound",
                format!("SmtpRelay {namespace}/{} does not exist", r.name),
            ))?;
            let binding = relay_binding(
                RelayKindRef::SmtpRelay,
                Some(namespace),
                &r.name,
                &relay.spec,
                namespace,
            );
            let view = relay_view(
                RelayKindRef::SmtpRelay,
                &r.name,
                &relay.spec,
                relay.status.as_ref(),
                true,
                true,
                binding,
            );
            Ok((view, Some(relay), None))
        }
        other => {
            let cluster = match other {
                Some(r) => ctx
                    .cluster_relays
                    .state()
                    .into_iter()
                    .find(|o| o.name_any() == r.name)
                    .ok_or((
                        "RelayNotFound",
                        format!("ClusterSmtpRelay {} does not exist", r.name),
                    ))?,
                None => super::cluster_smtp_relay::honoured_default(&ctx.cluster_relays.state())
                    .ok_or((
                        "NoDefaultRelay",
                        "spec.relayRef is omitted and no ClusterSmtpRelay is marked default"
                            .to_string(),
                    ))?,
            };
            if let Some(selector) = &cluster.spec.allowed_namespaces {
                let ns_api: Api<Namespace> = Api::all(ctx.client.clone());
                // Fail closed: without the labels, the namespace is not allowed.
                let labels = match ns_api.get_opt(namespace).await {
                    Ok(n) => n.and_then(|n| n.metadata.labels).unwrap_or_default(),
                    Err(_) => {
                        return Err((
                            NAMESPACE_LOOKUP_FAILED,
                            format!(
                                "cannot read the labels of namespace {namespace} to check ClusterSmtpRelay {}'s allowedNamespaces; will retry",
                                cluster.name_any()
                            ),
                        ));
                    }
                };
                if !selector_matches(selector, &labels) {
                    return Err((
                        "NamespaceNotAllowed",
                        format!(
                            "ClusterSmtpRelay {} does not allow namespace {namespace} (spec.allowedNamespaces)",
                            cluster.name_any()
                        ),
                    ));
                }
            }
            let binding = relay_binding(
                RelayKindRef::ClusterSmtpRelay,
                None,
                &cluster.name_any(),
                &cluster.spec.relay,
                &ctx.settings.operator_namespace,
            );
            let view = relay_view(
                RelayKindRef::ClusterSmtpRelay,
                &cluster.name_any(),
                &cluster.spec.relay,
                cluster.status.as_ref(),
                cluster.spec.allow_credential_publishing,
                cluster.spec.allow_unconfirmed_senders,
                binding,
            );
            Ok((view, None, Some(cluster)))
        }
    }
}

/// Resolve the relay's session target (credentials included) the way the relay controller does.
async fn relay_target(
    ctx: &Context,
    relay: Option<&SmtpRelay>,
    cluster: Option<&ClusterSmtpRelay>,
) -> Result<(smtp::Target, TlsMode, Vec<(String, String)>), String> {
    let source = KubeSource {
        client: ctx.client.clone(),
        input_key: ctx.settings.input_key.clone(),
    };
    let (ns, name, spec, status, kind) = match (relay, cluster) {
        (Some(r), _) => (
            r.namespace(),
            r.name_any(),
            &r.spec,
            r.status.as_ref(),
            "SmtpRelay",
        ),
        (None, Some(c)) => (
            None,
            c.name_any(),
            &c.spec.relay,
            c.status.as_ref(),
            "ClusterSmtpRelay",
        ),
        _ => return Err("no relay".into()),
    };
    let r = RelayRef {
        kind,
        namespace: ns.as_deref(),
        name: &name,
        generation: None,
        spec,
        status,
        default_namespace: &ctx.settings.operator_namespace,
        destinations: &ctx.settings.destinations,
    };
    let resolved = relay::resolve(&r, &source).await.map_err(|p| p.message)?;
    let headers = spec
        .custom_headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    Ok((resolved.target, spec.tls.mode, headers))
}

pub async fn reconcile(identity: Arc<SenderIdentity>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = identity.namespace().ok_or(Error::Missing("namespace"))?;
    let name = identity.name_any();
    let work = reconcile_in_span(
        Arc::clone(&identity),
        Arc::clone(&ctx),
        namespace.clone(),
        name.clone(),
    );
    instrumented(&ctx, "SenderIdentity", Some(&namespace), &name, work).await
}

async fn reconcile_in_span(
    identity: Arc<SenderIdentity>,
    ctx: Arc<Context>,
    namespace: String,
    name: String,
) -> Result<Action, Error> {
    let Some(confirm_ctx) = ctx.confirmation.as_ref() else {
        return Err(Error::Missing("confirmation key"));
    };
    let spec = &identity.spec;
    let observed = observe_relay(&ctx, &namespace, spec).await;
    if let Err((NAMESPACE_LOOKUP_FAILED, message)) = &observed {
        return Err(Error::Transient(message.clone()));
    }
    let relay_view_result = observed
        .as_ref()
        .map(|(v, _, _)| v.clone())
        .map_err(|e| (e.0, e.1.clone()));
    let annotations = identity.annotations();
    let fresh = Secrets::generate();
    let now = Timestamp::now();
    let facts = Facts {
        generation: identity.metadata.generation,
        spec,
        status: identity.status.as_ref(),
        relay: &relay_view_result,
        code_annotation: annotations.get(CODE_ANNOTATION).map(String::as_str),
        resend_annotation: annotations.get(RESEND_ANNOTATION).map(String::as_str),
        page_url: confirm_ctx
            .base_url
            .as_deref()
            .map(|b| confirm::page_url(b, &namespace, &name)),
        key: &confirm_ctx.key,
        fresh: &fresh,
        now,
        address_sends_today: ctx.sends.count(&spec.address, now),
    };
    let mut p = plan(&facts);
    let mut current: SenderIdentity = (*identity).clone();
    let previous_secret = identity
        .status
        .as_ref()
        .and_then(|s| s.connection_secret.clone())
        .map(SecretState::Written);
    let secret_wanted = spec.write_connection_secret_to_ref.is_some();
    let pending_secret = if secret_wanted {
        previous_secret.clone().unwrap_or(SecretState::Waiting)
    } else {
        SecretState::NotRequested
    };

    if p.send {
        // Persist the attempt (digests only) before the mail leaves: a crash from here
        // on leaves an attempt that is replaced, never one that is sent twice.
        let before = next_status(
            spec,
            identity.metadata.generation,
            identity.status.as_ref(),
            &relay_view_result,
            &p,
            &pending_secret,
            now,
        );
        current = write_identity_status(&ctx, &current, &before).await?;
        let (relay, cluster) = match &observed {
            Ok((_, r, c)) => (r.clone(), c.clone()),
            Err(_) => (None, None),
        };
        let outcome = match relay_target(&ctx, relay.as_deref(), cluster.as_deref()).await {
            Ok((mut target, _, _relay_headers)) => {
                // From, its display name, Reply-To and headers are the operator's:
                // nothing in this mail is text the requester chose (the relay's
                // default sender address is used only when no --confirmation-from is
                // configured, since the relay must accept the sender).
                let sender = &confirm_ctx.sender;
                let from_address = sender.from.clone().unwrap_or_else(|| {
                    relay_view_result
                        .as_ref()
                        .map(|v| v.default_sender.address.clone())
                        .unwrap_or_default()
                });
                let reply_to = sender
                    .reply_to
                    .clone()
                    .unwrap_or_else(|| from_address.clone());
                let link = confirm_ctx
                    .base_url
                    .as_deref()
                    .map(|b| confirm::link(b, &namespace, &name, &fresh.token));
                let identity_label = format!("{namespace}/{name}");
                let mail = confirm::mail::build(&confirm::mail::ConfirmationMail {
                    language: spec.confirmation.language,
                    from: smtp::Mailbox {
                        name: Some(sender.from_name.clone()),
                        address: from_address,
                    },
                    reply_to: smtp::Mailbox {
                        name: None,
                        address: reply_to,
                    },
                    address: &spec.address,
                    identity: &identity_label,
                    attempt_id: p.confirmation.attempt_id.as_deref().unwrap_or(""),
                    link,
                    code: &fresh.code,
                    ttl: &spec.confirmation.ttl,
                });
                target.message = Some(mail);
                let _permit = ctx.limiter.acquire(&target.host).await;
                smtp::verify(&target).await
            }
            Err(message) => smtp::Outcome {
                failure: Some(smtp::Failure {
                    step: smtp::Step::Connect,
                    reason: smtp::FailureReason::InvalidTarget,
                    code: None,
                    message,
                }),
                ..Default::default()
            },
        };
        p.confirmation = after_send(&p.confirmation, &outcome, Timestamp::now());
        ctx.sends.record(&spec.address, Timestamp::now());
        if outcome.succeeded() {
            ctx.metrics.confirmation_mails_sent.inc();
            tracing::info!(attempt = ?p.confirmation.attempt_id, "confirmation mail sent");
        } else {
            tracing::warn!(reason = ?outcome.failure.as_ref().map(|f| f.reason), "confirmation mail not accepted");
        }
    }

    // Credentials published earlier that must not stay where they are.
    let published = identity
        .status
        .as_ref()
        .and_then(|s| s.connection_secret.as_deref());
    let revoke = revoked_secret(
        published,
        spec.write_connection_secret_to_ref
            .as_ref()
            .map(|r| r.name.as_str()),
        p.confirmation.state,
        &observed
            .as_ref()
            .map(|(v, _, _)| v.publishing_allowed)
            .map_err(|e| e.0),
    );
    let mut pending_secret = pending_secret;
    if let Some(stale) = revoke {
        delete_connection_secret(&ctx, &identity, &namespace, stale).await?;
        tracing::info!(secret = stale, "connection Secret withdrawn");
        if matches!(&pending_secret, SecretState::Written(n) if n == stale) {
            pending_secret = SecretState::Waiting;
        }
    }

    // Connection Secret, once usable.
    let secret_state = if !secret_wanted {
        SecretState::NotRequested
    } else if !usable(&relay_view_result, spec, &p.confirmation) {
        pending_secret
    } else {
        match &observed {
            Ok((view, relay, cluster)) if !view.publishing_allowed => {
                let _ = (relay, cluster);
                SecretState::NotAllowed(format!(
                    "{} does not allow credential publishing (spec.allowCredentialPublishing)",
                    view.label
                ))
            }
            Ok((view, relay, cluster)) => {
                match relay_target(&ctx, relay.as_deref(), cluster.as_deref()).await {
                    Ok((target, mode, headers)) => {
                        let data = connection_data(spec, view, &target, mode, &headers);
                        let secret_name = spec
                            .write_connection_secret_to_ref
                            .as_ref()
                            .map(|r| r.name.clone())
                            .unwrap_or_default();
                        match write_connection_secret(
                            &ctx,
                            &identity,
                            &namespace,
                            &secret_name,
                            data,
                        )
                        .await
                        {
                            Ok(()) => SecretState::Written(secret_name),
                            Err(e) => SecretState::Failed("SecretWriteFailed".into(), e),
                        }
                    }
                    Err(m) => SecretState::Failed("RelayCredentialsUnavailable".into(), m),
                }
            }
            Err(_) => pending_secret,
        }
    };

    let mut status = next_status(
        spec,
        identity.metadata.generation,
        current.status.as_ref(),
        &relay_view_result,
        &p,
        &secret_state,
        Timestamp::now(),
    );
    if Some(&status) != current.status.as_ref() {
        let mut written = write_identity_status(&ctx, &current, &status).await;
        // The mail has left: if the object changed meanwhile (a label, another
        // writer), record the send on the fresh object rather than retrying the
        // reconcile, which would mint and mail a new attempt and void this one.
        for _ in 0..3 {
            if !(p.send && matches!(written, Err(Error::Conflict))) {
                break;
            }
            let api: Api<SenderIdentity> = Api::namespaced(ctx.client.clone(), &namespace);
            let latest = api.get(&name).await.map_err(Error::Status)?;
            let same_attempt = latest
                .status
                .as_ref()
                .and_then(|s| s.confirmation.as_ref())
                .and_then(|c| c.attempt_id.as_deref())
                == p.confirmation.attempt_id.as_deref();
            if !same_attempt {
                break;
            }
            status = next_status(
                &latest.spec,
                latest.metadata.generation,
                latest.status.as_ref(),
                &relay_view_result,
                &p,
                &secret_state,
                Timestamp::now(),
            );
            written = write_identity_status(&ctx, &latest, &status).await;
        }
        written?;
    }
    if p.code.is_some() {
        remove_annotation(&ctx, &namespace, &name, CODE_ANNOTATION).await?;
        if let Some(Err(refusal)) = &p.code {
            // Logged and counted every time; an Event only when the attempt is
            // withdrawn (guessing must not flood the namespace's events).
            ctx.metrics.refused("code", refusal.name());
            tracing::info!(%namespace, %name, reason = refusal.name(), failed_codes = p.confirmation.failed_codes, "confirmation code refused");
            if *refusal == Refusal::Mismatch && locked_out(&p.confirmation) {
                publish(
                    &ctx,
                    identity.as_ref(),
                    &relay::Transition {
                        warning: true,
                        reason: CODE_ATTEMPTS_EXHAUSTED.into(),
                        note: format!(
                            "{MAX_FAILED_CODES} wrong codes: the confirmation attempt is withdrawn; annotate {RESEND_ANNOTATION} for a new mail"
                        ),
                    },
                )
                .await;
            }
        } else {
            ctx.metrics.confirmations_completed.inc();
        }
    }
    if let Some(t) = identity_transition(identity.status.as_ref(), &status) {
        publish(&ctx, identity.as_ref(), &t).await;
    }
    Ok(Action::requeue(jittered(requeue_after(
        &p.confirmation,
        Timestamp::now(),
    ))))
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

fn identity_transition(
    previous: Option<&SenderIdentityStatus>,
    next: &SenderIdentityStatus,
) -> Option<relay::Transition> {
    let ready = relay::ready_change(previous.map(|p| p.conditions.as_slice()), &next.conditions)?;
    let is_ready = ready.status == ConditionStatus::True;
    Some(relay::Transition {
        warning: !is_ready && ready.reason != "Pending" && ready.reason != "Sending",
        reason: if is_ready {
            "Ready".into()
        } else {
            ready.reason.clone()
        },
        note: ready.message.clone(),
    })
}

async fn write_identity_status(
    ctx: &Context,
    identity: &SenderIdentity,
    status: &SenderIdentityStatus,
) -> Result<SenderIdentity, Error> {
    let api: Api<SenderIdentity> = Api::namespaced(
        ctx.client.clone(),
        &identity.namespace().unwrap_or_default(),
    );
    Ok(crate::k8s::apply_status(&api, identity, status).await?)
}

async fn remove_annotation(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<(), Error> {
    let api: Api<SenderIdentity> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({"metadata": {"annotations": {key: null}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(Error::Status)
}

async fn write_connection_secret(
    ctx: &Context,
    identity: &SenderIdentity,
    namespace: &str,
    name: &str,
    data: BTreeMap<String, String>,
) -> Result<(), String> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let bytes: BTreeMap<String, k8s_openapi::ByteString> = data
        .into_iter()
        .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
        .collect();
    let owner = identity
        .controller_owner_ref(&())
        .ok_or_else(|| "the identity has no uid yet".to_string())?;
    match api.get_opt(name).await {
        Ok(Some(existing)) => {
            // Never take over a Secret this identity does not own: it could be any
            // application's, and it would be garbage-collected with the identity.
            let ours =
                crate::k8s::controlled_by(existing.metadata.owner_references.as_ref(), &owner.uid);
            if !ours {
                return Err(format!(
                    "Secret {namespace}/{name} already exists and is not owned by this identity; choose another name"
                ));
            }
            if existing.data.as_ref() == Some(&bytes) {
                return Ok(());
            }
        }
        Ok(None) => {}
        Err(e) => return Err(stable_error("reading", namespace, name, &e)),
    }
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "ownerReferences": [owner],
            "labels": {"app.kubernetes.io/managed-by": MANAGER},
        },
        "type": "Opaque",
        "data": bytes,
    });
    api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&secret))
        .await
        .map(|_| ())
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => format!(
                "the operator may not write Secrets in namespace {namespace} (chart value connectionSecrets.namespaces)"
            ),
            e => stable_error("writing", namespace, name, &e),
        })
}

/// Delete a connection Secret this identity owns (and nothing else).
async fn delete_connection_secret(
    ctx: &Context,
    identity: &SenderIdentity,
    namespace: &str,
    name: &str,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let uid = identity.uid().unwrap_or_default();
    let Some(existing) = api.get_opt(name).await.map_err(Error::Status)? else {
        return Ok(());
    };
    let ours = crate::k8s::controlled_by(existing.metadata.owner_references.as_ref(), &uid);
    if !ours {
        return Ok(());
    }
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::Status(e)),
    }
}

/// An error message that does not change from one attempt to the next (no request
/// ids or addresses), so that writing it to status does not trigger another
/// reconcile that writes a different one.
fn stable_error(doing: &str, namespace: &str, name: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!(
            "{doing} Secret {namespace}/{name}: {} ({})",
            s.reason, s.code
        ),
        _ => format!("{doing} Secret {namespace}/{name}: the API server could not be reached"),
    }
}

pub fn error_policy(_identity: Arc<SenderIdentity>, error: &Error, _ctx: Arc<Context>) -> Action {
    error_action(error)
}

/// Identities that use a relay of this kind and name (and, for cluster relays, those
/// that use the default).
pub fn uses_relay(
    identity: &SenderIdentity,
    kind: RelayKindRef,
    namespace: Option<&str>,
    name: &str,
) -> bool {
    match &identity.spec.relay_ref {
        Some(r) => {
            r.kind == kind
                && r.name == name
                && (kind == RelayKindRef::ClusterSmtpRelay
                    || identity.namespace().as_deref() == namespace)
        }
        None => kind == RelayKindRef::ClusterSmtpRelay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConfirmationSpec, ConnectionSecretRef, RelayRefSpec};

    fn spec() -> SenderIdentitySpec {
        SenderIdentitySpec {
            address: "sales@example.test".into(),
            display_name: Some("Sales".into()),
            reply_to: None,
            signature: None,
            usage: vec!["sales".into()],
            relay_ref: Some(RelayRefSpec {
                kind: RelayKindRef::SmtpRelay,
                name: "corporate".into(),
            }),
            confirmation: ConfirmationSpec::default(),
            write_connection_secret_to_ref: None,
        }
    }

    fn relay(ready: bool) -> Result<RelayView, (&'static str, String)> {
        Ok(RelayView {
            label: "SmtpRelay corporate".into(),
            kind: RelayKindRef::SmtpRelay,
            name: "corporate".into(),
            not_ready: (!ready).then(|| ("AuthRejected".into(), "535".into())),
            usage: vec!["sales".into(), "purchasing".into()],
            no_reply: Some(MailboxSpec {
                address: "no-reply@example.test".into(),
                name: None,
            }),
            default_sender: MailboxSpec {
                address: "noreply@example.test".into(),
                name: Some("ACME".into()),
            },
            publishing_allowed: true,
            unconfirmed_allowed: true,
            binding: "SmtpRelay team/corporate via smtp.example.test:587 (StartTls, credentials team/creds)".into(),
        })
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("ts")
    }

    struct World {
        key: ConfirmKey,
        spec: SenderIdentitySpec,
        relay: Result<RelayView, (&'static str, String)>,
        status: Option<SenderIdentityStatus>,
    }

    impl World {
        fn new() -> Self {
            World {
                key: ConfirmKey::new(b"0123456789abcdef0123456789abcdef"),
                spec: spec(),
                relay: relay(true),
                status: None,
            }
        }

        /// What a reconcile observes, with no annotations.
        fn facts<'a>(&'a self, fresh: &'a Secrets, now: &str, sends: usize) -> Facts<'a> {
            Facts {
                generation: Some(1),
                spec: &self.spec,
                status: self.status.as_ref(),
                relay: &self.relay,
                code_annotation: None,
                resend_annotation: None,
                page_url: None,
                key: &self.key,
                fresh,
                now: ts(now),
                address_sends_today: sends,
            }
        }

        /// One reconcile's decision; the status is kept as if written.
        fn step(
            &mut self,
            now: &str,
            code: Option<&str>,
            resend: Option<&str>,
            send_ok: bool,
        ) -> (Plan, Secrets) {
            let fresh = Secrets::generate();
            let mut f = self.facts(&fresh, now, 0);
            f.code_annotation = code;
            f.resend_annotation = resend;
            f.page_url = Some("https://c.example.test/confirm/team/sales".into());
            let mut p = plan(&f);
            if p.send {
                let outcome = if send_ok {
                    smtp::Outcome::default()
                } else {
                    smtp::Outcome {
                        failure: Some(smtp::Failure {
                            step: smtp::Step::Rcpt,
                            reason: smtp::FailureReason::RecipientRejected,
                            code: Some(550),
                            message: "550 no such user".into(),
                        }),
                        ..Default::default()
                    }
                };
                p.confirmation = after_send(&p.confirmation, &outcome, ts(now));
            }
            self.status = Some(next_status(
                &self.spec,
                Some(1),
                self.status.as_ref(),
                &self.relay,
                &p,
                &SecretState::NotRequested,
                ts(now),
            ));
            (p, fresh)
        }

        fn condition(&self, t: &str) -> (ConditionStatus, String) {
            let c = self
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == t))
                .unwrap_or_else(|| panic!("no {t}"));
            (c.status, c.reason.clone())
        }

        fn state(&self) -> ConfirmationState {
            self.status
                .as_ref()
                .and_then(|s| s.confirmation.as_ref())
                .map(|c| c.state)
                .unwrap_or_default()
        }
    }

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
    fn a_binding_changes_with_the_destination_only() {
        let spec: SmtpRelaySpec = serde_json::from_value(serde_json::json!({
            "host": "smtp.example.test", "defaultSender": {"address": "a@example.test"},
            "auth": {"credentialsSecretRef": {"name": "creds"}}}))
        .expect("spec");
        let bind = |s: &SmtpRelaySpec| {
            relay_binding(RelayKindRef::SmtpRelay, Some("team"), "corp", s, "team")
        };
        let base = bind(&spec);
        assert_eq!(
            base,
            "SmtpRelay team/corp via smtp.example.test:587 (StartTls, credentials team/creds)"
        );
        let mut same = spec.clone();
        same.title = Some("renamed".into());
        same.default_sender.name = Some("Other name".into());
        same.port = Some(587);
        assert_eq!(bind(&same), base, "cosmetic changes and explicit defaults");
        let changes: [fn(&mut SmtpRelaySpec); 5] = [
            |s| s.host = "mx.attacker.test".into(),
            |s| s.port = Some(2525),
            |s| s.tls.mode = crate::api::TlsMode::None,
            |s| s.auth = None,
            |s| {
                if let Some(a) = s.auth.as_mut() {
                    a.credentials_secret_ref.name = "other".into();
                }
            },
        ];
        for change in changes {
            let mut s = spec.clone();
            change(&mut s);
            assert_ne!(bind(&s), base);
        }
        assert_ne!(
            relay_binding(RelayKindRef::ClusterSmtpRelay, None, "corp", &spec, "ops"),
            base
        );
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
    fn a_crash_between_persisting_and_sending_never_sends_an_attempt_twice() {
        let mut w = World::new();
        let fresh = Secrets::generate();
        let p = plan(&w.facts(&fresh, "2026-01-01T00:00:00Z", 0));
        assert!(p.send);
        // Persisted, then the process died before sending.
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
        w.relay = Err(("NoDefaultRelay", "none".into()));
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
    fn the_send_log_forgets_after_a_day() {
        let log = SendLog::default();
        log.record("A@example.test", ts("2026-01-01T00:00:00Z"));
        log.record("a@example.test", ts("2026-01-01T12:00:00Z"));
        assert_eq!(log.count("a@EXAMPLE.test", ts("2026-01-01T13:00:00Z")), 2);
        assert_eq!(log.count("a@example.test", ts("2026-01-02T06:00:00Z")), 1);
        assert_eq!(log.count("a@example.test", ts("2026-01-03T00:00:00Z")), 0);
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

    #[test]
    fn published_credentials_are_withdrawn_when_they_must_be() {
        use ConfirmationState::{Confirmed, Expired, NotRequired, Pending};
        let ok: Result<bool, &str> = Ok(true);
        assert_eq!(
            revoked_secret(None, Some("a"), Pending, &ok),
            None,
            "nothing published"
        );
        assert_eq!(revoked_secret(Some("a"), Some("a"), Confirmed, &ok), None);
        assert_eq!(revoked_secret(Some("a"), Some("a"), NotRequired, &ok), None);
        assert_eq!(
            revoked_secret(Some("a"), Some("b"), Confirmed, &ok),
            Some("a"),
            "renamed"
        );
        assert_eq!(
            revoked_secret(Some("a"), None, Confirmed, &ok),
            Some("a"),
            "no longer wanted"
        );
        assert_eq!(
            revoked_secret(Some("a"), Some("a"), Pending, &ok),
            Some("a"),
            "address changed"
        );
        assert_eq!(
            revoked_secret(Some("a"), Some("a"), Expired, &ok),
            Some("a")
        );
        assert_eq!(
            revoked_secret(Some("a"), Some("a"), Confirmed, &Ok(false)),
            Some("a"),
            "publishing turned off"
        );
        assert_eq!(
            revoked_secret(Some("a"), Some("a"), Confirmed, &Err("NamespaceNotAllowed")),
            Some("a")
        );
        assert_eq!(
            revoked_secret(Some("a"), Some("a"), Confirmed, &Err("RelayNotFound")),
            Some("a")
        );
        assert_eq!(
            revoked_secret(Some("a"), Some("a"), Confirmed, &Err("RelayNotReady")),
            None,
            "a passing failure keeps it"
        );
    }

    #[test]
    fn label_selectors() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
        let labels = BTreeMap::from([("team".to_string(), "sales".to_string())]);
        let sel = |ml: &[(&str, &str)], ex: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: Some(
                ml.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: Some(ex),
        };
        let req = |k: &str, op: &str, v: &[&str]| LabelSelectorRequirement {
            key: k.into(),
            operator: op.into(),
            values: Some(v.iter().map(|s| s.to_string()).collect()),
        };
        assert!(selector_matches(
            &sel(&[("team", "sales")], vec![]),
            &labels
        ));
        assert!(!selector_matches(&sel(&[("team", "ops")], vec![]), &labels));
        assert!(selector_matches(
            &sel(&[], vec![req("team", "In", &["sales", "ops"])]),
            &labels
        ));
        assert!(!selector_matches(
            &sel(&[], vec![req("team", "NotIn", &["sales"])]),
            &labels
        ));
        assert!(selector_matches(
            &sel(&[], vec![req("team", "Exists", &[])]),
            &labels
        ));
        assert!(selector_matches(
            &sel(&[], vec![req("env", "DoesNotExist", &[])]),
            &labels
        ));
        assert!(!selector_matches(
            &sel(&[], vec![req("team", "Bogus", &[])]),
            &labels
        ));
        assert!(
            selector_matches(&LabelSelector::default(), &labels),
            "empty selector matches all"
        );
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
