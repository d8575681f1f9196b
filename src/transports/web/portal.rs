//! The customer portal: the `/new` form that opens a ticket (channel `web`)
//! and the signed status page `/t/{ticket}/{token}` with the public
//! conversation, its attachments, the survey and a reply box.
//!
//! What customers write goes in as the mail it would have been (built by
//! the wire adapter, taken in by the pipeline with [`Origin::web`]), so it is
//! threaded, routed, acknowledged, deduplicated and notified exactly like
//! mail, and never counts as an agent's. The form's defences need no third
//! party: a honeypot field, a signed form token at least
//! [`MIN_FORM_AGE`] old, per-client-address and per-email-address limits,
//! and size limits. The confirmation page shows nothing of any ticket.

use super::{ClientAddr, Web, html};
use crate::core::model::{Mailbox, TicketId};
use crate::core::outgoing::{Attachment, OutgoingMail};
use crate::pipeline::{Origin, Pipeline, Processed};
pub(crate) use crate::transports::nonce;
use askama::Template;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, body::Body};
use std::sync::Arc;

/// A form token younger than this is a robot's (nobody types that fast).
pub const MIN_FORM_AGE: i64 = 2;
/// A form token older than this has expired.
pub const MAX_FORM_AGE: i64 = 2 * 3600;
/// Most files on one form.
pub const MAX_FILES: usize = 10;
/// Replies through one client address in an hour.
const REPLIES_PER_IP_PER_HOUR: u32 = 30;

#[derive(Template)]
#[template(path = "message.html", config = "src/transports/web/askama.toml")]
struct MessagePage<'a> {
    desk: &'a str,
    title: &'a str,
    text: &'a str,
    link: Option<&'a str>,
    link_text: &'a str,
}

#[derive(Template, Default)]
#[template(path = "new.html", config = "src/transports/web/askama.toml")]
struct NewPage<'a> {
    desk: &'a str,
    form_token: String,
    error: Option<String>,
    name: String,
    email: String,
    subject: String,
    message: String,
    max_files: usize,
    max_mb: usize,
    /// The proof of work's challenge and bits, when `[web] proof_of_work` asks for one.
    work: Option<(String, u32)>,
}

struct ShownMessage {
    author: String,
    from_customer: bool,
    iso: String,
    when: String,
    text: String,
    attachments: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "status.html", config = "src/transports/web/askama.toml")]
struct StatusPage<'a> {
    desk: &'a str,
    id: u64,
    subject: &'a str,
    status: &'a str,
    sent: bool,
    error: Option<String>,
    survey: Vec<(u8, &'static str, String)>,
    messages: Vec<ShownMessage>,
    closed: bool,
    action: String,
}

pub(super) fn pipeline(web: &Web) -> Pipeline {
    web.api.current.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn message(pipeline: &Pipeline, status: StatusCode, title: &str, text: &str) -> Response {
    let page = MessagePage {
        desk: &pipeline.config.desk.name,
        title,
        text,
        link: None,
        link_text: "",
    };
    html(status, page.render())
}

fn portal_off(pipeline: &Pipeline) -> Option<Response> {
    (!pipeline.config.web.portal).then(|| {
        message(
            pipeline,
            StatusCode::NOT_FOUND,
            "Not here",
            "This help desk takes requests by email only.",
        )
    })
}

/// Bytes all the fields and files of one form may take: the raw mail they
/// become stays within `[limits] max_message_bytes` (base64 adds a third).
fn form_budget(pipeline: &Pipeline) -> usize {
    pipeline.config.limits.max_message_bytes / 10 * 7
}

pub(super) fn form_token(pipeline: &Pipeline, now: i64) -> String {
    format!("{now}.{}", pipeline.signer.sign_long("form", &now.to_string()))
}

/// Why a form token is refused, if it is.
pub(super) fn check_form_token(pipeline: &Pipeline, token: &str, now: i64) -> Option<&'static str> {
    let Some((at, sig)) = token.split_once('.') else {
        return Some("The form is incomplete; please load it again.");
    };
    let Ok(at) = at.parse::<i64>() else {
        return Some("The form is incomplete; please load it again.");
    };
    if !crate::core::token::constant_time_eq(
        pipeline.signer.sign_long("form", &at.to_string()).as_bytes(),
        sig.as_bytes(),
    ) {
        return Some("The form is incomplete; please load it again.");
    }
    if now - at < MIN_FORM_AGE {
        return Some("That was quick! Please check your message and send it again.");
    }
    if now - at > MAX_FORM_AGE {
        return Some("The form expired; your text is kept below, please send it again.");
    }
    None
}

/// `GET /new`: the form.
pub async fn new_form(State(web): State<Arc<Web>>) -> Response {
    let pipeline = pipeline(&web);
    if let Some(off) = portal_off(&pipeline) {
        return off;
    }
    let now = jiff::Timestamp::now().as_second();
    let page = NewPage {
        desk: &pipeline.config.desk.name,
        form_token: form_token(&pipeline, now),
        max_files: MAX_FILES,
        max_mb: form_budget(&pipeline) >> 20,
        work: work_challenge(&pipeline, now),
        ..Default::default()
    };
    new_page(StatusCode::OK, &page)
}

/// The `/new` page: with the proof of work's script allowed when it asks for one.
fn new_page(status: StatusCode, page: &NewPage<'_>) -> Response {
    let mut r = html(status, page.render());
    if page.work.is_some() {
        r.headers_mut().insert(
            axum::http::header::CONTENT_SECURITY_POLICY,
            axum::http::HeaderValue::from_static(super::SCRIPT_CSP),
        );
    }
    r
}

/// A signed `{at}.{nonce}.{bits}.{sig}` the form's script works on, when
/// `[web] proof_of_work` is set.
fn work_challenge(pipeline: &Pipeline, now: i64) -> Option<(String, u32)> {
    let bits = pipeline.config.web.proof_of_work;
    (bits > 0).then(|| {
        let body = format!("{now}.{}.{bits}", &nonce()[..16]);
        (format!("{body}.{}", pipeline.signer.sign_long("work", &body)), bits)
    })
}

/// Why the proof of work of a posted form is refused, if it is: a challenge
/// we signed, of the form's age, asking at least the bits asked now, an
/// answer that reaches them, and used once (recorded in the store).
fn check_work(web: &Web, pipeline: &Pipeline, challenge: &str, answer: &str, now: i64) -> Option<&'static str> {
    let bits = pipeline.config.web.proof_of_work;
    if bits == 0 {
        return None;
    }
    let again = "The check in your browser did not finish; please send the form again (it needs JavaScript).";
    let Some((body, sig)) = challenge.rsplit_once('.') else {
        return Some(again);
    };
    if !crate::core::token::constant_time_eq(pipeline.signer.sign_long("work", body).as_bytes(), sig.as_bytes()) {
        return Some(again);
    }
    let mut parts = body.split('.');
    let (Some(at), Some(id), Some(asked), None) = (
        parts.next().and_then(|a| a.parse::<i64>().ok()),
        parts.next(),
        parts.next().and_then(|b| b.parse::<u32>().ok()),
        parts.next(),
    ) else {
        return Some(again);
    };
    if now - at > MAX_FORM_AGE {
        return Some("The form expired; your text is kept below, please send it again.");
    }
    if asked < bits || answer.len() > 20 || crate::core::portal::work_bits(challenge, answer) < bits {
        return Some(again);
    }
    match super::spend(web, pipeline, format!("work-used:{id}")) {
        Ok(true) => None,
        Ok(false) => Some("This form was sent already; please send it again."),
        Err(_) => Some("We could not take your request just now; please try again in a minute."),
    }
}

/// The fields and files of a posted form.
#[derive(Default)]
struct Form {
    fields: std::collections::HashMap<String, String>,
    files: Vec<Attachment>,
}

impl Form {
    fn get(&self, name: &str) -> String {
        self.fields.get(name).cloned().unwrap_or_default()
    }
}

/// Reads a `multipart/form-data` body within `budget` bytes and [`MAX_FILES`] files.
async fn read_form(mut multipart: Multipart, budget: usize) -> Result<Form, String> {
    let mut form = Form::default();
    let mut used = 0usize;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(format!("The form could not be read ({}).", e.body_text())),
        };
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let content_type = field.content_type().unwrap_or("application/octet-stream").to_string();
        let mut field = field;
        let mut data = Vec::new();
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    used += chunk.len();
                    if used > budget {
                        return Err(format!(
                            "The form is too large: {} MB at most, attachments included.",
                            budget >> 20
                        ));
                    }
                    data.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(format!("The form could not be read ({}).", e.body_text())),
            }
        }
        match file_name {
            Some(file) if name == "attachment" => {
                // A file input left empty still sends a part, with no name and no bytes.
                if file.is_empty() && data.is_empty() {
                    continue;
                }
                if form.files.len() >= MAX_FILES {
                    return Err(format!("At most {MAX_FILES} attachments, please."));
                }
                form.files.push(Attachment {
                    name: clean_file_name(&file),
                    content_type: clean_content_type(&content_type),
                    data,
                });
            }
            _ => {
                let text = String::from_utf8(data).map_err(|_| "The form's text is not UTF-8.".to_string())?;
                form.fields.insert(name, text);
            }
        }
    }
    Ok(form)
}

/// A file name without paths or control characters, at most 120 characters.
fn clean_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '<' | '>'))
        .take(120)
        .collect();
    if clean.trim().is_empty() {
        "attachment".into()
    } else {
        clean.trim().to_string()
    }
}

/// A `type/subtype` content type, else `application/octet-stream`.
fn clean_content_type(ct: &str) -> String {
    let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let ok = ct.split_once('/').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && (a.chars().chain(b.chars())).all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    if ok { ct } else { "application/octet-stream".into() }
}

/// One line of text: no control characters, trimmed, at most `max` characters.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}

/// A plausible address (`local@domain.tld`, no spaces or brackets), lowercased domain.
pub(crate) fn valid_email(s: &str) -> Option<String> {
    let s = s.trim();
    let (local, domain) = s.rsplit_once('@')?;
    let bad = |p: &str| {
        p.is_empty()
            || p.chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\".contains(c))
    };
    if s.len() > 254 || bad(local) || bad(domain) || local.contains('@') {
        return None;
    }
    let domain = domain.to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels
            .iter()
            .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
    {
        return None;
    }
    Some(format!("{local}@{domain}"))
}

/// Runs mail written on our pages through the pipeline, under the writer
/// lock, from `origin`; wakes the sender.
pub(super) async fn take_in(
    web: &Arc<Web>,
    pipeline: Pipeline,
    origin: Origin,
    mail: OutgoingMail,
) -> Result<Processed, String> {
    let raw = crate::transports::smtp::wire::render_submission(&mail);
    let api = web.api.clone();
    let work = tokio::task::spawn_blocking(move || {
        let _guard = api.writer.lock().unwrap_or_else(|p| p.into_inner());
        let done = pipeline.process(&raw, &origin, jiff::Timestamp::now())?;
        pipeline.store.flush()?;
        Ok::<_, crate::adapters::store::StoreError>(done)
    });
    let done = match work.await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(e) => return Err(format!("the request failed: {e}")),
    };
    web.api.wake_sender.notify_one();
    Ok(done)
}

/// A customer's mail from the portal's pages to `mailbox`.
fn from_the_web(mailbox: &str) -> Origin {
    Origin {
        web: true,
        ..Origin::live(mailbox)
    }
}

fn client_key(addr: Option<Extension<ClientAddr>>) -> String {
    addr.map(|Extension(ClientAddr(ip))| ip.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// `POST /new`: the form, checked, as a new mail to the desk.
pub async fn new_submit(
    State(web): State<Arc<Web>>,
    addr: Option<Extension<ClientAddr>>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let pipeline = pipeline(&web);
    if let Some(off) = portal_off(&pipeline) {
        return off;
    }
    let Ok(multipart) = multipart else {
        return message(
            &pipeline,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Not a form",
            "Please send the form from the page /new (multipart/form-data).",
        );
    };
    let now = jiff::Timestamp::now();
    let desk = pipeline.config.desk.name.clone();
    let form = match read_form(multipart, form_budget(&pipeline)).await {
        Ok(f) => f,
        Err(why) => return message(&pipeline, StatusCode::PAYLOAD_TOO_LARGE, "Not sent", &why),
    };
    let page = NewPage {
        desk: &desk,
        form_token: form_token(&pipeline, now.as_second()),
        name: one_line(&form.get("name"), 200),
        email: form.get("email").trim().chars().take(254).collect(),
        subject: one_line(&form.get("subject"), 300),
        message: form.get("message").chars().take(100_000).collect(),
        max_files: MAX_FILES,
        max_mb: form_budget(&pipeline) >> 20,
        error: None,
        work: work_challenge(&pipeline, now.as_second()),
    };
    let refuse = |mut page: NewPage<'_>, status: StatusCode, why: &str| {
        page.error = Some(why.to_string());
        new_page(status, &page)
    };
    // The honeypot: people never see the field, robots fill it. They get the
    // same page as people, and nothing is stored.
    if !form.get("website").trim().is_empty() {
        tracing::info!(client = %client_key(addr), "web form honeypot filled; dropped");
        return thanks(&pipeline);
    }
    if let Some(why) = check_form_token(&pipeline, &form.get("form_token"), now.as_second()) {
        return refuse(page, StatusCode::BAD_REQUEST, why);
    }
    let (w, p, challenge, answer) = (
        web.clone(),
        pipeline.clone(),
        form.get("pow_challenge"),
        form.get("pow"),
    );
    let work = tokio::task::spawn_blocking(move || check_work(&w, &p, &challenge, &answer, now.as_second()))
        .await
        .unwrap_or(Some(
            "We could not take your request just now; please try again in a minute.",
        ));
    if let Some(why) = work {
        return refuse(page, StatusCode::FORBIDDEN, why);
    }
    let Some(email) = valid_email(&page.email) else {
        return refuse(
            page,
            StatusCode::BAD_REQUEST,
            "Please give an email address like name@example.com: our answer goes there.",
        );
    };
    if pipeline
        .config
        .desk
        .addresses
        .iter()
        .any(|a| a.address == email.to_ascii_lowercase())
    {
        return refuse(
            page,
            StatusCode::BAD_REQUEST,
            "Please give your own email address, not ours.",
        );
    }
    if page.subject.is_empty() || page.message.trim().is_empty() {
        return refuse(page, StatusCode::BAD_REQUEST, "Please fill in a subject and a message.");
    }
    let web_config = pipeline.config.web.clone();
    let (ip_ok, address_ok) = {
        let mut l = web.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let ip_ok = l.allow(
            &format!("new-ip:{}", client_key(addr)),
            web_config.new_per_ip_per_hour,
            now.as_second(),
        );
        let address_ok = ip_ok
            && l.allow(
                &format!("new-address:{}", email.to_ascii_lowercase()),
                web_config.new_per_address_per_hour,
                now.as_second(),
            );
        (ip_ok, address_ok)
    };
    if !ip_ok || !address_ok {
        return refuse(
            page,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests were sent from here in the last hour; please try again later or write to us by email.",
        );
    }
    let address = pipeline.config.desk.addresses[0].clone();
    let name = Some(page.name.clone()).filter(|n| !n.is_empty());
    let mail = OutgoingMail {
        ticket: TicketId(0),
        purpose: "web".into(),
        from: Mailbox::new(name, &email),
        to: vec![Mailbox::new(Some(desk.clone()), &address.address)],
        reply_to: None,
        subject: page.subject.clone(),
        body: page.message.replace("\r\n", "\n"),
        message_id: format!("web.{}@{}", nonce(), pipeline.config.desk.message_id_domain),
        in_reply_to: None,
        references: Vec::new(),
        auto_submitted: false,
        date: now,
        loop_value: String::new(),
        attachments: form.files,
    };
    match take_in(&web, pipeline.clone(), from_the_web(&address.mailbox), mail).await {
        Ok(done) => {
            tracing::info!(result = ?done, "web form taken in");
            thanks(&pipeline)
        }
        Err(e) => refuse(
            page,
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("We could not take your request just now ({e}); please try again in a minute."),
        ),
    }
}

/// The confirmation: nothing of the ticket (the link goes to the mailbox).
fn thanks(pipeline: &Pipeline) -> Response {
    message(
        pipeline,
        StatusCode::OK,
        "Thank you",
        "We have your request. A confirmation is on its way to the address you gave, with a link to follow your request and answer us.",
    )
}

/// The attachment `name` of the stored mail `key` as a download (always
/// `application/octet-stream`, an ASCII file name), or `None` when either is
/// missing or the mail no longer holds it.
pub(super) fn download(pipeline: &Pipeline, name: Option<&String>, key: Option<&str>) -> Option<Response> {
    let (name, key) = (name?, key?);
    let raw = pipeline.store.blob(key).ok()??;
    let parsed = crate::adapters::inbound::parse(&raw, &pipeline.config.limits).ok()?;
    let part = parsed.attachment_parts.iter().find(|a| &a.name == name)?;
    let ascii: String = part
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(
        (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{ascii}\"")),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            Body::from(part.data.clone()),
        )
            .into_response(),
    )
}

/// The ticket of a status link, following merges, or the page to show instead.
#[allow(clippy::result_large_err)]
fn linked_ticket(pipeline: &Pipeline, id: &str, token: &str) -> Result<crate::core::model::Ticket, Response> {
    let invalid = || {
        message(
            pipeline,
            StatusCode::NOT_FOUND,
            "Link not valid",
            "This link is not valid. Please use the link from our latest mail.",
        )
    };
    let Some(id) = id.parse::<u64>().ok().filter(|n| *n > 0) else {
        return Err(invalid());
    };
    if !pipeline.signer.verify_status_token(TicketId(id), token) {
        return Err(invalid());
    }
    match crate::adapters::store::resolve(&*pipeline.store, TicketId(id)) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(invalid()),
        Err(e) => Err(message(
            pipeline,
            StatusCode::SERVICE_UNAVAILABLE,
            "Please try again",
            &format!("The page cannot be shown just now ({e})."),
        )),
    }
}

/// `?sent=1` after a reply.
#[derive(serde::Deserialize)]
pub struct StatusQuery {
    #[serde(default)]
    sent: Option<String>,
}

/// `GET /t/{ticket}/{token}`: the status page.
pub async fn status(
    State(web): State<Arc<Web>>,
    Path((id, token)): Path<(String, String)>,
    Query(query): Query<StatusQuery>,
) -> Response {
    let pipeline = pipeline(&web);
    if let Some(off) = portal_off(&pipeline) {
        return off;
    }
    let sent = query.sent.is_some();
    tokio::task::spawn_blocking(move || status_page(&pipeline, &id, &token, sent, None))
        .await
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("the request failed: {e}")).into_response())
}

fn status_page(pipeline: &Pipeline, id: &str, token: &str, sent: bool, error: Option<String>) -> Response {
    let ticket = match linked_ticket(pipeline, id, token) {
        Ok(t) => t,
        Err(page) => return page,
    };
    let view = match crate::view::ticket_view(&*pipeline.store, ticket.id) {
        Ok(Some(v)) => v,
        Ok(None) => {
            return message(
                pipeline,
                StatusCode::NOT_FOUND,
                "Link not valid",
                "This link is not valid.",
            );
        }
        Err(e) => {
            return message(
                pipeline,
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                &format!("The page cannot be shown just now ({e})."),
            );
        }
    };
    let config = &pipeline.config;
    // Links name the number the customer was given; merges are followed on each request.
    let base = format!("/t/{id}/{token}");
    let tz = jiff::tz::TimeZone::get(&config.desk.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    let messages = crate::core::portal::public_messages(&view.ticket, &view.messages, config)
        .into_iter()
        .enumerate()
        .map(|(i, m)| ShownMessage {
            author: m.author,
            from_customer: m.from_customer,
            iso: m.date.to_string(),
            when: m.date.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M %Z").to_string(),
            text: m.text,
            attachments: m
                .attachments
                .iter()
                .enumerate()
                .map(|(k, name)| (name.clone(), format!("{base}/a/{i}/{k}")))
                .collect(),
        })
        .collect();
    let status = view.ticket.status;
    let survey = match (status, &config.desk.public_url, view.ticket.csat) {
        (crate::core::model::Status::Resolved, Some(url), None) if config.automation.csat => {
            let t = pipeline.signer.survey_token(view.ticket.id);
            [(5, "excellent"), (4, "good"), (3, "okay"), (2, "poor"), (1, "bad")]
                .into_iter()
                .map(|(n, w)| (n, w, format!("{url}/csat/{}/{t}/{n}", view.ticket.id)))
                .collect()
        }
        _ => Vec::new(),
    };
    let page = StatusPage {
        desk: &config.desk.name,
        id: view.ticket.id.0,
        subject: &view.ticket.subject,
        status: crate::core::portal::status_words(status),
        sent,
        error,
        survey,
        messages,
        closed: status == crate::core::model::Status::Closed,
        action: base,
    };
    html(StatusCode::OK, page.render())
}

/// `POST /t/{ticket}/{token}`: the customer's answer, as their mail to the ticket.
pub async fn reply(
    State(web): State<Arc<Web>>,
    Path((id, token)): Path<(String, String)>,
    addr: Option<Extension<ClientAddr>>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let pipeline = pipeline(&web);
    if let Some(off) = portal_off(&pipeline) {
        return off;
    }
    #[allow(clippy::result_large_err)]
    let ticket = {
        let (p, i, t) = (pipeline.clone(), id.clone(), token.clone());
        match tokio::task::spawn_blocking(move || linked_ticket(&p, &i, &t)).await {
            Ok(Ok(t)) => t,
            Ok(Err(page)) => return page,
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("the request failed: {e}")).into_response(),
        }
    };
    let again = |why: String, status: StatusCode| {
        let (p, i, t) = (pipeline.clone(), id.clone(), token.clone());
        async move {
            let mut r = tokio::task::spawn_blocking(move || status_page(&p, &i, &t, false, Some(why)))
                .await
                .unwrap_or_else(|e| {
                    (StatusCode::INTERNAL_SERVER_ERROR, format!("the request failed: {e}")).into_response()
                });
            *r.status_mut() = status;
            r
        }
    };
    let Ok(multipart) = multipart else {
        return again(
            "Please send the form on this page.".into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
    };
    let form = match read_form(multipart, form_budget(&pipeline)).await {
        Ok(f) => f,
        Err(why) => return again(why, StatusCode::PAYLOAD_TOO_LARGE).await,
    };
    if !form.get("website").trim().is_empty() {
        return Redirect::to(&format!("/t/{id}/{token}?sent=1")).into_response();
    }
    let text: String = form
        .get("message")
        .replace("\r\n", "\n")
        .chars()
        .take(100_000)
        .collect();
    if text.trim().is_empty() && form.files.is_empty() {
        return again("Please write a message.".into(), StatusCode::BAD_REQUEST).await;
    }
    let now = jiff::Timestamp::now();
    let allowed = web.limiter.lock().unwrap_or_else(|p| p.into_inner()).allow(
        &format!("reply-ip:{}", client_key(addr)),
        REPLIES_PER_IP_PER_HOUR,
        now.as_second(),
    );
    if !allowed {
        return again(
            "Too many messages were sent from here in the last hour; please answer by email.".into(),
            StatusCode::TOO_MANY_REQUESTS,
        )
        .await;
    }
    let config = &pipeline.config;
    let support = config
        .address(&ticket.mailbox)
        .cloned()
        .unwrap_or_else(|| config.desk.addresses[0].clone());
    // A reference to a Message-ID signed for the ticket threads it there, as a mail reply would.
    let mut references: Vec<String> = ticket.last_public_message_id.iter().cloned().collect();
    references.push(pipeline.signer.message_id(
        ticket.id,
        &format!("w{}", &nonce()[..8]),
        &config.desk.message_id_domain,
    ));
    let mail = OutgoingMail {
        ticket: ticket.id,
        purpose: "web".into(),
        from: ticket.requester.clone(),
        to: vec![Mailbox::new(Some(config.desk.name.clone()), &support.address)],
        reply_to: None,
        subject: format!(
            "Re: {}",
            crate::core::subject::tagged(&ticket.subject, &config.desk.subject_tag, ticket.id.0)
        ),
        body: text,
        message_id: format!("web.{}@{}", nonce(), config.desk.message_id_domain),
        in_reply_to: references.first().cloned(),
        references,
        auto_submitted: false,
        date: now,
        loop_value: String::new(),
        attachments: form.files,
    };
    match take_in(&web, pipeline.clone(), from_the_web(&support.mailbox), mail).await {
        Ok(done) => {
            tracing::info!(ticket = %ticket.id, result = ?done, "web reply taken in");
            Redirect::to(&format!("/t/{id}/{token}?sent=1")).into_response()
        }
        Err(e) => {
            again(
                format!("We could not take your message just now ({e}); please try again in a minute."),
                StatusCode::SERVICE_UNAVAILABLE,
            )
            .await
        }
    }
}

/// `GET /t/{ticket}/{token}/a/{message}/{file}`: one attachment of the
/// public conversation, always as a download (never rendered by us).
pub async fn attachment(
    State(web): State<Arc<Web>>,
    Path((id, token, index, file)): Path<(String, String, usize, usize)>,
) -> Response {
    let pipeline = pipeline(&web);
    if let Some(off) = portal_off(&pipeline) {
        return off;
    }
    let work = tokio::task::spawn_blocking(move || -> Response {
        let ticket = match linked_ticket(&pipeline, &id, &token) {
            Ok(t) => t,
            Err(page) => return page,
        };
        let gone = || {
            message(
                &pipeline,
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such attachment.",
            )
        };
        let Ok(Some(view)) = crate::view::ticket_view(&*pipeline.store, ticket.id) else {
            return gone();
        };
        let public = crate::core::portal::public_messages(&view.ticket, &view.messages, &pipeline.config);
        let Some(m) = public.get(index) else { return gone() };
        download(&pipeline, m.attachments.get(file), m.raw_key.as_deref()).unwrap_or_else(gone)
    });
    work.await
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("the request failed: {e}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_cleaned() {
        assert_eq!(valid_email(" Bob@Customer.TEST "), Some("Bob@customer.test".into()));
        for bad in [
            "bob",
            "bob@",
            "@x.test",
            "bob@x",
            "a b@x.test",
            "bob@x.test>\r\nBcc: e@x",
            "bob@-x.test",
        ] {
            assert_eq!(valid_email(bad), None, "{bad:?}");
        }
        assert_eq!(one_line("Hi\r\nBcc: evil@x.test", 100), "Hi  Bcc: evil@x.test");
        assert_eq!(clean_file_name("C:\\\\Users\\\\x\\\\../../etc/passwd"), "passwd");
        assert_eq!(clean_file_name("\"<>"), "attachment");
        assert_eq!(clean_content_type("text/html; charset=utf-8"), "text/html");
        assert_eq!(clean_content_type("x\r\ny"), "application/octet-stream");
    }
}
