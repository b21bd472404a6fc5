//! Several messages through one session: connect, TLS, EHLO and AUTH once, then one
//! MAIL/RCPT/DATA transaction per message ([`send_each`]).

use tokio::time::Instant;

use super::session::{Prepared, Session, finish, internal, prepare};
use super::{Failure, Outcome, Outgoing, Target};

/// One message's result in a shared session.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub outcome: Outcome,
    /// False when the session ended (or never opened) before this message's turn: it
    /// was not offered to the server, and may be sent in another session.
    pub attempted: bool,
}

/// Send several messages through one session (the target's own message is not
/// sent): connect, TLS, EHLO and AUTH once, then one MAIL/RCPT/DATA transaction per
/// message, each with the target's whole timeout. Every message gets its own outcome:
/// the session's steps, then its transaction's. A transaction the server refuses
/// fails only its own message (RSET, then the next); when the session itself fails,
/// the messages it did not reach carry that failure with `attempted: false`.
pub async fn send_each(target: &Target, messages: &[Outgoing]) -> Vec<Delivery> {
    let start = Instant::now();
    let mut session = Session {
        target,
        deadline: start + target.timeout,
        outcome: Outcome::default(),
    };
    let prepared: Vec<Result<Prepared, Failure>> = messages.iter().map(prepare).collect();
    let failed = |outcome: &Outcome, failure: Failure, attempted: bool| Delivery {
        outcome: finish(
            Outcome {
                failure: Some(failure),
                ..outcome.clone()
            },
            target,
            start,
        ),
        attempted,
    };
    if prepared.iter().all(Result::is_err) {
        return prepared
            .into_iter()
            .map(|p| failed(&Outcome::default(), p.err().unwrap_or_else(internal), true))
            .collect();
    }
    let mut conn = match session.open().await {
        Ok(conn) => conn,
        Err(f) => {
            return prepared
                .into_iter()
                .map(|p| match p {
                    Err(invalid) => failed(&Outcome::default(), invalid, true),
                    Ok(_) => failed(&session.outcome, f.clone(), false),
                })
                .collect();
        }
    };
    let opened = session.outcome.clone();
    let mut lost: Option<Failure> = None;
    let mut out = Vec::with_capacity(prepared.len());
    for p in prepared {
        let (message_id, sender, recipient, bytes) = match p {
            Err(invalid) => {
                out.push(failed(&Outcome::default(), invalid, true));
                continue;
            }
            Ok(p) => p,
        };
        if let Some(f) = &lost {
            let untried = Failure {
                message: format!("the session ended before this message: {}", f.message),
                ..f.clone()
            };
            out.push(failed(&opened, untried, false));
            continue;
        }
        session.outcome = opened.clone();
        session.deadline = Instant::now() + target.timeout;
        match session.send(&mut conn, &sender, &recipient, &bytes).await {
            Ok(()) => session.outcome.message_id = Some(message_id),
            Err(f) => {
                // A negative reply ends only this transaction; anything else (a lost
                // connection, a timeout) ends the session.
                let refused = f.code.is_some_and(|c| (400..600).contains(&c) && c != 421);
                if !(refused && session.reset(&mut conn).await) {
                    lost = Some(f.clone());
                }
                session.outcome.failure = Some(f);
            }
        }
        out.push(Delivery {
            outcome: finish(session.outcome.clone(), target, start),
            attempted: true,
        });
    }
    session.outcome = Outcome::default();
    if lost.is_some() {
        session.abort(&mut conn).await;
    } else {
        session.quit(&mut conn).await;
    }
    out
}
