//! The small HTTP API (hyper, HTTP/1.1): `GET /healthz`, `/readyz`,
//! `/api/tickets`, `/api/tickets/{id}`, `/api/export`, `/api/quarantine`, `/api/raw/{key}`,
//! `/api/report`, `/metrics`, the signed survey links `/csat/…`, and
//! `POST /api/ingest` and `/api/explain` for one raw mail. It works on the
//! store the daemon holds, so the CLI works while the daemon runs ([`get`]
//! and [`post`] are its client).

use crate::core::model::{Status, TicketId};
use crate::metrics::Gauges;
use crate::pipeline::Pipeline;
use crate::view::ticket_view;
use axum::body::Body;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the API serves from.
#[derive(Debug)]
pub struct Api {
    /// The daemon's pipeline in force (store, config, metrics).
    pub current: Arc<std::sync::RwLock<Pipeline>>,
    /// Bearer token required on every path but `/healthz` and `/csat/`, when set.
    pub token: Option<crate::adapters::config::Secret>,
    /// The daemon's writer lock: the survey links and `/api/ingest` write.
    pub writer: Arc<std::sync::Mutex<()>>,
    /// Wakes the sender after `/api/ingest` queued mail.
    pub wake_sender: Arc<tokio::sync::Notify>,
    /// Request bodies being read now: at most [`MAX_BODIES`].
    pub bodies: tokio::sync::Semaphore,
    /// The full-text index the team's ticket search reads, when it opened.
    pub search: Option<Arc<crate::adapters::search::SearchIndex>>,
}

/// Most connections served at once; past it a connection gets a `503` and
/// is closed, so descriptors are never exhausted by idle clients.
pub const MAX_CONNECTIONS: usize = 128;
/// How long a connection may take to send a request's header (also the idle
/// time allowed between keep-alive requests).
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a request body may take to arrive.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Most request bodies (raw mails) read at once, so parallel uploads are
/// bounded together and not only one by one.
pub const MAX_BODIES: usize = 4;

/// How long a stopping daemon lets the requests it is answering finish.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves until `shutdown` turns true; then takes no more connections,
/// closes the idle ones and gives the requests being answered
/// [`STOP_GRACE`] to finish (a client told "503, the daemon is stopping"
/// knows what to do; one cut off does not know what happened).
pub async fn serve(listener: TcpListener, api: Arc<Api>, shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    accept(listener, api, shutdown, slots.clone()).await;
    let _ = tokio::time::timeout(STOP_GRACE, slots.acquire_many(MAX_CONNECTIONS as u32)).await;
}

async fn accept(
    listener: TcpListener,
    api: Arc<Api>,
    mut shutdown: watch::Receiver<bool>,
    slots: Arc<tokio::sync::Semaphore>,
) {
    let app = crate::transports::web::router(api.clone());
    let mut backoff = std::time::Duration::from_millis(10);
    let mut log_gate = LogGate::default();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(s) => {
                backoff = std::time::Duration::from_millis(10);
                s
            }
            Err(e) => {
                // Out of descriptors, most likely: wait instead of spinning, and say so once in a while.
                if let Some(suppressed) = log_gate.allow() {
                    tracing::warn!(error = %e, suppressed, "http accept failed; backing off");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let metrics = api.current.read().unwrap_or_else(|p| p.into_inner()).metrics.clone();
            metrics.http_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut stream = stream;
                let busy = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\nbusy\n";
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(busy)).await;
            });
            continue;
        };
        let app = app.clone();
        let mut stopping = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut req: Request<Incoming>| {
                use tower::ServiceExt;
                req.extensions_mut()
                    .insert(crate::transports::web::ClientAddr(peer.ip()));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = async { drop(stopping.wait_for(|stop| *stop).await) } => {
                    // Idle: closed now; answering: closed once answered.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "http connection ended");
            }
            drop(permit);
        });
    }
}

/// Lets a repeated log line through at most once every 10 s, counting the rest.
#[derive(Default)]
struct LogGate {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogGate {
    fn allow(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < std::time::Duration::from_secs(10))
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The API's handler, behind the web router (which checks Host and Origin first).
pub async fn route(api: Arc<Api>, req: Request<Body>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if method == hyper::Method::POST && (path == "/api/ingest" || path == "/api/explain") {
        return ingest(&api, req, path == "/api/explain").await;
    }
    if method == hyper::Method::POST
        && path.starts_with("/api/tickets/")
        && (path.ends_with("/merge") || path.ends_with("/split"))
    {
        return merge(api, req).await;
    }
    if method == hyper::Method::POST && path == "/api/tickets" {
        return crate::transports::channels::create(api, req, crate::transports::channels::Posted::Ticket).await;
    }
    if method == hyper::Method::POST
        && let Some(rest) = path.strip_prefix("/api/tickets/")
        && let Some((id, what)) = rest.split_once('/')
        && (what == "messages" || what == "notes")
    {
        use crate::transports::channels::Posted;
        return match id.parse::<u64>() {
            Ok(id) if id > 0 => {
                let posted = if what == "notes" {
                    Posted::Note(id)
                } else {
                    Posted::Message(id)
                };
                crate::transports::channels::create(api, req, posted).await
            }
            _ => error(
                StatusCode::BAD_REQUEST,
                &format!("expected /api/tickets/{{number}}/{what}"),
            ),
        };
    }
    if method == hyper::Method::PATCH
        && let Some(id) = path.strip_prefix("/api/tickets/")
    {
        return match id.parse::<u64>() {
            Ok(id) if id > 0 => crate::transports::channels::update(api, req, id).await,
            _ => error(StatusCode::BAD_REQUEST, "expected PATCH /api/tickets/{number}"),
        };
    }
    if method == hyper::Method::POST && path == "/api/webhooks/retry" {
        return webhooks_retry(api, req).await;
    }
    if method == hyper::Method::POST && path == "/api/backup" {
        return backup(api, req).await;
    }
    if path == "/healthz" && method == hyper::Method::GET {
        return respond(StatusCode::OK, "text/plain", "ok\n".into());
    }
    // Store reads and reports run on the blocking pool: the async workers
    // (health checks, mail, timers) never wait behind them.
    let (parts, _body) = req.into_parts();
    let work = tokio::task::spawn_blocking(move || {
        if method == hyper::Method::POST
            && let Some(rest) = path.strip_prefix("/csat/")
        {
            let pipeline = api.current.read().unwrap_or_else(|p| p.into_inner()).clone();
            return survey_vote(&api, &pipeline, rest);
        }
        handle(&api, &parts)
    });
    work.await
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &format!("the request failed: {e}")))
}

/// Checks that hold for every request, pages and API alike. A browser page
/// elsewhere must not reach us: the Host must be an address literal,
/// `localhost` or the public URL's host (a DNS-rebinding name is refused), and
/// a request other than GET must carry no foreign `Origin`.
#[allow(clippy::result_large_err)]
pub fn guard(api: &Api, headers: &hyper::HeaderMap, method: &hyper::Method) -> Result<(), Response<Full<Bytes>>> {
    let public = api
        .current
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .config
        .desk
        .public_url
        .clone();
    let host = headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if let Err(why) = check_host(host, public.as_deref()) {
        return Err(error(StatusCode::MISDIRECTED_REQUEST, &why));
    }
    if method != hyper::Method::GET
        && method != hyper::Method::HEAD
        && let Some(origin) = headers.get(hyper::header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("");
        if !same_origin(origin, host, public.as_deref()) {
            return Err(error(
                StatusCode::FORBIDDEN,
                &format!("cross-site request from origin {origin:?} refused"),
            ));
        }
    }
    Ok(())
}

/// The host part of a `Host` header must be an IP literal, `localhost`, or the
/// host of `public_url`.
fn check_host(host: &str, public_url: Option<&str>) -> Result<(), String> {
    let name = host_name(host);
    if name.is_empty() {
        return Err("a Host header is required".into());
    }
    let literal = name.parse::<std::net::IpAddr>().is_ok();
    let public = public_url.map(|u| host_name(authority(u))).unwrap_or_default();
    if literal || name.eq_ignore_ascii_case("localhost") || (!public.is_empty() && name.eq_ignore_ascii_case(&public)) {
        Ok(())
    } else {
        Err(format!(
            "Host {host:?} is not this server (use its address, localhost or the public_url host)"
        ))
    }
}

/// Whether an `Origin` is this server: `http(s)://` plus the request's Host, or `public_url`'s origin.
fn same_origin(origin: &str, host: &str, public_url: Option<&str>) -> bool {
    let origin = origin.trim_end_matches('/').to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    if origin == format!("http://{host}") || origin == format!("https://{host}") {
        return true;
    }
    public_url.is_some_and(|u| {
        let u = u.to_ascii_lowercase();
        let scheme_end = u.find("://").map(|i| i + 3).unwrap_or(0);
        let origin_of_public = &u[..scheme_end + authority(&u).len()];
        origin == origin_of_public
    })
}

/// `host[:port]` of a URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split(['/', '?', '#']).next().unwrap_or("")
}

/// The host of `host[:port]` or `[v6]:port`, without brackets or port.
fn host_name(host: &str) -> String {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => host.to_string(),
    }
}

/// The `limit` of a paged answer: 1 to [`crate::adapters::store::MAX_PAGE`], else why not.
fn page_limit(query: &std::collections::HashMap<String, String>, default: usize) -> Result<usize, String> {
    match query.get("limit").map(|l| l.parse::<usize>()) {
        None => Ok(default),
        Some(Ok(n)) if (1..=crate::adapters::store::MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(format!("limit: expected 1 to {}", crate::adapters::store::MAX_PAGE)),
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

pub(crate) fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<Full<Bytes>> {
    respond(
        status,
        "application/json",
        serde_json::to_string_pretty(v).expect("serialises"),
    )
}

pub fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}

/// The OpenAPI 3.1 document of this API (kept true by `tests/it/openapi.rs`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Who a request is, when it may use `scope`: an `[[api_token]]`'s name
/// (which must hold the scope), or `api` for the `[http]` token or, without
/// one, for anyone (the API then listens on loopback only). Otherwise a
/// 401 (no or an unknown token) or a 403 (a token without the scope).
#[allow(clippy::result_large_err)]
pub(crate) fn access(
    api: &Api,
    headers: &hyper::HeaderMap,
    scope: Option<&str>,
) -> Result<String, Response<Full<Bytes>>> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let config = api.current.read().unwrap_or_else(|p| p.into_inner()).config.clone();
    if let Some(given) = given {
        for t in &config.api_tokens {
            match t.secret.load() {
                Ok(secret) if crate::core::token::constant_time_eq(given.as_bytes(), secret.expose().as_bytes()) => {
                    return match scope {
                        Some(s) if !t.scopes.iter().any(|have| have == s) => Err(error(
                            StatusCode::FORBIDDEN,
                            &format!("the token {:?} does not have the scope {s}", t.name),
                        )),
                        _ => Ok(t.name.clone()),
                    };
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(token = %t.name, error = %e, "api_token unreadable; it is refused"),
            }
        }
    }
    match &api.token {
        None if given.is_none() || config.api_tokens.is_empty() => Ok("api".into()),
        Some(token)
            if crate::core::token::constant_time_eq(given.unwrap_or("").as_bytes(), token.expose().as_bytes()) =>
        {
            Ok("api".into())
        }
        _ => Err(error(StatusCode::UNAUTHORIZED, "a bearer token is required")),
    }
}

/// `POST /api/ingest?mailbox=NAME&at=RFC3339`: one raw mail through the
/// pipeline under the daemon's writer lock, so `postdesk ingest` (an MTA's
/// pipe) works while the daemon holds the store. With `explain`
/// (`POST /api/explain`), how it would be handled, storing nothing.
async fn ingest(api: &Api, req: Request<Body>, explain: bool) -> Response<Full<Bytes>> {
    use http_body_util::{BodyExt, Limited};
    if let Err(refused) = access(api, req.headers(), Some("ingest")) {
        return refused;
    }
    let pipeline = api.current.read().unwrap_or_else(|p| p.into_inner()).clone();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let mailbox = query
        .get("mailbox")
        .cloned()
        .unwrap_or_else(|| pipeline.config.mailboxes[0].name.clone());
    if pipeline.config.mailbox(&mailbox).is_none() {
        return error(StatusCode::BAD_REQUEST, &format!("no mailbox named {mailbox:?}"));
    }
    let now = jiff::Timestamp::now();
    let at = match query.get("at").map(|a| a.parse::<jiff::Timestamp>()) {
        Some(Ok(t)) => t.min(now),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "at: expected an RFC 3339 time"),
        None => now,
    };
    // A form or a fetch() from a web page can only send "simple" content
    // types without asking first; ours is none of them.
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.split(';').next().unwrap_or("").trim() != "message/rfc822" {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: message/rfc822 (one raw mail)",
        );
    }
    // A little over the limit, so an oversized mail is quarantined rather than refused.
    let limit = pipeline.config.limits.max_message_bytes.saturating_add(1 << 20);
    if let Some(length) = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit as u64
    {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the mail is {length} bytes; at most {limit} are taken"),
        );
    }
    // Bodies are bounded together too: a few at a time, each within a time limit.
    let Ok(Ok(_body_slot)) = tokio::time::timeout(BODY_TIMEOUT, api.bodies.acquire()).await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many uploads at once; try again");
    };
    let raw = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), limit).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => return error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time"),
    };
    if explain {
        return match crate::transports::blocking(|| pipeline.explain(&raw, &mailbox, at)) {
            Ok(e) => json(StatusCode::OK, &e),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
    }
    // A backfill names its mail's time; mail piped in by an MTA arrives now.
    let origin = if query.contains_key("at") {
        crate::pipeline::Origin::backfill(&mailbox, at, now, pipeline.config.automation.backfill_window)
    } else {
        crate::pipeline::Origin::live(&mailbox)
    };
    // `ingest` sends only the header section of a mail over the limit, with its size.
    let oversized = query.get("oversized").and_then(|v| v.parse::<u64>().ok());
    let label = query.get("label").cloned().unwrap_or_else(|| "POST /api/ingest".into());
    let result = crate::transports::blocking(|| {
        let _guard = api.writer.lock().unwrap_or_else(|p| p.into_inner());
        match oversized {
            Some(size) => pipeline.process_oversized(&raw, size, &label, &origin, now),
            None => pipeline.process(&raw, &origin, at),
        }
        .and_then(|p| pipeline.store.flush().map(|_| p))
    });
    match result {
        Ok(processed) => {
            api.wake_sender.notify_one();
            json(StatusCode::OK, &processed)
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn handle(api: &Api, req: &hyper::http::request::Parts) -> Response<Full<Bytes>> {
    let pipeline = api.current.read().unwrap_or_else(|p| p.into_inner()).clone();
    let path = req.uri.path();
    if req.method != hyper::Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET here (POST: /api/ingest, /api/explain, /api/tickets/{id}/merge, /api/tickets/{id}/split, /api/tickets, /api/tickets/{id}/messages, /api/tickets/{id}/notes, /api/webhooks/retry, /api/backup, /csat/…)",
        );
    }
    if path == "/healthz" {
        return respond(StatusCode::OK, "text/plain", "ok\n".into());
    }
    // Survey links carry their own signature: customers click them without a token.
    if let Some(rest) = path.strip_prefix("/csat/") {
        return survey_page(&pipeline, rest);
    }
    let scope = path.starts_with("/api/").then_some("tickets:read");
    if let Err(refused) = access(api, &req.headers, scope) {
        return refused;
    }
    let query = parse_query(req.uri.query().unwrap_or(""));
    let store = &*pipeline.store;
    let result: Result<Response<Full<Bytes>>, crate::adapters::store::StoreError> = (|| {
        Ok(match path {
            "/readyz" => {
                let boxes = pipeline.metrics.mailboxes();
                let down: Vec<&String> = pipeline
                    .config
                    .mailboxes
                    .iter()
                    .map(|m| &m.name)
                    .filter(|n| !boxes.get(*n).is_some_and(|s| s.ready()))
                    .collect();
                let outgoing = pipeline.metrics.outgoing_down();
                let store_error = store.ping().err().map(|e| e.to_string());
                if down.is_empty() && outgoing.is_none() && store_error.is_none() {
                    respond(StatusCode::OK, "text/plain", "ready\n".into())
                } else {
                    json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &serde_json::json!({ "not_ready": down, "outgoing_error": outgoing, "store_error": store_error }),
                    )
                }
            }
            "/metrics" => {
                // Counters kept on commit, and the head of each outbox lane: no scan.
                let mut g = Gauges::default();
                for c in store.counts()? {
                    g.tickets.insert((c.status.as_str().to_string(), c.queue), c.tickets);
                }
                let (depth, oldest) = store.outbox_depth()?;
                g.outbox_depth = depth;
                let now = jiff::Timestamp::now().as_second();
                g.outbox_oldest_age = oldest.map_or(0, |o| (now - o.as_second()).max(0));
                g.store_bytes = store.disk_bytes()?;
                g.store_compacted_bytes = store.compacted_bytes()?;
                respond(StatusCode::OK, "text/plain; version=0.0.4", pipeline.metrics.render(&g))
            }
            "/api/tickets" => {
                let status = match query.get("status").map(|s| Status::parse(s)) {
                    Some(None) => {
                        return Ok(error(
                            StatusCode::BAD_REQUEST,
                            "status: expected new, open, pending, resolved or closed",
                        ));
                    }
                    Some(s) => s,
                    None => None,
                };
                let limit = match page_limit(&query, 100) {
                    Ok(n) => n,
                    Err(why) => return Ok(error(StatusCode::BAD_REQUEST, &why)),
                };
                let updated_since = match query.get("updated_since").map(|v| crate::view::parse_day_or_time(v)) {
                    None => None,
                    Some(Ok(d)) => Some(d.at(&pipeline.config.desk.timezone)),
                    Some(Err(e)) => return Ok(error(StatusCode::BAD_REQUEST, &format!("updated_since: {e}"))),
                };
                let filter = crate::adapters::store::TicketFilter {
                    status,
                    queue: query.get("queue").cloned(),
                    assignee: query.get("assignee").cloned(),
                    requester: query.get("requester").cloned(),
                    updated_since,
                };
                let page = match store.list(&filter, query.get("cursor").map(String::as_str), limit) {
                    Err(e @ crate::adapters::store::StoreError::BadCursor(_)) => {
                        return Ok(error(StatusCode::BAD_REQUEST, &e.to_string()));
                    }
                    r => r?,
                };
                let mut r = json(StatusCode::OK, &page.tickets);
                if let Some(next) = page.next.and_then(|n| hyper::header::HeaderValue::from_str(&n).ok()) {
                    r.headers_mut().insert(NEXT_CURSOR, next);
                }
                r
            }
            "/api/export" => {
                // A page of whole tickets (`limit`, default 200), the next page's
                // cursor in the header: the answer never holds the whole store.
                let limit = match page_limit(&query, crate::view::EXPORT_PAGE) {
                    Ok(n) => n,
                    Err(why) => return Ok(error(StatusCode::BAD_REQUEST, &why)),
                };
                let all = crate::adapters::store::TicketFilter::default();
                let page = match store.list(&all, query.get("cursor").map(String::as_str), limit) {
                    Err(e @ crate::adapters::store::StoreError::BadCursor(_)) => {
                        return Ok(error(StatusCode::BAD_REQUEST, &e.to_string()));
                    }
                    r => r?,
                };
                let mut out = String::new();
                for t in &page.tickets {
                    if let Some(v) = ticket_view(store, t.id)? {
                        out.push_str(&serde_json::to_string(&v).expect("serialises"));
                        out.push('\n');
                    }
                }
                let mut r = respond(StatusCode::OK, "application/x-ndjson", out);
                if let Some(next) = page.next.and_then(|n| hyper::header::HeaderValue::from_str(&n).ok()) {
                    r.headers_mut().insert(NEXT_CURSOR, next);
                }
                r
            }
            "/api/quarantine" => json(StatusCode::OK, &store.quarantine()?),
            "/api/openapi.json" => respond(StatusCode::OK, "application/json", OPENAPI.into()),
            "/api/webhooks/failed" => json(StatusCode::OK, &crate::transports::webhook::failed(&pipeline)?),
            "/api/report" => {
                let tz = pipeline.config.desk.timezone.clone();
                let parse = |k: &str| {
                    query
                        .get(k)
                        .map(|v| crate::view::parse_day_or_time(v).map(|d| d.at(&tz)))
                        .transpose()
                };
                match (parse("since"), parse("until")) {
                    (Ok(since), Ok(until)) => {
                        let until = until.unwrap_or_else(jiff::Timestamp::now);
                        let r = crate::view::report(store, &pipeline.config, since, until)?;
                        json(StatusCode::OK, &r)
                    }
                    (Err(e), _) | (_, Err(e)) => error(StatusCode::BAD_REQUEST, &e),
                }
            }
            p if p.starts_with("/api/raw/") => {
                let key = &p["/api/raw/".len()..];
                if !crate::adapters::store::blobs::is_key(key) {
                    error(StatusCode::BAD_REQUEST, "expected a raw_key: 64 lowercase hex digits")
                } else {
                    match store.blob(key)? {
                        Some(bytes) => Response::builder()
                            .status(StatusCode::OK)
                            .header("content-type", "message/rfc822")
                            .header("content-disposition", format!("attachment; filename=\"{key}.eml\""))
                            .header("x-content-type-options", "nosniff")
                            .body(Full::new(Bytes::from(bytes)))
                            .expect("static response parts"),
                        None => error(StatusCode::NOT_FOUND, "no stored mail under that key"),
                    }
                }
            }
            p if p.starts_with("/api/tickets/") => match p["/api/tickets/".len()..].parse::<u64>() {
                Ok(id) => match ticket_view(store, TicketId(id))? {
                    Some(v) => json(StatusCode::OK, &v),
                    None => error(StatusCode::NOT_FOUND, &format!("no ticket {id}")),
                },
                Err(_) => error(StatusCode::BAD_REQUEST, "expected a ticket number"),
            },
            _ => error(StatusCode::NOT_FOUND, "no such path"),
        })
    })();
    result.unwrap_or_else(|e| error(store_status(&e), &e.to_string()))
}

/// The status of a store failure: another instance's write first is a
/// conflict (try again), a database away is a temporary outage.
fn store_status(e: &crate::adapters::store::StoreError) -> StatusCode {
    use crate::adapters::store::StoreError;
    match e {
        StoreError::Conflict(_) => StatusCode::CONFLICT,
        StoreError::Database(_) | StoreError::Stopping(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The parts of a survey link `/csat/{ticket}/{token}/{rating}`, checked, or the page to show instead.
#[allow(clippy::result_large_err)]
fn survey_link(pipeline: &Pipeline, rest: &str) -> Result<(TicketId, u8), Response<Full<Bytes>>> {
    let parts: Vec<&str> = rest.split('/').collect();
    let (Some(id), Some(token), Some(rating)) = (
        parts.first().and_then(|p| p.parse::<u64>().ok()),
        parts.get(1),
        parts
            .get(2)
            .and_then(|p| p.parse::<u8>().ok())
            .filter(|r| (1..=5).contains(r)),
    ) else {
        return Err(page(StatusCode::BAD_REQUEST, "This link is not complete.", ""));
    };
    if parts.len() != 3 || !pipeline.signer.verify_survey_token(TicketId(id), token) {
        return Err(page(StatusCode::FORBIDDEN, "This link is not valid.", ""));
    }
    Ok((TicketId(id), rating))
}

/// A small HTML page; `text` is ours, never mail content.
pub fn page(status: StatusCode, text: &str, extra: &str) -> Response<Full<Bytes>> {
    let mut r = respond(
        status,
        "text/html; charset=utf-8",
        format!(
            "<!doctype html><meta charset=utf-8><meta name=robots content=noindex><title>{text}</title><p>{text}</p>{extra}\n"
        ),
    );
    let h = r.headers_mut();
    h.insert("cache-control", hyper::header::HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        hyper::header::HeaderValue::from_static("default-src 'none'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert("x-frame-options", hyper::header::HeaderValue::from_static("DENY"));
    r
}

/// `GET /csat/{ticket}/{token}/{rating}`: the page a survey link opens. It
/// records nothing (mail link scanners follow every link): its button POSTs.
fn survey_page(pipeline: &Pipeline, rest: &str) -> Response<Full<Bytes>> {
    let (_, rating) = match survey_link(pipeline, rest) {
        Ok(v) => v,
        Err(page) => return page,
    };
    page(
        StatusCode::OK,
        &format!("Rate our answer {rating} of 5?"),
        &format!("<form method=post><button type=submit>Yes, rate {rating} of 5</button></form>"),
    )
}

/// The body of a request that must come as `content_type` (a form cannot
/// send that unasked), at most `limit` bytes, within [`BODY_TIMEOUT`]: or a
/// 415 saying `expected`, a 413 or a 408.
#[allow(clippy::result_large_err)]
pub(crate) async fn typed_body(
    req: Request<Body>,
    content_type: &str,
    limit: usize,
    expected: &str,
) -> Result<Bytes, Response<Full<Bytes>>> {
    use http_body_util::{BodyExt, Limited};
    let given = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if given.split(';').next().unwrap_or("").trim() != content_type {
        return Err(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, expected));
    }
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), limit).collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("at most {limit} bytes: {e}"),
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )),
    }
}

/// `POST /api/webhooks/retry` with `{}` (every failed delivery) or
/// `{"id": "dlv_…"}` (one): they are sent again from now; `{"retried": N}`.
async fn webhooks_retry(api: Arc<Api>, req: Request<Body>) -> Response<Full<Bytes>> {
    if let Err(refused) = access(&api, req.headers(), Some("tickets:write")) {
        return refused;
    }
    let body = match typed_body(
        req,
        "application/json",
        4096,
        "expected Content-Type: application/json with {} or {\"id\": \"dlv_…\"}",
    )
    .await
    {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let id = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(o)) => match o.get("id") {
            None => None,
            Some(serde_json::Value::String(id)) => Some(id.clone()),
            Some(_) => return error(StatusCode::BAD_REQUEST, "id: expected a delivery id string"),
        },
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "expected a JSON object: {} or {\"id\": \"dlv_…\"}",
            );
        }
    };
    let work = tokio::task::spawn_blocking(move || {
        let pipeline = api.current.read().unwrap_or_else(|p| p.into_inner()).clone();
        let _guard = api.writer.lock().unwrap_or_else(|p| p.into_inner());
        crate::transports::webhook::retry_failed(&pipeline, id.as_deref(), jiff::Timestamp::now()).map(|n| (n, id))
    });
    match work.await {
        Ok(Ok((0, Some(id)))) => error(StatusCode::NOT_FOUND, &format!("no failed delivery {id}")),
        Ok(Ok((n, _))) => json(StatusCode::OK, &serde_json::json!({ "retried": n })),
        Ok(Err(e)) => error(store_status(&e), &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `POST /api/backup` with `{}` or `{"keep": N}`: the store copied as it is
/// at one moment into a new folder `data_dir/backups/<UTC time>` (writes
/// wait meanwhile), then with `keep` the older backups but the newest N
/// removed; `{"path", "store_bytes", "blob_bytes", "removed"}`. A JSON body only, so a web page
/// cannot make a browser ask for one.
async fn backup(api: Arc<Api>, req: Request<Body>) -> Response<Full<Bytes>> {
    if let Err(refused) = access(&api, req.headers(), Some("backup")) {
        return refused;
    }
    let expected = "expected Content-Type: application/json with {} or {\"keep\": N} (N at least 1)";
    let body = match typed_body(req, "application/json", 4096, expected).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let keep = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(o)) if o.keys().all(|k| k == "keep") => match o.get("keep") {
            None => None,
            Some(n) => match n.as_u64().filter(|n| *n >= 1) {
                Some(n) => Some(n as usize),
                None => return error(StatusCode::BAD_REQUEST, expected),
            },
        },
        _ => return error(StatusCode::BAD_REQUEST, expected),
    };
    let work = tokio::task::spawn_blocking(move || {
        let pipeline = api.current.read().unwrap_or_else(|p| p.into_inner()).clone();
        crate::adapters::store::backup_now(
            &*pipeline.store,
            &pipeline.config.instance.data_dir,
            jiff::Timestamp::now(),
            keep,
        )
    });
    match work.await {
        Ok(Ok(backup)) => {
            tracing::info!(path = %backup.path.display(), store_bytes = backup.store_bytes, blob_bytes = backup.blob_bytes, "store backed up");
            json(StatusCode::OK, &backup)
        }
        Ok(Err(e)) => {
            use crate::adapters::store::StoreError;
            let status = match &e {
                StoreError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
                StoreError::Sled(sled::Error::Io(io)) if io.kind() == std::io::ErrorKind::StorageFull => {
                    StatusCode::INSUFFICIENT_STORAGE
                }
                StoreError::Sled(sled::Error::Io(io)) if io.kind() == std::io::ErrorKind::AlreadyExists => {
                    StatusCode::CONFLICT
                }
                e => store_status(e),
            };
            if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
                tracing::error!(error = %e, "the store was not backed up");
            }
            error(status, &e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `POST /api/tickets/{id}/merge` with `{"into": N}` (ticket `id` is merged
/// into N, which is kept) and `POST /api/tickets/{id}/split` with
/// `{"ticket": N}` (ticket N, merged into `id`, gets its own back), under
/// the writer lock. A JSON body only: a web form cannot send one unasked.
async fn merge(api: Arc<Api>, req: Request<Body>) -> Response<Full<Bytes>> {
    let actor = match access(&api, req.headers(), Some("tickets:write")) {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let path = req.uri().path().to_string();
    let (split, key) = match path.ends_with("/split") {
        true => (true, "ticket"),
        false => (false, "into"),
    };
    let id = path
        .strip_prefix("/api/tickets/")
        .and_then(|r| r.rsplit_once('/'))
        .and_then(|(id, _)| id.parse::<u64>().ok())
        .filter(|id| *id > 0);
    let Some(id) = id else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected /api/tickets/{number}/merge or /split",
        );
    };
    let expected = format!("expected Content-Type: application/json with {{\"{key}\": N}}");
    let body = match typed_body(req, "application/json", 4096, &expected).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let other = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get(key).and_then(|n| n.as_u64()))
        .filter(|n| *n > 0);
    let Some(other) = other else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("expected a JSON body like {{\"{key}\": 42}} (a ticket number)"),
        );
    };
    let work = tokio::task::spawn_blocking(move || {
        let pipeline = api.current.read().unwrap_or_else(|p| p.into_inner()).clone();
        let _guard = api.writer.lock().unwrap_or_else(|p| p.into_inner());
        pipeline.merge_request(TicketId(id), other, split, &actor, jiff::Timestamp::now())
    });
    match work.await {
        Ok(Ok(Ok(done))) => json(StatusCode::OK, &done),
        Ok(Ok(Err(why))) if why.starts_with("there is no ticket") => error(StatusCode::NOT_FOUND, &why),
        Ok(Ok(Err(why))) => error(StatusCode::CONFLICT, &why),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("the request failed: {e}")),
    }
}

/// `POST /csat/{ticket}/{token}/{rating}`: records the rating, once.
fn survey_vote(api: &Api, pipeline: &Pipeline, rest: &str) -> Response<Full<Bytes>> {
    let (id, rating) = match survey_link(pipeline, rest) {
        Ok(v) => v,
        Err(page) => return page,
    };
    let _guard = api.writer.lock().unwrap_or_else(|p| p.into_inner());
    let result = (|| -> Result<Response<Full<Bytes>>, crate::adapters::store::StoreError> {
        let Some(mut ticket) = pipeline.store.ticket(id)? else {
            return Ok(page(StatusCode::NOT_FOUND, "This ticket does not exist.", ""));
        };
        if ticket.csat.is_some() {
            return Ok(page(StatusCode::OK, "Your rating was already recorded. Thank you!", ""));
        }
        let now = jiff::Timestamp::now();
        ticket.csat = Some(rating);
        ticket.updated_at = now;
        let mut w = crate::adapters::store::Change::default();
        let actor = ticket.requester.email.clone();
        w.event(
            ticket.id,
            &crate::core::model::Event::new(
                now,
                "csat",
                &actor,
                &[
                    ("rating", serde_json::json!(rating)),
                    ("via", serde_json::json!("link")),
                ],
            ),
        );
        w.ticket(&ticket);
        pipeline.commit(w)?;
        pipeline.store.flush()?;
        Ok(page(StatusCode::OK, "Thank you for your rating!", ""))
    })();
    result.unwrap_or_else(|e| {
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("Please try again later ({e})."),
            "",
        )
    })
}

fn parse_query(q: &str) -> std::collections::HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A blocking GET against the daemon's API: `(status, body)`.
pub fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    request(addr, "GET", path, token, None, 60).map(|(status, _, body)| (status, body))
}

/// Whether a postdesk daemon answers at `addr` (its `/healthz`, within two seconds).
pub fn daemon_answers(addr: std::net::SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300)).is_ok()
        && matches!(request(addr, "GET", "/healthz", None, None, 2), Ok((200, _, body)) if body == "ok\n")
}

/// A blocking GET of one page of a list: `(status, body, next cursor)`.
pub fn get_page(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String, Option<String>), String> {
    let (status, next, body) = request(addr, "GET", path, token, None, 60)?;
    Ok((status, body, next))
}

/// The response header naming the cursor of a list's next page.
pub const NEXT_CURSOR: &str = "x-next-cursor";

/// A blocking POST of a raw mail to the daemon's `/api/ingest` or `/api/explain`: `(status, body)`.
pub fn post(addr: std::net::SocketAddr, path: &str, token: Option<&str>, body: &[u8]) -> Result<(u16, String), String> {
    request(addr, "POST", path, token, Some(("message/rfc822", body)), 120).map(|(status, _, body)| (status, body))
}

/// POSTs a JSON value to the API; returns the status and body.
pub fn post_json(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
    value: &serde_json::Value,
) -> Result<(u16, String), String> {
    post_json_within(addr, path, token, value, 120)
}

/// [`post_json`], the whole exchange bounded by `timeout_secs`.
pub fn post_json_within(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
    value: &serde_json::Value,
    timeout_secs: u64,
) -> Result<(u16, String), String> {
    let body = value.to_string();
    request(
        addr,
        "POST",
        path,
        token,
        Some(("application/json", body.as_bytes())),
        timeout_secs,
    )
    .map(|(status, _, body)| (status, body))
}

/// One request to the daemon's API with ureq: `(status, next-page cursor, body)`.
/// Every status is an answer (the CLI prints the API's reasons); redirects
/// are not followed; the whole exchange is bounded by `timeout_secs`.
fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
    timeout_secs: u64,
) -> Result<(u16, Option<String>, String), String> {
    request_bytes(addr, method, path, token, body, timeout_secs)
        .map(|(status, next, bytes)| (status, next, String::from_utf8_lossy(&bytes).into_owned()))
}

/// A blocking GET whose answer is kept as bytes (a raw mail): `(status, body)`.
pub fn get_bytes(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> Result<(u16, Vec<u8>), String> {
    request_bytes(addr, "GET", path, token, None, 60).map(|(status, _, body)| (status, body))
}

fn request_bytes(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
    timeout_secs: u64,
) -> Result<(u16, Option<String>, Vec<u8>), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(std::time::Duration::from_secs(5)))
        .timeout_global(Some(std::time::Duration::from_secs(timeout_secs)))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let auth = token.map(|t| format!("Bearer {t}"));
    let unreachable = |e: ureq::Error| format!("cannot reach the daemon's API at {addr}: {e}");
    let mut response = match (method, body) {
        ("POST", Some((content_type, bytes))) => {
            let mut r = agent.post(&url).content_type(content_type);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send(bytes).map_err(unreachable)?
        }
        _ => {
            let mut r = agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call().map_err(unreachable)?
        }
    };
    let status = response.status().as_u16();
    let next = response
        .headers()
        .get(NEXT_CURSOR)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // An export page can be large; the API bounds its own pages.
    let text = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .map_err(|e| format!("the daemon's answer could not be read: {e}"))?;
    Ok((status, next, text))
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_decoding() {
        let q = super::parse_query("status=open&assignee=Alice%20Jones&queue=a+b&x");
        assert_eq!(q["assignee"], "Alice Jones");
        assert_eq!(q["queue"], "a b");
        assert_eq!(q["x"], "");
        assert_eq!(super::percent_decode("100%"), "100%");
        assert_eq!(super::percent_decode("%zz"), "%zz");
        assert_eq!(super::percent_decode("%é1"), "%é1");
    }
}
