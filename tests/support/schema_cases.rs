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
    /// The case is about metadata: send it with its own name and namespace.
    pub metadata: bool,
}

/// A manifest as text (what JSON values cannot carry: duplicate keys, YAML 1.1
/// scalars, .nan), with words both refusals contain.
pub struct RawCase {
    pub what: &'static str,
    pub text: String,
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
        // Issue #15: durations beyond what the API server's duration() holds, or
        // that Go rounds up to the minimum.
        (
            "interval beyond duration()",
            with(&["verification", "interval"], json!("5124095576030431h")),
            "spec.verification.interval",
        ),
        (
            "interval that overflows when added",
            with(&["verification", "interval"], json!("5124095576030430h9h")),
            "spec.verification.interval",
        ),
        (
            "interval one nanosecond over the bound",
            with(
                &["verification", "interval"],
                json!("2562047h47m16.854775808s"),
            ),
            "spec.verification.interval",
        ),
        (
            "timeout just under 1s, rounded up by Go",
            with(
                &["verification", "timeout"],
                json!("0.99999999999999999999s"),
            ),
            "spec.verification.timeout",
        ),
        (
            "timeout just over 5m, rounded down by Go",
            with(&["verification", "timeout"], json!("300.0000000001s")),
            "spec.verification.timeout",
        ),
        // Issue #15: control characters in one-line texts.
        (
            "NUL in title",
            with(&["title"], json!("a\u{0}b")),
            "spec.title",
        ),
        (
            "ESC in title",
            with(&["title"], json!("a\u{1b}[31mb")),
            "spec.title",
        ),
        (
            "DEL in title",
            with(&["title"], json!("a\u{7f}b")),
            "spec.title",
        ),
        (
            "TAB in title",
            with(&["title"], json!("a\tb")),
            "spec.title",
        ),
        (
            "U+2029 in title",
            with(&["title"], json!("a\u{2029}b")),
            "spec.title",
        ),
        (
            "U+2028 in display name",
            with(&["defaultSender", "name"], json!("a\u{2028}b")),
            "spec.defaultSender.name",
        ),
        (
            "NEL in noReply name",
            with(
                &["noReply"],
                json!({"address": "n@example.com", "name": "a\u{85}b"}),
            ),
            "spec.noReply.name",
        ),
        (
            "C1 CSI in header value",
            with(
                &["customHeaders"],
                json!([{"name": "X-A", "value": "a\u{9b}31mb"}]),
            ),
            "spec.customHeaders[0].value",
        ),
        // Issue #15: hosts that are neither a DNS name nor an IP address.
        ("host [.]", with(&["host"], json!("[.]")), "spec.host"),
        ("host :.", with(&["host"], json!(":.")), "spec.host"),
        ("host [:]", with(&["host"], json!("[:]")), "spec.host"),
        ("host ::1::", with(&["host"], json!("::1::")), "spec.host"),
        (
            "host with nine IPv6 groups",
            with(&["host"], json!("1:2:3:4:5:6:7:8:9")),
            "spec.host",
        ),
        (
            "host 1.2.3.4.5",
            with(&["host"], json!("1.2.3.4.5")),
            "spec.host",
        ),
        (
            "host 999.999.999.999",
            with(&["host"], json!("999.999.999.999")),
            "spec.host",
        ),
        ("host 0", with(&["host"], json!("0")), "spec.host"),
        (
            "host with octal-looking octets",
            with(&["host"], json!("0177.0.0.1")),
            "spec.host",
        ),
        (
            "host with a zone",
            with(&["host"], json!("fe80::1%eth0")),
            "spec.host",
        ),
        (
            "serverName 1.2.3.4.5",
            with(&["tls", "serverName"], json!("1.2.3.4.5")),
            "spec.tls.serverName",
        ),
        // Nulls: only where a default replaces them or the field is nullable.
        (
            "null list",
            with(&["customHeaders"], json!(null)),
            "spec.customHeaders",
        ),
        (
            "null list item",
            with(&["usage"], json!([null])),
            "spec.usage[0]",
        ),
        ("null spec", json!(null), "spec"),
        (
            "fractional port",
            with(&["port"], json!(2525.5)),
            "spec.port",
        ),
        (
            "SmtpRelay naming the CA bundle's namespace",
            with(
                &["tls"],
                json!({"mode": "Tls", "caBundleRef": {"kind": "ConfigMap", "name": "ca", "namespace": "kube-system"}}),
            ),
            "only allowed on ClusterSmtpRelay",
        ),
        // Issue #13: the round-trip mailbox.
        (
            "roundTrip without a recipient",
            with(&["verification", "roundTrip"], round_trip(json!({}))),
            "needs verification.recipient",
        ),
        (
            "roundTrip timeout 1s",
            with_round_trip(json!({"timeout": "1s"})),
            "between 5s and 15m",
        ),
        (
            "roundTrip timeout 1h",
            with_round_trip(json!({"timeout": "1h"})),
            "between 5s and 15m",
        ),
        (
            "roundTrip unknown protocol",
            with_round_trip(json!({"protocol": "Jmap"})),
            "spec.verification.roundTrip.protocol",
        ),
        (
            "roundTrip folders with Pop3",
            with_round_trip(json!({"protocol": "Pop3", "folders": ["Junk"]})),
            "only used with protocol Imap",
        ),
        (
            "roundTrip host with a scheme",
            with_round_trip(json!({"host": "imaps://imap.example.com"})),
            "spec.verification.roundTrip.host",
        ),
        (
            "roundTrip port 0",
            with_round_trip(json!({"port": 0})),
            "spec.verification.roundTrip.port",
        ),
        (
            "roundTrip folder with a line break",
            with_round_trip(json!({"folders": ["INBOX\nJunk"]})),
            "spec.verification.roundTrip.folders[0]",
        ),
        (
            "SmtpRelay naming the mailbox Secret's namespace",
            with_round_trip(
                json!({"credentialsSecretRef": {"name": "mailbox", "namespace": "kube-system"}}),
            ),
            "only allowed on ClusterSmtpRelay",
        ),
    ]
}

/// A valid roundTrip block with `extra` fields merged in.
fn round_trip(extra: Value) -> Value {
    let mut v = json!({"host": "imap.example.com", "credentialsSecretRef": {"name": "mailbox"}});
    for (k, x) in extra.as_object().cloned().unwrap_or_default() {
        v[k] = x;
    }
    v
}

/// The base spec with a recipient and a roundTrip block (`extra` merged in).
fn with_round_trip(extra: Value) -> Value {
    let mut spec = with(&["verification", "recipient"], json!("inbox@example.com"));
    spec["verification"]["roundTrip"] = round_trip(extra);
    spec
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

/// Metadata the API server refuses (names and namespaces it can be sent to).
fn metadata_cases() -> Vec<(&'static str, Value, &'static str)> {
    let named = |name: Value| json!({"name": name, "namespace": "ns"});
    vec![
        ("upper-case name", named(json!("Bad_Name")), "metadata.name"),
        ("name with two dots", named(json!("a..b")), "metadata.name"),
        (
            "name starting with a dash",
            named(json!("-a")),
            "metadata.name",
        ),
        (
            "name of 254 characters",
            named(json!("a".repeat(254))),
            "metadata.name",
        ),
        (
            "label value with a space",
            json!({"name": "r", "namespace": "ns", "labels": {"team": "a b"}}),
            "metadata.labels",
        ),
        (
            "label value not a string",
            json!({"name": "r", "namespace": "ns", "labels": {"team": 1}}),
            "metadata.labels.team",
        ),
        (
            "unknown metadata field",
            json!({"name": "r", "namespace": "ns", "owner": "me"}),
            "metadata.owner",
        ),
    ]
}

fn secret(extra: Value) -> Value {
    let mut out = json!({"apiVersion": "v1", "kind": "Secret",
                         "metadata": {"name": "s", "namespace": "ns"}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        out[k] = v.clone();
    }
    out
}

/// Secrets the API server refuses (issue #15: verify read them as empty credentials).
fn secret_cases() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "Secret data value a list",
            secret(json!({"data": {"password": ["x"]}})),
            ".data.password",
        ),
        (
            "Secret data value a number",
            secret(json!({"data": {"password": 12345}})),
            ".data.password",
        ),
        (
            "Secret data a string",
            secret(json!({"data": "x"})),
            ".data",
        ),
        (
            "Secret stringData a list",
            secret(json!({"stringData": ["x"]})),
            ".stringData",
        ),
        (
            "Secret data key with a space",
            secret(json!({"data": {"pass word": "eA=="}})),
            "data[pass word]",
        ),
        (
            "Secret data key ..x",
            secret(json!({"data": {"..x": "eA=="}})),
            "data[..x]",
        ),
        (
            "Secret data value not base64",
            secret(json!({"data": {"password": "not base64!"}})),
            "illegal base64 data",
        ),
        (
            "Secret data value without padding",
            secret(json!({"data": {"password": "eA"}})),
            "illegal base64 data",
        ),
        (
            "Secret unknown field",
            secret(json!({"strData": {"a": "b"}})),
            ".strData",
        ),
    ]
}

/// Every manifest the CRDs (or the API server's own validation) refuse.
pub fn invalid() -> Vec<Case> {
    let mut out: Vec<Case> = relay_cases()
        .into_iter()
        .map(|(what, spec, expected)| Case {
            what,
            manifest: relay(spec),
            expected,
            metadata: false,
        })
        .collect();
    for (what, field, value, expected) in identity_cases() {
        let mut spec = identity_spec();
        spec[field] = value;
        out.push(Case {
            what,
            manifest: identity(spec),
            expected,
            metadata: false,
        });
    }
    for (what, meta, expected) in metadata_cases() {
        let mut manifest = relay(base_spec());
        manifest["metadata"] = meta;
        out.push(Case {
            what,
            manifest,
            expected,
            metadata: true,
        });
    }
    for (what, manifest, expected) in secret_cases() {
        out.push(Case {
            what,
            manifest,
            expected,
            metadata: false,
        });
    }
    out
}

const RELAY_HEAD: &str =
    "apiVersion: smtprelay.io/v1alpha1\nkind: SmtpRelay\nmetadata: {name: r, namespace: ns}\n";

/// Manifests as text that both refuse. `ns` is the namespace to put them in.
pub fn raw_invalid(ns: &str) -> Vec<RawCase> {
    let relay = |spec: &str| {
        format!(
            "{}spec:\n  defaultSender: {{address: a@example.com}}\n{spec}",
            RELAY_HEAD.replace("ns}", &format!("{ns}}}"))
        )
    };
    vec![
        RawCase {
            what: "duplicate key in YAML",
            text: relay("  host: smtp.example.com\n  port: 1\n  port: 2525\n"),
            expected: "already set in map",
        },
        RawCase {
            what: "duplicate key in JSON",
            text: format!(
                r#"{{"apiVersion": "smtprelay.io/v1alpha1", "kind": "SmtpRelay", "metadata": {{"name": "r", "namespace": "{ns}"}}, "spec": {{"host": "smtp.example.com", "port": 1, "port": 2525, "defaultSender": {{"address": "a@example.com"}}}}}}"#
            ),
            expected: "already set in map",
        },
        RawCase {
            what: "port .nan",
            text: relay("  host: smtp.example.com\n  port: .nan\n"),
            expected: "NaN",
        },
        RawCase {
            what: "port .inf",
            text: relay("  host: smtp.example.com\n  port: .inf\n"),
            expected: "Inf",
        },
        RawCase {
            what: "host yes (a YAML 1.1 boolean)",
            text: relay("  host: yes\n"),
            expected: "spec.host",
        },
        RawCase {
            what: "title on (a YAML 1.1 boolean)",
            text: relay("  host: smtp.example.com\n  title: on\n"),
            expected: "spec.title",
        },
        RawCase {
            what: "Secret password no (a YAML 1.1 boolean)",
            text: format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: {ns}}}\nstringData: {{username: u, password: no}}\n"
            ),
            expected: ".stringData.password",
        },
    ]
}

/// Manifests as text that both accept.
pub fn raw_valid(ns: &str) -> Vec<RawCase> {
    vec![
        RawCase {
            what: "a byte order mark before the first document",
            text: format!(
                "\u{feff}apiVersion: smtprelay.io/v1alpha1\nkind: SmtpRelay\nmetadata: {{name: r, namespace: {ns}}}\nspec:\n  host: smtp.example.com\n  defaultSender: {{address: a@example.com}}\n"
            ),
            expected: "",
        },
        RawCase {
            what: "port written as a float, nulls where a default or nullable applies",
            text: format!(
                "apiVersion: smtprelay.io/v1alpha1\nkind: SmtpRelay\nmetadata: {{name: r, namespace: {ns}}}\nspec:\n  host: smtp.example.com\n  port: 2525.0\n  tls: {{mode: null}}\n  defaultSender: {{address: a@example.com, name: null}}\n"
            ),
            expected: "",
        },
        RawCase {
            what: "Secret with a null value and wrapped base64",
            text: format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: {ns}}}\ndata:\n  a: null\n  b: \"eA\\n==\"\n"
            ),
            expected: "",
        },
    ]
}
