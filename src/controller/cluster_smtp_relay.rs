//! ClusterSmtpRelay: like SmtpRelay, plus the cluster default-relay claim.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{Context, Error, instrumented, reconcile_relay};
use crate::api::{ClusterSmtpRelay, ConditionStatus, SmtpRelayStatus};
use crate::relay::{Desired, RelayRef, merge_conditions, reasons, types};

/// Order of default claims: the oldest claimer first, then the smallest name.
fn claim_key(r: &ClusterSmtpRelay) -> (Option<jiff::Timestamp>, String) {
    (
        r.metadata.creation_timestamp.as_ref().map(|t| t.0),
        r.name_any(),
    )
}

/// The ClusterSmtpRelay whose default claim is honoured, if any claims it.
pub fn honoured_default(all: &[Arc<ClusterSmtpRelay>]) -> Option<Arc<ClusterSmtpRelay>> {
    all.iter()
        .filter(|r| r.spec.default && r.metadata.deletion_timestamp.is_none())
        .min_by_key(|r| claim_key(r))
        .cloned()
}

/// The DefaultRelay condition for `me`, or None when it makes no claim.
pub fn default_claim(me: &ClusterSmtpRelay, all: &[Arc<ClusterSmtpRelay>]) -> Option<Desired> {
    if !me.spec.default {
        return None;
    }
    let honoured = honoured_default(all);
    let winner = match &honoured {
        Some(w) if claim_key(w) < claim_key(me) => w.as_ref(),
        _ => me,
    };
    let others: Vec<String> = all
        .iter()
        .filter(|r| r.spec.default && r.name_any() != me.name_any())
        .map(|r| r.name_any())
        .collect();
    Some(if winner.name_any() == me.name_any() {
        Desired {
            type_: types::DEFAULT_RELAY,
            status: ConditionStatus::True,
            reason: reasons::HONOURED.into(),
            message: if others.is_empty() {
                "this relay is the cluster's default".into()
            } else {
                format!(
                    "this relay is the cluster's default; ignored claims: {}",
                    others.join(", ")
                )
            },
        }
    } else {
        Desired {
            type_: types::DEFAULT_RELAY,
            status: ConditionStatus::False,
            reason: reasons::DEFAULT_CONFLICT.into(),
            message: format!(
                "{} also claims to be the default and is older; only one default is honoured",
                winner.name_any()
            ),
        }
    })
}

/// Put the DefaultRelay condition (or its absence) into a status.
pub fn with_default_claim(
    mut status: SmtpRelayStatus,
    claim: Option<Desired>,
    generation: Option<i64>,
) -> SmtpRelayStatus {
    let previous = std::mem::take(&mut status.conditions);
    let (default, mut rest): (Vec<_>, Vec<_>) = previous
        .into_iter()
        .partition(|c| c.type_ == types::DEFAULT_RELAY);
    if let Some(claim) = claim {
        let now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .to_string();
        let merged = merge_conditions(&default, vec![claim], generation, &now);
        // Keep Ready last, as kubectl readers expect the summary at the end.
        let at = rest
            .iter()
            .position(|c| c.type_ == types::READY)
            .unwrap_or(rest.len());
        rest.splice(at..at, merged);
    }
    status.conditions = rest;
    status
}

pub async fn reconcile(relay: Arc<ClusterSmtpRelay>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = relay.name_any();
    if super::superseded(&ctx, relay.as_ref()) {
        return Ok(Action::requeue(super::SUPERSEDED_RETRY));
    }
    let work = reconcile_in_span(Arc::clone(&relay), Arc::clone(&ctx), name.clone());
    instrumented(&ctx, "ClusterSmtpRelay", None, &name, work).await
}

async fn reconcile_in_span(
    relay: Arc<ClusterSmtpRelay>,
    ctx: Arc<Context>,
    name: String,
) -> Result<Action, Error> {
    let relay_ref = RelayRef {
        kind: "ClusterSmtpRelay",
        namespace: None,
        name: &name,
        generation: relay.metadata.generation,
        spec: &relay.spec.relay,
        status: relay.status.as_ref(),
        default_namespace: &ctx.settings.operator_namespace,
        destinations: &ctx.settings.destinations,
        blocklists: ctx.settings.deliverability.as_ref(),
    };
    let claim = default_claim(&relay, &ctx.cluster_relays.state());
    let generation = relay.metadata.generation;
    let api: Api<ClusterSmtpRelay> = Api::all(ctx.client.clone());
    reconcile_relay(relay.as_ref(), &ctx, relay_ref, api, |s| {
        with_default_claim(s, claim, generation)
    })
    .await
}
