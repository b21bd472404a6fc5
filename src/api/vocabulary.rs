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
    pub const READY: &str = "Ready";
}

/// Condition types of SenderIdentity (its summary is [`relay_conditions::READY`]).
pub mod identity_conditions {
    pub const RELAY_READY: &str = "RelayReady";
    pub const CONFIRMATION_SENT: &str = "ConfirmationSent";
    pub const CONFIRMED: &str = "Confirmed";
    pub const CONNECTION_SECRET_READY: &str = "ConnectionSecretReady";
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
