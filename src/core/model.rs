//! Domain types shared by the core and the shell: tickets, messages, events.
//!
//! These are plain values. The JSON field names are part of the user-facing
//! contract (`show --json`, `export`), so renaming a field is a breaking change.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A ticket number: small, increasing, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TicketId(pub u64);

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a ticket is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// No agent reply yet.
    New,
    /// An agent is working on it.
    Open,
    /// Waiting on the customer: SLA clocks pause.
    Pending,
    /// An agent says it is done; a customer reply within the reopen window reopens it.
    Resolved,
    /// Final: a later reply opens a new, linked ticket.
    Closed,
}

impl Status {
    /// The lowercase name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Open => "open",
            Status::Pending => "pending",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "new" => Status::New,
            "open" => Status::Open,
            "pending" => Status::Pending,
            "resolved" => Status::Resolved,
            "closed" => Status::Closed,
            _ => return None,
        })
    }
}

/// How urgent a ticket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Can wait.
    Low,
    /// The default.
    Normal,
    /// Needs attention soon.
    High,
    /// Needs attention now.
    Urgent,
}

impl Priority {
    /// The lowercase name used in config and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

/// An email address with its optional display name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    /// Display name, if the mail gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The address, lowercased.
    pub email: String,
}

impl Mailbox {
    /// A mailbox with a lowercased address.
    pub fn new(name: Option<String>, email: &str) -> Mailbox {
        Mailbox {
            name: name.filter(|n| !n.trim().is_empty()),
            email: email.trim().to_ascii_lowercase(),
        }
    }
}

/// SLA deadlines of a ticket (filled by the SLA issue; empty until a policy applies).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sla {
    /// Name of the policy in force.
    pub policy: Option<String>,
    /// When the first agent reply is due.
    pub first_response_due: Option<Timestamp>,
    /// When the next agent reply is due.
    pub next_response_due: Option<Timestamp>,
    /// When resolution is due.
    pub resolution_due: Option<Timestamp>,
    /// Whether the first-response deadline was missed.
    pub first_response_breached: bool,
    /// Whether the resolution deadline was missed.
    pub resolution_breached: bool,
    /// Whether the current next-response deadline was missed.
    #[serde(default)]
    pub next_response_breached: bool,
    /// When the first-response warning is due.
    #[serde(default)]
    pub first_response_warn: Option<Timestamp>,
    /// When the next-response warning is due.
    #[serde(default)]
    pub next_response_warn: Option<Timestamp>,
    /// When the resolution warning is due.
    #[serde(default)]
    pub resolution_warn: Option<Timestamp>,
    /// Targets already warned about: `first_response`, `next_response`, `resolution`.
    #[serde(default)]
    pub warned: Vec<String>,
    /// Since when the clocks are paused (status pending).
    #[serde(default)]
    pub paused_at: Option<Timestamp>,
    /// Business seconds the clocks were paused in earlier pauses: a new
    /// policy's deadlines keep this credit.
    #[serde(default)]
    pub paused_credit_secs: u64,
}

/// A ticket without its messages and events (those live in their own trees).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The ticket number.
    pub id: TicketId,
    /// Subject of the first mail, without `Re:` prefixes or our tag.
    pub subject: String,
    /// Lifecycle status.
    pub status: Status,
    /// Priority.
    pub priority: Priority,
    /// Queue name.
    pub queue: String,
    /// Type or category, when a rule or an agent set one.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Free tags.
    pub tags: Vec<String>,
    /// Assigned agent (their name), if any.
    pub assignee: Option<String>,
    /// Who opened the ticket; replies go to them.
    pub requester: Mailbox,
    /// Other people who get replies (Cc of the customer's mail).
    pub participants: Vec<Mailbox>,
    /// How the ticket came in: `email`.
    pub channel: String,
    /// The support mailbox (by name) the ticket arrived through.
    pub mailbox: String,
    /// When the first mail arrived.
    pub created_at: Timestamp,
    /// When anything last changed.
    pub updated_at: Timestamp,
    /// When the first public agent reply went out.
    pub first_response_at: Option<Timestamp>,
    /// When it was last resolved.
    pub resolved_at: Option<Timestamp>,
    /// When it was closed.
    pub closed_at: Option<Timestamp>,
    /// Tickets this one is linked to (a reopen of a closed ticket, a stranger's mail).
    pub linked: Vec<TicketId>,
    /// SLA deadlines.
    pub sla: Sla,
    /// Satisfaction rating 1–5, once the customer gave one.
    pub csat: Option<u8>,
    /// Agents (by name) who replied or wrote notes: internal notes go to them.
    #[serde(default)]
    pub agents: Vec<String>,
    /// The last public agent reply: who and when (collision warnings).
    #[serde(default)]
    pub last_agent_reply: Option<(String, Timestamp)>,
    /// The Message-ID of the latest mail in the customer-facing thread (our relays answer it).
    #[serde(default)]
    pub last_public_message_id: Option<String>,
    /// Since when the ticket waits on the customer.
    #[serde(default)]
    pub pending_since: Option<Timestamp>,
    /// Whether the pending reminder went out.
    #[serde(default)]
    pub pending_reminded: bool,
    /// Whether a satisfaction survey went out.
    #[serde(default)]
    pub survey_sent: bool,
    /// Addresses that unproven mail put in Cc: not copied on replies until an
    /// agent accepts them with `#cc add`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_participants: Vec<Mailbox>,
    /// The customer's language (ISO 639-1): of the first customer message in
    /// which it could be told. Rules match it; templates follow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// How the customer's latest message sounds, −1 … 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentiment: Option<crate::core::sentiment::Score>,
    /// The latest customer message's score minus the one before it (falling: getting angrier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentiment_trend: Option<crate::core::sentiment::Score>,
    /// What the customer wants, as the intent model read the first mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<crate::core::intent::Intent>,
    /// The requester's CRM record when the ticket was opened (`[integrations.customer_lookup]`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub customer: std::collections::BTreeMap<String, String>,
    /// The knowledge-base articles its acknowledgement suggested (slugs):
    /// the customer's reply `solved` then resolves it as self-served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggested: Vec<String>,
    /// The ticket this one was merged into: its messages, participants and
    /// events show there, and mail to this number lands there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<TicketId>,
    /// Tickets merged into this one, oldest merge first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<TicketId>,
    /// The store's revision of this record when it was read (0: not stored
    /// yet). A store shared by several instances refuses a write made from
    /// an older revision, so two changes to one ticket never overwrite each
    /// other; the embedded store has one writer and leaves it 0.
    #[serde(skip)]
    pub revision: u64,
}

impl Ticket {
    /// Adds a tag it does not have yet; true when it was added.
    pub fn tag(&mut self, tag: &str) -> bool {
        let new = !self.tags.iter().any(|t| t == tag);
        if new {
            self.tags.push(tag.to_string());
        }
        new
    }

    /// A new email ticket: status new, priority normal, nothing else set yet.
    pub fn new(id: TicketId, subject: &str, requester: Mailbox, mailbox: &str, queue: &str, now: Timestamp) -> Ticket {
        Ticket {
            id,
            subject: subject.to_string(),
            status: Status::New,
            priority: Priority::Normal,
            queue: queue.to_string(),
            kind: None,
            tags: Vec::new(),
            assignee: None,
            requester,
            participants: Vec::new(),
            channel: "email".into(),
            mailbox: mailbox.to_string(),
            created_at: now,
            updated_at: now,
            first_response_at: None,
            resolved_at: None,
            closed_at: None,
            linked: Vec::new(),
            sla: Sla::default(),
            csat: None,
            agents: Vec::new(),
            last_agent_reply: None,
            last_public_message_id: None,
            pending_since: None,
            pending_reminded: false,
            survey_sent: false,
            held_participants: Vec::new(),
            language: None,
            sentiment: None,
            sentiment_trend: None,
            intent: None,
            customer: Default::default(),
            suggested: Vec::new(),
            merged_into: None,
            merged: Vec::new(),
            revision: 0,
        }
    }

    /// Whether the ticket counts towards its assignee's open load.
    pub fn is_active(&self) -> bool {
        matches!(self.status, Status::New | Status::Open | Status::Pending)
    }

    /// Whether `email` is the requester or a participant.
    pub fn is_participant(&self, email: &str) -> bool {
        let email = email.to_ascii_lowercase();
        self.requester.email == email || self.participants.iter().any(|p| p.email == email)
    }
}

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received by postdesk.
    Inbound,
    /// Sent by postdesk.
    Outbound,
}

/// Who or what a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// Mail from a customer (or anyone not recognised as an agent).
    Customer,
    /// Mail from an agent.
    Agent,
    /// An internal note.
    Note,
    /// Automatic mail: auto-replies, bulk, list mail, bounces.
    Auto,
    /// Mail postdesk generated (acknowledgements and the like).
    System,
}

/// One message of a ticket, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Message-ID without angle brackets (generated for mail that had none).
    pub message_id: String,
    /// Sender.
    pub from: Mailbox,
    /// Recipients (To and Cc).
    pub to: Vec<Mailbox>,
    /// Date of the mail (arrival for inbound, queueing for outbound).
    pub date: Timestamp,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Customer, agent, note, auto, system.
    pub kind: MessageKind,
    /// Subject as sent.
    pub subject: String,
    /// Plain-text body (HTML converted), for display.
    pub text: String,
    /// Key of the raw mail in the raw tree, for inbound mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_key: Option<String>,
    /// Why the message is kind `auto`, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_reason: Option<String>,
    /// Attachment names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
    /// Why the message is flagged (a forged agent From), when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flagged: Option<String>,
    /// The language of an inbound message's text (ISO 639-1), when it could be told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// How an inbound message sounds, −1 … 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentiment: Option<crate::core::sentiment::Score>,
    /// How an inbound message came, when not by mail (`web`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// In a view of a ticket: the ticket merged into it that this message
    /// is stored on (never set in the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<TicketId>,
}

/// One entry of a ticket's append-only event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened.
    pub at: Timestamp,
    /// What happened: `created`, `message`, `status`, `ack_queued`, `mail_sent`, `mail_failed`, `bounce`, `linked`, ...
    pub kind: String,
    /// Who did it: an email address, an agent name, or `system`.
    pub actor: String,
    /// Details, varying by kind.
    #[serde(flatten)]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// An event with the given details.
    pub fn new(at: Timestamp, kind: &str, actor: &str, detail: &[(&str, serde_json::Value)]) -> Event {
        Event {
            at,
            kind: kind.to_string(),
            actor: actor.to_string(),
            detail: detail.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        }
    }
}

/// A knowledge-base article suggested for a mail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suggested {
    /// Its slug (the address `/help/SLUG`).
    pub slug: String,
    /// Its title.
    pub title: String,
}

/// A received mail, reduced to what postdesk decides on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundMessage {
    /// Message-ID without `<>`, if it had one.
    pub message_id: Option<String>,
    /// In-Reply-To ids, without `<>`.
    pub in_reply_to: Vec<String>,
    /// References ids, oldest first, without `<>`.
    pub references: Vec<String>,
    /// From.
    pub from: Option<Mailbox>,
    /// To.
    pub to: Vec<Mailbox>,
    /// Cc.
    pub cc: Vec<Mailbox>,
    /// Subject, decoded.
    pub subject: String,
    /// Date header.
    pub date: Option<Timestamp>,
    /// Every header as (lowercase name, unfolded raw value).
    pub headers: Vec<(String, String)>,
    /// Plain-text body (HTML converted, with its structure, when there is no text part).
    pub text: String,
    /// For an HTML-only mail: its text with the quoted part removed in the
    /// document (Gmail, Apple, Outlook, Yahoo, Thunderbird quote containers).
    pub unquoted_html_text: Option<String>,
    /// Attachment file names (or content types when unnamed).
    pub attachments: Vec<String>,
    /// Attachments with their bytes, for relaying.
    pub attachment_parts: Vec<crate::core::outgoing::Attachment>,
    /// Top-level content type, lowercase, like `multipart/report`.
    pub content_type: String,
    /// `report-type` parameter of a `multipart/report`.
    pub report_type: Option<String>,
    /// Delivery status notification contents, when the mail is one.
    pub delivery_report: Option<DeliveryReport>,
    /// SHA-256 over From, Date, Subject and body: dedupes mail without a Message-ID.
    pub content_hash: String,
    /// The language of the text (ISO 639-1), when it can be told (mail a person wrote).
    pub language: Option<String>,
    /// How the text sounds, −1 (furious) … 1 (delighted).
    pub sentiment: crate::core::sentiment::Score,
    /// What the writer wants, when an intent model is trained (mail a person
    /// wrote that opens a ticket).
    pub intent: Option<crate::core::intent::Intent>,
    /// The requester's CRM record (the configured fields), when it was looked up.
    pub customer: std::collections::BTreeMap<String, String>,
    /// Knowledge-base articles that may answer it (`[knowledge]`), best first,
    /// for mail a customer wrote that opens a ticket.
    pub articles: Vec<Suggested>,
    /// Size of the raw mail in bytes.
    pub size: usize,
}

/// What a DSN (RFC 3464) says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Message-ID of the mail that bounced, from its returned headers.
    pub original_message_id: Option<String>,
    /// Each recipient with its action (`failed`, `delayed`, ...) and status (`5.1.1`).
    pub recipients: Vec<(String, String, String)>,
}

impl InboundMessage {
    /// The first value of a header, by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every id this mail refers to, most recent first: In-Reply-To, then References newest to oldest.
    pub fn referenced_ids(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for id in self.in_reply_to.iter().chain(self.references.iter().rev()) {
            if !out.contains(&id.as_str()) {
                out.push(id);
            }
        }
        out
    }
}
