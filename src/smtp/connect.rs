//! The connection under the policy, for other protocols than SMTP (the round-trip
//! mailbox): resolution, the destination policy on every address, TCP, and the TLS
//! handshake with the same trust settings as a relay. The one way in is here, so a
//! mailbox host is held to the same destination rules as a relay host.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Destinations, FailureReason, TlsSettings, tls, wire};

/// Resolve `host` and connect to the first allowed address that answers before
/// `deadline`. A refused address is never connected to.
pub async fn open_tcp(
    host: &str,
    port: u16,
    destinations: &Destinations,
    deadline: Instant,
) -> Result<TcpStream, (FailureReason, String)> {
    let addrs = tokio::time::timeout_at(deadline, wire::resolve(host, port))
        .await
        .map_err(|_| {
            (
                FailureReason::Timeout,
                format!("cannot resolve {host} in time"),
            )
        })?
        .map_err(|(r, _, m)| (r, m))?;
    wire::connect(host, addrs, destinations, deadline)
        .await
        .map_err(|(r, _, m)| (r, m))
}

/// A TLS client configuration for `host` from the settings (CA bundle, server name,
/// insecureSkipVerify), checked once.
pub fn tls_client(
    host: &str,
    settings: &TlsSettings,
) -> Result<
    (
        Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    ),
    String,
> {
    let config = match &settings.prepared {
        Some(c) => Arc::clone(c),
        None => tls::client_config(settings)?,
    };
    Ok((config, tls::server_name(host, settings)?))
}

/// The TLS handshake over `tcp`, its failures in the relay's words.
pub async fn tls_handshake<S>(
    stream: S,
    config: Arc<rustls::ClientConfig>,
    name: rustls_pki_types::ServerName<'static>,
) -> Result<TlsStream<S>, (FailureReason, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| tls::classify_handshake_error(&e))
}

/// The negotiated TLS version's name, e.g. TLSv1.3.
pub fn tls_version<S>(stream: &TlsStream<S>) -> Option<String> {
    stream.get_ref().1.protocol_version().map(tls::version_name)
}
