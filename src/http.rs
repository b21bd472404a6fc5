//! The operator's HTTP endpoints: /healthz, /readyz, /metrics (every replica).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
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

/// The exposition goes out in pieces of about this size.
const CHUNK: usize = 64 * 1024;
/// Pieces written ahead of the scraper.
const AHEAD: usize = 4;
/// A scraper that takes no piece for this long is given up on: encoding holds the
/// metrics' locks, and new series (a new relay's first verification) wait for them.
const STALLED: std::time::Duration = std::time::Duration::from_secs(10);

/// The exposition is streamed: with 2,000 relays it is tens of megabytes of text,
/// which a scrape must not hold in memory at once (it doubled the operator's memory
/// for the length of each scrape).
async fn metrics(State(p): State<Arc<Probe>>) -> impl IntoResponse {
    (p.refresh)(&p.metrics);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(AHEAD);
    let metrics = Arc::clone(&p.metrics);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut out = Pieces {
            buf: String::with_capacity(CHUNK),
            tx,
            handle,
        };
        if metrics.render_into(&mut out).is_ok() {
            let _ = out.send();
        }
    });
    let pieces = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|piece| (Ok::<_, std::convert::Infallible>(piece), rx))
    });
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        Body::from_stream(pieces),
    )
}

/// Collects the exposition into pieces of [`CHUNK`] bytes and hands each to the
/// response (on a blocking thread: it waits while the scraper is [`AHEAD`] pieces
/// behind, and gives up after [`STALLED`]).
struct Pieces {
    buf: String,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    handle: tokio::runtime::Handle,
}

impl Pieces {
    fn send(&mut self) -> std::fmt::Result {
        let piece = Bytes::from(std::mem::replace(
            &mut self.buf,
            String::with_capacity(CHUNK),
        ));
        match self
            .handle
            .block_on(tokio::time::timeout(STALLED, self.tx.send(piece)))
        {
            Ok(Ok(())) => Ok(()),
            // Gone or stalled: stop encoding (the response ends short).
            _ => Err(std::fmt::Error),
        }
    }
}

impl std::fmt::Write for Pieces {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.buf.push_str(s);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(())
    }
}
