//! Messages that go to the same server with the same account at about the same time
//! share one session ([`session_key`]): connect, TLS and AUTH once, then one
//! transaction per message ([`send_each`]).
//!
//! The first sender for a key opens a queue and leads it: it waits for a session slot
//! on the host (bulk work, after verifications), and while it waits, others with the
//! same key join its queue, up to [`SharedSessions::new`]'s `per_session` messages
//! (a full queue makes the next sender open another, with its own leader and slot).
//! With the slot (and [`GATHER`] for senders right behind, unless the queue is full),
//! the leader closes its queue and sends it in one session. A refused
//! transaction fails only its own message; messages a broken session did not reach
//! are tried again in a new session, as long as each session gets somewhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{Delivery, Failure, FailureReason, HostLimiter, Outcome, Outgoing, Step, Target};
use super::{send_each, verify};

/// How long a leader holding a session slot waits for others to join its queue.
pub const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// The open queue of messages per key ([`session_key`]).
#[derive(Debug)]
pub struct SharedSessions {
    per_session: usize,
    open: Mutex<HashMap<String, Arc<Mutex<Queue>>>>,
    sessions: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    /// The leader took the jobs: nobody joins any more.
    closed: bool,
    jobs: Vec<Job>,
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
        SharedSessions {
            per_session: per_session.max(1),
            open: Mutex::new(HashMap::new()),
            sessions: AtomicU64::new(0),
        }
    }

    /// Sessions opened so far.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Send `target.message` through a session shared with the other messages sent
    /// under the same `key` meanwhile. Targets under one key should describe the
    /// same session ([`session_key`]); one that does not gets a session of its own.
    pub async fn send(&self, key: &str, mut target: Target, limiter: &HostLimiter) -> Outcome {
        let Some(message) = target.message.take() else {
            return verify(&target).await;
        };
        let (reply, answer) = oneshot::channel();
        let host = target.host.clone();
        let mut job = Some(Job {
            target,
            message,
            reply,
        });
        let led = {
            let mut open = lock(&self.open);
            if let Some(queue) = open.get(key) {
                let mut q = lock(queue);
                if !q.closed && q.jobs.len() < self.per_session {
                    q.jobs.extend(job.take());
                }
            }
            job.map(|job| {
                let queue = Arc::new(Mutex::new(Queue {
                    closed: false,
                    jobs: vec![job],
                }));
                open.insert(key.to_string(), Arc::clone(&queue));
                queue
            })
        };
        if let Some(queue) = led {
            // Dropped early (shutdown) or by a panic, the leader closes its queue:
            // the messages in it hear that they were not sent.
            let guard = Close {
                shared: self,
                key,
                queue,
            };
            let _permit = limiter.acquire_bulk(&host).await;
            // A slot that was free at once gathered nobody yet: give the senders
            // right behind a moment to join, unless the queue is already full.
            if !guard.full(self.per_session) {
                tokio::time::sleep(GATHER).await;
            }
            let mut batch = guard.close();
            while !batch.is_empty() {
                batch = self.session(batch).await;
            }
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

    /// One session for a batch; returns the messages to send again (not reached by
    /// a session that sent at least one).
    async fn session(&self, batch: Vec<Job>) -> Vec<Job> {
        let Some(first) = batch.first().map(|j| j.target.clone()) else {
            return Vec::new();
        };
        let (same, alone): (Vec<Job>, Vec<Job>) = batch
            .into_iter()
            .partition(|j| same_session(&first, &j.target));
        for job in alone {
            let mut target = job.target;
            target.message = Some(job.message);
            self.sessions.fetch_add(1, Ordering::Relaxed);
            let _ = job.reply.send(verify(&target).await);
        }
        let messages: Vec<Outgoing> = same.iter().map(|j| j.message.clone()).collect();
        self.sessions.fetch_add(1, Ordering::Relaxed);
        let deliveries = send_each(&first, &messages).await;
        let progress = deliveries.iter().any(|d| d.attempted);
        let mut again = Vec::new();
        for (job, Delivery { outcome, attempted }) in same.into_iter().zip(deliveries) {
            if !attempted && progress {
                again.push(job);
            } else {
                let _ = job.reply.send(outcome);
            }
        }
        again
    }
}

/// A leader's hold on its queue: closing takes the messages and lets the next
/// sender open a new queue; dropped unclosed, it closes and drops them.
struct Close<'a> {
    shared: &'a SharedSessions,
    key: &'a str,
    queue: Arc<Mutex<Queue>>,
}

impl Close<'_> {
    fn full(&self, per_session: usize) -> bool {
        lock(&self.queue).jobs.len() >= per_session
    }

    fn close(&self) -> Vec<Job> {
        let mut open = lock(&self.shared.open);
        if open
            .get(self.key)
            .is_some_and(|q| Arc::ptr_eq(q, &self.queue))
        {
            open.remove(self.key);
        }
        let mut q = lock(&self.queue);
        q.closed = true;
        std::mem::take(&mut q.jobs)
    }
}

impl Drop for Close<'_> {
    fn drop(&mut self) {
        drop(self.close());
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
