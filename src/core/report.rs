//! `postdesk report`: helpdesk metrics over a period, computed from each
//! ticket's event log (so a metric added later covers old tickets too). Pure.

use crate::core::model::{Event, Status, Ticket, TicketId};
use crate::core::settings::Settings;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A ticket with its event log.
#[derive(Clone, Debug)]
pub struct History {
    /// The ticket as it is now (what a report reads of it).
    pub ticket: Facts,
    /// Its events, in order.
    pub events: Vec<Event>,
}

/// What a report reads of a ticket's record: the fields its figures and
/// groups use. Read from a stored [`Ticket`]'s own serialization (the other
/// fields skipped, so a report decodes less), or made from a ticket.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Facts {
    /// The ticket number.
    pub id: TicketId,
    /// Its status now.
    pub status: Status,
    /// Its queue now.
    pub queue: String,
    /// Its type now.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Its tags now.
    pub tags: Vec<String>,
    /// Its assignee now.
    pub assignee: Option<String>,
    /// How it came in.
    pub channel: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// The policy and deadlines in force now.
    pub sla: FactsSla,
    /// The intent the model read in its first mail.
    #[serde(default)]
    pub intent: Option<FactsIntent>,
    /// The ticket it was merged into.
    #[serde(default)]
    pub merged_into: Option<TicketId>,
}

/// What a report reads of a ticket's SLA.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct FactsSla {
    /// The policy in force.
    pub policy: Option<String>,
    /// The first-response deadline.
    pub first_response_due: Option<Timestamp>,
    /// The resolution deadline.
    pub resolution_due: Option<Timestamp>,
}

/// What a report reads of a ticket's intent: its label.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct FactsIntent {
    /// The predicted label.
    pub label: String,
}

impl From<&Ticket> for Facts {
    fn from(t: &Ticket) -> Facts {
        Facts {
            id: t.id,
            status: t.status,
            queue: t.queue.clone(),
            kind: t.kind.clone(),
            tags: t.tags.clone(),
            assignee: t.assignee.clone(),
            channel: t.channel.clone(),
            created_at: t.created_at,
            sla: FactsSla {
                policy: t.sla.policy.clone(),
                first_response_due: t.sla.first_response_due,
                resolution_due: t.sla.resolution_due,
            },
            intent: t.intent.as_ref().map(|i| FactsIntent { label: i.label.clone() }),
            merged_into: t.merged_into,
        }
    }
}

/// Median and 90th percentile of durations, elapsed and in business time.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Durations {
    /// How many durations.
    pub count: usize,
    /// Median, minutes of wall time.
    pub median_minutes: Option<f64>,
    /// 90th percentile, minutes of wall time.
    pub p90_minutes: Option<f64>,
    /// Median, minutes of business time (the ticket's SLA calendar, else 24x7).
    pub median_business_minutes: Option<f64>,
    /// 90th percentile, minutes of business time.
    pub p90_business_minutes: Option<f64>,
}

/// The metrics of one group of tickets.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Tickets created in the period.
    pub volume: usize,
    /// Tickets open (new, open, pending) at the end of the period.
    pub backlog: usize,
    /// Median age in hours of the backlog at the end of the period.
    pub backlog_median_age_hours: Option<f64>,
    /// First response times of first responses in the period.
    pub first_response: Durations,
    /// Creation to resolution, for tickets resolved in the period (each by its
    /// latest resolution in it; closing without resolving does not count).
    pub resolution: Durations,
    /// Share of tickets resolved in the period with exactly one public agent
    /// reply and not reopened before the period's end (one-touch).
    pub first_contact_resolution_rate: Option<f64>,
    /// Share of tickets resolved in the period that were reopened after that
    /// resolution and before the period's end.
    pub reopen_rate: Option<f64>,
    /// Share of first responses in the period that met their SLA target.
    pub sla_first_response_compliance: Option<f64>,
    /// Share of resolutions in the period that met their SLA target.
    pub sla_resolution_compliance: Option<f64>,
    /// Average satisfaction rating given in the period.
    pub csat_average: Option<f64>,
    /// Ratings given in the period.
    pub csat_responses: usize,
    /// Ratings per survey sent in the period.
    pub csat_response_rate: Option<f64>,
    /// Average hours a ticket of the group spent in each status within the period.
    pub hours_in_status: BTreeMap<String, f64>,
    /// Tickets whose acknowledgement suggested knowledge-base articles in the period.
    pub suggested: usize,
    /// Tickets the customer resolved in the period by replying `solved` to the suggestions.
    pub deflected: usize,
    /// Deflected per suggested.
    pub deflection_rate: Option<f64>,
    /// Average sentiment (−1 … 1) of the customer messages received in the period.
    pub sentiment_average: Option<f64>,
    /// Customer messages in the period that read upset (sentiment −0.5 or below).
    pub upset_messages: usize,
}

/// One agent's load and output.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AgentStats {
    /// Tickets assigned and open at the end of the period.
    pub open_assigned: usize,
    /// Public replies in the period.
    pub replies: usize,
    /// Tickets the agent resolved in the period.
    pub resolved: usize,
}

/// The whole report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Start of the period (inclusive).
    pub since: Option<Timestamp>,
    /// End of the period (exclusive).
    pub until: Timestamp,
    /// Every ticket.
    pub overall: Stats,
    /// By queue.
    pub by_queue: BTreeMap<String, Stats>,
    /// By type (`-` for none).
    pub by_type: BTreeMap<String, Stats>,
    /// By tag.
    pub by_tag: BTreeMap<String, Stats>,
    /// By channel.
    pub by_channel: BTreeMap<String, Stats>,
    /// By predicted intent (tickets opened while an intent model was trained).
    pub by_intent: BTreeMap<String, Stats>,
    /// By assignee (`-` for unassigned).
    pub by_assignee: BTreeMap<String, Stats>,
    /// Per agent.
    pub agents: BTreeMap<String, AgentStats>,
}

fn in_period(t: Timestamp, since: Option<Timestamp>, until: Timestamp) -> bool {
    since.is_none_or(|s| t >= s) && t < until
}

/// The median of sorted values: the middle one, or the mean of the two middle ones.
fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The nearest-rank percentile of sorted values: the smallest value with at
/// least `p` of them at or below it (the `ceil(p·n)`-th).
fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn durations(pairs: Vec<(f64, f64)>) -> Durations {
    let mut wall: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let mut business: Vec<f64> = pairs.iter().map(|p| p.1).collect();
    wall.sort_by(|a, b| a.total_cmp(b));
    business.sort_by(|a, b| a.total_cmp(b));
    Durations {
        count: wall.len(),
        median_minutes: median(&wall),
        p90_minutes: nearest_rank(&wall, 0.9),
        median_business_minutes: median(&business),
        p90_business_minutes: nearest_rank(&business, 0.9),
    }
}

fn ratio(n: usize, d: usize) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

/// The status a ticket had at each change: `(from, status)` pairs, from creation.
fn status_timeline(h: &History) -> Vec<(Timestamp, Status)> {
    let mut out = vec![(h.ticket.created_at, Status::New)];
    for e in &h.events {
        if e.kind == "status"
            && let Some(to) = e.detail.get("to").and_then(|v| v.as_str()).and_then(Status::parse)
        {
            out.push((e.at, to));
        }
    }
    out
}

fn status_at(h: &History, t: Timestamp) -> Option<Status> {
    if h.ticket.created_at >= t {
        return None;
    }
    status_timeline(h)
        .into_iter()
        .take_while(|(at, _)| *at < t)
        .last()
        .map(|(_, s)| s)
}

/// The deadline recorded on the event that met or missed it (events written
/// before deadlines were recorded fall back to the ticket's current one).
fn due_on(e: &Event, current: Option<Timestamp>) -> Option<Timestamp> {
    match e.detail.get("due") {
        // Recorded: that deadline, or none (no target was in force then).
        Some(v) => v.as_str().and_then(|s| s.parse().ok()),
        None => current,
    }
}

fn first_event<'a>(h: &'a History, kind: &str) -> Option<&'a Event> {
    h.events.iter().find(|e| e.kind == kind)
}

/// What one ticket adds to the figures of every group it belongs to.
#[derive(Clone, Debug, Default)]
struct Contribution {
    volume: bool,
    backlog_age_hours: Option<f64>,
    /// (wall, business) minutes, and whether its SLA target was met (when one was in force).
    first_response: Option<((f64, f64), Option<bool>)>,
    resolution: Option<((f64, f64), Option<bool>)>,
    one_touch: bool,
    reopened: bool,
    surveys: usize,
    ratings: usize,
    rating_sum: u64,
    hours_in_status: Vec<(Status, f64)>,
    suggested: bool,
    deflected: bool,
    sentiments: Vec<f64>,
}

fn contribution(h: &History, config: &Settings, since: Option<Timestamp>, until: Timestamp) -> Contribution {
    let mut c = Contribution::default();
    let minutes = |a: Timestamp, b: Timestamp| (b.as_second() - a.as_second()) as f64 / 60.0;
    // Business time with the calendar in force in each part of the interval:
    // the SLA policy changes (`sla_policy` events) split it.
    let business = |a: Timestamp, b: Timestamp| {
        let calendar_of = |policy: Option<&str>| config.policy_calendar(policy);
        let changes: Vec<(Timestamp, Option<&str>)> = h
            .events
            .iter()
            .filter(|e| e.kind == "sla_policy")
            .map(|e| (e.at, e.detail.get("to").and_then(|v| v.as_str())))
            .collect();
        if changes.is_empty() {
            return calendar_of(h.ticket.sla.policy.as_deref()).between(a, b).as_secs() as f64 / 60.0;
        }
        let in_force = |t: Timestamp| changes.iter().rev().find(|(at, _)| *at <= t).and_then(|(_, p)| *p);
        let mut total = 0u64;
        let mut start = a;
        for &(at, _) in changes.iter().filter(|(at, _)| *at > a && *at < b) {
            total += calendar_of(in_force(start)).between(start, at).as_secs();
            start = at;
        }
        total += calendar_of(in_force(start)).between(start, b).as_secs();
        total as f64 / 60.0
    };
    let t = &h.ticket;
    c.volume = in_period(t.created_at, since, until);
    if matches!(status_at(h, until), Some(Status::New | Status::Open | Status::Pending)) {
        c.backlog_age_hours = Some((until.as_second() - t.created_at.as_second()) as f64 / 3600.0);
    }
    if let Some(e) = first_event(h, "first_response")
        && in_period(e.at, since, until)
    {
        let met = due_on(e, t.sla.first_response_due).map(|due| e.at <= due);
        c.first_response = Some(((minutes(t.created_at, e.at), business(t.created_at, e.at)), met));
    }
    // A resolution is a change to `resolved` (closing without one, for
    // no answer or as spam, is not); each counts in the period it
    // happened, a ticket once per period, by its latest resolution there.
    let resolved_in_period = h.events.iter().rev().find(|e| {
        e.kind == "status"
            && e.detail.get("to").and_then(|v| v.as_str()) == Some("resolved")
            && in_period(e.at, since, until)
    });
    if let Some(e) = resolved_in_period {
        let met = due_on(e, t.sla.resolution_due).map(|due| e.at <= due);
        c.resolution = Some(((minutes(t.created_at, e.at), business(t.created_at, e.at)), met));
        let replies_before = h.events.iter().filter(|x| x.kind == "relayed" && x.at <= e.at).count();
        // Reopens before the period's end (so a past period's figures never change).
        let reopens: Vec<Timestamp> = h
            .events
            .iter()
            .filter(|x| {
                x.at < until
                    && x.kind == "status"
                    && x.detail.get("from").and_then(|v| v.as_str()) == Some("resolved")
                    && matches!(
                        x.detail.get("to").and_then(|v| v.as_str()),
                        Some("open" | "new" | "pending")
                    )
            })
            .map(|x| x.at)
            .collect();
        c.reopened = reopens.iter().any(|at| *at > e.at);
        // One-touch: exactly one public agent reply, never reopened.
        c.one_touch = replies_before == 1 && reopens.is_empty();
    }
    for e in &h.events {
        if !in_period(e.at, since, until) {
            continue;
        }
        if e.kind == "survey_sent" {
            c.surveys += 1;
        }
        c.suggested |= e.kind == "suggested";
        c.deflected |= e.kind == "deflected";
        if e.kind == "message"
            && e.detail.get("message_kind").and_then(|v| v.as_str()) == Some("customer")
            && let Some(v) = e.detail.get("sentiment").and_then(|v| v.as_f64())
        {
            c.sentiments.push(v);
        }
        if e.kind == "csat"
            && let Some(n) = e.detail.get("rating").and_then(|v| v.as_u64())
        {
            c.ratings += 1;
            c.rating_sum += n;
        }
    }
    // Time in each status, clipped to the period.
    let timeline = status_timeline(h);
    for (i, (from, status)) in timeline.iter().enumerate() {
        let to = timeline.get(i + 1).map(|x| x.0).unwrap_or(until).min(until);
        let from = since.map_or(*from, |s| (*from).max(s));
        if to > from {
            c.hours_in_status
                .push((*status, (to.as_second() - from.as_second()) as f64 / 3600.0));
        }
    }
    c
}

/// The running figures of one group: counts and the durations the medians
/// need, never the tickets themselves.
#[derive(Clone, Debug, Default)]
struct Acc {
    tickets: usize,
    volume: usize,
    ages: Vec<f64>,
    first: Vec<(f64, f64)>,
    resolution: Vec<(f64, f64)>,
    fcr: usize,
    reopened: usize,
    fr: (usize, usize),
    res: (usize, usize),
    surveys: usize,
    ratings: usize,
    rating_sum: u64,
    in_status: BTreeMap<&'static str, f64>,
    suggested: usize,
    deflected: usize,
    sentiment_sum: f64,
    sentiment_count: usize,
    upset: usize,
}

impl Acc {
    fn add(&mut self, c: &Contribution) {
        self.tickets += 1;
        self.volume += usize::from(c.volume);
        self.ages.extend(c.backlog_age_hours);
        if let Some((pair, met)) = c.first_response {
            self.first.push(pair);
            if let Some(met) = met {
                self.fr.0 += 1;
                self.fr.1 += usize::from(met);
            }
        }
        if let Some((pair, met)) = c.resolution {
            self.resolution.push(pair);
            self.reopened += usize::from(c.reopened);
            self.fcr += usize::from(c.one_touch);
            if let Some(met) = met {
                self.res.0 += 1;
                self.res.1 += usize::from(met);
            }
        }
        self.surveys += c.surveys;
        self.ratings += c.ratings;
        self.rating_sum += c.rating_sum;
        self.suggested += usize::from(c.suggested);
        self.deflected += usize::from(c.deflected);
        self.sentiment_sum += c.sentiments.iter().sum::<f64>();
        self.sentiment_count += c.sentiments.len();
        self.upset += c.sentiments.iter().filter(|v| **v <= -0.5).count();
        for (status, hours) in &c.hours_in_status {
            *self.in_status.entry(status.as_str()).or_insert(0.0) += hours;
        }
    }

    fn finish(mut self) -> Stats {
        self.ages.sort_by(|a, b| a.total_cmp(b));
        let resolved = self.resolution.len();
        let n = self.tickets.max(1) as f64;
        Stats {
            volume: self.volume,
            backlog: self.ages.len(),
            backlog_median_age_hours: median(&self.ages),
            first_response: durations(self.first),
            resolution: durations(self.resolution),
            first_contact_resolution_rate: ratio(self.fcr, resolved),
            reopen_rate: ratio(self.reopened, resolved),
            sla_first_response_compliance: ratio(self.fr.1, self.fr.0),
            sla_resolution_compliance: ratio(self.res.1, self.res.0),
            csat_responses: self.ratings,
            csat_average: (self.ratings > 0).then(|| self.rating_sum as f64 / self.ratings as f64),
            csat_response_rate: ratio(self.ratings, self.surveys),
            hours_in_status: self
                .in_status
                .into_iter()
                .map(|(k, v)| (k.to_string(), (v / n * 100.0).round() / 100.0))
                .collect(),
            suggested: self.suggested,
            deflected: self.deflected,
            deflection_rate: ratio(self.deflected, self.suggested),
            sentiment_average: (self.sentiment_count > 0)
                .then(|| (self.sentiment_sum / self.sentiment_count as f64 * 100.0).round() / 100.0),
            upset_messages: self.upset,
        }
    }
}

/// A ticket's queue, type, tags and assignee as they were at a moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Fields {
    queue: String,
    kind: Option<String>,
    tags: Vec<String>,
    assignee: Option<String>,
}

impl Fields {
    /// The fields a ticket's record has now.
    fn now(t: &Facts) -> Fields {
        Fields {
            queue: t.queue.clone(),
            kind: t.kind.clone(),
            tags: t.tags.clone(),
            assignee: t.assignee.clone(),
        }
    }

    /// Adds a tag it does not have yet.
    fn tag(&mut self, tag: &str) {
        if !self.tags.iter().any(|t| t == tag) {
            self.tags.push(tag.to_string());
        }
    }
}

/// The fields at `at`, replayed from the event log, so that a change after a
/// period's end (a reassignment, a queue move) never changes its report.
///
/// A merge logged before 2026-12-07 did not list the tags it brought. Such a
/// ticket's record has tags its log never adds: they count from that merge on.
fn fields_at(h: &History, at: Timestamp) -> Fields {
    let Some((mut f, unlisted)) = replay(h, at) else {
        // A history without its creation event: the fields as they are now.
        return Fields::now(&h.ticket);
    };
    if unlisted && let Some((all, _)) = replay(h, Timestamp::MAX) {
        for t in h.ticket.tags.iter().filter(|t| !all.tags.contains(t)) {
            f.tag(t);
        }
    }
    f
}

/// The fields the events before `at` make, and whether a merge among them
/// did not list its tags; `None` without the creation event.
fn replay(h: &History, at: Timestamp) -> Option<(Fields, bool)> {
    let text = |e: &Event, k: &str| e.detail.get(k).and_then(|v| v.as_str()).map(String::from);
    let mut f = Fields {
        queue: h.ticket.queue.clone(),
        ..Fields::default()
    };
    let mut seen_created = false;
    let mut unlisted = false;
    for e in h.events.iter().filter(|e| e.at < at) {
        match e.kind.as_str() {
            "created" => {
                seen_created = true;
                if let Some(q) = text(e, "queue") {
                    f.queue = q;
                }
            }
            "routed" => {
                if let Some(q) = text(e, "queue") {
                    f.queue = q;
                }
                f.kind = text(e, "type");
                if let Some(tags) = e.detail.get("tags").and_then(|v| v.as_array()) {
                    f.tags = tags.iter().filter_map(|t| t.as_str().map(String::from)).collect();
                }
            }
            "queue" => f.queue = text(e, "to").unwrap_or(f.queue),
            "type" => f.kind = text(e, "to"),
            "tag" => {
                if let Some(t) = e.detail.get("tag").and_then(|v| v.as_str()) {
                    f.tag(t);
                }
            }
            "untag" => {
                let t = text(e, "tag");
                f.tags.retain(|x| Some(x) != t.as_ref());
            }
            "assigned" => f.assignee = text(e, "to"),
            // A merge brings the other ticket's tags.
            "merged" => match e.detail.get("tags_added") {
                Some(added) => added
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str())
                    .for_each(|t| f.tag(t)),
                None => unlisted = true,
            },
            _ => {}
        }
    }
    seen_created.then_some((f, unlisted))
}

/// Whether a ticket created at `created` can count at all in a report
/// ending at `until`: it was created before the period's end.
pub fn counts_at_all(created: Timestamp, until: Timestamp) -> bool {
    created < until
}

/// A report over `[since, until)` built one ticket at a time: each history is
/// folded into the running figures and dropped, so memory holds numbers,
/// never the period's tickets.
#[derive(Debug)]
pub struct ReportBuilder<'a> {
    config: &'a Settings,
    since: Option<Timestamp>,
    until: Timestamp,
    overall: Acc,
    by_queue: BTreeMap<String, Acc>,
    by_type: BTreeMap<String, Acc>,
    by_tag: BTreeMap<String, Acc>,
    by_channel: BTreeMap<String, Acc>,
    by_intent: BTreeMap<String, Acc>,
    by_assignee: BTreeMap<String, Acc>,
    agents: BTreeMap<String, AgentStats>,
}

impl<'a> ReportBuilder<'a> {
    /// An empty report over `[since, until)`.
    pub fn new(config: &'a Settings, since: Option<Timestamp>, until: Timestamp) -> ReportBuilder<'a> {
        ReportBuilder {
            config,
            since,
            until,
            overall: Acc::default(),
            by_queue: BTreeMap::new(),
            by_type: BTreeMap::new(),
            by_tag: BTreeMap::new(),
            by_channel: BTreeMap::new(),
            by_intent: BTreeMap::new(),
            by_assignee: BTreeMap::new(),
            agents: config
                .agents
                .iter()
                .map(|a| (a.name.clone(), AgentStats::default()))
                .collect(),
        }
    }

    /// Folds one ticket's history in (each ticket once).
    pub fn add(&mut self, h: &History) {
        let (config, since, until) = (self.config, self.since, self.until);
        if !counts_at_all(h.ticket.created_at, until) {
            return;
        }
        // The ticket's fields at the period's end, replayed from its log.
        let f = fields_at(h, until);
        let c = contribution(h, config, since, until);
        self.fold(&h.ticket, &f, &c);
        for e in h.events.iter().filter(|e| in_period(e.at, since, until)) {
            if e.kind == "relayed" {
                self.agents.entry(e.actor.clone()).or_default().replies += 1;
            }
            if e.kind == "status"
                && e.detail.get("to").and_then(|v| v.as_str()) == Some("resolved")
                && config.agent_by_name_or_email(&e.actor).is_some()
            {
                self.agents.entry(e.actor.clone()).or_default().resolved += 1;
            }
        }
    }

    /// Folds in a ticket with no event from the period's start on, by its
    /// record alone (each ticket once): as nothing happened to it since, its
    /// status and fields through the period are those it has now (the record
    /// is what its events made it). The same figures as [`add`](Self::add)
    /// with its history, without reading that history.
    pub fn add_quiet(&mut self, t: &Facts) {
        let (since, until) = (self.since, self.until);
        if !counts_at_all(t.created_at, until) {
            return;
        }
        let f = Fields::now(t);
        let mut c = Contribution {
            volume: in_period(t.created_at, since, until),
            ..Contribution::default()
        };
        if matches!(t.status, Status::New | Status::Open | Status::Pending) {
            c.backlog_age_hours = Some((until.as_second() - t.created_at.as_second()) as f64 / 3600.0);
        }
        // One status through the period (from its creation, if later).
        let from = since.map_or(t.created_at, |s| s.max(t.created_at));
        if until > from {
            c.hours_in_status
                .push((t.status, (until.as_second() - from.as_second()) as f64 / 3600.0));
        }
        self.fold(t, &f, &c);
    }

    /// Adds a ticket's contribution to every group it belongs to by `f`, its
    /// fields at the period's end.
    fn fold(&mut self, t: &Facts, f: &Fields, c: &Contribution) {
        self.overall.add(c);
        self.by_queue.entry(f.queue.clone()).or_default().add(c);
        self.by_type
            .entry(f.kind.clone().unwrap_or_else(|| "-".into()))
            .or_default()
            .add(c);
        for tag in &f.tags {
            self.by_tag.entry(tag.clone()).or_default().add(c);
        }
        self.by_channel.entry(t.channel.clone()).or_default().add(c);
        if let Some(i) = &t.intent {
            self.by_intent.entry(i.label.clone()).or_default().add(c);
        }
        self.by_assignee
            .entry(f.assignee.clone().unwrap_or_else(|| "-".into()))
            .or_default()
            .add(c);
        if let Some(a) = &f.assignee
            && c.backlog_age_hours.is_some()
        {
            self.agents.entry(a.clone()).or_default().open_assigned += 1;
        }
    }

    /// The finished report.
    pub fn finish(self) -> Report {
        let done = |m: BTreeMap<String, Acc>| m.into_iter().map(|(k, a)| (k, a.finish())).collect();
        Report {
            since: self.since,
            until: self.until,
            overall: self.overall.finish(),
            by_queue: done(self.by_queue),
            by_type: done(self.by_type),
            by_tag: done(self.by_tag),
            by_channel: done(self.by_channel),
            by_intent: done(self.by_intent),
            by_assignee: done(self.by_assignee),
            agents: self.agents,
        }
    }
}

/// Computes the report over `[since, until)` from histories in memory.
pub fn report(histories: &[History], config: &Settings, since: Option<Timestamp>, until: Timestamp) -> Report {
    let mut b = ReportBuilder::new(config, since, until);
    for h in histories {
        b.add(h);
    }
    b.finish()
}

/// The report as text tables for people.
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let f = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
    let pct = |v: Option<f64>| v.map(|x| format!("{:.0}%", x * 100.0)).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "Period: {} .. {}\n",
        r.since.map(|s| s.to_string()).unwrap_or_else(|| "beginning".into()),
        r.until
    );
    let header = format!(
        "{:<16} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>5} {:>6} {:>6} {:>6} {:>5}",
        "GROUP",
        "VOLUME",
        "BACKLOG",
        "FRT MED",
        "FRT P90",
        "RES MED",
        "RES P90",
        "FCR",
        "REOPEN",
        "SLA FR",
        "SLA RS",
        "CSAT"
    );
    let row = |name: &str, s: &Stats| {
        format!(
            "{:<16} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>5} {:>6} {:>6} {:>6} {:>5}",
            name,
            s.volume,
            s.backlog,
            f(s.first_response.median_minutes),
            f(s.first_response.p90_minutes),
            f(s.resolution.median_minutes),
            f(s.resolution.p90_minutes),
            pct(s.first_contact_resolution_rate),
            pct(s.reopen_rate),
            pct(s.sla_first_response_compliance),
            pct(s.sla_resolution_compliance),
            f(s.csat_average)
        )
    };
    let _ = writeln!(out, "{header}   (times in minutes)");
    let _ = writeln!(out, "{}", row("all", &r.overall));
    for (title, map) in [
        ("queue", &r.by_queue),
        ("type", &r.by_type),
        ("tag", &r.by_tag),
        ("channel", &r.by_channel),
        ("intent", &r.by_intent),
        ("assignee", &r.by_assignee),
    ] {
        for (k, s) in map {
            let _ = writeln!(out, "{}", row(&format!("{title}:{k}"), s));
        }
    }
    let _ = writeln!(
        out,
        "\n{:<20} {:>13} {:>8} {:>9}",
        "AGENT", "OPEN ASSIGNED", "REPLIES", "RESOLVED"
    );
    for (name, a) in &r.agents {
        let _ = writeln!(
            out,
            "{:<20} {:>13} {:>8} {:>9}",
            name, a.open_assigned, a.replies, a.resolved
        );
    }
    let _ = writeln!(
        out,
        "\nHours in each status (average per ticket): {:?}",
        r.overall.hours_in_status
    );
    if r.overall.suggested > 0 {
        let _ = writeln!(
            out,
            "Self-service: {} ticket(s) offered articles, {} solved by them ({})",
            r.overall.suggested,
            r.overall.deflected,
            pct(r.overall.deflection_rate)
        );
    }
    out
}

#[cfg(test)]
mod percentile_tests {
    use super::{median, nearest_rank};

    #[test]
    fn median_and_p90_on_even_and_odd_counts() {
        let table: [(&[f64], Option<f64>, Option<f64>); 6] = [
            (&[], None, None),
            (&[7.0], Some(7.0), Some(7.0)),
            (&[60.0, 70.0], Some(65.0), Some(70.0)),
            (&[10.0, 20.0, 30.0], Some(20.0), Some(30.0)),
            (
                &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
                Some(5.5),
                Some(9.0),
            ),
            (
                &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0],
                Some(6.0),
                Some(10.0),
            ),
        ];
        for (values, m, p90) in table {
            assert_eq!((median(values), nearest_rank(values, 0.9)), (m, p90), "{values:?}");
        }
    }
}

#[cfg(test)]
mod quiet_tests {
    use super::{Facts, History, ReportBuilder};
    use crate::core::model::{Event, Mailbox, Status, Ticket, TicketId};
    use jiff::{SignedDuration, Timestamp};
    use serde_json::json;

    /// A ticket whose record is what its events made it, as the pipeline
    /// keeps them: each op (code, argument) changes the record and logs the
    /// event that says so, an hour after the one before.
    fn history(ops: &[(u8, u8)]) -> History {
        let (t, events) = logged(ops);
        History {
            ticket: Facts::from(&t),
            events,
        }
    }

    /// The ticket and its log after `ops`.
    fn logged(ops: &[(u8, u8)]) -> (Ticket, Vec<Event>) {
        let start: Timestamp = "2026-09-01T08:00:00Z".parse().unwrap();
        let mut t = Ticket::new(
            TicketId(7),
            "Question",
            Mailbox::new(None, "c@customer.test"),
            "support",
            "general",
            start,
        );
        let mut events = vec![Event::new(
            start,
            "created",
            "c@customer.test",
            &[("queue", json!("general"))],
        )];
        let names = ["billing", "vip", "alice"];
        for (i, &(op, arg)) in ops.iter().enumerate() {
            let at = start + SignedDuration::from_hours(i as i64 + 1);
            let name = names[arg as usize % names.len()];
            let e = match op % 10 {
                0 => {
                    let to = [Status::Open, Status::Pending, Status::Resolved, Status::Closed][arg as usize % 4];
                    let e = Event::new(
                        at,
                        "status",
                        "alice",
                        &[("from", json!(t.status.as_str())), ("to", json!(to.as_str()))],
                    );
                    t.status = to;
                    e
                }
                1 if t.tag(name) => Event::new(at, "tag", "alice", &[("tag", json!(name))]),
                1 => continue,
                2 => {
                    t.tags.retain(|x| x != name);
                    Event::new(at, "untag", "alice", &[("tag", json!(name))])
                }
                3 => {
                    let e = Event::new(at, "queue", "alice", &[("from", json!(t.queue)), ("to", json!(name))]);
                    t.queue = name.to_string();
                    e
                }
                4 => {
                    t.kind = Some(name.to_string());
                    Event::new(at, "type", "alice", &[("to", json!(name))])
                }
                5 => {
                    t.assignee = Some(name.to_string());
                    Event::new(at, "assigned", "system", &[("to", json!(name))])
                }
                6 => {
                    t.queue = name.to_string();
                    t.kind = Some(name.to_string());
                    t.tag(name);
                    Event::new(
                        at,
                        "routed",
                        "system",
                        &[
                            ("queue", json!(t.queue)),
                            ("type", json!(t.kind)),
                            ("tags", json!(t.tags)),
                        ],
                    )
                }
                7 => {
                    // A merge: the other ticket's tags, those new listed.
                    let added: Vec<&str> = [name, "vip"].into_iter().filter(|x| t.tag(x)).collect();
                    Event::new(at, "merged", "alice", &[("tags_added", json!(added))])
                }
                8 => {
                    // A merge logged before 2026-12-07: tags brought, not listed.
                    t.tag(name);
                    Event::new(at, "merged", "alice", &[("ticket", json!(9))])
                }
                _ => Event::new(at, "relayed", "alice", &[]),
            };
            events.push(e);
        }
        (t, events)
    }

    #[test]
    fn facts_read_from_a_ticket_s_serialization_are_those_made_from_it() {
        let mut t = logged(&[(0, 0), (1, 1), (3, 0), (4, 2), (5, 2)]).0;
        t.sla.policy = Some("office".into());
        t.sla.first_response_due = Some("2026-09-02T08:00:00Z".parse().unwrap());
        t.sla.resolution_due = Some("2026-09-05T08:00:00Z".parse().unwrap());
        t.intent = Some(crate::core::intent::Intent {
            label: "refund".into(),
            confidence: 0.8,
        });
        t.merged_into = Some(TicketId(3));
        t.channel = "web".into();
        let read: Facts = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(read, Facts::from(&t));
        assert_eq!(
            (
                read.status,
                read.queue.as_str(),
                read.kind.as_deref(),
                read.assignee.as_deref()
            ),
            (Status::Open, "billing", Some("alice"), Some("alice"))
        );
        assert_eq!(read.intent.map(|i| i.label), Some("refund".to_string()));
        // A ticket without the optional fields reads as none of them.
        let plain: Facts = serde_json::from_value(serde_json::to_value(logged(&[]).0).unwrap()).unwrap();
        assert_eq!((plain.intent, plain.merged_into, plain.sla.policy), (None, None, None));
    }

    #[test]
    fn tags_a_merge_brought_without_listing_them_count_from_that_merge_on() {
        let config = crate::adapters::config::test_config("");
        // A merge logged before the list (vip, an hour in), then billing tagged (two hours in).
        let h = history(&[(8, 1), (1, 0)]);
        let start = h.ticket.created_at;
        let tags = |mins: i64| {
            let mut b = ReportBuilder::new(&config, Some(start), start + SignedDuration::from_mins(mins));
            b.add(&h);
            b.finish().by_tag.into_keys().collect::<Vec<_>>()
        };
        assert_eq!(tags(30), Vec::<String>::new());
        assert_eq!(tags(90), ["vip"]);
        assert_eq!(tags(180), ["billing", "vip"]);
    }

    proptest::proptest! {
        /// A ticket with no event from the period's start on counts the
        /// same by its record alone as by its whole history.
        #[test]
        fn a_quiet_ticket_counts_by_its_record_as_by_its_history(
            ops in proptest::collection::vec((0u8..10, 0u8..3), 0..12),
            gap in 0i64..48,
            hours in 1i64..800,
        ) {
            let config = crate::adapters::config::test_config("");
            let h = history(&ops);
            let last = h.events.last().unwrap().at;
            let since = last + SignedDuration::from_hours(gap) + SignedDuration::from_secs(1);
            let until = since + SignedDuration::from_hours(hours);
            let (mut full, mut quiet) = (
                ReportBuilder::new(&config, Some(since), until),
                ReportBuilder::new(&config, Some(since), until),
            );
            full.add(&h);
            quiet.add_quiet(&h.ticket);
            proptest::prop_assert_eq!(quiet.finish(), full.finish());
        }
    }
}
