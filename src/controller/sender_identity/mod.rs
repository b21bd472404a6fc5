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

use super::{Context, Error, instrumented, jittered, publish};
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

mod actions;
mod apply;
mod deliverability;
use apply::*;
#[cfg(test)]
mod fixtures;
mod observe;
mod plan;
mod secret;
mod status;

pub use actions::*;
pub use deliverability::*;
pub use observe::*;
pub use plan::*;
pub use secret::*;
pub use status::*;

pub use crate::api::{CODE_ANNOTATION, RESEND_ANNOTATION};
/// At most this many confirmation mails per identity in 24 hours.
pub const MAX_ATTEMPTS_PER_DAY: usize = 5;
/// Wait before retrying a confirmation mail the relay did not accept.
pub const SEND_RETRY: Duration = Duration::from_secs(60);
/// Wrong codes accepted for one attempt before it is withdrawn.
pub const MAX_FAILED_CODES: i32 = 5;
pub use reasons::CODE_ATTEMPTS_EXHAUSTED;

/// Was the current attempt withdrawn for wrong codes?
pub fn locked_out(c: &ConfirmationStatus) -> bool {
    c.state == ConfirmationState::Expired && c.failed_codes >= MAX_FAILED_CODES
}

/// Identity condition types.
pub use crate::api::identity_conditions as conditions;

/// Confirmation mails sent per address in the last 24 hours, in the leader's memory.
/// A call looks at its own address only; addresses with nothing left in the last day
/// are swept at most once an hour (a call per reconcile must not walk every address).
#[derive(Debug, Default)]
pub struct SendLog(std::sync::Mutex<SendLogState>);

#[derive(Debug, Default)]
struct SendLogState {
    by_address: BTreeMap<String, Vec<Timestamp>>,
    swept: Option<Timestamp>,
}

fn day_before(now: Timestamp) -> Timestamp {
    now - jiff::SignedDuration::from_hours(24)
}

impl SendLog {
    fn lock(&self, now: Timestamp) -> std::sync::MutexGuard<'_, SendLogState> {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let hour_ago = now - jiff::SignedDuration::from_hours(1);
        if state.swept.is_none_or(|t| t < hour_ago) {
            let day_ago = day_before(now);
            state.by_address.retain(|_, times| {
                times.retain(|t| *t > day_ago);
                !times.is_empty()
            });
            state.swept = Some(now);
        }
        state
    }

    pub fn count(&self, address: &str, now: Timestamp) -> usize {
        let day_ago = day_before(now);
        self.lock(now)
            .by_address
            .get(&address.to_ascii_lowercase())
            .map_or(0, |times| times.iter().filter(|t| **t > day_ago).count())
    }

    pub fn record(&self, address: &str, now: Timestamp) {
        let day_ago = day_before(now);
        let mut state = self.lock(now);
        let times = state
            .by_address
            .entry(address.to_ascii_lowercase())
            .or_default();
        times.retain(|t| *t > day_ago);
        times.push(now);
    }
}

pub async fn reconcile(identity: Arc<SenderIdentity>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = identity.namespace().ok_or(Error::Missing("namespace"))?;
    let name = identity.name_any();
    if super::superseded(&ctx, identity.as_ref()) {
        return Ok(Action::requeue(super::SUPERSEDED_RETRY));
    }
    let work = reconcile_in_span(
        Arc::clone(&identity),
        Arc::clone(&ctx),
        namespace.clone(),
        name.clone(),
    );
    instrumented(&ctx, "SenderIdentity", Some(&namespace), &name, work).await
}

/// Gather → decide → apply.
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
    // Gather: the relay, from the shared caches (and the namespace's labels).
    let observed = observe(&ctx, &namespace, spec, identity.status.as_ref()).await?;
    if first_status_can_wait(identity.status.as_ref(), &observed) {
        // Its relay's first status wakes it (shared reflector); the timer is a backstop.
        return Ok(Action::requeue(Duration::from_secs(120)));
    }
    let annotations = identity.annotations();
    let fresh = Secrets::generate();
    let now = Timestamp::now();
    // Decide the confirmation (pure).
    let plan = plan(&Facts {
        generation: identity.metadata.generation,
        spec,
        status: identity.status.as_ref(),
        relay: &observed.relay,
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
    });
    // The relay's session target, read once and only when the plan needs it.
    let target = match &observed.object {
        Some(object) if needs_target(spec, &observed, &plan) => {
            Some(relay_target(&ctx, object, plan.send).await)
        }
        _ => None,
    };
    let mail = MailInputs {
        sender: &confirm_ctx.sender,
        base_url: confirm_ctx.base_url.as_deref(),
        namespace: &namespace,
        name: &name,
        fresh: &fresh,
    };
    let actions = decide(&identity, &observed, plan, target, &mail);
    apply(&ctx, &identity, &observed, actions).await
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
