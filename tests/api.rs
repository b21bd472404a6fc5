//! The API as the cluster sees it: generated CRDs are current, the schema refuses
//! bad input at apply time, and the bundled examples are valid.

use kube::CustomResourceExt;
use serde_json::{Value, json};
use smtp_relay_operator::api::{self, ClusterSmtpRelay, SenderIdentity, SmtpRelay};
use smtp_relay_operator::schema::validate_against_crd;
use support::schema_cases::{self, base_spec, relay, with};

mod support;

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

fn errors(spec: Value) -> Vec<String> {
    validate_against_crd(&SmtpRelay::crd(), &relay(spec))
}

#[test]
fn a_minimal_relay_is_valid() {
    assert_eq!(errors(base_spec()), Vec::<String>::new());
}

#[test]
fn the_schema_refuses_bad_input_with_a_readable_message() {
    // The same cases run against the real API server in tests/real_api.rs; here they
    // go through what `verify` refuses a document with (metadata, schema, CEL, and
    // the API server's own checks of Secrets).
    let cases = schema_cases::invalid();
    assert!(cases.len() >= 80, "only {} cases", cases.len());
    for case in cases {
        let errs = smtp_relay_operator::verify::check_document(&case.manifest, "case")
            .err()
            .unwrap_or_default();
        assert!(
            errs.iter().any(|e| e.contains(case.expected)),
            "{}: expected an error mentioning {:?}, got {errs:?}",
            case.what,
            case.expected
        );
    }
}

/// What only text can carry (duplicate keys, YAML 1.1 scalars, .nan, a byte order
/// mark), refused or accepted as the API server does (tests/real_api.rs sends the
/// same texts to it).
#[test]
fn manifests_as_text_are_read_as_the_api_server_reads_them() {
    for case in schema_cases::raw_invalid("ns") {
        let mut m = smtp_relay_operator::verify::Manifests::default();
        let err = smtp_relay_operator::verify::load_text(&case.text, "raw.yaml", &mut m)
            .expect_err(case.what)
            .to_string();
        assert!(
            err.contains(case.expected) && err.contains("raw.yaml (document 1)"),
            "{}: expected an error mentioning {:?}, got {err}",
            case.what,
            case.expected
        );
    }
    for case in schema_cases::raw_valid("ns") {
        let mut m = smtp_relay_operator::verify::Manifests::default();
        smtp_relay_operator::verify::load_text(&case.text, "raw.yaml", &mut m)
            .unwrap_or_else(|e| panic!("{}: {e}", case.what));
    }
}

/// Issue #15: a Secret's values are read as the API server stores them: a null value
/// is an empty one, and line breaks in base64 are ignored.
#[test]
fn secret_values_are_what_the_api_server_stores() {
    let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: ns}\ndata:\n  a: null\n  b: \"eA\\n==\"\nstringData: {c: yes-really}\n";
    let mut m = smtp_relay_operator::verify::Manifests::default();
    smtp_relay_operator::verify::load_text(text, "s.yaml", &mut m).expect("valid");
    let s = m
        .secrets
        .get(&("ns".to_string(), "s".to_string()))
        .expect("secret");
    assert_eq!(s.data.get("a").map(Vec::as_slice), Some(&b""[..]));
    assert_eq!(s.data.get("b").map(Vec::as_slice), Some(&b"x"[..]));
    assert_eq!(s.data.get("c").map(Vec::as_slice), Some(&b"yes-really"[..]));
}

#[test]
fn cross_namespace_references_are_refused_on_namespaced_relays() {
    // `namespace` is a CEL reserved word: the API server only compiles the rule with
    // the property escaped (tests/real_api.rs proves it compiles there), and the
    // offline evaluator escapes property names the same way.
    let crd = serde_json::to_string(&SmtpRelay::crd()).expect("json");
    assert!(crd.contains("credentialsSecretRef.__namespace__"));
    assert!(!crd.contains("credentialsSecretRef.namespace)"));
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
    let mut seen = 0;
    for p in support::examples::example_files() {
        let mut m = smtp_relay_operator::verify::Manifests::default();
        smtp_relay_operator::verify::load_text(
            &std::fs::read_to_string(&p).expect("read"),
            &p.display().to_string(),
            &mut m,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        seen += m.relays.len();
    }
    assert!(seen >= 6, "only {seen} relays in examples/");
}

#[test]
fn sender_identity_schema() {
    let obj = |spec: Value| {
        json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
               "metadata": {"name": "sales", "namespace": "team"}, "spec": spec})
    };
    let errors = |spec: Value| validate_against_crd(&SenderIdentity::crd(), &obj(spec));
    let good = schema_cases::identity_spec();
    assert_eq!(errors(good.clone()), Vec::<String>::new());
    assert_eq!(
        errors(json!({"address": "a@example.com"})),
        Vec::<String>::new(),
        "defaults suffice"
    );
    // Its invalid cases are in support::schema_cases (run offline above and on the
    // real API server).
}
