//! Routing rules end to end: ingest, the ticket's fields, and `explain`.

use crate::servers::Smtp;
use crate::support::{DeskConfig, event_kinds, header, mail};

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
