//! Tickets from other channels through the API, with named, scoped tokens.

use crate::servers::{Smtp, temp_dir};
use crate::support::{ALICE, DeskConfig, body_text, check_refuses, http_raw, wait_until};
use serde_json::Value;

#[test]
fn a_phone_ticket_opens_by_api_with_a_scoped_token_and_is_acknowledged_by_mail() {
    let smtp = Smtp::start();
    let dir = temp_dir("tokens");
    let file = |name: &str, value: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        p.display().to_string()
    };
    let admin = file("admin", "admin-token-1234567890");
    let tokens = format!(
        "[[api_token]]\nname = \"phone-system\"\ntoken_file = \"{}\"\nscopes = [\"tickets:read\", \"tickets:write\"]\n\n[[api_token]]\nname = \"dashboard-tv\"\ntoken_file = \"{}\"\nscopes = [\"tickets:read\"]\n",
        file("phone", "phone-token-abcdefghijkl"),
        file("tv", "tv-token-mnopqrstuvwx"),
    );
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(ALICE)
        .http(&format!("token_file = \"{admin}\""))
        .extra(&tokens)
        .build();
    let daemon = desk.start();
    let port = desk.http_port;
    let post = |path: &str, token: Option<&str>, extra: &str, body: &str| -> (u16, Value) {
        let auth = token
            .map(|t| format!("\nAuthorization: Bearer {t}"))
            .unwrap_or_default();
        let (status, text) = http_raw(
            port,
            &format!("POST {path} HTTP/1.1\nHost: 127.0.0.1:{port}\nContent-Type: application/json{auth}{extra}"),
            body.as_bytes(),
        );
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    };
    let call = r#"{"channel": "phone", "requester": {"email": "bob@customer.test", "name": "Bob"}, "subject": "Called: printer broken", "text": "Bob called: the printer prints nothing since Monday."}"#;

    // No token, an unknown one, one without the scope: refused, nothing stored.
    assert_eq!(post("/api/tickets", None, "", call).0, 401);
    assert_eq!(post("/api/tickets", Some("guess"), "", call).0, 401);
    let (status, why) = post("/api/tickets", Some("tv-token-mnopqrstuvwx"), "", call);
    assert_eq!(status, 403);
    assert!(
        why["error"]
            .as_str()
            .unwrap()
            .contains("does not have the scope tickets:write"),
        "{why}"
    );
    let (status, _) = http_raw(
        port,
        &format!("GET /api/tickets HTTP/1.1\nHost: 127.0.0.1:{port}\nAuthorization: Bearer tv-token-mnopqrstuvwx"),
        b"",
    );
    assert_eq!(status, 200, "the read scope reads");
    // Bad requests: a 4xx with the reason.
    for (body, why) in [
        (
            r#"{"requester": {"email": "bob"}, "subject": "x", "text": "y"}"#,
            "requester.email",
        ),
        (
            r#"{"channel": "web", "requester": {"email": "bob@customer.test"}, "subject": "x", "text": "y"}"#,
            "channel \"web\"",
        ),
        (
            r#"{"requester": {"email": "bob@customer.test"}, "subject": "", "text": "y"}"#,
            "must not be empty",
        ),
        (
            r#"{"requester": {"email": "bob@customer.test"}, "subject": "x", "text": "y", "bcc": "z"}"#,
            "unknown field",
        ),
        ("not json", "expected"),
    ] {
        let (status, v) = post("/api/tickets", Some("phone-token-abcdefghijkl"), "", body);
        assert_eq!(status, 400, "{body}");
        assert!(v["error"].as_str().unwrap_or("").contains(why), "{body}: {v}");
    }
    assert_eq!(
        http_raw(
            port,
            &format!(
                "GET /api/tickets/1 HTTP/1.1\nHost: 127.0.0.1:{port}\nAuthorization: Bearer {}",
                "admin-token-1234567890"
            ),
            b""
        )
        .0,
        404
    );

    // The call opens a ticket, channel phone, routed and acknowledged like mail.
    let key = "\nIdempotency-Key: call-20261203-0001";
    let (status, v) = post("/api/tickets", Some("phone-token-abcdefghijkl"), key, call);
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["ticket"], 1);
    assert_eq!(v["result"], "new_ticket");
    // A retry with the same key: the same ticket, nothing new.
    let (status, v) = post("/api/tickets", Some("phone-token-abcdefghijkl"), key, call);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["ticket"].clone(), v["result"].clone()),
        (1.into(), "replayed".into())
    );
    let t = desk.show(1);
    assert_eq!(t["channel"], "phone");
    assert_eq!(t["assignee"], "Alice Jones");
    assert_eq!(
        t["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["direction"] == "inbound")
            .count(),
        1
    );
    wait_until(20, "the acknowledgement", || {
        !smtp.received_by("bob@customer.test").is_empty()
    });
    let ack = smtp.received_by("bob@customer.test").remove(0);
    let subject = crate::support::header(&ack, "Subject").unwrap_or_default();
    assert!(
        subject.contains("#1") && subject.contains("Called: printer broken"),
        "{subject}"
    );
    wait_until(20, "Alice's notification", || {
        smtp.received_by("alice@example.com")
            .iter()
            .any(|m| body_text(m).contains("prints nothing since Monday"))
    });

    // The customer's next message, from the chat: it joins ticket 1.
    let (status, v) = post(
        "/api/tickets/1/messages",
        Some("phone-token-abcdefghijkl"),
        "",
        r#"{"channel": "chat", "text": "Still broken, and now it beeps."}"#,
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        (v["ticket"].clone(), v["result"].clone()),
        (1.into(), "appended".into())
    );
    let t = desk.show(1);
    let inbound: Vec<&Value> = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "inbound")
        .collect();
    assert_eq!(inbound.len(), 2, "{t}");
    assert_eq!(inbound[1]["channel"], "chat");
    assert!(inbound[1]["text"].as_str().unwrap().contains("now it beeps"));
    let (status, v) = post(
        "/api/tickets/99/messages",
        Some("phone-token-abcdefghijkl"),
        "",
        r#"{"text": "x"}"#,
    );
    assert_eq!(status, 404, "{v}");

    // PATCH: the emailed commands, with the token's name as actor; all or nothing.
    let patch = |id: u64, token: &str, body: &str| -> (u16, Value) {
        let (status, text) = http_raw(
            port,
            &format!(
                "PATCH /api/tickets/{id} HTTP/1.1\nHost: 127.0.0.1:{port}\nContent-Type: application/json\nAuthorization: Bearer {token}"
            ),
            body.as_bytes(),
        );
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    };
    let phone = "phone-token-abcdefghijkl";
    assert_eq!(patch(1, "tv-token-mnopqrstuvwx", r#"{"status": "pending"}"#).0, 403);
    let (status, v) = patch(1, phone, r#"{"priority": "meh", "status": "later"}"#);
    assert_eq!(status, 400);
    let why = v["error"].as_str().unwrap();
    assert!(
        why.contains("priority \"meh\"") && why.contains("status \"later\""),
        "{v}"
    );
    let (status, v) = patch(1, phone, r#"{"status": "pending", "assignee": "Nobody Here"}"#);
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("Nobody Here"), "{v}");
    let before = desk.show(1)["status"].clone();
    assert_ne!(before, "pending", "a refused change changes nothing");
    assert_eq!(patch(99, phone, r#"{"status": "pending"}"#).0, 404);
    assert_eq!(patch(1, phone, r#"{}"#).0, 400);
    let (status, v) = patch(
        1,
        phone,
        r#"{"status": "pending", "priority": "high", "tags": ["printer", "hardware"]}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["status"].clone(), v["priority"].clone()),
        ("pending".into(), "high".into())
    );
    let t = desk.show(1);
    assert_eq!(t["tags"], serde_json::json!(["printer", "hardware"]));
    let by_token: Vec<&str> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "phone-system")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in ["status", "priority", "tag"] {
        assert!(by_token.contains(&kind), "{kind} by phone-system: {by_token:?}");
    }
    daemon.stop();
}

#[test]
fn agents_reply_and_note_through_the_api_and_an_assignee_set_by_patch_is_told() {
    let smtp = Smtp::start();
    let dir = temp_dir("tokens");
    let token_file = dir.join("crm");
    std::fs::write(&token_file, "crm-token-abcdefghijkl\n").unwrap();
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(
            "[[agent]]\nname = \"Alice Jones\"\nemail = \"alice@example.com\"\nqueues = [\"general\"]\n\n[[agent]]\nname = \"Bert Brown\"\nemail = \"bert@example.com\"\nqueues = [\"general\"]\n\n[[queue]]\nname = \"general\"\nassign = \"none\"\n",
        )
        .extra(&format!(
            "[[api_token]]\nname = \"crm\"\ntoken_file = \"{}\"\nscopes = [\"tickets:write\"]\n",
            token_file.display()
        ))
        .build();
    let daemon = desk.start();
    let port = desk.http_port;
    let send = |method: &str, path: &str, extra: &str, body: &str| -> (u16, Value) {
        let (status, text) = http_raw(
            port,
            &format!(
                "{method} {path} HTTP/1.1\nHost: 127.0.0.1:{port}\nContent-Type: application/json\nAuthorization: Bearer crm-token-abcdefghijkl{extra}"
            ),
            body.as_bytes(),
        );
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    };
    let (status, v) = send(
        "POST",
        "/api/tickets",
        "",
        r#"{"channel": "chat", "requester": {"email": "bob@customer.test"}, "subject": "Invoice missing", "text": "Where is my invoice?"}"#,
    );
    assert_eq!((status, v["ticket"].clone()), (201, 1.into()), "{v}");
    wait_until(20, "the acknowledgement", || {
        smtp.received_by("bob@customer.test").len() == 1
    });

    // Refused: an agent's message without the agent, an unknown agent, an agent on a customer's message.
    for (path, body, why) in [
        (
            "/api/tickets/1/messages",
            r#"{"author": "agent", "text": "x"}"#,
            "agent: the [[agent]]",
        ),
        (
            "/api/tickets/1/messages",
            r#"{"author": "agent", "agent": "Mallory", "text": "x"}"#,
            "agent \"Mallory\": no such [[agent]]",
        ),
        (
            "/api/tickets/1/messages",
            r#"{"agent": "Alice Jones", "text": "x"}"#,
            "only with \"author\": \"agent\"",
        ),
        (
            "/api/tickets/1/messages",
            r#"{"author": "bot", "text": "x"}"#,
            "expected customer or agent",
        ),
        ("/api/tickets/1/notes", r#"{"text": "x"}"#, "missing field `agent`"),
        (
            "/api/tickets/1/notes",
            r#"{"agent": "Alice Jones", "text": " "}"#,
            "must not be empty",
        ),
    ] {
        let (status, v) = send("POST", path, "", body);
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap_or("").contains(why), "{body}: {v}");
    }
    assert_eq!(
        send(
            "POST",
            "/api/tickets/99/notes",
            "",
            r#"{"agent": "Alice Jones", "text": "x"}"#
        )
        .0,
        404
    );

    // Alice's reply, written in the CRM: relayed to Bob, recorded as hers.
    let (status, v) = send(
        "POST",
        "/api/tickets/1/messages",
        "\nIdempotency-Key: crm-reply-1",
        r#"{"author": "agent", "agent": "Alice Jones", "text": "Your invoice is attached to your account now."}"#,
    );
    assert_eq!((status, v["result"].clone()), (201, "appended".into()), "{v}");
    wait_until(20, "the relay to Bob", || {
        smtp.received_by("bob@customer.test")
            .iter()
            .any(|m| body_text(m).contains("Your invoice is attached"))
    });
    let relay = smtp
        .received_by("bob@customer.test")
        .into_iter()
        .find(|m| body_text(m).contains("Your invoice is attached"))
        .unwrap();
    assert!(
        crate::support::header(&relay, "From").unwrap().contains("Alice Jones"),
        "{relay}"
    );
    // The same key again, a second later (another Date on the mail it makes): nothing sent twice.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (status, v) = send(
        "POST",
        "/api/tickets/1/messages",
        "\nIdempotency-Key: crm-reply-1",
        r#"{"author": "agent", "agent": "Alice Jones", "text": "Your invoice is attached to your account now."}"#,
    );
    assert_eq!((status, v["result"].clone()), (200, "replayed".into()), "{v}");

    // A note by address: internal, never mailed to Bob.
    let (status, v) = send(
        "POST",
        "/api/tickets/1/notes",
        "",
        r#"{"agent": "alice@example.com", "text": "Checked the billing export: invoice 4711."}"#,
    );
    assert_eq!(status, 201, "{v}");
    let t = desk.show(1);
    let messages = t["messages"].as_array().unwrap();
    let note = messages.iter().find(|m| m["kind"] == "note").expect("a note");
    assert!(note["text"].as_str().unwrap().contains("invoice 4711"), "{note}");
    let agent_replies = messages
        .iter()
        .filter(|m| m["direction"] == "outbound" && m["kind"] == "agent")
        .count();
    assert_eq!(agent_replies, 1, "one relay, the retry was a replay");
    let by_alice: Vec<&str> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "Alice Jones")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(by_alice.contains(&"relayed"), "{by_alice:?}");

    // PATCH hands the ticket to Bert: he is told, with a reply address of his own.
    let (status, v) = send("PATCH", "/api/tickets/1", "", r#"{"assignee": "Bert Brown"}"#);
    assert_eq!(status, 200, "{v}");
    wait_until(20, "Bert's notice", || {
        smtp.received_by("bert@example.com")
            .iter()
            .any(|m| body_text(m).contains("crm assigned ticket #1 to you."))
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !smtp
            .received_by("bob@customer.test")
            .iter()
            .any(|m| body_text(m).contains("invoice 4711")),
        "a note never reaches the customer"
    );
    assert_eq!(
        smtp.received_by("bob@customer.test")
            .iter()
            .filter(|m| body_text(m).contains("Your invoice is attached"))
            .count(),
        1
    );
    daemon.stop();
}

#[test]
fn api_token_config_is_checked() {
    check_refuses(
        "[[api_token]]\nname = \"a b\"\nscopes = [\"tickets:delete\"]\n",
        &[
            "api_token name: letters, digits",
            "unknown scope \"tickets:delete\"",
            "api_token a b: set token_file or token_env",
        ],
    );
}
