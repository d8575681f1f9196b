//! The outbox sender: every queued mail is sent over SMTP (lettre) or written
//! as an `.eml` file; temporary failures retry with exponential backoff,
//! permanent ones are recorded on the ticket.

pub mod wire;

use crate::adapters::config::{Outgoing, TlsMode, Transport};
use crate::adapters::store::{Change, Lane, Op, OutboxEntry, OutboxKey, StoreError};
use crate::pipeline::{Pipeline, mail_event};
use crate::transports::Unrecorded;
use jiff::Timestamp;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Serialize;
use std::path::PathBuf;

/// Where mail goes.
#[derive(Clone)]
pub enum Mailer {
    /// An SMTP server.
    Smtp(std::sync::Arc<SmtpMailer>),
    /// A folder of `.eml` files.
    File(PathBuf),
}

/// An SMTP server, with the longest time one delivery may take. With an
/// OAuth2 login the transport (its connection pool) is built anew whenever
/// the access token changes.
pub struct SmtpMailer {
    builder: lettre::transport::smtp::AsyncSmtpTransportBuilder,
    oauth2: Option<(crate::adapters::config::OAuth2Provider, String)>,
    current: std::sync::Mutex<(
        Option<crate::adapters::config::Secret>,
        AsyncSmtpTransport<Tokio1Executor>,
    )>,
    limit: std::time::Duration,
}

impl SmtpMailer {
    /// The transport to send with, and the token it logs in with.
    fn transport(
        &self,
    ) -> Result<
        (
            Option<crate::adapters::config::Secret>,
            AsyncSmtpTransport<Tokio1Executor>,
        ),
        SendError,
    > {
        let Some((provider, user)) = &self.oauth2 else {
            return Ok(self.current.lock().unwrap_or_else(|e| e.into_inner()).clone());
        };
        let token = crate::transports::blocking(|| crate::transports::oauth2::access_token(provider)).map_err(|e| {
            SendError {
                kind: Failure::Server,
                message: e,
            }
        })?;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0.as_ref() != Some(&token) {
            let t = self
                .builder
                .clone()
                .credentials(Credentials::new(user.clone(), token.expose().to_string()))
                .authentication(vec![Mechanism::Xoauth2])
                .build();
            *current = (Some(token), t);
        }
        Ok(current.clone())
    }
}

/// A failed send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// Whose problem it is, and so whether to retry.
    pub kind: Failure,
    /// What the server or the system said.
    pub message: String,
}

/// Whose problem a failed delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The recipient's server refused this mail for good (5xx about the
    /// recipient or the message): recorded on the ticket, the mail is dropped.
    Recipient,
    /// A temporary refusal of this mail (4xx): retried up to `max_attempts`.
    Temporary,
    /// Our outgoing server refuses us whatever the mail (authentication, a
    /// closed connection, TLS, a server-wide or protocol error): retried with
    /// backoff for as long as it takes, alarmed, never dropped.
    Server,
}

/// Sorts an SMTP failure by its reply code (`None`: no reply at all, such as
/// a refused connection) and the server's text.
pub fn classify_smtp(code: Option<u16>, message: &str) -> Failure {
    let enhanced_auth = [
        "5.7.0", "5.7.8", "5.7.9", "5.7.11", "5.7.14", "4.7.0", "4.7.8", "4.7.12",
    ]
    .iter()
    .any(|c| message.contains(c));
    match code {
        None => Failure::Server,
        // Authentication required, failed, too weak, expired; service closing.
        Some(530 | 534 | 535 | 538 | 454 | 432 | 421) => Failure::Server,
        // Syntax and sequence errors: our client or their server, not the recipient.
        Some(500..=504) => Failure::Server,
        Some(_) if enhanced_auth => Failure::Server,
        Some(400..=499) => Failure::Temporary,
        Some(_) => Failure::Recipient,
    }
}

/// What one pass over the outbox did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SendSummary {
    /// Mails delivered.
    pub sent: u64,
    /// Mails that failed for good.
    pub failed: u64,
    /// Mails waiting for a retry.
    pub deferred: u64,
}

impl Mailer {
    /// Builds the transport from `[outgoing]`; reads the SMTP password.
    pub fn from_config(outgoing: &Outgoing) -> Result<Mailer, String> {
        match &outgoing.transport {
            Transport::File { path } => {
                std::fs::create_dir_all(path)
                    .map_err(|e| format!("cannot create outbox folder {}: {e}", path.display()))?;
                Ok(Mailer::File(path.clone()))
            }
            Transport::Smtp(s) => {
                let tls_params = || -> Result<TlsParameters, String> {
                    let mut b = TlsParameters::builder(s.host.clone());
                    if let Some(ca) = &s.ca_file {
                        let pem =
                            std::fs::read(ca).map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
                        let cert =
                            Certificate::from_pem(&pem).map_err(|e| format!("bad ca_file {}: {e}", ca.display()))?;
                        b = b.add_root_certificate(cert);
                    }
                    b.build_rustls().map_err(|e| format!("TLS setup for {}: {e}", s.host))
                };
                let tls = match s.tls {
                    TlsMode::Implicit => Tls::Wrapper(tls_params()?),
                    TlsMode::Starttls => Tls::Required(tls_params()?),
                    TlsMode::Plain => Tls::None,
                };
                let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
                    .port(s.port)
                    .tls(tls)
                    .timeout(Some(s.timeout));
                if let (Some(user), Some(pass)) = (&s.username, &s.password) {
                    let pass = pass.load()?;
                    b = b
                        .credentials(Credentials::new(user.clone(), pass.expose().to_string()))
                        .authentication(vec![Mechanism::Plain, Mechanism::Login]);
                }
                let oauth2 = match (&s.oauth2, &s.username) {
                    (Some(login), Some(user)) => Some((login.provider.clone(), user.clone())),
                    _ => None,
                };
                Ok(Mailer::Smtp(std::sync::Arc::new(SmtpMailer {
                    current: std::sync::Mutex::new((None, b.clone().build())),
                    builder: b,
                    oauth2,
                    // One delivery is a handful of commands; past this it is stuck, not slow.
                    limit: s.timeout * 4,
                })))
            }
        }
    }

    /// Sends one rendered mail.
    pub async fn send(&self, from: &str, to: &[String], bytes: &[u8], name: &str) -> Result<(), SendError> {
        match self {
            Mailer::File(dir) => {
                let safe: String = name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let tmp = dir.join(format!(".{safe}.tmp"));
                let path = dir.join(format!("{safe}.eml"));
                let write = async {
                    tokio::fs::write(&tmp, bytes).await?;
                    tokio::fs::rename(&tmp, &path).await
                };
                write.await.map_err(|e| SendError {
                    kind: Failure::Server,
                    message: format!("cannot write {}: {e}", path.display()),
                })
            }
            Mailer::Smtp(smtp) => {
                let limit = &smtp.limit;
                let parse = |a: &str| {
                    a.parse::<lettre::Address>().map_err(|e| SendError {
                        kind: Failure::Recipient,
                        message: format!("bad address {a:?}: {e}"),
                    })
                };
                let rcpts = to.iter().map(|a| parse(a)).collect::<Result<Vec<_>, _>>()?;
                let envelope = Envelope::new(Some(parse(from)?), rcpts).map_err(|e| SendError {
                    kind: Failure::Recipient,
                    message: e.to_string(),
                })?;
                // With OAuth2, a refused token is replaced at once and the mail tried once more.
                let mut retried = false;
                loop {
                    let (token, transport) = smtp.transport()?;
                    let result = match tokio::time::timeout(*limit, transport.send_raw(&envelope, bytes)).await {
                        Ok(result) => result.map(|_| ()).map_err(|e| {
                            let message = e.to_string();
                            (e.status().map(u16::from), message)
                        }),
                        Err(_) => {
                            return Err(SendError {
                                kind: Failure::Server,
                                message: format!("SMTP delivery did not finish within {} s", limit.as_secs()),
                            });
                        }
                    };
                    match (result, &smtp.oauth2, token) {
                        (Ok(()), _, _) => return Ok(()),
                        (Err((Some(534 | 535), _)), Some((provider, _)), Some(token)) if !retried => {
                            crate::transports::oauth2::refused(provider, &token);
                            retried = true;
                        }
                        (Err((code, message)), _, _) => {
                            return Err(SendError {
                                kind: classify_smtp(code, &message),
                                message,
                            });
                        }
                    }
                }
            }
        }
    }
}

/// Mails read from a lane at a time; also the most sent between two flushes.
const PAGE: usize = 32;

/// Sends every outbox entry that is due at `now`. A server-wide refusal
/// (authentication, connection) ends the pass: the rest waits, untouched,
/// and nothing is dropped for it.
pub async fn drain(pipeline: &Pipeline, mailer: &Mailer, now: Timestamp) -> Result<SendSummary, StoreError> {
    drain_with(pipeline, mailer, now, false, &|| false, &Unrecorded::default()).await
}

/// [`drain`]; with `retry_now`, mail waiting for a retry goes at once too (a
/// new transport after a reload: the admin fixed what the server refused).
/// The outbox is read a page at a time, a page of the live lane and then one
/// of the bulk lane in turn, so an acknowledgement never waits behind a bulk
/// backlog; each page is made durable in one flush (a crash resends at most
/// that page). `stop` is asked between mails: a shutdown waits for one
/// delivery at most. Mail sent whose record the store refused is held in
/// `unrecorded` and recorded first: the pass waits for that.
pub async fn drain_with(
    pipeline: &Pipeline,
    mailer: &Mailer,
    now: Timestamp,
    retry_now: bool,
    stop: &(dyn Fn() -> bool + Sync),
    unrecorded: &Unrecorded,
) -> Result<SendSummary, StoreError> {
    crate::transports::blocking(|| unrecorded.record(&*pipeline.store))?;
    let mut summary = SendSummary::default();
    let mut cursor: [Option<OutboxKey>; 2] = [None, None];
    let mut bulk_done = false;
    // `now` moves on with the pass: mail queued while a long backlog drains
    // is due by the time the live lane is read again, not after the pass.
    let started = std::time::Instant::now();
    let start = now;
    // How long a claimed page is ours: two lease times where instances share the store.
    let hold = pipeline
        .store
        .lease_interval()
        .map_or(std::time::Duration::from_secs(60), |i| i * 6);
    loop {
        let mut any = false;
        for lane in [Lane::Live, Lane::Bulk] {
            let elapsed = jiff::SignedDuration::try_from(started.elapsed()).unwrap_or(jiff::SignedDuration::ZERO);
            let now = start.checked_add(elapsed).unwrap_or(start);
            let i = lane as usize;
            if lane == Lane::Bulk && bulk_done {
                continue;
            }
            let after = cursor[i];
            // The live lane is read again after every bulk page: what was queued meanwhile goes next.
            // Claimed: instances sharing a store skip each other's pages.
            let page = crate::transports::blocking(|| pipeline.store.claim_outbox(lane, after, PAGE, hold))?;
            let claimed = std::time::Instant::now();
            let Some((last, _)) = page.last() else {
                bulk_done |= lane == Lane::Bulk;
                continue;
            };
            any = true;
            cursor[i] = Some(*last);
            let mut sent_any = false;
            let mut durable = false;
            let mut page = page.into_iter();
            while let Some((key, entry)) = page.next() {
                if stop() {
                    flush(pipeline, sent_any)?;
                    return Ok(summary);
                }
                // A store that can record nothing more would send this
                // mail again and again: nothing goes until it is opened again.
                if let Some(e) = pipeline.store.failed() {
                    summary.deferred += 1 + page.len() as u64;
                    tracing::warn!(error = %e, "the store failed: sending nothing more");
                    return Ok(summary);
                }
                if claimed.elapsed() > hold / 2 {
                    // A slow server: claim the rest again before the hold runs out.
                    cursor[i] = Some(OutboxKey {
                        seq: key.seq.saturating_sub(1),
                        ..key
                    });
                    break;
                }
                let send = Send {
                    retry_now,
                    durable: &mut durable,
                    unrecorded,
                };
                match send_one(pipeline, mailer, now, key, entry, send, &mut summary).await? {
                    Sent::Skipped => {}
                    Sent::Done => sent_any = true,
                    Sent::Blocked => {
                        summary.deferred += page.len() as u64;
                        flush(pipeline, true)?;
                        return Ok(summary);
                    }
                }
            }
            flush(pipeline, sent_any)?;
        }
        if !any {
            return Ok(summary);
        }
    }
}

fn flush(pipeline: &Pipeline, needed: bool) -> Result<(), StoreError> {
    if needed {
        crate::transports::blocking(|| pipeline.store.flush())?;
    }
    Ok(())
}

/// What one outbox entry came to.
enum Sent {
    /// Not due yet.
    Skipped,
    /// Sent, deferred or failed: recorded.
    Done,
    /// The server refuses us: the pass ends.
    Blocked,
}

/// How one entry is sent, within a page of a pass.
struct Send<'a> {
    /// Mail waiting for a retry goes now.
    retry_now: bool,
    /// Whether the store was flushed since the page was read; the first
    /// mail sent flushes it, so no mail leaves for a ticket or a queued
    /// entry a crash or a failed write could still undo (the mail that
    /// opened the ticket would then be read again, and acknowledged twice).
    durable: &'a mut bool,
    /// Where a sent mail's record goes when the store refuses it.
    unrecorded: &'a Unrecorded,
}

/// Sends one entry when it is due and records what came of it.
async fn send_one(
    pipeline: &Pipeline,
    mailer: &Mailer,
    now: Timestamp,
    key: OutboxKey,
    entry: OutboxEntry,
    send: Send<'_>,
    summary: &mut SendSummary,
) -> Result<Sent, StoreError> {
    let outgoing = &pipeline.config.outgoing;
    if entry.next_attempt > now && !(send.retry_now && entry.attempts > 0) {
        summary.deferred += 1;
        return Ok(Sent::Skipped);
    }
    if !*send.durable {
        crate::transports::blocking(|| pipeline.store.flush())?;
        *send.durable = true;
    }
    let mail = &entry.mail;
    // The loop header is signed for this very mail.
    let bytes =
        crate::transports::smtp::wire::render(mail, &pipeline.signer.loop_value(&mail.message_id, &mail.loop_value));
    let rcpts = mail.recipients();
    let result = mailer.send(&mail.from.email, &rcpts, &bytes, &mail.message_id).await;
    let sent = result.is_ok();
    let mut w = Change::default();
    let mut outcome = Sent::Done;
    match result {
        Ok(()) => {
            w.push(Op::Dequeue(key));
            // Ticket 0: mail of no ticket (a sign-in link).
            if mail.ticket.0 != 0 {
                w.event(
                    mail.ticket,
                    &mail_event(now, "mail_sent", &mail.message_id, &rcpts, None),
                );
            }
            summary.sent += 1;
            pipeline.metrics.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if pipeline.metrics.outgoing_down().is_some() {
                tracing::info!("the outgoing server takes our mail again");
                pipeline.metrics.set_outgoing_down(None);
            }
            tracing::info!(ticket = mail.ticket.0, purpose = %mail.purpose, "mail sent");
        }
        Err(e)
            if e.kind == Failure::Server
                || (e.kind == Failure::Temporary && entry.attempts + 1 < outgoing.max_attempts) =>
        {
            let attempts = entry.attempts + 1;
            // A server that refuses us is retried for as long as it takes, at most 15 minutes apart.
            let cap = if e.kind == Failure::Server { 15 * 60 } else { 6 * 3600 };
            let delay = outgoing
                .retry_base
                .as_secs()
                .saturating_mul(1 << (attempts - 1).min(16))
                .min(cap);
            let next = Timestamp::from_second(now.as_second() + delay as i64).unwrap_or(now);
            w.push(Op::Requeue(
                key,
                Box::new(OutboxEntry {
                    attempts,
                    next_attempt: next,
                    last_error: Some(e.message.clone()),
                    ..entry.clone()
                }),
            ));
            summary.deferred += 1;
            if e.kind == Failure::Server {
                outcome = Sent::Blocked;
                pipeline
                    .metrics
                    .outgoing_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if pipeline.metrics.outgoing_down().is_none() {
                    tracing::error!(error = %e, "the outgoing server refuses our mail; it stays queued and is retried");
                }
                pipeline.metrics.set_outgoing_down(Some(e.message.clone()));
            } else {
                tracing::warn!(ticket = mail.ticket.0, attempts, error = %e, "send deferred");
            }
        }
        Err(e) => {
            w.push(Op::Dequeue(key));
            if mail.ticket.0 != 0 {
                w.event(
                    mail.ticket,
                    &mail_event(now, "mail_failed", &mail.message_id, &rcpts, Some(&e.message)),
                );
            }
            summary.failed += 1;
            pipeline
                .metrics
                .failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(ticket = mail.ticket.0, error = %e, "send failed for good");
            tell_assignee_of_failure(pipeline, &mut w, &entry, &e.message, now)?;
        }
    }
    crate::transports::blocking(|| send.unrecorded.commit(&*pipeline.store, w, sent)).inspect_err(|e| {
        if sent {
            tracing::error!(ticket = mail.ticket.0, error = %e, "mail sent, but the store refused its record: it is recorded before anything more is sent");
        }
    })?;
    Ok(outcome)
}

/// A mail to a customer failed for good: the ticket's assignee hears of it
/// (never for mail to agents, so failures cannot loop).
fn tell_assignee_of_failure(
    pipeline: &Pipeline,
    w: &mut Change,
    entry: &OutboxEntry,
    error: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let config = &pipeline.config;
    let mail = &entry.mail;
    if mail.to.iter().any(|r| config.agent_by_email(&r.email).is_some()) {
        return Ok(());
    }
    let Some(ticket) = pipeline.store.ticket(mail.ticket)? else {
        return Ok(());
    };
    let Some(agent) = ticket
        .assignee
        .as_deref()
        .and_then(|a| config.agent_by_name_or_email(a))
    else {
        return Ok(());
    };
    let nonce = format!("{:x}f", pipeline.store.next_seq()?);
    let cx = crate::core::agent::MailContext {
        config,
        signer: &pipeline.signer,
        now,
        nonce: &nonce,
    };
    let body = format!(
        "Our {} to {} on ticket #{} could not be delivered:\n\n  {error}\n\nThe customer has not received it.",
        mail.purpose,
        mail.recipients().join(", "),
        ticket.id
    );
    let notice = crate::core::agent::agent_mail(
        &ticket,
        agent,
        &config.desk.name,
        &format!("Delivery failed ({})", ticket.subject),
        &body,
        "delivery_failure",
        true,
        0,
        None,
        &cx,
    );
    pipeline.queue_mail(w, &notice, now, Lane::Live);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Failure, classify_smtp};

    #[test]
    fn smtp_failures_table() {
        let table: [(Option<u16>, &str, Failure); 12] = [
            (None, "connection refused", Failure::Server),
            (Some(535), "5.7.8 Authentication credentials invalid", Failure::Server),
            (Some(530), "5.7.0 Authentication required", Failure::Server),
            (Some(534), "5.7.9 Authentication mechanism is too weak", Failure::Server),
            (Some(454), "4.7.0 Temporary authentication failure", Failure::Server),
            (Some(421), "4.3.2 Service shutting down", Failure::Server),
            (Some(503), "5.5.1 Bad sequence of commands", Failure::Server),
            (Some(550), "5.7.0 Must issue a STARTTLS command first", Failure::Server),
            (Some(451), "4.3.0 try later", Failure::Temporary),
            (Some(450), "4.2.0 greylisted", Failure::Temporary),
            (Some(550), "5.1.1 no such user", Failure::Recipient),
            (Some(552), "5.3.4 message too big", Failure::Recipient),
        ];
        for (code, text, want) in table {
            assert_eq!(classify_smtp(code, text), want, "{code:?} {text}");
        }
    }
}
