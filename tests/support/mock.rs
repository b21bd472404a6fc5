//! Helpers for tests that answer the operator's API requests one by one through
//! kube's `tower-test` mock (faults on demand).

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
