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
use smtp_relay_operator::{plugin, report};
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
        "status": {"observedGeneration": 1, "conditions": [
            {"type": "NotListed", "status": "False", "reason": "Listed", "message": "127.0.0.2 is listed in bl.test",
             "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "reason": "Verified",
            "message": "ok", "lastTransitionTime": now}],
            "blocklist": {"checkedAt": now, "addresses": ["127.0.0.2"], "zones": ["bl.test"],
                          "listings": [{"address": "127.0.0.2", "zone": "bl.test", "code": "127.0.0.2"}]},
            "lastVerification": {"time": now, "result": "Succeeded", "inputs": "g1", "durationMs": {}},
            "recentVerifications": {"count": 3, "failures": 1, "p50Micros": 2345, "p95Micros": 9100,
                                    "totalMicros": [2345, 9100, 0], "outcomes": "SSF"}}}));
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
                           {"type": "DomainAuthenticated", "status": "False", "reason": "SpfNotAuthorizingRelay",
                            "message": "", "lastTransitionTime": now},
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
    // The relay's rolling summary, and the identity shows its relay's.
    let open_line = table.lines().find(|l| l.contains(" open ")).expect("open");
    assert!(open_line.contains("2.35ms/9.10ms  1/3"), "{table}");
    let sales_line = table
        .lines()
        .find(|l| l.starts_with("SenderIdentity"))
        .expect("sales");
    assert!(sales_line.contains("2.35ms/9.10ms  1/3"), "{table}");
    for col in ["P50/P95", "FAILED", "DELIVERABILITY"] {
        assert!(header.contains(col), "{header}");
    }
    // DNS checks: the relay's blocklist answer, the identity's domain.
    assert!(open_line.ends_with("Listed (bl.test)"), "{table}");
    assert!(sales_line.ends_with("SpfNotAuthorizingRelay"), "{table}");
    let open = rows.iter().find(|r| r.name == "open").expect("open");
    assert_eq!(open.deliverability, "Listed (bl.test)");
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

/// What the export of `world()` must say, row by row: the relays sheet (or PDF
/// section), then the identities. `None` is an empty cell; numbers are numbers.
#[derive(Clone, Debug, PartialEq)]
enum Want {
    Text(&'static str),
    Owned(String),
    Number(f64),
    Empty,
}

fn expected_export(now: &str) -> [Vec<Vec<Want>>; 2] {
    use Want::*;
    let h = support::harness();
    let port = Number(f64::from(h.plain_port));
    let now = || Owned(now.to_string());
    [
        vec![
            vec![
                Text("team/open"),
                Empty,
                Text("127.0.0.1"),
                port.clone(),
                Text("None"),
                Text("None"),
                Text("noreply@example.test"),
                Empty,
                Empty,
                Text("all"),
                Empty,
                Text("True"),
                now(),
                Number(2.345),
                Number(9.1),
                Empty,
            ],
            vec![
                Text("team/plain"),
                Text("Plain, commas, \"quotes\""),
                Text("127.0.0.1"),
                port.clone(),
                Text("None"),
                Text("Plain"),
                Text("noreply@example.test"),
                Text("ACME, Inc"),
                Text(support::USER),
                Text("sales"),
                Empty,
                Text("False (AuthMechanismUnsupported)"),
                now(),
                Empty,
                Empty,
                Empty,
            ],
        ],
        vec![vec![
            Text("team/sales"),
            Text("SmtpRelay open"),
            Text("127.0.0.1"),
            port,
            Text("None"),
            Text("None"),
            Text("sales@example.test"),
            Empty,
            Empty,
            Text("all"),
            Text("Pending"),
            Text("False (Pending)"),
            now(),
            Number(2.345),
            Number(9.1),
            Empty,
        ]],
    ]
}

fn relay_time(fake: &FakeApi) -> String {
    fake.get(&relay_path("open")).expect("relay")["status"]["lastVerification"]["time"]
        .as_str()
        .expect("time")
        .to_string()
}

#[tokio::test]
async fn xlsx_export_reads_back_cell_by_cell() {
    use calamine::{Data, Reader, Xlsx};
    let fake = world();
    let rows = plugin::collect(&fake.client(), Some(NS))
        .await
        .expect("collect");
    let bytes = report::to_xlsx(&rows).expect("xlsx");
    let mut book: Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes)).expect("an xlsx file");
    assert_eq!(book.sheet_names(), ["Relays", "Sender identities"]);
    let want = expected_export(&relay_time(&fake));
    for (sheet, want) in ["Relays", "Sender identities"].iter().zip(want) {
        let range = book.worksheet_range(sheet).expect("sheet");
        let got: Vec<Vec<Data>> = range.rows().map(<[Data]>::to_vec).collect();
        let header: Vec<String> = got[0].iter().map(|c| c.to_string()).collect();
        assert_eq!(header, report::xlsx_headers(), "{sheet} header");
        assert_eq!(got.len(), want.len() + 1, "{sheet}: {got:?}");
        for (r, (row, want)) in got[1..].iter().zip(&want).enumerate() {
            assert_eq!(row.len(), want.len(), "{sheet} row {r}: {row:?}");
            for (c, (cell, want)) in row.iter().zip(want).enumerate() {
                let ok = match (cell, want) {
                    (Data::String(s), Want::Text(t)) => s == t,
                    (Data::String(s), Want::Owned(t)) => s == t,
                    (Data::Float(f), Want::Number(n)) => (f - n).abs() < 1e-9,
                    (Data::Int(i), Want::Number(n)) => (*i as f64 - n).abs() < 1e-9,
                    (Data::Empty, Want::Empty) => true,
                    _ => false,
                };
                assert!(
                    ok,
                    "{sheet} row {r} column {} ({}): got {cell:?}, want {want:?}",
                    c + 1,
                    report::COLUMNS[c]
                );
            }
        }
    }
}

/// `pdftotext -layout` of the PDF, as lines.
fn pdf_text(bytes: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("export.pdf");
    std::fs::write(&path, bytes).expect("write");
    let out = std::process::Command::new("pdftotext")
        .arg("-layout")
        .arg(&path)
        .arg("-")
        .output()
        .expect("pdftotext (Debian poppler-utils; scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A table line's cells: columns are at least two spaces apart.
fn columns_of(line: &str) -> Vec<String> {
    line.trim()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn pdf_export_reads_back_line_by_line() {
    let fake = world();
    let rows = plugin::collect(&fake.client(), Some(NS))
        .await
        .expect("collect");
    let lines = pdf_text(&report::to_pdf(&rows, "2026-01-02T03:04:05Z"));
    let mut lines = lines.iter().filter(|l| !l.trim().is_empty());
    let mut next = || lines.next().cloned().unwrap_or_default();
    assert_eq!(next().trim(), "SMTP relays and sender identities");
    assert_eq!(
        next().trim(),
        "Exported 2026-01-02T03:04:05Z: 2 relays, 1 sender identities"
    );
    let header: Vec<String> = report::COLUMNS.iter().map(|c| c.to_string()).collect();
    for (section, want) in ["Relays", "Sender identities"]
        .iter()
        .zip(expected_export(&relay_time(&fake)))
    {
        assert_eq!(next().trim(), *section);
        assert_eq!(columns_of(&next()), header, "{section} header");
        for want in want {
            let want: Vec<String> = want
                .iter()
                .map(|w| match w {
                    Want::Text(t) => t.to_string(),
                    Want::Owned(t) => t.clone(),
                    Want::Number(n) if n.fract() == 0.0 => format!("{n}"),
                    Want::Number(n) => format!("{:.2}ms", n),
                    Want::Empty => "-".into(),
                })
                .collect();
            assert_eq!(columns_of(&next()), want, "{section}");
        }
    }
    assert_eq!(next().trim(), "Page 1 of 1");
    assert_eq!(next(), "", "nothing after the last page's footer");
}

/// Many rows: the PDF breaks pages and repeats the header; every row is there once.
#[tokio::test]
async fn a_long_pdf_export_spans_pages_and_keeps_every_row() {
    let rows: Vec<plugin::Row> = (0..120)
        .map(|i| plugin::Row {
            kind: "SmtpRelay".into(),
            namespace: "team".into(),
            name: format!("relay-{i:03}"),
            host: "smtp.example.test".into(),
            ..Default::default()
        })
        .collect();
    let bytes = report::to_pdf(&rows, "now");
    std::fs::write(
        std::env::temp_dir().join("smtprelay-export-long.pdf"),
        &bytes,
    )
    .ok();
    let lines = pdf_text(&bytes);
    let ids: Vec<String> = lines
        .iter()
        .filter_map(|l| columns_of(l).first().cloned())
        .filter(|c| c.starts_with("team/relay-"))
        .collect();
    let want: Vec<String> = (0..120).map(|i| format!("team/relay-{i:03}")).collect();
    assert_eq!(ids, want);
    let headers = lines
        .iter()
        .filter(|l| columns_of(l).first().is_some_and(|c| c == "ID"))
        .count();
    let pages = lines
        .iter()
        .filter(|l| l.trim().starts_with("Page "))
        .count();
    assert!(pages >= 2, "{pages} pages");
    // One header per page for the relays, and one for the (empty) identities.
    assert_eq!(headers, pages + 1, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.trim() == format!("Page {pages} of {pages}"))
    );
}
