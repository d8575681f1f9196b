//! Configuration: the TOML adapter. The file is read into its raw schema
//! (`raw`: serde structs that reject unknown keys), checked (`validate`:
//! every problem reported at once as `file:line:col: message`) and turned
//! into a [`Config`]: what the shell runs with, plus the core's
//! [`Settings`]. Secrets (`secret`) never print.
//!
//! [`parse`] is pure (text in, config or problems out); [`load`] reads the file.
//! Relative paths in the config are taken relative to the working directory.

pub use crate::core::settings::*;
pub use secret::{Secret, SecretSource};

mod raw;
mod secret;
mod validate;

use raw::RawConfig;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use validate::Validator;

/// Exit code for a bad configuration (EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

/// A validated configuration: what the shell needs to run (paths, secrets,
/// sources, transports, the store) and the [`Settings`] the core decides by,
/// which the configuration also derefs to.
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
    /// `[store]`.
    pub store: crate::adapters::store::StoreSettings,
    /// `[[webhook]]`.
    pub webhooks: Vec<Webhook>,
    /// `[[api_token]]`: named bearer tokens with scopes.
    pub api_tokens: Vec<ApiToken>,
    /// `[integrations.customer_lookup]`.
    pub customer_lookup: Option<CustomerLookup>,
    /// `[[oauth2]]` providers.
    pub oauth2: Vec<OAuth2Provider>,
    /// `[knowledge]`: the articles suggested in acknowledgements.
    pub knowledge: Option<KnowledgeConfig>,
    /// `[intent]`: what labels the intent model and when the daemon retrains it.
    pub intent: IntentConfig,
    /// `[web] trusted_proxies`: reverse proxies (address, prefix length)
    /// whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<(std::net::IpAddr, u8)>,
    /// What the core reads.
    pub settings: Settings,
}

impl std::ops::Deref for Config {
    type Target = Settings;
    fn deref(&self) -> &Settings {
        &self.settings
    }
}

impl std::ops::DerefMut for Config {
    fn deref_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }
}

impl Config {
    /// The mailbox configuration by name.
    pub fn mailbox(&self, name: &str) -> Option<&MailboxConfig> {
        self.mailboxes.iter().find(|m| m.name == name)
    }
}

/// The events a `[[webhook]]` may ask for (`*` asks for all).
pub const WEBHOOK_EVENTS: [&str; 10] = [
    "ticket.created",
    "ticket.updated",
    "ticket.resolved",
    "ticket.merged",
    "message.inbound",
    "message.outbound",
    "note.added",
    "sla.warning",
    "sla.breached",
    "csat.received",
];

/// `[integrations.customer_lookup]`: a CRM asked about a new ticket's requester.
#[derive(Clone, Debug)]
pub struct CustomerLookup {
    /// The URL, with `{email}` (percent-encoded when filled in).
    pub url: String,
    /// The header the token goes in (`Authorization` sends `Bearer TOKEN`).
    pub header: String,
    /// The token, when the CRM needs one.
    pub token: Option<SecretSource>,
    /// How long one lookup may take before the ticket goes on without it.
    pub timeout: Duration,
    /// How long an answer is kept.
    pub cache: Duration,
    /// The fields taken from the answer (dotted paths: `company.name`).
    pub fields: Vec<String>,
}

/// `[intent]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntentConfig {
    /// The ticket field that labels examples: `type` or `queue`.
    pub label: String,
    /// How often the daemon retrains on the tickets (and on each reload); never when unset.
    pub retrain: Option<Duration>,
    /// Fewest labelled tickets the daemon trains on.
    pub min_examples: usize,
    /// Pre-trained token vectors to train with (`embeddings`, a safetensors
    /// file) and their tokenizer's vocabulary (`vocabulary`, a piece a line).
    pub embeddings: Option<(PathBuf, PathBuf)>,
}

/// `[knowledge]`.
#[derive(Clone, Debug, PartialEq)]
pub struct KnowledgeConfig {
    /// The folder of Markdown articles.
    pub path: PathBuf,
    /// The least BM25 score an article needs to be suggested.
    pub min_score: f32,
    /// Most articles suggested in one acknowledgement.
    pub suggestions: usize,
}

/// `[[oauth2]]`: a provider that issues the access tokens mailboxes log in with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuth2Provider {
    /// Its name (`oauth2 = "NAME"` in `imap` or `smtp`, `postdesk oauth2 login NAME`).
    pub name: String,
    /// The token endpoint.
    pub token_url: String,
    /// The device-authorization endpoint (`postdesk oauth2 login` by a code; Microsoft).
    pub device_url: Option<String>,
    /// The authorization endpoint (`postdesk oauth2 login` in a browser; Google).
    pub auth_url: Option<String>,
    /// The client id registered with the provider.
    pub client_id: String,
    /// The client secret, when the client has one.
    pub client_secret: Option<SecretSource>,
    /// The scopes asked for.
    pub scopes: Vec<String>,
    /// How tokens are got.
    pub flow: OAuth2Flow,
    /// Where the refresh token is kept (written by `postdesk oauth2 login`
    /// and whenever the provider rotates it).
    pub refresh_token_file: PathBuf,
}

/// How an [`OAuth2Provider`] gets access tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OAuth2Flow {
    /// With a refresh token a user granted once (Google, delegated Microsoft 365).
    RefreshToken,
    /// With the client's own credentials (Microsoft 365 app-only access).
    ClientCredentials,
}

/// The SASL mechanism a token is sent with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sasl {
    /// Google's and Microsoft's `XOAUTH2`.
    Xoauth2,
    /// RFC 7628's `OAUTHBEARER`.
    OAuthBearer,
}

/// A login with an OAuth2 access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuth2Login {
    /// The provider the token comes from.
    pub provider: OAuth2Provider,
    /// How it is sent.
    pub mechanism: Sasl,
}

/// The scopes an `[[api_token]]` may hold.
pub const API_SCOPES: [&str; 4] = ["tickets:read", "tickets:write", "ingest", "backup"];

/// One `[[api_token]]`.
#[derive(Clone, Debug)]
pub struct ApiToken {
    /// Its name: the actor of what it does.
    pub name: String,
    /// Where the token is read from (on each request, so it can be rotated).
    pub secret: SecretSource,
    /// What it may do.
    pub scopes: Vec<String>,
}

/// What a webhook's requests carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookFormat {
    /// The event as JSON, signed.
    Json,
    /// A Slack/Mattermost incoming-webhook message (`text`).
    Slack,
}

/// One `[[webhook]]`.
#[derive(Clone, Debug)]
pub struct Webhook {
    /// Its name (`webhook1`… by order when not given): deliveries name it.
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// The events it wants.
    pub events: Vec<String>,
    /// The HMAC key of the signature header (required for `json`).
    pub secret: Option<SecretSource>,
    /// `json` or `slack`.
    pub format: HookFormat,
    /// Attempts before a delivery fails for good.
    pub attempts: u32,
    /// The wait after the first failed attempt; it doubles each time (at most an hour).
    pub backoff: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

impl Webhook {
    /// Whether it wants `event`.
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == event)
    }
}

/// `[instance]`: where we keep data and the secret (the desk's name, tag and
/// time zone are in [`Settings::desk`]).
#[derive(Clone, Debug)]
pub struct Instance {
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// Signs reply tokens and Message-IDs.
    pub secret: SecretSource,
    /// Create the secret file with random bytes when it is missing.
    pub generate_secret: bool,
}

/// `[http]` (its `public_url` is in [`Settings::desk`]).
#[derive(Clone, Debug)]
pub struct Http {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// Bearer token source; required when `listen` is not a loopback address.
    pub token: Option<SecretSource>,
}

/// One `[[mailbox]]`: a support address and where its mail comes from.
#[derive(Clone, Debug)]
pub struct MailboxConfig {
    /// Short name, used for positions and logs (its address and queue are
    /// in [`Settings::desk`]).
    pub name: String,
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
    /// Password source (`None` with OAuth2).
    pub password: Option<SecretSource>,
    /// Logging in with an OAuth2 access token instead (`auth = "xoauth2"` or `"oauthbearer"`).
    pub oauth2: Option<Box<OAuth2Login>>,
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
    /// Logging in with an OAuth2 access token instead (`auth = "xoauth2"`).
    pub oauth2: Option<Box<OAuth2Login>>,
    /// Per-command timeout.
    pub timeout: Duration,
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

/// A minimal valid config followed by `extra` (TOML), for the library's
/// unit tests.
#[cfg(test)]
pub(crate) fn test_config(extra: &str) -> Config {
    let text = format!(
        "[instance]\nname = \"Example Support\"\ndata_dir = \"var\"\nsecret_env = \"X\"\n[[mailbox]]\nname = \"support\"\naddress = \"support@example.com\"\nmaildir = {{ path = \"x\" }}\n[outgoing]\nfile = {{ path = \"y\" }}\n{extra}"
    );
    parse(&text, Path::new("t")).unwrap_or_else(|e| panic!("{e}"))
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
        assert_eq!(c.desk.message_id_domain, "example.com");
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
    fn language_candidates_are_codes_the_detector_knows() {
        let c = parse(
            &format!("{GOOD}\n[language]\ncandidates = [\"en\", \"de\", \"tl\", \"en\"]\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(
            c.languages.codes(),
            Some(vec!["en".to_string(), "de".to_string(), "tl".to_string()])
        );
        assert_eq!(parse(GOOD, Path::new("t.toml")).unwrap().languages.codes(), None);
        check(
            &format!("{GOOD}\n[language]\ncandidates = [\"en\", \"klingon\"]\n"),
            &[
                "t.toml:16:14: [language] candidates: \"klingon\" is not a language code the detector knows (ISO 639-1 such as \"en\", else ISO 639-3)",
            ],
        );
        check(
            &format!("{GOOD}\n[language]\ncandidates = []\n"),
            &[
                "t.toml:16:14: [language] candidates: an empty list: name at least one language, or leave the key out for all",
            ],
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
