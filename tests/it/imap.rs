//! The daemon against a real Dovecot and a real SMTP server.

use crate::servers::{Dovecot, Smtp};
use crate::support::{DeskConfig, Imap, event_kinds, header, imap_desk, imap_desk_with, mail, wait_until};
use std::time::Instant;

#[test]
fn new_mail_gets_ticket_and_ack_and_reply_by_in_reply_to_joins_it() {
    let (dovecot, smtp, desk) = imap_desk();
    let daemon = desk.start();
    let mut imap = Imap::login(dovecot.port, "support");
    imap.append(
        "INBOX",
        &mail(
            "Bob Customer <bob@customer.test>",
            "support@example.com",
            "Printer on fire",
            "m1@customer.test",
            "Cc: carol@customer.test",
            "Hello, my printer is on fire.",
        ),
    );
    wait_until(20, "the acknowledgement", || smtp.received().len() == 1);
    let ack = &smtp.received()[0];
    assert_eq!(header(ack, "To"), Some("\"Bob Customer\" <bob@customer.test>"));
    assert_eq!(header(ack, "From"), Some("\"Example Support\" <support@example.com>"));
    assert_eq!(header(ack, "Subject"), Some("[Support #1] Printer on fire"));
    assert_eq!(header(ack, "In-Reply-To"), Some("<m1@customer.test>"));
    assert_eq!(header(ack, "Auto-Submitted"), Some("auto-replied"));
    assert_eq!(header(ack, "X-Auto-Response-Suppress"), Some("All"));
    // Our loop header, signed for this mail: copied into another mail it proves nothing.
    assert!(header(ack, "X-Postdesk-Loop").unwrap().starts_with("example.com; "));
    let ack_id = header(ack, "Message-ID").unwrap().to_string();
    assert!(ack_id.starts_with("<pd.1."), "{ack_id}");
    assert!(ack.contains("[ref:1."), "body token missing:\n{ack}");
    let env = &smtp.envelopes()[0];
    assert_eq!(env["mail_from"], "support@example.com");
    assert_eq!(env["rcpt_tos"], serde_json::json!(["bob@customer.test"]));

    // The customer answers the ack; their client sets In-Reply-To only and changes the subject.
    imap.append(
        "INBOX",
        &mail(
            "bob@customer.test",
            "support@example.com",
            "more details",
            "m2@customer.test",
            &format!("In-Reply-To: {ack_id}"),
            "It is still burning.",
        ),
    );
    wait_until(20, "both mails moved to Processed", || {
        imap.count("INBOX") == 0 && imap.count("Processed") == 2
    });
    daemon.stop();
    let tickets = desk.tickets();
    assert_eq!(tickets.len(), 1);
    let t = desk.show(1);
    let inbound: Vec<_> = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "inbound")
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(inbound, vec!["m1@customer.test", "m2@customer.test"]);
    // Bob's first mail is unproven (no DKIM result from a trusted MTA): his Cc waits for an agent.
    assert_eq!(t["participants"], serde_json::json!([]));
    assert_eq!(t["held_participants"][0]["email"], "carol@customer.test");
    assert_eq!(smtp.received().len(), 1, "a reply must not be acknowledged again");
    assert_eq!(event_kinds(&t).iter().filter(|k| *k == "mail_sent").count(), 1);
}

#[test]
fn idle_picks_up_new_mail_without_waiting_for_a_poll() {
    // The desk's poll_interval is an hour: only IDLE can make this fast.
    let (dovecot, smtp, desk) = imap_desk();
    let daemon = desk.start();
    let mut imap = Imap::login(dovecot.port, "support");
    wait_until(20, "the daemon to log in and idle", || {
        daemon.log().contains("imap connected")
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let start = Instant::now();
    imap.append(
        "INBOX",
        &mail(
            "x@customer.test",
            "support@example.com",
            "idle",
            "idle@customer.test",
            "",
            "hi",
        ),
    );
    wait_until(30, "the mail appended during IDLE to be acknowledged", || {
        smtp.received().len() == 1
    });
    let elapsed = start.elapsed();
    daemon.stop();
    // Not a timing target: only proof that no hour-long poll was waited for.
    assert!(elapsed.as_secs() < 30, "took {elapsed:?}");
}

#[test]
fn same_mail_twice_and_in_two_mailboxes_is_stored_once() {
    let dovecot = Dovecot::start(&["support", "billing"]);
    let smtp = Smtp::start();
    let desk = DeskConfig::new()
        .imap("support", "support@example.com", dovecot.port, "support", "")
        .imap("billing", "billing@example.com", dovecot.port, "billing", "")
        .smtp(smtp.port)
        .build();
    let m = mail(
        "bob@customer.test",
        "support@example.com, billing@example.com",
        "Invoice wrong",
        "dup@customer.test",
        "",
        "Please fix.",
    );
    let mut support = Imap::login(dovecot.port, "support");
    let mut billing = Imap::login(dovecot.port, "billing");
    support.append("INBOX", &m);
    support.append("INBOX", &m);
    billing.append("INBOX", &m);
    let daemon = desk.start();
    wait_until(20, "all three copies processed", || {
        support.count("INBOX") == 0 && billing.count("INBOX") == 0
    });
    wait_until(20, "the acknowledgement", || !smtp.received().is_empty());
    daemon.stop();
    assert_eq!(desk.tickets().len(), 1);
    let t = desk.show(1);
    assert_eq!(crate::support::inbound_messages(&t), 1);
    assert_eq!(smtp.received().len(), 1);
    assert_eq!(support.count("Processed"), 2);
    assert_eq!(billing.count("Processed"), 1);
}

#[test]
fn restart_in_the_middle_of_a_batch_loses_and_duplicates_nothing() {
    let dovecot = Dovecot::start(&["support"]);
    let smtp = Smtp::start();
    let desk = DeskConfig::new()
        .imap(
            "support",
            "support@example.com",
            dovecot.port,
            "support",
            ", batch_size = 3",
        )
        .smtp(smtp.port)
        .build();
    let mut imap = Imap::login(dovecot.port, "support");
    for i in 0..40 {
        imap.append(
            "INBOX",
            &mail(
                &format!("c{i}@customer.test"),
                "support@example.com",
                &format!("Question {i}"),
                &format!("q{i}@customer.test"),
                "",
                "?",
            ),
        );
    }
    // A crash (SIGKILL) as soon as the first mails are in, then a clean stop mid-run.
    let daemon = desk.start();
    daemon.wait(60, "the first acknowledgement", || !smtp.received().is_empty());
    daemon.kill();
    let daemon = desk.start();
    daemon.wait(60, "the restarted daemon to connect", || {
        daemon.log().contains("imap connected")
    });
    daemon.wait(60, "more mail processed after the crash", || {
        imap.count("Processed") >= 10
    });
    daemon.stop();
    let daemon = desk.start();
    daemon.wait(60, "the folder to be empty", || imap.count("INBOX") == 0);
    daemon.wait(60, "every acknowledgement", || {
        let mut tickets: Vec<String> = smtp
            .received()
            .iter()
            .filter_map(|m| header(m, "Subject").map(String::from))
            .collect();
        tickets.sort();
        tickets.dedup();
        tickets.len() == 40
    });
    daemon.stop();
    let tickets = desk.tickets();
    assert_eq!(tickets.len(), 40, "every mail is one ticket");
    let mut subjects: Vec<String> = tickets
        .iter()
        .map(|t| t["subject"].as_str().unwrap().to_string())
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 40, "no mail stored twice");
    for t in &tickets {
        let full = desk.show(t["id"].as_u64().unwrap());
        let inbound = full["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["direction"] == "inbound")
            .count();
        assert_eq!(inbound, 1);
    }
    // The sender makes each page of the outbox (32 mails) durable in one
    // flush: a SIGKILL after the SMTP server's 250 and before that flush
    // resends what that page had sent, at most once each; nothing more.
    let acks = smtp.received().len();
    assert!((40..=40 + 32).contains(&acks), "{acks} acknowledgements");
    let mut per_subject: std::collections::HashMap<String, u32> = Default::default();
    for m in smtp.received() {
        *per_subject
            .entry(header(&m, "Subject").unwrap().to_string())
            .or_default() += 1;
    }
    assert!(per_subject.values().all(|n| *n <= 2), "{per_subject:?}");
    assert_eq!(imap.count("Processed"), 40);
}

#[test]
fn smtp_451_twice_then_accepts_delivers_exactly_once_and_550_is_recorded() {
    let (dovecot, smtp, desk) = imap_desk();
    smtp.fail_next("data", &["451 4.3.0 try again later", "451 4.3.0 try again later"]);
    let daemon = desk.start();
    let mut imap = Imap::login(dovecot.port, "support");
    imap.append(
        "INBOX",
        &mail(
            "bob@customer.test",
            "support@example.com",
            "Retry me",
            "r1@customer.test",
            "",
            "x",
        ),
    );
    wait_until(30, "the acknowledgement after two 451s", || smtp.received().len() == 1);
    smtp.fail_next("rcpt", &["550 5.1.1 no such user"]);
    imap.append(
        "INBOX",
        &mail(
            "gone@customer.test",
            "support@example.com",
            "Bounce me",
            "r2@customer.test",
            "",
            "x",
        ),
    );
    wait_until(20, "the second mail processed", || imap.count("Processed") == 2);
    std::thread::sleep(std::time::Duration::from_secs(3));
    daemon.stop();
    assert_eq!(smtp.received().len(), 1, "exactly one delivery");
    let first = desk.show(1);
    let kinds = event_kinds(&first);
    assert_eq!(kinds.iter().filter(|k| *k == "mail_sent").count(), 1, "{kinds:?}");
    let second = desk.show(2);
    let failed: Vec<_> = second["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "mail_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{second}");
    assert!(failed[0]["error"].as_str().unwrap().contains("550"), "{}", failed[0]);
}

#[test]
fn malformed_and_oversized_mail_is_quarantined_and_the_rest_goes_on() {
    let dovecot = Dovecot::start(&["support"]);
    let smtp = Smtp::start();
    let desk = DeskConfig::new()
        .imap("support", "support@example.com", dovecot.port, "support", "")
        .smtp(smtp.port)
        .extra("[limits]\nmax_message_bytes = 100000")
        .build();
    let mut imap = Imap::login(dovecot.port, "support");
    imap.append(
        "INBOX",
        "Subject: no sender at all\r\nX-Junk: 1\r\n\r\nthis mail has no From\r\n",
    );
    let big = format!(
        "From: big@customer.test\r\nSubject: huge\r\n\r\n{}\r\n",
        "x".repeat(150_000)
    );
    imap.append("INBOX", &big);
    imap.append(
        "INBOX",
        &mail(
            "ok@customer.test",
            "support@example.com",
            "Fine",
            "ok@customer.test",
            "",
            "x",
        ),
    );
    let daemon = desk.start();
    wait_until(20, "all processed", || imap.count("INBOX") == 0);
    // The acknowledgement goes out after its mail is processed: stopping
    // earlier could leave it queued (seen once on PostgreSQL).
    wait_until(20, "the good mail's acknowledgement", || !smtp.received().is_empty());
    daemon.stop();
    let q: serde_json::Value = serde_json::from_str(&desk.ok(&["quarantine", "--json"])).unwrap();
    let reasons: Vec<&str> = q
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("no From header")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("over the limit of 100000")),
        "{reasons:?}"
    );
    assert_eq!(desk.tickets().len(), 1);
    assert_eq!(smtp.received().len(), 1);
}

#[test]
fn imaps_and_starttls_with_a_private_ca() {
    let dovecot = Dovecot::start_with(&["support"], true);
    let smtp = Smtp::start();
    let ca = dovecot.cert.clone().unwrap();
    let imaps = dovecot.imaps_port.unwrap();
    let desk = DeskConfig::new()
        .raw_mailbox(&format!(
            "[[mailbox]]\nname = \"tls\"\naddress = \"support@example.com\"\nimap = {{ host = \"localhost\", port = {imaps}, tls = \"implicit\", ca_file = \"{}\", username = \"support\", password_env = \"POSTDESK_TEST_IMAP_PASSWORD\", processed = \"Processed\" }}\n",
            ca.display()
        ))
        .raw_mailbox(&format!(
            "[[mailbox]]\nname = \"starttls\"\naddress = \"help@example.com\"\nimap = {{ host = \"localhost\", port = {}, tls = \"starttls\", ca_file = \"{}\", username = \"support\", password_env = \"POSTDESK_TEST_IMAP_PASSWORD\", folder = \"Second\", processed = \"Processed\" }}\n",
            dovecot.port,
            ca.display()
        ))
        .smtp(smtp.port)
        .build();
    let mut imap = Imap::login(dovecot.port, "support");
    imap.cmd("CREATE Second");
    imap.append(
        "INBOX",
        &mail(
            "a@customer.test",
            "support@example.com",
            "over tls",
            "tls1@customer.test",
            "",
            "x",
        ),
    );
    imap.append(
        "Second",
        &mail(
            "b@customer.test",
            "help@example.com",
            "over starttls",
            "tls2@customer.test",
            "",
            "x",
        ),
    );
    let daemon = desk.start();
    wait_until(20, "both mails over TLS", || imap.count("Processed") == 2);
    daemon.stop();
    assert_eq!(desk.tickets().len(), 2);
}

#[test]
fn uidvalidity_change_rereads_the_folder_and_dedupe_keeps_one_copy() {
    let dovecot = Dovecot::start(&["support"]);
    let smtp = Smtp::start();
    let desk = DeskConfig::new()
        .imap(
            "support",
            "support@example.com",
            dovecot.port,
            "support",
            ", folder = \"Support\"",
        )
        .smtp(smtp.port)
        .build();
    let mut imap = Imap::login(dovecot.port, "support");
    imap.cmd("CREATE Support");
    let first = mail(
        "bob@customer.test",
        "support@example.com",
        "First",
        "uv1@customer.test",
        "",
        "x",
    );
    imap.append("Support", &first);
    let daemon = desk.start();
    daemon.wait(30, "the first mail", || imap.count("Processed") == 1);
    daemon.stop();
    // The folder is recreated: new UIDVALIDITY, UIDs start again, and an old mail comes back.
    imap.cmd("DELETE Support");
    imap.cmd("CREATE Support");
    imap.append("Support", &first);
    imap.append(
        "Support",
        &mail(
            "carol@customer.test",
            "support@example.com",
            "Second",
            "uv2@customer.test",
            "",
            "x",
        ),
    );
    let daemon = desk.start();
    daemon.wait(30, "the recreated folder to be read", || imap.count("Support") == 0);
    // The mail is moved once stored; its acknowledgement goes out a moment later.
    daemon.wait(30, "the second acknowledgement", || smtp.received().len() >= 2);
    let log = daemon.stop();
    assert!(log.contains("UIDVALIDITY changed"), "{log}");
    assert_eq!(desk.tickets().len(), 2);
    assert_eq!(
        smtp.received().len(),
        2,
        "one acknowledgement each, the old mail not twice"
    );
}

#[test]
fn a_dropped_imap_connection_is_reestablished_and_mail_keeps_flowing() {
    let (dovecot, smtp, desk) = imap_desk();
    let daemon = desk.start();
    daemon.wait(20, "the first login", || daemon.log().contains("imap connected"));
    // The server drops every connection of the user (as on a restart or a network cut).
    let out = std::process::Command::new("doveadm")
        .arg("-c")
        .arg(dovecot.dir.join("dovecot.conf"))
        .args(["kick", "support"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "doveadm kick: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.wait(20, "the failure to be noticed", || {
        daemon.log().contains("imap connection failed")
    });
    daemon.wait(30, "a second login", || {
        daemon.log().matches("imap connected").count() >= 2
    });
    let mut imap = Imap::login(dovecot.port, "support");
    imap.append(
        "INBOX",
        &mail(
            "bob@customer.test",
            "support@example.com",
            "after the cut",
            "cut1@customer.test",
            "",
            "x",
        ),
    );
    daemon.wait(30, "the acknowledgement after reconnecting", || {
        smtp.received().len() == 1
    });
    daemon.stop();
}

#[test]
fn a_mail_that_makes_postdesk_panic_is_quarantined_and_the_mailbox_goes_on() {
    let (dovecot, smtp, desk) = imap_desk();
    // A debug-build failpoint stands in for a bug that panics on one mail.
    let daemon = desk.start_with_env(&[("POSTDESK_FAILPOINT_PANIC_ON_SUBJECT", "kaboom")]);
    let mut imap = Imap::login(dovecot.port, "support");
    imap.append(
        "INBOX",
        &mail(
            "x@customer.test",
            "support@example.com",
            "kaboom",
            "boom1@customer.test",
            "",
            "x",
        ),
    );
    imap.append(
        "INBOX",
        &mail(
            "y@customer.test",
            "support@example.com",
            "fine",
            "fine1@customer.test",
            "",
            "y",
        ),
    );
    daemon.wait(30, "both mails handled", || {
        imap.count("INBOX") == 0 && smtp.received().len() == 1
    });
    daemon.stop();
    let q: serde_json::Value = serde_json::from_str(&desk.ok(&["quarantine", "--json"])).unwrap();
    let q = q.as_array().unwrap();
    assert_eq!(q.len(), 1);
    assert!(
        q[0]["reason"]
            .as_str()
            .unwrap()
            .contains("internal error while processing: failpoint"),
        "{q:?}"
    );
    assert_eq!(desk.tickets().len(), 1);
    assert_eq!(
        imap.count("Processed"),
        2,
        "the bad mail is kept in quarantine and moved like the rest"
    );
}

#[test]
fn old_mail_waiting_in_a_mailbox_postdesk_takes_over_is_history() {
    let (dovecot, smtp, desk) = imap_desk_with("", ONE_DAY_WINDOW);
    let mut imap = Imap::login(dovecot.port, "support");
    // Carol's mail was delivered two weeks before postdesk took the mailbox
    // over; Dave's now. Both carry the same Date: the server's time decides.
    imap.append_at(
        "INBOX",
        &written("carol@customer.test", "old@customer.test"),
        Some("23-Nov-2026 09:00:00 +0000"),
    );
    imap.append("INBOX", &written("dave@customer.test", "new@customer.test"));
    let daemon = desk.start();
    wait_until(30, "both mails moved to Processed", || {
        imap.count("INBOX") == 0 && imap.count("Processed") == 2
    });
    wait_until(20, "Dave's acknowledgement", || {
        smtp.received_by("dave@customer.test").len() == 1
    });
    daemon.stop();
    let old = desk.show(1);
    assert_eq!(old["requester"]["email"], "carol@customer.test", "{old}");
    assert_eq!(
        old["created_at"], "2026-11-23T09:00:00Z",
        "arrived when delivered: {old}"
    );
    assert_eq!(old["status"], "closed", "{old}");
    assert!(event_kinds(&old).contains(&"history".to_string()), "{old}");
    let new = desk.show(2);
    assert_eq!(new["requester"]["email"], "dave@customer.test", "{new}");
    assert_eq!(new["status"], "new", "{new}");
    assert!(
        smtp.received_by("carol@customer.test").is_empty(),
        "no acknowledgement of history"
    );
    assert_eq!(smtp.received().len(), 1, "Dave's acknowledgement alone");

    // Once postdesk has read the mailbox, mail that waited out a downtime is
    // live, however old: Erin's, delivered three days before the restart.
    erin_waits_out_a_downtime(&desk, &mut imap, &smtp);
    let erin = desk.show(3);
    assert_eq!(erin["requester"]["email"], "erin@customer.test", "{erin}");
    assert_eq!(erin["status"], "new", "{erin}");
}

/// A takeover stopped half way goes on as one after the restart: the old
/// mail still waiting is history, told to nobody; once the folder has been
/// read to its end, mail that waited out a downtime is live.
#[test]
fn a_restart_in_the_middle_of_a_takeover_keeps_the_rest_of_the_old_mail_history() {
    // One mail a batch: the daemon stops between two of them.
    let (dovecot, smtp, desk) = imap_desk_with(", batch_size = 1", ONE_DAY_WINDOW);
    let mut imap = Imap::login(dovecot.port, "support");
    const OLD: u32 = 30;
    for i in 0..OLD {
        imap.append_at(
            "INBOX",
            &mail(
                &format!("c{i}@customer.test"),
                "support@example.com",
                &format!("Order {i}"),
                &format!("old{i}@customer.test"),
                "",
                "Where is my parcel?",
            ),
            Some("23-Nov-2026 09:00:00 +0000"),
        );
    }
    let daemon = desk.start();
    wait_until(30, "the first old mail processed", || imap.count("Processed") >= 1);
    daemon.stop();
    let left = imap.count("INBOX");
    assert!(
        left > 0,
        "the daemon read all {OLD} mails before it stopped: the test needs the takeover cut short"
    );
    // A customer writes while postdesk is down: delivered now, live.
    imap.append("INBOX", &written("dave@customer.test", "new@customer.test"));
    let daemon = desk.start();
    wait_until(60, "every mail moved to Processed", || {
        imap.count("INBOX") == 0 && imap.count("Processed") == OLD + 1
    });
    wait_until(20, "Dave's acknowledgement", || {
        smtp.received_by("dave@customer.test").len() == 1
    });
    daemon.stop();
    let tickets = desk.tickets();
    assert_eq!(tickets.len(), OLD as usize + 1);
    let closed = tickets.iter().filter(|t| t["status"] == "closed").count();
    assert_eq!(
        closed, OLD as usize,
        "every old mail history, before and after the restart"
    );
    assert_eq!(
        smtp.received().len(),
        1,
        "Dave's acknowledgement alone; {left} old mails were read after the restart"
    );

    // The folder was read to its end: mail delivered three days before the
    // next start waited out a downtime, and is live.
    erin_waits_out_a_downtime(&desk, &mut imap, &smtp);
}

/// An empty mailbox postdesk starts on is taken over at once: mail delivered
/// while postdesk was down afterwards is live, however long it waited.
#[test]
fn mail_that_waited_out_a_downtime_in_a_mailbox_read_empty_is_live() {
    let (dovecot, smtp, desk) = imap_desk_with("", ONE_DAY_WINDOW);
    let mut imap = Imap::login(dovecot.port, "support");
    let daemon = desk.start();
    daemon.wait(20, "the empty folder read to its end", || {
        daemon.log().contains("mailbox taken over")
    });
    daemon.stop();
    erin_waits_out_a_downtime(&desk, &mut imap, &smtp);
    assert_eq!(desk.show(1)["status"], "new");
}

/// Erin's mail, delivered three days before the daemon starts (again), is
/// acknowledged: she waited out a downtime of a mailbox already taken over.
fn erin_waits_out_a_downtime(desk: &crate::support::Desk, imap: &mut Imap, smtp: &Smtp) {
    imap.append_at(
        "INBOX",
        &written("erin@customer.test", "later@customer.test"),
        Some(&delivered_hours_ago(72)),
    );
    let daemon = desk.start();
    wait_until(20, "Erin's acknowledgement", || {
        smtp.received_by("erin@customer.test").len() == 1
    });
    daemon.stop();
}

/// Mail delivered more than a day before a takeover is history.
const ONE_DAY_WINDOW: &str = "[automation]\nbackfill_window = \"1d\"\n";

/// A customer's mail to the support address.
fn written(from: &str, id: &str) -> String {
    mail(from, "support@example.com", "Shop is down", id, "", "Nothing loads.")
}

/// A time `hours` before now as IMAP's APPEND takes a delivery date.
fn delivered_hours_ago(hours: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(hours))
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%d-%b-%Y %H:%M:%S +0000")
        .to_string()
}
