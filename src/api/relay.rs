//! `SmtpRelay` (namespaced) and `ClusterSmtpRelay` (cluster-scoped).

// kube-derive takes one `printcolumn(...)` per column, and each repeats `type_ = ...`.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::patterns::*;
use super::{Condition, DeliveryStatus, RoundTripSpec};

/// How the connection to the relay is secured.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TlsMode {
    /// Plain SMTP, no encryption (default port 25). Credentials and mail travel in clear text.
    None,
    /// Connect in plain text, then upgrade with STARTTLS (default port 587). The upgrade is
    /// required: if the server does not offer STARTTLS the relay is not Ready; the operator
    /// never falls back to plain text.
    #[default]
    StartTls,
    /// TLS from the first byte, also called SMTPS or implicit TLS (default port 465).
    Tls,
}

impl TlsMode {
    /// The conventional port for this mode.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::None => 25,
            TlsMode::StartTls => 587,
            TlsMode::Tls => 465,
        }
    }
}

/// Where a CA bundle is stored.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CaBundleKind {
    Secret,
    ConfigMap,
}

/// A PEM CA bundle kept in a Secret or ConfigMap key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaBundleRef {
    /// Secret or ConfigMap.
    pub kind: CaBundleKind,
    /// Name of the Secret or ConfigMap.
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME))]
    pub name: String,
    /// Key holding the PEM bundle.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253), pattern(DATA_KEY))]
    pub key: String,
    /// Namespace of the Secret or ConfigMap. Only on ClusterSmtpRelay (default: the
    /// operator's namespace); a SmtpRelay always reads its own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(LABEL))]
    pub namespace: Option<String>,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

/// Transport security settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// None, StartTls (default) or Tls.
    #[serde(default)]
    pub mode: TlsMode,
    /// CA bundle for relays whose certificate is issued by a private CA. When set, only
    /// the certificates in this bundle are trusted; otherwise the Mozilla root store is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<CaBundleRef>,
    /// Name expected in the relay's certificate, when it differs from `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(HOST))]
    pub server_name: Option<String>,
    /// Accept any certificate. Traffic is still encrypted but the relay is not
    /// authenticated; status says so (SecureTransport reason CertificateNotVerified).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// SASL mechanism for AUTH.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AuthMechanismSpec {
    /// AUTH PLAIN (RFC 4616), the default.
    #[default]
    Plain,
    /// AUTH LOGIN, for servers that only offer it.
    Login,
}

/// A Secret holding the relay's user name and password. The Secret must carry the
/// label smtprelay.io/credentials=true: relays never send a Secret that was not
/// marked for them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME))]
    pub name: String,
    /// Key of the user name in the Secret.
    #[serde(default = "default_username_key")]
    #[schemars(length(min = 1, max = 253), pattern(DATA_KEY))]
    pub username_key: String,
    /// Key of the password in the Secret.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253), pattern(DATA_KEY))]
    pub password_key: String,
    /// Namespace of the Secret. Only on ClusterSmtpRelay (default: the operator's
    /// namespace); a SmtpRelay can only read Secrets in its own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(LABEL))]
    pub namespace: Option<String>,
}

fn default_username_key() -> String {
    "username".into()
}
fn default_password_key() -> String {
    "password".into()
}

/// Authentication to the relay.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Plain (default) or Login.
    #[serde(default)]
    pub mechanism: AuthMechanismSpec,
    /// Where the user name and password are stored: a Secret that carries the label
    /// smtprelay.io/credentials=true (relays never use a Secret not marked for them).
    pub credentials_secret_ref: CredentialsSecretRef,
}

/// An address with an optional display name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailboxSpec {
    /// The address, e.g. purchasing@example.com.
    #[schemars(length(min = 3, max = 254), pattern(ADDRESS))]
    pub address: String,
    /// Display name shown by mail clients, e.g. "ACME Purchasing".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), pattern(ONE_LINE))]
    pub name: Option<String>,
}

/// A header added to every message sent through the relay (tracking, routing).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("!(self.name.lowerAscii() in ['from', 'to', 'cc', 'bcc', 'subject', 'message-id', 'date', 'reply-to', 'sender', 'return-path', 'mime-version', 'content-type', 'content-transfer-encoding', 'x-smtprelay-verification', 'x-smtp-relay-probe'])").message("this header is set by the operator and cannot be overridden in customHeaders"))]
pub struct HeaderSpec {
    /// Header field name (RFC 5322: printable ASCII, no colon, no space), e.g. X-Campaign.
    #[schemars(length(min = 1, max = 76), pattern(HEADER_NAME))]
    pub name: String,
    /// Header value, on one line.
    #[schemars(length(max = 998), pattern(ONE_LINE))]
    pub value: String,
}

/// How and how often the relay is verified.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.roundTrip) || has(self.recipient)").message("verification.roundTrip needs verification.recipient: the test message is what is looked for in the mailbox"))]
pub struct VerificationSpec {
    /// When set, every verification sends a real test message to this address
    /// (MAIL, RCPT, DATA) and reports whether the relay accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254), pattern(ADDRESS))]
    pub recipient: Option<String>,
    /// Time between verifications of a working relay (Go duration, at least 1m).
    /// Failed verifications are retried sooner, with backoff.
    #[serde(default = "default_interval")]
    #[schemars(length(max = 32), pattern(DURATION))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m')").message("verification.interval must be at least 1m"))]
    pub interval: String,
    /// Budget for one whole session, from DNS lookup to QUIT (Go duration, 1s to 5m).
    #[serde(default = "default_timeout")]
    #[schemars(length(max = 32), pattern(DURATION))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('5m')").message("verification.timeout must be between 1s and 5m"))]
    pub timeout: String,
    /// Follow the test message to the recipient's mailbox (IMAP or POP3) and report
    /// in the Delivered condition whether, where and how fast it arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_trip: Option<RoundTripSpec>,
}

impl Default for VerificationSpec {
    fn default() -> Self {
        VerificationSpec {
            recipient: None,
            interval: default_interval(),
            timeout: default_timeout(),
            round_trip: None,
        }
    }
}

fn default_interval() -> String {
    "1h".into()
}
fn default_timeout() -> String {
    "30s".into()
}

/// How to reach and authenticate to an SMTP relay.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "smtprelay.io",
    version = "v1alpha1",
    kind = "SmtpRelay",
    namespaced,
    status = "SmtpRelayStatus",
    shortname = "smtpr",
    category = "smtp",
    doc = "An SMTP relay that applications in this namespace send mail through. The operator connects to it, negotiates TLS, authenticates and optionally sends a test message, and reports each step in status.",
    printcolumn(name = "Host", type_ = "string", json_path = ".spec.host"),
    printcolumn(name = "Port", type_ = "integer", json_path = ".status.port"),
    printcolumn(name = "Security", type_ = "string", json_path = ".spec.tls.mode"),
    printcolumn(name = "Auth", type_ = "string", json_path = ".spec.auth.mechanism"),
    printcolumn(name = "Sender", type_ = "string", json_path = ".spec.defaultSender.address"),
    printcolumn(name = "Usage", type_ = "string", json_path = ".spec.usage"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    printcolumn(name = "Last Verified", type_ = "date", json_path = ".status.lastVerification.time"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(self.spec.auth) || !has(self.spec.auth.credentialsSecretRef.__namespace__)").message("spec.auth.credentialsSecretRef.namespace is only allowed on ClusterSmtpRelay: a SmtpRelay reads Secrets and ConfigMaps in its own namespace"),
    validation = Rule::new("!has(self.spec.tls) || !has(self.spec.tls.caBundleRef) || !has(self.spec.tls.caBundleRef.__namespace__)").message("spec.tls.caBundleRef.namespace is only allowed on ClusterSmtpRelay: a SmtpRelay reads Secrets and ConfigMaps in its own namespace"),
    validation = Rule::new("!has(self.spec.verification) || !has(self.spec.verification.roundTrip) || !has(self.spec.verification.roundTrip.credentialsSecretRef.__namespace__)").message("spec.verification.roundTrip.credentialsSecretRef.namespace is only allowed on ClusterSmtpRelay: a SmtpRelay reads Secrets and ConfigMaps in its own namespace"),
    validation = Rule::new("!has(self.spec.verification) || !has(self.spec.verification.roundTrip) || !has(self.spec.verification.roundTrip.tls) || !has(self.spec.verification.roundTrip.tls.caBundleRef) || !has(self.spec.verification.roundTrip.tls.caBundleRef.__namespace__)").message("spec.verification.roundTrip.tls.caBundleRef.namespace is only allowed on ClusterSmtpRelay: a SmtpRelay reads Secrets and ConfigMaps in its own namespace")
)]
#[serde(rename_all = "camelCase")]
pub struct SmtpRelaySpec {
    /// Free-text title shown in listings, e.g. "Corporate relay (purchasing)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), pattern(ONE_LINE))]
    pub title: Option<String>,
    /// Relay host name or IP address, without scheme, port or path, e.g. smtp.example.com.
    #[schemars(length(min = 1, max = 253), pattern(HOST))]
    pub host: String,
    /// TCP port. Default from tls.mode: 25 for None, 587 for StartTls, 465 for Tls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Transport security; StartTls (required) when omitted.
    #[serde(default)]
    pub tls: TlsSpec,
    /// Authentication; omit for relays that accept mail without AUTH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Sender used when an application gives none, and for verification messages.
    pub default_sender: MailboxSpec,
    /// Address used as Reply-To when a message has none (falls back to the sender).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_reply: Option<MailboxSpec>,
    /// Headers added to every message sent through this relay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(h, self.exists_one(o, o.name.lowerAscii() == h.name.lowerAscii()))").message("customHeaders names must be unique (case-insensitive)"))]
    pub custom_headers: Vec<HeaderSpec>,
    /// Purposes or departments this relay serves (e.g. purchasing, sales, production).
    /// Empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63), pattern(LABEL)))]
    #[x_kube(validation = Rule::new("self.all(u, self.exists_one(o, o == u))").message("usage entries must be unique"))]
    pub usage: Vec<String>,
    /// Verification settings: test recipient, interval, timeout.
    #[serde(default)]
    pub verification: VerificationSpec,
    /// Where the relay sends from and how it signs, for the deliverability checks of
    /// sender domains (SPF, DKIM) and the blocklist check (NotListed).
    #[serde(default, skip_serializing_if = "is_default")]
    pub deliverability: super::RelayDeliverabilitySpec,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Message shared by the CRD's CEL rule and the operator's own check.
pub const NAMESPACED_REF_MESSAGE: &str = "is only allowed on ClusterSmtpRelay: a SmtpRelay reads Secrets and ConfigMaps in its own namespace";

impl SmtpRelaySpec {
    /// Fields that name another namespace, which only a ClusterSmtpRelay may do.
    /// (The CRD's CEL rule refuses them at apply time; this is the same check for
    /// objects that bypassed it and for offline `verify`.)
    pub fn cross_namespace_refs(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self
            .auth
            .as_ref()
            .is_some_and(|a| a.credentials_secret_ref.namespace.is_some())
        {
            out.push("spec.auth.credentialsSecretRef.namespace");
        }
        if self
            .tls
            .ca_bundle_ref
            .as_ref()
            .is_some_and(|c| c.namespace.is_some())
        {
            out.push("spec.tls.caBundleRef.namespace");
        }
        if let Some(rt) = &self.verification.round_trip {
            if rt.credentials_secret_ref.namespace.is_some() {
                out.push("spec.verification.roundTrip.credentialsSecretRef.namespace");
            }
            if rt
                .tls
                .ca_bundle_ref
                .as_ref()
                .is_some_and(|c| c.namespace.is_some())
            {
                out.push("spec.verification.roundTrip.tls.caBundleRef.namespace");
            }
        }
        out
    }
}

/// A relay shared by the whole cluster, like cert-manager's ClusterIssuer.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "smtprelay.io",
    version = "v1alpha1",
    kind = "ClusterSmtpRelay",
    status = "SmtpRelayStatus",
    shortname = "csmtpr",
    category = "smtp",
    doc = "An SMTP relay shared by the whole cluster. Secrets it references live in the namespace given in the reference, or the operator's namespace.",
    printcolumn(name = "Host", type_ = "string", json_path = ".spec.host"),
    printcolumn(name = "Port", type_ = "integer", json_path = ".status.port"),
    printcolumn(name = "Security", type_ = "string", json_path = ".spec.tls.mode"),
    printcolumn(name = "Auth", type_ = "string", json_path = ".spec.auth.mechanism"),
    printcolumn(
        name = "Sender",
        type_ = "string",
        json_path = ".spec.defaultSender.address"
    ),
    printcolumn(name = "Usage", type_ = "string", json_path = ".spec.usage"),
    printcolumn(name = "Default", type_ = "boolean", json_path = ".spec.default"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Last Verified",
        type_ = "date",
        json_path = ".status.lastVerification.time"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSmtpRelaySpec {
    #[serde(flatten)]
    pub relay: SmtpRelaySpec,
    /// Namespaces whose SenderIdentities may use this relay. Omitted: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<LabelSelector>,
    /// Mark this relay as the cluster's default, used by SenderIdentities that name no
    /// relay. If several claim it, the oldest is honoured and the others say so in status.
    #[serde(default)]
    pub default: bool,
    /// Allow SenderIdentities in other namespaces to receive this relay's credentials in
    /// a connection Secret. Off by default because it copies credentials across namespaces.
    #[serde(default)]
    pub allow_credential_publishing: bool,
    /// Let SenderIdentities skip the owner's confirmation (confirmation.required: false).
    /// Off by default: otherwise anyone who can create an identity could send as any
    /// address without its owner's consent.
    #[serde(default)]
    pub allow_unconfirmed_senders: bool,
}

/// Observed state of a relay, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmtpRelayStatus {
    /// The .metadata.generation the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// CredentialsResolved, Connected, SecureTransport, Authenticated, TestMessageAccepted
    /// (only with verification.recipient), Delivered (only with verification.roundTrip)
    /// and the Ready summary.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The port actually used (spec.port or the mode's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// What the server offered during the last session that reached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerStatus>,
    /// The last verification session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verification: Option<LastVerification>,
    /// Verifications failed in a row; drives the retry backoff.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failures: i32,
    /// Answer to the last on-demand test send (annotation smtprelay.io/test-request,
    /// set by `kubectl smtprelay test`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_test: Option<LastTest>,
    /// The sending addresses in the DNS blocklists, from the last verification
    /// (condition NotListed). Absent when the operator runs without --dnsbl-zones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocklist: Option<super::BlocklistStatus>,
    /// The trend of the last verifications (at most 20): median and 95th percentile of
    /// their total duration, and how many failed. Updated once per verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_verifications: Option<super::VerificationTrend>,
}

/// The answer to an on-demand test send.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastTest {
    /// The request this answers (from the annotation).
    pub request_id: String,
    /// Where the test message was sent.
    pub recipient: String,
    /// When the session ended (RFC 3339).
    pub time: String,
    /// Succeeded or Failed.
    pub result: String,
    /// Verified, or the failure reason (RecipientRejected, AuthRejected, ...).
    pub reason: String,
    /// What happened, with the server's reply when it refused.
    #[serde(default)]
    pub message: String,
    /// Message-ID of the accepted test message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// What the relay told us about itself.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// The greeting line (220 ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner: Option<String>,
    /// EHLO extensions of the last EHLO (after TLS when TLS was used).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    /// AUTH mechanisms offered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_mechanisms: Vec<String>,
    /// Negotiated TLS version, e.g. TLSv1.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// Expiry of the relay's certificate (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_not_after: Option<String>,
}

/// Outcome of the last verification session.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastVerification {
    /// When the session ended (RFC 3339).
    pub time: String,
    /// Succeeded or Failed.
    pub result: String,
    /// The step that failed (dns, connect, tls, greeting, ehlo, starttls, auth, mail, rcpt, data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// Milliseconds spent in each step, and `total` (rounded down: a fast relay shows 0;
    /// see durationMicros).
    #[serde(default)]
    pub duration_ms: BTreeMap<String, i64>,
    /// Microseconds spent in each step (dns, connect, tls, greeting, ehlo, starttls,
    /// auth, mail, rcpt, data, quit; a step done twice, like EHLO around STARTTLS, adds
    /// up), and `total` for the whole session.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub duration_micros: BTreeMap<String, i64>,
    /// Message-ID of the test message the relay accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Where the test message arrived (only with verification.roundTrip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryStatus>,
    /// Fingerprint of the inputs this session used (spec generation, keyed digests of
    /// the referenced Secret and CA bundle data); a change triggers a new verification.
    #[serde(default)]
    pub inputs: String,
}
