//! The team's pages behind an emailed magic link: `/login` (the link goes
//! only to an `[[agent]]` address, works once, for `[web]
//! login_link_lifetime` (15 minutes), and is spent by a button's POST,
//! never by opening it, so mail scanners spend nothing), `/dashboard`, `/dashboard/tickets` (filters and
//! pages over the store's indexes), `/dashboard/t/{id}` (messages, notes,
//! events, SLA clocks, and actions) and `POST /logout`.
//!
//! Sessions are an HMAC-signed cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` behind https, [`SESSION_HOURS`] hours); signing out records the
//! session as ended in the store, so it is refused everywhere. Every form
//! carries a CSRF token signed for the session. Actions become the agent's
//! emailed commands (`#status`, `#assign`, `#note`…) in a mail signed for
//! that agent and ticket, taken in by the pipeline: the same code, the same
//! events with the agent as actor, the same relay to the customer.

use super::portal::{check_form_token, form_token, nonce, pipeline, take_in};
use super::{ClientAddr, Web, html, spend, used};
use crate::adapters::store::{Change, Lane, Op, OutboxEntry, TicketFilter};
use crate::core::model::{Direction, Mailbox, MessageKind, Status, Ticket, TicketId};
use crate::core::outgoing::OutgoingMail;
use crate::core::settings::Agent;
use crate::pipeline::{Origin, Pipeline};
use askama::Template;
use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use std::sync::Arc;

/// How long a session lasts.
pub const SESSION_HOURS: i64 = 12;
const COOKIE: &str = "pd_session";
/// Sign-in requests an hour from one client address, and for one agent address.
const LOGINS_PER_IP_PER_HOUR: u32 = 20;
const LOGINS_PER_ADDRESS_PER_HOUR: u32 = 5;

#[derive(Template)]
#[template(path = "login.html", config = "src/transports/web/askama.toml")]
struct LoginPage<'a> {
    desk: &'a str,
    form_token: String,
    notice: Option<&'a str>,
    error: Option<&'a str>,
    confirm: Option<String>,
    agent: String,
    lifetime: String,
}

struct Row {
    id: u64,
    subject: String,
    status: &'static str,
    priority: &'static str,
    queue: String,
    assignee: String,
    requester: String,
    age: String,
}

#[derive(Template)]
#[template(path = "dashboard.html", config = "src/transports/web/askama.toml")]
struct DashboardPage<'a> {
    desk: &'a str,
    agent: &'a str,
    csrf: String,
    as_of: String,
    partial: bool,
    read: usize,
    by_status: Vec<(String, u64)>,
    by_queue: Vec<(String, u64)>,
    by_priority: Vec<(String, u64)>,
    unassigned_count: u64,
    created_today: u64,
    created_week: u64,
    unassigned: Vec<Row>,
    at_risk: Vec<(Row, &'static str, String)>,
    agents: Vec<(String, Vec<Row>)>,
    charts: Vec<String>,
}

#[derive(Template)]
#[template(path = "tickets.html", config = "src/transports/web/askama.toml")]
struct TicketsPage<'a> {
    desk: &'a str,
    agent: &'a str,
    csrf: String,
    statuses: Vec<&'static str>,
    status: String,
    queue: String,
    assignee: String,
    priorities: Vec<&'static str>,
    priority: String,
    tag: String,
    channel: String,
    words: String,
    tickets: Vec<Row>,
    next: Option<String>,
}

struct Shown {
    class: &'static str,
    author: String,
    kind: &'static str,
    when: String,
    text: String,
    /// Attachment names and their download links.
    attachments: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "ticket.html", config = "src/transports/web/askama.toml")]
struct TicketPage<'a> {
    desk: &'a str,
    agent: &'a str,
    csrf: String,
    id: u64,
    subject: String,
    done: bool,
    error: Option<String>,
    facts: Vec<(&'static str, String)>,
    statuses: Vec<&'static str>,
    priorities: Vec<&'static str>,
    agents: Vec<String>,
    messages: Vec<Shown>,
    events: Vec<(String, String, String)>,
}

fn login_page(pipeline: &Pipeline, status: StatusCode, notice: Option<&str>, error: Option<&str>) -> Response {
    let page = LoginPage {
        desk: &pipeline.config.desk.name,
        form_token: form_token(pipeline, jiff::Timestamp::now().as_second()),
        notice,
        error,
        confirm: None,
        agent: String::new(),
        lifetime: spoken(pipeline.config.web.login_link_seconds),
    };
    html(status, page.render())
}

/// A lifetime in words: "15 minutes", "1 hour", "30 seconds".
fn spoken(secs: i64) -> String {
    let (n, unit) = if secs % 3600 == 0 {
        (secs / 3600, "hour")
    } else if secs % 60 == 0 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

pub(super) fn off(pipeline: &Pipeline) -> Option<Response> {
    (!pipeline.config.web.dashboard)
        .then(|| (StatusCode::NOT_FOUND, "the dashboard is off ([web] dashboard)\n").into_response())
}

/// A signed `{slug}.{expires}.{nonce}.{sig}` for `purpose`.
fn signed(pipeline: &Pipeline, purpose: &str, slug: &str, expires: i64) -> String {
    let body = format!("{slug}.{expires}.{}", &nonce()[..16]);
    format!("{body}.{}", pipeline.signer.sign_long(purpose, &body))
}

/// The agent and nonce of a valid, unexpired signed value.
fn verify<'a>(pipeline: &'a Pipeline, purpose: &str, value: &str, now: i64) -> Option<(&'a Agent, String)> {
    let (body, sig) = value.rsplit_once('.')?;
    if !crate::core::token::constant_time_eq(pipeline.signer.sign_long(purpose, body).as_bytes(), sig.as_bytes()) {
        return None;
    }
    let mut parts = body.split('.');
    let (slug, expires, nonce) = (parts.next()?, parts.next()?.parse::<i64>().ok()?, parts.next()?);
    if parts.next().is_some() || expires < now {
        return None;
    }
    Some((pipeline.config.agent_by_slug(slug)?, nonce.to_string()))
}

/// The signed-in agent of a request, with the session's nonce.
pub(super) struct Session {
    agent: Agent,
    nonce: String,
}

pub(super) fn session(pipeline: &Pipeline, headers: &HeaderMap) -> Option<Session> {
    let now = jiff::Timestamp::now().as_second();
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())?;
    let (agent, nonce) = verify(pipeline, "session", &value, now)?;
    if used(pipeline, &format!("session-ended:{nonce}")) {
        return None;
    }
    Some(Session {
        agent: agent.clone(),
        nonce,
    })
}

fn csrf(pipeline: &Pipeline, s: &Session) -> String {
    pipeline.signer.sign_long("csrf", &s.nonce)
}

fn csrf_ok(pipeline: &Pipeline, s: &Session, given: &str) -> bool {
    crate::core::token::constant_time_eq(csrf(pipeline, s).as_bytes(), given.as_bytes())
}

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

/// The pipeline and the signed-in agent of a team page's request, or the
/// answer instead: 404 with the dashboard off, to `/login` without a session.
#[allow(clippy::result_large_err)]
fn signed_in(web: &Web, headers: &HeaderMap) -> Result<(Pipeline, Session), Response> {
    let pipeline = pipeline(web);
    if let Some(r) = off(&pipeline) {
        return Err(r);
    }
    match session(&pipeline, headers) {
        Some(s) => Ok((pipeline, s)),
        None => Err(to_login()),
    }
}

/// `GET /login`.
pub async fn login_form(State(web): State<Arc<Web>>) -> Response {
    let pipeline = pipeline(&web);
    if let Some(r) = off(&pipeline) {
        return r;
    }
    login_page(&pipeline, StatusCode::OK, None, None)
}

/// The `/login` form.
#[derive(serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    form_token: String,
}

/// `POST /login`: mails a sign-in link to the agent address, if it is one.
pub async fn login_request(
    State(web): State<Arc<Web>>,
    addr: Option<Extension<ClientAddr>>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let pipeline = pipeline(&web);
    if let Some(r) = off(&pipeline) {
        return r;
    }
    let Ok(Form(form)) = form else {
        return login_page(
            &pipeline,
            StatusCode::BAD_REQUEST,
            None,
            Some("Please send the form on this page."),
        );
    };
    let now = jiff::Timestamp::now();
    if let Some(why) = check_form_token(&pipeline, &form.form_token, now.as_second()) {
        return login_page(&pipeline, StatusCode::BAD_REQUEST, None, Some(why));
    }
    let email = form.email.trim().to_ascii_lowercase();
    let ip = addr.map(|Extension(ClientAddr(ip))| ip.to_string()).unwrap_or_default();
    let allowed = {
        let mut l = web.limiter.lock().unwrap_or_else(|p| p.into_inner());
        l.allow(&format!("login-ip:{ip}"), LOGINS_PER_IP_PER_HOUR, now.as_second())
            && l.allow(
                &format!("login-address:{email}"),
                LOGINS_PER_ADDRESS_PER_HOUR,
                now.as_second(),
            )
    };
    if !allowed {
        return login_page(
            &pipeline,
            StatusCode::TOO_MANY_REQUESTS,
            None,
            Some("Too many sign-in requests in the last hour; please wait."),
        );
    }
    // The same answer whether or not the address is an agent's: the page tells nobody who works here.
    let notice = "If that address is an agent's, a sign-in link is on its way. It works once.";
    let Some(agent) = pipeline.config.agent_by_email(&email).cloned() else {
        tracing::info!("sign-in asked for an address that is no agent's");
        return login_page(&pipeline, StatusCode::OK, Some(notice), None);
    };
    let (Some(base), Some(support)) = (
        pipeline.config.desk.public_url.clone(),
        pipeline.config.desk.addresses.first().cloned(),
    ) else {
        return login_page(&pipeline, StatusCode::OK, Some(notice), None);
    };
    let token = signed(
        &pipeline,
        "login",
        &agent.slug(),
        now.as_second() + pipeline.config.web.login_link_seconds,
    );
    let mail = OutgoingMail {
        ticket: TicketId(0),
        purpose: "sign_in".into(),
        from: Mailbox::new(Some(pipeline.config.desk.name.clone()), &support.address),
        to: vec![Mailbox::new(Some(agent.name.clone()), &agent.emails[0])],
        reply_to: None,
        subject: format!("Sign in to {}", pipeline.config.desk.name),
        body: format!(
            "Hello {},\n\nopen this link within {} to sign in to the team's pages:\n{base}/login/{token}\n\nIt works once. If you did not ask for it, ignore this mail.\n",
            agent.name,
            spoken(pipeline.config.web.login_link_seconds)
        ),
        message_id: format!("signin.{}@{}", nonce(), pipeline.config.desk.message_id_domain),
        in_reply_to: None,
        references: Vec::new(),
        auto_submitted: true,
        date: now,
        loop_value: crate::core::classify::loop_header_value(&pipeline.config),
        attachments: Vec::new(),
    };
    let api = web.api.clone();
    let p = pipeline.clone();
    let queued = tokio::task::spawn_blocking(move || {
        let mut w = Change::default();
        w.push(Op::Enqueue(
            Lane::Live,
            Box::new(OutboxEntry {
                mail,
                attempts: 0,
                next_attempt: now,
                last_error: None,
            }),
        ));
        let _guard = api.writer.lock().unwrap_or_else(|p| p.into_inner());
        p.store.commit(w).and_then(|_| p.store.flush())
    })
    .await;
    match queued {
        Ok(Ok(())) => {
            web.api.wake_sender.notify_one();
            login_page(&pipeline, StatusCode::OK, Some(notice), None)
        }
        _ => login_page(
            &pipeline,
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            Some("The link could not be sent just now; please try again."),
        ),
    }
}

fn link_refused(pipeline: &Pipeline) -> Response {
    login_page(
        pipeline,
        StatusCode::FORBIDDEN,
        None,
        Some("This sign-in link is not valid, has expired or was used. Ask for a new one."),
    )
}

/// `GET /login/{token}`: a page with the button that signs in (opening the link spends nothing).
pub async fn login_link(State(web): State<Arc<Web>>, Path(token): Path<String>) -> Response {
    let pipeline = pipeline(&web);
    if let Some(r) = off(&pipeline) {
        return r;
    }
    let now = jiff::Timestamp::now().as_second();
    let p = pipeline.clone();
    let checked = tokio::task::spawn_blocking(move || {
        verify(&p, "login", &token, now)
            .filter(|(_, nonce)| !used(&p, &format!("login-used:{nonce}")))
            .map(|(a, _)| (a.name.clone(), token))
    })
    .await
    .ok()
    .flatten();
    let Some((agent, token)) = checked else {
        return link_refused(&pipeline);
    };
    let page = LoginPage {
        desk: &pipeline.config.desk.name,
        form_token: String::new(),
        notice: None,
        error: None,
        confirm: Some(format!("/login/{token}")),
        agent,
        lifetime: spoken(pipeline.config.web.login_link_seconds),
    };
    html(StatusCode::OK, page.render())
}

/// `POST /login/{token}`: spends the link and starts a session.
pub async fn login_confirm(State(web): State<Arc<Web>>, Path(token): Path<String>) -> Response {
    let pipeline = pipeline(&web);
    if let Some(r) = off(&pipeline) {
        return r;
    }
    let now = jiff::Timestamp::now().as_second();
    let (p, w) = (pipeline.clone(), web.clone());
    let session = tokio::task::spawn_blocking(move || {
        let (agent, nonce) = verify(&p, "login", &token, now)?;
        // One link, one session.
        if !spend(&w, &p, format!("login-used:{nonce}")).ok()? {
            return None;
        }
        tracing::info!(agent = %agent.name, "signed in by link");
        Some(signed(&p, "session", &agent.slug(), now + SESSION_HOURS * 3600))
    })
    .await
    .ok()
    .flatten();
    let Some(value) = session else {
        return link_refused(&pipeline);
    };
    let secure = if pipeline
        .config
        .desk
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
    {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_HOURS * 3600
    );
    let mut r = Redirect::to("/dashboard").into_response();
    if let Ok(v) = header::HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// A form with only the CSRF token.
#[derive(serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session everywhere.
pub async fn logout(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let pipeline = pipeline(&web);
    let Some(s) = session(&pipeline, &headers) else {
        return to_login();
    };
    if !form.is_ok_and(|Form(f)| csrf_ok(&pipeline, &s, &f.csrf)) {
        return (StatusCode::FORBIDDEN, "the form's CSRF token is missing or wrong\n").into_response();
    }
    let (p, w) = (pipeline.clone(), web.clone());
    let _ = tokio::task::spawn_blocking(move || spend(&w, &p, format!("session-ended:{}", s.nonce))).await;
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_static("pd_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

fn age(t: &Ticket, now: jiff::Timestamp) -> String {
    duration(now.as_second() - t.created_at.as_second())
}

fn duration(secs: i64) -> String {
    let (sign, s) = if secs < 0 { ("-", -secs) } else { ("", secs) };
    match s {
        s if s < 3600 => format!("{sign}{}m", s / 60),
        s if s < 86400 => format!("{sign}{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{sign}{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

fn row(t: &Ticket, now: jiff::Timestamp) -> Row {
    Row {
        id: t.id.0,
        subject: t.subject.clone(),
        status: t.status.as_str(),
        priority: t.priority.as_str(),
        queue: t.queue.clone(),
        assignee: t.assignee.clone().unwrap_or_default(),
        requester: t.requester.email.clone(),
        age: age(t, now),
    }
}

fn failed(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the store cannot answer just now: {e}\n"),
    )
        .into_response()
}

/// `GET /dashboard`.
pub async fn dashboard(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let (pipeline, s) = match signed_in(&web, &headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    tokio::task::spawn_blocking(move || {
        let now = jiff::Timestamp::now();
        let d = match crate::view::dashboard(&*pipeline.store, &pipeline.config, now) {
            Ok(d) => d,
            Err(e) => return failed(e),
        };
        let trends = charts(&web, &pipeline, now);
        let reading = trends.is_none();
        let trends = trends.unwrap_or_default();
        let series = |f: fn(&crate::view::TrendDay) -> Option<f64>| -> Vec<(String, Option<f64>)> {
            trends.days.iter().map(|d| (d.0.clone(), f(d))).collect()
        };
        use super::chart;
        let charts = if reading {
            vec![chart::reading("charts-reading")]
        } else {
            vec![
                chart::bars(
                    "chart-first-response",
                    "Median time to first response, by day (30 days)",
                    &series(|d| d.1),
                    chart::hours,
                ),
                chart::bars(
                    "chart-resolution",
                    "Median time to resolution, by day (30 days)",
                    &series(|d| d.2),
                    chart::hours,
                ),
                chart::bars(
                    "chart-csat",
                    "Mean survey rating, by day (30 days)",
                    &series(|d| d.3),
                    chart::rating,
                ),
                chart::bars(
                    "chart-backlog",
                    "Open tickets by age",
                    &trends
                        .backlog
                        .iter()
                        .map(|(l, n)| (l.to_string(), Some(*n as f64)))
                        .collect::<Vec<_>>(),
                    chart::count,
                ),
            ]
        };
        let tz = jiff::tz::TimeZone::get(&pipeline.config.desk.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
        let page = DashboardPage {
            desk: &pipeline.config.desk.name,
            agent: &s.agent.name,
            csrf: csrf(&pipeline, &s),
            as_of: now.to_zoned(tz).strftime("%Y-%m-%d %H:%M %Z").to_string(),
            partial: d.partial,
            read: crate::view::DASHBOARD_READ,
            by_status: d.by_status,
            by_queue: d.by_queue,
            by_priority: d.by_priority,
            unassigned_count: d.unassigned.0,
            created_today: d.created.0,
            created_week: d.created.1,
            unassigned: d.unassigned.1.iter().map(|t| row(t, now)).collect(),
            at_risk: d
                .at_risk
                .iter()
                .map(|(t, what, left)| {
                    let left = if *left < 0 {
                        format!("breached {} ago", duration(-left))
                    } else {
                        format!("{} left", duration(*left))
                    };
                    (row(t, now), *what, left)
                })
                .collect(),
            agents: d
                .agents
                .iter()
                .map(|(n, ts)| (n.clone(), ts.iter().map(|t| row(t, now)).collect()))
                .collect(),
            charts,
        };
        let mut r = html(StatusCode::OK, page.render());
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            axum::http::HeaderValue::from_static(super::LIVE_CSP),
        );
        r
    })
    .await
    .unwrap_or_else(failed)
}

/// The charts' figures: kept ones while fresh; else read on a thread of
/// their own, waited for up to [`CHARTS_WAIT`]. A read that takes longer
/// goes on (one at a time) and fills the cache; the page says so and the
/// next refresh shows them, so a large desk's dashboard never waits for it.
fn charts(web: &Arc<Web>, pipeline: &Pipeline, now: jiff::Timestamp) -> Option<crate::view::Trends> {
    let stale = {
        let cached = web.trends.lock().unwrap_or_else(|p| p.into_inner());
        match cached.as_ref() {
            Some((at, t)) if at.elapsed() < super::TRENDS_FOR => return Some(t.clone()),
            other => other.map(|(_, t)| t.clone()),
        }
    };
    if web.trends_reading.swap(true, std::sync::atomic::Ordering::AcqRel) {
        return stale;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (w, p) = (web.clone(), pipeline.clone());
    std::thread::spawn(move || {
        let read = crate::view::trends(&*p.store, &p.config, now);
        if let Ok(t) = &read {
            *w.trends.lock().unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), t.clone()));
        } else if let Err(e) = &read {
            tracing::warn!(error = %e, "the dashboard's charts could not be read");
        }
        w.trends_reading.store(false, std::sync::atomic::Ordering::Release);
        let _ = tx.send(read.ok());
    });
    match rx.recv_timeout(CHARTS_WAIT) {
        Ok(fresh) => fresh.or(stale),
        Err(_) => stale,
    }
}

/// How long a dashboard waits for its charts to be read before it shows the page without them.
const CHARTS_WAIT: std::time::Duration = std::time::Duration::from_millis(60);

/// `/dashboard/tickets` filters.
#[derive(serde::Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    assignee: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    channel: String,
    /// Words that must all appear in the subject or the requester's name or address.
    #[serde(default)]
    q: String,
    #[serde(default)]
    cursor: Option<String>,
}

/// Tickets a filtered list examines at most per page beyond the indexes
/// (priority, tag, channel, words); the next page goes on from there.
const SCAN_PER_PAGE: usize = 5000;

impl ListQuery {
    /// Whether `t` passes the filters no index answers (the words too when
    /// there is no full-text index: then in the subject and requester only).
    fn matches(&self, t: &Ticket) -> bool {
        let words: Vec<String> = self.q.split_whitespace().map(str::to_lowercase).collect();
        let hay = format!(
            "{} {} {}",
            t.subject.to_lowercase(),
            t.requester.name.as_deref().unwrap_or("").to_lowercase(),
            t.requester.email.to_lowercase()
        );
        self.matches_fields(t) && words.iter().all(|w| hay.contains(w.as_str()))
    }

    /// Priority, tag and channel.
    fn matches_fields(&self, t: &Ticket) -> bool {
        (self.priority.is_empty() || t.priority.as_str() == self.priority)
            && (self.tag.trim().is_empty() || t.tags.iter().any(|g| g.eq_ignore_ascii_case(self.tag.trim())))
            && (self.channel.is_empty() || t.channel == self.channel)
    }

    fn scans(&self) -> bool {
        !(self.priority.is_empty() && self.tag.trim().is_empty() && self.channel.is_empty() && self.q.trim().is_empty())
    }
}

/// `GET /dashboard/tickets?status=&queue=&assignee=&cursor=`.
pub async fn tickets(State(web): State<Arc<Web>>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    let (pipeline, s) = match signed_in(&web, &headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !q.priority.is_empty() && !["low", "normal", "high", "urgent"].contains(&q.priority.as_str()) {
        return (
            StatusCode::BAD_REQUEST,
            "priority: expected low, normal, high or urgent\n",
        )
            .into_response();
    }
    let status = match q.status.as_str() {
        "" => None,
        v => match Status::parse(v) {
            Some(s) => Some(s),
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    "status: expected new, open, pending, resolved or closed\n",
                )
                    .into_response();
            }
        },
    };
    tokio::task::spawn_blocking(move || {
        let filter = TicketFilter {
            status,
            queue: Some(q.queue.trim().to_string()).filter(|v| !v.is_empty()),
            assignee: Some(q.assignee.trim().to_string()).filter(|v| !v.is_empty()),
            ..Default::default()
        };
        // The indexes narrow by status, queue and assignee; the rest is read page by page.
        let mut shown: Vec<Ticket> = Vec::new();
        let mut cursor = q.cursor.clone();
        let mut examined = 0;
        let searched = match (&web.api.search, q.q.trim().is_empty()) {
            (Some(index), false) => Some(search_page(&*pipeline.store, index, &filter, &q)),
            _ => None,
        };
        let next = if let Some(found) = searched {
            match found {
                Ok((tickets, next)) => {
                    shown = tickets;
                    next
                }
                Err(r) => return r,
            }
        } else {
            loop {
                let page = match pipeline
                    .store
                    .list(&filter, cursor.as_deref(), if q.scans() { 500 } else { 50 })
                {
                    Ok(p) => p,
                    Err(e @ crate::adapters::store::StoreError::BadCursor(_)) => {
                        return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
                    }
                    Err(e) => return failed(e),
                };
                if !q.scans() {
                    shown = page.tickets;
                    break page.next;
                }
                let mut stopped_at = None;
                for t in page.tickets {
                    examined += 1;
                    if q.matches(&t) {
                        shown.push(t.clone());
                    }
                    if shown.len() == 50 || examined >= SCAN_PER_PAGE {
                        stopped_at = Some(t.id.0.to_string());
                        break;
                    }
                }
                match (stopped_at, page.next) {
                    (Some(at), _) => break Some(at),
                    (None, None) => break None,
                    (None, Some(n)) => cursor = Some(n),
                }
            }
        };
        let now = jiff::Timestamp::now();
        let enc = crate::transports::percent_encode;
        let next = next.map(|c| {
            format!(
                "/dashboard/tickets?status={}&queue={}&assignee={}&priority={}&tag={}&channel={}&q={}&cursor={}",
                enc(&q.status),
                enc(&q.queue),
                enc(&q.assignee),
                enc(&q.priority),
                enc(&q.tag),
                enc(&q.channel),
                enc(&q.q),
                enc(&c)
            )
        });
        let page = TicketsPage {
            desk: &pipeline.config.desk.name,
            agent: &s.agent.name,
            csrf: csrf(&pipeline, &s),
            statuses: vec!["new", "open", "pending", "resolved", "closed"],
            status: q.status.clone(),
            queue: q.queue.clone(),
            assignee: q.assignee.clone(),
            priorities: vec!["low", "normal", "high", "urgent"],
            priority: q.priority.clone(),
            tag: q.tag.clone(),
            channel: q.channel.clone(),
            words: q.q.clone(),
            tickets: shown.iter().map(|t| row(t, now)).collect(),
            next,
        };
        html(StatusCode::OK, page.render())
    })
    .await
    .unwrap_or_else(failed)
}

/// Hits the full-text index reads per round.
const HITS_PER_ROUND: usize = 200;

/// One page of a word search: the index's hits, newest ticket first (a merged
/// ticket's hit shows the ticket it was merged into), kept when the other
/// filters pass. The cursor is how many hits earlier pages went through.
#[allow(clippy::result_large_err)]
fn search_page(
    store: &dyn crate::adapters::store::Store,
    index: &crate::adapters::search::SearchIndex,
    filter: &TicketFilter,
    q: &ListQuery,
) -> Result<(Vec<Ticket>, Option<String>), Response> {
    let mut offset: usize = match q.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c.parse().map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                format!("bad cursor {c:?}: pass back the `next` of a previous page\n"),
            )
                .into_response()
        })?,
    };
    let mut shown: Vec<Ticket> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut examined = 0;
    loop {
        let hits = index.search(&q.q, offset, HITS_PER_ROUND).map_err(failed)?;
        let last_round = hits.len() < HITS_PER_ROUND;
        for id in hits {
            offset += 1;
            examined += 1;
            if let Some(t) = crate::adapters::store::resolve(store, id).map_err(failed)?
                && filter.matches(&t)
                && q.matches_fields(&t)
                && seen.insert(t.id)
            {
                shown.push(t);
            }
            if shown.len() == 50 || examined >= SCAN_PER_PAGE {
                return Ok((shown, Some(offset.to_string())));
            }
        }
        if last_round {
            return Ok((shown, None));
        }
    }
}

/// `?done=1` after an action.
#[derive(serde::Deserialize, Default)]
pub struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

fn ticket_page(pipeline: &Pipeline, s: &Session, id: u64, done: bool, error: Option<String>) -> Response {
    let view = match crate::view::ticket_view(&*pipeline.store, TicketId(id)) {
        Ok(Some(v)) => v,
        Ok(None) => return (StatusCode::NOT_FOUND, format!("no ticket {id}\n")).into_response(),
        Err(e) => return failed(e),
    };
    let t = &view.ticket;
    let tz = jiff::tz::TimeZone::get(&pipeline.config.desk.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    let when = |at: jiff::Timestamp| at.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M").to_string();
    let opt = |at: Option<jiff::Timestamp>| at.map(when).unwrap_or_else(|| "—".into());
    let mut facts = vec![
        ("status", t.status.as_str().to_string()),
        ("priority", t.priority.as_str().to_string()),
        ("queue", t.queue.clone()),
        ("assignee", t.assignee.clone().unwrap_or_else(|| "nobody".into())),
        (
            "requester",
            format!(
                "{} <{}>",
                t.requester.name.clone().unwrap_or_default(),
                t.requester.email
            ),
        ),
        ("channel", t.channel.clone()),
        ("tags", t.tags.join(" ")),
        ("created", when(t.created_at)),
        ("first response", opt(t.first_response_at)),
        ("SLA policy", t.sla.policy.clone().unwrap_or_else(|| "none".into())),
        ("first response due", opt(t.sla.first_response_due)),
        ("next response due", opt(t.sla.next_response_due)),
        ("resolution due", opt(t.sla.resolution_due)),
    ];
    if let Some(into) = t.merged_into {
        facts.push(("merged into", format!("#{}", into.0)));
    }
    let messages = view
        .messages
        .iter()
        .enumerate()
        .filter(|(_, m)| !(m.direction == Direction::Outbound && m.kind == MessageKind::System))
        .map(|(i, m)| Shown {
            class: match m.kind {
                MessageKind::Note => "note",
                MessageKind::Agent => "agent",
                _ => "customer",
            },
            author: m
                .from
                .name
                .clone()
                .map(|n| format!("{n} <{}>", m.from.email))
                .unwrap_or_else(|| m.from.email.clone()),
            kind: match (m.direction, m.kind) {
                (_, MessageKind::Note) => "note",
                (Direction::Outbound, MessageKind::Agent) => "sent to the customer",
                (Direction::Inbound, MessageKind::Agent) => "agent's mail",
                (_, MessageKind::Customer) => "customer",
                _ => "automatic",
            },
            when: when(m.date),
            text: m.text.clone(),
            attachments: m
                .attachments
                .iter()
                .enumerate()
                .map(|(f, name)| (name.clone(), format!("/dashboard/t/{id}/a/{i}/{f}")))
                .collect(),
        })
        .collect();
    let events = view
        .events
        .iter()
        .map(|e| (when(e.at), e.kind.clone(), e.actor.clone()))
        .collect();
    let page = TicketPage {
        desk: &pipeline.config.desk.name,
        agent: &s.agent.name,
        csrf: csrf(pipeline, s),
        id,
        subject: t.subject.clone(),
        done,
        error,
        facts,
        statuses: vec!["open", "pending", "resolved", "closed"],
        priorities: vec!["low", "normal", "high", "urgent"],
        agents: pipeline.config.agents.iter().map(|a| a.name.clone()).collect(),
        messages,
        events,
    };
    html(StatusCode::OK, page.render())
}

/// `GET /dashboard/t/{id}`.
pub async fn ticket(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let (pipeline, s) = match signed_in(&web, &headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    tokio::task::spawn_blocking(move || ticket_page(&pipeline, &s, id, q.done.is_some(), None))
        .await
        .unwrap_or_else(failed)
}

/// `GET /dashboard/t/{id}/a/{message}/{file}`: an attachment of any of the
/// ticket's messages (merged tickets' too, as the ticket page lists them).
pub async fn attachment(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path((id, index, file)): Path<(u64, usize, usize)>,
) -> Response {
    let (pipeline, _) = match signed_in(&web, &headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    tokio::task::spawn_blocking(move || {
        let gone = || (StatusCode::NOT_FOUND, "no such attachment\n").into_response();
        let view = match crate::view::ticket_view(&*pipeline.store, TicketId(id)) {
            Ok(Some(v)) => v,
            Ok(None) => return gone(),
            Err(e) => return failed(e),
        };
        let Some(m) = view.messages.get(index) else {
            return gone();
        };
        super::portal::download(&pipeline, m.attachments.get(file), m.raw_key.as_deref()).unwrap_or_else(gone)
    })
    .await
    .unwrap_or_else(failed)
}

/// The action form of a ticket.
#[derive(serde::Deserialize, Default)]
pub struct ActForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    status: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    assign: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    tags: String,
}

/// The command lines of an action, as an agent would type them.
fn commands(f: &ActForm) -> Result<String, String> {
    let word = |v: &str, what: &str| -> Result<String, String> {
        let v = v.trim();
        if v.chars().any(|c| c.is_control() || c == '#') {
            return Err(format!("{what}: no control characters or #"));
        }
        Ok(v.to_string())
    };
    let mut lines = Vec::new();
    if f.note.is_some() {
        lines.push("#note".to_string());
    }
    for (key, value) in [
        ("status", &f.status),
        ("priority", &f.priority),
        ("assign", &f.assign),
        ("queue", &f.queue),
        ("tag", &f.tags),
    ] {
        let v = word(value, key)?;
        if !v.is_empty() {
            lines.push(format!("#{key} {v}"));
        }
    }
    let text = f.text.replace("\r\n", "\n");
    if lines.is_empty() && text.trim().is_empty() {
        return Err("Nothing to do: write a reply or change something.".into());
    }
    let mut body = lines.join("\n");
    if !text.trim().is_empty() {
        if !body.is_empty() {
            body.push_str("\n\n");
        }
        body.push_str(text.trim_end());
    }
    Ok(body)
}

/// `agent`'s mail to the desk about `ticket` with `body` (a reply, `#`
/// commands, a `#note`), answering a Message-ID signed for this agent and
/// ticket, so the pipeline proves the agent by it as for a reply to a
/// notification; and the mailbox it counts as arriving in. The team's pages
/// and the API act through it.
pub(crate) fn agent_mail(
    pipeline: &Pipeline,
    ticket: &crate::core::model::Ticket,
    agent: &crate::adapters::config::Agent,
    body: String,
    purpose: &str,
    message_id: String,
) -> (OutgoingMail, String) {
    let config = &pipeline.config;
    let support = config
        .address(&ticket.mailbox)
        .cloned()
        .unwrap_or_else(|| config.desk.addresses[0].clone());
    let answered = pipeline.signer.agent_message_id(
        ticket.id,
        &agent.slug(),
        &format!("{purpose}{}", &nonce()[..8]),
        &config.desk.message_id_domain,
    );
    let mail = OutgoingMail {
        ticket: ticket.id,
        purpose: purpose.into(),
        from: Mailbox::new(Some(agent.name.clone()), &agent.emails[0]),
        to: vec![Mailbox::new(None, &support.address)],
        reply_to: None,
        subject: format!(
            "Re: {}",
            crate::core::subject::tagged(&ticket.subject, &config.desk.subject_tag, ticket.id.0)
        ),
        body,
        message_id,
        in_reply_to: Some(answered.clone()),
        references: vec![answered],
        auto_submitted: false,
        date: jiff::Timestamp::now(),
        loop_value: String::new(),
        attachments: Vec::new(),
    };
    (mail, support.mailbox)
}

/// `POST /dashboard/t/{id}`: the action, as the agent's signed mail with commands.
pub async fn act(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    form: Result<Form<ActForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (pipeline, s) = match signed_in(&web, &headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Ok(Form(form)) = form else {
        return (StatusCode::BAD_REQUEST, "expected the ticket page's form\n").into_response();
    };
    if !csrf_ok(&pipeline, &s, &form.csrf) {
        return (StatusCode::FORBIDDEN, "the form's CSRF token is missing or wrong\n").into_response();
    }
    let body = match commands(&form) {
        Ok(b) => b,
        Err(why) => {
            return tokio::task::spawn_blocking(move || {
                let mut r = ticket_page(&pipeline, &s, id, false, Some(why));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                r
            })
            .await
            .unwrap_or_else(failed);
        }
    };
    let p = pipeline.clone();
    let ticket = match tokio::task::spawn_blocking(move || p.store.ticket(TicketId(id))).await {
        Ok(Ok(Some(t))) => t,
        Ok(Ok(None)) => return (StatusCode::NOT_FOUND, format!("no ticket {id}\n")).into_response(),
        Ok(Err(e)) => return failed(e),
        Err(e) => return failed(e),
    };
    let message_id = format!("webagent.{}@{}", nonce(), pipeline.config.desk.message_id_domain);
    let (mail, mailbox) = agent_mail(&pipeline, &ticket, &s.agent, body, "web", message_id);
    match take_in(&web, pipeline.clone(), Origin::live(&mailbox), mail).await {
        Ok(done) => {
            tracing::info!(ticket = id, agent = %s.agent.name, result = ?done, "dashboard action");
            Redirect::to(&format!("/dashboard/t/{id}?done=1")).into_response()
        }
        Err(e) => failed(e),
    }
}
