//! `kubectl smtprelay` subcommands against the in-memory API server, with the
//! controller answering requests (test sends go to the Postfix harness).

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use kube::runtime::reflector::store::Writer;
use serde_json::{Value, json};
use smtp_relay_operator::api::{SenderIdentity, SmtpRelay};
use smtp_relay_operator::confirm::{self, ConfirmKey, Secrets};
use smtp_relay_operator::controller::{ConfirmContext, sender_identity, smtp_relay};
use smtp_relay_operator::plugin;
use support::fake_api::FakeApi;

const NS: &str = "team";

fn relay_path(name: &str) -> String {
    format!("/apis/smtprelay.io/v1alpha1/namespaces/{NS}/smtprelays/{name}")
}

fn identity_path(name: &str) -> String {
    format!("/apis/smtprelay.io/v1alpha1/namespaces/{NS}/senderidentities/{name}")
}

fn world() -> FakeApi {
    let h = support::harness();
    let fake = FakeApi::default();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    fake.put(
        &format!("/api/v1/namespaces/{NS}/secrets/creds"),
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": NS, "labels": {"smtprelay.io/credentials": "true"}},
        "data": {"username": b64(support::USER), "password": b64(support::PASSWORD)}}),
    );
    let now = confirm::rfc3339(jiff::Timestamp::now());
    fake.put(&relay_path("plain"), json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
        "metadata": {"name": "plain", "namespace": NS},
        "spec": {"title": "Plain, commas, \"quotes\"", "host": "127.0.0.1", "port": h.plain_port, "tls": {"mode": "None"},
                 "auth": {"credentialsSecretRef": {"name": "creds"}},
                 "defaultSender": {"address": "noreply@example.test", "name": "ACME, Inc"}, "usage": ["sales"]},
        "status": {"observedGeneration": 1, "port": h.plain_port,
            "conditions": [{"type": "Ready", "status": "False", "reason": "AuthMechanismUnsupported", "message": "m",
                            "lastTransitionTime": now}],
            "lastVerification": {"time": now, "result": "Failed", "failedStep": "auth", "inputs": "x", "durationMs": {}}}}));
    fake.put(&relay_path("open"), json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
        "metadata": {"name": "open", "namespace": NS},
        "spec": {"host": "127.0.0.1", "port": h.plain_port, "tls": {"mode": "None"},
                 "defaultSender": {"address": "noreply@example.test"}},
        "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True", "reason": "Verified",
            "message": "ok", "lastTransitionTime": now}],
            "lastVerification": {"time": now, "result": "Succeeded", "inputs": "g1", "durationMs": {}}}}));
    fake.put(&identity_path("sales"), json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
        "metadata": {"name": "sales", "namespace": NS},
        "spec": {"address": "sales@example.test", "relayRef": {"kind": "SmtpRelay", "name": "open"}},
        "status": {"relay": "SmtpRelay open", "effectiveFrom": "sales@example.test",
            "confirmation": {"state": "Pending", "address": "sales@example.test",
                             "pageUrl": "https://c.example.test/confirm/team/sales"},
            "conditions": [{"type": "RelayReady", "status": "True", "reason": "RelayReady", "message": "",
                            "lastTransitionTime": now},
                           {"type": "Confirmed", "status": "False", "reason": "Pending", "message": "",
                            "lastTransitionTime": now},
                           {"type": "Ready", "status": "False", "reason": "Pending", "message": "",
                            "lastTransitionTime": now}]}}));
    fake
}

#[tokio::test]
async fn status_and_export_show_relays_and_identities() {
    let fake = world();
    let client = fake.client();
    let rows = plugin::collect(&client, Some(NS)).await.expect("collect");
    assert_eq!(rows.len(), 3);
    let plain = rows.iter().find(|r| r.name == "plain").expect("plain");
    assert_eq!(plain.user, support::USER, "user read from the Secret");
    assert_eq!(
        (plain.ready.as_str(), plain.failing_step.as_str()),
        ("False", "auth")
    );
    let sales = rows.iter().find(|r| r.name == "sales").expect("identity");
    assert_eq!(sales.kind, "SenderIdentity");
    assert_eq!(sales.confirmation, "Pending");
    assert_eq!(sales.link, "https://c.example.test/confirm/team/sales");
    assert_eq!(
        sales.host, "127.0.0.1",
        "the identity shows its relay's host"
    );
    assert_eq!(sales.failing_step, "Confirmed");
    let table = plugin::render_table(&rows);
    let header = table.lines().next().expect("header");
    for col in [
        "HOST",
        "PORT",
        "SECURITY",
        "AUTH",
        "USER",
        "SENDER",
        "USAGE",
        "CONFIRMATION",
        "LINK",
        "READY",
        "LAST VERIFIED",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(table.contains("auth (AuthMechanismUnsupported)"), "{table}");
    let csv = plugin::to_csv(&rows);
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.contains("\"Plain, commas, \"\"quotes\"\"\""), "{csv}");
    let json: Value =
        serde_json::from_str(&serde_json::to_string(&rows).expect("json")).expect("parse");
    assert_eq!(json.as_array().map(Vec::len), Some(3));
    // Without read access to the Secret, the table says where the user comes from.
    let other = FakeApi::default();
    other.put(
        &relay_path("plain"),
        fake.get(&relay_path("plain")).expect("relay"),
    );
    let rows = plugin::collect(&other.client(), Some(NS))
        .await
        .expect("collect");
    assert_eq!(rows[0].user, "secret/creds");
    // All namespaces lists the cluster-wide collection.
    let rows = plugin::collect(&client, None).await.expect("collect all");
    assert_eq!(rows.len(), 3);
    assert!(
        fake.requests()
            .iter()
            .any(|c| c.path == "/apis/smtprelay.io/v1alpha1/smtprelays")
    );
}

#[tokio::test]
async fn test_sends_through_the_relay_once_and_answers_in_status() {
    let fake = world();
    let client = fake.client();
    let ctx = support::context(
        client.clone(),
        kube::runtime::reflector::store::<SmtpRelay>().0,
        None,
    );
    let recipient = format!("plugin-{}@example.test", std::process::id());
    let controller = {
        let fake = fake.clone();
        let ctx = Arc::clone(&ctx);
        async move {
            // Play the controller: reconcile when the annotation appears.
            for _ in 0..100 {
                let obj: SmtpRelay =
                    serde_json::from_value(fake.get(&relay_path("open")).expect("relay"))
                        .expect("typed");
                if obj
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("smtprelay.io/test-request"))
                {
                    smtp_relay::reconcile(Arc::new(obj), Arc::clone(&ctx))
                        .await
                        .expect("reconcile");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let (answer, ()) = tokio::join!(
        plugin::test_send(
            &client,
            false,
            NS,
            "open",
            &recipient,
            Duration::from_secs(20)
        ),
        controller
    );
    let answer = answer.expect("answer");
    assert_eq!(
        (answer.result.as_str(), answer.reason.as_str()),
        ("Succeeded", "Verified"),
        "{answer:?}"
    );
    let id = answer.message_id.clone().expect("message id");
    let mail = support::harness().wait_for_message(&id);
    assert!(mail.contains(&recipient) && mail.contains("Subject: SMTP relay test"));
    // Answered once: another reconcile does not send again.
    let obj: SmtpRelay =
        serde_json::from_value(fake.get(&relay_path("open")).expect("relay")).expect("typed");
    let writes = fake.writes().len();
    smtp_relay::reconcile(Arc::new(obj), Arc::clone(&ctx))
        .await
        .expect("reconcile");
    assert_eq!(fake.writes().len(), writes, "no second test, no write");
    // A refused recipient is a failed answer, and a bad address never leaves.
    let (answer, ()) = tokio::join!(
        plugin::test_send(
            &client,
            false,
            NS,
            "open",
            "rejected@example.test",
            Duration::from_secs(20)
        ),
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let obj: SmtpRelay =
                serde_json::from_value(fake.get(&relay_path("open")).expect("relay"))
                    .expect("typed");
            smtp_relay::reconcile(Arc::new(obj), Arc::clone(&ctx))
                .await
                .expect("reconcile");
        }
    );
    let answer = answer.expect("answer");
    assert_eq!(
        (answer.result.as_str(), answer.reason.as_str()),
        ("Failed", "RecipientRejected")
    );
    assert!(matches!(
        plugin::test_send(
            &client,
            false,
            NS,
            "open",
            "not an address",
            Duration::from_secs(1)
        )
        .await,
        Err(plugin::PluginError::Invalid(_))
    ));
    assert!(matches!(
        plugin::test_send(
            &client,
            false,
            NS,
            "missing",
            "a@example.test",
            Duration::from_secs(1)
        )
        .await,
        Err(plugin::PluginError::NotFound { .. })
    ));
}

#[tokio::test]
async fn resend_and_confirm_are_requests_the_controller_answers() {
    let fake = world();
    let client = fake.client();
    let value = plugin::resend(&client, NS, "sales").await.expect("resend");
    let obj = fake.get(&identity_path("sales")).expect("identity");
    assert_eq!(
        obj["metadata"]["annotations"]["smtprelay.io/resend"],
        json!(value)
    );
    let again = plugin::resend(&client, NS, "sales").await.expect("resend");
    assert_ne!(value, again, "each resend is a new request");

    // Confirm with a code: set up a pending attempt whose code we know, mailed
    // through the identity's relay.
    let relay: SmtpRelay =
        serde_json::from_value(fake.get(&relay_path("open")).expect("relay")).expect("typed");
    let binding = sender_identity::relay_binding(
        smtp_relay_operator::api::RelayKindRef::SmtpRelay,
        Some(NS),
        "open",
        &relay.spec,
        NS,
    );
    let key = ConfirmKey::new(b"plugin-test-key-plugin-test-key!");
    let secrets = Secrets::generate();
    let mut obj = fake.get(&identity_path("sales")).expect("identity");
    obj["metadata"]["annotations"] = json!({});
    obj["status"]["confirmation"] = json!({"state": "Pending", "address": "sales@example.test",
        "attemptId": secrets.attempt_id, "attempts": 1, "sentAt": "2026-01-01T00:00:00Z",
        "expiresAt": "2099-01-01T00:00:00Z", "relay": binding,
        "codeDigest": key.digest(confirm::CODE, &secrets.attempt_id, &confirm::normalize_code(&secrets.code))});
    fake.put(&identity_path("sales"), obj);
    let mut relays = Writer::<SmtpRelay>::new(());
    relays.apply_watcher_event(&kube::runtime::watcher::Event::Apply(relay));
    let ctx = support::context(
        client.clone(),
        relays.as_reader(),
        Some(ConfirmContext {
            key,
            base_url: None,
            sender: Default::default(),
        }),
    );
    let controller = async {
        for _ in 0..100 {
            let obj: SenderIdentity =
                serde_json::from_value(fake.get(&identity_path("sales")).expect("identity"))
                    .expect("typed");
            if obj
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(sender_identity::CODE_ANNOTATION))
            {
                sender_identity::reconcile(Arc::new(obj), Arc::clone(&ctx))
                    .await
                    .expect("reconcile");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (verdict, ()) = tokio::join!(
        plugin::confirm(&client, NS, "sales", &secrets.code, Duration::from_secs(20)),
        controller
    );
    let (ok, message) = verdict.expect("verdict");
    assert!(ok, "{message}");
    assert!(matches!(
        plugin::resend(&client, NS, "missing").await,
        Err(plugin::PluginError::NotFound { .. })
    ));
}
