//! Messages that go to the same server with the same account share sessions
//! ([`session_key`]): connect, TLS and AUTH once, then one transaction per message.
//!
//! Per key, one queue of messages and up to the host's session cap of workers (a
//! connection pool). A message joins its key's queue and wakes an idle worker; with
//! more messages waiting than idle workers and the cap not reached, a new worker
//! starts. A worker takes a bulk slot on the host (after verifications), opens a
//! session and sends queued messages one transaction each, answering each sender as
//! soon as its transaction ends; it ends the session after `per_session` messages,
//! as soon as a verification queues for the host (a relay's readiness goes before
//! mail: the message it was about to send goes first in its next session), or once
//! the queue has stayed empty for [`LINGER`]; then it takes a bulk slot again. A
//! refused transaction fails only its own message; a session that breaks fails the
//! message it was sending, and the queue is served by a new session; a session that
//! cannot open fails the messages waiting for it (the next ones try again).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};

use super::{
    Failure, FailureReason, HostLimiter, HostPermit, Outcome, Outgoing, Step, Target, Transactions,
    verify,
};

/// How long an open session waits for the next message before it says QUIT.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// The sessions of every key. Cheap to clone; clones share the queues.
#[derive(Clone, Debug)]
pub struct SharedSessions(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    per_session: usize,
    linger: std::time::Duration,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    sessions: AtomicU64,
}

/// One key's queue and workers.
#[derive(Debug, Default)]
struct Pool {
    state: Mutex<PoolState>,
    arrived: Notify,
}

#[derive(Debug, Default)]
struct PoolState {
    jobs: VecDeque<Job>,
    /// Workers alive (waiting for a slot, in a session, or lingering).
    workers: usize,
    /// Workers lingering for the next message.
    idle: usize,
}

#[derive(Debug)]
struct Job {
    target: Target,
    message: Outgoing,
    reply: oneshot::Sender<Outcome>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SharedSessions {
    /// At most `per_session` messages in one session (at least 1).
    pub fn new(per_session: usize) -> Self {
        Self::with_linger(per_session, LINGER)
    }

    /// [`SharedSessions::new`], a session waiting `linger` for the next message.
    pub fn with_linger(per_session: usize, linger: std::time::Duration) -> Self {
        SharedSessions(Arc::new(Inner {
            linger,
            per_session: per_session.max(1),
            pools: Mutex::new(HashMap::new()),
            sessions: AtomicU64::new(0),
        }))
    }

    /// Sessions opened so far.
    pub fn sessions(&self) -> u64 {
        self.0.sessions.load(Ordering::Relaxed)
    }

    /// Send `target.message` through a session shared with the other messages sent
    /// under the same `key`. Targets under one key should describe the same session
    /// ([`session_key`]); one that does not gets a session of its own.
    pub async fn send(&self, key: &str, mut target: Target, limiter: &Arc<HostLimiter>) -> Outcome {
        let Some(message) = target.message.take() else {
            return verify(&target).await;
        };
        let (reply, answer) = oneshot::channel();
        let host = target.host.clone();
        let job = Job {
            target,
            message,
            reply,
        };
        let start_worker = {
            let mut pools = lock(&self.0.pools);
            let pool = Arc::clone(pools.entry(key.to_string()).or_default());
            let mut state = lock(&pool.state);
            state.jobs.push_back(job);
            let more = state.workers < limiter.per_host() && state.jobs.len() > state.idle;
            if more {
                state.workers += 1;
            }
            drop(state);
            pool.arrived.notify_one();
            more.then_some(pool)
        };
        if let Some(pool) = start_worker {
            let worker = Worker {
                inner: Arc::clone(&self.0),
                key: key.to_string(),
                pool,
            };
            tokio::spawn(worker.run(Arc::clone(limiter), host));
        }
        answer.await.unwrap_or_else(|_| Outcome {
            failure: Some(Failure {
                step: Step::Connect,
                reason: FailureReason::ConnectionLost,
                code: None,
                message: "the shared session was abandoned (the operator is stopping)".into(),
            }),
            ..Default::default()
        })
    }
}

/// One session slot's worth of work for a key.
struct Worker {
    inner: Arc<Inner>,
    key: String,
    pool: Arc<Pool>,
}

impl Worker {
    async fn run(self, limiter: Arc<HostLimiter>, host: String) {
        loop {
            let permit = limiter.acquire_bulk(&host).await;
            let Some(first) = self.next().await else {
                return;
            };
            if !self.session(first, &permit).await {
                return;
            }
            // Between sessions, verifications waiting for the host go first.
            drop(permit);
        }
    }

    /// The next queued message, waiting up to the linger ([`LINGER`]) for one; None when none
    /// came: this worker is then gone (and the pool too, if it was the last).
    async fn next(&self) -> Option<Job> {
        let mut waited = false;
        loop {
            let arrived = self.pool.arrived.notified();
            tokio::pin!(arrived);
            {
                let mut state = lock(&self.pool.state);
                if let Some(job) = state.jobs.pop_front() {
                    return Some(job);
                }
                if waited {
                    state.workers -= 1;
                    let last = state.workers == 0;
                    drop(state);
                    if last {
                        self.forget_pool();
                    }
                    return None;
                }
                state.idle += 1;
            }
            waited = tokio::time::timeout(self.inner.linger, arrived.as_mut())
                .await
                .is_err();
            lock(&self.pool.state).idle -= 1;
        }
    }

    /// Drop the key's pool once it has no worker and no message (under the map's
    /// lock, so a sender either finds it alive or makes a new one).
    fn forget_pool(&self) {
        let mut pools = lock(&self.inner.pools);
        let idle = {
            let state = lock(&self.pool.state);
            state.workers == 0 && state.jobs.is_empty()
        };
        if idle
            && pools
                .get(&self.key)
                .is_some_and(|p| Arc::ptr_eq(p, &self.pool))
        {
            pools.remove(&self.key);
        }
    }

    /// One session, starting with `first`: until `per_session` messages, the session
    /// breaks, or the queue stays empty. False when this worker is gone (nothing came
    /// for [`LINGER`]).
    async fn session(&self, first: Job, permit: &HostPermit) -> bool {
        let target = first.target.clone();
        self.inner.sessions.fetch_add(1, Ordering::Relaxed);
        let mut tx = match Transactions::open(&target).await {
            Ok(tx) => tx,
            Err(outcome) => {
                // Those waiting for this same session would fail alike.
                let _ = first.reply.send(outcome.clone());
                let same: VecDeque<Job> = {
                    let mut state = lock(&self.pool.state);
                    let (same, other) = std::mem::take(&mut state.jobs)
                        .into_iter()
                        .partition(|j| same_session(&target, &j.target));
                    state.jobs = other;
                    same
                };
                for job in same {
                    let _ = job.reply.send(outcome.clone());
                }
                return true;
            }
        };
        let mut job = first;
        let mut sent = 0;
        let alive = loop {
            if same_session(&target, &job.target) {
                let outcome = tx.send(&job.message).await;
                let _ = job.reply.send(outcome);
                sent += 1;
            } else {
                // Rare (a key collision): a session of its own.
                let mut alone = job.target;
                alone.message = Some(job.message);
                self.inner.sessions.fetch_add(1, Ordering::Relaxed);
                let _ = job.reply.send(verify(&alone).await);
            }
            if tx.is_lost() || sent >= self.inner.per_session {
                break true;
            }
            match self.next().await {
                Some(next) if permit.verification_waiting() => {
                    // A relay's verification waits for this host: hand the slot
                    // back; the message goes first in the next session.
                    lock(&self.pool.state).jobs.push_front(next);
                    break true;
                }
                Some(next) => job = next,
                None => break false,
            }
        };
        tx.close().await;
        alive
    }
}

/// The key under which messages share sessions: everything that makes a session
/// (server, port, TLS, account, limits), the password and CA bundle hashed. Mails for
/// different relay objects that reach the same server with the same account are the
/// same session on the wire; [`same_session`] still compares the fields themselves.
pub fn session_key(t: &Target) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (t.security as u8).hash(&mut h);
    t.tls.server_name.hash(&mut h);
    t.tls.ca_bundle_pem.hash(&mut h);
    t.tls.insecure_skip_verify.hash(&mut h);
    t.timeout.hash(&mut h);
    if let Some(c) = &t.credentials {
        (c.mechanism as u8).hash(&mut h);
        c.username.hash(&mut h);
        c.password.expose().hash(&mut h);
    }
    format!(
        "{}:{}#{:016x}",
        t.host.to_ascii_lowercase(),
        t.port,
        h.finish()
    )
}

/// Would these two targets open the same session (everything but the message)?
fn same_session(a: &Target, b: &Target) -> bool {
    let creds = |t: &Target| {
        t.credentials
            .as_ref()
            .map(|c| (c.mechanism, c.username.clone(), c.password.clone()))
    };
    a.host == b.host
        && a.port == b.port
        && a.security == b.security
        && a.timeout == b.timeout
        && a.tls.server_name == b.tls.server_name
        && a.tls.ca_bundle_pem == b.tls.ca_bundle_pem
        && a.tls.insecure_skip_verify == b.tls.insecure_skip_verify
        && creds(a) == creds(b)
        && a.destinations.policy == b.destinations.policy
        && a.destinations.scope == b.destinations.scope
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::{AuthMechanism, Credentials, Password, Security, TlsSettings};

    fn target(password: &str) -> Target {
        Target {
            host: "Relay.Example.test".into(),
            port: 587,
            security: Security::StartTls,
            tls: TlsSettings::default(),
            credentials: Some(Credentials {
                mechanism: AuthMechanism::Plain,
                username: "app".into(),
                password: Password::new(password),
            }),
            message: None,
            timeout: std::time::Duration::from_secs(20),
            destinations: crate::smtp::Destinations::new(
                Default::default(),
                crate::smtp::Scope::Namespaced,
            ),
        }
    }

    #[test]
    fn one_key_per_server_and_account_and_never_the_password() {
        let a = session_key(&target("s3cret-one"));
        assert_eq!(a, session_key(&target("s3cret-one")));
        assert!(a.starts_with("relay.example.test:587#"), "{a}");
        assert!(!a.contains("s3cret"));
        assert_ne!(a, session_key(&target("s3cret-two")));
        let mut other_port = target("s3cret-one");
        other_port.port = 465;
        assert_ne!(a, session_key(&other_port));
        let mut other_ca = target("s3cret-one");
        other_ca.tls.ca_bundle_pem = Some(b"pem".to_vec());
        assert_ne!(a, session_key(&other_ca));
        assert!(same_session(&target("x"), &target("x")));
        assert!(!same_session(&target("x"), &target("y")));
    }
}
