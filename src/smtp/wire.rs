//! The wire under a verification session: name resolution (with the destination
//! policy, so no refused address is ever connected to), the TCP connection, our own
//! pre-TLS exchange (greeting, EHLO, STARTTLS), SMTP reply parsing, and the stream
//! lettre drives afterwards.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::session::*;
use super::{Destinations, FailureReason, tls};

pub(super) async fn resolve(host: &str, port: u16) -> StepResult<Vec<SocketAddr>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| {
            (
                FailureReason::DnsFailure,
                None,
                format!("cannot resolve {bare}: {e}"),
            )
        })?
        .collect();
    if addrs.is_empty() {
        return Err((
            FailureReason::DnsFailure,
            None,
            format!("{bare} has no address"),
        ));
    }
    Ok(addrs)
}

/// Connect to the first address that answers, among those the destination policy
/// allows: a refused address is never connected to. This is the only place a
/// session opens a connection.
pub(super) async fn connect(
    host: &str,
    addrs: Vec<SocketAddr>,
    destinations: &Destinations,
    deadline: Instant,
) -> StepResult<TcpStream> {
    let mut refusals = Vec::new();
    let addrs: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match destinations.check(a.ip()) {
            Ok(()) => true,
            Err(r) => {
                refusals.push(r);
                false
            }
        })
        .collect();
    if addrs.is_empty()
        && let Some(first) = refusals.first()
    {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let subject = if bare.parse::<IpAddr>().is_ok() {
            String::new()
        } else if refusals.len() == 1 {
            format!("{bare} resolves to ")
        } else {
            format!("{bare} resolves to {} refused addresses; ", refusals.len())
        };
        return Err((
            FailureReason::DestinationNotAllowed,
            None,
            format!("{subject}{first}; no connection was opened"),
        ));
    }
    let mut last = None;
    let mut refused = None;
    let count = addrs.len();
    for (i, addr) in addrs.into_iter().enumerate() {
        // Each address gets a fair share of what is left, so one black-holed address
        // (a broken IPv6 route) cannot use up the whole budget.
        let left = deadline.saturating_duration_since(Instant::now());
        let share = left / u32::try_from(count - i).unwrap_or(1).max(1);
        let attempt = match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {}", human_duration(share)),
            )),
        };
        match attempt {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused = Some(addr),
            Err(e) => last = Some((addr, e)),
        }
    }
    // "Refused" is the most telling answer: some address was reachable and said no.
    Err(match (refused, last) {
        (Some(addr), _) => (
            FailureReason::ConnectionRefused,
            None,
            format!("connection to {addr} refused: nothing listens on that port"),
        ),
        (None, Some((addr, e))) => (
            FailureReason::ConnectionFailed,
            None,
            format!("cannot connect to {addr}: {e}"),
        ),
        (None, None) => (
            FailureReason::DnsFailure,
            None,
            "no address to connect to".into(),
        ),
    })
}

pub(super) async fn handshake(
    stream: Inner,
    config: Arc<rustls::ClientConfig>,
    name: rustls_pki_types::ServerName<'static>,
) -> StepResult<Inner> {
    let Inner::Plain(tcp) = stream else {
        return Err((
            FailureReason::ProtocolError,
            None,
            "TLS requested twice".into(),
        ));
    };
    match TlsConnector::from(config).connect(name, tcp).await {
        Ok(tls) => Ok(Inner::Tls(Box::new(tls))),
        Err(e) => {
            let (reason, message) = tls::classify_handshake_error(&e);
            Err((reason, None, message))
        }
    }
}

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    pub(super) code: u16,
    pub(super) lines: Vec<String>,
    pub(super) raw: Vec<u8>,
}

impl Reply {
    /// The reply text without codes, lines joined by a space.
    pub(super) fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| l.get(4..).unwrap_or("").trim())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Parse one complete reply from the front of `buf`: (reply, bytes used), or None
/// when more input is needed.
pub(super) fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let mut pos = 0;
    let mut lines = Vec::new();
    let mut code = None;
    while let Some(nl) = buf[pos..].iter().position(|b| *b == b'\n') {
        let line = &buf[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += nl + 1;
        let text = String::from_utf8_lossy(line).into_owned();
        let digits = text
            .get(..3)
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
        let Some(this_code) = digits.and_then(|d| d.parse::<u16>().ok()) else {
            return Err(format!("not an SMTP reply: {:?}", truncate(&text, 80)));
        };
        if *code.get_or_insert(this_code) != this_code {
            return Err("inconsistent codes in a multi-line reply".into());
        }
        let last = match text.as_bytes().get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(format!("malformed SMTP reply: {:?}", truncate(&text, 80))),
        };
        lines.push(text);
        if last {
            return Ok(Some((
                Reply {
                    code: this_code,
                    lines,
                    raw: buf[..pos].to_vec(),
                },
                pos,
            )));
        }
    }
    Ok(None)
}

pub(super) fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub(super) async fn read_reply(stream: &mut Inner, buf: &mut Vec<u8>) -> StepResult<Reply> {
    loop {
        match parse_reply(buf) {
            Ok(Some((reply, used))) => {
                buf.drain(..used);
                return Ok(reply);
            }
            Ok(None) if buf.len() > MAX_REPLY => {
                return Err((
                    FailureReason::ProtocolError,
                    None,
                    "server reply too large".into(),
                ));
            }
            Ok(None) => {}
            Err(m) => return Err((FailureReason::ProtocolError, None, m)),
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|e| {
            (
                FailureReason::ConnectionLost,
                None,
                format!("connection lost: {e}"),
            )
        })?;
        if n == 0 {
            return Err((
                FailureReason::ConnectionLost,
                None,
                "the server closed the connection".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub(super) async fn command(
    stream: &mut Inner,
    buf: &mut Vec<u8>,
    line: &str,
) -> StepResult<Reply> {
    stream
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|e| {
            (
                FailureReason::ConnectionLost,
                None,
                format!("connection lost: {e}"),
            )
        })?;
    read_reply(stream, buf).await
}

/// The transport under the session: TCP, or TLS over TCP.
#[derive(Debug)]
pub(super) enum Inner {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Inner {
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Inner::Plain(s) => s,
            Inner::Tls(s) => s.get_ref().0,
        }
    }
}

/// Acknowledge what the server sends at once instead of after the ~40 ms delayed-ACK
/// timer. Servers that write small replies with Nagle's algorithm on (Postfix does)
/// otherwise stall each time they have unacknowledged data in flight, e.g. TLS 1.3
/// session tickets followed by the greeting or EHLO reply. Linux drops quick-ACK mode
/// on its own, so it is re-armed before every read.
pub(super) fn quick_ack(tcp: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = tcp;
}

impl AsyncRead for Inner {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        quick_ack(self.tcp());
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Inner {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Replays bytes we already read (the greeting) to lettre, then passes through,
/// recording what the server sends next (the EHLO reply) for status.
pub(super) struct Replay {
    pub(super) prefix: Vec<u8>,
    pub(super) pos: usize,
    pub(super) inner: Inner,
    pub(super) tap: Arc<Mutex<Vec<u8>>>,
    pub(super) peer: SocketAddr,
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay").field("peer", &self.peer).finish()
    }
}

impl AsyncTokioStream for Replay {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let mut tap = this.tap.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = &buf.filled()[before..];
            let room = MAX_TAP.saturating_sub(tap.len());
            tap.extend_from_slice(&fresh[..fresh.len().min(room)]);
        }
        result
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_multi_line_replies() {
        let (r, used) = parse_reply(b"220 mx ESMTP\r\nextra").unwrap().unwrap();
        assert_eq!((r.code, used), (220, 14));
        assert_eq!(r.text(), "mx ESMTP");
        let multi = b"250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
        let (r, used) = parse_reply(multi).unwrap().unwrap();
        assert_eq!(r.lines.len(), 3);
        assert_eq!(used, multi.len());
        assert_eq!(parse_reply(b"250-mx\r\n250-PIPE").unwrap(), None);
        assert_eq!(parse_reply(b"220").unwrap(), None);
        let (r, _) = parse_reply(b"220\n").unwrap().unwrap();
        assert_eq!(r.code, 220);
    }

    #[test]
    fn garbage_replies_are_protocol_errors() {
        assert!(parse_reply(b"HTTP/1.1 400 Bad Request\r\n").is_err());
        assert!(parse_reply(b"250-a\r\n220 b\r\n").is_err());
        assert!(parse_reply(b"250xa\r\n").is_err());
        assert!(parse_reply(&[0xff, 0xfe, b'\n']).is_err());
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever a server sends, the parser answers: a reply, "more", or an error.
        #[test]
        fn any_bytes_are_an_answer(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(Some((reply, used))) = parse_reply(&bytes) {
                prop_assert!(used <= bytes.len());
                prop_assert!((100..1000).contains(&reply.code));
                let _ = reply.text();
            }
        }

        /// A well-formed reply of any number of lines reads back as written, and the
        /// bytes after it are left for the next reply.
        #[test]
        fn well_formed_replies_read_back(
            code in 200u16..600,
            lines in prop::collection::vec("[ -~]{0,40}", 1..8),
            rest in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut raw = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                let sep = if i + 1 == lines.len() { ' ' } else { '-' };
                raw.extend_from_slice(format!("{code}{sep}{l}\r\n").as_bytes());
            }
            let used_expected = raw.len();
            raw.extend_from_slice(&rest);
            let (reply, used) = parse_reply(&raw).expect("valid").expect("complete");
            prop_assert_eq!(reply.code, code);
            prop_assert_eq!(reply.lines.len(), lines.len());
            prop_assert_eq!(used, used_expected);
        }
    }
}
