//! `SenderIdentity`: an address applications send from, confirmed by its owner.

// kube-derive takes one `printcolumn(...)` per column, and each repeats `type_ = ...`.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use super::patterns::*;

/// Which relay kind a SenderIdentity uses.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RelayKindRef {
    SmtpRelay,
    ClusterSmtpRelay,
}

/// The relay an identity sends through.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayRefSpec {
    /// SmtpRelay (same namespace) or ClusterSmtpRelay.
    pub kind: RelayKindRef,
    /// Name of the relay.
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME))]
    pub name: String,
}

/// Language of the confirmation mail.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Language {
    /// English.
    #[default]
    #[serde(rename = "en")]
    En,
    /// French.
    #[serde(rename = "fr")]
    Fr,
}

/// How the owner of the address confirms it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmationSpec {
    /// Require the owner to confirm the address (default true). When false the
    /// identity is usable as soon as its relay is Ready.
    #[serde(default = "default_true")]
    pub required: bool,
    /// How long a confirmation link and code stay valid (Go duration, 5m to 168h).
    #[serde(default = "default_ttl")]
    #[schemars(length(max = 32), pattern(DURATION))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('5m') && duration(self) <= duration('168h')").message("confirmation.ttl must be between 5m and 168h"))]
    pub ttl: String,
    /// Language of the confirmation mail: en or fr.
    #[serde(default)]
    pub language: Language,
}

impl Default for ConfirmationSpec {
    fn default() -> Self {
        ConfirmationSpec {
            required: true,
            ttl: default_ttl(),
            language: Language::En,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_ttl() -> String {
    "24h".into()
}

/// A Secret to write the connection details into.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSecretRef {
    /// Name of the Secret, in the identity's namespace.
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME))]
    pub name: String,
}

/// An address applications send from, through a relay; usable once its owner
/// has confirmed it by the link or code mailed to it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "smtprelay.io",
    version = "v1alpha1",
    kind = "SenderIdentity",
    namespaced,
    status = "SenderIdentityStatus",
    shortname = "sid",
    category = "smtp",
    doc = "A sender address that applications send from through a relay. It becomes Ready once its relay is Ready and its owner has confirmed the address with the link or code mailed to it.",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.address"),
    printcolumn(
        name = "Display Name",
        type_ = "string",
        json_path = ".spec.displayName"
    ),
    printcolumn(name = "Relay", type_ = "string", json_path = ".status.relay"),
    printcolumn(name = "Usage", type_ = "string", json_path = ".spec.usage"),
    printcolumn(
        name = "Confirmation",
        type_ = "string",
        json_path = ".status.confirmation.state"
    ),
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
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SenderIdentitySpec {
    /// The sender address, e.g. purchasing@example.com. Changing it discards any
    /// confirmation and starts a new one.
    #[schemars(length(min = 3, max = 254), pattern(ADDRESS))]
    pub address: String,
    /// Display name shown by mail clients, e.g. "ACME Purchasing".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), pattern(ONE_LINE))]
    pub display_name: Option<String>,
    /// Reply-To for messages from this identity. Falls back to the relay's noReply,
    /// then to the address itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254), pattern(ADDRESS))]
    pub reply_to: Option<String>,
    /// Signature applications append to messages from this identity (published in the
    /// connection Secret; never injected into other mail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub signature: Option<String>,
    /// Purposes this identity sends for; must be served by the relay when the relay
    /// restricts its usage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63), pattern(LABEL)))]
    #[x_kube(validation = Rule::new("self.all(u, self.exists_one(o, o == u))").message("usage entries must be unique"))]
    pub usage: Vec<String>,
    /// The relay to send through. Omitted: the ClusterSmtpRelay marked default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_ref: Option<RelayRefSpec>,
    /// Confirmation settings.
    #[serde(default)]
    pub confirmation: ConfirmationSpec,
    /// Once Ready, write everything an application needs to send as this identity
    /// (host, port, TLS mode, credentials, from, reply-to, headers, signature) into this
    /// Secret, owned by the identity. For a ClusterSmtpRelay the relay must allow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_connection_secret_to_ref: Option<ConnectionSecretRef>,
    /// DNS checks of the address's domain (MX, SPF, DKIM, DMARC): which DKIM
    /// selectors, and whether a failure blocks Ready.
    #[serde(default, skip_serializing_if = "is_default")]
    pub deliverability: super::IdentityDeliverabilitySpec,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Where the confirmation stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConfirmationState {
    /// Waiting for the owner (a mail is on its way or has been sent).
    #[default]
    Pending,
    /// The owner confirmed the address.
    Confirmed,
    /// The last link and code expired; annotate `smtprelay.io/resend` to get new ones.
    Expired,
    /// confirmation.required is false.
    NotRequired,
}

/// The confirmation's state. Tokens and codes are never stored, only keyed digests.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmationStatus {
    /// Pending, Confirmed, Expired or NotRequired.
    pub state: ConfirmationState,
    /// The address this confirmation is about.
    #[serde(default)]
    pub address: String,
    /// Identifier of the current attempt (not secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
    /// The relay the confirmation mail went through and where it delivers (kind,
    /// name, host:port, TLS mode, credentials Secret). A confirmation proves delivery
    /// through this relay only: pointing the identity at another relay, or the relay
    /// at another destination, asks the owner again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Wrong codes given (smtprelay.io/confirmation-code) for the current attempt;
    /// the attempt is withdrawn after 5.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_codes: i32,
    /// Confirmation mails sent for this address.
    #[serde(default)]
    pub attempts: i32,
    /// When attempts were made in the last 24 hours (bounds resends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_attempts: Vec<String>,
    /// When the current attempt's mail was accepted by the relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    /// When the current link and code stop working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When the owner confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<String>,
    /// The confirmation page, without the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_url: Option<String>,
    /// Keyed digest (HMAC-SHA256) of the current link token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_digest: Option<String>,
    /// Keyed digest (HMAC-SHA256) of the current code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_digest: Option<String>,
    /// Last value of the smtprelay.io/resend annotation that was acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resend_request: Option<String>,
    /// Why the current attempt's mail could not be sent, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_failure: Option<SendFailure>,
}

/// A confirmation mail the relay did not accept.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendFailure {
    /// When the send was attempted.
    pub time: String,
    /// Stable reason, as for relays (AuthRejected, RecipientRejected, ...).
    pub reason: String,
    /// The server's reply or the error, without secrets.
    pub message: String,
}

/// Observed state of a SenderIdentity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SenderIdentityStatus {
    /// The .metadata.generation the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RelayReady, ConfirmationSent, Confirmed, ConnectionSecretReady (when requested)
    /// and the Ready summary.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The relay in use, e.g. "SmtpRelay corporate" or "ClusterSmtpRelay shared".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// The confirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<ConfirmationStatus>,
    /// From header applications should use, after fallbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<String>,
    /// Reply-To after fallbacks: replyTo, then the relay's noReply, then the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_reply_to: Option<String>,
    /// The connection Secret written, when requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_secret: Option<String>,
    /// The address's domain as receivers judge it (condition DomainAuthenticated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliverability: Option<Box<super::DomainDeliverability>>,
}
