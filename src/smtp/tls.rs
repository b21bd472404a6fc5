//! TLS client configuration and error classification (rustls, ring provider).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{FailureReason, TlsSettings};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Build the client configuration for one relay. Errors are human-readable.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let config = if settings.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match &settings.ca_bundle_pem {
            Some(pem) => {
                let mut added = 0;
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| format!("CA bundle is not valid PEM: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("CA bundle has an unusable certificate: {e}"))?;
                    added += 1;
                }
                if added == 0 {
                    return Err("CA bundle holds no PEM certificate".into());
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The name to check the certificate against.
pub fn server_name(host: &str, settings: &TlsSettings) -> Result<ServerName<'static>, String> {
    let name = settings.server_name.as_deref().unwrap_or(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_string())
        .map_err(|_| format!("{name:?} is not a valid TLS server name"))
}

/// Map a handshake error to a reason and a message a human understands.
pub fn classify_handshake_error(err: &std::io::Error) -> (FailureReason, String) {
    let tls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(rustls::Error::InvalidCertificate(cert_error)) => (
            FailureReason::CertificateInvalid,
            format!(
                "the relay's certificate was refused: {}",
                describe_certificate_error(cert_error)
            ),
        ),
        Some(rustls::Error::InvalidMessage(_))
        | Some(rustls::Error::InappropriateMessage { .. }) => (
            FailureReason::TlsHandshakeFailed,
            format!(
                "TLS handshake failed: the server did not answer with TLS ({}); check the port and tls.mode",
                tls_error.map(|e| e.to_string()).unwrap_or_default()
            ),
        ),
        Some(other) => (
            FailureReason::TlsHandshakeFailed,
            format!("TLS handshake failed: {other}"),
        ),
        None if err.kind() == std::io::ErrorKind::UnexpectedEof => (
            FailureReason::TlsHandshakeFailed,
            "TLS handshake failed: the server closed the connection".into(),
        ),
        None => (
            FailureReason::TlsHandshakeFailed,
            format!("TLS handshake failed: {err}"),
        ),
    }
}

/// A sentence a platform engineer understands for each way a certificate is refused.
fn describe_certificate_error(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    let utc = |t: &UnixTime| {
        i64::try_from(t.as_secs())
            .ok()
            .and_then(|s| jiff::Timestamp::from_second(s).ok())
            .map(|ts| ts.to_string())
            .unwrap_or_else(|| "an unrepresentable time".into())
    };
    #[allow(deprecated)]
    match e {
        C::UnknownIssuer => "it is issued by an authority this relay's trust store does not know (self-signed, or signed by a private CA): put that CA in tls.caBundleRef".into(),
        C::Expired => "it has expired: the relay's operator must renew it".into(),
        C::ExpiredContext { time, not_after } => format!(
            "it expired at {} (now {}): the relay's operator must renew it",
            utc(not_after),
            utc(time)
        ),
        C::NotValidYet => "it is not valid yet (check the relay's clock and ours)".into(),
        C::NotValidYetContext { time, not_before } => format!(
            "it is only valid from {} (now {}): check the relay's clock and ours",
            utc(not_before),
            utc(time)
        ),
        C::NotValidForName => "it is not valid for this host name: set tls.serverName to a name the certificate carries".into(),
        C::NotValidForNameContext { expected, presented } => {
            let expected = expected.to_str();
            if presented.is_empty() {
                format!("it is not valid for {expected:?} and names no host at all: set tls.serverName, or fix the certificate")
            } else {
                let names: Vec<String> = presented.iter().take(8).map(|n| format!("{n:?}")).collect();
                let more = if presented.len() > 8 { format!(" and {} more", presented.len() - 8) } else { String::new() };
                format!(
                    "it is not valid for {expected:?}; it names {}{more}: reach the relay by one of those names, or set tls.serverName",
                    names.join(", ")
                )
            }
        }
        C::Revoked => "it has been revoked by its issuer".into(),
        C::BadEncoding => "the server sent a certificate that cannot be parsed".into(),
        C::BadSignature => "its signature does not verify: the chain the server sent is broken or tampered with".into(),
        C::UnsupportedSignatureAlgorithm
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "it is signed with an algorithm we do not accept (e.g. SHA-1 or MD5): the relay needs a certificate signed with SHA-256 or better".into()
        }
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "it is not meant for TLS servers (its extended key usage lacks serverAuth)".into()
        }
        C::UnhandledCriticalExtension => "it carries a critical extension we cannot check".into(),
        C::UnknownRevocationStatus
        | C::ExpiredRevocationList
        | C::ExpiredRevocationListContext { .. }
        | C::InvalidOcspResponse => "its revocation status cannot be established".into(),
        C::ApplicationVerificationFailure => "it failed verification".into(),
        C::Other(other) => {
            // webpki's own refusals arrive wrapped; name the ones people meet.
            let text = format!("{other:?}");
            if text.contains("CaUsedAsEndEntity") {
                "the server presents a CA certificate as its own certificate: it must present a server certificate issued by that CA".into()
            } else if text.contains("EndEntityUsedAsCa") {
                "the chain uses a server certificate as if it were a CA".into()
            } else if text.contains("UnsupportedCertVersion") {
                "it is not an X.509 v3 certificate".into()
            } else if text.contains("PathLenConstraintViolated") || text.contains("MaximumPathDepthExceeded") {
                "its chain is longer than its CA allows".into()
            } else if text.contains("NameConstraintViolation") {
                "its issuer is not allowed to issue certificates for this name (name constraints)".into()
            } else {
                "it is refused by certificate validation".into()
            }
        }
        _ => "it is refused by certificate validation".into(),
    }
}

/// Human name of a negotiated protocol version.
pub fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => format!("{other:?}"),
    }
}

/// `insecureSkipVerify`: accept any certificate, still check handshake signatures.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_bundles_are_explained() {
        let s = TlsSettings {
            ca_bundle_pem: Some(b"not pem at all".to_vec()),
            ..Default::default()
        };
        let err = client_config(&s).expect_err("no certificate");
        assert!(err.contains("no PEM certificate"), "{err}");
        let s = TlsSettings {
            ca_bundle_pem: Some(
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_vec(),
            ),
            ..Default::default()
        };
        assert!(client_config(&s).is_err());
    }

    #[test]
    fn server_names() {
        let s = TlsSettings::default();
        assert!(server_name("smtp.example.test", &s).is_ok());
        assert!(server_name("127.0.0.1", &s).is_ok());
        assert!(server_name("[::1]", &s).is_ok());
        assert!(server_name("bad name", &s).is_err());
    }

    #[test]
    fn classifies_certificate_errors() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let (reason, msg) = classify_handshake_error(&e);
        assert_eq!(reason, FailureReason::CertificateInvalid);
        assert!(msg.contains("authority this relay's trust store does not know"));
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert_eq!(
            classify_handshake_error(&e).0,
            FailureReason::TlsHandshakeFailed
        );
    }

    /// Each refusal in words: the phrase a reader needs, and never a Debug dump.
    #[test]
    #[allow(deprecated)]
    fn every_certificate_refusal_is_a_sentence() {
        use rustls::CertificateError as C;
        let at = |s: u64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(s));
        let other = |e: webpki::Error| C::Other(rustls::OtherError(Arc::new(e)));
        let cases: Vec<(C, &str)> = vec![
            (C::UnknownIssuer, "put that CA in tls.caBundleRef"),
            (C::Expired, "has expired"),
            (
                C::ExpiredContext {
                    time: at(1_800_000_000),
                    not_after: at(1_700_000_000),
                },
                "expired at 2023-11-14T22:13:20Z (now 2027-01-15T08:00:00Z)",
            ),
            (C::NotValidYet, "not valid yet"),
            (
                C::NotValidYetContext {
                    time: at(1_700_000_000),
                    not_before: at(1_800_000_000),
                },
                "only valid from 2027-01-15T08:00:00Z",
            ),
            (C::NotValidForName, "tls.serverName"),
            (
                C::NotValidForNameContext {
                    expected: ServerName::try_from("smtp.example.test").expect("name"),
                    presented: vec!["DnsName(\"mail.example.test\")".into()],
                },
                "not valid for \"smtp.example.test\"; it names",
            ),
            (
                C::NotValidForNameContext {
                    expected: ServerName::try_from("smtp.example.test").expect("name"),
                    presented: vec![],
                },
                "names no host at all",
            ),
            (C::Revoked, "revoked"),
            (C::BadEncoding, "cannot be parsed"),
            (C::BadSignature, "signature does not verify"),
            (C::UnsupportedSignatureAlgorithm, "SHA-256 or better"),
            (
                C::UnsupportedSignatureAlgorithmContext {
                    signature_algorithm_id: vec![1, 2],
                    supported_algorithms: vec![],
                },
                "SHA-256 or better",
            ),
            (C::InvalidPurpose, "serverAuth"),
            (
                other(webpki::Error::CaUsedAsEndEntity),
                "presents a CA certificate as its own",
            ),
            (
                other(webpki::Error::EndEntityUsedAsCa),
                "as if it were a CA",
            ),
            (other(webpki::Error::UnsupportedCertVersion), "X.509 v3"),
        ];
        for (error, phrase) in cases {
            let e = std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(error.clone()),
            );
            let (reason, msg) = classify_handshake_error(&e);
            assert_eq!(reason, FailureReason::CertificateInvalid, "{error:?}");
            assert!(msg.contains(phrase), "{error:?}: {msg:?} lacks {phrase:?}");
            assert!(
                msg.starts_with("the relay's certificate was refused: "),
                "{msg}"
            );
            for dump in ["Context", "Other(", "OtherError", "Error(", "{ "] {
                assert!(!msg.contains(dump), "{error:?}: Debug text in {msg:?}");
            }
        }
    }
}
