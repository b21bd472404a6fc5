//! Address confirmation: tokens, codes, keyed digests, and the checks shared by the
//! HTTP endpoint (link) and the controller (code given back in an annotation).
//!
//! Tokens and codes live only in the mail and in memory while it is sent; status
//! keeps HMAC-SHA256 digests under a key only the operator holds, so reading status
//! (or etcd) gives nothing to guess offline.

pub mod limits;
pub mod mail;
pub mod server;

use base64::Engine as _;
use jiff::Timestamp;
use rand::Rng as _;
use ring::hmac;

use crate::api::{ConfirmationState, ConfirmationStatus};

/// The sender of confirmation mails, configured once by the operator's owner
/// (never text a requester chose).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfirmationSender {
    /// From address; the relay's default sender address when None (the relay must
    /// accept it as a sender).
    pub from: Option<String>,
    /// From display name.
    pub from_name: String,
    /// Reply-To; the From address when None.
    pub reply_to: Option<String>,
}

impl Default for ConfirmationSender {
    fn default() -> Self {
        ConfirmationSender {
            from: None,
            from_name: DEFAULT_CONFIRMATION_FROM_NAME.into(),
            reply_to: None,
        }
    }
}

/// Display name of confirmation mails unless configured.
pub const DEFAULT_CONFIRMATION_FROM_NAME: &str = "Sender address confirmation";

/// The operator's confirmation key.
#[derive(Clone)]
pub struct ConfirmKey(hmac::Key);

impl std::fmt::Debug for ConfirmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfirmKey(<redacted>)")
    }
}

impl ConfirmKey {
    pub fn new(bytes: &[u8]) -> Self {
        ConfirmKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// A fresh random key (32 bytes) and its bytes, to store.
    pub fn generate() -> (Self, Vec<u8>) {
        let bytes: [u8; 32] = rand::rng().random();
        (Self::new(&bytes), bytes.to_vec())
    }

    fn message(kind: &str, attempt: &str, secret: &str) -> Vec<u8> {
        format!("{kind}\0{attempt}\0{secret}").into_bytes()
    }

    /// Digest of a token or code for one attempt.
    pub fn digest(&self, kind: &str, attempt: &str, secret: &str) -> String {
        let tag = hmac::sign(&self.0, &Self::message(kind, attempt, secret));
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    }

    /// The key relays fingerprint their inputs with (see [`crate::relay::InputKey`]).
    pub(crate) fn hmac_key(&self) -> &hmac::Key {
        &self.0
    }

    /// Constant-time check of a presented secret against a stored digest.
    pub fn verify(&self, kind: &str, attempt: &str, secret: &str, digest: &str) -> bool {
        let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(digest) else {
            return false;
        };
        hmac::verify(&self.0, &Self::message(kind, attempt, secret), &expected).is_ok()
    }
}

pub const TOKEN: &str = "token";
pub const CODE: &str = "code";

/// Crockford base32 without I, L, O, U: easy to read aloud and type.
const CODE_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new attempt's secrets. Never logged, never stored.
pub struct Secrets {
    pub attempt_id: String,
    /// 128 random bits, URL-safe.
    pub token: String,
    /// 8 characters (40 bits) shown as XXXX-XXXX.
    pub code: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("attempt_id", &self.attempt_id)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let token: [u8; 16] = rng.random();
        let attempt: [u8; 6] = rng.random();
        let code: String = (0..8)
            .map(|i| {
                let c = char::from(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())]);
                if i == 4 {
                    format!("-{c}")
                } else {
                    c.to_string()
                }
            })
            .collect();
        Secrets {
            attempt_id: attempt.iter().map(|b| format!("{b:02x}")).collect(),
            token: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token),
            code,
        }
    }
}

/// Codes are compared without dashes, spaces or case.
pub fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The confirmation page (no token): what status shows.
pub fn page_url(base: &str, namespace: &str, name: &str) -> String {
    format!("{}/confirm/{namespace}/{name}", base.trim_end_matches('/'))
}

/// The link mailed to the owner.
pub fn link(base: &str, namespace: &str, name: &str, token: &str) -> String {
    format!("{}/{token}", page_url(base, namespace, name))
}

/// Why a presented token or code is refused. The endpoint shows all of these the same
/// way; the controller reports them (without the code) in a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoAttempt,
    Expired,
    AlreadyConfirmed,
    Mismatch,
}

impl Refusal {
    /// Stable name, for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::NoAttempt => "NoAttempt",
            Refusal::Expired => "Expired",
            Refusal::AlreadyConfirmed => "AlreadyConfirmed",
            Refusal::Mismatch => "Mismatch",
        }
    }

    pub fn explain(self) -> &'static str {
        match self {
            Refusal::NoAttempt => "no confirmation is pending",
            Refusal::Expired => {
                "the confirmation has expired; annotate smtprelay.io/resend to get a new one"
            }
            Refusal::AlreadyConfirmed => "the address is already confirmed",
            Refusal::Mismatch => "the code does not match the current confirmation",
        }
    }
}

/// Check a presented token (kind TOKEN) or code (kind CODE) against the current attempt.
pub fn check(
    c: &ConfirmationStatus,
    address: &str,
    key: &ConfirmKey,
    kind: &str,
    presented: &str,
    now: Timestamp,
) -> Result<(), Refusal> {
    if c.state == ConfirmationState::Confirmed && c.address == address {
        return Err(Refusal::AlreadyConfirmed);
    }
    if c.state != ConfirmationState::Pending || c.address != address || c.sent_at.is_none() {
        return Err(Refusal::NoAttempt);
    }
    let (Some(attempt), Some(digest)) = (
        c.attempt_id.as_deref(),
        if kind == TOKEN {
            c.token_digest.as_deref()
        } else {
            c.code_digest.as_deref()
        },
    ) else {
        return Err(Refusal::NoAttempt);
    };
    let presented = if kind == CODE {
        normalize_code(presented)
    } else {
        presented.to_string()
    };
    // Verify before looking at expiry, so timing says nothing about the digest.
    let matches = key.verify(kind, attempt, &presented, digest);
    let expired = c
        .expires_at
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_none_or(|t| now >= t);
    match (matches, expired) {
        (false, _) => Err(Refusal::Mismatch),
        (true, true) => Err(Refusal::Expired),
        (true, false) => Ok(()),
    }
}

/// The confirmation after a successful check: single use, digests gone.
pub fn confirmed(c: &ConfirmationStatus, now: Timestamp) -> ConfirmationStatus {
    ConfirmationStatus {
        state: ConfirmationState::Confirmed,
        confirmed_at: Some(rfc3339(now)),
        token_digest: None,
        code_digest: None,
        expires_at: None,
        ..c.clone()
    }
}

/// RFC 3339 to the second.
pub fn rfc3339(t: Timestamp) -> String {
    t.round(jiff::Unit::Second).unwrap_or(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(key: &ConfirmKey, s: &Secrets, expires: &str) -> ConfirmationStatus {
        ConfirmationStatus {
            state: ConfirmationState::Pending,
            address: "a@example.test".into(),
            attempt_id: Some(s.attempt_id.clone()),
            attempts: 1,
            sent_at: Some("2026-01-01T00:00:00Z".into()),
            expires_at: Some(expires.into()),
            token_digest: Some(key.digest(TOKEN, &s.attempt_id, &s.token)),
            code_digest: Some(key.digest(CODE, &s.attempt_id, &normalize_code(&s.code))),
            ..Default::default()
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("ts")
    }

    #[test]
    fn secrets_are_random_and_well_formed() {
        let a = Secrets::generate();
        let b = Secrets::generate();
        assert_ne!(a.token, b.token);
        assert_ne!(a.attempt_id, b.attempt_id);
        assert_eq!(a.token.len(), 22, "128 bits in base64url");
        assert_eq!(a.code.len(), 9);
        assert_eq!(a.code.as_bytes()[4], b'-');
        assert!(
            normalize_code(&a.code)
                .bytes()
                .all(|c| CODE_ALPHABET.contains(&c))
        );
        assert!(!format!("{a:?}").contains(&a.token));
        assert!(!format!("{a:?}").contains(&a.code));
    }

    #[test]
    fn token_and_code_checks() {
        let (key, _) = ConfirmKey::generate();
        let s = Secrets::generate();
        let c = pending(&key, &s, "2026-01-02T00:00:00Z");
        let now = ts("2026-01-01T12:00:00Z");
        assert_eq!(
            check(&c, "a@example.test", &key, TOKEN, &s.token, now),
            Ok(())
        );
        let sloppy = s.code.to_lowercase().replace('-', " ");
        assert_eq!(
            check(&c, "a@example.test", &key, CODE, &sloppy, now),
            Ok(())
        );
        assert_eq!(
            check(&c, "a@example.test", &key, TOKEN, "wrong", now),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            check(&c, "a@example.test", &key, CODE, &s.token, now),
            Err(Refusal::Mismatch),
            "a token is not a code"
        );
        assert_eq!(
            check(&c, "a@example.test", &key, TOKEN, &s.code, now),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            check(
                &c,
                "a@example.test",
                &key,
                TOKEN,
                &s.token,
                ts("2026-01-02T00:00:01Z")
            ),
            Err(Refusal::Expired)
        );
        assert_eq!(
            check(&c, "b@example.test", &key, TOKEN, &s.token, now),
            Err(Refusal::NoAttempt)
        );
        let (other_key, _) = ConfirmKey::generate();
        assert_eq!(
            check(&c, "a@example.test", &other_key, TOKEN, &s.token, now),
            Err(Refusal::Mismatch)
        );
        // A newer attempt supersedes the old token.
        let s2 = Secrets::generate();
        let c2 = pending(&key, &s2, "2026-01-02T00:00:00Z");
        assert_eq!(
            check(&c2, "a@example.test", &key, TOKEN, &s.token, now),
            Err(Refusal::Mismatch)
        );
        // Single use.
        let done = confirmed(&c, now);
        assert_eq!(done.token_digest, None);
        assert_eq!(
            check(&done, "a@example.test", &key, TOKEN, &s.token, now),
            Err(Refusal::AlreadyConfirmed)
        );
        // Not sent yet (crash before sending): nothing to confirm.
        let mut unsent = c.clone();
        unsent.sent_at = None;
        assert_eq!(
            check(&unsent, "a@example.test", &key, TOKEN, &s.token, now),
            Err(Refusal::NoAttempt)
        );
    }

    #[test]
    fn links() {
        assert_eq!(
            link("https://c.example.com/", "team", "sales", "tok"),
            "https://c.example.com/confirm/team/sales/tok"
        );
        assert_eq!(
            page_url("https://c.example.com", "team", "sales"),
            "https://c.example.com/confirm/team/sales"
        );
    }
}
