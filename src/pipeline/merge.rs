//! The store side of [`crate::core::merge`]: merges a mail's headers prove,
//! the suggestions when they may not happen by themselves, and agents'
//! `#merge` and `#split`. Every ticket a merge changes is written in the
//! mail's one transaction.

use super::Pipeline;
use crate::adapters::store::{StoreError, resolve};
use crate::core::agent::{agent_mail, may_tell};
use crate::core::merge::{By, Keep, header_merge, merge, named, split};
use crate::core::model::{Event, InboundMessage, Status, Ticket, TicketId};
use crate::core::outgoing::OutgoingMail;
use crate::core::reply::Command;
use crate::core::settings::{Agent, Settings};
use crate::core::ticket::ApplyContext;
use serde_json::json;
use std::collections::HashSet;

/// A ticket besides the mail's own that a merge changed: as read, as it is
/// now, and the events to append to it.
pub(super) struct Other {
    pub before: Ticket,
    pub after: Ticket,
    pub events: Vec<Event>,
}

/// One ticket taking part in a merge by headers.
struct Slot {
    ticket: Ticket,
    /// Its stored events (who touched it).
    stored: Vec<Event>,
    /// Everyone its conversation names, before this mail.
    named: HashSet<String>,
    /// New events.
    events: Vec<Event>,
    /// As read (None: the mail's own ticket, written by the caller).
    before: Option<Ticket>,
}

impl Pipeline {
    /// The tickets other than `target` that the mail's headers tie to (the
    /// tickets of its references, signed or known to the index, and the one
    /// that already referenced its own Message-ID), each as it is now after
    /// merges, oldest first.
    fn header_links(&self, msg: &InboundMessage, target: &Ticket) -> Result<Vec<Ticket>, StoreError> {
        let store = &*self.store;
        let mut ids: Vec<TicketId> = Vec::new();
        for r in msg.referenced_ids() {
            match self.signer.parse_message_id(r) {
                Some(t) => ids.push(t),
                None => ids.extend(store.message_id(r)?.map(|e| e.ticket)),
            }
        }
        if let Some(own) = &msg.message_id
            && let Some(e) = store.message_id(own)?
            && !e.stored
        {
            ids.push(e.ticket);
        }
        let mut out: Vec<Ticket> = Vec::new();
        for id in ids {
            if id == target.id
                || target.merged.contains(&id)
                || out.iter().any(|t| t.id == id || t.merged.contains(&id))
            {
                continue;
            }
            if let Some(t) = resolve(store, id)?
                && t.id != target.id
                && !out.iter().any(|o| o.id == t.id)
            {
                out.push(t);
            }
        }
        out.sort_by_key(|t| t.id);
        Ok(out)
    }

    /// Merges the tickets this (non-agent) mail's headers prove to be one
    /// conversation with its own ticket `target`, into the oldest of them, as
    /// far as [`auto_refusal`] allows; the pairs it refuses are linked and
    /// their agents told how to merge them. `before` is `target` as stored
    /// before the mail (None: the mail created it). Events for `target` go to
    /// `events`, mails to `mails`; the other tickets changed are returned.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn merge_by_headers(
        &self,
        msg: &InboundMessage,
        target: &mut Ticket,
        before: Option<&Ticket>,
        events: &mut Vec<Event>,
        mails: &mut Vec<OutgoingMail>,
        customer_wrote: bool,
        cx: &ApplyContext<'_>,
    ) -> Result<Vec<Other>, StoreError> {
        let links = self.header_links(msg, target)?;
        if links.is_empty() {
            return Ok(Vec::new());
        }
        let store = &*self.store;
        let config: &Settings = &self.config;
        let now = cx.now;
        let mid = msg.message_id.clone().unwrap_or_default();
        let own_named = named(before.unwrap_or(target), &store.messages(target.id)?);
        let mut slots = vec![Slot {
            stored: store.events(target.id)?,
            named: own_named,
            events: Vec::new(),
            before: None,
            ticket: target.clone(),
        }];
        for t in links {
            slots.push(Slot {
                stored: store.events(t.id)?,
                named: named(&t, &store.messages(t.id)?),
                events: Vec::new(),
                before: Some(t.clone()),
                ticket: t,
            });
        }
        slots.sort_by_key(|s| s.ticket.id);
        // The oldest is kept, unless safety keeps a younger one (see header_merge).
        let mut kept = 0;
        let mut notices = 0;
        for i in 1..slots.len() {
            let (k, s) = two(&mut slots, kept, i);
            let (older, younger) = if k.ticket.id < s.ticket.id {
                (&*k, &*s)
            } else {
                (&*s, &*k)
            };
            let verdict = header_merge(
                (&older.ticket, &older.stored, &older.named),
                (&younger.ticket, &younger.stored, &younger.named),
                config,
            );
            let keep_k = match verdict {
                Ok(Keep::Older) => k.ticket.id < s.ticket.id,
                Ok(Keep::Younger) => k.ticket.id > s.ticket.id,
                Err(why) => {
                    notices += self.suggest(k, s, &mid, &why, notices, cx, mails);
                    continue;
                }
            };
            let (into, from) = if keep_k { (k, s) } else { (s, k) };
            let (ei, ef) = merge(
                &mut into.ticket,
                &mut from.ticket,
                &By::Headers(mid.clone()),
                &into.named,
                now,
                config,
            );
            into.events.push(ei);
            from.events.push(ef);
            let people: Vec<String> = from.named.drain().collect();
            into.named.extend(people);
            let mut stored = std::mem::take(&mut from.stored);
            into.stored.append(&mut stored);
            if !keep_k {
                kept = i;
            }
        }
        // The mail's conversation now lives on the kept ticket: its clocks see the customer's mail.
        let target_merged = slots
            .iter()
            .any(|s| s.before.is_none() && s.ticket.merged_into.is_some());
        if target_merged {
            let kept = &mut slots[kept];
            if customer_wrote && kept.ticket.status == Status::Pending {
                kept.events.push(Event::new(
                    now,
                    "status",
                    "system",
                    &[
                        ("from", json!("pending")),
                        ("to", json!("open")),
                        ("reason", json!("customer replied")),
                    ],
                ));
                kept.ticket.status = Status::Open;
            }
            let sla = crate::core::sla::refresh(&mut kept.ticket, config, now, customer_wrote, false);
            kept.events.extend(sla);
        }
        let mut others = Vec::new();
        for s in slots {
            match s.before {
                None => {
                    *target = s.ticket;
                    events.extend(s.events);
                }
                Some(before) if !s.events.is_empty() => others.push(Other {
                    before,
                    after: s.ticket,
                    events: s.events,
                }),
                Some(_) => {}
            }
        }
        Ok(others)
    }

    /// Links two tickets a mail's headers join but that may not merge by
    /// themselves, once, and tells their agents how to merge them (the
    /// younger into the older). Returns how many agents were told.
    #[allow(clippy::too_many_arguments)]
    fn suggest(
        &self,
        x: &mut Slot,
        y: &mut Slot,
        mid: &str,
        why: &str,
        told: u32,
        cx: &ApplyContext<'_>,
        mails: &mut Vec<OutgoingMail>,
    ) -> u32 {
        let config: &Settings = &self.config;
        let now = cx.now;
        let (old, young) = if x.ticket.id < y.ticket.id { (x, y) } else { (y, x) };
        let (a, b) = (old.ticket.id, young.ticket.id);
        // Suggested once: a pair linked both ways was told already.
        if old.ticket.linked.contains(&b) && young.ticket.linked.contains(&a) {
            return 0;
        }
        for (t, other) in [(&mut old.ticket, b), (&mut young.ticket, a)] {
            if !t.linked.contains(&other) {
                t.linked.push(other);
            }
        }
        let detail = |other: TicketId| {
            [
                ("ticket", json!(other.0)),
                ("message_id", json!(mid)),
                ("reason", json!(why)),
            ]
        };
        old.events
            .push(Event::new(now, "merge_suggested", "system", &detail(b)));
        young
            .events
            .push(Event::new(now, "merge_suggested", "system", &detail(a)));
        let body = format!(
            "The mail <{mid}> belongs by its headers to ticket #{a} and to ticket #{b},
but they were not merged: {why}.

Ticket #{a}: {}
Ticket #{b}: {}

To merge #{b} into #{a} (the older one, whose deadlines stay), reply to this
mail with only the line:

#merge {a}

Mail to either number then lands on #{a}; `#split {b}` from #{a} undoes it.",
            old.ticket.subject, young.ticket.subject
        );
        let mut n = 0;
        for agent in merge_audience(&old.ticket, &young.ticket, config) {
            let limit = config.automation.notification_limit_per_hour;
            if cx.sent_to_agent("notification", &agent.emails[0]) + told + n >= limit {
                young.events.push(Event::new(
                    now,
                    "notification_suppressed",
                    "system",
                    &[
                        ("to", json!(agent.emails[0])),
                        (
                            "reason",
                            json!(format!("rate limit: {limit} notifications per hour reached")),
                        ),
                    ],
                ));
                continue;
            }
            let mail = agent_mail(
                &young.ticket,
                agent,
                &config.desk.name,
                &format!("Merge #{b} into #{a}? ({})", young.ticket.subject),
                &body,
                "notification",
                true,
                1012 + (told + n) as usize,
                None,
                &cx.mail(),
            );
            n += 1;
            young.events.push(Event::new(
                now,
                "notified",
                "system",
                &[
                    ("to", json!(mail.recipients())),
                    ("message_id", json!(mail.message_id)),
                    ("reason", json!("merge suggested")),
                ],
            ));
            mails.push(mail);
        }
        n
    }

    /// Runs an agent's `#merge N` (this ticket into N) and `#split N` (ticket
    /// N back out of this one) on `ticket`, after the rest of the reply was
    /// applied. Refusals go to the agent by mail, as other commands' do.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn agent_merges(
        &self,
        requests: &[Command],
        ticket: &mut Ticket,
        events: &mut Vec<Event>,
        mails: &mut Vec<OutgoingMail>,
        agent: &Agent,
        reply_id: Option<&str>,
        cx: &ApplyContext<'_>,
    ) -> Result<Vec<Other>, StoreError> {
        let config: &Settings = &self.config;
        let now = cx.now;
        let mut others: Vec<Other> = Vec::new();
        let mut errors = Vec::new();
        for request in requests {
            let done = match *request {
                Command::Merge(n) => self
                    .merge_into(ticket, n, &agent.name, now)?
                    .map_err(|why| format!("#merge {n}: {why}")),
                Command::Split(n) => self
                    .split_out(ticket, n, &agent.name, now)?
                    .map_err(|why| format!("#split {n}: {why}")),
                _ => continue,
            };
            match done {
                Ok((event, other)) => {
                    events.push(event);
                    others.push(other);
                }
                Err(why) => errors.push(why),
            }
        }
        if !errors.is_empty() {
            events.push(Event::new(
                now,
                "command_refused",
                &agent.name,
                &[("errors", json!(errors))],
            ));
            if may_tell(cx.acks_last_hour, config) {
                let body = format!(
                    "These lines of your reply to ticket #{} were not carried out:\n\n{}\n\nThe rest of your reply was handled as usual.",
                    ticket.id,
                    errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n")
                );
                mails.push(agent_mail(
                    ticket,
                    agent,
                    &config.desk.name,
                    &format!("Commands not carried out ({})", ticket.subject),
                    &body,
                    "command_error",
                    true,
                    1013,
                    reply_id,
                    &cx.mail(),
                ));
            }
        }
        Ok(others)
    }
}

impl Pipeline {
    /// Merges `ticket` into ticket `n` (which is kept, on the older clocks),
    /// as `actor` asks: the event for `ticket` and the other ticket changed,
    /// or why not.
    fn merge_into(
        &self,
        ticket: &mut Ticket,
        n: u64,
        actor: &str,
        now: jiff::Timestamp,
    ) -> Result<Result<(Event, Other), String>, StoreError> {
        if let Some(into) = ticket.merged_into {
            return Ok(Err(format!(
                "ticket {} was merged into ticket {into} already",
                ticket.id
            )));
        }
        let Some(mut into) = resolve(&*self.store, TicketId(n))? else {
            return Ok(Err(format!("there is no ticket {n}")));
        };
        if into.id == ticket.id {
            return Ok(Err(format!("ticket {n} is this ticket (or was merged into it)")));
        }
        if into.status == Status::Closed {
            return Ok(Err(format!(
                "ticket {} is closed (reopen it with #status open first)",
                into.id
            )));
        }
        let before = into.clone();
        let by = By::Agent(actor.to_string());
        let (ei, et) = merge(&mut into, ticket, &by, &HashSet::new(), now, &self.config);
        Ok(Ok((
            et,
            Other {
                before,
                after: into,
                events: vec![ei],
            },
        )))
    }

    /// Splits ticket `n` back out of `ticket`, as `actor` asks: the event for
    /// `ticket` and the part given back, or why not.
    fn split_out(
        &self,
        ticket: &mut Ticket,
        n: u64,
        actor: &str,
        now: jiff::Timestamp,
    ) -> Result<Result<(Event, Other), String>, StoreError> {
        let store = &*self.store;
        let mut part = match store.ticket(TicketId(n))? {
            Some(p) if p.merged_into == Some(ticket.id) => p,
            Some(p) if ticket.merged.contains(&p.id) => {
                let via = p.merged_into.map(|t| t.0).unwrap_or_default();
                return Ok(Err(format!(
                    "ticket {n} was merged into ticket {via}, which was merged here: split {via} first, then {n} from {via}"
                )));
            }
            Some(_) => return Ok(Err(format!("ticket {n} is not merged into ticket {}", ticket.id))),
            None => return Ok(Err(format!("there is no ticket {n}"))),
        };
        let kept_events = store.events(ticket.id)?;
        let merged_ev = kept_events
            .iter()
            .rev()
            .find(|e| e.kind == "merged" && e.detail.get("ticket") == Some(&json!(n)))
            .cloned();
        let part_events = store.events(part.id)?;
        let into_ev = part_events.iter().rev().find(|e| e.kind == "merged_into").cloned();
        let before = part.clone();
        let (ek, ep) = split(ticket, &mut part, merged_ev.as_ref(), into_ev.as_ref(), actor, now);
        // The part's own clocks run again from where they stood.
        let mut events = vec![ep];
        events.extend(crate::core::sla::refresh(&mut part, &self.config, now, false, false));
        Ok(Ok((
            ek,
            Other {
                before,
                after: part,
                events,
            },
        )))
    }

    /// `POST /api/tickets/{id}/merge` and `/split`, and the CLI's `merge`
    /// and `split`: merges ticket `id` into `other` (`split`: false), or
    /// splits `other` back out of `id`, in one transaction. `Ok(Err)` says why not.
    pub fn merge_request(
        &self,
        id: TicketId,
        other: u64,
        split: bool,
        actor: &str,
        now: jiff::Timestamp,
    ) -> Result<Result<crate::view::MergeDone, String>, StoreError> {
        let Some(mut ticket) = self.store.ticket(id)? else {
            return Ok(Err(format!("there is no ticket {id}")));
        };
        let before = ticket.clone();
        let done = match split {
            false => self.merge_into(&mut ticket, other, actor, now)?,
            true => self.split_out(&mut ticket, other, actor, now)?,
        };
        let (event, other) = match done {
            Ok(d) => d,
            Err(why) => return Ok(Err(why)),
        };
        let mut w = crate::adapters::store::Change::default();
        self.update_due(&mut w, Some(&before), &ticket);
        w.ticket(&ticket);
        w.event(ticket.id, &event);
        self.update_due(&mut w, Some(&other.before), &other.after);
        w.ticket(&other.after);
        for e in &other.events {
            w.event(other.after.id, e);
        }
        self.commit(w)?;
        self.store.flush()?;
        Ok(Ok(crate::view::MergeDone {
            ticket: ticket.id,
            other: other.after.id,
            kept: if split { ticket.id } else { other.after.id },
        }))
    }
}

/// Two distinct slots, both mutable.
fn two(slots: &mut [Slot], i: usize, j: usize) -> (&mut Slot, &mut Slot) {
    assert_ne!(i, j, "two different slots");
    if i < j {
        let (l, r) = slots.split_at_mut(j);
        (&mut l[i], &mut r[0])
    } else {
        let (l, r) = slots.split_at_mut(i);
        (&mut r[0], &mut l[j])
    }
}

/// Who hears of a merge that needs an agent: the assignees of both tickets
/// and the agents who worked on them; with none, the older ticket's queue.
fn merge_audience<'a>(a: &Ticket, b: &Ticket, config: &'a Settings) -> Vec<&'a Agent> {
    let mut out: Vec<&Agent> = Vec::new();
    let names = a
        .assignee
        .iter()
        .chain(b.assignee.iter())
        .chain(a.agents.iter())
        .chain(b.agents.iter());
    for name in names {
        if let Some(agent) = config.agent_by_name_or_email(name)
            && !out.iter().any(|o| o.name == agent.name)
        {
            out.push(agent);
        }
    }
    if out.is_empty() {
        out = config.queue_agents(&a.queue);
    }
    out
}
