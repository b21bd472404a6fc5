//! SmtpRelay: observe (Secrets in its own namespace) → verify → decide → apply.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::relay::RelayRef;
use super::{Context, Error, error_action, reconcile_relay};
use crate::api::SmtpRelay;

pub async fn reconcile(relay: Arc<SmtpRelay>, ctx: Arc<Context>) -> Result<Action, Error> {
    use tracing::Instrument as _;
    let namespace = relay.namespace().ok_or(Error::Missing("namespace"))?;
    let name = relay.name_any();
    let span = tracing::info_span!("reconcile", kind = "SmtpRelay", %namespace, %name);
    let start = std::time::Instant::now();
    let result = reconcile_in_span(relay, Arc::clone(&ctx), namespace, name)
        .instrument(span)
        .await;
    ctx.metrics
        .reconciled("SmtpRelay", result.is_ok(), start.elapsed());
    result
}

async fn reconcile_in_span(
    relay: Arc<SmtpRelay>,
    ctx: Arc<Context>,
    namespace: String,
    name: String,
) -> Result<Action, Error> {
    let relay_ref = RelayRef {
        kind: "SmtpRelay",
        namespace: Some(&namespace),
        name: &name,
        generation: relay.metadata.generation,
        spec: &relay.spec,
        status: relay.status.as_ref(),
        default_namespace: &ctx.settings.operator_namespace,
    };
    let api: Api<SmtpRelay> = Api::namespaced(ctx.client.clone(), &namespace);
    reconcile_relay(relay.as_ref(), &ctx, relay_ref, api, |s| s).await
}

pub fn error_policy(_relay: Arc<SmtpRelay>, error: &Error, _ctx: Arc<Context>) -> Action {
    error_action(error)
}
