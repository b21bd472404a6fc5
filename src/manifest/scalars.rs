//! Scalars and map keys resolved as go-yaml v2 resolves them (YAML 1.1: yes/on are
//! booleans, 017 is octal, .nan is refused), and floats printed as Go prints them.

use granit_parser::{ScalarStyle, Tag};
use serde_json::{Number, Value};
use std::borrow::Cow;

/// What go-yaml resolves a scalar to, before it becomes JSON.
pub(super) enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
}

/// A mapping key as sigs.k8s.io/yaml writes it into JSON; `None` for the merge key `<<`.
pub(super) fn map_key(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
) -> Result<Option<String>, String> {
    if style == ScalarStyle::Plain && text == "<<" && tag.is_none() {
        return Ok(None);
    }
    Ok(Some(match resolve(text, style, tag)? {
        Resolved::Str(s) => s,
        Resolved::Bool(b) => b.to_string(),
        Resolved::Int(i) => i.to_string(),
        Resolved::Float(f) => go_float_key(f),
        Resolved::Uint(_) | Resolved::Null => {
            return Err(format!(
                "unsupported map key {:?}",
                crate::table::clip(text, 64)
            ));
        }
    }))
}

/// A scalar value as JSON: `.nan` and `.inf` are refused (JSON has no such numbers),
/// and a float without a fraction becomes an integer, as it does on its way to the
/// API server.
pub(super) fn scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    Ok(match resolve(text, style, tag)? {
        Resolved::Null => Value::Null,
        Resolved::Bool(b) => Value::Bool(b),
        Resolved::Int(i) => Value::Number(i.into()),
        Resolved::Uint(u) => Value::Number(u.into()),
        Resolved::Str(s) => Value::String(s),
        Resolved::Float(f) => {
            if !f.is_finite() {
                return Err(format!(
                    "{:?} is not a number JSON can carry (json: unsupported value: {})",
                    crate::table::clip(text, 32),
                    if f.is_nan() {
                        "NaN"
                    } else if f > 0.0 {
                        "+Inf"
                    } else {
                        "-Inf"
                    }
                ));
            }
            if f.fract() == 0.0
                && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f)
            {
                // In range and integral: exact as i64.
                Value::Number((f as i64).into())
            } else {
                Number::from_f64(f)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
    })
}

pub(super) fn resolve(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
) -> Result<Resolved, String> {
    let Some(tag) = tag else {
        return Ok(if style == ScalarStyle::Plain {
            resolve_plain(text)
        } else {
            Resolved::Str(text.to_string())
        });
    };
    let name: Option<Cow<'_, str>> = tag.suffix_in_namespace("tag:yaml.org,2002:");
    let wrong = |want: &str| {
        format!(
            "cannot decode `{}` as a !!{want}",
            crate::table::clip(text, 32)
        )
    };
    match name.as_deref() {
        Some("str") | Some("timestamp") => Ok(Resolved::Str(text.to_string())),
        Some("binary") => {
            use base64::Engine as _;
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|_| wrong("binary"))?;
            Ok(Resolved::Str(String::from_utf8_lossy(&bytes).into_owned()))
        }
        Some("int") => match resolve_plain(text) {
            r @ (Resolved::Int(_) | Resolved::Uint(_)) => Ok(r),
            _ => Err(wrong("int")),
        },
        Some("float") => match resolve_plain(text) {
            Resolved::Int(i) => Ok(Resolved::Float(i as f64)),
            r @ Resolved::Float(_) => Ok(r),
            _ => Err(wrong("float")),
        },
        Some("bool") => match resolve_plain(text) {
            r @ Resolved::Bool(_) => Ok(r),
            _ => Err(wrong("bool")),
        },
        Some("null") => match resolve_plain(text) {
            r @ Resolved::Null => Ok(r),
            _ => Err(wrong("null")),
        },
        Some("map") | Some("seq") => Err(format!(
            "cannot decode the scalar `{}` as a !!{}",
            crate::table::clip(text, 32),
            name.as_deref().unwrap_or("")
        )),
        // Any other tag (`!foo`, `!`): the text, as go-yaml leaves it.
        _ => Ok(Resolved::Str(text.to_string())),
    }
}

/// go-yaml v2's resolution of a plain (unquoted, untagged) scalar.
pub(super) fn resolve_plain(text: &str) -> Resolved {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Resolved::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Resolved::Bool(false);
        }
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        _ => {}
    }
    match text.as_bytes().first() {
        Some(b'.') => match text.parse::<f64>() {
            Ok(f) if f.is_finite() && go_float_syntax(text) => Resolved::Float(f),
            _ => Resolved::Str(text.to_string()),
        },
        Some(b'0'..=b'9' | b'+' | b'-') => resolve_number(text),
        _ => Resolved::Str(text.to_string()),
    }
}

/// Numbers as go-yaml reads them: underscores dropped, then an integer in any base
/// Go's `strconv.ParseInt(s, 0, 64)` knows, then an unsigned one, then a float.
pub(super) fn resolve_number(text: &str) -> Resolved {
    let plain: String = text.chars().filter(|c| *c != '_').collect();
    if let Some(i) = go_parse_int(&plain) {
        return match i {
            GoInt::Signed(i) => Resolved::Int(i),
            GoInt::Unsigned(u) => Resolved::Uint(u),
        };
    }
    if yaml_style_float(&plain)
        && let Ok(f) = plain.parse::<f64>()
        && f.is_finite()
    {
        return Resolved::Float(f);
    }
    if let Some(bits) = plain.strip_prefix("-0b")
        && let Ok(v) = i64::from_str_radix(&format!("-{bits}"), 2)
    {
        return Resolved::Int(v);
    }
    Resolved::Str(text.to_string())
}

pub(super) enum GoInt {
    Signed(i64),
    Unsigned(u64),
}

/// `strconv.ParseInt(s, 0, 64)`, then `strconv.ParseUint(s, 0, 64)`.
pub(super) fn go_parse_int(s: &str) -> Option<GoInt> {
    let (negative, unsigned_ok, body) = match s.as_bytes().first() {
        Some(b'-') => (true, false, &s[1..]),
        Some(b'+') => (false, false, &s[1..]),
        _ => (false, true, s),
    };
    let lower = body.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match lower.as_deref() {
        Some("0x") => (16, &body[2..]),
        Some("0o") => (8, &body[2..]),
        Some("0b") => (2, &body[2..]),
        _ if body.len() > 1 && body.starts_with('0') => (8, &body[1..]),
        _ => (10, body),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u128::from_str_radix(digits, radix).ok()?;
    if negative {
        let limit = u128::from(i64::MAX as u64) + 1;
        if magnitude > limit {
            return None;
        }
        return Some(GoInt::Signed(if magnitude == limit {
            i64::MIN
        } else {
            -(i64::try_from(magnitude).ok()?)
        }));
    }
    if let Ok(i) = i64::try_from(magnitude) {
        return Some(GoInt::Signed(i));
    }
    if unsigned_ok && let Ok(u) = u64::try_from(magnitude) {
        return Some(GoInt::Unsigned(u));
    }
    None
}

/// go-yaml's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
pub(super) fn yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseFloat` syntax for a text starting with `.` (Rust's parser also
/// takes `inf` and `nan`, which cannot start with a dot, so only digits and an
/// exponent are left to check).
pub(super) fn go_float_syntax(s: &str) -> bool {
    yaml_style_float(s)
}

/// A float map key as sigs.k8s.io/yaml writes it: `strconv.FormatFloat(f, 'g', -1, 32)`.
pub(super) fn go_float_key(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.into();
    }
    let short = format!("{:e}", f as f32); // shortest digits, e.g. "1.5e3"
    let Some((mantissa, exp)) = short.split_once('e') else {
        return short;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let e_sign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{rest}e{e_sign}{:02}", exp.abs());
    }
    let point = exp + 1; // digits before the decimal point
    let body = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else {
        let point = point as usize;
        if digits.len() <= point {
            format!("{digits}{}", "0".repeat(point - digits.len()))
        } else {
            format!("{}.{}", &digits[..point], &digits[point..])
        }
    };
    format!("{sign}{body}")
}
