//! `verify`'s accept/refuse equals the real API server's (issue #15): a few hundred
//! manifests generated deterministically (valid bases mutated field by field with
//! edge values: boundaries, bad patterns, control characters, huge numbers, wrong
//! types, unknown fields, empty strings, nulls), each judged offline by the function
//! `verify` refuses a document with (`verify::load_text`) and by kube-apiserver (a
//! dry-run server-side apply with strict field validation of the same text, as
//! `kubectl apply --server-side --dry-run=server` sends it). Every disagreement is
//! reported.
//!
//! Needs SMTP_RELAY_E2E_KUBECONFIG (see tests/support/cluster.rs); skipped without it.

mod support;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::cluster::{self, Namespaces};

/// How many manifests are generated (besides the unmodified bases).
const CASES: usize = 320;

fn bases(ns: &str) -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay",
            "metadata": {"name": "corporate", "namespace": ns, "labels": {"team": "sales"},
                         "annotations": {"example.com/owner": "mail team"}},
            "spec": {
                "title": "Corporate relay (purchasing)",
                "host": "smtp.example.com", "port": 587,
                "tls": {"mode": "StartTls", "serverName": "mail.example.com",
                        "caBundleRef": {"kind": "ConfigMap", "name": "corp-ca", "key": "ca.crt"}},
                "auth": {"mechanism": "Plain",
                         "credentialsSecretRef": {"name": "relay-credentials", "usernameKey": "username", "passwordKey": "password"}},
                "defaultSender": {"address": "apps@example.com", "name": "ACME Applications"},
                "noReply": {"address": "no-reply@example.com", "name": "No reply"},
                "customHeaders": [{"name": "X-Campaign", "value": "transactional"}, {"name": "X-Team", "value": "sales"}],
                "usage": ["purchasing", "sales"],
                "verification": {"recipient": "postmaster@example.com", "interval": "1h30m", "timeout": "30s"}
            }
        }),
        json!({
            "apiVersion": "smtprelay.io/v1alpha1", "kind": "ClusterSmtpRelay",
            "metadata": {"name": "shared"},
            "spec": {
                "host": "10.0.0.25", "port": 465,
                "tls": {"mode": "Tls", "caBundleRef": {"kind": "Secret", "name": "ca", "namespace": "mail-system"}},
                "auth": {"mechanism": "Login", "credentialsSecretRef": {"name": "creds", "namespace": "mail-system"}},
                "defaultSender": {"address": "noreply@example.com"},
                "default": true, "allowCredentialPublishing": false, "allowUnconfirmedSenders": false,
                "allowedNamespaces": {"matchLabels": {"mail": "allowed"}},
                "verification": {"interval": "24h", "timeout": "5m"}
            }
        }),
        json!({
            "apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
            "metadata": {"name": "sales", "namespace": ns},
            "spec": {"address": "sales@example.com", "displayName": "Sales", "replyTo": "sales-replies@example.com",
                     "signature": "ACME Sales\nhttps://example.com", "usage": ["sales"],
                     "relayRef": {"kind": "ClusterSmtpRelay", "name": "shared"},
                     "confirmation": {"required": true, "ttl": "48h", "language": "fr"},
                     "writeConnectionSecretToRef": {"name": "sales-smtp"}}
        }),
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "relay-credentials", "namespace": ns,
                         "labels": {"smtprelay.io/credentials": "true"}},
            "type": "Opaque",
            "data": {"password": "Q29ycmVjdC1Ib3JzZS00Mg=="},
            "stringData": {"username": "relay-user"}
        }),
    ]
}

/// Fields each base kind has (or may have), as paths.
fn fields(kind: &str) -> Vec<&'static str> {
    let common = [
        "metadata.name",
        "metadata.labels.team",
        "metadata.labels",
        "metadata.annotations",
        "metadata.generation",
        "metadata.unknown",
        "unknown",
        "status",
    ];
    let relay = [
        "spec",
        "spec.title",
        "spec.host",
        "spec.port",
        "spec.tls",
        "spec.tls.mode",
        "spec.tls.serverName",
        "spec.tls.insecureSkipVerify",
        "spec.tls.caBundleRef",
        "spec.tls.caBundleRef.kind",
        "spec.tls.caBundleRef.name",
        "spec.tls.caBundleRef.key",
        "spec.tls.caBundleRef.namespace",
        "spec.auth",
        "spec.auth.mechanism",
        "spec.auth.credentialsSecretRef",
        "spec.auth.credentialsSecretRef.name",
        "spec.auth.credentialsSecretRef.usernameKey",
        "spec.auth.credentialsSecretRef.passwordKey",
        "spec.auth.credentialsSecretRef.namespace",
        "spec.defaultSender",
        "spec.defaultSender.address",
        "spec.defaultSender.name",
        "spec.noReply",
        "spec.noReply.address",
        "spec.noReply.name",
        "spec.customHeaders",
        "spec.customHeaders.0",
        "spec.customHeaders.0.name",
        "spec.customHeaders.0.value",
        "spec.usage",
        "spec.usage.0",
        "spec.verification",
        "spec.verification.recipient",
        "spec.verification.interval",
        "spec.verification.timeout",
        "spec.verification.interval",
        "spec.verification.timeout",
        "spec.host",
        "spec.title",
        "spec.unknown",
    ];
    let mut out: Vec<&'static str> = common.to_vec();
    match kind {
        "SmtpRelay" => out.extend(relay),
        "ClusterSmtpRelay" => {
            out.extend(relay);
            out.extend([
                "spec.default",
                "spec.allowCredentialPublishing",
                "spec.allowUnconfirmedSenders",
                "spec.allowedNamespaces",
                "spec.allowedNamespaces.matchLabels.mail",
                "spec.allowedNamespaces.matchExpressions",
            ]);
        }
        "SenderIdentity" => out.extend([
            "spec",
            "spec.address",
            "spec.displayName",
            "spec.replyTo",
            "spec.signature",
            "spec.usage",
            "spec.usage.0",
            "spec.relayRef",
            "spec.relayRef.kind",
            "spec.relayRef.name",
            "spec.confirmation",
            "spec.confirmation.required",
            "spec.confirmation.ttl",
            "spec.confirmation.language",
            "spec.writeConnectionSecretToRef",
            "spec.writeConnectionSecretToRef.name",
            "spec.unknown",
        ]),
        _ => out.extend([
            "data",
            "data.password",
            "data.bad key",
            "data...x",
            "stringData",
            "stringData.username",
            "stringData.password",
            "type",
            "immutable",
        ]),
    }
    out
}

/// Edge values: boundaries, bad patterns, control characters, huge numbers, wrong
/// types, empty strings, nulls, and plausible good values.
fn edge(rng: &mut StdRng) -> Value {
    let mut strings: Vec<&str> = support::hosts::MALFORMED_HOSTS.to_vec();
    strings.extend_from_slice(&[
        "",
        "a",
        "x",
        "Plain",
        "Login",
        "None",
        "StartTls",
        "Tls",
        "Secret",
        "ConfigMap",
        "ClusterSmtpRelay",
        "SmtpRelay",
        "en",
        "fr",
        "de",
        "smtp.example.com",
        "smtp.example.com.",
        "[2001:db8::25]",
        "2001:db8::25",
        "10.0.0.25",
        "[10.0.0.25]",
        "0177.0.0.1",
        "-bad.example.com",
        "xn--bcher-kva.example",
        "a_b.example",
        "a@example.com",
        "o'brien+tag@mail.example.co.uk",
        "a@b@example.com",
        "not-an-address",
        "1m",
        "59s",
        "60s",
        "1h",
        "1h30m",
        "1.5h",
        "0.5s",
        "1s",
        "0.999999999s",
        "0.99999999999999999999s",
        "5m",
        "300.000000001s",
        "5m0.000000001s",
        "168h",
        "168h1ns",
        "4m59.999999999s",
        "5124095576030431h",
        "5124095576030430h9h",
        "2562047h47m16.854775807s",
        "2562047h47m16.854775808s",
        "10 minutes",
        "-5m",
        "1d",
        "X-Campaign",
        "X-A:",
        "X A",
        "from",
        "Message-ID",
        "x-smtprelay-verification",
        "team-a",
        "Team_A",
        "a.b",
        "sales",
        "sales",
        "ca.crt",
        "..x",
        ".",
        "bad key",
        "été",
        "\u{200f}rtl",
        "a\u{0}b",
        "a\u{1b}[31mb",
        "a\u{7f}b",
        "a\u{85}b",
        "a\u{9b}b",
        "a\u{2028}b",
        "a\u{2029}b",
        "a\tb",
        "a\r\nBcc: x@example.com",
        "a\nb",
        "yes",
        "on",
        "null",
        "~",
        "1e3",
        "0x10",
        "Q29ycmVjdC1Ib3JzZS00Mg==",
        "eA",
        "not base64!",
        "cGFzcw==\n",
        "true",
        "mail team",
    ]);
    match rng.random_range(0..10) {
        0..=4 => json!(strings[rng.random_range(0..strings.len())]),
        5 => {
            let len = [
                63usize, 64, 76, 77, 128, 129, 253, 254, 998, 999, 4096, 4097,
            ][rng.random_range(0..12)];
            let c = ['a', 'é', '1', '-', ' '][rng.random_range(0..5)];
            json!(c.to_string().repeat(len))
        }
        6 => {
            let n: [Value; 14] = [
                json!(0),
                json!(1),
                json!(25),
                json!(587),
                json!(65535),
                json!(65536),
                json!(-1),
                json!(2525.0),
                json!(2525.5),
                json!(1e20),
                json!(i64::MAX),
                json!(u64::MAX),
                json!(3),
                json!(0.5),
            ];
            n[rng.random_range(0..n.len())].clone()
        }
        7 => json!(rng.random_bool(0.5)),
        8 => Value::Null,
        _ => {
            let o: [Value; 7] = [
                json!({}),
                json!([]),
                json!([null]),
                json!(["sales", "sales"]),
                json!([{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]),
                json!({"name": "X-A", "value": "v"}),
                json!({"kind": "Secret", "name": "ca"}),
            ];
            o[rng.random_range(0..o.len())].clone()
        }
    }
}

fn set(doc: &mut Value, path: &str, value: Option<Value>) {
    let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut cur = doc;
    for p in parents {
        cur = match cur {
            Value::Array(a) => match p.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return,
            },
            Value::Object(m) => m.entry(p.to_string()).or_insert(json!({})),
            _ => return,
        };
    }
    match (cur, value) {
        (Value::Object(m), Some(v)) => {
            m.insert(last.to_string(), v);
        }
        (Value::Object(m), None) => {
            m.remove(*last);
        }
        (Value::Array(a), v) => {
            if let Some(i) = last.parse::<usize>().ok().filter(|i| *i < a.len()) {
                match v {
                    Some(v) => a[i] = v,
                    None => {
                        a.remove(i);
                    }
                }
            }
        }
        _ => {}
    }
}

/// The case's text: JSON with non-ASCII escaped, or YAML as serde_yaml writes it.
fn text_of(doc: &Value, yaml: bool) -> String {
    if yaml {
        serde_yaml::to_string(doc).expect("yaml")
    } else {
        cluster::escaped_json(doc)
    }
}

fn path_of(doc: &Value, test_ns: &str) -> String {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let name = match &doc["metadata"]["name"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let ns = doc["metadata"]["namespace"].as_str().unwrap_or(test_ns);
    let (prefix, plural, namespaced) = match kind {
        "SmtpRelay" => ("/apis/smtprelay.io/v1alpha1", "smtprelays", true),
        "ClusterSmtpRelay" => ("/apis/smtprelay.io/v1alpha1", "clustersmtprelays", false),
        "SenderIdentity" => ("/apis/smtprelay.io/v1alpha1", "senderidentities", true),
        _ => ("/api/v1", "secrets", true),
    };
    if namespaced {
        format!(
            "{prefix}/namespaces/{}/{plural}/{}",
            cluster::path_segment(ns),
            cluster::path_segment(&name)
        )
    } else {
        format!("{prefix}/{plural}/{}", cluster::path_segment(&name))
    }
}

#[tokio::test]
async fn verify_and_the_api_server_agree_on_generated_manifests() {
    let Some(path) = cluster::kubeconfig_path() else {
        return;
    };
    let client = cluster::client(&path).await;
    cluster::apply_crds(&client).await;
    let ns = Namespaces::create(&client, vec![format!("agree-{}", cluster::rand_id())]).await;
    let namespace = ns.names[0].clone();
    cluster::with_cleanup(&ns, async {
        let bases = bases(&namespace);
        let mut rng = StdRng::seed_from_u64(15);
        let mut cases: Vec<(String, Value, bool)> = bases
            .iter()
            .map(|b| (format!("base {}", b["kind"]), b.clone(), false))
            .collect();
        for i in 0..CASES {
            let base = &bases[i % bases.len()];
            let mut doc = base.clone();
            let kind = base["kind"].as_str().unwrap_or_default().to_string();
            let fields = fields(&kind);
            let edits = if rng.random_bool(0.8) { 1 } else { 2 };
            let mut what = Vec::new();
            for _ in 0..edits {
                let field = fields[rng.random_range(0..fields.len())];
                if rng.random_range(0..8) == 0 {
                    set(&mut doc, field, None);
                    what.push(format!("{field} removed"));
                } else {
                    let v = edge(&mut rng);
                    let shown: String = v.to_string().chars().take(40).collect();
                    set(&mut doc, field, Some(v));
                    what.push(format!("{field} = {shown}"));
                }
            }
            cases.push((format!("{kind}: {}", what.join(", ")), doc, rng.random_bool(0.5)));
        }

        let (mut both_accept, mut both_refuse) = (0, 0);
        let mut disagreements = Vec::new();
        for (what, doc, yaml) in &cases {
            let text = text_of(doc, *yaml);
            let mut m = smtp_relay_operator::verify::Manifests::default();
            let offline = smtp_relay_operator::verify::load_text(&text, "case.yaml", &mut m)
                .map_err(|e| e.to_string());
            let server =
                cluster::dry_run_apply_text(&client, &path_of(doc, &namespace), &text).await;
            if std::env::var_os("AGREEMENT_VERBOSE").is_some() {
                let short = |r: &Result<(), String>| match r {
                    Ok(()) => "accepted".to_string(),
                    Err(e) => e.chars().take(160).collect(),
                };
                eprintln!(
                    "{what}\n  verify: {}\n  server: {}",
                    short(&offline),
                    short(&server)
                );
            }
            match (&offline, &server) {
                (Ok(()), Ok(())) => both_accept += 1,
                (Err(_), Err(_)) => both_refuse += 1,
                _ => disagreements.push(format!(
                    "{what} ({}):\n  verify: {}\n  API server: {}",
                    if *yaml { "YAML" } else { "JSON" },
                    offline.err().unwrap_or_else(|| "accepted".into()),
                    server.err().unwrap_or_else(|| "accepted".into()),
                )),
            }
        }
        eprintln!(
            "{} manifests: {both_accept} accepted by both, {both_refuse} refused by both, {} disagreements",
            cases.len(),
            disagreements.len()
        );
        assert!(
            both_accept >= cases.len() / 10 && both_refuse >= cases.len() / 10,
            "the generated cases should exercise both verdicts"
        );
        assert!(
            disagreements.is_empty(),
            "verify and the API server disagree on {} of {} manifests:\n{}",
            disagreements.len(),
            cases.len(),
            disagreements.join("\n")
        );
    })
    .await;
}
