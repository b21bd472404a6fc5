//! SMTP relay verification and message building.
//!
//! This module knows nothing of Kubernetes: it takes a [`Target`] (where and how to
//! reach a relay, with credentials already resolved) and returns an [`Outcome`]
//! (what happened at each step, what the server offered, and the first failure).
//! The controller and the offline `verify` command both call [`verify`], so there
//! is exactly one implementation of a verification session.

mod connect;
mod der;
mod destination;
mod limiter;
mod message;
mod session;
mod shared;
mod tls;
mod transactions;
mod wire;

use std::fmt;
use std::time::Duration;

pub use connect::{open_tcp, tls_client, tls_handshake, tls_version};
pub use destination::{Cidr, CidrError, DestinationPolicy, Destinations, Refusal, Scope};
pub use limiter::{HostLimiter, HostPermit};
pub use message::{Mailbox, Outgoing, TestMessage, build_message, effective_reply_to};
pub use session::verify;
pub use shared::{SharedSessions, session_key};
pub use transactions::Transactions;

/// How the session is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain SMTP: no TLS at all.
    None,
    /// Plain connection upgraded with STARTTLS; the upgrade is required.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// SASL mechanism used for AUTH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMechanism {
    Plain,
    Login,
}

/// A password that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(value: impl Into<String>) -> Self {
        Password(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Resolved credentials for AUTH.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub mechanism: AuthMechanism,
    pub username: String,
    pub password: Password,
}

/// TLS settings for one relay.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// Name expected in the certificate; defaults to the host.
    pub server_name: Option<String>,
    /// PEM bundle of trusted CAs. When set, only these roots are trusted.
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Accept any certificate (the outcome says so).
    pub insecure_skip_verify: bool,
    /// The client configuration built from the fields above by [`prepare_tls`], so a
    /// session does not build it again.
    pub prepared: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Why TLS settings cannot be used: the CA bundle, or the name to verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{0}")]
    CaBundle(String),
    #[error("{0}")]
    ServerName(String),
}

/// Check TLS settings (CA bundle, server name) without connecting anywhere, and keep
/// the client configuration for the session.
pub fn prepare_tls(host: &str, settings: &mut TlsSettings) -> Result<(), TlsSetupError> {
    let config = tls::client_config(settings).map_err(TlsSetupError::CaBundle)?;
    tls::server_name(host, settings).map_err(TlsSetupError::ServerName)?;
    settings.prepared = Some(config);
    Ok(())
}

/// Everything a verification session needs.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub tls: TlsSettings,
    pub credentials: Option<Credentials>,
    /// When set, this message is sent (MAIL/RCPT/DATA): the relay's test message, or
    /// a confirmation mail.
    pub message: Option<Outgoing>,
    /// Budget for the whole session, from DNS to QUIT.
    pub timeout: Duration,
    /// Addresses the session may connect to, checked on every resolved address.
    pub destinations: Destinations,
}

/// The steps of a session, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    Dns,
    Connect,
    Tls,
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    Data,
    Quit,
}

impl Step {
    /// Every step, in session order (EHLO may happen twice, around STARTTLS).
    pub const ALL: [Step; 11] = [
        Step::Dns,
        Step::Connect,
        Step::Greeting,
        Step::Ehlo,
        Step::StartTls,
        Step::Tls,
        Step::Auth,
        Step::Mail,
        Step::Rcpt,
        Step::Data,
        Step::Quit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Dns => "dns",
            Step::Connect => "connect",
            Step::Tls => "tls",
            Step::Greeting => "greeting",
            Step::Ehlo => "ehlo",
            Step::StartTls => "starttls",
            Step::Auth => "auth",
            Step::Mail => "mail",
            Step::Rcpt => "rcpt",
            Step::Data => "data",
            Step::Quit => "quit",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a session failed. The names are stable: they become condition reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    DnsFailure,
    ConnectionRefused,
    ConnectionFailed,
    Timeout,
    GreetingRejected,
    EhloRejected,
    ProtocolError,
    ConnectionLost,
    StartTlsNotOffered,
    StartTlsRejected,
    TlsHandshakeFailed,
    CertificateInvalid,
    AuthRejected,
    AuthMechanismUnsupported,
    SenderRejected,
    RecipientRejected,
    MessageRejected,
    InvalidTarget,
    /// Every address of the host is refused by the destination policy: no
    /// connection was opened.
    DestinationNotAllowed,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::DnsFailure => "DnsFailure",
            FailureReason::ConnectionRefused => "ConnectionRefused",
            FailureReason::ConnectionFailed => "ConnectionFailed",
            FailureReason::Timeout => "Timeout",
            FailureReason::GreetingRejected => "GreetingRejected",
            FailureReason::EhloRejected => "EhloRejected",
            FailureReason::ProtocolError => "ProtocolError",
            FailureReason::ConnectionLost => "ConnectionLost",
            FailureReason::StartTlsNotOffered => "StartTlsNotOffered",
            FailureReason::StartTlsRejected => "StartTlsRejected",
            FailureReason::TlsHandshakeFailed => "TlsHandshakeFailed",
            FailureReason::CertificateInvalid => "CertificateInvalid",
            FailureReason::AuthRejected => "AuthRejected",
            FailureReason::AuthMechanismUnsupported => "AuthMechanismUnsupported",
            FailureReason::SenderRejected => "SenderRejected",
            FailureReason::RecipientRejected => "RecipientRejected",
            FailureReason::MessageRejected => "MessageRejected",
            FailureReason::InvalidTarget => "InvalidTarget",
            FailureReason::DestinationNotAllowed => "DestinationNotAllowed",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first thing that went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub step: Step,
    pub reason: FailureReason,
    /// SMTP reply code when the server answered negatively.
    pub code: Option<u16>,
    /// Human-readable explanation, with the server's reply text when there is one.
    /// Never contains the password: see [`Outcome::redact`].
    pub message: String,
}

/// What the server told us about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerFacts {
    pub banner: Option<String>,
    /// EHLO keywords (with parameters), from the last EHLO of the session.
    pub extensions: Vec<String>,
    pub auth_mechanisms: Vec<String>,
    pub tls_version: Option<String>,
    /// Leaf certificate expiry, RFC 3339.
    pub certificate_not_after: Option<String>,
    /// True when the certificate was not verified (insecureSkipVerify).
    pub certificate_unverified: bool,
}

/// Result of one verification session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Steps that completed or were attempted, with their duration.
    pub steps: Vec<(Step, Duration)>,
    pub failure: Option<Failure>,
    pub server: ServerFacts,
    /// Message-ID of the test message the server accepted.
    pub message_id: Option<String>,
    pub total: Duration,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }

    /// Did this step complete?
    pub fn passed(&self, step: Step) -> bool {
        self.steps.iter().any(|(s, _)| *s == step)
            && self.failure.as_ref().is_none_or(|f| f.step != step)
    }

    /// Remove any trace of `secret` (verbatim or base64, as AUTH sends it) from
    /// every text a server could have echoed back to us.
    pub fn redact(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let scrub = |text: &mut String| *text = redact_text(text, secret);
        if let Some(f) = self.failure.as_mut() {
            scrub(&mut f.message);
        }
        if let Some(b) = self.server.banner.as_mut() {
            scrub(b);
        }
        self.server.extensions.iter_mut().for_each(scrub);
        self.server.auth_mechanisms.iter_mut().for_each(scrub);
    }
}

/// Replace `secret` in `text`, verbatim or base64-encoded anywhere inside a run of
/// base64 characters (AUTH PLAIN sends base64 of `\0user\0password`, AUTH LOGIN base64
/// of the password alone, and a server may echo either glued to other text).
pub fn redact_text(text: &str, secret: &str) -> String {
    use base64::Engine as _;
    if secret.is_empty() {
        return text.to_string();
    }
    let text = text.replace(secret, "<redacted>");
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    let leaks = |run: &str| {
        let bytes = run.as_bytes();
        // Try every start: the encoded secret may begin anywhere in the run.
        (0..bytes.len()).any(|start| {
            let tail: Vec<u8> = bytes[start..]
                .iter()
                .copied()
                .filter(|b| *b != b'=')
                .collect();
            let usable = tail.len() - tail.len() % 4;
            [usable, tail.len()].iter().any(|&n| {
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(&tail[..n])
                    .is_ok_and(|d| d.windows(secret.len()).any(|w| w == secret.as_bytes()))
            })
        })
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find(is_b64) {
        out.push_str(&rest[..start]);
        let len = rest[start..]
            .find(|c| !is_b64(c))
            .unwrap_or(rest.len() - start);
        let run = &rest[start..start + len];
        out.push_str(if len >= 4 && leaks(run) {
            "<redacted>"
        } else {
            run
        });
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn redacts_plain_and_base64_forms() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let secret = "Correct-Horse-42";
        let plain = b64(&format!("\0relay-user\0{secret}"));
        let text = format!(
            "535 you sent {secret} and AUTH PLAIN {plain} and {} ok",
            b64(secret)
        );
        let red = redact_text(&text, secret);
        assert!(!red.contains(secret), "{red}");
        assert!(!red.contains(&plain), "{red}");
        assert!(!red.contains(&b64(secret)), "{red}");
        assert!(red.starts_with("535 you sent <redacted>"), "{red}");
        assert!(red.ends_with(" ok"), "{red}");
        assert_eq!(
            redact_text("nothing to hide 250 OK", secret),
            "nothing to hide 250 OK"
        );
    }
}
