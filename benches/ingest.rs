//! Throughput and latency figures (not a timed test): `cargo bench --bench ingest`.
//!
//! 1. `ingest` pipeline throughput on real mail (`../shared/corpora/usb-storage/messages`
//!    when present, else a generated set) beside bare mail-parser parsing of the same
//!    mails in the same run, as mails/s and as a ratio, on sled and on PostgreSQL
//!    (a private cluster on loopback);
//! 2. IMAP backfill throughput of the daemon from a local Dovecot;
//! 3. arrival → acknowledgement latency with IDLE, through a real SMTP server.
//!
//! 4. a `tick` with 100 tickets due over a store of 1,000 and of 1,000,000 tickets
//!    (median of nine ticks, each over a fresh group of due tickets).
//!
//! Under `cargo test` (no `--bench` argument) it runs a small smoke pass only.
//! `POSTDESK_BENCH_TICK_ONLY=N` runs only the tick comparison, 1,000 against N tickets;
//! `POSTDESK_BENCH_INGEST_ONLY=1` only the ingest figures (parse, sled, PostgreSQL).

#[allow(dead_code)]
#[path = "../tests/it/servers.rs"]
mod servers;

#[allow(dead_code)]
#[path = "../tests/it/pg.rs"]
mod pg;

use postdesk::core::token::Signer;
use postdesk::pipeline::{Origin, Pipeline};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if let Ok(n) = std::env::var("POSTDESK_BENCH_TICK_ONLY") {
        let n: usize = n.parse().expect("a number of tickets");
        let (a, b) = (tick_cost(1_000, 100), tick_cost(n, 100));
        println!(
            "tick 1000: {:.2} ms, tick {n}: {:.2} ms, ratio {:.2}",
            a * 1e3,
            b * 1e3,
            b / a
        );
        return;
    }
    let mails = load_mails(if full { usize::MAX } else { 50 });
    println!(
        "mails: {} ({})",
        mails.len(),
        if full { "full run" } else { "smoke run" }
    );
    let rounds = if full { 5 } else { 1 };
    let ingest_only = std::env::var("POSTDESK_BENCH_INGEST_ONLY").is_ok();

    // Interleaved rounds, so drift in machine load hits every side alike.
    let postgres = pg::Postgres::start();
    let (mut parses, mut ingests, mut pg_ingests) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        parses.push(bare_parse(&mails));
        ingests.push(pipeline_ingest(&mails, ""));
        let database = postgres.create_database();
        pg_ingests.push(pipeline_ingest(&mails, &postgres.store_config(&database)));
    }
    let (parse, ingest, pg_ingest) = (median(parses), median(ingests), median(pg_ingests));
    println!(
        "bare mail-parser parse: {:>10.0} mails/s (median of {rounds})",
        mails.len() as f64 / parse
    );
    println!(
        "pipeline ingest:        {:>10.0} mails/s (median of {rounds})",
        mails.len() as f64 / ingest
    );
    println!("ratio ingest/parse:     {:>10.2}", parse / ingest);
    println!(
        "ingest on PostgreSQL:   {:>10.0} mails/s (median of {rounds}; loopback, group commit)",
        mails.len() as f64 / pg_ingest
    );
    println!("ratio PostgreSQL/sled:  {:>10.2}", ingest / pg_ingest);
    drop(postgres);
    if ingest_only {
        return;
    }
    // One tick over a store of N tickets with 100 due, beside the same over a small store.
    let (small, large) = if full { (1_000, 1_000_000) } else { (1_000, 3_000) };
    let t_small = tick_cost(small, 100);
    let t_large = tick_cost(large, 100);
    println!("tick, 100 due of {small:>9} tickets: {:>8.2} ms", t_small * 1000.0);
    println!("tick, 100 due of {large:>9} tickets: {:>8.2} ms", t_large * 1000.0);
    println!("ratio large/small:      {:>10.2}", t_large / t_small);
    if !full {
        return;
    }
    imap_backfill(&mails[..mails.len().min(2000)]);
    ack_latency(40);
}

fn load_mails(limit: usize) -> Vec<Vec<u8>> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora/usb-storage/messages");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    if !files.is_empty() {
        println!("corpus: {}", corpus.display());
        return files.iter().take(limit).map(|f| std::fs::read(f).unwrap()).collect();
    }
    println!("corpus: generated (no ../shared/corpora)");
    (0..limit.min(2000))
        .map(|i| {
            let parent = if i % 4 == 0 { String::new() } else { format!("In-Reply-To: <g{}@gen.test>\r\n", i - 1) };
            format!(
                "From: User {i} <u{}@gen.test>\r\nTo: support@example.com\r\nSubject: Question {}\r\nMessage-ID: <g{i}@gen.test>\r\n{parent}Date: Mon, 23 Nov 2026 09:{:02}:00 +0000\r\n\r\n{}\r\n",
                i % 97,
                i / 4,
                i % 60,
                "Some words of a question.\r\n".repeat(20)
            )
            .into_bytes()
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn bare_parse(mails: &[Vec<u8>]) -> f64 {
    let start = Instant::now();
    let mut n = 0usize;
    for m in mails {
        if let Some(p) = mail_parser::MessageParser::default().parse(m) {
            n += p.parts.len();
        }
    }
    std::hint::black_box(n);
    start.elapsed().as_secs_f64()
}

fn config_text(dir: &Path, mailbox: &str, outgoing: &str) -> String {
    format!(
        "[instance]\nname = \"Bench\"\ndata_dir = \"{d}/data\"\nsecret_file = \"{d}/secret\"\ngenerate_secret = true\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n{mailbox}\n{outgoing}\n\n[automation]\nbackfill_window = \"36500d\"\n",
        d = dir.display(),
        port = servers::free_port()
    )
}

/// The same work as `postdesk ingest --no-send`: Date order, one transaction
/// per mail, one flush; on sled, or on the store `store` names.
fn pipeline_ingest(mails: &[Vec<u8>], store: &str) -> f64 {
    let dir = servers::temp_dir("bench-ingest");
    let text = config_text(
        &dir,
        &format!(
            "[[mailbox]]\nname = \"support\"\naddress = \"support@example.com\"\nmaildir = {{ path = \"{}/in\" }}\n",
            dir.display()
        ),
        &format!("[outgoing]\nfile = {{ path = \"{}/out\" }}\n", dir.display()),
    );
    let text = format!("{text}\n{store}");
    let config = postdesk::adapters::config::parse(&text, Path::new("bench.toml")).unwrap();
    let pipeline = Pipeline {
        store: postdesk::adapters::store::open(&config.instance.data_dir, &config.store).unwrap(),
        config: Arc::new(config),
        signer: Signer::new(b"bench secret"),
        metrics: Default::default(),
        intent: None,
        knowledge: None,
    };
    let origin = Origin {
        bulk: true,
        ..Origin::live("support")
    };
    let now = jiff::Timestamp::now();
    let start = Instant::now();
    let mut dated: Vec<(Option<jiff::Timestamp>, &Vec<u8>)> = mails
        .iter()
        .map(|m| (postdesk::adapters::inbound::date_of(m), m))
        .collect();
    dated.sort_by_key(|(d, _)| (d.is_none(), *d));
    // As `ingest` does: batches of 128, one blob sync each.
    for chunk in dated.chunks(128) {
        let batch: Vec<(&[u8], &Origin, jiff::Timestamp)> = chunk
            .iter()
            .map(|(d, m)| (m.as_slice(), &origin, d.filter(|d| *d < now).unwrap_or(now)))
            .collect();
        pipeline.process_batch(&batch).unwrap();
    }
    pipeline.store.flush().unwrap();
    let secs = start.elapsed().as_secs_f64();
    drop(pipeline);
    let _ = std::fs::remove_dir_all(dir);
    secs
}

fn imap_backfill(mails: &[Vec<u8>]) {
    let dovecot = servers::Dovecot::start(&["support"]);
    let mut imap = Client::login(dovecot.port);
    for m in mails {
        imap.append(m);
    }
    let dir = servers::temp_dir("bench-imap");
    let text = config_text(
        &dir,
        &format!(
            "[[mailbox]]\nname = \"support\"\naddress = \"support@example.com\"\nimap = {{ host = \"127.0.0.1\", port = {}, tls = \"plain\", username = \"support\", password_env = \"BENCH_PW\", processed = \"Processed\", batch_size = 500 }}\n",
            dovecot.port
        ),
        &format!("[outgoing]\nfile = {{ path = \"{}/out\" }}\n", dir.display()),
    );
    let cfg = dir.join("postdesk.toml");
    std::fs::write(&cfg, text).unwrap();
    let start = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_postdesk"))
        .arg("-c")
        .arg(&cfg)
        .arg("run")
        .env("BENCH_PW", servers::PASSWORD)
        .env("POSTDESK_LOG", "warn")
        .spawn()
        .unwrap();
    while imap.count("Processed") < mails.len() as u32 {
        assert!(start.elapsed() < Duration::from_secs(300), "backfill did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "imap backfill:          {:>10.0} mails/s ({} mails in {:.2} s, daemon start to last mail moved)",
        mails.len() as f64 / secs,
        mails.len(),
        secs
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

fn ack_latency(samples: usize) {
    let dovecot = servers::Dovecot::start(&["support"]);
    let smtp = servers::Smtp::start();
    let dir = servers::temp_dir("bench-latency");
    let text = config_text(
        &dir,
        &format!(
            "[[mailbox]]\nname = \"support\"\naddress = \"support@example.com\"\nimap = {{ host = \"127.0.0.1\", port = {}, tls = \"plain\", username = \"support\", password_env = \"BENCH_PW\", processed = \"Processed\", poll_interval = \"1h\" }}\n",
            dovecot.port
        ),
        &format!(
            "[outgoing]\nsmtp = {{ host = \"127.0.0.1\", port = {}, tls = \"plain\" }}\n",
            smtp.port
        ),
    );
    let cfg = dir.join("postdesk.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_postdesk"))
        .arg("-c")
        .arg(&cfg)
        .arg("run")
        .env("BENCH_PW", servers::PASSWORD)
        .env("POSTDESK_LOG", "warn")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let mut imap = Client::login(dovecot.port);
    let mut lat = Vec::new();
    for i in 0..samples {
        let m = format!(
            "From: c{i}@customer.test\r\nTo: support@example.com\r\nSubject: latency {i}\r\nMessage-ID: <lat{i}@customer.test>\r\n\r\nx\r\n"
        );
        let start = Instant::now();
        imap.append(m.as_bytes());
        while smtp.received().len() < i + 1 {
            assert!(start.elapsed() < Duration::from_secs(30), "no acknowledgement");
            std::thread::sleep(Duration::from_millis(2));
        }
        lat.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "arrival → ack (IDLE):   p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} samples, APPEND done → ack at the SMTP server)",
        p(0.5),
        p(0.99),
        lat[lat.len() - 1],
        lat.len()
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// A tiny blocking IMAP client for APPEND and STATUS.
struct Client {
    reader: std::io::BufReader<std::net::TcpStream>,
    tag: u32,
}

impl Client {
    fn login(port: u16) -> Client {
        use std::io::BufRead;
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut c = Client {
            reader: std::io::BufReader::new(s),
            tag: 0,
        };
        let mut greeting = String::new();
        c.reader.read_line(&mut greeting).unwrap();
        c.send(format!("LOGIN support {}", servers::PASSWORD).as_bytes(), None);
        c
    }

    fn send(&mut self, cmd: &[u8], literal: Option<&[u8]>) -> Vec<String> {
        use std::io::{BufRead, Write};
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        let mut line = format!("{tag} ").into_bytes();
        line.extend_from_slice(cmd);
        line.extend_from_slice(b"\r\n");
        self.reader.get_mut().write_all(&line).unwrap();
        if let Some(lit) = literal {
            let mut cont = String::new();
            self.reader.read_line(&mut cont).unwrap();
            self.reader.get_mut().write_all(lit).unwrap();
            self.reader.get_mut().write_all(b"\r\n").unwrap();
        }
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            self.reader.read_line(&mut l).unwrap();
            if l.starts_with(&format!("{tag} ")) {
                return lines;
            }
            lines.push(l);
        }
    }

    fn append(&mut self, mail: &[u8]) {
        let cmd = format!("APPEND INBOX {{{}}}", mail.len());
        self.send(cmd.as_bytes(), Some(mail));
    }

    fn count(&mut self, folder: &str) -> u32 {
        let lines = self.send(format!("STATUS {folder} (MESSAGES)").as_bytes(), None);
        lines
            .iter()
            .find(|l| l.starts_with("* STATUS"))
            .and_then(|l| l.rsplit("MESSAGES ").next())
            .and_then(|r| r.trim_end().trim_end_matches(')').parse().ok())
            .unwrap_or(0)
    }
}

/// Builds a store of `n` tickets, each with SLA timers, in which `ROUNDS` groups
/// of `due` tickets come due two hours apart; runs one tick per group, as the
/// daemon's timer would, and returns the median tick in seconds (the first
/// tick, which warms the store's cache, is left out).
fn tick_cost(n: usize, due: usize) -> f64 {
    use postdesk::adapters::store::{Change, Op, Timer};
    use postdesk::core::model::{Mailbox, Ticket, TicketId};
    const ROUNDS: usize = 10;
    assert!(n >= due * ROUNDS, "every round needs its own due tickets");
    let dir = servers::temp_dir("bench-tick");
    let text = config_text(
        &dir,
        &format!(
            "[[mailbox]]\nname = \"support\"\naddress = \"support@example.com\"\nmaildir = {{ path = \"{}/in\" }}\n",
            dir.display()
        ),
        &format!(
            "[outgoing]\nfile = {{ path = \"{}/out\" }}\n[sla.normal]\nfirst_response = \"1h\"\nresolution = \"30d\"\n[store]\ncache_mb = {}\n",
            dir.display(),
            std::env::var("POSTDESK_BENCH_CACHE_MB").unwrap_or_else(|_| "64".into())
        ),
    );
    let config = postdesk::adapters::config::parse(&text, Path::new("bench.toml")).unwrap();
    let pipeline = Pipeline {
        store: postdesk::adapters::store::open(&config.instance.data_dir, &config.store).unwrap(),
        config: Arc::new(config),
        signer: Signer::new(b"bench secret"),
        metrics: Default::default(),
        intent: None,
        knowledge: None,
    };
    let start: jiff::Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
    let round_at = |r: usize| jiff::Timestamp::from_second(start.as_second() + 7200 * r as i64).unwrap();
    let mut w = Change::default();
    for i in 0..n {
        // Group r (the first ROUNDS × due tickets) was created one hour and a
        // second before round r, so its warning and its breach fall in that
        // round; every other ticket is due long after the last round.
        let created = if i < due * ROUNDS {
            round_at(i / due).as_second() - 3601
        } else {
            start.as_second() + 86_400 * 7
        };
        let created = jiff::Timestamp::from_second(created).unwrap();
        let mut t = Ticket::new(
            TicketId(i as u64 + 1),
            &format!("Question {i}"),
            Mailbox::new(None, &format!("c{i}@customer.test")),
            "support",
            "general",
            created,
        );
        postdesk::core::sla::refresh(&mut t, &pipeline.config, created, true, false);
        for (at, kind) in postdesk::core::sla::due_items(&t, &pipeline.config) {
            w.push(Op::AddTimer(Timer {
                at,
                ticket: t.id,
                kind: kind as u8,
            }));
        }
        w.ticket(&t);
        // Commits of a few hundred tickets, as a backfill makes them: a store
        // built in transactions of 20,000 tickets measured 3–6× slower ticks
        // afterwards (sled's leaves grown in one transaction stay oversized).
        if i % 500 == 499 {
            pipeline.store.commit(std::mem::take(&mut w)).unwrap();
        }
    }
    pipeline.store.commit(w).unwrap();
    pipeline.store.flush().unwrap();
    let mut times = Vec::new();
    for r in 0..ROUNDS {
        let begun = Instant::now();
        let summary = pipeline.tick(round_at(r)).unwrap();
        times.push(begun.elapsed().as_secs_f64());
        assert_eq!(summary.fired as usize, due * 2, "a warning and a breach per due ticket");
    }
    drop(pipeline);
    let _ = std::fs::remove_dir_all(dir);
    median(times[1..].to_vec())
}
