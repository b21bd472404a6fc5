//! What the probe reads in a message's header: its token and the receiver's
//! Authentication-Results verdicts (pure).

/// The header carrying the probe token.
pub const PROBE_HEADER: &str = "X-Smtp-Relay-Probe";

/// SPF, DKIM and DMARC verdicts of the first Authentication-Results header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdicts {
    pub spf: Option<String>,
    pub dkim: Option<String>,
    pub dmarc: Option<String>,
}

impl Verdicts {
    pub fn is_empty(&self) -> bool {
        self.spf.is_none() && self.dkim.is_none() && self.dmarc.is_none()
    }
}

/// Unfolded header fields (name, value) of a header block; stops at the first empty line.
fn fields(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_string(), value.trim().to_string()));
        }
        if out.len() > 500 {
            break;
        }
    }
    out
}

/// The probe token and the verdicts found in a header block. Never panics.
pub fn parse_headers(raw: &[u8]) -> (Option<String>, Verdicts) {
    let fields = fields(raw);
    let token = fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(PROBE_HEADER))
        .map(|(_, v)| v.clone());
    let mut verdicts = Verdicts::default();
    if let Some((_, value)) = fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Authentication-Results"))
    {
        // authserv-id; method=result (comment) prop=value; ...
        for part in value.split(';').skip(1) {
            let Some((method, rest)) = part.trim().split_once('=') else {
                continue;
            };
            let result: String = rest
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .take(16)
                .collect::<String>()
                .to_ascii_lowercase();
            if result.is_empty() {
                continue;
            }
            let slot = match method.trim().to_ascii_lowercase().as_str() {
                "spf" => &mut verdicts.spf,
                "dkim" => &mut verdicts.dkim,
                "dmarc" => &mut verdicts.dmarc,
                _ => continue,
            };
            slot.get_or_insert(result);
        }
    }
    (token, verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_token_and_folded_verdicts() {
        let raw = b"Received: from x\r\nX-Smtp-Relay-Probe: abc.123\r\n\
Authentication-Results: mx.example.com;\r\n\tspf=pass smtp.mailfrom=a@example.com;\r\n dkim=fail (bad sig) header.d=example.com;\r\n dmarc=PASS header.from=example.com\r\n\r\nX-Smtp-Relay-Probe: body\r\n";
        let (token, v) = parse_headers(raw);
        assert_eq!(token.as_deref(), Some("abc.123"));
        assert_eq!(v.spf.as_deref(), Some("pass"));
        assert_eq!(v.dkim.as_deref(), Some("fail"));
        assert_eq!(v.dmarc.as_deref(), Some("pass"));
    }

    #[test]
    fn no_headers_no_verdicts_and_garbage_is_harmless() {
        let (token, v) = parse_headers(b"Subject: hi\r\n\r\n");
        assert_eq!(token, None);
        assert!(v.is_empty());
        let (_, v) = parse_headers(b"Authentication-Results: mx; spf; =; dkim=\xff\xfe\r\n");
        assert!(v.is_empty(), "{v:?}");
        let _ = parse_headers(&[0xff; 300]);
    }
}
