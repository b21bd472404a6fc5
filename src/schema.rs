//! Validation of manifests client-side, as the API server validates them: a CRD's
//! OpenAPI schema (the subset our CRDs use: types, required, enums, patterns,
//! lengths, bounds, item counts, nullable and defaults), its CEL rules through kube's
//! evaluator, object metadata (names, namespaces, labels, annotations), and the
//! Secrets and ConfigMaps relays read. `verify` uses it to refuse what
//! `kubectl apply` would refuse, with the same words.
//!
//! Everything that can be prepared once is: each CRD's schema is converted, its
//! patterns compiled and its CEL rules compiled on first use, then shared.

use std::collections::HashMap;
use std::sync::OnceLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use regex::Regex;
use serde_json::{Map, Value};

use crate::table::clip;

/// A CRD's schema, ready to validate objects many times.
pub struct CrdValidator {
    kind: String,
    namespaced: bool,
    schema: Value,
    patterns: HashMap<String, Result<Regex, String>>,
    cel: kube::core::cel::CompiledSchema,
    evaluator: kube::core::cel::Validator,
}

impl std::fmt::Debug for CrdValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdValidator")
            .field("kind", &self.kind)
            .finish()
    }
}

impl CrdValidator {
    /// Convert the schema, compile every pattern and every CEL rule.
    pub fn new(crd: &CustomResourceDefinition) -> Self {
        let schema = crd
            .spec
            .versions
            .first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(Value::Null);
        let mut patterns = HashMap::new();
        collect_patterns(&schema, &mut patterns);
        CrdValidator {
            kind: crd.spec.names.kind.clone(),
            namespaced: crd.spec.scope == "Namespaced",
            cel: kube::core::cel::compile_schema(&schema),
            evaluator: kube::core::cel::Validator::new(),
            schema,
            patterns,
        }
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn namespaced(&self) -> bool {
        self.namespaced
    }

    /// Validate a whole object (apiVersion, kind, metadata, spec, status): the schema
    /// first, then (if it holds) the CEL rules. On success, the object as the API
    /// server would store it before defaulting: nulls it would replace by a
    /// default removed, so that deserializing applies the same default.
    pub fn validate(&self, object: &Value) -> Result<Value, Vec<String>> {
        if self.schema.is_null() {
            return Err(vec!["CRD has no schema".into()]);
        }
        let mut errors = Vec::new();
        let Some(map) = object.as_object() else {
            return Err(vec!["<root>: must be an object".into()]);
        };
        // metadata is validated by the API server itself (validate_metadata), not by
        // the CRD schema; status is checked for shape only: the API server ignores
        // it on create, but refuses fields of the wrong type or unknown.
        let root = Walk {
            patterns: &self.patterns,
            shape_only: false,
        };
        for req in required(&self.schema) {
            if !map.contains_key(req) {
                errors.push(format!("{req}: Required value"));
            }
        }
        for (k, v) in map {
            match k.as_str() {
                "apiVersion" | "kind" | "metadata" => {}
                "status" => {
                    if let Some(sub) = property(&self.schema, k) {
                        Walk {
                            shape_only: true,
                            ..root
                        }
                        .walk(
                            sub,
                            v,
                            &Path::Key(&Path::Root, k),
                            &mut errors,
                        );
                    }
                }
                _ => match property(&self.schema, k) {
                    Some(sub) => root.walk(sub, v, &Path::Key(&Path::Root, k), &mut errors),
                    None => errors.push(format!("{k}: field not declared in schema")),
                },
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // Most objects have no null: no copy to make then.
        let normalized = if has_null(object) {
            normalize(&self.schema, object)
        } else {
            object.clone()
        };
        if let Err(e) = self
            .evaluator
            .validate_compiled(&self.cel, &normalized, None)
        {
            errors.extend(e.into_vec().into_iter().map(|e| {
                let path = if e.field_path.is_empty() {
                    "<root>".to_string()
                } else {
                    e.field_path
                };
                format!("{path}: {}", e.message)
            }));
        }
        if errors.is_empty() {
            Ok(normalized)
        } else {
            Err(errors)
        }
    }
}

/// The validators of this crate's CRDs, built once.
pub fn validator(kind: &str) -> Option<&'static CrdValidator> {
    static ALL: OnceLock<Vec<CrdValidator>> = OnceLock::new();
    ALL.get_or_init(|| {
        crate::api::crds()
            .iter()
            .map(|(_, crd)| CrdValidator::new(crd))
            .collect()
    })
    .iter()
    .find(|v| v.kind == kind)
}

/// Validate a manifest (as JSON) against a CRD: OpenAPI constraints, then CEL rules.
/// This crate's CRDs use the validators built once; any other is compiled for the call.
pub fn validate_against_crd(crd: &CustomResourceDefinition, object: &Value) -> Vec<String> {
    let result = match validator(&crd.spec.names.kind) {
        Some(v) if crate::api::crds().iter().any(|(_, c)| c == crd) => v.validate(object),
        _ => CrdValidator::new(crd).validate(object),
    };
    result.err().unwrap_or_default()
}

fn collect_patterns(schema: &Value, out: &mut HashMap<String, Result<Regex, String>>) {
    match schema {
        Value::Object(map) => {
            if let Some(p) = map.get("pattern").and_then(Value::as_str) {
                out.entry(p.to_string())
                    .or_insert_with(|| Regex::new(p).map_err(|e| e.to_string()));
            }
            map.values().for_each(|v| collect_patterns(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_patterns(v, out)),
        _ => {}
    }
}

fn required(schema: &Value) -> impl Iterator<Item = &str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn property<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    schema.get("properties").and_then(|p| p.get(key))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Where a value is, built as the walk descends and written out only for an error.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root => f.write_str("<root>"),
            Path::Key(Path::Root, k) => f.write_str(k),
            Path::Key(parent, k) => write!(f, "{parent}.{k}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

#[derive(Clone, Copy)]
struct Walk<'a> {
    patterns: &'a HashMap<String, Result<Regex, String>>,
    /// Types and declared fields only (status): no bounds, patterns or requirements.
    shape_only: bool,
}

impl Walk<'_> {
    fn walk(&self, schema: &Value, value: &Value, path: &Path<'_>, errors: &mut Vec<String>) {
        let ty = schema.get("type").and_then(Value::as_str);
        let wrong_type = |errors: &mut Vec<String>, want: &str| {
            errors.push(format!(
                "{path}: Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\"",
                got = type_name(value)
            ));
        };
        if value.is_null() {
            // A null where a default exists is replaced by the default; elsewhere it
            // is only valid when the schema says nullable.
            let allowed = schema.get("nullable").and_then(Value::as_bool) == Some(true)
                || schema.get("default").is_some()
                || self.shape_only;
            if !allowed {
                wrong_type(errors, ty.unwrap_or("object"));
            }
            return;
        }
        if schema
            .get("x-kubernetes-int-or-string")
            .and_then(Value::as_bool)
            == Some(true)
        {
            if !(value.is_string() || value.is_i64() || value.is_u64()) {
                wrong_type(errors, "integer or string");
            }
            return;
        }
        match ty {
            Some("object") => {
                let Some(map) = value.as_object() else {
                    return wrong_type(errors, "object");
                };
                if !self.shape_only {
                    for req in required(schema) {
                        if !map.contains_key(req) {
                            errors.push(format!("{}: Required value", Path::Key(path, req)));
                        }
                    }
                }
                let props = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties");
                let preserve = schema
                    .get("x-kubernetes-preserve-unknown-fields")
                    .and_then(Value::as_bool)
                    == Some(true);
                for (k, v) in map {
                    let at = Path::Key(path, k);
                    match props.and_then(|p| p.get(k)) {
                        Some(sub) => self.walk(sub, v, &at, errors),
                        None => match additional {
                            Some(sub) if sub.is_object() => self.walk(sub, v, &at, errors),
                            _ if preserve => {}
                            _ => errors.push(format!("{at}: field not declared in schema")),
                        },
                    }
                }
            }
            Some("array") => {
                let Some(items) = value.as_array() else {
                    return wrong_type(errors, "array");
                };
                if !self.shape_only
                    && let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                    && items.len() as u64 > max
                {
                    errors.push(format!(
                        "{path}: Too many: {}: must have at most {max} items",
                        items.len()
                    ));
                }
                if let Some(sub) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.walk(sub, item, &Path::Index(path, i), errors);
                    }
                }
            }
            Some("string") => {
                let Some(s) = value.as_str() else {
                    return wrong_type(errors, "string");
                };
                if self.shape_only {
                    return;
                }
                let before = errors.len();
                let shown = || clip(s, 64);
                let len = s.chars().count() as u64;
                if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                    && len > max
                {
                    errors.push(format!("{path}: Too long: may not be longer than {max}"));
                }
                if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                    && len < min
                {
                    errors.push(format!(
                        "{path}: Invalid value: {:?}: {path} in body should be at least {min} chars long",
                        shown()
                    ));
                }
                if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                    match self.patterns.get(p) {
                        // Long patterns (HOST's is thousands of characters) are cut: the
                        // field's description says what it accepts.
                        Some(Ok(re)) if !re.is_match(s) => errors.push(format!(
                            "{path}: Invalid value: {:?}: {path} in body should match '{}'",
                            shown(),
                            clip(p, 96)
                        )),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => errors.push(format!("{path}: schema pattern invalid: {e}")),
                        None => errors.push(format!("{path}: schema pattern not compiled")),
                    }
                }
                if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
                    && !allowed.iter().any(|a| a.as_str() == Some(s))
                {
                    let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                    errors.push(format!(
                        "{path}: Unsupported value: {:?}: supported values: {}",
                        shown(),
                        list.join(", ")
                    ));
                }
                // A CEL rule that reads this string with duration() fails to evaluate
                // when the API server's duration() cannot hold it: the object is refused.
                if errors.len() == before
                    && let Some(message) = duration_rule(schema)
                    && let Err(why) = crate::duration::parse_nanos(s)
                {
                    errors.push(format!(
                        "{path}: Invalid value: \"string\": type conversion error from 'string' to 'google.protobuf.Duration' evaluating rule: {message} ({:?}: {why})",
                        shown()
                    ));
                }
            }
            Some("integer") | Some("number") => {
                let Some(n) = value.as_f64() else {
                    return wrong_type(errors, ty.unwrap_or("number"));
                };
                if ty == Some("integer") && !(value.is_i64() || value.is_u64() || n.fract() == 0.0)
                {
                    return wrong_type(errors, "integer");
                }
                if self.shape_only {
                    return;
                }
                if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                    && n > max
                {
                    errors.push(format!(
                        "{path}: Invalid value: {value}: {path} in body should be less than or equal to {max}"
                    ));
                }
                if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                    && n < min
                {
                    errors.push(format!(
                        "{path}: Invalid value: {value}: {path} in body should be greater than or equal to {min}"
                    ));
                }
            }
            Some("boolean") if !value.is_boolean() => wrong_type(errors, "boolean"),
            _ => {}
        }
    }
}

/// The message of a CEL rule on this node that converts `self` with `duration()`.
fn duration_rule(schema: &Value) -> Option<&str> {
    schema
        .get("x-kubernetes-validations")?
        .as_array()?
        .iter()
        .find(|r| {
            r.get("rule")
                .and_then(Value::as_str)
                .is_some_and(|rule| rule.contains("duration(self)"))
        })
        .map(|r| {
            r.get("message")
                .and_then(Value::as_str)
                .unwrap_or("duration(self)")
        })
}

fn has_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(m) => m.values().any(has_null),
        _ => false,
    }
}

/// The object with every null the API server would replace by a default removed
/// (serde then applies the same default), recursively.
fn normalize(schema: &Value, value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let sub = props.and_then(|p| p.get(k)).or(additional);
                if v.is_null() && sub.is_some_and(|s| s.get("default").is_some()) {
                    continue;
                }
                out.insert(
                    k.clone(),
                    match sub {
                        Some(s) => normalize(s, v),
                        None => v.clone(),
                    },
                );
            }
            Value::Object(out)
        }
        Value::Array(items) => match schema.get("items") {
            Some(sub) => Value::Array(items.iter().map(|i| normalize(sub, i)).collect()),
            None => value.clone(),
        },
        _ => value.clone(),
    }
}

// ---------------------------------------------------------------------------
// Object metadata, as the API server validates it for every kind.

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
