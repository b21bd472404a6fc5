//! One verification session: DNS → TCP → (TLS) → greeting → (EHLO → STARTTLS → TLS)
//! → EHLO → AUTH → (MAIL/RCPT/DATA) → QUIT.
//!
//! The part before the secure channel is ours, so every reply code and TLS detail is
//! observed precisely and a STARTTLS downgrade is impossible. From the post-TLS EHLO on,
//! the session is driven by lettre's `AsyncSmtpConnection` over the stream we opened
//! (Nagle disabled, which matters: small writes + delayed ACKs cost ~40 ms per step).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials as LettreCredentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::message::build_message;
use super::{
    AuthMechanism, Destinations, Failure, FailureReason, Outcome, Security, ServerFacts, Step,
    Target, der, tls,
};

/// Failure without its step (the step wrapper adds it).
type StepError = (FailureReason, Option<u16>, String);
type StepResult<T> = Result<T, StepError>;

/// Largest reply we accept before calling it a protocol error.
const MAX_REPLY: usize = 64 * 1024;
/// How much of the post-TLS EHLO exchange we keep for status.
const MAX_TAP: usize = 8 * 1024;
const MAX_EXTENSIONS: usize = 32;
/// Longest wait for a server to acknowledge QUIT after a failure.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// Run one verification session. Never panics on what the network sends; the
/// password is scrubbed from every text in the outcome.
pub async fn verify(target: &Target) -> Outcome {
    let start = Instant::now();
    let mut session = Session {
        target,
        deadline: start + target.timeout,
        outcome: Outcome::default(),
    };
    if let Err(failure) = session.run().await {
        session.outcome.failure = Some(failure);
    }
    let mut outcome = session.outcome;
    outcome.total = start.elapsed();
    if let Some(c) = &target.credentials {
        outcome.redact(c.password.expose());
    }
    outcome
}

struct Session<'a> {
    target: &'a Target,
    deadline: Instant,
    outcome: Outcome,
}

impl Session<'_> {
    /// Run one step under the session deadline and record how long it took.
    async fn step<T>(
        &mut self,
        step: Step,
        fut: impl Future<Output = StepResult<T>>,
    ) -> Result<T, Failure> {
        let t0 = Instant::now();
        let result = match tokio::time::timeout_at(self.deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err((
                FailureReason::Timeout,
                None,
                format!(
                    "no answer from the server at step {step}: the session exceeded its {} timeout",
                    human_duration(self.target.timeout)
                ),
            )),
        };
        self.outcome.steps.push((step, t0.elapsed()));
        result.map_err(|(reason, code, message)| Failure {
            step,
            reason,
            code,
            message,
        })
    }

    async fn run(&mut self) -> Result<(), Failure> {
        let target = self.target;
        // Validate what we can before touching the network.
        let message = match &target.message {
            Some(t) => Some(build_message(t).map_err(|m| Failure {
                step: Step::Mail,
                reason: FailureReason::InvalidTarget,
                code: None,
                message: m,
            })?),
            None => None,
        };
        let tls_config = match target.security {
            Security::None => None,
            _ => Some(
                target
                    .tls
                    .prepared
                    .clone()
                    .map_or_else(|| tls::client_config(&target.tls), Ok)
                    .and_then(|c| Ok((c, tls::server_name(&target.host, &target.tls)?)))
                    .map_err(|m| Failure {
                        step: Step::Tls,
                        reason: FailureReason::InvalidTarget,
                        code: None,
                        message: m,
                    })?,
            ),
        };

        let addrs = self
            .step(Step::Dns, resolve(&target.host, target.port))
            .await?;
        let tcp = self
            .step(
                Step::Connect,
                connect(&target.host, addrs, &target.destinations, self.deadline),
            )
            .await?;
        let peer = tcp
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], target.port)));
        let client_id = match tcp.local_addr().map(|a| a.ip()) {
            Ok(IpAddr::V4(ip)) => ClientId::Ipv4(ip),
            Ok(IpAddr::V6(ip)) => ClientId::Ipv6(ip),
            Err(_) => ClientId::Domain("localhost".into()),
        };

        let mut stream = Inner::Plain(tcp);
        if target.security == Security::Tls {
            let (config, name) = tls_config.clone().ok_or_else(internal)?;
            stream = self
                .step(Step::Tls, handshake(stream, config, name))
                .await?;
            self.record_tls(&stream);
        }

        let mut buf = Vec::new();
        let greeting = self
            .step(Step::Greeting, async {
                read_reply(&mut stream, &mut buf).await.map_err(|(reason, code, message)| {
                    // What a server that is not SMTP sends is not repeated in status:
                    // a relay must not turn the operator into a banner grabber.
                    if reason == FailureReason::ProtocolError {
                        (
                            reason,
                            code,
                            format!("{peer} did not answer with an SMTP greeting: it does not speak SMTP on this port (check the host, port and tls.mode)"),
                        )
                    } else {
                        (reason, code, message)
                    }
                })
            })
            .await?;
        if greeting.code != 220 {
            // Only the code: the text of something that is not a willing SMTP server
            // (an HTTP server, a database, a refusing relay) stays out of status.
            return Err(Failure {
                step: Step::Greeting,
                reason: FailureReason::GreetingRejected,
                code: Some(greeting.code),
                message: format!(
                    "{peer} answered with reply code {} instead of the SMTP greeting 220: it refused the session or is not an SMTP server",
                    greeting.code
                ),
            });
        }
        self.outcome.server.banner = Some(greeting.text());

        if target.security == Security::StartTls {
            let ehlo = self
                .step(
                    Step::Ehlo,
                    command(&mut stream, &mut buf, &format!("EHLO {client_id}")),
                )
                .await?;
            self.expect(Step::Ehlo, &ehlo, 250, FailureReason::EhloRejected)?;
            self.record_ehlo(&ehlo.lines);
            if !ehlo.lines.iter().skip(1).any(|l| {
                l.get(4..)
                    .is_some_and(|k| k.trim().eq_ignore_ascii_case("STARTTLS"))
            }) {
                return Err(Failure {
                    step: Step::StartTls,
                    reason: FailureReason::StartTlsNotOffered,
                    code: None,
                    message: format!(
                        "server did not offer STARTTLS (it offered: {}); tls.mode StartTls never falls back to plain text",
                        list_or_nothing(&self.outcome.server.extensions)
                    ),
                });
            }
            let reply = self
                .step(Step::StartTls, command(&mut stream, &mut buf, "STARTTLS"))
                .await?;
            self.expect(Step::StartTls, &reply, 220, FailureReason::StartTlsRejected)?;
            // Anything the server sent after its 220 was sent in clear text before the
            // handshake: never let it reach the secure session (STARTTLS injection).
            buf.clear();
            let (config, name) = tls_config.clone().ok_or_else(internal)?;
            stream = self
                .step(Step::Tls, handshake(stream, config, name))
                .await?;
            self.record_tls(&stream);
        }

        // Hand the stream to lettre: it reads the (replayed) greeting and sends EHLO.
        let tap = Arc::new(Mutex::new(Vec::new()));
        let mut prefix = greeting.raw;
        prefix.extend_from_slice(&buf);
        let io = Replay {
            prefix,
            pos: 0,
            inner: stream,
            tap: Arc::clone(&tap),
            peer,
        };
        let mut conn = self
            .step(Step::Ehlo, async {
                AsyncSmtpConnection::connect_with_transport(Box::new(io), &client_id)
                    .await
                    .map_err(|e| smtp_error(e, FailureReason::EhloRejected))
            })
            .await?;
        let ehlo_raw = std::mem::take(&mut *tap.lock().unwrap_or_else(|e| e.into_inner()));
        let ehlo_text = String::from_utf8_lossy(&ehlo_raw);
        let lines: Vec<String> = ehlo_text.lines().map(str::to_string).collect();
        self.record_ehlo(&lines);

        if let Some(creds) = &target.credentials {
            let mechanism = match creds.mechanism {
                AuthMechanism::Plain => Mechanism::Plain,
                AuthMechanism::Login => Mechanism::Login,
            };
            let wanted = match creds.mechanism {
                AuthMechanism::Plain => "PLAIN",
                AuthMechanism::Login => "LOGIN",
            };
            let offered = &self.outcome.server.auth_mechanisms;
            if !offered.iter().any(|m| m.eq_ignore_ascii_case(wanted)) {
                let message = if offered.is_empty() {
                    match target.security {
                        Security::None => "server offered no AUTH mechanism on this plain-text connection (most servers only offer AUTH after TLS: use tls.mode StartTls or Tls)".to_string(),
                        _ => "server offered no AUTH mechanism".to_string(),
                    }
                } else {
                    format!(
                        "server offers AUTH {}, but spec.auth.mechanism is {wanted}",
                        offered.join(" ")
                    )
                };
                self.abort(&mut conn).await;
                return Err(Failure {
                    step: Step::Auth,
                    reason: FailureReason::AuthMechanismUnsupported,
                    code: None,
                    message,
                });
            }
            let lettre_creds =
                LettreCredentials::new(creds.username.clone(), creds.password.expose().to_string());
            let auth = self
                .step(Step::Auth, async {
                    conn.auth(&[mechanism], &lettre_creds)
                        .await
                        .map_err(|e| smtp_error(e, FailureReason::AuthRejected))
                })
                .await;
            if let Err(f) = auth {
                self.abort(&mut conn).await;
                return Err(f);
            }
        }

        if let Some((message_id, sender, recipient, bytes)) = message {
            let result = self.send(&mut conn, &sender, &recipient, &bytes).await;
            if let Err(f) = result {
                self.abort(&mut conn).await;
                return Err(f);
            }
            self.outcome.message_id = Some(message_id);
        }

        // A relay that accepted everything but fails QUIT still works: record, don't fail.
        let _ = self
            .step(Step::Quit, async {
                conn.quit()
                    .await
                    .map(|_| ())
                    .map_err(|e| smtp_error(e, FailureReason::ProtocolError))
            })
            .await;
        Ok(())
    }

    async fn send(
        &mut self,
        conn: &mut AsyncSmtpConnection,
        sender: &str,
        recipient: &str,
        bytes: &[u8],
    ) -> Result<(), Failure> {
        let invalid = |what: &str, value: &str| Failure {
            step: Step::Mail,
            reason: FailureReason::InvalidTarget,
            code: None,
            message: format!("invalid {what} address {value:?}"),
        };
        let from = sender.parse().map_err(|_| invalid("sender", sender))?;
        let to = recipient
            .parse()
            .map_err(|_| invalid("recipient", recipient))?;
        self.step(Step::Mail, async {
            conn.command(Mail::new(Some(from), vec![]))
                .await
                .map_err(|e| smtp_error(e, FailureReason::SenderRejected))
        })
        .await?;
        self.step(Step::Rcpt, async {
            conn.command(Rcpt::new(to, vec![]))
                .await
                .map_err(|e| smtp_error(e, FailureReason::RecipientRejected))
        })
        .await?;
        self.step(Step::Data, async {
            conn.command(Data)
                .await
                .map_err(|e| smtp_error(e, FailureReason::MessageRejected))?;
            conn.message(bytes)
                .await
                .map_err(|e| smtp_error(e, FailureReason::MessageRejected))
        })
        .await?;
        Ok(())
    }

    /// Say goodbye after a failure, but never wait longer than the session may: lettre's
    /// abort sends QUIT and waits for the reply without a deadline of its own.
    async fn abort(&self, conn: &mut AsyncSmtpConnection) {
        let limit = self.deadline.min(Instant::now() + ABORT_GRACE);
        let _ = tokio::time::timeout_at(limit, conn.abort()).await;
    }

    fn expect(
        &self,
        step: Step,
        reply: &Reply,
        code: u16,
        reason: FailureReason,
    ) -> Result<(), Failure> {
        if reply.code == code {
            return Ok(());
        }
        Err(Failure {
            step,
            reason,
            code: Some(reply.code),
            message: format!("server replied {} {}", reply.code, reply.text()),
        })
    }

    fn record_tls(&mut self, stream: &Inner) {
        if let Inner::Tls(tls) = stream {
            let (_, conn) = tls.get_ref();
            let facts = &mut self.outcome.server;
            facts.tls_version = conn.protocol_version().map(tls::version_name);
            facts.certificate_not_after = conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| der::not_after(leaf.as_ref()));
            facts.certificate_unverified = self.target.tls.insecure_skip_verify;
        }
    }

    /// Keep the EHLO keywords (first line is the greeting name) and AUTH mechanisms.
    fn record_ehlo(&mut self, lines: &[String]) {
        let facts: &mut ServerFacts = &mut self.outcome.server;
        facts.extensions = lines
            .iter()
            .skip(1)
            .filter_map(|l| l.get(4..))
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .take(MAX_EXTENSIONS)
            .collect();
        facts.auth_mechanisms = facts
            .extensions
            .iter()
            .find_map(|e| {
                let upper = e.to_ascii_uppercase();
                upper
                    .strip_prefix("AUTH ")
                    .or_else(|| upper.strip_prefix("AUTH="))
                    .map(|m| m.split_whitespace().map(str::to_string).collect())
            })
            .unwrap_or_default();
    }
}

fn internal() -> Failure {
    Failure {
        step: Step::Tls,
        reason: FailureReason::ProtocolError,
        code: None,
        message: "internal error: TLS configuration missing".into(),
    }
}

fn list_or_nothing(items: &[String]) -> String {
    if items.is_empty() {
        "no extensions".into()
    } else {
        items.join(", ")
    }
}

pub(crate) fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Map a lettre error: negative replies become `rejected` with the code and text.
fn smtp_error(e: lettre::transport::smtp::Error, rejected: FailureReason) -> StepError {
    use std::error::Error as _;
    let detail = e.source().map(|s| s.to_string()).unwrap_or_default();
    if let Some(code) = e.status() {
        let code_num = code.to_string().parse::<u16>().ok();
        return (
            rejected,
            code_num,
            format!("server replied {code} {}", detail.trim()),
        );
    }
    if e.is_timeout() {
        return (FailureReason::Timeout, None, format!("timed out: {e}"));
    }
    if detail.contains("incomplete response") || e.is_transport_shutdown() {
        return (
            FailureReason::ConnectionLost,
            None,
            "the server closed the connection".into(),
        );
    }
    if e.is_client() && detail.contains("authentication mechanism") {
        return (FailureReason::AuthMechanismUnsupported, None, detail);
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return (
                FailureReason::ConnectionLost,
                None,
                format!("connection lost: {io}"),
            );
        }
        source = s.source();
    }
    (FailureReason::ProtocolError, None, e.to_string())
}

async fn resolve(host: &str, port: u16) -> StepResult<Vec<SocketAddr>> {
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
async fn connect(
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

async fn handshake(
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
struct Reply {
    code: u16,
    lines: Vec<String>,
    raw: Vec<u8>,
}

impl Reply {
    /// The reply text without codes, lines joined by a space.
    fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| l.get(4..).unwrap_or("").trim())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Parse one complete reply from the front of `buf`: (reply, bytes used), or None
/// when more input is needed.
fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
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

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

async fn read_reply(stream: &mut Inner, buf: &mut Vec<u8>) -> StepResult<Reply> {
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

async fn command(stream: &mut Inner, buf: &mut Vec<u8>, line: &str) -> StepResult<Reply> {
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
enum Inner {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Inner {
    fn tcp(&self) -> &TcpStream {
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
fn quick_ack(tcp: &TcpStream) {
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
struct Replay {
    prefix: Vec<u8>,
    pos: usize,
    inner: Inner,
    tap: Arc<Mutex<Vec<u8>>>,
    peer: SocketAddr,
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

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_secs(30)), "30s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1500ms");
    }
}
