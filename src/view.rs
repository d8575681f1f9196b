//! Views shared by the CLI and the HTTP API: a ticket with its messages and
//! events (redacted of agent-bound tokens), report bounds, the histories a
//! report reads, the paged walk over every ticket, and the team's dashboard.

use crate::adapters::store::{ReportRead, ReportTicket, Store, StoreError, TicketFilter};
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
/// period is skipped before its events are read, an active one with no event
/// since the period began counts by its record alone (its events unread), and
/// each history is folded into the report and dropped.
pub fn report(
    store: &dyn Store,
    config: &crate::adapters::config::Config,
    since: Option<Timestamp>,
    until: Timestamp,
) -> Result<crate::core::report::Report, StoreError> {
    let mut b = crate::core::report::ReportBuilder::new(config, since, until);
    let ids = store.report_tickets(since, until)?;
    // Reading and decoding is most of the time: workers read batches of
    // tickets and their events, and the builder folds them in in number
    // order (so the figures do not depend on which worker was first).
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, REPORT_WORKERS);
    let batches: Vec<&[ReportTicket]> = ids.chunks(REPORT_BATCH).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(workers * 2);
        for _ in 0..workers {
            let (tx, batches, next) = (tx.clone(), &batches, &next);
            scope.spawn(move || {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(batch) = batches.get(n) else { return };
                    if tx.send((n, histories(store, batch, until))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut waiting = std::collections::BTreeMap::new();
        let mut turn = 0;
        for (n, read) in rx {
            waiting.insert(n, read?);
            while let Some(read) = waiting.remove(&turn) {
                for r in read {
                    match r.events {
                        Some(events) => b.add(&crate::core::report::History {
                            ticket: r.facts,
                            events,
                        }),
                        None => b.add_quiet(&r.facts),
                    }
                }
                turn += 1;
            }
        }
        Ok(b.finish())
    })
}

/// What a report counts among `ids`: each ticket with its events (a quiet
/// one without), but those merged into another (they count as that one) and
/// those created after the period.
fn histories(store: &dyn Store, ids: &[ReportTicket], until: Timestamp) -> Result<Vec<ReportRead>, StoreError> {
    store.report_reads(ids, &|t| {
        t.merged_into.is_none() && crate::core::report::counts_at_all(t.created_at, until)
    })
}

/// Most threads a report reads with.
const REPORT_WORKERS: usize = 4;

/// Tickets a report's worker reads at a time.
const REPORT_BATCH: usize = 128;

/// Whole tickets an export reads (and `/api/export` answers) a page.
pub const EXPORT_PAGE: usize = 200;

/// Every ticket in number order, a page at a time (`export`).
pub fn each_ticket<E: From<StoreError>>(
    store: &dyn Store,
    f: impl FnMut(TicketView) -> Result<(), E>,
) -> Result<(), E> {
    each_ticket_from(store, None, None, f).map(|_| ())
}

/// The tickets in number order after `cursor`, a page at a time, at most
/// `limit` of them (all when `None`); the cursor to go on from when the
/// limit left some (`export --limit --cursor`).
pub fn each_ticket_from<E: From<StoreError>>(
    store: &dyn Store,
    cursor: Option<&str>,
    limit: Option<u64>,
    mut f: impl FnMut(TicketView) -> Result<(), E>,
) -> Result<Option<String>, E> {
    let mut cursor: Option<String> = cursor.map(String::from);
    let mut left = limit.unwrap_or(u64::MAX);
    loop {
        let page = store.list(
            &TicketFilter::default(),
            cursor.as_deref(),
            left.min(EXPORT_PAGE as u64) as usize,
        )?;
        left -= page.tickets.len() as u64;
        for t in &page.tickets {
            if let Some(v) = ticket_view(store, t.id)? {
                f(v)?;
            }
        }
        match page.next {
            Some(next) if left == 0 => return Ok(Some(next)),
            Some(next) => cursor = Some(next),
            None => return Ok(None),
        }
    }
}

/// Calls `f` for each ticket `filter` lists (those merged into another
/// skipped), page after page, reading at most `cap`; whether more were left.
fn each_listed(
    store: &dyn Store,
    filter: &TicketFilter,
    cap: usize,
    mut f: impl FnMut(Ticket),
) -> Result<bool, StoreError> {
    let mut cursor: Option<String> = None;
    let mut read = 0;
    loop {
        let limit = (cap - read).min(crate::adapters::store::MAX_PAGE);
        let page = store.list(filter, cursor.as_deref(), limit)?;
        read += page.tickets.len();
        page.tickets
            .into_iter()
            .filter(|t| t.merged_into.is_none())
            .for_each(&mut f);
        match page.next {
            Some(_) if read >= cap => return Ok(true),
            Some(n) => cursor = Some(n),
            None => return Ok(false),
        }
    }
}

/// The open statuses, whose tickets the dashboard lists.
const OPEN: [crate::core::model::Status; 3] = [
    crate::core::model::Status::New,
    crate::core::model::Status::Open,
    crate::core::model::Status::Pending,
];

/// Calls `f` for up to `cap` tickets of each open status; whether any status had more.
fn each_open(store: &dyn Store, cap: usize, mut f: impl FnMut(Ticket)) -> Result<bool, StoreError> {
    let mut partial = false;
    for status in OPEN {
        let filter = TicketFilter {
            status: Some(status),
            ..Default::default()
        };
        partial |= each_listed(store, &filter, cap, &mut f)?;
    }
    Ok(partial)
}

/// What the team's dashboard shows, read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Dashboard {
    /// Tickets by status (`new`, `open`, `pending`, `resolved`, `closed`).
    pub by_status: Vec<(String, u64)>,
    /// Open work (new, open, pending) by queue.
    pub by_queue: Vec<(String, u64)>,
    /// Open work by priority.
    pub by_priority: Vec<(String, u64)>,
    /// Unassigned open work: how many, and the oldest few.
    pub unassigned: (u64, Vec<Ticket>),
    /// The soonest SLA deadlines of open work with the seconds left (negative: breached).
    pub at_risk: Vec<(Ticket, &'static str, i64)>,
    /// Each agent's open and pending tickets, oldest first.
    pub agents: Vec<(String, Vec<Ticket>)>,
    /// Tickets created since midnight (the desk's time zone) and in the last 7 days.
    pub created: (u64, u64),
    /// Whether open work was more than the dashboard reads (the lists are then partial).
    pub partial: bool,
}

/// Most open tickets the dashboard reads per status.
pub const DASHBOARD_READ: usize = 2000;

/// The dashboard: counts from the store's counters, lists from the status
/// index (at most [`DASHBOARD_READ`] tickets a status).
pub fn dashboard(
    store: &dyn Store,
    config: &crate::core::settings::Settings,
    now: Timestamp,
) -> Result<Dashboard, StoreError> {
    use crate::core::model::Status;
    let mut d = Dashboard::default();
    let mut by_status: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let mut by_queue: std::collections::BTreeMap<String, u64> = Default::default();
    for c in store.counts()? {
        *by_status.entry(c.status.as_str()).or_default() += c.tickets;
        if OPEN.contains(&c.status) {
            *by_queue.entry(c.queue).or_default() += c.tickets;
        }
    }
    d.by_status = [
        Status::New,
        Status::Open,
        Status::Pending,
        Status::Resolved,
        Status::Closed,
    ]
    .iter()
    .map(|s| (s.as_str().to_string(), by_status.get(s.as_str()).copied().unwrap_or(0)))
    .collect();
    d.by_queue = by_queue.into_iter().collect();
    let mut open = Vec::new();
    d.partial |= each_open(store, DASHBOARD_READ, |t| open.push(t))?;
    open.sort_by_key(|t| t.created_at);
    let mut by_priority: std::collections::BTreeMap<String, u64> = Default::default();
    for t in &open {
        *by_priority.entry(t.priority.as_str().to_string()).or_default() += 1;
    }
    d.by_priority = ["urgent", "high", "normal", "low"]
        .iter()
        .map(|p| (p.to_string(), by_priority.get(*p).copied().unwrap_or(0)))
        .collect();
    let unassigned: Vec<&Ticket> = open.iter().filter(|t| t.assignee.is_none()).collect();
    d.unassigned = (
        unassigned.len() as u64,
        unassigned.iter().take(10).map(|t| (*t).clone()).collect(),
    );
    let mut risk: Vec<(Ticket, &'static str, i64)> = Vec::new();
    for t in open.iter().filter(|t| t.status != Status::Pending) {
        let due = [
            (
                t.first_response_at
                    .is_none()
                    .then_some(t.sla.first_response_due)
                    .flatten(),
                "first response",
            ),
            (t.sla.next_response_due, "next response"),
            (t.sla.resolution_due, "resolution"),
        ]
        .into_iter()
        .filter_map(|(at, what)| at.map(|a| (a, what)))
        .min_by_key(|(a, _)| *a);
        if let Some((at, what)) = due {
            risk.push((t.clone(), what, at.as_second() - now.as_second()));
        }
    }
    risk.sort_by_key(|(_, _, left)| *left);
    risk.truncate(10);
    d.at_risk = risk;
    // Volume: tickets updated in the last 7 days (the update index), counted by creation.
    let tz = jiff::tz::TimeZone::get(&config.desk.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    let midnight = now.to_zoned(tz).start_of_day().map(|z| z.timestamp()).unwrap_or(now);
    let week = Timestamp::from_second(now.as_second() - 7 * 86400).unwrap_or(now);
    let recent = TicketFilter {
        updated_since: Some(week),
        ..Default::default()
    };
    let mut created = (0, 0);
    d.partial |= each_listed(store, &recent, 10 * DASHBOARD_READ, |t| {
        created.1 += u64::from(t.created_at >= week);
        created.0 += u64::from(t.created_at >= midnight);
    })?;
    d.created = created;
    for agent in &config.agents {
        let mine: Vec<Ticket> = open
            .iter()
            .filter(|t| t.assignee.as_deref() == Some(agent.name.as_str()))
            .cloned()
            .collect();
        d.agents.push((agent.name.clone(), mine));
    }
    Ok(d)
}

/// One day of [`Trends`]: the day (`MM-DD`), the median business seconds
/// to first response and to resolution of the tickets that got them that
/// day, and the mean rating of that day's surveys.
pub type TrendDay = (String, Option<f64>, Option<f64>, Option<f64>);

/// The day's first responses, resolutions and ratings, gathered.
type DayValues = (Vec<f64>, Vec<f64>, Vec<f64>);

/// The dashboard's charts over the last 30 days, by the desk's days.
#[derive(Clone, Debug, Default)]
pub struct Trends {
    /// One entry a day, oldest first: the day, the median business seconds
    /// (each ticket's SLA calendar, 24x7 without one) to first response and to resolution of the tickets that got
    /// them that day, and the mean rating of that day's surveys.
    pub days: Vec<TrendDay>,
    /// Open tickets by age: `< 1 day`, `1-3 days`, `3-7 days`, `7-30 days`, `> 30 days`.
    pub backlog: Vec<(&'static str, u64)>,
    /// Whether more tickets were updated in the period than were read.
    pub partial: bool,
}

/// Most tickets [`trends`] reads.
pub const TRENDS_READ: usize = 50_000;

/// Reads the tickets updated in the last 30 days (the update index) and the
/// open ones (the status index) for the dashboard's charts.
pub fn trends(
    store: &dyn Store,
    config: &crate::core::settings::Settings,
    now: Timestamp,
) -> Result<Trends, StoreError> {
    let tz = jiff::tz::TimeZone::get(&config.desk.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    let day_of = |t: Timestamp| t.to_zoned(tz.clone()).date();
    let today = day_of(now);
    let first = today.checked_sub(jiff::Span::new().days(29)).unwrap_or(today);
    let since = first.to_zoned(tz.clone()).map(|z| z.timestamp()).unwrap_or(now);
    let mut per_day: std::collections::BTreeMap<jiff::civil::Date, DayValues> = Default::default();
    for day in first.series(jiff::Span::new().days(1)).take_while(|d| *d <= today) {
        per_day.insert(day, Default::default());
    }
    let mut out = Trends::default();
    let filter = TicketFilter {
        updated_since: Some(since),
        ..Default::default()
    };
    out.partial |= each_listed(store, &filter, TRENDS_READ, |t| {
        // Business time, as the reports count it: the ticket's SLA calendar.
        let calendar = config.policy_calendar(t.sla.policy.as_deref());
        let business = |at: Timestamp| calendar.between(t.created_at, at).as_secs() as f64;
        if let Some(at) = t.first_response_at
            && let Some(day) = per_day.get_mut(&day_of(at))
        {
            day.0.push(business(at));
        }
        if let Some(at) = t.resolved_at
            && let Some(day) = per_day.get_mut(&day_of(at))
        {
            day.1.push(business(at));
            if let Some(r) = t.csat {
                day.2.push(f64::from(r));
            }
        }
    })?;
    let median = |v: &mut Vec<f64>| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Some(v[v.len() / 2])
    };
    out.days = per_day
        .into_iter()
        .map(|(day, (mut fr, mut res, csat))| {
            let mean = (!csat.is_empty()).then(|| csat.iter().sum::<f64>() / csat.len() as f64);
            (
                day.strftime("%m-%d").to_string(),
                median(&mut fr),
                median(&mut res),
                mean,
            )
        })
        .collect();
    let mut buckets = [0u64; 5];
    out.partial |= each_open(store, TRENDS_READ, |t| {
        let days = (now.as_second() - t.created_at.as_second()) / 86400;
        buckets[match days {
            ..1 => 0,
            1..3 => 1,
            3..7 => 2,
            7..30 => 3,
            _ => 4,
        }] += 1;
    })?;
    out.backlog = ["< 1 day", "1-3 days", "3-7 days", "7-30 days", "> 30 days"]
        .into_iter()
        .zip(buckets)
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::store::Change;
    use crate::core::model::{Event, Mailbox, Status, Ticket, TicketId};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Ticket `id`, opened at `created`.
    fn ticket(id: u64, created: &str) -> Ticket {
        Ticket::new(
            TicketId(id),
            "Question",
            Mailbox::new(None, "bob@customer.test"),
            "support",
            "general",
            at(created),
        )
    }

    #[test]
    fn chart_medians_count_business_time_by_the_ticket_s_calendar() {
        let config = crate::adapters::config::test_config(
            r#"
[calendar.office]
hours = { mon = "09:00-17:00", tue = "09:00-17:00", wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00" }
[sla.office]
priority = "normal"
calendar = "office"
first_response = "4h"
"#,
        );
        let dir = std::env::temp_dir().join(format!("postdesk-view-{}", std::process::id()));
        let store = crate::adapters::store::open(&dir, &config.store).unwrap();
        // Friday 16:00 to Monday 10:00: 66 hours on the clock, 2 office hours.
        let mut change = Change::default();
        for (id, policy) in [(1, Some("office")), (2, None)] {
            let mut t = ticket(id, "2026-11-27T16:00:00Z");
            t.sla.policy = policy.map(str::to_string);
            t.first_response_at = Some(at("2026-11-30T10:00:00Z"));
            t.updated_at = at("2026-11-30T10:00:00Z");
            change.ticket(&t);
        }
        store.commit(change).unwrap();
        let read = trends(&*store, &config.settings, at("2026-12-01T12:00:00Z")).unwrap();
        let monday = read.days.iter().find(|d| d.0 == "11-30").unwrap();
        // The two tickets' medians: 2 h (office) and 66 h (24x7); the upper one of two.
        assert_eq!(monday.1, Some(66.0 * 3600.0));
        let mut one = Change::default();
        let mut t = store.ticket(TicketId(2)).unwrap().unwrap();
        t.sla.policy = Some("office".into());
        one.ticket(&t);
        store.commit(one).unwrap();
        let read = trends(&*store, &config.settings, at("2026-12-01T12:00:00Z")).unwrap();
        let monday = read.days.iter().find(|d| d.0 == "11-30").unwrap();
        assert_eq!(monday.1, Some(2.0 * 3600.0));
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn report_tickets_leave_out_those_created_after_the_period_and_only_those() {
        let dir = std::env::temp_dir().join(format!("postdesk-view-report-{}", std::process::id()));
        let store = crate::adapters::store::open(&dir, &Default::default()).unwrap();
        let mut change = Change::default();
        // 1 and 2 in September (2 resolved then), 3 in October, 4 in November; all but 2 open.
        for (id, created, resolved) in [
            (1, "2026-09-10T10:00:00Z", None),
            (2, "2026-09-11T10:00:00Z", Some("2026-09-12T10:00:00Z")),
            (3, "2026-10-10T10:00:00Z", None),
            (4, "2026-11-10T10:00:00Z", None),
        ] {
            let mut t = ticket(id, created);
            change.event(t.id, &Event::new(at(created), "created", "system", &[]));
            if let Some(r) = resolved {
                t.status = Status::Closed;
                change.event(t.id, &Event::new(at(r), "status", "system", &[]));
            }
            change.ticket(&t);
        }
        store.commit(change).unwrap();
        let ids = |since: &str, until: &str| -> Vec<(u64, bool)> {
            store
                .report_tickets(Some(at(since)), at(until))
                .unwrap()
                .into_iter()
                .map(|t| (t.id.0, t.quiet))
                .collect()
        };
        // October: the open September ticket (quiet: nothing happened to it
        // since) and October's; not November's, not the closed one.
        assert_eq!(
            ids("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z"),
            [(1, true), (3, false)]
        );
        // September: both of September's.
        assert_eq!(
            ids("2026-09-01T00:00:00Z", "2026-10-01T00:00:00Z"),
            [(1, false), (2, false)]
        );
        // A period past the last activity: every candidate.
        assert_eq!(
            ids("2026-10-01T00:00:00Z", "2026-12-01T00:00:00Z"),
            [(1, true), (3, false), (4, false)]
        );
        // From the day of ticket 3's creation (the day counts): 3 is not quiet.
        assert_eq!(
            ids("2026-10-10T12:00:00Z", "2026-12-01T00:00:00Z"),
            [(1, true), (3, false), (4, false)]
        );
        // Without a start, every ticket, none quiet.
        let all: Vec<(u64, bool)> = store
            .report_tickets(None, at("2026-12-01T00:00:00Z"))
            .unwrap()
            .into_iter()
            .map(|t| (t.id.0, t.quiet))
            .collect();
        assert_eq!(all, [(1, false), (2, false), (3, false), (4, false)]);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
