//! The operator's HTTP endpoints: health, readiness and metrics.

use std::sync::Arc;

use http::StatusCode;

#[tokio::test]
async fn health_readiness_and_metrics_endpoints() {
    use smtp_relay_operator::http::{Probe, router};
    use std::sync::atomic::Ordering;
    use tower::ServiceExt as _;
    let metrics = Arc::new(smtp_relay_operator::metrics::Metrics::new());
    let probe = Arc::new(Probe {
        metrics: Arc::clone(&metrics),
        ready: false.into(),
        refresh: Box::new(|m| m.set_relay_counts("SmtpRelay", 2, 1)),
    });
    let get = |path: &'static str| {
        let app = router(Arc::clone(&probe));
        async move {
            let resp = app
                .oneshot(
                    axum::http::Request::get(path)
                        .body(axum::body::Body::empty())
                        .expect("req"),
                )
                .await
                .expect("response");
            let status = resp.status();
            let bytes = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .expect("body")
                .to_bytes();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    assert_eq!(get("/healthz").await.0, StatusCode::OK);
    assert_eq!(get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    probe.ready.store(true, Ordering::SeqCst);
    assert_eq!(get("/readyz").await.0, StatusCode::OK);
    let (status, text) = get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains("smtp_relay_relays{kind=\"SmtpRelay\",ready=\"false\"} 1"),
        "{text}"
    );
}

/// Metrics with 300 relays' step histograms: several megabytes of text, many pieces.
fn big_metrics() -> Arc<smtp_relay_operator::metrics::Metrics> {
    use smtp_relay_operator::metrics::{Metrics, RelayLabels};
    use std::collections::BTreeMap;
    use std::time::Duration;
    let metrics = Arc::new(Metrics::new());
    let steps: BTreeMap<String, Duration> = ["connect", "tls", "ehlo", "auth"]
        .into_iter()
        .map(|s| (s.to_string(), Duration::from_millis(3)))
        .collect();
    for i in 0..300 {
        let relay = RelayLabels {
            kind: "SmtpRelay".into(),
            namespace: "team".into(),
            name: format!("relay-{i}"),
        };
        metrics.verified_relay(&relay, &steps, Duration::from_millis(12));
    }
    metrics
}

/// GET /metrics through the router; the response's body, unread.
async fn scrape(metrics: &Arc<smtp_relay_operator::metrics::Metrics>) -> axum::body::Body {
    use smtp_relay_operator::http::{Probe, router};
    use tower::ServiceExt as _;
    let probe = Arc::new(Probe {
        metrics: Arc::clone(metrics),
        ready: true.into(),
        refresh: Box::new(|_| {}),
    });
    let resp = router(probe)
        .oneshot(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .expect("req"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body()
}

/// The rest of a body: its text, how many data frames, and whether it ended in an error.
async fn drain(body: &mut axum::body::Body) -> (Vec<u8>, usize, bool) {
    let (mut text, mut pieces) = (Vec::new(), 0);
    while let Some(frame) = http_body_util::BodyExt::frame(body).await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    pieces += 1;
                    text.extend_from_slice(&data);
                }
            }
            Err(_) => return (text, pieces, true),
        }
    }
    (text, pieces, false)
}

#[tokio::test]
async fn metrics_are_streamed_whole_in_pieces() {
    let metrics = big_metrics();
    let mut body = scrape(&metrics).await;
    let (text, pieces, failed) = drain(&mut body).await;
    assert!(!failed);
    let text = String::from_utf8(text).expect("utf-8");
    assert!(text.len() > 1_000_000, "{} bytes", text.len());
    assert!(pieces > 10, "{pieces} pieces");
    assert_eq!(text, metrics.render());
    assert!(text.ends_with("# EOF\n"));
}

/// A scraper that stops reading holds the metrics' locks for at most the scrape limit
/// (10 s): then the encoding stops, the response ends with a body error (never as a
/// shorter complete-looking answer), new series can be recorded, and the next scrape
/// is whole.
#[tokio::test]
async fn a_stalled_scrape_is_cut_off_with_an_error_and_frees_the_next() {
    use smtp_relay_operator::metrics::RelayLabels;
    use std::time::Duration;
    let metrics = big_metrics();
    let whole = metrics.render();
    let mut stalled = scrape(&metrics).await;
    let first = http_body_util::BodyExt::frame(&mut stalled)
        .await
        .expect("a first piece")
        .expect("data");
    assert!(first.is_data());
    tokio::time::sleep(Duration::from_secs(11)).await;
    // A relay's first verification adds series: it is not held behind the scraper.
    let recorder = Arc::clone(&metrics);
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || {
            let relay = RelayLabels {
                kind: "SmtpRelay".into(),
                namespace: "team".into(),
                name: "relay-new".into(),
            };
            let steps = [("connect".to_string(), Duration::from_millis(1))].into();
            recorder.verified_relay(&relay, &steps, Duration::from_millis(2));
        }),
    )
    .await
    .expect("recorded while the stalled scrape is cut off")
    .expect("join");
    let (rest, _, failed) = drain(&mut stalled).await;
    assert!(failed, "a cut-off scrape ends with an error");
    assert!(
        first.into_data().map_or(0, |d| d.len()) + rest.len() < whole.len(),
        "cut short"
    );
    let mut next = scrape(&metrics).await;
    let (text, _, failed) = drain(&mut next).await;
    assert!(!failed);
    let text = String::from_utf8(text).expect("utf-8");
    assert!(text.contains("relay-new") && text.ends_with("# EOF\n"));
    assert_eq!(text, metrics.render());
}
