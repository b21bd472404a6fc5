//! Gather: what an identity reconcile reads, once: its relay (from the shared caches),
//! the namespace labels a cluster relay checks, and — only when the plan needs it —
//! the relay's session target (credentials Secret, CA bundle, TLS setup).

use super::*;
use kube::runtime::reflector::ObjectRef;

/// What the identity needs to know about its relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayView {
    /// e.g. "SmtpRelay corporate", "ClusterSmtpRelay shared".
    pub label: String,
    pub kind: RelayKindRef,
    pub name: String,
    /// (reason, message) of the relay's Ready condition when it is not True.
    pub not_ready: Option<(String, String)>,
    pub usage: Vec<String>,
    pub no_reply: Option<MailboxSpec>,
    pub default_sender: MailboxSpec,
    pub publishing_allowed: bool,
    /// May identities on this relay skip confirmation? (Always for a namespaced
    /// SmtpRelay, whose owner is the identity's namespace; ClusterSmtpRelays opt in.)
    pub unconfirmed_allowed: bool,
    /// The relay and its destination, as a confirmation is bound to them.
    pub binding: String,
}

/// What a confirmation is bound to: the relay (kind, namespace, name) and where it
/// delivers (host, port, TLS mode, credentials Secret). Title, sender names, headers
/// or verification settings do not change it.
pub fn relay_binding(
    kind: RelayKindRef,
    namespace: Option<&str>,
    name: &str,
    spec: &SmtpRelaySpec,
    secret_namespace: &str,
) -> String {
    let relay = match namespace {
        Some(ns) => format!("{kind:?} {ns}/{name}"),
        None => format!("{kind:?} {name}"),
    };
    let port = spec
        .port
        .map(|p| p.to_string())
        .unwrap_or_else(|| spec.tls.mode.default_port().to_string());
    let credentials = match &spec.auth {
        Some(a) => {
            let r = &a.credentials_secret_ref;
            format!(
                "credentials {}/{}",
                r.namespace.as_deref().unwrap_or(secret_namespace),
                r.name
            )
        }
        None => "no credentials".into(),
    };
    format!(
        "{relay} via {}:{port} ({:?}, {credentials})",
        spec.host, spec.tls.mode
    )
}

/// Build the view of a relay from its spec and status.
pub fn relay_view(
    kind: RelayKindRef,
    name: &str,
    spec: &SmtpRelaySpec,
    status: Option<&SmtpRelayStatus>,
    publishing_allowed: bool,
    unconfirmed_allowed: bool,
    binding: String,
) -> RelayView {
    let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == types::READY));
    let not_ready = match ready {
        Some(c) if c.status == ConditionStatus::True => None,
        Some(c) => Some((c.reason.clone(), c.message.clone())),
        None => Some((
            reasons::NOT_VERIFIED.into(),
            "the relay has not been verified yet".into(),
        )),
    };
    RelayView {
        label: format!("{kind:?} {name}"),
        kind,
        name: name.into(),
        not_ready,
        usage: spec.usage.clone(),
        no_reply: spec.no_reply.clone(),
        default_sender: spec.default_sender.clone(),
        publishing_allowed,
        unconfirmed_allowed,
        binding,
    }
}

/// Does a label selector match these labels? (matchLabels and matchExpressions.)
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Why an identity has no relay to use. The first three are reported in status; the
/// last is transient (retried, never written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayProblem {
    /// The referenced relay does not exist ("SmtpRelay team/corp", "ClusterSmtpRelay x").
    NotFound(String),
    /// No relayRef and no ClusterSmtpRelay claims to be the default.
    NoDefault,
    /// The ClusterSmtpRelay's allowedNamespaces do not match the identity's namespace.
    NamespaceNotAllowed { relay: String, namespace: String },
    /// The namespace's labels could not be read to check allowedNamespaces.
    NamespaceUnreadable { relay: String, namespace: String },
}

impl RelayProblem {
    pub fn reason(&self) -> &'static str {
        match self {
            RelayProblem::NotFound(_) => reasons::RELAY_NOT_FOUND,
            RelayProblem::NoDefault => reasons::NO_DEFAULT_RELAY,
            RelayProblem::NamespaceNotAllowed { .. } => reasons::NAMESPACE_NOT_ALLOWED,
            RelayProblem::NamespaceUnreadable { .. } => reasons::NAMESPACE_LOOKUP_FAILED,
        }
    }

    pub fn message(&self) -> String {
        match self {
            RelayProblem::NotFound(relay) => format!("{relay} does not exist"),
            RelayProblem::NoDefault => {
                "spec.relayRef is omitted and no ClusterSmtpRelay is marked default".into()
            }
            RelayProblem::NamespaceNotAllowed { relay, namespace } => format!(
                "ClusterSmtpRelay {relay} does not allow namespace {namespace} (spec.allowedNamespaces)"
            ),
            RelayProblem::NamespaceUnreadable { relay, namespace } => format!(
                "cannot read the labels of namespace {namespace} to check ClusterSmtpRelay {relay}'s allowedNamespaces; will retry"
            ),
        }
    }
}

/// The relay object an identity uses, as the shared cache holds it.
#[derive(Clone, Debug)]
pub enum RelayObject {
    Namespaced(Arc<SmtpRelay>),
    Cluster(Arc<ClusterSmtpRelay>),
}

/// Everything an identity reconcile read before deciding.
#[derive(Clone, Debug)]
pub struct Observed {
    pub relay: Result<RelayView, RelayProblem>,
    /// The relay object behind `relay`, to resolve its session target from.
    pub object: Option<RelayObject>,
    /// The address's domain, when it was read from DNS now.
    pub domain: DomainObservation,
    /// When the domain is due again.
    pub domain_due: Option<Duration>,
}

impl RelayObject {
    pub fn spec(&self) -> &SmtpRelaySpec {
        match self {
            RelayObject::Namespaced(r) => &r.spec,
            RelayObject::Cluster(c) => &c.spec.relay,
        }
    }
}

/// What observing the address's domain found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DomainObservation {
    /// Not due, or not knowable now: the status keeps what it has.
    #[default]
    Unchanged,
    /// The operator runs without deliverability checks: nothing is reported.
    Off,
    /// Read from DNS now.
    Checked(Box<crate::api::DomainDeliverability>),
    /// The relay's sending addresses cannot be known (its host does not resolve
    /// through the deliverability resolver): why, in words.
    RelayUnknown(String),
}

/// Read the address's domain from DNS when it is due (the relay's verification
/// interval, or a change of the domain, sending addresses or selectors).
async fn observe_domain(
    ctx: &Context,
    spec: &SenderIdentitySpec,
    previous: Option<&crate::api::DomainDeliverability>,
    object: &RelayObject,
) -> (DomainObservation, Option<Duration>) {
    use crate::deliverability::{DomainQuery, Miss, verdict};
    let Some(checker) = ctx.settings.deliverability.as_ref() else {
        return (DomainObservation::Off, None);
    };
    let relay = object.spec();
    let interval = parse_duration("verification.interval", &relay.verification.interval)
        .ok()
        .unwrap_or(Duration::from_secs(3600));
    let sending = match checker
        .sending_addresses(&relay.deliverability, &relay.host, false)
        .await
    {
        Ok(s) => s,
        Err(Miss::NotFound) => {
            let why = format!(
                "the relay's sending addresses are unknown: {} does not resolve through the deliverability checks' resolver (an in-cluster Service name?); set spec.deliverability.sendingAddresses on the relay to the addresses receivers see",
                relay.host
            );
            return (DomainObservation::RelayUnknown(why), Some(interval));
        }
        // No answer now: keep what is known, try again soon.
        Err(Miss::Temporary(_)) => {
            return (
                DomainObservation::Unchanged,
                Some(verdict::TEMPORARY_RETRY.min(interval)),
            );
        }
    };
    let query = DomainQuery::for_identity(spec, relay, sending);
    if let Some(wait) = verdict::domain_due(previous, &query.inputs(), interval, Timestamp::now()) {
        return (DomainObservation::Unchanged, Some(wait));
    }
    let fresh = (*checker.check_domain(&query).await).clone();
    let wait = if verdict::has_temporary_failure(&fresh).is_some() {
        verdict::TEMPORARY_RETRY.min(interval)
    } else {
        interval
    };
    (DomainObservation::Checked(Box::new(fresh)), Some(wait))
}

/// The relay's session target (credentials included), its TLS mode and custom headers.
#[derive(Debug)]
pub struct RelayTarget {
    pub target: smtp::Target,
    pub mode: TlsMode,
    pub headers: Vec<(String, String)>,
}

/// Gather: the relay the identity uses, from the shared caches (and the namespace's
/// labels for a cluster relay that restricts namespaces). An unreadable namespace is
/// an error of the reconcile (retried), never a status.
pub(super) async fn observe(
    ctx: &Context,
    namespace: &str,
    spec: &SenderIdentitySpec,
    previous: Option<&SenderIdentityStatus>,
) -> Result<Observed, Error> {
    match find_relay(ctx, namespace, spec).await {
        Ok((view, object)) => {
            let waiting = previous.is_none()
                && view
                    .not_ready
                    .as_ref()
                    .is_some_and(|(r, _)| r == reasons::NOT_VERIFIED);
            let previous = previous.and_then(|s| s.deliverability.as_deref());
            // A new identity waiting for its relay's first verification writes nothing
            // yet (first_status_can_wait): no DNS check for it either.
            let (domain, domain_due) = if waiting {
                (DomainObservation::Unchanged, None)
            } else {
                observe_domain(ctx, spec, previous, &object).await
            };
            Ok(Observed {
                relay: Ok(view),
                object: Some(object),
                domain,
                domain_due,
            })
        }
        Err(p @ RelayProblem::NamespaceUnreadable { .. }) => Err(Error::Transient(p.message())),
        Err(p) => Ok(Observed {
            relay: Err(p),
            object: None,
            domain: DomainObservation::Unchanged,
            domain_due: None,
        }),
    }
}

async fn find_relay(
    ctx: &Context,
    namespace: &str,
    spec: &SenderIdentitySpec,
) -> Result<(RelayView, RelayObject), RelayProblem> {
    match &spec.relay_ref {
        Some(r) if r.kind == RelayKindRef::SmtpRelay => {
            // A keyed read: a scan of the store per reconcile would cost, with 2,000
            // relays and 10,000 identities, 20 million clones on a cold start.
            let key = ObjectRef::<SmtpRelay>::new(&r.name).within(namespace);
            let relay = ctx.relays.get(&key).ok_or_else(|| {
                RelayProblem::NotFound(format!("SmtpRelay {namespace}/{}", r.name))
            })?;
            let binding = relay_binding(
                RelayKindRef::SmtpRelay,
                Some(namespace),
                &r.name,
                &relay.spec,
                namespace,
            );
            let view = relay_view(
                RelayKindRef::SmtpRelay,
                &r.name,
                &relay.spec,
                relay.status.as_ref(),
                true,
                true,
                binding,
            );
            Ok((view, RelayObject::Namespaced(relay)))
        }
        other => {
            let cluster = match other {
                Some(r) => ctx
                    .cluster_relays
                    .get(&ObjectRef::new(&r.name))
                    .ok_or_else(|| {
                        RelayProblem::NotFound(format!("ClusterSmtpRelay {}", r.name))
                    })?,
                None => {
                    super::super::cluster_smtp_relay::honoured_default(&ctx.cluster_relays.state())
                        .ok_or(RelayProblem::NoDefault)?
                }
            };
            if let Some(selector) = &cluster.spec.allowed_namespaces {
                let ns_api: Api<Namespace> = Api::all(ctx.client.clone());
                let (relay, namespace) = (cluster.name_any(), namespace.to_string());
                // Fail closed: without the labels, the namespace is not allowed.
                let labels = match ns_api.get_opt(&namespace).await {
                    Ok(n) => n.and_then(|n| n.metadata.labels).unwrap_or_default(),
                    Err(_) => return Err(RelayProblem::NamespaceUnreadable { relay, namespace }),
                };
                if !selector_matches(selector, &labels) {
                    return Err(RelayProblem::NamespaceNotAllowed { relay, namespace });
                }
            }
            let binding = relay_binding(
                RelayKindRef::ClusterSmtpRelay,
                None,
                &cluster.name_any(),
                &cluster.spec.relay,
                &ctx.settings.operator_namespace,
            );
            let view = relay_view(
                RelayKindRef::ClusterSmtpRelay,
                &cluster.name_any(),
                &cluster.spec.relay,
                cluster.status.as_ref(),
                cluster.spec.allow_credential_publishing,
                cluster.spec.allow_unconfirmed_senders,
                binding,
            );
            Ok((view, RelayObject::Cluster(cluster)))
        }
    }
}

/// Resolve the relay's session target (credentials included) the way the relay
/// controller does: one Secret read and one TLS setup. For a confirmation mail
/// (`for_mail`), reads of the last seconds serve ([`crate::k8s::source::RecentReads`]);
/// credentials to publish are always read fresh.
pub(super) async fn relay_target(
    ctx: &Context,
    relay: &RelayObject,
    for_mail: bool,
) -> Result<RelayTarget, String> {
    let fresh = KubeSource {
        client: ctx.client.clone(),
        input_key: ctx.settings.input_key.clone(),
    };
    if for_mail {
        let source = crate::k8s::source::RecentSource {
            inner: fresh,
            recent: &ctx.mail_inputs,
        };
        resolve_target(ctx, relay, &source).await
    } else {
        resolve_target(ctx, relay, &fresh).await
    }
}

async fn resolve_target(
    ctx: &Context,
    relay: &RelayObject,
    source: &impl crate::relay::Source,
) -> Result<RelayTarget, String> {
    let (ns, name, spec, status, kind) = match relay {
        RelayObject::Namespaced(r) => (
            r.namespace(),
            r.name_any(),
            &r.spec,
            r.status.as_ref(),
            "SmtpRelay",
        ),
        RelayObject::Cluster(c) => (
            None,
            c.name_any(),
            &c.spec.relay,
            c.status.as_ref(),
            "ClusterSmtpRelay",
        ),
    };
    let r = RelayRef {
        kind,
        namespace: ns.as_deref(),
        name: &name,
        generation: None,
        spec,
        status,
        default_namespace: &ctx.settings.operator_namespace,
        destinations: &ctx.settings.destinations,
        blocklists: None,
    };
    let resolved = relay::resolve(&r, source).await.map_err(|p| p.message)?;
    let headers = spec
        .custom_headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    Ok(RelayTarget {
        target: resolved.target,
        mode: spec.tls.mode,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_changes_with_the_destination_only() {
        let spec: SmtpRelaySpec = serde_json::from_value(serde_json::json!({
            "host": "smtp.example.test", "defaultSender": {"address": "a@example.test"},
            "auth": {"credentialsSecretRef": {"name": "creds"}}}))
        .expect("spec");
        let bind = |s: &SmtpRelaySpec| {
            relay_binding(RelayKindRef::SmtpRelay, Some("team"), "corp", s, "team")
        };
        let base = bind(&spec);
        assert_eq!(
            base,
            "SmtpRelay team/corp via smtp.example.test:587 (StartTls, credentials team/creds)"
        );
        let mut same = spec.clone();
        same.title = Some("renamed".into());
        same.default_sender.name = Some("Other name".into());
        same.port = Some(587);
        assert_eq!(bind(&same), base, "cosmetic changes and explicit defaults");
        let changes: [fn(&mut SmtpRelaySpec); 5] = [
            |s| s.host = "mx.attacker.test".into(),
            |s| s.port = Some(2525),
            |s| s.tls.mode = crate::api::TlsMode::None,
            |s| s.auth = None,
            |s| {
                if let Some(a) = s.auth.as_mut() {
                    a.credentials_secret_ref.name = "other".into();
                }
            },
        ];
        for change in changes {
            let mut s = spec.clone();
            change(&mut s);
            assert_ne!(bind(&s), base);
        }
        assert_ne!(
            relay_binding(RelayKindRef::ClusterSmtpRelay, None, "corp", &spec, "ops"),
            base
        );
    }

    #[test]
    fn label_selectors() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
        let labels = BTreeMap::from([("team".to_string(), "sales".to_string())]);
        let sel = |ml: &[(&str, &str)], ex: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: Some(
                ml.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: Some(ex),
        };
        let req = |k: &str, op: &str, v: &[&str]| LabelSelectorRequirement {
            key: k.into(),
            operator: op.into(),
            values: Some(v.iter().map(|s| s.to_string()).collect()),
        };
        assert!(selector_matches(
            &sel(&[("team", "sales")], vec![]),
            &labels
        ));
        assert!(!selector_matches(&sel(&[("team", "ops")], vec![]), &labels));
        assert!(selector_matches(
            &sel(&[], vec![req("team", "In", &["sales", "ops"])]),
            &labels
        ));
        assert!(!selector_matches(
            &sel(&[], vec![req("team", "NotIn", &["sales"])]),
            &labels
        ));
        assert!(selector_matches(
            &sel(&[], vec![req("team", "Exists", &[])]),
            &labels
        ));
        assert!(selector_matches(
            &sel(&[], vec![req("env", "DoesNotExist", &[])]),
            &labels
        ));
        assert!(!selector_matches(
            &sel(&[], vec![req("team", "Bogus", &[])]),
            &labels
        ));
        assert!(
            selector_matches(&LabelSelector::default(), &labels),
            "empty selector matches all"
        );
    }
}
