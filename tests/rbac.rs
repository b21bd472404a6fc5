//! Every API call the operator makes is granted by the Helm chart's RBAC, and the
//! chart grants nothing the operator does not use. The operator runs (controllers,
//! leader election, confirmation endpoint) against the in-memory API server, which
//! records each request; tests/chart/expected_rbac.json is what the chart renders
//! (tests/chart/check_chart.py checks that side).

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::connect_info::MockConnectInfo;
use base64::Engine as _;
use serde_json::{Value, json};
use smtp_relay_operator::controller::{self, ConfirmContext, Settings};
use smtp_relay_operator::leader::{Elector, LeaseConfig};
use smtp_relay_operator::metrics::Metrics;
use support::fake_api::{ApiPath, FakeApi};
use tower::ServiceExt as _;

const OPERATOR_NS: &str = "smtp-relay-system";
const TEAM: &str = "team";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    group: String,
    resource: String,
    verb: String,
}

struct Rules {
    /// (namespace scope: None = everywhere, grant)
    grants: Vec<(Option<String>, Grant)>,
    not_observable: BTreeSet<Grant>,
}

fn load_rules(connection_namespaces: &[&str]) -> Rules {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chart/expected_rbac.json");
    let e: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("expected_rbac.json"))
            .expect("json");
    let expand = |rules: &Value, scope: Option<String>, out: &mut Vec<(Option<String>, Grant)>| {
        for rule in rules.as_array().expect("rules") {
            for g in rule["apiGroups"].as_array().expect("groups") {
                for r in rule["resources"].as_array().expect("resources") {
                    for v in rule["verbs"].as_array().expect("verbs") {
                        out.push((
                            scope.clone(),
                            Grant {
                                group: g.as_str().expect("g").into(),
                                resource: r.as_str().expect("r").into(),
                                verb: v.as_str().expect("v").into(),
                            },
                        ));
                    }
                }
            }
        }
    };
    let mut grants = Vec::new();
    expand(&e["clusterRole"], None, &mut grants);
    expand(
        &e["leaderElectionRole"]["rules"],
        Some(OPERATOR_NS.into()),
        &mut grants,
    );
    for ns in connection_namespaces {
        expand(
            &e["connectionSecretsRole"]["rules"],
            Some(ns.to_string()),
            &mut grants,
        );
    }
    let not_observable = e["grantedButNotObservable"]
        .as_array()
        .expect("list")
        .iter()
        .map(|g| Grant {
            group: g["apiGroup"].as_str().expect("g").into(),
            resource: g["resource"].as_str().expect("r").into(),
            verb: g["verb"].as_str().expect("v").into(),
        })
        .collect();
    Rules {
        grants,
        not_observable,
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn rv(fake: &FakeApi, path: &str) -> String {
    fake.get(path).expect("object")["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string()
}

fn ready_status(inputs: &str) -> Value {
    let now = smtp_relay_operator::confirm::rfc3339(jiff::Timestamp::now());
    json!({"observedGeneration": 1, "port": support::harness().submission_port,
           "conditions": [{"type": "Ready", "status": "True", "reason": "Verified", "message": "ok",
                           "lastTransitionTime": now, "observedGeneration": 1}],
           "lastVerification": {"time": now, "result": "Succeeded", "inputs": inputs, "durationMs": {}}})
}

/// A cluster with a bit of everything the operator touches.
fn world(fake: &FakeApi) {
    let h = support::harness();
    let ca = String::from_utf8(h.ca_pem()).expect("pem");
    fake.put(
        &format!("/api/v1/namespaces/{TEAM}"),
        json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": TEAM, "labels": {"mail": "allowed"}}}),
    );
    for ns in [TEAM, OPERATOR_NS] {
        fake.put(
            &format!("/api/v1/namespaces/{ns}/secrets/creds"),
            json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds", "namespace": ns, "labels": {"smtprelay.io/credentials": "true"}},
            "data": {"username": b64(support::USER), "password": b64(support::PASSWORD)}}),
        );
        fake.put(&format!("/api/v1/namespaces/{ns}/configmaps/harness-ca"), json!({"apiVersion": "v1",
            "kind": "ConfigMap", "metadata": {"name": "harness-ca", "namespace": ns}, "data": {"ca.crt": ca}}));
    }
    fake.put(
        &format!("/api/v1/namespaces/{OPERATOR_NS}/secrets/confirmation-key"),
        json!({"apiVersion": "v1",
        "kind": "Secret", "metadata": {"name": "confirmation-key", "namespace": OPERATOR_NS},
        "data": {"key": b64("0123456789abcdef0123456789abcdef")}}),
    );
    let spec = |ns_field: bool| {
        let mut s = json!({"host": "localhost", "port": h.submission_port,
            "tls": {"mode": "StartTls", "caBundleRef": {"kind": "ConfigMap", "name": "harness-ca"}},
            "auth": {"credentialsSecretRef": {"name": "creds"}},
            "defaultSender": {"address": "noreply@example.test", "name": "ACME"}});
        if ns_field {
            s["auth"]["credentialsSecretRef"]["namespace"] = json!(OPERATOR_NS);
            s["tls"]["caBundleRef"]["namespace"] = json!(OPERATOR_NS);
        }
        s
    };
    let relays = format!("/apis/smtprelay.io/v1alpha1/namespaces/{TEAM}/smtprelays");
    // Never verified: the controller verifies it and writes status.
    fake.put(
        &format!("{relays}/fresh"),
        json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
        "metadata": {"name": "fresh", "namespace": TEAM}, "spec": spec(false)}),
    );
    // Verified a moment ago with these very inputs: nothing to do for it.
    let inputs = format!(
        "g1/s{}/c{}",
        rv(fake, &format!("/api/v1/namespaces/{TEAM}/secrets/creds")),
        rv(
            fake,
            &format!("/api/v1/namespaces/{TEAM}/configmaps/harness-ca")
        )
    );
    fake.put(&format!("{relays}/ready"), json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
        "metadata": {"name": "ready", "namespace": TEAM}, "spec": spec(false), "status": ready_status(&inputs)}));
    let mut cluster_spec = spec(true);
    cluster_spec["default"] = json!(true);
    cluster_spec["allowCredentialPublishing"] = json!(true);
    cluster_spec["allowedNamespaces"] = json!({"matchLabels": {"mail": "allowed"}});
    let cluster_inputs = format!(
        "g1/s{}/c{}",
        rv(
            fake,
            &format!("/api/v1/namespaces/{OPERATOR_NS}/secrets/creds")
        ),
        rv(
            fake,
            &format!("/api/v1/namespaces/{OPERATOR_NS}/configmaps/harness-ca")
        )
    );
    fake.put("/apis/smtprelay.io/v1alpha1/clustersmtprelays/shared", json!({"apiVersion": "smtprelay.io/v1alpha1",
        "kind": "ClusterSmtpRelay", "metadata": {"name": "shared", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": cluster_spec, "status": ready_status(&cluster_inputs)}));
    let ids = format!("/apis/smtprelay.io/v1alpha1/namespaces/{TEAM}/senderidentities");
    let stamp = std::process::id();
    fake.put(&format!("{ids}/confirm-me"), json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
        "metadata": {"name": "confirm-me", "namespace": TEAM},
        "spec": {"address": format!("rbac-{stamp}@example.test"), "relayRef": {"kind": "SmtpRelay", "name": "ready"}}}));
    fake.put(
        &format!("{ids}/publish"),
        json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
        "metadata": {"name": "publish", "namespace": TEAM},
        "spec": {"address": "publish@example.test", "confirmation": {"required": false},
                 "relayRef": {"kind": "SmtpRelay", "name": "ready"},
                 "writeConnectionSecretToRef": {"name": "publish-smtp"}}}),
    );
    // Published earlier under another name: withdrawn (deleted) and written anew.
    fake.put(
        &format!("{ids}/renamed"),
        json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
        "metadata": {"name": "renamed", "namespace": TEAM},
        "spec": {"address": "renamed@example.test", "confirmation": {"required": false},
                 "relayRef": {"kind": "SmtpRelay", "name": "ready"},
                 "writeConnectionSecretToRef": {"name": "renamed-new"}},
        "status": {"connectionSecret": "renamed-old"}}),
    );
    let uid = fake.get(&format!("{ids}/renamed")).expect("identity")["metadata"]["uid"].clone();
    fake.put(&format!("/api/v1/namespaces/{TEAM}/secrets/renamed-old"), json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "renamed-old", "namespace": TEAM, "ownerReferences": [{"apiVersion": "smtprelay.io/v1alpha1",
            "kind": "SenderIdentity", "name": "renamed", "uid": uid, "controller": true}]},
        "data": {"password": b64("old")}}));
    fake.put(
        &format!("{ids}/by-default"),
        json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
        "metadata": {"name": "by-default", "namespace": TEAM,
                     "annotations": {"smtprelay.io/confirmation-code": "AAAA-BBBB"}},
        "spec": {"address": "default@example.test", "confirmation": {"required": false}}}),
    );
}

async fn exercise(fake: &FakeApi) {
    let client = fake.client();
    let key =
        smtp_relay_operator::runtime::confirmation_key(&client, OPERATOR_NS, "confirmation-key")
            .await
            .expect("key");
    let elector = Elector::new(
        client.clone(),
        LeaseConfig {
            namespace: OPERATOR_NS.into(),
            name: "smtp-relay-operator".into(),
            identity: "pod-a".into(),
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(4),
        },
    );
    assert!(elector.try_once().await.expect("create lease"));
    assert!(elector.try_once().await.expect("renew lease"));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = controller::run(
        client.clone(),
        Settings {
            operator_namespace: OPERATOR_NS.into(),
            sessions_per_host: 2,
            concurrency: 4,
            destinations: support::loopback_allowed(),
            input_key: Some(smtp_relay_operator::relay::InputKey::from_confirm_key(&key)),
            deliverability: None,
        },
        kube::runtime::events::Reporter {
            controller: "smtp-relay-operator".into(),
            instance: None,
        },
        Arc::new(Metrics::new()),
        Arc::new(OnceLock::new()),
        stop_rx,
        Some(ConfirmContext {
            key: key.clone(),
            base_url: Some("https://c.example.test".into()),
            sender: Default::default(),
        }),
    );
    let stopper = async {
        // Long enough for every object's first reconcile, including SMTP sessions.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let done = fake
                .get(&format!("/api/v1/namespaces/{TEAM}/secrets/publish-smtp"))
                .is_some()
                && fake
                    .get(&format!("/api/v1/namespaces/{TEAM}/secrets/renamed-old"))
                    .is_none()
                && fake
                    .get(&format!(
                        "/apis/smtprelay.io/v1alpha1/namespaces/{TEAM}/smtprelays/fresh"
                    ))
                    .is_some_and(|o| o.get("status").is_some())
                && fake
                    .get(&format!(
                        "/apis/smtprelay.io/v1alpha1/namespaces/{TEAM}/senderidentities/confirm-me"
                    ))
                    .is_some_and(|o| o["status"]["confirmation"]["sentAt"].is_string())
                && fake
                    .get(&format!(
                        "/apis/smtprelay.io/v1alpha1/namespaces/{TEAM}/senderidentities/by-default"
                    ))
                    .is_some_and(|o| {
                        o["metadata"]
                            .get("annotations")
                            .is_none_or(|a| a.get("smtprelay.io/confirmation-code").is_none())
                    });
            if done || tokio::time::Instant::now() > deadline {
                break;
            }
        }
        let _ = stop_tx.send(true);
    };
    tokio::join!(run, stopper);
    elector.release().await;

    // The confirmation endpoint reads identities.
    let state = Arc::new(smtp_relay_operator::confirm::server::ConfirmState::new(
        client,
        key,
        Arc::new(Metrics::new()),
        vec![],
        None,
        Default::default(),
    ));
    let app = smtp_relay_operator::confirm::server::router(state)
        .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
    let req = axum::http::Request::get(format!("/confirm/{TEAM}/confirm-me/not-the-token"))
        .body(axum::body::Body::empty())
        .expect("req");
    let resp = app.oneshot(req).await.expect("resp");
    assert_eq!(resp.status(), http::StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_api_call_is_granted_and_every_grant_is_used() {
    let fake = FakeApi::default();
    world(&fake);
    exercise(&fake).await;
    let rules = load_rules(&[TEAM]);

    let mut used = BTreeSet::new();
    let mut denied = Vec::new();
    for call in fake.requests() {
        let Some(p) = ApiPath::parse(&call.path) else {
            if call.path.starts_with("/version") {
                continue;
            }
            panic!("unexpected request {call:?}");
        };
        let resource = match &p.subresource {
            Some(sub) => format!("{}/{sub}", p.resource),
            None => p.resource.clone(),
        };
        // The namespace resource itself is cluster-scoped.
        let scope = if p.resource == "namespaces" {
            None
        } else {
            p.namespace.clone()
        };
        let grant = Grant {
            group: p.group.clone(),
            resource,
            verb: p.verb(&call.method, &call.query).into(),
        };
        let allowed = rules
            .grants
            .iter()
            .any(|(ns, g)| g == &grant && (ns.is_none() || (scope.is_some() && ns == &scope)));
        if !allowed {
            denied.push(format!(
                "{} {} ({grant:?} in {scope:?})",
                call.method, call.path
            ));
        }
        used.insert(grant);
    }
    assert!(
        denied.is_empty(),
        "calls the chart's RBAC does not grant:\n{}",
        denied.join("\n")
    );
    let unused: Vec<&Grant> = rules
        .grants
        .iter()
        .map(|(_, g)| g)
        .filter(|g| !used.contains(*g) && !rules.not_observable.contains(*g))
        .collect();
    assert!(
        unused.is_empty(),
        "granted but never used (remove from the chart or explain in grantedButNotObservable): {unused:?}"
    );
}
