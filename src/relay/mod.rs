//! Shared logic of SmtpRelay and ClusterSmtpRelay: observe (resolve Secrets),
//! verify (one SMTP session), decide (pure: facts → status and event).
//!
//! The offline `verify` command runs [`evaluate`] with a file-backed [`Source`];
//! the controller runs it with the API server behind the same trait.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::api::{
    AuthMechanismSpec, CaBundleKind, Condition, ConditionStatus, LastTest, LastVerification,
    ServerStatus, SmtpRelaySpec, SmtpRelayStatus, TlsMode,
};
use crate::smtp::{self, HostLimiter, Outcome, Step};

/// Condition types, in the order they are written.
pub use crate::api::relay_conditions as types;

/// Reasons that are not SMTP failures (those come from [`FailureReason`]).
pub mod reasons {
    pub const VERIFIED: &str = "Verified";
    pub const RESOLVED: &str = "Resolved";
    pub const NOT_REQUIRED: &str = "NotRequired";
    pub const NOT_ATTEMPTED: &str = "NotAttempted";
    pub const CONNECTED: &str = "Connected";
    pub const TLS_ESTABLISHED: &str = "TlsEstablished";
    pub const TLS_DISABLED: &str = "TlsDisabled";
    pub const CERTIFICATE_NOT_VERIFIED: &str = "CertificateNotVerified";
    pub const AUTHENTICATED: &str = "Authenticated";
    pub const ACCEPTED: &str = "Accepted";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";
    pub const SECRET_FORBIDDEN: &str = "SecretForbidden";
    pub const SECRET_NOT_LABELLED: &str = "SecretNotLabelled";
    pub const CA_BUNDLE_NOT_FOUND: &str = "CaBundleNotFound";
    pub const CA_BUNDLE_INVALID: &str = "CaBundleInvalid";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The API server could not be asked (timeout, 5xx): retried, not reported.
    pub const SOURCE_UNAVAILABLE: &str = "SourceUnavailable";
    pub const HONOURED: &str = "Honoured";
    pub const DEFAULT_CONFLICT: &str = "DefaultConflict";
}

/// A Secret or ConfigMap's data, as the observe step sees it. Its Debug output shows
/// the keys only.
#[derive(Clone, Default)]
pub struct Fetched {
    pub data: BTreeMap<String, Vec<u8>>,
    /// resourceVersion; empty when read from a file.
    pub version: String,
    pub labels: BTreeMap<String, String>,
}

pub use crate::api::CREDENTIALS_LABEL;

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("version", &self.version)
            .finish()
    }
}

/// Why an input could not be read (other than "it does not exist").
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the operator is not allowed to read {0}")]
    Forbidden(String),
    #[error("reading {what}: {message}")]
    Other { what: String, message: String },
}

/// Where Secrets and ConfigMaps come from: the API server, or manifest files.
pub trait Source {
    fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Fetched>, SourceError>> + Send;
    fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Fetched>, SourceError>> + Send;
}

/// Which relay is being evaluated.
#[derive(Clone, Debug)]
pub struct RelayRef<'a> {
    /// "SmtpRelay" or "ClusterSmtpRelay".
    pub kind: &'static str,
    /// Object namespace (SmtpRelay) — None for ClusterSmtpRelay.
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub generation: Option<i64>,
    pub spec: &'a SmtpRelaySpec,
    pub status: Option<&'a SmtpRelayStatus>,
    /// Namespace for ClusterSmtpRelay references without one (the operator's).
    pub default_namespace: &'a str,
    /// Where the operator may connect (the relay's kind picks the defaults).
    pub destinations: &'a Arc<smtp::DestinationPolicy>,
}

impl RelayRef<'_> {
    pub fn label(&self) -> String {
        match self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    /// The destination rules of this relay's kind: only a ClusterSmtpRelay (no
    /// namespace) gets the cluster administrator's defaults.
    pub fn destination_scope(&self) -> smtp::Scope {
        if self.kind == "ClusterSmtpRelay" && self.namespace.is_none() {
            smtp::Scope::Cluster
        } else {
            smtp::Scope::Namespaced
        }
    }

    /// Namespace a reference resolves in: a SmtpRelay always reads its own.
    fn ref_namespace<'b>(&'b self, explicit: Option<&'b str>) -> &'b str {
        match self.namespace {
            Some(own) => own,
            None => explicit.unwrap_or(self.default_namespace),
        }
    }
}

/// A problem with the inputs that prevents a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputProblem {
    /// Which condition reports it (CredentialsResolved, SecureTransport or Ready).
    pub condition: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The resolved session target and the versions of the inputs it came from.
#[derive(Debug)]
pub struct Resolved {
    pub target: smtp::Target,
    pub inputs: String,
}

/// Parse a Go duration as the API server does (`1h30m`, `90s`), checked: no value
/// panics, and values beyond what the API server accepts are refused.
pub fn parse_duration(field: &str, value: &str) -> Result<Duration, InputProblem> {
    crate::duration::parse(value).map_err(|why| InputProblem {
        condition: types::READY,
        reason: reasons::INVALID_SPEC,
        message: format!(
            "{field} {:?} is not a valid duration: {why}",
            crate::table::clip(value, 40)
        ),
    })
}

/// Interval and timeout, validated (the CRD enforces the same bounds at apply time).
pub fn schedule(spec: &SmtpRelaySpec) -> Result<(Duration, Duration), InputProblem> {
    let interval = parse_duration("verification.interval", &spec.verification.interval)?;
    let timeout = parse_duration("verification.timeout", &spec.verification.timeout)?;
    if interval < Duration::from_secs(60) {
        return Err(InputProblem {
            condition: types::READY,
            reason: reasons::INVALID_SPEC,
            message: "verification.interval must be at least 1m".into(),
        });
    }
    if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(300) {
        return Err(InputProblem {
            condition: types::READY,
            reason: reasons::INVALID_SPEC,
            message: "verification.timeout must be between 1s and 5m".into(),
        });
    }
    Ok((interval, timeout))
}

/// The port used: spec.port or the mode's conventional port.
pub fn effective_port(spec: &SmtpRelaySpec) -> Result<u16, InputProblem> {
    match spec.port {
        None => Ok(spec.tls.mode.default_port()),
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or(InputProblem {
                condition: types::READY,
                reason: reasons::INVALID_SPEC,
                message: format!("port {p} is out of range 1-65535"),
            }),
    }
}

/// Observe: read the Secret and CA bundle a relay references and build the target.
pub async fn resolve(relay: &RelayRef<'_>, source: &impl Source) -> Result<Resolved, InputProblem> {
    let spec = relay.spec;
    let (_, timeout) = schedule(spec)?;
    let port = effective_port(spec)?;
    // The CRD's pattern refuses these at apply time; objects that bypassed it (or an
    // older CRD) are refused here, with the field named, before anything else.
    for (field, value) in [
        ("host", Some(&spec.host)),
        ("tls.serverName", spec.tls.server_name.as_ref()),
    ] {
        if let Some(value) = value
            && let Err(why) = crate::api::check_host(value)
        {
            return Err(InputProblem {
                condition: types::READY,
                reason: reasons::INVALID_SPEC,
                message: format!("{field} {:?} {why}", crate::table::clip(value, 64)),
            });
        }
    }
    if let Some(h) = spec
        .custom_headers
        .iter()
        .find(|h| crate::api::RESERVED_HEADERS.contains(&h.name.to_ascii_lowercase().as_str()))
    {
        // The CRD refuses this at apply time; objects that bypassed it are refused here.
        return Err(InputProblem {
            condition: types::READY,
            reason: reasons::INVALID_SPEC,
            message: format!(
                "customHeaders: {} is set by the operator and cannot be overridden",
                h.name
            ),
        });
    }
    if relay.namespace.is_some()
        && let Some(field) = spec.cross_namespace_refs().first()
    {
        return Err(InputProblem {
            condition: types::READY,
            reason: reasons::INVALID_SPEC,
            message: format!("{field} {}", crate::api::NAMESPACED_REF_MESSAGE),
        });
    }
    let mut versions = vec![format!("g{}", relay.generation.unwrap_or(0))];

    let credentials = match &spec.auth {
        None => None,
        Some(auth) => {
            let r = &auth.credentials_secret_ref;
            let ns = relay.ref_namespace(r.namespace.as_deref());
            let what = format!("Secret {ns}/{}", r.name);
            let secret = source.secret(ns, &r.name).await.map_err(|e| InputProblem {
                condition: types::CREDENTIALS_RESOLVED,
                reason: match e {
                    SourceError::Forbidden(_) => reasons::SECRET_FORBIDDEN,
                    SourceError::Other { .. } => reasons::SOURCE_UNAVAILABLE,
                },
                message: e.to_string(),
            })?;
            let secret = secret.ok_or_else(|| InputProblem {
                condition: types::CREDENTIALS_RESOLVED,
                reason: reasons::SECRET_NOT_FOUND,
                message: format!("{what} does not exist"),
            })?;
            if secret.labels.get(CREDENTIALS_LABEL).map(String::as_str) != Some("true") {
                return Err(InputProblem {
                    condition: types::CREDENTIALS_RESOLVED,
                    reason: reasons::SECRET_NOT_LABELLED,
                    message: format!(
                        "{what} is not marked for relay use: label it {CREDENTIALS_LABEL}=true"
                    ),
                });
            }
            let key = |k: &str| -> Result<String, InputProblem> {
                let bytes = secret.data.get(k).ok_or_else(|| InputProblem {
                    condition: types::CREDENTIALS_RESOLVED,
                    reason: reasons::SECRET_KEY_MISSING,
                    message: format!(
                        "{what} has no key {k:?} (keys: {})",
                        secret.data.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                })?;
                String::from_utf8(bytes.clone()).map_err(|_| InputProblem {
                    condition: types::CREDENTIALS_RESOLVED,
                    reason: reasons::SECRET_KEY_MISSING,
                    message: format!("{what} key {k:?} is not UTF-8 text"),
                })
            };
            let username = key(&r.username_key)?;
            let password = key(&r.password_key)?;
            versions.push(format!("s{}", secret.version));
            Some(smtp::Credentials {
                mechanism: match auth.mechanism {
                    AuthMechanismSpec::Plain => smtp::AuthMechanism::Plain,
                    AuthMechanismSpec::Login => smtp::AuthMechanism::Login,
                },
                username,
                password: smtp::Password::new(password),
            })
        }
    };

    let ca_bundle_pem = match &spec.tls.ca_bundle_ref {
        None => None,
        Some(ca) => {
            let ns = relay.ref_namespace(ca.namespace.as_deref());
            let what = format!("{:?} {ns}/{}", ca.kind, ca.name);
            let problem = |reason, message| InputProblem {
                condition: types::SECURE_TRANSPORT,
                reason,
                message,
            };
            let fetched = match ca.kind {
                CaBundleKind::Secret => source.secret(ns, &ca.name).await,
                CaBundleKind::ConfigMap => source.config_map(ns, &ca.name).await,
            }
            .map_err(|e| match e {
                SourceError::Forbidden(_) => problem(reasons::CA_BUNDLE_NOT_FOUND, e.to_string()),
                SourceError::Other { .. } => problem(reasons::SOURCE_UNAVAILABLE, e.to_string()),
            })?
            .ok_or_else(|| {
                problem(
                    reasons::CA_BUNDLE_NOT_FOUND,
                    format!("{what} does not exist"),
                )
            })?;
            let pem = fetched.data.get(&ca.key).cloned().ok_or_else(|| {
                problem(
                    reasons::CA_BUNDLE_NOT_FOUND,
                    format!("{what} has no key {:?}", ca.key),
                )
            })?;
            versions.push(format!("c{}", fetched.version));
            Some(pem)
        }
    };

    let security = match spec.tls.mode {
        TlsMode::None => smtp::Security::None,
        TlsMode::StartTls => smtp::Security::StartTls,
        TlsMode::Tls => smtp::Security::Tls,
    };
    let mut tls = smtp::TlsSettings {
        server_name: spec.tls.server_name.clone(),
        ca_bundle_pem,
        insecure_skip_verify: spec.tls.insecure_skip_verify,
        prepared: None,
    };
    if security != smtp::Security::None
        && let Err(e) = smtp::prepare_tls(&spec.host, &mut tls)
    {
        return Err(match e {
            smtp::TlsSetupError::CaBundle(message) => InputProblem {
                condition: types::SECURE_TRANSPORT,
                reason: reasons::CA_BUNDLE_INVALID,
                message,
            },
            smtp::TlsSetupError::ServerName(message) => InputProblem {
                condition: types::READY,
                reason: reasons::INVALID_SPEC,
                message,
            },
        });
    }
    let message = spec
        .verification
        .recipient
        .as_ref()
        .map(|to| test_message(spec, to, relay.label()).outgoing());
    Ok(Resolved {
        target: smtp::Target {
            host: spec.host.clone(),
            port,
            security,
            tls,
            credentials,
            message,
            timeout,
            destinations: smtp::Destinations::new(
                Arc::clone(relay.destinations),
                relay.destination_scope(),
            ),
        },
        inputs: versions.join("/"),
    })
}

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

/// When the next verification is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    Now,
    In(Duration),
}

/// First retry delay after a failure; doubles per consecutive failure.
pub const RETRY_BASE: Duration = Duration::from_secs(10);
/// Longest delay between retries of a failing relay.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// Delay before retrying after `failures` consecutive failures (never more than `interval`).
pub fn retry_delay(failures: i32, interval: Duration) -> Duration {
    let exp = u32::try_from(failures.saturating_sub(1).clamp(0, 16)).unwrap_or(0);
    RETRY_BASE
        .saturating_mul(1u32 << exp)
        .min(RETRY_MAX)
        .min(interval)
}

/// Is a verification due? Pure: previous status, current generation and input versions, clock.
pub fn verification_due(
    previous: Option<&SmtpRelayStatus>,
    generation: Option<i64>,
    inputs: &str,
    interval: Duration,
    now: Timestamp,
) -> Due {
    let Some(status) = previous else {
        return Due::Now;
    };
    let Some(last) = &status.last_verification else {
        return Due::Now;
    };
    if status.observed_generation != generation || last.inputs != inputs {
        return Due::Now;
    }
    let Ok(at) = Timestamp::from_str(&last.time) else {
        return Due::Now;
    };
    let wait = if last.result == RESULT_SUCCEEDED {
        interval
    } else {
        retry_delay(status.consecutive_failures, interval)
    };
    let elapsed = now.duration_since(at);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    if elapsed >= wait {
        Due::Now
    } else {
        Due::In(wait - elapsed)
    }
}

pub const RESULT_SUCCEEDED: &str = "Succeeded";
pub const RESULT_FAILED: &str = "Failed";

/// A condition before merging with the previous status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
}

fn desired(
    type_: &'static str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
) -> Desired {
    Desired {
        type_,
        status,
        reason: reason.to_string(),
        message: message.into(),
    }
}

fn condition_of_step(step: Step) -> &'static str {
    match step {
        Step::Dns | Step::Connect | Step::Greeting | Step::Ehlo | Step::Quit => types::CONNECTED,
        Step::Tls | Step::StartTls => types::SECURE_TRANSPORT,
        Step::Auth => types::AUTHENTICATED,
        Step::Mail | Step::Rcpt | Step::Data => types::TEST_MESSAGE_ACCEPTED,
    }
}

/// Decide: the conditions that describe a verification (or why none could run).
pub fn desired_conditions(
    spec: &SmtpRelaySpec,
    port: Option<u16>,
    verified: &Result<Outcome, InputProblem>,
) -> Vec<Desired> {
    use ConditionStatus::{False, True, Unknown};
    let wants_test = spec.verification.recipient.is_some();
    let mut out = Vec::new();
    let not_attempted = |t| desired(t, Unknown, reasons::NOT_ATTEMPTED, "not attempted");

    let outcome = match verified {
        Err(problem) => {
            let mut push = |t: &'static str, default_ok: Option<Desired>| {
                if problem.condition == t {
                    out.push(desired(t, False, problem.reason, &problem.message));
                } else if let Some(d) = default_ok {
                    out.push(d);
                } else {
                    out.push(not_attempted(t));
                }
            };
            push(
                types::CREDENTIALS_RESOLVED,
                spec.auth.is_none().then(|| {
                    desired(
                        types::CREDENTIALS_RESOLVED,
                        True,
                        reasons::NOT_REQUIRED,
                        "no authentication configured",
                    )
                }),
            );
            push(types::CONNECTED, None);
            push(types::SECURE_TRANSPORT, None);
            push(types::AUTHENTICATED, None);
            if wants_test {
                push(types::TEST_MESSAGE_ACCEPTED, None);
            }
            out.push(desired(
                types::READY,
                False,
                problem.reason,
                &problem.message,
            ));
            return out;
        }
        Ok(o) => o,
    };

    let failure = outcome.failure.as_ref();
    let failed_condition = failure.map(|f| condition_of_step(f.step));
    let failed_desired = |t: &'static str| -> Option<Desired> {
        let f = failure?;
        (condition_of_step(f.step) == t).then(|| desired(t, False, f.reason.as_str(), &f.message))
    };
    // Conditions before the failing one passed; those after it were not attempted.
    let attempted =
        |t: &'static str, step: Step| outcome.passed(step) || failed_condition == Some(t);

    out.push(match &spec.auth {
        None => desired(
            types::CREDENTIALS_RESOLVED,
            True,
            reasons::NOT_REQUIRED,
            "no authentication configured",
        ),
        Some(a) => desired(
            types::CREDENTIALS_RESOLVED,
            True,
            reasons::RESOLVED,
            format!(
                "credentials read from Secret {}",
                a.credentials_secret_ref.name
            ),
        ),
    });

    let port = port.unwrap_or_else(|| spec.tls.mode.default_port());
    out.push(failed_desired(types::CONNECTED).unwrap_or_else(|| {
        if !outcome.passed(Step::Connect) {
            return not_attempted(types::CONNECTED);
        }
        desired(
            types::CONNECTED,
            True,
            reasons::CONNECTED,
            match outcome.server.banner.as_deref() {
                Some(banner) => format!("{}:{port} answered: {banner}", spec.host),
                None => format!("connected to {}:{port}", spec.host),
            },
        )
    }));

    let secure = match (spec.tls.mode, failed_desired(types::SECURE_TRANSPORT)) {
        (_, Some(d)) => d,
        (TlsMode::None, _) => desired(
            types::SECURE_TRANSPORT,
            False,
            reasons::TLS_DISABLED,
            "tls.mode is None: credentials and mail travel in clear text",
        ),
        _ if !outcome.passed(Step::Tls) => not_attempted(types::SECURE_TRANSPORT),
        _ => {
            let version = outcome.server.tls_version.as_deref().unwrap_or("TLS");
            let expiry = outcome
                .server
                .certificate_not_after
                .as_deref()
                .map(|t| format!(", certificate valid until {t}"))
                .unwrap_or_default();
            if outcome.server.certificate_unverified {
                desired(
                    types::SECURE_TRANSPORT,
                    True,
                    reasons::CERTIFICATE_NOT_VERIFIED,
                    format!(
                        "{version} established but the certificate was NOT verified (tls.insecureSkipVerify){expiry}"
                    ),
                )
            } else {
                desired(
                    types::SECURE_TRANSPORT,
                    True,
                    reasons::TLS_ESTABLISHED,
                    format!("{version} established, certificate verified{expiry}"),
                )
            }
        }
    };
    out.push(secure);

    out.push(match (&spec.auth, failed_desired(types::AUTHENTICATED)) {
        (_, Some(d)) => d,
        (None, _) => desired(
            types::AUTHENTICATED,
            True,
            reasons::NOT_REQUIRED,
            "no authentication configured",
        ),
        (Some(a), _) if attempted(types::AUTHENTICATED, Step::Auth) => desired(
            types::AUTHENTICATED,
            True,
            reasons::AUTHENTICATED,
            format!(
                "AUTH {} accepted",
                match a.mechanism {
                    AuthMechanismSpec::Plain => "PLAIN",
                    AuthMechanismSpec::Login => "LOGIN",
                }
            ),
        ),
        _ => not_attempted(types::AUTHENTICATED),
    });

    if wants_test {
        out.push(match failed_desired(types::TEST_MESSAGE_ACCEPTED) {
            Some(d) => d,
            None if outcome.passed(Step::Data) => desired(
                types::TEST_MESSAGE_ACCEPTED,
                True,
                reasons::ACCEPTED,
                format!(
                    "test message {} accepted for {}",
                    outcome.message_id.as_deref().unwrap_or(""),
                    spec.verification.recipient.as_deref().unwrap_or("")
                ),
            ),
            None => not_attempted(types::TEST_MESSAGE_ACCEPTED),
        });
    }

    out.push(match failure {
        Some(f) => desired(
            types::READY,
            False,
            f.reason.as_str(),
            format!("{} failed: {}", f.step, f.message),
        ),
        None => desired(
            types::READY,
            True,
            reasons::VERIFIED,
            format!("relay verified in {} ms", outcome.total.as_millis()),
        ),
    });
    out
}

/// Merge desired conditions into the previous ones: `lastTransitionTime` only moves
/// when the status (True/False/Unknown) changes.
pub fn merge_conditions(
    previous: &[Condition],
    desired: Vec<Desired>,
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|d| {
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == d.status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.to_string());
            Condition {
                type_: d.type_.to_string(),
                status: d.status,
                last_transition_time,
                reason: d.reason,
                message: d.message,
                observed_generation: generation,
            }
        })
        .collect()
}

/// Milliseconds per step (steps seen twice, like EHLO before and after STARTTLS, add up).
pub fn durations_ms(outcome: &Outcome) -> BTreeMap<String, i64> {
    let mut map = BTreeMap::new();
    for (step, d) in &outcome.steps {
        *map.entry(step.as_str().to_string()).or_insert(0) +=
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    }
    map.insert(
        "total".into(),
        i64::try_from(outcome.total.as_millis()).unwrap_or(i64::MAX),
    );
    map
}

/// A Kubernetes event to publish on a Ready transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// Decide the event for a change of the Ready condition (none on periodic successes).
pub fn transition(
    previous: Option<&SmtpRelayStatus>,
    next: &SmtpRelayStatus,
) -> Option<Transition> {
    let ready = ready_change(previous.map(|p| p.conditions.as_slice()), &next.conditions)?;
    Some(if ready.status == ConditionStatus::True {
        Transition {
            warning: false,
            reason: "Verified".into(),
            note: ready.message.clone(),
        }
    } else {
        Transition {
            warning: true,
            reason: "VerificationFailed".into(),
            note: format!("{}: {}", ready.reason, ready.message),
        }
    })
}

/// The new Ready condition, when its status or reason differs from before (pure).
/// Events are emitted on these changes only, never on a repeated outcome.
pub fn ready_change<'a>(
    previous: Option<&[Condition]>,
    next: &'a [Condition],
) -> Option<&'a Condition> {
    let find = |cs: &'a [Condition]| cs.iter().find(|c| c.type_ == types::READY);
    let now = find(next)?;
    let before = previous.and_then(|p| p.iter().find(|c| c.type_ == types::READY));
    match before {
        Some(b) if b.status == now.status && b.reason == now.reason => None,
        _ => Some(now),
    }
}

/// Decide: the whole next status from the previous one and what was observed.
pub fn next_status(
    spec: &SmtpRelaySpec,
    generation: Option<i64>,
    previous: Option<&SmtpRelayStatus>,
    inputs: &str,
    verified: &Result<Outcome, InputProblem>,
    now: Timestamp,
) -> SmtpRelayStatus {
    let now_text = now.round(jiff::Unit::Second).unwrap_or(now).to_string();
    let port = effective_port(spec).ok();
    let desired = desired_conditions(spec, port, verified);
    let empty = Vec::new();
    let conditions = merge_conditions(
        previous.map(|p| &p.conditions).unwrap_or(&empty),
        desired,
        generation,
        &now_text,
    );
    let succeeded = matches!(verified, Ok(o) if o.succeeded());
    let consecutive_failures = if succeeded {
        0
    } else {
        previous
            .map(|p| p.consecutive_failures)
            .unwrap_or(0)
            .saturating_add(1)
    };
    let (server, last_verification) = match verified {
        Ok(o) => (
            Some(ServerStatus {
                banner: o.server.banner.clone(),
                extensions: o.server.extensions.clone(),
                auth_mechanisms: o.server.auth_mechanisms.clone(),
                tls_version: o.server.tls_version.clone(),
                certificate_not_after: o.server.certificate_not_after.clone(),
            })
            .filter(|s| *s != ServerStatus::default())
            // A session that never reached the server keeps what we knew.
            .or_else(|| previous.and_then(|p| p.server.clone())),
            LastVerification {
                time: now_text.clone(),
                result: if succeeded {
                    RESULT_SUCCEEDED
                } else {
                    RESULT_FAILED
                }
                .into(),
                failed_step: o.failure.as_ref().map(|f| f.step.as_str().to_string()),
                duration_ms: durations_ms(o),
                message_id: o.message_id.clone(),
                inputs: inputs.to_string(),
            },
        ),
        Err(p) => (
            previous.and_then(|p| p.server.clone()),
            LastVerification {
                time: now_text.clone(),
                result: RESULT_FAILED.into(),
                failed_step: Some(
                    match p.condition {
                        types::CREDENTIALS_RESOLVED => "credentials",
                        types::SECURE_TRANSPORT => "tls",
                        _ => "spec",
                    }
                    .into(),
                ),
                duration_ms: BTreeMap::new(),
                message_id: None,
                inputs: inputs.to_string(),
            },
        ),
    };
    SmtpRelayStatus {
        observed_generation: generation,
        conditions,
        port: port.map(i32::from),
        server,
        last_verification: Some(last_verification),
        consecutive_failures,
        last_test: previous.and_then(|p| p.last_test.clone()),
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

/// Result of evaluating one relay.
#[derive(Debug)]
pub struct Evaluation {
    /// The status to write; None when nothing is due (write nothing).
    pub status: Option<SmtpRelayStatus>,
    pub transition: Option<Transition>,
    /// When to look again.
    pub requeue: Duration,
    pub outcome: Option<Outcome>,
}

/// Observe → verify → decide for one relay. With `force`, verify even if not due.
pub async fn evaluate(
    relay: &RelayRef<'_>,
    source: &impl Source,
    limiter: &HostLimiter,
    force: bool,
) -> Evaluation {
    let resolved = resolve(relay, source).await;
    let interval = schedule(relay.spec)
        .map(|(i, _)| i)
        .unwrap_or(Duration::from_secs(3600));
    let inputs = match &resolved {
        Ok(r) => r.inputs.clone(),
        Err(p) => format!("g{}/{}", relay.generation.unwrap_or(0), p.reason),
    };
    // A failed read of a Secret says nothing about the relay: try again soon, and
    // neither flip Ready nor count a failure (the offline `verify` reports it).
    if !force
        && let Err(p) = &resolved
        && p.reason == reasons::SOURCE_UNAVAILABLE
    {
        tracing::warn!(reason = %p.message, "cannot read the relay's inputs; retrying");
        return Evaluation {
            status: None,
            transition: None,
            requeue: Duration::from_secs(15),
            outcome: None,
        };
    }
    if !force
        && let Due::In(wait) = verification_due(
            relay.status,
            relay.generation,
            &inputs,
            interval,
            Timestamp::now(),
        )
    {
        return Evaluation {
            status: None,
            transition: None,
            requeue: wait,
            outcome: None,
        };
    }
    let verified = match resolved {
        Ok(r) => {
            let _permit = limiter.acquire(&r.target.host).await;
            Ok(smtp::verify(&r.target).await)
        }
        Err(p) => Err(p),
    };
    let next = next_status(
        relay.spec,
        relay.generation,
        relay.status,
        &inputs,
        &verified,
        Timestamp::now(),
    );
    let transition = transition(relay.status, &next);
    let requeue = if next.consecutive_failures == 0 {
        interval
    } else {
        retry_delay(next.consecutive_failures, interval)
    };
    Evaluation {
        status: Some(next),
        transition,
        requeue,
        outcome: verified.ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AuthSpec, CredentialsSecretRef, MailboxSpec, TlsSpec, VerificationSpec};
    use crate::smtp::{Failure, FailureReason, ServerFacts};
    use ConditionStatus::{False, True, Unknown};

    fn spec(mode: TlsMode, auth: bool, recipient: bool) -> SmtpRelaySpec {
        SmtpRelaySpec {
            title: None,
            host: "relay.example.test".into(),
            port: None,
            tls: TlsSpec {
                mode,
                ..Default::default()
            },
            auth: auth.then(|| AuthSpec {
                mechanism: AuthMechanismSpec::Plain,
                credentials_secret_ref: CredentialsSecretRef {
                    name: "creds".into(),
                    username_key: "username".into(),
                    password_key: "password".into(),
                    namespace: None,
                },
            }),
            default_sender: MailboxSpec {
                address: "a@example.test".into(),
                name: None,
            },
            no_reply: None,
            custom_headers: vec![],
            usage: vec![],
            verification: VerificationSpec {
                recipient: recipient.then(|| "inbox@example.test".into()),
                ..Default::default()
            },
        }
    }

    /// An outcome where every step up to `fail_at` passed and `fail_at` failed.
    fn outcome(fail_at: Option<(Step, FailureReason)>) -> Outcome {
        let mut steps = Vec::new();
        for s in Step::ALL {
            steps.push((s, Duration::from_millis(1)));
            if fail_at.is_some_and(|(f, _)| f == s) {
                break;
            }
        }
        Outcome {
            steps,
            failure: fail_at.map(|(step, reason)| Failure {
                step,
                reason,
                code: Some(535),
                message: "server replied 535 no".into(),
            }),
            server: ServerFacts {
                banner: Some("mx ESMTP".into()),
                tls_version: Some("TLSv1.3".into()),
                ..Default::default()
            },
            message_id: fail_at.is_none().then(|| "<id@example.test>".into()),
            total: Duration::from_millis(11),
        }
    }

    fn status_of(conds: &[Desired], t: &str) -> Option<(ConditionStatus, String)> {
        conds
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status, c.reason.clone()))
    }

    #[test]
    fn every_failure_lands_on_its_condition_and_ready() {
        use FailureReason as R;
        // (failing step, reason, condition that must be False, conditions that must be True, Unknown)
        type Row = (
            Step,
            R,
            &'static str,
            &'static [&'static str],
            &'static [&'static str],
        );
        let table: &[Row] = &[
            (
                Step::Dns,
                R::DnsFailure,
                types::CONNECTED,
                &[types::CREDENTIALS_RESOLVED],
                &[
                    types::SECURE_TRANSPORT,
                    types::AUTHENTICATED,
                    types::TEST_MESSAGE_ACCEPTED,
                ],
            ),
            (
                Step::Connect,
                R::ConnectionRefused,
                types::CONNECTED,
                &[],
                &[types::SECURE_TRANSPORT, types::AUTHENTICATED],
            ),
            (
                Step::Greeting,
                R::Timeout,
                types::CONNECTED,
                &[],
                &[types::SECURE_TRANSPORT, types::AUTHENTICATED],
            ),
            (
                Step::StartTls,
                R::StartTlsNotOffered,
                types::SECURE_TRANSPORT,
                &[types::CONNECTED],
                &[types::AUTHENTICATED, types::TEST_MESSAGE_ACCEPTED],
            ),
            (
                Step::Tls,
                R::CertificateInvalid,
                types::SECURE_TRANSPORT,
                &[types::CONNECTED],
                &[types::AUTHENTICATED],
            ),
            (
                Step::Tls,
                R::TlsHandshakeFailed,
                types::SECURE_TRANSPORT,
                &[types::CONNECTED],
                &[types::AUTHENTICATED],
            ),
            (
                Step::Auth,
                R::AuthRejected,
                types::AUTHENTICATED,
                &[types::CONNECTED, types::SECURE_TRANSPORT],
                &[types::TEST_MESSAGE_ACCEPTED],
            ),
            (
                Step::Auth,
                R::AuthMechanismUnsupported,
                types::AUTHENTICATED,
                &[types::SECURE_TRANSPORT],
                &[types::TEST_MESSAGE_ACCEPTED],
            ),
            (
                Step::Mail,
                R::SenderRejected,
                types::TEST_MESSAGE_ACCEPTED,
                &[types::AUTHENTICATED, types::SECURE_TRANSPORT],
                &[],
            ),
            (
                Step::Rcpt,
                R::RecipientRejected,
                types::TEST_MESSAGE_ACCEPTED,
                &[types::AUTHENTICATED],
                &[],
            ),
            (
                Step::Data,
                R::ConnectionLost,
                types::TEST_MESSAGE_ACCEPTED,
                &[types::AUTHENTICATED],
                &[],
            ),
        ];
        let s = spec(TlsMode::StartTls, true, true);
        for (step, reason, failed, trues, unknowns) in table {
            let d = desired_conditions(&s, None, &Ok(outcome(Some((*step, *reason)))));
            let ctx = format!("{step} {reason}");
            assert_eq!(
                status_of(&d, failed),
                Some((False, reason.as_str().into())),
                "{ctx}"
            );
            assert_eq!(
                status_of(&d, types::READY),
                Some((False, reason.as_str().into())),
                "{ctx}"
            );
            for t in *trues {
                assert_eq!(status_of(&d, t).map(|x| x.0), Some(True), "{ctx}: {t}");
            }
            for t in *unknowns {
                assert_eq!(
                    status_of(&d, t),
                    Some((Unknown, reasons::NOT_ATTEMPTED.into())),
                    "{ctx}: {t}"
                );
            }
            assert_eq!(
                d.last().map(|c| c.type_),
                Some(types::READY),
                "Ready is last"
            );
        }
    }

    #[test]
    fn a_failure_before_the_network_claims_no_connection() {
        let o = Outcome {
            steps: vec![],
            failure: Some(Failure {
                step: Step::Mail,
                reason: FailureReason::InvalidTarget,
                code: None,
                message: "invalid sender".into(),
            }),
            ..Default::default()
        };
        let d = desired_conditions(&spec(TlsMode::StartTls, false, true), None, &Ok(o));
        assert_eq!(
            status_of(&d, types::CONNECTED),
            Some((Unknown, reasons::NOT_ATTEMPTED.into()))
        );
        assert_eq!(
            status_of(&d, types::READY),
            Some((False, "InvalidTarget".into()))
        );
    }

    #[test]
    fn success_is_verified_and_every_condition_true() {
        let d = desired_conditions(
            &spec(TlsMode::StartTls, true, true),
            None,
            &Ok(outcome(None)),
        );
        assert!(d.iter().all(|c| c.status == True), "{d:?}");
        assert_eq!(
            status_of(&d, types::READY),
            Some((True, reasons::VERIFIED.into()))
        );
        assert_eq!(
            status_of(&d, types::TEST_MESSAGE_ACCEPTED),
            Some((True, reasons::ACCEPTED.into()))
        );
        assert_eq!(d.len(), 6);
    }

    #[test]
    fn no_recipient_means_no_test_condition_and_no_auth_means_not_required() {
        let d = desired_conditions(&spec(TlsMode::Tls, false, false), None, &Ok(outcome(None)));
        assert_eq!(status_of(&d, types::TEST_MESSAGE_ACCEPTED), None);
        assert_eq!(
            status_of(&d, types::AUTHENTICATED),
            Some((True, reasons::NOT_REQUIRED.into()))
        );
        assert_eq!(
            status_of(&d, types::CREDENTIALS_RESOLVED),
            Some((True, reasons::NOT_REQUIRED.into()))
        );
    }

    #[test]
    fn plain_text_mode_is_ready_but_says_it_is_not_secure() {
        let d = desired_conditions(&spec(TlsMode::None, false, false), None, &Ok(outcome(None)));
        assert_eq!(
            status_of(&d, types::SECURE_TRANSPORT),
            Some((False, reasons::TLS_DISABLED.into()))
        );
        assert_eq!(status_of(&d, types::READY).map(|x| x.0), Some(True));
    }

    #[test]
    fn unverified_certificate_is_reported() {
        let mut o = outcome(None);
        o.server.certificate_unverified = true;
        let d = desired_conditions(&spec(TlsMode::Tls, false, false), None, &Ok(o));
        assert_eq!(
            status_of(&d, types::SECURE_TRANSPORT),
            Some((True, reasons::CERTIFICATE_NOT_VERIFIED.into()))
        );
    }

    #[test]
    fn input_problems_land_on_their_condition() {
        let s = spec(TlsMode::StartTls, true, true);
        for (condition, reason) in [
            (types::CREDENTIALS_RESOLVED, reasons::SECRET_NOT_FOUND),
            (types::CREDENTIALS_RESOLVED, reasons::SECRET_KEY_MISSING),
            (types::SECURE_TRANSPORT, reasons::CA_BUNDLE_NOT_FOUND),
            (types::READY, reasons::INVALID_SPEC),
        ] {
            let p = InputProblem {
                condition,
                reason,
                message: "explained".into(),
            };
            let d = desired_conditions(&s, None, &Err(p));
            assert_eq!(status_of(&d, condition), Some((False, reason.into())));
            assert_eq!(status_of(&d, types::READY), Some((False, reason.into())));
            assert_eq!(
                status_of(&d, types::CONNECTED),
                Some((Unknown, reasons::NOT_ATTEMPTED.into()))
            );
            assert_eq!(d.iter().filter(|c| c.type_ == types::READY).count(), 1);
        }
    }

    #[test]
    fn transition_time_moves_only_with_status() {
        let old = merge_conditions(
            &[],
            vec![desired(types::READY, True, reasons::VERIFIED, "a")],
            Some(1),
            "2026-01-01T00:00:00Z",
        );
        let same = merge_conditions(
            &old,
            vec![desired(types::READY, True, reasons::VERIFIED, "b")],
            Some(2),
            "2026-02-01T00:00:00Z",
        );
        assert_eq!(same[0].last_transition_time, "2026-01-01T00:00:00Z");
        assert_eq!(same[0].observed_generation, Some(2));
        let changed = merge_conditions(
            &same,
            vec![desired(types::READY, False, "Timeout", "c")],
            Some(2),
            "2026-03-01T00:00:00Z",
        );
        assert_eq!(changed[0].last_transition_time, "2026-03-01T00:00:00Z");
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn verified_at(time: &str, result: &str, failures: i32) -> SmtpRelayStatus {
        SmtpRelayStatus {
            observed_generation: Some(3),
            consecutive_failures: failures,
            last_verification: Some(LastVerification {
                time: time.into(),
                result: result.into(),
                inputs: "g3/s10".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn verification_is_due_on_change_or_schedule_only() {
        let hour = Duration::from_secs(3600);
        let now = ts("2026-01-01T00:30:00Z");
        let ok = verified_at("2026-01-01T00:00:00Z", RESULT_SUCCEEDED, 0);
        assert_eq!(
            verification_due(None, Some(3), "g3/s10", hour, now),
            Due::Now
        );
        assert_eq!(
            verification_due(Some(&ok), Some(3), "g3/s10", hour, now),
            Due::In(Duration::from_secs(1800))
        );
        assert_eq!(
            verification_due(Some(&ok), Some(4), "g3/s10", hour, now),
            Due::Now
        );
        assert_eq!(
            verification_due(Some(&ok), Some(3), "g3/s11", hour, now),
            Due::Now
        );
        assert_eq!(
            verification_due(
                Some(&ok),
                Some(3),
                "g3/s10",
                hour,
                ts("2026-01-01T01:00:00Z")
            ),
            Due::Now
        );
        let failed = verified_at("2026-01-01T00:29:50Z", RESULT_FAILED, 3);
        assert_eq!(
            verification_due(Some(&failed), Some(3), "g3/s10", hour, now),
            Due::In(Duration::from_secs(30))
        );
        let garbage = verified_at("yesterday", RESULT_SUCCEEDED, 0);
        assert_eq!(
            verification_due(Some(&garbage), Some(3), "g3/s10", hour, now),
            Due::Now
        );
    }

    #[test]
    fn retries_back_off_and_are_capped() {
        let hour = Duration::from_secs(3600);
        let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n, hour).as_secs()).collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(
            retry_delay(1000, Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        assert_eq!(retry_delay(0, hour), Duration::from_secs(10));
        assert_eq!(retry_delay(-5, hour), Duration::from_secs(10));
    }

    #[test]
    fn events_only_on_transitions() {
        let s = spec(TlsMode::StartTls, false, false);
        let t0 = ts("2026-01-01T00:00:00Z");
        let ok = next_status(&s, Some(1), None, "g1", &Ok(outcome(None)), t0);
        let first = transition(None, &ok).expect("first verification is a transition");
        assert!(!first.warning);
        let again = next_status(&s, Some(1), Some(&ok), "g1", &Ok(outcome(None)), t0);
        assert_eq!(
            transition(Some(&ok), &again),
            None,
            "periodic success is silent"
        );
        let bad = next_status(
            &s,
            Some(1),
            Some(&again),
            "g1",
            &Ok(outcome(Some((
                Step::Connect,
                FailureReason::ConnectionRefused,
            )))),
            t0,
        );
        let t = transition(Some(&again), &bad).expect("failure is a transition");
        assert!(t.warning && t.note.starts_with("ConnectionRefused"));
        assert_eq!(bad.consecutive_failures, 1);
        let worse = next_status(
            &s,
            Some(1),
            Some(&bad),
            "g1",
            &Ok(outcome(Some((
                Step::Connect,
                FailureReason::ConnectionRefused,
            )))),
            t0,
        );
        assert_eq!(worse.consecutive_failures, 2);
        assert_eq!(transition(Some(&bad), &worse), None);
        let other = next_status(
            &s,
            Some(1),
            Some(&worse),
            "g1",
            &Ok(outcome(Some((Step::Greeting, FailureReason::Timeout)))),
            t0,
        );
        assert!(
            transition(Some(&worse), &other).is_some(),
            "a new reason is a transition"
        );
    }

    #[test]
    fn an_unchanged_verification_produces_an_identical_status_apart_from_time() {
        let s = spec(TlsMode::StartTls, true, false);
        let t0 = ts("2026-01-01T00:00:00Z");
        let a = next_status(&s, Some(1), None, "g1/s1", &Ok(outcome(None)), t0);
        let b = next_status(&s, Some(1), Some(&a), "g1/s1", &Ok(outcome(None)), t0);
        assert_eq!(a, b);
        assert_eq!(a.port, Some(587));
        assert_eq!(a.observed_generation, Some(1));
    }

    #[test]
    fn a_failed_session_keeps_what_the_server_said_before() {
        let s = spec(TlsMode::StartTls, false, false);
        let t0 = ts("2026-01-01T00:00:00Z");
        let ok = next_status(&s, Some(1), None, "g1", &Ok(outcome(None)), t0);
        let refused = Outcome {
            failure: Some(Failure {
                step: Step::Connect,
                reason: FailureReason::ConnectionRefused,
                code: None,
                message: "refused".into(),
            }),
            ..Default::default()
        };
        let next = next_status(&s, Some(1), Some(&ok), "g1", &Ok(refused), t0);
        assert_eq!(next.server, ok.server);
    }

    #[test]
    fn durations_parse_like_the_api_server() {
        assert_eq!(
            parse_duration("f", "1h30m").ok(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_duration("f", "90s").ok(),
            Some(Duration::from_secs(90))
        );
        assert!(parse_duration("f", "10 minutes").is_err());
        assert!(parse_duration("f", "-5m").is_err());
        let mut s = spec(TlsMode::StartTls, false, false);
        s.verification.interval = "10s".into();
        assert_eq!(
            schedule(&s).map_err(|p| p.reason),
            Err(reasons::INVALID_SPEC)
        );
        s.verification.interval = "1m".into();
        s.verification.timeout = "10m".into();
        assert!(schedule(&s).is_err());
        s.port = Some(70000);
        assert!(effective_port(&s).is_err());
        s.port = None;
        s.tls.mode = TlsMode::Tls;
        assert_eq!(effective_port(&s).ok(), Some(465));
    }
}
