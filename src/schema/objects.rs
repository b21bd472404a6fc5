//! Object metadata, and Secret and ConfigMap contents, as the API server validates
//! them for every kind (names, namespaces, labels, annotations, data keys, base64).

use super::type_name;
use crate::table::clip;
use serde_json::Value;

const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')";
const DNS1123_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name')";

/// Is `s` a DNS-1123 subdomain (≤ 253, lower-case labels)? Kubernetes does not limit
/// its labels to 63 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Is `s` a DNS-1123 label (≤ 63)?
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns1123_subdomain(s)
}

/// The name part of a label key or a label value: `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A label or annotation key: an optional DNS-subdomain prefix and a name.
fn qualified_name_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if name.contains('/') {
        return Some("a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into());
    }
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return Some(format!("prefix part {DNS1123_SUBDOMAIN_MESSAGE}"));
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !is_label_name(name) {
        return Some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc')".into());
    }
    None
}

fn string_map<'a>(
    value: Option<&'a Value>,
    path: &str,
    errors: &mut Vec<String>,
) -> Vec<(&'a str, Option<&'a str>)> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k.as_str(), Some(s.as_str()))),
                Value::Null => Some((k.as_str(), None)),
                other => {
                    errors.push(format!(
                        ".{path}.{}: expected string, got {}",
                        clip(k, 64),
                        type_name(other)
                    ));
                    None
                }
            })
            .collect(),
        Some(other) => {
            errors.push(format!(".{path}: expected map, got {}", type_name(other)));
            Vec::new()
        }
    }
}

/// Validate `metadata` as the API server does for an object of a namespaced or
/// cluster-scoped kind (whose namespace it ignores).
pub fn validate_metadata(object: &Value, namespaced: bool) -> Vec<String> {
    let mut errors = Vec::new();
    let meta = match object.get("metadata") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => {
            return vec!["metadata.name: Required value: name is required".into()];
        }
        Some(other) => {
            return vec![format!(".metadata: expected map, got {}", type_name(other))];
        }
    };
    for (k, v) in meta {
        let expect = |ok: bool, want: &str, errors: &mut Vec<String>| {
            if !ok {
                errors.push(format!(
                    ".metadata.{k}: expected {want}, got {}",
                    type_name(v)
                ));
            }
        };
        match k.as_str() {
            "name" | "generateName" | "namespace" | "uid" | "resourceVersion" | "selfLink" => {
                expect(v.is_string() || v.is_null(), "string", &mut errors)
            }
            "generation" | "deletionGracePeriodSeconds" => expect(
                v.is_number() || v.is_null(),
                "numeric (int or float)",
                &mut errors,
            ),
            "creationTimestamp" | "deletionTimestamp" => {
                expect(v.is_string() || v.is_null(), "string", &mut errors)
            }
            "finalizers" => expect(
                v.is_null() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
                "list of strings",
                &mut errors,
            ),
            "ownerReferences" | "managedFields" => {
                expect(v.is_null() || v.is_array(), "list", &mut errors)
            }
            "labels" | "annotations" => {}
            _ => errors.push(format!(
                ".metadata.{}: field not declared in schema",
                clip(k, 64)
            )),
        }
    }
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let generate = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        errors.push("metadata.name: Required value: name is required".into());
    } else {
        name_problems("metadata.name", name, &mut errors);
    }
    if !generate.is_empty() {
        // A prefix may end with '-' (a suffix is added to it).
        let masked = match generate.strip_suffix('-') {
            Some(p) => format!("{p}a"),
            None => generate.to_string(),
        };
        name_problems("metadata.generateName", &masked, &mut errors);
    }
    if namespaced {
        let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
        if !namespace.is_empty() && !is_dns1123_label(namespace) {
            errors.push(format!(
                "metadata.namespace: Invalid value: {:?}: {}",
                clip(namespace, 64),
                if namespace.len() > 63 {
                    "must be no more than 63 characters"
                } else {
                    DNS1123_LABEL_MESSAGE
                }
            ));
        }
    }
    for (key, value) in string_map(meta.get("labels"), "metadata.labels", &mut errors) {
        if let Some(why) = qualified_name_problem(key) {
            errors.push(format!(
                "metadata.labels: Invalid value: {:?}: {why}",
                clip(key, 64)
            ));
        }
        let value = value.unwrap_or("");
        if !value.is_empty() && !is_label_name(value) {
            errors.push(format!(
                "metadata.labels: Invalid value: {:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345'), at most 63 characters",
                clip(value, 64)
            ));
        }
    }
    let mut total = 0usize;
    for (key, value) in string_map(meta.get("annotations"), "metadata.annotations", &mut errors) {
        total = total
            .saturating_add(key.len())
            .saturating_add(value.map_or(0, str::len));
        if let Some(why) = qualified_name_problem(&key.to_ascii_lowercase()) {
            errors.push(format!(
                "metadata.annotations: Invalid value: {:?}: {why}",
                clip(key, 64)
            ));
        }
    }
    if total > 256 * 1024 {
        errors.push("metadata.annotations: Too long: must have at most 262144 bytes".into());
    }
    errors
}

fn name_problems(path: &str, name: &str, errors: &mut Vec<String>) {
    if name.len() > 253 {
        errors.push(format!(
            "{path}: Invalid value: {:?}: must be no more than 253 characters",
            clip(name, 64)
        ));
    } else if !is_dns1123_subdomain(name) {
        errors.push(format!(
            "{path}: Invalid value: {:?}: {DNS1123_SUBDOMAIN_MESSAGE}",
            clip(name, 64)
        ));
    }
}

// ---------------------------------------------------------------------------
// Secrets and ConfigMaps.

/// Largest Secret or ConfigMap the API server stores (sum of its values).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Decode a `data` (Secret) or `binaryData` (ConfigMap) value as the API server
/// does: standard base64 with padding, line breaks ignored.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const GO_STD: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
            .with_decode_allow_trailing_bits(true),
    );
    let compact: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    GO_STD.decode(compact).ok()
}

/// A Secret or ConfigMap key: `[-._a-zA-Z0-9]+`, at most 253, not `.`/`..`, not
/// starting with `..`.
fn config_key_problem(key: &str) -> Option<&'static str> {
    if key.len() > 253 {
        return Some("must be no more than 253 characters");
    }
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Some(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        );
    }
    match key {
        "." => Some("must not be '.'"),
        ".." => Some("must not be '..'"),
        _ if key.starts_with("..") => Some("must not start with '..'"),
        _ => None,
    }
}

/// A Secret or ConfigMap as the API server would store it, or why it refuses it.
/// `data` holds every key with its bytes (a Secret's `stringData` wins over `data`).
pub fn validate_data_object(
    object: &Value,
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, Vec<String>> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let secret = kind == "Secret";
    let mut errors = validate_metadata(object, true);
    let Some(map) = object.as_object() else {
        return Err(vec!["<root>: must be an object".into()]);
    };
    for (k, v) in map {
        let ok = match k.as_str() {
            "apiVersion" | "kind" | "metadata" => true,
            "immutable" => v.is_boolean() || v.is_null(),
            "type" if secret => v.is_string() || v.is_null(),
            "data" | "stringData" if secret => true,
            "data" | "binaryData" if !secret => true,
            _ => {
                errors.push(format!(".{}: field not declared in schema", clip(k, 64)));
                true
            }
        };
        if !ok {
            errors.push(format!(".{k}: has the wrong type ({})", type_name(v)));
        }
    }
    let (binary_key, text_key) = if secret {
        ("data", "stringData")
    } else {
        ("binaryData", "data")
    };
    let mut data = std::collections::BTreeMap::new();
    for (key, value) in string_map(map.get(binary_key), binary_key, &mut errors) {
        match decode_base64(value.unwrap_or("")) {
            Some(bytes) => {
                data.insert(key.to_string(), bytes);
            }
            None => errors.push(format!(
                "{binary_key}[{}]: illegal base64 data",
                clip(key, 64)
            )),
        }
    }
    for (key, value) in string_map(map.get(text_key), text_key, &mut errors) {
        if !secret && data.contains_key(key) {
            errors.push(format!(
                "data[{}]: Invalid value: {:?}: duplicate of key present in binaryData",
                clip(key, 64),
                clip(key, 64)
            ));
        }
        data.insert(key.to_string(), value.unwrap_or("").as_bytes().to_vec());
    }
    for key in data.keys() {
        if let Some(why) = config_key_problem(key) {
            errors.push(format!(
                "data[{}]: Invalid value: {:?}: {why}",
                clip(key, 64),
                clip(key, 64)
            ));
        }
    }
    let total: usize = data
        .iter()
        .map(|(k, v)| if secret { v.len() } else { k.len() + v.len() })
        .sum();
    if total > MAX_DATA_BYTES {
        errors.push(format!(
            "data: Too long: must have at most {MAX_DATA_BYTES} bytes"
        ));
    }
    if errors.is_empty() {
        Ok(data)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_the_api_server() {
        assert!(is_dns1123_subdomain("a.b"));
        assert!(is_dns1123_subdomain(&format!("x.{}.y", "a".repeat(64))));
        assert!(is_dns1123_subdomain(&"a".repeat(253)));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        for bad in [
            "",
            "A",
            "a..b",
            "-a",
            "a-",
            "a_b",
            "a/b",
            "..",
            "\u{200f}a",
            "a b",
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad:?}");
        }
        assert!(is_dns1123_label("team-a"));
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }

    #[test]
    fn metadata_is_validated() {
        let obj = |meta: Value| json!({"metadata": meta});
        assert!(validate_metadata(&obj(json!({"name": "r", "namespace": "ns"})), true).is_empty());
        for (meta, words) in [
            (json!({"namespace": "ns"}), "metadata.name: Required value"),
            (json!({"name": ""}), "metadata.name: Required value"),
            (
                json!({"name": "Bad Name/../x"}),
                "metadata.name: Invalid value",
            ),
            (json!({"name": "a\u{0}b"}), "metadata.name: Invalid value"),
            (json!({"name": "a".repeat(1 << 20)}), "no more than 253"),
            (
                json!({"name": "r", "namespace": "Bad"}),
                "metadata.namespace",
            ),
            (
                json!({"name": "r", "namespace": "a".repeat(64)}),
                "metadata.namespace",
            ),
            (
                json!({"name": "r", "labels": {"a b": "c"}}),
                "metadata.labels",
            ),
            (
                json!({"name": "r", "labels": {"a": "c d"}}),
                "metadata.labels",
            ),
            (
                json!({"name": "r", "labels": {"a": 1}}),
                ".metadata.labels.a: expected string",
            ),
            (
                json!({"name": "r", "foo": 1}),
                ".metadata.foo: field not declared",
            ),
            (json!({"name": 5}), ".metadata.name: expected string"),
            (
                json!({"name": "r", "generateName": "A_"}),
                "metadata.generateName",
            ),
        ] {
            let errors = validate_metadata(&obj(meta.clone()), true);
            assert!(
                errors.iter().any(|e| e.contains(words)),
                "{meta}: {errors:?}"
            );
        }
        // A cluster-scoped object's namespace is ignored (the API server clears it).
        assert!(
            validate_metadata(&obj(json!({"name": "r", "namespace": "Bad"})), false).is_empty()
        );
        assert!(
            validate_metadata(
                &obj(json!({"name": "r", "generateName": "r-", "creationTimestamp": null})),
                true
            )
            .is_empty()
        );
    }

    #[test]
    fn secrets_are_read_as_the_api_server_stores_them() {
        let secret = |extra: Value| {
            let mut o = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}});
            for (k, v) in extra.as_object().expect("object") {
                o[k] = v.clone();
            }
            validate_data_object(&o)
        };
        let ok = secret(json!({"data": {"password": "cGFzcw==", "nul": null, "wrapped": "eA\n=="}, "stringData": {"username": "u"}}))
            .expect("valid");
        assert_eq!(ok.get("password").map(Vec::as_slice), Some(&b"pass"[..]));
        assert_eq!(ok.get("nul").map(Vec::len), Some(0));
        assert_eq!(ok.get("wrapped").map(Vec::as_slice), Some(&b"x"[..]));
        for (extra, words) in [
            (
                json!({"data": {"password": ["x"]}}),
                ".data.password: expected string",
            ),
            (
                json!({"data": {"password": 12345}}),
                ".data.password: expected string",
            ),
            (json!({"data": "x"}), ".data: expected map"),
            (json!({"stringData": ["x"]}), ".stringData: expected map"),
            (json!({"data": {"a b": "eA=="}}), "data[a b]"),
            (json!({"data": {"..a": "eA=="}}), "must not start with '..'"),
            (json!({"data": {"a": "eA"}}), "illegal base64"),
            (json!({"data": {"a": " eA== "}}), "illegal base64"),
            (json!({"data": {"a": "-_=="}}), "illegal base64"),
            (json!({"foo": 1}), ".foo: field not declared"),
        ] {
            let errors = secret(extra.clone()).expect_err("refused");
            assert!(
                errors.iter().any(|e| e.contains(words)),
                "{extra}: {errors:?}"
            );
        }
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                        "data": {"a": "x"}, "binaryData": {"a": "eA=="}});
        let errors = validate_data_object(&cm).expect_err("overlap");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("duplicate of key present in binaryData"))
        );
    }
}
