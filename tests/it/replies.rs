//! Agents' replies as real clients write them, answering a real notification,
//! through the real pipeline: what the customer gets.

use crate::servers::{Dovecot, Smtp};
use crate::support::{ALICE, DeskConfig, Imap, body_text, event_kinds, header, mail};

/// The notification's text as a client quotes it: `> ` before every line.
fn quoted(notification: &str) -> String {
    body_text(notification)
        .lines()
        .map(|l| {
            if l.is_empty() {
                ">".to_string()
            } else {
                format!("> {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// A reply to `notification` from Alice with `body` (CRLF line ends), plain text.
fn reply(notification: &str, id: &str, body: &str) -> String {
    format!(
        "From: Alice Jones <alice@example.com>\r\nTo: {}\r\nSubject: Re: {}\r\nDate: Mon, 23 Nov 2026 10:30:00 +0000\r\nMessage-ID: <{id}@mail.example.com>\r\nIn-Reply-To: {}\r\nReferences: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
        header(notification, "Reply-To").unwrap(),
        header(notification, "Subject").unwrap(),
        header(notification, "Message-ID").unwrap(),
        header(notification, "Message-ID").unwrap(),
        body.replace("\r\n", "\n").replace('\n', "\r\n")
    )
}

fn assert_nothing_of_ours(text: &str) {
    for ours in [
        "Please type your reply",
        "New ticket #",
        "Assigned to:",
        "Reply to this mail",
        "Commands on the first lines",
        "alice@example.com",
        "alicejones",
    ] {
        assert!(!text.contains(ours), "{ours:?} reached the customer:\n{text}");
    }
}

/// Dovecot, an SMTP sink, a running desk reading Dovecot, and the notification
/// Alice got for Carol's mail with `subject`, `message_id` and `text`.
fn notified_desk(
    subject: &str,
    message_id: &str,
    text: &str,
) -> (
    Dovecot,
    Smtp,
    crate::support::Desk,
    crate::support::Daemon,
    Imap,
    String,
) {
    let dovecot = Dovecot::start(&["support"]);
    let smtp = Smtp::start();
    let desk = DeskConfig::new()
        .imap("support", "support@example.com", dovecot.port, "support", "")
        .smtp(smtp.port)
        .agents(ALICE)
        .build();
    let daemon = desk.start();
    let mut imap = Imap::login(dovecot.port, "support");
    imap.append(
        "INBOX",
        &mail(
            "Carol <carol@customer.test>",
            "support@example.com",
            subject,
            message_id,
            "",
            text,
        ),
    );
    daemon.wait(30, "the notification", || {
        !smtp.received_by("alice@example.com").is_empty()
    });
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    (dovecot, smtp, desk, daemon, imap, n)
}

#[test]
fn a_bottom_posted_reply_through_dovecot_and_smtp_reaches_the_customer() {
    let (_dovecot, smtp, desk, daemon, mut imap, n) =
        notified_desk("Printer jams", "c1@customer.test", "It jams on every page.");
    // Thunderbird, bottom-posting: attribution, the quote, then the answer and a command.
    let body = format!(
        "On 11/23/26 10:00 AM, Carol via Example Support wrote:\n{}\n\n#status pending\nPlease clean the rollers and tell me how it goes.\n\n-- \nAlice",
        quoted(&n)
    );
    imap.append("INBOX", &reply(&n, "bottom1", &body));
    daemon.wait(30, "the relay", || smtp.received_by("carol@customer.test").len() == 2);
    daemon.stop();
    let relay = body_text(&smtp.received_by("carol@customer.test")[1]).replace("\r\n", "\n");
    assert!(
        relay.contains("Please clean the rollers and tell me how it goes."),
        "{relay}"
    );
    assert!(
        relay.contains("\n-- \nAlice"),
        "signature kept, with its delimiter: {relay}"
    );
    assert!(!relay.contains("It jams on every page"), "quote removed: {relay}");
    assert!(!relay.contains("#status"));
    assert_nothing_of_ours(&relay);
    let t = desk.show(1);
    assert_eq!(t["status"], "pending");
    assert!(t["first_response_at"].is_string());
}

#[test]
fn a_reply_postdesk_cannot_read_is_not_sent_and_the_agent_is_told_at_once() {
    let (_dovecot, smtp, desk, daemon, mut imap, n) = notified_desk("Refund", "r1@customer.test", "I want a refund.");
    // Outlook: the agent typed into the original below the header block; nothing is above it.
    let original: String = body_text(&n).lines().collect::<Vec<_>>().join("\n");
    let body = format!(
        "________________________________\nFrom: Carol via Example Support <support@example.com>\nSent: Monday, November 23, 2026 10:00 AM\nTo: Alice Jones <alice@example.com>\nSubject: [Support #1] Refund\n\n{original}\nALICE: approved, refund goes out today."
    );
    imap.append("INBOX", &reply(&n, "unclear1", &body));
    daemon.wait(30, "the warning to Alice", || {
        smtp.received_by("alice@example.com").len() == 2
    });
    daemon.stop();
    let warning = smtp.received_by("alice@example.com").pop().unwrap();
    assert!(
        header(&warning, "Subject")
            .unwrap()
            .contains("Not sent: could not read your reply")
    );
    assert_eq!(header(&warning, "Auto-Submitted"), Some("auto-replied"));
    let text = body_text(&warning);
    assert!(text.contains("was not sent to the customer"), "{text}");
    assert!(
        text.contains("| ________________________________"),
        "it shows what it read: {text}"
    );
    assert_eq!(
        smtp.received_by("carol@customer.test").len(),
        1,
        "only the acknowledgement"
    );
    let t = desk.show(1);
    assert!(event_kinds(&t).contains(&"reply_unclear".to_string()));
    assert_eq!(t["status"], "new", "nothing went out, so nothing changed");
}

#[test]
fn inline_answers_keep_the_customers_questions_and_nothing_of_ours() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new().smtp(smtp.port).agents(ALICE).build();
    desk.ingest(&[&mail(
        "Carol <carol@customer.test>",
        "support@example.com",
        "Two questions",
        "q1@customer.test",
        "",
        "Do you ship to Norway?\n\nAnd can I pay by invoice?",
    )]);
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    let q = quoted(&n);
    // Answer after each question, inside the quote.
    let (head, tail) = q.split_once("> Do you ship to Norway?").unwrap();
    let (middle, rest) = tail.split_once("> And can I pay by invoice?").unwrap();
    let body = format!(
        "Am 23.11.2026 um 10:00 schrieb Carol via Example Support <support@example.com>:\n{head}> Do you ship to Norway?\n\nYes, in 3 days.\n\n{}> And can I pay by invoice?\n\nYes, up to 500 EUR.\n\n{}",
        middle.trim_start_matches(['\r', '\n']),
        rest.trim_start_matches(['\r', '\n'])
    );
    desk.ingest(&[&reply(&n, "inline1", &body)]);
    let relay = body_text(&smtp.received_by("carol@customer.test").pop().unwrap()).replace("\r\n", "\n");
    let expected = "> Do you ship to Norway?\n\nYes, in 3 days.\n\n> And can I pay by invoice?\n\nYes, up to 500 EUR.";
    assert!(relay.starts_with(expected), "{relay}");
    assert_nothing_of_ours(&relay);
}

#[test]
fn outlook_and_html_replies_lose_their_quote_and_keep_their_lines() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new().smtp(smtp.port).agents(ALICE).build();
    desk.ingest(&[&mail(
        "Carol <carol@customer.test>",
        "support@example.com",
        "Login",
        "l1@customer.test",
        "",
        "I cannot log in.",
    )]);
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    // Outlook in German, header block with the agent's own address.
    let outlook = format!(
        "Bitte setzen Sie das Passwort zurück.\n\nGrüße\nAlice\n\nVon: Alice Jones <alice@example.com>\nGesendet: Montag, 23. November 2026 10:00\nAn: Carol via Example Support <support@example.com>\nBetreff: [Support #1] Login\n\n{}",
        body_text(&n)
    );
    desk.ingest(&[&reply(&n, "outlook1", &outlook)]);
    let relay = body_text(&smtp.received_by("carol@customer.test").pop().unwrap()).replace("\r\n", "\n");
    assert!(
        relay.starts_with("Bitte setzen Sie das Passwort zurück.\n\nGrüße\nAlice"),
        "{relay}"
    );
    assert_nothing_of_ours(&relay);
    // Gmail, HTML only: the quote goes in the document, the line breaks stay.
    let html = format!(
        "<div dir=\"ltr\">Thanks,<br>Alex<br><br>Try again now.</div><br><div class=\"gmail_quote\"><div class=\"gmail_attr\">On Mon, Nov 23, 2026 at 10:00 AM Carol via Example Support &lt;support@example.com&gt; wrote:</div><blockquote class=\"gmail_quote\">{}</blockquote></div>",
        body_text(&n).replace('\n', "<br>")
    );
    let raw = reply(&n, "html1", "x").replace(
        "Content-Type: text/plain; charset=utf-8\r\n\r\nx\r\n",
        &format!("Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"),
    );
    desk.ingest(&[&raw]);
    let relay = body_text(&smtp.received_by("carol@customer.test").pop().unwrap()).replace("\r\n", "\n");
    assert!(relay.starts_with("Thanks,\nAlex\n\nTry again now."), "{relay}");
    assert!(!relay.contains("I cannot log in"), "{relay}");
    assert_nothing_of_ours(&relay);
}
