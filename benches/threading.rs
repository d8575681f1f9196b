//! Threading quality (not a timed test): `cargo bench --bench threading`.
//!
//! Real list archives (`../shared/corpora/{open-iscsi,usb-storage}` when present)
//! go through the pipeline twice: in `Date` order, as one backfill, and in
//! shuffled arrival, split at random into 20 batches that are ingested one
//! after another (each in `Date` order, as separate mailboxes or folders
//! would deliver them). Every stored message is then looked up in the store
//! (following merges) and the grouping is scored pairwise against the
//! corpus's header ground truth: precision (no two conversations in one
//! ticket), recall (no conversation split) and F1.
//!
//! Without the corpora (a fresh clone), and under `cargo test`, it runs on a
//! generated set of conversations with known threads instead, including
//! replies whose References name only their parent.

use postdesk::core::token::Signer;
use postdesk::pipeline::{Origin, Pipeline};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One mail with its ground-truth thread.
struct Mail {
    key: String,
    thread: String,
    raw: Vec<u8>,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora");
    let mut corpora: Vec<(String, Vec<Mail>)> = Vec::new();
    if full {
        for name in ["open-iscsi", "usb-storage"] {
            if let Some(mails) = load_corpus(&root.join(name)) {
                corpora.push((name.to_string(), mails));
            }
        }
    }
    if corpora.is_empty() {
        let n = if full { 400 } else { 60 };
        corpora.push((format!("generated ({n} conversations)"), generated(n)));
    }
    let seeds: &[u64] = if full { &[1, 2, 3, 4, 5] } else { &[1, 2] };
    println!(
        "{:<28} {:>6} {:>20} {:>9} {:>9} {:>9} {:>8}",
        "corpus", "mails", "arrival", "precision", "recall", "F1", "tickets"
    );
    for (name, mails) in &corpora {
        let date = score(mails, &run(mails, 1, 0));
        row(name, mails.len(), "Date order", &date);
        assert!(date.f1 >= 0.98, "{name}: Date-order F1 {:.4} < 0.98", date.f1);
        let mut f1s = Vec::new();
        for &seed in seeds {
            let s = score(mails, &run(mails, 20, seed));
            row(name, mails.len(), &format!("20 batches, seed {seed}"), &s);
            f1s.push(s);
        }
        f1s.sort_by(|a, b| a.f1.partial_cmp(&b.f1).unwrap());
        let median = &f1s[f1s.len() / 2];
        row(name, mails.len(), "shuffled, median F1", median);
    }
}

/// Prints one row, and fails the run (`cargo test --bench threading` too)
/// when a ticket ever holds two conversations: precision is the promise.
fn row(name: &str, n: usize, arrival: &str, s: &Score) {
    assert!(
        s.precision >= 0.999,
        "{name}, {arrival}: precision {:.4} < 0.999 (conversations mixed in one ticket)",
        s.precision
    );
    println!(
        "{:<28} {:>6} {:>20} {:>9.4} {:>9.4} {:>9.4} {:>8}",
        name, n, arrival, s.precision, s.recall, s.f1, s.tickets
    );
}

fn load_corpus(dir: &Path) -> Option<Vec<Mail>> {
    let truth = std::fs::read_to_string(dir.join("ground_truth/threads.tsv")).ok()?;
    let base = dir.parent()?;
    let mut out = Vec::new();
    for line in truth.lines() {
        let mut parts = line.split('\t');
        let (Some(thread), Some(key), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        // Mail without a Message-ID of its own (or a duplicate one) is not scored.
        if key.starts_with("file:") {
            continue;
        }
        let raw = std::fs::read(base.join(file)).ok()?;
        out.push(Mail {
            key: key.to_string(),
            thread: thread.to_string(),
            raw,
        });
    }
    Some(out)
}

/// `n` conversations of 1–6 mails from several people, every reply naming
/// its whole chain in References, except every third naming its parent only.
fn generated(n: usize) -> Vec<Mail> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    for c in 0..n {
        let len = 1 + (rng.next() % 6) as usize;
        let mut chain: Vec<String> = Vec::new();
        for i in 0..len {
            let id = format!("c{c}.m{i}@gen.test");
            let from = format!("person{}@c{}.test", rng.next() % 3, c);
            let parent = if i == 0 {
                None
            } else {
                Some((rng.next() % i as u64) as usize)
            };
            let refs = match parent {
                None => String::new(),
                Some(p) if i % 3 == 0 => format!("In-Reply-To: <{}>\r\n", chain[p]),
                Some(p) => {
                    let all: Vec<String> = chain[..=p].iter().map(|r| format!("<{r}>")).collect();
                    format!("In-Reply-To: <{}>\r\nReferences: {}\r\n", chain[p], all.join(" "))
                }
            };
            let raw = format!(
                "From: {from}\r\nTo: support@example.com\r\nSubject: {}Case {c}\r\nMessage-ID: <{id}>\r\n{refs}Date: Mon, 23 Nov 2026 {:02}:{:02}:00 +0000\r\n\r\nAbout case {c}, mail {i}.\r\n",
                if i == 0 { "" } else { "Re: " },
                (c / 60) % 24,
                (c + i) % 60,
            );
            chain.push(id.clone());
            out.push(Mail {
                key: id,
                thread: c.to_string(),
                raw: raw.into_bytes(),
            });
        }
    }
    out
}

/// xorshift64*: enough to shuffle reproducibly without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Ingests the mails in `batches` random batches (1: all at once, in Date
/// order) and returns the ticket of each mail's key.
fn run(mails: &[Mail], batches: usize, seed: u64) -> HashMap<String, u64> {
    let dir = temp_dir();
    let text = format!(
        "[instance]\nname = \"Bench\"\ndata_dir = \"{d}/data\"\nsecret_file = \"{d}/secret\"\ngenerate_secret = true\n\n[[mailbox]]\nname = \"support\"\naddress = \"support@example.com\"\nmaildir = {{ path = \"{d}/in\" }}\n\n[outgoing]\nfile = {{ path = \"{d}/out\" }}\n\n[automation]\nbackfill_window = \"36500d\"\n",
        d = dir.display()
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
    let origin = Origin {
        bulk: true,
        ..Origin::live("support")
    };
    let now = jiff::Timestamp::now();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut groups: Vec<Vec<&Mail>> = (0..batches).map(|_| Vec::new()).collect();
    for m in mails {
        let b = if batches == 1 {
            0
        } else {
            (rng.next() % batches as u64) as usize
        };
        groups[b].push(m);
    }
    for group in groups {
        let mut dated: Vec<(Option<jiff::Timestamp>, &Mail)> = group
            .into_iter()
            .map(|m| (postdesk::adapters::inbound::date_of(&m.raw), m))
            .collect();
        dated.sort_by_key(|(d, _)| (d.is_none(), *d));
        for chunk in dated.chunks(128) {
            let batch: Vec<(&[u8], &Origin, jiff::Timestamp)> = chunk
                .iter()
                .map(|(d, m)| (m.raw.as_slice(), &origin, d.filter(|d| *d < now).unwrap_or(now)))
                .collect();
            pipeline.process_batch(&batch).unwrap();
        }
    }
    // Why conversations stayed apart: the merges the headers asked for but
    // the safety rules refused (each pair is counted from both tickets).
    if std::env::var_os("THREADING_WHY").is_some() {
        let mut why: HashMap<String, usize> = HashMap::new();
        let store = &*pipeline.store;
        let mut n = 1;
        while let Some(t) = store.ticket(postdesk::core::model::TicketId(n)).unwrap() {
            for e in store.events(t.id).unwrap() {
                if e.kind == "merge_suggested" {
                    let reason = e.detail.get("reason").and_then(|r| r.as_str()).unwrap_or("");
                    let reason: String = reason
                        .split_whitespace()
                        .filter(|w| !w.contains('@') && !w.chars().any(|c| c.is_ascii_digit()))
                        .collect::<Vec<_>>()
                        .join(" ");
                    *why.entry(reason).or_default() += 1;
                }
            }
            n += 1;
        }
        eprintln!("refused merges (seed {seed}): {why:?}");
    }
    let mut out = HashMap::new();
    for m in mails {
        if let Some(t) = postdesk::adapters::store::ticket_of_stored(&*pipeline.store, &m.key).unwrap() {
            out.insert(m.key.clone(), t.0);
        }
    }
    drop(pipeline);
    let _ = std::fs::remove_dir_all(dir);
    out
}

struct Score {
    precision: f64,
    recall: f64,
    f1: f64,
    tickets: usize,
}

/// Pairwise scores: pairs of mails in one ticket that share a thread, over
/// all pairs in one ticket (precision) and over all pairs in one thread
/// (recall). A mail that is not stored counts as a ticket of its own.
fn score(mails: &[Mail], tickets: &HashMap<String, u64>) -> Score {
    let pairs = |counts: HashMap<(String, String), u64>| counts.values().map(|n| n * (n - 1) / 2).sum::<u64>();
    let mut both = HashMap::new();
    let mut pred = HashMap::new();
    let mut truth = HashMap::new();
    for m in mails {
        let t = tickets
            .get(&m.key)
            .map(|t| t.to_string())
            .unwrap_or_else(|| format!("missing:{}", m.key));
        *both.entry((m.thread.clone(), t.clone())).or_insert(0u64) += 1;
        *pred.entry((t, String::new())).or_insert(0u64) += 1;
        *truth.entry((m.thread.clone(), String::new())).or_insert(0u64) += 1;
    }
    let n_tickets = pred.len();
    let (same, in_pred, in_truth) = (pairs(both), pairs(pred), pairs(truth));
    let precision = if in_pred == 0 {
        1.0
    } else {
        same as f64 / in_pred as f64
    };
    let recall = if in_truth == 0 {
        1.0
    } else {
        same as f64 / in_truth as f64
    };
    Score {
        precision,
        recall,
        f1: 2.0 * precision * recall / (precision + recall),
        tickets: n_tickets,
    }
}

fn temp_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "postdesk-bench-threading-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
