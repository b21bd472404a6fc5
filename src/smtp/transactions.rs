//! Several messages through one session: connect, TLS, EHLO and AUTH once, then one
//! MAIL/RCPT/DATA transaction per message ([`send_each`]).

use lettre::transport::smtp::client::AsyncSmtpConnection;
use tokio::time::Instant;

use super::session::{Session, finish, internal, prepare};
use super::{Failure, Outcome, Outgoing, Target};

/// One message's result in a shared session.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub outcome: Outcome,
    /// False when the session ended (or never opened) before this message's turn: it
    /// was not offered to the server, and may be sent in another session.
    pub attempted: bool,
}

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

    /// One transaction. A negative reply fails only this message (RSET, the session
    /// goes on); anything else ends the session, and the messages after it get
    /// `attempted: false`.
    pub async fn send(&mut self, message: &Outgoing) -> Delivery {
        let target = self.session.target;
        let (message_id, sender, recipient, bytes) = match prepare(message) {
            Ok(p) => p,
            Err(invalid) => {
                return Delivery {
                    outcome: finish(
                        Outcome {
                            failure: Some(invalid),
                            ..Outcome::default()
                        },
                        target,
                        self.start,
                    ),
                    attempted: true,
                };
            }
        };
        if let Some(f) = &self.lost {
            let untried = Failure {
                message: format!("the session ended before this message: {}", f.message),
                ..f.clone()
            };
            return Delivery {
                outcome: finish(
                    Outcome {
                        failure: Some(untried),
                        ..self.opened.clone()
                    },
                    target,
                    self.start,
                ),
                attempted: false,
            };
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
        Delivery {
            outcome: finish(session.outcome.clone(), target, self.start),
            attempted: true,
        }
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

/// Send several messages through one session (the target's own message is not
/// sent): [`Transactions`] over a list. Every message gets its own outcome: the
/// session's steps, then its transaction's. When the session fails to open or ends
/// early, the messages it did not reach carry that failure with `attempted: false`.
/// Invalid messages fail without a session.
pub async fn send_each(target: &Target, messages: &[Outgoing]) -> Vec<Delivery> {
    let invalid: Vec<Option<Failure>> = messages.iter().map(|m| prepare(m).err()).collect();
    if invalid.iter().all(Option::is_some) {
        let start = Instant::now();
        return invalid
            .into_iter()
            .map(|f| Delivery {
                outcome: finish(
                    Outcome {
                        failure: Some(f.unwrap_or_else(internal)),
                        ..Outcome::default()
                    },
                    target,
                    start,
                ),
                attempted: true,
            })
            .collect();
    }
    let mut tx = match Transactions::open(target).await {
        Ok(tx) => tx,
        Err(outcome) => {
            return invalid
                .into_iter()
                .map(|f| match f {
                    Some(f) => Delivery {
                        outcome: finish(
                            Outcome {
                                failure: Some(f),
                                ..Outcome::default()
                            },
                            target,
                            Instant::now(),
                        ),
                        attempted: true,
                    },
                    None => Delivery {
                        outcome: outcome.clone(),
                        attempted: false,
                    },
                })
                .collect();
        }
    };
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        out.push(tx.send(m).await);
    }
    tx.close().await;
    out
}
