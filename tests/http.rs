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

#[tokio::test]
async fn metrics_are_streamed_whole_in_pieces() {
    use smtp_relay_operator::http::{Probe, router};
    use smtp_relay_operator::metrics::{Metrics, RelayLabels};
    use std::collections::BTreeMap;
    use std::time::Duration;
    use tower::ServiceExt as _;
    let metrics = Arc::new(Metrics::new());
    // 300 relays' step histograms: several megabytes of text, many pieces.
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
    let probe = Arc::new(Probe {
        metrics: Arc::clone(&metrics),
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
    let mut body = resp.into_body();
    let mut pieces = 0;
    let mut text = Vec::new();
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        if let Ok(data) = frame.expect("frame").into_data() {
            pieces += 1;
            text.extend_from_slice(&data);
        }
    }
    let text = String::from_utf8(text).expect("utf-8");
    assert!(text.len() > 1_000_000, "{} bytes", text.len());
    assert!(pieces > 10, "{pieces} pieces");
    assert_eq!(text, metrics.render());
    assert!(text.ends_with("# EOF\n"));
}
