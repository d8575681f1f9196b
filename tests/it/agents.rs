//! Agents working from their mail client, against real servers.

use crate::servers::{Dovecot, Smtp};
use crate::support::{DeskConfig, Imap, body_text, event_kinds, header, mail};
use postdesk::core::outgoing::base64;
use serde_json::Value;

const TWO_AGENTS: &str = r#"
[[agent]]
name = "Alice Jones"
email = "alice@example.com"
queues = ["general"]

[[agent]]
name = "Bob Stone"
emails = ["bob@agents.example.com", "b.stone@agents.example.com"]
queues = ["general"]

[[queue]]
name = "general"
assign = "ASSIGN"

[templates.canned]
thanks = "Thank you for your patience, {{requester.name}}. Ticket #{{ticket.id}} is in good hands."
"#;

fn header_block(mail: &str) -> &str {
    mail.split("\r\n\r\n").next().unwrap_or("")
}

/// A reply the way Gmail builds it: In-Reply-To and References the notification,
/// To its Reply-To, the agent's words, a signature, the quoted notification.
fn gmail_reply(from: &str, notification: &str, words: &str, attachment: Option<(&str, &str)>) -> String {
    let reply_to = header(notification, "Reply-To").unwrap();
    let mid = header(notification, "Message-ID").unwrap();
    let subject = header(notification, "Subject").unwrap();
    let quoted: String = notification
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .take(12)
        .map(|l| format!("> {}\r\n", l.replace("=20", " ").trim_end_matches('=')))
        .collect();
    let text = format!(
        "{words}\r\n\r\n--\r\nAlice Jones | Example Ltd | +49 30 1234567\r\n\r\nOn Mon, Nov 23, 2026 at 10:00 AM Carol via Example Support <\r\n{}> wrote:\r\n\r\n{quoted}",
        reply_to.trim_matches(['<', '>'])
    );
    let head = format!(
        "From: Agent <{from}>\r\nTo: {reply_to}\r\nSubject: Re: {subject}\r\nDate: Mon, 23 Nov 2026 10:30:00 +0000\r\nMessage-ID: <reply-{}@mail.gmail.test>\r\nIn-Reply-To: {mid}\r\nReferences: {mid}\r\nMIME-Version: 1.0\r\n",
        crate::servers::free_port()
    );
    match attachment {
        None => format!("{head}Content-Type: text/plain; charset=UTF-8\r\n\r\n{text}"),
        Some((name, content)) => format!(
            "{head}Content-Type: multipart/mixed; boundary=\"000000000000abcdef\"\r\n\r\n--000000000000abcdef\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\n\r\n{text}\r\n--000000000000abcdef\r\nContent-Type: application/pdf; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--000000000000abcdef--\r\n",
            base64(content.as_bytes())
        ),
    }
}

#[test]
fn agent_reply_is_relayed_from_the_support_address_with_quotes_stripped_and_attachment_kept() {
    let dovecot = Dovecot::start(&["support"]);
    let smtp = Smtp::start();
    let desk = DeskConfig::new()
        .imap("support", "support@example.com", dovecot.port, "support", "")
        .smtp(smtp.port)
        .agents(&TWO_AGENTS.replace("ASSIGN", "round_robin"))
        .extra("[security]\ntrusted_authserv_ids = [\"mx.example.com\"]")
        .build();
    let daemon = desk.start();
    let mut imap = Imap::login(dovecot.port, "support");
    // Our MTA verified Carol's DKIM signature: her Cc is taken at once.
    imap.append(
        "INBOX",
        &mail(
            "Carol Customer <carol@customer.test>",
            "support@example.com",
            "Laptop will not boot",
            "c1@customer.test",
            "Authentication-Results: mx.example.com; dkim=pass header.d=customer.test\nCc: dave@customer.test",
            "It shows a blinking cursor.",
        ),
    );
    daemon.wait(30, "ack and notification", || smtp.received().len() == 2);
    // The notification: to the round-robin assignee only, with the ticket's facts.
    let to_alice = smtp.received_by("alice@example.com");
    assert_eq!(to_alice.len(), 1);
    assert!(
        smtp.received_by("bob@agents.example.com").is_empty(),
        "assigned: only Alice is told"
    );
    let n = &to_alice[0];
    assert_eq!(
        header(n, "From"),
        Some("\"Carol Customer via Example Support\" <support@example.com>")
    );
    assert_eq!(header(n, "Subject"), Some("[Support #1] Laptop will not boot"));
    let reply_to = header(n, "Reply-To").unwrap();
    assert!(reply_to.starts_with("<support+1.alicejones."), "{reply_to}");
    assert!(
        header(n, "Message-ID").unwrap().contains(".alicejones."),
        "signed for Alice"
    );
    assert_eq!(
        header(n, "Auto-Submitted"),
        None,
        "a notification is not an auto-reply to the customer"
    );
    let body = body_text(n);
    for want in [
        "Please type your reply above this line",
        "It shows a blinking cursor.",
        "Assigned to: Alice Jones",
        "Cc: dave@customer.test",
        "#status",
    ] {
        assert!(body.contains(want), "notification lacks {want:?}:\n{body}");
    }

    // Alice answers from Gmail: a command, her words, a signature, the quote, an attachment.
    let reply = gmail_reply(
        "alice@example.com",
        n,
        "#status pending\r\n\r\nHi Carol,\r\n\r\nplease hold the power button for 10 seconds.",
        Some(("steps.pdf", "%PDF-1.4 steps")),
    );
    imap.append("INBOX", &reply);
    daemon.wait(30, "the relay", || smtp.received_by("carol@customer.test").len() == 2);
    let relay = smtp.received_by("carol@customer.test").pop().unwrap();
    let env = smtp.envelopes().pop().unwrap();
    assert_eq!(env["mail_from"], "support@example.com");
    let mut rcpts: Vec<String> = env["rcpt_tos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    rcpts.sort();
    assert_eq!(rcpts, vec!["carol@customer.test", "dave@customer.test"]);
    assert_eq!(
        header(&relay, "From"),
        Some("\"Alice Jones via Example Support\" <support@example.com>")
    );
    assert_eq!(header(&relay, "Subject"), Some("[Support #1] Laptop will not boot"));
    assert_eq!(header(&relay, "In-Reply-To"), Some("<c1@customer.test>"));
    assert!(
        !header_block(&relay).to_ascii_lowercase().contains("alice@example.com"),
        "agent address leaked:\n{}",
        header_block(&relay)
    );
    assert!(
        !header_block(&relay).contains("alicejones"),
        "agent token leaked to the customer"
    );
    let text = body_text(&relay);
    assert!(text.contains("please hold the power button"), "{text}");
    assert!(text.contains("Alice Jones | Example Ltd"), "signature kept");
    assert!(
        !relay.contains("Please type your reply"),
        "quoted notification stripped:\n{relay}"
    );
    assert!(!relay.contains("#status"), "command line removed");
    assert!(!relay.contains("blinking cursor"), "quote stripped");
    assert!(relay.contains("filename=\"steps.pdf\""), "attachment kept");
    assert!(relay.contains(&base64(b"%PDF-1.4 steps")));

    daemon.stop();
    let t = desk.show(1);
    assert_eq!(t["status"], "pending");
    assert_eq!(t["assignee"], "Alice Jones");
    assert!(t["first_response_at"].is_string());
    let kinds = event_kinds(&t);
    for k in ["assigned", "notified", "relayed", "first_response", "status"] {
        assert!(kinds.contains(&k.to_string()), "{k} missing in {kinds:?}");
    }
    let relayed: Vec<&Value> = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "outbound" && m["kind"] == "agent")
        .collect();
    assert_eq!(relayed.len(), 1);
}

/// One desk on ingest with two agents in an unassigned queue.
fn ingest_desk(smtp: &Smtp, extra: &str) -> crate::support::Desk {
    DeskConfig::new()
        .smtp(smtp.port)
        .agents(&TWO_AGENTS.replace("ASSIGN", "none"))
        .extra(extra)
        .build()
}

#[test]
fn note_is_not_relayed_and_reaches_the_other_agents() {
    let smtp = Smtp::start();
    let desk = ingest_desk(&smtp, "");
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "Refund",
        "r1@customer.test",
        "",
        "I want my money back.",
    )]);
    // Unassigned: both agents are notified.
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    assert_eq!(smtp.received_by("bob@agents.example.com").len(), 1);
    let before = smtp.received().len();
    desk.ingest(&[&gmail_reply(
        "alice@example.com",
        &n,
        "#note\r\nChecked: the order was never shipped.",
        None,
    )]);
    assert_eq!(
        smtp.received_by("carol@customer.test").len(),
        1,
        "only the ack; the note is not relayed"
    );
    let new: Vec<String> = smtp.received()[before..].to_vec();
    assert_eq!(new.len(), 1, "one note mail to Bob");
    assert_eq!(header(&new[0], "To"), Some("\"Bob Stone\" <bob@agents.example.com>"));
    assert!(body_text(&new[0]).contains("the order was never shipped"));
    let t = desk.show(1);
    let note = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "note")
        .expect("stored as a note");
    assert_eq!(note["direction"], "inbound");
    assert_eq!(t["status"], "new", "a note is no first response");
    assert!(t["first_response_at"].is_null());
}

#[test]
fn commands_apply_and_unknown_ones_are_answered_to_the_agent_only() {
    let smtp = Smtp::start();
    let desk = ingest_desk(&smtp, "");
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "Slow VPN",
        "v1@customer.test",
        "",
        "VPN is slow.",
    )]);
    let n = smtp.received_by("bob@agents.example.com").pop().unwrap();
    let reply = gmail_reply(
        "b.stone@agents.example.com",
        &n,
        "#take\r\n#priority urgent\r\n#tag vpn network\r\n#type incident\r\n#cc add erin@customer.test\r\n#frobnicate now\r\nHello Carol,\r\n#template thanks\r\nBob",
        None,
    );
    let before = smtp.received().len();
    desk.ingest(&[&reply]);
    let new: Vec<String> = smtp.received()[before..].to_vec();
    let envs: Vec<Value> = smtp.envelopes()[before..].to_vec();
    assert_eq!(new.len(), 2, "the relay and the error report");
    let (relay, error): (Vec<_>, Vec<_>) = new.iter().zip(envs.iter()).partition(|(_, e)| {
        e["rcpt_tos"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "carol@customer.test")
    });
    let (relay, relay_env) = relay[0];
    let (error, error_env) = error[0];
    assert_eq!(
        relay_env["rcpt_tos"],
        serde_json::json!(["carol@customer.test", "erin@customer.test"])
    );
    assert!(
        body_text(relay).contains("Thank you for your patience, carol@customer.test. Ticket #1 is in good hands."),
        "{relay}"
    );
    assert!(!relay.contains("frobnicate"));
    assert_eq!(error_env["rcpt_tos"], serde_json::json!(["bob@agents.example.com"]));
    assert_eq!(header(error, "Auto-Submitted"), Some("auto-replied"));
    assert!(body_text(error).contains("#frobnicate: unknown command"), "{error}");
    let t = desk.show(1);
    assert_eq!(t["assignee"], "Bob Stone");
    assert_eq!(t["priority"], "urgent");
    assert_eq!(t["tags"], serde_json::json!(["vpn", "network"]));
    assert_eq!(t["type"], "incident");
    assert_eq!(t["status"], "open");
    assert!(event_kinds(&t).contains(&"command_refused".to_string()));
    // A reply of commands only relays nothing.
    let n2 = smtp
        .received_by("bob@agents.example.com")
        .into_iter()
        .find(|m| header(m, "Subject").is_some_and(|s| s.starts_with("[Support #1] Slow")))
        .unwrap();
    let before = smtp.received_by("carol@customer.test").len();
    desk.ingest(&[&gmail_reply("bob@agents.example.com", &n2, "#status resolved", None)]);
    assert_eq!(smtp.received_by("carol@customer.test").len(), before);
    assert_eq!(desk.show(1)["status"], "resolved");
}

#[test]
fn forged_agent_from_is_stored_as_customer_mail_and_the_agent_is_told() {
    let smtp = Smtp::start();
    let desk = ingest_desk(&smtp, "[security]\ntrusted_authserv_ids = [\"mx.example.com\"]");
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "Password reset",
        "p1@customer.test",
        "",
        "Please reset.",
    )]);
    let customer_before = smtp.received_by("carol@customer.test").len();
    // No token, and an Authentication-Results header from someone we do not trust.
    let forged = mail(
        "Alice Jones <alice@example.com>",
        "support@example.com",
        "Re: [Support #1] Password reset",
        "forged@evil.test",
        "In-Reply-To: <p1@customer.test>\nAuthentication-Results: evil.test; dkim=pass header.d=example.com; dmarc=pass header.from=example.com",
        "#status closed\n#cc add mallory@evil.test\nYour new password is hunter2",
    );
    let s = desk.ingest(&[&forged]);
    assert_eq!(s["appended"], 1);
    assert_eq!(
        smtp.received_by("carol@customer.test").len(),
        customer_before,
        "nothing relayed"
    );
    assert!(smtp.received_by("mallory@evil.test").is_empty());
    let warning = smtp
        .received_by("alice@example.com")
        .into_iter()
        .find(|m| m.contains("Security warning"))
        .expect("Alice is told");
    assert!(body_text(&warning).contains("untrusted authserv-id"), "{warning}");
    let t = desk.show(1);
    assert_eq!(t["status"], "new", "no command ran");
    assert!(t["participants"].as_array().unwrap().is_empty());
    let m = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["message_id"] == "forged@evil.test")
        .unwrap();
    assert_eq!(m["kind"], "customer");
    assert!(m["flagged"].as_str().unwrap().contains("unproven"));
    assert!(event_kinds(&t).contains(&"forged_agent".to_string()));

    // The same mail with our trusted MTA's DKIM pass is Alice's.
    let vouched = mail(
        "Alice Jones <alice@example.com>",
        "support@example.com",
        "Re: [Support #1] Password reset",
        "vouched@example.com",
        "In-Reply-To: <p1@customer.test>\nAuthentication-Results: mx.example.com; dkim=pass header.d=example.com header.s=sel; spf=pass",
        "Done, check your inbox.",
    );
    desk.ingest(&[&vouched]);
    assert_eq!(
        smtp.received_by("carol@customer.test").len(),
        customer_before + 1,
        "relayed"
    );
    assert_eq!(desk.show(1)["assignee"], "Alice Jones");
}

#[test]
fn round_robin_and_least_open_over_30_tickets_respect_max_open() {
    let smtp = Smtp::start();
    let mut agents = String::new();
    for (queue, prefix) in [("rr", "r"), ("lo", "l")] {
        for i in 1..=3 {
            agents.push_str(&format!(
                "[[agent]]\nname = \"{prefix}{i}\"\nemail = \"{prefix}{i}@agents.example.com\"\nqueues = [\"{queue}\"]\nmax_open = 10\n\n"
            ));
        }
    }
    agents.push_str(
        "[[queue]]\nname = \"rr\"\nassign = \"round_robin\"\n\n[[queue]]\nname = \"lo\"\nassign = \"least_open\"\n",
    );
    let dir = crate::servers::temp_dir("queues");
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .raw_mailbox(&format!("[[mailbox]]\nname = \"rr\"\naddress = \"rr@example.com\"\nqueue = \"rr\"\nmaildir = {{ path = \"{}/rr\" }}\n", dir.display()))
        .raw_mailbox(&format!("[[mailbox]]\nname = \"lo\"\naddress = \"lo@example.com\"\nqueue = \"lo\"\nmaildir = {{ path = \"{}/lo\" }}\n", dir.display()))
        .agents(&agents)
        .build();
    let batch = |queue: &str, from: usize, n: usize| -> Vec<String> {
        (from..from + n)
            .map(|i| {
                mail(
                    &format!("c{i}@customer.test"),
                    &format!("{queue}@example.com"),
                    &format!("{queue} {i}"),
                    &format!("{queue}{i}@customer.test"),
                    "",
                    "x",
                )
            })
            .collect()
    };
    let ingest = |queue: &str, mails: &[String]| {
        let dir = desk.dir.join(format!("in-{queue}-{}", mails.len()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, m) in mails.iter().enumerate() {
            std::fs::write(dir.join(format!("{i:03}.eml")), m).unwrap();
        }
        desk.ok(&["ingest", "--json", "--mailbox", queue, dir.to_str().unwrap()]);
        std::fs::remove_dir_all(dir).unwrap();
    };
    let count = |queue: &str| -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for t in desk.tickets().iter().filter(|t| t["queue"] == queue) {
            *m.entry(t["assignee"].as_str().unwrap_or("-").to_string()).or_insert(0) += 1;
        }
        m
    };
    ingest("rr", &batch("rr", 0, 31));
    let rr = count("rr");
    assert_eq!(rr.get("r1"), Some(&10));
    assert_eq!(rr.get("r2"), Some(&10));
    assert_eq!(rr.get("r3"), Some(&10));
    assert_eq!(rr.get("-"), Some(&1), "the 31st finds everyone at max_open");
    // In turn: ticket 1 → r1, 2 → r2, 3 → r3, 4 → r1.
    let order: Vec<String> = (1..=4)
        .map(|i| desk.show(i)["assignee"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, vec!["r1", "r2", "r3", "r1"]);
    let last = desk.tickets().last().unwrap()["id"].as_u64().unwrap();
    assert!(event_kinds(&desk.show(last)).contains(&"unassigned".to_string()));

    ingest("lo", &batch("lo", 0, 30));
    let lo = count("lo");
    assert_eq!(lo.values().copied().collect::<Vec<_>>(), vec![10, 10, 10], "{lo:?}");
    // l1 resolves 5 of theirs: the next 5 new tickets all go to l1, the least loaded.
    let l1_tickets: Vec<u64> = desk
        .tickets()
        .iter()
        .filter(|t| t["assignee"] == "l1")
        .map(|t| t["id"].as_u64().unwrap())
        .take(5)
        .collect();
    for id in &l1_tickets {
        let n = smtp
            .received_by("l1@agents.example.com")
            .into_iter()
            .find(|m| header(m, "Subject").is_some_and(|s| s.starts_with(&format!("[Support #{id}]"))))
            .unwrap();
        desk.ingest(&[&gmail_reply(
            "l1@agents.example.com",
            &n,
            "#status resolved\r\nFixed.",
            None,
        )]);
    }
    ingest("lo", &batch("lo", 100, 5));
    let lo = count("lo");
    assert_eq!(lo.get("l1"), Some(&15), "{lo:?}");
    assert_eq!(lo.get("l2"), Some(&10));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn html_only_reply_collision_warning_and_later_customer_mail_notifies_the_assignee() {
    let smtp = Smtp::start();
    // The replies are dated 10:10 and 10:30: within an hour of each other.
    let desk = ingest_desk(&smtp, "[automation]\ncollision_window = \"1h\"");
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "Printer jam",
        "j1@customer.test",
        "",
        "Paper is stuck.",
    )]);
    let to_alice = smtp.received_by("alice@example.com").pop().unwrap();
    let to_bob = smtp.received_by("bob@agents.example.com").pop().unwrap();
    // Alice answers from a client that sends HTML only, with Gmail's quote markup.
    let reply_to = header(&to_alice, "Reply-To").unwrap();
    let html = format!(
        "From: alice@example.com\r\nTo: {reply_to}\r\nSubject: Re: [Support #1] Printer jam\r\nDate: Mon, 23 Nov 2026 10:10:00 +0000\r\nMessage-ID: <html1@mail.test>\r\nIn-Reply-To: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=UTF-8\r\n\r\n<div dir=\"ltr\">Open the <b>rear door</b> and pull gently.</div><br><div class=\"gmail_quote\"><div dir=\"ltr\" class=\"gmail_attr\">On Mon, Nov 23, 2026 at 10:00 AM Carol via Example Support &lt;{}&gt; wrote:<br></div><blockquote class=\"gmail_quote\">##- Please type your reply above this line -##<br>Paper is stuck.</blockquote></div>\r\n",
        header(&to_alice, "Message-ID").unwrap(),
        reply_to.trim_matches(['<', '>'])
    );
    desk.ingest(&[&html]);
    let relay = smtp.received_by("carol@customer.test").pop().unwrap();
    let text = body_text(&relay);
    assert!(text.contains("Open the rear door and pull gently."), "{text}");
    assert!(!text.contains("Paper is stuck"), "quote stripped from HTML: {text}");
    // Bob answers later: his reply goes out too, and he is told Alice was first.
    let before_bob = smtp.received_by("bob@agents.example.com").len();
    desk.ingest(&[&gmail_reply(
        "bob@agents.example.com",
        &to_bob,
        "Try turning it off and on.",
        None,
    )]);
    assert_eq!(smtp.received_by("carol@customer.test").len(), 3, "ack and two relays");
    let bob_new: Vec<String> = smtp.received_by("bob@agents.example.com")[before_bob..].to_vec();
    assert!(
        bob_new
            .iter()
            .any(|m| body_text(m).contains("Alice Jones replied to the customer")),
        "{bob_new:?}"
    );
    // Alice took the ticket by replying first; the customer's next mail goes to her alone.
    assert_eq!(desk.show(1)["assignee"], "Alice Jones");
    let (a, b) = (
        smtp.received_by("alice@example.com").len(),
        smtp.received_by("bob@agents.example.com").len(),
    );
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "Re: [Support #1] Printer jam",
        "j2@customer.test",
        "",
        "That worked, thanks!",
    )]);
    assert_eq!(smtp.received_by("alice@example.com").len(), a + 1);
    assert_eq!(smtp.received_by("bob@agents.example.com").len(), b);
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    assert!(body_text(&n).contains("That worked, thanks!"));
    assert!(body_text(&n).contains("Customer reply on ticket #1"));
}

#[test]
fn a_relay_that_bounces_at_the_smtp_server_is_reported_to_the_assignee() {
    let smtp = Smtp::start();
    let desk = ingest_desk(&smtp, "");
    desk.ingest(&[&mail(
        "gone@customer.test",
        "support@example.com",
        "Hello",
        "g1@customer.test",
        "",
        "hi",
    )]);
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    smtp.fail_next("rcpt", &["550 5.1.1 mailbox unavailable"]);
    let s = desk.ingest(&[&gmail_reply(
        "alice@example.com",
        &n,
        "#take\r\nHere is your answer.",
        None,
    )]);
    assert_eq!(s["sent"]["failed"], 1, "{s}");
    desk.ok(&["tick"]);
    let notice = smtp.received_by("alice@example.com").pop().unwrap();
    assert!(
        header(&notice, "Subject").unwrap().contains("Delivery failed"),
        "{notice}"
    );
    assert!(
        body_text(&notice).contains("mailbox unavailable"),
        "{}",
        body_text(&notice)
    );
    let t = desk.show(1);
    assert!(event_kinds(&t).contains(&"mail_failed".to_string()));
}

#[test]
fn an_agent_replying_to_a_closed_ticket_acts_on_it_instead_of_opening_a_new_one() {
    let smtp = Smtp::start();
    let desk = ingest_desk(&smtp, "");
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "Closing time",
        "ct1@customer.test",
        "",
        "Bye.",
    )]);
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    desk.ingest(&[&gmail_reply(
        "alice@example.com",
        &n,
        "#status closed\r\nClosing this.",
        None,
    )]);
    assert_eq!(desk.show(1)["status"], "closed");
    let before = smtp.received_by("carol@customer.test").len();
    desk.ingest(&[&gmail_reply(
        "alice@example.com",
        &n,
        "One more thing: your refund is on its way.",
        None,
    )]);
    assert_eq!(desk.tickets().len(), 1, "no ticket with the agent as requester");
    assert_eq!(
        smtp.received_by("carol@customer.test").len(),
        before + 1,
        "relayed to the customer"
    );
    assert_eq!(
        desk.show(1)["status"],
        "closed",
        "a reply without #status leaves it closed"
    );
    // The customer, though, opens a new ticket linked to the closed one.
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "Re: [Support #1] Closing time",
        "ct2@customer.test",
        "",
        "Thanks!",
    )]);
    assert_eq!(desk.show(2)["linked"], serde_json::json!([1]));
}

#[test]
fn assign_tells_the_new_assignee_who_can_answer_at_once() {
    let smtp = Smtp::start();
    let desk = ingest_desk(&smtp, "");
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "Invoice question",
        "iq1@customer.test",
        "",
        "Why was I charged twice?",
    )]);
    let to_alice = smtp.received_by("alice@example.com").pop().unwrap();
    let before = smtp.received_by("bob@agents.example.com").len();
    desk.ingest(&[&gmail_reply(
        "alice@example.com",
        &to_alice,
        "#assign Bob Stone\n#note Bob knows billing.",
        None,
    )]);
    let to_bob = smtp.received_by("bob@agents.example.com");
    let notice = to_bob
        .iter()
        .skip(before)
        .find(|m| body_text(m).contains("assigned ticket #1 to you"))
        .expect("Bob is told he has the ticket")
        .clone();
    assert!(header(&notice, "Reply-To").unwrap().starts_with("<support+1.bobstone."));
    // Bob answers that mail: it is proven and relayed.
    desk.ingest(&[&gmail_reply(
        "bob@agents.example.com",
        &notice,
        "Hi Carol, the second charge is refunded.",
        None,
    )]);
    let relay = smtp.received_by("carol@customer.test").pop().unwrap();
    assert!(body_text(&relay).contains("the second charge is refunded"));
    assert_eq!(desk.show(1)["assignee"], "Bob Stone");
}

#[test]
fn a_long_thread_s_notifications_and_a_reassignment_open_with_a_summary() {
    use crate::support::{DeskConfig, agent_reply, body_text, mail, notification_of, wait_until};
    let smtp = crate::servers::Smtp::start();
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(
            "[[agent]]\nname = \"Alice Jones\"\nemail = \"alice@example.com\"\nqueues = [\"general\"]\n\n[[agent]]\nname = \"Bert Brown\"\nemail = \"bert@example.com\"\nqueues = [\"general\"]\n\n[[queue]]\nname = \"general\"\nassign = \"none\"\n",
        )
        .build();
    let customer = |id: &str, text: &str| {
        desk.deliver(&mail(
            "Bob <bob@customer.test>",
            "support@example.com",
            "Re: [Support #1] Export fails",
            id,
            "",
            text,
        ));
    };
    desk.deliver(&mail(
        "Bob <bob@customer.test>",
        "support@example.com",
        "Export fails",
        "e1@customer.test",
        "",
        "Our nightly export fails since Monday with permission denied. Is this a known problem?\r\nI already restarted the export service.",
    ));
    let first = notification_of(&smtp, "alice@example.com", 1);
    assert!(
        !body_text(&first).contains("Summary of #1"),
        "a new ticket's notification has its one message"
    );
    desk.deliver(&agent_reply(
        "Alice Jones <alice@example.com>",
        &first,
        "Mon, 23 Nov 2026 10:00:00 +0000",
        "a1",
        "We changed the folder permissions on Sunday. Please give the export user write access again.",
    ));
    customer("e2@customer.test", "That did not help.");
    customer("e3@customer.test", "Any news? Can you send someone today?");
    let count = |who: &str| smtp.received_by(who).len();
    wait_until(20, "Alice's notifications", || count("alice@example.com") >= 3);
    let latest = smtp.received_by("alice@example.com").pop().unwrap();
    let text = body_text(&latest);
    // Above the notification's facts, right under the reply marker.
    let summary_at = text.find("Summary of #1 (4 messages: 3 from the customer, 1 reply from us):");
    let facts_at = text.find("Customer reply on ticket #1");
    assert!(summary_at.is_some() && summary_at < facts_at, "{text}");
    for line in [
        "- Asked: Our nightly export fails since Monday with permission denied. Is this a known problem?",
        "- Answered: We changed the folder permissions on Sunday.",
        "- Tried: I already restarted the export service.",
        "- Open: Can you send someone today?",
    ] {
        assert!(text.contains(line), "{line}:\n{text}");
    }
    // Alice hands it to Bert: his notice carries the summary too.
    desk.deliver(&agent_reply(
        "Alice Jones <alice@example.com>",
        &latest,
        "Mon, 23 Nov 2026 12:00:00 +0000",
        "a2",
        "#assign Bert Brown\n#note\nHe knows the export server.",
    ));
    let notice_of = || {
        smtp.received_by("bert@example.com")
            .into_iter()
            .map(|m| body_text(&m))
            .find(|t| t.contains("Alice Jones assigned ticket #1 to you."))
    };
    wait_until(20, "Bert's notice", || notice_of().is_some());
    let notice = notice_of().unwrap();
    assert!(notice.contains("Alice Jones assigned ticket #1 to you."), "{notice}");
    assert!(notice.contains("Summary of #1 (5 messages"), "{notice}");
    assert!(
        notice.contains("- Latest note: He knows the export server."),
        "{notice}"
    );
}
