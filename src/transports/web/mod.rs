//! The HTTP server's router (axum): the customer portal's pages
//! (`portal`: `/new`, `/t/…`), the team's pages (`team`: `/login`,
//! `/dashboard`…), the knowledge base's (`help`: `/help/…`), the embedded static files, and the API of
//! [`crate::transports::http`] behind them. Every request first passes the
//! Host and Origin checks; pages get a strict Content-Security-Policy (no
//! script but our own two files, on the pages that use them: `/new`'s proof
//! of work and the dashboard's live updates), `no-store` and frame denial,
//! and are compressed.

mod chart;
mod help;
mod live;
pub(crate) mod portal;
pub(crate) mod team;

use crate::transports::http::{self, Api};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The client's address, set on each request by the connection loop.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::IpAddr);

/// What the pages share: the API's handles and the abuse limits' counts.
#[derive(Debug)]
pub struct Web {
    api: Arc<Api>,
    limiter: Mutex<Limiter>,
    /// The dashboard's charts and when they were read (kept [`TRENDS_FOR`]).
    trends: Mutex<Option<(std::time::Instant, crate::view::Trends)>>,
    /// Whether a read of the charts is under way.
    trends_reading: std::sync::atomic::AtomicBool,
    /// Live dashboards streaming now (at most [`live::MAX_STREAMS`]).
    live: std::sync::atomic::AtomicUsize,
}

/// How long the dashboard's charts are kept before they are read again.
const TRENDS_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Largest request body a page takes (the form's own limit, from
/// `[limits] max_message_bytes`, is checked while it is read).
const MAX_PAGE_BODY: usize = 64 << 20;

/// How long a page request may take in all.
const PAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The router of everything the daemon serves over HTTP.
pub fn router(api: Arc<Api>) -> Router {
    let state = Arc::new(Web {
        api,
        limiter: Mutex::new(Limiter::default()),
        trends: Mutex::new(None),
        trends_reading: std::sync::atomic::AtomicBool::new(false),
        live: std::sync::atomic::AtomicUsize::new(0),
    });
    let pages = Router::new()
        .route("/new", get(portal::new_form).post(portal::new_submit))
        .route("/t/{id}/{token}", get(portal::status).post(portal::reply))
        .route("/t/{id}/{token}/a/{message}/{file}", get(portal::attachment))
        .route("/login", get(team::login_form).post(team::login_request))
        .route("/login/{token}", get(team::login_link).post(team::login_confirm))
        .route("/logout", axum::routing::post(team::logout))
        .route("/dashboard", get(team::dashboard))
        .route("/dashboard/live", get(live::live))
        .route("/dashboard/tickets", get(team::tickets))
        .route("/dashboard/t/{id}", get(team::ticket).post(team::act))
        .route("/dashboard/t/{id}/a/{message}/{file}", get(team::attachment))
        .route("/help", get(help::index))
        .route("/help/{slug}", get(help::article))
        .route("/static/site.css", get(site_css))
        .route("/static/pow.js", get(pow_js))
        .route("/static/live.js", get(live_js))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_PAGE_BODY))
        .layer(middleware::map_response(page_headers))
        .layer(tower_http::compression::CompressionLayer::new())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            PAGE_TIMEOUT,
        ));
    Router::new()
        .merge(pages)
        .fallback(api_fallback)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Host and Origin checks for every request; behind a trusted reverse proxy,
/// the client is the one its `X-Forwarded-For` names.
async fn guard(State(web): State<Arc<Web>>, mut req: Request, next: Next) -> Response {
    if let Err(refused) = http::guard(&web.api, req.headers(), req.method()) {
        return refused.map(Body::new);
    }
    let trusted = web
        .api
        .current
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .config
        .trusted_proxies
        .clone();
    if let Some(ClientAddr(peer)) = req.extensions().get::<ClientAddr>().copied()
        && let Some(client) = forwarded_client(peer, req.headers(), &trusted)
    {
        req.extensions_mut().insert(ClientAddr(client));
    }
    next.run(req).await
}

/// Whether `ip` is in the network `(base, prefix)`.
fn in_net(ip: IpAddr, (base, prefix): (IpAddr, u8)) -> bool {
    let bits = |ip: IpAddr| -> (u128, u32) {
        match ip {
            IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        }
    };
    let ip = match ip {
        IpAddr::V6(v) => v.to_ipv4_mapped().map_or(IpAddr::V6(v), IpAddr::V4),
        v4 => v4,
    };
    let ((a, width), (b, base_width)) = (bits(ip), bits(base));
    if width != base_width {
        return false;
    }
    let prefix = u32::from(prefix).min(width);
    prefix == 0 || (a ^ b) >> (128 - prefix) == 0
}

/// The client a trusted proxy names: from the right of `X-Forwarded-For`
/// (each proxy appends the address it was reached from), the first address
/// that is not a trusted proxy's. None when the peer is not trusted or the
/// header names nobody usable.
fn forwarded_client(peer: IpAddr, headers: &axum::http::HeaderMap, trusted: &[(IpAddr, u8)]) -> Option<IpAddr> {
    if !trusted.iter().any(|n| in_net(peer, *n)) {
        return None;
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        for part in v.to_str().ok()?.split(',') {
            chain.push(part.trim().parse().ok()?);
        }
    }
    chain
        .into_iter()
        .rev()
        .find(|ip| !trusted.iter().any(|n| in_net(*ip, *n)))
}

/// The JSON API, `/metrics`, `/healthz`, the survey links.
async fn api_fallback(State(web): State<Arc<Web>>, req: Request) -> Response {
    http::route(web.api.clone(), req).await.map(Body::new)
}

/// The pages' policy: no script at all.
const CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The `/new` page's when it asks for a proof of work: its own script file, no inline script.
pub(super) const SCRIPT_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's: its own script file, which may fetch the page again and
/// listen to `/dashboard/live`.
pub(super) const LIVE_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers on every page: no script (but `/static/pow.js` and
/// `/static/live.js` where the page sets its own policy), no framing, no caching, no sniffing.
async fn page_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let is_html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
            h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Not `no-referrer`: with it a browser sends `Origin: null` on the
        // page's own forms, which the Origin check refuses. The token in a
        // status page's address still never leaves for another site.
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

async fn site_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("static/site.css"),
    )
        .into_response()
}

async fn pow_js() -> Response {
    script(include_str!("static/pow.js"))
}

async fn live_js() -> Response {
    script(include_str!("static/live.js"))
}

fn script(text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        text,
    )
        .into_response()
}

/// A rendered page, or a plain 500 when a template fails (it cannot, for
/// the values we give it, but a page never panics).
fn html(status: StatusCode, page: Result<String, askama::Error>) -> Response {
    match page {
        Ok(body) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("page error: {e}\n")).into_response(),
    }
}

/// Whether a one-time key was used (an `Ack` record in the store, so every
/// instance knows; a store that cannot answer counts as used).
fn used(pipeline: &crate::pipeline::Pipeline, key: &str) -> bool {
    pipeline
        .store
        .acks_since(key, jiff::Timestamp::UNIX_EPOCH)
        .map_or(true, |n| n > 0)
}

/// Spends a one-time key, checked and recorded under the writer lock:
/// `Ok(false)` when it was spent already.
fn spend(web: &Web, pipeline: &crate::pipeline::Pipeline, key: String) -> Result<bool, String> {
    let _guard = web.api.writer.lock().unwrap_or_else(|p| p.into_inner());
    if used(pipeline, &key) {
        return Ok(false);
    }
    let mut w = crate::adapters::store::Change::default();
    w.push(crate::adapters::store::Op::Ack(key, jiff::Timestamp::now()));
    pipeline
        .store
        .commit(w)
        .and_then(|_| pipeline.store.flush())
        .map_err(|e| e.to_string())?;
    Ok(true)
}

/// Counts of requests per key in fixed one-hour windows, in memory (a
/// restart forgets them; the per-address acknowledgement limit in the store
/// still holds).
#[derive(Debug, Default)]
struct Limiter {
    hits: HashMap<String, (i64, u32)>,
}

impl Limiter {
    /// Counts one request for `key`, if fewer than `limit` came this hour.
    fn allow(&mut self, key: &str, limit: u32, now: i64) -> bool {
        let hour = now.div_euclid(3600);
        if self.hits.len() > 100_000 {
            self.hits.retain(|_, (h, _)| *h == hour);
        }
        let entry = self.hits.entry(key.to_string()).or_insert((hour, 0));
        if entry.0 != hour {
            *entry = (hour, 0);
        }
        if entry.1 >= limit {
            return false;
        }
        entry.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Limiter;

    #[test]
    fn a_trusted_proxy_names_the_client_and_no_one_else_does() {
        use super::{forwarded_client, in_net};
        let net = |s: &str, p: u8| (s.parse().unwrap(), p);
        assert!(in_net("10.1.2.3".parse().unwrap(), net("10.0.0.0", 8)));
        assert!(!in_net("11.1.2.3".parse().unwrap(), net("10.0.0.0", 8)));
        assert!(in_net("::ffff:127.0.0.1".parse().unwrap(), net("127.0.0.1", 32)));
        assert!(in_net("fd00::1".parse().unwrap(), net("fd00::", 8)));
        assert!(!in_net("fd00::1".parse().unwrap(), net("10.0.0.0", 8)));
        assert!(in_net("8.8.8.8".parse().unwrap(), net("0.0.0.0", 0)));
        let trusted = [net("127.0.0.1", 32), net("10.0.0.0", 8)];
        let headers = |v: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert("x-forwarded-for", v.parse().unwrap());
            h
        };
        let local = "127.0.0.1".parse().unwrap();
        // The rightmost address that is no proxy's: a client's own forged entries stay left of it.
        assert_eq!(
            forwarded_client(local, &headers("6.6.6.6, 203.0.113.9, 10.0.0.5"), &trusted),
            Some("203.0.113.9".parse().unwrap())
        );
        // From an untrusted peer the header counts for nothing.
        assert_eq!(
            forwarded_client("198.51.100.1".parse().unwrap(), &headers("1.2.3.4"), &trusted),
            None
        );
        // Garbage, or only proxies: the peer stays the client.
        assert_eq!(forwarded_client(local, &headers("not-an-ip"), &trusted), None);
        assert_eq!(forwarded_client(local, &headers("10.0.0.7"), &trusted), None);
        assert_eq!(forwarded_client(local, &axum::http::HeaderMap::new(), &trusted), None);
    }

    #[test]
    fn the_limiter_counts_per_key_and_per_hour() {
        let mut l = Limiter::default();
        assert!(l.allow("a", 2, 7200));
        assert!(l.allow("a", 2, 7201));
        assert!(!l.allow("a", 2, 7202));
        assert!(l.allow("b", 2, 7202));
        assert!(l.allow("a", 2, 10800));
    }
}
