//! The confirmation endpoint, served by every replica (state lives in the API server).
//!
//! GET on a link shows what is being confirmed and a Confirm button and changes
//! nothing: mail scanners open links. POST confirms. Every refusal looks the same,
//! so the endpoint never tells whether an identity exists.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use kube::Api;
use kube::api::{Patch, PatchParams};

use super::{ConfirmKey, TOKEN, check, confirmed};
use crate::api::{SenderIdentity, SenderIdentityStatus};
use crate::controller::MANAGER;
use crate::metrics::Metrics;

/// Fixed-window rate limits: per client address and overall.
pub struct RateLimiter {
    per_ip: u32,
    global: u32,
    window: Duration,
    state: Mutex<(Instant, u32, HashMap<IpAddr, u32>)>,
}

impl RateLimiter {
    pub fn new(per_ip: u32, global: u32, window: Duration) -> Self {
        RateLimiter {
            per_ip,
            global,
            window,
            state: Mutex::new((Instant::now(), 0, HashMap::new())),
        }
    }

    /// May this client make one more request now?
    pub fn allow(&self, ip: IpAddr) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0.elapsed() >= self.window {
            *s = (Instant::now(), 0, HashMap::new());
        }
        if s.1 >= self.global {
            return false;
        }
        let count = s.2.entry(ip).or_insert(0);
        if *count >= self.per_ip {
            return false;
        }
        *count += 1;
        s.1 += 1;
        true
    }
}

/// What the endpoint needs.
pub struct ConfirmState {
    pub client: kube::Client,
    pub key: ConfirmKey,
    pub limiter: RateLimiter,
    pub metrics: Arc<Metrics>,
    /// Proxies whose X-Forwarded-For names the real client (the Ingress controller).
    pub trusted_proxies: Vec<Cidr>,
}

/// An IP network, e.g. 10.0.0.0/8 or fd00::/8 (shared with the destination policy).
pub use crate::smtp::Cidr;

/// The client a request is counted against: the TCP peer, or, when the peer is a
/// trusted proxy, the rightmost address in X-Forwarded-For that is not one.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = forwarded_for
        .unwrap_or("")
        .split(',')
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .copied()
        .find(|ip| !is_trusted(*ip))
        .or(hops.first().copied())
        .unwrap_or(peer)
}

pub fn router(state: Arc<ConfirmState>) -> Router {
    Router::new()
        .route("/confirm/{namespace}/{name}", get(landing))
        .route(
            "/confirm/{namespace}/{name}/{token}",
            get(show).post(confirm),
        )
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            rate_limit,
        ))
        .with_state(state)
        // Links carry a token: keep pages out of caches and Referer headers.
        .layer(axum::middleware::map_response(
            |mut res: Response| async move {
                use axum::http::{HeaderValue, header};
                let h = res.headers_mut();
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                h.insert(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                );
                h.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                res
            },
        ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <meta name=\"robots\" content=\"noindex\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}}\
         button{{font-size:1.1rem;padding:.5rem 1.5rem}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    ))
}

fn refused() -> Response {
    (
        StatusCode::NOT_FOUND,
        page(
            "Link not valid",
            "<p>This confirmation link is not valid: it may have expired, been replaced by a newer one, or already been used.</p>",
        ),
    )
        .into_response()
}

fn too_many() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        page("Too many requests", "<p>Please try again in a minute.</p>"),
    )
        .into_response()
}

async fn landing() -> Response {
    page(
        "Confirm a sender address",
        "<p>Open the link from the confirmation mail to confirm the address.</p>",
    )
    .into_response()
}

/// Every request counts against the rate limits, before any work is done.
async fn rate_limit(
    State(st): State<Arc<ConfirmState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let forwarded = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    if !st
        .limiter
        .allow(client_ip(peer.ip(), forwarded, &st.trusted_proxies))
    {
        return too_many();
    }
    next.run(request).await
}

/// Path segments that can be a namespace, an object name and a token; anything else
/// is refused before the API server is asked.
fn plausible(namespace: &str, name: &str, token: &str) -> bool {
    let object = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    let token_ok = !token.is_empty()
        && token.len() <= 64
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    object(namespace, 63) && object(name, 253) && token_ok
}

/// Look the identity up and check the token; None for every kind of refusal.
async fn lookup(
    st: &ConfirmState,
    namespace: &str,
    name: &str,
    token: &str,
) -> Option<SenderIdentity> {
    if !plausible(namespace, name, token) {
        return None;
    }
    let api: Api<SenderIdentity> = Api::namespaced(st.client.clone(), namespace);
    let identity = api.get_opt(name).await.ok()??;
    let c = identity.status.as_ref()?.confirmation.as_ref()?;
    check(
        c,
        &identity.spec.address,
        &st.key,
        TOKEN,
        token,
        jiff::Timestamp::now(),
    )
    .ok()?;
    Some(identity)
}

async fn show(
    State(st): State<Arc<ConfirmState>>,
    Path((namespace, name, token)): Path<(String, String, String)>,
) -> Response {
    let Some(identity) = lookup(&st, &namespace, &name, &token).await else {
        return refused();
    };
    let who = match &identity.spec.display_name {
        Some(n) => format!("{} &lt;{}&gt;", escape(n), escape(&identity.spec.address)),
        None => escape(&identity.spec.address),
    };
    let relay = identity
        .status
        .as_ref()
        .and_then(|s| s.relay.clone())
        .unwrap_or_default();
    page(
        "Confirm a sender address",
        &format!(
            "<p>Applications want to send mail as <strong>{who}</strong> through {relay} \
             (sender identity {ns}/{n}).</p>\
             <p>If this is your address and you agree, confirm it:</p>\
             <form method=\"post\"><button type=\"submit\">Confirm</button></form>\
             <p>If you did not expect this, close this page: nothing changes until you confirm.</p>",
            relay = escape(&relay),
            ns = escape(&namespace),
            n = escape(&name),
        ),
    )
    .into_response()
}

async fn confirm(
    State(st): State<Arc<ConfirmState>>,
    Path((namespace, name, token)): Path<(String, String, String)>,
) -> Response {
    // Read, check, write with the read resourceVersion as a precondition; a concurrent
    // change makes the write fail and we check again against the new state.
    for _ in 0..3 {
        let Some(identity) = lookup(&st, &namespace, &name, &token).await else {
            return refused();
        };
        let Some(status) = identity.status.clone() else {
            return refused();
        };
        let Some(c) = status.confirmation.as_ref() else {
            return refused();
        };
        let next = SenderIdentityStatus {
            confirmation: Some(confirmed(c, jiff::Timestamp::now())),
            ..status.clone()
        };
        match write_status(&st.client, &identity, &next).await {
            Ok(_) => {
                st.metrics.confirmations_completed.inc();
                tracing::info!(%namespace, %name, "sender address confirmed by link");
                return page(
                    "Address confirmed",
                    &format!(
                        "<p><strong>{}</strong> is confirmed. You can close this page.</p>",
                        escape(&identity.spec.address)
                    ),
                )
                .into_response();
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                tracing::warn!(%namespace, %name, error = %e, "cannot record a confirmation");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    page(
                        "Try again",
                        "<p>The confirmation could not be recorded. Please try again.</p>",
                    ),
                )
                    .into_response();
            }
        }
    }
    refused()
}

/// Apply an identity's status, only if the object is still at the version we read.
pub async fn write_status(
    client: &kube::Client,
    identity: &SenderIdentity,
    status: &SenderIdentityStatus,
) -> Result<SenderIdentity, kube::Error> {
    use kube::ResourceExt;
    let namespace = identity.namespace().unwrap_or_default();
    let api: Api<SenderIdentity> = Api::namespaced(client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": "smtprelay.io/v1alpha1",
        "kind": "SenderIdentity",
        "metadata": {
            "name": identity.name_any(),
            "namespace": namespace,
            "resourceVersion": identity.resource_version(),
        },
        "status": status,
    });
    api.patch_status(
        &identity.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_per_client_and_overall() {
        let l = RateLimiter::new(2, 3, Duration::from_secs(60));
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        let b: IpAddr = "127.0.0.2".parse().expect("ip");
        assert!(l.allow(a) && l.allow(a));
        assert!(!l.allow(a), "per-client limit");
        assert!(l.allow(b));
        assert!(!l.allow(b), "global limit");
        let l = RateLimiter::new(1, 10, Duration::from_millis(1));
        assert!(l.allow(a));
        std::thread::sleep(Duration::from_millis(5));
        assert!(l.allow(a), "a new window");
    }

    #[test]
    fn implausible_paths_never_reach_the_api_server() {
        assert!(plausible("team", "sales", "AbC-_09"));
        assert!(!plausible("team/../x", "sales", "t"));
        assert!(!plausible("team", "sales?watch=1", "t"));
        assert!(!plausible("Team", "sales", "t"));
        assert!(!plausible("team", "sales", &"t".repeat(65)));
        assert!(!plausible("team", "sales", "tok en"));
    }

    #[test]
    fn the_client_behind_a_trusted_proxy_is_counted() {
        let trusted: Vec<Cidr> = vec![
            "10.0.0.0/8".parse().expect("cidr"),
            "fd00::/8".parse().expect("cidr"),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("198.51.100.1"), &trusted),
            ip("203.0.113.9"),
            "untrusted peer: XFF ignored"
        );
        assert_eq!(
            client_ip(ip("10.1.2.3"), Some("198.51.100.1"), &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(
                ip("10.1.2.3"),
                Some("6.6.6.6, 198.51.100.1, 10.9.9.9"),
                &trusted
            ),
            ip("198.51.100.1"),
            "spoofed left entries ignored"
        );
        assert_eq!(client_ip(ip("10.1.2.3"), None, &trusted), ip("10.1.2.3"));
        assert_eq!(
            client_ip(ip("fd00::1"), Some("2001:db8::7"), &trusted),
            ip("2001:db8::7")
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::1")));
    }

    #[test]
    fn escapes_user_text() {
        assert_eq!(escape("<b>\"x\"&'"), "&lt;b&gt;&quot;x&quot;&amp;&#39;");
    }
}
