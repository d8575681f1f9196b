//! Tickets from other channels through the API: `POST /api/tickets` (a
//! logged call, a chat transcript, a monitoring alert), `POST
//! /api/tickets/{id}/messages` (the customer's next message, or an agent's
//! reply, relayed) and `POST /api/tickets/{id}/notes` (an agent's internal
//! note). What they send becomes the mail it would have been and goes
//! through the pipeline: a customer's like the portal's form (routed by the
//! rules, assigned, acknowledged, notified), an agent's like the team's
//! pages, signed for that agent and ticket (relayed, `#` commands at its
//! top run, `#note` kept internal).
//! An `Idempotency-Key` header names the mail's Message-ID, so a retry is
//! the pipeline's duplicate, and answers with the same ticket.

use crate::core::model::{Mailbox, TicketId};
use crate::core::outgoing::OutgoingMail;
use crate::pipeline::{Origin, Processed};
use crate::transports::http::{Api, access, error, json, typed_body};
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
    /// `customer` (the default) or `agent`.
    #[serde(default)]
    author: Option<String>,
    /// The agent (name or address) who writes it, with `author: agent`.
    #[serde(default)]
    agent: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNote {
    agent: String,
    text: String,
}

/// What a POST makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posted {
    /// `POST /api/tickets`.
    Ticket,
    /// `POST /api/tickets/{id}/messages`.
    Message(u64),
    /// `POST /api/tickets/{id}/notes`.
    Note(u64),
}

/// `POST /api/tickets`, `POST /api/tickets/{id}/messages` and `POST /api/tickets/{id}/notes`.
#[allow(clippy::result_large_err)]
pub async fn create(api: Arc<Api>, req: Request<Body>, posted: Posted) -> Response<Full<Bytes>> {
    let ticket = match posted {
        Posted::Ticket => None,
        Posted::Message(id) | Posted::Note(id) => Some(id),
    };
    let actor = match access(&api, req.headers(), Some("tickets:write")) {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let key = match req.headers().get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.trim().is_empty() && k.len() <= 200 => Some(k.trim().to_string()),
        Some(_) => return error(StatusCode::BAD_REQUEST, "Idempotency-Key: 1 to 200 visible characters"),
    };
    let body = match typed_body(
        req,
        "application/json",
        MAX_BODY,
        "expected Content-Type: application/json",
    )
    .await
    {
        Ok(b) => b,
        Err(refused) => return refused,
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
    // The agent who writes it, for an agent's reply or note.
    let mut author: Option<crate::adapters::config::Agent> = None;
    let mut found_ticket: Option<crate::core::model::Ticket> = None;
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
            let parsed = if posted == Posted::Note(id) {
                serde_json::from_slice::<NewNote>(&body)
                    .map(|n| NewMessage {
                        channel: None,
                        text: format!("#note\n\n{}", n.text.trim_start_matches(['\r', '\n'])),
                        author: Some("agent".into()),
                        agent: Some(n.agent),
                    })
                    .map_err(|e| format!("expected {{\"agent\", \"text\"}}: {e}"))
            } else {
                serde_json::from_slice::<NewMessage>(&body)
                    .map_err(|e| format!("expected {{\"text\", \"channel\", \"author\", \"agent\"}}: {e}"))
            };
            let m = match parsed {
                Ok(m) => m,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            };
            let channel = match channel_of(&m.channel) {
                Ok(c) => c,
                Err(r) => return r,
            };
            if m.text.trim().is_empty() || m.text.trim() == "#note" {
                return error(StatusCode::BAD_REQUEST, "text must not be empty");
            }
            author = match (m.author.as_deref(), &m.agent) {
                (None | Some("customer"), None) => None,
                (None | Some("customer"), Some(_)) => {
                    return error(StatusCode::BAD_REQUEST, "agent: only with \"author\": \"agent\"");
                }
                (Some("agent"), Some(a)) => match config.agent_by_name_or_email(a) {
                    _ if m.channel.is_some() => {
                        return error(StatusCode::BAD_REQUEST, "channel: only for a customer's message");
                    }
                    Some(agent) => Some(agent.clone()),
                    None => return error(StatusCode::BAD_REQUEST, &format!("agent {a:?}: no such [[agent]]")),
                },
                (Some("agent"), None) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "agent: the [[agent]] (name or email) who writes it",
                    );
                }
                (Some(other), _) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("author {other:?}: expected customer or agent"),
                    );
                }
            };
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
            found_ticket = Some(t.clone());
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
            let d = ring::digest::digest(&ring::digest::SHA256, format!("{actor}\n{posted:?}\n{k}").as_bytes());
            d.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect::<String>()
        }
        None => crate::transports::nonce(),
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
    let (mail, origin) = match (&author, &found_ticket) {
        (Some(agent), Some(t)) => {
            let (mail, mailbox) =
                crate::transports::web::team::agent_mail(&pipeline, t, agent, mail.body, "api", message_id.clone());
            (mail, Origin::live(&mailbox))
        }
        _ => (
            mail,
            Origin {
                web: true,
                channel: Some(channel),
                ..Origin::live(&mailbox.mailbox)
            },
        ),
    };
    let raw = crate::transports::smtp::wire::render_submission(&mail);
    let a = api.clone();
    let keyed = key.is_some();
    let work = tokio::task::spawn_blocking(move || {
        let _guard = a.writer.lock().unwrap_or_else(|p| p.into_inner());
        // A retry with the same key is the request already taken, whatever its
        // time stamp: the stored Message-ID answers, nothing is taken twice.
        if keyed && let Some(t) = crate::adapters::store::ticket_of_stored(&*pipeline.store, &message_id)? {
            return Ok((Processed::Duplicate, Some(t)));
        }
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
    tracing::info!(actor = %actor, agent = author.as_ref().map(|a| a.name.as_str()), result = ?answer.0, "taken in through the API");
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    assignee: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    untag: Option<Vec<String>>,
}

/// `PATCH /api/tickets/{id}` with any of `status`, `priority`, `assignee`,
/// `queue`, `type`, `tags` (added) and `untag`: the ticket after, or a 4xx
/// with every reason (nothing changes then).
pub async fn update(api: Arc<Api>, req: Request<Body>, id: u64) -> Response<Full<Bytes>> {
    use crate::core::reply::Command;
    let actor = match access(&api, req.headers(), Some("tickets:write")) {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let body = match typed_body(
        req,
        "application/json",
        64 << 10,
        "expected Content-Type: application/json",
    )
    .await
    {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let p: Patch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "expected {{\"status\", \"priority\", \"assignee\", \"queue\", \"type\", \"tags\", \"untag\"}}: {e}"
                ),
            );
        }
    };
    let word = |v: &str| !v.trim().is_empty() && !v.chars().any(|c| c.is_control());
    let mut commands = Vec::new();
    let mut bad = Vec::new();
    if let Some(s) = &p.status {
        match crate::core::model::Status::parse(s) {
            Some(s) => commands.push(Command::Status(s)),
            None => bad.push(format!("status {s:?}: expected new, open, pending, resolved or closed")),
        }
    }
    if let Some(v) = &p.priority {
        use crate::core::model::Priority;
        let parsed = match v.as_str() {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            "urgent" => Some(Priority::Urgent),
            _ => None,
        };
        match parsed {
            Some(v) => commands.push(Command::Priority(v)),
            None => bad.push(format!("priority {v:?}: expected low, normal, high or urgent")),
        }
    }
    for (value, what, make) in [
        (&p.assignee, "assignee", Command::Assign as fn(String) -> Command),
        (&p.queue, "queue", Command::Queue),
        (&p.kind, "type", Command::Type),
    ] {
        if let Some(v) = value {
            if word(v) {
                commands.push(make(v.trim().to_string()));
            } else {
                bad.push(format!("{what}: expected a name"));
            }
        }
    }
    for (list, what, make) in [
        (&p.tags, "tags", Command::Tag as fn(Vec<String>) -> Command),
        (&p.untag, "untag", Command::Untag),
    ] {
        if let Some(tags) = list {
            if tags.iter().all(|t| word(t) && !t.contains(char::is_whitespace)) {
                commands.push(make(tags.clone()));
            } else {
                bad.push(format!("{what}: expected words without spaces"));
            }
        }
    }
    if !bad.is_empty() {
        return json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": bad.join("; ") }));
    }
    if commands.is_empty() {
        return error(StatusCode::BAD_REQUEST, "nothing to change");
    }
    let a = api.clone();
    let work = tokio::task::spawn_blocking(move || {
        let pipeline = a.current.read().unwrap_or_else(|p| p.into_inner()).clone();
        let _guard = a.writer.lock().unwrap_or_else(|p| p.into_inner());
        pipeline.api_update(TicketId(id), &commands, &actor, jiff::Timestamp::now())
    });
    match work.await {
        Ok(Ok(Ok(t))) => {
            api.wake_sender.notify_one();
            json(StatusCode::OK, &t)
        }
        Ok(Ok(Err(why))) if why.len() == 1 && why[0].starts_with("there is no ticket") => {
            error(StatusCode::NOT_FOUND, &why[0])
        }
        Ok(Ok(Err(why))) => json(StatusCode::CONFLICT, &serde_json::json!({ "error": why.join("; ") })),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
