//! The address's domain in the identity's status (pure): `status.deliverability`, the
//! DomainAuthenticated condition before Ready, and Ready held back by it only when
//! spec.deliverability.enforce is set.

use super::*;
use crate::deliverability::verdict;

/// Ready's reason when enforce is set and the domain is not authenticated.
pub const DOMAIN_NOT_AUTHENTICATED: &str = "DomainNotAuthenticated";

/// Add the deliverability results to a decided status: fresh results when a check
/// ran (kept from before through a temporary DNS failure), else the previous results
/// and condition as they were.
pub fn with_deliverability(
    mut next: SenderIdentityStatus,
    previous: Option<&SenderIdentityStatus>,
    spec: &SenderIdentitySpec,
    observed: &DomainObservation,
    now: Timestamp,
) -> SenderIdentityStatus {
    let before = previous.and_then(|p| p.deliverability.as_deref());
    let earlier = previous.and_then(|p| {
        p.conditions
            .iter()
            .find(|c| c.type_ == conditions::DOMAIN_AUTHENTICATED)
    });
    next.conditions
        .retain(|c| c.type_ != conditions::DOMAIN_AUTHENTICATED);
    let judged = |j: verdict::Judgement| (j.status, j.reason.to_string(), j.message);
    let (results, condition) = match observed {
        DomainObservation::Checked(fresh) => {
            let kept = verdict::keep_last(before, (**fresh).clone(), now);
            let j = judged(verdict::domain_condition_kept(&kept));
            (Some(kept), Some(j))
        }
        DomainObservation::Off => (None, None),
        DomainObservation::RelayUnknown(why) => (
            before.cloned(),
            Some((
                ConditionStatus::Unknown,
                crate::api::deliverability_reasons::RELAY_UNKNOWN.to_string(),
                why.clone(),
            )),
        ),
        // Not observed now: what was written stays as it was.
        DomainObservation::Unchanged => (
            before.cloned(),
            earlier
                .map(|c| (c.status, c.reason.clone(), c.message.clone()))
                .or_else(|| before.map(|r| judged(verdict::domain_condition_kept(r)))),
        ),
    };
    next.deliverability = results.map(Box::new);
    let Some((status, reason, message)) = condition else {
        return next;
    };
    let empty = Vec::new();
    let merged = merge_conditions(
        previous.map(|p| &p.conditions).unwrap_or(&empty),
        vec![Desired {
            type_: conditions::DOMAIN_AUTHENTICATED,
            status,
            reason: reason.clone(),
            message: message.clone(),
        }],
        next.observed_generation,
        &rfc3339(now),
    );
    let at = next
        .conditions
        .iter()
        .position(|c| c.type_ == types::READY)
        .unwrap_or(next.conditions.len());
    next.conditions.splice(at..at, merged);
    if spec.deliverability.enforce
        && status != ConditionStatus::True
        && let Some(ready) = next
            .conditions
            .iter_mut()
            .find(|c| c.type_ == types::READY && c.status == ConditionStatus::True)
    {
        let last = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == types::READY))
            .filter(|c| c.status == ConditionStatus::False)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| rfc3339(now));
        ready.status = ConditionStatus::False;
        ready.reason = DOMAIN_NOT_AUTHENTICATED.into();
        ready.message = format!(
            "spec.deliverability.enforce is set and DomainAuthenticated is {status:?} ({reason}): {message}"
        );
        ready.last_transition_time = last;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::api::{DmarcCheck, DomainDeliverability, MxCheck, SpfCheck};

    fn results(spf: &str, dmarc_policy: Option<&str>) -> DomainDeliverability {
        DomainDeliverability {
            domain: "example.test".into(),
            checked_at: "2026-01-01T00:00:00Z".into(),
            inputs: "example.test via [127.0.0.1] dkim []".into(),
            mx: MxCheck {
                result: "Found".into(),
                ..Default::default()
            },
            spf: SpfCheck {
                result: spf.into(),
                message: format!("spf {spf}"),
                ..Default::default()
            },
            dmarc: DmarcCheck {
                result: if dmarc_policy.is_some() {
                    "Found"
                } else {
                    "Missing"
                }
                .into(),
                policy: dmarc_policy.map(String::from),
                message: "dmarc".into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn condition(s: &SenderIdentityStatus, t: &str) -> (ConditionStatus, String) {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status, c.reason.clone()))
            .unwrap_or((ConditionStatus::Unknown, "absent".into()))
    }

    fn ready_world() -> (World, SenderIdentityStatus) {
        let mut w = World::new();
        w.spec.confirmation.required = false;
        w.step("2026-01-01T00:00:00Z", None, None, true);
        let s = w.status.clone().expect("status");
        assert_eq!(condition(&s, types::READY).0, ConditionStatus::True);
        (w, s)
    }

    #[test]
    fn domain_problems_are_reported_without_blocking_ready_unless_enforced() {
        let (mut w, s) = ready_world();
        let now = ts("2026-01-01T00:00:01Z");
        let bad = results("fail", Some("reject"));
        let out = with_deliverability(
            s.clone(),
            Some(&s),
            &w.spec,
            &DomainObservation::Checked(Box::new(bad.clone())),
            now,
        );
        assert_eq!(
            condition(&out, conditions::DOMAIN_AUTHENTICATED),
            (ConditionStatus::False, "SpfNotAuthorizingRelay".into())
        );
        assert_eq!(condition(&out, types::READY).0, ConditionStatus::True);
        // DomainAuthenticated sits before Ready.
        assert_eq!(
            out.conditions.last().map(|c| c.type_.as_str()),
            Some(types::READY)
        );
        w.spec.deliverability.enforce = true;
        let enforced = with_deliverability(
            s.clone(),
            Some(&s),
            &w.spec,
            &DomainObservation::Checked(Box::new(bad.clone())),
            now,
        );
        assert_eq!(
            condition(&enforced, types::READY),
            (ConditionStatus::False, DOMAIN_NOT_AUTHENTICATED.into())
        );
        let good = results("pass", Some("reject"));
        let fine = with_deliverability(
            s.clone(),
            Some(&s),
            &w.spec,
            &DomainObservation::Checked(Box::new(good.clone())),
            now,
        );
        assert_eq!(
            condition(&fine, conditions::DOMAIN_AUTHENTICATED),
            (ConditionStatus::True, "Authenticated".into())
        );
        assert_eq!(condition(&fine, types::READY).0, ConditionStatus::True);
        // p=none is a warning: True, with the warning as the reason.
        let monitoring = results("pass", Some("none"));
        let warned = with_deliverability(
            s.clone(),
            Some(&s),
            &w.spec,
            &DomainObservation::Checked(Box::new(monitoring.clone())),
            now,
        );
        assert_eq!(
            condition(&warned, conditions::DOMAIN_AUTHENTICATED),
            (ConditionStatus::True, "DmarcPolicyNone".into())
        );
    }

    #[test]
    fn with_the_checks_off_nothing_is_reported_nor_enforced() {
        let (mut w, s) = ready_world();
        w.spec.deliverability.enforce = true;
        let bad = results("fail", None);
        let t0 = ts("2026-01-01T00:00:01Z");
        let held = with_deliverability(
            s.clone(),
            Some(&s),
            &w.spec,
            &DomainObservation::Checked(Box::new(bad)),
            t0,
        );
        assert_eq!(condition(&held, types::READY).0, ConditionStatus::False);
        let off = with_deliverability(s.clone(), Some(&held), &w.spec, &DomainObservation::Off, t0);
        assert_eq!(off.deliverability, None);
        assert_eq!(
            condition(&off, conditions::DOMAIN_AUTHENTICATED).1,
            "absent"
        );
        assert_eq!(condition(&off, types::READY).0, ConditionStatus::True);
    }

    #[test]
    fn an_unknown_relay_address_is_said_and_stays_until_observed_again() {
        let (mut w, s) = ready_world();
        w.spec.deliverability.enforce = true;
        let unknown = DomainObservation::RelayUnknown("set sendingAddresses".into());
        let t0 = ts("2026-01-01T00:00:01Z");
        let a = with_deliverability(s.clone(), Some(&s), &w.spec, &unknown, t0);
        assert_eq!(
            condition(&a, conditions::DOMAIN_AUTHENTICATED),
            (ConditionStatus::Unknown, "RelayUnknown".into())
        );
        assert_eq!(
            condition(&a, types::READY),
            (ConditionStatus::False, DOMAIN_NOT_AUTHENTICATED.into())
        );
        // The next reconcile observes nothing new: the same status, no churn.
        let b = with_deliverability(
            s.clone(),
            Some(&a),
            &w.spec,
            &DomainObservation::Unchanged,
            ts("2026-01-01T00:10:00Z"),
        );
        assert_eq!(b.conditions, a.conditions);
        assert_eq!(b.deliverability, a.deliverability);
    }

    #[test]
    fn a_temporary_failure_keeps_the_last_results_and_says_so() {
        let (w, s) = ready_world();
        let good = results("pass", Some("reject"));
        let first = with_deliverability(
            s.clone(),
            Some(&s),
            &w.spec,
            &DomainObservation::Checked(Box::new(good.clone())),
            ts("2026-01-01T00:00:01Z"),
        );
        let mut broken = results("temperror", None);
        broken.dmarc.result = "TempError".into();
        let later = ts("2026-01-01T02:00:00Z");
        let kept = with_deliverability(
            first.clone(),
            Some(&first),
            &w.spec,
            &DomainObservation::Checked(Box::new(broken.clone())),
            later,
        );
        let d = kept.deliverability.as_ref().expect("kept");
        assert_eq!(d.spf.result, "pass");
        assert!(d.temporary_failure.is_some());
        let c = kept
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::DOMAIN_AUTHENTICATED)
            .expect("condition");
        assert_eq!(c.status, ConditionStatus::True);
        assert!(
            c.message.starts_with("kept from 2026-01-01T00:00:00Z"),
            "{}",
            c.message
        );
        // Without earlier results, the failure itself is reported.
        let none = with_deliverability(
            s.clone(),
            Some(&s),
            &w.spec,
            &DomainObservation::Checked(Box::new(broken.clone())),
            later,
        );
        assert_eq!(
            condition(&none, conditions::DOMAIN_AUTHENTICATED),
            (ConditionStatus::Unknown, "DnsTemporaryFailure".into())
        );
        // No check this time: the previous results and condition stay as they were.
        let same = with_deliverability(
            first.clone(),
            Some(&first),
            &w.spec,
            &DomainObservation::Unchanged,
            later,
        );
        assert_eq!(same, first);
    }
}
