//! End-to-end against a real cluster (kube-apiserver + etcd), when
//! `SMTP_RELAY_E2E_KUBECONFIG` points to its kubeconfig; skipped with a message otherwise.
//!
//! The operator binary runs as a child process of this test with that kubeconfig and
//! talks SMTP to the Postfix harness on 127.0.0.1. Each run works in namespaces of
//! its own and removes them (and its ClusterSmtpRelay) even when a step fails.
//! Run with `make e2e` (one test at a time: they share the operator's CRDs).

mod support;

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::FutureExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};
use smtp_relay_operator::api::{ClusterSmtpRelay, ConfirmationState, SenderIdentity, SmtpRelay};

const MANAGER: &str = "smtp-relay-e2e";

fn kubeconfig_path() -> Option<PathBuf> {
    match std::env::var_os("SMTP_RELAY_E2E_KUBECONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            eprintln!(
                "SKIPPED: the e2e suite needs a cluster; set SMTP_RELAY_E2E_KUBECONFIG to a kubeconfig file to run it"
            );
            None
        }
    }
}

async fn client(path: &PathBuf) -> Client {
    let kc = Kubeconfig::read_from(path).expect("read SMTP_RELAY_E2E_KUBECONFIG");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// Kills the operator when the test ends, however it ends.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_operator(kubeconfig: &PathBuf, operator_ns: &str, confirm_port: u16) -> Operator {
    let confirm_addr = format!("127.0.0.1:{confirm_port}");
    let base_url = format!("http://{confirm_addr}");
    let child = Command::new(env!("CARGO_BIN_EXE_smtp-relay-operator"))
        .args([
            "run",
            "--namespace",
            operator_ns,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--confirmation-addr",
            &confirm_addr,
            "--confirmation-base-url",
            &base_url,
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info,smtp_relay_operator=debug")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the operator binary");
    Operator(child)
}

async fn apply<K>(api: &Api<K>, name: &str, obj: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"))
}

async fn apply_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("crds/")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(&file).expect("read crd"))
                .expect("crd yaml");
        let name = crd.name_any();
        let mut value = serde_json::to_value(&crd).expect("json");
        value["apiVersion"] = json!("apiextensions.k8s.io/v1");
        value["kind"] = json!("CustomResourceDefinition");
        let before = api
            .get_opt(&name)
            .await
            .expect("get crd")
            .and_then(|c| c.metadata.resource_version);
        let after = apply(&api, &name, value).await.metadata.resource_version;
        if before.is_some() && before != after {
            // An existing CRD changed: Established is already True, but the API server
            // swaps in the new schema asynchronously. Give it a moment.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established within 30s"))
        .expect("watch CRD");
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn secret(ns: &str, name: &str, user: &str, password: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": ns, "labels": {"smtprelay.io/credentials": "true"}},
           "type": "Opaque",
           "data": {"username": b64(user), "password": b64(password)}})
}

fn relay_spec(port: u16, mode: &str, secret: Option<&str>) -> Value {
    let mut spec = json!({
        "host": if mode == "StartTls" { "localhost" } else { "127.0.0.1" },
        "port": port,
        "tls": {"mode": mode},
        "defaultSender": {"address": "e2e@example.test", "name": "E2E"},
        "verification": {"timeout": "5s", "interval": "1h"},
    });
    if mode != "None" {
        spec["tls"]["caBundleRef"] = json!({"kind": "ConfigMap", "name": "harness-ca"});
    }
    if let Some(s) = secret {
        spec["auth"] = json!({"credentialsSecretRef": {"name": s}});
    }
    spec
}

fn ready_of(
    status: Option<&smtp_relay_operator::api::SmtpRelayStatus>,
) -> Option<(String, String)> {
    let c = status?.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((format!("{:?}", c.status), c.reason.clone()))
}

/// Poll until the relay's Ready condition is (status, reason) for its current generation.
async fn wait_ready(
    api: &Api<SmtpRelay>,
    name: &str,
    want: (&str, &str),
    within: Duration,
) -> SmtpRelay {
    let deadline = Instant::now() + within;
    loop {
        let r = api.get(name).await.expect("get relay");
        let got = ready_of(r.status.as_ref());
        let current =
            r.status.as_ref().and_then(|s| s.observed_generation) == r.metadata.generation;
        if current && got.as_ref().map(|(s, re)| (s.as_str(), re.as_str())) == Some(want) {
            return r;
        }
        if Instant::now() > deadline {
            panic!(
                "{name}: expected Ready={want:?} within {within:?}, have {got:?} (status {:?})",
                r.status
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A port for the operator's confirmation endpoint to listen on.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A bare HTTP/1.1 request to the operator's confirmation endpoint; the status code.
async fn http(port: u16, method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the endpoint");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

struct Run {
    client: Client,
    ns: String,
    ops_ns: String,
    cluster_relay: String,
}

async fn cleanup(run: &Run) {
    let namespaces: Api<Namespace> = Api::all(run.client.clone());
    for ns in [&run.ns, &run.ops_ns] {
        let _ = namespaces.delete(ns, &DeleteParams::background()).await;
    }
    let cluster: Api<ClusterSmtpRelay> = Api::all(run.client.clone());
    let _ = cluster
        .delete(&run.cluster_relay, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn relays_against_a_real_cluster() {
    let Some(path) = kubeconfig_path() else {
        return;
    };
    let client = client(&path).await;
    let id = format!("{:08x}", rand_id());
    let run = Run {
        client: client.clone(),
        ns: format!("smtp-e2e-{id}"),
        ops_ns: format!("smtp-e2e-{id}-ops"),
        cluster_relay: format!("smtp-e2e-{id}"),
    };
    let outcome = AssertUnwindSafe(steps(&run, &path)).catch_unwind().await;
    cleanup(&run).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn rand_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

async fn steps(run: &Run, kubeconfig: &PathBuf) {
    let client = &run.client;
    // 1. CRDs, Established.
    apply_crds(client).await;

    // 2. Harness, namespaces, Secrets, relays.
    let h = support::harness();
    let ca = String::from_utf8(h.ca_pem()).expect("ca");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [&run.ns, &run.ops_ns] {
        apply(
            &namespaces,
            ns,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &run.ns);
    let ops_secrets: Api<Secret> = Api::namespaced(client.clone(), &run.ops_ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &run.ns);
    let ops_cms: Api<ConfigMap> = Api::namespaced(client.clone(), &run.ops_ns);
    for (api, ns) in [(&cms, &run.ns), (&ops_cms, &run.ops_ns)] {
        apply(
            api,
            "harness-ca",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "harness-ca", "namespace": ns}, "data": {"ca.crt": ca}}),
        )
        .await;
    }
    apply(
        &secrets,
        "good",
        secret(&run.ns, "good", support::USER, support::PASSWORD),
    )
    .await;
    apply(
        &secrets,
        "stale",
        secret(&run.ns, "stale", support::USER, "not-the-password"),
    )
    .await;
    apply(
        &ops_secrets,
        "shared",
        secret(
            &run.ops_ns,
            "shared",
            support::ROTATED_USER,
            support::ROTATED_PASSWORD,
        ),
    )
    .await;

    let relays: Api<SmtpRelay> = Api::namespaced(client.clone(), &run.ns);
    let closed = support::closed_port();
    let cases: Vec<(&str, Value, (&str, &str))> = vec![
        (
            "starttls-ok",
            relay_spec(h.submission_port, "StartTls", Some("good")),
            ("True", "Verified"),
        ),
        (
            "tls-ok",
            relay_spec(h.smtps_port, "Tls", Some("good")),
            ("True", "Verified"),
        ),
        (
            "wrong-password",
            relay_spec(h.submission_port, "StartTls", Some("stale")),
            ("False", "AuthRejected"),
        ),
        (
            "closed-port",
            relay_spec(closed.port, "None", None),
            ("False", "ConnectionRefused"),
        ),
        (
            "missing-secret",
            relay_spec(h.submission_port, "StartTls", Some("absent")),
            ("False", "SecretNotFound"),
        ),
    ];
    for (name, spec, _) in &cases {
        apply(
            &relays,
            name,
            json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
            "metadata": {"name": name, "namespace": run.ns}, "spec": spec}),
        )
        .await;
    }
    let cluster: Api<ClusterSmtpRelay> = Api::all(client.clone());
    let mut cluster_spec = relay_spec(h.smtps_port, "Tls", Some("shared"));
    cluster_spec["auth"]["credentialsSecretRef"]["namespace"] = json!(run.ops_ns);
    cluster_spec["tls"]["caBundleRef"]["namespace"] = json!(run.ops_ns);
    apply(
        &cluster,
        &run.cluster_relay,
        json!({"apiVersion": "smtprelay.io/v1alpha1",
        "kind": "ClusterSmtpRelay", "metadata": {"name": run.cluster_relay}, "spec": cluster_spec}),
    )
    .await;

    // 3. The operator, as a child process with that kubeconfig.
    let confirm_port = free_port();
    assert_ne!(confirm_port, closed.port);
    let _operator = start_operator(kubeconfig, &run.ops_ns, confirm_port);

    // 4. Every relay reaches its expected state within 10 s, for its generation.
    for (name, _, want) in &cases {
        let r = wait_ready(&relays, name, *want, Duration::from_secs(10)).await;
        let status = r.status.expect("status");
        assert_eq!(status.observed_generation, r.metadata.generation);
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == r.metadata.generation)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = cluster
            .get(&run.cluster_relay)
            .await
            .expect("get cluster relay");
        if ready_of(c.status.as_ref())
            .as_ref()
            .map(|(s, r)| (s.as_str(), r.as_str()))
            == Some(("True", "Verified"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ClusterSmtpRelay not Ready: {:?}",
            c.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The password is nowhere in status.
    let wrong = relays.get("wrong-password").await.expect("get");
    let text = serde_json::to_string(&wrong.status).expect("json");
    assert!(!text.contains("not-the-password") && !text.contains(support::PASSWORD));

    // Rotating the Secret to the right password fixes the relay without a restart.
    apply(
        &secrets,
        "stale",
        secret(&run.ns, "stale", support::USER, support::PASSWORD),
    )
    .await;
    wait_ready(
        &relays,
        "wrong-password",
        ("True", "Verified"),
        Duration::from_secs(10),
    )
    .await;

    // An unchanged relay sees no status writes across reconciles: two metadata changes
    // trigger two reconciles; nothing is due, so nothing but our own patches is written.
    for i in 0..2 {
        let patch = json!({"metadata": {"annotations": {"e2e.smtprelay.io/poke": i.to_string()}}});
        relays
            .patch(
                "starttls-ok",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("annotate");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let before = relays.get("starttls-ok").await.expect("get");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = relays.get("starttls-ok").await.expect("get");
    assert_eq!(
        before.resource_version(),
        after.resource_version(),
        "an unchanged relay was written to"
    );
    assert_eq!(before.status, after.status);

    // A SenderIdentity: confirmation mail in the Maildir, the link confirms it, it
    // turns Ready and its connection Secret appears.
    let identities: Api<SenderIdentity> = Api::namespaced(client.clone(), &run.ns);
    let address = format!("{}@example.test", run.ns);
    apply(
        &identities,
        "sales",
        json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
        "metadata": {"name": "sales", "namespace": run.ns},
        "spec": {"address": address, "displayName": "E2E Sales",
                 "relayRef": {"kind": "SmtpRelay", "name": "starttls-ok"},
                 "writeConnectionSecretToRef": {"name": "sales-smtp"}}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let attempt = loop {
        let i = identities.get("sales").await.expect("get identity");
        let c = i.status.and_then(|s| s.confirmation);
        if let Some(c) = c.filter(|c| c.sent_at.is_some()) {
            break c.attempt_id.expect("attempt id");
        }
        assert!(
            Instant::now() < deadline,
            "no confirmation mail sent within 10s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mail = h.wait_for_message(&format!("X-SmtpRelay-Confirmation: {attempt}"));
    let (link, _code) = smtp_relay_operator::confirm::mail::parse(&mail);
    let link = link.expect("link in the confirmation mail");
    let path = link
        .strip_prefix(&format!("http://127.0.0.1:{confirm_port}"))
        .expect("our base URL");
    assert_eq!(http(confirm_port, "GET", path).await, 200);
    let i = identities.get("sales").await.expect("get");
    assert_eq!(
        i.status.and_then(|s| s.confirmation).map(|c| c.state),
        Some(ConfirmationState::Pending),
        "GET changes nothing"
    );
    assert_eq!(http(confirm_port, "POST", path).await, 200);
    assert_eq!(http(confirm_port, "POST", path).await, 404, "single use");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let i = identities.get("sales").await.expect("get");
        let ready = i
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| format!("{:?}", c.status));
        if ready.as_deref() == Some("True") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "identity not Ready: {:?}",
            i.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let conn = secrets.get("sales-smtp").await.expect("connection Secret");
    let data = conn.data.expect("data");
    assert_eq!(
        data.get("password").map(|b| b.0.clone()),
        Some(support::PASSWORD.as_bytes().to_vec())
    );
    assert_eq!(
        conn.metadata.owner_references.map(|o| o[0].kind.clone()),
        Some("SenderIdentity".to_string())
    );

    // The seed's test button, through the kubectl plugin's code path.
    let answer = smtp_relay_operator::plugin::test_send(
        client,
        false,
        &run.ns,
        "starttls-ok",
        "e2e-button@example.test",
        Duration::from_secs(20),
    )
    .await
    .expect("test send answered");
    assert_eq!(answer.result, "Succeeded", "{answer:?}");
    h.wait_for_message(&answer.message_id.expect("message id"));

    // The plugin's table and export see relays and the identity; resend is a request.
    let rows = smtp_relay_operator::plugin::collect(client, Some(&run.ns))
        .await
        .expect("status");
    let sales = rows
        .iter()
        .find(|r| r.name == "sales")
        .expect("identity row");
    assert_eq!(
        (sales.confirmation.as_str(), sales.ready.as_str()),
        ("Confirmed", "True")
    );
    assert!(
        rows.iter()
            .any(|r| r.name == "wrong-password" && r.ready == "True")
    );
    assert!(smtp_relay_operator::plugin::to_csv(&rows).lines().count() > cases.len());
    smtp_relay_operator::plugin::resend(client, &run.ns, "sales")
        .await
        .expect("resend");
    let i = identities.get("sales").await.expect("get");
    assert!(
        i.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("smtprelay.io/resend")
    );

    // 5. The API server refuses invalid manifests with the schema's message.
    let invalid: Vec<(&str, Value, &str)> = vec![
        ("bad-port", json!({"port": 70000}), "spec.port"),
        (
            "crlf-header",
            json!({"customHeaders": [{"name": "X-A", "value": "a\r\nBcc: x@example.test"}]}),
            "spec.customHeaders[0].value",
        ),
        (
            "bad-address",
            json!({"defaultSender": {"address": "not-an-address"}}),
            "spec.defaultSender.address",
        ),
        (
            "short-interval",
            json!({"verification": {"interval": "10s"}}),
            "verification.interval must be at least 1m",
        ),
        (
            "reserved-header",
            json!({"customHeaders": [{"name": "Subject", "value": "x"}]}),
            "cannot be overridden",
        ),
        (
            "foreign-secret",
            json!({"auth": {"credentialsSecretRef": {"name": "s", "namespace": "kube-system"}}}),
            "only allowed on ClusterSmtpRelay",
        ),
    ];
    for (name, overrides, expected) in invalid {
        let mut spec =
            json!({"host": "smtp.example.test", "defaultSender": {"address": "a@example.test"}});
        for (k, v) in overrides.as_object().expect("obj") {
            spec[k] = v.clone();
        }
        let obj: SmtpRelay = serde_json::from_value(json!({"apiVersion": "smtprelay.io/v1alpha1",
            "kind": "SmtpRelay", "metadata": {"name": name, "namespace": run.ns}, "spec": spec}))
        .expect("typed");
        match relays.create(&PostParams::default(), &obj).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{name}: {status:?}");
                assert!(
                    status.message.contains(expected),
                    "{name}: {:?} does not mention {expected:?}",
                    status.message
                );
            }
            other => panic!("{name}: expected the API server to refuse it, got {other:?}"),
        }
    }
}
