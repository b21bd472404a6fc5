//! Several messages through one session: connect, TLS, EHLO and AUTH once, then one
//! MAIL/RCPT/DATA transaction per message ([`Transactions`]).

use lettre::transport::smtp::client::AsyncSmtpConnection;
use tokio::time::Instant;

use super::session::{Session, finish, prepare};
use super::{Failure, Outcome, Outgoing, Target};

/// An open session (connect, TLS, EHLO and AUTH done) that sends one MAIL/RCPT/DATA
/// transaction per message, each with the target's whole timeout.
pub struct Transactions<'a> {
    session: Session<'a>,
    conn: AsyncSmtpConnection,
    /// The session's own steps, part of every message's outcome.
    opened: Outcome,
    start: Instant,
    /// Why the session cannot go on (a lost connection, a timeout).
    lost: Option<Failure>,
}

impl<'a> Transactions<'a> {
    /// Connect, TLS, EHLO and AUTH. On failure, the outcome every message of this
    /// session gets (none was offered to the server).
    pub async fn open(target: &'a Target) -> Result<Self, Outcome> {
        let start = Instant::now();
        let mut session = Session {
            target,
            deadline: start + target.timeout,
            outcome: Outcome::default(),
        };
        match session.open().await {
            Ok(conn) => Ok(Transactions {
                opened: session.outcome.clone(),
                session,
                conn,
                start,
                lost: None,
            }),
            Err(f) => {
                let outcome = Outcome {
                    failure: Some(f),
                    ..session.outcome
                };
                Err(finish(outcome, target, start))
            }
        }
    }

    /// Can the session take another message?
    pub fn is_lost(&self) -> bool {
        self.lost.is_some()
    }

    /// One transaction, its outcome with the session's own steps. A negative reply
    /// fails only this message (RSET, the session goes on); anything else ends the
    /// session ([`Transactions::is_lost`]), and a message sent after that fails
    /// without being offered to the server.
    pub async fn send(&mut self, message: &Outgoing) -> Outcome {
        let target = self.session.target;
        let (message_id, sender, recipient, bytes) = match prepare(message) {
            Ok(p) => p,
            Err(invalid) => {
                return finish(
                    Outcome {
                        failure: Some(invalid),
                        ..Outcome::default()
                    },
                    target,
                    self.start,
                );
            }
        };
        if let Some(f) = &self.lost {
            let untried = Failure {
                message: format!("the session ended before this message: {}", f.message),
                ..f.clone()
            };
            return finish(
                Outcome {
                    failure: Some(untried),
                    ..self.opened.clone()
                },
                target,
                self.start,
            );
        }
        let session = &mut self.session;
        session.outcome = self.opened.clone();
        session.deadline = Instant::now() + target.timeout;
        match session
            .send(&mut self.conn, &sender, &recipient, &bytes)
            .await
        {
            Ok(()) => session.outcome.message_id = Some(message_id),
            Err(f) => {
                // A negative reply ends only this transaction; anything else (a lost
                // connection, a timeout) ends the session.
                let refused = f.code.is_some_and(|c| (400..600).contains(&c) && c != 421);
                if !(refused && session.reset(&mut self.conn).await) {
                    self.lost = Some(f.clone());
                }
                session.outcome.failure = Some(f);
            }
        }
        finish(session.outcome.clone(), target, self.start)
    }

    /// QUIT, or after a failure close without waiting long.
    pub async fn close(mut self) {
        self.session.outcome = Outcome::default();
        if self.lost.is_some() {
            self.session.abort(&mut self.conn).await;
        } else {
            self.session.quit(&mut self.conn).await;
        }
    }
}
