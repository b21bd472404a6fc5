//! SmtpRelay: observe (Secrets in its own namespace) → verify → decide → apply.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{Context, Error, instrumented, reconcile_relay};
use crate::api::SmtpRelay;
use crate::relay::RelayRef;

pub async fn reconcile(relay: Arc<SmtpRelay>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = relay.namespace().ok_or(Error::Missing("namespace"))?;
    let name = relay.name_any();
    if super::superseded(&ctx, relay.as_ref()) {
        return Ok(Action::requeue(super::SUPERSEDED_RETRY));
    }
    let work = reconcile_in_span(
        Arc::clone(&relay),
        Arc::clone(&ctx),
        namespace.clone(),
        name.clone(),
    );
    instrumented(&ctx, "SmtpRelay", Some(&namespace), &name, work).await
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
        destinations: &ctx.settings.destinations,
        blocklists: ctx.settings.deliverability.as_ref(),
    };
    let api: Api<SmtpRelay> = Api::namespaced(ctx.client.clone(), &namespace);
    reconcile_relay(relay.as_ref(), &ctx, relay_ref, api, |s| s).await
}
