//! The validated settings the core decides by: the desk's identity and
//! addresses, rules, agents, queues, SLA policies, calendars, templates,
//! automation and limits. Plain types; the TOML adapter
//! (`adapters::config`) reads and checks the file and fills them.

use crate::core::model::Mailbox;
use serde::Deserialize;
use std::time::Duration;

/// Everything in the configuration that the core reads.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Who the desk is and which addresses it answers on.
    pub desk: Desk,
    /// `[automation]`.
    pub automation: Automation,
    /// `[templates]`.
    pub templates: Templates,
    /// `[security]`.
    pub security: Security,
    /// `[limits]`.
    pub limits: Limits,
    /// `[[agent]]`.
    pub agents: Vec<Agent>,
    /// `[[queue]]`.
    pub queues: Vec<Queue>,
    /// `[[rule]]`, in order.
    pub rules: Vec<Rule>,
    /// `[calendar.NAME]`, plus the built-in `24x7`.
    pub calendars: std::collections::BTreeMap<String, crate::core::calendar::Calendar>,
    /// `[sla.NAME]` policies.
    pub sla: Vec<SlaPolicy>,
    /// `[web]`: the customer portal and the team's pages.
    pub web: Web,
    /// `[language] candidates`: the languages mail is told among.
    pub languages: crate::core::language::Languages,
}

/// `[web]`: which pages the daemon serves, and their abuse limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Web {
    /// The `/new` form and the signed `/t/…` status pages (needs `public_url`).
    pub portal: bool,
    /// The team's dashboard behind an emailed magic-link login.
    pub dashboard: bool,
    /// Requests the `/new` form takes from one client address an hour.
    pub new_per_ip_per_hour: u32,
    /// Requests the `/new` form takes for one email address an hour.
    pub new_per_address_per_hour: u32,
    /// How long a sign-in link works, in seconds.
    pub login_link_seconds: i64,
    /// Leading zero bits the `/new` form's proof of work must reach (0: none asked).
    pub proof_of_work: u32,
}

impl Default for Web {
    fn default() -> Web {
        Web {
            portal: false,
            dashboard: false,
            new_per_ip_per_hour: 10,
            new_per_address_per_hour: 3,
            login_link_seconds: 15 * 60,
            proof_of_work: 0,
        }
    }
}

/// The desk's identity (`[instance]`, `[http] public_url`) and its support addresses.
#[derive(Clone, Debug)]
pub struct Desk {
    /// Shown in From names and templates.
    pub name: String,
    /// The word in the subject tag: `[Support #1042]`.
    pub subject_tag: String,
    /// IANA time zone for people-facing times.
    pub timezone: String,
    /// Domain of the Message-IDs we generate.
    pub message_id_domain: String,
    /// The public base URL of the HTTP server (`[http]` or `[web] public_url`),
    /// for signed survey and status links.
    pub public_url: Option<String>,
    /// The support addresses, one per `[[mailbox]]`, at least one.
    pub addresses: Vec<DeskAddress>,
}

/// One support address customers write to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeskAddress {
    /// The mailbox's short name, used for positions and logs.
    pub mailbox: String,
    /// The address, lowercase.
    pub address: String,
    /// Queue for new tickets from this mailbox.
    pub queue: String,
}

/// One SLA policy.
#[derive(Clone, Debug)]
pub struct SlaPolicy {
    /// Name (the table key).
    pub name: String,
    /// The priority it applies to.
    pub priority: crate::core::model::Priority,
    /// Only tickets in this queue (a queue-specific policy wins over a general one).
    pub queue: Option<String>,
    /// The calendar its targets count in.
    pub calendar: String,
    /// First agent reply.
    pub first_response: Option<Duration>,
    /// Agent reply after each customer message that follows an agent reply.
    pub next_response: Option<Duration>,
    /// Resolution.
    pub resolution: Option<Duration>,
    /// Warn when this percentage of a target has passed.
    pub warn_at: u32,
    /// What a breach does.
    pub on_breach: OnBreach,
}

/// Escalation on a breach.
#[derive(Clone, Debug, Default)]
pub struct OnBreach {
    /// Addresses told (besides the queue lead and the assignee).
    pub notify: Vec<String>,
    /// Raise the priority one step.
    pub raise_priority: bool,
    /// Reassign to this agent.
    pub reassign: Option<String>,
    /// Move to this queue.
    pub queue: Option<String>,
}

impl Settings {
    /// The SLA policy for a ticket: queue-specific first, then by priority.
    pub fn sla_policy(&self, priority: crate::core::model::Priority, queue: &str) -> Option<&SlaPolicy> {
        self.sla
            .iter()
            .find(|p| p.priority == priority && p.queue.as_deref() == Some(queue))
            .or_else(|| self.sla.iter().find(|p| p.priority == priority && p.queue.is_none()))
    }

    /// A calendar by name (`24x7` is built in).
    pub fn calendar(&self, name: &str) -> &crate::core::calendar::Calendar {
        self.calendars
            .get(name)
            .unwrap_or(&crate::core::calendar::Calendar::TwentyFourSeven)
    }

    /// The calendar of an SLA policy by name (`24x7` without one, or for a
    /// policy no longer configured).
    pub fn policy_calendar(&self, policy: Option<&str>) -> &crate::core::calendar::Calendar {
        policy
            .and_then(|p| self.sla.iter().find(|x| x.name == p))
            .map_or(&crate::core::calendar::Calendar::TwentyFourSeven, |p| {
                self.calendar(&p.calendar)
            })
    }
}

/// One routing rule: every condition must hold; then its actions apply.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Name, shown by `explain` and in events.
    pub name: String,
    /// Conditions; all must hold (none: always).
    pub when: Vec<Condition>,
    /// Actions.
    pub set: RuleActions,
    /// Let later rules add more.
    pub cont: bool,
    /// Evaluated on a customer's follow-up to an existing ticket (`on =
    /// "reply"`) instead of on a new ticket.
    pub on_reply: bool,
}

/// What a condition looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// The subject.
    Subject,
    /// The plain-text body.
    Body,
    /// The sender's address.
    From,
    /// Any To address.
    To,
    /// Any Cc address.
    Cc,
    /// The mailbox name the mail came through.
    Mailbox,
    /// A header, by lowercase name.
    Header(String),
    /// A field of the requester's CRM record (`[integrations.customer_lookup]`).
    Customer(String),
}

/// One condition of a rule.
#[derive(Clone, Debug)]
pub enum Condition {
    /// Some pattern matches the field (a list means any); `negate` for `not_` keys.
    Matches {
        /// The field.
        field: Field,
        /// The key as written, for explanations.
        key: String,
        /// Compiled patterns.
        patterns: Vec<regex::Regex>,
        /// `not_`-prefixed: no pattern may match.
        negate: bool,
    },
    /// Whether the mail has attachments.
    HasAttachment(bool),
    /// The text's sentiment is below (`sentiment_below`) or above (`sentiment_above`) a threshold.
    Sentiment {
        /// `sentiment_below`, else `sentiment_above`.
        below: bool,
        /// −1 … 1.
        threshold: f64,
    },
    /// The intent model read one of these labels with at least this
    /// confidence (`not_intent`: it did not).
    Intent {
        /// Labels.
        labels: Vec<String>,
        /// `when.intent_min_confidence` (0 without it).
        min_confidence: f64,
        /// `not_intent`.
        negate: bool,
    },
    /// The text's language is one of these codes (`not_language`: none of them).
    Language {
        /// ISO 639-1 codes, lower case.
        codes: Vec<String>,
        /// `not_language`.
        negate: bool,
    },
}

/// The actions of a rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleActions {
    /// Queue.
    pub queue: Option<String>,
    /// Priority.
    pub priority: Option<crate::core::model::Priority>,
    /// Type.
    pub kind: Option<String>,
    /// Tags to add.
    pub tags: Vec<String>,
    /// Assignee (agent name).
    pub assignee: Option<String>,
    /// Who hears of the match by mail: addresses, or `lead` (the queue's lead).
    pub notify: Vec<String>,
}

/// `[automation]`.
#[derive(Clone, Debug)]
pub struct Automation {
    /// Send an acknowledgement for each new ticket.
    pub acknowledge: bool,
    /// How long after resolution a customer reply reopens the ticket (after that: a new linked ticket).
    pub reopen_window: Duration,
    /// At most this many acknowledgements per recipient per hour.
    pub ack_limit_per_hour: u32,
    /// At most this many notifications of customer mail per agent per hour
    /// (security warnings: `ack_limit_per_hour`); beyond it they are recorded, not sent.
    pub notification_limit_per_hour: u32,
    /// Notifications carry the ticket's signed plus-address as Reply-To (off for providers without subaddressing).
    pub plus_addressing: bool,
    /// A second agent replying within this time of another is told a reply already went out.
    pub collision_window: Duration,
    /// A backfilled mail (`ingest` of files, `POST /api/ingest?at=`) dated
    /// within this of now is handled as if it arrived; an older one is
    /// history: recorded, threaded and routed, but assigned to nobody, told to
    /// nobody (mail, webhooks), and no SLA clock starts.
    pub backfill_window: Duration,
    /// Resolved tickets close after this long without customer mail.
    pub auto_close_resolved_after: Option<Duration>,
    /// Pending tickets get a reminder to the customer after this long.
    pub pending_reminder_after: Option<Duration>,
    /// Pending tickets close after this long without an answer.
    pub pending_close_after: Option<Duration>,
    /// Send a satisfaction survey when a ticket is resolved.
    pub csat: bool,
}

/// `[security]`.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// authserv-ids whose `Authentication-Results` (DKIM/DMARC pass) vouch for an agent's From.
    pub trusted_authserv_ids: Vec<String>,
}

/// `[templates]`.
#[derive(Clone, Debug)]
pub struct Templates {
    /// The acknowledgement of a new ticket.
    pub acknowledgement: Template,
    /// Reminder to a customer whose ticket waits on them.
    pub pending_reminder: Template,
    /// A pending ticket closed for want of an answer.
    pub pending_closed: Template,
    /// A resolved ticket closed.
    pub closed: Template,
    /// The satisfaction survey (`{{survey.link}}` is the signed link, when `[http] public_url` is set).
    pub survey: Template,
    /// The answer to a customer's `status` mail (`{{ticket.latest_update}}`).
    pub status_reply: Template,
    /// The knowledge-base block of an acknowledgement (`{{articles}}`, the
    /// list); put where the acknowledgement says `{{suggestions}}`, else after it.
    pub suggestions: Template,
    /// Canned responses for `#template NAME`, with `{{placeholders}}`.
    pub canned: std::collections::BTreeMap<String, String>,
}

/// A mail template with `{{placeholders}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// Subject (the ticket tag is added when missing).
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// Variants by language code (`[templates.acknowledgement.de]`).
    pub translations: std::collections::BTreeMap<String, Template>,
}

impl Template {
    /// The variant for the ticket's language, else this one.
    pub fn localized(&self, language: Option<&str>) -> &Template {
        language.and_then(|l| self.translations.get(l)).unwrap_or(self)
    }
}

/// `[limits]`: beyond these a mail is stored raw and quarantined, not parsed.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest mail in bytes.
    pub max_message_bytes: usize,
    /// Most MIME parts.
    pub max_parts: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Most participants (Cc) a ticket takes; more are refused and recorded.
    pub max_participants: usize,
    /// Most ids of In-Reply-To and References read from one mail (the first
    /// and the newest are kept), so a mail with 100,000 ids costs no more than one with 50.
    pub max_references: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: 25 * 1024 * 1024,
            max_parts: 500,
            max_headers: 1000,
            max_participants: 50,
            max_references: 50,
        }
    }
}

/// One `[[agent]]`.
#[derive(Clone, Debug)]
pub struct Agent {
    /// Name, used by `#assign` and shown to customers as "Name via Instance".
    pub name: String,
    /// Addresses the agent writes from, lowercased.
    pub emails: Vec<String>,
    /// Queues the agent works.
    pub queues: Vec<String>,
    /// Most open tickets assigned at once.
    pub max_open: Option<u32>,
}

/// One `[[queue]]`.
#[derive(Clone, Debug)]
pub struct Queue {
    /// Name.
    pub name: String,
    /// Assignment strategy.
    pub assign: AssignStrategy,
    /// Queue lead address, told on escalations.
    pub lead: Option<String>,
}

/// How new tickets in a queue get an assignee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignStrategy {
    /// In turn.
    RoundRobin,
    /// The agent with the fewest open tickets.
    LeastOpen,
    /// Nobody; the queue's agents are told.
    None,
}

impl Agent {
    /// The agent's name reduced to lowercase letters and digits: used in signed tokens.
    pub fn slug(&self) -> String {
        slug(&self.name)
    }
}

/// Lowercase ASCII letters and digits of a name.
pub fn slug(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

impl Settings {
    /// The agent by slug.
    pub fn agent_by_slug(&self, slug: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.slug() == slug)
    }

    /// The agent by name (case-insensitive) or address.
    pub fn agent_by_name_or_email(&self, who: &str) -> Option<&Agent> {
        let who = who.trim();
        self.agents
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(who) || a.slug() == slug(who))
            .or_else(|| self.agent_by_email(who))
    }

    /// The agents who work a queue.
    pub fn queue_agents(&self, queue: &str) -> Vec<&Agent> {
        self.agents
            .iter()
            .filter(|a| a.queues.iter().any(|q| q == queue))
            .collect()
    }

    /// The queue configuration by name.
    pub fn queue(&self, name: &str) -> Option<&Queue> {
        self.queues.iter().find(|q| q.name == name)
    }

    /// The agent that writes from `email`, if any.
    pub fn agent_by_email(&self, email: &str) -> Option<&Agent> {
        let email = email.to_ascii_lowercase();
        self.agents.iter().find(|a| a.emails.contains(&email))
    }

    /// Whether `email` is one of our own support addresses (or a plus-variant of one).
    pub fn is_own_address(&self, email: &str) -> bool {
        let email = email.to_ascii_lowercase();
        self.desk.addresses.iter().any(|m| {
            m.address == email || {
                let (local, domain) = split_address(&m.address);
                let (elocal, edomain) = split_address(&email);
                domain == edomain && elocal.split('+').next() == Some(local)
            }
        })
    }

    /// The support address of a mailbox, by the mailbox's name.
    pub fn address(&self, mailbox: &str) -> Option<&DeskAddress> {
        self.desk.addresses.iter().find(|m| m.mailbox == mailbox)
    }

    /// The From of mail we send for a mailbox.
    pub fn from_for(&self, mailbox: &str) -> Mailbox {
        let address = self
            .address(mailbox)
            .or(self.desk.addresses.first())
            .map(|m| m.address.clone())
            .unwrap_or_default();
        Mailbox::new(Some(self.desk.name.clone()), &address)
    }
}

/// Splits `local@domain`; the domain is empty when there is no `@`.
pub fn split_address(address: &str) -> (&str, &str) {
    match address.rsplit_once('@') {
        Some((l, d)) => (l, d),
        None => (address, ""),
    }
}
