//! `ingest` through the whole pipeline with a real SMTP server.

use crate::servers::Smtp;
use crate::support::{DeskConfig, event_kinds, header, mail};

#[test]
fn subject_tag_from_requester_joins_and_from_a_stranger_opens_a_linked_ticket() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new().smtp(smtp.port).build();
    let s = desk.ingest(&[&mail(
        "bob@customer.test",
        "support@example.com",
        "VPN down",
        "v1@customer.test",
        "",
        "help",
    )]);
    assert_eq!(s["new_tickets"], 1);
    // No headers point at the ticket: only the tag in the subject.
    let s = desk.ingest(&[&mail(
        "Bob <BOB@customer.test>",
        "support@example.com",
        "AW: [Support #1] VPN down",
        "v2@customer.test",
        "",
        "still down",
    )]);
    assert_eq!((s["appended"].as_u64(), s["new_tickets"].as_u64()), (Some(1), Some(0)));
    let s = desk.ingest(&[&mail(
        "eve@elsewhere.test",
        "support@example.com",
        "Re: [Support #1] VPN down",
        "v3@elsewhere.test",
        "",
        "me too",
    )]);
    assert_eq!(s["new_tickets"], 1);
    let t2 = desk.show(2);
    assert_eq!(t2["linked"], serde_json::json!([1]));
    assert_eq!(t2["requester"]["email"], "eve@elsewhere.test");
    let t1 = desk.show(1);
    assert!(
        !t1["participants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["email"] == "eve@elsewhere.test"),
        "a stranger never becomes a participant by themselves"
    );
    // Two tickets, two acks; the stranger's ack carries the new ticket's tag.
    let received = smtp.received();
    assert_eq!(received.len(), 2);
    assert_eq!(header(&received[1], "Subject"), Some("[Support #2] VPN down"));
}

#[test]
fn automatic_mail_is_stored_but_never_answered() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new().smtp(smtp.port).build();
    let ooo = mail(
        "bob@customer.test",
        "support@example.com",
        "Automatic reply: Out of office",
        "ooo@customer.test",
        "Auto-Submitted: auto-replied\nX-Auto-Response-Suppress: All",
        "I am away until Monday.",
    );
    let bulk = mail(
        "news@shop.test",
        "support@example.com",
        "Our newsletter",
        "news@shop.test",
        "Precedence: bulk\nList-Unsubscribe: <mailto:u@shop.test>",
        "Sale!",
    );
    let exchange = mail(
        "carol@customer.test",
        "support@example.com",
        "Out of Office",
        "oof@customer.test",
        "X-Autoreply: yes",
        "Away.",
    );
    let s = desk.ingest(&[&ooo, &bulk, &exchange]);
    assert_eq!(s["new_tickets"], 3);
    assert_eq!(s["auto"], 3);
    assert_eq!(smtp.received().len(), 0, "no acknowledgement to automatic mail");
    for id in 1..=3 {
        let t = desk.show(id);
        assert_eq!(t["messages"][0]["kind"], "auto");
        assert!(event_kinds(&t).contains(&"ack_suppressed".to_string()));
    }
}

#[test]
fn a_bounce_is_matched_to_its_ticket_and_never_answered() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new().smtp(smtp.port).build();
    desk.ingest(&[&mail(
        "gone@customer.test",
        "support@example.com",
        "Hello",
        "h1@customer.test",
        "",
        "hi",
    )]);
    let ack = smtp.received().pop().unwrap();
    let ack_id = header(&ack, "Message-ID").unwrap().to_string();
    let dsn = format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.customer.test>\r\nTo: support@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\nDate: Mon, 23 Nov 2026 09:05:00 +0000\r\nMessage-ID: <dsn1@mx.customer.test>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"BB\"\r\n\r\n--BB\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not be delivered.\r\n\r\n--BB\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.customer.test\r\n\r\nFinal-Recipient: rfc822; gone@customer.test\r\nOriginal-Recipient: rfc822;gone@customer.test\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--BB\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: \"Example Support\" <support@example.com>\r\nTo: <gone@customer.test>\r\nSubject: [Support #1] Hello\r\nMessage-ID: {ack_id}\r\n\r\n--BB--\r\n"
    );
    let s = desk.ingest(&[&dsn]);
    assert_eq!(s["bounces"], 1);
    assert_eq!(s["new_tickets"], 0);
    assert_eq!(desk.tickets().len(), 1);
    let t = desk.show(1);
    let bounce: Vec<_> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "bounce")
        .collect();
    assert_eq!(bounce.len(), 1);
    assert_eq!(bounce[0]["recipient"], "gone@customer.test");
    assert_eq!(bounce[0]["status"], "5.1.1");
    assert_eq!(smtp.received().len(), 1, "the bounce is not acknowledged");
    // The address hard-bounced: a new mail from it gets no acknowledgement for a while.
    desk.ingest(&[&mail(
        "gone@customer.test",
        "support@example.com",
        "Again",
        "h2@customer.test",
        "",
        "hi",
    )]);
    assert_eq!(smtp.received().len(), 1);
}

#[test]
fn own_mail_is_dropped_and_acks_are_rate_limited() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .extra("[automation]\nack_limit_per_hour = 2")
        .build();
    let own = mail(
        "support@example.com",
        "support@example.com",
        "loop",
        "own@example.com",
        "",
        "x",
    );
    let s = desk.ingest(&[&own]);
    assert_eq!(s["dropped"], 1);
    assert_eq!(s["new_tickets"], 0);
    let flood: Vec<String> = (0..4)
        .map(|i| {
            mail(
                "flood@customer.test",
                "support@example.com",
                &format!("n{i}"),
                &format!("f{i}@customer.test"),
                "",
                "x",
            )
        })
        .collect();
    let refs: Vec<&str> = flood.iter().map(|s| s.as_str()).collect();
    let s = desk.ingest(&refs);
    assert_eq!(s["new_tickets"], 4);
    assert_eq!(
        smtp.received().len(),
        2,
        "at most 2 acknowledgements per hour to one address"
    );
    // Our acknowledgement coming back through a forwarder that rewrites From: a loop, dropped.
    let ack = smtp.received()[0].clone();
    let loop_value = header(&ack, "X-Postdesk-Loop").unwrap().to_string();
    let came_back = ack.replacen(
        &format!("From: {}", header(&ack, "From").unwrap()),
        "From: forwarder@relay.test",
        1,
    );
    let eml = desk.dir.join("came-back.eml");
    std::fs::write(&eml, &came_back).unwrap();
    let explained = desk.ok(&["explain", eml.to_str().unwrap()]);
    assert!(
        explained.contains("classification: our own mail (carries our X-Postdesk-Loop header)"),
        "{explained}"
    );
    let s = desk.ingest(&[&came_back]);
    assert_eq!(
        (s["new_tickets"].as_u64(), s["appended"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    // The loop header copied into a customer's new mail is just text: the mail is a ticket.
    let copied = mail(
        "someone@relay.test",
        "support@example.com",
        "loop",
        "own2@relay.test",
        &format!("X-Postdesk-Loop: {loop_value}"),
        "x",
    );
    let s = desk.ingest(&[&copied]);
    assert_eq!(s["new_tickets"], 1, "{s}");
    // What was dropped is kept, with the reason.
    let q: Vec<serde_json::Value> = serde_json::from_str(&desk.ok(&["quarantine", "--json"])).unwrap();
    let reasons: Vec<&str> = q.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with("dropped: our own mail (from our address"),
        "{reasons:?}"
    );
    assert_eq!(smtp.received().len(), 3, "only the copied-header mail was acknowledged");
}

#[test]
fn mbox_and_maildir_are_ingested_in_date_order_and_dedupe_without_message_id() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new().smtp(smtp.port).build();
    // The reply comes first in the file but is dated later.
    let first = mail(
        "bob@customer.test",
        "support@example.com",
        "Order 66",
        "o1@customer.test",
        "",
        "where is it",
    );
    let reply = mail(
        "bob@customer.test",
        "support@example.com",
        "Re: Order 66",
        "o2@customer.test",
        "In-Reply-To: <o1@customer.test>",
        "hello?",
    )
    .replace("09:00:00", "11:00:00");
    let mbox = format!(
        "From bob@customer.test Mon Nov 23 11:00:00 2026\n{}\nFrom bob@customer.test Mon Nov 23 09:00:00 2026\n{}\n",
        reply.replace("\r\n", "\n"),
        first.replace("\r\n", "\n")
    );
    let path = desk.dir.join("mail.mbox");
    std::fs::write(&path, mbox).unwrap();
    let out = desk.ok(&["ingest", "--json", path.to_str().unwrap()]);
    let s: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (s["read"].as_u64(), s["new_tickets"].as_u64(), s["appended"].as_u64()),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(desk.show(1)["created_at"], "2026-11-23T09:00:00Z");
    // A Maildir with a mail without Message-ID, twice.
    let md = desk.dir.join("md");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    let no_id = mail("x@customer.test", "support@example.com", "no id", "", "", "body");
    std::fs::write(md.join("new/1"), &no_id).unwrap();
    std::fs::write(md.join("cur/2:2,S"), &no_id).unwrap();
    let out = desk.ok(&["ingest", "--json", md.to_str().unwrap()]);
    let s: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (s["new_tickets"].as_u64(), s["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn ingest_from_stdin_goes_through_the_daemon_and_exits_75_when_it_cannot() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .http("token_env = \"POSTDESK_TEST_TOKEN\"")
        .build();
    let pipe = |m: &str, token: &str| {
        let mut child = desk
            .command()
            .env("POSTDESK_TEST_TOKEN", token)
            .args(["ingest", "--json", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), m.as_bytes()).unwrap();
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    };
    let out = pipe(
        &mail(
            "bob@customer.test",
            "support@example.com",
            "piped",
            "p1@customer.test",
            "",
            "x",
        ),
        "t0ken",
    );
    assert!(out.status.success());
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["new_tickets"], 1);
    // With the daemon holding the store, an MTA's pipe hands the mail to the daemon.
    let daemon = desk.start_with_env(&[("POSTDESK_TEST_TOKEN", "t0ken")]);
    let out = pipe(
        &mail(
            "carol@customer.test",
            "support@example.com",
            "piped too",
            "p2@customer.test",
            "",
            "y",
        ),
        "t0ken",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["new_tickets"], 1);
    daemon.wait(20, "the daemon to send the acknowledgement", || {
        smtp.received().len() == 2
    });
    // When the daemon refuses (here: a wrong token), the MTA is told to retry later.
    let out = pipe(
        &mail(
            "dan@customer.test",
            "support@example.com",
            "refused",
            "p3@customer.test",
            "",
            "z",
        ),
        "wrong",
    );
    assert_eq!(out.status.code(), Some(75), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    daemon.stop();
    assert_eq!(desk.tickets().len(), 2);
}

#[test]
fn smtp_starttls_and_implicit_tls_with_auth_and_a_private_ca() {
    let dir = crate::servers::temp_dir("smtp-cert");
    let (cert, key) = crate::servers::make_cert(&dir);
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    for mode in ["starttls", "implicit"] {
        let smtp = Smtp::start_with(&[&format!("--{mode}"), c, k, "--auth", "desk:s3cret"]);
        std::fs::write(dir.join("smtp.pass"), "s3cret\n").unwrap();
        let desk = DeskConfig::new()
            .extra(&format!(
                "[outgoing]\nsmtp = {{ host = \"localhost\", port = {}, tls = \"{mode}\", ca_file = \"{c}\", username = \"desk\", password_file = \"{}\" }}\n",
                smtp.port,
                dir.join("smtp.pass").display()
            ))
            .no_outgoing()
            .build();
        let s = desk.ingest(&[&mail(
            "bob@customer.test",
            "support@example.com",
            "secure",
            "sec@customer.test",
            "",
            "x",
        )]);
        let log = std::fs::read_to_string(desk.dir.join("last-ingest.log")).unwrap_or_default();
        assert_eq!(s["sent"]["sent"], 1, "{mode}: {s}\n{log}");
        assert_eq!(smtp.received().len(), 1, "{mode}");
    }
    // A wrong (rotated) password is the server refusing us, not the recipient:
    // the mail stays queued however many attempts, and goes once the password is right.
    let smtp = Smtp::start_with(&["--starttls", c, k, "--auth", "desk:s3cret"]);
    std::fs::write(dir.join("bad.pass"), "wrong\n").unwrap();
    let desk = DeskConfig::new()
        .extra(&format!(
            "[outgoing]\nsmtp = {{ host = \"localhost\", port = {}, tls = \"starttls\", ca_file = \"{c}\", username = \"desk\", password_file = \"{}\" }}\nmax_attempts = 1\n",
            smtp.port,
            dir.join("bad.pass").display()
        ))
        .no_outgoing()
        .build();
    let s = desk.ingest(&[&mail(
        "bob@customer.test",
        "support@example.com",
        "secure",
        "sec2@customer.test",
        "",
        "x",
    )]);
    assert_eq!(
        (s["sent"]["failed"].as_u64(), s["sent"]["deferred"].as_u64()),
        (Some(0), Some(1)),
        "{s}"
    );
    let log = std::fs::read_to_string(desk.dir.join("last-ingest.log")).unwrap_or_default();
    assert!(log.contains("535"), "the server's refusal is reported: {log}");
    assert!(log.contains("refuses our mail"), "alarmed: {log}");
    // max_attempts = 1, yet later passes still keep it.
    for hours in [1, 2] {
        let now = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(hours)).to_string();
        desk.ok(&["tick", "--now", &now]);
    }
    assert!(!event_kinds(&desk.show(1)).contains(&"mail_failed".to_string()));
    assert!(smtp.received().is_empty());
    std::fs::write(dir.join("bad.pass"), "s3cret\n").unwrap();
    let now = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(3)).to_string();
    desk.ok(&["tick", "--now", &now]);
    assert_eq!(smtp.received().len(), 1, "delivered once the password is right");
    assert!(event_kinds(&desk.show(1)).contains(&"mail_sent".to_string()));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mail_piped_in_by_an_mta_arrives_now_whatever_its_date() {
    let desk = DeskConfig::new().build();
    let backdated = mail(
        "bob@customer.test",
        "support@example.com",
        "old date",
        "pipe-old@customer.test",
        "",
        "x",
    )
    .replace("Mon, 23 Nov 2026 09:00:00 +0000", "Mon, 02 Nov 2026 09:00:00 +0000");
    let mut child = desk
        .command()
        .args(["ingest", "--json", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), backdated.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait_with_output().unwrap().status.success());
    let created: jiff::Timestamp = desk.show(1)["created_at"].as_str().unwrap().parse().unwrap();
    let age = jiff::Timestamp::now().as_second() - created.as_second();
    assert!(
        (0..600).contains(&age),
        "created {created}, {age} s ago: the Date header is not the arrival"
    );
    // A file is a backfill: its Date stands.
    desk.ingest(&[&backdated.replace("pipe-old@", "file-old@")]);
    assert_eq!(desk.show(2)["created_at"], "2026-11-02T09:00:00Z");
}
