//! Attacks replayed against the real binary (ingest, the running daemon, real
//! Dovecot and SMTP where they are involved), each asserting the safe outcome.
//! Named after the attack; numbers are the items of the security review.

use crate::servers::{Dovecot, PASSWORD, Smtp};
use crate::support::{ALICE, BIN, DeskConfig, Imap, body_text, event_kinds, header, http_raw, mail, wait_until};
use postdesk::core::token::Signer;
use serde_json::Value;
use std::process::{Command, Stdio};

/// Alice, plus our MTA's authserv-id trusted.
fn agents() -> String {
    format!("{ALICE}\n[security]\ntrusted_authserv_ids = [\"mx.example.com\"]\n")
}

fn desk(smtp: &Smtp) -> crate::support::Desk {
    DeskConfig::new().smtp(smtp.port).agents(&agents()).build()
}

fn signer(desk: &crate::support::Desk) -> Signer {
    let secret = std::fs::read_to_string(desk.dir.join("secret")).unwrap();
    Signer::new(secret.trim_end().as_bytes())
}

fn emails(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| p["email"].as_str().unwrap().to_string())
        .collect()
}

/// The last notification Alice got.
fn last_notification(smtp: &Smtp) -> String {
    smtp.received_by("alice@example.com").pop().expect("a notification")
}

#[test]
fn attack_1_forged_from_with_cc_never_makes_a_stranger_a_recipient() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    desk.ingest(&[&mail(
        "Carol <carol@customer.test>",
        "support@example.com",
        "Locked out",
        "c1@customer.test",
        "",
        "I cannot log in.",
    )]);
    // Anyone can write Carol's From and our subject tag.
    let forged = mail(
        "Carol <carol@customer.test>",
        "support@example.com",
        "Re: [Support #1] Locked out",
        "forged@evil.test",
        "Cc: mallory@evil.test",
        "Please send the reset code to both of us.",
    );
    let s = desk.ingest(&[&forged]);
    assert_eq!(s["appended"], 1);
    let t = desk.show(1);
    assert_eq!(emails(&t["participants"]), Vec::<String>::new());
    assert_eq!(emails(&t["held_participants"]), vec!["mallory@evil.test"]);
    assert!(event_kinds(&t).contains(&"participants_held".to_string()));
    let n = last_notification(&smtp);
    assert!(
        body_text(&n).contains(
            "Held Cc (unproven mail; not copied on replies until you accept with #cc add ADDRESS): mallory@evil.test"
        ),
        "{}",
        body_text(&n)
    );
    // Alice answers with the code: only Carol gets it.
    desk.ingest(&[&crate::support::agent_reply(
        "alice@example.com",
        &n,
        "Mon, 23 Nov 2026 10:00:00 +0000",
        "a1",
        "Your reset code is 123456.",
    )]);
    assert!(
        smtp.received_by("mallory@evil.test").is_empty(),
        "nothing reaches mallory"
    );
    let to_carol = smtp.received_by("carol@customer.test");
    assert!(body_text(to_carol.last().unwrap()).contains("123456"));
    // Only an agent brings a held address in.
    desk.ingest(&[&crate::support::agent_reply(
        "alice@example.com",
        &n,
        "Mon, 23 Nov 2026 10:05:00 +0000",
        "a2",
        "#cc add mallory@evil.test\n\nCopying your colleague as asked.",
    )]);
    let t = desk.show(1);
    assert_eq!(emails(&t["participants"]), vec!["mallory@evil.test"]);
    assert_eq!(t.get("held_participants"), None, "accepted, no longer held");
    assert_eq!(smtp.received_by("mallory@evil.test").len(), 1);

    // Proven mail (a reply to our acknowledgement's Message-ID) brings Cc in at once,
    // but never more than [limits] max_participants, even with 20,000 of them.
    let ack = smtp.received_by("carol@customer.test")[0].clone();
    let ack_id = header(&ack, "Message-ID").unwrap().to_string();
    let many: Vec<String> = (0..20_000).map(|i| format!("p{i}@crowd.test")).collect();
    let proven = mail(
        "Carol <carol@customer.test>",
        "support@example.com",
        "Re: Locked out",
        "c2@customer.test",
        &format!("In-Reply-To: {ack_id}\nCc: dave@customer.test, {}", many.join(", ")),
        "Adding my team.",
    );
    desk.ingest(&[&proven]);
    let t = desk.show(1);
    let participants = emails(&t["participants"]);
    assert_eq!(participants.len(), 50, "capped");
    assert_eq!(participants[1], "dave@customer.test");
    let refused = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "participants_refused")
        .expect("the refusal is recorded");
    assert_eq!(refused["count"], 20_000 + 1 - 49);
}

#[test]
fn attack_2_a_pre_claimed_message_id_does_not_pull_the_real_mail_into_a_strangers_ticket() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    desk.ingest(&[&mail(
        "mallory@evil.test",
        "support@example.com",
        "Re: my invoice",
        "m1@evil.test",
        "References: <carol-77@customer.test>",
        "see below",
    )]);
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "My invoice is wrong",
        "carol-77@customer.test",
        "",
        "Invoice 4711 charges me twice.",
    )]);
    let tickets = desk.tickets();
    assert_eq!(tickets.len(), 2, "Carol's mail opens her own ticket");
    assert_eq!(desk.show(2)["requester"]["email"], "carol@customer.test");
    assert_eq!(
        smtp.received_by("carol@customer.test").len(),
        1,
        "and Carol is acknowledged"
    );
    assert!(
        !body_text(&smtp.received_by("mallory@evil.test").concat()).contains("4711"),
        "nothing of Carol's reaches mallory"
    );
}

#[test]
fn attack_3_authentication_results_tricks_do_not_make_an_agent() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "Help",
        "h1@customer.test",
        "",
        "help",
    )]);
    let tricks = [
        // A quoted `;` that a naive split reads as a second result.
        "mx.example.com; spf=pass smtp.mailfrom=\"a; dmarc=pass header.from=example.com b\"@evil.test",
        // A result inside a comment.
        "mx.example.com; spf=pass (; dkim=pass header.d=example.com) smtp.mailfrom=evil.test",
        // A public suffix as the signing domain.
        "mx.example.com; dkim=pass header.d=com",
        // Another organisation that ends the same way.
        "mx.example.com; dkim=pass header.d=notexample.com",
    ];
    for (i, ar) in tricks.iter().enumerate() {
        let forged = mail(
            "Alice Jones <alice@example.com>",
            "support@example.com",
            "Re: [Support #1] Help",
            &format!("forged{i}@evil.test"),
            &format!("Authentication-Results: {ar}"),
            "#cc add attacker@evil.test\n\nhello",
        );
        desk.ingest(&[&forged]);
        assert_eq!(emails(&desk.show(1)["participants"]), Vec::<String>::new(), "{ar}");
        // Unproven: a customer's mail, which from a non-participant opens a linked ticket.
        let t = desk.show(i as u64 + 2);
        assert!(event_kinds(&t).contains(&"forged_agent".to_string()), "{ar}");
        assert_eq!(emails(&t["participants"]), Vec::<String>::new(), "{ar}");
    }
    assert!(smtp.received_by("attacker@evil.test").is_empty());
    // The real thing: DKIM pass aligned by organisational domain, per our MTA.
    let real = mail(
        "Alice Jones <alice@example.com>",
        "support@example.com",
        "Re: [Support #1] Help",
        "real@example.com",
        "Authentication-Results: mx.example.com; dkim=pass header.d=mail.example.com",
        "#cc add colleague@customer.test\n\nOn it.",
    );
    desk.ingest(&[&real]);
    assert_eq!(emails(&desk.show(1)["participants"]), vec!["colleague@customer.test"]);
}

#[test]
fn attack_4_an_agent_token_of_one_ticket_does_not_authorise_another_and_the_api_hands_none_out() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    for (i, who) in ["carol", "dave"].iter().enumerate() {
        desk.ingest(&[&mail(
            &format!("{who}@customer.test"),
            "support@example.com",
            &format!("Question {i}"),
            &format!("q{i}@customer.test"),
            "",
            "?",
        )]);
    }
    // Alice's reply address for ticket 2, used on ticket 1 (threaded by ticket 1's id).
    let n2 = last_notification(&smtp);
    let reply_to_2 = header(&n2, "Reply-To").unwrap();
    let ack1 = smtp.received_by("carol@customer.test")[0].clone();
    let forged = format!(
        "From: Alice Jones <alice@example.com>\r\nTo: {reply_to_2}\r\nSubject: Re: x\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <x1@evil.test>\r\nIn-Reply-To: {}\r\n\r\n#cc add attacker@evil.test\r\n\r\nhi\r\n",
        header(&ack1, "Message-ID").unwrap()
    );
    desk.ingest(&[&forged]);
    let t = desk.show(1);
    assert_eq!(emails(&t["participants"]), Vec::<String>::new());
    let forged_event = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "forged_agent")
        .expect("refused as unproven");
    assert!(
        forged_event["reason"]
            .as_str()
            .unwrap()
            .contains("token is for ticket 2, not for ticket 1"),
        "{forged_event}"
    );
    assert!(smtp.received_by("attacker@evil.test").is_empty());

    // The API (daemon running) and show/export hand out no agent-signed token that verifies.
    let signer = signer(&desk);
    let daemon = desk.start();
    let (status, api) = http_raw(
        desk.http_port,
        &format!("GET /api/tickets/2 HTTP/1.1\nHost: 127.0.0.1:{}", desk.http_port),
        b"",
    );
    assert_eq!(status, 200);
    let export = desk.ok(&["export"]);
    daemon.stop();
    let re = regex::Regex::new(r"[A-Za-z0-9.+_-]+@[A-Za-z0-9.-]+").unwrap();
    let mut checked = 0;
    for text in [&api, &export] {
        for m in re.find_iter(text) {
            let s = m.as_str();
            if s.starts_with("pd.") || s.starts_with("support+") {
                checked += 1;
                assert!(
                    !matches!(signer.parse_message_id_full(s), Some((_, Some(_))))
                        && !matches!(signer.parse_plus_address_full(s), Some((_, Some(_)))),
                    "agent token handed out: {s}"
                );
            }
        }
    }
    assert!(checked > 3, "the views still name our mail ({checked})");
    assert!(api.contains(".alicejones.redacted@"), "{api}");
}

#[test]
fn attack_5_a_web_page_cannot_use_the_loopback_api() {
    let desk = DeskConfig::new().build();
    let daemon = desk.start();
    let port = desk.http_port;
    let raw = mail(
        "bob@customer.test",
        "support@example.com",
        "hi",
        "w1@customer.test",
        "",
        "x",
    );
    // A plain form post (a simple content type, no preflight).
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (status, body) = http_raw(
            port,
            &format!("POST /api/ingest HTTP/1.1\nHost: 127.0.0.1:{port}\nContent-Type: {ct}"),
            raw.as_bytes(),
        );
        assert_eq!(status, 415, "{ct}: {body}");
    }
    // A foreign Origin, even with our content type.
    let (status, body) = http_raw(
        port,
        &format!(
            "POST /api/ingest HTTP/1.1\nHost: 127.0.0.1:{port}\nOrigin: http://evil.test\nContent-Type: message/rfc822"
        ),
        raw.as_bytes(),
    );
    assert_eq!(status, 403, "{body}");
    // DNS rebinding: a name of the attacker's that resolves to 127.0.0.1.
    for req in [
        format!("GET /api/tickets HTTP/1.1\nHost: rebind.evil.test:{port}"),
        format!("POST /api/ingest HTTP/1.1\nHost: rebind.evil.test:{port}\nContent-Type: message/rfc822"),
    ] {
        let (status, body) = http_raw(port, &req, raw.as_bytes());
        assert_eq!(status, 421, "{req}: {body}");
    }
    assert_eq!(
        http_raw(port, &format!("GET /api/tickets HTTP/1.1\nHost: localhost:{port}"), b"")
            .1
            .trim(),
        "[]",
        "nothing was stored"
    );
    // The CLI's own requests still work.
    let out = desk.ingest(&[&raw]);
    assert_eq!(out["new_tickets"], 1);
    daemon.stop();
}

#[test]
fn attack_6_a_mail_with_100000_references_costs_no_more_than_one_with_fifty() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    let daemon = desk.start();
    let refs: String = (0..100_000).map(|i| format!(" <r{i}.x@lists.test>")).collect();
    let big = mail(
        "bob@customer.test",
        "support@example.com",
        "many refs",
        "big@customer.test",
        &format!("References:{refs}"),
        "x",
    );
    assert!(big.len() > 2_000_000);
    let s = desk.ingest(&[&big]);
    assert_eq!(s["new_tickets"], 1);
    let (status, _) = http_raw(
        desk.http_port,
        &format!("GET /healthz HTTP/1.1\nHost: 127.0.0.1:{}", desk.http_port),
        b"",
    );
    assert_eq!(status, 200);
    daemon.wait(30, "the acknowledgement", || {
        !smtp.received_by("bob@customer.test").is_empty()
    });
    daemon.stop();
    let ack = smtp.received_by("bob@customer.test").pop().unwrap();
    let head = ack.split("\r\n\r\n").next().unwrap();
    assert!(
        head.len() < 20_000,
        "the acknowledgement's header is {} bytes",
        head.len()
    );
    assert!(head.lines().all(|l| l.len() <= 998));
    let refs_out = ack.matches("@lists.test>").count();
    assert!((2..=51).contains(&refs_out), "{refs_out} references");
    assert!(ack.contains("<r0.x@lists.test>") && ack.contains("<r99999.x@lists.test>"));
}

#[test]
fn attack_7_idle_connections_do_not_exhaust_descriptors() {
    let desk = DeskConfig::new().build();
    std::fs::create_dir_all(desk.dir.join("inbox/new")).unwrap();
    std::fs::create_dir_all(desk.dir.join("inbox/cur")).unwrap();
    let log = desk.dir.join("daemon-fd.log");
    // The daemon under a 256-descriptor limit, as a small systemd unit might be.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" -c \"$1\" run")
        .arg(BIN)
        .arg(&desk.config)
        .env("POSTDESK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(20, "the daemon to start", || read_log().contains("postdesk running"));
    let port = desk.http_port;
    // 300 half-open connections that never send a byte.
    let idle: Vec<std::net::TcpStream> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(idle.len() >= 250, "{} connected", idle.len());
    // Health answers (at once or once the idle ones time out), and mail still flows.
    wait_until(40, "/healthz to answer 200", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok();
            let _ = s.write_all(
                format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").as_bytes(),
            );
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out.starts_with("HTTP/1.1 200")
        })
    });
    std::fs::write(
        desk.dir.join("inbox/new/1.eml"),
        mail(
            "bob@customer.test",
            "support@example.com",
            "still here",
            "fd1@customer.test",
            "",
            "x",
        ),
    )
    .unwrap();
    wait_until(30, "the Maildir mail to be processed", || {
        std::fs::read_dir(desk.dir.join("inbox/cur")).unwrap().count() == 1
    });
    drop(idle);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", read_log());
    let text = read_log();
    assert!(text.len() < 100_000, "the log grew to {} bytes", text.len());
    assert!(!text.contains("cannot read maildir"), "{text}");
}

#[test]
fn attack_8_oversized_mail_is_never_read_whole_and_uploads_are_refused_before_reading() {
    let limit = 1 << 20;
    let dovecot = Dovecot::start(&["support"]);
    let desk = DeskConfig::new()
        .imap("support", "support@example.com", dovecot.port, "support", "")
        .extra(&format!("[limits]\nmax_message_bytes = {limit}"))
        .build();
    let huge = mail(
        "bob@customer.test",
        "support@example.com",
        "huge",
        "huge1@customer.test",
        "",
        &"0123456789abcdef\n".repeat(200_000),
    );
    assert!(huge.len() > 3 * limit);
    // ingest of a file, and of standard input (an MTA's pipe).
    let s = desk.ingest(&[&huge]);
    assert_eq!(s["quarantined"], 1, "{s}");
    let mut child = desk
        .command()
        .args(["ingest", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        huge.replace("huge1@", "huge2@").as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["quarantined"], 1, "{s}");
    // IMAP: only the header is fetched; the mail itself stays on the server.
    let daemon = desk.start();
    let mut imap = Imap::login(dovecot.port, "support");
    imap.append("INBOX", &huge.replace("huge1@", "huge3@"));
    wait_until(30, "the big mail moved to Processed", || imap.count("Processed") == 1);
    // A declared body over the limit is refused before a byte of it is read.
    let (status, body) = http_raw(
        desk.http_port,
        &format!(
            "POST /api/ingest HTTP/1.1\nHost: 127.0.0.1:{}\nContent-Type: message/rfc822",
            desk.http_port
        ),
        &vec![b'x'; 3 * limit],
    );
    assert_eq!(status, 413, "{body}");
    daemon.stop();
    let q: Vec<Value> = serde_json::from_str(&desk.ok(&["quarantine", "--json"])).unwrap();
    assert_eq!(q.len(), 3, "{q:?}");
    for e in &q {
        let reason = e["reason"].as_str().unwrap();
        assert!(reason.contains("over the limit of 1048576"), "{reason}");
        assert!(reason.contains("only its header section is kept here"), "{reason}");
        assert!(e["size"].as_u64().unwrap() < 4096, "only the header is stored: {e}");
    }
    assert!(
        q[2]["reason"]
            .as_str()
            .unwrap()
            .contains("the IMAP server, folder Processed")
    );
}

#[test]
fn attack_9_a_rotated_smtp_password_delays_mail_and_raises_the_alarm_but_drops_nothing() {
    let dir = crate::servers::temp_dir("smtp-rotate");
    let (cert, key) = crate::servers::make_cert(&dir);
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let smtp = Smtp::start_with(&["--starttls", c, k, "--auth", "desk:n3w"]);
    let pass = dir.join("smtp.pass");
    std::fs::write(&pass, "old\n").unwrap();
    let desk = DeskConfig::new()
        .extra(&format!(
            "[outgoing]\nsmtp = {{ host = \"localhost\", port = {}, tls = \"starttls\", ca_file = \"{c}\", username = \"desk\", password_file = \"{}\" }}\nretry_base = \"1s\"\nmax_attempts = 2\n",
            smtp.port,
            pass.display()
        ))
        .no_outgoing()
        .build();
    let daemon = desk.start();
    let s = desk.ingest(&[&mail(
        "bob@customer.test",
        "support@example.com",
        "hi",
        "r1@customer.test",
        "",
        "x",
    )]);
    assert_eq!(s["new_tickets"], 1);
    let get = |path: &str| {
        http_raw(
            desk.http_port,
            &format!("GET {path} HTTP/1.1\nHost: 127.0.0.1:{}", desk.http_port),
            b"",
        )
    };
    daemon.wait(30, "the alarm", || get("/readyz").0 == 503);
    let (_, ready) = get("/readyz");
    assert!(ready.contains("535"), "{ready}");
    assert!(get("/metrics").1.contains("postdesk_outgoing_up 0"));
    // More attempts than max_attempts go by; the mail stays.
    daemon.wait(30, "several attempts", || {
        get("/metrics").1.lines().any(|l| {
            l.starts_with("postdesk_outgoing_errors_total ")
                && !l.ends_with(" 0")
                && !l.ends_with(" 1")
                && !l.ends_with(" 2")
        })
    });
    assert!(daemon.log().contains("refuses our mail"));
    assert!(smtp.received().is_empty());
    // The admin puts in the new password and reloads.
    std::fs::write(&pass, "n3w\n").unwrap();
    Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .unwrap();
    daemon.wait(60, "the delivery", || smtp.received().len() == 1);
    daemon.wait(10, "ready again", || get("/readyz").0 == 200);
    assert!(get("/metrics").1.contains("postdesk_outgoing_up 1"));
    daemon.stop();
    let t = desk.show(1);
    assert!(!event_kinds(&t).contains(&"mail_failed".to_string()));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn attack_10_a_different_mail_reusing_a_message_id_is_stored_not_dropped() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    let first = mail(
        "carol@customer.test",
        "support@example.com",
        "Form",
        "form-1@forms.test",
        "",
        "Carol's request",
    );
    let other = mail(
        "dave@customer.test",
        "support@example.com",
        "Form",
        "form-1@forms.test",
        "",
        "Dave's request",
    );
    // The same mail again through another of our mailboxes: other transport headers only.
    let again = format!("Received: from mx2.example.com\r\nDelivered-To: help@example.com\r\n{first}");
    let s = desk.ingest(&[&first, &other, &again]);
    assert_eq!(
        (s["new_tickets"].as_u64(), s["duplicates"].as_u64()),
        (Some(2), Some(1)),
        "{s}"
    );
    assert_eq!(desk.show(2)["requester"]["email"], "dave@customer.test");
    assert!(event_kinds(&desk.show(2)).contains(&"message_id_conflict".to_string()));
    assert_eq!(smtp.received_by("dave@customer.test").len(), 1, "Dave is acknowledged");
}

#[test]
fn attack_12_a_forged_bounce_suppresses_nobody() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    // The attacker's own mail, then a DSN about it naming Carol.
    desk.ingest(&[&mail(
        "mallory@evil.test",
        "support@example.com",
        "hi",
        "m1@evil.test",
        "",
        "x",
    )]);
    let dsn = |original: &str, rcpt: &str, id: &str| {
        format!(
            "From: MAILER-DAEMON@evil.test\r\nTo: support@example.com\r\nSubject: Undelivered\r\nMessage-ID: <{id}@evil.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; evil.test\r\n\r\nFinal-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{original}>\r\n\r\n--b--\r\n"
        )
    };
    let ack_to_mallory = smtp.received_by("mallory@evil.test")[0].clone();
    let our_id = header(&ack_to_mallory, "Message-ID")
        .unwrap()
        .trim_matches(['<', '>'])
        .to_string();
    // About the attacker's own mail, and about our real mail but to someone it never went to.
    let s = desk.ingest(&[
        &dsn("m1@evil.test", "carol@customer.test", "d1"),
        &dsn(&our_id, "carol@customer.test", "d2"),
    ]);
    assert_eq!(s["bounces"], 2);
    let t = desk.show(1);
    assert_eq!(event_kinds(&t).iter().filter(|k| *k == "bounce_ignored").count(), 2);
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "Real",
        "c1@customer.test",
        "",
        "x",
    )]);
    assert_eq!(
        smtp.received_by("carol@customer.test").len(),
        1,
        "Carol is still acknowledged"
    );
    // A real bounce of our mail to that address still suppresses it.
    desk.ingest(&[&dsn(&our_id, "mallory@evil.test", "d3")]);
    desk.ingest(&[&mail(
        "mallory@evil.test",
        "support@example.com",
        "again",
        "m2@evil.test",
        "",
        "x",
    )]);
    assert_eq!(
        smtp.received_by("mallory@evil.test").len(),
        1,
        "suppressed after a real bounce"
    );
}

#[test]
fn attack_13_backdated_dates_do_not_dodge_the_acknowledgement_limit() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    let mails: Vec<String> = (0..20)
        .map(|i| {
            let day = 1 + i / 24;
            let hour = i % 24;
            mail(
                "flood@customer.test",
                "support@example.com",
                &format!("n{i}"),
                &format!("b{i}@customer.test"),
                "",
                "x",
            )
            .replace(
                "Date: Mon, 23 Nov 2026 09:00:00 +0000",
                &format!("Date: Sun, {day:02} Nov 2026 {hour:02}:00:00 +0000"),
            )
        })
        .collect();
    let refs: Vec<&str> = mails.iter().map(String::as_str).collect();
    let s = desk.ingest(&refs[..10]);
    assert_eq!(s["new_tickets"], 10);
    // And through the running daemon (an MTA's pipe while it holds the store).
    let daemon = desk.start();
    desk.ingest(&refs[10..]);
    daemon.stop();
    assert_eq!(
        smtp.received_by("flood@customer.test").len(),
        5,
        "5 per hour of real time"
    );
}

#[test]
fn attack_14_an_empty_token_never_switches_the_bearer_check_off() {
    let desk = DeskConfig::new().http("token_file = \"TOKEN\"").build();
    let text = std::fs::read_to_string(&desk.config).unwrap();
    let token = desk.dir.join("token");
    let text = text
        .replace("TOKEN", &token.display().to_string())
        .replace("listen = \"127.0.0.1:", "listen = \"0.0.0.0:");
    std::fs::write(&desk.config, text).unwrap();
    for content in [None, Some(""), Some("  \n")] {
        match content {
            Some(c) => std::fs::write(&token, c).unwrap(),
            None => {
                let _ = std::fs::remove_file(&token);
            }
        }
        for cmd in ["check", "run"] {
            let out = desk.run(&[cmd]);
            assert_eq!(out.status.code(), Some(78), "{cmd} with token {content:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("[http] token"), "{cmd}: {err}");
        }
    }
    // token_env set but empty.
    let text = std::fs::read_to_string(&desk.config).unwrap().replace(
        &format!("token_file = \"{}\"", token.display()),
        "token_env = \"POSTDESK_TEST_EMPTY\"",
    );
    std::fs::write(&desk.config, text).unwrap();
    let out = desk
        .command()
        .arg("check")
        .env("POSTDESK_TEST_EMPTY", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
}

#[test]
fn attack_15_forged_agent_mail_floods_nobody() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    let forged: Vec<String> = (0..40)
        .map(|i| {
            mail(
                "Alice Jones <alice@example.com>",
                "support@example.com",
                &format!("urgent {i}"),
                &format!("fa{i}@evil.test"),
                "",
                "#status closed",
            )
        })
        .collect();
    let refs: Vec<&str> = forged.iter().map(String::as_str).collect();
    let s = desk.ingest(&refs);
    assert_eq!(s["new_tickets"], 40, "stored, flagged");
    let to_alice = smtp.received_by("alice@example.com");
    assert_eq!(
        to_alice.len(),
        5,
        "at most ack_limit_per_hour security warnings, no notifications"
    );
    assert!(
        to_alice
            .iter()
            .all(|m| header(m, "Subject").unwrap().contains("Security warning"))
    );
    assert!(event_kinds(&desk.show(40)).contains(&"warning_suppressed".to_string()));
    // Notifications of real customer mail have their own hourly limit.
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(&format!("{}\n[automation]\nnotification_limit_per_hour = 3", agents()))
        .build();
    let before = smtp.received_by("alice@example.com").len();
    let customers: Vec<String> = (0..6)
        .map(|i| {
            mail(
                &format!("c{i}@customer.test"),
                "support@example.com",
                "q",
                &format!("n{i}@customer.test"),
                "",
                "x",
            )
        })
        .collect();
    let refs: Vec<&str> = customers.iter().map(String::as_str).collect();
    desk.ingest(&refs);
    assert_eq!(smtp.received_by("alice@example.com").len() - before, 3);
    assert!(event_kinds(&desk.show(6)).contains(&"notification_suppressed".to_string()));
}

#[test]
fn attack_16_huge_subjects_and_ids_are_folded_and_bounded() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    let subject = format!("{} {}", "long ".repeat(20_000), "z".repeat(5_000));
    let long_id = format!("<{}@customer.test>", "i".repeat(5_000));
    desk.ingest(&[&mail(
        "bob@customer.test",
        "support@example.com",
        &subject,
        "s1@customer.test",
        &format!("In-Reply-To: {long_id}"),
        "x",
    )]);
    for m in smtp.received() {
        let head = m.split("\r\n\r\n").next().unwrap();
        for line in head.split("\r\n") {
            assert!(line.len() <= 998, "a {}-character header line", line.len());
        }
        assert!(!head.contains("iiiiiiiiii"), "a 5 KB id is not echoed");
        let parsed = mail_parser::MessageParser::default().parse(m.as_bytes()).unwrap();
        assert!(parsed.subject().unwrap().starts_with("[Support #1] long long"));
    }
    assert_eq!(smtp.received().len(), 2, "acknowledgement and notification");
}

#[test]
fn attack_17_terminal_escapes_in_mail_never_reach_the_terminal() {
    let desk = DeskConfig::new().build();
    let evil = "Subject: \x1b]0;pwned\x07\x1b[2J\u{9b}31mred \u{202e}txt.exe";
    let m = mail(
        "bob@customer.test",
        "support@example.com",
        "x",
        "e1@customer.test",
        "",
        "body \x1b[5m blink",
    )
    .replace("Subject: x", evil);
    desk.ingest(&[&m]);
    for args in [
        vec!["tickets"],
        vec!["show", "1"],
        vec!["tickets", "--json"],
        vec!["show", "1", "--json"],
        vec!["export"],
    ] {
        let out = desk.run(&args);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n' && c != '\t') || ('\u{202a}'..='\u{202e}').contains(&c)),
            "{args:?} printed a control character: {text:?}"
        );
        assert!(text.contains("pwned"), "{args:?}: the text itself is shown");
    }
    // JSON keeps the data: the escapes decode back to the original.
    let v: Value = serde_json::from_str(&desk.ok(&["show", "1", "--json"])).unwrap();
    assert!(v["subject"].as_str().unwrap().contains('\u{1b}'));
}

#[test]
fn attack_18_trace_logging_never_prints_the_imap_password() {
    let dovecot = Dovecot::start(&["support"]);
    let desk = DeskConfig::new()
        .imap("support", "support@example.com", dovecot.port, "support", "")
        .build();
    let daemon = desk.start_with_env(&[("POSTDESK_LOG", "trace")]);
    let mut imap = Imap::login(dovecot.port, "support");
    imap.append(
        "INBOX",
        &mail(
            "bob@customer.test",
            "support@example.com",
            "hi",
            "t1@customer.test",
            "",
            "x",
        ),
    );
    wait_until(30, "the mail to be processed", || imap.count("Processed") == 1);
    let log = daemon.stop();
    assert!(log.contains("imap connected"), "trace logging is on");
    assert!(log.contains("TRACE") || log.contains("<7>"), "trace lines were written");
    // async-imap writes `LOGIN "support" "secret"` at trace level.
    let quoted = format!("\"{PASSWORD}\"");
    let leaks: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&quoted) || (l.contains("LOGIN") && l.contains(PASSWORD)))
        .collect();
    assert!(leaks.is_empty(), "the IMAP password reached the log: {leaks:#?}");
}

#[test]
fn a_deeply_nested_html_mail_is_processed_not_a_crash() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    let html = format!("<p>Help</p>{}deep{}", "<div>".repeat(100_000), "</div>".repeat(100_000));
    let m = mail(
        "bob@customer.test",
        "support@example.com",
        "nested",
        "n1@customer.test",
        "",
        "x",
    )
    .replace(
        "Content-Type: text/plain; charset=utf-8\r\n\r\nx\r\n",
        &format!("Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"),
    );
    let s = desk.ingest(&[&m]);
    assert_eq!(s["new_tickets"], 1, "{s}");
    let t = desk.show(1);
    let text = t["messages"][0]["text"].as_str().unwrap_or_default().to_string();
    assert!(text.contains("Help") && text.contains("deep"), "{text:?}");
}
