//! Merging two tickets into one and splitting them apart again, all pure.
//!
//! A merge keeps one ticket (the older one when headers prove the two are
//! one conversation; the one an agent names with `#merge N`) and closes the
//! other with `merged_into` set. Nothing is copied or deleted: the merged
//! ticket's messages and events stay where they were stored, views show them
//! in the kept ticket, its Message-IDs and tokens route there, and its
//! number answers `show` with where it went. Reports count the kept ticket
//! only, on its own clocks. A split undoes exactly that.

use crate::core::model::{Event, Mailbox, MessageRecord, Status, Ticket, TicketId};
use crate::core::settings::Settings;
use jiff::Timestamp;
use serde_json::json;
use std::collections::HashSet;

/// Who asks for a merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum By {
    /// A mail whose headers join the two tickets (its Message-ID).
    Headers(String),
    /// An agent (by name), or `api`.
    Agent(String),
}

impl By {
    fn actor(&self) -> &str {
        match self {
            By::Headers(_) => "system",
            By::Agent(a) => a,
        }
    }
}

/// Why `ticket` counts as worked on by an agent, if it does: an agent replied
/// or wrote a note, or an agent changed anything on it (assignment, status,
/// queue…), as its events tell. Rules and the system touch nothing here.
pub fn touched_by_agent(ticket: &Ticket, events: &[Event], config: &Settings) -> Option<String> {
    if let Some(a) = ticket.agents.first() {
        return Some(format!("agent {a} wrote on ticket {}", ticket.id));
    }
    if ticket.first_response_at.is_some() {
        return Some(format!("ticket {} has an agent reply", ticket.id));
    }
    events
        .iter()
        .find(|e| config.agent_by_name_or_email(&e.actor).is_some() || e.actor == "api")
        .map(|e| format!("{} changed ticket {} ({})", e.actor, ticket.id, e.kind))
}

/// Every address a ticket's conversation names: requester, participants,
/// held participants, and the senders and recipients of its messages.
pub fn named(ticket: &Ticket, messages: &[MessageRecord]) -> HashSet<String> {
    let mut out: HashSet<String> = HashSet::new();
    out.insert(ticket.requester.email.to_ascii_lowercase());
    for m in ticket.participants.iter().chain(&ticket.held_participants) {
        out.insert(m.email.to_ascii_lowercase());
    }
    for m in messages {
        out.insert(m.from.email.to_ascii_lowercase());
        for to in &m.to {
            out.insert(to.email.to_ascii_lowercase());
        }
    }
    out
}

/// Which of two tickets a header merge keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The older one (the first argument of [`header_merge`]).
    Older,
    /// The younger one: only its requester takes part in both conversations.
    Younger,
}

/// Whether two tickets that a mail's headers join may merge without an
/// agent, and which one is kept; `Err` says why not. `older` and `younger`
/// are each the ticket, its stored events and the people its conversation
/// names (see [`named`]).
///
/// Never when one is closed or was worked on by an agent. With one requester
/// the older one is kept. Across requesters, a conversation is only ever
/// folded into a ticket whose requester already takes part in it: the kept
/// ticket's requester receives the agents' replies, so it must be named in
/// the other conversation. That is the older one's when it is, else the
/// younger one's (which then takes the older one's clocks); when neither
/// requester is named in the other conversation they stay apart, linked.
pub fn header_merge(
    older: (&Ticket, &[Event], &HashSet<String>),
    younger: (&Ticket, &[Event], &HashSet<String>),
    config: &Settings,
) -> Result<Keep, String> {
    let (a, b) = (older, younger);
    if let Some(t) = [a.0, b.0].into_iter().find(|t| t.status == Status::Closed) {
        return Err(format!("ticket {} is closed", t.id));
    }
    if let Some(why) = touched_by_agent(a.0, a.1, config).or_else(|| touched_by_agent(b.0, b.1, config)) {
        return Err(why);
    }
    let (ra, rb) = (
        a.0.requester.email.to_ascii_lowercase(),
        b.0.requester.email.to_ascii_lowercase(),
    );
    if ra == rb || b.2.contains(&ra) {
        Ok(Keep::Older)
    } else if a.2.contains(&rb) {
        Ok(Keep::Younger)
    } else {
        Err(format!(
            "their requesters {ra} and {rb} differ and neither takes part in the other's conversation"
        ))
    }
}

/// Merges `from` into `into`: `from` is closed with `merged_into`, `into`
/// takes its tags, language and people. From a header merge, `from`'s
/// requester and participants become participants only if `into`'s
/// conversation already names them (`known`, see [`named`]); the others are
/// held (an agent accepts them with `#cc add`), so no new person receives
/// replies without an agent. An agent's merge makes them all participants.
/// Returns the event for each ticket (`into`'s first).
pub fn merge(
    into: &mut Ticket,
    from: &mut Ticket,
    by: &By,
    known: &HashSet<String>,
    now: Timestamp,
    config: &Settings,
) -> (Event, Event) {
    let status_before = from.status;
    // The conversation started with the older ticket: its clocks run on.
    let sla_before = (from.created_at < into.created_at).then(|| {
        let before = into.sla.clone();
        into.sla = from.sla.clone();
        into.first_response_at = match (into.first_response_at, from.first_response_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        before
    });
    from.merged_into = Some(into.id);
    from.status = Status::Closed;
    from.closed_at = Some(now);
    from.updated_at = now;
    into.merged.push(from.id);
    for t in from.merged.clone() {
        if !into.merged.contains(&t) {
            into.merged.push(t);
        }
    }
    // Tags `into` gets from `from`, logged on the merge event so that a
    // replay of the log (reports) sees them.
    let tags_added: Vec<String> = from.tags.iter().filter(|t| into.tag(t)).cloned().collect();
    if into.language.is_none() {
        into.language = from.language.clone();
    }
    let (mut added, mut held) = (Vec::new(), Vec::new());
    let people: Vec<Mailbox> = std::iter::once(from.requester.clone())
        .chain(from.participants.iter().cloned())
        .collect();
    let max = config.limits.max_participants;
    for p in people {
        if into.is_participant(&p.email) {
            continue;
        }
        let accepted = matches!(by, By::Agent(_)) || known.contains(&p.email.to_ascii_lowercase());
        match by {
            _ if accepted && into.participants.len() < max => {
                into.held_participants.retain(|h| h.email != p.email);
                added.push(p.email.clone());
                into.participants.push(p);
            }
            _ if into.held_participants.len() < max && !into.held_participants.iter().any(|h| h.email == p.email) => {
                held.push(p.email.clone());
                into.held_participants.push(p);
            }
            _ => {}
        }
    }
    into.linked.retain(|l| *l != from.id);
    from.linked.retain(|l| *l != into.id);
    into.updated_at = now;
    let mut detail = vec![
        ("ticket", json!(from.id.0)),
        ("participants_added", json!(added)),
        ("participants_held", json!(held)),
    ];
    // Listed even when empty: a merge without the list was logged before 2026-12-07.
    detail.push(("tags_added", json!(tags_added)));
    if let Some(sla) = &sla_before {
        detail.push(("sla_before", json!(sla)));
    }
    let mut from_detail = vec![
        ("into", json!(into.id.0)),
        ("status_before", json!(status_before.as_str())),
    ];
    match by {
        By::Headers(id) => {
            detail.push(("message_id", json!(id)));
            detail.push(("reason", json!("one conversation by its headers")));
            from_detail.push(("message_id", json!(id)));
        }
        By::Agent(_) => detail.push(("reason", json!("asked by an agent"))),
    }
    (
        Event::new(now, "merged", by.actor(), &detail),
        Event::new(now, "merged_into", by.actor(), &from_detail),
    )
}

/// Splits `part` back out of `kept`, undoing [`merge`]: `part` gets its
/// status from before the merge and its own number back (mail to it lands
/// on it again); the people the merge added to `kept` go, unless they were
/// there before. `merged` and `merged_into` are the two merge events, the
/// latest of each. Returns the event for each ticket (`kept`'s first).
pub fn split(
    kept: &mut Ticket,
    part: &mut Ticket,
    merged: Option<&Event>,
    merged_into: Option<&Event>,
    actor: &str,
    now: Timestamp,
) -> (Event, Event) {
    part.merged_into = None;
    let status = merged_into
        .and_then(|e| e.detail.get("status_before"))
        .and_then(|v| v.as_str())
        .and_then(Status::parse)
        .unwrap_or(Status::Open);
    part.status = status;
    if status != Status::Closed {
        part.closed_at = None;
    }
    part.updated_at = now;
    let gone: HashSet<TicketId> = std::iter::once(part.id).chain(part.merged.iter().copied()).collect();
    kept.merged.retain(|t| !gone.contains(t));
    let list = |key: &str| -> Vec<String> {
        merged
            .and_then(|e| e.detail.get(key))
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let (added, held) = (list("participants_added"), list("participants_held"));
    if let Some(sla) = merged
        .and_then(|e| e.detail.get("sla_before"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
    {
        kept.sla = sla;
    }
    kept.participants.retain(|p| !added.contains(&p.email));
    kept.held_participants.retain(|p| !held.contains(&p.email));
    if !kept.linked.contains(&part.id) {
        kept.linked.push(part.id);
    }
    if !part.linked.contains(&kept.id) {
        part.linked.push(kept.id);
    }
    kept.updated_at = now;
    (
        Event::new(now, "split", actor, &[("ticket", json!(part.id.0))]),
        Event::new(
            now,
            "split_from",
            actor,
            &[("ticket", json!(kept.id.0)), ("status", json!(status.as_str()))],
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(id: u64, requester: &str) -> Ticket {
        Ticket::new(
            TicketId(id),
            "Printer",
            Mailbox::new(None, requester),
            "support",
            "general",
            "2026-11-23T12:00:00Z".parse().unwrap(),
        )
    }

    fn settings() -> Settings {
        crate::adapters::config::parse(
            "[instance]\nname = \"T\"\ndata_dir = \"/tmp/x\"\nsecret_file = \"/tmp/s\"\n\n[[mailbox]]\nname = \"support\"\naddress = \"support@example.com\"\nmaildir = { path = \"/tmp/in\" }\n\n[outgoing]\nfile = { path = \"/tmp/out\" }\n\n[[agent]]\nname = \"alice\"\nemail = \"alice@example.com\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap()
        .settings
    }

    #[test]
    fn a_header_merge_holds_new_people_and_a_split_undoes_it() {
        let config = settings();
        let now: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let (mut a, mut b) = (ticket(1, "bob@customer.test"), ticket(2, "carol@customer.test"));
        b.tags.push("vip".into());
        b.status = Status::Open;
        a.linked.push(TicketId(2));
        let (ea, eb) = merge(
            &mut a,
            &mut b,
            &By::Headers("m@x".into()),
            &HashSet::new(),
            now,
            &config,
        );
        assert_eq!(
            (b.merged_into, b.status, &a.merged),
            (Some(TicketId(1)), Status::Closed, &vec![TicketId(2)])
        );
        assert!(!a.is_participant("carol@customer.test"), "held, not a participant");
        assert_eq!(a.held_participants[0].email, "carol@customer.test");
        assert_eq!((a.tags.clone(), a.linked.clone()), (vec!["vip".to_string()], vec![]));
        // The merge event lists the tags it added, for a replay of the log.
        assert_eq!(ea.detail.get("tags_added"), Some(&serde_json::json!(["vip"])));
        let (sa, sb) = split(&mut a, &mut b, Some(&ea), Some(&eb), "alice", now);
        assert_eq!((b.merged_into, b.status, a.merged.len()), (None, Status::Open, 0));
        assert!(a.held_participants.is_empty());
        assert_eq!((sa.kind.as_str(), sb.kind.as_str()), ("split", "split_from"));
        assert_eq!(
            (a.linked.clone(), b.linked.clone()),
            (vec![TicketId(2)], vec![TicketId(1)])
        );
    }

    #[test]
    fn an_agent_merge_adds_people_and_carries_earlier_merges() {
        let config = settings();
        let now: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let (mut a, mut b) = (ticket(1, "bob@customer.test"), ticket(3, "carol@customer.test"));
        b.merged.push(TicketId(2));
        merge(
            &mut a,
            &mut b,
            &By::Agent("alice".into()),
            &HashSet::new(),
            now,
            &config,
        );
        assert!(a.is_participant("carol@customer.test"));
        assert_eq!(a.merged, vec![TicketId(3), TicketId(2)]);
    }

    #[test]
    fn header_merges_keep_a_ticket_whose_requester_takes_part_in_both() {
        let config = settings();
        let (a, mut b) = (ticket(1, "bob@customer.test"), ticket(2, "Bob@Customer.test"));
        let none = HashSet::new();
        assert_eq!(
            header_merge((&a, &[], &none), (&b, &[], &none), &config),
            Ok(Keep::Older)
        );
        b.requester = Mailbox::new(None, "carol@customer.test");
        let why = header_merge((&a, &[], &none), (&b, &[], &none), &config).unwrap_err();
        assert!(why.contains("neither takes part"), "{why}");
        let with =
            |t: &Ticket, who: &str| -> HashSet<String> { named(t, &[]).into_iter().chain([who.to_string()]).collect() };
        // Bob (the older ticket's requester) was in Carol's conversation: Bob's ticket is kept.
        let (na, nb) = (named(&a, &[]), with(&b, "bob@customer.test"));
        assert_eq!(header_merge((&a, &[], &na), (&b, &[], &nb), &config), Ok(Keep::Older));
        // Only Carol was in Bob's: Carol's (younger) ticket is kept.
        let (na, nb) = (with(&a, "carol@customer.test"), named(&b, &[]));
        assert_eq!(header_merge((&a, &[], &na), (&b, &[], &nb), &config), Ok(Keep::Younger));
        let touched = [Event::new(Timestamp::UNIX_EPOCH, "priority", "alice", &[])];
        let why = header_merge((&a, &touched, &na), (&b, &[], &nb), &config).unwrap_err();
        assert!(why.contains("alice changed ticket 1"), "{why}");
        let system = [Event::new(Timestamp::UNIX_EPOCH, "routed", "system", &[])];
        assert_eq!(
            header_merge((&a, &system, &na), (&b, &[], &nb), &config),
            Ok(Keep::Younger)
        );
        b.status = Status::Closed;
        assert!(
            header_merge((&a, &[], &na), (&b, &[], &nb), &config)
                .unwrap_err()
                .contains("closed")
        );
    }

    #[test]
    fn the_kept_younger_ticket_takes_the_older_clocks_and_a_split_gives_them_back() {
        let config = settings();
        let now: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let (mut old, mut young) = (ticket(1, "bob@customer.test"), ticket(2, "carol@customer.test"));
        young.created_at = now;
        old.sla.first_response_due = Some("2026-11-23T14:00:00Z".parse().unwrap());
        young.sla.first_response_due = Some("2026-11-24T14:00:00Z".parse().unwrap());
        let (e, _) = merge(
            &mut young,
            &mut old,
            &By::Headers("m@x".into()),
            &HashSet::new(),
            now,
            &config,
        );
        assert_eq!(young.sla.first_response_due, old.sla.first_response_due);
        let into_ev = Event::new(now, "merged_into", "system", &[("status_before", json!("new"))]);
        split(&mut young, &mut old, Some(&e), Some(&into_ev), "alice", now);
        assert_eq!(
            young.sla.first_response_due,
            Some("2026-11-24T14:00:00Z".parse().unwrap())
        );
    }
}
