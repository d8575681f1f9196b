//! The small HTTP API (hyper, HTTP/1.1): `GET /healthz`, `/readyz`,
//! `/api/tickets`, `/api/tickets/{id}`, `/api/export`, `/api/quarantine`,
//! `/api/report`, `/metrics`, the signed survey links `/csat/…`, and
//! `POST /api/ingest` and `/api/explain` for one raw mail. It works on the
//! store the daemon holds, so the CLI works while the daemon runs ([`get`]
//! and [`post`] are its client).

use crate::cli::ticket_view;
use crate::metrics::Gauges;
use crate::model::{Status, TicketId};
use crate::pipeline::Pipeline;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the API serves from.
#[derive(Debug)]
pub struct Api {
    /// The daemon's pipeline in force (store, config, metrics).
    pub current: Arc<std::sync::RwLock<Pipeline>>,
    /// Bearer token required on every path but `/healthz` and `/csat/`, when set.
    pub token: Option<crate::config::Secret>,
    /// The daemon's writer lock: the survey links and `/api/ingest` write.
    pub writer: Arc<std::sync::Mutex<()>>,
    /// Wakes the sender after `/api/ingest` queued mail.
    pub wake_sender: Arc<tokio::sync::Notify>,
}

/// Serves until `shutdown` turns true.
pub async fn serve(listener: TcpListener, api: Arc<Api>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                continue;
            }
        };
        let api = api.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let api = api.clone();
                async move {
                    if req.method() == hyper::Method::POST && req.uri().path() == "/api/ingest" {
                        return Ok::<_, Infallible>(ingest(&api, req, false).await);
                    }
                    if req.method() == hyper::Method::POST && req.uri().path() == "/api/explain" {
                        return Ok::<_, Infallible>(ingest(&api, req, true).await);
                    }
                    Ok::<_, Infallible>(handle(&api, &req))
                }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "http connection ended");
            }
        });
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<Full<Bytes>> {
    respond(
        status,
        "application/json",
        serde_json::to_string_pretty(v).expect("serialises"),
    )
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}

fn authorized(api: &Api, req: &Request<Incoming>) -> bool {
    let Some(token) = &api.token else { return true };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    crate::token::constant_time_eq(given.as_bytes(), token.expose().as_bytes())
}

/// `POST /api/ingest?mailbox=NAME&at=RFC3339`: one raw mail through the
/// pipeline under the daemon's writer lock, so `postdesk ingest` (an MTA's
/// pipe) works while the daemon holds the store. With `explain`
/// (`POST /api/explain`), how it would be handled, storing nothing.
async fn ingest(api: &Api, req: Request<Incoming>, explain: bool) -> Response<Full<Bytes>> {
    use http_body_util::{BodyExt, Limited};
    if !authorized(api, &req) {
        return error(StatusCode::UNAUTHORIZED, "a bearer token is required");
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
    // A little over the limit, so an oversized mail is quarantined rather than refused.
    let limit = pipeline.config.limits.max_message_bytes.saturating_add(1 << 20);
    let raw = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
    };
    if explain {
        return match pipeline.explain(&raw, &mailbox, at) {
            Ok(e) => json(StatusCode::OK, &e),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
    }
    let origin = crate::pipeline::Origin {
        mailbox,
        source_key: None,
        position: None,
    };
    let result = {
        let _guard = api.writer.lock().unwrap_or_else(|p| p.into_inner());
        pipeline
            .process(&raw, &origin, at)
            .and_then(|p| pipeline.store.flush().map(|_| p))
    };
    match result {
        Ok(processed) => {
            api.wake_sender.notify_one();
            json(StatusCode::OK, &processed)
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn handle(api: &Api, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let pipeline = api.current.read().unwrap_or_else(|p| p.into_inner()).clone();
    let path = req.uri().path();
    if req.method() != hyper::Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET (and POST /api/ingest)");
    }
    if path == "/healthz" {
        return respond(StatusCode::OK, "text/plain", "ok\n".into());
    }
    // Survey links carry their own signature: customers click them without a token.
    if let Some(rest) = path.strip_prefix("/csat/") {
        return survey_click(api, &pipeline, rest);
    }
    if !authorized(api, req) {
        return error(StatusCode::UNAUTHORIZED, "a bearer token is required");
    }
    let query = parse_query(req.uri().query().unwrap_or(""));
    let store = &pipeline.store;
    let result: Result<Response<Full<Bytes>>, crate::store::StoreError> = (|| {
        Ok(match path {
            "/readyz" => {
                let boxes = pipeline.metrics.mailboxes();
                let down: Vec<&String> = pipeline
                    .config
                    .mailboxes
                    .iter()
                    .map(|m| &m.name)
                    .filter(|n| !boxes.get(*n).is_some_and(|s| s.up))
                    .collect();
                if down.is_empty() {
                    respond(StatusCode::OK, "text/plain", "ready\n".into())
                } else {
                    json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &serde_json::json!({ "not_ready": down }),
                    )
                }
            }
            "/metrics" => {
                let mut g = Gauges::default();
                for t in store.tickets() {
                    let t = t?;
                    *g.tickets
                        .entry((t.status.as_str().to_string(), t.queue.clone()))
                        .or_insert(0) += 1;
                }
                let outbox = store.outbox()?;
                g.outbox_depth = outbox.len() as u64;
                let now = jiff::Timestamp::now().as_second();
                g.outbox_oldest_age = outbox
                    .iter()
                    .map(|(_, e)| now - e.mail.date.as_second())
                    .max()
                    .unwrap_or(0)
                    .max(0);
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
                let mut list = Vec::new();
                for t in store.tickets() {
                    let t = t?;
                    if status.is_some_and(|s| s != t.status)
                        || query.get("queue").is_some_and(|q| *q != t.queue)
                        || query.get("assignee").is_some_and(|a| Some(a) != t.assignee.as_ref())
                    {
                        continue;
                    }
                    list.push(t);
                }
                json(StatusCode::OK, &list)
            }
            "/api/export" => {
                let mut out = String::new();
                let ids: Vec<TicketId> = store.tickets().map(|t| t.map(|t| t.id)).collect::<Result<_, _>>()?;
                for id in ids {
                    if let Some(v) = ticket_view(store, id)? {
                        out.push_str(&serde_json::to_string(&v).expect("serialises"));
                        out.push('\n');
                    }
                }
                respond(StatusCode::OK, "application/x-ndjson", out)
            }
            "/api/quarantine" => json(StatusCode::OK, &store.quarantine()?),
            "/api/report" => {
                let parse = |k: &str| query.get(k).map(|v| crate::cli::parse_day_or_time(v)).transpose();
                match (parse("since"), parse("until")) {
                    (Ok(since), Ok(until)) => {
                        let until = until.unwrap_or_else(jiff::Timestamp::now);
                        let r = crate::report::report(&crate::cli::histories(store)?, &pipeline.config, since, until);
                        json(StatusCode::OK, &r)
                    }
                    (Err(e), _) | (_, Err(e)) => error(StatusCode::BAD_REQUEST, &e),
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
    result.unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))
}

/// `/csat/{ticket}/{token}/{rating}`: records a rating from a survey link.
fn survey_click(api: &Api, pipeline: &Pipeline, rest: &str) -> Response<Full<Bytes>> {
    let page = |status: StatusCode, text: &str| {
        respond(
            status,
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><meta charset=utf-8><title>{0}</title><p>{0}</p>\n",
                text
            ),
        )
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let (Some(id), Some(token), Some(rating)) = (
        parts.first().and_then(|p| p.parse::<u64>().ok()),
        parts.get(1),
        parts
            .get(2)
            .and_then(|p| p.parse::<u8>().ok())
            .filter(|r| (1..=5).contains(r)),
    ) else {
        return page(StatusCode::BAD_REQUEST, "This link is not complete.");
    };
    if parts.len() != 3 || !pipeline.signer.verify_survey_token(TicketId(id), token) {
        return page(StatusCode::FORBIDDEN, "This link is not valid.");
    }
    let _guard = api.writer.lock().unwrap_or_else(|p| p.into_inner());
    let result = (|| -> Result<Response<Full<Bytes>>, crate::store::StoreError> {
        let Some(mut ticket) = pipeline.store.ticket(TicketId(id))? else {
            return Ok(page(StatusCode::NOT_FOUND, "This ticket does not exist."));
        };
        if ticket.csat.is_some() {
            return Ok(page(StatusCode::OK, "Your rating was already recorded. Thank you!"));
        }
        let now = jiff::Timestamp::now();
        ticket.csat = Some(rating);
        ticket.updated_at = now;
        let mut w = crate::store::WriteSet::default();
        let actor = ticket.requester.email.clone();
        pipeline.store.add_event(
            &mut w,
            ticket.id,
            &crate::model::Event::new(
                now,
                "csat",
                &actor,
                &[
                    ("rating", serde_json::json!(rating)),
                    ("via", serde_json::json!("link")),
                ],
            ),
        )?;
        crate::store::Store::put_ticket(&mut w, &ticket);
        pipeline.store.commit(&w)?;
        pipeline.store.flush()?;
        Ok(page(StatusCode::OK, "Thank you for your rating!"))
    })();
    result.unwrap_or_else(|e| {
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("Please try again later ({e})."),
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
    request(addr, "GET", path, token, None, 60)
}

/// A blocking POST of a raw mail to the daemon's `/api/ingest` or `/api/explain`: `(status, body)`.
pub fn post(addr: std::net::SocketAddr, path: &str, token: Option<&str>, body: &[u8]) -> Result<(u16, String), String> {
    request(addr, "POST", path, token, Some(body), 120)
}

fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    timeout_secs: u64,
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .map_err(|e| format!("cannot reach the daemon's API at {addr}: {e}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(timeout_secs)))
        .ok();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: message/rfc822\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    if let Some(b) = body {
        s.write_all(b).map_err(|e| e.to_string())?;
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed HTTP response")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("malformed status line")?;
    Ok((status, body.to_string()))
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
