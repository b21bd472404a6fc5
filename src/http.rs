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
/// A scrape is cut off after this long: encoding holds the metrics' locks, and new
/// series (a new relay's first verification) wait for them.
const SCRAPE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
/// One scrape at a time (two Prometheus replicas scrape together): each refreshes the
/// gauges derived from the caches, then encodes them.
static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The exposition is streamed: with 2,000 relays it is tens of megabytes of text,
/// which a scrape must not hold in memory at once (it doubled the operator's memory
/// for the length of each scrape). A scrape cut short ends with a body error, never
/// as a complete-looking answer.
async fn metrics(State(p): State<Arc<Probe>>) -> impl IntoResponse {
    let turn = SCRAPE.lock().await;
    (p.refresh)(&p.metrics);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(AHEAD);
    let complete = Arc::new(AtomicBool::new(false));
    let metrics = Arc::clone(&p.metrics);
    let handle = tokio::runtime::Handle::current();
    let done = Arc::clone(&complete);
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let mut out = Pieces {
            buf: String::with_capacity(CHUNK),
            tx,
            handle,
            deadline: tokio::time::Instant::now() + SCRAPE_LIMIT,
        };
        if metrics.render_into(&mut out).is_ok() && out.send().is_ok() {
            done.store(true, Ordering::SeqCst);
        }
    });
    let pieces = futures::stream::unfold(Some(rx), move |rx| {
        let complete = Arc::clone(&complete);
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(piece) => Some((Ok(piece), Some(rx))),
                None if complete.load(Ordering::SeqCst) => None,
                None => Some((
                    Err(std::io::Error::other("metrics exposition cut short")),
                    None,
                )),
            }
        }
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
/// behind, and gives up at `deadline`).
struct Pieces {
    buf: String,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    handle: tokio::runtime::Handle,
    deadline: tokio::time::Instant,
}

impl Pieces {
    fn send(&mut self) -> std::fmt::Result {
        let piece = Bytes::from(std::mem::replace(
            &mut self.buf,
            String::with_capacity(CHUNK),
        ));
        match self
            .handle
            .block_on(tokio::time::timeout_at(self.deadline, self.tx.send(piece)))
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
