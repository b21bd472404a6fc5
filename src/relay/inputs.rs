//! Observe: the relay's inputs (credentials Secret, CA bundle) read through a
//! [`Source`], checked, and turned into a session target with a version string.

use super::*;
use ring::hmac;

/// A Secret or ConfigMap's data, as the observe step sees it. Its Debug output shows
/// the keys only.
#[derive(Clone, Default)]
pub struct Fetched {
    pub data: BTreeMap<String, Vec<u8>>,
    /// resourceVersion; empty when read from a file.
    pub version: String,
    pub labels: BTreeMap<String, String>,
}

pub use crate::api::CREDENTIALS_LABEL;

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("version", &self.version)
            .finish()
    }
}

/// Why an input could not be read (other than "it does not exist").
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the operator is not allowed to read {0}")]
    Forbidden(String),
    #[error("reading {what}: {message}")]
    Other { what: String, message: String },
}

/// Where Secrets and ConfigMaps come from: the API server, or manifest files.
pub trait Source {
    fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Fetched>, SourceError>> + Send;
    fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Fetched>, SourceError>> + Send;
}

/// A problem with the inputs that prevents a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputProblem {
    /// Which condition reports it (CredentialsResolved, SecureTransport or Ready).
    pub condition: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The resolved session target and the versions of the inputs it came from.
#[derive(Debug)]
pub struct Resolved {
    pub target: smtp::Target,
    pub inputs: String,
}

/// Observe: read the Secret and CA bundle a relay references and build the target.
pub async fn resolve(relay: &RelayRef<'_>, source: &impl Source) -> Result<Resolved, InputProblem> {
    let spec = relay.spec;
    let (_, timeout) = schedule(spec)?;
    let port = effective_port(spec)?;
    // The CRD's pattern refuses these at apply time; objects that bypassed it (or an
    // older CRD) are refused here, with the field named, before anything else.
    for (field, value) in [
        ("host", Some(&spec.host)),
        ("tls.serverName", spec.tls.server_name.as_ref()),
    ] {
        if let Some(value) = value
            && let Err(why) = crate::api::check_host(value)
        {
            return Err(InputProblem {
                condition: types::READY,
                reason: reasons::INVALID_SPEC,
                message: format!("{field} {:?} {why}", crate::table::clip(value, 64)),
            });
        }
    }
    if let Some(h) = spec
        .custom_headers
        .iter()
        .find(|h| crate::api::RESERVED_HEADERS.contains(&h.name.to_ascii_lowercase().as_str()))
    {
        // The CRD refuses this at apply time; objects that bypassed it are refused here.
        return Err(InputProblem {
            condition: types::READY,
            reason: reasons::INVALID_SPEC,
            message: format!(
                "customHeaders: {} is set by the operator and cannot be overridden",
                h.name
            ),
        });
    }
    if relay.namespace.is_some()
        && let Some(field) = spec.cross_namespace_refs().first()
    {
        return Err(InputProblem {
            condition: types::READY,
            reason: reasons::INVALID_SPEC,
            message: format!("{field} {}", crate::api::NAMESPACED_REF_MESSAGE),
        });
    }
    let mut versions = vec![format!("g{}", relay.generation.unwrap_or(0))];

    let credentials = match &spec.auth {
        None => None,
        Some(auth) => {
            let r = &auth.credentials_secret_ref;
            let ns = relay.ref_namespace(r.namespace.as_deref());
            let (username, password, version) =
                read_credentials(source, ns, r)
                    .await
                    .map_err(|p| InputProblem {
                        condition: types::CREDENTIALS_RESOLVED,
                        reason: p.reason,
                        message: p.message,
                    })?;
            versions.push(format!("s{version}"));
            Some(smtp::Credentials {
                mechanism: match auth.mechanism {
                    AuthMechanismSpec::Plain => smtp::AuthMechanism::Plain,
                    AuthMechanismSpec::Login => smtp::AuthMechanism::Login,
                },
                username,
                password: smtp::Password::new(password),
            })
        }
    };

    let ca_bundle_pem = match &spec.tls.ca_bundle_ref {
        None => None,
        Some(ca) => {
            let ns = relay.ref_namespace(ca.namespace.as_deref());
            let problem = |reason, message| InputProblem {
                condition: types::SECURE_TRANSPORT,
                reason,
                message,
            };
            let (pem, version) = read_ca_bundle(source, ns, ca).await.map_err(|e| match e {
                CaBundleError::Unreadable(e @ SourceError::Forbidden(_)) => {
                    problem(reasons::CA_BUNDLE_NOT_FOUND, e.to_string())
                }
                CaBundleError::Unreadable(e) => problem(reasons::SOURCE_UNAVAILABLE, e.to_string()),
                CaBundleError::Missing(m) => problem(reasons::CA_BUNDLE_NOT_FOUND, m),
            })?;
            versions.push(format!("c{version}"));
            Some(pem)
        }
    };

    let (security, tls) = match tls_settings(&spec.host, &spec.tls, ca_bundle_pem) {
        Ok(t) => t,
        Err(e) => {
            return Err(match e {
                smtp::TlsSetupError::CaBundle(message) => InputProblem {
                    condition: types::SECURE_TRANSPORT,
                    reason: reasons::CA_BUNDLE_INVALID,
                    message,
                },
                smtp::TlsSetupError::ServerName(message) => InputProblem {
                    condition: types::READY,
                    reason: reasons::INVALID_SPEC,
                    message,
                },
            });
        }
    };
    let message = spec
        .verification
        .recipient
        .as_ref()
        .map(|to| test_message(spec, to, relay.label()).outgoing());
    Ok(Resolved {
        target: smtp::Target {
            host: spec.host.clone(),
            port,
            security,
            tls,
            credentials,
            message,
            timeout,
            destinations: smtp::Destinations::new(
                Arc::clone(relay.destinations),
                relay.destination_scope(),
            ),
        },
        inputs: versions.join("/"),
    })
}

/// The key relays fingerprint their inputs with: a Secret's or ConfigMap's version
/// is a keyed digest of its data, so a change of its metadata alone (an annotation
/// from a secrets manager) is not a new input, and nothing about the data can be
/// learnt from status. The operator holds one for its whole life, read from its key
/// Secret, so a restart computes the same fingerprints and verifies nothing again.
#[derive(Clone)]
pub struct InputKey(hmac::Key);

impl std::fmt::Debug for InputKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InputKey(<redacted>)")
    }
}

impl InputKey {
    pub fn new(bytes: &[u8]) -> Self {
        InputKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// From the operator's key Secret. Digests of either use stay apart by the label
    /// each one starts with ("fingerprint" here, "token" or "code" for confirmations),
    /// and fingerprints already in status keep matching.
    pub fn from_confirm_key(key: &crate::confirm::ConfirmKey) -> Self {
        InputKey(key.hmac_key().clone())
    }

    /// A short keyed digest of some data (a Secret's keys and values): equal data,
    /// equal fingerprint.
    pub fn fingerprint(&self, data: &BTreeMap<String, Vec<u8>>) -> String {
        use base64::Engine as _;
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(b"fingerprint\0");
        for (k, v) in data {
            ctx.update(&(k.len() as u64).to_be_bytes());
            ctx.update(k.as_bytes());
            ctx.update(&(v.len() as u64).to_be_bytes());
            ctx.update(v);
        }
        let tag = ctx.sign();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag.as_ref()[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confirm::ConfirmKey;

    #[test]
    fn fingerprints_follow_data_only() {
        let key = InputKey::from_confirm_key(&ConfirmKey::generate().0);
        let mut a = std::collections::BTreeMap::new();
        a.insert("password".to_string(), b"one".to_vec());
        let fa = key.fingerprint(&a);
        assert_eq!(fa, key.fingerprint(&a.clone()));
        a.insert("password".to_string(), b"two".to_vec());
        assert_ne!(fa, key.fingerprint(&a));
        assert!(!fa.contains("one"));
        let other = InputKey::new(&ConfirmKey::generate().1);
        assert_ne!(key.fingerprint(&a), other.fingerprint(&a));
    }

    #[test]
    fn the_input_key_is_the_key_secret_material() {
        let bytes = b"0123456789abcdef0123456789abcdef";
        let data = BTreeMap::from([("k".to_string(), b"v".to_vec())]);
        assert_eq!(
            InputKey::new(bytes).fingerprint(&data),
            InputKey::from_confirm_key(&ConfirmKey::new(bytes)).fingerprint(&data)
        );
    }
}
