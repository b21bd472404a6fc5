//! Building the messages the operator sends: the relay's test message today,
//! confirmation mails later. One place decides From, Reply-To and extra headers.

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox as LettreMailbox, Message};

/// A display name and an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: String,
}

impl Mailbox {
    fn to_lettre(&self) -> Result<LettreMailbox, String> {
        let address = self
            .address
            .parse()
            .map_err(|e| format!("invalid address {:?}: {e}", self.address))?;
        Ok(LettreMailbox::new(
            self.name.clone().filter(|n| !n.is_empty()),
            address,
        ))
    }
}

/// What a relay's verification message looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestMessage {
    pub from: Mailbox,
    /// The relay's no-reply mailbox, used as Reply-To when the message has none.
    pub no_reply: Option<Mailbox>,
    pub to: String,
    pub custom_headers: Vec<(String, String)>,
    /// Identifies the relay in the verification header (e.g. `SmtpRelay mail/corporate`).
    pub relay_label: String,
}

/// The header that marks a message as an operator verification.
pub const VERIFICATION_HEADER: &str = "X-SmtpRelay-Verification";

/// Reply-To after fallbacks: explicit → relay no-reply → the sender itself. The one
/// statement of the rule, for messages and for identities' published Reply-To.
pub fn effective_reply_to<T>(explicit: Option<T>, no_reply: Option<T>, from: T) -> T {
    explicit.or(no_reply).unwrap_or(from)
}

/// A globally unique Message-ID for a message from `from_address`.
pub fn new_message_id(from_address: &str) -> String {
    use rand::Rng as _;
    let domain = from_address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
        .unwrap_or("smtp-relay-operator.invalid");
    let nonce: u128 = rand::rng().random();
    let millis = jiff::Timestamp::now().as_millisecond();
    format!("<{millis}.{nonce:032x}@{domain}>")
}

/// A message ready to be sent through a relay. Its Debug output leaves the body out:
/// a confirmation mail's body holds the link token and the code.
#[derive(Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub from: Mailbox,
    /// Effective Reply-To (after fallbacks).
    pub reply_to: Mailbox,
    pub to: String,
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// Extra headers, in order (relay custom headers, then the operator's marker).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field("headers", &self.headers)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .finish()
    }
}

impl TestMessage {
    /// The verification message for this relay.
    pub fn outgoing(&self) -> Outgoing {
        let mut headers = self.custom_headers.clone();
        headers.push((VERIFICATION_HEADER.to_string(), self.relay_label.clone()));
        Outgoing {
            from: self.from.clone(),
            reply_to: effective_reply_to(None, self.no_reply.as_ref(), &self.from).clone(),
            to: self.to.clone(),
            subject: format!("SMTP relay verification ({})", self.relay_label),
            text: format!(
                "This is a verification message sent by smtp-relay-operator through {}.\r\n\
                 If it reached you, the relay accepted mail for delivery. No action is needed.\r\n",
                self.relay_label
            ),
            headers,
        }
    }
}

/// A built message: Message-ID, envelope sender, recipient, RFC 5322 bytes.
pub type Built = (String, String, String, Vec<u8>);

/// Build the RFC 5322 message. Errors are human-readable; nothing is sent.
pub fn build_message(m: &Outgoing) -> Result<Built, String> {
    let to: LettreMailbox = Mailbox {
        name: None,
        address: m.to.clone(),
    }
    .to_lettre()?;
    let message_id = new_message_id(&m.from.address);
    let mut builder = Message::builder()
        .from(m.from.to_lettre()?)
        .reply_to(m.reply_to.to_lettre()?)
        .to(to)
        .subject(m.subject.clone())
        .message_id(Some(message_id.clone()));
    for (name, value) in &m.headers {
        let name = HeaderName::new_from_ascii(name.clone())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        if value.contains(['\r', '\n']) {
            return Err(format!("header {name} has a line break in its value"));
        }
        builder = builder.raw_header(HeaderValue::new(name, value.clone()));
    }
    let message = builder
        .body(m.text.clone())
        .map_err(|e| format!("cannot build the message: {e}"))?;
    Ok((
        message_id,
        m.from.address.clone(),
        m.to.clone(),
        message.formatted(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TestMessage {
        TestMessage {
            from: Mailbox {
                name: Some("Service Achats".into()),
                address: "achats@example.test".into(),
            },
            no_reply: Some(Mailbox {
                name: None,
                address: "no-reply@example.test".into(),
            }),
            to: "inbox@example.test".into(),
            custom_headers: vec![("X-Campaign".into(), "relay-check".into())],
            relay_label: "SmtpRelay mail/corporate".into(),
        }
    }

    #[test]
    fn reply_to_falls_back_to_no_reply_then_sender() {
        let from = Mailbox {
            name: None,
            address: "a@x.test".into(),
        };
        let nr = Mailbox {
            name: None,
            address: "nr@x.test".into(),
        };
        let rt = Mailbox {
            name: None,
            address: "rt@x.test".into(),
        };
        assert_eq!(effective_reply_to(Some(&rt), Some(&nr), &from), &rt);
        assert_eq!(effective_reply_to(None, Some(&nr), &from), &nr);
        assert_eq!(effective_reply_to(None, None, &from), &from);
    }

    #[test]
    fn test_message_has_headers_and_unique_ids() {
        let (id1, sender, rcpt, bytes) = build_message(&sample().outgoing()).expect("builds");
        let (id2, ..) = build_message(&sample().outgoing()).expect("builds");
        assert_ne!(id1, id2);
        assert_eq!(sender, "achats@example.test");
        assert_eq!(rcpt, "inbox@example.test");
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(
            text.contains("From: \"Service Achats\" <achats@example.test>"),
            "{text}"
        );
        assert!(text.contains("Reply-To: no-reply@example.test"), "{text}");
        assert!(text.contains("X-Campaign: relay-check"), "{text}");
        assert!(text.contains(&format!("Message-ID: {id1}")), "{text}");
        assert!(text.contains("X-SmtpRelay-Verification: SmtpRelay mail/corporate"));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut t = sample();
        t.custom_headers = vec![("X-Bad".into(), "a\r\nBcc: x@y.test".into())];
        assert!(build_message(&t.outgoing()).is_err());
        let mut t = sample();
        t.custom_headers = vec![("Bad Name:".into(), "v".into())];
        assert!(build_message(&t.outgoing()).is_err());
        let mut t = sample();
        t.to = "not an address".into();
        assert!(build_message(&t.outgoing()).is_err());
    }
}
