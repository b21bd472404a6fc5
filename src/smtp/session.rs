//! One verification session: DNS → TCP → (TLS) → greeting → (EHLO → STARTTLS → TLS)
//! → EHLO → AUTH → (MAIL/RCPT/DATA) → QUIT.
//!
//! The part before the secure channel is ours, so every reply code and TLS detail is
//! observed precisely and a STARTTLS downgrade is impossible. From the post-TLS EHLO on,
//! the session is driven by lettre's `AsyncSmtpConnection` over the stream we opened
//! (Nagle disabled, which matters: small writes + delayed ACKs cost ~40 ms per step).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials as LettreCredentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::ClientId;
use tokio::time::Instant;

use super::message::{Outgoing, build_message};
use super::wire::*;
use super::{
    AuthMechanism, Failure, FailureReason, Outcome, Security, ServerFacts, Step, Target, der, tls,
};

/// Failure without its step (the step wrapper adds it).
pub(super) type StepError = (FailureReason, Option<u16>, String);
pub(super) type StepResult<T> = Result<T, StepError>;

/// Largest reply we accept before calling it a protocol error.
pub(super) const MAX_REPLY: usize = 64 * 1024;
/// How much of the post-TLS EHLO exchange we keep for status.
pub(super) const MAX_TAP: usize = 8 * 1024;
pub(super) const MAX_EXTENSIONS: usize = 32;
/// Longest wait for a server to acknowledge QUIT after a failure.
pub(super) const ABORT_GRACE: Duration = Duration::from_secs(2);

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
    finish(session.outcome, target, start)
}

/// A message built and ready: (Message-ID, sender, recipient, bytes).
pub(super) type Prepared = (String, String, String, Vec<u8>);

/// Build a message before touching the network.
pub(super) fn prepare(message: &Outgoing) -> Result<Prepared, Failure> {
    build_message(message).map_err(|m| Failure {
        step: Step::Mail,
        reason: FailureReason::InvalidTarget,
        code: None,
        message: m,
    })
}

/// Total time and the password scrubbed from every text.
pub(super) fn finish(mut outcome: Outcome, target: &Target, start: Instant) -> Outcome {
    outcome.total = start.elapsed();
    if let Some(c) = &target.credentials {
        outcome.redact(c.password.expose());
    }
    outcome
}

pub(super) struct Session<'a> {
    pub(super) target: &'a Target,
    pub(super) deadline: Instant,
    pub(super) outcome: Outcome,
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
        // Validate what we can before touching the network.
        let message = match &self.target.message {
            Some(t) => Some(prepare(t)?),
            None => None,
        };
        let mut conn = self.open().await?;
        if let Some((message_id, sender, recipient, bytes)) = message {
            let result = self.send(&mut conn, &sender, &recipient, &bytes).await;
            if let Err(f) = result {
                self.abort(&mut conn).await;
                return Err(f);
            }
            self.outcome.message_id = Some(message_id);
        }
        self.quit(&mut conn).await;
        Ok(())
    }

    /// A relay that accepted everything but fails QUIT still works: record, don't fail.
    pub(super) async fn quit(&mut self, conn: &mut AsyncSmtpConnection) {
        let _ = self
            .step(Step::Quit, async {
                conn.quit()
                    .await
                    .map(|_| ())
                    .map_err(|e| smtp_error(e, FailureReason::ProtocolError))
            })
            .await;
    }

    /// RSET after a refused transaction; false when the session cannot go on.
    pub(super) async fn reset(&mut self, conn: &mut AsyncSmtpConnection) -> bool {
        matches!(
            tokio::time::timeout_at(self.grace(), conn.command(Rset)).await,
            Ok(Ok(_))
        )
    }

    /// Everything up to a session ready for MAIL: DNS, TCP, TLS, greeting, EHLO,
    /// STARTTLS, AUTH.
    pub(super) async fn open(&mut self) -> Result<AsyncSmtpConnection, Failure> {
        let target = self.target;
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

        Ok(conn)
    }

    pub(super) async fn send(
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
    pub(super) async fn abort(&self, conn: &mut AsyncSmtpConnection) {
        let _ = tokio::time::timeout_at(self.grace(), conn.abort()).await;
    }

    /// How long a closing exchange (RSET, QUIT after a failure) may take: at most
    /// [`ABORT_GRACE`], never past the session's deadline.
    fn grace(&self) -> Instant {
        self.deadline.min(Instant::now() + ABORT_GRACE)
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

pub(super) fn list_or_nothing(items: &[String]) -> String {
    if items.is_empty() {
        "no extensions".into()
    } else {
        items.join(", ")
    }
}

pub(crate) fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Map a lettre error: negative replies become `rejected` with the code and text.
pub(super) fn smtp_error(e: lettre::transport::smtp::Error, rejected: FailureReason) -> StepError {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_secs(30)), "30s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1500ms");
    }
}
