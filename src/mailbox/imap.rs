//! The IMAP commands the probe needs (RFC 3501), nothing more.

use tokio::time::Instant;

use super::io::{Conn, MAX_BLOCK, text};
use super::{Found, Look, MailboxError, PROBE_HEADER, Target, Token, check_credential, tls_client};
use crate::smtp::Security;

/// Most untagged lines one command may produce.
const MAX_UNTAGGED: usize = 10_000;
/// Most probe messages handled in one folder per look.
const MAX_MESSAGES: usize = 100;

/// One untagged response: its text (literals left as `{n}`) and its literals.
struct Untagged {
    text: String,
    literals: Vec<Vec<u8>>,
}

struct Response {
    untagged: Vec<Untagged>,
    /// OK, NO or BAD.
    status: String,
    text: String,
}

/// A command argument: an atom sent as is, or a string quoted or sent as a literal.
enum Arg<'a> {
    Atom(&'a str),
    Str(&'a [u8]),
}

/// Can `s` go in a quoted string? (7-bit, no CR, LF or NUL.)
fn quotable(s: &[u8]) -> bool {
    s.iter()
        .all(|b| (0x01..0x80).contains(b) && *b != b'\r' && *b != b'\n')
}

fn quote(s: &[u8]) -> Vec<u8> {
    let mut out = vec![b'"'];
    for b in s {
        if matches!(b, b'"' | b'\\') {
            out.push(b'\\');
        }
        out.push(*b);
    }
    out.push(b'"');
    out
}

/// `{n}` at the end of a line: the size of the literal that follows.
fn literal_size(line: &[u8]) -> Option<usize> {
    let rest = line.strip_suffix(b"}")?;
    let open = rest.iter().rposition(|b| *b == b'{')?;
    let digits = &rest[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

struct Session {
    conn: Conn,
    next_tag: u32,
}

impl Session {
    async fn command(&mut self, args: &[Arg<'_>]) -> Result<Response, MailboxError> {
        self.next_tag += 1;
        let tag = format!("p{}", self.next_tag);
        let mut line = tag.clone().into_bytes();
        for arg in args {
            line.push(b' ');
            match arg {
                Arg::Atom(a) => line.extend_from_slice(a.as_bytes()),
                Arg::Str(s) if quotable(s) => line.extend_from_slice(&quote(s)),
                Arg::Str(s) => {
                    line.extend_from_slice(format!("{{{}}}", s.len()).as_bytes());
                    self.conn.send(&line).await?;
                    let cont = self.conn.line().await?;
                    if !cont.starts_with(b"+") {
                        return Err(MailboxError::Protocol(format!(
                            "{}: refused a literal: {}",
                            self.conn.peer,
                            text(&cont)
                        )));
                    }
                    self.conn.send_raw(s).await?;
                    line.clear();
                }
            }
        }
        self.conn.send(&line).await?;
        self.response(&tag).await
    }

    async fn response(&mut self, tag: &str) -> Result<Response, MailboxError> {
        let mut untagged = Vec::new();
        let mut total = 0usize;
        loop {
            let mut line = self.conn.line().await?;
            let mut literals = Vec::new();
            while let Some(n) = literal_size(&line) {
                total += n;
                if total > MAX_BLOCK * 4 {
                    return Err(MailboxError::Protocol(format!(
                        "{}: response too large",
                        self.conn.peer
                    )));
                }
                literals.push(self.conn.exact(n).await?);
                let more = self.conn.line().await?;
                line.extend_from_slice(&more);
            }
            let t = String::from_utf8_lossy(&line).into_owned();
            if let Some(rest) = t.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
                let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
                return Ok(Response {
                    untagged,
                    status: status.to_ascii_uppercase(),
                    text: text::clip(text),
                });
            }
            if t.starts_with("* ") {
                if untagged.len() >= MAX_UNTAGGED {
                    return Err(MailboxError::Protocol(format!(
                        "{}: too many responses",
                        self.conn.peer
                    )));
                }
                untagged.push(Untagged { text: t, literals });
            } else if !t.starts_with('+') {
                return Err(MailboxError::Protocol(format!(
                    "{}: unexpected line: {}",
                    self.conn.peer,
                    text(&line)
                )));
            }
        }
    }

    async fn ok(&mut self, args: &[Arg<'_>], what: &str) -> Result<Response, MailboxError> {
        let r = self.command(args).await?;
        if r.status != "OK" {
            return Err(MailboxError::Protocol(format!(
                "{}: {what} refused: {} {}",
                self.conn.peer, r.status, r.text
            )));
        }
        Ok(r)
    }

    async fn capabilities(&mut self) -> Result<Vec<String>, MailboxError> {
        let r = self.ok(&[Arg::Atom("CAPABILITY")], "CAPABILITY").await?;
        Ok(r.untagged
            .iter()
            .filter_map(|u| u.text.strip_prefix("* CAPABILITY "))
            .flat_map(|c| c.split_whitespace().map(str::to_ascii_uppercase))
            .collect())
    }
}

mod text {
    pub fn clip(s: &str) -> String {
        super::text(s.as_bytes())
    }
}

pub async fn look(target: &Target, token: &Token, deadline: Instant) -> Result<Look, MailboxError> {
    check_credential("user name", &target.username)?;
    check_credential("password", target.password.expose())?;
    let tls = tls_client(target)?;
    let implicit = (target.security == Security::Tls)
        .then(|| tls.clone())
        .flatten();
    let conn = Conn::open(
        &target.host,
        target.port,
        &target.destinations,
        implicit,
        deadline,
        "IMAP",
    )
    .await?;
    let mut s = Session { conn, next_tag: 0 };
    let greeting = s.conn.line().await?;
    let preauth = greeting.starts_with(b"* PREAUTH");
    if !greeting.starts_with(b"* OK") && !preauth {
        return Err(MailboxError::Protocol(format!(
            "{} did not greet as an IMAP server (check the host, port, protocol and tls.mode)",
            s.conn.peer
        )));
    }
    if target.security == Security::StartTls {
        let caps = s.capabilities().await?;
        if !caps.iter().any(|c| c == "STARTTLS") {
            return Err(MailboxError::Unreachable(format!(
                "{} does not offer STARTTLS; tls.mode StartTls never falls back to plain text",
                s.conn.peer
            )));
        }
        s.ok(&[Arg::Atom("STARTTLS")], "STARTTLS").await?;
        let config = tls.ok_or_else(|| MailboxError::Unreachable("no TLS configuration".into()))?;
        s.conn = s.conn.upgrade(config).await?;
    }
    if !preauth {
        let r = s
            .command(&[
                Arg::Atom("LOGIN"),
                Arg::Str(target.username.as_bytes()),
                Arg::Str(target.password.expose().as_bytes()),
            ])
            .await?;
        if r.status != "OK" {
            return Err(MailboxError::AuthRejected(format!(
                "{} refused the login of {:?}: {} {}",
                s.conn.peer, target.username, r.status, r.text
            )));
        }
    }
    let uidplus = s.capabilities().await?.iter().any(|c| c == "UIDPLUS");
    let mut result = Look::default();
    for (i, folder) in target.folders.iter().enumerate() {
        let selected = s
            .command(&[Arg::Atom("SELECT"), Arg::Str(folder.as_bytes())])
            .await?;
        if selected.status != "OK" {
            // A folder this server does not have.
            continue;
        }
        let prefix = format!("{}.", token.relay);
        let search = s
            .ok(
                &[
                    Arg::Atom("UID SEARCH HEADER"),
                    Arg::Atom(PROBE_HEADER),
                    Arg::Str(prefix.as_bytes()),
                ],
                "SEARCH",
            )
            .await?;
        let uids: Vec<u32> = search
            .untagged
            .iter()
            .filter_map(|u| u.text.strip_prefix("* SEARCH"))
            .flat_map(|l| l.split_whitespace().filter_map(|n| n.parse().ok()))
            .take(MAX_MESSAGES)
            .collect();
        if uids.is_empty() {
            continue;
        }
        let set = uids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let items =
            format!("(UID BODY.PEEK[HEADER.FIELDS ({PROBE_HEADER} AUTHENTICATION-RESULTS)])");
        let fetched = s
            .ok(
                &[Arg::Atom("UID FETCH"), Arg::Atom(&set), Arg::Atom(&items)],
                "FETCH",
            )
            .await?;
        for u in &fetched.untagged {
            let Some(header) = u.literals.first() else {
                continue;
            };
            let (found, verdicts) = super::parse_headers(header);
            match found {
                Some(t) if t == token.value && result.found.is_none() => {
                    result.found = Some(Found {
                        folder: folder.clone(),
                        junk: i > 0,
                        verdicts,
                    });
                }
                Some(t) if t.starts_with(&prefix) => result.stale_deleted += 1,
                _ => {}
            }
        }
        s.ok(
            &[
                Arg::Atom("UID STORE"),
                Arg::Atom(&set),
                Arg::Atom("+FLAGS.SILENT (\\Deleted)"),
            ],
            "STORE",
        )
        .await?;
        if uidplus {
            s.ok(&[Arg::Atom("UID EXPUNGE"), Arg::Atom(&set)], "EXPUNGE")
                .await?;
        } else {
            s.ok(&[Arg::Atom("EXPUNGE")], "EXPUNGE").await?;
        }
    }
    // A polite goodbye; its answer does not matter.
    let _ = s.command(&[Arg::Atom("LOGOUT")]).await;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_or_sent_as_literals() {
        assert!(quotable(b"relay-user"));
        assert_eq!(quote(br#"pa"ss\word"#), br#""pa\"ss\\word""#.to_vec());
        assert!(!quotable("mot-de-passe-é".as_bytes()));
        assert!(!quotable(b"a\r\nb"));
    }

    #[test]
    fn literal_sizes() {
        assert_eq!(
            literal_size(b"* 1 FETCH (UID 4 BODY[HEADER] {120}"),
            Some(120)
        );
        assert_eq!(literal_size(b"{5+}"), Some(5));
        assert_eq!(literal_size(b"* OK {x}"), None);
        assert_eq!(literal_size(b"* OK {99999999999}"), None);
        assert_eq!(literal_size(b"}"), None);
    }
}
