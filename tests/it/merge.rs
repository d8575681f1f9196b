//! Tickets that headers prove to be one conversation merge; agents merge and
//! split by command. The real binary, its store, and an SMTP sink.

use crate::servers::Smtp;
use crate::support::{DeskConfig, agent_reply, body_text, event_kinds, header, http_raw, mail, notification_of};
use serde_json::Value;

const ALICE: &str = r#"
[[agent]]
name = "Alice Jones"
email = "alice@example.com"
queues = ["general"]
"#;

fn customer(from: &str, subject: &str, id: &str, headers: &str, body: &str) -> String {
    mail(from, "support@example.com", subject, id, headers, body)
}

/// The root of a conversation, a reply to a message we never saw yet (`m`),
/// its References cut to its parent as some clients do, and `m` itself,
/// which answers the root: it bridges the other two.
fn three(reply_from: &str) -> [String; 3] {
    [
        customer("Bob <bob@customer.test>", "Printer", "a@customer.test", "", "It jams."),
        customer(
            reply_from,
            "Re: Printer",
            "b@customer.test",
            "In-Reply-To: <m@customer.test>\nReferences: <m@customer.test>",
            "Still jams after that.",
        ),
        customer(
            "Bob <bob@customer.test>",
            "Re: Printer",
            "m@customer.test",
            "In-Reply-To: <a@customer.test>\nReferences: <a@customer.test>",
            "Tried a new cartridge.",
        ),
    ]
}

/// Tickets not merged into another.
fn kept(tickets: &[Value]) -> Vec<&Value> {
    tickets.iter().filter(|t| t["merged_into"].is_null()).collect()
}

/// The Message-IDs of a ticket's inbound mail.
fn message_ids(view: &Value) -> Vec<String> {
    let mut ids: Vec<String> = view["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "inbound")
        .map(|m| m["message_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_bridging_mail_joins_the_conversation_in_every_order_of_three_mails() {
    let mails = three("Bob <bob@customer.test>");
    let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    for order in orders {
        let desk = DeskConfig::new().build();
        for &i in &order {
            // One run per mail, as separate mailboxes would deliver them.
            desk.ingest(&[&mails[i]]);
        }
        let tickets = desk.tickets();
        let kept = kept(&tickets);
        assert_eq!(kept.len(), 1, "order {order:?}: one ticket, got {tickets:#?}");
        let id = kept[0]["id"].as_u64().unwrap();
        let view = desk.show(id);
        assert_eq!(
            message_ids(&view),
            ["a@customer.test", "b@customer.test", "m@customer.test"],
            "order {order:?}"
        );
        // A merged number says where it went, and the merge is an event on both.
        for t in tickets.iter().filter(|t| !t["merged_into"].is_null()) {
            let n = t["id"].as_u64().unwrap();
            assert_eq!(t["merged_into"].as_u64(), Some(id), "order {order:?}");
            assert_eq!(t["status"], "closed", "order {order:?}");
            assert!(
                event_kinds(&desk.show(n)).contains(&"merged_into".to_string()),
                "order {order:?}"
            );
            assert!(event_kinds(&view).contains(&"merged".to_string()), "order {order:?}");
            let text = desk.ok(&["show", &n.to_string()]);
            assert!(text.contains(&format!("merged into #{id}")), "order {order:?}: {text}");
        }
        // The kept ticket is the older one.
        assert_eq!(id, 1, "order {order:?}");
    }
}

#[test]
fn headers_never_merge_a_stranger_s_ticket_into_a_customer_s() {
    // Mallory knows the Message-ID of Bob's mail and claims the bridge.
    let desk = DeskConfig::new().agents(ALICE).build();
    let [a, _, _] = three("x");
    desk.ingest(&[&a]);
    desk.ingest(&[&customer(
        "mallory@evil.test",
        "Re: Printer",
        "b@evil.test",
        "In-Reply-To: <m@evil.test>\nReferences: <m@evil.test>",
        "Mine.",
    )]);
    desk.ingest(&[&customer(
        "mallory@evil.test",
        "Re: Printer",
        "m@evil.test",
        "In-Reply-To: <a@customer.test>\nReferences: <a@customer.test>",
        "Bridge.",
    )]);
    let tickets = desk.tickets();
    assert_eq!(kept(&tickets).len(), 2, "{tickets:#?}");
    let (one, two) = (desk.show(1), desk.show(2));
    assert!(message_ids(&two).contains(&"b@evil.test".to_string()));
    assert!(!message_ids(&one).contains(&"b@evil.test".to_string()));
    for t in [&one, &two] {
        assert!(event_kinds(t).contains(&"merge_suggested".to_string()), "{t:#?}");
    }
    assert_eq!(one["linked"], serde_json::json!([2]));
    let why = two["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "merge_suggested")
        .unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(why.contains("neither takes part in the other's conversation"), "{why}");

    // Mallory names Bob in her ticket: now Bob's conversation may hold hers,
    // but she is only held on it (an agent would have to add her), so no
    // reply to Bob ever reaches her; and her ticket, not Bob's, is folded in.
    for mallory_first in [false, true] {
        let desk = DeskConfig::new().agents(ALICE).build();
        let hers = customer(
            "mallory@evil.test",
            "Re: Printer",
            "b@evil.test",
            "Cc: bob@customer.test\nIn-Reply-To: <m@evil.test>\nReferences: <m@evil.test>",
            "Mine.",
        );
        let (first, second) = if mallory_first { (&hers, &a) } else { (&a, &hers) };
        desk.ingest(&[first]);
        desk.ingest(&[second]);
        desk.ingest(&[&customer(
            "mallory@evil.test",
            "Re: Printer",
            "m@evil.test",
            "In-Reply-To: <a@customer.test>\nReferences: <a@customer.test>",
            "Bridge.",
        )]);
        let tickets = desk.tickets();
        let kept = kept(&tickets);
        assert_eq!(kept.len(), 1, "{tickets:#?}");
        let view = desk.show(kept[0]["id"].as_u64().unwrap());
        assert_eq!(view["requester"]["email"], "bob@customer.test", "{view:#?}");
        assert!(message_ids(&view).contains(&"b@evil.test".to_string()));
        let participants = view["participants"].as_array().unwrap();
        assert!(
            !participants.iter().any(|p| p["email"] == "mallory@evil.test"),
            "{view:#?}"
        );
        assert!(
            view["held_participants"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["email"] == "mallory@evil.test"),
            "{view:#?}"
        );
    }
}

#[test]
fn tickets_an_agent_touched_are_linked_not_merged_and_the_agent_merges_them_by_reply() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new().smtp(smtp.port).agents(ALICE).build();
    let [a, b, m] = three("Bob <bob@customer.test>");
    desk.ingest(&[&a]);
    // Alice answers ticket 1: from now on it is hers.
    desk.ingest(&[&agent_reply(
        "alice@example.com",
        &notification_of(&smtp, "alice@example.com", 1),
        "Mon, 23 Nov 2026 09:10:00 +0000",
        "r1",
        "Please try a new cartridge.",
    )]);
    desk.ingest(&[&b]);
    desk.ingest(&[&m]);
    let tickets = desk.tickets();
    assert_eq!(kept(&tickets).len(), 2, "{tickets:#?}");
    let two = desk.show(2);
    let suggested = two["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "merge_suggested")
        .unwrap_or_else(|| panic!("{two:#?}"));
    assert!(
        suggested["reason"].as_str().unwrap().contains("Alice Jones"),
        "{suggested}"
    );
    assert_eq!(desk.show(1)["linked"], serde_json::json!([2]));
    // Alice hears of it, with the command to merge.
    let suggestion = smtp
        .received_by("alice@example.com")
        .into_iter()
        .find(|m| header(m, "Subject").unwrap().contains("Merge #2 into #1?"))
        .expect("a merge suggestion for alice");
    assert!(body_text(&suggestion).contains("#merge 1"), "{suggestion}");
    // Told once: another mail tying the two tells nobody again.
    desk.ingest(&[&customer(
        "Bob <bob@customer.test>",
        "Re: Printer",
        "n@customer.test",
        "In-Reply-To: <b@customer.test>\nReferences: <a@customer.test> <b@customer.test>",
        "Any news?",
    )]);
    let suggestions = |smtp: &Smtp| {
        smtp.received_by("alice@example.com")
            .iter()
            .filter(|m| header(m, "Subject").unwrap().contains("Merge #2 into #1?"))
            .count()
    };
    assert_eq!(suggestions(&smtp), 1);
    desk.ingest(&[&agent_reply(
        "alice@example.com",
        &suggestion,
        "Mon, 23 Nov 2026 10:00:00 +0000",
        "r2",
        "#merge 1",
    )]);
    let (one, two) = (desk.show(1), desk.show(2));
    assert_eq!(two["merged_into"], 1, "{two:#?}");
    assert_eq!(one["merged"], serde_json::json!([2]));
    assert!(message_ids(&one).contains(&"b@customer.test".to_string()));
}

#[test]
fn agents_merge_and_split_by_command_with_tokens_of_both_tickets_routing() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new().smtp(smtp.port).agents(ALICE).build();
    let alice = "alice@example.com";
    desk.ingest(&[&customer(
        "Bob <bob@customer.test>",
        "Printer jams",
        "p1@customer.test",
        "",
        "It jams.",
    )]);
    // The same customer, a second time, from another client: a new ticket.
    desk.ingest(&[&customer(
        "Bob <bob@home.test>",
        "Printer jams again",
        "p2@home.test",
        "",
        "Still jamming.",
    )]);
    let (n1, n2) = (notification_of(&smtp, alice, 1), notification_of(&smtp, alice, 2));
    let ack2 = smtp
        .received_by("bob@home.test")
        .into_iter()
        .find(|m| header(m, "Subject").unwrap().contains("#2"))
        .expect("an acknowledgement of ticket 2");
    let reply = |n: &str, id: &str, text: &str| agent_reply(alice, n, "Mon, 23 Nov 2026 10:00:00 +0000", id, text);
    // Mistakes first: each is refused with a reason, by mail.
    desk.ingest(&[&reply(&n2, "e1", "#merge 99\n#merge 2\n#split 1")]);
    let error = smtp
        .received_by(alice)
        .into_iter()
        .find(|m| {
            header(m, "Subject")
                .unwrap()
                .starts_with("[Support #2] Commands not carried out")
        })
        .expect("a command error");
    let text = body_text(&error);
    for why in [
        "#merge 99: there is no ticket 99",
        "#merge 2: ticket 2 is this ticket",
        "#split 1: ticket 1 is not merged into ticket 2",
    ] {
        assert!(text.contains(why), "{why} in {text}");
    }
    desk.ingest(&[&reply(&n2, "m1", "#merge 1")]);
    let (one, two) = (desk.show(1), desk.show(2));
    assert_eq!(
        (two["merged_into"].as_u64(), two["status"].as_str()),
        (Some(1), Some("closed"))
    );
    assert_eq!(one["merged"], serde_json::json!([2]));
    // An agent's merge brings the other requester in.
    assert!(
        one["participants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["email"] == "bob@home.test"),
        "{one:#?}"
    );
    let merged_msg = one["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["message_id"] == "p2@home.test")
        .expect("ticket 2's mail shows on ticket 1");
    assert_eq!(merged_msg["merged_from"], 2);
    // The customer answers ticket 2's acknowledgement: it lands on ticket 1.
    desk.ingest(&[&customer(
        "Bob <bob@home.test>",
        "Re: Printer jams again",
        "p3@home.test",
        &format!("In-Reply-To: {}", header(&ack2, "Message-ID").unwrap()),
        "Any news?",
    )]);
    assert!(message_ids(&desk.show(1)).contains(&"p3@home.test".to_string()));
    // Alice answers from ticket 2's notification: her token still proves her,
    // and the one reply reaches both addresses of the customer.
    let before = smtp.received().len();
    desk.ingest(&[&reply(&n2, "r1", "A technician comes tomorrow.")]);
    let relay = smtp.received()[before..]
        .iter()
        .find(|m| body_text(m).contains("A technician comes tomorrow."))
        .cloned()
        .expect("the reply was relayed");
    assert!(header(&relay, "Subject").unwrap().contains("#1"), "{relay}");
    let to = header(&relay, "To").unwrap();
    assert!(to.contains("bob@customer.test") && to.contains("bob@home.test"), "{to}");
    // The report counts one ticket.
    let report: Value = serde_json::from_str(&desk.ok(&["report", "--until", "2030-01-01", "--json"])).unwrap();
    assert_eq!(report["overall"]["volume"], 1, "{report:#?}");
    // Split: ticket 2 gets its own number back, as it was.
    desk.ingest(&[&reply(&n1, "s1", "#split 2")]);
    let (one, two) = (desk.show(1), desk.show(2));
    assert!(two["merged_into"].is_null(), "{two:#?}");
    assert_eq!(two["status"], "new");
    assert!(
        one.get("merged").is_none_or(|m| m.as_array().unwrap().is_empty()),
        "{one:#?}"
    );
    assert!(
        !one["participants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["email"] == "bob@home.test"),
        "{one:#?}"
    );
    for t in [&one, &two] {
        let kinds = event_kinds(t);
        assert!(
            kinds.contains(&"split".to_string()) || kinds.contains(&"split_from".to_string()),
            "{kinds:?}"
        );
    }
    assert!(!message_ids(&one).contains(&"p2@home.test".to_string()));
    // Mail to ticket 2's number lands on ticket 2 again.
    desk.ingest(&[&customer(
        "Bob <bob@home.test>",
        "Re: Printer jams again",
        "p4@home.test",
        &format!("In-Reply-To: {}", header(&ack2, "Message-ID").unwrap()),
        "Hello?",
    )]);
    assert!(message_ids(&desk.show(2)).contains(&"p4@home.test".to_string()));
    let report: Value = serde_json::from_str(&desk.ok(&["report", "--until", "2030-01-01", "--json"])).unwrap();
    assert_eq!(report["overall"]["volume"], 2);
}

#[test]
fn the_api_and_the_cli_merge_and_split_with_reasons_for_what_they_refuse() {
    let desk = DeskConfig::new().build();
    desk.ingest(&[&customer(
        "Bob <bob@customer.test>",
        "Printer",
        "q1@customer.test",
        "",
        "It jams.",
    )]);
    desk.ingest(&[&customer(
        "Carol <carol@customer.test>",
        "Scanner",
        "q2@customer.test",
        "",
        "It is slow.",
    )]);
    desk.ingest(&[&customer(
        "Dan <dan@customer.test>",
        "Copier",
        "q3@customer.test",
        "",
        "It smokes.",
    )]);
    let daemon = desk.start();
    let port = desk.http_port;
    let post = |path: &str, content_type: &str, body: &str| {
        http_raw(
            port,
            &format!("POST {path} HTTP/1.1\nHost: 127.0.0.1\nContent-Type: {content_type}"),
            body.as_bytes(),
        )
    };
    let json = "application/json";
    for (path, content_type, body, status, why) in [
        (
            "/api/tickets/2/merge",
            "text/plain",
            "{\"into\": 1}",
            415,
            "application/json",
        ),
        (
            "/api/tickets/2/merge",
            json,
            "{\"into\": \"one\"}",
            400,
            "a ticket number",
        ),
        (
            "/api/tickets/x/merge",
            json,
            "{\"into\": 1}",
            400,
            "/api/tickets/{number}/merge",
        ),
        (
            "/api/tickets/2/merge",
            json,
            "{\"into\": 99}",
            404,
            "there is no ticket 99",
        ),
        ("/api/tickets/2/merge", json, "{\"into\": 2}", 409, "is this ticket"),
        (
            "/api/tickets/1/split",
            json,
            "{\"ticket\": 2}",
            409,
            "not merged into ticket 1",
        ),
    ] {
        let (got, answer) = post(path, content_type, body);
        assert_eq!(got, status, "{path} {body}: {answer}");
        assert!(answer.contains(why), "{path} {body}: {answer}");
    }
    let (status, answer) = post("/api/tickets/2/merge", json, "{\"into\": 1}");
    assert_eq!(status, 200, "{answer}");
    let done: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(done["kept"], 1);
    // The CLI goes through the API while the daemon holds the store.
    let out = desk.ok(&["merge", "3", "1", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["kept"], 1, "{out}");
    let refused = desk.run(&["merge", "3", "1"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already"),
        "{refused:?}"
    );
    let one = desk.show(1);
    assert_eq!(one["merged"], serde_json::json!([2, 3]));
    assert_eq!(
        message_ids(&one),
        ["q1@customer.test", "q2@customer.test", "q3@customer.test"]
    );
    daemon.stop();
    // Without the daemon, on the store itself.
    desk.ok(&["split", "1", "2"]);
    let (one, two) = (desk.show(1), desk.show(2));
    assert_eq!(one["merged"], serde_json::json!([3]));
    assert!(two["merged_into"].is_null());
    assert_eq!(two["status"], "new");
    let kinds = event_kinds(&two);
    assert!(
        kinds.contains(&"merged_into".to_string()) && kinds.contains(&"split_from".to_string()),
        "{kinds:?}"
    );
    let actor = two["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "merged_into")
        .unwrap()["actor"]
        .clone();
    assert_eq!(actor, "api");
}
