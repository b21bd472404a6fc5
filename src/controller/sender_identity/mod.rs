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

mod apply;
use apply::*;
#[cfg(test)]
mod fixtures;
mod observe;
mod plan;
mod secret;
mod status;

pub use observe::*;
pub use plan::*;
pub use secret::*;
pub use status::*;

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
    use super::fixtures::*;
    use super::*;

    #[test]
    fn the_send_log_forgets_after_a_day() {
        let log = SendLog::default();
        log.record("A@example.test", ts("2026-01-01T00:00:00Z"));
        log.record("a@example.test", ts("2026-01-01T12:00:00Z"));
        assert_eq!(log.count("a@EXAMPLE.test", ts("2026-01-01T13:00:00Z")), 2);
        assert_eq!(log.count("a@example.test", ts("2026-01-02T06:00:00Z")), 1);
        assert_eq!(log.count("a@example.test", ts("2026-01-03T00:00:00Z")), 0);
    }
}
