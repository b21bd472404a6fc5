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

mod objects;
pub use objects::*;

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

pub(crate) fn type_name(value: &Value) -> &'static str {
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
