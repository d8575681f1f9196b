//! SLA clocks and the timed lifecycle, pure: deadlines from a policy and a
//! calendar, pausing while pending, the due timers of a ticket, and what a
//! timer does when it fires (warnings, breaches and escalation, pending
//! reminders, auto-close).

use crate::core::agent::{MailContext, agent_mail, assign, notify_targets};
use crate::core::calendar::Calendar;
use crate::core::model::{Event, Mailbox, MessageRecord, Priority, Sla, Status, Ticket};
use crate::core::outgoing::{OutgoingMail, fill};
use crate::core::settings::Settings;
use jiff::Timestamp;
use serde_json::json;
use std::time::Duration;

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum TimerKind {
    /// First response nearly due.
    FirstResponseWarn = 1,
    /// First response overdue.
    FirstResponseBreach = 2,
    /// Next response nearly due.
    NextResponseWarn = 3,
    /// Next response overdue.
    NextResponseBreach = 4,
    /// Resolution nearly due.
    ResolutionWarn = 5,
    /// Resolution overdue.
    ResolutionBreach = 6,
    /// Remind the customer of a pending ticket.
    PendingReminder = 7,
    /// Close a pending ticket nobody answered.
    PendingClose = 8,
    /// Close a resolved ticket.
    AutoClose = 9,
}

impl TimerKind {
    /// From the stored byte.
    pub fn from_u8(b: u8) -> Option<TimerKind> {
        use TimerKind::*;
        Some(match b {
            1 => FirstResponseWarn,
            2 => FirstResponseBreach,
            3 => NextResponseWarn,
            4 => NextResponseBreach,
            5 => ResolutionWarn,
            6 => ResolutionBreach,
            7 => PendingReminder,
            8 => PendingClose,
            9 => AutoClose,
            _ => return None,
        })
    }

    fn target(self) -> &'static str {
        use TimerKind::*;
        match self {
            FirstResponseWarn | FirstResponseBreach => "first_response",
            NextResponseWarn | NextResponseBreach => "next_response",
            ResolutionWarn | ResolutionBreach => "resolution",
            PendingReminder | PendingClose | AutoClose => "lifecycle",
        }
    }
}

/// A deadline moved for a pause: the working time left at `paused` is counted again from `resumed`.
pub fn shift_for_pause(cal: &Calendar, due: Timestamp, paused: Timestamp, resumed: Timestamp) -> Timestamp {
    if due <= paused {
        return due;
    }
    cal.add(resumed, cal.between(paused, due))
}

fn scaled(d: Duration, percent: u32) -> Duration {
    Duration::from_secs(d.as_secs() * u64::from(percent) / 100)
}

/// Brings the SLA state and the lifecycle bookkeeping up to date after a change.
/// `customer_wrote`: a customer message arrived now; `agent_replied`: a public agent reply went out now.
pub fn refresh(
    ticket: &mut Ticket,
    config: &Settings,
    now: Timestamp,
    customer_wrote: bool,
    agent_replied: bool,
) -> Vec<Event> {
    let mut events = Vec::new();
    // Lifecycle: when did it start waiting on the customer?
    if ticket.status == Status::Pending {
        if ticket.pending_since.is_none() {
            ticket.pending_since = Some(now);
            ticket.pending_reminded = false;
        }
    } else {
        ticket.pending_since = None;
    }
    // The policy for the ticket's priority and queue. None drops the targets
    // not yet met (a ticket lowered to a priority without SLA has none), except
    // on a ticket that breached: an escalated ticket must not lose its clocks.
    let current = ticket
        .sla
        .policy
        .as_deref()
        .and_then(|p| config.sla.iter().find(|x| x.name == p));
    let breached = ticket.sla.first_response_breached || ticket.sla.resolution_breached;
    let next = config
        .sla_policy(ticket.priority, &ticket.queue)
        .or(if breached { current } else { None });
    // (A policy name no longer in the config, with nothing to replace it, is left alone.)
    if ticket.sla.policy.as_deref() != next.map(|p| p.name.as_str()) && (next.is_some() || current.is_some()) {
        // A new policy counts from the ticket's creation, keeping what was
        // breached, a target already met as it was met, and the time paused so
        // far in the customer's favour.
        let start = ticket.created_at;
        let old = std::mem::take(&mut ticket.sla);
        let answered = ticket.first_response_at.is_some();
        let credit = Duration::from_secs(old.paused_credit_secs);
        let at = |target: Option<Duration>, scale: u32| {
            let p = next?;
            target.map(|t| config.calendar(&p.calendar).add(start, scaled(t, scale) + credit))
        };
        let first = next.and_then(|p| p.first_response);
        let resolution = next.and_then(|p| p.resolution);
        let warn_at = next.map(|p| p.warn_at).unwrap_or(100);
        ticket.sla = Sla {
            policy: next.map(|p| p.name.clone()),
            first_response_due: if answered {
                old.first_response_due
            } else {
                at(first, 100)
            },
            first_response_warn: if answered {
                old.first_response_warn.filter(|_| next.is_some())
            } else {
                at(first, warn_at)
            },
            resolution_due: at(resolution, 100),
            resolution_warn: at(resolution, warn_at),
            paused_credit_secs: old.paused_credit_secs,
            first_response_breached: old.first_response_breached,
            resolution_breached: old.resolution_breached,
            paused_at: old.paused_at,
            ..Sla::default()
        };
        let mut detail = vec![("from", json!(old.policy)), ("to", json!(ticket.sla.policy))];
        if next.is_some() {
            detail.push(("first_response_due", json!(ticket.sla.first_response_due)));
            detail.push(("resolution_due", json!(ticket.sla.resolution_due)));
        } else {
            detail.push(("reason", json!("no policy for this priority and queue")));
        }
        events.push(Event::new(now, "sla_policy", "system", &detail));
    }
    let Some(policy) = next else {
        return events;
    };
    let cal = config.calendar(&policy.calendar);
    let sla = &mut ticket.sla;
    // Pause while pending, resume otherwise.
    match (ticket.status == Status::Pending, sla.paused_at) {
        (true, None) => {
            sla.paused_at = Some(now);
            events.push(Event::new(now, "sla_paused", "system", &[]));
        }
        (false, Some(paused)) => {
            // A met first-response target is frozen: pending time no longer moves it.
            let answered = ticket.first_response_at.is_some();
            let (mut fr_due, mut fr_warn) = (sla.first_response_due, sla.first_response_warn);
            for t in [&mut fr_due, &mut fr_warn] {
                if let Some(due) = t.as_mut()
                    && !answered
                {
                    *due = shift_for_pause(cal, *due, paused, now);
                }
            }
            sla.first_response_due = fr_due;
            sla.first_response_warn = fr_warn;
            for t in [
                &mut sla.next_response_due,
                &mut sla.next_response_warn,
                &mut sla.resolution_due,
                &mut sla.resolution_warn,
            ] {
                if let Some(due) = t.as_mut() {
                    *due = shift_for_pause(cal, *due, paused, now);
                }
            }
            sla.paused_at = None;
            let paused_secs = cal.between(paused, now).as_secs();
            sla.paused_credit_secs += paused_secs;
            events.push(Event::new(
                now,
                "sla_resumed",
                "system",
                &[("paused_business_seconds", json!(paused_secs))],
            ));
        }
        _ => {}
    }
    if agent_replied {
        sla.next_response_due = None;
        sla.next_response_warn = None;
    }
    if customer_wrote
        && ticket.last_agent_reply.is_some()
        && let Some(t) = policy.next_response
        && sla.paused_at.is_none()
    {
        sla.next_response_due = Some(cal.add(now, t));
        sla.next_response_warn = Some(cal.add(now, scaled(t, policy.warn_at)));
        sla.next_response_breached = false;
        sla.warned.retain(|w| w != "next_response");
    }
    events
}

/// The timers a ticket has pending, derived from its state alone.
pub fn due_items(ticket: &Ticket, config: &Settings) -> Vec<(Timestamp, TimerKind)> {
    use TimerKind::*;
    let mut out = Vec::new();
    let s = &ticket.sla;
    let active = matches!(ticket.status, Status::New | Status::Open);
    if active && s.paused_at.is_none() {
        let warned = |t: &str| s.warned.iter().any(|w| w == t);
        if ticket.first_response_at.is_none() {
            if let Some(w) = s
                .first_response_warn
                .filter(|_| !warned("first_response") && !s.first_response_breached)
            {
                out.push((w, FirstResponseWarn));
            }
            if let Some(d) = s.first_response_due.filter(|_| !s.first_response_breached) {
                out.push((d, FirstResponseBreach));
            }
        }
        if let Some(w) = s
            .next_response_warn
            .filter(|_| !warned("next_response") && !s.next_response_breached)
        {
            out.push((w, NextResponseWarn));
        }
        if let Some(d) = s.next_response_due.filter(|_| !s.next_response_breached) {
            out.push((d, NextResponseBreach));
        }
        if let Some(w) = s
            .resolution_warn
            .filter(|_| !warned("resolution") && !s.resolution_breached)
        {
            out.push((w, ResolutionWarn));
        }
        if let Some(d) = s.resolution_due.filter(|_| !s.resolution_breached) {
            out.push((d, ResolutionBreach));
        }
    }
    let a = &config.automation;
    if ticket.status == Status::Pending
        && let Some(since) = ticket.pending_since
    {
        if let Some(after) = a.pending_reminder_after.filter(|_| !ticket.pending_reminded) {
            out.push((plus(since, after), PendingReminder));
        }
        if let Some(after) = a.pending_close_after {
            out.push((plus(since, after), PendingClose));
        }
    }
    if ticket.status == Status::Resolved
        && let (Some(at), Some(after)) = (ticket.resolved_at, a.auto_close_resolved_after)
    {
        out.push((plus(at, after), AutoClose));
    }
    out
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp::from_second(t.as_second() + d.as_secs() as i64).unwrap_or(t)
}

/// What firing a timer did.
#[derive(Clone, Debug, Default)]
pub struct Fired {
    /// Events to log.
    pub events: Vec<Event>,
    /// Mails to queue.
    pub mails: Vec<OutgoingMail>,
}

fn raise(p: Priority) -> Priority {
    match p {
        Priority::Low => Priority::Normal,
        Priority::Normal => Priority::High,
        Priority::High | Priority::Urgent => Priority::Urgent,
    }
}

/// Fires one timer on a ticket. `recent` are the ticket's latest messages (for escalation mail).
pub fn fire(
    ticket: &mut Ticket,
    kind: TimerKind,
    due: Timestamp,
    recent: &[MessageRecord],
    cx: &MailContext<'_>,
) -> Fired {
    use TimerKind::*;
    let config = cx.config;
    let now = cx.now;
    let mut out = Fired::default();
    let target = kind.target();
    match kind {
        FirstResponseWarn | NextResponseWarn | ResolutionWarn => {
            ticket.sla.warned.push(target.to_string());
            let deadline = match kind {
                FirstResponseWarn => ticket.sla.first_response_due,
                NextResponseWarn => ticket.sla.next_response_due,
                _ => ticket.sla.resolution_due,
            };
            out.events.push(Event::new(
                now,
                "sla_warning",
                "system",
                &[("target", json!(target)), ("due", json!(deadline))],
            ));
            let body = format!(
                "The {} target of ticket #{} is due at {} (UTC).\nPriority {}, queue {}, status {}.",
                target.replace('_', " "),
                ticket.id,
                deadline.map(|d| d.to_string()).unwrap_or_default(),
                ticket.priority.as_str(),
                ticket.queue,
                ticket.status.as_str()
            );
            for (i, agent) in notify_targets(ticket, config).into_iter().enumerate() {
                out.mails.push(agent_mail(
                    ticket,
                    agent,
                    &config.desk.name,
                    &format!("SLA warning: {}", ticket.subject),
                    &body,
                    "sla_warning",
                    true,
                    i,
                    None,
                    cx,
                ));
            }
        }
        FirstResponseBreach | NextResponseBreach | ResolutionBreach => {
            match kind {
                FirstResponseBreach => ticket.sla.first_response_breached = true,
                NextResponseBreach => ticket.sla.next_response_breached = true,
                _ => ticket.sla.resolution_breached = true,
            }
            let overdue = now.as_second() - due.as_second();
            out.events.push(Event::new(
                now,
                "sla_breach",
                "system",
                &[
                    ("target", json!(target)),
                    ("due", json!(due)),
                    ("overdue_seconds", json!(overdue)),
                ],
            ));
            let policy = ticket
                .sla
                .policy
                .as_deref()
                .and_then(|p| config.sla.iter().find(|x| x.name == p))
                .cloned();
            let on_breach = policy.as_ref().map(|p| p.on_breach.clone()).unwrap_or_default();
            if on_breach.raise_priority && ticket.priority != Priority::Urgent {
                let to = raise(ticket.priority);
                out.events.push(Event::new(
                    now,
                    "priority",
                    "system",
                    &[
                        ("from", json!(ticket.priority.as_str())),
                        ("to", json!(to.as_str())),
                        ("reason", json!("sla breach")),
                    ],
                ));
                ticket.priority = to;
            }
            if let Some(q) = &on_breach.queue
                && ticket.queue != *q
            {
                out.events.push(Event::new(
                    now,
                    "queue",
                    "system",
                    &[("from", json!(ticket.queue)), ("to", json!(q))],
                ));
                ticket.queue = q.clone();
            }
            if let Some(a) = &on_breach.reassign {
                assign(ticket, a, "system", "sla breach", now, &mut out.events);
            }
            let mut latest = String::new();
            for m in recent.iter().rev().take(3).rev() {
                latest.push_str(&format!(
                    "--- {} {:?} from {}\n{}\n\n",
                    m.date,
                    m.kind,
                    m.from.email,
                    m.text.lines().take(15).collect::<Vec<_>>().join("\n")
                ));
            }
            let summary = crate::core::summary::summary(ticket, &crate::core::summary::turns(recent), now);
            let body = format!(
                "Ticket #{} missed its {} target by {}.\nDue {} (UTC), policy {}. Now priority {}, queue {}, assignee {}.\n\n{summary}{}Latest messages:\n\n{latest}",
                ticket.id,
                target.replace('_', " "),
                crate::core::summary::span(overdue),
                due,
                ticket.sla.policy.as_deref().unwrap_or("-"),
                ticket.priority.as_str(),
                ticket.queue,
                ticket.assignee.as_deref().unwrap_or("nobody"),
                if summary.is_empty() { "" } else { "\n" },
            );
            let subject = format!("SLA breach: {}", ticket.subject);
            let mut told: Vec<String> = Vec::new();
            // The assignee (or the queue's agents) as agents, with tokens to reply with.
            for (i, agent) in notify_targets(ticket, config).into_iter().enumerate() {
                told.push(agent.emails[0].clone());
                out.mails.push(agent_mail(
                    ticket,
                    agent,
                    &config.desk.name,
                    &subject,
                    &body,
                    "escalation",
                    true,
                    100 + i,
                    None,
                    cx,
                ));
            }
            let lead = config.queue(&ticket.queue).and_then(|q| q.lead.clone());
            for (i, addr) in on_breach.notify.iter().chain(lead.iter()).enumerate() {
                if told.contains(addr) {
                    continue;
                }
                told.push(addr.clone());
                out.mails
                    .push(plain_mail(ticket, addr, &subject, &body, "escalation", 200 + i, cx));
            }
            out.events
                .push(Event::new(now, "escalated", "system", &[("to", json!(told))]));
        }
        PendingReminder => {
            ticket.pending_reminded = true;
            let t = &config.templates.pending_reminder;
            out.events.push(Event::new(now, "pending_reminder", "system", &[]));
            out.mails.push(customer_mail(ticket, t, "pending_reminder", cx));
        }
        PendingClose | AutoClose => {
            let from = ticket.status;
            ticket.status = Status::Closed;
            ticket.closed_at = Some(now);
            let reason = if kind == PendingClose {
                "no answer from the customer"
            } else {
                "resolved and quiet"
            };
            out.events.push(Event::new(
                now,
                "status",
                "system",
                &[
                    ("from", json!(from.as_str())),
                    ("to", json!("closed")),
                    ("reason", json!(reason)),
                ],
            ));
            let t = if kind == PendingClose {
                &config.templates.pending_closed
            } else {
                &config.templates.closed
            };
            out.mails.push(customer_mail(
                ticket,
                t,
                if kind == PendingClose {
                    "pending_closed"
                } else {
                    "closed"
                },
                cx,
            ));
        }
    }
    out
}

/// An automatic mail to the requester from a template.
pub fn customer_mail(
    ticket: &Ticket,
    t: &crate::core::settings::Template,
    purpose: &str,
    cx: &MailContext<'_>,
) -> OutgoingMail {
    customer_mail_with(ticket, t, purpose, cx, &[])
}

/// [`customer_mail`] with extra template values.
pub fn customer_mail_with(
    ticket: &Ticket,
    t: &crate::core::settings::Template,
    purpose: &str,
    cx: &MailContext<'_>,
    extra: &[(&str, String)],
) -> OutgoingMail {
    let config = cx.config;
    // In the customer's language when the template has that variant.
    let t = t.localized(ticket.language.as_deref());
    let mut values = crate::core::agent::template_values(ticket, config, None);
    for (k, v) in extra {
        values = values.set(k, v.clone());
    }
    let mut body = fill(&t.body, &values);
    if !body.ends_with('\n') {
        body.push('\n');
    }
    body.push_str(&format!("\n{}\n", cx.signer.body_token(ticket.id)));
    OutgoingMail {
        ticket: ticket.id,
        purpose: purpose.to_string(),
        from: config.from_for(&ticket.mailbox),
        to: vec![ticket.requester.clone()],
        reply_to: None,
        subject: crate::core::subject::tagged(&fill(&t.subject, &values), &config.desk.subject_tag, ticket.id.0),
        body,
        message_id: cx.signer.message_id(
            ticket.id,
            &format!("{}{purpose}", cx.nonce).replace('_', ""),
            &config.desk.message_id_domain,
        ),
        in_reply_to: ticket.last_public_message_id.clone(),
        references: ticket.last_public_message_id.iter().cloned().collect(),
        auto_submitted: true,
        date: cx.now,
        loop_value: crate::core::classify::loop_header_value(config),
        attachments: Vec::new(),
    }
}

pub(crate) fn plain_mail(
    ticket: &Ticket,
    to: &str,
    subject: &str,
    body: &str,
    purpose: &str,
    seq: usize,
    cx: &MailContext<'_>,
) -> OutgoingMail {
    let config = cx.config;
    OutgoingMail {
        ticket: ticket.id,
        purpose: purpose.to_string(),
        from: config.from_for(&ticket.mailbox),
        to: vec![Mailbox::new(None, to)],
        reply_to: None,
        subject: crate::core::subject::tagged(subject, &config.desk.subject_tag, ticket.id.0),
        body: body.to_string(),
        message_id: cx.signer.message_id(
            ticket.id,
            &format!("{}x{seq}", cx.nonce),
            &config.desk.message_id_domain,
        ),
        in_reply_to: None,
        references: Vec::new(),
        auto_submitted: true,
        date: cx.now,
        loop_value: crate::core::classify::loop_header_value(config),
        attachments: Vec::new(),
    }
}

/// A satisfaction rating in a customer's reply: a lone 1–5 on the first line, an optional comment after.
pub fn rating(text: &str) -> Option<(u8, String)> {
    // Cheap refusal first: most mail does not open with a digit from 1 to 5.
    let first = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    if !first.starts_with(['1', '2', '3', '4', '5']) {
        return None;
    }
    let stripped = crate::core::reply::strip_quotes(text);
    let mut lines = stripped.lines().map(str::trim).skip_while(|l| l.is_empty());
    let first = lines.next()?;
    let digits: String = first.chars().take_while(|c| c.is_ascii_digit()).collect();
    let rest = first[digits.len()..]
        .trim_start_matches(['/', ' ', '.', ':', '-'])
        .trim();
    let n: u8 = digits.parse().ok()?;
    // "5/5" is a rating out of five, not a comment.
    let rest = if rest == "5" { "" } else { rest };
    if !(1..=5).contains(&n) || rest.chars().any(|c| c.is_ascii_digit()) || rest.len() > 60 {
        return None;
    }
    let mut comment: Vec<&str> = Vec::new();
    if !rest.is_empty() {
        comment.push(rest);
    }
    comment.extend(lines.take_while(|l| *l != "--"));
    Some((n, comment.join("\n").trim().to_string()))
}

/// Whether a customer's reply is the self-service word `status`.
pub fn is_status_request(text: &str) -> bool {
    let first = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    if !first.to_ascii_lowercase().starts_with("status") {
        return false;
    }
    let stripped = crate::core::reply::strip_quotes(text);
    let first: Vec<&str> = stripped.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    matches!(first.as_slice(), [w] if w.eq_ignore_ascii_case("status") || w.eq_ignore_ascii_case("status?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings_table() {
        let table: [(&str, Option<(u8, &str)>); 9] = [
            ("5", Some((5, ""))),
            ("4\nQuick and friendly.", Some((4, "Quick and friendly."))),
            ("3 - ok I guess", Some((3, "ok I guess"))),
            ("5/5", Some((5, ""))),
            (
                "1\n\nOn Mon, 23 Nov 2026 Example Support <support@example.com> wrote:\n> Rate us 1-5",
                Some((1, "")),
            ),
            ("6", None),
            ("0", None),
            ("My printer model is 4000", None),
            ("I still have the problem", None),
        ];
        for (text, want) in table {
            assert_eq!(rating(text), want.map(|(n, c)| (n, c.to_string())), "{text:?}");
        }
    }

    #[test]
    fn pause_and_resume_table() {
        use jiff::civil::Time;
        let mut week: [Vec<(Time, Time)>; 7] = Default::default();
        for day in week.iter_mut().take(5) {
            *day = crate::core::calendar::parse_ranges("09:00-17:00").unwrap();
        }
        let cal = Calendar::Hours {
            tz: jiff::tz::TimeZone::UTC,
            week,
            holidays: Default::default(),
        };
        let ts = |s: &str| s.parse::<Timestamp>().unwrap();
        // (due, paused, resumed, new due)
        let table = [
            // Paused 2 working hours before the deadline, resumed next morning: 2 hours from then.
            (
                "2026-11-23T15:00:00Z",
                "2026-11-23T13:00:00Z",
                "2026-11-24T09:00:00Z",
                "2026-11-24T11:00:00Z",
            ),
            // Paused over the weekend: Friday 16:00 → Monday 10:00, 1 hour left.
            (
                "2026-11-27T17:00:00Z",
                "2026-11-27T16:00:00Z",
                "2026-11-30T09:00:00Z",
                "2026-11-30T10:00:00Z",
            ),
            // Paused and resumed outside working hours: nothing moves.
            (
                "2026-11-24T10:00:00Z",
                "2026-11-23T18:00:00Z",
                "2026-11-23T20:00:00Z",
                "2026-11-24T10:00:00Z",
            ),
            // Already overdue when paused: stays.
            (
                "2026-11-23T10:00:00Z",
                "2026-11-23T12:00:00Z",
                "2026-11-24T12:00:00Z",
                "2026-11-23T10:00:00Z",
            ),
        ];
        for (due, paused, resumed, want) in table {
            assert_eq!(
                shift_for_pause(&cal, ts(due), ts(paused), ts(resumed)),
                ts(want),
                "{due} {paused} {resumed}"
            );
        }
    }

    #[test]
    fn status_requests() {
        assert!(is_status_request("status\n\n> quoted"));
        assert!(is_status_request("  Status?  "));
        assert!(!is_status_request("status of my order please"));
    }
}
