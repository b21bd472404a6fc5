//! Decide everything a reconcile does from what it observed (pure): the confirmation
//! plan, the mail itself, the connection Secret to withdraw or write, the code
//! annotation to clear. The status follows from the plan once the mail has left.

use super::*;

/// What apply carries out, in this order.
#[derive(Debug)]
pub struct Actions {
    pub plan: Plan,
    /// The confirmation mail (its session target with the message), or why there is
    /// no target to send it through. Only when `plan.send`.
    pub mail: Option<Result<smtp::Target, String>>,
    /// A published connection Secret to withdraw.
    pub withdraw: Option<String>,
    /// The connection Secret to report, or to write first.
    pub secret: SecretAction,
    /// A code was given in the annotation: remove it.
    pub clear_code: bool,
}

/// The connection Secret part of a reconcile.
#[derive(Debug, PartialEq, Eq)]
pub enum SecretAction {
    Report(SecretState),
    /// Write these keys to the Secret of this name; Written or SecretWriteFailed.
    Write {
        name: String,
        data: BTreeMap<String, String>,
    },
}

/// Does this plan need the relay's session target (a mail to send, or credentials to
/// publish)? It is then read once, before [`decide`].
pub fn needs_target(spec: &SenderIdentitySpec, observed: &Observed, plan: &Plan) -> bool {
    plan.send
        || (spec.write_connection_secret_to_ref.is_some()
            && usable(&observed.relay, spec, &plan.confirmation)
            && observed.relay.as_ref().is_ok_and(|r| r.publishing_allowed))
}

/// The confirmation mail's inputs that are not in the plan.
pub struct MailInputs<'a> {
    pub sender: &'a crate::confirm::ConfirmationSender,
    pub base_url: Option<&'a str>,
    pub namespace: &'a str,
    pub name: &'a str,
    pub fresh: &'a Secrets,
}

/// Decide (pure): the actions for this plan, given the relay target if one was read.
pub fn decide(
    identity: &SenderIdentity,
    observed: &Observed,
    plan: Plan,
    target: Option<Result<RelayTarget, String>>,
    mail: &MailInputs<'_>,
) -> Actions {
    let spec = &identity.spec;
    let previous = identity.status.as_ref();
    let published = previous.and_then(|s| s.connection_secret.as_deref());
    let secret_wanted = spec.write_connection_secret_to_ref.is_some();
    let mut pending_secret = match (secret_wanted, published) {
        (false, _) => SecretState::NotRequested,
        (true, Some(name)) => SecretState::Written(name.to_string()),
        (true, None) => SecretState::Waiting,
    };
    // Credentials published earlier that must not stay where they are.
    let withdraw = revoked_secret(
        published,
        spec.write_connection_secret_to_ref
            .as_ref()
            .map(|r| r.name.as_str()),
        plan.confirmation.state,
        &observed
            .relay
            .as_ref()
            .map(|v| v.publishing_allowed)
            .map_err(RelayProblem::reason),
    )
    .map(str::to_string);
    if let Some(stale) = &withdraw
        && matches!(&pending_secret, SecretState::Written(n) if n == stale)
    {
        pending_secret = SecretState::Waiting;
    }
    let (mail, secret) = match (plan.send, target) {
        (true, target) => (
            Some(
                target
                    .unwrap_or_else(|| Err("no relay".into()))
                    .map(|t| with_confirmation_mail(t.target, spec, observed, &plan, mail)),
            ),
            // A mail is being sent: the attempt is pending, nothing is published.
            SecretAction::Report(pending_secret),
        ),
        (false, target) => (
            None,
            connection_secret(spec, observed, &plan, target, pending_secret),
        ),
    };
    Actions {
        clear_code: plan.code.is_some(),
        plan,
        mail,
        withdraw,
        secret,
    }
}

fn connection_secret(
    spec: &SenderIdentitySpec,
    observed: &Observed,
    plan: &Plan,
    target: Option<Result<RelayTarget, String>>,
    pending: SecretState,
) -> SecretAction {
    if spec.write_connection_secret_to_ref.is_none() {
        return SecretAction::Report(SecretState::NotRequested);
    }
    if !usable(&observed.relay, spec, &plan.confirmation) {
        return SecretAction::Report(pending);
    }
    let view = match &observed.relay {
        Ok(view) => view,
        Err(_) => return SecretAction::Report(pending),
    };
    if !view.publishing_allowed {
        return SecretAction::Report(SecretState::NotAllowed(format!(
            "{} does not allow credential publishing (spec.allowCredentialPublishing)",
            view.label
        )));
    }
    match target.unwrap_or_else(|| Err("no relay".into())) {
        Ok(t) => SecretAction::Write {
            name: spec
                .write_connection_secret_to_ref
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_default(),
            data: connection_data(spec, view, &t.target, t.mode, &t.headers),
        },
        Err(m) => SecretAction::Report(SecretState::Failed(
            reasons::RELAY_CREDENTIALS_UNAVAILABLE.into(),
            m,
        )),
    }
}

/// The relay's session target carrying the confirmation mail. From, its display name,
/// Reply-To and headers are the operator's: nothing in this mail is text the
/// requester chose (the relay's default sender address is used only when no
/// --confirmation-from is configured, since the relay must accept the sender).
fn with_confirmation_mail(
    mut target: smtp::Target,
    spec: &SenderIdentitySpec,
    observed: &Observed,
    plan: &Plan,
    m: &MailInputs<'_>,
) -> smtp::Target {
    let from_address = m.sender.from.clone().unwrap_or_else(|| {
        observed
            .relay
            .as_ref()
            .map(|v| v.default_sender.address.clone())
            .unwrap_or_default()
    });
    let reply_to = m
        .sender
        .reply_to
        .clone()
        .unwrap_or_else(|| from_address.clone());
    let link = m
        .base_url
        .map(|b| confirm::link(b, m.namespace, m.name, &m.fresh.token));
    let identity_label = format!("{}/{}", m.namespace, m.name);
    target.message = Some(confirm::mail::build(&confirm::mail::ConfirmationMail {
        language: spec.confirmation.language,
        from: smtp::Mailbox {
            name: Some(m.sender.from_name.clone()),
            address: from_address,
        },
        reply_to: smtp::Mailbox {
            name: None,
            address: reply_to,
        },
        address: &spec.address,
        identity: &identity_label,
        attempt_id: plan.confirmation.attempt_id.as_deref().unwrap_or(""),
        link,
        code: &m.fresh.code,
        ttl: &spec.confirmation.ttl,
    }));
    target
}
