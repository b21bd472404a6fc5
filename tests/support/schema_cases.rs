//! Manifests the CRDs must refuse, each with words the refusal must contain. Shared by
//! the offline schema tests (tests/api.rs, what `verify` says) and the real API server
//! (tests/real_api.rs, what `kubectl apply` says): both must refuse every one of them.
#![allow(dead_code)]

use serde_json::{Value, json};

pub struct Case {
    pub what: &'static str,
    /// The whole manifest (apiVersion, kind, metadata, spec).
    pub manifest: Value,
    /// Words both refusals contain (usually the field path).
    pub expected: &'static str,
}

pub fn relay(spec: Value) -> Value {
    json!({
        "apiVersion": "smtprelay.io/v1alpha1",
        "kind": "SmtpRelay",
        "metadata": {"name": "r", "namespace": "ns"},
        "spec": spec,
    })
}

pub fn base_spec() -> Value {
    json!({
        "host": "smtp.example.com",
        "defaultSender": {"address": "sender@example.com", "name": "Sender"},
    })
}

/// The base relay spec with one value set at `path` (objects created on the way).
pub fn with(path: &[&str], value: Value) -> Value {
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

/// A valid SenderIdentity spec using every field.
pub fn identity_spec() -> Value {
    json!({"address": "sales@example.com", "displayName": "Sales", "usage": ["sales"],
           "relayRef": {"kind": "ClusterSmtpRelay", "name": "shared"},
           "confirmation": {"required": true, "ttl": "48h", "language": "fr"},
           "writeConnectionSecretToRef": {"name": "sales-smtp"}})
}

pub fn identity(spec: Value) -> Value {
    json!({"apiVersion": "smtprelay.io/v1alpha1", "kind": "SenderIdentity",
           "metadata": {"name": "sales", "namespace": "ns"}, "spec": spec})
}

fn relay_cases() -> Vec<(&'static str, Value, &'static str)> {
    vec![
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
            "spec.host: Required value",
        ),
        (
            "unknown field",
            with(&["hostname"], json!("x")),
            "spec.hostname: field not declared in schema",
        ),
        (
            "SmtpRelay naming the Secret's namespace",
            with(
                &["auth"],
                json!({"credentialsSecretRef": {"name": "s", "namespace": "kube-system"}}),
            ),
            "only allowed on ClusterSmtpRelay",
        ),
        (
            "SmtpRelay naming the CA bundle's namespace",
            with(
                &["tls"],
                json!({"mode": "Tls", "caBundleRef": {"kind": "ConfigMap", "name": "ca", "namespace": "kube-system"}}),
            ),
            "only allowed on ClusterSmtpRelay",
        ),
    ]
}

fn identity_cases() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    vec![
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
            "duplicate identity usage",
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
    ]
}

/// Every manifest the CRDs refuse.
pub fn invalid() -> Vec<Case> {
    let mut out: Vec<Case> = relay_cases()
        .into_iter()
        .map(|(what, spec, expected)| Case {
            what,
            manifest: relay(spec),
            expected,
        })
        .collect();
    for (what, field, value, expected) in identity_cases() {
        let mut spec = identity_spec();
        spec[field] = value;
        out.push(Case {
            what,
            manifest: identity(spec),
            expected,
        });
    }
    out
}
