//! `postdesk report` on a store built by `ingest`, with hand-computed figures.

use crate::servers::Smtp;
use crate::support::{DeskConfig, agent_reply, header, mail, notification_of};

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
    let notification = |ticket: u64| notification_of(&smtp, "alice@example.com", ticket);
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
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(SETUP)
        .timezone("Europe/Berlin")
        .build();
    let notification = |ticket: u64| notification_of(&smtp, "alice@example.com", ticket);
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
    let n2 = notification_of(&smtp, "alice@example.com", 2);
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

/// One step of the oracle scenario: at `at` (RFC 2822, UTC), on ticket `t`.
enum Step {
    /// The customer opens ticket `t`.
    Open,
    /// An agent's public reply, with command lines first.
    Reply(&'static str, &'static str),
    /// An agent's commands only, nothing relayed.
    Commands(&'static str, &'static str),
    /// The customer writes again.
    Customer,
}

/// The report computed by a small, separate implementation of the README's
/// definitions from the scenario itself (not from postdesk's event log), and
/// compared with `postdesk report --json` for a full period and sub-periods
/// whose days are Europe/Berlin's (the first spans the end of DST), with a
/// priority raise after a met first response and one after a pending pause,
/// and for a period to come, in which nothing happens.
#[test]
fn report_agrees_with_an_independent_implementation_of_its_definitions() {
    use jiff::Timestamp;
    let smtp = Smtp::start();
    let setup = r#"
[[agent]]
name = "Alice Jones"
email = "alice@example.com"
queues = ["general"]

[[agent]]
name = "Bob Stone"
email = "bob@example.com"
queues = ["general"]

[[queue]]
name = "general"
assign = "none"

[sla.normal]
calendar = "24x7"
first_response = "4h"
resolution = "3d"

[sla.high]
calendar = "24x7"
first_response = "1h"
resolution = "1d"
"#;
    // Targets in minutes by policy, for the oracle (24×7: a deadline is a sum).
    let target = |high: bool| {
        if high {
            (60.0, 24.0 * 60.0)
        } else {
            (240.0, 3.0 * 24.0 * 60.0)
        }
    };
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(setup)
        .timezone("Europe/Berlin")
        .build();
    let steps: Vec<(&str, u64, Step)> = vec![
        // T7: answered and resolved at once (one-touch), making the counts even.
        ("Sat, 24 Oct 2026 08:00:00 +0000", 7, Step::Open),
        (
            "Sat, 24 Oct 2026 08:45:00 +0000",
            7,
            Step::Reply("bob", "#status resolved"),
        ),
        // T6: pending 8 hours, then raised to high, resolved within 1 day + the pause.
        ("Wed, 21 Oct 2026 09:00:00 +0000", 6, Step::Open),
        (
            "Wed, 21 Oct 2026 10:00:00 +0000",
            6,
            Step::Reply("alice", "#status pending"),
        ),
        ("Wed, 21 Oct 2026 18:00:00 +0000", 6, Step::Customer),
        (
            "Wed, 21 Oct 2026 18:30:00 +0000",
            6,
            Step::Commands("alice", "#priority high\n#note urgent now"),
        ),
        (
            "Thu, 22 Oct 2026 12:00:00 +0000",
            6,
            Step::Reply("alice", "#status resolved"),
        ),
        ("Mon, 19 Oct 2026 09:00:00 +0000", 1, Step::Open),
        (
            "Mon, 19 Oct 2026 10:00:00 +0000",
            1,
            Step::Reply("alice", "#status resolved"),
        ),
        ("Tue, 20 Oct 2026 09:00:00 +0000", 2, Step::Open),
        ("Tue, 20 Oct 2026 11:00:00 +0000", 2, Step::Reply("bob", "")),
        // Raised after its first response was met in 2 hours against 4.
        (
            "Tue, 20 Oct 2026 12:00:00 +0000",
            2,
            Step::Commands("bob", "#priority high\n#note raise"),
        ),
        (
            "Wed, 21 Oct 2026 09:00:00 +0000",
            2,
            Step::Reply("bob", "#status resolved"),
        ),
        ("Thu, 22 Oct 2026 09:00:00 +0000", 4, Step::Open),
        (
            "Thu, 22 Oct 2026 10:00:00 +0000",
            4,
            Step::Commands("bob", "#status closed"),
        ),
        ("Fri, 23 Oct 2026 09:00:00 +0000", 5, Step::Open),
        ("Fri, 23 Oct 2026 09:30:00 +0000", 5, Step::Reply("alice", "")),
        ("Sat, 24 Oct 2026 20:00:00 +0000", 3, Step::Open),
        // Sunday 25 October: DST ends in Berlin at 01:00 UTC.
        ("Sun, 25 Oct 2026 10:00:00 +0000", 3, Step::Reply("alice", "")),
        ("Tue, 27 Oct 2026 09:00:00 +0000", 2, Step::Customer),
        (
            "Tue, 27 Oct 2026 12:00:00 +0000",
            3,
            Step::Commands("alice", "#assign Bob Stone\n#note yours"),
        ),
        (
            "Wed, 28 Oct 2026 09:00:00 +0000",
            2,
            Step::Reply("bob", "#status resolved"),
        ),
    ];
    let mut steps = steps;
    steps.sort_by_key(|(at, _, _)| jiff::fmt::rfc2822::parse(at).unwrap().timestamp());
    // Tickets open in the order of their Open steps: number them that way.
    let mut numbers: Vec<u64> = Vec::new();
    for (_, t, s) in &steps {
        if matches!(s, Step::Open) {
            numbers.push(*t);
        }
    }
    let real = |t: u64| numbers.iter().position(|n| *n == t).unwrap() as u64 + 1;
    let mut n = 0;
    for (at, t, step) in &steps {
        n += 1;
        let id = real(*t);
        let notification = |agent: &str| notification_of(&smtp, &format!("{agent}@example.com"), id);
        match step {
            Step::Open => desk.ingest(&[&customer(
                &format!("c{id}@customer.test"),
                &format!("Question {id}"),
                &format!("o{n}@c"),
                at,
                "",
                "help",
            )]),
            Step::Customer => desk.ingest(&[&customer(
                &format!("c{id}@customer.test"),
                &format!("Re: [Support #{id}] Question {id}"),
                &format!("o{n}@c"),
                at,
                "",
                "again",
            )]),
            Step::Reply(agent, commands) | Step::Commands(agent, commands) => {
                let words = if matches!(step, Step::Reply(..)) {
                    "Here is the answer."
                } else {
                    ""
                };
                let body = format!("{}\r\n{words}", commands.replace('\n', "\r\n"));
                desk.ingest(&[&agent_reply(
                    &format!("{agent}@example.com"),
                    &notification(agent),
                    at,
                    &format!("a{n}"),
                    &body,
                )])
            }
        };
    }

    // The oracle: the definitions, applied to the steps.
    let ts = |at: &str| -> Timestamp { jiff::fmt::rfc2822::parse(at).unwrap().timestamp() };
    let berlin = |day: &str| -> Timestamp {
        day.parse::<jiff::civil::Date>()
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").unwrap())
            .unwrap()
            .timestamp()
    };
    let median = |mut v: Vec<f64>| -> Option<f64> {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        (n > 0).then(|| {
            if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            }
        })
    };
    let p90 = |mut v: Vec<f64>| -> Option<f64> {
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[((0.9 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1])
    };
    let oracle = |since: Timestamp, until: Timestamp| -> serde_json::Value {
        let inside = |t: Timestamp| t >= since && t < until;
        let mut volume = 0;
        let (mut first, mut resolution) = (Vec::new(), Vec::new());
        let (mut fcr, mut reopened, mut resolved) = (0, 0, 0);
        let mut backlog = 0;
        let (mut fr_total, mut fr_met, mut res_total, mut res_met) = (0, 0, 0, 0);
        let mut load: std::collections::BTreeMap<&str, u64> = [("Alice Jones", 0), ("Bob Stone", 0)].into();
        for &t in &numbers {
            let mine: Vec<(Timestamp, &Step)> = steps
                .iter()
                .filter(|(_, x, _)| *x == t)
                .map(|(at, _, s)| (ts(at), s))
                .collect();
            let created = mine[0].0;
            volume += usize::from(inside(created));
            let replies: Vec<Timestamp> = mine
                .iter()
                .filter(|(_, s)| matches!(s, Step::Reply(..)))
                .map(|(at, _)| *at)
                .collect();
            // Priority high from a `#priority high` step on; pending from a
            // `#status pending` reply to the customer's next mail.
            let high_at = |at: Timestamp| {
                mine.iter()
                    .any(|(x, s)| *x <= at && matches!(s, Step::Commands(_, c) if c.contains("#priority high")))
            };
            let paused_before = |at: Timestamp| -> f64 {
                let mut total = 0.0;
                for (i, (x, s)) in mine.iter().enumerate() {
                    if matches!(s, Step::Reply(_, c) if c.contains("#status pending")) {
                        let end = mine[i + 1..]
                            .iter()
                            .find(|(_, s)| matches!(s, Step::Customer))
                            .map(|(y, _)| *y);
                        if let Some(end) = end.filter(|e| *e <= at) {
                            total += (end.as_second() - x.as_second()) as f64 / 60.0;
                        }
                    }
                }
                total
            };
            if let Some(f) = replies.first().filter(|f| inside(**f)) {
                let minutes = (f.as_second() - created.as_second()) as f64 / 60.0;
                first.push(minutes);
                fr_total += 1;
                fr_met += usize::from(minutes <= target(high_at(*f)).0);
            }
            let resolves: Vec<Timestamp> = mine
                .iter()
                .filter(|(_, s)| matches!(s, Step::Reply(_, c) if c.contains("#status resolved")))
                .map(|(at, _)| *at)
                .collect();
            let reopens: Vec<Timestamp> = mine
                .iter()
                .filter(|(at, s)| matches!(s, Step::Customer) && resolves.iter().any(|r| r < at))
                .map(|(at, _)| *at)
                .collect();
            if let Some(r) = resolves.iter().rev().find(|r| inside(**r)) {
                resolved += 1;
                let minutes = (r.as_second() - created.as_second()) as f64 / 60.0;
                resolution.push(minutes);
                // The deadline in force when the ticket was first resolved (later
                // resolutions keep it): created + target + time paused so far.
                let first_resolve = resolves[0];
                let due = target(high_at(first_resolve)).1 + paused_before(first_resolve);
                res_total += 1;
                res_met += usize::from(minutes <= due);
                let before = replies.iter().filter(|x| *x <= r).count();
                let reopened_by_end = reopens.iter().any(|o| *o < until);
                fcr += usize::from(before == 1 && !reopened_by_end);
                reopened += usize::from(reopens.iter().any(|o| o > r && *o < until));
            }
            // State at the end: resolved after the last resolve unless reopened since; closed stays closed.
            let last_resolve = resolves.iter().rfind(|r| **r < until);
            let last_reopen = reopens.iter().rfind(|o| **o < until);
            let closed = mine
                .iter()
                .any(|(at, s)| matches!(s, Step::Commands(_, c) if c.contains("closed")) && *at < until);
            let open = created < until
                && !closed
                && match (last_resolve, last_reopen) {
                    (Some(r), Some(o)) => o > r,
                    (Some(_), None) => false,
                    _ => true,
                };
            if open {
                backlog += 1;
                // The assignee: the first replier, unless reassigned before the end.
                let mut who = replies.first().filter(|f| **f < until).and_then(|f| {
                    mine.iter()
                        .find(|(at, s)| at == f && matches!(s, Step::Reply(..)))
                        .map(|(_, s)| match s {
                            Step::Reply(a, _) => *a,
                            _ => unreachable!(),
                        })
                });
                for (at, s) in &mine {
                    if let Step::Commands(_, c) = s
                        && c.contains("#assign Bob Stone")
                        && *at < until
                    {
                        who = Some("bob");
                    }
                }
                match who {
                    Some("alice") => *load.get_mut("Alice Jones").unwrap() += 1,
                    Some("bob") => *load.get_mut("Bob Stone").unwrap() += 1,
                    _ => {}
                }
            }
        }
        let ratio = |a: usize, b: usize| {
            if b == 0 {
                serde_json::Value::Null
            } else {
                serde_json::json!(a as f64 / b as f64)
            }
        };
        serde_json::json!({
            "volume": volume,
            "backlog": backlog,
            "first_response": { "count": first.len(), "median_minutes": median(first.clone()), "p90_minutes": p90(first) },
            "resolution": { "count": resolution.len(), "median_minutes": median(resolution.clone()), "p90_minutes": p90(resolution) },
            "first_contact_resolution_rate": ratio(fcr, resolved),
            "reopen_rate": ratio(reopened, resolved),
            "sla_first_response_compliance": ratio(fr_met, fr_total),
            "sla_resolution_compliance": ratio(res_met, res_total),
            "load": load,
        })
    };
    // A week from the day after tomorrow: after the last step and after the
    // mail sent today, so nothing happens to any ticket in it and each one
    // still open counts by its record alone.
    let day = |days: i64| (jiff::Zoned::now().date() + jiff::Span::new().days(days)).to_string();
    let (later, week) = (day(2), day(9));
    for (since, until) in [
        ("2026-10-19", "2026-11-02"),
        ("2026-10-19", "2026-10-26"),
        ("2026-10-26", "2026-11-02"),
        (later.as_str(), week.as_str()),
    ] {
        let want = oracle(berlin(since), berlin(until));
        let r: serde_json::Value =
            serde_json::from_str(&desk.ok(&["report", "--since", since, "--until", until, "--json"])).unwrap();
        let o = &r["overall"];
        let got = serde_json::json!({
            "volume": o["volume"],
            "backlog": o["backlog"],
            "first_response": {
                "count": o["first_response"]["count"],
                "median_minutes": o["first_response"]["median_minutes"],
                "p90_minutes": o["first_response"]["p90_minutes"],
            },
            "resolution": {
                "count": o["resolution"]["count"],
                "median_minutes": o["resolution"]["median_minutes"],
                "p90_minutes": o["resolution"]["p90_minutes"],
            },
            "first_contact_resolution_rate": o["first_contact_resolution_rate"],
            "reopen_rate": o["reopen_rate"],
            "sla_first_response_compliance": o["sla_first_response_compliance"],
            "sla_resolution_compliance": o["sla_resolution_compliance"],
            "load": {
                "Alice Jones": r["agents"]["Alice Jones"]["open_assigned"],
                "Bob Stone": r["agents"]["Bob Stone"]["open_assigned"],
            },
        });
        assert_eq!(got, want, "{since} .. {until}");
    }
}
