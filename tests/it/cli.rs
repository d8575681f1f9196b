//! The command line: config checks, explain, argument errors.

use crate::support::{BIN, DeskConfig, mail};
use std::process::Command;

#[test]
fn shipped_configs_pass_check() {
    for file in ["config/postdesk.example.toml", "config/quickstart.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let out = Command::new(BIN).arg("-c").arg(&path).arg("check").output().unwrap();
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
    }
}

#[test]
fn bad_config_names_file_line_column_and_exits_78() {
    let dir = crate::servers::temp_dir("badcfg");
    let path = dir.join("postdesk.toml");
    std::fs::write(
        &path,
        "[instance]\nname = \"x\"\ndata_dir = \"d\"\nsecret_env = \"S\"\n\n[[mailbox]]\nname = \"a\"\naddress = \"nope\"\nmaildir = { path = \"m\" }\n\n[outgoing]\nfile = { path = \"o\" }\n\n[automation]\nreopen_window = \"soon\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).arg("-c").arg(&path).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    assert!(
        err.contains(&format!("{p}:8:11: mailbox address \"nope\" is not an email address")),
        "{err}"
    );
    assert!(err.contains(&format!("{p}:15:17: bad duration \"soon\"")), "{err}");
    // `run` refuses the same config the same way.
    let out = Command::new(BIN).arg("-c").arg(&path).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    std::fs::write(&path, "[instance]\nname = \"x\"\nbogus = 1\n").unwrap();
    let out = Command::new(BIN).arg("-c").arg(&path).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":3:1: unknown field `bogus`"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_arguments_say_what_was_expected() {
    let desk = DeskConfig::new().build();
    let out = desk.run(&["tick", "--now", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected an RFC 3339 time"));
    let out = desk.run(&["tickets", "--status", "done"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected one of new, open, pending, resolved, closed"));
}

#[test]
fn explain_tells_classification_and_threading_without_storing() {
    let desk = DeskConfig::new().build();
    desk.ingest(&[&mail(
        "bob@customer.test",
        "support@example.com",
        "Hi",
        "e1@customer.test",
        "",
        "x",
    )]);
    let path = desk.dir.join("reply.eml");
    std::fs::write(
        &path,
        mail(
            "bob@customer.test",
            "support@example.com",
            "Re: Hi",
            "e2@customer.test",
            "In-Reply-To: <e1@customer.test>\nAuto-Submitted: auto-replied",
            "x",
        ),
    )
    .unwrap();
    let out = desk.ok(&["explain", path.to_str().unwrap()]);
    assert!(
        out.contains("classification: customer, automatic: Auto-Submitted: auto-replied"),
        "{out}"
    );
    assert!(out.contains("threading:      rule 2: appended to ticket 1"), "{out}");
    assert_eq!(desk.tickets().len(), 1);
    let show = desk.show(1);
    assert_eq!(
        show["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["direction"] == "inbound")
            .count(),
        1
    );
}

#[test]
fn quickstart_daemon_turns_a_maildir_mail_into_a_ticket_and_an_eml_ack() {
    let desk = DeskConfig::new().build();
    let daemon = desk.start();
    let new = desk.dir.join("inbox/new");
    crate::support::wait_until(20, "the maildir to be created", || new.is_dir());
    std::fs::write(
        new.join("1.eml"),
        mail(
            "bob@customer.test",
            "support@example.com",
            "Quick",
            "qs@customer.test",
            "",
            "x",
        ),
    )
    .unwrap();
    crate::support::wait_until(20, "the .eml acknowledgement", || !desk.sent().is_empty());
    daemon.stop();
    assert!(std::fs::read_dir(desk.dir.join("inbox/cur")).unwrap().count() == 1);
    assert_eq!(desk.tickets().len(), 1);
}

/// Writes a mail from `from` into the Maildir `inbox`'s `new/` as if
/// delivered at `delivered` (its Date and the file's modification time).
fn deliver(inbox: &std::path::Path, name: &str, from: &str, id: &str, delivered: std::time::SystemTime) {
    let date = jiff::fmt::rfc2822::to_string(
        &jiff::Timestamp::try_from(delivered)
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC),
    )
    .unwrap();
    let path = inbox.join("new").join(name);
    let text = mail(from, "support@example.com", "Shop is down", id, "", "x")
        .replace("Mon, 23 Nov 2026 09:00:00 +0000", &date);
    std::fs::write(&path, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(delivered)
        .unwrap();
}

fn hours_ago(h: u64) -> std::time::SystemTime {
    std::time::SystemTime::now() - std::time::Duration::from_secs(h * 3600)
}

/// A desk with a one-day backfill window and its Maildir's folders.
fn maildir_desk() -> (crate::support::Desk, std::path::PathBuf) {
    let desk = DeskConfig::new()
        .extra("[automation]\nbackfill_window = \"1d\"\n")
        .build();
    let inbox = desk.dir.join("inbox");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(inbox.join(sub)).unwrap();
    }
    (desk, inbox)
}

#[test]
fn a_maildir_taken_over_makes_its_old_mail_history_and_mail_that_waited_out_a_downtime_is_not() {
    let (desk, inbox) = maildir_desk();
    let in_cur = || std::fs::read_dir(inbox.join("cur")).unwrap().count();
    // postdesk takes over a Maildir it never read: Carol's mail waited two
    // weeks in new/ (history), Erin's two hours (live).
    deliver(
        &inbox,
        "1.carol",
        "carol@customer.test",
        "old@customer.test",
        hours_ago(14 * 24),
    );
    deliver(
        &inbox,
        "2.erin",
        "erin@customer.test",
        "recent@customer.test",
        hours_ago(2),
    );
    let daemon = desk.start();
    crate::support::wait_until(20, "both files moved to cur/", || in_cur() == 2);
    crate::support::wait_until(20, "Erin's acknowledgement", || !desk.sent().is_empty());
    daemon.stop();
    // Dave's waited three days in new/ while postdesk was down: it is live.
    deliver(
        &inbox,
        "3.dave",
        "dave@customer.test",
        "new@customer.test",
        hours_ago(3 * 24),
    );
    let daemon = desk.start();
    crate::support::wait_until(20, "Dave's file moved to cur/", || in_cur() == 3);
    crate::support::wait_until(20, "Dave's acknowledgement", || desk.sent().len() == 2);
    daemon.stop();
    let mut to: Vec<String> = desk
        .sent()
        .iter()
        .map(|m| crate::support::header(m, "To").unwrap().to_string())
        .collect();
    to.sort();
    assert_eq!(to, ["<dave@customer.test>", "<erin@customer.test>"]);
    let requester = |n: u64| desk.show(n)["requester"]["email"].as_str().unwrap().to_string();
    assert_eq!(
        (requester(1), desk.show(1)["status"].clone()),
        ("carol@customer.test".to_string(), serde_json::json!("closed"))
    );
    assert_eq!(
        (requester(2), desk.show(2)["status"].clone()),
        ("erin@customer.test".to_string(), serde_json::json!("new"))
    );
    assert_eq!(
        (requester(3), desk.show(3)["status"].clone()),
        ("dave@customer.test".to_string(), serde_json::json!("new"))
    );
}

/// A desk whose daemon read its Maildir before takeovers were stored (a
/// source key of the Maildir in the store, no position) is not taken over:
/// mail that waited out the downtime of the upgrade is live.
#[test]
fn a_maildir_read_before_takeovers_were_stored_is_not_taken_over() {
    let (desk, inbox) = maildir_desk();
    {
        let config = postdesk::adapters::config::load(&desk.config).unwrap();
        let store = postdesk::adapters::store::open(&config.instance.data_dir, &config.store).unwrap();
        let mut change = postdesk::adapters::store::Change::default();
        change.push(postdesk::adapters::store::Op::Source(
            "maildir:support:0.earlier:2,S".into(),
            "0".repeat(64),
        ));
        store.commit(change).unwrap();
        store.flush().unwrap();
    }
    deliver(
        &inbox,
        "1.dave",
        "dave@customer.test",
        "waited@customer.test",
        hours_ago(3 * 24),
    );
    let daemon = desk.start();
    crate::support::wait_until(20, "Dave's acknowledgement", || !desk.sent().is_empty());
    daemon.stop();
    assert_eq!(desk.show(1)["status"], "new");
}

#[test]
fn logs_for_journald_and_for_log_shippers() {
    let desk = DeskConfig::new().build();
    let path = desk.dir.join("m.eml");
    std::fs::write(
        &path,
        mail(
            "bob@customer.test",
            "support@example.com",
            "Logs",
            "log1@customer.test",
            "",
            "secret body words",
        ),
    )
    .unwrap();
    let out = desk
        .command()
        .env("JOURNAL_STREAM", "8:1234")
        .args(["ingest", "--no-send", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().find(|l| l.contains("mail stored")).expect("a log line");
    assert!(
        line.starts_with("<6>postdesk::pipeline: mail stored ticket=1"),
        "{line}"
    );
    assert!(!line.contains('\u{1b}'), "no colours");
    assert!(!err.contains("secret body words"), "no bodies at info level");
    std::fs::write(
        &path,
        mail(
            "bob@customer.test",
            "support@example.com",
            "Logs 2",
            "log2@customer.test",
            "",
            "x",
        ),
    )
    .unwrap();
    let out = desk
        .command()
        .args(["--log-format", "json", "ingest", "--no-send", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_str(err.lines().find(|l| l.contains("mail stored")).unwrap()).unwrap();
    assert_eq!((v["level"].as_str(), v["ticket"].as_u64()), (Some("INFO"), Some(2)));
    let out = desk.run(&["--log-format", "xml", "tickets"]);
    assert_eq!(out.status.code(), Some(2));
}
