//! Configuration: serde structs that reject unknown keys, then a validated
//! [`Config`] with every problem reported at once as `file:line:col: message`.
//!
//! [`parse`] is pure (text in, config or problems out); [`load`] reads the file.
//! Relative paths in the config are taken relative to the working directory.

use crate::model::Mailbox;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Exit code for a bad configuration (EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `[instance]`.
    pub instance: Instance,
    /// `[http]`.
    pub http: Http,
    /// `[[mailbox]]`, at least one.
    pub mailboxes: Vec<MailboxConfig>,
    /// `[outgoing]`.
    pub outgoing: Outgoing,
    /// `[automation]`.
    pub automation: Automation,
    /// `[templates]`.
    pub templates: Templates,
    /// `[security]`.
    pub security: Security,
    /// `[limits]`.
    pub limits: Limits,
    /// `[store]`.
    pub store: crate::store::StoreSettings,
    /// `[[agent]]`.
    pub agents: Vec<Agent>,
    /// `[[queue]]`.
    pub queues: Vec<Queue>,
    /// `[[rule]]`, in order.
    pub rules: Vec<Rule>,
    /// `[calendar.NAME]`, plus the built-in `24x7`.
    pub calendars: std::collections::BTreeMap<String, crate::calendar::Calendar>,
    /// `[sla.NAME]` policies.
    pub sla: Vec<SlaPolicy>,
}

/// One SLA policy.
#[derive(Clone, Debug)]
pub struct SlaPolicy {
    /// Name (the table key).
    pub name: String,
    /// The priority it applies to.
    pub priority: crate::model::Priority,
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

impl Config {
    /// The SLA policy for a ticket: queue-specific first, then by priority.
    pub fn sla_policy(&self, priority: crate::model::Priority, queue: &str) -> Option<&SlaPolicy> {
        self.sla
            .iter()
            .find(|p| p.priority == priority && p.queue.as_deref() == Some(queue))
            .or_else(|| self.sla.iter().find(|p| p.priority == priority && p.queue.is_none()))
    }

    /// A calendar by name (`24x7` is built in).
    pub fn calendar(&self, name: &str) -> &crate::calendar::Calendar {
        self.calendars
            .get(name)
            .unwrap_or(&crate::calendar::Calendar::TwentyFourSeven)
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
}

/// The actions of a rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleActions {
    /// Queue.
    pub queue: Option<String>,
    /// Priority.
    pub priority: Option<crate::model::Priority>,
    /// Type.
    pub kind: Option<String>,
    /// Tags to add.
    pub tags: Vec<String>,
    /// Assignee (agent name).
    pub assignee: Option<String>,
}

/// `[instance]`: who we are and where we keep data.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Shown in From names and templates.
    pub name: String,
    /// The word in the subject tag: `[Support #1042]`.
    pub subject_tag: String,
    /// Where the sled store lives.
    pub data_dir: PathBuf,
    /// IANA time zone for people-facing times.
    pub timezone: String,
    /// Signs reply tokens and Message-IDs.
    pub secret: SecretSource,
    /// Create the secret file with random bytes when it is missing.
    pub generate_secret: bool,
    /// Domain of the Message-IDs we generate.
    pub message_id_domain: String,
}

/// `[http]`.
#[derive(Clone, Debug)]
pub struct Http {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// The public base URL of the HTTP API, for signed survey links.
    pub public_url: Option<String>,
    /// Bearer token source; required when `listen` is not a loopback address.
    pub token: Option<SecretSource>,
}

/// One `[[mailbox]]`: a support address and where its mail comes from.
#[derive(Clone, Debug)]
pub struct MailboxConfig {
    /// Short name, used for positions and logs.
    pub name: String,
    /// The support address customers write to.
    pub address: String,
    /// Queue for new tickets from this mailbox.
    pub queue: String,
    /// IMAP or Maildir.
    pub source: SourceConfig,
}

/// Where a mailbox's mail comes from.
#[derive(Clone, Debug)]
pub enum SourceConfig {
    /// An IMAP folder.
    Imap(ImapConfig),
    /// A local Maildir.
    Maildir {
        /// The Maildir (with `new/`, `cur/`, `tmp/`).
        path: PathBuf,
    },
}

/// How a connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Implicit,
    /// Plain, then STARTTLS before login.
    Starttls,
    /// No TLS: only allowed to a loopback host.
    Plain,
}

/// `imap = { ... }` of a mailbox.
#[derive(Clone, Debug)]
pub struct ImapConfig {
    /// Server host name.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// PEM file of extra trusted CAs (private CAs).
    pub ca_file: Option<PathBuf>,
    /// Login name.
    pub username: String,
    /// Password source.
    pub password: SecretSource,
    /// Folder to read.
    pub folder: String,
    /// Folder to move processed mail to; `None` flags it `\Seen` instead.
    pub processed: Option<String>,
    /// Use IDLE when the server offers it.
    pub idle: bool,
    /// How often to poll when not idling.
    pub poll_interval: Duration,
    /// How many messages one UID FETCH asks for.
    pub batch_size: u32,
}

/// `[outgoing]`.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// SMTP or files.
    pub transport: Transport,
    /// How many attempts a temporary failure gets before the mail is marked failed.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt.
    pub retry_base: Duration,
}

/// How mail leaves.
#[derive(Clone, Debug)]
pub enum Transport {
    /// An SMTP submission server.
    Smtp(SmtpConfig),
    /// One `.eml` file per mail in a folder.
    File {
        /// The folder.
        path: PathBuf,
    },
}

/// `smtp = { ... }`.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    /// Server host name.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// PEM file of extra trusted CAs.
    pub ca_file: Option<PathBuf>,
    /// Login name, when the server wants AUTH.
    pub username: Option<String>,
    /// Password source, with `username`.
    pub password: Option<SecretSource>,
    /// Per-command timeout.
    pub timeout: Duration,
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

/// Where a secret comes from. Reading it is the shell's job ([`SecretSource::load`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file whose content (trimmed of trailing newlines) is the secret.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// A secret value that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl SecretSource {
    /// Reads the secret. An empty or blank one is an error, never "no secret":
    /// an empty token file must not switch the API's bearer check off.
    pub fn load(&self) -> Result<Secret, String> {
        let secret = match self {
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\r', '\n']).to_string()))
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?,
            SecretSource::Env(name) => std::env::var(name)
                .map(Secret)
                .map_err(|_| format!("environment variable {name} is not set"))?,
        };
        if secret.0.trim().is_empty() {
            return Err(match self {
                SecretSource::File(path) => format!("secret file {} is empty", path.display()),
                SecretSource::Env(name) => format!("environment variable {name} is empty"),
            });
        }
        Ok(secret)
    }
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

impl Config {
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
        self.mailboxes.iter().any(|m| {
            m.address == email || {
                let (local, domain) = split_address(&m.address);
                let (elocal, edomain) = split_address(&email);
                domain == edomain && elocal.split('+').next() == Some(local)
            }
        })
    }

    /// The mailbox configuration by name.
    pub fn mailbox(&self, name: &str) -> Option<&MailboxConfig> {
        self.mailboxes.iter().find(|m| m.name == name)
    }

    /// The From of mail we send for a mailbox.
    pub fn from_for(&self, mailbox: &str) -> Mailbox {
        let address = self.mailbox(mailbox).unwrap_or(&self.mailboxes[0]).address.clone();
        Mailbox::new(Some(self.instance.name.clone()), &address)
    }
}

/// Splits `local@domain`; the domain is empty when there is no `@`.
pub fn split_address(address: &str) -> (&str, &str) {
    match address.rsplit_once('@') {
        Some((l, d)) => (l, d),
        None => (address, ""),
    }
}

/// Everything wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Each problem with its position.
    pub problems: Vec<Problem>,
}

/// One problem at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file.display(), p.line, p.column, p.message)?;
        }
        Ok(())
    }
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        problems: vec![Problem {
            line: 1,
            column: 1,
            message: format!("cannot read config: {e}"),
        }],
    })?;
    parse(&text, path)
}

/// Parses and validates config text; `path` names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut v = Validator {
        text,
        problems: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let at = e.span().map(|s| s.start).unwrap_or(0);
            v.problem(at, e.message().trim().to_string());
            return Err(v.into_error(path));
        }
    };
    let config = v.validate(raw, path);
    match config {
        Some(c) if v.problems.is_empty() => Ok(c),
        _ => Err(v.into_error(path)),
    }
}

/// Parses `30s`, `15m`, `2h`, `7d`, `1w` and sums like `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0u64;
    let mut num = String::new();
    let mut saw_unit = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            saw_unit = false;
            continue;
        }
        if c == ' ' {
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => {
                return Err(format!("bad duration {s:?}: unknown unit {c:?} (use s, m, h, d, w)"));
            }
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("bad duration {s:?}: a number must come before {c:?}"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        num.clear();
        saw_unit = true;
    }
    if !saw_unit || !num.is_empty() {
        return Err(format!(
            "bad duration {s:?}: expected a number and a unit, like \"2h\" or \"7d\""
        ));
    }
    Ok(Duration::from_secs(total))
}

// ---------------------------------------------------------------------------
// Raw serde shapes.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    instance: Spanned<RawInstance>,
    #[serde(default)]
    http: Option<RawHttp>,
    #[serde(default)]
    mailbox: Vec<Spanned<RawMailbox>>,
    outgoing: Spanned<RawOutgoing>,
    #[serde(default)]
    automation: Option<RawAutomation>,
    #[serde(default)]
    templates: Option<RawTemplates>,
    #[serde(default)]
    limits: Option<RawLimits>,
    #[serde(default)]
    store: Option<Spanned<RawStore>>,
    #[serde(default)]
    security: Option<RawSecurity>,
    #[serde(default)]
    agent: Vec<Spanned<RawAgent>>,
    #[serde(default)]
    queue: Vec<Spanned<RawQueue>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    calendar: std::collections::BTreeMap<String, Spanned<RawCalendar>>,
    #[serde(default)]
    sla: std::collections::BTreeMap<String, Spanned<RawSla>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    #[serde(default = "default_tz")]
    timezone: Spanned<String>,
    #[serde(default)]
    hours: std::collections::BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    holidays: Vec<Spanned<String>>,
    holidays_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSla {
    priority: Option<Spanned<String>>,
    queue: Option<String>,
    #[serde(default = "default_calendar")]
    calendar: Spanned<String>,
    first_response: Option<Spanned<String>>,
    next_response: Option<Spanned<String>>,
    resolution: Option<Spanned<String>>,
    warn_at: Option<Spanned<String>>,
    on_breach: Option<Spanned<RawOnBreach>>,
}

fn default_calendar() -> Spanned<String> {
    Spanned::new(0..0, "24x7".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOnBreach {
    #[serde(default)]
    notify: Vec<Spanned<String>>,
    #[serde(default)]
    raise_priority: bool,
    reassign: Option<Spanned<String>>,
    queue: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    #[serde(default)]
    when: std::collections::BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    set: Option<Spanned<RawRuleSet>>,
    #[serde(default, rename = "continue")]
    cont: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleSet {
    queue: Option<Spanned<String>>,
    priority: Option<Spanned<String>>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    assignee: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    name: String,
    #[serde(default = "default_tag")]
    subject_tag: Spanned<String>,
    data_dir: String,
    #[serde(default = "default_tz")]
    timezone: Spanned<String>,
    secret_file: Option<String>,
    secret_env: Option<String>,
    #[serde(default)]
    generate_secret: bool,
    message_id_domain: Option<String>,
}

fn default_tag() -> Spanned<String> {
    Spanned::new(0..0, "Support".to_string())
}
fn default_tz() -> Spanned<String> {
    Spanned::new(0..0, "UTC".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default = "default_listen")]
    listen: Spanned<String>,
    public_url: Option<String>,
    token_file: Option<String>,
    token_env: Option<String>,
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8025".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailbox {
    name: Spanned<String>,
    address: Spanned<String>,
    #[serde(default = "default_queue")]
    queue: String,
    imap: Option<Spanned<RawImap>>,
    maildir: Option<RawMaildir>,
}

fn default_queue() -> String {
    "general".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImap {
    host: String,
    port: Option<u16>,
    #[serde(default = "default_tls")]
    tls: TlsMode,
    ca_file: Option<String>,
    username: String,
    password_file: Option<String>,
    password_env: Option<String>,
    #[serde(default = "default_folder")]
    folder: String,
    processed: Option<String>,
    #[serde(default = "yes")]
    idle: bool,
    poll_interval: Option<Spanned<String>>,
    batch_size: Option<u32>,
}

fn default_tls() -> TlsMode {
    TlsMode::Implicit
}
fn default_folder() -> String {
    "INBOX".into()
}
fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaildir {
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutgoing {
    smtp: Option<Spanned<RawSmtp>>,
    file: Option<RawFile>,
    max_attempts: Option<u32>,
    retry_base: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    #[serde(default = "default_smtp_tls")]
    tls: TlsMode,
    ca_file: Option<String>,
    username: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
    timeout: Option<Spanned<String>>,
}

fn default_smtp_tls() -> TlsMode {
    TlsMode::Starttls
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutomation {
    acknowledge: Option<bool>,
    reopen_window: Option<Spanned<String>>,
    ack_limit_per_hour: Option<u32>,
    notification_limit_per_hour: Option<u32>,
    plus_addressing: Option<bool>,
    collision_window: Option<Spanned<String>>,
    auto_close_resolved_after: Option<Spanned<String>>,
    pending_reminder_after: Option<Spanned<String>>,
    pending_close_after: Option<Spanned<String>>,
    csat: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplates {
    acknowledgement: Option<Spanned<RawTemplate>>,
    pending_reminder: Option<Spanned<RawTemplate>>,
    pending_closed: Option<Spanned<RawTemplate>>,
    closed: Option<Spanned<RawTemplate>>,
    survey: Option<Spanned<RawTemplate>>,
    status_reply: Option<Spanned<RawTemplate>>,
    #[serde(default)]
    canned: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    #[serde(default)]
    trusted_authserv_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    subject: Option<String>,
    body: Option<String>,
    body_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    backend: Option<Spanned<String>>,
    cache_mb: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_bytes: Option<usize>,
    max_parts: Option<usize>,
    max_headers: Option<usize>,
    max_participants: Option<usize>,
    max_references: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: Spanned<String>,
    email: Option<Spanned<String>>,
    #[serde(default)]
    emails: Vec<Spanned<String>>,
    #[serde(default)]
    queues: Vec<String>,
    max_open: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    name: Spanned<String>,
    #[serde(default = "default_assign")]
    assign: AssignStrategy,
    lead: Option<Spanned<String>>,
}

fn default_assign() -> AssignStrategy {
    AssignStrategy::None
}

/// The default acknowledgement.
pub const DEFAULT_ACK_SUBJECT: &str = "{{ticket.subject}}";
/// The default acknowledgement body.
pub const DEFAULT_ACK_BODY: &str = "Hello {{requester.name}},

thank you for writing to {{instance.name}}. We have opened ticket #{{ticket.id}}
for your request \"{{ticket.subject}}\" and will answer as soon as we can.

To add anything, just reply to this mail.

-- 
{{instance.name}}
";

/// The default pending reminder body.
pub const DEFAULT_REMINDER_BODY: &str = "Hello {{requester.name}},

we are waiting for your answer on ticket #{{ticket.id}} (\"{{ticket.subject}}\").
Just reply to this mail when you can.

-- 
{{instance.name}}
";
/// The default body when a pending ticket is closed.
pub const DEFAULT_PENDING_CLOSED_BODY: &str = "Hello {{requester.name}},

we have not heard back about ticket #{{ticket.id}} (\"{{ticket.subject}}\"), so we closed it.
If you still need help, reply to this mail and we will open a new ticket.

-- 
{{instance.name}}
";
/// The default body when a resolved ticket is closed.
pub const DEFAULT_CLOSED_BODY: &str = "Hello {{requester.name}},

ticket #{{ticket.id}} (\"{{ticket.subject}}\") is now closed. If you need anything
else, reply to this mail and we will open a new ticket.

-- 
{{instance.name}}
";
/// The default satisfaction survey body.
pub const DEFAULT_SURVEY_BODY: &str = "Hello {{requester.name}},

ticket #{{ticket.id}} (\"{{ticket.subject}}\") is resolved. How did we do?
Reply with a single number from 1 (poor) to 5 (excellent), and a comment if you like.
{{survey.link}}
-- 
{{instance.name}}
";
/// The default answer to a `status` mail.
pub const DEFAULT_STATUS_BODY: &str = "Hello {{requester.name}},

ticket #{{ticket.id}} (\"{{ticket.subject}}\") is {{ticket.status}}.

Latest update:
{{ticket.latest_update}}

-- 
{{instance.name}}
";

struct Validator<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, at: usize, message: String) {
        let at = at.min(self.text.len());
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        self.problems.push(Problem { line, column, message });
    }

    fn into_error(mut self, path: &Path) -> ConfigError {
        self.problems.sort_by_key(|p| (p.line, p.column));
        ConfigError {
            file: path.to_path_buf(),
            problems: self.problems,
        }
    }

    fn template(&mut self, raw: Option<Spanned<RawTemplate>>, subject: &str, body: &str) -> Template {
        let mut out = Template {
            subject: subject.into(),
            body: body.into(),
        };
        if let Some(t) = raw {
            let tspan = t.span();
            let t = t.into_inner();
            if let Some(s) = t.subject {
                out.subject = s;
            }
            match (t.body, t.body_file) {
                (Some(b), None) => out.body = b,
                (None, Some(f)) => match std::fs::read_to_string(&f) {
                    Ok(b) => out.body = b,
                    Err(e) => self.problem(tspan.start, format!("cannot read template body_file {f:?}: {e}")),
                },
                (Some(_), Some(_)) => self.problem(tspan.start, "template: give body or body_file, not both".into()),
                (None, None) => {}
            }
        }
        out
    }

    fn duration(&mut self, raw: &Option<Spanned<String>>, default: Duration) -> Duration {
        match raw {
            None => default,
            Some(s) => match parse_duration(s.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.problem(s.span().start, e);
                    default
                }
            },
        }
    }

    fn address(&mut self, raw: &Spanned<String>, what: &str) -> String {
        let a = raw.get_ref().trim().to_ascii_lowercase();
        let (local, domain) = split_address(&a);
        if local.is_empty() || domain.is_empty() || a.contains(char::is_whitespace) || a.contains(['<', '>', ',']) {
            self.problem(
                raw.span().start,
                format!(
                    "{what} {:?} is not an email address (expected local@domain)",
                    raw.get_ref()
                ),
            );
        }
        a
    }

    fn secret(&mut self, at: usize, file: &Option<String>, env: &Option<String>, what: &str) -> Option<SecretSource> {
        match (file, env) {
            (Some(f), None) => Some(SecretSource::File(PathBuf::from(f))),
            (None, Some(e)) => Some(SecretSource::Env(e.clone())),
            (Some(_), Some(_)) => {
                self.problem(at, format!("{what}: give either a _file or an _env, not both"));
                None
            }
            (None, None) => None,
        }
    }

    fn validate(&mut self, raw: RawConfig, path: &Path) -> Option<Config> {
        let inst_span = raw.instance.span();
        let ri = raw.instance.into_inner();
        let secret = match self.secret(inst_span.start, &ri.secret_file, &ri.secret_env, "instance secret") {
            Some(s) => s,
            None => {
                self.problem(
                    inst_span.start,
                    "[instance] needs secret_file or secret_env (the key that signs reply tokens)".into(),
                );
                SecretSource::Env(String::new())
            }
        };
        if ri.timezone.get_ref() != "UTC" && jiff::tz::TimeZone::get(ri.timezone.get_ref()).is_err() {
            self.problem(
                ri.timezone.span().start,
                format!(
                    "unknown time zone {:?} (expected an IANA name like \"Europe/Berlin\")",
                    ri.timezone.get_ref()
                ),
            );
        }
        let tag = ri.subject_tag.get_ref().trim().to_string();
        if tag.is_empty() || tag.contains(['[', ']', '#', '\r', '\n']) {
            self.problem(
                ri.subject_tag.span().start,
                "subject_tag must be a non-empty word without [, ] or #".into(),
            );
        }

        let default_listen: SocketAddr = "127.0.0.1:8025".parse().expect("static address");
        let http = match raw.http {
            None => Http {
                listen: default_listen,
                public_url: None,
                token: None,
            },
            Some(h) => {
                let listen = match h.listen.get_ref().parse::<SocketAddr>() {
                    Ok(l) => l,
                    Err(_) => {
                        self.problem(
                            h.listen.span().start,
                            format!(
                                "listen {:?} is not an address:port like \"127.0.0.1:8025\"",
                                h.listen.get_ref()
                            ),
                        );
                        default_listen
                    }
                };
                let token = self.secret(h.listen.span().start, &h.token_file, &h.token_env, "http token");
                if !listen.ip().is_loopback() && token.is_none() {
                    self.problem(
                        h.listen.span().start,
                        format!("listen {listen} is beyond loopback: set token_file or token_env for a bearer token"),
                    );
                }
                Http {
                    listen,
                    public_url: h.public_url.map(|u| u.trim_end_matches('/').to_string()),
                    token,
                }
            }
        };

        let mut mailboxes: Vec<MailboxConfig> = Vec::new();
        if raw.mailbox.is_empty() {
            self.problem(0, "at least one [[mailbox]] is needed".into());
        }
        for m in raw.mailbox {
            let span = m.span();
            let m = m.into_inner();
            let name = m.name.get_ref().clone();
            if mailboxes.iter().any(|o| o.name == name) {
                self.problem(m.name.span().start, format!("mailbox name {name:?} is used twice"));
            }
            let address = self.address(&m.address, "mailbox address");
            let source = match (m.imap, m.maildir) {
                (Some(imap), None) => {
                    let ispan = imap.span();
                    let i = imap.into_inner();
                    let password = self
                        .secret(ispan.start, &i.password_file, &i.password_env, "imap password")
                        .unwrap_or_else(|| {
                            self.problem(ispan.start, "imap needs password_file or password_env".into());
                            SecretSource::Env(String::new())
                        });
                    if i.tls == TlsMode::Plain && !is_loopback(&i.host) {
                        self.problem(
                            ispan.start,
                            format!(
                                "imap tls = \"plain\" is only allowed to a loopback host, not {:?}",
                                i.host
                            ),
                        );
                    }
                    let poll_interval = self.duration(&i.poll_interval, Duration::from_secs(60));
                    SourceConfig::Imap(ImapConfig {
                        port: i.port.unwrap_or(match i.tls {
                            TlsMode::Implicit => 993,
                            _ => 143,
                        }),
                        host: i.host,
                        tls: i.tls,
                        ca_file: i.ca_file.map(PathBuf::from),
                        username: i.username,
                        password,
                        folder: i.folder,
                        processed: i.processed,
                        idle: i.idle,
                        poll_interval,
                        batch_size: i.batch_size.unwrap_or(200).max(1),
                    })
                }
                (None, Some(md)) => SourceConfig::Maildir {
                    path: PathBuf::from(md.path),
                },
                _ => {
                    self.problem(
                        span.start,
                        format!("mailbox {name:?} needs exactly one of imap or maildir"),
                    );
                    continue;
                }
            };
            mailboxes.push(MailboxConfig {
                name,
                address,
                queue: m.queue,
                source,
            });
        }

        let out_span = raw.outgoing.span();
        let ro = raw.outgoing.into_inner();
        let transport = match (ro.smtp, ro.file) {
            (Some(smtp), None) => {
                let sspan = smtp.span();
                let s = smtp.into_inner();
                let password = self.secret(sspan.start, &s.password_file, &s.password_env, "smtp password");
                if s.username.is_some() != password.is_some() {
                    self.problem(
                        sspan.start,
                        "smtp username and password_file/password_env go together".into(),
                    );
                }
                if s.tls == TlsMode::Plain && !is_loopback(&s.host) {
                    self.problem(
                        sspan.start,
                        format!(
                            "smtp tls = \"plain\" is only allowed to a loopback host, not {:?}",
                            s.host
                        ),
                    );
                }
                let timeout = self.duration(&s.timeout, Duration::from_secs(30));
                Transport::Smtp(SmtpConfig {
                    port: s.port.unwrap_or(match s.tls {
                        TlsMode::Implicit => 465,
                        TlsMode::Starttls => 587,
                        TlsMode::Plain => 25,
                    }),
                    host: s.host,
                    tls: s.tls,
                    ca_file: s.ca_file.map(PathBuf::from),
                    username: s.username,
                    password,
                    timeout,
                })
            }
            (None, Some(f)) => Transport::File {
                path: PathBuf::from(f.path),
            },
            _ => {
                self.problem(out_span.start, "[outgoing] needs exactly one of smtp or file".into());
                Transport::File { path: PathBuf::new() }
            }
        };
        let outgoing = Outgoing {
            transport,
            max_attempts: ro.max_attempts.unwrap_or(8).max(1),
            retry_base: self.duration(&ro.retry_base, Duration::from_secs(30)),
        };

        let ra = raw.automation.unwrap_or(RawAutomation {
            acknowledge: None,
            reopen_window: None,
            ack_limit_per_hour: None,
            notification_limit_per_hour: None,
            plus_addressing: None,
            collision_window: None,
            auto_close_resolved_after: None,
            pending_reminder_after: None,
            pending_close_after: None,
            csat: None,
        });
        let automation = Automation {
            acknowledge: ra.acknowledge.unwrap_or(true),
            reopen_window: self.duration(&ra.reopen_window, Duration::from_secs(7 * 86_400)),
            ack_limit_per_hour: ra.ack_limit_per_hour.unwrap_or(5),
            notification_limit_per_hour: ra.notification_limit_per_hour.unwrap_or(100),
            plus_addressing: ra.plus_addressing.unwrap_or(true),
            collision_window: self.duration(&ra.collision_window, Duration::from_secs(10 * 60)),
            auto_close_resolved_after: ra
                .auto_close_resolved_after
                .as_ref()
                .map(|d| self.duration(&Some(d.clone()), Duration::ZERO)),
            pending_reminder_after: ra
                .pending_reminder_after
                .as_ref()
                .map(|d| self.duration(&Some(d.clone()), Duration::ZERO)),
            pending_close_after: ra
                .pending_close_after
                .as_ref()
                .map(|d| self.duration(&Some(d.clone()), Duration::ZERO)),
            csat: ra.csat.unwrap_or(false),
        };

        let mut rt = raw.templates.unwrap_or(RawTemplates {
            acknowledgement: None,
            pending_reminder: None,
            pending_closed: None,
            closed: None,
            survey: None,
            status_reply: None,
            canned: Default::default(),
        });
        let canned = std::mem::take(&mut rt.canned);
        let acknowledgement = self.template(rt.acknowledgement, DEFAULT_ACK_SUBJECT, DEFAULT_ACK_BODY);
        let pending_reminder = self.template(rt.pending_reminder, "{{ticket.subject}}", DEFAULT_REMINDER_BODY);
        let pending_closed = self.template(rt.pending_closed, "{{ticket.subject}}", DEFAULT_PENDING_CLOSED_BODY);
        let closed = self.template(rt.closed, "{{ticket.subject}}", DEFAULT_CLOSED_BODY);
        let survey = self.template(rt.survey, "How did we do? {{ticket.subject}}", DEFAULT_SURVEY_BODY);
        let status_reply = self.template(rt.status_reply, "Status: {{ticket.subject}}", DEFAULT_STATUS_BODY);

        let rl = raw.limits.unwrap_or(RawLimits {
            max_message_bytes: None,
            max_parts: None,
            max_headers: None,
            max_participants: None,
            max_references: None,
        });
        let d = Limits::default();
        let limits = Limits {
            max_message_bytes: rl.max_message_bytes.unwrap_or(d.max_message_bytes),
            max_parts: rl.max_parts.unwrap_or(d.max_parts),
            max_headers: rl.max_headers.unwrap_or(d.max_headers),
            max_participants: rl.max_participants.unwrap_or(d.max_participants),
            max_references: rl.max_references.unwrap_or(d.max_references).max(2),
        };

        let mut store = crate::store::StoreSettings::default();
        if let Some(rs) = raw.store {
            let rs = rs.into_inner();
            if let Some(b) = &rs.backend
                && b.get_ref() != "sled"
            {
                self.problem(
                    b.span().start,
                    format!(
                        "store backend {:?}: expected \"sled\" (the embedded store)",
                        b.get_ref()
                    ),
                );
            }
            if let Some(mb) = &rs.cache_mb {
                match *mb.get_ref() {
                    4..=65536 => store.cache_bytes = mb.get_ref() * 1024 * 1024,
                    n => self.problem(mb.span().start, format!("cache_mb = {n}: expected 4 to 65536 (MiB)")),
                }
            }
        }

        let mut queues: Vec<Queue> = Vec::new();
        for q in raw.queue {
            let q = q.into_inner();
            let name = q.name.get_ref().clone();
            if queues.iter().any(|o| o.name == name) {
                self.problem(q.name.span().start, format!("queue {name:?} is defined twice"));
            }
            let lead = q.lead.as_ref().map(|l| self.address(l, "queue lead"));
            queues.push(Queue {
                name,
                assign: q.assign,
                lead,
            });
        }

        let mut agents: Vec<Agent> = Vec::new();
        for a in raw.agent {
            let aspan = a.span();
            let a = a.into_inner();
            let name = a.name.get_ref().clone();
            if agents
                .iter()
                .any(|o| o.name.eq_ignore_ascii_case(&name) || slug(&o.name) == slug(&name))
            {
                self.problem(a.name.span().start, format!("agent {name:?} is defined twice"));
            }
            if slug(&name).is_empty() {
                self.problem(
                    a.name.span().start,
                    format!("agent name {name:?} needs at least one letter or digit"),
                );
            }
            let mut emails = Vec::new();
            for e in a.email.iter().chain(a.emails.iter()) {
                let addr = self.address(e, "agent email");
                if agents.iter().any(|o| o.emails.contains(&addr)) {
                    self.problem(e.span().start, format!("address {addr:?} belongs to two agents"));
                }
                emails.push(addr);
            }
            if emails.is_empty() {
                self.problem(aspan.start, format!("agent {name:?} needs email or emails"));
            }
            agents.push(Agent {
                name,
                emails,
                queues: a.queues,
                max_open: a.max_open,
            });
        }

        let mut rules = Vec::new();
        for r in raw.rule {
            let r = r.into_inner();
            let mut when = Vec::new();
            for (key, value) in &r.when {
                let at = value.span().start;
                let (negate, base) = match key.strip_prefix("not_") {
                    Some(b) => (true, b),
                    None => (false, key.as_str()),
                };
                if base == "has_attachment" {
                    match value.get_ref().as_bool() {
                        Some(b) => when.push(Condition::HasAttachment(b != negate)),
                        None => self.problem(at, format!("when.{key} must be true or false")),
                    }
                    continue;
                }
                let field = match base {
                    "subject" => Field::Subject,
                    "body" => Field::Body,
                    "from" => Field::From,
                    "to" => Field::To,
                    "cc" => Field::Cc,
                    "mailbox" => Field::Mailbox,
                    h if h.starts_with("header.") && h.len() > 7 => Field::Header(h[7..].to_ascii_lowercase()),
                    _ => {
                        self.problem(
                            at,
                            format!("unknown condition when.{key} (expected subject, body, from, to, cc, mailbox, header.NAME, has_attachment, each optionally with not_)"),
                        );
                        continue;
                    }
                };
                let texts: Vec<String> = match value.get_ref() {
                    toml::Value::String(s) => vec![s.clone()],
                    toml::Value::Array(a) if a.iter().all(|v| v.is_str()) && !a.is_empty() => {
                        a.iter().filter_map(|v| v.as_str().map(String::from)).collect()
                    }
                    _ => {
                        self.problem(at, format!("when.{key} must be a regex string or a list of them"));
                        continue;
                    }
                };
                let mut patterns = Vec::new();
                for t in texts {
                    match regex::RegexBuilder::new(&t).size_limit(1 << 20).build() {
                        Ok(re) => patterns.push(re),
                        Err(e) => {
                            let first = e.to_string().lines().last().unwrap_or("").trim().to_string();
                            self.problem(at, format!("when.{key}: bad regex {t:?}: {first}"));
                        }
                    }
                }
                when.push(Condition::Matches {
                    field,
                    key: key.clone(),
                    patterns,
                    negate,
                });
            }
            let mut set = RuleActions::default();
            if let Some(rs) = r.set {
                let rs = rs.into_inner();
                if let Some(q) = rs.queue {
                    if !queues.is_empty() && !queues.iter().any(|x| &x.name == q.get_ref()) {
                        self.problem(
                            q.span().start,
                            format!("set.queue {:?} is not a [[queue]]", q.get_ref()),
                        );
                    }
                    set.queue = Some(q.into_inner());
                }
                if let Some(p) = rs.priority {
                    use crate::model::Priority;
                    set.priority = match p.get_ref().as_str() {
                        "low" => Some(Priority::Low),
                        "normal" => Some(Priority::Normal),
                        "high" => Some(Priority::High),
                        "urgent" => Some(Priority::Urgent),
                        other => {
                            self.problem(
                                p.span().start,
                                format!("set.priority {other:?}: expected low, normal, high or urgent"),
                            );
                            None
                        }
                    };
                }
                set.kind = rs.kind;
                set.tags = rs.tags;
                if let Some(a) = rs.assignee {
                    match agents.iter().find(|x| {
                        x.name.eq_ignore_ascii_case(a.get_ref()) || x.emails.contains(&a.get_ref().to_ascii_lowercase())
                    }) {
                        Some(agent) => set.assignee = Some(agent.name.clone()),
                        None => self.problem(
                            a.span().start,
                            format!("set.assignee {:?} is not an [[agent]]", a.get_ref()),
                        ),
                    }
                }
            }
            rules.push(Rule {
                name: r.name.into_inner(),
                when,
                set,
                cont: r.cont,
            });
        }

        let mut calendars = std::collections::BTreeMap::new();
        calendars.insert("24x7".to_string(), crate::calendar::Calendar::TwentyFourSeven);
        for (name, c) in raw.calendar {
            let cspan = c.span();
            let c = c.into_inner();
            let tz = match jiff::tz::TimeZone::get(c.timezone.get_ref()) {
                Ok(tz) => tz,
                Err(_) => {
                    self.problem(
                        c.timezone.span().start,
                        format!("unknown time zone {:?}", c.timezone.get_ref()),
                    );
                    jiff::tz::TimeZone::UTC
                }
            };
            let mut week: [Vec<(jiff::civil::Time, jiff::civil::Time)>; 7] = Default::default();
            const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
            for (day, ranges) in &c.hours {
                match DAYS.iter().position(|d| d == day) {
                    None => self.problem(
                        ranges.span().start,
                        format!("hours.{day}: expected mon, tue, wed, thu, fri, sat or sun"),
                    ),
                    Some(i) => match crate::calendar::parse_ranges(ranges.get_ref()) {
                        Ok(r) => week[i] = r,
                        Err(e) => self.problem(ranges.span().start, format!("hours.{day}: {e}")),
                    },
                }
            }
            if week.iter().all(|d| d.is_empty()) {
                self.problem(cspan.start, format!("calendar {name:?} has no working hours"));
            }
            let mut holidays = std::collections::BTreeSet::new();
            for h in &c.holidays {
                match h.get_ref().parse::<jiff::civil::Date>() {
                    Ok(d) => {
                        holidays.insert(d);
                    }
                    Err(_) => self.problem(
                        h.span().start,
                        format!("holiday {:?} is not a date like 2026-12-24", h.get_ref()),
                    ),
                }
            }
            if let Some(f) = &c.holidays_file {
                match std::fs::read_to_string(f.get_ref())
                    .map_err(|e| e.to_string())
                    .and_then(|t| crate::calendar::parse_ics_dates(&t))
                {
                    Ok(dates) => holidays.extend(dates),
                    Err(e) => self.problem(f.span().start, format!("holidays_file {:?}: {e}", f.get_ref())),
                }
            }
            calendars.insert(name, crate::calendar::Calendar::Hours { tz, week, holidays });
        }
        let mut sla = Vec::new();
        for (name, p) in raw.sla {
            let pspan = p.span();
            let p = p.into_inner();
            use crate::model::Priority;
            let prio_text = p
                .priority
                .as_ref()
                .map(|s| s.get_ref().clone())
                .unwrap_or_else(|| name.clone());
            let priority = match prio_text.as_str() {
                "low" => Priority::Low,
                "normal" => Priority::Normal,
                "high" => Priority::High,
                "urgent" => Priority::Urgent,
                other => {
                    let at = p.priority.as_ref().map(|s| s.span().start).unwrap_or(pspan.start);
                    self.problem(at, format!("sla.{name}: priority {other:?} is not low, normal, high or urgent (name the policy after a priority or set priority = ...)"));
                    continue;
                }
            };
            if !calendars.contains_key(p.calendar.get_ref()) {
                self.problem(
                    p.calendar.span().start,
                    format!("sla.{name}: no calendar {:?}", p.calendar.get_ref()),
                );
            }
            let target = |v: &mut Self, d: &Option<Spanned<String>>| {
                d.as_ref().map(|d| v.duration(&Some(d.clone()), Duration::ZERO))
            };
            let first_response = target(self, &p.first_response);
            let next_response = target(self, &p.next_response);
            let resolution = target(self, &p.resolution);
            let warn_at = match &p.warn_at {
                None => 75,
                Some(w) => match w.get_ref().trim_end_matches('%').trim().parse::<u32>() {
                    Ok(n) if (1..=99).contains(&n) => n,
                    _ => {
                        self.problem(
                            w.span().start,
                            format!("warn_at {:?}: expected a percentage like \"75%\"", w.get_ref()),
                        );
                        75
                    }
                },
            };
            let mut on_breach = OnBreach::default();
            if let Some(b) = p.on_breach {
                let b = b.into_inner();
                on_breach.notify = b.notify.iter().map(|a| self.address(a, "on_breach.notify")).collect();
                on_breach.raise_priority = b.raise_priority;
                if let Some(r) = b.reassign {
                    match agents.iter().find(|a| {
                        a.name.eq_ignore_ascii_case(r.get_ref()) || a.emails.contains(&r.get_ref().to_ascii_lowercase())
                    }) {
                        Some(a) => on_breach.reassign = Some(a.name.clone()),
                        None => self.problem(
                            r.span().start,
                            format!("on_breach.reassign {:?} is not an [[agent]]", r.get_ref()),
                        ),
                    }
                }
                if let Some(q) = b.queue {
                    if !queues.is_empty() && !queues.iter().any(|x| &x.name == q.get_ref()) {
                        self.problem(
                            q.span().start,
                            format!("on_breach.queue {:?} is not a [[queue]]", q.get_ref()),
                        );
                    }
                    on_breach.queue = Some(q.into_inner());
                }
            }
            sla.push(SlaPolicy {
                name,
                priority,
                queue: p.queue,
                calendar: p.calendar.into_inner(),
                first_response,
                next_response,
                resolution,
                warn_at,
                on_breach,
            });
        }

        let domain = ri
            .message_id_domain
            .clone()
            .or_else(|| mailboxes.first().map(|m| split_address(&m.address).1.to_string()))
            .unwrap_or_else(|| "postdesk.invalid".into());

        Some(Config {
            path: path.to_path_buf(),
            instance: Instance {
                name: ri.name,
                subject_tag: tag,
                data_dir: PathBuf::from(ri.data_dir),
                timezone: ri.timezone.into_inner(),
                secret,
                generate_secret: ri.generate_secret,
                message_id_domain: domain,
            },
            http,
            mailboxes,
            outgoing,
            automation,
            templates: Templates {
                acknowledgement,
                pending_reminder,
                pending_closed,
                closed,
                survey,
                status_reply,
                canned,
            },
            security: Security {
                trusted_authserv_ids: raw
                    .security
                    .map(|s| {
                        s.trusted_authserv_ids
                            .into_iter()
                            .map(|i| i.to_ascii_lowercase())
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            limits,
            store,
            agents,
            queues,
            rules,
            calendars,
            sla,
        })
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &[&str]) {
        match parse(text, Path::new("t.toml")) {
            Ok(_) => assert!(expected.is_empty(), "expected errors {expected:?}, got a valid config"),
            Err(e) => {
                let got: Vec<String> = e.to_string().lines().map(String::from).collect();
                assert_eq!(got, expected);
            }
        }
    }

    const GOOD: &str = r#"
[instance]
name = "Example Support"
data_dir = "var"
secret_file = "var/secret"

[[mailbox]]
name = "support"
address = "support@example.com"
maildir = { path = "var/inbox" }

[outgoing]
file = { path = "var/outbox" }
"#;

    #[test]
    fn good_config_parses() {
        check(GOOD, &[]);
        let c = parse(GOOD, Path::new("t.toml")).unwrap();
        assert_eq!(c.instance.message_id_domain, "example.com");
        assert_eq!(c.automation.reopen_window, Duration::from_secs(7 * 86400));
    }

    #[test]
    fn unknown_key_named_with_position() {
        let text = GOOD.replace("data_dir = \"var\"", "data_dir = \"var\"\ncolour = \"blue\"");
        let e = parse(&text, Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.starts_with("t.toml:5:1: unknown field `colour`"), "{e}");
    }

    #[test]
    fn every_problem_reported_at_once() {
        let text = GOOD
            .replace("address = \"support@example.com\"", "address = \"support\"")
            .replace("[outgoing]", "[automation]\nreopen_window = \"7 days\"\n\n[outgoing]");
        check(
            &text,
            &[
                "t.toml:9:11: mailbox address \"support\" is not an email address (expected local@domain)",
                "t.toml:13:17: bad duration \"7 days\": unknown unit 'a' (use s, m, h, d, w)",
            ],
        );
    }

    #[test]
    fn plain_imap_only_to_loopback() {
        let text = GOOD.replace(
            "maildir = { path = \"var/inbox\" }",
            "imap = { host = \"imap.example.com\", tls = \"plain\", username = \"u\", password_env = \"P\" }",
        );
        check(
            &text,
            &["t.toml:10:8: imap tls = \"plain\" is only allowed to a loopback host, not \"imap.example.com\""],
        );
    }

    #[test]
    fn bad_rules_are_reported_at_their_position() {
        let text = format!(
            "{GOOD}\n[[rule]]\nname = \"r\"\nwhen.subject = \"(unclosed\"\nwhen.colour = \"x\"\nset.priority = \"asap\"\n"
        );
        let e = parse(&text, Path::new("t.toml")).unwrap_err().to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 3, "{e}");
        assert!(
            lines[0].starts_with("t.toml:17:16: when.subject: bad regex \"(unclosed\""),
            "{e}"
        );
        assert!(
            lines[1].starts_with("t.toml:18:15: unknown condition when.colour"),
            "{e}"
        );
        assert!(lines[2].starts_with("t.toml:19:16: set.priority \"asap\""), "{e}");
    }

    #[test]
    fn durations() {
        let table = [
            ("30s", 30),
            ("15m", 900),
            ("2h", 7200),
            ("7d", 604_800),
            ("1h30m", 5400),
            ("1w", 604_800),
        ];
        for (text, secs) in table {
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        for bad in ["", "7", "d", "7x", "h7"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
