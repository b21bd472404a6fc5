//! Apply: the API calls and the mail, in the order the rules need (the mail leaves
//! first; its attempt and outcome are then written once, on the fresh object if it
//! changed meanwhile).

use super::*;

/// Carry out the actions: send, withdraw and write the Secret, write the status if it
/// changed (with the attempt just mailed), clear the code, publish events.
pub(super) async fn apply(
    ctx: &Context,
    identity: &Arc<SenderIdentity>,
    observed: &Observed,
    actions: Actions,
) -> Result<Action, Error> {
    let Actions {
        mut plan,
        mail,
        withdraw,
        secret,
        clear_code,
    } = actions;
    if plan.send {
        // One status write per mail, after it: a crash before that write leaves a
        // mailed link whose digest was never recorded (refused like any wrong link)
        // and no attempt in status, so the next reconcile mails a new one.
        send_mail(ctx, &identity.spec.address, mail, &mut plan).await;
    }
    let namespace = identity.namespace().unwrap_or_default();
    if let Some(stale) = &withdraw {
        delete_connection_secret(ctx, identity, &namespace, stale).await?;
        tracing::info!(secret = %stale, "connection Secret withdrawn");
    }
    let secret = match secret {
        SecretAction::Report(state) => state,
        SecretAction::Write { name, data } => {
            match write_connection_secret(ctx, identity, &namespace, &name, data).await {
                Ok(()) => SecretState::Written(name),
                Err(e) => SecretState::Failed(reasons::SECRET_WRITE_FAILED.into(), e),
            }
        }
    };
    let status = write_final_status(ctx, identity, observed, &plan, &secret).await?;
    let transition = identity_transition(identity.status.as_ref(), &status);
    if clear_code {
        remove_annotation(ctx, &namespace, &identity.name_any(), CODE_ANNOTATION).await?;
        code_answered(ctx, identity, &plan, transition.as_ref()).await;
    }
    if let Some(t) = &transition {
        publish(ctx, identity.as_ref(), t).await;
    }
    let wait = requeue_after(&plan.confirmation, Timestamp::now());
    let wait = observed
        .domain_due
        .map_or(wait, |d| wait.min(d.max(Duration::from_secs(1))));
    Ok(Action::requeue(jittered(wait)))
}

/// Send the confirmation mail and record its outcome in the plan.
async fn send_mail(
    ctx: &Context,
    address: &str,
    mail: Option<Result<smtp::Target, String>>,
    plan: &mut Plan,
) {
    let outcome = match mail.unwrap_or_else(|| Err("no relay".into())) {
        // Confirmation mails are bulk work (verifications go first); those through
        // the same server and account at about the same time share a session.
        Ok(target) => {
            let key = smtp::session_key(&target);
            ctx.mailer.send(&key, target, &ctx.limiter).await
        }
        Err(message) => smtp::Outcome {
            failure: Some(smtp::Failure {
                step: smtp::Step::Connect,
                reason: smtp::FailureReason::InvalidTarget,
                code: None,
                message,
            }),
            ..Default::default()
        },
    };
    plan.confirmation = after_send(&plan.confirmation, &outcome, Timestamp::now());
    ctx.sends.record(address, Timestamp::now());
    if outcome.succeeded() {
        ctx.metrics.confirmation_mails_sent.inc();
        tracing::info!(attempt = ?plan.confirmation.attempt_id, "confirmation mail sent");
    } else {
        tracing::warn!(reason = ?outcome.failure.as_ref().map(|f| f.reason), "confirmation mail not accepted");
    }
}

/// Write the status if it changed; returns the status decided last. The mail has
/// left when `plan.send`: if the object changed meanwhile (a label, another writer),
/// the send is recorded on the fresh object rather than retrying the reconcile,
/// which would mint and mail a new attempt and void this one — unless the
/// confirmation itself moved on meanwhile (confirmed by link), which wins.
async fn write_final_status(
    ctx: &Context,
    identity: &SenderIdentity,
    observed: &Observed,
    plan: &Plan,
    secret: &SecretState,
) -> Result<SenderIdentityStatus, Error> {
    let decide = |obj: &SenderIdentity| {
        let status = next_status(
            &obj.spec,
            obj.metadata.generation,
            obj.status.as_ref(),
            &observed.relay,
            plan,
            secret,
            Timestamp::now(),
        );
        with_deliverability(
            status,
            obj.status.as_ref(),
            &obj.spec,
            &observed.domain,
            Timestamp::now(),
        )
    };
    let mut status = decide(identity);
    if Some(&status) == identity.status.as_ref() {
        return Ok(status);
    }
    let mut written = write_identity_status(ctx, identity, &status).await;
    // The confirmation this reconcile started from: attempt and state.
    let attempt_of = |s: Option<&SenderIdentityStatus>| {
        s.and_then(|s| s.confirmation.as_ref())
            .map(|c| (c.attempt_id.clone(), c.state))
    };
    let started_from = attempt_of(identity.status.as_ref());
    for _ in 0..3 {
        if !(plan.send && matches!(written, Err(Error::Conflict))) {
            break;
        }
        let api: Api<SenderIdentity> = Api::namespaced(
            ctx.client.clone(),
            &identity.namespace().unwrap_or_default(),
        );
        let latest = api.get(&identity.name_any()).await.map_err(Error::Status)?;
        if attempt_of(latest.status.as_ref()) != started_from {
            break;
        }
        status = decide(&latest);
        written = write_identity_status(ctx, &latest, &status).await;
    }
    written?;
    Ok(status)
}

/// Log and count a code given in the annotation; an Event only when wrong codes
/// withdraw the attempt (guessing must not flood the namespace's events).
async fn code_answered(
    ctx: &Context,
    identity: &SenderIdentity,
    plan: &Plan,
    transition: Option<&relay::Transition>,
) {
    let Some(Err(refusal)) = &plan.code else {
        ctx.metrics.confirmations_completed.inc();
        return;
    };
    ctx.metrics.refused("code", refusal.name());
    let (namespace, name) = (
        identity.namespace().unwrap_or_default(),
        identity.name_any(),
    );
    tracing::info!(%namespace, %name, reason = refusal.name(), failed_codes = plan.confirmation.failed_codes, "confirmation code refused");
    // Once, when the attempt is withdrawn (guesses after that publish nothing), and
    // not twice: Ready turning False for it already says so.
    let already = identity
        .status
        .as_ref()
        .and_then(|s| s.confirmation.as_ref())
        .is_some_and(locked_out)
        || transition.is_some_and(|t| t.reason == CODE_ATTEMPTS_EXHAUSTED);
    if *refusal == Refusal::Mismatch && locked_out(&plan.confirmation) && !already {
        publish(
            ctx,
            identity,
            &relay::Transition {
                warning: true,
                reason: CODE_ATTEMPTS_EXHAUSTED.into(),
                note: format!(
                    "{MAX_FAILED_CODES} wrong codes: the confirmation attempt is withdrawn; annotate {RESEND_ANNOTATION} for a new mail"
                ),
            },
        )
        .await;
    }
}

pub(super) async fn write_identity_status(
    ctx: &Context,
    identity: &SenderIdentity,
    status: &SenderIdentityStatus,
) -> Result<crate::k8s::Written, Error> {
    let api: Api<SenderIdentity> = Api::namespaced(
        ctx.client.clone(),
        &identity.namespace().unwrap_or_default(),
    );
    Ok(ctx.own_writes.apply_status(&api, identity, status).await?)
}

pub(super) async fn remove_annotation(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<(), Error> {
    let api: Api<SenderIdentity> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({"metadata": {"annotations": {key: null}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(Error::Status)
}
