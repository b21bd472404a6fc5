//! Validation of a manifest against a CRD's OpenAPI schema, client-side: the subset
//! of OpenAPI the API server enforces that our CRDs use (types, required, enums,
//! patterns, lengths, bounds, item counts), plus the CEL rules via kube's evaluator.
//! `verify` uses it to refuse what `kubectl apply` would refuse, with the same words.

use serde_json::Value;

/// Every violation found, as `path: message`.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    walk(schema, value, "", &mut errors);
    errors
}

fn walk(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let at = |p: &str| {
        if p.is_empty() {
            "<root>".to_string()
        } else {
            p.to_string()
        }
    };
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) {
            errors.push(format!("{}: must not be null", at(path)));
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return;
    }
    match ty {
        Some("object") => {
            let Some(map) = value.as_object() else {
                errors.push(format!("{}: must be an object", at(path)));
                return;
            };
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(req) {
                    errors.push(format!("{}: Required value", join(path, req)));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (k, v) in map {
                match props.and_then(|p| p.get(k)) {
                    Some(sub) => walk(sub, v, &join(path, k), errors),
                    None => match additional {
                        Some(sub) if sub.is_object() => walk(sub, v, &join(path, k), errors),
                        _ if schema.get("x-kubernetes-preserve-unknown-fields").is_some() => {}
                        _ if props.is_some() => {
                            errors.push(format!("{}: field not declared in schema", join(path, k)))
                        }
                        _ => {}
                    },
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                errors.push(format!("{}: must be a list", at(path)));
                return;
            };
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errors.push(format!("{}: must have at most {max} items", at(path)));
            }
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(sub, item, &format!("{}[{i}]", at(path)), errors);
                }
            }
        }
        Some("string") => {
            let Some(s) = value.as_str() else {
                errors.push(format!("{}: must be a string", at(path)));
                return;
            };
            let len = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                errors.push(format!("{}: may not be longer than {max}", at(path)));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                errors.push(format!("{}: should be at least {min} chars long", at(path)));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(s) => {
                        errors.push(format!("{}: {s:?} should match '{p}'", at(path)))
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(format!("{}: schema pattern invalid: {e}", at(path))),
                }
            }
            if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
                && !allowed.iter().any(|a| a.as_str() == Some(s))
            {
                let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                errors.push(format!(
                    "{}: Unsupported value: {s:?}: supported values: {}",
                    at(path),
                    list.join(", ")
                ));
            }
        }
        Some("integer") | Some("number") => {
            let Some(n) = value.as_f64() else {
                errors.push(format!("{}: must be a number", at(path)));
                return;
            };
            if ty == Some("integer") && n.fract() != 0.0 {
                errors.push(format!("{}: must be an integer", at(path)));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                errors.push(format!(
                    "{}: should be less than or equal to {max}",
                    at(path)
                ));
            }
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                errors.push(format!(
                    "{}: should be greater than or equal to {min}",
                    at(path)
                ));
            }
        }
        Some("boolean") if !value.is_boolean() => {
            errors.push(format!("{}: must be a boolean", at(path)));
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Validate a manifest (as JSON) against a CRD: OpenAPI constraints, then CEL rules.
pub fn validate_against_crd(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    object: &Value,
) -> Vec<String> {
    let Some(schema) = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
    else {
        return vec!["CRD has no schema".into()];
    };
    // metadata is validated by the API server itself, not by the CRD schema.
    let mut body = object.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("metadata");
        map.remove("apiVersion");
        map.remove("kind");
        map.remove("status");
    }
    let mut errors = validate(&schema, &body);
    if errors.is_empty()
        && let Err(e) = kube::core::cel::Validator::new().validate(&schema, object, None)
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
    errors
}
