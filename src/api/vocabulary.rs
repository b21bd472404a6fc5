//! The words of the API that are not fields: condition types, reasons, annotations
//! and labels. Controllers write them, the CLI reads them; both import them from here.

/// Condition types of SmtpRelay and ClusterSmtpRelay, in the order they are written.
pub mod relay_conditions {
    pub const CREDENTIALS_RESOLVED: &str = "CredentialsResolved";
    pub const CONNECTED: &str = "Connected";
    pub const SECURE_TRANSPORT: &str = "SecureTransport";
    pub const AUTHENTICATED: &str = "Authenticated";
    pub const TEST_MESSAGE_ACCEPTED: &str = "TestMessageAccepted";
    /// Only with verification.roundTrip; never part of Ready.
    pub const DELIVERED: &str = "Delivered";
    pub const DEFAULT_RELAY: &str = "DefaultRelay";
    /// The sending addresses are on no configured DNS blocklist (informational: it
    /// does not change Ready).
    pub const NOT_LISTED: &str = "NotListed";
    pub const READY: &str = "Ready";
}

/// Condition types of SenderIdentity (its summary is [`relay_conditions::READY`]).
pub mod identity_conditions {
    pub const RELAY_READY: &str = "RelayReady";
    pub const CONFIRMATION_SENT: &str = "ConfirmationSent";
    pub const CONFIRMED: &str = "Confirmed";
    pub const CONNECTION_SECRET_READY: &str = "ConnectionSecretReady";
    /// SPF authorizes the relay and DMARC exists for the address's domain; blocks
    /// Ready only with spec.deliverability.enforce.
    pub const DOMAIN_AUTHENTICATED: &str = "DomainAuthenticated";
}

/// Reasons of DomainAuthenticated and NotListed, stable for alerts and scripts.
pub mod deliverability_reasons {
    pub const AUTHENTICATED: &str = "Authenticated";
    pub const NO_MX: &str = "NoMx";
    pub const NULL_MX: &str = "NullMx";
    pub const SPF_MISSING: &str = "SpfMissing";
    pub const SPF_NOT_AUTHORIZING_RELAY: &str = "SpfNotAuthorizingRelay";
    pub const SPF_TOO_MANY_LOOKUPS: &str = "SpfTooManyLookups";
    pub const SPF_PERM_ERROR: &str = "SpfPermError";
    pub const DKIM_KEY_MISSING: &str = "DkimKeyMissing";
    pub const DKIM_KEY_INVALID: &str = "DkimKeyInvalid";
    pub const DKIM_KEY_WEAK: &str = "DkimKeyWeak";
    pub const DMARC_MISSING: &str = "DmarcMissing";
    pub const DMARC_INVALID: &str = "DmarcInvalid";
    pub const DMARC_POLICY_NONE: &str = "DmarcPolicyNone";
    pub const DNS_TEMPORARY_FAILURE: &str = "DnsTemporaryFailure";
    /// The relay is not known yet (no sending addresses to judge SPF against).
    pub const RELAY_UNKNOWN: &str = "RelayUnknown";
    pub const NOT_LISTED: &str = "NotListed";
    pub const LISTED: &str = "Listed";
    pub const BLOCKLIST_QUERY_REFUSED: &str = "BlocklistQueryRefused";
    pub const NO_SENDING_ADDRESSES: &str = "NoSendingAddresses";
}

/// Annotation carrying an on-demand test send of a relay: "<request-id> <recipient>".
pub const TEST_REQUEST_ANNOTATION: &str = "smtprelay.io/test-request";
/// Annotation asking for a new confirmation attempt; a changed value is a new request.
pub const RESEND_ANNOTATION: &str = "smtprelay.io/resend";
/// Annotation carrying the mailed code back, for clusters without ingress.
pub const CODE_ANNOTATION: &str = "smtprelay.io/confirmation-code";

/// Label a Secret must carry before relays may send its credentials anywhere: without
/// it, anyone allowed to create a SmtpRelay could have the operator send any Secret of
/// the namespace to a host of their choice.
pub const CREDENTIALS_LABEL: &str = "smtprelay.io/credentials";
