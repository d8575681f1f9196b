//! The command line: parses arguments, sets up logging, loads the config,
//! calls the library, and maps errors to exit codes in one place.

/// `println!` for anything that may carry mail content: control characters
/// (escape sequences, C1 controls, bidi overrides) are shown as `\u{..}`, never sent raw to a terminal.
macro_rules! say {
    () => { println!() };
    ($($arg:tt)*) => { println!("{}", crate::cli::terminal_safe(&format!($($arg)*))) };
}
/// `print!` with [`terminal_safe`].
macro_rules! say_raw {
    ($($arg:tt)*) => { print!("{}", crate::cli::terminal_safe(&format!($($arg)*))) };
}
/// `println!` for JSON: the C1 and bidi controls serde_json leaves raw become `\u` escapes (same data).
macro_rules! say_json {
    ($($arg:tt)*) => { println!("{}", crate::cli::json_safe(&format!($($arg)*))) };
}
/// `print!` with [`json_safe`].
macro_rules! say_json_raw {
    ($($arg:tt)*) => { print!("{}", crate::cli::json_safe(&format!($($arg)*))) };
}

use crate::adapters::config::{self, Config, EXIT_CONFIG, SecretSource};
use crate::adapters::ingest;
use crate::adapters::store::{Page, Store, StoreError, TicketFilter};
use crate::core::model::{Status, Ticket, TicketId};
use crate::core::token::Signer;
use crate::pipeline::{Origin, Pipeline, Summary};
use crate::transports::percent_encode;
use crate::transports::smtp::{Mailer, drain};
use crate::view::{DayOrTime, TicketView, parse_day_or_time, ticket_view};
use clap::{Parser, Subcommand};
use jiff::Timestamp;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Exit code when the store cannot take mail now (EX_TEMPFAIL): an MTA retries.
pub const EXIT_TEMPFAIL: i32 = 75;
/// Exit code for unreadable input (EX_NOINPUT).
pub const EXIT_NOINPUT: i32 = 66;
/// Exit code for other failures (EX_SOFTWARE).
pub const EXIT_SOFTWARE: i32 = 70;
/// Exit code for a bad argument (as clap's own): one the store or the daemon refused.
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(name = "postdesk", version, about = "Email-first shared-inbox helpdesk")]
struct Cli {
    /// Config file (else $POSTDESK_CONFIG, ./postdesk.toml, /etc/postdesk/postdesk.toml).
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format: text (journald-friendly under systemd: no colours or
    /// timestamps, syslog level prefixes) or json (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// What `postdesk oauth2` does.
#[derive(Subcommand, Debug)]
enum OAuth2Action {
    /// Runs the device flow of the `[[oauth2]]` provider named NAME: prints
    /// where to enter a code, waits for the grant, keeps the refresh token.
    Login {
        /// The provider's name in `[[oauth2]]`.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon: sources, sender.
    Run,
    /// Validate the config; errors as file:line:col; exit 78 when bad.
    Check,
    /// Run .eml files, folders, mbox files or Maildirs (- for stdin) through the pipeline once.
    Ingest {
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Keep what was queued instead of sending it.
        #[arg(long)]
        no_send: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Mailbox (by name) the mail counts as arriving in; default the first.
        #[arg(long)]
        mailbox: Option<String>,
    },
    /// Upgrade the configured store's layout in place; with `--to postgres`,
    /// copy the sled store in data_dir into the PostgreSQL that `[store]` names.
    Migrate {
        /// The backend to move to (only `postgres`).
        #[arg(long, value_parser = ["postgres"])]
        to: Option<String>,
        /// Print the counts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy the sled store, as it is at one moment, into a new folder
    /// `data_dir/backups/<UTC time>` (through the daemon while it runs: writes
    /// wait meanwhile); on PostgreSQL, back the database up with its own tools.
    Backup {
        /// Then remove the older backups in data_dir/backups but the newest N (this one included).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        keep: Option<u32>,
        /// Print the folder and sizes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite the sled store compactly (the daemon must be stopped); `ingest`
    /// does it itself after a backfill that at least doubled the store.
    Compact {
        /// Print the sizes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Trains the intent model (`data_dir/intent.model`) on the tickets'
    /// labels, or on a CSV file; the daemon loads it on start and on reload.
    Train {
        /// Learn from a CSV file instead: FILE (columns `text` and `label`),
        /// or FILE:TEXT,LABEL to name other columns.
        #[arg(long)]
        csv: Option<String>,
        /// The ticket field that labels each ticket's first customer mail: type or
        /// queue (default: `[intent] label`, else type).
        #[arg(long, value_parser = ["type", "queue"])]
        label: Option<String>,
        /// JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Run due timers once, then send what is queued.
    Tick {
        /// The time to act as (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        now: Option<Timestamp>,
        /// Keep what was queued instead of sending it.
        #[arg(long)]
        no_send: bool,
    },
    /// List tickets.
    Tickets {
        /// Only this status (new, open, pending, resolved, closed).
        #[arg(long, value_parser = parse_status)]
        status: Option<Status>,
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only this assignee.
        #[arg(long)]
        assignee: Option<String>,
        /// Only tickets of this requester (an address).
        #[arg(long)]
        requester: Option<String>,
        /// Only tickets updated at or after this time (RFC 3339) or day.
        #[arg(long, value_parser = parse_day_or_time)]
        updated_since: Option<DayOrTime>,
        /// At most this many tickets (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
        /// Continue after a previous page (the cursor it printed).
        #[arg(long)]
        cursor: Option<String>,
        /// JSON array.
        #[arg(long)]
        json: bool,
    },
    /// One ticket with its messages and events.
    Show {
        /// Ticket number.
        id: u64,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Merges ticket ID into ticket INTO (kept, on the older ticket's
    /// clocks): its messages and events show there, and mail to ID lands there.
    Merge {
        /// The ticket merged away.
        id: u64,
        /// The ticket kept.
        into: u64,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Splits ticket PART, merged into ticket ID, back out into its own ticket.
    Split {
        /// The ticket it was merged into.
        id: u64,
        /// The ticket to give back its own.
        part: u64,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Helpdesk metrics over a period, from the tickets' event logs.
    Report {
        /// Start: an RFC 3339 time, or YYYY-MM-DD for that day's midnight in
        /// the instance's time zone ([instance] timezone); default: the beginning.
        #[arg(long, value_parser = parse_day_or_time)]
        since: Option<DayOrTime>,
        /// End, exclusive: an RFC 3339 time, or YYYY-MM-DD for that day's
        /// midnight in the instance's time zone; default: now.
        #[arg(long, value_parser = parse_day_or_time)]
        until: Option<DayOrTime>,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every ticket with its messages and events, one JSON object per line.
    Export {
        /// At most this many tickets; the cursor to go on from is printed
        /// on standard error (`more: --cursor N`) when some are left.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Go on after a previous export's last ticket (the cursor it printed).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Webhook deliveries that failed for good: list them, or send them again.
    Webhooks {
        /// List the failed deliveries.
        #[arg(long, required_unless_present = "retry")]
        failed: bool,
        /// Send the failed deliveries again (all, or the one with this id).
        #[arg(long, value_name = "ID", num_args = 0..=1, default_missing_value = "")]
        retry: Option<String>,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// OAuth2 mailboxes: `login NAME` runs the provider's device flow once
    /// and keeps the refresh token the mailboxes log in with.
    Oauth2 {
        #[command(subcommand)]
        action: OAuth2Action,
    },
    /// A stored mail exactly as it arrived, to standard output: a message's or
    /// a quarantined mail's `raw_key` (`postdesk raw KEY > mail.eml`).
    Raw {
        /// The raw_key: 64 lowercase hex digits.
        #[arg(value_parser = raw_key_arg)]
        key: String,
    },
    /// Mails kept raw because they could not be processed.
    Quarantine {
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// How a mail would be classified, threaded and routed, without storing it.
    Explain {
        /// The mail.
        file: PathBuf,
        /// Mailbox (by name) it counts as arriving in; default the first.
        #[arg(long)]
        mailbox: Option<String>,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    s.parse::<Timestamp>()
        .map_err(|e| format!("expected an RFC 3339 time like 2026-11-23T09:00:00Z: {e}"))
}

fn parse_status(s: &str) -> Result<Status, String> {
    Status::parse(s).ok_or_else(|| format!("expected one of new, open, pending, resolved, closed; got {s:?}"))
}

/// An error with its exit code.
#[derive(Debug)]
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        // A cursor no page gave out is a bad argument, not a store to retry.
        let code = match e {
            StoreError::BadCursor(_) => EXIT_USAGE,
            _ => EXIT_TEMPFAIL,
        };
        Failure::new(code, e.to_string())
    }
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    // `postdesk show 1 | head`: a closed pipe ends the output quietly, like other Unix tools.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match dispatch(cli) {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("postdesk: {}", f.message);
            f.code
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("POSTDESK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // The protocol crates log the wire at debug and trace level, IMAP LOGIN
    // with its password among it: those lines never pass, whatever
    // POSTDESK_LOG asks for.
    let no_wire = tracing_subscriber::filter::filter_fn(|m| !is_wire_log(m.target(), *m.level()));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(no_wire)
            .init(),
        LogFormat::Text if under_systemd => builder
            .with_ansi(false)
            .event_format(Journald)
            .finish()
            .with(no_wire)
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .finish()
            .with(no_wire)
            .init(),
    }
}

/// Whether a log line is a protocol crate's wire dump (debug or trace from
/// async-imap, imap-proto or lettre), which may carry credentials.
pub fn is_wire_log(target: &str, level: tracing::Level) -> bool {
    let wire = ["async_imap", "imap_proto", "lettre"]
        .iter()
        .any(|c| target == *c || target.starts_with(&format!("{c}::")));
    wire && level > tracing::Level::INFO
}

/// Lines for journald: `<N>` syslog priority, target, message and fields; no
/// timestamp (journald adds its own) and no colours.
struct Journald;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Journald
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            tracing::Level::DEBUG | tracing::Level::TRACE => 7,
        };
        write!(writer, "<{priority}>{}: ", event.metadata().target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Where the config comes from: `-c`, `$POSTDESK_CONFIG`, `./postdesk.toml`, `/etc/postdesk/postdesk.toml`.
pub fn config_path(flag: Option<PathBuf>) -> PathBuf {
    if let Some(p) = flag {
        return p;
    }
    if let Some(p) = std::env::var_os("POSTDESK_CONFIG") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from("postdesk.toml");
    if local.exists() {
        return local;
    }
    PathBuf::from("/etc/postdesk/postdesk.toml")
}

fn load_config(flag: Option<PathBuf>) -> Result<Config, Failure> {
    config::load(&config_path(flag)).map_err(|e| Failure::new(EXIT_CONFIG, e.to_string()))
}

/// Loads the instance secret, creating it when `generate_secret` allows.
pub fn load_signer(config: &Config) -> Result<Signer, String> {
    let source = &config.instance.secret;
    match source.load() {
        Ok(s) if !s.expose().is_empty() => Ok(Signer::new(s.expose().as_bytes())),
        Ok(_) => Err("the instance secret is empty".into()),
        Err(e) => match source {
            SecretSource::File(path) if config.instance.generate_secret && !path.exists() => {
                create_secret(path)?;
                tracing::info!(path = %path.display(), "generated a new instance secret");
                let s = source.load()?;
                Ok(Signer::new(s.expose().as_bytes()))
            }
            _ => Err(e),
        },
    }
}

fn create_secret(path: &Path) -> Result<(), String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no system randomness for the secret".to_string())?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot create secret file {}: {e}", path.display()))?;
    std::io::Write::write_all(
        &mut f,
        format!("{}\n", crate::adapters::inbound::hex(&bytes)).as_bytes(),
    )
    .map_err(|e| format!("cannot write secret file {}: {e}", path.display()))
}

/// How many mails an `ingest` stores before it may compact the sled store.
const AUTO_COMPACT_MAILS: u64 = 100;

/// The sled store's size, when the store is sled (0 before it exists).
fn sled_store_bytes(config: &Config) -> Option<u64> {
    matches!(config.store.backend, crate::adapters::store::Backend::Sled)
        .then(|| crate::adapters::store::sled::store_bytes(&config.instance.data_dir))
}

/// The daemon's start on sled: the store rewritten when it has doubled since
/// its last compaction (`[store] compact_at_start`), systemd told that the
/// start takes longer meanwhile. A compaction that fails is logged, and the
/// daemon starts on the store as it is. Whether it opened (and closed) the
/// store; not when another process holds it.
fn compact_at_start(config: &Config) -> bool {
    use crate::adapters::store::sled::{COMPACT_AT_START_FROM, SledStore, store_bytes};
    let data_dir = &config.instance.data_dir;
    let bytes = store_bytes(data_dir);
    if !config.store.compact_at_start
        || !matches!(config.store.backend, crate::adapters::store::Backend::Sled)
        || bytes < COMPACT_AT_START_FROM
    {
        return false;
    }
    let (done, waiting) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        // Half a minute more of start (and a watchdog ping) every 15 s, however long it takes.
        scope.spawn(move || {
            loop {
                crate::notify::notify(&format!(
                    "EXTEND_TIMEOUT_USEC=30000000\nWATCHDOG=1\nSTATUS=looking at the store ({}) for a compaction",
                    megabytes(bytes)
                ));
                if !matches!(
                    waiting.recv_timeout(std::time::Duration::from_secs(15)),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                ) {
                    break;
                }
            }
        });
        let result = SledStore::compact_if_grown(data_dir, &config.store);
        drop(done);
        match result {
            Ok(Some((before, after))) => {
                tracing::info!(
                    before,
                    after,
                    "store compacted at start ({} to {}): twice its size after its last compaction, or never compacted",
                    megabytes(before),
                    megabytes(after)
                );
            }
            Ok(None) => {}
            // Another process holds it: the open that follows says so.
            Err(StoreError::Locked(_)) => return false,
            Err(e) => tracing::warn!(error = %e, "the store was not compacted at start"),
        }
        true
    })
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Opens the configured store for a command. sled is locked by the
/// running daemon, and a shared database is the daemon's to write while it
/// runs: when its API answers, commands go through it on both backends.
fn open_store(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    if matches!(config.store.backend, crate::adapters::store::Backend::Postgres(_))
        && crate::transports::http::daemon_answers(config.http.listen)
    {
        return Err(StoreError::Locked(format!("the daemon at {}", config.http.listen)));
    }
    crate::adapters::store::open(&config.instance.data_dir, &config.store)
}

/// How long `backup` waits for the daemon to make one.
const BACKUP_TIMEOUT_SECS: u64 = 3600;

/// Bytes of raw mail `migrate --to postgres` sends the database in one statement at most (past one mail).
const MIGRATE_BATCH_BYTES: usize = 16 << 20;

/// Copies the sled store under data_dir into the (empty) PostgreSQL
/// database `[store]` names: blobs first (durable before records name
/// them), then every record in changes of 500 writes.
fn migrate_to_postgres(config: &Config) -> Result<Vec<(&'static str, u64)>, Failure> {
    use crate::adapters::store::{Backend, Store, postgres::PgStore, sled::SledStore};
    let Backend::Postgres(pg) = &config.store.backend else {
        return Err(Failure::new(
            EXIT_CONFIG,
            format!(
                "{}: migrate --to postgres copies the sled store in data_dir into the database [store] names: set backend = \"postgres\" and its connection first",
                config.path.display()
            ),
        ));
    };
    if !config.instance.data_dir.join("store").exists() {
        return Err(Failure::new(
            EXIT_NOINPUT,
            format!("no sled store at {}", config.instance.data_dir.join("store").display()),
        ));
    }
    let from = SledStore::open(&config.instance.data_dir, &config.store)?;
    let to = PgStore::open(pg)?;
    if to.next_ticket_id()?.0 > 1 || !to.list(&Default::default(), None, 1)?.tickets.is_empty() {
        return Err(Failure::new(
            EXIT_SOFTWARE,
            "the PostgreSQL database already holds tickets; migrate into an empty one (a migrate cut short leaves part of a copy: drop that database and create it again)".to_string(),
        ));
    }
    let mut blobs = 0u64;
    // 64 mails a statement, or fewer when they are large: a batch of the
    // largest mails (25 MiB each by default) would hold 1.6 GB.
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let put = |batch: &mut Vec<Vec<u8>>| -> Result<(), StoreError> {
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        to.put_blobs(&refs)?;
        batch.clear();
        Ok(())
    };
    from.each_blob(|_, blob| {
        blobs += 1;
        batch.push(blob);
        if batch.len() >= 64 || batch.iter().map(Vec::len).sum::<usize>() >= MIGRATE_BATCH_BYTES {
            put(&mut batch)
        } else {
            Ok(())
        }
    })?;
    put(&mut batch)?;
    let mut counts = from.dump(500, &mut |change| to.commit(change))?;
    to.flush()?;
    counts.push(("blobs", blobs));
    Ok(counts)
}

/// Opens the store and builds the pipeline.
fn open_pipeline(config: Config) -> Result<Pipeline, Failure> {
    let store = open_store(&config)?;
    pipeline_with(config, store)
}

/// The pipeline over an already open store (open it once: a second open in the
/// same process races with the first one's lock).
fn pipeline_with(config: Config, store: Arc<dyn Store>) -> Result<Pipeline, Failure> {
    let signer = load_signer(&config).map_err(|e| Failure::new(EXIT_CONFIG, e))?;
    let knowledge = crate::pipeline::load_knowledge(&config).map_err(|e| Failure::new(EXIT_CONFIG, e))?;
    Ok(Pipeline {
        intent: crate::pipeline::load_intent(&config.instance.data_dir),
        knowledge,
        config: Arc::new(config),
        store,
        signer,
        metrics: Default::default(),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(EXIT_SOFTWARE, format!("cannot start the runtime: {e}")))
}

fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Check => {
            let config = load_config(cli.config)?;
            for warning in check_secrets(&config).into_iter().chain(language_warnings(&config)) {
                eprintln!("{}: warning: {warning}", config.path.display());
            }
            // The daemon refuses to start without its API token: so does check.
            if let Some(t) = &config.http.token
                && let Err(e) = t.load()
            {
                return Err(Failure::new(
                    EXIT_CONFIG,
                    format!("{}: [http] token: {e}", config.path.display()),
                ));
            }
            say!(
                "{}: ok ({} mailbox(es), {} agent(s), {} queue(s))",
                config.path.display(),
                config.mailboxes.len(),
                config.agents.len(),
                config.queues.len()
            );
            Ok(())
        }
        Command::Run => {
            let config = load_config(cli.config.clone())?;
            if let Some(t) = &config.http.token
                && let Err(e) = t.load()
            {
                return Err(Failure::new(
                    EXIT_CONFIG,
                    format!(
                        "{}: [http] token: {e}; refusing to serve the API without it",
                        config.path.display()
                    ),
                ));
            }
            let path = config_path(cli.config);
            // Just after `compact_at_start` closed it, sled's threads may hold its lock a moment.
            let open = || crate::adapters::store::open(&config.instance.data_dir, &config.store);
            let store = if compact_at_start(&config) {
                crate::adapters::store::sled::after_lock(open)?
            } else {
                open()?
            };
            let pipeline = pipeline_with(config, store)?;
            runtime()?
                .block_on(async { crate::daemon::run(pipeline, path, crate::daemon::shutdown_signal()).await })
                .map_err(|e| {
                    // A failed store is worth a restart (systemd's `Restart=on-failure`); the rest is a bug.
                    let code = if e.is::<crate::daemon::StoreFailed>() {
                        EXIT_TEMPFAIL
                    } else {
                        EXIT_SOFTWARE
                    };
                    Failure::new(code, format!("{e:#}"))
                })
        }
        Command::Ingest {
            paths,
            no_send,
            json,
            mailbox,
        } => {
            let config = load_config(cli.config)?;
            let mailbox = chosen_mailbox(&config, mailbox)?;
            let max = config.limits.max_message_bytes;
            let first_pass = std::time::Instant::now();
            let mails = ingest::scan(&paths, max).map_err(|e| Failure::new(EXIT_NOINPUT, e.to_string()))?;
            tracing::debug!(
                mails = mails.len(),
                secs = first_pass.elapsed().as_secs_f64(),
                "first pass"
            );
            // The daemon holds the store: hand each mail to it over the API.
            let store = match open_store(&config) {
                Ok(store) => Some(store),
                Err(StoreError::Locked(_)) => None,
                Err(e) => return Err(e.into()),
            };
            if store.is_none() {
                let summary = ingest_through_api(&config, &mailbox, &mails)?;
                if json {
                    say_json!("{}", serde_json::to_string(&summary).expect("serialises"));
                } else {
                    say!("{} (through the running daemon, which sends)", summary_line(&summary));
                }
                return Ok(());
            }
            let sled_before = sled_store_bytes(&config);
            let (data_dir, settings) = (config.instance.data_dir.clone(), config.store.clone());
            let pipeline = pipeline_with(config, store.expect("checked above"))?;
            let summary = ingest_files(&pipeline, &mailbox, &mails)?;
            // The first pass's entries are not needed past here (a compaction follows).
            drop(mails);
            let sent = if no_send { None } else { Some(send_all(&pipeline)?) };
            drop(pipeline);
            // A backfill leaves sled's log several times what it holds: rewrite
            // it when this ingest stored many mails, at least doubled it, and
            // it is the larger part of the store (with large mail the packs
            // are, and the rewrite would cost a fifth of the backfill for 4%).
            let compacted = match sled_before {
                Some(before)
                    if summary.new_tickets + summary.appended + summary.auto >= AUTO_COMPACT_MAILS
                        && crate::adapters::store::sled::store_bytes(&data_dir)
                            >= (2 * before).max(crate::adapters::store::sled::blob_bytes(&data_dir)) =>
                {
                    // The mail is in: a compaction that cannot run now is left for later.
                    crate::adapters::store::sled::SledStore::compact(&data_dir, &settings)
                        .inspect_err(|e| tracing::warn!(error = %e, "the store was not compacted"))
                        .ok()
                }
                _ => None,
            };
            if json {
                let mut v = serde_json::to_value(&summary).expect("summary serialises");
                if let Some(s) = sent {
                    v["sent"] = serde_json::to_value(s).expect("serialises");
                }
                if let Some((before, after)) = compacted {
                    v["compacted"] = serde_json::json!({"before": before, "after": after});
                }
                say_json!("{v}");
            } else {
                say!("{}", summary_line(&summary));
                if let Some(s) = sent {
                    say!("sent {}, failed {}, deferred {}", s.sent, s.failed, s.deferred);
                }
                if let Some((before, after)) = compacted {
                    say!("store compacted: {} to {}", megabytes(before), megabytes(after));
                }
            }
            Ok(())
        }
        Command::Backup { keep, json } => {
            let config = load_config(cli.config)?;
            if !matches!(config.store.backend, crate::adapters::store::Backend::Sled) {
                return Err(Failure::new(
                    EXIT_CONFIG,
                    format!(
                        "backup copies the sled store; {}",
                        crate::adapters::store::BACKUP_ELSEWHERE
                    ),
                ));
            }
            let backup: crate::adapters::store::Backup = match open_store(&config) {
                Ok(store) => crate::adapters::store::backup_now(
                    &*store,
                    &config.instance.data_dir,
                    Timestamp::now(),
                    keep.map(|k| k as usize),
                )?,
                Err(StoreError::Locked(_)) => {
                    let token = api_token(&config)?;
                    let (status, body) = crate::transports::http::post_json_within(
                        config.http.listen,
                        "/api/backup",
                        token.as_ref().map(|t| t.expose()),
                        &match keep {
                            Some(keep) => serde_json::json!({ "keep": keep }),
                            None => serde_json::json!({}),
                        },
                        BACKUP_TIMEOUT_SECS,
                    )
                    .map_err(daemon_unreachable)?;
                    match status {
                        200 => serde_json::from_str(&body).map_err(|e| {
                            Failure::new(
                                EXIT_SOFTWARE,
                                format!("the daemon's answer to a backup is not one ({e})"),
                            )
                        })?,
                        // A full disk, a folder of that name, a daemon stopping: try again later.
                        409 | 503 | 507 => return Err(Failure::new(EXIT_TEMPFAIL, api_reason(body))),
                        _ => {
                            return Err(Failure::new(
                                EXIT_SOFTWARE,
                                format!("the daemon's API answered {status}: {}", api_reason(body)),
                            ));
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                say_json!("{}", serde_json::json!(backup));
            } else {
                say!(
                    "backed up to {}: records {}, raw mail {}",
                    backup.path.display(),
                    megabytes(backup.store_bytes),
                    megabytes(backup.blob_bytes)
                );
                for old in &backup.removed {
                    say!("removed the older backup {}", old.display());
                }
            }
            Ok(())
        }
        Command::Compact { json } => {
            let config = load_config(cli.config)?;
            if !matches!(config.store.backend, crate::adapters::store::Backend::Sled) {
                return Err(Failure::new(
                    EXIT_CONFIG,
                    "compact rewrites the sled store; PostgreSQL reclaims space itself (autovacuum)".to_string(),
                ));
            }
            let (before, after) =
                crate::adapters::store::sled::SledStore::compact(&config.instance.data_dir, &config.store).map_err(
                    |e| match e {
                        StoreError::Locked(what) => Failure::new(
                            EXIT_TEMPFAIL,
                            format!("{what} is held by the running daemon: stop it to compact the store"),
                        ),
                        e => e.into(),
                    },
                )?;
            if json {
                say_json!("{}", serde_json::json!({"before": before, "after": after}));
            } else {
                say!("store compacted: {} to {}", megabytes(before), megabytes(after));
            }
            Ok(())
        }
        Command::Migrate { to, json } => {
            let config = load_config(cli.config)?;
            let counts = match to {
                None => {
                    use crate::adapters::store::{Backend, sled};
                    let (backend, from) = match &config.store.backend {
                        Backend::Sled => (
                            "sled",
                            sled::SledStore::open(&config.instance.data_dir, &config.store)?.upgraded_from(),
                        ),
                        Backend::Postgres(_) => {
                            // Its migrations are applied (and say so in the log) on open.
                            open_store(&config)?;
                            ("postgres", None)
                        }
                    };
                    if json {
                        say_json!(
                            "{}",
                            serde_json::json!({"backend": backend, "layout": (backend == "sled").then_some(sled::SCHEMA), "upgraded_from": from})
                        );
                    } else {
                        match from {
                            Some(from) => say!("upgraded the store from layout {from} to {}", sled::SCHEMA),
                            None if backend == "sled" => say!("the store is at the current layout ({})", sled::SCHEMA),
                            None => say!("the database's schema is current"),
                        }
                    }
                    return Ok(());
                }
                Some(_) => migrate_to_postgres(&config)?,
            };
            if json {
                let map: serde_json::Map<String, serde_json::Value> =
                    counts.iter().map(|(k, n)| (k.to_string(), (*n).into())).collect();
                say_json!("{}", serde_json::Value::Object(map));
            } else {
                let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
                say!("copied into PostgreSQL: {}", parts.join(", "));
            }
            Ok(())
        }
        Command::Tick { now, no_send } => {
            let config = load_config(cli.config)?;
            let pipeline = open_pipeline(config)?;
            let now = now.unwrap_or_else(Timestamp::now);
            let t = pipeline.tick(now)?;
            say!("timers fired {}, stale {}", t.fired, t.stale);
            if !no_send {
                let mailer =
                    Mailer::from_config(&pipeline.config.outgoing).map_err(|e| Failure::new(EXIT_CONFIG, e))?;
                let s = runtime()?.block_on(drain(&pipeline, &mailer, now))?;
                say!("sent {}, failed {}, deferred {}", s.sent, s.failed, s.deferred);
            }
            Ok(())
        }
        Command::Tickets {
            status,
            queue,
            assignee,
            requester,
            updated_since,
            limit,
            cursor,
            json,
        } => {
            let config = load_config(cli.config)?;
            let filter = TicketFilter {
                status,
                queue,
                assignee,
                requester,
                updated_since: updated_since.map(|d| d.at(&config.desk.timezone)),
            };
            let page: Page = match open_store(&config) {
                Ok(store) => store.list(&filter, cursor.as_deref(), limit as usize)?,
                Err(StoreError::Locked(_)) => {
                    let mut q = vec![format!("limit={limit}")];
                    if let Some(s) = filter.status {
                        q.push(format!("status={}", s.as_str()));
                    }
                    for (k, v) in [
                        ("queue", &filter.queue),
                        ("assignee", &filter.assignee),
                        ("requester", &filter.requester),
                        ("cursor", &cursor),
                    ] {
                        if let Some(v) = v {
                            q.push(format!("{k}={}", percent_encode(v)));
                        }
                    }
                    if let Some(u) = filter.updated_since {
                        q.push(format!("updated_since={}", percent_encode(&u.to_string())));
                    }
                    let (body, next) = api_get_page(&config, &format!("/api/tickets?{}", q.join("&")))?;
                    Page {
                        tickets: serde_json::from_str(&body)
                            .map_err(|e| Failure::new(EXIT_SOFTWARE, format!("bad answer from the API: {e}")))?,
                        next,
                    }
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                say_json!("{}", serde_json::to_string_pretty(&page.tickets).expect("serialises"));
                if let Some(next) = &page.next {
                    eprintln!("more: --cursor {}", crate::cli::terminal_safe(next));
                }
            } else {
                print_ticket_table(&page.tickets);
                if let Some(next) = &page.next {
                    say!("more: --cursor {next}");
                }
            }
            Ok(())
        }
        Command::Merge { id, into: other, json } | Command::Split { id, part: other, json } => {
            let split = matches!(cli.command, Command::Split { .. });
            let config = load_config(cli.config)?;
            let (verb, key) = if split { ("split", "ticket") } else { ("merge", "into") };
            let done: crate::view::MergeDone = match open_store(&config) {
                Ok(store) => {
                    let pipeline = pipeline_with(config, store)?;
                    pipeline
                        .merge_request(TicketId(id), other, split, "cli", jiff::Timestamp::now())?
                        .map_err(|why| Failure::new(1, format!("{verb}: {why}")))?
                }
                Err(StoreError::Locked(_)) => {
                    let token = api_token(&config)?;
                    let path = format!("/api/tickets/{id}/{verb}");
                    let body = serde_json::json!({ key: other });
                    match crate::transports::http::post_json(
                        config.http.listen,
                        &path,
                        token.as_ref().map(|t| t.expose()),
                        &body,
                    )
                    .map_err(daemon_unreachable)?
                    {
                        (200, body) => serde_json::from_str(&body)
                            .map_err(|e| Failure::new(EXIT_SOFTWARE, format!("bad answer from the API: {e}")))?,
                        (_, body) => return Err(Failure::new(1, format!("{verb}: {}", api_reason(body)))),
                    }
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                say_json!("{}", serde_json::to_string(&done).expect("serialises"));
            } else if split {
                say!(
                    "ticket #{} is its own ticket again (split from #{})",
                    done.other,
                    done.ticket
                );
            } else {
                say!("ticket #{} merged into #{}", done.ticket, done.kept);
            }
            Ok(())
        }
        Command::Show { id, json } => {
            let config = load_config(cli.config)?;
            let view = match open_store(&config) {
                Ok(store) => ticket_view(&*store, TicketId(id))?,
                Err(StoreError::Locked(_)) => match api_get_status(&config, &format!("/api/tickets/{id}"))? {
                    (404, _) => None,
                    (_, body) => Some(
                        serde_json::from_str(&body)
                            .map_err(|e| Failure::new(EXIT_SOFTWARE, format!("bad answer from the API: {e}")))?,
                    ),
                },
                Err(e) => return Err(e.into()),
            };
            let view = view.ok_or_else(|| Failure::new(1, format!("no ticket {id}")))?;
            if json {
                say_json!("{}", serde_json::to_string_pretty(&view).expect("serialises"));
            } else {
                print_ticket(&view);
            }
            Ok(())
        }
        Command::Report { since, until, json } => {
            let config = load_config(cli.config)?;
            let tz = config.desk.timezone.clone();
            let since = since.map(|d| d.at(&tz));
            let until = until.map(|d| d.at(&tz)).unwrap_or_else(Timestamp::now);
            let report = match open_store(&config) {
                Ok(store) => crate::view::report(&*store, &config, since, until)?,
                Err(StoreError::Locked(_)) => {
                    let mut q = format!("/api/report?until={until}");
                    if let Some(s) = since {
                        q.push_str(&format!("&since={s}"));
                    }
                    let body = api_get(&config, &q)?;
                    if json {
                        say_json!("{body}");
                        return Ok(());
                    }
                    let v: serde_json::Value = serde_json::from_str(&body)
                        .map_err(|e| Failure::new(EXIT_SOFTWARE, format!("bad answer from the API: {e}")))?;
                    say_json!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                say_json!("{}", serde_json::to_string_pretty(&report).expect("serialises"));
            } else {
                say_raw!("{}", crate::core::report::render_text(&report));
            }
            Ok(())
        }
        Command::Train { csv, label, json } => {
            let config = load_config(cli.config)?;
            let label = label.unwrap_or_else(|| config.intent.label.clone());
            let (examples, source) = match &csv {
                Some(spec) => {
                    let (file, cols) = match spec.rsplit_once(':') {
                        Some((f, c)) if c.contains(',') => (f, c),
                        _ => (spec.as_str(), "text,label"),
                    };
                    let (t, l) = cols.split_once(',').expect("checked");
                    let rows = crate::adapters::intent::read_csv(std::path::Path::new(file), t.trim(), l.trim())
                        .map_err(|e| Failure::new(66, e))?;
                    (rows, format!("csv:{file}"))
                }
                None => (ticket_examples(&config, &label)?, format!("tickets:{label}")),
            };
            let started = std::time::Instant::now();
            let path = crate::adapters::intent::path(&config.instance.data_dir);
            let (model, header) = crate::pipeline::train_intent(
                &config,
                &examples,
                &source,
                Timestamp::now(),
            )
            .map_err(|e| Failure::new(EXIT_SOFTWARE, e))?
            .ok_or_else(|| {
                Failure::new(
                    1,
                    format!(
                        "train: {} labelled examples with fewer than two labels ({source}); label more tickets first",
                        examples.len()
                    ),
                )
            })?;
            let secs = started.elapsed().as_secs_f64();
            if json {
                say_json!(
                    "{}",
                    serde_json::json!({
                        "examples": model.examples,
                        "labels": model.labels.len(),
                        "source": source,
                        "model": path.display().to_string(),
                        "seconds": (secs * 100.0).round() / 100.0,
                        "embeddings": header.embeddings,
                    })
                );
            } else {
                let with = header.embeddings.as_ref().map_or(String::new(), |e| {
                    format!(
                        " with the token embeddings of {} ({} tokens × {})",
                        e.source, e.tokens, e.dims
                    )
                });
                say!(
                    "trained on {} examples of {} labels ({source}){with} in {secs:.1} s: {} (reload the daemon to use it)",
                    model.examples,
                    model.labels.len(),
                    path.display()
                );
            }
            Ok(())
        }
        Command::Export { limit, cursor } => {
            let config = load_config(cli.config)?;
            let more = |next: Option<String>| {
                if let Some(next) = next {
                    eprintln!("more: --cursor {next}");
                }
                Ok(())
            };
            let store = match open_store(&config) {
                Ok(store) => store,
                Err(StoreError::Locked(_)) => {
                    // Through the daemon, a page at a time, each written as it comes.
                    let mut cursor = cursor;
                    let mut left = limit.unwrap_or(u64::MAX);
                    let page = crate::view::EXPORT_PAGE as u64;
                    loop {
                        let mut path = format!("/api/export?limit={}", left.min(page));
                        if let Some(c) = &cursor {
                            path.push_str(&format!("&cursor={}", percent_encode(c)));
                        }
                        let (body, next) = api_get_page(&config, &path)?;
                        // Each page is whole lines; one with a next cursor is full.
                        say_json_raw!("{body}");
                        left -= left.min(page);
                        match next {
                            Some(n) if left > 0 => cursor = Some(n),
                            next => return more(next.filter(|_| left == 0)),
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let next = crate::view::each_ticket_from(&*store, cursor.as_deref(), limit, |v| {
                let line = json_safe(&serde_json::to_string(&v).expect("serialises"));
                std::io::Write::write_all(&mut out, line.as_bytes())
                    .and_then(|_| std::io::Write::write_all(&mut out, b"\n"))
                    .map_err(|e| Failure::new(EXIT_SOFTWARE, e.to_string()))
            })?;
            std::io::Write::flush(&mut out).map_err(|e| Failure::new(EXIT_SOFTWARE, e.to_string()))?;
            more(next)
        }
        Command::Oauth2 {
            action: OAuth2Action::Login { name },
        } => {
            let config = load_config(cli.config)?;
            let Some(provider) = config.oauth2.iter().find(|p| p.name == name) else {
                let known: Vec<&str> = config.oauth2.iter().map(|p| p.name.as_str()).collect();
                return Err(Failure::new(
                    EXIT_CONFIG,
                    format!(
                        "oauth2 login: no [[oauth2]] named {name:?} (configured: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            };
            crate::transports::oauth2::login(provider, &mut |line| println!("{line}")).map_err(|e| Failure::new(1, e))
        }
        Command::Webhooks { failed, retry, json } => {
            let config = load_config(cli.config)?;
            if let Some(id) = retry {
                let id = Some(id).filter(|i| !i.is_empty());
                let n = match open_store(&config) {
                    Ok(store) => {
                        let pipeline = pipeline_with(config, store)?;
                        let n = crate::transports::webhook::retry_failed(&pipeline, id.as_deref(), Timestamp::now())?;
                        pipeline.store.flush()?;
                        n
                    }
                    Err(StoreError::Locked(_)) => {
                        let token = api_token(&config)?;
                        let body = match &id {
                            Some(id) => serde_json::json!({ "id": id }),
                            None => serde_json::json!({}),
                        };
                        match crate::transports::http::post_json(
                            config.http.listen,
                            "/api/webhooks/retry",
                            token.as_ref().map(|t| t.expose()),
                            &body,
                        )
                        .map_err(daemon_unreachable)?
                        {
                            (200, body) => serde_json::from_str::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| v["retried"].as_u64())
                                .unwrap_or(0) as u32,
                            (_, body) => {
                                return Err(Failure::new(1, format!("webhooks --retry: {}", api_reason(body))));
                            }
                        }
                    }
                    Err(e) => return Err(e.into()),
                };
                if let (Some(id), 0) = (&id, n) {
                    return Err(Failure::new(1, format!("webhooks --retry: no failed delivery {id}")));
                }
                if json {
                    say_json!("{}", serde_json::json!({ "retried": n }));
                } else {
                    say!("{n} failed deliveries queued again");
                }
                return Ok(());
            }
            let _ = failed;
            let entries: Vec<crate::adapters::store::HookEntry> = match open_store(&config) {
                Ok(store) => crate::transports::webhook::failed(&pipeline_with(config, store)?)?,
                Err(StoreError::Locked(_)) => serde_json::from_str(&api_get(&config, "/api/webhooks/failed")?)
                    .map_err(|e| Failure::new(EXIT_SOFTWARE, format!("bad answer from the API: {e}")))?,
                Err(e) => return Err(e.into()),
            };
            if json {
                say_json!("{}", serde_json::to_string_pretty(&entries).expect("serialises"));
            } else if entries.is_empty() {
                say!("no failed webhook deliveries");
            } else {
                for e in entries {
                    say!(
                        "{}  {}  {}  #{}  {} attempts  {}  {}",
                        e.id,
                        e.hook,
                        e.event,
                        e.ticket.0,
                        e.attempts,
                        e.created,
                        e.last_error.unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        Command::Raw { key } => {
            let config = load_config(cli.config)?;
            let bytes = match open_store(&config) {
                Ok(store) => store.blob(&key)?,
                Err(StoreError::Locked(_)) => match api_get_bytes(&config, &format!("/api/raw/{key}"))? {
                    (200, bytes) => Some(bytes),
                    (404, _) => None,
                    (status, body) => {
                        return Err(Failure::new(
                            EXIT_SOFTWARE,
                            format!(
                                "the daemon's API answered {status}: {}",
                                String::from_utf8_lossy(&body).trim()
                            ),
                        ));
                    }
                },
                Err(e) => return Err(e.into()),
            };
            let Some(bytes) = bytes else {
                return Err(Failure::new(EXIT_NOINPUT, format!("no stored mail under {key}")));
            };
            std::io::Write::write_all(&mut std::io::stdout().lock(), &bytes)
                .map_err(|e| Failure::new(EXIT_SOFTWARE, format!("standard output: {e}")))?;
            Ok(())
        }
        Command::Quarantine { json } => {
            let config = load_config(cli.config)?;
            let entries: Vec<crate::adapters::store::QuarantineEntry> = match open_store(&config) {
                Ok(store) => store.quarantine()?,
                Err(StoreError::Locked(_)) => serde_json::from_str(&api_get(&config, "/api/quarantine")?)
                    .map_err(|e| Failure::new(EXIT_SOFTWARE, format!("bad answer from the API: {e}")))?,
                Err(e) => return Err(e.into()),
            };
            if json {
                say_json!("{}", serde_json::to_string_pretty(&entries).expect("serialises"));
            } else if entries.is_empty() {
                say!("quarantine is empty");
            } else {
                for e in entries {
                    say!(
                        "{}  {}  {} bytes  raw {}  {}",
                        e.at,
                        e.mailbox,
                        e.size,
                        e.raw_key,
                        e.reason
                    );
                }
            }
            Ok(())
        }
        Command::Explain { file, json, mailbox } => {
            let config = load_config(cli.config)?;
            let mailbox = chosen_mailbox(&config, mailbox)?;
            let raw =
                std::fs::read(&file).map_err(|e| Failure::new(EXIT_NOINPUT, format!("{}: {e}", file.display())))?;
            let now = crate::adapters::inbound::arrival_of(&raw)
                .filter(|d| *d < Timestamp::now())
                .unwrap_or_else(Timestamp::now);
            let e: crate::pipeline::Explanation = match open_store(&config) {
                Ok(store) => pipeline_with(config, store)?.explain(&raw, &mailbox, now)?,
                // The daemon holds the store: it explains (nothing is stored either way).
                Err(StoreError::Locked(_)) => {
                    let path = format!(
                        "/api/explain?mailbox={}&at={}",
                        percent_encode(&mailbox),
                        percent_encode(&now.to_string())
                    );
                    let (status, body) = api_post(&config, &path, &raw)?;
                    if status != 200 {
                        return Err(Failure::new(
                            EXIT_TEMPFAIL,
                            format!("the daemon's API answered {status}: {}", body.trim()),
                        ));
                    }
                    serde_json::from_str(&body)
                        .map_err(|e| Failure::new(EXIT_SOFTWARE, format!("bad answer from the API: {e}")))?
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                say_json!("{}", serde_json::to_string_pretty(&e).expect("serialises"));
            } else {
                match &e.parsed {
                    Ok(p) => say!("parsed:         {p}"),
                    Err(q) => say!("parsed:         {q}"),
                }
                if let Some(c) = &e.classification {
                    say!("classification: {c}");
                }
                if let Some(a) = &e.agent_check {
                    say!("agent:          {a}");
                }
                if let Some(a) = e.may_auto_reply {
                    say!(
                        "acknowledge:    {}",
                        if a {
                            "allowed"
                        } else {
                            "never (automatic, bounce, agent or own mail)"
                        }
                    );
                }
                if let Some(d) = &e.duplicate {
                    say!("duplicate:      {d}");
                }
                if let Some(h) = &e.history {
                    say!("history:        {h}");
                }
                say!("language:       {}", e.language.as_deref().unwrap_or("(not told)"));
                if !e.customer.is_empty() {
                    let fields: Vec<String> = e.customer.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    say!("customer:       {}", fields.join(" · "));
                }
                for a in &e.articles {
                    say!(
                        "article:        {} {:.2} {:?}{}",
                        a.slug,
                        a.score,
                        a.title,
                        if a.suggested {
                            " (suggested)"
                        } else {
                            " (below min_score)"
                        }
                    );
                }
                if !e.intents.is_empty() {
                    let top: Vec<String> = e.intents.iter().map(|(l, c)| format!("{l} {c:.2}")).collect();
                    say!("intent:         {}", top.join(", "));
                }
                if let Some(s) = &e.sentiment {
                    let cues: Vec<String> = s.cues.iter().map(|(w, v)| format!("{w} {v:+.1}")).collect();
                    say!(
                        "sentiment:      {:+.2}{}",
                        s.score,
                        if cues.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", cues.join(", "))
                        }
                    );
                }
                if !e.references.is_empty() {
                    let refs: Vec<String> = e.references.iter().map(|r| format!("<{r}>")).collect();
                    say!("refers to:      {}", refs.join(" "));
                }
                if let Some(t) = &e.threading {
                    say!("threading:      {t}");
                }
                for r in &e.rules {
                    let verdict = if r.matched { "matched" } else { "no" };
                    say!("rule {:?}: {verdict} ({})", r.name, r.detail);
                }
            }
            Ok(())
        }
    }
}

fn send_all(pipeline: &Pipeline) -> Result<crate::transports::smtp::SendSummary, Failure> {
    let mailer = Mailer::from_config(&pipeline.config.outgoing).map_err(|e| Failure::new(EXIT_CONFIG, e))?;
    Ok(runtime()?.block_on(drain(pipeline, &mailer, Timestamp::now()))?)
}

/// Rules and template translations naming a language mail is never told in
/// under `[language] candidates`: a rule that can never match (or always,
/// negated), a translation never sent.
fn language_warnings(config: &Config) -> Vec<String> {
    let Some(candidates) = config.languages.codes() else {
        return Vec::new();
    };
    let outside = |code: &String| !candidates.contains(code);
    let mut out = Vec::new();
    for rule in &config.rules {
        for c in &rule.when {
            if let crate::core::settings::Condition::Language { codes, negate } = c {
                for code in codes.iter().filter(|c| outside(c)) {
                    let key = if *negate { "not_language" } else { "language" };
                    out.push(format!(
                        "rule {:?}: {key} {code:?} is not among [language] candidates {candidates:?}: mail is never told in it",
                        rule.name
                    ));
                }
            }
        }
    }
    let t = &config.templates;
    for (name, template) in [
        ("acknowledgement", &t.acknowledgement),
        ("pending_reminder", &t.pending_reminder),
        ("pending_closed", &t.pending_closed),
        ("closed", &t.closed),
        ("survey", &t.survey),
        ("status_reply", &t.status_reply),
        ("suggestions", &t.suggestions),
    ] {
        for code in template.translations.keys().filter(|c| outside(c)) {
            out.push(format!(
                "[templates.{name}.{code}] is never sent: {code:?} is not among [language] candidates {candidates:?}"
            ));
        }
    }
    out
}

fn check_secrets(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |what: &str, s: &SecretSource| {
        if let Err(e) = s.load() {
            let creatable = matches!(s, SecretSource::File(p) if config.instance.generate_secret && !p.exists());
            if !(what == "instance secret" && creatable) {
                out.push(format!("{what}: {e}"));
            }
        }
    };
    check("instance secret", &config.instance.secret);
    for m in &config.mailboxes {
        if let config::SourceConfig::Imap(i) = &m.source
            && let Some(p) = &i.password
        {
            check(&format!("mailbox {} imap password", m.name), p);
        }
    }
    if let config::Transport::Smtp(s) = &config.outgoing.transport
        && let Some(p) = &s.password
    {
        check("smtp password", p);
    }
    for p in &config.oauth2 {
        if let Some(s) = &p.client_secret {
            check(&format!("oauth2 {} client_secret", p.name), s);
        }
    }
    for p in &config.oauth2 {
        if p.flow == config::OAuth2Flow::RefreshToken && !p.refresh_token_file.exists() {
            out.push(format!(
                "oauth2 {}: no refresh token in {} yet; run postdesk oauth2 login {}",
                p.name,
                p.refresh_token_file.display(),
                p.name
            ));
        }
    }
    out
}

/// Mails per batch of `ingest` (one blob sync each), and bytes at most.
const INGEST_BATCH: usize = 64;
const INGEST_BATCH_BYTES: u64 = 16 << 20;
/// Batches read, stored and parsed ahead of the one going into the store:
/// two keep both cores busy while one batch waits on its blob sync.
const INGEST_AHEAD: usize = 2;
/// Mails between two flushes of `ingest`.
const INGEST_FLUSH: usize = 2048;

/// `ingest` with the store: mails are read one batch at a time in Date order
/// and processed in order; a backfill arrives at its Date, mail piped in by an
/// MTA arrives now. The next batches are read from disk, their blobs stored
/// and their mails parsed on other threads while this one goes into the store
/// (`INGEST_AHEAD` + 1 batches in memory at most).
fn ingest_files(pipeline: &Pipeline, mailbox: &str, entries: &[ingest::Entry]) -> Result<Summary, Failure> {
    let max = pipeline.config.limits.max_message_bytes;
    let now = Timestamp::now();
    let mut batches: Vec<&[ingest::Entry]> = Vec::new();
    let mut rest = entries;
    while !rest.is_empty() {
        let mut n = 0;
        let mut bytes = 0;
        while n < rest.len() && n < INGEST_BATCH && (n == 0 || bytes + rest[n].size <= INGEST_BATCH_BYTES) {
            bytes += rest[n].size;
            n += 1;
        }
        let (batch, tail) = rest.split_at(n);
        batches.push(batch);
        rest = tail;
    }
    let read = |batch: &[ingest::Entry]| -> Result<(Vec<ingest::FileMail>, crate::pipeline::ReadAheads), Failure> {
        let mails: Vec<ingest::FileMail> = batch
            .iter()
            .map(|e| e.read(max))
            .collect::<Result<_, _>>()
            .map_err(|e| Failure::new(EXIT_NOINPUT, e.to_string()))?;
        let whole: Vec<&[u8]> = mails
            .iter()
            .filter(|m| m.oversized.is_none())
            .map(|m| m.raw.as_slice())
            .collect();
        let ahead = pipeline.prepare(&whole)?;
        Ok((mails, ahead))
    };
    let mut summary = Summary::default();
    let mut since_flush = 0;
    std::thread::scope(|scope| -> Result<(), Failure> {
        let (batches, read) = (&batches, &read);
        let spawn = |i: usize| scope.spawn(move || read(batches[i]));
        let mut next: std::collections::VecDeque<_> = (0..INGEST_AHEAD.min(batches.len())).map(spawn).collect();
        for i in 0..batches.len() {
            let (mails, ahead) = next
                .pop_front()
                .expect("each batch is read before its turn")
                .join()
                .map_err(|_| Failure::new(EXIT_SOFTWARE, "reading the mail panicked"))??;
            if i + INGEST_AHEAD < batches.len() {
                next.push_back(spawn(i + INGEST_AHEAD));
            }
            let window = pipeline.config.automation.backfill_window;
            let origins: Vec<(Origin, Timestamp)> =
                mails.iter().map(|m| file_origin(m, mailbox, now, window)).collect();
            let mut whole: Vec<(&[u8], &Origin, Timestamp)> = Vec::new();
            for (m, (origin, at)) in mails.iter().zip(&origins) {
                match m.oversized {
                    Some(size) => {
                        let p = pipeline.process_oversized(&m.raw, size, &m.label, origin, now)?;
                        tracing::debug!(file = %m.label, ?p, "ingested");
                        summary.add_from(&p, origin);
                    }
                    None => whole.push((&m.raw, origin, *at)),
                }
            }
            for (p, (_, origin, _)) in pipeline.process_batch_ahead(&whole, Some(ahead))?.iter().zip(&whole) {
                summary.add_from(p, origin);
            }
            since_flush += mails.len();
            if since_flush >= INGEST_FLUSH {
                pipeline.store.flush()?;
                since_flush = 0;
            }
        }
        Ok(())
    })?;
    pipeline.store.flush()?;
    Ok(summary)
}

/// Where a mail `ingest` read comes from, and when it arrived: now from
/// standard input; else a backfill arriving at its `Date` (else the topmost
/// `Received`'s date; never later than now), history when that is older
/// than `window`; a backfilled mail with neither arrives now.
fn file_origin(
    m: &ingest::FileMail,
    mailbox: &str,
    now: Timestamp,
    window: std::time::Duration,
) -> (Origin, Timestamp) {
    match (m.live, m.date) {
        (true, _) => (Origin::live(mailbox), now),
        (false, Some(d)) => {
            let at = d.min(now);
            (Origin::backfill(mailbox, at, now, window), at)
        }
        (false, None) => (
            Origin {
                bulk: true,
                ..Origin::live(mailbox)
            },
            now,
        ),
    }
}

/// `ingest` while the daemon runs: each mail is POSTed to its API. Exit 75 when
/// the daemon cannot take one (the MTA retries), like the store itself.
fn ingest_through_api(config: &Config, mailbox: &str, mails: &[ingest::Entry]) -> Result<Summary, Failure> {
    let mut summary = Summary::default();
    let now = Timestamp::now();
    for entry in mails {
        let m = entry
            .read(config.limits.max_message_bytes)
            .map_err(|e| Failure::new(EXIT_NOINPUT, e.to_string()))?;
        let mut path = format!("/api/ingest?mailbox={}", percent_encode(mailbox));
        if let Some(d) = m.date.filter(|_| !m.live) {
            path.push_str(&format!("&at={}", percent_encode(&d.to_string())));
        }
        if let Some(size) = m.oversized {
            path.push_str(&format!("&oversized={size}&label={}", percent_encode(&m.label)));
        }
        let (status, body) = api_post(config, &path, &m.raw)?;
        if status != 200 {
            return Err(Failure::new(
                EXIT_TEMPFAIL,
                format!("the daemon did not take {}: {status} {}", m.label, body.trim()),
            ));
        }
        let processed: crate::pipeline::Processed = serde_json::from_str(&body)
            .map_err(|e| Failure::new(EXIT_TEMPFAIL, format!("bad answer from the daemon: {e}")))?;
        // The daemon decides by the same rule, on its own clock.
        summary.add_from(
            &processed,
            &file_origin(&m, mailbox, now, config.automation.backfill_window).0,
        );
    }
    Ok(summary)
}

/// GET from the running daemon's API; the body of a 200.
fn api_get(config: &Config, path: &str) -> Result<String, Failure> {
    api_get_page(config, path).map(|(body, _)| body)
}

/// One page of a list from the running daemon's API: its body and the next page's cursor.
fn api_get_page(config: &Config, path: &str) -> Result<(String, Option<String>), Failure> {
    let token = api_token(config)?;
    match crate::transports::http::get_page(config.http.listen, path, token.as_ref().map(|t| t.expose()))
        .map_err(daemon_unreachable)?
    {
        (200, body, next) => Ok((body, next)),
        // The daemon refused an argument (a cursor, a filter): its reason, as
        // the command itself would say it.
        (400, body, _) => Err(Failure::new(EXIT_USAGE, api_reason(body))),
        (status, body, _) => Err(Failure::new(
            EXIT_SOFTWARE,
            format!("the daemon's API answered {status}: {}", body.trim()),
        )),
    }
}

fn api_get_status(config: &Config, path: &str) -> Result<(u16, String), Failure> {
    let token = api_token(config)?;
    crate::transports::http::get(config.http.listen, path, token.as_ref().map(|t| t.expose()))
        .map_err(daemon_unreachable)
}

/// A GET of the running daemon's API whose answer is bytes (a raw mail): `(status, body)`.
fn api_get_bytes(config: &Config, path: &str) -> Result<(u16, Vec<u8>), Failure> {
    let token = api_token(config)?;
    crate::transports::http::get_bytes(config.http.listen, path, token.as_ref().map(|t| t.expose()))
        .map_err(daemon_unreachable)
}

/// A `raw` argument: a blob key, 64 lowercase hex digits.
fn raw_key_arg(key: &str) -> Result<String, String> {
    if crate::adapters::store::blobs::is_key(key) {
        Ok(key.to_string())
    } else {
        Err("expected a raw_key: 64 lowercase hex digits (see show --json or quarantine --json)".into())
    }
}

/// POST a raw mail to the running daemon's API.
fn api_post(config: &Config, path: &str, raw: &[u8]) -> Result<(u16, String), Failure> {
    let token = api_token(config)?;
    crate::transports::http::post(config.http.listen, path, token.as_ref().map(|t| t.expose()), raw)
        .map_err(daemon_unreachable)
}

/// The reason in an API error answer (`{"error": …}`), or the answer itself.
fn api_reason(body: String) -> String {
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or(body)
}

fn daemon_unreachable(e: String) -> Failure {
    // Held by the daemon, or by another command (an `ingest`, a `migrate`).
    Failure::new(
        EXIT_TEMPFAIL,
        format!("the store is in use by another postdesk process (the daemon, or a command such as ingest), and {e}"),
    )
}

/// The API's bearer token, when the config sets one.
fn api_token(config: &Config) -> Result<Option<config::Secret>, Failure> {
    config
        .http
        .token
        .as_ref()
        .map(|s| s.load().map_err(|e| Failure::new(EXIT_CONFIG, e)))
        .transpose()
}

/// `--mailbox NAME`, checked against the config; the first mailbox without it.
fn chosen_mailbox(config: &Config, flag: Option<String>) -> Result<String, Failure> {
    match flag {
        Some(m) if config.mailbox(&m).is_none() => Err(Failure::new(
            2,
            format!("--mailbox: no mailbox named {m:?} in the config"),
        )),
        Some(m) => Ok(m),
        None => Ok(config.mailboxes[0].name.clone()),
    }
}

/// The `ingest` summary for people.
fn summary_line(s: &Summary) -> String {
    format!(
        "read {}, new tickets {}, appended {}, duplicates {}, auto {}, bounces {}, quarantined {}, dropped {}{}",
        s.read,
        s.new_tickets,
        s.appended,
        s.duplicates,
        s.auto,
        s.bounces,
        s.quarantined,
        s.dropped,
        if s.history > 0 {
            format!(
                ", history {} (older than backfill_window: told to nobody, new tickets closed)",
                s.history
            )
        } else {
            String::new()
        }
    )
}

fn print_ticket_table(list: &[Ticket]) {
    say!(
        "{:>6}  {:<8}  {:<8}  {:<10}  {:<12}  {:<28}  SUBJECT",
        "ID",
        "STATUS",
        "PRIORITY",
        "QUEUE",
        "ASSIGNEE",
        "REQUESTER"
    );
    for t in list {
        say!(
            "{:>6}  {:<8}  {:<8}  {:<10}  {:<12}  {:<28}  {}",
            t.id.0,
            t.status.as_str(),
            t.priority.as_str(),
            t.queue,
            t.assignee.as_deref().unwrap_or("-"),
            t.requester.email,
            t.subject
        );
    }
}

/// `(text, label)` of every ticket with a label (`type` or `queue`): the
/// subject and text of its first customer mail, as the model reads new mail.
/// Through the daemon's export while it holds the store.
fn ticket_examples(config: &Config, label: &str) -> Result<Vec<(String, String)>, Failure> {
    let mut out = Vec::new();
    let mut take = |v: TicketView| out.extend(crate::pipeline::intent_example(&v, label));
    match open_store(config) {
        Ok(store) => crate::view::each_ticket(&*store, |v| -> Result<(), Failure> {
            take(v);
            Ok(())
        })?,
        Err(StoreError::Locked(_)) => {
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    Some(c) => format!("/api/export?cursor={}", percent_encode(c)),
                    None => "/api/export".to_string(),
                };
                let (body, next) = api_get_page(config, &path)?;
                for line in body.lines().filter(|l| !l.trim().is_empty()) {
                    let v: TicketView = serde_json::from_str(line)
                        .map_err(|e| Failure::new(EXIT_SOFTWARE, format!("bad answer from the API: {e}")))?;
                    take(v);
                }
                match next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(out)
}

fn print_ticket(v: &TicketView) {
    let t = &v.ticket;
    say!("Ticket #{}: {}", t.id, t.subject);
    say!(
        "  status {}  priority {}  queue {}  channel {}",
        t.status.as_str(),
        t.priority.as_str(),
        t.queue,
        t.channel
    );
    say!("  requester {}", crate::core::outgoing::format_mailbox(&t.requester));
    if !t.participants.is_empty() {
        let p: Vec<String> = t.participants.iter().map(|m| m.email.clone()).collect();
        say!("  participants {}", p.join(", "));
    }
    say!("  assignee {}", t.assignee.as_deref().unwrap_or("-"));
    if let Some(into) = t.merged_into {
        say!(
            "  merged into #{into}: its messages and events show there, and mail to #{} lands there",
            t.id
        );
    }
    if !t.merged.is_empty() {
        let l: Vec<String> = t.merged.iter().map(|i| format!("#{i}")).collect();
        say!("  merged {}", l.join(", "));
    }
    if !t.linked.is_empty() {
        let l: Vec<String> = t.linked.iter().map(|i| format!("#{i}")).collect();
        say!("  linked {}", l.join(", "));
    }
    say!("  created {}  updated {}", t.created_at, t.updated_at);
    say!();
    for m in &v.messages {
        let part = m.merged_from.map(|t| format!(" (from #{t})")).unwrap_or_default();
        say!(
            "--- {} {:?} {:?} from {} <{}>{part}",
            m.date,
            m.direction,
            m.kind,
            m.from.email,
            m.message_id
        );
        say!("    Subject: {}", m.subject);
        for line in m.text.lines().take(20) {
            say!("    {line}");
        }
    }
    say!();
    for e in &v.events {
        let detail = serde_json::to_string(&e.detail).unwrap_or_default();
        say!("{}  {:<16} {:<24} {}", e.at, e.kind, e.actor, detail);
    }
}

/// Whether a character could drive a terminal or reorder what it shows.
fn is_terminal_control(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text for a terminal: every control character but newline and tab is shown as `\u{..}`.
pub fn terminal_safe(s: &str) -> String {
    if !s.chars().any(is_terminal_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if is_terminal_control(c) {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// JSON text with the controls serde_json leaves raw (DEL, C1, bidi) as `\uXXXX`
/// escapes: the same JSON value, safe on a terminal. They can only occur inside strings.
pub fn json_safe(s: &str) -> String {
    if !s.chars().any(is_terminal_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if is_terminal_control(c) && c != '\r' {
                format!("\\u{:04x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{json_safe, terminal_safe};

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(
            terminal_safe("a\u{1b}[2Jb\u{9b}31m\u{202e}c\n\td"),
            "a\\u{1b}[2Jb\\u{9b}31m\\u{202e}c\n\td"
        );
        assert_eq!(terminal_safe("plain"), "plain");
        let json = serde_json::to_string(&serde_json::json!({"s": "x\u{1b}y\u{9b}z\u{7f}"})).unwrap();
        let safe = json_safe(&json);
        assert!(!safe.chars().any(|c| c.is_control()), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["s"], "x\u{1b}y\u{9b}z\u{7f}");
    }
}
