//! The HTTP server's router (axum): the customer portal's pages
//! (`portal`: `/new`, `/t/…`), the team's pages (`team`: `/login`,
//! `/dashboard`…), the embedded static files, and the API of
//! [`crate::transports::http`] behind them. Every request first passes the
//! Host and Origin checks; pages get a strict Content-Security-Policy (no
//! script at all), `no-store` and frame denial, and are compressed.

mod chart;
mod portal;
mod team;

use crate::transports::http::{self, Api};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::HashMap;
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
    });
    let pages = Router::new()
        .route("/new", get(portal::new_form).post(portal::new_submit))
        .route("/t/{id}/{token}", get(portal::status).post(portal::reply))
        .route("/t/{id}/{token}/a/{message}/{file}", get(portal::attachment))
        .route("/login", get(team::login_form).post(team::login_request))
        .route("/login/{token}", get(team::login_link).post(team::login_confirm))
        .route("/logout", axum::routing::post(team::logout))
        .route("/dashboard", get(team::dashboard))
        .route("/dashboard/tickets", get(team::tickets))
        .route("/dashboard/t/{id}", get(team::ticket).post(team::act))
        .route("/static/site.css", get(site_css))
        .route("/static/pow.js", get(pow_js))
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

/// Host and Origin checks for every request.
async fn guard(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    if let Err(refused) = http::guard(&web.api, req.headers(), req.method()) {
        return refused.map(Body::new);
    }
    next.run(req).await
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

/// Headers on every page: no script (but `/static/pow.js` where the page
/// sets its own policy), no framing, no caching, no sniffing.
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
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("static/pow.js"),
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
    fn the_limiter_counts_per_key_and_per_hour() {
        let mut l = Limiter::default();
        assert!(l.allow("a", 2, 7200));
        assert!(l.allow("a", 2, 7201));
        assert!(!l.allow("a", 2, 7202));
        assert!(l.allow("b", 2, 7202));
        assert!(l.allow("a", 2, 10800));
    }
}
