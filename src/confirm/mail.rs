//! The confirmation mail, in English or French.

use crate::api::Language;
use crate::smtp::{Mailbox, Outgoing};

/// Header carrying the attempt id (not secret), so a mail can be matched to its attempt.
pub const ATTEMPT_HEADER: &str = "X-SmtpRelay-Confirmation";

/// What the mail needs to say.
pub struct ConfirmationMail<'a> {
    pub language: Language,
    /// The operator's confirmation sender (--confirmation-from, --confirmation-from-name).
    pub from: Mailbox,
    pub reply_to: Mailbox,
    /// The address being confirmed. (The requester's display name is left out of the
    /// mail on purpose: it is text they choose, shown to the owner.)
    pub address: &'a str,
    /// "namespace/name" of the identity.
    pub identity: &'a str,
    pub attempt_id: &'a str,
    /// Link with token, when a base URL is configured.
    pub link: Option<String>,
    pub code: &'a str,
    /// Human-readable validity, e.g. "24h".
    pub ttl: &'a str,
}

/// Build the confirmation mail.
pub fn build(m: &ConfirmationMail<'_>) -> Outgoing {
    let who = m.address;
    let (subject, text) = match m.language {
        crate::api::Language::En => {
            let how = match &m.link {
                Some(link) => format!(
                    "To confirm, open this link and press \"Confirm\":\r\n\r\n  {link}\r\n\r\nor give this code to your platform team:"
                ),
                None => "To confirm, give this code to your platform team:".to_string(),
            };
            (
                format!("Confirm {} as a sender address", m.address),
                format!(
                    "Hello,\r\n\r\n\
                     Applications in your organisation want to send mail as {who}\r\n\
                     (sender identity {identity}).\r\n\r\n\
                     {how}\r\n\r\n  {code}\r\n\r\n\
                     (kubectl annotate senderidentity ... smtprelay.io/confirmation-code={code})\r\n\r\n\
                     The link and the code are valid for {ttl}. If you did not expect this\r\n\
                     message, ignore it: nothing will be sent as this address.\r\n",
                    identity = m.identity,
                    code = m.code,
                    ttl = m.ttl,
                ),
            )
        }
        crate::api::Language::Fr => {
            let how = match &m.link {
                Some(link) => format!(
                    "Pour confirmer, ouvrez ce lien puis cliquez sur \u{ab} Confirmer \u{bb} :\r\n\r\n  {link}\r\n\r\nou communiquez ce code \u{e0} votre \u{e9}quipe plateforme :"
                ),
                None => "Pour confirmer, communiquez ce code \u{e0} votre \u{e9}quipe plateforme :"
                    .to_string(),
            };
            (
                format!("Confirmez l'adresse d'envoi {}", m.address),
                format!(
                    "Bonjour,\r\n\r\n\
                     Des applications de votre organisation souhaitent envoyer des e-mails\r\n\
                     en tant que {who} (identit\u{e9} d'envoi {identity}).\r\n\r\n\
                     {how}\r\n\r\n  {code}\r\n\r\n\
                     (kubectl annotate senderidentity ... smtprelay.io/confirmation-code={code})\r\n\r\n\
                     Le lien et le code sont valables {ttl}. Si vous n'attendiez pas ce\r\n\
                     message, ignorez-le : rien ne sera envoy\u{e9} depuis cette adresse.\r\n",
                    identity = m.identity,
                    code = m.code,
                    ttl = m.ttl,
                ),
            )
        }
    };
    // Only our own header: a relay's customHeaders are the requester's text.
    let headers = vec![(ATTEMPT_HEADER.to_string(), m.attempt_id.to_string())];
    Outgoing {
        from: m.from.clone(),
        reply_to: m.reply_to.clone(),
        to: m.address.to_string(),
        subject,
        text,
        headers,
    }
}

/// The text of a delivered message: body decoded from quoted-printable or base64
/// when its headers say so; text without headers is returned as is.
pub fn body_text(raw: &str) -> String {
    let raw = raw.replace("\r\n", "\n");
    let Some((headers, body)) = raw.split_once("\n\n") else {
        return raw;
    };
    let encoding = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-transfer-encoding")
                .then(|| v.trim().to_ascii_lowercase())
        })
        .unwrap_or_default();
    match encoding.as_str() {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => {
            use base64::Engine as _;
            let compact: String = body.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        }
        _ if headers.lines().any(|l| l.contains(':')) => body.to_string(),
        _ => raw,
    }
}

fn decode_quoted_printable(body: &str) -> String {
    let mut out = Vec::with_capacity(body.len());
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'=');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Pull the link and code back out of a delivered confirmation mail (tests, tooling).
pub fn parse(raw: &str) -> (Option<String>, Option<String>) {
    let text = body_text(raw);
    let link = text
        .split_whitespace()
        .find(|w| w.contains("/confirm/") && w.starts_with("http"))
        .map(str::to_string);
    let code = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("smtprelay.io/confirmation-code="))
        .map(|c| c.trim_end_matches(')').to_string());
    (link, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(language: Language, link: Option<String>) -> Outgoing {
        build(&ConfirmationMail {
            language,
            from: Mailbox {
                name: Some("ACME".into()),
                address: "noreply@example.test".into(),
            },
            reply_to: Mailbox {
                name: None,
                address: "noreply@example.test".into(),
            },
            address: "sales@example.test",
            identity: "team/sales",
            attempt_id: "a1b2c3",
            link,
            code: "ABCD-EFGH",
            ttl: "24h",
        })
    }

    #[test]
    fn both_languages_carry_link_code_and_attempt() {
        for lang in [Language::En, Language::Fr] {
            let m = mail(
                lang,
                Some("https://c.example.test/confirm/team/sales/TOKEN".into()),
            );
            assert_eq!(m.to, "sales@example.test");
            assert_eq!(
                m.headers,
                vec![(ATTEMPT_HEADER.into(), "a1b2c3".into())],
                "no header but ours"
            );
            let (link, code) = parse(&m.text);
            assert_eq!(
                link.as_deref(),
                Some("https://c.example.test/confirm/team/sales/TOKEN")
            );
            assert_eq!(code.as_deref(), Some("ABCD-EFGH"));
        }
        assert!(mail(Language::Fr, None).subject.starts_with("Confirmez"));
        let qp = "Subject: x\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n(kubectl annotate smtprelay.io/confirmation-code=3DAB=\r\nCD-EFGH) caf=C3=A9\r\n";
        assert_eq!(parse(qp).1.as_deref(), Some("ABCD-EFGH"));
        assert!(body_text(qp).contains("café"));
        let odd = "Content-Transfer-Encoding: quoted-printable\r\n\r\na=é=Z\r\n";
        assert!(
            body_text(odd).starts_with("a=é=Z"),
            "no panic on a non-hex escape"
        );
        let b64 = "Content-Transfer-Encoding: base64\r\n\r\nc210cHJlbGF5LmlvL2NvbmZpcm1hdGlvbi1jb2RlPVdYWVotMTIzNA==\r\n";
        assert_eq!(parse(b64).1.as_deref(), Some("WXYZ-1234"));
        assert!(
            mail(Language::En, None)
                .subject
                .starts_with("Confirm sales@")
        );
        assert_eq!(parse(&mail(Language::En, None).text).0, None);
    }
}
