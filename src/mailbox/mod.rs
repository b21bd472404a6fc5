//! The round-trip probe's mailbox client: find the relay's test message by its token
//! in an IMAP or POP3 mailbox, read its headers, delete it.
//!
//! Beside `smtp` in the layering: it uses `smtp` for the destination policy and TLS,
//! and knows no Kubernetes. Only the handful of commands the probe needs are spoken
//! (IMAP: CAPABILITY, STARTTLS, LOGIN, SELECT, UID SEARCH, UID FETCH, UID STORE,
//! (UID) EXPUNGE, LOGOUT; POP3: CAPA, STLS, USER/PASS, STAT, TOP, DELE, QUIT), with
//! hard limits on what a server may send, a deadline on everything, and the
//! password never in an error.

mod headers;
mod imap;
mod io;
mod pop3;

use std::time::Duration;

use tokio::time::Instant;

pub use headers::{PROBE_HEADER, Verdicts, parse_headers};

use crate::smtp::{self, Password};

/// IMAP or POP3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Imap,
    Pop3,
}

/// Everything a look into the mailbox needs.
#[derive(Clone, Debug)]
pub struct Target {
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    pub security: smtp::Security,
    pub tls: smtp::TlsSettings,
    pub username: String,
    pub password: Password,
    /// IMAP folders, in order; the first is the inbox. Ignored by POP3.
    pub folders: Vec<String>,
    pub destinations: smtp::Destinations,
}

/// Why a look failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError {
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    DestinationNotAllowed(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    AuthRejected(String),
}

impl MailboxError {
    /// The same error, with `secret` removed from its text.
    fn redacted(self, secret: &str) -> Self {
        let r = |m: String| smtp::redact_text(&m, secret);
        match self {
            MailboxError::Unreachable(m) => MailboxError::Unreachable(r(m)),
            MailboxError::DestinationNotAllowed(m) => MailboxError::DestinationNotAllowed(r(m)),
            MailboxError::Timeout(m) => MailboxError::Timeout(r(m)),
            MailboxError::Protocol(m) => MailboxError::Protocol(r(m)),
            MailboxError::AuthRejected(m) => MailboxError::AuthRejected(r(m)),
        }
    }
}

/// A probe token: `<relay>.<random>`. The relay part is the same for every probe of
/// one relay, so stale probe messages of this relay can be told from other relays'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub relay: String,
    pub value: String,
}

impl Token {
    /// A fresh token for the relay called `label`.
    pub fn new(label: &str) -> Token {
        use rand::Rng as _;
        let digest = ring::digest::digest(&ring::digest::SHA256, label.as_bytes());
        let relay: String = digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let nonce: u128 = rand::rng().random();
        Token {
            value: format!("{relay}.{nonce:032x}"),
            relay,
        }
    }
}

/// The test message, found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub folder: String,
    /// Not the first folder searched (the inbox).
    pub junk: bool,
    pub verdicts: Verdicts,
}

/// What one look saw: the message (if it was there) and how many stale probe
/// messages of the same relay were deleted with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Look {
    pub found: Option<Found>,
    pub stale_deleted: usize,
}

/// One look into the mailbox: connect, log in, find messages of this relay's probes,
/// delete them all, and say whether the one carrying `token` was among them.
pub async fn look(target: &Target, token: &Token, deadline: Instant) -> Result<Look, MailboxError> {
    let result = match target.protocol {
        Protocol::Imap => imap::look(target, token, deadline).await,
        Protocol::Pop3 => pop3::look(target, token, deadline).await,
    };
    result.map_err(|e| e.redacted(target.password.expose()))
}

/// Outcome of a whole probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Found { found: Found, latency: Duration },
    NotFound { waited: Duration },
    Failed(MailboxError),
}

/// First wait between looks; doubles up to [`POLL_MAX`].
pub const POLL_FIRST: Duration = Duration::from_millis(250);
pub const POLL_MAX: Duration = Duration::from_secs(10);
/// Longest a single look may take.
pub const LOOK_BUDGET: Duration = Duration::from_secs(30);

/// Look for the message until it shows or `timeout` (from `sent`, when the relay
/// accepted DATA) passes, with backoff between looks. A refused login ends the probe
/// at once, and so does a mailbox that cannot be reached on the first look; later
/// failures are retried until the deadline.
pub async fn probe(target: &Target, token: &Token, sent: Instant, timeout: Duration) -> Probe {
    let deadline = sent + timeout;
    let mut wait = POLL_FIRST;
    let mut first = true;
    loop {
        let look_deadline = deadline.min(Instant::now() + LOOK_BUDGET);
        match look(target, token, look_deadline).await {
            Ok(Look {
                found: Some(found), ..
            }) => {
                return Probe::Found {
                    found,
                    latency: sent.elapsed(),
                };
            }
            Ok(_) => {}
            Err(e @ MailboxError::AuthRejected(_)) => return Probe::Failed(e),
            Err(e) if first => return Probe::Failed(e),
            Err(e) => tracing::debug!(error = %e, "mailbox look failed; retrying"),
        }
        first = false;
        let now = Instant::now();
        if now >= deadline {
            return Probe::NotFound {
                waited: sent.elapsed(),
            };
        }
        tokio::time::sleep_until(deadline.min(now + wait)).await;
        wait = (wait * 2).min(POLL_MAX);
    }
}

/// A user name or password that cannot be sent on one command line.
fn check_credential(what: &str, value: &str) -> Result<(), MailboxError> {
    if value.is_empty() || value.contains(['\r', '\n', '\0']) {
        return Err(MailboxError::AuthRejected(format!(
            "the mailbox {what} is empty or holds a line break or NUL: it cannot be sent"
        )));
    }
    Ok(())
}

/// TLS client configuration for the target, when it uses TLS.
fn tls_client(target: &Target) -> Result<Option<io::TlsClient>, MailboxError> {
    if target.security == smtp::Security::None {
        return Ok(None);
    }
    smtp::tls_client(&target.host, &target.tls)
        .map(Some)
        .map_err(MailboxError::Unreachable)
}
