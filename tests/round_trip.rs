//! The round-trip probe against real servers: the relay is the Postfix harness, the
//! mailbox is Dovecot (tests/harness/dovecot.sh) reading the Maildir Postfix delivers
//! into, over IMAP and POP3, with and without TLS. Only loopback is targeted.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use smtp_relay_operator::api::{ConditionStatus, SmtpRelaySpec, SmtpRelayStatus};
use smtp_relay_operator::mailbox::Token;
use smtp_relay_operator::relay::{self, Fetched, RelayRef, Source, SourceError, types};
use smtp_relay_operator::smtp::{DestinationPolicy, HostLimiter};
use support::dovecot::{JUNK_RECIPIENT, MAILBOX_PASSWORD, MAILBOX_USER, dovecot};
use support::harness;

/// Secrets in memory: the mailbox credentials and the harness CA.
struct Secrets(BTreeMap<String, Fetched>);

impl Source for Secrets {
    async fn secret(&self, _ns: &str, name: &str) -> Result<Option<Fetched>, SourceError> {
        Ok(self.0.get(name).cloned())
    }
    async fn config_map(&self, _ns: &str, _name: &str) -> Result<Option<Fetched>, SourceError> {
        Ok(None)
    }
}

fn secrets(password: &str) -> Secrets {
    let labelled = BTreeMap::from([(relay::CREDENTIALS_LABEL.to_string(), "true".to_string())]);
    Secrets(BTreeMap::from([
        (
            "mailbox".to_string(),
            Fetched {
                data: BTreeMap::from([
                    ("username".to_string(), MAILBOX_USER.as_bytes().to_vec()),
                    ("password".to_string(), password.as_bytes().to_vec()),
                ]),
                version: "1".into(),
                labels: labelled,
            },
        ),
        (
            "harness-ca".to_string(),
            Fetched {
                data: BTreeMap::from([("ca.crt".to_string(), harness().ca_pem())]),
                version: "1".into(),
                labels: BTreeMap::new(),
            },
        ),
    ]))
}

/// A relay on the harness's plain port sending its test message to `recipient`,
/// followed to the mailbox described by `round_trip`.
fn spec(recipient: &str, round_trip: Value) -> SmtpRelaySpec {
    serde_json::from_value(json!({
        "host": "127.0.0.1",
        "port": harness().plain_port,
        "tls": {"mode": "None"},
        "defaultSender": {"address": "round-trip@example.test"},
        "verification": {"recipient": recipient, "timeout": "10s", "roundTrip": round_trip},
    }))
    .expect("relay spec")
}

fn imap(mode: &str, port: u16) -> Value {
    json!({
        "protocol": "Imap", "host": "127.0.0.1", "port": port,
        "tls": {"mode": mode, "caBundleRef": {"kind": "Secret", "name": "harness-ca"}},
        "credentialsSecretRef": {"name": "mailbox"},
        "timeout": "20s",
    })
}

fn pop3(mode: &str, port: u16) -> Value {
    let mut v = imap(mode, port);
    v["protocol"] = json!("Pop3");
    v
}

async fn evaluate_with(
    name: &str,
    spec: &SmtpRelaySpec,
    source: &Secrets,
    policy: Arc<DestinationPolicy>,
) -> SmtpRelayStatus {
    let relay_ref = RelayRef {
        kind: "SmtpRelay",
        namespace: Some("round-trip"),
        name,
        generation: Some(1),
        spec,
        status: None,
        default_namespace: "smtp-relay-system",
        destinations: &policy,
        blocklists: None,
    };
    relay::evaluate(&relay_ref, source, &HostLimiter::new(4), true)
        .await
        .status
        .expect("a verification ran")
}

async fn evaluate(name: &str, spec: &SmtpRelaySpec, source: &Secrets) -> SmtpRelayStatus {
    evaluate_with(name, spec, source, support::loopback_allowed()).await
}

fn condition(status: &SmtpRelayStatus, t: &str) -> (ConditionStatus, String, String) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} in {status:#?}"));
    (c.status, c.reason.clone(), c.message.clone())
}

/// Files anywhere in the Maildir (every folder) that contain `needle`.
fn files_with(needle: &str) -> usize {
    fn walk(dir: &Path, needle: &str) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, needle)
                } else {
                    std::fs::read_to_string(&p).is_ok_and(|t| t.contains(needle)) as usize
                }
            })
            .sum()
    }
    walk(&harness().maildir(), needle)
}

/// Delivered True in INBOX with its latency, Ready untouched, the message deleted.
fn assert_delivered_and_deleted(status: &SmtpRelayStatus, folder: &str, reason: &str) {
    let (ready, ..) = condition(status, types::READY);
    assert_eq!(ready, ConditionStatus::True, "{status:#?}");
    let (delivered, why, message) = condition(status, types::DELIVERED);
    assert_eq!(why, reason, "{message}");
    let expected = if reason == "Delivered" {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    assert_eq!(delivered, expected, "{message}");
    let last = status.last_verification.as_ref().expect("lastVerification");
    let delivery = last.delivery.as_ref().expect("delivery");
    assert_eq!(delivery.folder.as_deref(), Some(folder));
    assert!(
        delivery
            .latency_ms
            .is_some_and(|ms| (0..20_000).contains(&ms)),
        "{delivery:?}"
    );
    let id = last.message_id.as_deref().expect("message id");
    assert_eq!(files_with(id), 0, "the probe message {id} was not deleted");
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types[types.len() - 2..], [types::DELIVERED, types::READY]);
}

#[tokio::test]
async fn imap_starttls_finds_the_message_in_the_inbox_and_deletes_it() {
    let d = dovecot();
    let s = spec("inbox-rt@example.test", imap("StartTls", d.imap_port));
    let status = evaluate("imap-inbox", &s, &secrets(MAILBOX_PASSWORD)).await;
    assert_delivered_and_deleted(&status, "INBOX", "Delivered");
    let text = serde_json::to_string(&status).expect("json");
    assert!(!text.contains(MAILBOX_PASSWORD), "{text}");
}

#[tokio::test]
async fn imaps_reports_mail_filed_as_junk() {
    let d = dovecot();
    let s = spec(JUNK_RECIPIENT, imap("Tls", d.imaps_port));
    let status = evaluate("imap-junk", &s, &secrets(MAILBOX_PASSWORD)).await;
    assert_delivered_and_deleted(&status, "Junk", "DeliveredToJunk");
}

#[tokio::test]
async fn pop3_with_stls_and_pop3s_find_and_delete_the_message() {
    let d = dovecot();
    for (name, round_trip) in [
        ("pop3-stls", pop3("StartTls", d.pop3_port)),
        ("pop3s", pop3("Tls", d.pop3s_port)),
    ] {
        let s = spec(&format!("{name}@example.test"), round_trip);
        let status = evaluate(name, &s, &secrets(MAILBOX_PASSWORD)).await;
        assert_delivered_and_deleted(&status, "INBOX", "Delivered");
    }
}

/// The message never reaches a searched folder (filed as junk, only INBOX searched),
/// while INBOX holds a probe message of the same relay with an older token: the old
/// one is not taken for the new one (NotDelivered), the timeout is kept within 10%,
/// and the stale message is deleted.
#[tokio::test]
async fn never_delivered_times_out_on_time_and_older_tokens_are_ignored() {
    let d = dovecot();
    let name = "never-delivered";
    let old = Token::new(&format!("SmtpRelay round-trip/{name}"));
    let mut smtp =
        std::net::TcpStream::connect(("127.0.0.1", harness().plain_port)).expect("harness");
    send_raw(
        &mut smtp,
        &format!(
            "Subject: old probe\r\nMessage-ID: <{}@example.test>\r\nX-Smtp-Relay-Probe: {}\r\n\r\nold\r\n",
            old.value, old.value
        ),
    );
    harness().wait_for_message(&old.value);
    let mut round_trip = imap("StartTls", d.imap_port);
    round_trip["folders"] = json!(["INBOX"]);
    round_trip["timeout"] = json!("5s");
    let s = spec(JUNK_RECIPIENT, round_trip);
    let t0 = Instant::now();
    let status = evaluate(name, &s, &secrets(MAILBOX_PASSWORD)).await;
    let took = t0.elapsed();
    let (delivered, reason, message) = condition(&status, types::DELIVERED);
    assert_eq!(
        (delivered, reason.as_str()),
        (ConditionStatus::False, "NotDelivered"),
        "{message}"
    );
    assert!(
        // The 5 s start once Postfix accepted the probe; its SMTP session comes before.
        took >= Duration::from_secs(5) && took <= Duration::from_secs(7),
        "a 5s round trip took {took:?}"
    );
    assert_eq!(condition(&status, types::READY).0, ConditionStatus::True);
    assert_eq!(
        files_with(&old.value),
        0,
        "the stale probe message is deleted"
    );
}

/// Send one message over plain SMTP to inbox@example.test (the harness's plain port).
fn send_raw(stream: &mut std::net::TcpStream, message: &str) {
    use std::io::{BufRead, BufReader, Write};
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    let mut expect = |reader: &mut BufReader<std::net::TcpStream>, code: &str| loop {
        line.clear();
        reader.read_line(&mut line).expect("reply");
        assert!(line.starts_with(code), "{line}");
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    };
    expect(&mut reader, "220");
    for (cmd, code) in [
        ("EHLO test", "250"),
        ("MAIL FROM:<old@example.test>", "250"),
        ("RCPT TO:<inbox-old@example.test>", "250"),
        ("DATA", "354"),
    ] {
        write!(stream, "{cmd}\r\n").expect("write");
        expect(&mut reader, code);
    }
    write!(stream, "{message}\r\n.\r\nQUIT\r\n").expect("write");
    expect(&mut reader, "250");
}

#[tokio::test]
async fn a_wrong_mailbox_password_is_auth_rejected_and_never_shown() {
    let d = dovecot();
    let logs = support::logs();
    let wrong = "Wrong-Mailbox-Secret-77";
    for (name, round_trip) in [
        ("wrong-imap", imap("StartTls", d.imap_port)),
        ("wrong-pop3", pop3("StartTls", d.pop3_port)),
    ] {
        let s = spec(&format!("{name}@example.test"), round_trip);
        let status = evaluate(name, &s, &secrets(wrong)).await;
        let (delivered, reason, message) = condition(&status, types::DELIVERED);
        assert_eq!(
            (delivered, reason.as_str()),
            (ConditionStatus::Unknown, "MailboxAuthRejected"),
            "{message}"
        );
        assert_eq!(condition(&status, types::READY).0, ConditionStatus::True);
        let text = serde_json::to_string(&status).expect("json");
        assert!(!text.contains(wrong), "{text}");
    }
    let logged =
        String::from_utf8_lossy(&logs.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    assert!(logged.contains("round-trip probe"), "the probe logs");
    assert!(!logged.contains(wrong), "the password reached the logs");
}

#[tokio::test]
async fn mailbox_tls_refused_and_destinations_refused_are_unreachable() {
    let d = dovecot();
    // The harness CA is not trusted (no caBundleRef): the certificate is refused.
    let mut untrusted = imap("Tls", d.imaps_port);
    untrusted["tls"] = json!({"mode": "Tls"});
    // Implicit TLS against the plain port: no TLS handshake.
    let not_tls = imap("Tls", d.imap_port);
    for (name, round_trip, words) in [
        ("tls-untrusted", untrusted, "certificate"),
        ("tls-not-spoken", not_tls, "TLS"),
    ] {
        let s = spec(&format!("{name}@example.test"), round_trip);
        let status = evaluate(name, &s, &secrets(MAILBOX_PASSWORD)).await;
        let (delivered, reason, message) = condition(&status, types::DELIVERED);
        assert_eq!(
            (delivered, reason.as_str()),
            (ConditionStatus::Unknown, "MailboxUnreachable"),
            "{message}"
        );
        assert!(message.contains(words), "{name}: {message}");
    }
    // The mailbox host is held to the destination policy like the relay.
    let mut elsewhere = imap("StartTls", d.imap_port);
    elsewhere["host"] = json!("127.0.0.2");
    let s = spec("policy@example.test", elsewhere);
    let policy = Arc::new(DestinationPolicy::allowing(&["127.0.0.1/32"]).expect("cidr"));
    let status = evaluate_with("policy", &s, &secrets(MAILBOX_PASSWORD), policy).await;
    let (_, reason, message) = condition(&status, types::DELIVERED);
    assert_eq!(reason, "MailboxUnreachable", "{message}");
    assert!(message.contains("not an allowed destination"), "{message}");
}

/// A scripted mailbox server on loopback: sends `script` after reading each line,
/// in order (the first entry is the greeting).
async fn scripted(script: Vec<Vec<u8>>) -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        for (i, reply) in script.into_iter().enumerate() {
            if i > 0 && !matches!(lines.next_line().await, Ok(Some(_))) {
                return;
            }
            if write.write_all(&reply).await.is_err() {
                return;
            }
        }
        let _ = lines.next_line().await;
    });
    port
}

fn plain_target(
    protocol: smtp_relay_operator::mailbox::Protocol,
    port: u16,
    password: &str,
) -> smtp_relay_operator::mailbox::Target {
    smtp_relay_operator::mailbox::Target {
        protocol,
        host: "127.0.0.1".into(),
        port,
        security: smtp_relay_operator::smtp::Security::None,
        tls: Default::default(),
        username: "probe".into(),
        password: smtp_relay_operator::smtp::Password::new(password),
        folders: vec!["INBOX".into()],
        destinations: support::loopback_destinations(),
    }
}

/// POP3 mailboxes are shared: a message another client expunged after STAT is
/// refused by TOP ("-ERR Message 1 expunged", as Dovecot says), and the look goes on
/// to the next message instead of failing.
#[tokio::test]
async fn pop3_skips_a_message_another_client_expunged() {
    use smtp_relay_operator::mailbox::{self, PROBE_HEADER, Protocol};
    let token = Token::new("SmtpRelay shared/x");
    let port = scripted(vec![
        b"+OK ready\r\n".to_vec(),
        b"+OK\r\n".to_vec(),
        b"+OK\r\n".to_vec(),
        b"+OK 2 200\r\n".to_vec(),
        b"-ERR Message 1 expunged.\r\n".to_vec(),
        format!(
            "+OK\r\n{PROBE_HEADER}: {}\r\nSubject: probe\r\n\r\n.\r\n",
            token.value
        )
        .into_bytes(),
        b"+OK deleted\r\n".to_vec(),
        b"+OK bye\r\n".to_vec(),
    ])
    .await;
    let look = mailbox::look(
        &plain_target(Protocol::Pop3, port, "pw"),
        &token,
        tokio::time::Instant::now() + Duration::from_secs(5),
    )
    .await
    .expect("an expunged message is skipped");
    assert_eq!(look.found.map(|f| f.folder).as_deref(), Some("INBOX"));
}

/// What a hostile or broken server sends never panics the client, never makes it
/// read without bound, and a password echoed back never reaches the error.
#[tokio::test]
async fn hostile_mailbox_servers_get_errors_not_panics_and_never_the_password() {
    use smtp_relay_operator::mailbox::{self, MailboxError, Protocol};
    let secret = "Echoed-Secret-31";
    let token = Token::new("SmtpRelay hostile/x");
    let deadline = || tokio::time::Instant::now() + Duration::from_secs(5);
    let endless_line = vec![b'*'; 200_000];
    type Case = (
        &'static str,
        Protocol,
        Vec<Vec<u8>>,
        fn(&MailboxError) -> bool,
    );
    let cases: Vec<Case> = vec![
        (
            "a line without end",
            Protocol::Imap,
            vec![endless_line.clone()],
            |e| matches!(e, MailboxError::Protocol(_)),
        ),
        (
            "a huge literal",
            Protocol::Imap,
            vec![
                b"* OK ready\r\n".to_vec(),
                b"* CAPABILITY {999999999}\r\n".to_vec(),
            ],
            |e| matches!(e, MailboxError::Protocol(_)),
        ),
        (
            "not IMAP",
            Protocol::Imap,
            vec![b"220 smtp ESMTP\r\n".to_vec()],
            |e| matches!(e, MailboxError::Protocol(_)),
        ),
        (
            "the password echoed in a refusal",
            Protocol::Imap,
            vec![
                b"* OK ready\r\n".to_vec(),
                format!("p1 NO you said \"{secret}\" and RWNob2VkLVNlY3JldC0zMQ==\r\n")
                    .into_bytes(),
            ],
            |e| matches!(e, MailboxError::AuthRejected(_)),
        ),
        (
            "POP3 echoing the password",
            Protocol::Pop3,
            vec![
                b"+OK ready\r\n".to_vec(),
                b"+OK\r\n".to_vec(),
                format!("-ERR bad password {secret}\r\n").into_bytes(),
            ],
            |e| matches!(e, MailboxError::AuthRejected(_)),
        ),
        (
            "POP3 endless header block",
            Protocol::Pop3,
            vec![
                b"+OK ready\r\n".to_vec(),
                b"+OK\r\n".to_vec(),
                b"+OK\r\n".to_vec(),
                b"+OK 1 100\r\n".to_vec(),
                [b"+OK\r\n".to_vec(), b"X-Filler: x\r\n".repeat(60_000)].concat(),
            ],
            |e| matches!(e, MailboxError::Protocol(m) if m.contains("larger than")),
        ),
        (
            "POP3 without TOP",
            Protocol::Pop3,
            vec![
                b"+OK ready\r\n".to_vec(),
                b"+OK\r\n".to_vec(),
                b"+OK\r\n".to_vec(),
                b"+OK 2 200\r\n".to_vec(),
                b"-ERR unknown command\r\n".to_vec(),
                b"-ERR unknown command\r\n".to_vec(),
            ],
            |e| matches!(e, MailboxError::Protocol(m) if m.contains("TOP refused")),
        ),
        (
            "POP3 STAT without a count",
            Protocol::Pop3,
            vec![
                b"+OK ready\r\n".to_vec(),
                b"+OK\r\n".to_vec(),
                b"+OK\r\n".to_vec(),
                b"+OK many\r\n".to_vec(),
            ],
            |e| matches!(e, MailboxError::Protocol(m) if m.contains("not a message count")),
        ),
    ];
    for (what, protocol, script, expected) in cases {
        let port = scripted(script).await;
        let result = mailbox::look(&plain_target(protocol, port, secret), &token, deadline()).await;
        let e = result.expect_err(what);
        assert!(expected(&e), "{what}: {e:?}");
        let text = format!("{e} {e:?}");
        assert!(!text.contains(secret), "{what}: {text}");
        assert!(!text.contains("RWNob2VkLVNlY3JldC0zMQ"), "{what}: {text}");
    }
}
