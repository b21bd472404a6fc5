//! Reading what a relay (or its round-trip mailbox) references: a credentials Secret
//! labelled for relay use, a CA bundle, and the TLS settings built from it. Callers
//! word the failures for their own condition.

use super::*;
use crate::api::{CaBundleRef, CredentialsSecretRef, TlsSpec};

/// A credentials Secret that cannot be used: the reason (SecretForbidden,
/// SourceUnavailable, SecretNotFound, SecretNotLabelled, SecretKeyMissing) and why.
pub struct RefProblem {
    pub reason: &'static str,
    pub message: String,
}

/// Username and password from a credentials Secret, and the version read.
pub async fn read_credentials(
    source: &impl Source,
    ns: &str,
    r: &CredentialsSecretRef,
) -> Result<(String, String, String), RefProblem> {
    let what = format!("Secret {ns}/{}", r.name);
    let problem = |reason, message| RefProblem { reason, message };
    let secret = source
        .secret(ns, &r.name)
        .await
        .map_err(|e| {
            let reason = match e {
                SourceError::Forbidden(_) => reasons::SECRET_FORBIDDEN,
                SourceError::Other { .. } => reasons::SOURCE_UNAVAILABLE,
            };
            problem(reason, e.to_string())
        })?
        .ok_or_else(|| problem(reasons::SECRET_NOT_FOUND, format!("{what} does not exist")))?;
    if secret.labels.get(CREDENTIALS_LABEL).map(String::as_str) != Some("true") {
        return Err(problem(
            reasons::SECRET_NOT_LABELLED,
            format!("{what} is not marked for relay use: label it {CREDENTIALS_LABEL}=true"),
        ));
    }
    let key = |k: &str| -> Result<String, RefProblem> {
        let bytes = secret.data.get(k).ok_or_else(|| {
            problem(
                reasons::SECRET_KEY_MISSING,
                format!(
                    "{what} has no key {k:?} (keys: {})",
                    secret.data.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        String::from_utf8(bytes.clone()).map_err(|_| {
            problem(
                reasons::SECRET_KEY_MISSING,
                format!("{what} key {k:?} is not UTF-8 text"),
            )
        })
    };
    let username = key(&r.username_key)?;
    let password = key(&r.password_key)?;
    Ok((username, password, secret.version.clone()))
}

/// How reading a CA bundle failed.
pub enum CaBundleError {
    /// The API server did not answer or refused.
    Unreadable(SourceError),
    /// The object or its key is not there (words for the message).
    Missing(String),
}

/// A CA bundle's PEM (Secret or ConfigMap) and the version read.
pub async fn read_ca_bundle(
    source: &impl Source,
    ns: &str,
    ca: &CaBundleRef,
) -> Result<(Vec<u8>, String), CaBundleError> {
    let what = format!("{:?} {ns}/{}", ca.kind, ca.name);
    let fetched = match ca.kind {
        CaBundleKind::Secret => source.secret(ns, &ca.name).await,
        CaBundleKind::ConfigMap => source.config_map(ns, &ca.name).await,
    }
    .map_err(CaBundleError::Unreadable)?
    .ok_or_else(|| CaBundleError::Missing(format!("{what} does not exist")))?;
    let pem = fetched
        .data
        .get(&ca.key)
        .cloned()
        .ok_or_else(|| CaBundleError::Missing(format!("{what} has no key {:?}", ca.key)))?;
    Ok((pem, fetched.version.clone()))
}

/// The session's security and TLS settings for `host`, prepared (roots, server
/// name) unless the session is plain text.
pub fn tls_settings(
    host: &str,
    tls: &TlsSpec,
    ca_bundle_pem: Option<Vec<u8>>,
) -> Result<(smtp::Security, smtp::TlsSettings), smtp::TlsSetupError> {
    let security = match tls.mode {
        TlsMode::None => smtp::Security::None,
        TlsMode::StartTls => smtp::Security::StartTls,
        TlsMode::Tls => smtp::Security::Tls,
    };
    let mut settings = smtp::TlsSettings {
        server_name: tls.server_name.clone(),
        ca_bundle_pem,
        insecure_skip_verify: tls.insecure_skip_verify,
        prepared: None,
    };
    if security != smtp::Security::None {
        smtp::prepare_tls(host, &mut settings)?;
    }
    Ok((security, settings))
}
