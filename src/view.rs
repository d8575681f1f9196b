//! Views shared by the CLI and the HTTP API: a ticket with its messages and
//! events (redacted of agent-bound tokens), report bounds, the histories a
//! report reads, and the paged walk over every ticket.

use crate::adapters::store::{Store, StoreError, TicketFilter};
use crate::core::model::{MessageRecord, Ticket, TicketId};
use jiff::Timestamp;

/// A report bound as given: a time, or a day of the desk's calendar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DayOrTime {
    /// An RFC 3339 time.
    Time(Timestamp),
    /// A date: its midnight in the instance's time zone.
    Day(jiff::civil::Date),
}

impl DayOrTime {
    /// The instant, with days taken in the IANA zone `timezone` (UTC when unknown).
    pub fn at(self, timezone: &str) -> Timestamp {
        match self {
            DayOrTime::Time(t) => t,
            DayOrTime::Day(d) => {
                let tz = jiff::tz::TimeZone::get(timezone).unwrap_or(jiff::tz::TimeZone::UTC);
                d.to_zoned(tz).map(|z| z.timestamp()).unwrap_or_else(|_| {
                    d.to_zoned(jiff::tz::TimeZone::UTC)
                        .expect("UTC midnight exists")
                        .timestamp()
                })
            }
        }
    }
}

/// An RFC 3339 time, or a date (its midnight in the instance's time zone).
pub fn parse_day_or_time(s: &str) -> Result<DayOrTime, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(DayOrTime::Time(t));
    }
    s.parse::<jiff::civil::Date>()
        .map(DayOrTime::Day)
        .map_err(|_| format!("expected a date like 2026-11-01 or an RFC 3339 time, got {s:?}"))
}

/// A ticket with its messages and events: the `show --json` and `export` shape.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct TicketView {
    /// The ticket's fields.
    #[serde(flatten)]
    pub ticket: Ticket,
    /// Its messages.
    pub messages: Vec<crate::core::model::MessageRecord>,
    /// Its events.
    pub events: Vec<crate::core::model::Event>,
}

/// Reads one ticket with its messages and events, and those of the tickets
/// merged into it (marked `merged_from`), in time order. A ticket merged
/// into another shows its own, with `merged_into` saying where it went.
pub fn ticket_view(store: &dyn Store, id: TicketId) -> Result<Option<TicketView>, StoreError> {
    let Some(ticket) = store.ticket(id)? else {
        return Ok(None);
    };
    // Agent-bound tokens never leave through a view (API, show, export).
    let r = crate::core::token::redact_agent_tokens;
    let mut messages = store.messages(id)?;
    let mut events = store.events(id)?;
    if ticket.merged_into.is_none() && !ticket.merged.is_empty() {
        for &part in &ticket.merged {
            messages.extend(store.messages(part)?.into_iter().map(|m| MessageRecord {
                merged_from: Some(part),
                ..m
            }));
            events.extend(store.events(part)?.into_iter().map(|mut e| {
                e.detail.insert("merged_from".into(), serde_json::json!(part.0));
                e
            }));
        }
        messages.sort_by_key(|m| m.date);
        events.sort_by_key(|e| e.at);
    }
    for m in &mut messages {
        m.message_id = r(&m.message_id);
        for to in &mut m.to {
            to.email = r(&to.email);
        }
        m.text = r(&m.text);
    }
    for e in &mut events {
        for v in e.detail.values_mut() {
            redact_json(v);
        }
    }
    Ok(Some(TicketView {
        messages,
        events,
        ticket,
    }))
}

/// What a merge or split through the API or the CLI did.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MergeDone {
    /// The ticket asked about.
    pub ticket: TicketId,
    /// The other ticket.
    pub other: TicketId,
    /// The ticket the merged conversation lives on (after a split: the one split from).
    pub kept: TicketId,
}

fn redact_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => *s = crate::core::token::redact_agent_tokens(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact_json),
        serde_json::Value::Object(o) => o.values_mut().for_each(redact_json),
        _ => {}
    }
}

/// The report over `[since, until)`, read one ticket at a time: the tickets
/// with events from `since`'s day on and the active ones (through the
/// activity and status indexes, not every ticket); a ticket created after the
/// period is skipped before its events are read, and each history is folded
/// into the report and dropped.
pub fn report(
    store: &dyn Store,
    config: &crate::adapters::config::Config,
    since: Option<Timestamp>,
    until: Timestamp,
) -> Result<crate::core::report::Report, StoreError> {
    let mut b = crate::core::report::ReportBuilder::new(config, since, until);
    for id in store.report_tickets(since)? {
        let Some(ticket) = store.ticket(id)? else { continue };
        // A merged ticket counts once: as the ticket it was merged into.
        if ticket.merged_into.is_some() || !b.wants(ticket.created_at) {
            continue;
        }
        let events = store.events(ticket.id)?;
        b.add(&crate::core::report::History { ticket, events });
    }
    Ok(b.finish())
}

/// Every ticket in number order, a page at a time (`export`).
pub fn each_ticket<E: From<StoreError>>(
    store: &dyn Store,
    mut f: impl FnMut(TicketView) -> Result<(), E>,
) -> Result<(), E> {
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list(&TicketFilter::default(), cursor.as_deref(), 200)?;
        for t in &page.tickets {
            if let Some(v) = ticket_view(store, t.id)? {
                f(v)?;
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}
