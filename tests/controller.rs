//! Reconcile against kube's tower-test mock API server: what the controller sends
//! over the wire, and what it does not send.

mod support;

use support::mock::{Handle, body_json, no_more_requests, not_found, respond};

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::{Client, Resource};
use serde_json::{Value, json};
use smtp_relay_operator::api::{ClusterSmtpRelay, SmtpRelay};
use smtp_relay_operator::controller::cluster_smtp_relay::default_claim;
use smtp_relay_operator::controller::{Context, smtp_relay};

fn context() -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let relays = kube::runtime::reflector::store::<SmtpRelay>().0;
    (support::context(client, relays, None), handle)
}

fn relay(spec: Value, status: Option<Value>) -> SmtpRelay {
    let mut obj = json!({
        "apiVersion": "smtprelay.io/v1alpha1",
        "kind": "SmtpRelay",
        "metadata": {"name": "corporate", "namespace": "team", "generation": 1, "uid": "u-1", "resourceVersion": "10"},
        "spec": spec,
    });
    if let Some(s) = status {
        obj["status"] = s;
    }
    serde_json::from_value(obj).expect("relay")
}

fn condition<'a>(status: &'a Value, t: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or_else(|| panic!("no {t} condition in {status}"))
}

/// Serve the event POST the recorder makes after a transition; returns the event.
async fn expect_event(handle: &mut Handle) -> Value {
    let (req, send) = handle.next_request().await.expect("event request");
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(
        req.uri().path(),
        "/apis/events.k8s.io/v1/namespaces/team/events"
    );
    let event = body_json(req).await;
    respond(send, StatusCode::CREATED, event.clone());
    event
}

#[tokio::test]
async fn status_is_written_with_server_side_apply_and_an_event_on_transition() {
    let (ctx, mut handle) = context();
    let closed = support::closed_port();
    let port = closed.port;
    let obj = Arc::new(relay(
        json!({"host": "127.0.0.1", "port": port, "tls": {"mode": "None"},
               "defaultSender": {"address": "a@example.test"}}),
        None,
    ));
    let task = tokio::spawn(smtp_relay::reconcile(Arc::clone(&obj), Arc::clone(&ctx)));

    let (req, send) = handle.next_request().await.expect("status patch");
    assert_eq!(req.method(), http::Method::PATCH);
    assert_eq!(
        req.uri().path(),
        "/apis/smtprelay.io/v1alpha1/namespaces/team/smtprelays/corporate/status"
    );
    let query = req.uri().query().unwrap_or("");
    assert!(
        query.contains("fieldManager=smtp-relay-operator"),
        "{query}"
    );
    assert!(query.contains("force=true"), "{query}");
    assert!(query.contains("fieldValidation=Ignore"), "{query}");
    assert_eq!(
        req.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/apply-patch+yaml")
    );
    let patch = body_json(req).await;
    assert_eq!(patch["apiVersion"], "smtprelay.io/v1alpha1");
    assert_eq!(patch["kind"], "SmtpRelay");
    assert!(patch.get("spec").is_none(), "only status is applied");
    assert_eq!(
        patch["metadata"]["resourceVersion"], "10",
        "written only if the object is still the one the decision was made from"
    );
    let status = &patch["status"];
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["port"], port);
    let ready = condition(status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ConnectionRefused");
    assert_eq!(ready["observedGeneration"], 1);
    assert_eq!(
        condition(status, "Connected")["reason"],
        "ConnectionRefused"
    );
    assert_eq!(status["lastVerification"]["failedStep"], "connect");
    let mut echoed = serde_json::to_value(obj.as_ref()).expect("obj");
    echoed["status"] = status.clone();
    respond(send, StatusCode::OK, echoed);

    let event = expect_event(&mut handle).await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "VerificationFailed");
    assert!(
        event["note"]
            .as_str()
            .unwrap_or("")
            .starts_with("ConnectionRefused")
    );

    let action = task.await.expect("join").expect("reconcile");
    let _ = action;
    no_more_requests(&mut handle).await;
}

#[tokio::test]
async fn a_reconcile_with_nothing_due_writes_nothing() {
    let (ctx, mut handle) = context();
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .expect("ts")
        .to_string();
    let status = json!({
        "observedGeneration": 1,
        "port": 25,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Verified", "message": "ok",
                         "lastTransitionTime": now, "observedGeneration": 1}],
        "lastVerification": {"time": now, "result": "Succeeded", "inputs": "g1", "durationMs": {}},
    });
    let obj = Arc::new(relay(
        json!({"host": "127.0.0.1", "tls": {"mode": "None"},
               "defaultSender": {"address": "a@example.test"}}),
        Some(status),
    ));
    smtp_relay::reconcile(obj, Arc::clone(&ctx))
        .await
        .expect("reconcile");
    no_more_requests(&mut handle).await;
}

/// Reconcile a relay whose credentials Secret `secret` gets `answer`; returns the
/// status the controller applied (after serving its patch and its event).
async fn status_after_secret_answer(
    secret: &str,
    spec: Value,
    answer: (StatusCode, Value),
) -> Value {
    let (ctx, mut handle) = context();
    let obj = Arc::new(relay(spec, None));
    let task = tokio::spawn(smtp_relay::reconcile(Arc::clone(&obj), Arc::clone(&ctx)));
    let (req, send) = handle.next_request().await.expect("secret get");
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(
        req.uri().path(),
        format!("/api/v1/namespaces/team/secrets/{secret}")
    );
    respond(send, answer.0, answer.1);
    let (req, send) = handle.next_request().await.expect("status patch");
    let patch = body_json(req).await;
    respond(
        send,
        StatusCode::OK,
        serde_json::to_value(obj.as_ref()).expect("obj"),
    );
    expect_event(&mut handle).await;
    task.await.expect("join").expect("reconcile");
    patch["status"].clone()
}

#[tokio::test]
async fn a_missing_secret_is_reported_without_connecting() {
    let status = status_after_secret_answer(
        "creds",
        json!({"host": "127.0.0.1", "port": support::closed_port().port,
               "auth": {"credentialsSecretRef": {"name": "creds"}},
               "defaultSender": {"address": "a@example.test"}}),
        (StatusCode::NOT_FOUND, not_found("secrets \"creds\"")),
    )
    .await;
    assert_eq!(
        condition(&status, "CredentialsResolved")["reason"],
        "SecretNotFound"
    );
    assert_eq!(condition(&status, "Ready")["reason"], "SecretNotFound");
    assert_eq!(condition(&status, "Connected")["status"], "Unknown");
    assert!(
        condition(&status, "Ready")["message"]
            .as_str()
            .unwrap_or("")
            .contains("Secret team/creds does not exist")
    );
}

#[tokio::test]
async fn the_password_never_reaches_status_or_events() {
    let h = support::harness();
    let ca = String::from_utf8(h.ca_pem()).expect("pem");
    let wrong = "Wr0ng-But-Secret-Pa55";
    let (ctx, mut handle) = context();
    let obj = Arc::new(relay(
        json!({"host": "localhost", "port": h.submission_port,
               "tls": {"mode": "StartTls", "caBundleRef": {"kind": "ConfigMap", "name": "ca"}},
               "auth": {"credentialsSecretRef": {"name": "creds"}},
               "defaultSender": {"address": "a@example.test"}}),
        None,
    ));
    support::logs();
    let task = tokio::spawn(smtp_relay::reconcile(Arc::clone(&obj), Arc::clone(&ctx)));
    let (req, send) = handle.next_request().await.expect("secret get");
    assert_eq!(req.uri().path(), "/api/v1/namespaces/team/secrets/creds");
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    respond(
        send,
        StatusCode::OK,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "creds", "namespace": "team", "resourceVersion": "77", "labels": {"smtprelay.io/credentials": "true"}},
               "data": {"username": b64(support::USER), "password": b64(wrong)}}),
    );
    let (req, send) = handle.next_request().await.expect("configmap get");
    assert_eq!(req.uri().path(), "/api/v1/namespaces/team/configmaps/ca");
    respond(
        send,
        StatusCode::OK,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "ca", "namespace": "team", "resourceVersion": "5"},
               "data": {"ca.crt": ca}}),
    );
    let (req, send) = handle.next_request().await.expect("status patch");
    let raw = String::from_utf8(req.into_body().collect_bytes().await.expect("b").to_vec())
        .expect("utf8");
    assert!(
        !raw.contains(wrong) && !raw.contains(&b64(wrong)),
        "password in status: {raw}"
    );
    let patch: Value = serde_json::from_str(&raw).expect("json");
    assert_eq!(
        condition(&patch["status"], "Ready")["reason"],
        "AuthRejected"
    );
    assert_eq!(
        condition(&patch["status"], "SecureTransport")["reason"],
        "TlsEstablished"
    );
    assert_eq!(patch["status"]["lastVerification"]["inputs"], "g1/s77/c5");
    respond(
        send,
        StatusCode::OK,
        serde_json::to_value(obj.as_ref()).expect("obj"),
    );
    let event = expect_event(&mut handle).await;
    assert!(!event.to_string().contains(wrong));
    assert!(event["note"].as_str().unwrap_or("").contains("535"));
    task.await.expect("join").expect("reconcile");
    let logs = support::logs_text();
    assert!(logs.contains("status written"), "the capture works: {logs}");
    assert!(
        !logs.contains(wrong) && !logs.contains(&b64(wrong)),
        "password in logs: {logs}"
    );
}

fn cluster_relay(name: &str, created: &str, default: bool) -> Arc<ClusterSmtpRelay> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "smtprelay.io/v1alpha1",
            "kind": "ClusterSmtpRelay",
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"host": "smtp.example.com", "defaultSender": {"address": "a@example.com"}, "default": default},
        }))
        .expect("cluster relay"),
    )
}

#[test]
fn only_the_oldest_default_claim_is_honoured() {
    let a = cluster_relay("a-newer", "2026-02-01T00:00:00Z", true);
    let b = cluster_relay("b-older", "2026-01-01T00:00:00Z", true);
    let c = cluster_relay("c-not-default", "2025-01-01T00:00:00Z", false);
    let all = vec![Arc::clone(&a), Arc::clone(&b), Arc::clone(&c)];
    let claim_a = default_claim(&a, &all).expect("claims");
    assert_eq!(
        (claim_a.reason.as_str(), claim_a.message.contains("b-older")),
        ("DefaultConflict", true)
    );
    let claim_b = default_claim(&b, &all).expect("claims");
    assert_eq!(claim_b.reason, "Honoured");
    assert!(claim_b.message.contains("a-newer"));
    assert!(default_claim(&c, &all).is_none());
    // Same timestamp: the name breaks the tie, deterministically.
    let x = cluster_relay("x", "2026-01-01T00:00:00Z", true);
    let y = cluster_relay("y", "2026-01-01T00:00:00Z", true);
    let both = vec![Arc::clone(&x), Arc::clone(&y)];
    assert_eq!(default_claim(&x, &both).expect("x").reason, "Honoured");
    assert_eq!(
        default_claim(&y, &both).expect("y").reason,
        "DefaultConflict"
    );
    let _ = SmtpRelay::kind(&());
}

#[tokio::test]
async fn an_api_server_hiccup_reading_the_secret_changes_nothing() {
    let (ctx, mut handle) = context();
    let obj = Arc::new(relay(
        json!({"host": "127.0.0.1", "port": support::closed_port().port,
               "auth": {"credentialsSecretRef": {"name": "creds"}},
               "defaultSender": {"address": "a@example.test"}}),
        None,
    ));
    let task = tokio::spawn(smtp_relay::reconcile(Arc::clone(&obj), Arc::clone(&ctx)));
    let (req, send) = handle.next_request().await.expect("secret get");
    assert_eq!(req.uri().path(), "/api/v1/namespaces/team/secrets/creds");
    respond(
        send,
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500}),
    );
    task.await.expect("join").expect("reconcile");
    no_more_requests(&mut handle).await;
}

#[tokio::test]
async fn a_secret_not_marked_for_relays_is_never_used() {
    let status = status_after_secret_answer(
        "app-db",
        json!({"host": "127.0.0.1", "port": support::closed_port().port, "tls": {"mode": "None"},
               "auth": {"credentialsSecretRef": {"name": "app-db", "passwordKey": "dbpass"}},
               "defaultSender": {"address": "a@example.test"}}),
        (
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "app-db", "namespace": "team", "resourceVersion": "3"},
                   "data": {"username": "YQ==", "dbpass": "c2VjcmV0"}}),
        ),
    )
    .await;
    assert_eq!(
        condition(&status, "CredentialsResolved")["reason"],
        "SecretNotLabelled"
    );
    assert_eq!(
        condition(&status, "Connected")["status"],
        "Unknown",
        "nothing was sent anywhere"
    );
    assert!(
        condition(&status, "Ready")["message"]
            .as_str()
            .unwrap_or("")
            .contains("smtprelay.io/credentials=true")
    );
}

#[tokio::test]
async fn only_a_change_of_the_secrets_data_triggers_a_new_verification() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let h = support::harness();
    let fake = support::fake_api::FakeApi::default();
    let secret = |password: &str, annotation: &str| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "creds", "namespace": "team",
                            "labels": {"smtprelay.io/credentials": "true"},
                            "annotations": {"secrets-manager/synced": annotation}},
               "data": {"username": b64(support::USER), "password": b64(password)}})
    };
    fake.put(
        "/api/v1/namespaces/team/secrets/creds",
        secret(support::PASSWORD, "1"),
    );
    fake.put(
        "/api/v1/namespaces/team/configmaps/ca",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ca", "namespace": "team"},
               "data": {"ca.crt": String::from_utf8(h.ca_pem()).expect("pem")}}),
    );
    let path = "/apis/smtprelay.io/v1alpha1/namespaces/team/smtprelays/corporate";
    fake.put(
        path,
        json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
               "metadata": {"name": "corporate", "namespace": "team"},
               "spec": {"host": "localhost", "port": h.submission_port,
                        "tls": {"mode": "StartTls", "caBundleRef": {"kind": "ConfigMap", "name": "ca"}},
                        "auth": {"credentialsSecretRef": {"name": "creds"}},
                        "defaultSender": {"address": "a@example.test"}}}),
    );
    let ctx = support::context(
        fake.client(),
        kube::runtime::reflector::store::<SmtpRelay>().0,
        Some(smtp_relay_operator::controller::ConfirmContext {
            key: smtp_relay_operator::confirm::ConfirmKey::new(b"fingerprint-key-fingerprint-key!"),
            base_url: None,
            sender: Default::default(),
        }),
    );
    let reconcile = || async {
        let obj: SmtpRelay = serde_json::from_value(fake.get(path).expect("relay")).expect("typed");
        smtp_relay::reconcile(Arc::new(obj), Arc::clone(&ctx))
            .await
            .expect("reconcile");
    };
    let status_writes = || {
        fake.writes()
            .iter()
            .filter(|(_, p)| p.ends_with("/status"))
            .count()
    };
    reconcile().await;
    assert_eq!(status_writes(), 1);
    let inputs = fake.get(path).expect("relay")["status"]["lastVerification"]["inputs"].clone();
    assert!(!inputs.to_string().contains(support::PASSWORD));
    // A secrets manager re-syncs: new resourceVersion, same data. Nothing to verify.
    fake.put(
        "/api/v1/namespaces/team/secrets/creds",
        secret(support::PASSWORD, "2"),
    );
    reconcile().await;
    assert_eq!(
        status_writes(),
        1,
        "a metadata-only change is not a new input"
    );
    // The password changes: verified again at once.
    fake.put(
        "/api/v1/namespaces/team/secrets/creds",
        secret("rotated-but-wrong", "3"),
    );
    reconcile().await;
    assert_eq!(status_writes(), 2);
    let ready = &fake.get(path).expect("relay")["status"]["conditions"];
    assert!(ready.to_string().contains("AuthRejected"), "{ready}");
}
