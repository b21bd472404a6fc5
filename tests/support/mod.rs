//! Shared test support: the Postfix harness, the Maildir it delivers into, and a
//! scripted SMTP server for faults a real MTA cannot produce on demand.
#![allow(dead_code)]

pub mod cluster;
pub mod dns;
pub mod dovecot;
pub mod examples;
pub mod fake_api;
pub mod fault;
pub mod fixtures;
pub mod gitops;
pub mod hosts;
pub mod mock;
pub mod schema_cases;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The running Postfix harness (see tests/harness/README.md).
pub struct Harness {
    pub plain_port: u16,
    pub submission_port: u16,
    pub smtps_port: u16,
    pub dir: PathBuf,
}

pub const USER: &str = "relay-user";
pub const PASSWORD: &str = "Correct-Horse-42";
pub const ROTATED_USER: &str = "rotated-user";
pub const ROTATED_PASSWORD: &str = "Rotated-Pass-7";

/// Start the harness once per process (the script itself is idempotent and locked).
pub fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = std::env::var("HARNESS_DIR").unwrap_or_else(|_| "/tmp/smtp-relay-harness".into());
        let base: u16 = std::env::var("HARNESS_BASE_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(25250);
        start_harness(Path::new(&dir), base)
    })
}

/// Start (or find running) the harness instance in `dir` on ports `base`..`base + 2`.
pub fn start_harness(dir: &Path, base: u16) -> Harness {
    let port = base.to_string();
    start_script(
        "postfix.sh",
        &postfix_env(dir, &port),
        "the Postfix harness did not start (needs root and Debian's postfix, sasl2-bin, libsasl2-modules; see .ci/run)",
    );
    Harness {
        plain_port: base,
        submission_port: base + 1,
        smtps_port: base + 2,
        dir: dir.to_path_buf(),
    }
}

fn postfix_env<'a>(dir: &'a Path, port: &'a str) -> [(&'static str, &'a OsStr); 2] {
    [
        ("HARNESS_DIR", dir.as_os_str()),
        ("HARNESS_BASE_PORT", OsStr::new(port)),
    ]
}

/// Run `tests/harness/{script} {command}` with `env` added to this process's.
fn harness_script(script: &str, command: &str, env: &[(&str, &OsStr)]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new("bash")
        .arg(root.join("tests/harness").join(script))
        .arg(command)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run tests/harness/{script}: {e}"))
}

/// Run `tests/harness/{script} start`; when it fails, panic with `failed` and the
/// script's output.
pub fn start_script(script: &str, env: &[(&str, &OsStr)], failed: &str) {
    let out = harness_script(script, "start", env);
    assert!(
        out.status.success(),
        "{failed}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Harness {
    /// Stop this instance and delete its directory and lock file (for a private
    /// instance only; a directory without the script's marker is never deleted).
    pub fn stop_and_remove(&self) {
        let port = self.plain_port.to_string();
        let _ = harness_script("postfix.sh", "stop", &postfix_env(&self.dir, &port));
        if !self.dir.join(".smtp-relay-harness").is_file() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let mut lock = self.dir.clone().into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("tls/ca.crt")).expect("harness CA")
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.join("mail/maildir")
    }

    /// Wait for the delivered message carrying `needle` (e.g. its Message-ID).
    pub fn wait_for_message(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            for sub in ["new", "cur"] {
                if let Ok(entries) = std::fs::read_dir(self.maildir().join(sub)) {
                    for e in entries.flatten() {
                        if let Ok(text) = std::fs::read_to_string(e.path())
                            && text.contains(needle)
                        {
                            return text;
                        }
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no message containing {needle:?} arrived in {}",
                self.maildir().display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A loopback port that refuses connections for as long as this value lives: the
/// port is bound (so nobody else gets it) but not listening.
pub struct ClosedPort {
    pub port: u16,
    _socket: socket2::Socket,
}

pub fn closed_port() -> ClosedPort {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .expect("port");
    ClosedPort {
        port,
        _socket: socket,
    }
}

/// The destination policy of every test: the defaults, plus loopback, where the
/// harness and the scripted servers listen (the defaults refuse it for SmtpRelays).
pub fn loopback_allowed() -> std::sync::Arc<smtp_relay_operator::smtp::DestinationPolicy> {
    std::sync::Arc::new(
        smtp_relay_operator::smtp::DestinationPolicy::allowing(&["127.0.0.0/8", "::1"])
            .expect("loopback CIDRs"),
    )
}

/// Destinations for a session a test builds itself: a SmtpRelay's, loopback allowed.
pub fn loopback_destinations() -> smtp_relay_operator::smtp::Destinations {
    smtp_relay_operator::smtp::Destinations::new(
        loopback_allowed(),
        smtp_relay_operator::smtp::Scope::Namespaced,
    )
}

/// A controller context over `client` (usually the fake API server or a tower-test mock).
pub fn context(
    client: kube::Client,
    relays: kube::runtime::reflector::Store<smtp_relay_operator::api::SmtpRelay>,
    confirmation: Option<smtp_relay_operator::controller::ConfirmContext>,
) -> std::sync::Arc<smtp_relay_operator::controller::Context> {
    use smtp_relay_operator::controller::{Context, Settings};
    std::sync::Arc::new(Context {
        client: client.clone(),
        limiter: std::sync::Arc::new(smtp_relay_operator::smtp::HostLimiter::new(2)),
        settings: Settings {
            operator_namespace: "smtp-relay-system".into(),
            sessions_per_host: 2,
            concurrency: 4,
            destinations: loopback_allowed(),
            // As the operator does: from its one key Secret.
            input_key: confirmation
                .as_ref()
                .map(|c| smtp_relay_operator::relay::InputKey::from_confirm_key(&c.key)),
            deliverability: None,
        },
        reporter: kube::runtime::events::Reporter {
            controller: "smtp-relay-operator".into(),
            instance: None,
        },
        cluster_relays:
            kube::runtime::reflector::store::<smtp_relay_operator::api::ClusterSmtpRelay>().0,
        relays,
        metrics: std::sync::Arc::new(smtp_relay_operator::metrics::Metrics::new()),
        confirmation,
        sends: Default::default(),
        own_writes: Default::default(),
        mailer: smtp_relay_operator::smtp::SharedSessions::new(
            smtp_relay_operator::controller::MAILS_PER_SESSION,
        ),
        mail_inputs: Default::default(),
    })
}

/// Every log line of this test process at TRACE level, for tests that prove secrets
/// never reach the logs. Installed once as the global subscriber (scoped subscribers
/// miss events when other tests run in parallel threads); tests look for their own
/// unique names in it.
pub fn logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: OnceLock<std::sync::Arc<std::sync::Mutex<Vec<u8>>>> = OnceLock::new();
    std::sync::Arc::clone(LOGS.get_or_init(|| {
        #[derive(Clone)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = Buf(std::sync::Arc::clone(&buf));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        buf
    }))
}

/// The captured logs as text.
pub fn logs_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}
