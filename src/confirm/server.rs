//! The confirmation endpoint, served by every replica (state lives in the API server).
//!
//! GET on a link shows what is being confirmed and a Confirm button and changes
//! nothing: mail scanners open links. POST confirms. Every refusal looks the same,
//! so the endpoint never tells whether an identity exists.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use kube::Api;

pub use super::limits::Limits;
pub use super::limits::client_ip;
use super::limits::{Budget, Connections, IdentityBudget, RateLimiter, Snapshot};
use super::{ConfirmKey, Refusal, TOKEN, check, confirmed};
use crate::api::{SenderIdentity, SenderIdentityStatus};
use crate::k8s::{WriteError, apply_status};
use crate::metrics::Metrics;

/// What the endpoint needs.
pub struct ConfirmState {
    pub client: kube::Client,
    pub key: ConfirmKey,
    pub metrics: Arc<Metrics>,
    /// Proxies whose X-Forwarded-For names the real client (the Ingress controller).
    pub trusted_proxies: Vec<Cidr>,
    /// Public base URL (its origin is the only one a POST may come from).
    pub base_url: Option<String>,
    pub limits: Limits,
    limiter: RateLimiter,
    identities: IdentityBudget,
    lookups: tokio::sync::Semaphore,
    pub connections: Connections,
}

impl ConfirmState {
    pub fn new(
        client: kube::Client,
        key: ConfirmKey,
        metrics: Arc<Metrics>,
        trusted_proxies: Vec<Cidr>,
        base_url: Option<String>,
        limits: Limits,
    ) -> Self {
        ConfirmState {
            client,
            key,
            metrics,
            trusted_proxies,
            base_url,
            limiter: RateLimiter::new(limits.per_client, limits.window),
            identities: IdentityBudget::new(limits.lookups_per_identity, limits.window),
            lookups: tokio::sync::Semaphore::new(limits.concurrent_lookups.max(1)),
            connections: Connections::new(
                limits.max_connections,
                limits.max_connections_per_client,
            ),
            limits,
        }
    }
}

/// An IP network, e.g. 10.0.0.0/8 or fd00::/8 (shared with the destination policy).
pub use crate::smtp::Cidr;

/// Content-Security-Policy of every page: nothing loads, nothing frames it, forms
/// post only back here.
pub const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'";

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
        // The button posts nothing: a body is refused past a few bytes, unread.
        .layer(axum::extract::DefaultBodyLimit::max(1024))
        // Links carry a token: keep pages out of caches, Referer headers and frames.
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
                h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
                h.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(CSP),
                );
                res
            },
        ))
}

/// Serve the endpoint on `listener` until the process ends: one request per
/// connection, headers within `header_timeout`, every connection closed after
/// `connection_timeout`, and at most `max_connections` open (per client address:
/// `max_connections_per_client`); connections over a cap are closed at once.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<ConfirmState>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;
    let app = router(Arc::clone(&state));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, usually: wait rather than spin.
                tracing::warn!(error = %e, "confirmation endpoint cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        let app = app.clone();
        tokio::spawn(async move {
            let trusted = state.trusted_proxies.iter().any(|c| c.contains(peer.ip()));
            let Some(_slot) = state.connections.open(peer.ip(), trusted) else {
                state.metrics.refused("link", "TooManyConnections");
                return;
            };
            let service = app.map_request(move |mut r: axum::extract::Request<_>| {
                r.extensions_mut().insert(ConnectInfo(peer));
                r
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(state.limits.header_timeout)
                .keep_alive(false)
                .max_buf_size(16 * 1024);
            let conn = http.serve_connection(
                TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(service),
            );
            let _ = tokio::time::timeout(state.limits.connection_timeout, conn).await;
        });
    }
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

async fn landing(Path((namespace, name)): Path<(String, String)>) -> Response {
    if !plausible(&namespace, &name, "t") {
        return refused();
    }
    page(
        "Confirm a sender address",
        "<p>Open the link from the confirmation mail to confirm the address.</p>",
    )
    .into_response()
}

/// Every request counts against its client's budget before any work is done; a
/// POST from another site is refused (the Confirm button can be neither framed nor
/// submitted from elsewhere).
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
    let client = client_ip(peer.ip(), forwarded, &st.trusted_proxies);
    if !st.limiter.allow(client) {
        st.metrics.refused("link", "RateLimited");
        tracing::info!(%client, path = %loggable_path(request.uri().path()), "confirmation request refused: rate limited");
        return too_many();
    }
    if request.method() == axum::http::Method::POST
        && let Some(why) = cross_site(request.headers(), st.base_url.as_deref())
    {
        st.metrics.refused("link", "CrossSite");
        tracing::info!(%client, path = %loggable_path(request.uri().path()), why, "confirmation refused: cross-site POST");
        return (
            StatusCode::FORBIDDEN,
            page(
                "Not allowed",
                "<p>Confirm from the page the link opens.</p>",
            ),
        )
            .into_response();
    }
    next.run(request).await
}

/// Why a POST comes from another site, if it does: `Sec-Fetch-Site: cross-site`, or
/// an Origin other than ours (the base URL's, else the Host the request names).
pub fn cross_site(headers: &axum::http::HeaderMap, base_url: Option<&str>) -> Option<&'static str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("sec-fetch-site") == Some("cross-site") {
        return Some("Sec-Fetch-Site: cross-site");
    }
    let origin = header("origin")?;
    if origin == "null" {
        return Some("opaque Origin");
    }
    let ours = match base_url {
        Some(base) => origin_of(base),
        None => header("host").map(|h| h.to_ascii_lowercase()),
    };
    let theirs = if base_url.is_some() {
        origin_of(origin)
    } else {
        // Without a base URL, compare host[:port] with the Host header.
        origin_of(origin).and_then(|o| o.split_once("://").map(|(_, h)| h.to_string()))
    };
    match (ours, theirs) {
        (Some(a), Some(b)) if a == b => None,
        _ => Some("foreign Origin"),
    }
}

/// scheme://host[:port] of a URL, lower-cased.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}").to_ascii_lowercase())
}

/// A request path as it may be logged: without the token.
fn loggable_path(path: &str) -> String {
    let mut parts: Vec<&str> = path.split('/').take(5).collect();
    if parts.len() == 5 {
        parts[4] = "<token>";
    }
    let p = parts.join("/");
    p.chars().take(200).collect()
}

/// Path segments that can be a namespace (DNS label), an object name (DNS subdomain)
/// and a token; anything else is refused before the API server is asked.
fn plausible(namespace: &str, name: &str, token: &str) -> bool {
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    let subdomain = |s: &str| s.len() <= 253 && s.split('.').all(label);
    let token_ok = !token.is_empty()
        && token.len() <= 64
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    label(namespace) && subdomain(name) && token_ok
}

/// Check a token against what was read of an identity. The same work is done
/// whether or not the identity exists or has a pending confirmation (one keyed
/// digest check), so timing does not tell them apart.
pub fn judge(
    identity: Option<&SenderIdentity>,
    key: &ConfirmKey,
    token: &str,
) -> Result<(), Refusal> {
    let pending = identity.and_then(|i| {
        i.status
            .as_ref()
            .and_then(|s| s.confirmation.as_ref())
            .map(|c| (c, i.spec.address.as_str()))
    });
    match pending {
        Some((c, address)) => check(c, address, key, TOKEN, token, jiff::Timestamp::now()),
        None => {
            // The work a real check does, against nothing that can match.
            let _ = key.verify(TOKEN, "no-attempt", token, NO_DIGEST);
            Err(Refusal::NoAttempt)
        }
    }
}

/// A well-formed digest that no token matches (used for constant work).
const NO_DIGEST: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// Look the identity up and check the token; the refusal otherwise. Reads are
/// bounded per identity: past the budget, the last read is used, so guesses cost
/// the API server nothing while a valid link still passes.
async fn lookup(
    st: &ConfirmState,
    namespace: &str,
    name: &str,
    token: &str,
) -> Result<SenderIdentity, Refusal> {
    if !plausible(namespace, name, token) {
        // Same work as a real refusal.
        let _ = judge(None, &st.key, token);
        return Err(Refusal::NoAttempt);
    }
    let identity = match st.identities.take(namespace, name) {
        Budget::Read => {
            let _turn = st.lookups.acquire().await;
            let api: Api<SenderIdentity> = Api::namespaced(st.client.clone(), namespace);
            let identity = api.get_opt(name).await.ok().flatten().map(Arc::new);
            st.identities.remember(
                namespace,
                name,
                Snapshot {
                    identity: identity.clone(),
                },
            );
            identity
        }
        Budget::Cached(snapshot) => snapshot.and_then(|s| s.identity),
    };
    judge(identity.as_deref(), &st.key, token)?;
    identity
        .map(|i| SenderIdentity::clone(&i))
        .ok_or(Refusal::NoAttempt)
}

/// Log and count a refused link (never with its token).
fn refusal(st: &ConfirmState, namespace: &str, name: &str, why: Refusal) -> Response {
    st.metrics.refused("link", why.name());
    let (namespace, name): (String, String) = (
        namespace.chars().take(63).collect(),
        name.chars().take(253).collect(),
    );
    tracing::info!(%namespace, %name, reason = why.name(), "confirmation link refused");
    refused()
}

async fn show(
    State(st): State<Arc<ConfirmState>>,
    Path((namespace, name, token)): Path<(String, String, String)>,
) -> Response {
    let identity = match lookup(&st, &namespace, &name, &token).await {
        Ok(i) => i,
        Err(why) => return refusal(&st, &namespace, &name, why),
    };
    let who = escape(&identity.spec.address);
    // The display name is the requester's text: shown only as theirs.
    let requested_name = match &identity.spec.display_name {
        Some(n) if !n.is_empty() => format!(
            "<p>Display name given by the requester (not verified): <em>{}</em></p>",
            escape(n)
        ),
        _ => String::new(),
    };
    let relay = identity
        .status
        .as_ref()
        .and_then(|s| s.relay.clone())
        .unwrap_or_default();
    page(
        "Confirm a sender address",
        &format!(
            "<p>Applications in namespace <strong>{ns}</strong> want to send mail as \
             <strong>{who}</strong> through {relay} (sender identity {ns}/{n}).</p>{requested_name}\
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
        let identity = match lookup(&st, &namespace, &name, &token).await {
            Ok(i) => i,
            Err(why) => return refusal(&st, &namespace, &name, why),
        };
        // A valid token read from the last snapshot: act on the current object.
        let api: Api<SenderIdentity> = Api::namespaced(st.client.clone(), &namespace);
        let identity = match api.get_opt(&name).await {
            Ok(Some(current)) => current,
            _ => identity,
        };
        if let Err(why) = judge(Some(&identity), &st.key, &token) {
            return refusal(&st, &namespace, &name, why);
        }
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
        match apply_status(&api, &identity, &next).await {
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
            Err(WriteError::Conflict) => continue,
            Err(WriteError::Api(e)) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_site_posts_are_recognised() {
        use axum::http::{HeaderMap, HeaderValue};
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        let base = Some("https://confirm.example.test/");
        assert_eq!(
            cross_site(&h(&[]), base),
            None,
            "no Origin: a plain form post"
        );
        assert_eq!(
            cross_site(&h(&[("origin", "https://confirm.example.test")]), base),
            None
        );
        assert!(cross_site(&h(&[("origin", "https://evil.example")]), base).is_some());
        assert!(cross_site(&h(&[("origin", "null")]), base).is_some());
        assert!(cross_site(&h(&[("sec-fetch-site", "cross-site")]), base).is_some());
        assert_eq!(
            cross_site(&h(&[("sec-fetch-site", "same-origin")]), base),
            None
        );
        // Without a base URL, the Host header names us.
        assert_eq!(
            cross_site(
                &h(&[
                    ("origin", "http://127.0.0.1:8081"),
                    ("host", "127.0.0.1:8081")
                ]),
                None
            ),
            None
        );
        assert!(
            cross_site(
                &h(&[("origin", "http://evil:8081"), ("host", "127.0.0.1:8081")]),
                None
            )
            .is_some()
        );
    }

    #[test]
    fn tokens_never_reach_the_logs() {
        assert_eq!(
            loggable_path("/confirm/team/sales/SECRET-TOKEN"),
            "/confirm/team/sales/<token>"
        );
        assert_eq!(loggable_path("/confirm/team/sales"), "/confirm/team/sales");
    }

    #[test]
    fn refusals_do_the_same_work_whatever_the_identity() {
        let key = ConfirmKey::new(b"k");
        assert_eq!(judge(None, &key, "token"), Err(Refusal::NoAttempt));
    }

    #[test]
    fn implausible_paths_never_reach_the_api_server() {
        assert!(plausible("team", "sales", "AbC-_09"));
        assert!(!plausible("team/../x", "sales", "t"));
        assert!(!plausible("team", "sales?watch=1", "t"));
        assert!(!plausible("Team", "sales", "t"));
        assert!(!plausible("team", "sales", &"t".repeat(65)));
        assert!(!plausible("team", "sales", "tok en"));
        assert!(!plausible("team", "..", "t"), "no dot segments");
        assert!(!plausible("team", ".", "t"));
        assert!(!plausible("team", "a..b", "t"));
        assert!(!plausible("-team", "sales", "t"));
        assert!(!plausible("team.x", "sales", "t"), "a namespace is a label");
        assert!(plausible("team", "sales.v2", "t"));
    }

    #[test]
    fn escapes_user_text() {
        assert_eq!(escape("<b>\"x\"&'"), "&lt;b&gt;&quot;x&quot;&amp;&#39;");
    }
}
