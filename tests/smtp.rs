//! SMTP verification against real servers: the Postfix harness on loopback for
//! what a real MTA does, a scripted server for faults it cannot produce on demand.

mod support;

use std::time::{Duration, Instant};

use smtp_relay_operator::smtp::{
    self, AuthMechanism, Credentials, FailureReason, Mailbox, Password, Security, Step, Target,
    TestMessage, TlsSettings,
};
use support::fault::{self, Fault};
use support::{PASSWORD, USER, harness};

fn target(port: u16, security: Security) -> Target {
    Target {
        host: "localhost".into(),
        port,
        security,
        tls: TlsSettings::default(),
        credentials: None,
        message: None,
        timeout: Duration::from_secs(10),
        destinations: support::loopback_destinations(),
    }
}

/// A target on one of our scripted servers (they listen on 127.0.0.1, no TLS).
fn scripted(port: u16) -> Target {
    Target {
        host: "127.0.0.1".into(),
        ..target(port, Security::None)
    }
}

fn with_ca(mut t: Target) -> Target {
    t.tls.ca_bundle_pem = Some(harness().ca_pem());
    t
}

fn with_auth(mut t: Target, mechanism: AuthMechanism, password: &str) -> Target {
    t.credentials = Some(Credentials {
        mechanism,
        username: USER.into(),
        password: Password::new(password),
    });
    t
}

fn test_message(to: &str, tag: &str) -> TestMessage {
    TestMessage {
        from: Mailbox {
            name: Some("ACME Purchasing".into()),
            address: "purchasing@example.test".into(),
        },
        no_reply: Some(Mailbox {
            name: None,
            address: "no-reply@example.test".into(),
        }),
        to: to.into(),
        custom_headers: vec![
            ("X-Campaign".into(), tag.into()),
            ("X-Department".into(), "purchasing".into()),
        ],
        relay_label: format!("SmtpRelay tests/{tag}"),
    }
}

fn reason(o: &smtp::Outcome) -> Option<FailureReason> {
    o.failure.as_ref().map(|f| f.reason)
}

#[tokio::test]
async fn plain_port_without_tls_delivers_a_test_message() {
    let h = harness();
    let mut t = target(h.plain_port, Security::None);
    t.message = Some(test_message("plain@example.test", "plain-delivery").outgoing());
    let o = smtp::verify(&t).await;
    assert!(o.succeeded(), "{o:?}");
    assert_eq!(o.server.tls_version, None);
    assert!(o.server.banner.as_deref().unwrap_or("").contains("ESMTP"));
    let id = o.message_id.clone().expect("message id");
    let mail = h.wait_for_message(&id);
    assert!(mail.contains("X-Campaign: plain-delivery"), "{mail}");
}

#[tokio::test]
async fn starttls_with_auth_plain_delivers_with_from_name_reply_to_fallback_and_headers() {
    let h = harness();
    let mut t = with_auth(
        with_ca(target(h.submission_port, Security::StartTls)),
        AuthMechanism::Plain,
        PASSWORD,
    );
    t.message = Some(test_message("starttls@example.test", "starttls-delivery").outgoing());
    let o = smtp::verify(&t).await;
    assert!(o.succeeded(), "{o:?}");
    assert_eq!(o.server.tls_version.as_deref(), Some("TLSv1.3"));
    assert!(o.server.certificate_not_after.is_some());
    assert!(o.server.auth_mechanisms.iter().any(|m| m == "PLAIN"));
    for step in Step::ALL {
        assert!(o.passed(step), "step {step} missing: {:?}", o.steps);
    }
    let id = o.message_id.clone().expect("message id");
    let mail = h.wait_for_message(&id);
    assert!(
        mail.contains("From: \"ACME Purchasing\" <purchasing@example.test>"),
        "{mail}"
    );
    assert!(mail.contains("Reply-To: no-reply@example.test"), "{mail}");
    assert!(mail.contains("X-Campaign: starttls-delivery"), "{mail}");
    assert!(mail.contains("X-Department: purchasing"), "{mail}");
    assert!(
        mail.contains("X-SmtpRelay-Verification: SmtpRelay tests/starttls-delivery"),
        "{mail}"
    );
    assert!(mail.contains("starttls@example.test"), "{mail}");
}

#[tokio::test]
async fn reply_to_falls_back_to_the_sender_without_no_reply() {
    let h = harness();
    let mut t = with_auth(
        with_ca(target(h.smtps_port, Security::Tls)),
        AuthMechanism::Login,
        PASSWORD,
    );
    let mut m = test_message("fallback@example.test", "reply-to-sender");
    m.no_reply = None;
    t.message = Some(m.outgoing());
    let o = smtp::verify(&t).await;
    assert!(o.succeeded(), "{o:?}");
    let mail = h.wait_for_message(&o.message_id.clone().expect("id"));
    assert!(
        mail.contains("Reply-To: \"ACME Purchasing\" <purchasing@example.test>"),
        "{mail}"
    );
}

#[tokio::test]
async fn implicit_tls_with_auth_login() {
    let h = harness();
    let t = with_auth(
        with_ca(target(h.smtps_port, Security::Tls)),
        AuthMechanism::Login,
        PASSWORD,
    );
    let o = smtp::verify(&t).await;
    assert!(o.succeeded(), "{o:?}");
    assert!(o.passed(Step::Tls) && o.passed(Step::Auth));
    assert!(!o.passed(Step::StartTls));
}

#[tokio::test]
async fn wrong_password_is_auth_rejected_with_the_reply_and_no_password() {
    let h = harness();
    let wrong = "Wrong-Battery-Staple-9";
    let t = with_auth(
        with_ca(target(h.submission_port, Security::StartTls)),
        AuthMechanism::Plain,
        wrong,
    );
    let o = smtp::verify(&t).await;
    assert_eq!(reason(&o), Some(FailureReason::AuthRejected), "{o:?}");
    let f = o.failure.as_ref().expect("failure");
    assert_eq!(f.step, Step::Auth);
    assert_eq!(f.code, Some(535));
    assert!(f.message.contains("535"), "{}", f.message);
    assert!(!format!("{o:?}").contains(wrong));
}

#[tokio::test]
async fn starttls_required_but_not_offered() {
    let h = harness();
    let t = with_auth(
        target(h.plain_port, Security::StartTls),
        AuthMechanism::Plain,
        PASSWORD,
    );
    let o = smtp::verify(&t).await;
    assert_eq!(reason(&o), Some(FailureReason::StartTlsNotOffered), "{o:?}");
    assert!(
        !o.passed(Step::Auth),
        "credentials must never be sent in clear text"
    );
}

#[tokio::test]
async fn private_ca_is_certificate_invalid_until_the_bundle_is_given() {
    let h = harness();
    for (port, sec) in [
        (h.smtps_port, Security::Tls),
        (h.submission_port, Security::StartTls),
    ] {
        let o = smtp::verify(&target(port, sec)).await;
        assert_eq!(reason(&o), Some(FailureReason::CertificateInvalid), "{o:?}");
        let f = o.failure.as_ref().expect("failure");
        assert_eq!(f.step, Step::Tls);
        assert!(
            f.message
                .contains("authority this relay's trust store does not know"),
            "{}",
            f.message
        );
        let o = smtp::verify(&with_ca(target(port, sec))).await;
        assert!(o.succeeded(), "{o:?}");
    }
}

#[tokio::test]
async fn wrong_server_name_is_certificate_invalid_and_insecure_skip_verify_says_so() {
    let h = harness();
    let mut t = with_ca(target(h.smtps_port, Security::Tls));
    t.tls.server_name = Some("relay.example.test".into());
    let o = smtp::verify(&t).await;
    assert_eq!(reason(&o), Some(FailureReason::CertificateInvalid), "{o:?}");
    // In words, with the names the certificate does carry.
    let message = &o.failure.as_ref().expect("f").message;
    assert!(
        message.contains("it is not valid for \"relay.example.test\"; it names")
            && message.contains("localhost"),
        "{message}"
    );

    let mut t = target(h.smtps_port, Security::Tls);
    t.tls.insecure_skip_verify = true;
    let o = smtp::verify(&t).await;
    assert!(o.succeeded(), "{o:?}");
    assert!(o.server.certificate_unverified);
}

#[tokio::test]
async fn tls_to_a_plain_port_is_a_handshake_failure() {
    let h = harness();
    let o = smtp::verify(&target(h.plain_port, Security::Tls)).await;
    assert_eq!(reason(&o), Some(FailureReason::TlsHandshakeFailed), "{o:?}");
}

#[tokio::test]
async fn closed_port_is_connection_refused() {
    let closed = support::closed_port();
    let t = scripted(closed.port);
    let o = smtp::verify(&t).await;
    assert_eq!(reason(&o), Some(FailureReason::ConnectionRefused), "{o:?}");
    assert_eq!(o.failure.as_ref().expect("f").step, Step::Connect);
}

#[tokio::test]
async fn unresolvable_host_is_dns_failure() {
    let mut t = target(25, Security::None);
    t.host = "no-such-host.invalid".into();
    let o = smtp::verify(&t).await;
    assert_eq!(reason(&o), Some(FailureReason::DnsFailure), "{o:?}");
}

#[tokio::test]
async fn silent_server_times_out_within_the_configured_timeout() {
    let port = fault::start(Fault::Tarpit);
    let mut t = scripted(port);
    t.timeout = Duration::from_millis(700);
    let start = Instant::now();
    let o = smtp::verify(&t).await;
    let took = start.elapsed();
    assert_eq!(reason(&o), Some(FailureReason::Timeout), "{o:?}");
    assert_eq!(o.failure.as_ref().expect("f").step, Step::Greeting);
    // Functional bound (not a performance target): it gave up at the timeout, not later.
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn busy_greeting_is_greeting_rejected_with_code() {
    let port = fault::start(Fault::Busy421);
    let t = scripted(port);
    let o = smtp::verify(&t).await;
    assert_eq!(reason(&o), Some(FailureReason::GreetingRejected), "{o:?}");
    let f = o.failure.as_ref().expect("f");
    assert_eq!(f.code, Some(421));
    // Issue #15: only the code of a greeting that is not 220, never its text (what
    // answers might not be an SMTP server at all).
    assert!(f.message.contains("reply code 421"), "{}", f.message);
    assert!(!f.message.contains("too busy"), "{}", f.message);
    assert_eq!(o.server.banner, None);
}

#[tokio::test]
async fn reset_in_the_middle_of_data_is_connection_lost() {
    let port = fault::start(Fault::ResetMidData);
    let mut t = scripted(port);
    t.message = Some(test_message("x@example.test", "reset").outgoing());
    let o = smtp::verify(&t).await;
    assert_eq!(reason(&o), Some(FailureReason::ConnectionLost), "{o:?}");
    assert_eq!(o.failure.as_ref().expect("f").step, Step::Data);
}

#[tokio::test]
async fn a_server_echoing_auth_data_never_leaks_the_password() {
    let port = fault::start(Fault::EchoAuth);
    for mech in [AuthMechanism::Plain, AuthMechanism::Login] {
        let t = with_auth(scripted(port), mech, "S3cret-Echo-Pass");
        let o = smtp::verify(&t).await;
        assert_eq!(reason(&o), Some(FailureReason::AuthRejected), "{o:?}");
        let text = format!("{o:?} {}", o.failure.as_ref().expect("f").message);
        assert!(!text.contains("S3cret-Echo-Pass"), "{text}");
        assert!(
            text.contains("<redacted>") || mech == AuthMechanism::Login,
            "{text}"
        );
    }
}

#[tokio::test]
async fn rejected_recipient_and_sender() {
    let h = harness();
    let mut t = with_auth(
        with_ca(target(h.submission_port, Security::StartTls)),
        AuthMechanism::Plain,
        PASSWORD,
    );
    t.message = Some(test_message("rejected@example.test", "rcpt").outgoing());
    let o = smtp::verify(&t).await;
    assert_eq!(reason(&o), Some(FailureReason::RecipientRejected), "{o:?}");
    let f = o.failure.as_ref().expect("f");
    assert_eq!((f.step, f.code), (Step::Rcpt, Some(550)));
    assert!(f.message.contains("rejected by harness"), "{}", f.message);

    let mut m = test_message("someone@example.test", "sender");
    m.from.address = "blocked@example.test".into();
    t.message = Some(m.outgoing());
    let o = smtp::verify(&t).await;
    // Postfix delays the sender restriction to RCPT (smtpd_delay_reject=yes).
    assert_eq!(reason(&o), Some(FailureReason::RecipientRejected), "{o:?}");
    assert!(
        o.failure
            .as_ref()
            .expect("f")
            .message
            .contains("sender blocked by harness")
    );
}

#[tokio::test]
async fn auth_on_plain_text_port_is_mechanism_unsupported_with_a_hint() {
    let h = harness();
    let t = with_auth(
        target(h.plain_port, Security::None),
        AuthMechanism::Plain,
        PASSWORD,
    );
    let o = smtp::verify(&t).await;
    assert_eq!(
        reason(&o),
        Some(FailureReason::AuthMechanismUnsupported),
        "{o:?}"
    );
    assert!(o.failure.as_ref().expect("f").message.contains("after TLS"));
}

fn mail_to(to: &str) -> smtp::Outgoing {
    test_message(to, "shared").outgoing()
}

#[tokio::test]
async fn one_session_sends_each_message_and_a_refusal_fails_only_its_own() {
    let (port, seen) = fault::start_counting();
    let t = with_auth(scripted(port), AuthMechanism::Plain, "pw");
    let mails = [
        mail_to("a@example.test"),
        mail_to("refuse@example.test"),
        mail_to("b@example.test"),
    ];
    let mut tx = smtp::Transactions::open(&t).await.expect("open");
    let mut out = Vec::new();
    for m in &mails {
        out.push(tx.send(m).await);
        // A refusal ends only its transaction: the session goes on.
        assert!(!tx.is_lost(), "{out:?}");
    }
    tx.close().await;
    assert_eq!(out.len(), 3);
    assert!(out[0].succeeded() && out[2].succeeded(), "{out:?}");
    let refused = out[1].failure.as_ref().expect("refused");
    assert_eq!(
        (refused.reason, refused.code, refused.step),
        (FailureReason::RecipientRejected, Some(550), Step::Rcpt)
    );
    // The session's own steps are in every outcome, AUTH once on the wire.
    for o in &out {
        assert!(o.passed(Step::Auth), "{o:?}");
    }
    assert_eq!(seen.sessions.load(std::sync::atomic::Ordering::SeqCst), 1);
    let delivered = seen.delivered.lock().expect("lock").clone();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    assert!(delivered[0].contains("a@example.test") && delivered[1].contains("b@example.test"));
}

#[tokio::test]
async fn a_session_lost_mid_data_fails_that_message_and_leaves_the_rest_untried() {
    let (port, seen) = fault::start_counting();
    let t = scripted(port);
    let mails = [
        mail_to("a@example.test"),
        mail_to("reset@example.test"),
        mail_to("b@example.test"),
    ];
    let mut tx = smtp::Transactions::open(&t).await.expect("open");
    let first = tx.send(&mails[0]).await;
    assert!(first.succeeded());
    assert!(!tx.is_lost());
    let lost = tx.send(&mails[1]).await;
    assert_eq!(reason(&lost), Some(FailureReason::ConnectionLost));
    // The session is over: the next message is not offered to the server.
    assert!(tx.is_lost());
    let untried = tx.send(&mails[2]).await;
    assert!(
        untried
            .failure
            .as_ref()
            .is_some_and(|f| f.message.contains("ended before this message")),
        "{untried:?}"
    );
    tx.close().await;
    assert_eq!(seen.delivered.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn mails_through_one_relay_at_once_share_sessions_and_the_lost_ones_go_again() {
    let (port, seen) = fault::start_counting();
    let limiter = std::sync::Arc::new(smtp::HostLimiter::new(1));
    let shared = smtp::SharedSessions::new(2);
    // A verification holds the only slot while six mails arrive: they queue.
    let held = limiter.acquire("127.0.0.1").await;
    let to = [
        "a@example.test",
        "refuse@example.test",
        "reset@example.test",
        "b@example.test",
        "c@example.test",
        "d@example.test",
    ];
    let sends = to.iter().map(|to| {
        let mut t = scripted(port);
        t.message = Some(mail_to(to));
        let (shared, limiter) = (&shared, &limiter);
        async move { shared.send("SmtpRelay team/corp", t, limiter).await }
    });
    let all = futures::future::join_all(sends);
    let release = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(held);
    };
    let (outcomes, ()) = tokio::join!(all, release);
    let reasons: Vec<Option<FailureReason>> = outcomes.iter().map(reason).collect();
    assert_eq!(
        reasons,
        vec![
            None,
            Some(FailureReason::RecipientRejected),
            Some(FailureReason::ConnectionLost),
            None,
            None,
            None
        ],
        "{outcomes:?}"
    );
    // At most two per session, in order: [a refuse], [reset] (lost mid-DATA: the rest
    // wait in the queue, untouched), [b c], [d]; never more than one at a time.
    let delivered = seen.delivered.lock().expect("lock").clone();
    assert_eq!(delivered.len(), 4, "{delivered:?}");
    for (mail, to) in delivered.iter().zip(["a@", "b@", "c@", "d@"]) {
        assert!(mail.contains(to), "{delivered:?}");
    }
    assert_eq!(shared.sessions(), 4);
    assert_eq!(seen.sessions.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert_eq!(limiter.max_observed("127.0.0.1"), 1);
}

#[tokio::test]
async fn a_session_takes_the_mails_that_arrive_while_it_is_open() {
    let (port, seen) = fault::start_counting();
    let limiter = std::sync::Arc::new(smtp::HostLimiter::new(2));
    // A long linger, so that the test does not depend on the machine's speed.
    let shared = smtp::SharedSessions::with_linger(50, Duration::from_secs(2));
    // One after the other: each mail is sent once the previous one's answer came.
    for to in ["a@example.test", "b@example.test", "c@example.test"] {
        let mut t = target(port, Security::None);
        t.host = "127.0.0.1".into();
        t.message = Some(mail_to(to));
        let o = shared.send("SmtpRelay team/corp", t, &limiter).await;
        assert!(o.succeeded(), "{o:?}");
    }
    assert_eq!(seen.delivered.lock().expect("lock").len(), 3);
    assert_eq!(shared.sessions(), 1);
    assert_eq!(seen.sessions.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_mail_session_hands_its_slot_to_a_waiting_verification() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (port, seen) = fault::start_counting();
    let limiter = std::sync::Arc::new(smtp::HostLimiter::new(1));
    // A long linger: the first session is still open when the next mail comes.
    let shared = smtp::SharedSessions::with_linger(50, Duration::from_secs(2));
    let send = |to: &str| {
        let mut t = scripted(port);
        t.message = Some(mail_to(to));
        shared.send("SmtpRelay team/corp", t, &limiter)
    };
    assert!(send("a@example.test").await.succeeded());
    // A relay's verification now waits for the only slot, held by that session.
    let verified = std::sync::Arc::new(AtomicBool::new(false));
    let verification = {
        let (limiter, verified) = (
            std::sync::Arc::clone(&limiter),
            std::sync::Arc::clone(&verified),
        );
        tokio::spawn(async move {
            let _slot = limiter.acquire("127.0.0.1").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            verified.store(true, Ordering::SeqCst);
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The next mail does not take the open session: the verification goes first,
    // then the mail goes in a session of its own.
    let b = send("b@example.test").await;
    assert!(b.succeeded(), "{b:?}");
    assert!(
        verified.load(Ordering::SeqCst),
        "the mail went before the verification"
    );
    verification.await.expect("task");
    assert_eq!(seen.delivered.lock().expect("lock").len(), 2);
    assert_eq!(shared.sessions(), 2);
    assert_eq!(seen.sessions.load(Ordering::SeqCst), 2);
    assert_eq!(limiter.max_observed("127.0.0.1"), 1);
}

#[tokio::test]
async fn a_session_that_cannot_open_fails_the_mails_waiting_for_it_and_the_next_try_again() {
    // Nothing listens on this port: every session fails to connect.
    let closed = support::closed_port();
    let port = closed.port;
    let limiter = std::sync::Arc::new(smtp::HostLimiter::new(1));
    let shared = smtp::SharedSessions::new(10);
    let sends = (0..3).map(|i| {
        let mut t = target(port, Security::None);
        t.host = "127.0.0.1".into();
        t.message = Some(mail_to(&format!("m{i}@example.test")));
        let (shared, limiter) = (&shared, &limiter);
        async move { shared.send("SmtpRelay team/down", t, limiter).await }
    });
    let outcomes = futures::future::join_all(sends).await;
    for o in &outcomes {
        assert_eq!(reason(o), Some(FailureReason::ConnectionRefused), "{o:?}");
    }
    // All three waited for the one session that could not open.
    assert_eq!(shared.sessions(), 1);
    // A later mail tries again with a session of its own.
    let mut t = target(port, Security::None);
    t.host = "127.0.0.1".into();
    t.message = Some(mail_to("later@example.test"));
    let o = shared.send("SmtpRelay team/down", t, &limiter).await;
    assert_eq!(reason(&o), Some(FailureReason::ConnectionRefused));
    assert_eq!(shared.sessions(), 2);
}

#[tokio::test]
async fn a_shared_session_through_real_postfix_delivers_every_message() {
    let h = harness();
    let t = with_auth(
        with_ca(target(h.submission_port, Security::StartTls)),
        AuthMechanism::Plain,
        PASSWORD,
    );
    let mails: Vec<smtp::Outgoing> = (0..3)
        .map(|i| {
            test_message(
                &format!("shared-{i}@example.test"),
                &format!("shared-postfix-{i}"),
            )
            .outgoing()
        })
        .collect();
    let mut tx = smtp::Transactions::open(&t).await.expect("open");
    let mut out = Vec::new();
    for m in &mails {
        out.push(tx.send(m).await);
    }
    tx.close().await;
    for (i, o) in out.iter().enumerate() {
        assert!(o.succeeded(), "{o:?}");
        let id = o.message_id.clone().expect("message id");
        let mail = h.wait_for_message(&id);
        assert!(
            mail.contains(&format!("X-Campaign: shared-postfix-{i}")),
            "{mail}"
        );
        let text = format!("{o:?}");
        assert!(!text.contains(PASSWORD));
    }
}
