//! Routing rules end to end: ingest, the ticket's fields, and `explain`.

use crate::servers::Smtp;
use crate::support::{DeskConfig, body_text, event_kinds, header, mail};

const RULES: &str = r#"
[[agent]]
name = "Alice Jones"
email = "alice@example.com"
queues = ["general"]

[[agent]]
name = "Bea Billing"
email = "bea@example.com"
queues = ["billing"]

[[queue]]
name = "general"

[[queue]]
name = "billing"
assign = "round_robin"

[[rule]]
name = "money matters"
when.subject = ["(?i)\\binvoice\\b", "(?i)\\brefund\\b"]
when.not_from = "@partner\\.test$"
set.queue = "billing"
set.priority = "high"
set.tags = ["billing"]
continue = true

[[rule]]
name = "gold"
when."header.X-Customer-Tier" = "(?i)^gold$"
set.priority = "urgent"
set.tags = ["vip"]
set.assignee = "alice@example.com"
"#;

#[test]
fn rules_set_queue_priority_tags_and_assignee_and_explain_shows_why() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new().smtp(smtp.port).agents(RULES).build();
    let invoice = mail(
        "bob@customer.test",
        "support@example.com",
        "Invoice 42 is wrong",
        "i1@customer.test",
        "",
        "Charged twice.",
    );
    let gold = mail(
        "gil@customer.test",
        "support@example.com",
        "Hello",
        "g1@customer.test",
        "X-Customer-Tier: Gold",
        "Hi.",
    );
    let partner = mail(
        "p@partner.test",
        "support@example.com",
        "Refund for our client",
        "p1@partner.test",
        "",
        "x",
    );
    desk.ingest(&[&invoice, &gold, &partner]);
    let t1 = desk.show(1);
    assert_eq!(
        (t1["queue"].as_str(), t1["priority"].as_str()),
        (Some("billing"), Some("high"))
    );
    assert_eq!(t1["tags"], serde_json::json!(["billing"]));
    assert_eq!(t1["assignee"], "Bea Billing", "the billing queue's round robin");
    assert!(event_kinds(&t1).contains(&"routed".to_string()));
    let t2 = desk.show(2);
    assert_eq!(
        (t2["queue"].as_str(), t2["priority"].as_str(), t2["assignee"].as_str()),
        (Some("general"), Some("urgent"), Some("Alice Jones"))
    );
    let t3 = desk.show(3);
    assert_eq!(
        (t3["queue"].as_str(), t3["priority"].as_str()),
        (Some("general"), Some("normal"))
    );
    // Bea is told about ticket 1; Alice about ticket 2 (hers) and 3 (unassigned in her queue).
    let subjects_to = |rcpt: &str| -> Vec<String> {
        smtp.received_by(rcpt)
            .iter()
            .map(|m| header(m, "Subject").unwrap().to_string())
            .collect()
    };
    assert_eq!(subjects_to("bea@example.com"), vec!["[Support #1] Invoice 42 is wrong"]);
    assert_eq!(
        subjects_to("alice@example.com"),
        vec!["[Support #2] Hello", "[Support #3] Refund for our client"]
    );

    let path = desk.dir.join("partner.eml");
    std::fs::write(&path, &partner).unwrap();
    let out = desk.ok(&["explain", path.to_str().unwrap()]);
    assert!(
        out.contains("rule \"money matters\": no (not_from: @partner\\.test$ matched)"),
        "{out}"
    );
    assert!(
        out.contains("rule \"gold\": no (header.X-Customer-Tier did not match (?i)^gold$)"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&desk.ok(&["explain", "--json", path.to_str().unwrap()])).unwrap();
    assert_eq!(json["rules"].as_array().unwrap().len(), 2);
}

#[test]
fn the_customers_language_routes_and_picks_the_acknowledgement() {
    let desk = DeskConfig::new()
        .agents(
            "[[agent]]\nname = \"Alice Jones\"\nemail = \"alice@example.com\"\nqueues = [\"general\", \"dach\"]\n\n[[queue]]\nname = \"general\"\n\n[[queue]]\nname = \"dach\"\n",
        )
        .extra(
            "[[rule]]\nname = \"german speakers\"\nwhen = { language = [\"de\"] }\nset = { queue = \"dach\" }\n\n\
             [templates.acknowledgement]\nsubject = \"We got it: {{ticket.subject}}\"\nbody = \"Hello {{requester.name}}, thank you.\"\n\n\
             [templates.acknowledgement.de]\nsubject = \"Eingegangen: {{ticket.subject}}\"\nbody = \"Hallo {{requester.name}}, vielen Dank.\"\n",
        )
        .build();
    let german = mail(
        "Jörg Müller <joerg@kunde.test>",
        "support@example.com",
        "Drucker",
        "de1@kunde.test",
        "",
        "Guten Tag, mein Drucker funktioniert seit dem Update nicht mehr und ich kann keine Rechnungen drucken.\n",
    );
    let english = mail(
        "Carol <carol@customer.test>",
        "support@example.com",
        "Printer",
        "en1@customer.test",
        "",
        "Hello, my printer stopped working after the update and I cannot print invoices anymore.\n",
    );
    let short = mail(
        "Ann <ann@customer.test>",
        "support@example.com",
        "Hi",
        "s1@customer.test",
        "",
        "Help!\n",
    );
    desk.ingest(&[&german, &english, &short]);
    let tickets: Vec<_> = (1..=3).map(|i| desk.show(i)).collect();
    assert_eq!(tickets[0]["language"], "de");
    assert_eq!(tickets[0]["queue"], "dach", "the rule on language");
    assert_eq!(tickets[0]["messages"][0]["language"], "de");
    assert_eq!(tickets[1]["language"], "en");
    assert_eq!(tickets[1]["queue"], "general");
    assert!(
        tickets[2].get("language").is_none(),
        "too short to tell: {}",
        tickets[2]
    );
    // Acknowledgements in the customer's language, the plain template otherwise.
    let acks: Vec<String> = desk
        .sent()
        .into_iter()
        .filter(|m| m.contains("Auto-Submitted: auto-replied"))
        .collect();
    let to = |who: &str| {
        acks.iter()
            .find(|m| header(m, "To").is_some_and(|t| t.contains(who)))
            .unwrap()
            .clone()
    };
    assert!(
        header(&to("joerg@"), "Subject")
            .unwrap()
            .contains("Eingegangen: Drucker")
    );
    assert!(body_text(&to("joerg@")).contains("vielen Dank"));
    assert!(header(&to("carol@"), "Subject").unwrap().contains("We got it: Printer"));
    assert!(header(&to("ann@"), "Subject").unwrap().contains("We got it: Hi"));
    // explain says it.
    let dir = desk.dir.join("explain");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("de.eml"), &german).unwrap();
    let e = desk.ok(&["explain", dir.join("de.eml").to_str().unwrap()]);
    assert!(e.contains("language:       de"), "{e}");
    assert!(e.contains("german speakers"), "{e}");
}

#[test]
fn a_desks_language_candidates_tell_short_mails_and_route_them() {
    let desk = DeskConfig::new()
        .agents(
            "[[agent]]\nname = \"Alice Jones\"\nemail = \"alice@example.com\"\nqueues = [\"general\", \"dach\"]\n\n[[queue]]\nname = \"general\"\n\n[[queue]]\nname = \"dach\"\n",
        )
        .extra(
            "[language]\ncandidates = [\"en\", \"de\"]\n\n\
             [[rule]]\nname = \"german speakers\"\nwhen = { language = [\"de\"] }\nset = { queue = \"dach\" }\n\n\
             [templates.acknowledgement.de]\nsubject = \"Eingegangen: {{ticket.subject}}\"\nbody = \"Hallo {{requester.name}}, vielen Dank.\"\n",
        )
        .build();
    // Too short for the detector among all its languages (the unit test
    // `core::language::tests::a_desks_candidates_decide…` shows it tells
    // neither without the list).
    let german = mail(
        "Jörg <joerg@kunde.test>",
        "support@example.com",
        "Rechnung",
        "de2@kunde.test",
        "",
        "Bitte Rechnung senden\n",
    );
    let english = mail(
        "Carol <carol@customer.test>",
        "support@example.com",
        "Parcel",
        "en2@customer.test",
        "",
        "My parcel never arrived\n",
    );
    let greek = mail(
        "Eleni <eleni@customer.test>",
        "support@example.com",
        "Εκτυπωτής",
        "el2@customer.test",
        "",
        "Καλημέρα, ο εκτυπωτής μου δεν λειτουργεί μετά την ενημέρωση.\n",
    );
    // One batch: read ahead on the parsing threads.
    desk.ingest(&[&german, &english, &greek]);
    let tickets: Vec<_> = (1..=3).map(|i| desk.show(i)).collect();
    assert_eq!(tickets[0]["language"], "de", "{}", tickets[0]);
    assert_eq!(tickets[0]["queue"], "dach", "the rule on language");
    assert_eq!(tickets[1]["language"], "en", "{}", tickets[1]);
    assert_eq!(tickets[1]["queue"], "general");
    assert!(tickets[2].get("language").is_none(), "not a candidate: {}", tickets[2]);
    let acks: Vec<String> = desk
        .sent()
        .into_iter()
        .filter(|m| m.contains("Auto-Submitted: auto-replied") && m.contains("joerg@"))
        .collect();
    assert_eq!(acks.len(), 1);
    assert!(header(&acks[0], "Subject").unwrap().contains("Eingegangen: Rechnung"));
    // One mail alone (explain): read in its turn, by the same list.
    let dir = desk.dir.join("explain");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("de.eml"), &german).unwrap();
    let e = desk.ok(&["explain", dir.join("de.eml").to_str().unwrap()]);
    assert!(e.contains("language:       de"), "{e}");

    // The desk's own config passes; a rule and a translation for a language
    // outside the list pass with a warning each.
    let out = desk.run(&["check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    let french = DeskConfig::new()
        .extra(
            "[language]\ncandidates = [\"en\", \"de\"]\n\n\
             [[rule]]\nname = \"french speakers\"\nwhen = { language = [\"fr\"] }\nset = { priority = \"high\" }\n\n\
             [templates.acknowledgement.fr]\nsubject = \"Reçu\"\nbody = \"Merci.\"\n",
        )
        .build();
    let out = french.run(&["check"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "warning: rule \"french speakers\": language \"fr\" is not among [language] candidates [\"en\", \"de\"]"
        ),
        "{err}"
    );
    assert!(
        err.contains("warning: [templates.acknowledgement.fr] is never sent"),
        "{err}"
    );

    let bad = DeskConfig::new()
        .extra("[language]\ncandidates = [\"en\", \"klingon\"]\n")
        .build();
    let out = bad.run(&["check"]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[language] candidates: \"klingon\" is not a language code the detector knows"),
        "{err}"
    );
}

#[test]
fn language_keys_are_checked() {
    let desk = DeskConfig::new()
        .extra("[[rule]]\nname = \"x\"\nwhen = { language = \"German\" }\n\n[templates.acknowledgement.deutsch]\nsubject = \"x\"\n")
        .build();
    let out = desk.run(&["check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"german\" is not a language code"), "{err}");
    assert!(err.contains("unknown key \"deutsch\""), "{err}");
}

#[test]
fn an_angry_mail_is_read_as_such_and_a_rule_raises_its_priority() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(crate::support::ALICE)
        .extra("[[rule]]\nname = \"upset customers first\"\nwhen = { sentiment_below = -0.5 }\nset = { priority = \"high\" }\n")
        .build();
    let angry = mail(
        "Dan <dan@customer.test>",
        "support@example.com",
        "Invoice",
        "a1@customer.test",
        "",
        "This is UNACCEPTABLE. Your service is terrible and I am very angry!!!\n",
    );
    let calm = mail(
        "Eve <eve@customer.test>",
        "support@example.com",
        "Invoice",
        "c1@customer.test",
        "",
        "Please send me the invoice for order 1234.\n",
    );
    desk.ingest(&[&angry, &calm]);
    let (a, c) = (desk.show(1), desk.show(2));
    assert_eq!(a["priority"], "high", "the rule on sentiment");
    assert!(a["sentiment"].as_f64().unwrap() < -0.7, "{}", a["sentiment"]);
    assert!(a["messages"][0]["sentiment"].as_f64().unwrap() < -0.7);
    assert_eq!(c["priority"], "normal");
    assert_eq!(c["sentiment"].as_f64(), Some(0.0));
    // The agent's notification says how it reads.
    let n = crate::support::notification_of(&smtp, "alice@example.com", 1);
    assert!(
        crate::support::body_text(&n).contains("Reads as: language en · sentiment -0."),
        "{n}"
    );
    // A happier follow-up: the ticket's sentiment and its trend move.
    let thanks = mail(
        "Dan <dan@customer.test>",
        "support@example.com",
        "Re: Invoice",
        "a2@customer.test",
        "In-Reply-To: <a1@customer.test>",
        "Thank you, that was very helpful. Great service after all!\n",
    );
    desk.ingest(&[&thanks]);
    let a = desk.show(1);
    assert!(a["sentiment"].as_f64().unwrap() > 0.5, "{}", a["sentiment"]);
    assert!(a["sentiment_trend"].as_f64().unwrap() > 1.0, "{}", a["sentiment_trend"]);
    // explain shows the score and its cues.
    let dir = desk.dir.join("explain");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.eml"), &angry).unwrap();
    let e = desk.ok(&["explain", dir.join("a.eml").to_str().unwrap()]);
    assert!(e.contains("sentiment:      -0.") && e.contains("unacceptable"), "{e}");
    let bad = DeskConfig::new()
        .extra("[[rule]]\nname = \"x\"\nwhen = { sentiment_below = -3 }\n")
        .build();
    let err = String::from_utf8_lossy(&bad.run(&["check"]).stderr).into_owned();
    assert!(
        err.contains("when.sentiment_below must be a number from -1 to 1"),
        "{err}"
    );
}

#[test]
fn an_angry_follow_up_raises_priority_and_tells_the_queue_lead_by_a_reply_rule() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(
            "[[agent]]\nname = \"Alice Jones\"\nemail = \"alice@example.com\"\nqueues = [\"general\"]\n\n[[queue]]\nname = \"general\"\nassign = \"round_robin\"\nlead = \"lead@example.com\"\n",
        )
        .extra("[[rule]]\nname = \"upset follow-up\"\non = \"reply\"\nwhen = { sentiment_below = -0.5 }\nset = { priority = \"urgent\", tags = [\"upset\"], notify = [\"lead\"] }\n")
        .build();
    let first = |n: u32, from: &str| {
        mail(
            from,
            "support@example.com",
            "Order 1234",
            &format!("o{n}@customer.test"),
            "",
            "Where is my order 1234?\n",
        )
    };
    desk.ingest(&[
        &first(1, "Dan <dan@customer.test>"),
        &first(2, "Eve <eve@customer.test>"),
    ]);
    assert_eq!(
        desk.show(1)["priority"],
        "normal",
        "a reply rule leaves new tickets alone"
    );
    let reply = |n: u32, from: &str, ticket: u64, text: &str| {
        mail(
            from,
            "support@example.com",
            &format!("Re: [Support #{ticket}] Order 1234"),
            &format!("r{n}@customer.test"),
            "",
            text,
        )
    };
    desk.ingest(&[
        &reply(
            1,
            "dan@customer.test",
            1,
            "This is UNACCEPTABLE. Three weeks and nothing, I am furious!!!\n",
        ),
        &reply(2, "eve@customer.test", 2, "Thanks, any news on the delivery date?\n"),
    ]);
    let (d, e) = (desk.show(1), desk.show(2));
    assert_eq!(d["priority"], "urgent", "{d:#}");
    assert_eq!(d["tags"], serde_json::json!(["upset"]));
    assert_eq!(e["priority"], "normal", "a calm follow-up changes nothing");
    crate::support::wait_until(20, "the lead's notice", || {
        !smtp.received_by("lead@example.com").is_empty()
    });
    let notice = crate::support::body_text(&smtp.received_by("lead@example.com")[0]);
    assert!(
        notice.contains("Rule upset follow-up matched a customer's reply on ticket #1."),
        "{notice}"
    );
    assert!(notice.contains("I am furious"), "{notice}");
    assert_eq!(smtp.received_by("lead@example.com").len(), 1, "only Dan's reply");
    // The report reads how the customers' messages sounded.
    let r: serde_json::Value = serde_json::from_str(&desk.ok(&["report", "--json"])).unwrap();
    assert_eq!(r["overall"]["upset_messages"], 1, "{}", r["overall"]);
    let avg = r["overall"]["sentiment_average"].as_f64().unwrap();
    assert!(avg < 0.0 && avg > -1.0, "{avg}");
    assert_eq!(r["by_tag"]["upset"]["upset_messages"], 1);
    let err = crate::support::check_refuses(
        "[[rule]]\nname = \"x\"\non = \"later\"\nset = { priority = \"high\" }\n\n[[rule]]\nname = \"y\"\non = \"reply\"\nset = { queue = \"billing\", notify = [\"not an address\"] }\n",
        &[
            "rule on \"later\": expected \"new\" or \"reply\"",
            "queue and type are a new ticket's",
            "set.notify",
        ],
    );
    assert!(
        err.contains("postdesk.toml:23:6: rule on"),
        "the key's line and column: {err}"
    );
}
