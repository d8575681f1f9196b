//! Validation: the raw schema checked against everything postdesk needs
//! (addresses, durations, patterns, references between tables, secrets'
//! sources), every problem collected with its line and column, and the
//! validated [`Config`] and core [`Settings`] built.

use super::raw::*;
use super::*;
use toml::Spanned;

/// The default acknowledgement.
const DEFAULT_ACK_SUBJECT: &str = "{{ticket.subject}}";
/// The default acknowledgement body.
const DEFAULT_ACK_BODY: &str = "Hello {{requester.name}},

thank you for writing to {{instance.name}}. We have opened ticket #{{ticket.id}}
for your request \"{{ticket.subject}}\" and will answer as soon as we can.

To add anything, just reply to this mail.

-- 
{{instance.name}}
";

/// The default pending reminder body.
const DEFAULT_REMINDER_BODY: &str = "Hello {{requester.name}},

we are waiting for your answer on ticket #{{ticket.id}} (\"{{ticket.subject}}\").
Just reply to this mail when you can.

-- 
{{instance.name}}
";
/// The default body when a pending ticket is closed.
const DEFAULT_PENDING_CLOSED_BODY: &str = "Hello {{requester.name}},

we have not heard back about ticket #{{ticket.id}} (\"{{ticket.subject}}\"), so we closed it.
If you still need help, reply to this mail and we will open a new ticket.

-- 
{{instance.name}}
";
/// The default body when a resolved ticket is closed.
const DEFAULT_CLOSED_BODY: &str = "Hello {{requester.name}},

ticket #{{ticket.id}} (\"{{ticket.subject}}\") is now closed. If you need anything
else, reply to this mail and we will open a new ticket.

-- 
{{instance.name}}
";
/// The default satisfaction survey body.
const DEFAULT_SURVEY_BODY: &str = "Hello {{requester.name}},

ticket #{{ticket.id}} (\"{{ticket.subject}}\") is resolved. How did we do?
Reply with a single number from 1 (poor) to 5 (excellent), and a comment if you like.
{{survey.link}}
-- 
{{instance.name}}
";
/// The default answer to a `status` mail.
const DEFAULT_SUGGESTIONS_BODY: &str = "These articles may answer your question:

{{articles}}

If one of them does, reply to this mail with the word \"solved\" and we
will close your request. If not, there is nothing to do: we answer as usual.
";

const DEFAULT_STATUS_BODY: &str = "Hello {{requester.name}},

ticket #{{ticket.id}} (\"{{ticket.subject}}\") is {{ticket.status}}.

Latest update:
{{ticket.latest_update}}

-- 
{{instance.name}}
";

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) problems: Vec<Problem>,
}

impl Validator<'_> {
    pub(super) fn problem(&mut self, at: usize, message: String) {
        let at = at.min(self.text.len());
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        self.problems.push(Problem { line, column, message });
    }

    pub(super) fn into_error(mut self, path: &Path) -> ConfigError {
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
            translations: Default::default(),
        };
        if let Some(t) = raw {
            let at = t.span().start;
            let t = t.into_inner();
            self.template_text(at, &mut out, t.subject, t.body, t.body_file);
            for (lang, value) in t.languages {
                if !crate::core::language::is_code(&lang) {
                    self.problem(
                        at,
                        format!("template: unknown key {lang:?} (expected subject, body, body_file, or a language table such as [templates.acknowledgement.de])"),
                    );
                    continue;
                }
                match value.try_into::<RawTemplateText>() {
                    Ok(v) => {
                        // A variant's missing parts are the plain template's.
                        let mut variant = Template {
                            subject: out.subject.clone(),
                            body: out.body.clone(),
                            translations: Default::default(),
                        };
                        self.template_text(at, &mut variant, v.subject, v.body, v.body_file);
                        out.translations.insert(lang, variant);
                    }
                    Err(e) => self.problem(at, format!("template language {lang:?}: {}", e.message())),
                }
            }
        }
        out
    }

    fn template_text(
        &mut self,
        at: usize,
        out: &mut Template,
        subject: Option<String>,
        body: Option<String>,
        body_file: Option<String>,
    ) {
        if let Some(s) = subject {
            out.subject = s;
        }
        match (body, body_file) {
            (Some(b), None) => out.body = b,
            (None, Some(f)) => match std::fs::read_to_string(&f) {
                Ok(b) => out.body = b,
                Err(e) => self.problem(at, format!("cannot read template body_file {f:?}: {e}")),
            },
            (Some(_), Some(_)) => self.problem(at, "template: give body or body_file, not both".into()),
            (None, None) => {}
        }
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

    /// An interval of at least a second; `message` when shorter.
    fn interval(&mut self, raw: &Option<Spanned<String>>, default: Duration, message: &str) -> Duration {
        let every = self.duration(raw, default);
        if every < Duration::from_secs(1) {
            let at = raw.as_ref().map_or(0, |r| r.span().start);
            self.problem(at, message.into());
        }
        every.max(Duration::from_secs(1))
    }

    /// `[store]` with `backend = "postgres"`: a URL or host/port/database/user, a password source, TLS, pool and lease.
    fn postgres(&mut self, rs: &super::raw::RawStore, at: usize) -> Option<crate::adapters::store::PgSettings> {
        use crate::adapters::store::PgSettings;
        let mut pg = PgSettings::default();
        if let Some(url) = &rs.url {
            match url.get_ref().parse::<tokio_postgres::Config>() {
                Ok(c) => {
                    pg.url = Some(url.get_ref().clone());
                    if c.get_password().is_some() {
                        self.problem(
                            url.span().start,
                            "[store] url: leave the password out of the URL; give password_file or password_env".into(),
                        );
                    }
                }
                Err(e) => {
                    self.problem(
                        url.span().start,
                        format!("[store] url: {e}; expected postgresql://USER@HOST:PORT/DATABASE or key=value pairs"),
                    );
                    return None;
                }
            }
            if rs.host.is_some() || rs.port.is_some() || rs.database.is_some() || rs.user.is_some() {
                self.problem(at, "[store]: give url or host/port/database/user, not both".into());
            }
        } else {
            match (&rs.database, &rs.user) {
                (Some(d), Some(u)) => {
                    pg.database = d.clone();
                    pg.user = u.clone();
                }
                _ => {
                    self.problem(at, "backend = \"postgres\" needs url, or database and user (host and port default to localhost:5432)".into());
                    return None;
                }
            }
            pg.host = rs.host.clone().unwrap_or_else(|| "localhost".into());
            pg.port = rs.port.unwrap_or(5432);
        }
        pg.password = self.secret(at, &rs.password_file, &rs.password_env, "[store] password");
        pg.ca_file = rs.ca_file.as_ref().map(|c| PathBuf::from(c.get_ref()));
        if let Some(n) = &rs.pool_size {
            match *n.get_ref() {
                1..=256 => pg.pool_size = *n.get_ref(),
                v => self.problem(
                    n.span().start,
                    format!("pool_size = {v}: expected 1 to 256 connections"),
                ),
            }
        }
        pg.lease_timeout = self.duration(&rs.lease_timeout, pg.lease_timeout);
        if pg.lease_timeout < Duration::from_secs(3) || pg.lease_timeout > Duration::from_secs(3600) {
            let at = rs.lease_timeout.as_ref().map_or(at, |l| l.span().start);
            self.problem(at, "lease_timeout: expected 3s to 1h".into());
        }
        Some(pg)
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

    pub(super) fn validate(&mut self, raw: RawConfig, path: &Path) -> Option<Config> {
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
        let public_url = self.public_url(raw.http.as_ref(), raw.web.as_ref());
        let web = self.web(raw.web.as_ref(), public_url.is_some());
        let http = match raw.http {
            None => Http {
                listen: default_listen,
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
                Http { listen, token }
            }
        };

        let oauth2 = self.oauth2_providers(&raw.oauth2, Path::new(&ri.data_dir));
        let knowledge = raw.knowledge.as_ref().map(|k| self.knowledge(k));
        let intent = self.intent(raw.intent.as_ref());
        let languages = match raw.language.as_ref().and_then(|l| l.candidates.as_ref()) {
            None => crate::core::language::Languages::default(),
            Some(list) => match crate::core::language::Languages::among(list.get_ref()) {
                Ok(l) => l,
                Err(why) => {
                    self.problem(list.span().start, format!("[language] candidates: {why}"));
                    crate::core::language::Languages::default()
                }
            },
        };

        // Each mailbox with its address and queue (the core's part of it).
        let mut mailboxes: Vec<(MailboxConfig, String, String)> = Vec::new();
        if raw.mailbox.is_empty() {
            self.problem(0, "at least one [[mailbox]] is needed".into());
        }
        for m in raw.mailbox {
            let span = m.span();
            let m = m.into_inner();
            let name = m.name.get_ref().clone();
            if mailboxes.iter().any(|(o, _, _)| o.name == name) {
                self.problem(m.name.span().start, format!("mailbox name {name:?} is used twice"));
            }
            let address = self.address(&m.address, "mailbox address");
            let source = match (m.imap, m.maildir) {
                (Some(imap), None) => {
                    let ispan = imap.span();
                    let i = imap.into_inner();
                    let login = self.oauth2_login(ispan.start, &i.auth, &i.oauth2, &oauth2, "imap");
                    let password = self.secret(ispan.start, &i.password_file, &i.password_env, "imap password");
                    match (&login, &password) {
                        // A bad auth or oauth2 was named already.
                        (None, None) if i.auth.is_none() => {
                            self.problem(
                                ispan.start,
                                "imap needs password_file or password_env (or auth = \"xoauth2\" with oauth2)".into(),
                            );
                        }
                        (Some(_), Some(_)) => {
                            self.problem(
                                ispan.start,
                                "imap: an OAuth2 login takes no password_file or password_env".into(),
                            );
                        }
                        _ => {}
                    }
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
                        oauth2: login.map(Box::new),
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
            mailboxes.push((MailboxConfig { name, source }, address, m.queue));
        }

        let out_span = raw.outgoing.span();
        let ro = raw.outgoing.into_inner();
        let transport = match (ro.smtp, ro.file) {
            (Some(smtp), None) => {
                let sspan = smtp.span();
                let s = smtp.into_inner();
                let password = self.secret(sspan.start, &s.password_file, &s.password_env, "smtp password");
                let login = self.oauth2_login(sspan.start, &s.auth, &s.oauth2, &oauth2, "smtp");
                if login.is_some() && (password.is_some() || s.username.is_none()) {
                    self.problem(
                        sspan.start,
                        "smtp: an OAuth2 login needs username and takes no password_file or password_env".into(),
                    );
                } else if login.is_none() && s.auth.is_none() && s.username.is_some() != password.is_some() {
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
                    oauth2: login.map(Box::new),
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
            backfill_window: None,
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
            backfill_window: self.duration(&ra.backfill_window, Duration::from_secs(86_400)),
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
            suggestions: None,
            canned: Default::default(),
        });
        let canned = std::mem::take(&mut rt.canned);
        let acknowledgement = self.template(rt.acknowledgement, DEFAULT_ACK_SUBJECT, DEFAULT_ACK_BODY);
        let pending_reminder = self.template(rt.pending_reminder, "{{ticket.subject}}", DEFAULT_REMINDER_BODY);
        let pending_closed = self.template(rt.pending_closed, "{{ticket.subject}}", DEFAULT_PENDING_CLOSED_BODY);
        let closed = self.template(rt.closed, "{{ticket.subject}}", DEFAULT_CLOSED_BODY);
        let survey = self.template(rt.survey, "How did we do? {{ticket.subject}}", DEFAULT_SURVEY_BODY);
        let status_reply = self.template(rt.status_reply, "Status: {{ticket.subject}}", DEFAULT_STATUS_BODY);
        let suggestions = self.template(rt.suggestions, "", DEFAULT_SUGGESTIONS_BODY);

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

        let mut store = crate::adapters::store::StoreSettings::default();
        if let Some(rs) = raw.store {
            let sspan = rs.span();
            let rs = rs.into_inner();
            if let Some(mb) = &rs.cache_mb {
                match *mb.get_ref() {
                    4..=65536 => store.cache_bytes = mb.get_ref() * 1024 * 1024,
                    n => self.problem(mb.span().start, format!("cache_mb = {n}: expected 4 to 65536 (MiB)")),
                }
            }
            store.sweep_every = self.interval(
                &rs.sweep_every,
                store.sweep_every,
                "[store] sweep_every: at least \"1s\" (\"24h\" by default)",
            );
            let postgres_keys = rs.url.is_some()
                || rs.host.is_some()
                || rs.port.is_some()
                || rs.database.is_some()
                || rs.user.is_some()
                || rs.password_file.is_some()
                || rs.password_env.is_some()
                || rs.ca_file.is_some()
                || rs.pool_size.is_some()
                || rs.lease_timeout.is_some();
            if let Some(c) = &rs.compact_at_start {
                store.compact_at_start = *c.get_ref();
            }
            match rs.backend.as_ref().map(|b| (b.get_ref().as_str(), b.span().start)) {
                None | Some(("sled", _)) => {
                    if postgres_keys {
                        self.problem(
                            sspan.start,
                            "[store]: url, host, port, database, user, password, ca_file, pool_size and lease_timeout are for backend = \"postgres\"".into(),
                        );
                    }
                }
                Some(("postgres", at)) => {
                    if let Some(c) = &rs.compact_at_start {
                        self.problem(
                            c.span().start,
                            "[store] compact_at_start is for the sled store; PostgreSQL reclaims space itself (autovacuum)"
                                .into(),
                        );
                    }
                    if let Some(pg) = self.postgres(&rs, at) {
                        store.backend = crate::adapters::store::Backend::Postgres(Box::new(pg));
                    }
                }
                Some((other, at)) => self.problem(
                    at,
                    format!("store backend {other:?}: expected \"sled\" (the embedded store) or \"postgres\""),
                ),
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
            let mut min_confidence: Option<(f64, usize)> = None;
            for (key, value) in &r.when {
                let at = value.span().start;
                if key == "intent_min_confidence" {
                    let v = match value.get_ref() {
                        toml::Value::Float(f) => Some(*f),
                        toml::Value::Integer(i) => Some(*i as f64),
                        _ => None,
                    };
                    match v {
                        Some(t) if (0.0..=1.0).contains(&t) => min_confidence = Some((t, at)),
                        _ => self.problem(at, format!("when.{key} must be a number from 0 to 1")),
                    }
                    continue;
                }
                let (negate, base) = match key.strip_prefix("not_") {
                    Some(b) => (true, b),
                    None => (false, key.as_str()),
                };
                if key == "sentiment_below" || key == "sentiment_above" {
                    let v = match value.get_ref() {
                        toml::Value::Float(f) => Some(*f),
                        toml::Value::Integer(i) => Some(*i as f64),
                        _ => None,
                    };
                    match v {
                        Some(t) if (-1.0..=1.0).contains(&t) => when.push(Condition::Sentiment {
                            below: key == "sentiment_below",
                            threshold: t,
                        }),
                        _ => self.problem(at, format!("when.{key} must be a number from -1 to 1")),
                    }
                    continue;
                }
                if base == "intent" {
                    match value.get_ref() {
                        toml::Value::String(s) if !s.is_empty() => when.push(Condition::Intent {
                            labels: vec![s.clone()],
                            min_confidence: 0.0,
                            negate,
                        }),
                        toml::Value::Array(a)
                            if !a.is_empty() && a.iter().all(|v| v.as_str().is_some_and(|s| !s.is_empty())) =>
                        {
                            when.push(Condition::Intent {
                                labels: a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
                                min_confidence: 0.0,
                                negate,
                            })
                        }
                        _ => self.problem(at, format!("when.{key} must be an intent label or a list of them")),
                    }
                    continue;
                }
                if base == "language" {
                    let codes: Vec<String> = match value.get_ref() {
                        toml::Value::String(s) => vec![s.to_ascii_lowercase()],
                        toml::Value::Array(a) if !a.is_empty() && a.iter().all(|v| v.is_str()) => a
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_ascii_lowercase))
                            .collect(),
                        _ => {
                            self.problem(at, format!("when.{key} must be a language code or a list of them"));
                            continue;
                        }
                    };
                    match codes.iter().find(|c| !crate::core::language::is_code(c)) {
                        Some(bad) => self.problem(
                            at,
                            format!("when.{key}: {bad:?} is not a language code (expected ISO 639-1 such as \"de\")"),
                        ),
                        None => when.push(Condition::Language { codes, negate }),
                    }
                    continue;
                }
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
                    c if c.starts_with("customer.") && c.len() > 9 => Field::Customer(c[9..].to_string()),
                    _ => {
                        self.problem(
                            at,
                            format!("unknown condition when.{key} (expected subject, body, from, to, cc, mailbox, header.NAME, customer.FIELD, has_attachment, language, intent, each optionally with not_; sentiment_below, sentiment_above, intent_min_confidence)"),
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
                    use crate::core::model::Priority;
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
                for n in rs.notify {
                    let v = n.get_ref().trim().to_ascii_lowercase();
                    if v == "lead" {
                        set.notify.push(v);
                    } else {
                        let a = self.address(&n, "set.notify");
                        set.notify.push(a);
                    }
                }
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
            if let Some((t, at)) = min_confidence {
                let mut found = false;
                for c in &mut when {
                    if let Condition::Intent { min_confidence, .. } = c {
                        *min_confidence = t;
                        found = true;
                    }
                }
                if !found {
                    self.problem(
                        at,
                        "when.intent_min_confidence needs when.intent in the same rule".to_string(),
                    );
                }
            }
            let on_reply = match r.on.as_ref().map(|o| o.get_ref().as_str()) {
                None | Some("new") => false,
                Some("reply") => true,
                Some(other) => {
                    let at = r.on.as_ref().map_or(0, |o| o.span().start);
                    self.problem(at, format!("rule on {other:?}: expected \"new\" or \"reply\""));
                    false
                }
            };
            if on_reply && (set.queue.is_some() || set.kind.is_some()) {
                let at = r.on.as_ref().map_or(0, |o| o.span().start);
                self.problem(
                    at,
                    "a rule on = \"reply\" sets priority, tags, assignee and notify; queue and type are a new ticket's"
                        .into(),
                );
            }
            rules.push(Rule {
                name: r.name.into_inner(),
                when,
                set,
                cont: r.cont,
                on_reply,
            });
        }

        let mut calendars = std::collections::BTreeMap::new();
        calendars.insert("24x7".to_string(), crate::core::calendar::Calendar::TwentyFourSeven);
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
                    Some(i) => match crate::core::calendar::parse_ranges(ranges.get_ref()) {
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
                    .and_then(|t| crate::core::calendar::parse_ics_dates(&t))
                {
                    Ok(dates) => holidays.extend(dates),
                    Err(e) => self.problem(f.span().start, format!("holidays_file {:?}: {e}", f.get_ref())),
                }
            }
            calendars.insert(name, crate::core::calendar::Calendar::Hours { tz, week, holidays });
        }
        let mut sla = Vec::new();
        for (name, p) in raw.sla {
            let pspan = p.span();
            let p = p.into_inner();
            use crate::core::model::Priority;
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
            .or_else(|| mailboxes.first().map(|(_, a, _)| split_address(a).1.to_string()))
            .unwrap_or_else(|| "postdesk.invalid".into());

        let addresses = mailboxes
            .iter()
            .map(|(m, address, queue)| DeskAddress {
                mailbox: m.name.clone(),
                address: address.clone(),
                queue: queue.clone(),
            })
            .collect();
        let webhooks = self.webhooks(&raw.webhook);
        let trusted_proxies = self.trusted_proxies(raw.web.as_ref());
        let api_tokens = self.api_tokens(&raw.api_token);
        let customer_lookup = raw
            .integrations
            .as_ref()
            .and_then(|i| i.customer_lookup.as_ref())
            .map(|l| self.customer_lookup(l));
        Some(Config {
            path: path.to_path_buf(),
            webhooks,
            api_tokens,
            customer_lookup,
            oauth2,
            knowledge,
            intent,
            trusted_proxies,
            instance: Instance {
                data_dir: PathBuf::from(ri.data_dir),
                secret,
                generate_secret: ri.generate_secret,
            },
            http,
            mailboxes: mailboxes.into_iter().map(|(m, _, _)| m).collect(),
            outgoing,
            store,
            settings: Settings {
                desk: Desk {
                    name: ri.name,
                    subject_tag: tag,
                    timezone: ri.timezone.into_inner(),
                    message_id_domain: domain,
                    public_url,
                    addresses,
                },
                automation,
                templates: Templates {
                    acknowledgement,
                    pending_reminder,
                    pending_closed,
                    closed,
                    survey,
                    status_reply,
                    suggestions,
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
                agents,
                queues,
                rules,
                calendars,
                sla,
                web,
                languages,
            },
        })
    }

    /// `public_url`, from `[http]` or `[web]` (one of them): an `http(s)://`
    /// origin with an optional path, nothing else.
    fn public_url(&mut self, http: Option<&RawHttp>, web: Option<&toml::Spanned<RawWeb>>) -> Option<String> {
        let from_http = http.and_then(|h| h.public_url.as_ref());
        let from_web = web.and_then(|w| w.get_ref().public_url.as_ref());
        if let (Some(_), Some(w)) = (from_http, from_web) {
            self.problem(
                w.span().start,
                "public_url is set in [http] already; set it in one place".into(),
            );
        }
        let u = from_web.or(from_http)?;
        let url = u.get_ref().trim().trim_end_matches('/');
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        let host = rest.map(|r| r.split('/').next().unwrap_or(""));
        match (rest, host) {
            (Some(r), Some(h))
                if !h.is_empty() && !r.contains(['?', '#', ' ', '"', '<', '>', '\\']) && !h.contains('@') =>
            {
                Some(url.to_string())
            }
            _ => {
                self.problem(
                    u.span().start,
                    format!(
                        "public_url {:?} must be an http:// or https:// address like \"https://help.example.com\" (no query, fragment or user)",
                        u.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// `[web]`: the portal needs `public_url` (its links go out by mail).
    fn web(&mut self, raw: Option<&toml::Spanned<RawWeb>>, has_public_url: bool) -> Web {
        let mut web = Web::default();
        let Some(raw) = raw else { return web };
        let at = raw.span().start;
        let raw = raw.get_ref();
        web.dashboard = raw.dashboard;
        if let Some(p) = &raw.portal {
            web.portal = *p.get_ref();
            if web.portal && !has_public_url {
                self.problem(
                    p.span().start,
                    "portal = true needs public_url (in [web] or [http]): the status links in mail point there".into(),
                );
            }
        }
        if web.dashboard && !has_public_url {
            self.problem(
                at,
                "dashboard = true needs public_url (in [web] or [http]): the sign-in links in mail point there".into(),
            );
        }
        for (value, name, slot) in [
            (
                &raw.new_per_ip_per_hour,
                "new_per_ip_per_hour",
                &mut web.new_per_ip_per_hour,
            ),
            (
                &raw.new_per_address_per_hour,
                "new_per_address_per_hour",
                &mut web.new_per_address_per_hour,
            ),
        ] {
            if let Some(v) = value {
                if (1..=10_000).contains(v.get_ref()) {
                    *slot = *v.get_ref();
                } else {
                    self.problem(v.span().start, format!("{name} must be 1 to 10000"));
                }
            }
        }
        if let Some(l) = &raw.login_link_lifetime {
            let d = self.duration(&raw.login_link_lifetime, Duration::from_secs(900));
            if (10..=86_400).contains(&d.as_secs()) {
                web.login_link_seconds = d.as_secs() as i64;
            } else {
                self.problem(
                    l.span().start,
                    "login_link_lifetime must be 10s to 1d (a sign-in link should not outlive the day)".into(),
                );
            }
        }
        if let Some(p) = &raw.proof_of_work {
            if *p.get_ref() <= 24 {
                web.proof_of_work = *p.get_ref();
            } else {
                self.problem(
                    p.span().start,
                    "proof_of_work must be 0 (off) to 24 leading zero bits (each bit doubles the work; 20 is about 1 s on a desktop)".into(),
                );
            }
        }
        web
    }
}

impl Validator<'_> {
    /// `[intent]`: a label field, a retraining interval, a floor of examples.
    fn intent(&mut self, raw: Option<&toml::Spanned<super::raw::RawIntent>>) -> super::IntentConfig {
        let mut out = super::IntentConfig {
            label: "type".into(),
            retrain: None,
            min_examples: 20,
            embeddings: None,
        };
        let Some(raw) = raw else { return out };
        let i = raw.get_ref();
        if let Some(l) = &i.label {
            match l.get_ref().as_str() {
                "type" | "queue" => out.label = l.get_ref().clone(),
                other => self.problem(
                    l.span().start,
                    format!("[intent] label {other:?}: expected \"type\" or \"queue\""),
                ),
            }
        }
        if i.retrain.is_some() {
            out.retrain = Some(self.interval(
                &i.retrain,
                Duration::from_secs(86_400),
                "[intent] retrain: at least \"1s\" (\"24h\" is usual)",
            ));
        }
        if let Some(n) = &i.min_examples {
            if !(2..=1_000_000).contains(n.get_ref()) {
                self.problem(n.span().start, "[intent] min_examples: 2 or more".into());
            }
            out.min_examples = (*n.get_ref()).clamp(2, 1_000_000) as usize;
        }
        match (&i.embeddings, &i.vocabulary) {
            (Some(e), Some(v)) => {
                for (key, f) in [("embeddings", e), ("vocabulary", v)] {
                    if !Path::new(f.get_ref()).is_file() {
                        self.problem(f.span().start, format!("[intent] {key} {}: no such file", f.get_ref()));
                    }
                }
                out.embeddings = Some((PathBuf::from(e.get_ref()), PathBuf::from(v.get_ref())));
            }
            (Some(one), None) | (None, Some(one)) => self.problem(
                one.span().start,
                "[intent] embeddings and vocabulary go together: the token vectors (a .safetensors file) and their tokenizer's pieces (one a line)".into(),
            ),
            (None, None) => {}
        }
        out
    }

    /// `[knowledge]`: a folder that is there, a score, a count.
    fn knowledge(&mut self, raw: &toml::Spanned<super::raw::RawKnowledge>) -> super::KnowledgeConfig {
        let k = raw.get_ref();
        let path = PathBuf::from(k.path.get_ref());
        if !path.is_dir() {
            self.problem(
                k.path.span().start,
                format!("[knowledge] path {}: not a folder of .md articles", path.display()),
            );
        }
        let min_score = k.min_score.as_ref().map_or(2.0, |s| *s.get_ref());
        if !(min_score.is_finite() && min_score >= 0.0) {
            self.problem(
                k.min_score.as_ref().map_or(raw.span().start, |s| s.span().start),
                "[knowledge] min_score: a number 0 or more (BM25; explain shows the scores)".into(),
            );
        }
        let suggestions = k.suggestions.as_ref().map_or(3, |s| *s.get_ref());
        if !(1..=10).contains(&suggestions) {
            self.problem(
                k.suggestions.as_ref().map_or(raw.span().start, |s| s.span().start),
                "[knowledge] suggestions: 1 to 10 articles".into(),
            );
        }
        super::KnowledgeConfig {
            path,
            min_score: min_score as f32,
            suggestions: suggestions.clamp(1, 10) as usize,
        }
    }

    /// `[[oauth2]]`: unique names, http(s) endpoints (plain http to loopback only), a known flow.
    fn oauth2_providers(
        &mut self,
        raw: &[toml::Spanned<super::raw::RawOAuth2>],
        data_dir: &Path,
    ) -> Vec<super::OAuth2Provider> {
        let mut out: Vec<super::OAuth2Provider> = Vec::new();
        for p in raw {
            let at = p.span().start;
            let p = p.get_ref();
            let name = p.name.get_ref().trim().to_string();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)) {
                self.problem(
                    p.name.span().start,
                    format!("oauth2 name {name:?}: letters, digits, _ and - only"),
                );
            }
            if out.iter().any(|o| o.name == name) {
                self.problem(p.name.span().start, format!("oauth2 name {name:?} is used twice"));
            }
            let mut endpoint = |v: &toml::Spanned<String>, what: &str| -> String {
                let url = v.get_ref().trim().to_string();
                let host = url
                    .strip_prefix("http://")
                    .map(|rest| rest.split(['/', '?']).next().unwrap_or(""))
                    .map(|h| {
                        h.rsplit_once(':')
                            .map_or(h, |(h, _)| h)
                            .trim_matches(['[', ']'])
                            .to_string()
                    });
                let ok = match &host {
                    Some(h) => is_loopback(h),
                    None => url.starts_with("https://") && url.len() > "https://".len(),
                };
                if !ok {
                    self.problem(
                        v.span().start,
                        format!("oauth2 {what} {url:?}: an https:// address (http:// only to a loopback host)"),
                    );
                }
                url
            };
            let token_url = endpoint(&p.token_url, "token_url");
            let device_url = p.device_url.as_ref().map(|d| endpoint(d, "device_url"));
            let auth_url = p.auth_url.as_ref().map(|d| endpoint(d, "auth_url"));
            let flow = match p.flow.as_ref().map(|f| f.get_ref().as_str()) {
                None | Some("refresh_token") => super::OAuth2Flow::RefreshToken,
                Some("client_credentials") => super::OAuth2Flow::ClientCredentials,
                Some(other) => {
                    self.problem(
                        p.flow.as_ref().map_or(at, |f| f.span().start),
                        format!("oauth2 flow {other:?}: expected \"refresh_token\" or \"client_credentials\""),
                    );
                    super::OAuth2Flow::RefreshToken
                }
            };
            let client_secret = self.secret(at, &p.client_secret_file, &p.client_secret_env, "oauth2 client_secret");
            if flow == super::OAuth2Flow::ClientCredentials && client_secret.is_none() {
                self.problem(
                    at,
                    "oauth2 flow = \"client_credentials\" needs client_secret_file or client_secret_env".into(),
                );
            }
            if p.client_id.get_ref().trim().is_empty() {
                self.problem(p.client_id.span().start, "oauth2 client_id must not be empty".into());
            }
            if p.scopes.iter().any(|s| s.is_empty() || s.contains(char::is_whitespace)) {
                self.problem(at, "oauth2 scopes: each one word, no spaces".into());
            }
            out.push(super::OAuth2Provider {
                refresh_token_file: p
                    .refresh_token_file
                    .as_ref()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| data_dir.join("oauth2").join(format!("{name}.refresh_token"))),
                name,
                token_url,
                device_url,
                auth_url,
                client_id: p.client_id.get_ref().trim().to_string(),
                client_secret,
                scopes: p.scopes.clone(),
                flow,
            });
        }
        out
    }

    /// `auth` and `oauth2` of an `imap` or `smtp` table: `None` for a password login.
    fn oauth2_login(
        &mut self,
        at: usize,
        auth: &Option<toml::Spanned<String>>,
        provider: &Option<toml::Spanned<String>>,
        providers: &[super::OAuth2Provider],
        what: &str,
    ) -> Option<super::OAuth2Login> {
        let mechanism = match auth.as_ref().map(|a| a.get_ref().as_str()) {
            None | Some("password") => None,
            Some("xoauth2") => Some(super::Sasl::Xoauth2),
            Some("oauthbearer") if what == "imap" => Some(super::Sasl::OAuthBearer),
            Some(other) => {
                let expected = if what == "imap" {
                    "\"password\", \"xoauth2\" or \"oauthbearer\""
                } else {
                    "\"password\" or \"xoauth2\""
                };
                self.problem(
                    auth.as_ref().map_or(at, |a| a.span().start),
                    format!("{what} auth {other:?}: expected {expected}"),
                );
                return None;
            }
        };
        match (mechanism, provider) {
            (None, None) => None,
            (None, Some(p)) => {
                self.problem(
                    p.span().start,
                    format!("{what} oauth2 = {:?} needs auth = \"xoauth2\"", p.get_ref()),
                );
                None
            }
            (Some(_), None) => {
                self.problem(
                    auth.as_ref().map_or(at, |a| a.span().start),
                    format!("{what}: an OAuth2 login needs oauth2 = \"NAME\" of an [[oauth2]] provider"),
                );
                None
            }
            (Some(mechanism), Some(p)) => match providers.iter().find(|o| &o.name == p.get_ref()) {
                Some(found) => Some(super::OAuth2Login {
                    provider: found.clone(),
                    mechanism,
                }),
                None => {
                    self.problem(
                        p.span().start,
                        format!("{what} oauth2 = {:?}: no such [[oauth2]]", p.get_ref()),
                    );
                    None
                }
            },
        }
    }

    /// `[integrations.customer_lookup]`.
    fn customer_lookup(&mut self, raw: &toml::Spanned<super::raw::RawLookup>) -> super::CustomerLookup {
        let at = raw.span().start;
        let l = raw.get_ref();
        let url = l.url.get_ref().trim().to_string();
        if !(url.starts_with("https://") || url.starts_with("http://")) || !url.contains("{email}") {
            self.problem(
                l.url.span().start,
                "customer_lookup url must be an http(s):// address with {email} in it".into(),
            );
        }
        let header = l
            .header
            .as_ref()
            .map_or("Authorization".to_string(), |h| h.get_ref().trim().to_string());
        if header.is_empty() || !header.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            self.problem(
                l.header.as_ref().map_or(at, |h| h.span().start),
                "customer_lookup header: a header name (letters, digits, -)".into(),
            );
        }
        let timeout = self.duration(&l.timeout, Duration::from_secs(2));
        if !(1..=10).contains(&timeout.as_secs()) {
            self.problem(
                l.timeout.as_ref().map_or(at, |t| t.span().start),
                "customer_lookup timeout must be 1s to 10s (mail waits for it)".into(),
            );
        }
        let cache = self.duration(&l.cache, Duration::from_secs(3600));
        let fields: Vec<String> = match &l.fields {
            Some(f) => f.iter().map(|f| f.get_ref().trim().to_string()).collect(),
            None => vec!["name".into(), "company".into(), "plan".into()],
        };
        for (i, f) in fields.iter().enumerate() {
            if f.is_empty() || !f.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
                let span = l.fields.as_ref().and_then(|v| v.get(i)).map_or(at, |s| s.span().start);
                self.problem(
                    span,
                    format!("customer_lookup field {f:?}: letters, digits, _ - . only"),
                );
            }
        }
        super::CustomerLookup {
            url,
            header,
            token: self.secret(at, &l.token_file, &l.token_env, "customer_lookup token"),
            timeout: timeout.clamp(Duration::from_secs(1), Duration::from_secs(10)),
            cache,
            fields,
        }
    }

    /// `[[api_token]]`s: a unique name, a token source, known scopes.
    fn api_tokens(&mut self, raw: &[toml::Spanned<super::raw::RawApiToken>]) -> Vec<super::ApiToken> {
        let mut out: Vec<super::ApiToken> = Vec::new();
        for t in raw {
            let at = t.span().start;
            let t = t.get_ref();
            let name = t.name.get_ref().trim().to_string();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                self.problem(
                    t.name.span().start,
                    "api_token name: letters, digits, - _ . only".into(),
                );
            }
            if out.iter().any(|o| o.name == name) {
                self.problem(t.name.span().start, format!("api_token name {name:?} is used twice"));
            }
            let mut scopes = Vec::new();
            for s in &t.scopes {
                if super::API_SCOPES.contains(&s.get_ref().as_str()) {
                    scopes.push(s.get_ref().clone());
                } else {
                    self.problem(
                        s.span().start,
                        format!(
                            "unknown scope {:?} (expected {})",
                            s.get_ref(),
                            super::API_SCOPES.join(", ")
                        ),
                    );
                }
            }
            match self.secret(at, &t.token_file, &t.token_env, "api_token") {
                Some(secret) => out.push(super::ApiToken { name, secret, scopes }),
                None => self.problem(at, format!("api_token {name}: set token_file or token_env")),
            }
        }
        out
    }

    /// `[web] trusted_proxies`: addresses or networks.
    fn trusted_proxies(&mut self, raw: Option<&toml::Spanned<RawWeb>>) -> Vec<(std::net::IpAddr, u8)> {
        let mut out = Vec::new();
        for p in raw.map(|r| &r.get_ref().trusted_proxies[..]).unwrap_or_default() {
            match parse_net(p.get_ref()) {
                Some(net) => out.push(net),
                None => self.problem(
                    p.span().start,
                    format!(
                        "trusted_proxies: {:?} is not an address or network (like \"127.0.0.1\" or \"10.0.0.0/8\")",
                        p.get_ref()
                    ),
                ),
            }
        }
        out
    }

    /// `[[webhook]]`s: a name each (unique), an http(s) URL, known events, a
    /// secret for the signed JSON format.
    fn webhooks(&mut self, raw: &[toml::Spanned<super::raw::RawWebhook>]) -> Vec<super::Webhook> {
        use super::{HookFormat, WEBHOOK_EVENTS, Webhook};
        let mut out: Vec<Webhook> = Vec::new();
        for (i, h) in raw.iter().enumerate() {
            let at = h.span().start;
            let h = h.get_ref();
            let name = match &h.name {
                Some(n) => {
                    let v = n.get_ref().trim().to_string();
                    if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                        self.problem(n.span().start, "webhook name: letters, digits, - _ . only".into());
                    }
                    if out.iter().any(|o| o.name == v) {
                        self.problem(n.span().start, format!("webhook name {v:?} is used twice"));
                    }
                    v
                }
                None => format!("webhook{}", i + 1),
            };
            let url = h.url.get_ref().trim().to_string();
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains(char::is_whitespace) {
                self.problem(
                    h.url.span().start,
                    "webhook url must be an http:// or https:// address".into(),
                );
            }
            let mut events = Vec::new();
            for e in h.events.get_ref() {
                if e.get_ref() == "*" || WEBHOOK_EVENTS.contains(&e.get_ref().as_str()) {
                    events.push(e.get_ref().clone());
                } else {
                    self.problem(
                        e.span().start,
                        format!(
                            "unknown webhook event {:?} (expected * or one of: {})",
                            e.get_ref(),
                            WEBHOOK_EVENTS.join(", ")
                        ),
                    );
                }
            }
            if h.events.get_ref().is_empty() {
                self.problem(
                    h.events.span().start,
                    "webhook events: name at least one (or \"*\")".into(),
                );
            }
            let format = match h.format.as_ref().map(|f| f.get_ref().as_str()) {
                None | Some("json") => HookFormat::Json,
                Some("slack") => HookFormat::Slack,
                Some(other) => {
                    self.problem(
                        h.format.as_ref().map_or(at, |f| f.span().start),
                        format!("webhook format {other:?}: expected \"json\" or \"slack\""),
                    );
                    HookFormat::Json
                }
            };
            let secret = self.secret(at, &h.secret_file, &h.secret_env, "webhook secret");
            if secret.is_none() && format == HookFormat::Json {
                self.problem(
                    at,
                    format!("webhook {name}: the json format needs secret_file or secret_env (receivers check the signature with it)"),
                );
            }
            let attempts = match &h.attempts {
                Some(a) if (1..=50).contains(a.get_ref()) => *a.get_ref(),
                Some(a) => {
                    self.problem(a.span().start, "webhook attempts must be 1 to 50".into());
                    8
                }
                None => 8,
            };
            let backoff = self.duration(&h.backoff, Duration::from_secs(30));
            let timeout = self.duration(&h.timeout, Duration::from_secs(10));
            if !(1..=300).contains(&timeout.as_secs()) {
                self.problem(
                    h.timeout.as_ref().map_or(at, |t| t.span().start),
                    "webhook timeout must be 1s to 5m".into(),
                );
            }
            out.push(Webhook {
                name,
                url,
                events,
                secret,
                format,
                attempts,
                backoff: backoff.max(Duration::from_secs(1)),
                timeout,
            });
        }
        out
    }
}

/// `ADDRESS` or `ADDRESS/PREFIX` (IPv4 or IPv6).
fn parse_net(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (ip, prefix) = match s.trim().split_once('/') {
        Some((ip, p)) => (ip.parse::<std::net::IpAddr>().ok()?, p.parse::<u8>().ok()?),
        None => {
            let ip = s.trim().parse::<std::net::IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    (prefix <= if ip.is_ipv4() { 32 } else { 128 }).then_some((ip, prefix))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}
