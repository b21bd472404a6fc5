//! The `verify` command as a user runs it: the binary, real files, the Postfix
//! harness, exit codes 0 / 1 / 2.

mod support;

use std::process::Command;

/// `verify` with loopback allowed: the harness listens there, and the default
/// destination policy refuses loopback for SmtpRelays.
fn verify(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--allowed-destinations", "127.0.0.0/8"];
    all.extend_from_slice(args);
    verify_without_allow(&all)
}

fn verify_without_allow(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-relay-operator"))
        // Tests and benches never ask the system resolver.
        .env("SMTP_RELAY_DELIVERABILITY_CHECKS", "false")
        .arg("verify")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The demo relay's CA as the Secret the examples reference.
fn ca_manifest(dir: &std::path::Path) -> String {
    let pem = String::from_utf8(support::harness().ca_pem()).expect("pem");
    let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    let path = dir.join("ca.yaml");
    std::fs::write(
        &path,
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: harness-ca\n  namespace: demo\nstringData:\n  ca.crt: |\n{indented}"),
    )
    .expect("write");
    path.display().to_string()
}

#[test]
fn the_bundled_examples_show_what_works_and_why_the_rest_does_not() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = ca_manifest(dir.path());
    support::dovecot::dovecot();
    let (code, table, progress) = verify(&["-f", "examples/demo", "-f", &ca]);
    assert_eq!(
        code, 1,
        "some relays are broken on purpose\n{table}\n{progress}"
    );
    for (name, ready, reason) in [
        ("demo/corporate", "True", "Verified"),
        ("demo/smtps", "True", "Verified"),
        ("demo/round-trip", "True", "Verified"),
        ("demo/wrong-password", "False", "AuthRejected"),
        ("demo/wrong-port", "False", "ConnectionRefused"),
        ("demo/no-starttls", "False", "StartTlsNotOffered"),
        ("demo/untrusted-certificate", "False", "CertificateInvalid"),
    ] {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
        assert!(line.contains(ready) && line.contains(reason), "{line}");
    }
    assert!(
        table.contains("535"),
        "the server's reply is shown:\n{table}"
    );
    assert!(
        progress.contains("verifying SmtpRelay demo/corporate"),
        "{progress}"
    );
    assert!(
        progress.contains("SmtpRelay demo/round-trip: Delivered=True Delivered: test message arrived in \"INBOX\" in "),
        "the round trip's delivery and latency are shown:\n{progress}"
    );
    assert!(!table.contains("an-old-password") && !progress.contains("an-old-password"));
}

#[test]
fn all_ready_is_exit_zero_and_json_carries_the_status() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = ca_manifest(dir.path());
    let (code, out, err) = verify(&[
        "-f",
        "examples/demo/01-working-starttls.yaml",
        "-f",
        &ca,
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let status = &v[0]["status"];
    assert_eq!(v[0]["name"], "corporate");
    assert!(
        status["lastVerification"]["messageId"].is_string(),
        "{status}"
    );
    assert!(status["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "TestMessageAccepted" && c["status"] == "True")
    }));
}

#[test]
fn a_missing_secret_is_reported_like_the_controller_would() {
    let (code, out, _) = verify(&[
        "-f",
        "examples/demo/02-working-implicit-tls.yaml",
        "-o",
        "yaml",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("SecretNotFound"), "{out}");
}

#[test]
fn unusable_input_is_exit_two_with_file_document_and_field() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {a: b}\n---\napiVersion: smtprelay.io/v1alpha1\nkind: SmtpRelay\nmetadata: {name: r, namespace: x}\nspec:\n  host: smtp.example.com\n  port: 70000\n  defaultSender: {address: a@example.com}\n",
    )
    .expect("write");
    let (code, _, err) = verify(&["-f", &bad.display().to_string()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.yaml (document 2)") && err.contains("spec.port"),
        "{err}"
    );
    let (code, _, err) = verify(&["-f", "no/such/file.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("no/such/file.yaml"), "{err}");
    std::fs::write(&bad, "key: [unclosed\n").expect("write");
    let (code, _, err) = verify(&["-f", &bad.display().to_string()]);
    assert_eq!(code, 2);
    assert!(err.contains("not valid YAML"), "{err}");
}

#[tokio::test]
async fn secrets_missing_from_the_files_can_come_from_the_cluster() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let fake = support::fake_api::FakeApi::default();
    fake.put(
        "/api/v1/namespaces/demo/secrets/harness-credentials",
        serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "harness-credentials", "namespace": "demo", "labels": {"smtprelay.io/credentials": "true"}},
            "data": {"username": b64(support::USER), "password": b64(support::PASSWORD)}}),
    );
    let addr = fake.clone().serve().await;
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{addr}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"),
    )
    .expect("kubeconfig");
    let ca = ca_manifest(dir.path());
    let run = move || {
        Command::new(env!("CARGO_BIN_EXE_smtp-relay-operator"))
            // Tests and benches never ask the system resolver.
            .env("SMTP_RELAY_DELIVERABILITY_CHECKS", "false")
            .args([
                "verify",
                "--allowed-destinations",
                "127.0.0.0/8",
                "-f",
                "examples/demo/02-working-implicit-tls.yaml",
                "-f",
                &ca,
                "--secrets-from-cluster",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run verify")
    };
    let out = tokio::task::spawn_blocking(run).await.expect("join");
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("Verified"), "{table}");
    assert!(
        fake.requests()
            .iter()
            .any(|c| c.path == "/api/v1/namespaces/demo/secrets/harness-credentials"),
        "the Secret came from the cluster"
    );
}

/// Issue #15: without an explicit allow, a SmtpRelay aimed at loopback is refused
/// before any connection, and says by which rule.
#[test]
fn loopback_is_not_a_destination_unless_allowed() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = ca_manifest(dir.path());
    let (code, out, err) =
        verify_without_allow(&["-f", "examples/demo/01-working-starttls.yaml", "-f", &ca]);
    assert_eq!(code, 1, "{out}\n{err}");
    let row = out
        .lines()
        .find(|l| l.contains("demo/corporate"))
        .unwrap_or_else(|| panic!("no row:\n{out}"));
    assert!(
        row.contains("DestinationNotAllowed") && row.contains("connect"),
        "{row}"
    );
    assert!(
        out.contains("127.0.0.1 is not an allowed destination for a SmtpRelay")
            && out.contains("127.0.0.0/8")
            && out.contains("--allowed-destinations")
            && out.contains("no connection was opened"),
        "{out}"
    );
}

/// Issue #15: what the fuzzing campaign found, through the binary: every case is
/// refused as unusable input (exit 2, file and document named), never a panic (101),
/// and a byte order mark is no reason to refuse a file.
#[test]
fn hostile_manifests_are_refused_with_exit_two_never_a_panic() {
    let dir = tempfile::tempdir().expect("tmp");
    let relay = |spec: &str| {
        format!(
            "apiVersion: smtprelay.io/v1alpha1\nkind: SmtpRelay\nmetadata: {{name: r, namespace: ns}}\nspec:\n  host: smtp.example.com\n  defaultSender: {{address: a@example.com}}\n{spec}"
        )
    };
    let long_name = "a".repeat(70_000);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "huge interval",
            relay("  verification: {interval: 5124095576030431h}\n"),
            "spec.verification.interval",
        ),
        (
            "interval that overflowed when added",
            relay("  verification: {interval: 5124095576030430h9h}\n"),
            "spec.verification.interval",
        ),
        (
            "timeout rounded up to 1s",
            relay("  verification: {timeout: 0.99999999999999999999s}\n"),
            "spec.verification.timeout",
        ),
        (
            "huge name",
            format!(
                "apiVersion: smtprelay.io/v1alpha1\nkind: SmtpRelay\nmetadata: {{name: {long_name}, namespace: ns}}\nspec:\n  host: smtp.example.com\n  defaultSender: {{address: a@example.com}}\n"
            ),
            "metadata.name",
        ),
        ("duplicate key", relay("  port: 1\n  port: 2525\n"), "already set in map"),
        (
            "duplicate JSON key",
            r#"{"apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay", "metadata": {"name": "r", "namespace": "ns"}, "spec": {"host": "smtp.example.com", "port": 1, "port": 2525, "defaultSender": {"address": "a@example.com"}}}"#.to_string(),
            "already set in map",
        ),
        ("NaN port", relay("  port: .nan\n"), "NaN"),
        ("NUL in title", relay("  title: \"a\\0b\"\n"), "spec.title"),
        ("host [.]", relay("  host: \"[.]\"\n").replacen("  host: smtp.example.com\n", "", 1), "spec.host"),
        (
            "Secret data that is not a string",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: ns}\ndata: {password: [x]}\n".into(),
            ".data.password",
        ),
    ];
    for (what, text, words) in cases {
        let path = dir.path().join("case.yaml");
        std::fs::write(&path, &text).expect("write");
        let (code, _, err) = verify(&["-f", &path.display().to_string()]);
        assert_eq!(code, 2, "{what}: {err}");
        assert!(
            err.contains("case.yaml (document 1)") && err.contains(words),
            "{what}: {err}"
        );
        assert!(
            err.len() < 4_000,
            "{what}: the refusal repeats the input: {} bytes",
            err.len()
        );
    }
    // A byte order mark is skipped, as the API server does.
    let closed = support::closed_port();
    let path = dir.path().join("bom.yaml");
    let spec = format!(
        "  port: {}\n  tls: {{mode: None}}\n  verification: {{timeout: 1s}}\n",
        closed.port
    );
    std::fs::write(
        &path,
        format!(
            "\u{feff}{}",
            relay(&spec).replace("smtp.example.com", "127.0.0.1")
        ),
    )
    .expect("write");
    let (code, out, err) = verify(&["-f", &path.display().to_string()]);
    assert_ne!(code, 2, "a BOM is not unusable input: {err}");
    assert!(out.contains("ns/r"), "{out}");
}

/// The demo's DNS zone, served as `make demo` serves it: its identities' domains are
/// checked and printed check by check.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_identities_are_checked_against_the_demo_zone() {
    let zone = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo/dns/zone.txt"),
    )
    .expect("zone");
    let dns = support::dns::DnsServer::start_zone_text(&zone).await;
    let dir = tempfile::tempdir().expect("tmp");
    let ca = ca_manifest(dir.path());
    let addr = dns.addr.to_string();
    let (code, out, _) = tokio::task::spawn_blocking(move || {
        verify(&[
            "--deliverability-checks=true",
            "--dns-server",
            &addr,
            "--dnsbl-zones",
            "dnsbl.test",
            "-f",
            "examples/demo/01-working-starttls.yaml",
            "-f",
            "examples/demo/08-sender-identities.yaml",
            "-f",
            &ca,
        ])
    })
    .await
    .expect("join");
    // The relay works, but legacy-billing enforces a domain that is not authenticated.
    assert_eq!(code, 1, "{out}");
    for line in [
        "SmtpRelay demo/corporate: NotListed=True NotListed: 127.0.0.1 on none of dnsbl.test",
        "SenderIdentity demo/purchasing <purchasing@example.test> via SmtpRelay demo/corporate",
        "SPF    pass       v=spf1 ip4:127.0.0.1 -all",
        "DKIM   Valid      s1: s1._domainkey.example.test: 2048-bit RSA key",
        "DMARC  Found      v=DMARC1; p=quarantine; rua=mailto:dmarc@example.test  (at _dmarc.example.test)",
        "DomainAuthenticated=True Authenticated",
        "SenderIdentity demo/legacy-billing <billing@legacy.test>",
        "SPF    softfail   v=spf1 ip4:192.0.2.10 ~all",
        "DKIM   Weak       s1: s1._domainkey.legacy.test: 1024-bit RSA key",
        "DomainAuthenticated=False SpfNotAuthorizingRelay",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    assert!(dns.queries("example.test", "TXT") >= 1);
}
