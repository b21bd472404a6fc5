//! On-demand test sends: the annotation, and the session with a test message.

use super::*;

/// The relay's test message to `to`: its default sender, no-reply and custom headers.
pub fn test_message(spec: &SmtpRelaySpec, to: &str, relay_label: String) -> smtp::TestMessage {
    let mailbox = |m: &crate::api::MailboxSpec| smtp::Mailbox {
        name: m.name.clone(),
        address: m.address.clone(),
    };
    smtp::TestMessage {
        from: mailbox(&spec.default_sender),
        no_reply: spec.no_reply.as_ref().map(mailbox),
        to: to.to_string(),
        custom_headers: spec
            .custom_headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
        relay_label,
    }
}

pub use crate::api::TEST_REQUEST_ANNOTATION;

/// A test send asked for in the annotation and not answered yet (pure).
pub fn pending_test<'a>(
    annotation: Option<&'a str>,
    status: Option<&SmtpRelayStatus>,
) -> Option<(&'a str, &'a str)> {
    let (id, recipient) = annotation?.trim().split_once(' ')?;
    let (id, recipient) = (id.trim(), recipient.trim());
    if id.is_empty() || recipient.is_empty() {
        return None;
    }
    let answered = status
        .and_then(|s| s.last_test.as_ref())
        .is_some_and(|t| t.request_id == id);
    (!answered).then_some((id, recipient))
}

/// Run an on-demand test send through the relay: the verification session, with a
/// test message to `recipient`.
pub async fn run_test(
    relay: &RelayRef<'_>,
    source: &impl Source,
    limiter: &HostLimiter,
    request_id: &str,
    recipient: &str,
) -> LastTest {
    let now = || crate::confirm::rfc3339(Timestamp::now());
    let answer = |result: &str, reason: &str, message: String, message_id| LastTest {
        request_id: request_id.to_string(),
        recipient: recipient.to_string(),
        time: now(),
        result: result.into(),
        reason: reason.into(),
        message,
        message_id,
    };
    let valid =
        regex::Regex::new(crate::api::patterns::ADDRESS).is_ok_and(|re| re.is_match(recipient));
    if !valid || recipient.len() > 254 {
        return answer(
            RESULT_FAILED,
            "InvalidRecipient",
            format!("{recipient:?} is not a valid address"),
            None,
        );
    }
    let mut target = match resolve(relay, source).await {
        Ok(r) => r.target,
        Err(p) => return answer(RESULT_FAILED, p.reason, p.message, None),
    };
    let mut message = test_message(relay.spec, recipient, relay.label()).outgoing();
    message.subject = format!("SMTP relay test ({})", relay.label());
    target.message = Some(message);
    let outcome = {
        let _permit = limiter.acquire(&target.host).await;
        smtp::verify(&target).await
    };
    match &outcome.failure {
        None => answer(
            RESULT_SUCCEEDED,
            reasons::VERIFIED,
            format!(
                "test message accepted for {recipient} in {} ms",
                outcome.total.as_millis()
            ),
            outcome.message_id.clone(),
        ),
        Some(f) => answer(
            RESULT_FAILED,
            f.reason.as_str(),
            format!("{} failed: {}", f.step, f.message),
            None,
        ),
    }
}
