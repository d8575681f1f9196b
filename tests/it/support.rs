//! Helpers: a postdesk instance in a temp dir, the binary, a tiny IMAP client, mail builders.

use crate::servers::{PASSWORD, temp_dir};
use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_postdesk");

/// A postdesk instance: a config file and its data under a temp dir.
pub struct Desk {
    pub dir: PathBuf,
    pub config: PathBuf,
    /// The HTTP API's port.
    pub http_port: u16,
}

/// One agent, Alice, in the queue `general`, which assigns round robin.
pub const ALICE: &str = r#"
[[agent]]
name = "Alice Jones"
email = "alice@example.com"
queues = ["general"]

[[queue]]
name = "general"
assign = "round_robin"
"#;

/// Builds the config text of a desk.
pub struct DeskConfig {
    pub agents: Option<String>,
    /// `[instance] timezone`, when set.
    pub timezone: Option<String>,
    pub http: String,
    pub mailboxes: Vec<String>,
    pub outgoing: String,
    pub extra: String,
    /// `[store]`: `None` for the run's default (sled, or PostgreSQL with `POSTDESK_TEST_STORE=postgres`).
    pub store: Option<String>,
}

impl DeskConfig {
    pub fn new() -> DeskConfig {
        DeskConfig {
            agents: None,
            timezone: None,
            http: String::new(),
            mailboxes: Vec::new(),
            outgoing: String::new(),
            extra: String::new(),
            store: None,
        }
    }

    /// Keeps this desk on sled whatever the run's backend (tests of sled's own files).
    pub fn sled(mut self) -> Self {
        self.store = Some(String::new());
        self
    }

    /// Sets `[store]` to this text.
    pub fn store(mut self, text: String) -> Self {
        self.store = Some(text);
        self
    }

    /// Puts this desk on a fresh database of `pg`.
    pub fn postgres(mut self, pg: &crate::pg::Postgres) -> Self {
        self.store = Some(pg.store_config(&pg.create_database()));
        self
    }

    /// An IMAP mailbox on a local Dovecot (plain on loopback).
    pub fn imap(mut self, name: &str, address: &str, port: u16, user: &str, extra: &str) -> Self {
        self.mailboxes.push(format!(
            "[[mailbox]]\nname = \"{name}\"\naddress = \"{address}\"\nimap = {{ host = \"127.0.0.1\", port = {port}, tls = \"plain\", username = \"{user}\", password_env = \"POSTDESK_TEST_IMAP_PASSWORD\", processed = \"Processed\", poll_interval = \"1h\"{extra} }}\n"
        ));
        self
    }

    /// Replaces the default agent (Alice, in no queue) with these `[[agent]]`/`[[queue]]` tables.
    pub fn agents(mut self, text: &str) -> Self {
        self.agents = Some(text.to_string());
        self
    }

    pub fn raw_mailbox(mut self, text: &str) -> Self {
        self.mailboxes.push(text.to_string());
        self
    }

    pub fn smtp(mut self, port: u16) -> Self {
        self.outgoing = format!(
            "[outgoing]\nsmtp = {{ host = \"127.0.0.1\", port = {port}, tls = \"plain\", timeout = \"10s\" }}\nretry_base = \"1s\"\nmax_attempts = 5\n"
        );
        self
    }

    /// Extra keys for `[http]` (which always listens on a free loopback port).
    pub fn http(mut self, keys: &str) -> Self {
        self.http.push_str(keys);
        self.http.push('\n');
        self
    }

    /// Sets `[instance] timezone` (the desk's days in reports).
    pub fn timezone(mut self, tz: &str) -> Self {
        self.timezone = Some(tz.to_string());
        self
    }

    /// Leaves `[outgoing]` to `extra`.
    pub fn no_outgoing(mut self) -> Self {
        self.outgoing = "\n".into();
        self
    }

    pub fn extra(mut self, text: &str) -> Self {
        self.extra.push_str(text);
        self.extra.push('\n');
        self
    }

    pub fn build(self) -> Desk {
        let dir = temp_dir("desk");
        let mailboxes = if self.mailboxes.is_empty() {
            format!(
                "[[mailbox]]\nname = \"support\"\naddress = \"support@example.com\"\nmaildir = {{ path = \"{}/inbox\" }}\n",
                dir.display()
            )
        } else {
            self.mailboxes.join("\n")
        };
        let outgoing = if self.outgoing.is_empty() {
            format!("[outgoing]\nfile = {{ path = \"{}/outbox\" }}\n", dir.display())
        } else {
            self.outgoing
        };
        // The suite's mails carry fixed dates (`mail()`: 23 November 2026)
        // that age with the calendar: its desks handle every backfilled mail
        // as arriving, unless a test sets `backfill_window` itself.
        let window = "[automation]\nbackfill_window = \"36500d\"\n";
        let (mut agents, mut extra) = (self.agents, self.extra);
        let set = agents.iter().chain([&extra]).any(|t| t.contains("backfill_window"));
        if let Some(a) = agents.as_mut().filter(|a| !set && a.contains("[automation]\n")) {
            *a = a.replacen("[automation]\n", window, 1);
        } else if !set && extra.contains("[automation]\n") {
            extra = extra.replacen("[automation]\n", window, 1);
        } else if !set {
            extra = format!("{extra}\n{window}");
        }
        let text = format!(
            "[instance]\nname = \"Example Support\"\nsubject_tag = \"Support\"\ndata_dir = \"{d}/data\"\nsecret_file = \"{d}/secret\"\ngenerate_secret = true\n{timezone}\n{mailboxes}\n{outgoing}\n{agents}\n\n{extra}",
            d = dir.display(),
            timezone = self
                .timezone
                .map(|tz| format!("timezone = \"{tz}\"\n"))
                .unwrap_or_default(),
            agents =
                agents.unwrap_or_else(|| "[[agent]]\nname = \"Alice Jones\"\nemail = \"alice@example.com\"\n".into()),
        );
        let store = match self.store {
            Some(s) => s,
            None if crate::pg::suite_on_postgres() => {
                let pg = crate::pg::shared();
                pg.store_config(&pg.create_database())
            }
            None => String::new(),
        };
        let port = crate::servers::free_port();
        let text = format!("{text}\n{store}\n[http]\nlisten = \"127.0.0.1:{port}\"\n{}", self.http)
            .replace("{http_url}", &format!("http://127.0.0.1:{port}"));
        let config = dir.join("postdesk.toml");
        fs::write(&config, text).unwrap();
        Desk {
            dir,
            config,
            http_port: port,
        }
    }
}

impl Desk {
    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("-c")
            .arg(&self.config)
            .env("POSTDESK_TEST_IMAP_PASSWORD", PASSWORD)
            .env("POSTDESK_LOG", "info")
            .stdin(Stdio::null());
        c
    }

    /// Runs a command to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs a command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "postdesk {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Writes mails as files and ingests them; returns the JSON summary.
    pub fn ingest(&self, mails: &[&str]) -> Value {
        self.ingest_args(mails, &[])
    }

    /// Pipes one mail to `ingest -`, as an MTA delivers it: it arrives now (no backfill).
    pub fn deliver(&self, mail: &str) -> Value {
        use std::io::Write;
        let mut child = self
            .command()
            .args(["ingest", "--json", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(mail.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ingest - failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
    }

    /// `ingest` with extra arguments.
    pub fn ingest_args(&self, mails: &[&str], extra: &[&str]) -> Value {
        let dir = self.dir.join(format!("in-{}", rand_u64()));
        fs::create_dir_all(&dir).unwrap();
        for (i, m) in mails.iter().enumerate() {
            fs::write(dir.join(format!("{i:04}.eml")), m).unwrap();
        }
        let mut args = vec!["ingest", "--json", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "ingest failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::write(self.dir.join("last-ingest.log"), &out.stderr);
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
    }

    pub fn show(&self, id: u64) -> Value {
        serde_json::from_str(&self.ok(&["show", &id.to_string(), "--json"])).unwrap()
    }

    /// The mails the desk's file outbox holds (its `.eml` files; none before the first).
    pub fn sent(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("outbox"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn tickets(&self) -> Vec<Value> {
        serde_json::from_str(&self.ok(&["tickets", "--json"])).unwrap()
    }

    /// Starts the daemon.
    pub fn start(&self) -> Daemon {
        self.start_with_env(&[])
    }

    /// Starts the daemon with extra environment variables.
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        let log = self.dir.join(format!("daemon-{}.log", rand_u64()));
        let child = self
            .command()
            .envs(env.iter().copied())
            .arg("run")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Daemon { child, log };
        // Signals are handled from here on.
        let start = Instant::now();
        while !daemon.log().contains("postdesk running") {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("the daemon exited with {status} before it ran:\n{}", daemon.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting for the daemon to start:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }
}

impl Drop for Desk {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst) * 7919 + std::process::id() as u64
}

/// A running `postdesk run`.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// SIGTERM, then wait; asserts a clean exit.
    pub fn stop(mut self) -> String {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = fs::read_to_string(&self.log).unwrap_or_default();
                assert!(status.success(), "daemon exited with {status}:\n{log}");
                return log;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "daemon did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until `f` holds; on time-out the panic shows the daemon's log.
    pub fn wait(&self, secs: u64, what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            if start.elapsed() > Duration::from_secs(secs) {
                panic!("timed out waiting for {what}; daemon log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `f` holds, or panics with `what` after `secs` seconds.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The usual setup: a Dovecot with user `support`, an SMTP sink, and a desk
/// reading that user's INBOX (processed mail moved to `Processed`).
pub fn imap_desk() -> (crate::servers::Dovecot, crate::servers::Smtp, Desk) {
    imap_desk_with("", "")
}

/// [`imap_desk`] with more of the mailbox's options (`", batch_size = 1"`)
/// and more config (`extra`).
pub fn imap_desk_with(options: &str, extra: &str) -> (crate::servers::Dovecot, crate::servers::Smtp, Desk) {
    let dovecot = crate::servers::Dovecot::start(&["support"]);
    let smtp = crate::servers::Smtp::start();
    let desk = DeskConfig::new()
        .imap("support", "support@example.com", dovecot.port, "support", options)
        .smtp(smtp.port)
        .extra(extra)
        .build();
    (dovecot, smtp, desk)
}

/// A minimal blocking IMAP client for putting mail in and counting it.
pub struct Imap {
    reader: BufReader<TcpStream>,
    tag: u32,
}

impl Imap {
    pub fn login(port: u16, user: &str) -> Imap {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Imap {
            reader: BufReader::new(s),
            tag: 0,
        };
        let mut greeting = String::new();
        c.reader.read_line(&mut greeting).unwrap();
        c.cmd(&format!("LOGIN {user} {PASSWORD}"));
        c
    }

    fn write(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    /// Runs a command; returns the untagged lines; panics unless OK.
    pub fn cmd(&mut self, command: &str) -> Vec<String> {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        self.write(format!("{tag} {command}\r\n").as_bytes());
        self.read_until_tagged(&tag)
    }

    fn read_until_tagged(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "imap connection closed");
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                assert!(rest.starts_with("OK"), "imap command failed: {line}");
                return lines;
            }
            lines.push(line);
        }
    }

    pub fn append(&mut self, folder: &str, mail: &str) {
        self.append_at(folder, mail, None)
    }

    /// Appends with the server's delivery time (INTERNALDATE) set, as
    /// `"23-Nov-2026 09:00:00 +0000"`.
    pub fn append_at(&mut self, folder: &str, mail: &str, delivered: Option<&str>) {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        let bytes = mail.replace("\r\n", "\n").replace('\n', "\r\n");
        let date = delivered.map(|d| format!("\"{d}\" ")).unwrap_or_default();
        self.write(format!("{tag} APPEND {folder} {date}{{{}}}\r\n", bytes.len()).as_bytes());
        let mut cont = String::new();
        self.reader.read_line(&mut cont).unwrap();
        assert!(cont.starts_with('+'), "no continuation: {cont}");
        self.write(bytes.as_bytes());
        self.write(b"\r\n");
        self.read_until_tagged(&tag);
    }

    /// Number of messages in a folder (0 when it does not exist).
    pub fn count(&mut self, folder: &str) -> u32 {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        self.write(format!("{tag} STATUS {folder} (MESSAGES)\r\n").as_bytes());
        let mut n = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line.starts_with("* STATUS") {
                n = line
                    .rsplit("MESSAGES ")
                    .next()
                    .and_then(|r| r.trim_end().trim_end_matches(')').parse().ok())
                    .unwrap();
            }
            if line.starts_with(&format!("{tag} ")) {
                return if line.contains(" OK") { n } else { 0 };
            }
        }
    }
}

/// The first mail the SMTP sink delivered to `agent` about ticket `ticket`
/// (its notification, whose tokens an agent's reply carries).
pub fn notification_of(smtp: &crate::servers::Smtp, agent: &str, ticket: u64) -> String {
    smtp.received_by(agent)
        .into_iter()
        .find(|m| header(m, "Subject").is_some_and(|s| s.starts_with(&format!("[Support #{ticket}]"))))
        .unwrap_or_else(|| panic!("no mail to {agent} about ticket {ticket}"))
}

/// A plain mail with CRLF line ends.
/// `postdesk check` on a desk with `extra` in its config: it must fail and
/// name each of `wanted`; the whole complaint comes back.
pub fn check_refuses(extra: &str, wanted: &[&str]) -> String {
    let desk = DeskConfig::new().extra(extra).build();
    let out = desk.run(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "check passed with:\n{extra}");
    for w in wanted {
        assert!(err.contains(w), "{w}: {err}");
    }
    err
}

pub fn mail(from: &str, to: &str, subject: &str, message_id: &str, headers: &str, body: &str) -> String {
    let mut m = format!("From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n");
    if !message_id.is_empty() {
        m.push_str(&format!("Message-ID: <{message_id}>\r\n"));
    }
    for h in headers.lines().filter(|l| !l.is_empty()) {
        m.push_str(h);
        m.push_str("\r\n");
    }
    m.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    m.push_str(&body.replace('\n', "\r\n"));
    m.push_str("\r\n");
    m
}

/// The value of a header in a received mail.
pub fn header<'a>(mail: &'a str, name: &str) -> Option<&'a str> {
    let head = mail.split("\r\n\r\n").next().unwrap_or("");
    head.lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim())
}

/// How many of a ticket's messages (`show --json`) came in.
pub fn inbound_messages(ticket: &Value) -> usize {
    ticket["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "inbound")
        .count()
}

/// Event kinds of a ticket's log.
pub fn event_kinds(ticket: &Value) -> Vec<String> {
    ticket["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// The text body of a received mail, transfer encoding undone (the first text part).
pub fn body_text(mail: &str) -> String {
    mail_parser::MessageParser::default()
        .parse(mail.as_bytes())
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default()
}

/// A plain reply from an agent to one of our notifications: To its Reply-To,
/// In-Reply-To its Message-ID.
pub fn agent_reply(from: &str, notification: &str, date: &str, id: &str, text: &str) -> String {
    format!(
        "From: {from}\r\nTo: {}\r\nSubject: Re: x\r\nDate: {date}\r\nMessage-ID: <{id}@example.com>\r\nIn-Reply-To: {}\r\n\r\n{text}\r\n",
        header(notification, "Reply-To").unwrap(),
        header(notification, "Message-ID").unwrap()
    )
}

/// Sends one raw HTTP/1.1 request (`head` without the blank line; `Connection:
/// close` is added) to the API on `port`; returns the status and body.
pub fn http_raw(port: u16, head: &str, body: &[u8]) -> (u16, String) {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = head.trim_end().replace('\n', "\r\n").replace("\r\r\n", "\r\n");
    req.push_str(&format!(
        "\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    // The server may answer and close before the body is sent (a refused upload).
    let _ = s.write_all(req.as_bytes()).and_then(|_| s.write_all(body));
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
