//! The agent side of a ticket, all pure: who may act as an agent, who gets a
//! new ticket, the mail agents receive, and what an agent's reply does.

use crate::core::model::InboundMessage;
use crate::core::model::{Event, Mailbox, Status, Ticket, TicketId};
use crate::core::outgoing::{OutgoingMail, TemplateValues, fill};
use crate::core::reply::{Command, REPLY_MARKER};
use crate::core::settings::{Agent, AssignStrategy, Settings};
use crate::core::token::Signer;
use jiff::Timestamp;
use serde_json::json;
use std::collections::HashMap;

/// Decides whether mail from an agent's address really comes from that agent:
/// a token of ours signed for this agent and for `ticket`, the ticket the mail
/// threads to (the Message-ID it answers, or the reply address), or a trusted
/// `Authentication-Results` with DKIM or DMARC pass aligned with the From
/// domain. A token of another ticket proves nothing here, except of a ticket
/// merged into this one (`merged`). `Ok` carries the proof, `Err` why not.
pub fn authenticate(
    msg: &InboundMessage,
    agent: &Agent,
    signer: &Signer,
    config: &Settings,
    ticket: Option<TicketId>,
    merged: &[TicketId],
) -> Result<String, String> {
    let ours = |t: TicketId| Some(t) == ticket || merged.contains(&t);
    let slug = agent.slug();
    let mut other_ticket = None;
    for id in msg.referenced_ids() {
        if let Some((t, Some(a))) = signer.parse_message_id_full(id)
            && a == slug
        {
            if ours(t) {
                return Ok(format!("answers <{id}>, signed for {} on ticket {t}", agent.name));
            }
            other_ticket = Some(t);
        }
    }
    for rcpt in msg.to.iter().chain(msg.cc.iter()) {
        if let Some((t, Some(a))) = signer.parse_plus_address_full(&rcpt.email)
            && a == slug
        {
            if ours(t) {
                return Ok(format!(
                    "sent to {}, signed for {} on ticket {t}",
                    rcpt.email, agent.name
                ));
            }
            other_ticket = Some(t);
        }
    }
    let no_token = match other_ticket {
        Some(t) => format!(
            "{}'s token is for ticket {t}, not for {}",
            agent.name,
            ticket
                .map(|t| format!("ticket {t}"))
                .unwrap_or_else(|| "a new ticket".into())
        ),
        None => format!("no token of ours for {}", agent.name),
    };
    match authenticated_from(msg, config) {
        Ok(how) => Ok(how),
        Err(why) => Err(format!("{no_token}; {why}")),
    }
}

/// Whether the From domain is vouched for by the topmost `Authentication-Results`
/// (the one our receiving MTA prepended) of a trusted authserv-id: DKIM pass
/// aligned by organisational domain, or DMARC pass. `Ok` says which and by whom.
pub fn authenticated_from(msg: &InboundMessage, config: &Settings) -> Result<String, String> {
    let from_domain = msg
        .from
        .as_ref()
        .and_then(|m| m.email.rsplit_once('@').map(|(_, d)| d.to_string()))
        .unwrap_or_default();
    let Some(value) = msg.header("authentication-results") else {
        return Err("no trusted Authentication-Results".into());
    };
    let Some(ar) = crate::core::authres::parse(value) else {
        return Err("an Authentication-Results without an authserv-id".into());
    };
    if !config.security.trusted_authserv_ids.contains(&ar.authserv_id) {
        return Err(format!(
            "Authentication-Results from untrusted authserv-id {:?} ignored",
            ar.authserv_id
        ));
    }
    match crate::core::authres::aligned_pass(&ar, &from_domain) {
        Some(how) => Ok(format!("{how} for {from_domain}, per {}", ar.authserv_id)),
        None => Err(format!("{} reports no aligned DKIM or DMARC pass", ar.authserv_id)),
    }
}

/// Whether a customer's mail on `ticket` is proven, so that it may bring new
/// participants in: it answers one of our Message-IDs of that ticket (or of
/// one merged into it, `merged`), is sent to such a ticket's signed address,
/// or its From passes DKIM/DMARC per a trusted authserv-id. A From header
/// alone proves nothing. `Ok` says how, `Err` why not.
pub fn customer_proof(
    msg: &InboundMessage,
    signer: &Signer,
    config: &Settings,
    ticket: Option<TicketId>,
    merged: &[TicketId],
) -> Result<String, String> {
    if let Some(ticket) = ticket {
        let ours = |t: TicketId| t == ticket || merged.contains(&t);
        for id in msg.referenced_ids() {
            if let Some((t, None)) = signer.parse_message_id_full(id)
                && ours(t)
            {
                return Ok(format!("answers our <{id}>"));
            }
        }
        for rcpt in msg.to.iter().chain(msg.cc.iter()) {
            if let Some((t, None)) = signer.parse_plus_address_full(&rcpt.email)
                && ours(t)
            {
                return Ok(format!("sent to {}", rcpt.email));
            }
        }
    }
    authenticated_from(msg, config).map_err(|why| format!("no token of ours; {why}"))
}

/// Picks the assignee of a new ticket in `queue` by the queue's strategy,
/// skipping agents at their `max_open`. `loads` are open tickets per agent,
/// `last` the agent the queue's round robin gave the previous ticket.
pub fn choose_assignee<'a>(
    queue: &str,
    config: &'a Settings,
    loads: &HashMap<String, u32>,
    last: Option<&str>,
) -> Option<&'a Agent> {
    let strategy = config.queue(queue).map(|q| q.assign).unwrap_or(AssignStrategy::None);
    let agents = config.queue_agents(queue);
    let load = |a: &Agent| loads.get(&a.name).copied().unwrap_or(0);
    let free = |a: &&Agent| a.max_open.is_none_or(|m| load(a) < m);
    match strategy {
        AssignStrategy::None => None,
        AssignStrategy::LeastOpen => agents.into_iter().filter(free).min_by_key(|a| load(a)),
        AssignStrategy::RoundRobin => {
            let start = last
                .and_then(|l| agents.iter().position(|a| a.name == l))
                .map(|i| i + 1)
                .unwrap_or(0);
            let n = agents.len();
            (0..n).map(|k| agents[(start + k) % n]).find(|a| free(a))
        }
    }
}

/// What the agent mail builder needs.
#[derive(Clone, Debug)]
pub struct MailContext<'a> {
    /// Configuration.
    pub config: &'a Settings,
    /// Signer.
    pub signer: &'a Signer,
    /// Now.
    pub now: Timestamp,
    /// A unique prefix for Message-IDs of this mail's effects.
    pub nonce: &'a str,
}

/// A mail to one agent about a ticket: From the support address under
/// `from_name`, Reply-To the ticket's plus-address signed for that agent,
/// Message-ID signed for that agent, the reply marker on top.
#[allow(clippy::too_many_arguments)]
pub fn agent_mail(
    ticket: &Ticket,
    agent: &Agent,
    from_name: &str,
    subject: &str,
    body: &str,
    purpose: &str,
    automatic: bool,
    seq: usize,
    in_reply_to: Option<&str>,
    cx: &MailContext<'_>,
) -> OutgoingMail {
    let support = cx.config.from_for(&ticket.mailbox).email;
    let slug = agent.slug();
    let reply_to = if cx.config.automation.plus_addressing {
        cx.signer.agent_plus_address(&support, ticket.id, &slug)
    } else {
        support.clone()
    };
    let mut full = format!("{REPLY_MARKER}\n\n{}", body.trim_end());
    full.push_str(&format!("\n\n{}\n", cx.signer.body_token(ticket.id)));
    OutgoingMail {
        ticket: ticket.id,
        purpose: purpose.to_string(),
        from: Mailbox::new(Some(from_name.to_string()), &support),
        to: vec![Mailbox::new(Some(agent.name.clone()), &agent.emails[0])],
        reply_to: Some(reply_to),
        subject: crate::core::subject::tagged(subject, &cx.config.desk.subject_tag, ticket.id.0),
        body: full,
        message_id: cx.signer.agent_message_id(
            ticket.id,
            &slug,
            &format!("{}{seq}", cx.nonce),
            &cx.config.desk.message_id_domain,
        ),
        in_reply_to: in_reply_to.map(String::from),
        references: in_reply_to.map(|r| vec![r.to_string()]).unwrap_or_default(),
        auto_submitted: automatic,
        date: cx.now,
        loop_value: crate::core::classify::loop_header_value(cx.config),
        attachments: Vec::new(),
    }
}

/// The agents a customer's mail on `ticket` goes to: the assignee, else the queue's agents.
pub fn notify_targets<'a>(ticket: &Ticket, config: &'a Settings) -> Vec<&'a Agent> {
    match ticket
        .assignee
        .as_deref()
        .and_then(|a| config.agent_by_name_or_email(a))
    {
        Some(a) => vec![a],
        None => config.queue_agents(&ticket.queue),
    }
}

/// The agents' notifications of a customer's mail. A reply on a ticket with
/// [`crate::core::summary::SUMMARY_FROM`] messages or more (`history`, the
/// conversation before it, and this one) opens with the summary.
pub fn notifications(
    ticket: &Ticket,
    msg: &InboundMessage,
    created: bool,
    history: &[crate::core::summary::Turn],
    cx: &MailContext<'_>,
) -> Vec<OutgoingMail> {
    let from = msg
        .from
        .clone()
        .unwrap_or_else(|| Mailbox::new(None, "unknown@invalid"));
    let who = from.name.clone().unwrap_or_else(|| from.email.clone());
    let from_name = format!("{who} via {}", cx.config.desk.name);
    let participants: Vec<String> = ticket.participants.iter().map(|p| p.email.clone()).collect();
    let mut facts = format!(
        "{} ticket #{} · queue {} · priority {} · status {}\nFrom: {}\n",
        if created { "New" } else { "Customer reply on" },
        ticket.id,
        ticket.queue,
        ticket.priority.as_str(),
        ticket.status.as_str(),
        crate::core::outgoing::format_mailbox(&from),
    );
    let mut reading = Vec::new();
    if let Some(i) = ticket.intent.as_ref().filter(|_| created) {
        reading.push(format!("intent {} ({:.0}%)", i.label, i.confidence * 100.0));
    }
    if let Some(l) = &msg.language {
        reading.push(format!("language {l}"));
    }
    if msg.sentiment.value() != 0.0 {
        let mood = match msg.sentiment.value() {
            v if v <= -0.5 => "upset",
            v if v < 0.0 => "unhappy",
            v if v >= 0.5 => "happy",
            _ => "content",
        };
        reading.push(format!("sentiment {:+.2} ({mood})", msg.sentiment.value()));
    }
    if let Some(t) = ticket.sentiment_trend.filter(|t| t.value() != 0.0) {
        reading.push(format!("trend {:+.2}", t.value()));
    }
    if !reading.is_empty() {
        facts.push_str(&format!("Reads as: {}\n", reading.join(" · ")));
    }
    if !ticket.customer.is_empty() {
        let record: Vec<String> = ticket.customer.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        facts.push_str(&format!("Customer: {}\n", record.join(" · ")));
    }
    if !participants.is_empty() {
        facts.push_str(&format!("Cc: {}\n", participants.join(", ")));
    }
    if !ticket.held_participants.is_empty() {
        let held: Vec<&str> = ticket.held_participants.iter().map(|p| p.email.as_str()).collect();
        facts.push_str(&format!(
            "Held Cc (unproven mail; not copied on replies until you accept with #cc add ADDRESS): {}\n",
            held.join(", ")
        ));
    }
    facts.push_str(&format!(
        "Assigned to: {}\n",
        ticket.assignee.as_deref().unwrap_or("nobody (reply to take it)")
    ));
    if !msg.attachments.is_empty() {
        facts.push_str(&format!("Attachments: {}\n", msg.attachments.join(", ")));
    }
    let mut summary = String::new();
    if !created && history.len() + 1 >= crate::core::summary::SUMMARY_FROM {
        let conversation = crate::core::summary::followed_by(history, crate::core::summary::Who::Customer, &msg.text);
        summary = crate::core::summary::summary(ticket, &conversation, cx.now);
        if !summary.is_empty() {
            summary.push('\n');
        }
    }
    let body = format!(
        "{summary}{facts}\n{}\n\n{}",
        msg.text.trim_end(),
        crate::core::reply::agent_footer()
    );
    notify_targets(ticket, cx.config)
        .into_iter()
        .enumerate()
        .map(|(i, agent)| {
            agent_mail(
                ticket,
                agent,
                &from_name,
                &msg.subject,
                &body,
                "notification",
                false,
                i,
                msg.message_id.as_deref(),
                cx,
            )
        })
        .collect()
}

/// Applies an agent's commands to the ticket; returns events and the lines refused.
pub fn apply_commands(
    ticket: &mut Ticket,
    commands: &[Command],
    agent: &Agent,
    config: &Settings,
    now: Timestamp,
) -> (Vec<Event>, Vec<String>) {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    let actor = agent.name.as_str();
    for c in commands {
        match c {
            Command::Note => {}
            Command::Status(s) => {
                let from = ticket.status;
                if from != *s {
                    ticket.status = *s;
                    match s {
                        Status::Resolved => ticket.resolved_at = Some(now),
                        Status::Closed => ticket.closed_at = Some(now),
                        _ => {}
                    }
                    let mut detail = vec![("from", json!(from.as_str())), ("to", json!(s.as_str()))];
                    if *s == Status::Resolved {
                        // The resolution deadline in force when it was met or missed.
                        detail.push(("due", json!(ticket.sla.resolution_due)));
                    }
                    events.push(Event::new(now, "status", actor, &detail));
                }
            }
            Command::Priority(p) => {
                if ticket.priority != *p {
                    events.push(Event::new(
                        now,
                        "priority",
                        actor,
                        &[("from", json!(ticket.priority.as_str())), ("to", json!(p.as_str()))],
                    ));
                    ticket.priority = *p;
                }
            }
            Command::Assign(who) => match config.agent_by_name_or_email(who) {
                Some(a) => assign(ticket, &a.name, actor, "command", now, &mut events),
                None => errors.push(format!("#assign {who}: no agent of that name or address")),
            },
            Command::Take => assign(ticket, &agent.name, actor, "command", now, &mut events),
            Command::Queue(q) => {
                if !config.queues.is_empty() && config.queue(q).is_none() {
                    errors.push(format!("#queue {q}: no such queue"));
                } else if ticket.queue != *q {
                    events.push(Event::new(
                        now,
                        "queue",
                        actor,
                        &[("from", json!(ticket.queue)), ("to", json!(q))],
                    ));
                    ticket.queue = q.clone();
                }
            }
            Command::Tag(tags) => {
                for t in tags {
                    if ticket.tag(t) {
                        events.push(Event::new(now, "tag", actor, &[("tag", json!(t))]));
                    }
                }
            }
            Command::Untag(tags) => {
                for t in tags {
                    if ticket.tags.contains(t) {
                        ticket.tags.retain(|x| x != t);
                        events.push(Event::new(now, "untag", actor, &[("tag", json!(t))]));
                    }
                }
            }
            Command::Type(t) => {
                if t.is_empty() {
                    errors.push("#type: expected a type name".into());
                } else {
                    events.push(Event::new(
                        now,
                        "type",
                        actor,
                        &[("from", json!(ticket.kind)), ("to", json!(t))],
                    ));
                    ticket.kind = Some(t.clone());
                }
            }
            Command::CcAdd(addr) => {
                if config.is_own_address(addr) || config.agent_by_email(addr).is_some() {
                    errors.push(format!(
                        "#cc add {addr}: our own and agents' addresses cannot be participants"
                    ));
                } else if !ticket.is_participant(addr) {
                    if ticket.participants.len() >= config.limits.max_participants {
                        errors.push(format!(
                            "#cc add {addr}: the ticket has the most participants allowed ({})",
                            config.limits.max_participants
                        ));
                    } else {
                        let held = ticket.held_participants.iter().position(|h| h.email == *addr);
                        let who = held
                            .map(|i| ticket.held_participants.remove(i))
                            .unwrap_or_else(|| Mailbox::new(None, addr));
                        ticket.participants.push(who);
                        let mut detail = vec![("email", json!(addr))];
                        if held.is_some() {
                            detail.push(("accepted", json!(true)));
                        }
                        events.push(Event::new(now, "participant_added", actor, &detail));
                    }
                }
            }
            Command::CcRemove(addr) => {
                if ticket.participants.iter().any(|p| p.email == *addr) {
                    ticket.participants.retain(|p| p.email != *addr);
                    events.push(Event::new(now, "participant_removed", actor, &[("email", json!(addr))]));
                } else {
                    errors.push(format!("#cc remove {addr}: not a participant"));
                }
            }
            // Merges touch two tickets: the pipeline runs them once the reply is applied.
            Command::Merge(_) | Command::Split(_) => {}
        }
    }
    (events, errors)
}

/// Sets the assignee with an event, when it changes.
pub fn assign(ticket: &mut Ticket, to: &str, actor: &str, how: &str, now: Timestamp, events: &mut Vec<Event>) {
    if ticket.assignee.as_deref() != Some(to) {
        events.push(Event::new(
            now,
            "assigned",
            actor,
            &[("from", json!(ticket.assignee)), ("to", json!(to)), ("how", json!(how))],
        ));
        ticket.assignee = Some(to.to_string());
    }
}

/// Values for `#template` and other templates, from the ticket.
pub fn template_values(ticket: &Ticket, config: &Settings, agent: Option<&Agent>) -> TemplateValues {
    TemplateValues::default()
        .set("ticket.id", ticket.id.to_string())
        .set("ticket.subject", ticket.subject.clone())
        .set("ticket.queue", ticket.queue.clone())
        .set("ticket.status", ticket.status.as_str())
        .set("ticket.priority", ticket.priority.as_str())
        .set(
            "requester.name",
            ticket
                .requester
                .name
                .clone()
                .unwrap_or_else(|| ticket.requester.email.clone()),
        )
        .set("requester.email", ticket.requester.email.clone())
        .set("instance.name", config.desk.name.clone())
        .set("agent.name", agent.map(|a| a.name.clone()).unwrap_or_default())
}

/// The survey links block, or nothing without `[http] public_url`.
pub fn survey_links(ticket: &Ticket, config: &Settings, signer: &Signer) -> String {
    match &config.desk.public_url {
        None => String::new(),
        Some(base) => {
            let token = signer.survey_token(ticket.id);
            let mut s = String::from("\nOr rate with one click:\n");
            for (n, word) in [(5, "excellent"), (4, "good"), (3, "okay"), (2, "poor"), (1, "bad")] {
                s.push_str(&format!("  {n} {word}: {base}/csat/{}/{token}/{n}\n", ticket.id));
            }
            s
        }
    }
}

/// The signed status page link of a ticket, when the portal is on.
pub fn status_link(ticket: TicketId, config: &Settings, signer: &Signer) -> Option<String> {
    let base = config.desk.public_url.as_ref().filter(|_| config.web.portal)?;
    Some(format!("{base}/t/{}/{}", ticket.0, signer.status_token(ticket)))
}

/// The words before the status link in mail to customers.
pub const STATUS_LINE: &str = "See your request and answer online:";

/// The status link lines for mail to customers, or nothing.
pub fn status_line(ticket: TicketId, config: &Settings, signer: &Signer) -> String {
    match status_link(ticket, config, signer) {
        Some(link) => format!("\n{STATUS_LINE}\n{link}\n"),
        None => String::new(),
    }
}

/// The filled canned response `name`, if configured.
pub fn canned(name: &str, ticket: &Ticket, config: &Settings, agent: &Agent) -> Option<String> {
    config
        .templates
        .canned
        .get(name)
        .map(|t| fill(t, &template_values(ticket, config, Some(agent))))
}

/// Whether `agent` may be told something again (rate limit on automatic mail to one address).
pub fn may_tell(sent_last_hour: u32, config: &Settings) -> bool {
    sent_last_hour < config.automation.ack_limit_per_hour.max(1) * 4
}

/// The ticket id an agent mail is about (for the subject of warnings).
pub fn ticket_label(id: TicketId, config: &Settings) -> String {
    format!("[{} #{}]", config.desk.subject_tag, id.0)
}
