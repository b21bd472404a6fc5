//! The connection to a mailbox server: opened under the destination policy (through
//! `smtp::open_tcp`), optionally wrapped in TLS, read line by line with hard limits
//! on line and response sizes, every read and write under one deadline.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::MailboxError;
use crate::smtp::{self, FailureReason};

/// Longest line accepted from a server.
pub const MAX_LINE: usize = 16 * 1024;
/// Largest literal (IMAP) or multi-line reply (POP3) accepted.
pub const MAX_BLOCK: usize = 256 * 1024;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection: the stream and what was read past the last line.
pub struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    deadline: Instant,
    /// What the server is called in messages ("IMAP server 127.0.0.1:143").
    pub peer: String,
}

/// TLS settings and server name, checked before connecting.
pub type TlsClient = (
    Arc<rustls::ClientConfig>,
    rustls_pki_types::ServerName<'static>,
);

fn unreachable(what: String) -> MailboxError {
    MailboxError::Unreachable(what)
}

fn from_smtp((reason, message): (FailureReason, String)) -> MailboxError {
    let message = message.replace(
        "the relay's certificate",
        "the mailbox server's certificate",
    );
    match reason {
        FailureReason::DestinationNotAllowed => MailboxError::DestinationNotAllowed(message),
        _ => unreachable(message),
    }
}

impl Conn {
    /// Connect to host:port under the destination policy; implicit TLS when `tls` is set.
    pub async fn open(
        host: &str,
        port: u16,
        destinations: &smtp::Destinations,
        tls: Option<TlsClient>,
        deadline: Instant,
        protocol: &str,
    ) -> Result<Conn, MailboxError> {
        let tcp: TcpStream = smtp::open_tcp(host, port, destinations, deadline)
            .await
            .map_err(from_smtp)?;
        let _ = tcp.set_nodelay(true);
        let peer = format!("{protocol} server {host}:{port}");
        let io: Box<dyn Io> = match tls {
            None => Box::new(tcp),
            Some((config, name)) => Box::new(
                tokio::time::timeout_at(deadline, smtp::tls_handshake(tcp, config, name))
                    .await
                    .map_err(|_| unreachable(format!("{peer}: no TLS handshake in time")))?
                    .map_err(from_smtp)?,
            ),
        };
        Ok(Conn {
            io,
            buf: Vec::new(),
            deadline,
            peer,
        })
    }

    /// Upgrade to TLS (after STARTTLS/STLS). Whatever the server sent before the
    /// handshake is dropped: nothing injected in clear text reaches the secure session.
    pub async fn upgrade(self, (config, name): TlsClient) -> Result<Conn, MailboxError> {
        let Conn {
            io, deadline, peer, ..
        } = self;
        let tls = tokio::time::timeout_at(deadline, smtp::tls_handshake(io, config, name))
            .await
            .map_err(|_| unreachable(format!("{peer}: no TLS handshake in time")))?
            .map_err(from_smtp)?;
        Ok(Conn {
            io: Box::new(tls),
            buf: Vec::new(),
            deadline,
            peer,
        })
    }

    fn timeout(&self) -> MailboxError {
        MailboxError::Timeout(format!("{}: no answer in time", self.peer))
    }

    /// Send one command line (CRLF added). The caller never puts a line break in it.
    pub async fn send(&mut self, line: &[u8]) -> Result<(), MailboxError> {
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.send_raw(&bytes).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), MailboxError> {
        match tokio::time::timeout_at(self.deadline, async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
        {
            Err(_) => Err(self.timeout()),
            Ok(Err(e)) => Err(unreachable(format!("{}: connection lost: {e}", self.peer))),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn fill(&mut self) -> Result<(), MailboxError> {
        let mut chunk = [0u8; 8192];
        let n = match tokio::time::timeout_at(self.deadline, self.io.read(&mut chunk)).await {
            Err(_) => return Err(self.timeout()),
            Ok(Err(e)) => {
                return Err(unreachable(format!("{}: connection lost: {e}", self.peer)));
            }
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(unreachable(format!(
                "{}: the server closed the connection",
                self.peer
            )));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// One line without its CRLF (or bare LF).
    pub async fn line(&mut self) -> Result<Vec<u8>, MailboxError> {
        loop {
            if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(MailboxError::Protocol(format!(
                    "{}: a line longer than {MAX_LINE} bytes",
                    self.peer
                )));
            }
            self.fill().await?;
        }
    }

    /// Exactly `n` bytes (an IMAP literal); `n` is checked against [`MAX_BLOCK`].
    pub async fn exact(&mut self, n: usize) -> Result<Vec<u8>, MailboxError> {
        if n > MAX_BLOCK {
            return Err(MailboxError::Protocol(format!(
                "{}: a literal of {n} bytes (limit {MAX_BLOCK})",
                self.peer
            )));
        }
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }
}

/// Printable text of a server line, clipped, for messages.
pub fn text(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    clean.trim().to_string()
}
