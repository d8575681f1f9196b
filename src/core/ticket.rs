//! The ticket state machine: takes the current ticket (if any), an inbound
//! mail with its classification and threading decision, and `now`; returns the
//! new ticket and the effects (message to store, events to log, mails to
//! queue). No I/O and no clock inside.

use crate::core::agent::{
    MailContext, agent_mail, apply_commands, assign, canned, choose_assignee, may_tell, notifications,
};
use crate::core::classify::{Classification, Sender};
use crate::core::model::InboundMessage;
use crate::core::model::{Direction, Event, Mailbox, MessageKind, MessageRecord, Status, Ticket, TicketId};
use crate::core::outgoing::{OutgoingMail, fill};
use crate::core::reply::{Command, extract, parse_reply};
use crate::core::settings::{Agent, AssignStrategy, Settings};
use crate::core::thread::{Decision, Outcome};
use crate::core::token::Signer;
use jiff::Timestamp;
use serde_json::json;

/// What the shell knows that the state machine needs.
#[derive(Clone, Debug)]
pub struct ApplyContext<'a> {
    /// The configuration in force.
    pub config: &'a Settings,
    /// Signs our Message-IDs.
    pub signer: &'a Signer,
    /// Arrival time.
    pub now: Timestamp,
    /// The mailbox (by name) the mail came through.
    pub mailbox: &'a str,
    /// Acknowledgements sent to this sender within the last hour.
    pub acks_last_hour: u32,
    /// Whether the sender is suppressed after hard bounces.
    pub sender_suppressed: bool,
    /// A unique value for generated Message-IDs.
    pub nonce: String,
    /// Open tickets per agent (for assignment).
    pub loads: std::collections::HashMap<String, u32>,
    /// The agent the new ticket's queue assigned last (round robin).
    pub last_round_robin: Option<String>,
    /// Set when the From is an agent's address without proof: (agent name, why not).
    pub forged_agent: Option<(String, String)>,
    /// The latest public update of the ticket, for `status` requests.
    pub latest_update: Option<String>,
    /// Whether the sender is proven (a token of ours for this ticket, or a
    /// trusted DKIM/DMARC pass): only proven mail brings Cc addresses in. `Err` says why not.
    pub sender_proof: Result<String, String>,
    /// Mails of each purpose sent to each agent within the last hour of real
    /// time, keyed `purpose:address` (`notification:alice@example.com`): rate limits.
    pub agent_mail_last_hour: std::collections::HashMap<String, u32>,
    /// The conversation so far (an existing ticket's messages), for summaries.
    pub history: Vec<crate::core::summary::Turn>,
    /// The mail is history (backfilled, older than `backfill_window`): it is
    /// nobody's work now, so no rule or queue assigns it (an archive's
    /// tickets would fill every agent's `max_open`).
    pub archived: bool,
}

/// The result of applying a mail.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The ticket after the change.
    pub ticket: Ticket,
    /// Whether the ticket was created by this mail.
    pub created: bool,
    /// The stored message.
    pub message: MessageRecord,
    /// Events to append to the ticket's log.
    pub events: Vec<Event>,
    /// Mails to queue.
    pub mails: Vec<OutgoingMail>,
    /// The agent a queue's round robin picked, to remember for the next ticket.
    pub round_robin: Option<(String, String)>,
    /// An agent's `#merge` and `#split`, in order: they change another
    /// ticket too, so the shell runs them once this change is applied.
    pub merges: Vec<Command>,
}

/// Most bytes of a mail's text its stored record keeps: a record is read
/// whole by every view of its ticket, and the raw mail keeps all of it.
pub const MAX_STORED_TEXT: usize = 1 << 20;

/// `text` as a record keeps it: past [`MAX_STORED_TEXT`] cut at a line (or a
/// character) with a note of how much more the raw mail holds.
pub fn stored_text(text: &str) -> String {
    if text.len() <= MAX_STORED_TEXT {
        return text.to_string();
    }
    let end = text.floor_char_boundary(MAX_STORED_TEXT);
    let end = text[..end].rfind('\n').map_or(end, |i| i + 1);
    format!(
        "{}\n[… {} more bytes of this mail's text are not shown here; the mail is kept whole]\n",
        &text[..end],
        text.len() - end
    )
}

/// The stored record of an inbound mail.
fn inbound_record(
    msg: &InboundMessage,
    from: &Mailbox,
    message_key: &str,
    now: Timestamp,
    kind: MessageKind,
) -> MessageRecord {
    MessageRecord {
        message_id: msg
            .message_id
            .clone()
            .unwrap_or_else(|| format!("{message_key}@postdesk.invalid")),
        from: from.clone(),
        to: msg.to.iter().chain(msg.cc.iter()).cloned().collect(),
        date: now,
        direction: Direction::Inbound,
        kind,
        subject: msg.subject.clone(),
        text: stored_text(&msg.text),
        raw_key: Some(message_key.to_string()),
        auto_reason: None,
        attachments: msg.attachments.clone(),
        flagged: None,
        language: msg.language.clone(),
        sentiment: Some(msg.sentiment),
        channel: None,
        merged_from: None,
    }
}

/// The `message` event of an inbound message record.
fn message_event(message: &MessageRecord, actor: &str) -> Event {
    let mut e = Event::new(
        message.date,
        "message",
        actor,
        &[
            ("direction", json!("inbound")),
            ("message_id", json!(message.message_id)),
            ("message_kind", json!(message.kind)),
        ],
    );
    // How it read, for the reports' sentiment figures.
    if let Some(s) = message.sentiment {
        e.detail.insert("sentiment".into(), json!(s.value()));
    }
    e
}

impl ApplyContext<'_> {
    /// Mails of `purpose` sent to `address` within the last hour.
    pub fn sent_to_agent(&self, purpose: &str, address: &str) -> u32 {
        self.agent_mail_last_hour
            .get(&format!("{purpose}:{address}"))
            .copied()
            .unwrap_or(0)
    }

    /// The part of the context the mail builders need.
    pub fn mail(&self) -> MailContext<'_> {
        MailContext {
            config: self.config,
            signer: self.signer,
            now: self.now,
            nonce: &self.nonce,
        }
    }
}

/// Applies an inbound mail. `existing` is the ticket the decision names
/// (for `Existing`), `new_id` the number to use when a ticket is created.
pub fn apply_inbound(
    existing: Option<Ticket>,
    new_id: TicketId,
    msg: &InboundMessage,
    class: &Classification,
    decision: &Decision,
    message_key: &str,
    cx: &ApplyContext<'_>,
) -> Applied {
    let now = cx.now;
    let from = msg
        .from
        .clone()
        .unwrap_or_else(|| Mailbox::new(None, "unknown@invalid"));
    let actor = from.email.clone();
    let kind = match (&class.sender, &class.auto, class.bounce) {
        (_, _, true) | (_, Some(_), _) => MessageKind::Auto,
        (Sender::Agent(_), _, _) => MessageKind::Agent,
        _ => MessageKind::Customer,
    };
    let message = MessageRecord {
        auto_reason: class
            .auto
            .clone()
            .or_else(|| class.bounce.then(|| "bounce".to_string())),
        flagged: cx
            .forged_agent
            .as_ref()
            .map(|(name, why)| format!("From is agent {name}'s address but unproven: {why}")),
        ..inbound_record(msg, &from, message_key, now, kind)
    };
    let mut events = Vec::new();
    let mut mails = Vec::new();

    let (mut ticket, created) = match (decision.outcome, existing) {
        (Outcome::Existing(_), Some(mut t)) => {
            if kind == MessageKind::Customer {
                if t.language.is_none() {
                    t.language = msg.language.clone();
                }
                if let Some(before) = t.sentiment {
                    t.sentiment_trend = Some(crate::core::sentiment::Score::of(
                        msg.sentiment.value() - before.value(),
                    ));
                }
                t.sentiment = Some(msg.sentiment);
            }
            (t, false)
        }
        (outcome, old) => {
            let mut t = new_ticket(new_id, msg, &from, cx);
            events.push(Event::new(
                now,
                "created",
                &actor,
                &[("queue", json!(t.queue)), ("mailbox", json!(cx.mailbox))],
            ));
            let cc: Vec<Mailbox> = participants_of(msg, cx.config)
                .into_iter()
                .filter(|m| m.email != from.email)
                .collect();
            take_participants(&mut t, cc, &actor, cx, &mut events);
            if let (Outcome::NewLinked(old_id), _) = (outcome, old) {
                t.linked.push(old_id);
                events.push(Event::new(
                    now,
                    "linked",
                    "system",
                    &[("ticket", json!(old_id.0)), ("reason", json!(decision.reason))],
                ));
            }
            (t, true)
        }
    };

    // Who hears of a rule's match: (the rules, the `notify` targets).
    let mut rule_notify: Option<(Vec<String>, Vec<String>)> = None;
    if created {
        let routing = crate::core::route::route(msg, cx.mailbox, &cx.config.rules);
        let matched = routing.matched();
        if !matched.is_empty() && !routing.actions.notify.is_empty() {
            rule_notify = Some((matched.clone(), routing.actions.notify.clone()));
        }
        if !matched.is_empty() {
            let a = &routing.actions;
            if let Some(q) = &a.queue {
                ticket.queue = q.clone();
            }
            if let Some(p) = a.priority {
                ticket.priority = p;
            }
            if a.kind.is_some() {
                ticket.kind = a.kind.clone();
            }
            for t in &a.tags {
                ticket.tag(t);
            }
            events.push(Event::new(
                now,
                "routed",
                "system",
                &[
                    ("rules", json!(matched)),
                    ("queue", json!(ticket.queue)),
                    ("priority", json!(ticket.priority.as_str())),
                    ("type", json!(ticket.kind)),
                    ("tags", json!(ticket.tags)),
                ],
            ));
            if let Some(agent) = &a.assignee
                && cx.forged_agent.is_none()
                && !cx.archived
            {
                assign(&mut ticket, agent, "system", "rule", now, &mut events);
            }
        }
    }
    let mut event = message_event(&message, &actor);
    event.detail.insert("thread_rule".into(), json!(decision.rule));
    events.push(event);

    if !created {
        // A customer answer brings the ticket back to work.
        let sender_is_customer = matches!(class.sender, Sender::Customer) && class.auto.is_none() && !class.bounce;
        // Rules `on = "reply"`: an angry follow-up can raise the priority,
        // tag it, hand it on or tell the queue's lead. Priority only rises.
        if sender_is_customer && cx.forged_agent.is_none() {
            let routing = crate::core::route::route_reply(msg, cx.mailbox, &cx.config.rules);
            let matched = routing.matched();
            if !matched.is_empty() {
                let a = &routing.actions;
                let before = ticket.priority;
                if let Some(p) = a.priority.filter(|p| *p > ticket.priority) {
                    ticket.priority = p;
                    events.push(Event::new(
                        now,
                        "priority",
                        "system",
                        &[
                            ("from", json!(before.as_str())),
                            ("to", json!(p.as_str())),
                            ("reason", json!(format!("rule {}", matched.join(", ")))),
                        ],
                    ));
                }
                for t in &a.tags {
                    ticket.tag(t);
                }
                events.push(Event::new(
                    now,
                    "routed",
                    "system",
                    &[
                        ("rules", json!(matched)),
                        ("on", json!("reply")),
                        ("priority", json!(ticket.priority.as_str())),
                        ("tags", json!(ticket.tags)),
                    ],
                ));
                if let Some(agent) = a
                    .assignee
                    .as_ref()
                    .filter(|x| ticket.assignee.as_ref() != Some(*x) && !cx.archived)
                {
                    assign(&mut ticket, agent, "system", "rule", now, &mut events);
                }
                if !a.notify.is_empty() {
                    rule_notify = Some((matched.clone(), a.notify.clone()));
                }
            }
        }
        // History reopens nothing: it was answered, or not, long ago.
        if sender_is_customer && !cx.archived && matches!(ticket.status, Status::Resolved | Status::Pending) {
            let from_status = ticket.status;
            ticket.status = Status::Open;
            events.push(Event::new(
                now,
                "status",
                &actor,
                &[
                    ("from", json!(from_status.as_str())),
                    ("to", json!("open")),
                    ("reason", json!("customer replied")),
                ],
            ));
            // One survey per resolution: a reopened ticket is asked again when
            // it is resolved again (the earlier rating stays in the event log).
            if from_status == Status::Resolved {
                ticket.survey_sent = false;
                ticket.csat = None;
            }
        }
        // A participant may bring others in by Cc (a stranger may not), and
        // only with proven mail: anyone can write a participant's From.
        if ticket.is_participant(&from.email) {
            let new: Vec<Mailbox> = participants_of(msg, cx.config)
                .into_iter()
                .filter(|m| !ticket.is_participant(&m.email))
                .collect();
            take_participants(&mut ticket, new, &actor, cx, &mut events);
        }
    }
    // History older than the ticket's last change (found in a later import)
    // moves neither its update time back nor what our next reply answers.
    let latest = created || !cx.archived || now >= ticket.updated_at;
    ticket.updated_at = if latest { now } else { ticket.updated_at };
    let customer_mail = matches!(class.sender, Sender::Customer) && class.auto.is_none() && !class.bounce;
    if customer_mail
        && latest
        && let Some(id) = &msg.message_id
    {
        ticket.last_public_message_id = Some(id.clone());
    }

    if created && cx.config.automation.acknowledge {
        let refusal = match &cx.forged_agent {
            Some((name, _)) => Some(format!("sender uses agent {name}'s address")),
            None => ack_refusal(class, cx),
        };
        match refusal {
            Some(why) => events.push(Event::new(now, "ack_suppressed", "system", &[("reason", json!(why))])),
            None => {
                // Articles that may answer it: listed, and `solved` may close it.
                if !msg.articles.is_empty() {
                    ticket.suggested = msg.articles.iter().map(|a| a.slug.clone()).collect();
                    events.push(Event::new(
                        now,
                        "suggested",
                        "system",
                        &[("articles", json!(ticket.suggested))],
                    ));
                }
                let mail = acknowledgement(&ticket, msg, cx);
                events.push(Event::new(
                    now,
                    "ack_queued",
                    "system",
                    &[("message_id", json!(mail.message_id)), ("to", json!(mail.recipients()))],
                ));
                mails.push(mail);
            }
        }
    }

    let mail_cx = cx.mail();
    if let Some((matched, targets)) = &rule_notify {
        let lead = cx.config.queue(&ticket.queue).and_then(|q| q.lead.clone());
        let mut told: Vec<String> = Vec::new();
        let body = format!(
            "Rule {} matched {} on ticket #{}.\nQueue {} · priority {} · status {} · assignee {}\nFrom: {}\nReads as: sentiment {:+.2}\n\n{}\n",
            matched.join(", "),
            if created { "a new ticket" } else { "a customer's reply" },
            ticket.id,
            ticket.queue,
            ticket.priority.as_str(),
            ticket.status.as_str(),
            ticket.assignee.as_deref().unwrap_or("nobody"),
            crate::core::outgoing::format_mailbox(&from),
            msg.sentiment.value(),
            msg.text.trim_end(),
        );
        for target in targets {
            let address = match target.as_str() {
                "lead" => lead.clone(),
                a => Some(a.to_string()),
            };
            let Some(address) = address.filter(|a| !told.contains(a)) else {
                continue;
            };
            let mail = crate::core::sla::plain_mail(
                &ticket,
                &address,
                &format!("Rule {}: {}", matched.join(", "), ticket.subject),
                &body,
                "rule_notice",
                300 + told.len(),
                &mail_cx,
            );
            told.push(address);
            mails.push(mail);
        }
        if !told.is_empty() {
            events.push(Event::new(
                now,
                "notified",
                "system",
                &[
                    ("to", json!(told)),
                    ("reason", json!(format!("rule {}", matched.join(", ")))),
                ],
            ));
        }
    }
    let mut round_robin = None;
    if created && ticket.assignee.is_none() && cx.forged_agent.is_none() && !cx.archived {
        if let Some(agent) = choose_assignee(&ticket.queue, cx.config, &cx.loads, cx.last_round_robin.as_deref()) {
            let how = match cx.config.queue(&ticket.queue).map(|q| q.assign) {
                Some(AssignStrategy::RoundRobin) => {
                    round_robin = Some((ticket.queue.clone(), agent.name.clone()));
                    "round_robin"
                }
                _ => "least_open",
            };
            assign(&mut ticket, &agent.name, "system", how, now, &mut events);
        } else if cx
            .config
            .queue(&ticket.queue)
            .is_some_and(|q| q.assign != AssignStrategy::None)
        {
            events.push(Event::new(
                now,
                "unassigned",
                "system",
                &[("reason", json!("every agent of the queue is at max_open"))],
            ));
        }
    }
    // Mail under an agent's address without proof is no customer's news: the
    // agent hears of it in a (rate-limited) security warning instead.
    if customer_mail && cx.forged_agent.is_none() {
        for n in notifications(&ticket, msg, created, &cx.history, &mail_cx) {
            let limit = cx.config.automation.notification_limit_per_hour;
            let agent = n.to.first().map(|m| m.email.clone()).unwrap_or_default();
            if cx.sent_to_agent("notification", &agent) >= limit {
                events.push(Event::new(
                    now,
                    "notification_suppressed",
                    "system",
                    &[
                        ("to", json!(agent)),
                        (
                            "reason",
                            json!(format!("rate limit: {limit} notifications per hour reached")),
                        ),
                    ],
                ));
                continue;
            }
            events.push(Event::new(
                now,
                "notified",
                "system",
                &[("to", json!(n.recipients())), ("message_id", json!(n.message_id))],
            ));
            mails.push(n);
        }
    }
    if let Some((name, why)) = &cx.forged_agent {
        events.push(Event::new(
            now,
            "forged_agent",
            &actor,
            &[("agent", json!(name)), ("reason", json!(why))],
        ));
        let limit = cx.config.automation.ack_limit_per_hour;
        let agent = cx.config.agent_by_name_or_email(name);
        if let Some(agent) = agent
            && cx.sent_to_agent("security_warning", &agent.emails[0]) >= limit
        {
            events.push(Event::new(
                now,
                "warning_suppressed",
                "system",
                &[
                    ("to", json!(agent.emails[0])),
                    (
                        "reason",
                        json!(format!("rate limit: {limit} security warnings per hour reached")),
                    ),
                ],
            ));
        } else if let Some(agent) = agent {
            let body = format!(
                "A mail with your address in From reached ticket #{} without proof that you sent it
({why}).
It was stored as customer mail; no command was run and nothing was relayed.

Subject: {}
Message-ID: <{}>

If you sent it, answer the notification mail of the ticket instead of writing a new mail.",
                ticket.id, msg.subject, message.message_id
            );
            mails.push(agent_mail(
                &ticket,
                agent,
                &cx.config.desk.name,
                &format!("Security warning: mail sent as you ({})", ticket.subject),
                &body,
                "security_warning",
                true,
                1009,
                None,
                &mail_cx,
            ));
        }
    }

    Applied {
        ticket,
        created,
        message,
        events,
        mails,
        round_robin,
        merges: Vec::new(),
    }
}

/// Applies an authenticated agent's reply: quotes stripped, commands run, the
/// rest relayed to the requester and participants (or, with `#note`, kept
/// internal and sent to the other agents on the ticket).
pub fn apply_agent_reply(
    mut ticket: Ticket,
    msg: &InboundMessage,
    agent: &Agent,
    proof: &str,
    message_key: &str,
    cx: &ApplyContext<'_>,
) -> Applied {
    let now = cx.now;
    let config = cx.config;
    let mail_cx = cx.mail();
    // HTML-only replies lose their quote in the document, before they are text.
    let extracted = extract(msg.unquoted_html_text.as_deref().unwrap_or(&msg.text));
    let snapshot = ticket.clone();
    let mut parsed = parse_reply(&extracted.text, &|name| canned(name, &snapshot, config, agent));
    // Belt and braces: nothing of ours and no agent address reaches a customer.
    parsed.body = scrub(&parsed.body, config, cx.signer);
    // Text in the mail but none of it found: relay nothing and say so at once.
    let unclear = parsed.body.is_empty() && parsed.commands.is_empty() && extracted.had_text;
    let note = parsed.commands.contains(&Command::Note);
    let public = !note && !parsed.body.is_empty();
    let kind = if note { MessageKind::Note } else { MessageKind::Agent };
    let from = msg.from.clone().unwrap_or_else(|| Mailbox::new(None, &agent.emails[0]));
    let message = MessageRecord {
        text: parsed.body.clone(),
        ..inbound_record(msg, &from, message_key, now, kind)
    };
    let mut event = message_event(&message, &agent.name);
    event.detail.insert("verified_by".into(), json!(proof));
    let mut events = vec![event];
    let mut mails = Vec::new();
    if !ticket.agents.contains(&agent.name) {
        ticket.agents.push(agent.name.clone());
    }
    // Commands first: `#cc add` reaches this reply's recipients, `#status` wins over "replied means open".
    let status_before = ticket.status;
    let assignee_before = ticket.assignee.clone();
    let (command_events, mut errors) = apply_commands(&mut ticket, &parsed.commands, agent, config, now);
    events.extend(command_events);
    // `#assign` hands the ticket to someone else: they hear of it now, with a
    // reply address of their own, not only when the customer writes again.
    let conversation = crate::core::summary::followed_by(
        &cx.history,
        if public {
            crate::core::summary::Who::Agent
        } else {
            crate::core::summary::Who::Note
        },
        &parsed.body,
    );
    if let Some((notice, event)) = assignment_notice(
        &ticket,
        assignee_before.as_deref(),
        &agent.name,
        config,
        &conversation,
        &mail_cx,
    ) {
        events.push(event);
        mails.push(notice);
    }
    errors.extend(parsed.errors.iter().cloned());
    let survey = (status_before != Status::Resolved
        && ticket.status == Status::Resolved
        && config.automation.csat
        && !ticket.survey_sent
        && ticket.csat.is_none())
    .then(|| {
        ticket.survey_sent = true;
        crate::core::sla::customer_mail_with(
            &ticket,
            &config.templates.survey,
            "survey",
            &mail_cx,
            &[(
                "survey.link",
                crate::core::agent::survey_links(&ticket, config, cx.signer),
            )],
        )
    });
    if public {
        if let Some((other, at)) = ticket.last_agent_reply.clone()
            && other != agent.name
            && now.as_second() - at.as_second() < config.automation.collision_window.as_secs() as i64
        {
            let minutes = (now.as_second() - at.as_second()) / 60;
            events.push(Event::new(now, "collision", &agent.name, &[("other", json!(other))]));
            mails.push(agent_mail(
                &ticket,
                agent,
                &config.desk.name,
                &format!("Another reply went out ({})", ticket.subject),
                &format!(
                    "{other} replied to the customer on ticket #{} {minutes} minute(s) before you.
Your reply was sent as well.",
                    ticket.id
                ),
                "collision",
                true,
                1007,
                None,
                &mail_cx,
            ));
        }
        let mut recipients = vec![ticket.requester.clone()];
        recipients.extend(ticket.participants.iter().cloned());
        let support = config.from_for(&ticket.mailbox).email;
        let mut body = parsed.body.clone();
        body.push_str(&crate::core::agent::status_line(ticket.id, config, cx.signer));
        body.push_str(&format!(
            "

{}
",
            cx.signer.body_token(ticket.id)
        ));
        let relay = OutgoingMail {
            ticket: ticket.id,
            purpose: "relay".into(),
            from: Mailbox::new(Some(format!("{} via {}", agent.name, config.desk.name)), &support),
            to: recipients,
            reply_to: config
                .automation
                .plus_addressing
                .then(|| cx.signer.plus_address(&support, ticket.id)),
            subject: crate::core::subject::tagged(&ticket.subject, &config.desk.subject_tag, ticket.id.0),
            body,
            message_id: cx
                .signer
                .message_id(ticket.id, &format!("{}r", cx.nonce), &config.desk.message_id_domain),
            in_reply_to: ticket.last_public_message_id.clone(),
            references: ticket.last_public_message_id.iter().cloned().collect(),
            auto_submitted: false,
            date: now,
            loop_value: crate::core::classify::loop_header_value(config),
            attachments: msg.attachment_parts.clone(),
        };
        events.push(Event::new(
            now,
            "relayed",
            &agent.name,
            &[
                ("message_id", json!(relay.message_id)),
                ("to", json!(relay.recipients())),
            ],
        ));
        if ticket.first_response_at.is_none() {
            ticket.first_response_at = Some(now);
            // The deadline in force when it was met: reports judge by it, whatever changes later.
            events.push(Event::new(
                now,
                "first_response",
                &agent.name,
                &[("due", json!(ticket.sla.first_response_due))],
            ));
        }
        if ticket.status == Status::New {
            ticket.status = Status::Open;
            events.push(Event::new(
                now,
                "status",
                &agent.name,
                &[
                    ("from", json!("new")),
                    ("to", json!("open")),
                    ("reason", json!("agent replied")),
                ],
            ));
        }
        if ticket.assignee.is_none() {
            assign(&mut ticket, &agent.name, &agent.name, "first reply", now, &mut events);
        }
        ticket.last_agent_reply = Some((agent.name.clone(), now));
        ticket.last_public_message_id = Some(relay.message_id.clone());
        mails.push(relay);
    } else if note {
        let mut others: Vec<&Agent> = Vec::new();
        let mut names: Vec<String> = ticket.agents.iter().chain(ticket.assignee.iter()).cloned().collect();
        if ticket.assignee.is_none() {
            names.extend(config.queue_agents(&ticket.queue).iter().map(|a| a.name.clone()));
        }
        for name in &names {
            if let Some(a) = config.agent_by_name_or_email(name)
                && a.name != agent.name
                && !others.iter().any(|o| o.name == a.name)
            {
                others.push(a);
            }
        }
        events.push(Event::new(
            now,
            "note",
            &agent.name,
            &[("to", json!(others.iter().map(|a| &a.name).collect::<Vec<_>>()))],
        ));
        for (i, other) in others.into_iter().enumerate() {
            mails.push(agent_mail(
                &ticket,
                other,
                &format!("{} (internal note) via {}", agent.name, config.desk.name),
                &format!("Note: {}", ticket.subject),
                &parsed.body,
                "note",
                false,
                500 + i,
                None,
                &mail_cx,
            ));
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
            let done = if public {
                "was relayed to the customer"
            } else {
                "was not relayed"
            };
            let body = format!(
                "Your reply to ticket #{} {done}, but these lines were not understood:

{}

Nothing of this message reached the customer.",
                ticket.id,
                errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join(
                    "
"
                )
            );
            mails.push(agent_mail(
                &ticket,
                agent,
                &config.desk.name,
                &format!("Commands not understood ({})", ticket.subject),
                &body,
                "command_error",
                true,
                1008,
                msg.message_id.as_deref(),
                &mail_cx,
            ));
        }
    }
    if unclear {
        events.push(Event::new(
            now,
            "reply_unclear",
            &agent.name,
            &[
                ("message_id", json!(message.message_id)),
                (
                    "reason",
                    json!("no text of the agent's could be told apart from the quoted mail"),
                ),
            ],
        ));
        if may_tell(cx.acks_last_hour, config) {
            let first_lines: Vec<&str> = msg.text.lines().filter(|l| !l.trim().is_empty()).take(6).collect();
            let body = format!(
                "Your reply to ticket #{} was not sent to the customer: postdesk could not tell your words apart from the quoted mail (everything in it looked quoted or was our own text).

It began:
{}

Please send your answer again, written above the quoted text (or with the quote removed). Commands on the first lines work as before.",
                ticket.id,
                first_lines.iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
            );
            mails.push(agent_mail(
                &ticket,
                agent,
                &config.desk.name,
                &format!("Not sent: could not read your reply ({})", ticket.subject),
                &body,
                "reply_unclear",
                true,
                1010,
                msg.message_id.as_deref(),
                &mail_cx,
            ));
        }
    }
    if let Some(mut survey) = survey {
        // The survey follows the relay in the customer's thread.
        survey.in_reply_to = ticket.last_public_message_id.clone();
        survey.references = ticket.last_public_message_id.iter().cloned().collect();
        events.push(Event::new(
            now,
            "survey_sent",
            "system",
            &[("message_id", json!(survey.message_id))],
        ));
        mails.push(survey);
    }
    ticket.updated_at = now;
    Applied {
        ticket,
        created: false,
        message,
        events,
        mails,
        round_robin: None,
        merges: parsed
            .commands
            .iter()
            .filter(|c| matches!(c, Command::Merge(_) | Command::Split(_)))
            .cloned()
            .collect(),
    }
}

/// The relayed text with nothing of ours left: lines with our marker or a
/// token of ours go, and every agent address becomes `[address removed]`.
fn scrub(body: &str, config: &Settings, signer: &Signer) -> String {
    let ours = |line: &str| {
        line.contains(crate::core::reply::REPLY_MARKER)
            || signer.find_body_token(line).is_some()
            || line
                .split(|c: char| c.is_whitespace() || "<>\"(),;".contains(c))
                .any(|w| signer.parse_plus_address(w).is_some() || signer.parse_message_id(w).is_some())
    };
    let mut out: Vec<String> = Vec::new();
    for line in body.lines() {
        if ours(line) {
            continue;
        }
        let mut line = line.to_string();
        for agent in &config.agents {
            for address in &agent.emails {
                // One pass per address (positions agree: lowercasing ASCII keeps lengths).
                let lower = line.to_ascii_lowercase();
                if !lower.contains(address.as_str()) {
                    continue;
                }
                let mut rebuilt = String::with_capacity(line.len());
                let mut last = 0;
                for (at, _) in lower.match_indices(address.as_str()) {
                    rebuilt.push_str(&line[last..at]);
                    rebuilt.push_str("[address removed]");
                    last = at + address.len();
                }
                rebuilt.push_str(&line[last..]);
                line = rebuilt;
            }
        }
        out.push(line);
    }
    out.join("\n").trim().to_string()
}

/// A customer's rating reply to a survey, or a `status` request: answered
/// without reopening the ticket or touching its clocks. `None` for anything else.
pub fn self_service(
    ticket: &Ticket,
    msg: &InboundMessage,
    class: &Classification,
    message_key: &str,
    cx: &ApplyContext<'_>,
) -> Option<Applied> {
    if !(matches!(class.sender, Sender::Customer) && class.auto.is_none() && !class.bounce && cx.forged_agent.is_none())
    {
        return None;
    }
    let now = cx.now;
    let from = msg.from.clone()?;
    if !ticket.is_participant(&from.email) {
        return None;
    }
    let mut t = ticket.clone();
    let mut events = Vec::new();
    let mut mails = Vec::new();
    let mail_cx = cx.mail();
    if t.survey_sent
        && t.csat.is_none()
        && matches!(t.status, Status::Resolved | Status::Closed)
        && let Some((n, comment)) = crate::core::sla::rating(&msg.text)
    {
        t.csat = Some(n);
        events.push(Event::new(
            now,
            "csat",
            &from.email,
            &[("rating", json!(n)), ("comment", json!(comment))],
        ));
    } else if !t.suggested.is_empty()
        && matches!(t.status, Status::New | Status::Open | Status::Pending)
        && t.last_agent_reply.is_none()
        && says_solved(&msg.text)
    {
        // An article answered it: resolved with no agent needed.
        let from_status = t.status;
        t.status = Status::Resolved;
        events.push(Event::new(
            now,
            "deflected",
            &from.email,
            &[("articles", json!(t.suggested))],
        ));
        events.push(Event::new(
            now,
            "status",
            &from.email,
            &[
                ("from", json!(from_status.as_str())),
                ("to", json!("resolved")),
                ("reason", json!("the customer said a suggested article solved it")),
            ],
        ));
    } else if crate::core::sla::is_status_request(&msg.text) {
        let update = cx
            .latest_update
            .clone()
            .unwrap_or_else(|| "(no reply from us yet)".into());
        let mail = crate::core::sla::customer_mail_with(
            &t,
            &cx.config.templates.status_reply,
            "status_reply",
            &mail_cx,
            &[("ticket.latest_update", update)],
        );
        events.push(Event::new(
            now,
            "status_request",
            &from.email,
            &[("message_id", json!(mail.message_id))],
        ));
        mails.push(mail);
    } else {
        return None;
    }
    let message = inbound_record(msg, &from, message_key, now, MessageKind::Customer);
    events.insert(0, message_event(&message, &from.email));
    t.updated_at = now;
    Some(Applied {
        ticket: t,
        created: false,
        message,
        events,
        mails,
        round_robin: None,
        merges: Vec::new(),
    })
}

/// Records a bounce on the ticket of the mail it reports on.
pub fn apply_bounce(mut ticket: Ticket, msg: &InboundMessage, message_key: &str, now: Timestamp) -> Applied {
    let from = msg
        .from
        .clone()
        .unwrap_or_else(|| Mailbox::new(None, "mailer-daemon@invalid"));
    let report = msg.delivery_report.clone().unwrap_or_default();
    let mut events = Vec::new();
    events.push(Event::new(
        now,
        "message",
        &from.email,
        &[
            ("direction", json!("inbound")),
            ("message_id", json!(msg.message_id)),
            ("message_kind", json!("auto")),
        ],
    ));
    for (rcpt, action, status) in &report.recipients {
        events.push(Event::new(
            now,
            "bounce",
            &from.email,
            &[
                ("recipient", json!(rcpt)),
                ("action", json!(action)),
                ("status", json!(status)),
                ("original_message_id", json!(report.original_message_id)),
            ],
        ));
    }
    ticket.updated_at = now;
    let message = MessageRecord {
        to: msg.to.clone(),
        auto_reason: Some("bounce".into()),
        ..inbound_record(msg, &from, message_key, now, MessageKind::Auto)
    };
    Applied {
        ticket,
        created: false,
        message,
        events,
        mails: Vec::new(),
        round_robin: None,
        merges: Vec::new(),
    }
}

fn new_ticket(id: TicketId, msg: &InboundMessage, from: &Mailbox, cx: &ApplyContext<'_>) -> Ticket {
    let queue = cx
        .config
        .address(cx.mailbox)
        .map(|m| m.queue.clone())
        .unwrap_or_else(|| "general".into());
    let subject = crate::core::subject::normalize(&msg.subject);
    let subject = if subject.is_empty() {
        "(no subject)".to_string()
    } else {
        subject
    };
    Ticket {
        last_public_message_id: msg.message_id.clone(),
        language: msg.language.clone(),
        sentiment: Some(msg.sentiment),
        intent: msg.intent.clone(),
        customer: msg.customer.clone(),
        ..Ticket::new(id, &subject, from.clone(), cx.mailbox, &queue, cx.now)
    }
}

/// Adds Cc addresses of a mail to the ticket: as participants when the mail
/// is proven, else held for an agent to accept (`#cc add`); never more than
/// `[limits] max_participants` of either, the rest refused. Each with an event.
fn take_participants(
    ticket: &mut Ticket,
    candidates: Vec<Mailbox>,
    actor: &str,
    cx: &ApplyContext<'_>,
    events: &mut Vec<Event>,
) {
    let max = cx.config.limits.max_participants;
    let now = cx.now;
    let mut refused = 0usize;
    let mut held = Vec::new();
    for m in candidates {
        match &cx.sender_proof {
            Ok(_) if ticket.participants.len() < max => {
                ticket.held_participants.retain(|h| h.email != m.email);
                events.push(Event::new(
                    now,
                    "participant_added",
                    actor,
                    &[("email", json!(m.email))],
                ));
                ticket.participants.push(m);
            }
            Err(_) if ticket.held_participants.len() < max => {
                if !ticket.held_participants.iter().any(|h| h.email == m.email) {
                    held.push(m.email.clone());
                    ticket.held_participants.push(m);
                }
            }
            _ => refused += 1,
        }
    }
    if !held.is_empty() {
        let why = cx.sender_proof.clone().err().unwrap_or_default();
        events.push(Event::new(
            now,
            "participants_held",
            actor,
            &[("emails", json!(held)), ("reason", json!(why))],
        ));
    }
    if refused > 0 {
        events.push(Event::new(
            now,
            "participants_refused",
            actor,
            &[
                ("count", json!(refused)),
                ("reason", json!(format!("over the limit of {max} participants"))),
            ],
        ));
    }
}

/// The people in To and Cc who become participants: not us, not agents, no duplicates.
fn participants_of(msg: &InboundMessage, config: &Settings) -> Vec<Mailbox> {
    let mut out: Vec<Mailbox> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for m in msg.to.iter().chain(msg.cc.iter()) {
        if config.is_own_address(&m.email) || config.agent_by_email(&m.email).is_some() {
            continue;
        }
        if seen.insert(m.email.as_str()) {
            out.push(m.clone());
        }
    }
    out
}

fn ack_refusal(class: &Classification, cx: &ApplyContext<'_>) -> Option<String> {
    if class.bounce {
        return Some("sender is a bounce".into());
    }
    if let Some(a) = &class.auto {
        return Some(format!("sender is automatic ({a})"));
    }
    match &class.sender {
        Sender::Own(why) => return Some(format!("our own mail ({why})")),
        Sender::Agent(name) => return Some(format!("sender is agent {name}")),
        Sender::Customer => {}
    }
    if cx.sender_suppressed {
        return Some("sender address hard-bounced recently".into());
    }
    let limit = cx.config.automation.ack_limit_per_hour;
    if cx.acks_last_hour >= limit {
        return Some(format!(
            "rate limit: {limit} acknowledgements per hour to this address reached"
        ));
    }
    None
}

/// The acknowledgement's list of suggested articles (`[templates.suggestions]`
/// in the ticket's language), with links when `public_url` is set; empty
/// when none were suggested.
fn suggestions_block(ticket: &Ticket, msg: &InboundMessage, config: &Settings) -> String {
    if msg.articles.is_empty() {
        return String::new();
    }
    let mut list = String::new();
    for a in &msg.articles {
        list.push_str(&format!("- {}\n", crate::core::outgoing::sanitize(&a.title)));
        if let Some(base) = &config.desk.public_url {
            list.push_str(&format!("  {base}/help/{}\n", a.slug));
        }
    }
    let values = crate::core::agent::template_values(ticket, config, None).set("articles", list.trim_end().to_string());
    let mut block = fill(
        &config.templates.suggestions.localized(ticket.language.as_deref()).body,
        &values,
    );
    if !block.ends_with('\n') {
        block.push('\n');
    }
    block
}

/// Whether a customer's reply says a suggested article solved it: the word
/// `solved` (or German `gelöst`) alone on its first line, with at most a few
/// words of thanks, quotes aside.
pub fn says_solved(text: &str) -> bool {
    let unquoted = crate::core::reply::strip_quotes(text);
    let Some(first) = unquoted.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return false;
    };
    let words: Vec<String> = first
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    let solved = words.first().is_some_and(|w| w == "solved" || w == "gelöst");
    let courteous = words[1.min(words.len())..]
        .iter()
        .all(|w| ["thanks", "thank", "you", "danke", "vielen", "dank", "many", "a", "lot"].contains(&w.as_str()));
    solved && courteous && words.len() <= 4
}

fn acknowledgement(ticket: &Ticket, msg: &InboundMessage, cx: &ApplyContext<'_>) -> OutgoingMail {
    let config = cx.config;
    let values = crate::core::agent::template_values(ticket, config, None);
    let template = config.templates.acknowledgement.localized(ticket.language.as_deref());
    let subject_text = fill(&template.subject, &values);
    let subject = if crate::core::subject::find_tag(&subject_text, &config.desk.subject_tag) == Some(ticket.id.0) {
        subject_text
    } else {
        crate::core::subject::tagged(&subject_text, &config.desk.subject_tag, ticket.id.0)
    };
    let mut body = fill(&template.body, &values);
    let block = suggestions_block(ticket, msg, config);
    if body.contains("{{suggestions}}") {
        body = body.replace("{{suggestions}}", block.trim_end());
    } else if !block.is_empty() {
        if !body.ends_with('\n') {
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&block);
    }
    if !body.ends_with('\n') {
        body.push('\n');
    }
    body.push_str(&crate::core::agent::status_line(ticket.id, config, cx.signer));
    body.push_str(&format!("\n{}\n", cx.signer.body_token(ticket.id)));
    let mut references = msg.references.clone();
    if let Some(id) = &msg.message_id
        && !references.contains(id)
    {
        references.push(id.clone());
    }
    OutgoingMail {
        ticket: ticket.id,
        purpose: "acknowledgement".into(),
        from: config.from_for(&ticket.mailbox),
        to: vec![ticket.requester.clone()],
        reply_to: None,
        subject,
        body,
        message_id: cx
            .signer
            .message_id(ticket.id, &cx.nonce, &config.desk.message_id_domain),
        in_reply_to: msg.message_id.clone(),
        references,
        auto_submitted: true,
        date: cx.now,
        loop_value: crate::core::classify::loop_header_value(config),
        attachments: Vec::new(),
    }
}

/// The mail telling the agent a ticket was just assigned to (by `by`, an
/// agent's or an API token's name) that it is theirs, and its `notified`
/// event; none when the assignee did not change, is no agent, or is `by`.
pub fn assignment_notice(
    ticket: &Ticket,
    assignee_before: Option<&str>,
    by: &str,
    config: &Settings,
    conversation: &[crate::core::summary::Turn],
    mail_cx: &MailContext,
) -> Option<(OutgoingMail, Event)> {
    if ticket.assignee.as_deref() == assignee_before {
        return None;
    }
    let new = ticket
        .assignee
        .as_deref()
        .and_then(|a| config.agent_by_name_or_email(a))
        .filter(|new| new.name != by)?;
    let summary = crate::core::summary::summary(ticket, conversation, mail_cx.now);
    let body = format!(
        "{by} assigned ticket #{} to you.\n\nQueue {} · priority {} · status {}\nFrom: {}\nSubject: {}\n\n{summary}{}{}",
        ticket.id,
        ticket.queue,
        ticket.priority.as_str(),
        ticket.status.as_str(),
        crate::core::outgoing::format_mailbox(&ticket.requester),
        ticket.subject,
        if summary.is_empty() { "" } else { "\n" },
        crate::core::reply::agent_footer(),
    );
    let notice = agent_mail(
        ticket,
        new,
        &format!("{by} via {}", config.desk.name),
        &ticket.subject,
        &body,
        "notification",
        false,
        1011,
        None,
        mail_cx,
    );
    let event = Event::new(
        mail_cx.now,
        "notified",
        "system",
        &[
            ("to", json!(notice.recipients())),
            ("message_id", json!(notice.message_id)),
            ("reason", json!("assigned")),
        ],
    );
    Some((notice, event))
}

#[cfg(test)]
mod tests {
    use super::says_solved;
    use super::{MAX_STORED_TEXT, stored_text};

    #[test]
    fn a_records_text_is_cut_at_a_line_past_a_mebibyte_saying_how_much_more_there_is() {
        let short = "Hello\nworld\n";
        assert_eq!(stored_text(short), short);
        let line = "Der Drucker druckt nicht, schon wieder nicht. Grüße\n";
        let long = line.repeat(2 * MAX_STORED_TEXT / line.len());
        let kept = stored_text(&long);
        let (body, note) = kept.rsplit_once("\n[… ").unwrap();
        assert!(
            body.len() <= MAX_STORED_TEXT && body.len() > MAX_STORED_TEXT - line.len(),
            "{}",
            body.len()
        );
        assert!(long.starts_with(body), "the start of the text");
        assert!(body.ends_with("Grüße\n"), "whole lines");
        let more: usize = note.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(body.len() + more, long.len());
        // One line longer than the limit is cut at a character.
        let wide = "ü".repeat(MAX_STORED_TEXT);
        let kept = stored_text(&wide);
        assert!(kept.len() < MAX_STORED_TEXT + 100 && kept.starts_with("üü"));
    }

    #[test]
    fn solved_is_the_word_alone_with_at_most_thanks() {
        for yes in [
            "solved",
            "Solved!",
            "SOLVED, thanks",
            "solved - thank you",
            "Gelöst, danke",
            "solved\n\n> quoted question",
        ] {
            assert!(says_solved(yes), "{yes:?}");
        }
        for no in [
            "",
            "not solved",
            "solved? no, it still fails",
            "It is not solved at all",
            "Thanks, solved",
            "solved the first part but the second still breaks",
        ] {
            assert!(!says_solved(no), "{no:?}");
        }
    }
}
