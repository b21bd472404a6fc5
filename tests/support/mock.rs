//! Helpers for tests that answer the operator's API requests one by one through
//! kube's `tower-test` mock (faults on demand).

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

/// The JSON body of a request the operator sent.
pub async fn body_json(req: Request<Body>) -> Value {
    let bytes = req.into_body().collect_bytes().await.expect("body");
    serde_json::from_slice(&bytes).expect("json body")
}

/// Answer one request.
pub fn respond(
    send: tower_test::mock::SendResponse<Response<Body>>,
    code: StatusCode,
    body: Value,
) {
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).expect("json")))
            .expect("response"),
    );
}

/// The API server's 404 Status.
pub fn not_found(what: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{what} not found"), "reason": "NotFound", "code": 404})
}

/// The test's end of the mocked API server.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The operator sends nothing more (within 200 ms).
pub async fn no_more_requests(handle: &mut Handle) {
    let next = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
    assert!(
        next.is_err() || next.is_ok_and(|r| r.is_none()),
        "unexpected API request"
    );
}
