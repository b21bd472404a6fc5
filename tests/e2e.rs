//! End-to-end against a real API server (kube-apiserver + etcd; `make test` starts
//! ../shared/envtest and points `SMTP_RELAY_E2E_KUBECONFIG` at it), one test per
//! capability so that a failure names what broke.
//!
//! Each test runs the operator binary as a child process with that kubeconfig; it
//! talks SMTP to the Postfix harness on 127.0.0.1. Tests take turns (the operator
//! watches the whole cluster), work in namespaces of their own, and remove what they
//! created even when a step fails. Statuses the operator wrote are checked against
//! kstatus' rules and captured for the Argo CD health checks (tests/gitops).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use smtp_relay_operator::api::{ClusterSmtpRelay, ConfirmationState, SenderIdentity, SmtpRelay};
use support::cluster::{self, Namespaces, apply, wait_ready};
use support::gitops;

/// How long a test waits for the operator (a child process that first connects,
/// lists and watches) to reach a state: a deadline, so passing runs do not wait it
/// out, generous for a busy 2-core machine.
const E2E_DEADLINE: Duration = Duration::from_secs(30);

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

fn relay_manifest(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// One test's world: an application namespace and the operator's namespace, the
/// harness CA in both, credentials, and the operator running.
struct World {
    client: Client,
    ns: String,
    ops_ns: String,
    kubeconfig: PathBuf,
    confirm_port: u16,
    h: &'static support::Harness,
}

impl World {
    fn relays(&self) -> Api<SmtpRelay> {
        Api::namespaced(self.client.clone(), &self.ns)
    }
    fn identities(&self) -> Api<SenderIdentity> {
        Api::namespaced(self.client.clone(), &self.ns)
    }
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }
    async fn relay(&self, name: &str, spec: Value) {
        apply(&self.relays(), name, relay_manifest(&self.ns, name, spec)).await;
    }
    async fn wait_relay(&self, name: &str, want: (&str, &str)) -> Value {
        let api = self.relays();
        wait_ready(
            &format!("SmtpRelay {name}"),
            || async { api.get(name).await.expect("get relay") },
            want,
            E2E_DEADLINE,
        )
        .await
    }
    /// A ClusterSmtpRelay (implicit TLS, credentials and CA in the operator's
    /// namespace) named after the test's namespace, which the cleanup removes;
    /// `extra` is merged into its spec. Its Api and name.
    async fn cluster_relay(&self, extra: Value) -> (Api<ClusterSmtpRelay>, String) {
        let ops_secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ops_ns);
        apply(
            &ops_secrets,
            "shared",
            secret(
                &self.ops_ns,
                "shared",
                support::ROTATED_USER,
                support::ROTATED_PASSWORD,
            ),
        )
        .await;
        let cluster: Api<ClusterSmtpRelay> = Api::all(self.client.clone());
        let mut spec = relay_spec(self.h.smtps_port, "Tls", Some("shared"));
        spec["auth"]["credentialsSecretRef"]["namespace"] = json!(self.ops_ns);
        spec["tls"]["caBundleRef"]["namespace"] = json!(self.ops_ns);
        for (k, v) in extra.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        let name = self.ns.clone();
        apply(
            &cluster,
            &name,
            json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "ClusterSmtpRelay",
                   "metadata": {"name": name}, "spec": spec}),
        )
        .await;
        (cluster, name)
    }

    fn operator(&self) -> cluster::Operator {
        cluster::start_operator(&self.kubeconfig, &self.ops_ns, self.confirm_port)
    }
}

/// Set up a world and run `body` in it (with the operator started by the body, so
/// that it can create objects first); clean up whatever happens.
async fn in_world<F, Fut>(tag: &str, body: F)
where
    F: FnOnce(World) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(turn) = cluster::take_turn().await else {
        return;
    };
    let (client, kubeconfig) = (turn.client.clone(), turn.kubeconfig.clone());
    let id = cluster::rand_id();
    let ns = format!("e2e-{tag}-{id}");
    let ops_ns = format!("e2e-{tag}-{id}-ops");
    let mut cleanup = Namespaces::create(&client, vec![ns.clone(), ops_ns.clone()]).await;
    // A ClusterSmtpRelay of the test is named after its namespace (cluster_relay).
    cleanup.cluster_relays.push(ns.clone());
    let h = support::harness();
    let world = World {
        client: client.clone(),
        ns: ns.clone(),
        ops_ns: ops_ns.clone(),
        kubeconfig,
        confirm_port: cluster::free_port(),
        h,
    };
    cluster::with_cleanup(&cleanup, async {
        let ca = String::from_utf8(h.ca_pem()).expect("ca");
        for n in [&ns, &ops_ns] {
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), n);
            apply(
                &cms,
                "harness-ca",
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "harness-ca", "namespace": n}, "data": {"ca.crt": ca}}),
            )
            .await;
        }
        let secrets = world.secrets();
        apply(
            &secrets,
            "good",
            secret(&ns, "good", support::USER, support::PASSWORD),
        )
        .await;
        apply(
            &secrets,
            "stale",
            secret(&ns, "stale", support::USER, "not-the-password"),
        )
        .await;
        body(world).await;
    })
    .await;
}

#[tokio::test]
async fn relays_report_each_outcome_for_their_generation() {
    in_world("relays", |w| async move {
        let closed = support::closed_port();
        let h = w.h;
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
            w.relay(name, spec.clone()).await;
        }
        // Before the operator runs: nothing observed yet.
        let unobserved =
            serde_json::to_value(w.relays().get("starttls-ok").await.expect("get")).expect("json");
        gitops::check("relay-not-yet-observed", &unobserved, "Progressing");

        let _operator = w.operator();
        for (name, _, want) in &cases {
            let obj = w.wait_relay(name, *want).await;
            let generation = obj.pointer("/metadata/generation").cloned();
            for c in obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .expect("conditions")
            {
                assert_eq!(
                    c.get("observedGeneration").cloned(),
                    generation,
                    "{name}: {c}"
                );
            }
            let health = if want.0 == "True" {
                "Healthy"
            } else {
                "Degraded"
            };
            gitops::check(&format!("relay-{name}"), &obj, health);
        }
        // The password is nowhere in status.
        let wrong = w.relays().get("wrong-password").await.expect("get");
        let text = serde_json::to_string(&wrong.status).expect("json");
        assert!(!text.contains("not-the-password") && !text.contains(support::PASSWORD));

        // A spec change: until the operator has caught up, the status is older than
        // the spec (captured as it is read, whichever moment that is).
        let mut spec = relay_spec(h.smtps_port, "Tls", Some("good"));
        spec["title"] = json!("changed");
        w.relay("tls-ok", spec).await;
        let obj = w.wait_relay("tls-ok", ("True", "Verified")).await;
        assert_eq!(obj.pointer("/metadata/generation"), Some(&json!(2)));
    })
    .await;
}

#[tokio::test]
async fn rotating_a_secret_fixes_a_relay_without_restart() {
    in_world("rotation", |w| async move {
        w.relay(
            "rotating",
            relay_spec(w.h.submission_port, "StartTls", Some("stale")),
        )
        .await;
        let _operator = w.operator();
        w.wait_relay("rotating", ("False", "AuthRejected")).await;
        apply(
            &w.secrets(),
            "stale",
            secret(&w.ns, "stale", support::USER, support::PASSWORD),
        )
        .await;
        w.wait_relay("rotating", ("True", "Verified")).await;
    })
    .await;
}

#[tokio::test]
async fn an_unchanged_relay_is_not_written_to() {
    in_world("noop", |w| async move {
        w.relay(
            "steady",
            relay_spec(w.h.submission_port, "StartTls", Some("good")),
        )
        .await;
        let _operator = w.operator();
        w.wait_relay("steady", ("True", "Verified")).await;
        // Two metadata changes trigger two reconciles; nothing is due, so nothing
        // but our own patches is written.
        let relays = w.relays();
        for i in 0..2 {
            let patch =
                json!({"metadata": {"annotations": {"e2e.smtprelay.io/poke": i.to_string()}}});
            relays
                .patch("steady", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("annotate");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let before = relays.get("steady").await.expect("get");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = relays.get("steady").await.expect("get");
        assert_eq!(
            before.resource_version(),
            after.resource_version(),
            "an unchanged relay was written to"
        );
        assert_eq!(before.status, after.status);
    })
    .await;
}

#[tokio::test]
async fn a_cluster_relay_reads_credentials_from_another_namespace() {
    in_world("cluster", |w| async move {
        let (cluster, cluster_name) = w.cluster_relay(json!({})).await;
        let _operator = w.operator();
        let obj = wait_ready(
            "ClusterSmtpRelay",
            || async { cluster.get(&cluster_name).await.expect("get") },
            ("True", "Verified"),
            E2E_DEADLINE,
        )
        .await;
        gitops::check("clusterrelay-ready", &obj, "Healthy");
    })
    .await;
}

#[tokio::test]
async fn a_relay_followed_to_the_mailbox_reports_its_delivery() {
    in_world("roundtrip", |w| async move {
        use support::dovecot::{MAILBOX_PASSWORD, MAILBOX_USER, dovecot};
        let d = dovecot();
        apply(
            &w.secrets(),
            "mailbox",
            secret(&w.ns, "mailbox", MAILBOX_USER, MAILBOX_PASSWORD),
        )
        .await;
        let mut spec = relay_spec(w.h.submission_port, "StartTls", Some("good"));
        spec["verification"]["recipient"] = json!(format!("{}@example.test", w.ns));
        spec["verification"]["roundTrip"] = json!({
            "protocol": "Imap", "host": "localhost", "port": d.imap_port,
            "tls": {"mode": "StartTls", "caBundleRef": {"kind": "ConfigMap", "name": "harness-ca"}},
            "credentialsSecretRef": {"name": "mailbox"},
            "timeout": "30s",
        });
        w.relay("followed", spec).await;
        let _operator = w.operator();
        let obj = w.wait_relay("followed", ("True", "Verified")).await;
        let delivered = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Delivered"))
            .cloned()
            .unwrap_or_else(|| panic!("no Delivered condition: {obj:#}"));
        assert_eq!(
            (&delivered["status"], &delivered["reason"]),
            (&json!("True"), &json!("Delivered")),
            "{delivered}"
        );
        let delivery = obj
            .pointer("/status/lastVerification/delivery")
            .unwrap_or_else(|| panic!("no delivery: {obj:#}"));
        assert_eq!(delivery["folder"], json!("INBOX"), "{delivery}");
        assert!(delivery["latencyMs"].as_i64().is_some(), "{delivery}");
        let text = obj["status"].to_string();
        assert!(!text.contains(MAILBOX_PASSWORD), "{text}");
        gitops::check("relay-round-trip-delivered", &obj, "Healthy");
    })
    .await;
}

/// Wait until the identity's confirmation mail has been sent; its attempt id.
async fn wait_sent(identities: &Api<SenderIdentity>, name: &str) -> String {
    let deadline = Instant::now() + E2E_DEADLINE;
    loop {
        let i = identities.get(name).await.expect("get identity");
        if let Some(c) = i
            .status
            .and_then(|s| s.confirmation)
            .filter(|c| c.sent_at.is_some())
        {
            return c.attempt_id.expect("attempt id");
        }
        assert!(
            Instant::now() < deadline,
            "no confirmation mail sent within {E2E_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_identity(w: &World, name: &str, want: (&str, &str)) -> Value {
    let api = w.identities();
    wait_ready(
        &format!("SenderIdentity {name}"),
        || async { api.get(name).await.expect("get identity") },
        want,
        E2E_DEADLINE,
    )
    .await
}

fn identity(ns: &str, name: &str, address: &str, relay: &str, extra: Value) -> Value {
    let mut spec = json!({"address": address, "displayName": "E2E Sales",
                          "relayRef": {"kind": "SmtpRelay", "name": relay}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

#[tokio::test]
async fn an_identity_is_confirmed_through_its_mailed_link() {
    in_world("link", |w| async move {
        w.relay(
            "corporate",
            relay_spec(w.h.submission_port, "StartTls", Some("good")),
        )
        .await;
        let _operator = w.operator();
        w.wait_relay("corporate", ("True", "Verified")).await;
        let identities = w.identities();
        let address = format!("{}@example.test", w.ns);
        apply(
            &identities,
            "sales",
            identity(
                &w.ns,
                "sales",
                &address,
                "corporate",
                json!({"writeConnectionSecretToRef": {"name": "sales-smtp"}}),
            ),
        )
        .await;
        let attempt = wait_sent(&identities, "sales").await;
        let pending =
            serde_json::to_value(identities.get("sales").await.expect("get")).expect("json");
        gitops::check("identity-pending", &pending, "Progressing");

        let mail =
            w.h.wait_for_message(&format!("X-SmtpRelay-Confirmation: {attempt}"));
        let (link, _code) = smtp_relay_operator::confirm::mail::parse(&mail);
        let link = link.expect("link in the confirmation mail");
        let port = w.confirm_port;
        let path = link
            .strip_prefix(&format!("http://127.0.0.1:{port}"))
            .expect("our base URL");
        assert_eq!(cluster::http_status(port, "GET", path).await, 200);
        let i = identities.get("sales").await.expect("get");
        assert_eq!(
            i.status.and_then(|s| s.confirmation).map(|c| c.state),
            Some(ConfirmationState::Pending),
            "GET changes nothing"
        );
        assert_eq!(cluster::http_status(port, "POST", path).await, 200);
        assert_eq!(
            cluster::http_status(port, "POST", path).await,
            404,
            "single use"
        );
        let ready = wait_identity(&w, "sales", ("True", "Ready")).await;
        gitops::check("identity-ready", &ready, "Healthy");
        let conn = w
            .secrets()
            .get("sales-smtp")
            .await
            .expect("connection Secret");
        let data = conn.data.expect("data");
        assert_eq!(
            data.get("password").map(|b| b.0.clone()),
            Some(support::PASSWORD.as_bytes().to_vec())
        );
        assert_eq!(
            conn.metadata.owner_references.map(|o| o[0].kind.clone()),
            Some("SenderIdentity".to_string())
        );
    })
    .await;
}

#[tokio::test]
async fn an_identity_is_confirmed_with_its_mailed_code() {
    in_world("code", |w| async move {
        w.relay(
            "corporate",
            relay_spec(w.h.submission_port, "StartTls", Some("good")),
        )
        .await;
        let _operator = w.operator();
        let identities = w.identities();
        let address = format!("code-{}@example.test", w.ns);
        apply(
            &identities,
            "billing",
            identity(&w.ns, "billing", &address, "corporate", json!({})),
        )
        .await;
        let attempt = wait_sent(&identities, "billing").await;
        let mail =
            w.h.wait_for_message(&format!("X-SmtpRelay-Confirmation: {attempt}"));
        let (_link, code) = smtp_relay_operator::confirm::mail::parse(&mail);
        let code = code.expect("code in the confirmation mail");
        let patch = json!({"metadata": {"annotations": {"smtprelay.io/confirmation-code": code}}});
        identities
            .patch("billing", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate");
        wait_identity(&w, "billing", ("True", "Ready")).await;
        let i = identities.get("billing").await.expect("get");
        assert_eq!(
            i.status
                .as_ref()
                .and_then(|s| s.confirmation.as_ref())
                .map(|c| c.state),
            Some(ConfirmationState::Confirmed)
        );
        assert!(
            !i.annotations()
                .contains_key("smtprelay.io/confirmation-code"),
            "the code annotation is cleared once used"
        );
    })
    .await;
}

#[tokio::test]
async fn an_identity_waits_for_a_failing_relay() {
    in_world("waiting", |w| async move {
        w.relay(
            "broken",
            relay_spec(w.h.submission_port, "StartTls", Some("stale")),
        )
        .await;
        let _operator = w.operator();
        w.wait_relay("broken", ("False", "AuthRejected")).await;
        let identities = w.identities();
        apply(
            &identities,
            "ops",
            identity(&w.ns, "ops", "ops@example.test", "broken", json!({})),
        )
        .await;
        let obj = wait_identity(&w, "ops", ("False", "RelayNotReady")).await;
        gitops::check("identity-relay-failing", &obj, "Degraded");
    })
    .await;
}

#[tokio::test]
async fn the_plugin_tests_lists_exports_and_resends() {
    in_world("plugin", |w| async move {
        w.relay(
            "corporate",
            relay_spec(w.h.submission_port, "StartTls", Some("good")),
        )
        .await;
        w.relay(
            "wrong-password",
            relay_spec(w.h.submission_port, "StartTls", Some("stale")),
        )
        .await;
        let _operator = w.operator();
        w.wait_relay("corporate", ("True", "Verified")).await;
        w.wait_relay("wrong-password", ("False", "AuthRejected"))
            .await;
        apply(
            &w.identities(),
            "sales",
            identity(
                &w.ns,
                "sales",
                "plugin@example.test",
                "corporate",
                json!({"confirmation": {"required": false}}),
            ),
        )
        .await;
        wait_identity(&w, "sales", ("True", "Ready")).await;

        // The seed's test button, through the kubectl plugin's code path.
        let answer = smtp_relay_operator::plugin::test_send(
            &w.client,
            false,
            &w.ns,
            "corporate",
            "e2e-button@example.test",
            Duration::from_secs(20),
        )
        .await
        .expect("test send answered");
        assert_eq!(answer.result, "Succeeded", "{answer:?}");
        w.h.wait_for_message(&answer.message_id.expect("message id"));

        // The table and export see relays and the identity; resend is a request.
        let rows = smtp_relay_operator::plugin::collect(&w.client, Some(&w.ns))
            .await
            .expect("status");
        let sales = rows
            .iter()
            .find(|r| r.name == "sales")
            .expect("identity row");
        assert_eq!(sales.ready.as_str(), "True");
        assert!(
            rows.iter()
                .any(|r| r.name == "wrong-password" && r.ready == "False")
        );
        assert_eq!(
            smtp_relay_operator::plugin::to_csv(&rows).lines().count(),
            rows.len() + 1
        );
        smtp_relay_operator::plugin::resend(&w.client, &w.ns, "sales")
            .await
            .expect("resend");
        let i = w.identities().get("sales").await.expect("get");
        assert!(i.annotations().contains_key("smtprelay.io/resend"));
    })
    .await;
}

/// The security review's bypass, as a regression: confirm an address through a
/// relay of one's own, then point the identity at a ClusterSmtpRelay that requires
/// confirmed senders. The confirmation does not carry over: the identity is not
/// Ready, no connection Secret holds the cluster relay's credentials, and the owner
/// is asked again through the cluster relay.
#[tokio::test]
async fn a_confirmation_through_ones_own_relay_does_not_carry_to_a_cluster_relay() {
    in_world("bypass", |w| async move {
        let (_, cluster_name) = w
            .cluster_relay(
                json!({"allowUnconfirmedSenders": false, "allowCredentialPublishing": true}),
            )
            .await;
        // The requester's own relay (here the harness stands for their server).
        w.relay(
            "mine",
            relay_spec(w.h.submission_port, "StartTls", Some("good")),
        )
        .await;
        let _operator = w.operator();
        let identities = w.identities();
        let address = format!("ceo-{}@example.test", w.ns);
        apply(
            &identities,
            "ceo",
            identity(
                &w.ns,
                "ceo",
                &address,
                "mine",
                json!({"writeConnectionSecretToRef": {"name": "ceo-smtp"}}),
            ),
        )
        .await;
        let attempt = wait_sent(&identities, "ceo").await;
        let mail =
            w.h.wait_for_message(&format!("X-SmtpRelay-Confirmation: {attempt}"));
        let (link, _) = smtp_relay_operator::confirm::mail::parse(&mail);
        let link = link.expect("link");
        let path = link
            .strip_prefix(&format!("http://127.0.0.1:{}", w.confirm_port))
            .expect("our base URL");
        assert_eq!(
            cluster::http_status(w.confirm_port, "POST", path).await,
            200
        );
        wait_identity(&w, "ceo", ("True", "Ready")).await;

        // Now the switch to the cluster relay.
        let patch =
            json!({"spec": {"relayRef": {"kind": "ClusterSmtpRelay", "name": cluster_name}}});
        identities
            .patch("ceo", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("switch relays");
        let deadline = Instant::now() + Duration::from_secs(15);
        let fresh = loop {
            let i = identities.get("ceo").await.expect("get");
            let c = i.status.as_ref().and_then(|s| s.confirmation.clone());
            if let Some(c) = c.filter(|c| {
                c.attempt_id.as_deref() != Some(attempt.as_str()) && c.sent_at.is_some()
            }) {
                break (i, c);
            }
            assert!(
                Instant::now() < deadline,
                "no new confirmation after the switch: {:?}",
                i.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (i, c) = fresh;
        assert_eq!(c.state, ConfirmationState::Pending);
        assert!(
            c.relay
                .as_deref()
                .is_some_and(|r| r.starts_with(&format!("ClusterSmtpRelay {cluster_name}"))),
            "{:?}",
            c.relay
        );
        let ready = i
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| format!("{:?}", c.status));
        assert_eq!(ready.as_deref(), Some("False"));
        // The new mail went through the cluster relay (its login is in Received).
        let new_attempt = c.attempt_id.expect("attempt");
        w.h.wait_for_message(&format!("X-SmtpRelay-Confirmation: {new_attempt}"));
        // No Secret of the namespace carries the cluster relay's credentials.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for s in w.secrets().list(&Default::default()).await.expect("list") {
            let text = serde_json::to_string(&s.data).expect("json");
            assert!(
                !text.contains(&b64(support::ROTATED_PASSWORD)),
                "{} holds the cluster relay's password",
                s.name_any()
            );
        }
    })
    .await;
}

fn condition_of(obj: &Value, t: &str) -> Option<(String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
}

#[tokio::test]
async fn identities_report_their_domain_and_relays_their_blocklists() {
    in_world("domain", |w| async move {
        // A real DNS server on loopback the operator is pointed at (--dns-server).
        let dns = support::dns::DnsServer::start(&[
            "good.test 300 MX 10 mx.good.test",
            "mx.good.test 300 A 127.0.0.1",
            "good.test 300 TXT v=spf1 ip4:127.0.0.1 -all",
            "_dmarc.good.test 300 TXT v=DMARC1; p=reject",
            "nodmarc.test 300 MX 10 mx.good.test",
            "nodmarc.test 300 TXT v=spf1 ip4:127.0.0.1 -all",
            "2.0.0.127.bl.test 300 A 127.0.0.2",
            "2.0.0.127.bl.test 300 TXT listed for testing",
        ])
        .await;
        w.relay("plain", relay_spec(w.h.plain_port, "None", None))
            .await;
        let mut listed = relay_spec(w.h.plain_port, "None", None);
        listed["deliverability"] = json!({"sendingAddresses": ["127.0.0.2"]});
        w.relay("listed", listed).await;
        let _operator = cluster::start_operator_with_dns(
            &w.kubeconfig,
            &w.ops_ns,
            w.confirm_port,
            Some(dns.addr),
        );
        let relay = w.wait_relay("plain", ("True", "Verified")).await;
        assert_eq!(
            condition_of(&relay, "NotListed"),
            Some(("True".into(), "NotListed".into()))
        );
        // Listed: reported, but the relay still accepts mail (Ready stays True).
        let listed = w.wait_relay("listed", ("True", "Verified")).await;
        assert_eq!(
            condition_of(&listed, "NotListed"),
            Some(("False".into(), "Listed".into()))
        );
        assert_eq!(
            listed["status"]["blocklist"]["listings"][0]["reason"],
            "listed for testing"
        );
        let identities = w.identities();
        let no_confirmation = json!({"confirmation": {"required": false}});
        apply(
            &identities,
            "good",
            identity(
                &w.ns,
                "good",
                "sales@good.test",
                "plain",
                no_confirmation.clone(),
            ),
        )
        .await;
        let good = wait_identity(&w, "good", ("True", "Ready")).await;
        assert_eq!(
            condition_of(&good, "DomainAuthenticated"),
            Some(("True".into(), "Authenticated".into()))
        );
        assert_eq!(good["status"]["deliverability"]["spf"]["result"], "pass");
        assert_eq!(
            good["status"]["deliverability"]["spf"]["record"],
            "v=spf1 ip4:127.0.0.1 -all"
        );
        assert_eq!(
            good["status"]["deliverability"]["dmarc"]["policy"],
            "reject"
        );
        gitops::check("identity-domain-authenticated", &good, "Healthy");
        let mut strict = no_confirmation.clone();
        strict["deliverability"] = json!({"enforce": true});
        apply(
            &identities,
            "strict",
            identity(&w.ns, "strict", "ops@nodmarc.test", "plain", strict),
        )
        .await;
        let obj = wait_identity(&w, "strict", ("False", "DomainNotAuthenticated")).await;
        assert_eq!(
            condition_of(&obj, "DomainAuthenticated"),
            Some(("False".into(), "DmarcMissing".into()))
        );
        gitops::check("identity-domain-not-authenticated", &obj, "Degraded");
        // One lookup of each record for both identities and every reconcile so far.
        assert_eq!(
            dns.queries("good.test", "TXT"),
            1,
            "{:?}",
            dns.all_queries()
        );
    })
    .await;
}
