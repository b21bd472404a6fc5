//! `spec.verification.roundTrip`: the mailbox a relay's test message is looked for in,
//! and `status.lastVerification.delivery`, what was found.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::patterns::*;
use super::{CredentialsSecretRef, TlsSpec};

/// How the mailbox is read.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MailboxProtocol {
    /// IMAP4rev1 (default ports: 143 for None and StartTls, 993 for Tls). Searches every
    /// folder in `folders`, so mail filed as junk is found and reported as such.
    #[default]
    Imap,
    /// POP3 (default ports: 110 for None and StartTls, 995 for Tls). POP3 only sees
    /// the inbox: mail filed as junk is reported as NotDelivered.
    Pop3,
}

impl MailboxProtocol {
    /// The conventional port for this protocol and TLS mode.
    pub fn default_port(self, mode: super::TlsMode) -> u16 {
        use super::TlsMode;
        match (self, mode) {
            (MailboxProtocol::Imap, TlsMode::Tls) => 993,
            (MailboxProtocol::Imap, _) => 143,
            (MailboxProtocol::Pop3, TlsMode::Tls) => 995,
            (MailboxProtocol::Pop3, _) => 110,
        }
    }
}

/// Folders searched when `folders` is empty: the inbox and the usual junk folders.
pub const DEFAULT_FOLDERS: &[&str] = &["INBOX", "Junk", "Spam", "Junk E-mail", "[Gmail]/Spam"];

/// A mailbox the relay's test message must reach: each verification that sends its
/// test message to `verification.recipient` marks it with a unique token, looks for it
/// here until it arrives or `timeout` passes, then deletes it. The result is the
/// `Delivered` condition; it never changes `Ready` (Ready means the relay accepts mail).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.folders) || !has(self.protocol) || self.protocol == 'Imap'").message("roundTrip.folders is only used with protocol Imap: POP3 only sees the inbox"))]
pub struct RoundTripSpec {
    /// Imap (default) or Pop3.
    #[serde(default)]
    pub protocol: MailboxProtocol,
    /// Mailbox server host name or IP address, e.g. imap.example.com. The operator's
    /// destination rules apply to it as to the relay.
    #[schemars(length(min = 1, max = 253), pattern(HOST))]
    pub host: String,
    /// TCP port. Default from protocol and tls.mode: 143/993 (Imap), 110/995 (Pop3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Transport security, with the same options as the relay's: mode None, StartTls
    /// (default, required: never falls back to plain text) or Tls (implicit TLS);
    /// caBundleRef, serverName, insecureSkipVerify.
    #[serde(default)]
    pub tls: TlsSpec,
    /// The mailbox's user name and password: a Secret labelled
    /// smtprelay.io/credentials=true, like the relay's. The password is never shown in
    /// status, events or logs.
    pub credentials_secret_ref: CredentialsSecretRef,
    /// IMAP folders searched, in order. The first is the inbox; a message found in any
    /// other is reported as DeliveredToJunk. Default: INBOX, Junk, Spam, Junk E-mail,
    /// [Gmail]/Spam (folders the server does not have are skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 255), pattern(ONE_LINE)))]
    pub folders: Vec<String>,
    /// How long to wait for the test message to arrive (Go duration, 5s to 15m,
    /// default 2m). The mailbox is polled with backoff until then.
    #[serde(default = "default_round_trip_timeout")]
    #[schemars(length(max = 32), pattern(DURATION))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('5s') && duration(self) <= duration('15m')").message("roundTrip.timeout must be between 5s and 15m"))]
    pub timeout: String,
}

impl RoundTripSpec {
    /// The namespace fields of this mailbox's references to the Secret or ConfigMap
    /// `name` of `kind` (credentials, CA bundle): which objects wake the relay.
    pub fn refs_to(&self, kind: super::CaBundleKind, name: &str) -> Vec<Option<&String>> {
        let r = &self.credentials_secret_ref;
        let mut out = Vec::new();
        if kind == super::CaBundleKind::Secret && r.name == name {
            out.push(r.namespace.as_ref());
        }
        if let Some(c) = &self.tls.ca_bundle_ref
            && c.kind == kind
            && c.name == name
        {
            out.push(c.namespace.as_ref());
        }
        out
    }
}

fn default_round_trip_timeout() -> String {
    "2m".into()
}

/// Where the last verification's test message was found.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    /// The Delivered condition's reason: Delivered, DeliveredToJunk, NotDelivered,
    /// MailboxUnreachable, MailboxAuthRejected, ...
    pub reason: String,
    /// Milliseconds from the relay accepting DATA to the message showing in the mailbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    /// The folder the message was found in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// The receiver's Authentication-Results verdicts, when it added them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_results: Option<AuthenticationVerdicts>,
}

/// Verdicts of an Authentication-Results header (RFC 8601): pass, fail, softfail,
/// neutral, none, temperror, permerror.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationVerdicts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dmarc: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::super::CaBundleKind;
    use super::*;

    #[test]
    fn references_name_the_credentials_and_the_ca_bundle() {
        let rt: RoundTripSpec = serde_json::from_value(serde_json::json!({
            "host": "imap.example.com",
            "credentialsSecretRef": {"name": "mailbox", "namespace": "mail"},
            "tls": {"caBundleRef": {"kind": "ConfigMap", "name": "ca"}},
        }))
        .expect("spec");
        assert_eq!(rt.timeout, "2m");
        let mail = "mail".to_string();
        assert_eq!(
            rt.refs_to(CaBundleKind::Secret, "mailbox"),
            vec![Some(&mail)]
        );
        assert_eq!(rt.refs_to(CaBundleKind::ConfigMap, "ca"), vec![None]);
        assert!(rt.refs_to(CaBundleKind::ConfigMap, "mailbox").is_empty());
        assert!(rt.refs_to(CaBundleKind::Secret, "ca").is_empty());
    }
}
