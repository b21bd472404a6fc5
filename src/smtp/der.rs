//! Just enough DER to read a certificate's expiry (`notAfter`), so that status can
//! warn before a relay's certificate lapses without pulling in an X.509 crate.

/// One TLV: (tag, content, rest of input). `None` on malformed input.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const EXPLICIT_VERSION: u8 = 0xa0;

/// The leaf certificate's `notAfter` as RFC 3339 (`2027-01-31T12:00:00Z`).
pub fn not_after(cert: &[u8]) -> Option<String> {
    let (tag, certificate, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == EXPLICIT_VERSION {
        rest = after;
    }
    // serialNumber, signature, issuer
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
    let (tag, validity, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, after_not_before) = tlv(validity)?;
    let (tag, time, _) = tlv(after_not_before)?;
    let text = std::str::from_utf8(time).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match tag {
        UTC_TIME if digits.len() == 12 => {
            let yy: u32 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        GENERALIZED_TIME if digits.len() == 14 => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    Some(format!(
        "{year:04}-{}-{}T{}:{}:{}Z",
        &rest[0..2],
        &rest[2..4],
        &rest[4..6],
        &rest[6..8],
        &rest[8..10]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal certificate skeleton: version, serial, algorithm, issuer, validity.
    fn cert_with_validity(not_before: (u8, &str), not_after_: (u8, &str)) -> Vec<u8> {
        fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            if content.len() < 0x80 {
                out.push(content.len() as u8);
            } else {
                out.push(0x82);
                out.extend_from_slice(&(content.len() as u16).to_be_bytes());
            }
            out.extend_from_slice(content);
            out
        }
        let mut tbs = wrap(EXPLICIT_VERSION, &wrap(0x02, &[2]));
        tbs.extend(wrap(0x02, &[1, 2, 3]));
        tbs.extend(wrap(SEQUENCE, &wrap(0x06, &[1, 2])));
        tbs.extend(wrap(SEQUENCE, &[0u8; 200]));
        let mut validity = wrap(not_before.0, not_before.1.as_bytes());
        validity.extend(wrap(not_after_.0, not_after_.1.as_bytes()));
        tbs.extend(wrap(SEQUENCE, &validity));
        wrap(SEQUENCE, &wrap(SEQUENCE, &tbs))
    }

    #[test]
    fn reads_utc_time() {
        let cert = cert_with_validity((UTC_TIME, "250101000000Z"), (UTC_TIME, "270131120000Z"));
        assert_eq!(not_after(&cert).as_deref(), Some("2027-01-31T12:00:00Z"));
    }

    #[test]
    fn reads_generalized_time() {
        let cert = cert_with_validity(
            (UTC_TIME, "250101000000Z"),
            (GENERALIZED_TIME, "20610704083000Z"),
        );
        assert_eq!(not_after(&cert).as_deref(), Some("2061-07-04T08:30:00Z"));
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert_eq!(not_after(&[]), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x05, 0x30, 0x03, 0x02]), None);
        let cert = cert_with_validity((UTC_TIME, "250101000000Z"), (UTC_TIME, "27013112000xZ"));
        assert_eq!(not_after(&cert), None);
        for len in 0..64 {
            let cert = cert_with_validity((UTC_TIME, "250101000000Z"), (UTC_TIME, "270131120000Z"));
            let _ = not_after(&cert[..len.min(cert.len())]);
        }
    }
}
