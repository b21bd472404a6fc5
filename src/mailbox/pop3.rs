//! The POP3 commands the probe needs (RFC 1939, 2449, 2595), nothing more.

use tokio::time::Instant;

use super::io::{Conn, MAX_BLOCK, text};
use super::{Found, Look, MailboxError, Target, Token, check_credential, tls_client};
use crate::smtp::Security;

/// Most messages whose headers are read per look (the newest ones).
const MAX_MESSAGES: usize = 200;

struct Session {
    conn: Conn,
}

impl Session {
    /// Send a command, expect +OK; the reply text, or Err with the server's -ERR text.
    async fn command(&mut self, line: &str) -> Result<Result<String, String>, MailboxError> {
        self.conn.send(line.as_bytes()).await?;
        self.status().await
    }

    async fn status(&mut self) -> Result<Result<String, String>, MailboxError> {
        let reply = self.conn.line().await?;
        if let Some(rest) = reply.strip_prefix(b"+OK") {
            Ok(Ok(text(rest)))
        } else if let Some(rest) = reply.strip_prefix(b"-ERR") {
            Ok(Err(text(rest)))
        } else {
            Err(MailboxError::Protocol(format!(
                "{}: not a POP3 reply: {}",
                self.conn.peer,
                text(&reply)
            )))
        }
    }

    async fn ok(&mut self, line: &str, what: &str) -> Result<String, MailboxError> {
        self.command(line)
            .await?
            .map_err(|e| self.refused(what, &e))
    }

    /// The error for a command the server answered with -ERR `e`.
    fn refused(&self, what: &str, e: &str) -> MailboxError {
        MailboxError::Protocol(format!("{}: {what} refused: -ERR {e}", self.conn.peer))
    }

    /// The lines of a multi-line reply, dot-unstuffed, within [`MAX_BLOCK`] bytes.
    async fn block(&mut self) -> Result<Vec<Vec<u8>>, MailboxError> {
        let mut lines = Vec::new();
        let mut total = 0usize;
        loop {
            let line = self.conn.line().await?;
            if line == b"." {
                return Ok(lines);
            }
            total += line.len() + 2;
            if total > MAX_BLOCK {
                return Err(MailboxError::Protocol(format!(
                    "{}: reply larger than {MAX_BLOCK} bytes",
                    self.conn.peer
                )));
            }
            lines.push(match line.strip_prefix(b".") {
                Some(rest) => rest.to_vec(),
                None => line,
            });
        }
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
        "POP3",
    )
    .await?;
    let mut s = Session { conn };
    if !matches!(s.status().await, Ok(Ok(_))) {
        return Err(MailboxError::Protocol(format!(
            "{} did not greet as a POP3 server (check the host, port, protocol and tls.mode)",
            s.conn.peer
        )));
    }
    if target.security == Security::StartTls {
        let caps = match s.command("CAPA").await? {
            Ok(_) => s.block().await?,
            Err(_) => Vec::new(),
        };
        if !caps.iter().any(|c| c.eq_ignore_ascii_case(b"STLS")) {
            return Err(MailboxError::Unreachable(format!(
                "{} does not offer STLS; tls.mode StartTls never falls back to plain text",
                s.conn.peer
            )));
        }
        s.ok("STLS", "STLS").await?;
        let config = tls.ok_or_else(|| MailboxError::Unreachable("no TLS configuration".into()))?;
        s.conn = s.conn.upgrade(config).await?;
    }
    let refused = |peer: &str, e: String| {
        MailboxError::AuthRejected(format!(
            "{peer} refused the login of {:?}: -ERR {e}",
            target.username
        ))
    };
    if let Err(e) = s.command(&format!("USER {}", target.username)).await? {
        return Err(refused(&s.conn.peer, e));
    }
    if let Err(e) = s
        .command(&format!("PASS {}", target.password.expose()))
        .await?
    {
        return Err(refused(&s.conn.peer, e));
    }
    // STAT, not a listing: a busy mailbox's UIDL can be megabytes. Messages are
    // numbered 1..=N in arrival order; the newest are looked at.
    let stat = s.ok("STAT", "STAT").await?;
    let count: u32 = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            MailboxError::Protocol(format!(
                "{}: STAT answered {:?}, not a message count",
                s.conn.peer,
                crate::table::clip(&stat, 60)
            ))
        })?;
    let first = count.saturating_sub(MAX_MESSAGES as u32) + 1;
    let numbers: Vec<u32> = (first..=count).collect();
    let prefix = format!("{}.", token.relay);
    let mut result = Look::default();
    let mut refused = None;
    let mut read = 0usize;
    for n in &numbers {
        // A message another client expunged since STAT is refused (Dovecot: "-ERR
        // Message N expunged"); the mailbox is shared, so that is no failure. A server
        // that refuses every TOP (TOP is optional in POP3) is one, below.
        if let Err(e) = s.command(&format!("TOP {n} 0")).await? {
            refused = Some(e);
            continue;
        }
        read += 1;
        let header = s.block().await?.join(&b"\r\n"[..]);
        let (found, verdicts) = super::parse_headers(&header);
        let ours = match found {
            Some(t) if t == token.value && result.found.is_none() => {
                result.found = Some(Found {
                    folder: "INBOX".into(),
                    junk: false,
                    verdicts,
                });
                true
            }
            Some(t) if t.starts_with(&prefix) => {
                result.stale_deleted += 1;
                true
            }
            _ => false,
        };
        if ours {
            s.ok(&format!("DELE {n}"), "DELE").await?;
        }
    }
    if read == 0
        && let Some(e) = refused
    {
        return Err(s.refused("TOP", &e));
    }
    // Deletions take effect at QUIT.
    s.ok("QUIT", "QUIT").await?;
    Ok(result)
}
