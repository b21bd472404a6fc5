//! The controllers: one file per kind (observe → decide → apply), shared pieces here.

pub mod cluster_smtp_relay;
mod gauges;
mod mappers;
pub mod sender_identity;
pub mod smtp_relay;
pub mod users;

pub use mappers::{RelayKind, references};
use mappers::{identities_using, referencing};

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::api::{ClusterSmtpRelay, RelayKindRef, SenderIdentity, SmtpRelay, SmtpRelayStatus};
use crate::k8s::backoff::WatchBackoff;
use crate::metrics::Metrics;
use crate::relay::{self, Transition};
use crate::smtp::HostLimiter;

/// Errors of a reconcile. They never carry secret material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("object has no {0}")]
    Missing(&'static str),
    #[error("the object changed while it was being reconciled")]
    Conflict,
    #[error("temporarily unavailable: {0}")]
    Transient(String),
}

impl From<crate::k8s::WriteError> for Error {
    fn from(e: crate::k8s::WriteError) -> Self {
        match e {
            crate::k8s::WriteError::Conflict => Error::Conflict,
            crate::k8s::WriteError::Api(e) => Error::Status(e),
        }
    }
}

/// What the SenderIdentity controller needs for confirmations.
#[derive(Clone, Debug)]
pub struct ConfirmContext {
    pub key: crate::confirm::ConfirmKey,
    /// Base URL of the confirmation endpoint; without it, mails carry only the code.
    pub base_url: Option<String>,
    /// Who confirmation mails are from.
    pub sender: crate::confirm::ConfirmationSender,
}

/// Settings of a running operator.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace for ClusterSmtpRelay references without one.
    pub operator_namespace: String,
    /// Concurrent SMTP sessions per relay host.
    pub sessions_per_host: usize,
    /// Concurrent reconciles per kind.
    pub concurrency: u16,
    /// Where relays may send the operator (checked on every resolved address).
    pub destinations: Arc<crate::smtp::DestinationPolicy>,
    /// What relays fingerprint their Secrets and ConfigMaps with, whether or not
    /// confirmations are configured (None: their resourceVersions).
    pub input_key: Option<crate::relay::InputKey>,
    /// DNS checks of sender domains and relay blocklists; None: off.
    pub deliverability: Option<crate::deliverability::Checker>,
}

/// Shared by all reconciles.
pub struct Context {
    pub client: Client,
    pub limiter: Arc<HostLimiter>,
    pub settings: Settings,
    /// Who publishes events. Each event gets its own [`Recorder`]: events are
    /// published on transitions only, so a shared one's series cache (every event
    /// kept six minutes, a few KB each, to patch repeats into a count) would only
    /// hold memory.
    pub reporter: Reporter,
    /// All ClusterSmtpRelays, to decide which default claim is honoured.
    pub cluster_relays: Store<ClusterSmtpRelay>,
    /// All SmtpRelays, for the identities that use them.
    pub relays: Store<SmtpRelay>,
    pub metrics: Arc<Metrics>,
    /// Confirmation settings; None runs relays only.
    pub confirmation: Option<ConfirmContext>,
    /// Confirmation mails per address, across identities (bounds resends).
    pub sends: sender_identity::SendLog,
    /// Versions this process wrote over, until the caches catch up.
    pub own_writes: crate::k8s::OwnWrites,
    /// Confirmation mails to one server and account at about the same time share a
    /// session.
    pub mailer: crate::smtp::SharedSessions,
    /// Secrets and ConfigMaps read for confirmation mails in the last seconds.
    pub mail_inputs: crate::k8s::source::RecentReads,
}

/// Confirmation mails at most in one shared SMTP session.
pub const MAILS_PER_SESSION: usize = 50;

/// The controllers' caches, for gauges computed at scrape time.
#[derive(Clone)]
pub struct Stores {
    pub relays: Store<SmtpRelay>,
    pub cluster_relays: Store<ClusterSmtpRelay>,
    pub identities: Store<SenderIdentity>,
}

impl Stores {
    /// Update the gauges from the caches; deleted relays lose their histograms.
    pub fn refresh(&self, metrics: &Metrics) {
        metrics.clear_last_verifications();
        metrics.clear_object_gauges();
        let mut live = gauges::observe_relays("SmtpRelay", &self.relays, metrics);
        live.extend(gauges::observe_relays(
            "ClusterSmtpRelay",
            &self.cluster_relays,
            metrics,
        ));
        metrics.retain_relays(&live);
        gauges::observe_identities(&self.identities, metrics);
    }
}

/// How long a reconcile that found a superseded copy waits for the cache: the watch
/// event of the write wakes the object sooner; this is only a backstop.
pub const SUPERSEDED_RETRY: Duration = Duration::from_secs(5);

/// Did this process already write over this copy of the object? Then the reconcile
/// waits for the cache instead of deciding from it.
pub fn superseded<K: Resource>(ctx: &Context, obj: &K) -> bool {
    let meta = obj.meta();
    let stale = ctx
        .own_writes
        .is_superseded(meta.uid.as_deref(), meta.resource_version.as_deref());
    if stale {
        tracing::debug!("the cache still has a version this operator wrote over; waiting for it");
    }
    stale
}

/// Record the verification a reconcile ran, if any.
pub fn record(ctx: &Context, relay: &relay::RelayRef<'_>, eval: &relay::Evaluation) {
    if let Some(o) = &eval.outcome {
        gauges::record_steps(&ctx.metrics, relay, o);
    }
    if let Some(status) = &eval.status {
        let reason = status
            .conditions
            .iter()
            .find(|c| c.type_ == relay::types::READY)
            .map(|c| c.reason.as_str())
            .unwrap_or("Unknown");
        ctx.metrics
            .verified(relay.kind, reason, eval.outcome.as_ref());
        if let Some(d) = status
            .last_verification
            .as_ref()
            .and_then(|l| l.delivery.as_ref())
            && let (Some(ms), Some(folder)) = (d.latency_ms, d.folder.as_deref())
        {
            let ns = relay.namespace.unwrap_or_default();
            let secs = ms as f64 / 1000.0;
            ctx.metrics
                .delivered(relay.kind, ns, relay.name, folder, secs);
        }
    }
}

/// Publish an event for a Ready transition. Failure to publish is logged, not fatal.
pub async fn publish<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, t: &Transition) {
    let event = Event {
        type_: if t.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: t.reason.clone(),
        note: Some(t.note.chars().take(1000).collect()),
        action: "Verify".into(),
        secondary: None,
    };
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

/// Observe → verify → decide → apply for either relay kind. `adjust` lets a kind
/// add its own conditions (the cluster default claim) before the write.
pub async fn reconcile_relay<K>(
    obj: &K,
    ctx: &Context,
    relay_ref: relay::RelayRef<'_>,
    api: Api<K>,
    adjust: impl FnOnce(SmtpRelayStatus) -> SmtpRelayStatus,
) -> Result<Action, Error>
where
    K: RelayKind + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let source = crate::k8s::source::KubeSource {
        client: ctx.client.clone(),
        input_key: ctx.settings.input_key.clone(),
    };
    let eval = relay::evaluate(&relay_ref, &source, &ctx.limiter, false).await;
    record(ctx, &relay_ref, &eval);
    let request = relay::pending_test(
        obj.annotations()
            .get(relay::TEST_REQUEST_ANNOTATION)
            .map(String::as_str),
        relay_ref.status,
    );
    let last_test = match request {
        Some((id, recipient)) => {
            let answer = relay::run_test(&relay_ref, &source, &ctx.limiter, id, recipient).await;
            tracing::info!(request = id, result = %answer.result, reason = %answer.reason, "test send");
            Some(answer)
        }
        None => None,
    };
    if let Some(mut status) = eval.status.clone().or_else(|| relay_ref.status.cloned()) {
        if last_test.is_some() {
            status.last_test = last_test;
        }
        let status = adjust(status);
        if Some(&status) != relay_ref.status {
            ctx.own_writes.apply_status(&api, obj, &status).await?;
            tracing::info!(ready = ?status.conditions.last().map(|c| &c.reason), "status written");
        }
    }
    if let Some(t) = &eval.transition {
        publish(ctx, obj, t).await;
    }
    Ok(Action::requeue(jittered(eval.requeue)))
}

/// Run one reconcile in a span carrying the object's kind, namespace and name, and
/// record its duration and result.
pub async fn instrumented(
    ctx: &Context,
    kind: &'static str,
    namespace: Option<&str>,
    name: &str,
    work: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    use tracing::Instrument as _;
    let span = tracing::info_span!("reconcile", kind, namespace = namespace.unwrap_or(""), name);
    let start = std::time::Instant::now();
    let result = work.instrument(span).await;
    ctx.metrics
        .reconciled(kind, result.is_ok(), start.elapsed());
    result
}

/// Requeue up to 10% later so relays created together do not verify in lockstep
/// (never earlier: an early wake-up finds nothing due and only costs a Secret read).
pub fn jittered(d: Duration) -> Duration {
    use rand::Rng as _;
    let factor: f64 = rand::rng().random_range(1.0..1.1);
    d.mul_f64(factor).max(Duration::from_secs(1))
}

/// The objects a trigger watch touches, the watch retrying with [`WatchBackoff`]. Its
/// errors are logged and go no further: kube pauses all of a controller's triggers
/// (its own objects' too) while it backs off after an error in any of them.
fn trigger_watch<K>(
    what: &'static str,
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, config)
        .backoff(WatchBackoff::default())
        .touched_objects()
        .filter_map(move |event| {
            futures::future::ready(match event {
                Ok(object) => Some(Ok(object)),
                Err(e) => {
                    tracing::warn!(error = %e, "watch of {what} failed; retrying");
                    None
                }
            })
        })
}

/// Run both relay controllers until `shutdown` resolves; in-flight reconciles finish.
pub async fn run(
    client: Client,
    settings: Settings,
    reporter: Reporter,
    metrics: Arc<Metrics>,
    stores: Arc<std::sync::OnceLock<Stores>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    confirmation: Option<ConfirmContext>,
) {
    let relays: Api<SmtpRelay> = Api::all(client.clone());
    let cluster_relays: Api<ClusterSmtpRelay> = Api::all(client.clone());
    let identities: Api<SenderIdentity> = Api::all(client.clone());
    let secrets: Api<PartialObjectMeta<Secret>> = Api::all(client.clone());
    let config_maps: Api<PartialObjectMeta<ConfigMap>> = Api::all(client.clone());

    // One reflector per kind, shared by every controller that reads or is woken by
    // that kind: a controller woken by a change reads the same cache that changed,
    // already updated (two caches of one kind could wake an identity before its
    // relay's Ready status reached the cache it reads).
    let (relay_store, relay_writer) = reflector::store_shared(SHARED_BUFFER);
    let (cluster_store, cluster_writer) = reflector::store_shared(SHARED_BUFFER);
    let (identity_store, identity_writer) = reflector::store_shared(SHARED_BUFFER);
    let (
        Some(relay_events),
        Some(relay_events_for_identities),
        Some(cluster_events),
        Some(cluster_events_for_claims),
        Some(cluster_events_for_identities),
        Some(identity_events),
    ) = (
        relay_writer.subscribe(),
        relay_writer.subscribe(),
        cluster_writer.subscribe(),
        cluster_writer.subscribe(),
        cluster_writer.subscribe(),
        identity_writer.subscribe(),
    )
    else {
        tracing::error!("shared reflectors refused a subscriber; not starting the controllers");
        return;
    };
    // Initial lists in pages of 500 (from etcd): served whole from the watch cache
    // (resourceVersion=0), 10,000 identities with status and managedFields are one
    // ~66 MB body, parsed at once before the cache slims each object.
    let cfg = watcher::Config::default().page_size(500);
    let relay_reflector = watcher(relays, cfg.clone())
        .backoff(WatchBackoff::default())
        .modify(slim)
        .reflect_shared(relay_writer)
        .take_until(wait_for(shutdown.clone()))
        .for_each(|_| futures::future::ready(()));
    let cluster_reflector = watcher(cluster_relays, cfg.clone())
        .backoff(WatchBackoff::default())
        .modify(slim)
        .reflect_shared(cluster_writer)
        .take_until(wait_for(shutdown.clone()))
        .for_each(|_| futures::future::ready(()));
    // Who uses which relay, updated before the cache applies each event.
    let users = users::RelayUsers::default();
    let indexed = users.clone();
    let identity_reflector = watcher(identities, cfg)
        .backoff(WatchBackoff::default())
        .modify(slim)
        .map_ok(move |event| {
            indexed.observe(&event);
            event
        })
        .reflect_shared(identity_writer)
        .take_until(wait_for(shutdown.clone()))
        .for_each(|_| futures::future::ready(()));

    let _ = stores.set(Stores {
        relays: relay_store.clone(),
        cluster_relays: cluster_store.clone(),
        identities: identity_store.clone(),
    });
    let ctx = Arc::new(Context {
        sends: Default::default(),
        own_writes: Default::default(),
        mailer: crate::smtp::SharedSessions::new(MAILS_PER_SESSION),
        mail_inputs: Default::default(),
        metrics,
        confirmation: confirmation.clone(),
        relays: relay_store.clone(),
        client: client.clone(),
        limiter: Arc::new(HostLimiter::new(settings.sessions_per_host)),
        reporter,
        cluster_relays: cluster_store.clone(),
        settings: settings.clone(),
    });
    let controller_config =
        kube::runtime::controller::Config::default().concurrency(settings.concurrency);
    // A controller is not woken by its own status write coming back: the write was
    // the decision, and its reconcile already scheduled the next one.
    let relay_controller = Controller::for_shared_stream(
        without_echoes(relay_events, Arc::clone(&ctx)),
        relay_store.clone(),
    );
    let cluster_controller = Controller::for_shared_stream(
        without_echoes(cluster_events, Arc::clone(&ctx)),
        cluster_store.clone(),
    );

    // Secrets and ConfigMaps are watched as metadata only and never stored: an event
    // maps to the relays that reference the object, then is dropped. Memory does not
    // grow with unrelated Secrets.
    let meta_config = watcher::Config::default().any_semantic();
    let secret_events = || trigger_watch("Secrets", secrets.clone(), meta_config.clone());
    let cm_events = || trigger_watch("ConfigMaps", config_maps.clone(), meta_config.clone());
    let default_ns = settings.operator_namespace.clone();
    use crate::api::CaBundleKind::{ConfigMap as CmKind, Secret as SecretKind};

    let identity_ctx = Arc::clone(&ctx);
    let identity_shutdown = shutdown.clone();
    let relay_run = relay_controller
        .with_config(controller_config.clone())
        .watches_stream(
            secret_events(),
            referencing(relay_store.clone(), SecretKind, default_ns.clone()),
        )
        .watches_stream(
            cm_events(),
            referencing(relay_store, CmKind, default_ns.clone()),
        )
        .graceful_shutdown_on(wait_for(shutdown.clone()))
        .run(smtp_relay::reconcile, error_policy, Arc::clone(&ctx))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "SmtpRelay reconcile");
            }
        });

    // A change of any ClusterSmtpRelay's default claim re-decides every claimer.
    let claimers = cluster_store.clone();
    let cluster_run = cluster_controller
        .with_config(controller_config.clone())
        .watches_stream(
            secret_events(),
            referencing(cluster_store.clone(), SecretKind, default_ns.clone()),
        )
        .watches_stream(
            cm_events(),
            referencing(cluster_store.clone(), CmKind, default_ns),
        )
        .watches_shared_stream(
            cluster_events_for_claims,
            move |changed: Arc<ClusterSmtpRelay>| {
                // The changed relay has its own reconcile; re-queueing it here would
                // only run it twice.
                let changed = changed.name_any();
                claimers
                    .state()
                    .into_iter()
                    .filter(|r| r.spec.default && r.name_any() != changed)
                    .map(|r| ObjectRef::from_obj(&*r))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(wait_for(shutdown))
        .run(
            cluster_smtp_relay::reconcile,
            error_policy,
            Arc::clone(&ctx),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "ClusterSmtpRelay reconcile");
            }
        });

    // SenderIdentities: reconciled on their own changes and on any change of the relay
    // they use (its status turns Ready, its credentials rotate).
    let identity_controller = Controller::for_shared_stream(
        without_echoes(identity_events, Arc::clone(&ctx)),
        identity_store.clone(),
    );
    let identity_run = async {
        if confirmation.is_none() {
            return;
        }
        identity_controller
            .with_config(controller_config.clone())
            .watches_shared_stream(
                relay_events_for_identities,
                identities_using(users.clone(), RelayKindRef::SmtpRelay),
            )
            .watches_shared_stream(
                cluster_events_for_identities,
                identities_using(users, RelayKindRef::ClusterSmtpRelay),
            )
            .graceful_shutdown_on(wait_for(identity_shutdown))
            .run(
                sender_identity::reconcile,
                error_policy,
                Arc::clone(&identity_ctx),
            )
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "SenderIdentity reconcile");
                }
            })
            .await;
    };

    futures::join!(
        relay_reflector,
        cluster_reflector,
        identity_reflector,
        relay_run,
        cluster_run,
        identity_run
    );
}

/// A shared reflector's events minus the copies this process's own status writes
/// produced ([`crate::k8s::OwnWrites::is_echo`]).
fn without_echoes<K: Resource + Send + Sync + 'static>(
    events: impl futures::Stream<Item = Arc<K>> + Send + 'static,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = Arc<K>> + Send + 'static {
    events.filter(move |obj| {
        let meta = obj.meta();
        futures::future::ready(
            !ctx.own_writes
                .is_echo(meta.uid.as_deref(), meta.resource_version.as_deref()),
        )
    })
}

/// Events a shared reflector keeps for its slowest subscriber before it waits.
const SHARED_BUFFER: usize = 1024;

/// What the caches keep of an object: not metadata.managedFields (more than half of
/// an object as the API server serves it) nor kubectl's last-applied copy of the
/// spec; the operator reads neither.
pub fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Resolves when the shutdown flag is raised (or its sender is gone).
pub async fn wait_for(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Requeue policy after a reconcile error (API trouble, not relay trouble), for
/// every kind.
pub fn error_policy<K>(_obj: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    error_action(error)
}

/// Requeue policy after a reconcile error (API trouble, not relay trouble).
pub fn error_action(error: &Error) -> Action {
    if let Error::Conflict = error {
        tracing::debug!("object changed during reconcile; retrying at once");
        return Action::requeue(Duration::from_millis(500));
    }
    tracing::warn!(%error, "reconcile failed; retrying in 15s");
    Action::requeue(Duration::from_secs(15))
}
