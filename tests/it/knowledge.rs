//! Self-service: knowledge-base articles suggested in the acknowledgement,
//! their pages, and the customer's `solved` that resolves a ticket.

use crate::servers::{Smtp, temp_dir};
use crate::support::{ALICE, DeskConfig, body_text, check_refuses, header, http_raw, mail, wait_until};

fn articles() -> std::path::PathBuf {
    let dir = temp_dir("kb");
    std::fs::write(
        dir.join("reset-password.md"),
        "# Resetting your password\n\nClick **Forgot password** on the sign-in page and follow the link we mail you.\n\n<script>alert(1)</script>\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("refunds.md"),
        "---\ntitle: How to get a refund\nqueue: billing\n---\nAsk for a refund within 30 days.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("printer.md"),
        "# Printer prints blank pages\n\nReplace the toner cartridge.\n",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not an article").unwrap();
    dir
}

#[test]
fn a_suggested_article_answers_the_question_and_solved_resolves_the_ticket() {
    let smtp = Smtp::start();
    let kb = articles();
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(ALICE)
        .extra(&format!(
            "[web]\npublic_url = \"{{http_url}}\"\n\n[knowledge]\npath = \"{}\"\nmin_score = 2.0\n",
            kb.display()
        ))
        .build();
    let daemon = desk.start();
    let port = desk.http_port;

    desk.ingest(&[&mail(
        "Bob <bob@customer.test>",
        "support@example.com",
        "Cannot sign in",
        "p1@customer.test",
        "",
        "Hello, I forgot my password and cannot sign in. What can I do?",
    )]);
    wait_until(20, "Bob's acknowledgement", || {
        !smtp.received_by("bob@customer.test").is_empty()
    });
    let ack = smtp.received_by("bob@customer.test").remove(0);
    let text = body_text(&ack);
    assert!(text.contains("These articles may answer your question:"), "{text}");
    assert!(text.contains("- Resetting your password"), "{text}");
    assert!(
        text.contains(&format!("http://127.0.0.1:{port}/help/reset-password")),
        "{text}"
    );
    assert!(
        !text.contains("refund") && !text.contains("Printer"),
        "only what matches: {text}"
    );
    let t = desk.show(1);
    assert_eq!(t["suggested"], serde_json::json!(["reset-password"]));

    // The article's page: Markdown rendered, raw HTML shown as text.
    let (status, page) = http_raw(port, "GET /help/reset-password HTTP/1.1\nHost: 127.0.0.1", b"");
    assert_eq!(status, 200);
    assert!(page.contains("<h1>Resetting your password</h1>"), "{page}");
    assert!(page.contains("<strong>Forgot password</strong>"), "{page}");
    assert!(!page.contains("<script>") && page.contains("&lt;script&gt;"), "{page}");
    let (status, list) = http_raw(port, "GET /help HTTP/1.1\nHost: 127.0.0.1", b"");
    assert_eq!(status, 200);
    assert!(
        list.contains("/help/refunds") && list.contains("/help/printer"),
        "{list}"
    );
    assert_eq!(http_raw(port, "GET /help/notes HTTP/1.1\nHost: 127.0.0.1", b"").0, 404);
    assert_eq!(
        http_raw(port, "GET /help/..%2Fsecret HTTP/1.1\nHost: 127.0.0.1", b"").0,
        404
    );

    // Bob answers "Solved, thanks!" above the quoted acknowledgement: resolved, no agent needed.
    let ack_id = header(&ack, "Message-ID").unwrap().to_string();
    desk.ingest(&[&mail(
        "Bob <bob@customer.test>",
        "support@example.com",
        "Re: Cannot sign in",
        "p2@customer.test",
        &format!("In-Reply-To: {ack_id}"),
        &format!(
            "Solved, thanks!\r\n\r\nOn Monday Example Support wrote:\r\n> {}",
            text.lines().next().unwrap_or("")
        ),
    )]);
    let t = desk.show(1);
    assert_eq!(t["status"], "resolved", "{t}");
    let kinds = crate::support::event_kinds(&t);
    assert!(kinds.contains(&"deflected".to_string()), "{kinds:?}");

    // A question no article answers: no list, and "solved" is just a message.
    desk.ingest(&[&mail(
        "Carol <carol@customer.test>",
        "support@example.com",
        "Invoice for October",
        "i1@customer.test",
        "",
        "Please send me the invoice for October.",
    )]);
    wait_until(20, "Carol's acknowledgement", || {
        !smtp.received_by("carol@customer.test").is_empty()
    });
    let ack2 = smtp.received_by("carol@customer.test").remove(0);
    assert!(!body_text(&ack2).contains("These articles"), "{}", body_text(&ack2));
    let ack2_id = header(&ack2, "Message-ID").unwrap().to_string();
    desk.ingest(&[&mail(
        "Carol <carol@customer.test>",
        "support@example.com",
        "Re: Invoice for October",
        "i2@customer.test",
        &format!("In-Reply-To: {ack2_id}"),
        "solved",
    )]);
    let t2 = desk.show(2);
    assert_ne!(t2["status"], "resolved");
    assert!(!crate::support::event_kinds(&t2).contains(&"deflected".to_string()));

    // explain shows the scores; report counts the deflection.
    let file = desk.dir.join("q.eml");
    std::fs::write(
        &file,
        mail(
            "dave@customer.test",
            "support@example.com",
            "Blank pages",
            "q1@customer.test",
            "",
            "My printer prints blank pages since Monday.",
        ),
    )
    .unwrap();
    let e: serde_json::Value = serde_json::from_str(&desk.ok(&["explain", file.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(e["articles"][0]["slug"], "printer", "{e}");
    assert_eq!(e["articles"][0]["suggested"], true);
    assert!(e["articles"][0]["score"].as_f64().unwrap() >= 2.0);
    let r: serde_json::Value = serde_json::from_str(&desk.ok(&["report", "--json"])).unwrap();
    assert_eq!(r["overall"]["suggested"], 1, "{}", r["overall"]);
    assert_eq!(r["overall"]["deflected"], 1);
    assert_eq!(r["overall"]["deflection_rate"], 1.0);
    daemon.stop();
}

#[test]
fn a_missing_knowledge_folder_is_a_config_error() {
    check_refuses(
        "[knowledge]\npath = \"/nonexistent/kb\"\nsuggestions = 0\n",
        &[
            "[knowledge] path /nonexistent/kb: not a folder of .md articles",
            "[knowledge] suggestions: 1 to 10 articles",
        ],
    );
}
