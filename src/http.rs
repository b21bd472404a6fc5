//! The operator's HTTP endpoints: /healthz, /readyz, /metrics (every replica).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Shared by the probe and metrics handlers.
pub struct Probe {
    pub metrics: Arc<Metrics>,
    /// Set once the API server answered and the endpoints are up.
    pub ready: AtomicBool,
    /// Refreshes gauges derived from the caches before each scrape.
    pub refresh: Box<dyn Fn(&Metrics) + Send + Sync>,
}

pub fn router(probe: Arc<Probe>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probe)
}

async fn readyz(State(p): State<Arc<Probe>>) -> impl IntoResponse {
    if p.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(p): State<Arc<Probe>>) -> impl IntoResponse {
    (p.refresh)(&p.metrics);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        p.metrics.render(),
    )
}
