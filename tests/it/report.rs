//! `postdesk report` on a store built by `ingest`, with hand-computed figures.

use crate::servers::Smtp;
use crate::support::{DeskConfig, agent_reply, header, mail};

const SETUP: &str = r#"
[[agent]]
name = "Alice Jones"
email = "alice@example.com"
queues = ["general"]

[[rule]]
name = "urgent"
when.subject = "(?i)urgent"
set.priority = "high"
set.tags = ["vip"]

[calendar.office]
timezone = "UTC"
hours = { mon = "09:00-17:00", tue = "09:00-17:00", wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00" }

[sla.high]
calendar = "office"
first_response = "2h"
resolution = "8h"

[automation]
csat = true
"#;

fn customer(from: &str, subject: &str, id: &str, date: &str, headers: &str, body: &str) -> String {
    mail(from, "support@example.com", subject, id, headers, body).replace("Mon, 23 Nov 2026 09:00:00 +0000", date)
}

#[test]
fn report_figures_match_hand_computed_values() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new().smtp(smtp.port).agents(SETUP).build();
    let notification = |ticket: u64| {
        smtp.received_by("alice@example.com")
            .into_iter()
            .find(|m| {
                header(m, "Subject")
                    .unwrap()
                    .starts_with(&format!("[Support #{ticket}]"))
            })
            .unwrap()
    };
    let reply = |ticket: u64, date: &str, id: &str, text: &str| {
        agent_reply("alice@example.com", &notification(ticket), date, id, text)
    };
    // T1: urgent, answered and resolved after 30 minutes, rated 4.
    desk.ingest(&[&customer(
        "a@customer.test",
        "Urgent: A",
        "t1@c",
        "Mon, 16 Nov 2026 09:00:00 +0000",
        "",
        "a",
    )]);
    desk.ingest(&[&reply(
        1,
        "Mon, 16 Nov 2026 09:30:00 +0000",
        "r1",
        "#status resolved\r\nFixed.",
    )]);
    let survey = smtp
        .received()
        .into_iter()
        .find(|m| header(m, "Subject").unwrap().contains("How did we do"))
        .unwrap();
    desk.ingest(&[&customer(
        "a@customer.test",
        "Re: survey",
        "t1r@c",
        "Mon, 16 Nov 2026 10:00:00 +0000",
        &format!("In-Reply-To: {}", header(&survey, "Message-ID").unwrap()),
        "4",
    )]);
    // T2: normal; pending, customer answers, resolved, customer reopens.
    desk.ingest(&[&customer(
        "b@customer.test",
        "Normal B",
        "t2@c",
        "Mon, 16 Nov 2026 10:00:00 +0000",
        "",
        "b",
    )]);
    desk.ingest(&[&reply(
        2,
        "Mon, 16 Nov 2026 11:00:00 +0000",
        "r2",
        "#status pending\r\nWhich version?",
    )]);
    desk.ingest(&[&customer(
        "b@customer.test",
        "Re: [Support #2] Normal B",
        "t2b@c",
        "Mon, 16 Nov 2026 12:00:00 +0000",
        "",
        "2.1",
    )]);
    desk.ingest(&[&reply(
        2,
        "Mon, 16 Nov 2026 13:00:00 +0000",
        "r3",
        "#status resolved\r\nUpgrade to 2.2.",
    )]);
    desk.ingest(&[&customer(
        "b@customer.test",
        "Re: [Support #2] Normal B",
        "t2c@c",
        "Mon, 16 Nov 2026 14:00:00 +0000",
        "",
        "Still broken.",
    )]);
    // T3: urgent, Friday afternoon, unanswered.
    desk.ingest(&[&customer(
        "c@customer.test",
        "URGENT C",
        "t3@c",
        "Fri, 20 Nov 2026 16:00:00 +0000",
        "",
        "c",
    )]);
    assert_eq!(
        desk.show(3)["sla"]["first_response_due"],
        "2026-11-23T10:00:00Z",
        "Friday 16:00 + 2 business hours"
    );

    let r: serde_json::Value =
        serde_json::from_str(&desk.ok(&["report", "--since", "2026-11-16", "--until", "2026-11-21", "--json"]))
            .unwrap();
    let o = &r["overall"];
    assert_eq!(o["volume"], 3);
    assert_eq!(o["backlog"], 2, "T2 reopened, T3 new");
    assert_eq!(o["backlog_median_age_hours"], 59.0, "the mean of 8 and 110 hours");
    assert_eq!(o["first_response"]["count"], 2);
    assert_eq!(o["first_response"]["median_minutes"], 45.0, "the mean of 30 and 60");
    assert_eq!(o["first_response"]["p90_minutes"], 60.0, "nearest rank");
    assert_eq!(o["first_response"]["median_business_minutes"], 45.0);
    assert_eq!(o["resolution"]["count"], 2);
    assert_eq!(o["resolution"]["median_minutes"], 105.0, "the mean of 30 and 180");
    assert_eq!(o["resolution"]["p90_minutes"], 180.0);
    assert_eq!(o["first_contact_resolution_rate"], 0.5);
    assert_eq!(o["reopen_rate"], 0.5);
    assert_eq!(o["sla_first_response_compliance"], 1.0);
    assert_eq!(o["sla_resolution_compliance"], 1.0);
    assert_eq!(o["csat_average"], 4.0);
    assert_eq!(o["csat_responses"], 1);
    assert_eq!(o["csat_response_rate"], 0.5, "two surveys, one rating");
    let vip = &r["by_tag"]["vip"];
    assert_eq!((vip["volume"].as_u64(), vip["backlog"].as_u64()), (Some(2), Some(1)));
    assert_eq!(vip["first_response"]["median_minutes"], 30.0);
    assert_eq!(r["by_queue"]["general"]["volume"], 3);
    assert_eq!(r["by_channel"]["email"]["volume"], 3);
    let alice = &r["agents"]["Alice Jones"];
    assert_eq!(
        (
            alice["open_assigned"].as_u64(),
            alice["replies"].as_u64(),
            alice["resolved"].as_u64()
        ),
        (Some(1), Some(3), Some(2))
    );
    // T1 was new 30 minutes, then resolved: its share of "new" time is in the averages.
    assert!(o["hours_in_status"]["new"].as_f64().unwrap() > 0.0);
    // The text form has the same figures for people.
    let text = desk.ok(&["report", "--since", "2026-11-16", "--until", "2026-11-21"]);
    assert!(
        text.contains(
            "all                   3       2      45.0      60.0     105.0     180.0   50%    50%   100%   100%   4.0"
        ),
        "{text}"
    );
    // A period before anything happened.
    let empty: serde_json::Value =
        serde_json::from_str(&desk.ok(&["report", "--until", "2026-11-01", "--json"])).unwrap();
    assert_eq!(empty["overall"]["volume"], 0);
    assert!(empty["overall"]["first_response"]["median_minutes"].is_null());
    assert_eq!(desk.run(&["report", "--since", "last week"]).status.code(), Some(2));
}

/// The documented definitions on a small history: a closure without
/// resolution, a second resolution in a later period, a reopen after the
/// period's end, and days taken in the instance's time zone.
#[test]
fn resolutions_count_in_their_own_period_and_days_are_the_desks() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new().smtp(smtp.port).agents(SETUP).build();
    let text = std::fs::read_to_string(&desk.config).unwrap().replacen(
        "subject_tag = \"Support\"",
        "subject_tag = \"Support\"\ntimezone = \"Europe/Berlin\"",
        1,
    );
    std::fs::write(&desk.config, text).unwrap();
    let notification = |ticket: u64| {
        smtp.received_by("alice@example.com")
            .into_iter()
            .find(|m| {
                header(m, "Subject")
                    .unwrap()
                    .starts_with(&format!("[Support #{ticket}]"))
            })
            .unwrap()
    };
    let reply = |ticket: u64, date: &str, id: &str, text: &str| {
        agent_reply("alice@example.com", &notification(ticket), date, id, text)
    };
    // T1: resolved at first touch on the 16th, reopened on the 18th, resolved again on the 19th.
    desk.ingest(&[&customer(
        "a@customer.test",
        "A",
        "d1@c",
        "Mon, 16 Nov 2026 09:00:00 +0000",
        "",
        "a",
    )]);
    desk.ingest(&[&reply(
        1,
        "Mon, 16 Nov 2026 09:30:00 +0000",
        "d1r",
        "#status resolved\r\nFixed.",
    )]);
    // T2: closed as spam, never resolved.
    desk.ingest(&[&customer(
        "b@customer.test",
        "B",
        "d2@c",
        "Mon, 16 Nov 2026 10:00:00 +0000",
        "",
        "b",
    )]);
    desk.ingest(&[&reply(2, "Mon, 16 Nov 2026 12:00:00 +0000", "d2r", "#status closed")]);
    // T3: 23:30 UTC on the 15th is 00:30 on the 16th in Berlin.
    desk.ingest(&[&customer(
        "c@customer.test",
        "C",
        "d3@c",
        "Sun, 15 Nov 2026 23:30:00 +0000",
        "",
        "c",
    )]);
    desk.ingest(&[&customer(
        "a@customer.test",
        "Re: [Support #1] A",
        "d1b@c",
        "Wed, 18 Nov 2026 10:00:00 +0000",
        "",
        "It is back.",
    )]);
    desk.ingest(&[&reply(
        1,
        "Thu, 19 Nov 2026 10:00:00 +0000",
        "d1s",
        "#status resolved\r\nFixed for good.",
    )]);
    let report = |since: &str, until: &str| -> serde_json::Value {
        let r: serde_json::Value =
            serde_json::from_str(&desk.ok(&["report", "--since", since, "--until", until, "--json"])).unwrap();
        r["overall"].clone()
    };
    let a = report("2026-11-16", "2026-11-18");
    assert_eq!(a["volume"], 3, "T3 was created on the 16th, Berlin time");
    assert_eq!(a["resolution"]["count"], 1, "T2 was closed, not resolved");
    assert_eq!(a["resolution"]["median_minutes"], 30.0);
    assert_eq!(
        a["first_contact_resolution_rate"], 1.0,
        "the reopen came after this period"
    );
    assert_eq!(a["reopen_rate"], 0.0);
    let b = report("2026-11-18", "2026-11-20");
    assert_eq!(
        b["resolution"]["count"], 1,
        "the second resolution counts in its own period"
    );
    assert_eq!(b["resolution"]["median_minutes"], 73.0 * 60.0);
    assert_eq!(b["first_contact_resolution_rate"], 0.0, "two replies");
    // Re-running the first period later gives the same figures.
    assert_eq!(report("2026-11-16", "2026-11-18"), a);
    // The whole time: T1 once, by its latest resolution.
    let all = report("2026-11-01", "2026-12-01");
    assert_eq!(all["resolution"]["count"], 1);
    assert_eq!(all["first_contact_resolution_rate"], 0.0, "reopened: not one-touch");
}

/// A target is judged against the deadline in force when it was met, and a
/// met target no longer moves: a priority raise or a pending pause after the
/// first response changes neither.
#[test]
fn a_met_target_stays_met_after_a_priority_raise_and_a_pause() {
    let smtp = Smtp::start();
    let setup = r#"
[[agent]]
name = "Alice Jones"
email = "alice@example.com"
queues = ["general"]

[sla.normal]
calendar = "24x7"
first_response = "4h"
resolution = "2d"

[sla.high]
calendar = "24x7"
first_response = "1h"
resolution = "8h"
"#;
    let desk = DeskConfig::new().smtp(smtp.port).agents(setup).build();
    desk.ingest(&[&customer(
        "a@customer.test",
        "Slow",
        "m1@c",
        "Mon, 16 Nov 2026 09:00:00 +0000",
        "",
        "a",
    )]);
    assert_eq!(desk.show(1)["sla"]["first_response_due"], "2026-11-16T13:00:00Z");
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    let reply = |date: &str, id: &str, text: &str| agent_reply("alice@example.com", &n, date, id, text);
    // Answered after 2 hours against 4.
    desk.ingest(&[&reply(
        "Mon, 16 Nov 2026 11:00:00 +0000",
        "m1r",
        "#status pending\r\nWhich model?",
    )]);
    desk.ingest(&[&customer(
        "a@customer.test",
        "Re: [Support #1] Slow",
        "m1b@c",
        "Mon, 16 Nov 2026 15:00:00 +0000",
        "",
        "Model X.",
    )]);
    desk.ingest(&[&reply(
        "Mon, 16 Nov 2026 15:30:00 +0000",
        "m1s",
        "#priority high\r\n#note raising it",
    )]);
    let t = desk.show(1);
    assert_eq!(t["sla"]["policy"], "high");
    assert_eq!(t["sla"]["first_response_due"], "2026-11-16T13:00:00Z", "met, so frozen");
    let r: serde_json::Value =
        serde_json::from_str(&desk.ok(&["report", "--since", "2026-11-16", "--until", "2026-11-17", "--json"]))
            .unwrap();
    assert_eq!(
        r["overall"]["sla_first_response_compliance"], 1.0,
        "met against the 4 hours in force"
    );
}

/// A policy change keeps the pause credit already earned.
#[test]
fn a_priority_raise_after_a_pause_keeps_the_paused_time() {
    let smtp = Smtp::start();
    let setup = r#"
[[agent]]
name = "Alice Jones"
email = "alice@example.com"
queues = ["general"]

[sla.normal]
calendar = "24x7"
resolution = "2d"

[sla.high]
calendar = "24x7"
resolution = "8h"
"#;
    let desk = DeskConfig::new().smtp(smtp.port).agents(setup).build();
    desk.ingest(&[&customer(
        "a@customer.test",
        "Paused",
        "p1@c",
        "Mon, 16 Nov 2026 09:00:00 +0000",
        "",
        "a",
    )]);
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    let reply = |date: &str, id: &str, text: &str| agent_reply("alice@example.com", &n, date, id, text);
    desk.ingest(&[&reply(
        "Mon, 16 Nov 2026 10:00:00 +0000",
        "p1r",
        "#status pending\r\nWhich model?",
    )]);
    // Pending for 7.5 hours, then the customer answers.
    desk.ingest(&[&customer(
        "a@customer.test",
        "Re: [Support #1] Paused",
        "p1b@c",
        "Mon, 16 Nov 2026 17:30:00 +0000",
        "",
        "Model X.",
    )]);
    desk.ingest(&[&reply(
        "Mon, 16 Nov 2026 17:45:00 +0000",
        "p1s",
        "#priority high\r\n#note urgent now",
    )]);
    let t = desk.show(1);
    assert_eq!(t["sla"]["policy"], "high");
    assert_eq!(
        t["sla"]["resolution_due"], "2026-11-17T00:30:00Z",
        "created 09:00 + 8 h + the 7.5 h paused"
    );
    assert_eq!(t["sla"]["resolution_breached"], false);
}

/// Agent load, assignee, queue and tags are taken as they were at the
/// period's end: changes after it do not rewrite a past report.
#[test]
fn a_reassignment_after_the_period_leaves_its_report_alone() {
    let smtp = Smtp::start();
    let setup = r#"
[[agent]]
name = "Alice Jones"
email = "alice@example.com"
queues = ["general", "billing"]

[[agent]]
name = "Bob Stone"
email = "bob@example.com"
queues = ["general", "billing"]

[[queue]]
name = "general"
assign = "round_robin"

[[queue]]
name = "billing"
assign = "none"
"#;
    let desk = DeskConfig::new().smtp(smtp.port).agents(setup).build();
    desk.ingest(&[&customer(
        "a@customer.test",
        "Help",
        "r1@c",
        "Mon, 16 Nov 2026 09:00:00 +0000",
        "",
        "a",
    )]);
    assert_eq!(desk.show(1)["assignee"], "Alice Jones");
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    // On the 18th, after the period: to Bob, to billing, tagged.
    desk.ingest(&[&agent_reply(
        "alice@example.com",
        &n,
        "Wed, 18 Nov 2026 09:00:00 +0000",
        "r1r",
        "#assign Bob Stone\r\n#queue billing\r\n#tag money\r\n#note over to Bob",
    )]);
    assert_eq!(desk.show(1)["assignee"], "Bob Stone");
    let r: serde_json::Value =
        serde_json::from_str(&desk.ok(&["report", "--since", "2026-11-16", "--until", "2026-11-17", "--json"]))
            .unwrap();
    assert_eq!(r["agents"]["Alice Jones"]["open_assigned"], 1);
    assert_eq!(r["agents"]["Bob Stone"]["open_assigned"], 0);
    assert_eq!(r["by_assignee"]["Alice Jones"]["volume"], 1);
    assert_eq!(r["by_queue"]["general"]["volume"], 1);
    assert!(r["by_queue"].get("billing").is_none() && r["by_tag"].get("money").is_none());
    // A period after the change sees it.
    let later: serde_json::Value =
        serde_json::from_str(&desk.ok(&["report", "--since", "2026-11-18", "--until", "2026-11-19", "--json"]))
            .unwrap();
    assert_eq!(later["agents"]["Bob Stone"]["open_assigned"], 1);
    assert_eq!(later["by_queue"]["billing"]["backlog"], 1);
    assert_eq!(later["by_tag"]["money"]["backlog"], 1);
}

/// Lowering a ticket to a priority without a policy drops its unmet targets:
/// no breach fires later.
#[test]
fn a_priority_without_a_policy_drops_the_targets_not_yet_met() {
    let smtp = Smtp::start();
    let setup = r#"
[[agent]]
name = "Alice Jones"
email = "alice@example.com"
queues = ["general"]

[sla.normal]
calendar = "24x7"
first_response = "4h"
resolution = "2d"
"#;
    let desk = DeskConfig::new().smtp(smtp.port).agents(setup).build();
    desk.ingest(&[&customer(
        "a@customer.test",
        "Someday",
        "l1@c",
        "Mon, 16 Nov 2026 09:00:00 +0000",
        "",
        "a",
    )]);
    assert_eq!(desk.show(1)["sla"]["policy"], "normal");
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    desk.ingest(&[&agent_reply(
        "alice@example.com",
        &n,
        "Mon, 16 Nov 2026 09:10:00 +0000",
        "l1r",
        "#priority low\r\n#note no hurry",
    )]);
    let t = desk.show(1);
    assert_eq!(t["sla"]["policy"], serde_json::Value::Null);
    assert_eq!(t["sla"]["first_response_due"], serde_json::Value::Null);
    assert_eq!(t["sla"]["resolution_due"], serde_json::Value::Null);
    desk.ok(&["tick", "--now", "2026-11-20T09:00:00Z"]);
    let kinds = crate::support::event_kinds(&desk.show(1));
    assert!(
        !kinds.iter().any(|k| k.starts_with("sla_breach") || k == "sla_warning"),
        "{kinds:?}"
    );
}

/// Business time is measured in the calendar in force when the target was met.
#[test]
fn business_minutes_use_the_calendar_in_force_at_the_time() {
    let smtp = Smtp::start();
    let setup = r#"
[[agent]]
name = "Alice Jones"
email = "alice@example.com"
queues = ["general"]

[calendar.office]
timezone = "UTC"
hours = { mon = "09:00-17:00", tue = "09:00-17:00", wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00" }

[sla.normal]
calendar = "office"
first_response = "8h"

[sla.high]
calendar = "24x7"
first_response = "1h"
"#;
    let desk = DeskConfig::new().smtp(smtp.port).agents(setup).build();
    desk.ingest(&[&customer(
        "a@customer.test",
        "Weekend",
        "w1@c",
        "Fri, 20 Nov 2026 16:00:00 +0000",
        "",
        "a",
    )]);
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    let reply = |date: &str, id: &str, text: &str| agent_reply("alice@example.com", &n, date, id, text);
    desk.ingest(&[&reply("Mon, 23 Nov 2026 10:00:00 +0000", "w1r", "Looking into it.")]);
    desk.ingest(&[&reply(
        "Mon, 23 Nov 2026 10:30:00 +0000",
        "w1s",
        "#priority high\r\n#note now urgent",
    )]);
    assert_eq!(desk.show(1)["sla"]["policy"], "high");
    let r: serde_json::Value =
        serde_json::from_str(&desk.ok(&["report", "--since", "2026-11-20", "--until", "2026-11-24", "--json"]))
            .unwrap();
    let fr = &r["overall"]["first_response"];
    assert_eq!(fr["median_minutes"], 66.0 * 60.0);
    assert_eq!(
        fr["median_business_minutes"], 120.0,
        "Fri 16–17 and Mon 9–10 in the office calendar"
    );
    // A policy change inside the interval splits it: the office hour on
    // Friday, then 24×7 from Saturday noon.
    desk.ingest(&[&customer(
        "b@customer.test",
        "Weekend 2",
        "w2@c",
        "Fri, 20 Nov 2026 16:00:00 +0000",
        "",
        "b",
    )]);
    let n2 = smtp
        .received_by("alice@example.com")
        .into_iter()
        .find(|m| header(m, "Subject").unwrap().starts_with("[Support #2]"))
        .unwrap();
    let reply2 = |date: &str, id: &str, text: &str| agent_reply("alice@example.com", &n2, date, id, text);
    desk.ingest(&[&reply2(
        "Sat, 21 Nov 2026 12:00:00 +0000",
        "w2n",
        "#priority high\r\n#note urgent",
    )]);
    desk.ingest(&[&reply2("Mon, 23 Nov 2026 10:00:00 +0000", "w2r", "On it.")]);
    let r: serde_json::Value =
        serde_json::from_str(&desk.ok(&["report", "--since", "2026-11-20", "--until", "2026-11-24", "--json"]))
            .unwrap();
    let both = &r["overall"]["first_response"];
    assert_eq!(both["count"], 2);
    // Ticket 1: 120 business minutes; ticket 2: 60 + 46 h × 60 = 2,820 (all
    // office: 120; all 24×7: 3,960).
    assert_eq!(both["median_business_minutes"], (120.0 + 2820.0) / 2.0);
}
