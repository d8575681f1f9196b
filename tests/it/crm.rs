//! `[integrations.customer_lookup]` against the test's own HTTP server.

use crate::servers::{HttpReceiver, Smtp, temp_dir};
use crate::support::{ALICE, DeskConfig, body_text, check_refuses, mail, wait_until};
use std::time::Duration;

#[test]
fn the_crm_s_record_reaches_the_ticket_the_notification_and_the_rules_and_a_slow_crm_is_passed_by() {
    let smtp = Smtp::start();
    let crm = HttpReceiver::start();
    let token = temp_dir("crm").join("token");
    std::fs::write(&token, "crm-token-42\n").unwrap();
    crm.reply(
        "/contacts",
        r#"[{"name": "Bob Big", "plan": "enterprise", "company": {"name": "Acme <Corp>"}, "secret_notes": "never shown"}]"#,
        Duration::ZERO,
    );
    let config = format!(
        "[integrations.customer_lookup]\nurl = \"{}?email={{email}}\"\ntoken_file = \"{}\"\ntimeout = \"1s\"\ncache = \"1h\"\nfields = [\"plan\", \"company.name\"]\n\n[[rule]]\nname = \"enterprise first\"\nwhen = {{ \"customer.plan\" = \"^enterprise$\" }}\nset = {{ priority = \"high\" }}\n",
        crm.url("/contacts"),
        token.display()
    );
    let desk = DeskConfig::new().smtp(smtp.port).agents(ALICE).extra(&config).build();
    let daemon = desk.start();
    desk.ingest(&[&mail(
        "Bob <bob+vip@customer.test>",
        "support@example.com",
        "Printer broken",
        "b1@customer.test",
        "",
        "It prints nothing.",
    )]);
    let t = desk.show(1);
    assert_eq!(t["customer"]["plan"], "enterprise", "{t}");
    assert_eq!(t["customer"]["company.name"], "Acme <Corp>");
    assert!(
        t["customer"].get("secret_notes").is_none(),
        "only the configured fields"
    );
    assert_eq!(t["priority"], "high", "the rule matched the CRM's plan");
    let asked = crm.received();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].path, "/contacts?email=bob%2Bvip%40customer.test");
    assert_eq!(asked[0].header("authorization"), Some("Bearer crm-token-42"));
    wait_until(20, "Alice's notification", || {
        smtp.received_by("alice@example.com")
            .iter()
            .any(|m| body_text(m).contains("Customer: company.name: Acme <Corp> · plan: enterprise"))
    });
    // A second ticket of the same customer: the answer is cached.
    desk.ingest(&[&mail(
        "Bob <bob+vip@customer.test>",
        "support@example.com",
        "Another thing",
        "b2@customer.test",
        "",
        "And the scanner too.",
    )]);
    assert_eq!(desk.show(2)["priority"], "high");
    assert_eq!(crm.received().len(), 1, "cached");
    // explain shows the record and the rule it makes match.
    let file = desk.dir.join("new-from-bob.eml");
    std::fs::write(
        &file,
        mail(
            "Bob <bob+vip@customer.test>",
            "support@example.com",
            "Third thing",
            "b3@customer.test",
            "",
            "The fax as well.",
        ),
    )
    .unwrap();
    let e: serde_json::Value = serde_json::from_str(&desk.ok(&["explain", file.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(e["customer"]["plan"], "enterprise", "{e}");
    let rule = e["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "enterprise first")
        .unwrap();
    assert_eq!(rule["matched"], true, "{e}");
    let text = desk.ok(&["explain", file.to_str().unwrap()]);
    assert!(
        text.contains("customer:       company.name: Acme <Corp> · plan: enterprise"),
        "{text}"
    );

    // The CRM gets slow: the ticket goes on without the record after the
    // timeout, and for a while no lookup is tried at all.
    crm.reply("/contacts", r#"{"plan": "enterprise"}"#, Duration::from_secs(4));
    desk.ingest(&[&mail(
        "Carol <carol@customer.test>",
        "support@example.com",
        "Invoice",
        "c1@customer.test",
        "",
        "Where is it?",
    )]);
    let t = desk.show(3);
    assert!(t.get("customer").is_none(), "no record: {t}");
    assert_eq!(t["priority"], "normal");
    desk.ingest(&[&mail(
        "Dave <dave@customer.test>",
        "support@example.com",
        "Login",
        "d1@customer.test",
        "",
        "Cannot log in.",
    )]);
    assert!(desk.show(4).get("customer").is_none());
    let asked: Vec<String> = crm.received().into_iter().map(|r| r.path).collect();
    assert!(
        !asked.iter().any(|p| p.contains("dave")),
        "after a timeout no lookup is tried for a while: {asked:?}"
    );
    daemon.stop();
}

#[test]
fn customer_lookup_config_is_checked() {
    check_refuses(
        "[integrations.customer_lookup]\nurl = \"https://crm.example.com/contacts\"\ntimeout = \"30s\"\nfields = [\"a b\"]\n",
        &[
            "customer_lookup url must be an http(s):// address with {email} in it",
            "customer_lookup timeout must be 1s to 10s",
            "customer_lookup field \"a b\"",
        ],
    );
    let desk = DeskConfig::new()
        .extra("[[rule]]\nname = \"x\"\nwhen = { \"customer.plan\" = \"(\" }\nset = { priority = \"high\" }\n")
        .build();
    let err = String::from_utf8_lossy(&desk.run(&["check"]).stderr).into_owned();
    assert!(
        !err.contains("unknown condition"),
        "customer.FIELD is a condition: {err}"
    );
}
