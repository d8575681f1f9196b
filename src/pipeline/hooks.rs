//! Webhook deliveries, queued in the same commit as the events they tell of:
//! a ticket change and its deliveries are written together or not at all,
//! so none is lost or doubled by a crash. `transports::webhook` sends them.

use crate::adapters::config::{Config, HookFormat, Webhook};
use crate::adapters::store::{Change, HookEntry, Op, Store, StoreError};
use crate::core::model::{Event, Ticket, TicketId};
use serde_json::json;

/// The webhook events a ticket event stands for, in order.
pub fn events_of(e: &Event) -> Vec<&'static str> {
    let detail = |k: &str| e.detail.get(k).and_then(|v| v.as_str()).unwrap_or("");
    match e.kind.as_str() {
        "created" => vec!["ticket.created"],
        "message" if detail("direction") == "inbound" && detail("message_kind") == "customer" => {
            vec!["message.inbound"]
        }
        "relayed" => vec!["message.outbound"],
        "note" => vec!["note.added"],
        "status" if detail("to") == "resolved" => vec!["ticket.updated", "ticket.resolved"],
        "status"
        | "priority"
        | "assigned"
        | "unassigned"
        | "queue"
        | "type"
        | "tag"
        | "untag"
        | "split"
        | "split_from"
        | "participant_added"
        | "participant_removed"
        | "linked" => vec!["ticket.updated"],
        "merged" => vec!["ticket.merged"],
        "sla_warning" => vec!["sla.warning"],
        "sla_breach" => vec!["sla.breached"],
        "csat" => vec!["csat.received"],
        _ => Vec::new(),
    }
}

/// The deliveries `change` calls for, to be committed with it.
pub fn ops(config: &Config, store: &dyn Store, change: &Change) -> Result<Vec<Op>, StoreError> {
    let mut out = Vec::new();
    if config.webhooks.is_empty() {
        return Ok(out);
    }
    for op in &change.ops {
        let Op::Event(id, e) = op else { continue };
        let names = events_of(e);
        if names.is_empty() || !config.webhooks.iter().any(|h| names.iter().any(|n| h.wants(n))) {
            continue;
        }
        // The ticket as this change leaves it.
        let ticket = match change.ops.iter().rev().find_map(|o| match o {
            Op::Ticket(t) if t.id == *id => Some((**t).clone()),
            _ => None,
        }) {
            Some(t) => t,
            None => match store.ticket(*id)? {
                Some(t) => t,
                None => continue,
            },
        };
        for name in names {
            for hook in config.webhooks.iter().filter(|h| h.wants(name)) {
                let delivery = format!("dlv_{}", &crate::transports::nonce()[..24]);
                out.push(Op::Hook(Box::new(HookEntry {
                    hook: hook.name.clone(),
                    event: name.to_string(),
                    ticket: *id,
                    id: delivery.clone(),
                    body: body(config, hook, name, &delivery, &ticket, e),
                    created: e.at,
                    attempts: 0,
                    next_attempt: e.at,
                    last_error: None,
                    failed: false,
                })));
            }
        }
    }
    Ok(out)
}

/// The team's page of a ticket, when the dashboard is on.
fn ticket_url(config: &Config, id: TicketId) -> Option<String> {
    let base = config.desk.public_url.as_deref()?;
    config
        .web
        .dashboard
        .then(|| format!("{}/dashboard/t/{}", base.trim_end_matches('/'), id.0))
}

/// The request body: the event as JSON, or a Slack message.
fn body(config: &Config, hook: &Webhook, event: &str, delivery: &str, t: &Ticket, e: &Event) -> String {
    let url = ticket_url(config, t.id);
    match hook.format {
        HookFormat::Json => json!({
            "id": delivery,
            "event": event,
            "created_at": e.at,
            "desk": config.desk.name,
            "ticket": {
                "id": t.id.0,
                "subject": t.subject,
                "status": t.status.as_str(),
                "priority": t.priority.as_str(),
                "queue": t.queue,
                "type": t.kind,
                "tags": t.tags,
                "assignee": t.assignee,
                "requester": {"name": t.requester.name, "email": t.requester.email},
                "channel": t.channel,
                "created_at": t.created_at,
                "updated_at": t.updated_at,
                "url": url,
            },
            "data": e,
        })
        .to_string(),
        HookFormat::Slack => {
            let what = match event {
                "ticket.created" => format!(
                    "New ticket from {}",
                    t.requester.name.as_deref().unwrap_or(&t.requester.email)
                ),
                "ticket.updated" => format!("Ticket updated ({})", e.kind.replace('_', " ")),
                "ticket.resolved" => "Ticket resolved".into(),
                "ticket.merged" => "Tickets merged".into(),
                "message.inbound" => "The customer wrote".into(),
                "message.outbound" => format!("{} replied", e.actor),
                "note.added" => format!("{} added a note", e.actor),
                "sla.warning" => "SLA deadline near".into(),
                "sla.breached" => "SLA deadline breached".into(),
                "csat.received" => format!(
                    "Survey answered: {}",
                    e.detail.get("rating").map(|r| r.to_string()).unwrap_or_default()
                ),
                other => other.to_string(),
            };
            let mut text = format!(
                "[{}] {}: #{} {} ({}, {})",
                slack_escape(&config.desk.name),
                slack_escape(&what),
                t.id.0,
                slack_escape(&t.subject),
                t.status.as_str(),
                t.priority.as_str()
            );
            if let Some(u) = url {
                text.push_str(&format!(" <{}|Open ticket>", slack_escape(&u)));
            }
            json!({ "text": text }).to_string()
        }
    }
}

/// Slack's escaping of message text: `&`, `<` and `>` (links and mentions
/// are written with angle brackets, so a customer's subject cannot make one).
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    #[test]
    fn ticket_events_map_to_webhook_events() {
        let ev =
            |kind: &str, detail: &[(&str, serde_json::Value)]| Event::new(Timestamp::UNIX_EPOCH, kind, "x", detail);
        assert_eq!(events_of(&ev("created", &[])), ["ticket.created"]);
        assert_eq!(
            events_of(&ev(
                "message",
                &[("direction", json!("inbound")), ("message_kind", json!("customer"))]
            )),
            ["message.inbound"]
        );
        assert!(
            events_of(&ev(
                "message",
                &[("direction", json!("inbound")), ("message_kind", json!("auto"))]
            ))
            .is_empty(),
            "auto-replies are no customer message"
        );
        assert_eq!(
            events_of(&ev("status", &[("to", json!("resolved"))])),
            ["ticket.updated", "ticket.resolved"]
        );
        assert_eq!(events_of(&ev("status", &[("to", json!("open"))])), ["ticket.updated"]);
        assert_eq!(events_of(&ev("sla_breach", &[])), ["sla.breached"]);
        assert!(events_of(&ev("mail_sent", &[])).is_empty());
    }

    #[test]
    fn slack_text_cannot_make_links_or_mentions() {
        assert_eq!(
            slack_escape("<!channel> & <https://evil.test|click>"),
            "&lt;!channel&gt; &amp; &lt;https://evil.test|click&gt;"
        );
    }
}
