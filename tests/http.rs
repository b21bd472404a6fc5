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
