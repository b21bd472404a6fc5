//! The API as the cluster sees it: generated CRDs are current, the schema refuses
//! bad input at apply time, and the bundled examples are valid.

use kube::CustomResourceExt;
use serde_json::{Value, json};
use smtp_relay_operator::api::{self, ClusterSmtpRelay, SmtpRelay};
use smtp_relay_operator::schema::validate_against_crd;

#[test]
fn crds_directory_is_generated_from_the_types() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, yaml) in api::crds_yaml().expect("yaml") {
        for dir in ["crds", "charts/smtp-relay-operator/crds"] {
            let path = root.join(dir).join(name);
            let on_disk = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `make crds`", path.display()));
            assert!(
                on_disk == yaml,
                "{} is stale: run `make crds` and commit the result",
                path.display()
            );
        }
    }
}

fn relay(spec: Value) -> Value {
    json!({
        "apiVersion": "smtprelay.io/v1alpha1",
        "kind": "SmtpRelay",
        "metadata": {"name": "r", "namespace": "ns"},
        "spec": spec,
    })
}

fn base_spec() -> Value {
    json!({
        "host": "smtp.example.com",
        "defaultSender": {"address": "sender@example.com", "name": "Sender"},
    })
}

fn with(path: &[&str], value: Value) -> Value {
    let mut spec = base_spec();
    let mut cur = &mut spec;
    for key in &path[..path.len() - 1] {
        cur = cur
            .as_object_mut()
            .expect("object")
            .entry(key.to_string())
            .or_insert(json!({}));
    }
    cur[path[path.len() - 1]] = value;
    spec
}

fn errors(spec: Value) -> Vec<String> {
    validate_against_crd(&SmtpRelay::crd(), &relay(spec))
}

#[test]
fn a_minimal_relay_is_valid() {
    assert_eq!(errors(base_spec()), Vec::<String>::new());
}

#[test]
fn the_schema_refuses_bad_input_with_a_readable_message() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("port 0", with(&["port"], json!(0)), "spec.port"),
        ("port 70000", with(&["port"], json!(70000)), "spec.port"),
        (
            "host with scheme",
            with(&["host"], json!("smtp://mail.example.com")),
            "spec.host",
        ),
        (
            "host with path",
            with(&["host"], json!("mail.example.com/x")),
            "spec.host",
        ),
        (
            "host with space",
            with(&["host"], json!("mail example.com")),
            "spec.host",
        ),
        (
            "bad sender",
            with(&["defaultSender", "address"], json!("not-an-address")),
            "spec.defaultSender.address",
        ),
        (
            "two @",
            with(&["defaultSender", "address"], json!("a@b@example.com")),
            "spec.defaultSender.address",
        ),
        (
            "CRLF in display name",
            with(&["defaultSender", "name"], json!("Evil\r\nBcc: x@y.z")),
            "spec.defaultSender.name",
        ),
        (
            "CRLF in header value",
            with(
                &["customHeaders"],
                json!([{"name": "X-A", "value": "a\r\nBcc: victim@example.com"}]),
            ),
            "spec.customHeaders[0].value",
        ),
        (
            "LF in header value",
            with(
                &["customHeaders"],
                json!([{"name": "X-A", "value": "a\nb"}]),
            ),
            "spec.customHeaders[0].value",
        ),
        (
            "colon in header name",
            with(&["customHeaders"], json!([{"name": "X-A:", "value": "v"}])),
            "spec.customHeaders[0].name",
        ),
        (
            "space in header name",
            with(&["customHeaders"], json!([{"name": "X A", "value": "v"}])),
            "spec.customHeaders[0].name",
        ),
        (
            "override From",
            with(
                &["customHeaders"],
                json!([{"name": "from", "value": "x@y.z"}]),
            ),
            "cannot be overridden",
        ),
        (
            "override Message-ID",
            with(
                &["customHeaders"],
                json!([{"name": "Message-ID", "value": "<x@y>"}]),
            ),
            "cannot be overridden",
        ),
        (
            "duplicate headers",
            with(
                &["customHeaders"],
                json!([{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]),
            ),
            "unique",
        ),
        (
            "interval 10s",
            with(&["verification", "interval"], json!("10s")),
            "at least 1m",
        ),
        (
            "interval prose",
            with(&["verification", "interval"], json!("ten minutes")),
            "spec.verification.interval",
        ),
        (
            "timeout 10m",
            with(&["verification", "timeout"], json!("10m")),
            "between 1s and 5m",
        ),
        (
            "timeout 0s",
            with(&["verification", "timeout"], json!("0s")),
            "between 1s and 5m",
        ),
        (
            "bad recipient",
            with(&["verification", "recipient"], json!("inbox")),
            "spec.verification.recipient",
        ),
        (
            "unknown tls mode",
            with(&["tls", "mode"], json!("SSL")),
            "spec.tls.mode",
        ),
        (
            "unknown mechanism",
            with(
                &["auth"],
                json!({"mechanism": "CramMd5", "credentialsSecretRef": {"name": "s"}}),
            ),
            "spec.auth.mechanism",
        ),
        (
            "usage not a label",
            with(&["usage"], json!(["Purchasing Dept"])),
            "spec.usage[0]",
        ),
        (
            "duplicate usage",
            with(&["usage"], json!(["sales", "sales"])),
            "unique",
        ),
        (
            "missing host",
            json!({"defaultSender": {"address": "a@example.com"}}),
            "spec.host: required",
        ),
        (
            "unknown field",
            with(&["hostname"], json!("x")),
            "spec.hostname: unknown field",
        ),
    ];
    for (what, spec, expected) in cases {
        let errs = errors(spec);
        assert!(
            errs.iter().any(|e| e.contains(expected)),
            "{what}: expected an error mentioning {expected:?}, got {errs:?}"
        );
    }
}

#[test]
fn cross_namespace_references_are_refused_on_namespaced_relays() {
    // The CRD carries a CEL rule (checked by the API server, see tests/e2e); the
    // offline evaluator cannot run nested has(), so `verify` checks the same thing.
    let crd = serde_json::to_string(&SmtpRelay::crd()).expect("json");
    assert!(
        crd.contains("!has(self.spec.auth) || !has(self.spec.auth.credentialsSecretRef.namespace)")
    );
    let yaml = r#"
apiVersion: smtprelay.io/v1alpha1
kind: SmtpRelay
metadata: {name: r, namespace: ns}
spec:
  host: smtp.example.com
  defaultSender: {address: a@example.com}
  auth: {credentialsSecretRef: {name: s, namespace: other}}
"#;
    let mut m = smtp_relay_operator::verify::Manifests::default();
    let err = smtp_relay_operator::verify::load_text(yaml, "x.yaml", &mut m).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("x.yaml (document 1)") && text.contains("only allowed on ClusterSmtpRelay"),
        "{text}"
    );
}

#[test]
fn good_variants_are_accepted() {
    for spec in [
        with(&["host"], json!("10.0.0.25")),
        with(&["host"], json!("[2001:db8::25]")),
        with(&["host"], json!("smtp.example.com.")),
        with(&["port"], json!(2525)),
        with(
            &["defaultSender", "address"],
            json!("o'brien+tag@mail.example.co.uk"),
        ),
        with(
            &["customHeaders"],
            json!([{"name": "X-Mailer-Team", "value": "sales; campaign=été"}]),
        ),
        with(
            &["verification"],
            json!({"interval": "1h30m", "timeout": "45s", "recipient": "ops@example.com"}),
        ),
        with(
            &["tls"],
            json!({"mode": "Tls", "serverName": "relay.internal", "caBundleRef": {"kind": "ConfigMap", "name": "ca"}}),
        ),
        with(&["usage"], json!(["purchasing", "sales", "production"])),
    ] {
        assert_eq!(errors(spec.clone()), Vec::<String>::new(), "{spec}");
    }
}

#[test]
fn cluster_relays_may_name_secret_namespaces() {
    let obj = json!({
        "apiVersion": "smtprelay.io/v1alpha1",
        "kind": "ClusterSmtpRelay",
        "metadata": {"name": "shared"},
        "spec": {
            "host": "smtp.example.com",
            "defaultSender": {"address": "a@example.com"},
            "auth": {"credentialsSecretRef": {"name": "s", "namespace": "mail-system"}},
            "default": true,
            "allowedNamespaces": {"matchLabels": {"mail": "allowed"}},
        },
    });
    assert_eq!(
        validate_against_crd(&ClusterSmtpRelay::crd(), &obj),
        Vec::<String>::new()
    );
}

#[test]
fn crds_have_printer_columns_short_names_and_category() {
    for crd in [SmtpRelay::crd(), ClusterSmtpRelay::crd()] {
        let names = &crd.spec.names;
        assert_eq!(names.categories.as_deref(), Some(&["smtp".to_string()][..]));
        assert!(names.short_names.as_ref().is_some_and(|s| !s.is_empty()));
        let v = &crd.spec.versions[0];
        let cols: Vec<&str> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        for want in [
            "Host",
            "Port",
            "Security",
            "Auth",
            "Sender",
            "Usage",
            "Ready",
            "Last Verified",
            "Age",
        ] {
            assert!(
                cols.contains(&want),
                "{}: missing column {want}",
                names.kind
            );
        }
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        // Every spec field is documented for `kubectl explain`.
        let schema = serde_json::to_value(
            v.schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref()),
        )
        .expect("schema");
        let mut undocumented = Vec::new();
        fn walk(v: &Value, path: String, out: &mut Vec<String>) {
            if let Some(props) = v.get("properties").and_then(Value::as_object) {
                for (k, sub) in props {
                    let p = format!("{path}.{k}");
                    if sub.get("description").is_none() && !p.contains("allowedNamespaces.") {
                        out.push(p.clone());
                    }
                    walk(sub, p.clone(), out);
                    if let Some(items) = sub.get("items") {
                        walk(items, p, out);
                    }
                }
            }
        }
        walk(
            &schema["properties"]["spec"],
            "spec".into(),
            &mut undocumented,
        );
        assert!(
            undocumented.is_empty(),
            "{}: undocumented fields {undocumented:?}",
            names.kind
        );
    }
}

#[test]
fn every_example_manifest_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("examples dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let mut m = smtp_relay_operator::verify::Manifests::default();
            smtp_relay_operator::verify::load_text(
                &std::fs::read_to_string(&p).expect("read"),
                &p.display().to_string(),
                &mut m,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            seen += m.relays.len();
        }
    }
    assert!(seen >= 6, "only {seen} relays in examples/");
}

#[test]
fn sender_identity_schema() {
    use smtp_relay_operator::api::SenderIdentity;
    let obj = |spec: Value| {
        json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
               "metadata": {"name": "sales", "namespace": "team"}, "spec": spec})
    };
    let errors = |spec: Value| validate_against_crd(&SenderIdentity::crd(), &obj(spec));
    let good = json!({"address": "sales@example.com", "displayName": "Sales", "usage": ["sales"],
                      "relayRef": {"kind": "ClusterSmtpRelay", "name": "shared"},
                      "confirmation": {"required": true, "ttl": "48h", "language": "fr"},
                      "writeConnectionSecretToRef": {"name": "sales-smtp"}});
    assert_eq!(errors(good.clone()), Vec::<String>::new());
    assert_eq!(
        errors(json!({"address": "a@example.com"})),
        Vec::<String>::new(),
        "defaults suffice"
    );
    for (what, path, value, expected) in [
        ("bad address", "address", json!("sales"), "spec.address"),
        (
            "CRLF name",
            "displayName",
            json!("a\r\nb"),
            "spec.displayName",
        ),
        ("bad reply-to", "replyTo", json!("x"), "spec.replyTo"),
        (
            "unknown language",
            "confirmation",
            json!({"language": "de"}),
            "spec.confirmation.language",
        ),
        (
            "ttl too short",
            "confirmation",
            json!({"ttl": "1m"}),
            "between 5m and 168h",
        ),
        (
            "ttl too long",
            "confirmation",
            json!({"ttl": "400h"}),
            "between 5m and 168h",
        ),
        (
            "unknown relay kind",
            "relayRef",
            json!({"kind": "Relay", "name": "x"}),
            "spec.relayRef.kind",
        ),
        (
            "duplicate usage",
            "usage",
            json!(["sales", "sales"]),
            "unique",
        ),
        (
            "bad secret name",
            "writeConnectionSecretToRef",
            json!({"name": "Not_Valid"}),
            "spec.writeConnectionSecretToRef.name",
        ),
    ] {
        let mut spec = good.clone();
        spec[path] = value;
        let errs = errors(spec);
        assert!(
            errs.iter().any(|e| e.contains(expected)),
            "{what}: expected {expected:?} in {errs:?}"
        );
    }
}
