//! The store: raw mail in blob packs, paged and indexed ticket lists, the
//! sweep of unreferenced blobs, and the in-place upgrades of stores written
//! by the previous layouts.

use crate::servers::temp_dir;
use crate::support::*;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Where a blob file of the previous layout (one file per blob) lay.
fn legacy_blob_path(data: &Path, key: &str) -> std::path::PathBuf {
    data.join("blobs").join(&key[..2]).join(key)
}

/// Every pack file's bytes, joined.
fn packs(data: &Path) -> Vec<u8> {
    let mut names: Vec<_> = fs::read_dir(data.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("pack-"))
        .collect();
    names.sort();
    names.iter().flat_map(|p| fs::read(p).unwrap()).collect()
}

#[test]
fn a_mail_of_megabytes_of_text_is_shown_cut_and_kept_whole() {
    // Logs pasted into a mail: 3 MB of text.
    let desk = DeskConfig::new().build();
    let line = "2026-12-07 10:00:01 ERROR spooler: printer offline, retrying\n";
    let m = mail(
        "bob@customer.test",
        "support@example.com",
        "Logs",
        "logs@customer.test",
        "",
        &line.repeat(3_000_000 / line.len()),
    );
    desk.ingest(&[&m]);
    let message = desk.show(1)["messages"][0].clone();
    let text = message["text"].as_str().unwrap();
    assert!(text.len() < 1_100_000, "{} bytes kept", text.len());
    assert!(text.starts_with(line.trim_end()), "{}", &text[..100]);
    let note = &text[text.len() - 120..];
    assert!(
        note.contains("more bytes of this mail's text are not shown here; the mail is kept whole"),
        "{note}"
    );
    let out = desk.run(&["raw", message["raw_key"].as_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.stdout == m.as_bytes(),
        "{} bytes back of {}",
        out.stdout.len(),
        m.len()
    );
}

#[test]
fn raw_mail_is_packed_and_read_back_by_its_hash() {
    let desk = DeskConfig::new().sled().build();
    let m = mail(
        "bob@customer.test",
        "support@example.com",
        "Blob me",
        "blob1@customer.test",
        "",
        &"My order arrived damaged, please send a new one.\n".repeat(40),
    );
    desk.ingest(&[&m]);
    let t = desk.show(1);
    let key = t["messages"][0]["raw_key"].as_str().expect("a raw key").to_string();
    let data = desk.dir.join("data");
    // Appended to a pack under its hash, compressed, not a file of its own.
    let packed = packs(&data);
    let hash: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&key[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let at = packed
        .windows(32)
        .position(|w| w == hash)
        .expect("a record under the mail's hash");
    assert_eq!(&packed[at - 4..at], b"PDB2", "text is stored compressed");
    assert!(
        packed.len() * 2 < m.len(),
        "{} bytes of packs for a mail of {}",
        packed.len(),
        m.len()
    );
    assert!(!legacy_blob_path(&data, &key).exists());
    // `raw` gives it back exactly, and its SHA-256 is the key.
    let out = desk.run(&["raw", &key]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, m.as_bytes());
    let file = desk.dir.join("back.eml");
    fs::write(&file, &out.stdout).unwrap();
    let sum = Command::new("sha256sum").arg(&file).output().unwrap();
    assert!(String::from_utf8_lossy(&sum.stdout).starts_with(&key));
    // A key nothing names, and what is no key.
    let out = desk.run(&["raw", &"0".repeat(64)]);
    assert_eq!(out.status.code(), Some(66));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no stored mail"));
    let out = desk.run(&["raw", "../../etc/passwd"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 lowercase hex digits"));
    // While the daemon holds the store, through its API.
    let daemon = desk.start();
    let out = desk.run(&["raw", &key]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, m.as_bytes());
    assert_eq!(desk.run(&["raw", &"0".repeat(64)]).status.code(), Some(66));
    daemon.stop();
}

#[test]
fn ticket_lists_page_with_a_cursor_and_filter_through_indexes() {
    let desk = DeskConfig::new().build();
    let mails: Vec<String> = (0..7)
        .map(|i| {
            mail(
                &format!("c{}@customer.test", i % 3),
                "support@example.com",
                &format!("Question {i}"),
                &format!("q{i}@customer.test"),
                "",
                "help",
            )
        })
        .collect();
    let refs: Vec<&str> = mails.iter().map(String::as_str).collect();
    desk.ingest(&refs);
    let ids = |out: &str| -> Vec<u64> {
        out.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let first = desk.ok(&["tickets", "--limit", "3"]);
    assert_eq!(ids(&first), [1, 2, 3], "{first}");
    assert!(first.contains("more: --cursor 3"), "{first}");
    let second = desk.ok(&["tickets", "--limit", "3", "--cursor", "3"]);
    assert_eq!(ids(&second), [4, 5, 6], "{second}");
    let last = desk.ok(&["tickets", "--limit", "3", "--cursor", "6"]);
    assert_eq!(ids(&last), [7], "{last}");
    assert!(!last.contains("more:"), "the last page says so: {last}");
    // Requester (any case) and status filters, alone and together.
    let c1: Vec<Value> =
        serde_json::from_str(&desk.ok(&["tickets", "--json", "--requester", "C1@Customer.test"])).unwrap();
    let got: Vec<u64> = c1.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(got, [2, 5]);
    let none: Vec<Value> = serde_json::from_str(&desk.ok(&[
        "tickets",
        "--json",
        "--status",
        "closed",
        "--requester",
        "c1@customer.test",
    ]))
    .unwrap();
    assert!(none.is_empty());
    let recent: Vec<Value> =
        serde_json::from_str(&desk.ok(&["tickets", "--json", "--updated-since", "2026-11-23T08:00:00Z"])).unwrap();
    assert_eq!(recent.len(), 7);
    // Bad arguments say what was expected.
    let out = desk.run(&["tickets", "--limit", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1..=1000"), "{out:?}");
    // A bad cursor is a bad argument (2), not a store to retry (75).
    let bad_cursor = || {
        let out = desk.run(&["tickets", "--cursor", "nonsense"]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("bad cursor \"nonsense\": pass back"), "{err}");
        assert!(!err.contains('{'), "the reason, not the API's JSON: {err}");
    };
    bad_cursor();

    // Through the running daemon: the same pages, the cursor in a header.
    let daemon = desk.start();
    let first = desk.ok(&["tickets", "--limit", "4", "--status", "new"]);
    assert_eq!(ids(&first), [1, 2, 3, 4], "{first}");
    assert!(first.contains("more: --cursor 4"), "{first}");
    let rest = desk.ok(&["tickets", "--limit", "4", "--status", "new", "--cursor", "4"]);
    assert_eq!(ids(&rest), [5, 6, 7], "{rest}");
    bad_cursor();
    let (status, body) = http_raw(
        desk.http_port,
        &format!(
            "GET /api/tickets?cursor=x.y HTTP/1.1\nHost: 127.0.0.1:{}",
            desk.http_port
        ),
        b"",
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = http_raw(
        desk.http_port,
        &format!(
            "GET /api/tickets?limit=5000 HTTP/1.1\nHost: 127.0.0.1:{}",
            desk.http_port
        ),
        b"",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limit"), "{body}");
    // Export pages the same way.
    let get = |path: &str| {
        http_raw(
            desk.http_port,
            &format!("GET {path} HTTP/1.1\nHost: 127.0.0.1:{}", desk.http_port),
            b"",
        )
    };
    let (status, body) = get("/api/export?limit=3");
    assert_eq!(status, 200, "{body}");
    let page: Vec<u64> = body
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_u64().unwrap())
        .collect();
    assert_eq!(page, [1, 2, 3]);
    let (_, body) = get("/api/export?limit=3&cursor=6");
    assert_eq!(body.lines().count(), 1, "{body}");
    assert_eq!(get("/api/export?limit=0").0, 400);
    assert_eq!(get("/api/export?cursor=x.y").0, 400);
    daemon.stop();
}

#[test]
fn export_through_the_daemon_follows_its_pages_and_matches_the_offline_export() {
    // No acknowledgements, so the running daemon changes nothing between the two exports.
    let desk = DeskConfig::new().extra("[automation]\nacknowledge = false\n").build();
    // More tickets than one page of the API's export (200).
    let path = backfill_mbox(&desk, 450, "export");
    desk.ok(&["ingest", "--no-send", path.to_str().unwrap()]);
    let offline = desk.ok(&["export"]);
    assert_eq!(offline.lines().count(), 450);
    let ids = |text: &str| -> Vec<u64> {
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_u64().unwrap())
            .collect()
    };
    // An export in parts: `--limit`, then on from the cursor it printed.
    let parts = |desk: &Desk| {
        let run = |args: &[&str]| {
            let out = desk.run(args);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let more = String::from_utf8_lossy(&out.stderr).into_owned();
            (String::from_utf8(out.stdout).unwrap(), more)
        };
        let (first, more) = run(&["export", "--limit", "250"]);
        assert_eq!(ids(&first), (1..=250).collect::<Vec<u64>>());
        assert!(more.contains("more: --cursor 250"), "{more}");
        let (rest, more) = run(&["export", "--cursor", "250", "--limit", "1000"]);
        assert_eq!(ids(&rest), (251..=450).collect::<Vec<u64>>());
        assert!(!more.contains("more:"), "nothing left: {more}");
        // A limit that takes exactly what is left leaves no cursor either.
        let (last, more) = run(&["export", "--cursor", "440", "--limit", "10"]);
        assert_eq!(ids(&last), (441..=450).collect::<Vec<u64>>());
        assert!(!more.contains("more:"), "nothing left: {more}");
        assert_eq!(first + &rest, offline, "the parts make the whole");
        let out = desk.run(&["export", "--cursor", "nonsense"]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert_eq!(desk.run(&["export", "--limit", "0"]).status.code(), Some(2));
    };
    parts(&desk);
    let daemon = desk.start();
    let through = desk.ok(&["export"]);
    parts(&desk);
    daemon.stop();
    assert_eq!(
        ids(&through),
        (1..=450).collect::<Vec<u64>>(),
        "every ticket once, in order"
    );
    assert_eq!(through, offline, "the same lines as without the daemon");
}

#[test]
fn blob_files_of_the_previous_layout_are_packed_and_unreferenced_ones_swept() {
    // A day by default, the first ten minutes after the start: here each second.
    let desk = DeskConfig::new()
        .store("[store]\nsweep_every = \"1s\"\n".into())
        .build();
    let kept_mail = mail(
        "bob@customer.test",
        "support@example.com",
        "Keep me",
        "keep@customer.test",
        "",
        "x",
    );
    desk.ingest(&[&kept_mail]);
    let key = desk.show(1)["messages"][0]["raw_key"].as_str().unwrap().to_string();
    let data = desk.dir.join("data");
    // Files as the previous layout wrote them: one nobody names, two hours
    // old (past the grace period), and one as unnamed but young.
    let stray_key = "ab".repeat(32);
    let stray = legacy_blob_path(&data, &stray_key);
    let young_key = "cd".repeat(32);
    let young = legacy_blob_path(&data, &young_key);
    for (p, bytes) in [(&stray, &b"nobody names me"[..]), (&young, &b"nor me, yet"[..])] {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
    assert!(
        Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(&stray)
            .status()
            .unwrap()
            .success()
    );
    let daemon = desk.start();
    // Taken into packs on open, the files gone; then the sweep.
    wait_until(20, "the sweep", || {
        desk.run(&["raw", &stray_key]).status.code() == Some(66)
    });
    assert!(!stray.exists() && !young.exists(), "the old files are gone");
    let young_back = desk.run(&["raw", &young_key]);
    assert_eq!(
        young_back.stdout, b"nor me, yet",
        "a blob younger than the grace period stays"
    );
    assert_eq!(
        desk.run(&["raw", &key]).stdout,
        kept_mail.as_bytes(),
        "a blob a message names stays"
    );
    daemon.stop();
    assert_eq!(desk.run(&["raw", &stray_key]).status.code(), Some(66));
}

#[test]
fn old_rate_limit_and_one_time_records_are_pruned_and_recent_ones_kept() {
    use postdesk::adapters::store::{Change, Op};
    let desk = DeskConfig::new().build();
    let config = postdesk::adapters::config::load(&desk.config).unwrap();
    let store = postdesk::adapters::store::open(&config.instance.data_dir, &config.store).unwrap();
    let now = jiff::Timestamp::now();
    let ago = |days: i64| now.checked_sub(jiff::SignedDuration::from_hours(24 * days)).unwrap();
    let mut change = Change::default();
    change.push(Op::Ack("bob@customer.test".into(), ago(40)));
    change.push(Op::Ack("bob@customer.test".into(), ago(31)));
    change.push(Op::Ack("bob@customer.test".into(), now));
    change.push(Op::Ack("login-used:n1".into(), ago(35)));
    change.push(Op::Ack("login-used:n2".into(), ago(2)));
    store.commit(change).unwrap();
    let epoch = jiff::Timestamp::UNIX_EPOCH;
    assert_eq!(store.acks_since("bob@customer.test", epoch).unwrap(), 3);
    assert_eq!(store.prune_acks(ago(30)).unwrap(), 3);
    assert_eq!(
        store.acks_since("bob@customer.test", epoch).unwrap(),
        1,
        "the recent one stays"
    );
    assert_eq!(store.acks_since("login-used:n1", epoch).unwrap(), 0);
    assert_eq!(
        store.acks_since("login-used:n2", epoch).unwrap(),
        1,
        "a value spent two days ago stays spent"
    );
    assert_eq!(store.prune_acks(ago(30)).unwrap(), 0, "nothing more to prune");
}

#[test]
fn check_names_a_bad_sweep_interval_with_line_and_column() {
    for (value, expected) in [
        ("0s", "sweep_every: at least \"1s\""),
        ("soon", "bad duration \"soon\""),
    ] {
        let desk = DeskConfig::new()
            .store(format!("[store]\nsweep_every = \"{value}\"\n"))
            .build();
        let out = desk.run(&["check"]);
        assert!(!out.status.success(), "{value} is refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{value}: {err}");
        assert!(
            err.contains("postdesk.toml:"),
            "{value}: names the file and line: {err}"
        );
    }
}

/// A desk unpacked from `tests/fixtures/NAME` (its data, secret and
/// config) into a folder of its own; the fixture's folder and the desk's.
fn unpack(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let dir = temp_dir(name);
    assert!(
        Command::new("tar")
            .arg("xzf")
            .arg(fixture.join("data.tar.gz"))
            .arg("-C")
            .arg(&dir)
            .status()
            .unwrap()
            .success()
    );
    fs::copy(fixture.join("postdesk.toml"), dir.join("postdesk.toml")).unwrap();
    (fixture, dir)
}

/// Runs the binary in `dir` on its `postdesk.toml`; its output, which must be a success.
fn run_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(["-c", "postdesk.toml"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_store_of_layout_4_has_its_messages_and_events_folded_into_chunks_in_place() {
    // Written by the postdesk of 2026-12-06 (layout 4): three tickets, one of
    // 42 messages and 50 events (more than a chunk holds), acknowledgements queued.
    let (fixture, dir) = unpack("store-v4");
    let run = |args: &[&str]| run_in(&dir, args);
    let parse = |s: &str| -> Vec<Value> { s.lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let before = parse(&fs::read_to_string(fixture.join("export.ndjson")).unwrap());
    assert_eq!(before[0]["messages"].as_array().unwrap().len(), 42);
    // `migrate` says what it did, once.
    let migrated: Value = serde_json::from_str(&run(&["migrate", "--json"])).unwrap();
    assert_eq!(
        migrated,
        serde_json::json!({"backend": "sled", "layout": 5, "upgraded_from": 4})
    );
    let again: Value = serde_json::from_str(&run(&["migrate", "--json"])).unwrap();
    assert_eq!(again["upgraded_from"], Value::Null);
    assert!(run(&["migrate"]).contains("at the current layout (5)"));
    // Every ticket, message and event reads back as it was written, in order.
    assert_eq!(parse(&run(&["export"])), before);
    // Carol writes again: her message and its event come after the old ones.
    let reply = mail(
        "Carol <carol@other.example>",
        "support@example.com",
        "Re: Invoice question",
        "carol-1@other.example",
        "In-Reply-To: <carol-0@other.example>\nReferences: <carol-0@other.example>",
        "Any news about the double charge?",
    )
    // Dated now: a backfilled mail older than `backfill_window` would be history, told to nobody.
    .replace(
        "Mon, 23 Nov 2026 09:00:00 +0000",
        &jiff::fmt::rfc2822::to_string(&jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC)).unwrap(),
    );
    fs::write(dir.join("reply.eml"), reply).unwrap();
    run(&["ingest", "--no-send", "reply.eml"]);
    let after = parse(&run(&["export"]));
    assert_eq!(after[..2], before[..2], "the other tickets are untouched");
    let (old, new) = (&before[2], &after[2]);
    let messages = new["messages"].as_array().unwrap();
    let old_messages = old["messages"].as_array().unwrap();
    assert_eq!(messages[..old_messages.len()], old_messages[..]);
    // Hers, then the agent's notification of it.
    assert_eq!(messages.len(), old_messages.len() + 2);
    assert_eq!(messages[old_messages.len()]["message_id"], "carol-1@other.example");
    let events = new["events"].as_array().unwrap();
    let old_events = old["events"].as_array().unwrap();
    assert!(events.len() > old_events.len());
    assert_eq!(events[..old_events.len()], old_events[..]);
    // Bob's long ticket takes a message past its full chunks.
    // (Dated now: after his ticket's last mail, as an older date would start
    // a ticket of its own, and within `backfill_window`, so his agent is told.)
    let bob = format!(
        "From: Bob Example <bob@customer.test>\r\nTo: support@example.com\r\n\
         Subject: Re: My order arrived damaged\r\nMessage-ID: <bob-20@customer.test>\r\n\
         In-Reply-To: <bob-19@customer.test>\r\nReferences: <bob-19@customer.test>\r\n\
         Date: {}\r\n\r\nStill nothing.\r\n",
        jiff::fmt::rfc2822::to_string(&jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC)).unwrap()
    );
    fs::write(dir.join("bob.eml"), bob).unwrap();
    run(&["ingest", "--no-send", "bob.eml"]);
    let last = parse(&run(&["export"]));
    let threads: Vec<usize> = last.iter().map(|t| t["messages"].as_array().unwrap().len()).collect();
    assert_eq!(threads.iter().sum::<usize>(), 42 + 7 + 3 + 2 + 2, "{threads:?}");
    let bobs = last
        .iter()
        .find(|t| {
            t["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["message_id"] == "bob-20@customer.test")
        })
        .expect("bob's mail is stored");
    assert_eq!(bobs["id"], 1);
    let had = before[0]["messages"].as_array().unwrap();
    assert_eq!(bobs["messages"].as_array().unwrap()[..had.len()], had[..]);
    assert_eq!(bobs["messages"][had.len()]["message_id"], "bob-20@customer.test");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_store_of_the_previous_layout_is_upgraded_in_place() {
    let (fixture, dir) = unpack("store-v1");
    let run = |args: &[&str]| run_in(&dir, args);
    assert!(!dir.join("data/blobs").exists(), "the old layout has no blob folder");
    // Every ticket, message and event reads back as it was written.
    let export = run(&["export"]);
    let before = fs::read_to_string(fixture.join("export.ndjson")).unwrap();
    let parse = |s: &str| -> Vec<Value> { s.lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    assert_eq!(parse(&export), parse(&before));
    // Raw mail moved to blobs: each message's and the quarantined mail's.
    let tickets = parse(&export);
    let mut keys: Vec<String> = tickets
        .iter()
        .flat_map(|t| t["messages"].as_array().unwrap().iter())
        .filter_map(|m| m["raw_key"].as_str().map(String::from))
        .collect();
    let q: Vec<Value> = serde_json::from_str(&run(&["quarantine", "--json"])).unwrap();
    assert_eq!(q.len(), 1);
    keys.push(q[0]["raw_key"].as_str().unwrap().to_string());
    assert_eq!(keys.len(), 4, "three stored mails and one quarantined");
    for k in &keys {
        let out = Command::new(BIN)
            .current_dir(&dir)
            .args(["-c", "postdesk.toml", "raw", k])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "blob {k}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stdout.is_empty(), "blob {k} has its bytes");
    }
    // Indexes were built: filters find the old tickets; the queued mail still goes.
    let carol: Vec<Value> =
        serde_json::from_str(&run(&["tickets", "--json", "--requester", "carol@other.example"])).unwrap();
    assert_eq!(carol.len(), 1);
    assert_eq!(carol[0]["id"], 2);
    let new: Vec<Value> = serde_json::from_str(&run(&["tickets", "--json", "--status", "new"])).unwrap();
    assert_eq!(new.len(), 2);
    run(&["tick"]);
    let sent = fs::read_dir(dir.join("outbox")).map(|d| d.count()).unwrap_or(0);
    assert!(
        sent >= 2,
        "the acknowledgements queued before the upgrade are sent: {sent}"
    );
    // A second open finds nothing left to do and changes nothing.
    assert_eq!(parse(&run(&["export"])).len(), 2);
    let _ = fs::remove_dir_all(&dir);
}

/// An mbox of `n` mails, each from its own customer (a new ticket each), written into the desk's folder.
fn backfill_mbox(desk: &Desk, n: usize, tag: &str) -> std::path::PathBuf {
    let mut mbox = String::new();
    for i in 0..n {
        mbox.push_str("From c@customer.test Tue Sep  1 00:00:00 2026\n");
        mbox.push_str(&mail(
            &format!("c{i}@customer.test"),
            "support@example.com",
            &format!("Order {i}"),
            &format!("<{tag}-{i}@customer.test>"),
            "",
            "Where is my order?",
        ));
        mbox.push('\n');
    }
    let path = desk.dir.join(format!("{tag}.mbox"));
    fs::write(&path, mbox).unwrap();
    path
}

/// Mail the sink has taken so far (a count of its files, without reading them).
fn sink_count(smtp: &crate::servers::Smtp) -> usize {
    fs::read_dir(&smtp.dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
        })
        .count()
}

#[test]
fn a_new_customers_acknowledgement_overtakes_a_bulk_backlog() {
    const BACKLOG: usize = 1_500;
    let smtp = crate::servers::Smtp::start();
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .extra("[automation]\nack_limit_per_hour = 100000\n")
        .build();
    // A backfill of an mbox: its acknowledgements wait in the bulk lane.
    let path = backfill_mbox(&desk, BACKLOG, "old");
    desk.ok(&["ingest", "--no-send", path.to_str().unwrap()]);
    let daemon = desk.start();
    daemon.wait(60, "the backlog to start draining", || sink_count(&smtp) > 0);
    let new = desk.dir.join("inbox/new");
    fs::create_dir_all(&new).unwrap();
    fs::write(
        new.join("urgent"),
        mail(
            "new@customer.test",
            "support@example.com",
            "Urgent",
            "<urgent@customer.test>",
            "",
            "My order is lost.",
        ),
    )
    .unwrap();
    // The new ticket's acknowledgement is sent (recorded as mail_sent) ...
    let mut sent_when = None;
    daemon.wait(60, "the new customer's acknowledgement", || {
        let (status, list) = http_raw(
            desk.http_port,
            &format!(
                "GET /api/tickets?requester=new@customer.test HTTP/1.1\nHost: 127.0.0.1:{}",
                desk.http_port
            ),
            b"",
        );
        assert_eq!(status, 200, "{list}");
        let Some(id) = serde_json::from_str::<Value>(&list)
            .ok()
            .and_then(|v| v[0]["id"].as_u64())
        else {
            return false;
        };
        let sent = desk.show(id)["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "mail_sent");
        if sent {
            sent_when = Some(sink_count(&smtp));
        }
        sent
    });
    // ... while the backlog is still going out.
    let at = sent_when.unwrap();
    assert!(
        at < BACKLOG,
        "the acknowledgement went out after {at} of {BACKLOG} backlog mails: it waited for the bulk lane"
    );
    daemon.stop();
    assert_eq!(
        smtp.received_by("new@customer.test").len(),
        1,
        "one acknowledgement at the server"
    );
}

#[test]
fn a_backfill_compacts_the_sled_store_and_order_goes_on_after_it() {
    let desk = DeskConfig::new().sled().build();
    let orders = |prefix: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                mail(
                    &format!("{prefix}{i}@customer.test"),
                    "support@example.com",
                    &format!("{prefix} {i}"),
                    &format!("{prefix}{i}@customer.test"),
                    "",
                    "Where is my order? It has not arrived yet.",
                )
            })
            .collect()
    };
    let first = orders("order", 120);
    // 120 mails into an empty store: it more than doubles, so ingest compacts it.
    let v = desk.ingest(&first.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(v["new_tickets"], 120);
    let (before, after) = (
        v["compacted"]["before"].as_u64().expect("compacted after the backfill"),
        v["compacted"]["after"].as_u64().unwrap(),
    );
    assert!(after > 0 && after < before, "{before} bytes before, {after} after");
    let data = desk.dir.join("data");
    assert!(!data.join("store.compact").exists() && !data.join("store.old").exists());
    assert_eq!(count(&desk), 120);
    // Mails each in a process of its own (sled's id generator jumps at each
    // start), then a small ingest: the store does not double, no compaction.
    for i in 0..2 {
        let m = mail(
            &format!("single{i}@customer.test"),
            "support@example.com",
            "Single",
            &format!("s{i}@customer.test"),
            "",
            "Hello",
        );
        assert_eq!(desk.deliver(&m)["new_tickets"], 1);
    }
    let later = orders("later", 30);
    let v = desk.ingest(&later.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(v["new_tickets"], 30);
    assert!(v.get("compacted").is_none(), "{v}");
    // The command, offline: a fresh sled numbers from 0 again, so the numbers
    // must go on from the old store's for a reply to sort after its ticket's messages.
    let v: Value = serde_json::from_str(&desk.ok(&["compact", "--json"])).unwrap();
    assert!(
        v["before"].as_u64().unwrap() > 0 && v["after"].as_u64().unwrap() > 0,
        "{v}"
    );
    let list: Vec<Value> = serde_json::from_str(&desk.ok(&["tickets", "--json", "--limit", "500"])).unwrap();
    assert_eq!(list.len(), 152);
    let id = list.iter().find(|t| t["subject"] == "later 5").unwrap()["id"]
        .as_u64()
        .unwrap();
    let reply = mail(
        "later5@customer.test",
        "support@example.com",
        "Re: later 5",
        "r5@customer.test",
        "In-Reply-To: <later5@customer.test>",
        "Any news?",
    );
    assert_eq!(desk.deliver(&reply)["appended"], 1);
    let t = desk.show(id);
    let ids: Vec<&str> = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.first(), Some(&"later5@customer.test"), "{ids:?}");
    assert_eq!(ids.last(), Some(&"r5@customer.test"), "{ids:?}");
    let kinds: Vec<&str> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"created"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"message"), "{kinds:?}");
    // While the daemon holds the store, the command says what to do.
    let daemon = desk.start();
    let out = desk.run(&["compact"]);
    assert_eq!(out.status.code(), Some(75));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop it"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.stop();
    // A crash while copying left an unfinished copy: dropped on open.
    fs::create_dir_all(data.join("store.compact")).unwrap();
    fs::write(data.join("store.compact/db"), b"half a copy").unwrap();
    assert_eq!(count(&desk), 152);
    assert!(!data.join("store.compact").exists());
    // A crash between the two renames: the complete copy is swapped in on open.
    fs::rename(data.join("store"), data.join("store.compact")).unwrap();
    fs::create_dir_all(data.join("store.old")).unwrap();
    assert_eq!(desk.show(id)["messages"].as_array().unwrap().len(), ids.len());
    assert!(data.join("store").exists() && !data.join("store.old").exists() && !data.join("store.compact").exists());
}

#[test]
fn the_daemon_compacts_a_sled_store_that_has_doubled_at_its_start() {
    let desk = DeskConfig::new()
        .sled()
        .extra("[store]\ncompact_at_start = false\n")
        .build();
    // Three ingests of 90 mails, each under the 100 after which `ingest`
    // compacts: a store of more than 1 MiB, never compacted.
    for round in 0..3 {
        let mails: Vec<String> = (0..90)
            .map(|i| {
                mail(
                    &format!("c{round}x{i}@customer.test"),
                    "support@example.com",
                    &format!("Order {round}-{i}"),
                    &format!("o{round}x{i}@customer.test"),
                    "",
                    &"My order has not arrived and nobody answers the phone.\n".repeat(20),
                )
            })
            .collect();
        let v = desk.ingest(&mails.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(v["new_tickets"], 90, "{v}");
        assert!(v.get("compacted").is_none(), "{v}");
    }
    let data = desk.dir.join("data");
    let bytes = || -> u64 {
        fs::read_dir(data.join("store"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    };
    assert!(bytes() >= 1 << 20, "{} bytes", bytes());
    // Turned off, the daemon starts on the store as it is.
    let log = desk.start().stop();
    assert!(!log.contains("compacted at start"), "{log}");
    // On (the default), it rewrites the store before it takes mail.
    let text = fs::read_to_string(&desk.config).unwrap();
    fs::write(&desk.config, text.replace("compact_at_start = false\n", "")).unwrap();
    // systemd hears that the start takes longer.
    let sock_path = desk.dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let daemon = desk.start_with_env(&[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        first.contains("EXTEND_TIMEOUT_USEC=30000000") && first.contains("STATUS=looking at the store"),
        "{first}"
    );
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("store compacted at start"))
        .unwrap_or_else(|| panic!("no compaction: {log}"));
    let field = |name: &str| -> u64 {
        line.split(&format!("{name}="))
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    assert!(field("after") < field("before"), "{line}");
    assert!(
        log.find("store compacted at start") < log.find("postdesk running"),
        "before it runs: {log}"
    );
    // /metrics tells the size the next start measures growth against.
    let (status, metrics) = http_raw(desk.http_port, "GET /metrics HTTP/1.1\nHost: 127.0.0.1\n", b"");
    assert_eq!(status, 200, "{metrics}");
    let baseline: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("postdesk_store_compacted_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no baseline: {metrics}"));
    assert!(baseline > 0 && baseline < field("before"), "{baseline}: {line}");
    // It takes mail on the rewritten store.
    let late = mail(
        "late@customer.test",
        "support@example.com",
        "Order late",
        "late@customer.test",
        "",
        "Hello",
    );
    assert_eq!(desk.deliver(&late)["new_tickets"], 1);
    // A second daemon on the held store says so, and warns of no compaction.
    let out = desk.run(&["run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains("in use by another postdesk process") && !err.contains("not compacted"),
        "{err}"
    );
    daemon.stop();
    assert!(!data.join("store.compact").exists() && !data.join("store.old").exists());
    assert_eq!(count(&desk), 271);
    // It has not doubled since: the next start leaves it.
    let log = desk.start().stop();
    assert!(!log.contains("compacted at start"), "{log}");
}

#[test]
fn a_command_on_a_store_another_command_holds_says_so_and_exits_75() {
    // sled's lock is a flock on the store's `db` file; `flock` holds it as an
    // `ingest` would, with no daemon to ask (`--no-fork`: killing it frees the lock).
    let desk = DeskConfig::new().sled().build();
    desk.ingest(&[&mail(
        "bob@customer.test",
        "support@example.com",
        "Hi",
        "hi@customer.test",
        "",
        "x",
    )]);
    let db = desk.dir.join("data/store/db");
    assert!(db.exists(), "{}", db.display());
    let mut holder = Command::new("flock")
        .args(["-x", "--no-fork", db.to_str().unwrap(), "sleep", "30"])
        .spawn()
        .unwrap();
    wait_until(10, "the lock taken", || desk.run(&["tick"]).status.code() == Some(75));
    let out = desk.run(&["tickets"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains("in use by another postdesk process (the daemon, or a command such as ingest)")
            && err.contains("cannot reach the daemon's API"),
        "{err}"
    );
    assert_eq!(count(&desk), 1, "the store is whole once free");
}

/// How many tickets the desk lists.
fn count(desk: &Desk) -> usize {
    let list: Vec<Value> = serde_json::from_str(&desk.ok(&["tickets", "--json", "--limit", "500"])).unwrap();
    list.len()
}

/// Delivers `text` into the Maildir `inbox` as an MTA does: written in
/// `tmp/`, then moved into `new/`.
fn deliver_to(inbox: &Path, name: &str, text: &str) {
    let tmp = inbox.join("tmp").join(name);
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, inbox.join("new").join(name)).unwrap();
}

/// A daemon [`run_limited`] started; killed when dropped (a test that
/// fails leaves no process behind).
struct Limited(std::process::Child);

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `postdesk run` on `desk` (its Maildir's folders made) under the shell's
/// `ulimit` command `limit`, with SIGXFSZ ignored: a write past the limit
/// then fails (EFBIG) as one on a full disk does. The process and its log.
fn run_limited(desk: &Desk, limit: &str) -> (Limited, std::path::PathBuf) {
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(desk.dir.join("inbox").join(sub)).unwrap();
    }
    let log = desk.dir.join("limited.log");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("{limit} && trap '' XFSZ && exec \"$0\" \"$@\""))
        .arg(BIN)
        .arg("-c")
        .arg(&desk.config)
        .arg("run")
        .env("POSTDESK_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (Limited(child), log)
}

/// A store that can write no more stops the daemon (exit 75, so that
/// systemd's `Restart=on-failure` starts it again) before it mails anything
/// it could not record; started again with room, it takes every waiting mail
/// once. The full disk here: the daemon may not grow a file past 1 MiB
/// (`ulimit -f`, with SIGXFSZ ignored, so that the write fails as on a full
/// disk); sled's log reaches that after some 60 of these mails, and from its
/// first failed write sled fails every write until it is opened again.
#[test]
fn a_daemon_whose_store_cannot_write_stops_and_its_restart_takes_every_mail_once() {
    const MAILS: usize = 300;
    let desk = DeskConfig::new().sled().build();
    let inbox = desk.dir.join("inbox");
    let (mut limited, log) = run_limited(&desk, "ulimit -f 2048");
    for i in 0..MAILS {
        let text = mail(
            &format!("c{i}@customer.test"),
            "support@example.com",
            &format!("Order {i} is late"),
            &format!("order{i}@customer.test"),
            "",
            "Hello, my order has not arrived yet. Could you look into it, please?",
        );
        deliver_to(&inbox, &format!("{i}.mail"), &text);
        if i % 20 == 19 {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = limited.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the daemon did not stop when its store could not write:\n{}",
            fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(75), "{text}");
    assert!(text.contains("a write to the store failed"), "{text}");
    let waiting = || fs::read_dir(inbox.join("new")).unwrap().count();
    assert!(waiting() > 0, "the limit came after every mail: {text}");
    let acknowledgements = || -> Vec<String> {
        desk.sent()
            .iter()
            .map(|m| header(m, "To").unwrap().to_string())
            .filter(|to| to.contains("@customer.test"))
            .collect()
    };
    let before = acknowledgements().len();
    // Room again: the restart opens the store from its log and goes on.
    let daemon = desk.start();
    daemon.wait(90, "every mail taken and acknowledged", || {
        waiting() == 0 && acknowledgements().len() >= MAILS
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let restarted = daemon.stop();
    // Each acknowledgement went out once in each run (a file per Message-ID
    // would hide the same one sent again, the logs do not). As after a
    // crash, one sent as the store failed under it (its record refused, or
    // its page's flush) goes out once more after the restart: a page at most.
    let acked = |log: &str| -> Vec<u64> {
        log.lines()
            .filter(|l| l.contains("purpose=acknowledgement"))
            .filter_map(|l| l.split("ticket=").nth(1)?.split(' ').next()?.parse().ok())
            .collect()
    };
    let (first, second) = (acked(&text), acked(&restarted));
    for run in [&first, &second] {
        let mut once = run.clone();
        once.sort_unstable();
        once.dedup();
        assert_eq!(once.len(), run.len(), "sent twice in one run:\n{text}\n{restarted}");
    }
    let again = second.iter().filter(|t| first.contains(t)).count();
    assert!(again <= 32, "{again} sent again after the restart");
    assert_eq!(first.len() + second.len(), MAILS + again);
    let mut to = acknowledgements();
    to.sort();
    let mut once = to.clone();
    once.dedup();
    assert_eq!(
        to.len(),
        once.len(),
        "{} acknowledgements sent twice",
        to.len() - once.len()
    );
    assert_eq!(once.len(), MAILS, "{before} acknowledged before the store failed");
    let tickets: Vec<Value> = serde_json::from_str(&desk.ok(&["tickets", "--json", "--limit", "1000"])).unwrap();
    assert_eq!(tickets.len(), MAILS);
}

/// A mail of about 100 KB: a line of text and an attachment of base64 that
/// does not compress (the blob store keeps it as it is).
fn heavy_mail(i: usize) -> String {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut attachment = String::new();
    for _ in 0..1300 {
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            attachment.push(alphabet[(x % 64) as usize] as char);
        }
        attachment.push_str("\r\n");
    }
    format!(
        "From: c{i}@customer.test\r\nTo: support@example.com\r\nSubject: Scan {i}\r\nMessage-ID: <scan{i}@customer.test>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nThe scan you asked for is attached.\r\n--b\r\nContent-Type: application/octet-stream; name=\"scan{i}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}--b--\r\n"
    )
}

/// The blob packs cannot grow (a full disk: here a file-size limit of
/// 1 MiB on the daemon, which mail of 100 KB reaches first in the packs):
/// the mail waits in `new/`, the daemon runs on and tries again less and
/// less often; once the packs can grow again it takes every mail, and each
/// one's raw mail reads back whole, the record a write cut short left in a
/// pack notwithstanding.
#[test]
fn mail_waits_while_the_blob_packs_cannot_grow_and_is_taken_whole_after() {
    const MAILS: usize = 20;
    let desk = DeskConfig::new().sled().build();
    let inbox = desk.dir.join("inbox");
    // The soft limit only: lifting it again needs no privilege.
    let (mut daemon, log) = run_limited(&desk, "ulimit -S -f 2048");
    let text = || fs::read_to_string(&log).unwrap_or_default();
    wait_until(20, "the daemon to run", || text().contains("postdesk running"));
    for i in 0..MAILS {
        deliver_to(&inbox, &format!("{i}.mail"), &heavy_mail(i));
    }
    wait_until(30, "a pack write to fail", || text().contains("blob store error"));
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "the daemon runs on:\n{}",
        text()
    );
    let waiting = || fs::read_dir(inbox.join("new")).unwrap().count();
    assert!(waiting() > 0, "{}", text());
    // Failed scans back off (0.5, 1, 2, 4 s…) and are logged at the 1st, 2nd, 4th…:
    // two or three lines in these 4 s, not one each half second.
    let failed = text().matches("maildir scan failed").count();
    assert!((1..=3).contains(&failed), "{failed} lines:\n{}", text());
    let lifted = Command::new("prlimit")
        .arg("--pid")
        .arg(daemon.0.id().to_string())
        .arg("--fsize=unlimited:")
        .status()
        .expect("prlimit (util-linux)");
    assert!(lifted.success());
    wait_until(60, "every mail taken", || waiting() == 0);
    Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "{}", text());
    assert!(text().contains("maildir scan works again"), "{}", text());
    let tickets: Vec<Value> = serde_json::from_str(&desk.ok(&["tickets", "--json", "--limit", "100"])).unwrap();
    assert_eq!(tickets.len(), MAILS);
    for ticket in &tickets {
        let t = desk.show(ticket["id"].as_u64().unwrap());
        let key = t["messages"][0]["raw_key"].as_str().unwrap().to_string();
        let out = desk.run(&["raw", &key]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let subject = t["subject"].as_str().unwrap().to_string();
        let n: usize = subject.trim_start_matches("Scan ").parse().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), heavy_mail(n), "{subject}");
    }
}

/// The tickets `export` writes, by number.
fn exported(desk: &Desk) -> std::collections::BTreeMap<u64, Value> {
    desk.ok(&["export"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|t| (t["id"].as_u64().unwrap(), t))
        .collect()
}

/// The Message-IDs of a ticket's messages, in order.
fn message_ids(ticket: &Value) -> Vec<String> {
    ticket["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_backup_taken_while_mail_arrives_is_a_whole_desk_to_restore() {
    const MAILS: usize = 150;
    let desk = DeskConfig::new().sled().build();
    let inbox = desk.dir.join("inbox");
    for folder in ["tmp", "new", "cur"] {
        fs::create_dir_all(inbox.join(folder)).unwrap();
    }
    let daemon = desk.start();
    // Mail arrives while two backups are made; every third mail answers the one before it.
    let delivering = std::thread::spawn({
        let inbox = inbox.clone();
        move || {
            for i in 0..MAILS {
                let reply = if i % 3 == 2 {
                    format!("In-Reply-To: <b{}@customer.test>\r\n", i - 1)
                } else {
                    String::new()
                };
                let text = mail(
                    &format!("c{}@customer.test", i - i % 3 / 2),
                    "support@example.com",
                    &format!("Order {i} is late"),
                    &format!("b{i}@customer.test"),
                    &reply,
                    "Hello, my order has not arrived yet. Could you look into it, please?",
                );
                deliver_to(&inbox, &format!("{i}.mail"), &text);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    });
    let mut backups: Vec<Value> = Vec::new();
    daemon.wait(30, "the first mail stored", || {
        fs::read_dir(desk.dir.join("data/blobs")).is_ok_and(|mut d| d.next().is_some())
    });
    for _ in 0..2 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        backups.push(serde_json::from_str(&desk.ok(&["backup", "--json"])).unwrap());
    }
    delivering.join().unwrap();
    let waiting = || fs::read_dir(inbox.join("new")).unwrap().count();
    daemon.wait(60, "every mail taken", || waiting() == 0);
    let log = daemon.stop();
    assert!(log.contains("store backed up"), "{log}");
    let whole = exported(&desk);
    let inbound = whole
        .values()
        .flat_map(|t| t["messages"].as_array().unwrap())
        .filter(|m| m["direction"] == "inbound")
        .count();
    assert_eq!(inbound, MAILS);

    let mut before = 0;
    for backup in &backups {
        let path = Path::new(backup["path"].as_str().unwrap());
        assert!(path.starts_with(desk.dir.join("data/backups")), "{backup}");
        assert!(backup["store_bytes"].as_u64().unwrap() > 0 && backup["blob_bytes"].as_u64().unwrap() > 0);
        // Restored: a new desk whose data_dir holds the backup's two folders.
        let restored = DeskConfig::new().sled().build();
        fs::create_dir_all(restored.dir.join("data")).unwrap();
        let copied = Command::new("cp")
            .arg("-a")
            .arg(path.join("store"))
            .arg(path.join("blobs"))
            .arg(restored.dir.join("data"))
            .status()
            .unwrap();
        assert!(copied.success());
        let tickets = exported(&restored);
        // The desk at one moment: each ticket's messages those the desk's
        // ticket had then (the first ones of its messages now), the backups in order.
        assert!(tickets.len() >= before, "{} tickets after {before}", tickets.len());
        before = tickets.len();
        assert_eq!(
            tickets.keys().copied().collect::<Vec<_>>(),
            (1..=tickets.len() as u64).collect::<Vec<_>>(),
            "tickets 1 to N"
        );
        for (id, t) in &tickets {
            let now = message_ids(&whole[id]);
            let then = message_ids(t);
            assert!(
                !then.is_empty() && now.starts_with(&then),
                "ticket {id}: {then:?} then, {now:?} now"
            );
            // Its raw mail is there, byte for byte.
            for key in t["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|m| m["raw_key"].as_str())
            {
                let raw = restored.run(&["raw", key]);
                assert!(
                    raw.status.success(),
                    "raw {key}: {}",
                    String::from_utf8_lossy(&raw.stderr)
                );
                assert!(raw.stdout == desk.run(&["raw", key]).stdout, "raw {key} differs");
            }
        }
        // Its indexes and counters agree with its tickets.
        let new_ones = tickets.values().filter(|t| t["status"] == "new").count();
        let listed: Vec<Value> =
            serde_json::from_str(&restored.ok(&["tickets", "--status", "new", "--limit", "1000", "--json"])).unwrap();
        assert_eq!(listed.len(), new_ones);
        let daemon = restored.start();
        let (status, metrics) = http_raw(restored.http_port, "GET /metrics HTTP/1.1\nHost: 127.0.0.1\n", b"");
        assert_eq!(status, 200);
        let gauged: u64 = metrics
            .lines()
            .filter(|l| l.starts_with("postdesk_tickets{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(gauged, tickets.len() as u64, "postdesk_tickets gauges");
        // And it goes on: the next mail opens the next number.
        deliver_to(
            &restored.dir.join("inbox"),
            "next.mail",
            &mail(
                "new@customer.test",
                "support@example.com",
                "After the restore",
                "after@customer.test",
                "",
                "Hello",
            ),
        );
        let next = tickets.len() as u64 + 1;
        daemon.wait(20, "the next mail taken", || {
            restored.run(&["show", &next.to_string(), "--json"]).status.success()
        });
        daemon.stop();
        assert_eq!(restored.show(next)["subject"], "After the restore");
    }
    assert!(before > 0);

    // With the daemon stopped, the command makes the backup itself, and
    // drops one a crash left unfinished.
    let unfinished = desk.dir.join("data/backups/.20261101T000000Z.partial");
    fs::create_dir_all(unfinished.join("store")).unwrap();
    let said = desk.ok(&["backup", "--keep", "1"]);
    let made = said
        .strip_prefix("backed up to ")
        .and_then(|s| s.split(": records ").next())
        .unwrap_or_else(|| panic!("{said}"));
    // Keeping one: the two taken while the daemon ran are removed.
    assert_eq!(said.matches("removed the older backup").count(), 2, "{said}");
    let kept: Vec<_> = fs::read_dir(desk.dir.join("data/backups")).unwrap().collect();
    assert_eq!(kept.len(), 1, "{said}");
    assert_eq!(desk.run(&["backup", "--keep", "0"]).status.code(), Some(2));
    assert!(
        Path::new(made).join("store/db").exists() && Path::new(made).join("blobs").is_dir(),
        "{said}"
    );
    let partial = fs::read_dir(desk.dir.join("data/backups"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".partial"))
        .count();
    assert_eq!(partial, 0, "no unfinished copy left");
}

/// SIGTERM while a backup is being copied (mail waits on it) stops the daemon
/// without waiting for the copy: the backup is given up and its partial
/// copy removed, the command asking for it says so and exits 75 (try again),
/// and the store is whole.
#[test]
fn a_stop_during_a_backup_gives_the_backup_up() {
    let desk = DeskConfig::new().sled().build();
    let daemon = desk.start();
    desk.ingest(&[&mail(
        "ann@customer.test",
        "support@example.com",
        "Where is my order?",
        "stop1@customer.test",
        "",
        "It has not arrived.",
    )]);
    // A file of 2 GB (sparse: no room taken) that the backup copies whole,
    // long enough a copy to stop the daemon in the middle of it.
    let filler = fs::File::create(desk.dir.join("data/blobs/filler")).unwrap();
    filler.set_len(2 << 30).unwrap();
    drop(filler);
    let backups = desk.dir.join("data/backups");
    let out = std::thread::scope(|scope| {
        let asking = scope.spawn(|| desk.run(&["backup"]));
        wait_until(60, "the backup's copy begun", || {
            fs::read_dir(&backups).is_ok_and(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            })
        });
        let stopping = std::time::Instant::now();
        let log = daemon.stop();
        assert!(
            stopping.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            stopping.elapsed()
        );
        assert!(!log.contains("store backed up"), "{log}");
        asking.join().unwrap()
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("the daemon is stopping: the backup was given up"),
        "{stderr}"
    );
    // Nothing of it is left, whole or partial.
    let left: Vec<_> = fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    fs::remove_file(desk.dir.join("data/blobs/filler")).unwrap();
    let tickets: Value = serde_json::from_str(&desk.ok(&["tickets", "--json"])).unwrap();
    assert_eq!(tickets.as_array().map(Vec::len), Some(1), "{tickets}");
}

#[test]
fn a_backup_is_asked_for_by_a_token_with_its_scope_in_json_only() {
    let dir = temp_dir("backup-scope");
    let (reader, admin) = (dir.join("reader"), dir.join("admin"));
    fs::write(&reader, "reader-token-1\n").unwrap();
    fs::write(&admin, "admin-token-1\n").unwrap();
    let desk = DeskConfig::new()
        .sled()
        .extra(&format!(
            "[[api_token]]\nname = \"reader\"\ntoken_file = \"{}\"\nscopes = [\"tickets:read\"]\n\n[[api_token]]\nname = \"ops\"\ntoken_file = \"{}\"\nscopes = [\"backup\"]\n",
            reader.display(),
            admin.display()
        ))
        .build();
    let daemon = desk.start();
    let ask = |token: &str, content_type: &str, body: &[u8]| {
        http_raw(
            desk.http_port,
            &format!(
                "POST /api/backup HTTP/1.1\nHost: 127.0.0.1\nAuthorization: Bearer {token}\nContent-Type: {content_type}"
            ),
            body,
        )
    };
    let (status, text) = ask("reader-token-1", "application/json", b"{}");
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("scope backup"), "{text}");
    // A web page can make a browser post a form, never JSON.
    let (status, text) = ask("admin-token-1", "application/x-www-form-urlencoded", b"a=b");
    assert_eq!(status, 415, "{text}");
    let (status, text) = ask("admin-token-1", "application/json", b"{\"to\": \"/etc\"}");
    assert_eq!(status, 400, "{text}");
    for bad in [&b"{\"keep\": 0}"[..], b"{\"keep\": \"x\"}", b"{\"keep\": -1}"] {
        let (status, text) = ask("admin-token-1", "application/json", bad);
        assert_eq!(status, 400, "{text}");
    }
    let made: Vec<Value> = (0..2)
        .map(|_| {
            let (status, text) = ask("admin-token-1", "application/json", b"{}");
            assert_eq!(status, 200, "{text}");
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    let path = |v: &Value| v["path"].as_str().unwrap().to_string();
    assert!(Path::new(&path(&made[0])).join("store").is_dir(), "{}", made[0]);
    assert!(made[0].get("removed").is_none(), "{}", made[0]);
    // Keeping two: the oldest goes, and nothing else in the folder.
    let backups = desk.dir.join("data/backups");
    fs::create_dir_all(backups.join("keep-me")).unwrap();
    let (status, text) = ask("admin-token-1", "application/json", b"{\"keep\": 2}");
    assert_eq!(status, 200, "{text}");
    let newest: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(newest["removed"], serde_json::json!([path(&made[0])]), "{text}");
    let mut left: Vec<String> = fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    left.sort();
    let mut want = vec![
        path(&made[1]),
        path(&newest),
        backups.join("keep-me").display().to_string(),
    ];
    want.sort();
    assert_eq!(left, want);
    daemon.stop();
}

#[test]
fn each_backup_of_a_store_written_meanwhile_is_one_moment_of_it() {
    use crate::postgres::{Rng, agrees_with_a_recount, change_of, random_puts};
    use postdesk::adapters::store::sled::{SledStore, after_lock};
    use postdesk::adapters::store::{Store, StoreSettings};
    use postdesk::core::model::TicketId;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    /// Stops the writer however the backups end (a failed one too).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let dir = temp_dir("backup-moment");
    let store = std::sync::Arc::new(SledStore::open(&dir.join("live"), &StoreSettings::default()).unwrap());
    let (stop, changes) = (AtomicBool::new(false), AtomicU64::new(0));
    let written = std::thread::scope(|scope| {
        // One writer commits changes of tickets, their indexes, counters and loads, without pause.
        let writer = scope.spawn(|| {
            let (mut rng, mut model) = (Rng(0x2545_F491_4F6C_DD1D), std::collections::BTreeMap::new());
            while !stop.load(Ordering::Relaxed) {
                let puts = random_puts(&mut rng);
                store.commit(change_of(&puts, &*store, &mut model)).unwrap();
                changes.fetch_add(1, Ordering::Relaxed);
            }
            model
        });
        let _stop = Stop(&stop);
        for i in 0..8 {
            let seen = changes.load(Ordering::Relaxed);
            while changes.load(Ordering::Relaxed) < seen + 50 {
                std::thread::yield_now();
            }
            let backup = store.backup(&dir.join(format!("backup-{i}"))).unwrap();
            // Its tickets are what its indexes, counters and loads say.
            // (sled's threads may hold the copy's lock a moment after it was written.)
            let copy = after_lock(|| SledStore::open(&backup.path, &StoreSettings::default())).unwrap();
            let model = (1..=24)
                .filter_map(|id| copy.ticket(TicketId(id)).unwrap().map(|t| (id, t)))
                .collect();
            agrees_with_a_recount(&copy, &model, &format!("backup {i}, after {seen} changes or more"));
        }
        drop(_stop);
        writer.join().unwrap()
    });
    assert!(changes.load(Ordering::Relaxed) >= 400);
    // Everything committed before a backup is in it, to the last change.
    let backup = store.backup(&dir.join("backup-last")).unwrap();
    let copy = after_lock(|| SledStore::open(&backup.path, &StoreSettings::default())).unwrap();
    for (id, t) in &written {
        let kept = copy.ticket(TicketId(*id)).unwrap().expect("the ticket");
        assert_eq!(
            serde_json::to_value(&kept).unwrap(),
            serde_json::to_value(t).unwrap(),
            "ticket {id}"
        );
    }
    agrees_with_a_recount(&copy, &written, "the last backup");
}
