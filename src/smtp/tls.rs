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
                "server certificate rejected: {}",
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

fn describe_certificate_error(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match e {
        C::UnknownIssuer => {
            "issued by an unknown authority (self-signed or private CA: set tls.caBundleRef)".into()
        }
        C::Expired | C::ExpiredContext { .. } => "certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "certificate is not valid yet".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "certificate is not valid for this host name (set tls.serverName if the relay is reached by another name)".into()
        }
        C::Revoked => "certificate has been revoked".into(),
        other => format!("{other:?}"),
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
        assert!(msg.contains("unknown authority"));
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert_eq!(
            classify_handshake_error(&e).0,
            FailureReason::TlsHandshakeFailed
        );
    }
}
