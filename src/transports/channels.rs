//! Tickets from other channels through the API: `POST /api/tickets` (a
//! logged call, a chat transcript, a monitoring alert) and `POST
//! /api/tickets/{id}/messages` (the customer's next message). What they send
//! becomes the mail it would have been and goes through the pipeline like
//! the portal's form: routed by the rules, assigned, acknowledged, notified.
//! An `Idempotency-Key` header names the mail's Message-ID, so a retry is
//! the pipeline's duplicate, and answers with the same ticket.

use crate::core::model::{Mailbox, TicketId};
use crate::core::outgoing::OutgoingMail;
use crate::pipeline::{Origin, Processed};
use crate::transports::http::{Api, access, error, json};
use crate::transports::web::portal::{one_line, valid_email};
use axum::body::Body;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use std::sync::Arc;

/// The channels a ticket may come from here (`web` is the portal's, `email` the mailboxes').
pub const CHANNELS: [&str; 3] = ["phone", "chat", "api"];

/// Largest JSON body taken.
const MAX_BODY: usize = 1 << 20;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Person {
    email: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTicket {
    #[serde(default)]
    channel: Option<String>,
    requester: Person,
    subject: String,
    text: String,
    /// The mailbox (by name) it counts as arriving in; the first by default.
    #[serde(default)]
    mailbox: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMessage {
    #[serde(default)]
    channel: Option<String>,
    text: String,
}

/// `POST /api/tickets` and `POST /api/tickets/{id}/messages`.
#[allow(clippy::result_large_err)]
pub async fn create(api: Arc<Api>, req: Request<Body>, ticket: Option<u64>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let actor = match access(&api, req.headers(), Some("tickets:write")) {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.split(';').next().unwrap_or("").trim() != "application/json" {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json",
        );
    }
    let key = match req.headers().get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.trim().is_empty() && k.len() <= 200 => Some(k.trim().to_string()),
        Some(_) => return error(StatusCode::BAD_REQUEST, "Idempotency-Key: 1 to 200 visible characters"),
    };
    let body = match tokio::time::timeout(
        crate::transports::http::BODY_TIMEOUT,
        http_body_util::Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => return error(StatusCode::PAYLOAD_TOO_LARGE, &format!("at most 1 MiB: {e}")),
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time"),
    };
    let pipeline = api.current.read().unwrap_or_else(|p| p.into_inner()).clone();
    let config = pipeline.config.clone();
    let channel_of = |c: &Option<String>| -> Result<String, Response<Full<Bytes>>> {
        let c = c.clone().unwrap_or_else(|| "api".into());
        if CHANNELS.contains(&c.as_str()) {
            Ok(c)
        } else {
            Err(error(
                StatusCode::BAD_REQUEST,
                &format!("channel {c:?}: expected {}", CHANNELS.join(", ")),
            ))
        }
    };
    let Some(desk_address) = config.desk.addresses.first().cloned() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no [[mailbox]] to take tickets in");
    };
    // The mail it would have been.
    let (from, subject, text, channel, mailbox, references) = match ticket {
        None => {
            let t: NewTicket = match serde_json::from_slice(&body) {
                Ok(t) => t,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "expected {{\"requester\": {{\"email\", \"name\"}}, \"subject\", \"text\", \"channel\"}}: {e}"
                        ),
                    );
                }
            };
            let channel = match channel_of(&t.channel) {
                Ok(c) => c,
                Err(r) => return r,
            };
            let Some(email) = valid_email(&t.requester.email) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "requester.email: expected an address like name@example.com",
                );
            };
            if config
                .desk
                .addresses
                .iter()
                .any(|a| a.address == email.to_ascii_lowercase())
            {
                return error(StatusCode::BAD_REQUEST, "requester.email: one of our own addresses");
            }
            let mailbox = match &t.mailbox {
                None => desk_address.clone(),
                Some(m) => match config.desk.addresses.iter().find(|a| &a.mailbox == m) {
                    Some(a) => a.clone(),
                    None => return error(StatusCode::BAD_REQUEST, &format!("mailbox {m:?}: no such [[mailbox]]")),
                },
            };
            let subject = one_line(&t.subject, 300);
            if subject.is_empty() || t.text.trim().is_empty() {
                return error(StatusCode::BAD_REQUEST, "subject and text must not be empty");
            }
            let name = t
                .requester
                .name
                .as_deref()
                .map(|n| one_line(n, 200))
                .filter(|n| !n.is_empty());
            (
                Mailbox::new(name, &email),
                subject,
                t.text,
                channel,
                mailbox,
                Vec::new(),
            )
        }
        Some(id) => {
            let m: NewMessage = match serde_json::from_slice(&body) {
                Ok(m) => m,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("expected {{\"text\", \"channel\"}}: {e}"),
                    );
                }
            };
            let channel = match channel_of(&m.channel) {
                Ok(c) => c,
                Err(r) => return r,
            };
            if m.text.trim().is_empty() {
                return error(StatusCode::BAD_REQUEST, "text must not be empty");
            }
            let store = pipeline.store.clone();
            let found = tokio::task::spawn_blocking(move || {
                let t = crate::adapters::store::resolve(&*store, TicketId(id))?;
                let first = match &t {
                    Some(t) => store.messages(t.id)?.into_iter().next().map(|m| m.message_id),
                    None => None,
                };
                Ok::<_, crate::adapters::store::StoreError>(t.map(|t| (t, first)))
            })
            .await;
            let (t, first) = match found {
                Ok(Ok(Some(v))) => v,
                Ok(Ok(None)) => return error(StatusCode::NOT_FOUND, &format!("no ticket {id}")),
                Ok(Err(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            };
            let mailbox = config
                .desk
                .addresses
                .iter()
                .find(|a| a.mailbox == t.mailbox)
                .cloned()
                .unwrap_or(desk_address.clone());
            let subject = format!("Re: [{} #{}] {}", config.desk.subject_tag, t.id.0, t.subject);
            (
                t.requester.clone(),
                subject,
                m.text,
                channel,
                mailbox,
                first.into_iter().collect(),
            )
        }
    };
    let limit = config.limits.max_message_bytes * 7 / 10;
    if text.len() > limit {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("text: at most {limit} bytes ([limits] max_message_bytes)"),
        );
    }
    // With a key, the same request makes the same Message-ID: a retry is a duplicate.
    let local = match &key {
        Some(k) => {
            let d = ring::digest::digest(&ring::digest::SHA256, format!("{actor}\n{ticket:?}\n{k}").as_bytes());
            d.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect::<String>()
        }
        None => crate::transports::web::portal::nonce(),
    };
    let message_id = format!("api.{local}@{}", config.desk.message_id_domain);
    let now = jiff::Timestamp::now();
    let mail = OutgoingMail {
        ticket: TicketId(0),
        purpose: "api".into(),
        from,
        to: vec![Mailbox::new(Some(config.desk.name.clone()), &mailbox.address)],
        reply_to: None,
        subject,
        body: text.replace("\r\n", "\n"),
        message_id: message_id.clone(),
        in_reply_to: references.first().cloned(),
        references,
        auto_submitted: false,
        date: now,
        loop_value: String::new(),
        attachments: Vec::new(),
    };
    let raw = crate::transports::smtp::wire::render_submission(&mail);
    let origin = Origin {
        web: true,
        channel: Some(channel),
        ..Origin::live(&mailbox.mailbox)
    };
    let a = api.clone();
    let work = tokio::task::spawn_blocking(move || {
        let _guard = a.writer.lock().unwrap_or_else(|p| p.into_inner());
        let done = pipeline.process(&raw, &origin, now)?;
        pipeline.store.flush()?;
        let replayed = match &done {
            Processed::Duplicate => crate::adapters::store::ticket_of_stored(&*pipeline.store, &message_id)?,
            _ => None,
        };
        Ok::<_, crate::adapters::store::StoreError>((done, replayed))
    });
    let answer = match work.await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    api.wake_sender.notify_one();
    tracing::info!(actor = %actor, result = ?answer.0, "taken in through the API");
    match answer {
        (Processed::NewTicket { ticket, .. }, _) => json(
            StatusCode::CREATED,
            &serde_json::json!({ "ticket": ticket.0, "result": "new_ticket" }),
        ),
        (Processed::Appended { ticket, .. }, _) => json(
            StatusCode::CREATED,
            &serde_json::json!({ "ticket": ticket.0, "result": "appended" }),
        ),
        (Processed::Duplicate, Some(t)) if key.is_some() => json(
            StatusCode::OK,
            &serde_json::json!({ "ticket": t.0, "result": "replayed" }),
        ),
        (other, _) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({ "error": format!("not taken as a ticket: {other:?}") }),
        ),
    }
}
