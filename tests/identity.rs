//! SenderIdentity against the real Postfix harness: the confirmation mail (en, fr)
//! arrives and parses, the endpoint and the annotation confirm, refusals, resets,
//! crash safety, relay readiness, and the connection Secret. The API server is the
//! in-memory fake in tests/support/fake_api.rs.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::MockConnectInfo;
use base64::Engine as _;
use http::StatusCode;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use serde_json::{Value, json};
use smtp_relay_operator::api::{ConfirmationState, SenderIdentity, SmtpRelay};
use smtp_relay_operator::confirm::{self, ConfirmKey};
use smtp_relay_operator::controller::sender_identity::{self, CODE_ANNOTATION, RESEND_ANNOTATION};
use smtp_relay_operator::controller::{ConfirmContext, Context};
use support::fake_api::FakeApi;
use tower::ServiceExt as _;

const NS: &str = "team";
const BASE: &str = "https://confirm.example.test";

struct Env {
    fake: FakeApi,
    ctx: Arc<Context>,
    key: ConfirmKey,
    relays: Writer<SmtpRelay>,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn identity_path(name: &str) -> String {
    format!("/apis/smtprelay.io/v1alpha1/namespaces/{NS}/senderidentities/{name}")
}

fn unique(tag: &str) -> String {
    let n: u32 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{n:08x}")
}

fn relay_object(ready: bool) -> SmtpRelay {
    let h = support::harness();
    serde_json::from_value(json!({
        "apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
        "metadata": {"name": "corporate", "namespace": NS, "generation": 1, "resourceVersion": "1"},
        "spec": {
            "host": "localhost", "port": h.submission_port,
            "tls": {"mode": "StartTls", "caBundleRef": {"kind": "ConfigMap", "name": "harness-ca"}},
            "auth": {"credentialsSecretRef": {"name": "creds"}},
            "defaultSender": {"address": "noreply@example.test", "name": "ACME Mail"},
            "noReply": {"address": "no-reply@example.test"},
            "customHeaders": [{"name": "X-Campaign", "value": "confirmations"}],
            "usage": ["sales", "purchasing"],
        },
        "status": {"observedGeneration": 1, "conditions": [{
            "type": "Ready", "status": if ready { "True" } else { "False" },
            "reason": if ready { "Verified" } else { "AuthRejected" }, "message": "m",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    }))
    .expect("relay")
}

fn env(base_url: Option<&str>) -> Env {
    let h = support::harness();
    let fake = FakeApi::default();
    fake.put(
        &format!("/api/v1/namespaces/{NS}/secrets/creds"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS, "labels": {"smtprelay.io/credentials": "true"}},
               "data": {"username": b64(support::USER), "password": b64(support::PASSWORD)}}),
    );
    fake.put(
        &format!("/api/v1/namespaces/{NS}/configmaps/harness-ca"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "harness-ca", "namespace": NS},
               "data": {"ca.crt": String::from_utf8(h.ca_pem()).expect("pem")}}),
    );
    let client = fake.client();
    let mut relays = Writer::<SmtpRelay>::new(());
    relays.apply_watcher_event(&watcher::Event::Apply(relay_object(true)));
    let key = ConfirmKey::new(b"test-key-test-key-test-key-test-key!");
    let ctx = support::context(
        client,
        relays.as_reader(),
        Some(ConfirmContext {
            key: key.clone(),
            base_url: base_url.map(str::to_string),
            sender: Default::default(),
        }),
    );
    Env {
        fake,
        ctx,
        key,
        relays,
    }
}

impl Env {
    fn create_identity(&self, name: &str, spec: Value) {
        self.fake.put(
            &identity_path(name),
            json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
                   "metadata": {"name": name, "namespace": NS}, "spec": spec}),
        );
    }

    fn identity(&self, name: &str) -> SenderIdentity {
        serde_json::from_value(self.fake.get(&identity_path(name)).expect("identity"))
            .expect("typed")
    }

    async fn reconcile(&self, name: &str) {
        sender_identity::reconcile(Arc::new(self.identity(name)), Arc::clone(&self.ctx))
            .await
            .expect("reconcile");
    }

    fn edit(&self, name: &str, f: impl FnOnce(&mut Value)) {
        let mut obj = self.fake.get(&identity_path(name)).expect("identity");
        f(&mut obj);
        self.fake.put(&identity_path(name), obj);
    }

    fn confirmation(&self, name: &str) -> smtp_relay_operator::api::ConfirmationStatus {
        self.identity(name)
            .status
            .and_then(|s| s.confirmation)
            .expect("confirmation status")
    }

    fn condition(&self, name: &str, t: &str) -> (String, String) {
        let s = self.identity(name).status.expect("status");
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap_or_else(|| panic!("no {t}"));
        (format!("{:?}", c.status), c.reason.clone())
    }

    /// Wait for the mail of the current attempt; returns (raw mail, link, code).
    fn mail(&self, name: &str) -> (String, Option<String>, String) {
        let attempt = self.confirmation(name).attempt_id.expect("attempt");
        let raw =
            support::harness().wait_for_message(&format!("X-SmtpRelay-Confirmation: {attempt}"));
        let (link, code) = confirm::mail::parse(&raw);
        (raw, link, code.expect("code in mail"))
    }

    async fn http(&self, method: &str, uri: &str) -> (StatusCode, String) {
        let state = Arc::new(confirm::server::ConfirmState::new(
            self.ctx.client.clone(),
            self.key.clone(),
            Arc::clone(&self.ctx.metrics),
            vec![],
            Some(BASE.into()),
            confirm::server::Limits {
                per_client: 1000,
                ..Default::default()
            },
        ));
        let app = confirm::server::router(state)
            .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let path = uri.strip_prefix(BASE).unwrap_or(uri).to_string();
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .expect("request");
        let resp = app.oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn identity_spec(address: &str, language: &str) -> Value {
    json!({"address": address, "displayName": "Sales Team", "usage": ["sales"],
           "relayRef": {"kind": "SmtpRelay", "name": "corporate"},
           "confirmation": {"language": language, "ttl": "24h"}})
}

#[tokio::test]
async fn the_confirmation_mail_arrives_in_both_languages_and_parses() {
    let env = env(Some(BASE));
    for (lang, subject) in [("en", "Subject: Confirm "), ("fr", "Subject: Confirmez")] {
        let name = unique(&format!("mail-{lang}"));
        let address = format!("{name}@example.test");
        let mut spec = identity_spec(&address, lang);
        spec["replyTo"] = json!("requester@example.test");
        env.create_identity(&name, spec);
        support::logs();
        env.reconcile(&name).await;
        assert_eq!(
            env.condition(&name, "ConfirmationSent"),
            ("True".into(), "Sent".into())
        );
        let c = env.confirmation(&name);
        assert_eq!(
            c.page_url.as_deref(),
            Some(format!("{BASE}/confirm/{NS}/{name}").as_str())
        );
        let (raw, link, code) = env.mail(&name);
        assert!(raw.contains(subject), "{raw}");
        // From, its name, Reply-To and headers are the operator's: none of the
        // requester's text (replyTo, the namespaced relay's sender name, noReply and
        // customHeaders) reaches the owner's mailbox.
        assert!(
            raw.contains("From: \"Sender address confirmation\" <noreply@example.test>"),
            "{raw}"
        );
        assert!(
            raw.contains("Reply-To: noreply@example.test"),
            "replies go to the sender: {raw}"
        );
        for requester_text in [
            "requester@example.test",
            "X-Campaign",
            "ACME Mail",
            "no-reply@example.test",
        ] {
            assert!(!raw.contains(requester_text), "{requester_text} in {raw}");
        }
        assert!(raw.contains(&format!("To: {address}")), "{raw}");
        let link = link.expect("link");
        assert!(
            link.starts_with(&format!("{BASE}/confirm/{NS}/{name}/")),
            "{link}"
        );
        assert_eq!(confirm::normalize_code(&code).len(), 8);
        // Status never holds what the mail holds.
        let status = serde_json::to_string(&env.identity(&name).status).expect("json");
        let token = link.rsplit('/').next().expect("token");
        assert!(!status.contains(token) && !status.contains(&code));
        let logs = support::logs_text();
        assert!(
            logs.lines()
                .any(|l| l.contains(&name) && l.contains("confirmation mail sent")),
            "the capture works: {logs}"
        );
        assert!(
            !logs.contains(token) && !logs.contains(&code),
            "secret in logs: {logs}"
        );
        // Nor anywhere in the API server: status, events, annotations — once the
        // owner has answered with the code (waiting makes no event; becoming Ready
        // does).
        env.edit(&name, |o| {
            o["metadata"]["annotations"] = json!({CODE_ANNOTATION: code})
        });
        env.reconcile(&name).await;
        assert_eq!(env.condition(&name, "Ready").0, "True");
        let everything = env.fake.dump();
        assert!(everything.contains("/events/"), "events were recorded");
        assert!(!everything.contains(token) && !everything.contains(&code));
    }
}

#[tokio::test]
async fn get_shows_the_page_without_confirming_and_post_confirms_once() {
    let env = env(Some(BASE));
    let name = unique("link");
    env.create_identity(&name, identity_spec(&format!("{name}@example.test"), "en"));
    env.reconcile(&name).await;
    let (_, link, _) = env.mail(&name);
    let link = link.expect("link");
    let (status, page) = env.http("GET", &link).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(&format!("{name}@example.test")) && page.contains("<form method=\"post\">"),
        "{page}"
    );
    assert_eq!(
        env.confirmation(&name).state,
        ConfirmationState::Pending,
        "GET changes nothing"
    );
    let (status, page) = env.http("POST", &link).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(env.confirmation(&name).state, ConfirmationState::Confirmed);
    let (status, _) = env.http("POST", &link).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "single use");
    env.reconcile(&name).await;
    assert_eq!(
        env.condition(&name, "Confirmed"),
        ("True".into(), "Confirmed".into())
    );
    assert_eq!(
        env.condition(&name, "Ready"),
        ("True".into(), "Ready".into())
    );
}

#[tokio::test]
async fn wrong_expired_and_superseded_tokens_are_refused_alike() {
    let env = env(Some(BASE));
    let name = unique("refusals");
    env.create_identity(&name, identity_spec(&format!("{name}@example.test"), "en"));
    env.reconcile(&name).await;
    let (_, first, _) = env.mail(&name);
    let first = first.expect("link");
    let wrong = format!("{BASE}/confirm/{NS}/{name}/AAAAAAAAAAAAAAAAAAAAAA");
    let nobody = format!("{BASE}/confirm/{NS}/no-such-identity/AAAAAAAAAAAAAAAAAAAAAA");
    let (s1, p1) = env.http("POST", &wrong).await;
    let (s2, p2) = env.http("POST", &nobody).await;
    assert_eq!((s1, s2), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(p1, p2, "a wrong token and a missing identity look the same");
    // Ask for a new attempt: the first link is superseded.
    env.edit(&name, |o| {
        o["metadata"]["annotations"] = json!({RESEND_ANNOTATION: "again"})
    });
    env.reconcile(&name).await;
    let (_, second, _) = env.mail(&name);
    let second = second.expect("link");
    assert_ne!(first, second);
    assert_eq!(
        env.http("POST", &first).await.0,
        StatusCode::NOT_FOUND,
        "superseded"
    );
    // Expired: move the expiry into the past.
    env.edit(&name, |o| {
        o["status"]["confirmation"]["expiresAt"] = json!("2020-01-01T00:00:00Z")
    });
    assert_eq!(
        env.http("GET", &second).await.0,
        StatusCode::NOT_FOUND,
        "expired"
    );
    assert_eq!(
        env.http("POST", &second).await.0,
        StatusCode::NOT_FOUND,
        "expired"
    );
    env.reconcile(&name).await;
    assert_eq!(env.confirmation(&name).state, ConfirmationState::Expired);
}

#[tokio::test]
async fn the_code_given_back_in_an_annotation_confirms_and_is_removed() {
    let env = env(None);
    let name = unique("code");
    env.create_identity(&name, identity_spec(&format!("{name}@example.test"), "fr"));
    env.reconcile(&name).await;
    let (raw, link, code) = env.mail(&name);
    assert_eq!(
        link, None,
        "no base URL: the mail carries only the code\n{raw}"
    );
    assert_eq!(env.confirmation(&name).page_url, None);
    env.edit(&name, |o| {
        o["metadata"]["annotations"] = json!({CODE_ANNOTATION: "0000-0000"})
    });
    env.reconcile(&name).await;
    assert_eq!(
        env.condition(&name, "Confirmed"),
        ("False".into(), "Pending".into()),
        "a wrong code leaves the attempt pending"
    );
    assert_eq!(env.confirmation(&name).failed_codes, 1);
    assert!(
        !env.identity(&name)
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(CODE_ANNOTATION)
    );
    env.edit(&name, |o| {
        o["metadata"]["annotations"] = json!({CODE_ANNOTATION: code.to_lowercase()})
    });
    env.reconcile(&name).await;
    assert_eq!(env.confirmation(&name).state, ConfirmationState::Confirmed);
    assert!(
        !env.identity(&name)
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(CODE_ANNOTATION)
    );
    assert_eq!(
        env.condition(&name, "Ready"),
        ("True".into(), "Ready".into())
    );
}

#[tokio::test]
async fn changing_the_address_starts_again() {
    let env = env(None);
    let name = unique("readdress");
    env.create_identity(&name, identity_spec(&format!("{name}@example.test"), "en"));
    env.reconcile(&name).await;
    let (_, _, code) = env.mail(&name);
    env.edit(&name, |o| {
        o["metadata"]["annotations"] = json!({CODE_ANNOTATION: code})
    });
    env.reconcile(&name).await;
    assert_eq!(env.confirmation(&name).state, ConfirmationState::Confirmed);
    let other = format!("{name}-new@example.test");
    env.edit(&name, |o| {
        o["spec"]["address"] = json!(other);
        o["metadata"]["generation"] = json!(2);
    });
    env.reconcile(&name).await;
    let c = env.confirmation(&name);
    assert_eq!(
        (c.state, c.address.as_str()),
        (ConfirmationState::Pending, other.as_str())
    );
    let (raw, _, _) = env.mail(&name);
    assert!(raw.contains(&format!("To: {other}")));
    assert_eq!(env.condition(&name, "Ready").0, "False");
}

#[tokio::test]
async fn an_attempt_recorded_but_never_sent_is_replaced_never_resent() {
    let env = env(None);
    let name = unique("crash");
    let address = format!("{name}@example.test");
    env.create_identity(&name, identity_spec(&address, "en"));
    // An attempt in status that was never sent (written by an operator version that
    // recorded attempts before mailing them, then died): its secrets are gone.
    env.edit(&name, |o| {
        o["status"] = json!({"confirmation": {"state": "Pending", "address": address, "attemptId": "deadbeef0001",
            "attempts": 1, "recentAttempts": [confirm::rfc3339(jiff::Timestamp::now())],
            "expiresAt": "2099-01-01T00:00:00Z", "tokenDigest": "AAAA", "codeDigest": "AAAA"}});
    });
    env.reconcile(&name).await;
    let c = env.confirmation(&name);
    assert_ne!(c.attempt_id.as_deref(), Some("deadbeef0001"));
    assert_eq!(c.attempts, 2);
    env.mail(&name);
    env.reconcile(&name).await;
    assert_eq!(
        env.confirmation(&name).attempt_id,
        c.attempt_id,
        "no further attempt"
    );
    let maildir = support::harness().maildir();
    let mut for_address = 0;
    for sub in ["new", "cur"] {
        for e in std::fs::read_dir(maildir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            assert!(
                !text.contains("deadbeef0001"),
                "the crashed attempt was sent"
            );
            if text.contains(&format!("To: {address}")) {
                for_address += 1;
            }
        }
    }
    assert_eq!(for_address, 1, "exactly one mail");
}

#[tokio::test]
async fn a_crash_after_the_mail_before_its_status_mails_a_new_attempt_and_the_lost_link_is_refused()
{
    let env = env(Some(BASE));
    let name = unique("lost");
    let address = format!("{name}@example.test");
    env.create_identity(&name, identity_spec(&address, "en"));
    // The mail leaves, then the status write is lost (the process dies).
    env.fake.fail_next_status_write(&identity_path(&name));
    let result =
        sender_identity::reconcile(Arc::new(env.identity(&name)), Arc::clone(&env.ctx)).await;
    assert!(result.is_err(), "{result:?}");
    assert!(env.identity(&name).status.is_none(), "nothing recorded");
    let lost = support::harness().wait_for_message(&format!("To: {address}"));
    let (lost_link, _) = confirm::mail::parse(&lost);
    let lost_link = lost_link.expect("link");
    // The next reconcile (a restarted operator) mails a new attempt.
    env.reconcile(&name).await;
    let c = env.confirmation(&name);
    assert_eq!(c.attempts, 1, "the lost attempt was never recorded");
    let (_, link, _) = env.mail(&name);
    let link = link.expect("link");
    assert_ne!(link, lost_link);
    // The lost link is refused like any wrong one; the new one confirms.
    let (code, _) = env.http("POST", &lost_link).await;
    assert_ne!(code, StatusCode::OK);
    assert_eq!(env.confirmation(&name).state, ConfirmationState::Pending);
    let (code, _) = env.http("POST", &link).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(env.confirmation(&name).state, ConfirmationState::Confirmed);
}

#[tokio::test]
async fn a_relay_that_is_not_ready_sends_nothing() {
    let mut env = env(None);
    env.relays
        .apply_watcher_event(&watcher::Event::Apply(relay_object(false)));
    let name = unique("norelay");
    env.create_identity(&name, identity_spec(&format!("{name}@example.test"), "en"));
    env.reconcile(&name).await;
    assert_eq!(
        env.condition(&name, "RelayReady"),
        ("False".into(), "RelayNotReady".into())
    );
    assert_eq!(
        env.condition(&name, "ConfirmationSent"),
        ("False".into(), "WaitingForRelay".into())
    );
    assert_eq!(env.confirmation(&name).attempt_id, None);
    // Once the relay is Ready, the mail goes out.
    env.relays
        .apply_watcher_event(&watcher::Event::Apply(relay_object(true)));
    env.reconcile(&name).await;
    env.mail(&name);
}

#[tokio::test]
async fn a_relay_of_the_same_name_in_another_namespace_is_not_found() {
    let mut env = env(None);
    let name = unique("elsewhere");
    // A Ready relay "corporate" in another namespace, and none of that name in NS.
    let mut other = relay_object(true);
    other.metadata.namespace = Some("other-team".into());
    env.relays
        .apply_watcher_event(&watcher::Event::Delete(relay_object(true)));
    env.relays
        .apply_watcher_event(&watcher::Event::Apply(other));
    env.create_identity(&name, identity_spec(&format!("{name}@example.test"), "en"));
    env.reconcile(&name).await;
    assert_eq!(
        env.condition(&name, "RelayReady"),
        ("False".into(), "RelayNotFound".into())
    );
    assert_eq!(env.confirmation(&name).attempt_id, None);
    // Its own namespace's relay appears: the mail goes out through it.
    env.relays
        .apply_watcher_event(&watcher::Event::Apply(relay_object(true)));
    env.reconcile(&name).await;
    assert_eq!(
        env.condition(&name, "RelayReady"),
        ("True".into(), "RelayReady".into())
    );
    env.mail(&name);
}

#[tokio::test]
async fn the_connection_secret_appears_only_when_ready_and_follows_rotation() {
    let env = env(None);
    let name = unique("conn");
    let mut spec = identity_spec(&format!("{name}@example.test"), "en");
    spec["writeConnectionSecretToRef"] = json!({"name": format!("{name}-smtp")});
    spec["signature"] = json!("-- \nSales Team");
    env.create_identity(&name, spec);
    let secret_path = format!("/api/v1/namespaces/{NS}/secrets/{name}-smtp");
    env.reconcile(&name).await;
    assert!(
        env.fake.get(&secret_path).is_none(),
        "not before confirmation"
    );
    assert_eq!(env.condition(&name, "ConnectionSecretReady").0, "False");
    let (_, _, code) = env.mail(&name);
    env.edit(&name, |o| {
        o["metadata"]["annotations"] = json!({CODE_ANNOTATION: code})
    });
    env.reconcile(&name).await;
    let secret = env.fake.get(&secret_path).expect("connection secret");
    let field = |s: &Value, k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(s["data"][k].as_str().unwrap_or(""))
                .expect("b64"),
        )
        .expect("utf8")
    };
    assert_eq!(field(&secret, "password"), support::PASSWORD);
    assert_eq!(field(&secret, "host"), "localhost");
    assert_eq!(field(&secret, "tlsMode"), "StartTls");
    assert_eq!(field(&secret, "replyTo"), "no-reply@example.test");
    assert_eq!(
        field(&secret, "from"),
        format!("\"Sales Team\" <{name}@example.test>")
    );
    assert_eq!(field(&secret, "signature"), "-- \nSales Team");
    assert_eq!(
        field(&secret, "customHeaders"),
        "X-Campaign: confirmations\n"
    );
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["controller"].as_bool()),
        (Some("SenderIdentity"), Some(true))
    );
    assert_eq!(
        env.condition(&name, "Ready"),
        ("True".into(), "Ready".into())
    );
    // Rotate the relay's credentials.
    env.fake.put(
        &format!("/api/v1/namespaces/{NS}/secrets/creds"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS, "labels": {"smtprelay.io/credentials": "true"}},
               "data": {"username": b64(support::ROTATED_USER), "password": b64(support::ROTATED_PASSWORD)}}),
    );
    env.reconcile(&name).await;
    let secret = env.fake.get(&secret_path).expect("connection secret");
    assert_eq!(field(&secret, "password"), support::ROTATED_PASSWORD);
    assert_eq!(field(&secret, "username"), support::ROTATED_USER);
    // Unchanged: not rewritten.
    let writes = env.fake.writes().len();
    env.reconcile(&name).await;
    let new_writes: Vec<_> = env.fake.writes().into_iter().skip(writes).collect();
    assert!(
        new_writes.iter().all(|(_, p)| !p.ends_with("-smtp")),
        "{new_writes:?}"
    );
    // Status and events never carry the password.
    let everything = format!("{:?}", env.fake.get(&identity_path(&name)));
    assert!(!everything.contains(support::ROTATED_PASSWORD));

    // Renamed: the old copy of the credentials is withdrawn, the new one written.
    let renamed = format!("/api/v1/namespaces/{NS}/secrets/{name}-mail");
    env.edit(&name, |o| {
        o["spec"]["writeConnectionSecretToRef"]["name"] = json!(format!("{name}-mail"));
    });
    env.reconcile(&name).await;
    assert!(
        env.fake.get(&secret_path).is_none(),
        "the old Secret is withdrawn"
    );
    assert!(env.fake.get(&renamed).is_some());
    // A new address is not confirmed: its credentials are withdrawn too.
    env.edit(&name, |o| {
        o["spec"]["address"] = json!(format!("{name}-2@example.test"))
    });
    env.reconcile(&name).await;
    assert!(
        env.fake.get(&renamed).is_none(),
        "withdrawn until the new address is confirmed"
    );
    assert_eq!(env.condition(&name, "ConnectionSecretReady").0, "False");
}

#[tokio::test]
async fn a_secret_the_identity_does_not_own_is_never_taken_over() {
    let env = env(None);
    let name = unique("takeover");
    let victim = format!("/api/v1/namespaces/{NS}/secrets/app-db");
    env.fake.put(
        &victim,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-db", "namespace": NS},
               "data": {"password": b64("database")}}),
    );
    let mut spec = identity_spec(&format!("{name}@example.test"), "en");
    spec["confirmation"]["required"] = json!(false);
    spec["writeConnectionSecretToRef"] = json!({"name": "app-db"});
    env.create_identity(&name, spec);
    env.reconcile(&name).await;
    assert_eq!(
        env.condition(&name, "ConnectionSecretReady"),
        ("False".into(), "SecretWriteFailed".into())
    );
    let after = env.fake.get(&victim).expect("still there");
    assert_eq!(after["data"], json!({"password": b64("database")}));
    assert!(after["metadata"].get("ownerReferences").is_none());
}

#[tokio::test]
async fn a_change_during_the_send_does_not_mail_a_second_attempt() {
    let env = env(None);
    let name = unique("meddle");
    let address = format!("{name}@example.test");
    env.create_identity(&name, identity_spec(&address, "en"));
    // Someone labels the identity while the mail is being sent: the write recording
    // the send conflicts.
    env.fake.meddle_before_status_write(&identity_path(&name));
    env.reconcile(&name).await;
    let c = env.confirmation(&name);
    assert!(
        c.sent_at.is_some(),
        "the send is recorded on the fresh object: {c:?}"
    );
    assert_eq!(c.attempts, 1);
    let (_, _, code) = env.mail(&name);
    env.reconcile(&name).await;
    assert_eq!(env.confirmation(&name).attempts, 1, "no second attempt");
    // And the mailed code still works.
    env.edit(&name, |o| {
        o["metadata"]["annotations"] = json!({CODE_ANNOTATION: code})
    });
    env.reconcile(&name).await;
    assert_eq!(env.confirmation(&name).state, ConfirmationState::Confirmed);
}

#[tokio::test]
async fn a_reconcile_from_a_copy_it_already_wrote_over_waits_for_the_cache() {
    let env = env(None);
    let name = unique("stale");
    let address = format!("{name}@example.test");
    env.create_identity(&name, identity_spec(&address, "en"));
    // The cache's copy when the first reconcile starts; the watch event of its first
    // write (the attempt) can wake the identity again before the cache has its second
    // write (the sent mail).
    let cached = Arc::new(env.identity(&name));
    env.reconcile(&name).await;
    let sent = env.confirmation(&name);
    assert!(sent.sent_at.is_some());
    env.mail(&name);
    let before = env.fake.requests().len();
    sender_identity::reconcile(Arc::clone(&cached), Arc::clone(&env.ctx))
        .await
        .expect("reconcile");
    assert_eq!(
        env.fake.requests().len(),
        before,
        "no read, no write from a copy this process wrote over: {:?}",
        &env.fake.requests()[before..]
    );
    // Another process (no memory of the writes) decides from the stale copy: its
    // write conflicts and nothing is mailed either — only later, and at a cost.
    let other = support::context(
        env.ctx.client.clone(),
        env.relays.as_reader(),
        env.ctx.confirmation.clone(),
    );
    let result = sender_identity::reconcile(Arc::clone(&cached), other).await;
    assert!(
        matches!(
            result,
            Err(smtp_relay_operator::controller::Error::Conflict)
        ),
        "{result:?}"
    );
    assert!(env.fake.requests().len() > before);
    // The cache catches up: an ordinary reconcile, nothing to do, nothing remembered.
    env.reconcile(&name).await;
    assert_eq!(env.confirmation(&name).attempt_id, sent.attempt_id);
    assert!(env.ctx.own_writes.is_empty());
}

#[tokio::test]
async fn identities_of_one_relay_read_its_secret_and_ca_once_for_their_mails() {
    let env = env(None);
    let names: Vec<String> = (0..4).map(|i| unique(&format!("batch{i}"))).collect();
    for name in &names {
        env.create_identity(name, identity_spec(&format!("{name}@example.test"), "en"));
    }
    let reads = |kind: &str| {
        env.fake
            .requests()
            .iter()
            .filter(|c| c.method == "GET" && c.path.contains(kind))
            .count()
    };
    let (secrets, config_maps) = (reads("/secrets/"), reads("/configmaps/"));
    for name in &names {
        env.reconcile(name).await;
    }
    for name in &names {
        assert!(env.confirmation(name).sent_at.is_some());
        env.mail(name);
    }
    assert_eq!(reads("/secrets/") - secrets, 1, "one credentials read");
    assert_eq!(reads("/configmaps/") - config_maps, 1, "one CA read");
    assert!(!env.ctx.mail_inputs.is_empty());
}

/// The events recorded for an identity, by reason.
fn event_reasons(env: &Env, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in env.fake.dump().lines() {
        let Some((path, obj)) = line.split_once(": ") else {
            continue;
        };
        if path.contains("/events/") && obj.contains(name) {
            let obj: Value = serde_json::from_str(obj).unwrap_or(Value::Null);
            out.push(obj["reason"].as_str().unwrap_or_default().to_string());
        }
    }
    out
}

#[tokio::test]
async fn a_confirmation_holds_only_for_the_relay_it_went_through() {
    // The bypass of the security review: confirm through one relay, then point the
    // identity at another. The confirmation does not carry over: the owner is asked
    // again, through the relay now in use.
    let mut env = env(None);
    let name = unique("binding");
    let address = format!("{name}@example.test");
    env.create_identity(&name, identity_spec(&address, "en"));
    env.reconcile(&name).await;
    let (_, _, code) = env.mail(&name);
    env.edit(&name, |o| {
        o["metadata"]["annotations"] = json!({CODE_ANNOTATION: code})
    });
    env.reconcile(&name).await;
    let confirmed = env.confirmation(&name);
    assert_eq!(confirmed.state, ConfirmationState::Confirmed);
    let bound = confirmed.relay.clone().expect("bound to a relay");
    assert!(
        bound.starts_with(&format!("SmtpRelay {NS}/corporate via localhost:")),
        "{bound}"
    );
    assert_eq!(env.condition(&name, "Ready").0, "True");

    let mut other = serde_json::to_value(relay_object(true)).expect("json");
    other["metadata"]["name"] = json!("elsewhere");
    env.relays.apply_watcher_event(&watcher::Event::Apply(
        serde_json::from_value(other).expect("relay"),
    ));
    env.edit(&name, |o| {
        o["spec"]["relayRef"] = json!({"kind": "SmtpRelay", "name": "elsewhere"});
        o["metadata"]["generation"] = json!(2);
    });
    env.reconcile(&name).await;
    let c = env.confirmation(&name);
    assert_eq!(c.state, ConfirmationState::Pending, "asked again");
    assert_ne!(c.attempt_id, confirmed.attempt_id);
    assert_eq!(c.attempts, confirmed.attempts + 1);
    assert!(
        c.relay
            .as_deref()
            .is_some_and(|r| r.starts_with(&format!("SmtpRelay {NS}/elsewhere"))),
        "{:?}",
        c.relay
    );
    assert_eq!(env.condition(&name, "Ready").0, "False");
    assert_eq!(
        env.condition(&name, "Confirmed"),
        ("False".into(), "Pending".into())
    );
    env.mail(&name);
}

#[tokio::test]
async fn five_wrong_codes_withdraw_the_attempt_with_one_event() {
    let env = env(None);
    let name = unique("guess");
    env.create_identity(&name, identity_spec(&format!("{name}@example.test"), "en"));
    env.reconcile(&name).await;
    let (_, _, code) = env.mail(&name);
    for i in 0..sender_identity::MAX_FAILED_CODES {
        env.edit(&name, |o| {
            o["metadata"]["annotations"] = json!({CODE_ANNOTATION: format!("ZZZZ-ZZ{i:02}")})
        });
        env.reconcile(&name).await;
        assert!(
            !env.identity(&name)
                .metadata
                .annotations
                .unwrap_or_default()
                .contains_key(CODE_ANNOTATION),
            "each code is taken off the object"
        );
    }
    let c = env.confirmation(&name);
    assert_eq!(
        (c.state, c.failed_codes),
        (
            ConfirmationState::Expired,
            sender_identity::MAX_FAILED_CODES
        )
    );
    assert_eq!(c.code_digest, None);
    assert_eq!(
        env.condition(&name, "Confirmed"),
        ("False".into(), "CodeAttemptsExhausted".into())
    );
    // The right code no longer works.
    env.edit(&name, |o| {
        o["metadata"]["annotations"] = json!({CODE_ANNOTATION: code})
    });
    env.reconcile(&name).await;
    assert_ne!(env.confirmation(&name).state, ConfirmationState::Confirmed);
    let reasons = event_reasons(&env, &name);
    assert_eq!(
        reasons
            .iter()
            .filter(|r| *r == "CodeAttemptsExhausted")
            .count(),
        1,
        "{reasons:?}"
    );
    assert!(!reasons.iter().any(|r| r == "CodeRejected"), "{reasons:?}");
}

#[tokio::test]
async fn the_confirmation_sender_is_the_operators() {
    let env = env(None);
    let ctx = support::context(
        env.ctx.client.clone(),
        env.ctx.relays.clone(),
        Some(ConfirmContext {
            key: env.key.clone(),
            base_url: None,
            sender: smtp_relay_operator::confirm::ConfirmationSender {
                from: Some("confirm@platform.example.test".into()),
                from_name: "Platform Mail Team".into(),
                reply_to: Some("platform-team@example.test".into()),
            },
        }),
    );
    let name = unique("sender");
    env.create_identity(&name, identity_spec(&format!("{name}@example.test"), "en"));
    sender_identity::reconcile(Arc::new(env.identity(&name)), ctx)
        .await
        .expect("reconcile");
    let (raw, _, _) = env.mail(&name);
    assert!(
        raw.contains("From: \"Platform Mail Team\" <confirm@platform.example.test>"),
        "{raw}"
    );
    assert!(
        raw.contains("Reply-To: platform-team@example.test"),
        "{raw}"
    );
    assert!(!raw.contains("noreply@example.test"), "{raw}");
}
