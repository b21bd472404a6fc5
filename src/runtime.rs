//! `smtp-relay-operator run`: HTTP endpoints, leader election, the controllers, and a
//! bounded graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use crate::controller::Settings;
use crate::controller::{self, Stores};
use crate::http::{Probe, router};
use crate::leader::{Elector, LeaseConfig};
use crate::metrics::Metrics;

/// Options of `run`, from the command line.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub settings: Settings,
    pub metrics_addr: SocketAddr,
    /// Where the confirmation endpoint listens.
    pub confirmation_addr: SocketAddr,
    /// Public base URL of the confirmation endpoint (links in mails); None: code only.
    pub confirmation_base_url: Option<String>,
    /// Who confirmation mails are from.
    pub confirmation_sender: crate::confirm::ConfirmationSender,
    /// Secret (in the operator namespace) holding the confirmation key.
    pub confirmation_key_secret: String,
    /// Proxies whose X-Forwarded-For is trusted by the endpoint's rate limit.
    pub trusted_proxies: Vec<crate::confirm::server::Cidr>,
    pub leader_election: bool,
    pub lease_name: String,
    pub identity: String,
    pub shutdown_timeout: Duration,
}

/// Why `run` stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot reach the cluster: {0}")]
    Cluster(#[source] kube::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the leader lease; exiting so that only one replica acts")]
    LostLeadership,
    #[error("cannot read or create the confirmation key Secret {0}: {1}")]
    Key(String, #[source] kube::Error),
}

/// Read the confirmation key from its Secret, creating it on first start. Every
/// replica shares it, so any of them can check a link.
pub async fn confirmation_key(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<crate::confirm::ConfirmKey, RunError> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    const KEY: &str = "key";
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let what = || format!("{namespace}/{name}");
    for _ in 0..3 {
        if let Some(s) = api
            .get_opt(name)
            .await
            .map_err(|e| RunError::Key(what(), e))?
            && let Some(bytes) = s.data.as_ref().and_then(|d| d.get(KEY))
            && bytes.0.len() >= 32
        {
            return Ok(crate::confirm::ConfirmKey::new(&bytes.0));
        }
        let (key, bytes) = crate::confirm::ConfirmKey::generate();
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            data: Some([(KEY.to_string(), k8s_openapi::ByteString(bytes))].into()),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %what(), "created the confirmation key");
                return Ok(key);
            }
            // Another replica created it first: read theirs.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(RunError::Key(what(), e)),
        }
    }
    Err(RunError::Key(
        what(),
        kube::Error::Service("the key Secret exists but holds no usable key".into()),
    ))
}

pub async fn run(client: kube::Client, opts: RunOptions) -> Result<(), RunError> {
    client
        .apiserver_version()
        .await
        .map_err(RunError::Cluster)?;

    let metrics = Arc::new(Metrics::new());
    let stores: Arc<OnceLock<Stores>> = Arc::new(OnceLock::new());
    let probe = Arc::new(Probe {
        metrics: Arc::clone(&metrics),
        ready: false.into(),
        refresh: {
            let stores = Arc::clone(&stores);
            Box::new(move |m: &Metrics| {
                if let Some(s) = stores.get() {
                    s.refresh(m);
                }
            })
        },
    });
    let listener = tokio::net::TcpListener::bind(opts.metrics_addr)
        .await
        .map_err(|source| RunError::Listen {
            addr: opts.metrics_addr,
            source,
        })?;
    let app = router(Arc::clone(&probe));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    let key = confirmation_key(
        &client,
        &opts.settings.operator_namespace,
        &opts.confirmation_key_secret,
    )
    .await?;
    let confirm_listener = tokio::net::TcpListener::bind(opts.confirmation_addr)
        .await
        .map_err(|source| RunError::Listen {
            addr: opts.confirmation_addr,
            source,
        })?;
    let confirm_state = Arc::new(crate::confirm::server::ConfirmState::new(
        client.clone(),
        key.clone(),
        Arc::clone(&metrics),
        opts.trusted_proxies.clone(),
        opts.confirmation_base_url.clone(),
        crate::confirm::server::Limits::default(),
    ));
    tokio::spawn(crate::confirm::server::serve(
        confirm_listener,
        confirm_state,
    ));
    probe.ready.store(true, Ordering::SeqCst);
    tracing::info!(metrics = %opts.metrics_addr, confirmation = %opts.confirmation_addr, "serving /healthz /readyz /metrics and /confirm");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        controller::shutdown_signal().await;
        tracing::info!("shutdown requested: finishing in-flight sessions");
        let _ = stop_tx.send(true);
    });

    let elector = opts.leader_election.then(|| {
        Elector::new(
            client.clone(),
            LeaseConfig {
                namespace: opts.settings.operator_namespace.clone(),
                name: opts.lease_name.clone(),
                identity: opts.identity.clone(),
                duration: Duration::from_secs(15),
                renew_deadline: Duration::from_secs(10),
                renew_every: Duration::from_secs(2),
            },
        )
    });
    if let Some(e) = &elector {
        tracing::info!(lease = %opts.lease_name, identity = %opts.identity, "waiting for the leader lease");
        tokio::select! {
            _ = e.acquire() => {},
            _ = controller::wait_for(stop_rx.clone()) => return Ok(()),
        }
        tracing::info!("leader lease acquired");
    }
    metrics.leader.set(1);

    let reporter = kube::runtime::events::Reporter {
        controller: crate::k8s::MANAGER.into(),
        instance: Some(opts.identity.clone()),
    };
    let controllers = controller::run(
        client,
        Settings {
            input_key: Some(crate::relay::InputKey::from_confirm_key(&key)),
            ..opts.settings.clone()
        },
        reporter,
        Arc::clone(&metrics),
        stores,
        stop_rx.clone(),
        Some(controller::ConfirmContext {
            key,
            base_url: opts.confirmation_base_url.clone(),
            sender: opts.confirmation_sender.clone(),
        }),
    );
    let lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    let deadline = async {
        controller::wait_for(stop_rx.clone()).await;
        tokio::time::sleep(opts.shutdown_timeout).await;
    };
    let result = tokio::select! {
        _ = controllers => Ok(()),
        _ = lost => Err(RunError::LostLeadership),
        _ = deadline => {
            tracing::warn!(timeout = ?opts.shutdown_timeout, "in-flight sessions did not finish in time");
            Ok(())
        }
    };
    metrics.leader.set(0);
    if let Some(e) = &elector
        && result.is_ok()
    {
        e.release().await;
    }
    result
}
