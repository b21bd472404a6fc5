//! `smtp-relay-operator run`: HTTP endpoints, leader election, the controllers, and a
//! bounded graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::controller::{self, Settings, Stores};
use crate::http::{Probe, router};
use crate::leader::{Elector, LeaseConfig};
use crate::metrics::Metrics;

/// Options of `run`, from the command line.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub settings: Settings,
    pub metrics_addr: SocketAddr,
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
    probe.ready.store(true, Ordering::SeqCst);
    tracing::info!(addr = %opts.metrics_addr, "serving /healthz /readyz /metrics");

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
                renew_every: Duration::from_secs(4),
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
        controller: controller::MANAGER.into(),
        instance: Some(opts.identity.clone()),
    };
    let controllers = controller::run(
        client,
        opts.settings.clone(),
        reporter,
        Arc::clone(&metrics),
        stores,
        stop_rx.clone(),
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
