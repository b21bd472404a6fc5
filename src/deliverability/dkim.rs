//! DKIM key records (RFC 6376 §3.6.1): SELECTOR._domainkey.DOMAIN must hold a key
//! receivers can use. mail-auth parses and loads the key; the RSA modulus size is read
//! here (mail-auth does not expose it) to refuse keys under 1024 bits (RFC 8301) and
//! warn under 2048.

use base64::Engine;
use hickory_resolver::TokioResolver;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;

use super::dns::{self, Miss};
use crate::api::DkimCheck;

/// Under this, receivers ignore the key.
pub const MIN_RSA_BITS: i32 = 1024;
/// Under this, a warning.
pub const GOOD_RSA_BITS: i32 = 2048;

/// The tags of a record, in order (names lowercased, values trimmed).
fn tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|t| {
            let (k, v) = t.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect()
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One DER element: (tag, contents, rest). None on anything malformed.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Bits of the modulus of an RSA public key given as SubjectPublicKeyInfo or as a
/// bare RSAPublicKey (both occur in DKIM records).
pub fn rsa_bits(key: &[u8]) -> Option<i32> {
    let (tag, body, _) = der(key)?;
    if tag != 0x30 {
        return None;
    }
    let (first_tag, first, rest) = der(body)?;
    let modulus = match first_tag {
        // RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }
        0x02 => first,
        // SubjectPublicKeyInfo: SEQUENCE { AlgorithmIdentifier, BIT STRING { RSAPublicKey } }
        0x30 => {
            let (bit_tag, bits, _) = der(rest)?;
            if bit_tag != 0x03 || bits.is_empty() {
                return None;
            }
            let (seq_tag, seq, _) = der(&bits[1..])?;
            if seq_tag != 0x30 {
                return None;
            }
            let (n_tag, n, _) = der(seq)?;
            if n_tag != 0x02 {
                return None;
            }
            n
        }
        _ => return None,
    };
    let significant: &[u8] = {
        let start = modulus.iter().position(|b| *b != 0)?;
        &modulus[start..]
    };
    let lead = significant[0];
    Some((significant.len() as i32 - 1) * 8 + (8 - lead.leading_zeros() as i32))
}

fn shortened(record: &str) -> String {
    // The key is long and says nothing to a reader: keep its start.
    tags(record)
        .iter()
        .map(|(k, v)| {
            if k == "p" && v.chars().count() > 24 {
                format!("p={}…", v.chars().take(24).collect::<String>())
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn result(selector: &str, result: &str, message: String) -> DkimCheck {
    DkimCheck {
        selector: selector.into(),
        result: result.into(),
        message,
        ..Default::default()
    }
}

/// Judge one selector's record text (pure: no DNS).
pub fn judge(selector: &str, name: &str, record: &str) -> DkimCheck {
    let t = tags(record);
    let mut out = result(selector, "Invalid", String::new());
    out.record = Some(shortened(record));
    if let Some(v) = tag(&t, "v")
        && v != "DKIM1"
    {
        out.message = format!("{name}: v={v}, expected v=DKIM1");
        return out;
    }
    let key_type = tag(&t, "k").unwrap_or("rsa").to_ascii_lowercase();
    if key_type != "rsa" && key_type != "ed25519" {
        out.message = format!("{name}: key type k={key_type}; receivers support rsa and ed25519");
        return out;
    }
    out.key_type = Some(key_type.clone());
    let Some(p) = tag(&t, "p") else {
        out.message = format!("{name}: no p= (public key) tag");
        return out;
    };
    let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
    if p.is_empty() {
        out.result = "Revoked".into();
        out.message = format!("{name}: the key is revoked (empty p=)");
        return out;
    }
    let Ok(key) = base64::engine::general_purpose::STANDARD.decode(p.as_bytes()) else {
        out.message = format!("{name}: p= is not valid base64");
        return out;
    };
    if key_type == "rsa" {
        let Some(bits) = rsa_bits(&key) else {
            out.message = format!("{name}: p= is not an RSA public key");
            return out;
        };
        out.key_bits = Some(bits);
        if bits < MIN_RSA_BITS {
            out.result = "TooWeak".into();
            out.message = format!(
                "{name}: {bits}-bit RSA key; receivers ignore keys under {MIN_RSA_BITS} bits (RFC 8301): publish a 2048-bit key"
            );
            return out;
        }
    }
    if let Err(e) = DomainKey::parse(record.as_bytes()) {
        out.message = format!("{name}: the key does not load: {e}");
        return out;
    }
    match out.key_bits {
        Some(bits) if bits < GOOD_RSA_BITS => {
            out.result = "Weak".into();
            out.message = format!(
                "{name}: {bits}-bit RSA key works but is weak: publish a {GOOD_RSA_BITS}-bit key"
            );
        }
        Some(bits) => {
            out.result = "Valid".into();
            out.message = format!("{name}: {bits}-bit RSA key");
        }
        None => {
            out.result = "Valid".into();
            out.message = format!("{name}: {key_type} key");
        }
    }
    out
}

/// Look up and judge one selector.
pub async fn check(r: &TokioResolver, domain: &str, selector: &str) -> DkimCheck {
    let name = format!("{selector}._domainkey.{domain}");
    match dns::txt(r, &name).await {
        Err(Miss::NotFound) => result(
            selector,
            "Missing",
            format!("{name} has no TXT record: publish the selector's public key there"),
        ),
        Err(Miss::Temporary(e)) => result(selector, "TempError", format!("{name}: {e}")),
        Ok(records) => {
            // A key record carries p=; prefer one that says v=DKIM1.
            let pick = records
                .iter()
                .find(|r| r.trim_start().starts_with("v=DKIM1"))
                .or_else(|| records.iter().find(|r| r.contains("p=")));
            match pick {
                Some(record) => judge(selector, &name, record),
                None => result(
                    selector,
                    "Missing",
                    format!("{name} has TXT records, none of them a DKIM key"),
                ),
            }
        }
    }
}
