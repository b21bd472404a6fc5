//! `kubectl smtprelay`: the seed's SMTP servers table in one view, the test button,
//! resend and confirm, and export. All actions are requests on the resources that
//! the controller answers in status; nothing here talks SMTP.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::api::identity_conditions as conditions;
use crate::api::relay_conditions as types;
use crate::api::{CODE_ANNOTATION, RESEND_ANNOTATION, TEST_REQUEST_ANNOTATION};
use crate::api::{
    ClusterSmtpRelay, ConditionStatus, LastTest, SenderIdentity, SmtpRelay, SmtpRelaySpec,
    SmtpRelayStatus,
};
use crate::relay::human_micros;
pub use crate::report::csv::to_csv;

/// Errors of the plugin, for a human at a terminal.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("no answer from the operator within {0:?} (is it running?)")]
    Timeout(Duration),
    #[error("{0}")]
    Invalid(String),
}

/// One line of the table: a relay or an identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub title: String,
    pub host: String,
    pub port: String,
    pub security: String,
    pub auth: String,
    pub user: String,
    pub sender: String,
    pub usage: String,
    pub confirmation: String,
    pub link: String,
    pub ready: String,
    pub reason: String,
    pub last_verified: String,
    pub failing_step: String,
    /// The default sender's (relays) or the identity's address, and display name.
    pub sender_address: String,
    pub sender_name: String,
    /// Median and 95th percentile total verification time of the relay's last
    /// verifications (status.recentVerifications), in microseconds.
    pub latency_p50_micros: Option<i64>,
    pub latency_p95_micros: Option<i64>,
    /// Failed verifications among the last ones, e.g. `1/20`.
    pub recent_failures: String,
    /// The round-trip delivery of the last verification, when the relay probes it.
    pub delivery: String,
    /// DNS checks: a relay's NotListed (blocklists), an identity's DomainAuthenticated
    /// (SPF, DKIM, DMARC, MX), as their reasons.
    pub deliverability: String,
}

/// The deliverability column of a relay: its blocklist answer.
fn blocklist_of(status: Option<&SmtpRelayStatus>) -> String {
    let Some(s) = status else {
        return String::new();
    };
    let Some(c) = s.conditions.iter().find(|c| c.type_ == types::NOT_LISTED) else {
        return String::new();
    };
    match s.blocklist.as_ref().filter(|b| !b.listings.is_empty()) {
        Some(b) => {
            let mut zones: Vec<&str> = b.listings.iter().map(|l| l.zone.as_str()).collect();
            zones.dedup();
            format!("{} ({})", c.reason, zones.join(","))
        }
        None => c.reason.clone(),
    }
}

fn ready_of(conditions: &[crate::api::Condition]) -> (String, String) {
    conditions
        .iter()
        .find(|c| c.type_ == types::READY)
        .map(|c| {
            let s = match c.status {
                ConditionStatus::True => "True",
                ConditionStatus::False => "False",
                ConditionStatus::Unknown => "Unknown",
            };
            (s.to_string(), c.reason.clone())
        })
        .unwrap_or_else(|| ("Unknown".into(), String::new()))
}

fn relay_row(
    kind: &str,
    namespace: &str,
    name: &str,
    spec: &SmtpRelaySpec,
    status: Option<&SmtpRelayStatus>,
    user: String,
) -> Row {
    let (ready, reason) = ready_of(status.map(|s| s.conditions.as_slice()).unwrap_or(&[]));
    let trend = status.and_then(|s| s.recent_verifications.as_ref());
    let port = spec
        .port
        .map(|p| p.to_string())
        .or_else(|| status.and_then(|s| s.port).map(|p| p.to_string()))
        .unwrap_or_else(|| spec.tls.mode.default_port().to_string());
    Row {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        title: spec.title.clone().unwrap_or_default(),
        host: spec.host.clone(),
        port,
        security: format!("{:?}", spec.tls.mode),
        auth: spec
            .auth
            .as_ref()
            .map(|a| format!("{:?}", a.mechanism))
            .unwrap_or_else(|| "None".into()),
        user,
        sender: match &spec.default_sender.name {
            Some(n) => format!("{n} <{}>", spec.default_sender.address),
            None => spec.default_sender.address.clone(),
        },
        usage: if spec.usage.is_empty() {
            "all".into()
        } else {
            spec.usage.join(",")
        },
        confirmation: String::new(),
        link: String::new(),
        ready,
        reason,
        last_verified: status
            .and_then(|s| s.last_verification.as_ref())
            .map(|l| l.time.clone())
            .unwrap_or_default(),
        failing_step: status
            .and_then(|s| s.last_verification.as_ref())
            .and_then(|l| l.failed_step.clone())
            .unwrap_or_default(),
        sender_address: spec.default_sender.address.clone(),
        sender_name: spec.default_sender.name.clone().unwrap_or_default(),
        latency_p50_micros: trend.and_then(|t| t.p50_micros),
        latency_p95_micros: trend.and_then(|t| t.p95_micros),
        recent_failures: trend
            .map(|t| format!("{}/{}", t.failures, t.count))
            .unwrap_or_default(),
        delivery: status.map(crate::report::delivery_of).unwrap_or_default(),
        deliverability: blocklist_of(status),
    }
}

/// The user name shown for a relay: read from its Secret when the caller may, else
/// where it comes from.
fn user_label(
    spec: &SmtpRelaySpec,
    secrets: &BTreeMap<(String, String), Secret>,
    ns: &str,
) -> String {
    let Some(auth) = &spec.auth else {
        return String::new();
    };
    let r = &auth.credentials_secret_ref;
    let ns = r.namespace.as_deref().unwrap_or(ns);
    secrets
        .get(&(ns.to_string(), r.name.clone()))
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(&r.username_key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .unwrap_or_else(|| format!("secret/{}", r.name))
}

/// Build the table rows (pure).
pub fn rows(
    relays: &[SmtpRelay],
    cluster_relays: &[ClusterSmtpRelay],
    identities: &[SenderIdentity],
    secrets: &BTreeMap<(String, String), Secret>,
) -> Vec<Row> {
    let mut out = Vec::new();
    for r in cluster_relays {
        let user = user_label(&r.spec.relay, secrets, "");
        out.push(relay_row(
            "ClusterSmtpRelay",
            "",
            &r.name_any(),
            &r.spec.relay,
            r.status.as_ref(),
            user,
        ));
    }
    for r in relays {
        let ns = r.namespace().unwrap_or_default();
        let user = user_label(&r.spec, secrets, &ns);
        out.push(relay_row(
            "SmtpRelay",
            &ns,
            &r.name_any(),
            &r.spec,
            r.status.as_ref(),
            user,
        ));
    }
    for i in identities {
        let ns = i.namespace().unwrap_or_default();
        let status = i.status.as_ref();
        let relay_label = status.and_then(|s| s.relay.clone()).unwrap_or_default();
        // The relay row this identity sends through, for host/port/security/auth/user.
        let via = out
            .iter()
            .find(|row| {
                format!("{} {}", row.kind, row.name) == relay_label
                    && (row.kind == "ClusterSmtpRelay" || row.namespace == ns)
            })
            .cloned()
            .unwrap_or_default();
        let (ready, reason) = ready_of(status.map(|s| s.conditions.as_slice()).unwrap_or(&[]));
        let failing = status
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ != types::READY && c.status != ConditionStatus::True)
            })
            .map(|c| c.type_.clone())
            .unwrap_or_default();
        let confirmation = status.and_then(|s| s.confirmation.as_ref());
        let sender_address = status
            .and_then(|s| s.effective_from.clone())
            .unwrap_or_else(|| i.spec.address.clone());
        out.push(Row {
            kind: "SenderIdentity".into(),
            namespace: ns.clone(),
            name: i.name_any(),
            title: relay_label,
            host: via.host,
            port: via.port,
            security: via.security,
            auth: via.auth,
            user: via.user,
            sender: sender_address.clone(),
            sender_address,
            sender_name: i.spec.display_name.clone().unwrap_or_default(),
            latency_p50_micros: via.latency_p50_micros,
            latency_p95_micros: via.latency_p95_micros,
            recent_failures: via.recent_failures,
            delivery: via.delivery,
            deliverability: status
                .and_then(|s| {
                    s.conditions
                        .iter()
                        .find(|c| c.type_ == conditions::DOMAIN_AUTHENTICATED)
                })
                .map(|c| c.reason.clone())
                .unwrap_or_default(),
            usage: if i.spec.usage.is_empty() {
                "all".into()
            } else {
                i.spec.usage.join(",")
            },
            confirmation: confirmation
                .map(|c| format!("{:?}", c.state))
                .unwrap_or_default(),
            link: confirmation
                .and_then(|c| c.page_url.clone())
                .unwrap_or_default(),
            ready,
            reason,
            last_verified: via.last_verified,
            failing_step: if conditions::RELAY_READY == failing {
                via.failing_step
            } else {
                failing
            },
        });
    }
    out
}

const COLUMNS: [&str; 18] = [
    "KIND",
    "NAMESPACE",
    "NAME",
    "HOST",
    "PORT",
    "SECURITY",
    "AUTH",
    "USER",
    "SENDER",
    "USAGE",
    "CONFIRMATION",
    "LINK",
    "READY",
    "LAST VERIFIED",
    "P50/P95",
    "FAILED",
    "FAILING",
    "DELIVERABILITY",
];

fn cells(r: &Row) -> [String; 18] {
    let failing = match (
        r.failing_step.is_empty(),
        r.reason.is_empty() || r.ready == "True",
    ) {
        (true, _) => String::new(),
        (false, true) => r.failing_step.clone(),
        (false, false) => format!("{} ({})", r.failing_step, r.reason),
    };
    [
        r.kind.clone(),
        r.namespace.clone(),
        r.name.clone(),
        r.host.clone(),
        r.port.clone(),
        r.security.clone(),
        r.auth.clone(),
        r.user.clone(),
        r.sender.clone(),
        r.usage.clone(),
        r.confirmation.clone(),
        r.link.clone(),
        r.ready.clone(),
        r.last_verified.clone(),
        match (r.latency_p50_micros, r.latency_p95_micros) {
            (Some(p50), Some(p95)) => format!("{}/{}", human_micros(p50), human_micros(p95)),
            _ => String::new(),
        },
        r.recent_failures.clone(),
        failing,
        r.deliverability.clone(),
    ]
}

/// The table, aligned like `kubectl get`.
pub fn render_table(rows: &[Row]) -> String {
    let mut all: Vec<Vec<String>> = vec![COLUMNS.iter().map(|c| c.to_string()).collect()];
    all.extend(rows.iter().map(|r| cells(r).to_vec()));
    crate::table::aligned(&all, "-")
}

/// Read everything the table shows. `namespace` None means all namespaces.
pub async fn collect(client: &Client, namespace: Option<&str>) -> Result<Vec<Row>, PluginError> {
    let lp = ListParams::default();
    let (relays, identities): (Api<SmtpRelay>, Api<SenderIdentity>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let relays = relays.list(&lp).await?.items;
    let cluster = Api::<ClusterSmtpRelay>::all(client.clone())
        .list(&lp)
        .await?
        .items;
    let identities = identities.list(&lp).await?.items;
    let mut secrets = BTreeMap::new();
    let wanted = relays
        .iter()
        .filter_map(|r| {
            Some((
                r.namespace()?,
                r.spec.auth.as_ref()?.credentials_secret_ref.name.clone(),
            ))
        })
        .chain(cluster.iter().filter_map(|r| {
            let a = r.spec.relay.auth.as_ref()?;
            Some((
                a.credentials_secret_ref
                    .namespace
                    .clone()
                    .unwrap_or_default(),
                a.credentials_secret_ref.name.clone(),
            ))
        }));
    for (ns, name) in wanted {
        if ns.is_empty() || secrets.contains_key(&(ns.clone(), name.clone())) {
            continue;
        }
        // Best effort: without read access the table shows where the user comes from.
        if let Ok(Some(s)) = Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt(&name)
            .await
        {
            secrets.insert((ns, name), s);
        }
    }
    Ok(rows(&relays, &cluster, &identities, &secrets))
}

fn merge_annotation(key: &str, value: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {key: value}}})
}

/// A request id: time-ordered and unique enough for one user's requests.
pub fn request_id() -> String {
    use rand::Rng as _;
    let suffix: u32 = rand::rng().random();
    format!("{}-{suffix:08x}", jiff::Timestamp::now().as_second())
}

/// Ask the operator for a test send and wait for its answer.
pub async fn test_send(
    client: &Client,
    cluster: bool,
    namespace: &str,
    name: &str,
    recipient: &str,
    timeout: Duration,
) -> Result<LastTest, PluginError> {
    if recipient.contains(char::is_whitespace) || !recipient.contains('@') {
        return Err(PluginError::Invalid(format!(
            "{recipient:?} is not an address"
        )));
    }
    let id = request_id();
    let patch = merge_annotation(TEST_REQUEST_ANNOTATION, &format!("{id} {recipient}"));
    let pp = PatchParams::default();
    let deadline = tokio::time::Instant::now() + timeout;
    macro_rules! wait_for {
        ($api:expr, $kind:literal) => {{
            let api = $api;
            api.patch(name, &pp, &Patch::Merge(&patch))
                .await
                .map_err(|e| not_found(e, $kind, name))?;
            loop {
                let obj = api.get(name).await?;
                if let Some(t) = obj
                    .status
                    .and_then(|s| s.last_test)
                    .filter(|t| t.request_id == id)
                {
                    return Ok(t);
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(PluginError::Timeout(timeout));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }};
    }
    if cluster {
        wait_for!(
            Api::<ClusterSmtpRelay>::all(client.clone()),
            "ClusterSmtpRelay"
        )
    } else {
        wait_for!(
            Api::<SmtpRelay>::namespaced(client.clone(), namespace),
            "SmtpRelay"
        )
    }
}

fn not_found(e: kube::Error, kind: &'static str, name: &str) -> PluginError {
    match e {
        kube::Error::Api(s) if s.code == 404 => PluginError::NotFound {
            kind,
            name: name.into(),
        },
        e => PluginError::Api(e),
    }
}

/// Ask for a new confirmation attempt; returns the request value.
pub async fn resend(client: &Client, namespace: &str, name: &str) -> Result<String, PluginError> {
    let value = request_id();
    Api::<SenderIdentity>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&merge_annotation(RESEND_ANNOTATION, &value)),
        )
        .await
        .map_err(|e| not_found(e, "SenderIdentity", name))?;
    Ok(value)
}

/// Give the mailed code back and wait for the verdict: Ok(true) confirmed,
/// Ok(false) rejected (with the reason in the message).
pub async fn confirm(
    client: &Client,
    namespace: &str,
    name: &str,
    code: &str,
    timeout: Duration,
) -> Result<(bool, String), PluginError> {
    let api = Api::<SenderIdentity>::namespaced(client.clone(), namespace);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&merge_annotation(CODE_ANNOTATION, code)),
    )
    .await
    .map_err(|e| not_found(e, "SenderIdentity", name))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let obj = api.get(name).await?;
        let processed = !obj.annotations().contains_key(CODE_ANNOTATION);
        let confirmed = obj
            .status
            .as_ref()
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == conditions::CONFIRMED)
            })
            .cloned();
        if processed && let Some(c) = confirmed {
            return Ok((c.status == ConditionStatus::True, c.message));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(PluginError::Timeout(timeout));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
