//! The raw schema of the configuration file: serde structs with
//! `deny_unknown_fields` and spans, exactly as written, before any check.

use super::TlsMode;
use crate::core::settings::AssignStrategy;
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) instance: Spanned<RawInstance>,
    #[serde(default)]
    pub(super) http: Option<RawHttp>,
    #[serde(default)]
    pub(super) mailbox: Vec<Spanned<RawMailbox>>,
    pub(super) outgoing: Spanned<RawOutgoing>,
    #[serde(default)]
    pub(super) automation: Option<RawAutomation>,
    #[serde(default)]
    pub(super) templates: Option<RawTemplates>,
    #[serde(default)]
    pub(super) limits: Option<RawLimits>,
    #[serde(default)]
    pub(super) store: Option<Spanned<RawStore>>,
    #[serde(default)]
    pub(super) security: Option<RawSecurity>,
    #[serde(default)]
    pub(super) agent: Vec<Spanned<RawAgent>>,
    #[serde(default)]
    pub(super) queue: Vec<Spanned<RawQueue>>,
    #[serde(default)]
    pub(super) rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub(super) calendar: std::collections::BTreeMap<String, Spanned<RawCalendar>>,
    #[serde(default)]
    pub(super) sla: std::collections::BTreeMap<String, Spanned<RawSla>>,
    #[serde(default)]
    pub(super) web: Option<Spanned<RawWeb>>,
    #[serde(default)]
    pub(super) webhook: Vec<Spanned<RawWebhook>>,
    #[serde(default)]
    pub(super) api_token: Vec<Spanned<RawApiToken>>,
    #[serde(default)]
    pub(super) integrations: Option<RawIntegrations>,
    #[serde(default)]
    pub(super) oauth2: Vec<Spanned<RawOAuth2>>,
    #[serde(default)]
    pub(super) knowledge: Option<Spanned<RawKnowledge>>,
    #[serde(default)]
    pub(super) intent: Option<Spanned<RawIntent>>,
    #[serde(default)]
    pub(super) language: Option<RawLanguage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLanguage {
    pub(super) candidates: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIntent {
    pub(super) label: Option<Spanned<String>>,
    pub(super) retrain: Option<Spanned<String>>,
    pub(super) min_examples: Option<Spanned<i64>>,
    pub(super) embeddings: Option<Spanned<String>>,
    pub(super) vocabulary: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKnowledge {
    pub(super) path: Spanned<String>,
    pub(super) min_score: Option<Spanned<f64>>,
    pub(super) suggestions: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuth2 {
    pub(super) name: Spanned<String>,
    pub(super) token_url: Spanned<String>,
    pub(super) device_url: Option<Spanned<String>>,
    pub(super) auth_url: Option<Spanned<String>>,
    pub(super) client_id: Spanned<String>,
    pub(super) client_secret_file: Option<String>,
    pub(super) client_secret_env: Option<String>,
    #[serde(default)]
    pub(super) scopes: Vec<String>,
    pub(super) flow: Option<Spanned<String>>,
    pub(super) refresh_token_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIntegrations {
    pub(super) customer_lookup: Option<Spanned<RawLookup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLookup {
    pub(super) url: Spanned<String>,
    pub(super) header: Option<Spanned<String>>,
    pub(super) token_file: Option<String>,
    pub(super) token_env: Option<String>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) cache: Option<Spanned<String>>,
    pub(super) fields: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApiToken {
    pub(super) name: Spanned<String>,
    pub(super) token_file: Option<String>,
    pub(super) token_env: Option<String>,
    pub(super) scopes: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub(super) name: Option<Spanned<String>>,
    pub(super) url: Spanned<String>,
    pub(super) events: Spanned<Vec<Spanned<String>>>,
    pub(super) secret_file: Option<String>,
    pub(super) secret_env: Option<String>,
    pub(super) format: Option<Spanned<String>>,
    pub(super) attempts: Option<Spanned<u32>>,
    pub(super) backoff: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeb {
    pub(super) public_url: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) portal: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) dashboard: bool,
    pub(super) new_per_ip_per_hour: Option<Spanned<u32>>,
    pub(super) new_per_address_per_hour: Option<Spanned<u32>>,
    pub(super) login_link_lifetime: Option<Spanned<String>>,
    pub(super) proof_of_work: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCalendar {
    #[serde(default = "default_tz")]
    pub(super) timezone: Spanned<String>,
    #[serde(default)]
    pub(super) hours: std::collections::BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(super) holidays: Vec<Spanned<String>>,
    pub(super) holidays_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSla {
    pub(super) priority: Option<Spanned<String>>,
    pub(super) queue: Option<String>,
    #[serde(default = "default_calendar")]
    pub(super) calendar: Spanned<String>,
    pub(super) first_response: Option<Spanned<String>>,
    pub(super) next_response: Option<Spanned<String>>,
    pub(super) resolution: Option<Spanned<String>>,
    pub(super) warn_at: Option<Spanned<String>>,
    pub(super) on_breach: Option<Spanned<RawOnBreach>>,
}

fn default_calendar() -> Spanned<String> {
    Spanned::new(0..0, "24x7".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOnBreach {
    #[serde(default)]
    pub(super) notify: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) raise_priority: bool,
    pub(super) reassign: Option<Spanned<String>>,
    pub(super) queue: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) when: std::collections::BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    pub(super) set: Option<Spanned<RawRuleSet>>,
    #[serde(default, rename = "continue")]
    pub(super) cont: bool,
    pub(super) on: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRuleSet {
    pub(super) queue: Option<Spanned<String>>,
    pub(super) priority: Option<Spanned<String>>,
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    pub(super) assignee: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) notify: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInstance {
    pub(super) name: String,
    #[serde(default = "default_tag")]
    pub(super) subject_tag: Spanned<String>,
    pub(super) data_dir: String,
    #[serde(default = "default_tz")]
    pub(super) timezone: Spanned<String>,
    pub(super) secret_file: Option<String>,
    pub(super) secret_env: Option<String>,
    #[serde(default)]
    pub(super) generate_secret: bool,
    pub(super) message_id_domain: Option<String>,
}

fn default_tag() -> Spanned<String> {
    Spanned::new(0..0, "Support".to_string())
}
fn default_tz() -> Spanned<String> {
    Spanned::new(0..0, "UTC".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    #[serde(default = "default_listen")]
    pub(super) listen: Spanned<String>,
    pub(super) public_url: Option<Spanned<String>>,
    pub(super) token_file: Option<String>,
    pub(super) token_env: Option<String>,
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8025".to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMailbox {
    pub(super) name: Spanned<String>,
    pub(super) address: Spanned<String>,
    #[serde(default = "default_queue")]
    pub(super) queue: String,
    pub(super) imap: Option<Spanned<RawImap>>,
    pub(super) maildir: Option<RawMaildir>,
}

fn default_queue() -> String {
    "general".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImap {
    pub(super) host: String,
    pub(super) port: Option<u16>,
    #[serde(default = "default_tls")]
    pub(super) tls: TlsMode,
    pub(super) ca_file: Option<String>,
    pub(super) username: String,
    pub(super) password_file: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) auth: Option<Spanned<String>>,
    pub(super) oauth2: Option<Spanned<String>>,
    #[serde(default = "default_folder")]
    pub(super) folder: String,
    pub(super) processed: Option<String>,
    #[serde(default = "yes")]
    pub(super) idle: bool,
    pub(super) poll_interval: Option<Spanned<String>>,
    pub(super) batch_size: Option<u32>,
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
pub(super) struct RawMaildir {
    pub(super) path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutgoing {
    pub(super) smtp: Option<Spanned<RawSmtp>>,
    pub(super) file: Option<RawFile>,
    pub(super) max_attempts: Option<u32>,
    pub(super) retry_base: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    pub(super) host: String,
    pub(super) port: Option<u16>,
    #[serde(default = "default_smtp_tls")]
    pub(super) tls: TlsMode,
    pub(super) ca_file: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) auth: Option<Spanned<String>>,
    pub(super) oauth2: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
}

fn default_smtp_tls() -> TlsMode {
    TlsMode::Starttls
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAutomation {
    pub(super) acknowledge: Option<bool>,
    pub(super) reopen_window: Option<Spanned<String>>,
    pub(super) ack_limit_per_hour: Option<u32>,
    pub(super) notification_limit_per_hour: Option<u32>,
    pub(super) plus_addressing: Option<bool>,
    pub(super) collision_window: Option<Spanned<String>>,
    pub(super) backfill_window: Option<Spanned<String>>,
    pub(super) auto_close_resolved_after: Option<Spanned<String>>,
    pub(super) pending_reminder_after: Option<Spanned<String>>,
    pub(super) pending_close_after: Option<Spanned<String>>,
    pub(super) csat: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTemplates {
    pub(super) acknowledgement: Option<Spanned<RawTemplate>>,
    pub(super) pending_reminder: Option<Spanned<RawTemplate>>,
    pub(super) pending_closed: Option<Spanned<RawTemplate>>,
    pub(super) closed: Option<Spanned<RawTemplate>>,
    pub(super) survey: Option<Spanned<RawTemplate>>,
    pub(super) status_reply: Option<Spanned<RawTemplate>>,
    pub(super) suggestions: Option<Spanned<RawTemplate>>,
    #[serde(default)]
    pub(super) canned: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecurity {
    #[serde(default)]
    pub(super) trusted_authserv_ids: Vec<String>,
}

/// A template; keys other than these three are its language variants
/// (`[templates.acknowledgement.de]`), checked in validation.
#[derive(Deserialize)]
pub(super) struct RawTemplate {
    pub(super) subject: Option<String>,
    pub(super) body: Option<String>,
    pub(super) body_file: Option<String>,
    #[serde(flatten)]
    pub(super) languages: std::collections::BTreeMap<String, toml::Value>,
}

/// One language variant of a template.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTemplateText {
    pub(super) subject: Option<String>,
    pub(super) body: Option<String>,
    pub(super) body_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) backend: Option<Spanned<String>>,
    pub(super) cache_mb: Option<Spanned<u64>>,
    pub(super) sweep_every: Option<Spanned<String>>,
    pub(super) compact_at_start: Option<Spanned<bool>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) database: Option<String>,
    pub(super) user: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) pool_size: Option<Spanned<usize>>,
    pub(super) lease_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_message_bytes: Option<usize>,
    pub(super) max_parts: Option<usize>,
    pub(super) max_headers: Option<usize>,
    pub(super) max_participants: Option<usize>,
    pub(super) max_references: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub(super) name: Spanned<String>,
    pub(super) email: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) emails: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) queues: Vec<String>,
    pub(super) max_open: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    pub(super) name: Spanned<String>,
    #[serde(default = "default_assign")]
    pub(super) assign: AssignStrategy,
    pub(super) lead: Option<Spanned<String>>,
}

fn default_assign() -> AssignStrategy {
    AssignStrategy::None
}
