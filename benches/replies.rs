//! Quote stripping measured on real mail-client replies: each body of the two
//! public reply-parser corpora in `../shared/replies` (not part of the
//! repository) is sent as an agent's reply to a real notification through
//! the pipeline (as `ingest` does), and what is relayed to the customer is
//! compared with the writer's own lines, labelled in `benches/replies.labels`
//! by line numbers (so no corpus text is copied here).
//!
//! Prints per corpus and overall: exact, leaked (a relayed line the writer
//! did not write), lost (a line the writer wrote that was not relayed).
//! `cargo bench --bench replies` (`-- --show` prints every miss,
//! `-- --suggest` prints labels for the current output).

use postdesk::adapters::config::parse;
use postdesk::core::model::{Direction, MessageKind, TicketId};
use postdesk::core::token::Signer;
use postdesk::pipeline::{Origin, Pipeline};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const CONFIG: &str = r#"
[instance]
name = "Example Support"
data_dir = "unused"
secret_env = "UNUSED"
[[mailbox]]
name = "support"
address = "support@example.com"
maildir = { path = "unused" }
[outgoing]
file = { path = "unused" }
[[agent]]
name = "Alice Jones"
email = "alice@example.com"
queues = ["general"]
[[queue]]
name = "general"
assign = "round_robin"
[automation]
ack_limit_per_hour = 100000
notification_limit_per_hour = 100000
"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let show = args.iter().any(|a| a == "--show");
    let suggest = args.iter().any(|a| a == "--suggest");
    let root = std::env::var_os("POSTDESK_REPLIES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/replies"));
    let corpora = [
        ("crisp", root.join("crisp-email-reply-parser/test/fixtures")),
        ("github", root.join("github-email_reply_parser/test/emails")),
    ];
    if !corpora.iter().all(|(_, p)| p.is_dir()) {
        eprintln!("replies: no corpus at {} (set POSTDESK_REPLIES)", root.display());
        std::process::exit(2);
    }
    let labels = read_labels(&Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/replies.labels"));
    let dir = std::env::temp_dir().join(format!("postdesk-replies-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = postdesk::adapters::store::open(&dir, &Default::default()).expect("store");
    let config = parse(CONFIG, Path::new("bench.toml")).expect("config");
    let pipeline = Pipeline {
        config: Arc::new(config),
        store,
        signer: Signer::new(b"bench secret"),
        metrics: Default::default(),
        intent: None,
        knowledge: None,
    };
    let mut totals: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    let mut n = 0u64;
    for (name, path) in &corpora {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        for f in files {
            n += 1;
            let key = format!("{name}/{}", f.file_name().unwrap().to_string_lossy());
            let body = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).replace("\r\n", "\n");
            let relayed = relay_of(&pipeline, n, &body);
            let input: Vec<&str> = body.lines().collect();
            let got: Vec<String> = relayed
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty() && !l.starts_with('>') && !l.starts_with("[ref:"))
                .collect();
            if suggest {
                println!("{key} {}", suggest_label(&input, &got));
                continue;
            }
            let Some(ranges) = labels.get(&key) else {
                println!("unlabelled: {key}");
                continue;
            };
            let want: Vec<String> = ranges
                .iter()
                .flat_map(|&(a, b)| (a..=b).filter_map(|i| input.get(i - 1)))
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
            let lost = want.iter().filter(|w| !got.contains(w)).count();
            let leaked = got.iter().filter(|g| !want.contains(g)).count();
            let t = totals.entry(name).or_default();
            t[0] += 1;
            t[1] += usize::from(lost == 0 && leaked == 0 && got.len() == want.len());
            t[2] += usize::from(leaked > 0);
            t[3] += usize::from(lost > 0);
            if show && (lost > 0 || leaked > 0) {
                println!("--- {key}: lost {lost}, leaked {leaked}\n{relayed}\n");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if suggest {
        return;
    }
    let mut all = [0usize; 4];
    for (name, t) in &totals {
        print_line(name, t);
        for i in 0..4 {
            all[i] += t[i];
        }
    }
    print_line("overall", &all);
}

fn print_line(name: &str, t: &[usize; 4]) {
    println!(
        "{name:<8} replies {:>3}  exact {:>3} ({:.1}%)  with leaked lines {:>2}  with lost text {:>2}",
        t[0],
        t[1],
        100.0 * t[1] as f64 / t[0].max(1) as f64,
        t[2],
        t[3]
    );
}

/// Opens ticket `n` with a customer mail, answers its notification as the
/// agent with `body`, and returns what was relayed to the customer ("" for nothing).
fn relay_of(p: &Pipeline, n: u64, body: &str) -> String {
    let now: jiff::Timestamp = "2026-11-23T09:00:00Z".parse().unwrap();
    let origin = Origin::live("support");
    let customer = format!(
        "From: Carol <carol{n}@customer.test>\r\nTo: support@example.com\r\nSubject: Question {n}\r\nMessage-ID: <q{n}@customer.test>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n\r\nHello, a question.\r\n"
    );
    let id = match p.process(customer.as_bytes(), &origin, now).unwrap() {
        postdesk::pipeline::Processed::NewTicket { ticket, .. } => ticket,
        other => panic!("{other:?}"),
    };
    let notification = p
        .store
        .messages(id)
        .unwrap()
        .into_iter()
        .find(|m| m.direction == Direction::Outbound && m.to.iter().any(|t| t.email == "alice@example.com"))
        .expect("a notification");
    let reply_to = p
        .signer
        .agent_plus_address("support@example.com", TicketId(id.0), "alicejones");
    let reply = format!(
        "From: Alice Jones <alice@example.com>\r\nTo: {reply_to}\r\nSubject: Re: Question {n}\r\nMessage-ID: <a{n}@example.com>\r\nIn-Reply-To: <{}>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
        notification.message_id,
        body.replace('\n', "\r\n")
    );
    p.process(reply.as_bytes(), &origin, now).unwrap();
    p.store
        .messages(id)
        .unwrap()
        .into_iter()
        .filter(|m| m.direction == Direction::Outbound && m.kind == MessageKind::Agent)
        .map(|m| m.text)
        .next_back()
        .unwrap_or_default()
}

/// `name a-b,c-d` lines; `-` for a reply with no text of the writer's.
fn read_labels(path: &Path) -> BTreeMap<String, Vec<(usize, usize)>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let (name, ranges) = line.split_once(' ').unwrap_or((line, "-"));
        let ranges = ranges
            .trim()
            .split(',')
            .filter(|r| *r != "-")
            .map(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect();
        out.insert(name.to_string(), ranges);
    }
    out
}

/// The line ranges of `input` that `got` came from.
fn suggest_label(input: &[&str], got: &[String]) -> String {
    let mut hits: Vec<usize> = Vec::new();
    let mut from = 0;
    for g in got {
        if let Some(i) = (from..input.len()).find(|&i| input[i].trim() == g) {
            hits.push(i + 1);
            from = i + 1;
        }
    }
    if hits.is_empty() {
        return "-".into();
    }
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for h in hits {
        match ranges.last_mut() {
            Some((_, b)) if h <= *b + 2 && input[*b..h - 1].iter().all(|l| l.trim().is_empty()) => *b = h,
            _ => ranges.push((h, h)),
        }
    }
    ranges
        .iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(",")
}
