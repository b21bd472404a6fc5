//! Builders shared by the SenderIdentity unit tests.

use super::*;
use crate::api::{ConfirmationSpec, RelayRefSpec};

pub fn spec() -> SenderIdentitySpec {
    SenderIdentitySpec {
        address: "sales@example.test".into(),
        display_name: Some("Sales".into()),
        reply_to: None,
        signature: None,
        usage: vec!["sales".into()],
        relay_ref: Some(RelayRefSpec {
            kind: RelayKindRef::SmtpRelay,
            name: "corporate".into(),
        }),
        confirmation: ConfirmationSpec::default(),
        write_connection_secret_to_ref: None,
        deliverability: Default::default(),
    }
}

pub fn relay(ready: bool) -> Result<RelayView, RelayProblem> {
    Ok(RelayView {
        label: "SmtpRelay corporate".into(),
        kind: RelayKindRef::SmtpRelay,
        name: "corporate".into(),
        not_ready: (!ready).then(|| ("AuthRejected".into(), "535".into())),
        usage: vec!["sales".into(), "purchasing".into()],
        no_reply: Some(MailboxSpec {
            address: "no-reply@example.test".into(),
            name: None,
        }),
        default_sender: MailboxSpec {
            address: "noreply@example.test".into(),
            name: Some("ACME".into()),
        },
        publishing_allowed: true,
        unconfirmed_allowed: true,
        binding:
            "SmtpRelay team/corporate via smtp.example.test:587 (StartTls, credentials team/creds)"
                .into(),
    })
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("ts")
}

pub struct World {
    pub key: ConfirmKey,
    pub spec: SenderIdentitySpec,
    pub relay: Result<RelayView, RelayProblem>,
    pub status: Option<SenderIdentityStatus>,
}

impl World {
    pub fn new() -> Self {
        World {
            key: ConfirmKey::new(b"0123456789abcdef0123456789abcdef"),
            spec: spec(),
            relay: relay(true),
            status: None,
        }
    }

    /// What a reconcile observes, with no annotations.
    pub fn facts<'a>(&'a self, fresh: &'a Secrets, now: &str, sends: usize) -> Facts<'a> {
        Facts {
            generation: Some(1),
            spec: &self.spec,
            status: self.status.as_ref(),
            relay: &self.relay,
            code_annotation: None,
            resend_annotation: None,
            page_url: None,
            key: &self.key,
            fresh,
            now: ts(now),
            address_sends_today: sends,
        }
    }

    /// One reconcile's decision; the status is kept as if written.
    pub fn step(
        &mut self,
        now: &str,
        code: Option<&str>,
        resend: Option<&str>,
        send_ok: bool,
    ) -> (Plan, Secrets) {
        let fresh = Secrets::generate();
        let mut f = self.facts(&fresh, now, 0);
        f.code_annotation = code;
        f.resend_annotation = resend;
        f.page_url = Some("https://c.example.test/confirm/team/sales".into());
        let mut p = plan(&f);
        if p.send {
            let outcome = if send_ok {
                smtp::Outcome::default()
            } else {
                smtp::Outcome {
                    failure: Some(smtp::Failure {
                        step: smtp::Step::Rcpt,
                        reason: smtp::FailureReason::RecipientRejected,
                        code: Some(550),
                        message: "550 no such user".into(),
                    }),
                    ..Default::default()
                }
            };
            p.confirmation = after_send(&p.confirmation, &outcome, ts(now));
        }
        self.status = Some(next_status(
            &self.spec,
            Some(1),
            self.status.as_ref(),
            &self.relay,
            &p,
            &SecretState::NotRequested,
            ts(now),
        ));
        (p, fresh)
    }

    pub fn condition(&self, t: &str) -> (ConditionStatus, String) {
        let c = self
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == t))
            .unwrap_or_else(|| panic!("no {t}"));
        (c.status, c.reason.clone())
    }

    pub fn state(&self) -> ConfirmationState {
        self.status
            .as_ref()
            .and_then(|s| s.confirmation.as_ref())
            .map(|c| c.state)
            .unwrap_or_default()
    }
}
