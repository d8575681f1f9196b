//! SLA clocks, escalation and the timed lifecycle, end to end with `ingest`
//! and `tick --now` against a real SMTP server.

use crate::servers::Smtp;
use crate::support::{DeskConfig, agent_reply, body_text, event_kinds, header, mail};

const SETUP: &str = r#"
[[agent]]
name = "Alice Jones"
email = "alice@example.com"
queues = ["general"]

[[queue]]
name = "general"
assign = "round_robin"
lead = "lead@example.com"

[[rule]]
name = "urgent words"
when.subject = "(?i)down|outage"
set.priority = "high"

[calendar.office]
timezone = "Europe/Berlin"
hours = { mon = "09:00-17:00", tue = "09:00-17:00", wed = "09:00-17:00", thu = "09:00-17:00", fri = "09:00-17:00" }
holidays = ["2026-12-24"]

[sla.high]
calendar = "office"
first_response = "2h"
resolution = "4h"
next_response = "1h"
warn_at = "75%"
on_breach = { notify = ["boss@example.com"], raise_priority = true }

[automation]
pending_reminder_after = "2d"
pending_close_after = "5d"
auto_close_resolved_after = "3d"
csat = true
"#;

fn desk(smtp: &Smtp) -> crate::support::Desk {
    DeskConfig::new()
        .smtp(smtp.port)
        .agents(SETUP)
        .http("public_url = \"https://help.example.com\"")
        .build()
}

fn tick(desk: &crate::support::Desk, now: &str) -> String {
    desk.ok(&["tick", "--now", now])
}

/// A mail dated at `date` (RFC 2822).
fn dated(from: &str, subject: &str, id: &str, headers: &str, body: &str, date: &str) -> String {
    mail(from, "support@example.com", subject, id, headers, body).replace("Mon, 23 Nov 2026 09:00:00 +0000", date)
}

#[test]
fn first_response_warning_then_breach_escalates_and_raises_priority() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    // Monday 23 Nov 09:00 UTC = 10:00 in Berlin: due 12:00 Berlin (11:00Z), warned at 11:30 Berlin (10:30Z).
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "Shop is down",
        "d1@customer.test",
        "",
        "Nothing loads.",
    )]);
    let t = desk.show(1);
    assert_eq!(t["priority"], "high");
    assert_eq!(t["sla"]["policy"], "high");
    assert_eq!(t["sla"]["first_response_due"], "2026-11-23T11:00:00Z");
    assert_eq!(t["sla"]["resolution_due"], "2026-11-23T13:00:00Z");
    let alice_before = smtp.received_by("alice@example.com").len();
    assert!(tick(&desk, "2026-11-23T10:29:00Z").contains("timers fired 0"));
    assert!(tick(&desk, "2026-11-23T10:31:00Z").contains("timers fired 1"));
    let warning = smtp.received_by("alice@example.com").pop().unwrap();
    assert_eq!(smtp.received_by("alice@example.com").len(), alice_before + 1);
    assert!(
        header(&warning, "Subject").unwrap().contains("SLA warning"),
        "{warning}"
    );
    // Ticks are idempotent: nothing fires twice.
    assert!(tick(&desk, "2026-11-23T10:40:00Z").contains("timers fired 0"));
    // 11:20Z: the first response is 20 minutes late.
    assert!(tick(&desk, "2026-11-23T11:20:00Z").contains("timers fired 1"));
    let boss = smtp.received_by("boss@example.com");
    assert_eq!(boss.len(), 1);
    let text = body_text(&boss[0]);
    assert!(text.contains("missed its first response target by 20 min"), "{text}");
    assert!(
        text.contains("Nothing loads."),
        "the escalation shows the latest messages"
    );
    assert_eq!(smtp.received_by("lead@example.com").len(), 1, "the queue lead is told");
    assert!(
        smtp.received_by("alice@example.com")
            .pop()
            .unwrap()
            .contains("SLA breach"),
        "the assignee is told"
    );
    let t = desk.show(1);
    assert_eq!(t["priority"], "urgent");
    assert_eq!(t["sla"]["first_response_breached"], true);
    let kinds = event_kinds(&t);
    for k in ["sla_warning", "sla_breach", "escalated", "priority"] {
        assert!(kinds.contains(&k.to_string()), "{k}: {kinds:?}");
    }
}

#[test]
fn pending_pauses_the_clock_and_the_customer_resumes_it() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    // A week back, so no date lies after the real clock (arrival is never later than now).
    desk.ingest(&[&dated(
        "carol@customer.test",
        "Outage",
        "o1@customer.test",
        "",
        "Down again.",
        "Mon, 16 Nov 2026 09:00:00 +0000",
    )]);
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    // Alice answers at 10:00Z (11:00 Berlin: 1 of 4 resolution hours used) and waits on the customer.
    let reply = agent_reply(
        "alice@example.com",
        &n,
        "Mon, 16 Nov 2026 10:00:00 +0000",
        "a1",
        "#status pending\r\nWhich browser do you use?",
    );
    desk.ingest(&[&reply]);
    let t = desk.show(1);
    assert_eq!(t["status"], "pending");
    assert_eq!(t["sla"]["paused_at"], "2026-11-16T10:00:00Z");
    // Paused: the resolution deadline of 13:00Z passes without a breach.
    assert!(tick(&desk, "2026-11-16T16:00:00Z").contains("timers fired 0"));
    // The customer answers Tuesday 09:00Z (10:00 Berlin): 3 hours left, due 13:00 Berlin = 12:00Z;
    // the next response is due within 1 business hour.
    desk.ingest(&[&dated(
        "carol@customer.test",
        "Re: [Support #1] Outage",
        "o2@customer.test",
        "",
        "Firefox.",
        "Tue, 17 Nov 2026 09:00:00 +0000",
    )]);
    let t = desk.show(1);
    assert_eq!(t["status"], "open");
    assert!(t["sla"]["paused_at"].is_null());
    assert_eq!(
        t["sla"]["resolution_due"],
        "2026-11-17T12:00:00Z",
        "{}",
        serde_json::to_string_pretty(&t["events"]).unwrap()
    );
    assert_eq!(t["sla"]["next_response_due"], "2026-11-17T10:00:00Z");
    assert!(event_kinds(&t).contains(&"sla_resumed".to_string()));
}

#[test]
fn pending_reminder_then_close_and_resolved_tickets_auto_close() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    desk.ingest(&[
        &mail(
            "carol@customer.test",
            "support@example.com",
            "Question A",
            "qa@customer.test",
            "",
            "a",
        ),
        &mail(
            "dave@customer.test",
            "support@example.com",
            "Question B",
            "qb@customer.test",
            "",
            "b",
        ),
    ]);
    let notes = smtp.received_by("alice@example.com");
    let reply = |n: &str, cmd: &str, id: &str| {
        agent_reply(
            "alice@example.com",
            n,
            "Mon, 23 Nov 2026 10:00:00 +0000",
            id,
            &format!("{cmd}\r\nSee above."),
        )
    };
    let for_ticket = |t: u64| {
        notes
            .iter()
            .find(|m| header(m, "Subject").unwrap().starts_with(&format!("[Support #{t}]")))
            .unwrap()
            .clone()
    };
    desk.ingest(&[
        &reply(&for_ticket(1), "#status pending", "p1"),
        &reply(&for_ticket(2), "#status resolved", "r2"),
    ]);
    let carol_before = smtp.received_by("carol@customer.test").len();
    // Two days later Carol is reminded; five days later ticket 1 closes; three days after resolving ticket 2 closes.
    tick(&desk, "2026-11-25T10:01:00Z");
    let reminder = smtp.received_by("carol@customer.test").pop().unwrap();
    assert_eq!(smtp.received_by("carol@customer.test").len(), carol_before + 1);
    assert!(
        body_text(&reminder).contains("we are waiting for your answer"),
        "{reminder}"
    );
    assert_eq!(header(&reminder, "Auto-Submitted"), Some("auto-replied"));
    assert_eq!(desk.show(2)["status"], "resolved");
    tick(&desk, "2026-11-26T10:01:00Z");
    assert_eq!(desk.show(2)["status"], "closed");
    assert_eq!(desk.show(1)["status"], "pending");
    tick(&desk, "2026-11-28T10:01:00Z");
    let t1 = desk.show(1);
    assert_eq!(t1["status"], "closed");
    assert!(body_text(&smtp.received_by("carol@customer.test").pop().unwrap()).contains("so we closed it"));
    let kinds = event_kinds(&t1);
    assert!(kinds.contains(&"pending_reminder".to_string()) && kinds.contains(&"status".to_string()));
}

#[test]
fn survey_on_resolve_records_the_rating_without_reopening() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "Invoice copy",
        "s1@customer.test",
        "",
        "Please resend.",
    )]);
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    let reply = agent_reply(
        "alice@example.com",
        &n,
        "Mon, 23 Nov 2026 10:00:00 +0000",
        "s2",
        "#status resolved\r\nAttached again.",
    );
    desk.ingest(&[&reply]);
    let survey = smtp.received_by("carol@customer.test").pop().unwrap();
    let text = body_text(&survey);
    assert!(
        text.contains("Reply with a single number from 1 (poor) to 5 (excellent)"),
        "{text}"
    );
    assert!(text.contains("https://help.example.com/csat/1/"), "signed link: {text}");
    assert_eq!(desk.show(1)["status"], "resolved");
    let rating = format!(
        "From: carol@customer.test\r\nTo: support@example.com\r\nSubject: Re: {}\r\nDate: Mon, 23 Nov 2026 11:00:00 +0000\r\nMessage-ID: <s3@customer.test>\r\nIn-Reply-To: {}\r\n\r\n5\r\nVery quick, thanks!\r\n\r\nOn Mon, Alice wrote:\r\n> How did we do?\r\n",
        header(&survey, "Subject").unwrap(),
        header(&survey, "Message-ID").unwrap()
    );
    let alice_before = smtp.received_by("alice@example.com").len();
    desk.ingest(&[&rating]);
    let t = desk.show(1);
    assert_eq!(t["csat"], 5);
    assert_eq!(t["status"], "resolved", "a rating does not reopen");
    assert_eq!(
        smtp.received_by("alice@example.com").len(),
        alice_before,
        "nor does it page the agent"
    );
    let csat = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "csat")
        .unwrap()
        .clone();
    assert_eq!(csat["comment"], "Very quick, thanks!");
    // Reopened and resolved again: one survey per resolution.
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "Re: [Support #1] Invoice copy",
        "s4@customer.test",
        "",
        "The attachment is empty.",
    )]);
    assert_eq!(desk.show(1)["status"], "open");
    let surveys_before = desk.show(1)["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "survey_sent")
        .count();
    desk.ingest(&[&agent_reply(
        "alice@example.com",
        &n,
        "Mon, 23 Nov 2026 12:00:00 +0000",
        "s5",
        "#status resolved\r\nSent as a link instead.",
    )]);
    let t = desk.show(1);
    let surveys = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "survey_sent")
        .count();
    assert_eq!(
        (surveys_before, surveys),
        (1, 2),
        "a second survey for the second resolution"
    );
    assert_eq!(
        t["csat"],
        serde_json::Value::Null,
        "the new resolution is not rated yet"
    );
    assert!(
        t["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "csat" && e["rating"] == 5)
    );
}

#[test]
fn status_request_gets_the_latest_update_without_touching_the_ticket() {
    let smtp = Smtp::start();
    let desk = desk(&smtp);
    desk.ingest(&[&mail(
        "carol@customer.test",
        "support@example.com",
        "Outage at night",
        "n1@customer.test",
        "",
        "Down.",
    )]);
    let n = smtp.received_by("alice@example.com").pop().unwrap();
    let reply = agent_reply(
        "alice@example.com",
        &n,
        "Mon, 23 Nov 2026 09:30:00 +0000",
        "n2",
        "We are restoring the database now.",
    );
    desk.ingest(&[&reply]);
    let before = desk.show(1);
    let alice_before = smtp.received_by("alice@example.com").len();
    desk.ingest(&[&dated(
        "carol@customer.test",
        "Re: [Support #1] Outage at night",
        "n3@customer.test",
        "",
        "status",
        "Mon, 23 Nov 2026 09:45:00 +0000",
    )]);
    let answer = smtp.received_by("carol@customer.test").pop().unwrap();
    let text = body_text(&answer);
    assert!(text.contains("is open."), "{text}");
    assert!(text.contains("We are restoring the database now."), "{text}");
    let after = desk.show(1);
    assert_eq!(after["sla"], before["sla"], "clocks untouched");
    assert_eq!(after["status"], "open");
    assert_eq!(
        smtp.received_by("alice@example.com").len(),
        alice_before,
        "no notification"
    );
}

#[test]
fn a_backfill_of_old_mail_mails_nobody_and_starts_no_sla_clock() {
    let smtp = Smtp::start();
    let hooks = crate::servers::HttpReceiver::start();
    hooks.answer("/created", 200);
    let secret = crate::servers::temp_dir("hook-secret").join("secret");
    std::fs::write(&secret, "whsec-test-0123456789abcdef\n").unwrap();
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(&SETUP.replace("[automation]\n", "[automation]\nbackfill_window = \"2d\"\n"))
        .extra(&format!(
            "[[webhook]]\nurl = \"{}\"\nevents = [\"ticket.created\"]\nsecret_file = \"{}\"\n",
            hooks.url("/created"),
            secret.display()
        ))
        .build();
    // An archive: Carol's outage two weeks ago; Dave's an hour ago (within the window).
    let recent = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let recent = jiff::fmt::rfc2822::to_string(&recent.to_zoned(jiff::tz::TimeZone::UTC)).unwrap();
    let old = mail(
        "carol@customer.test",
        "support@example.com",
        "Shop is down",
        "old1@customer.test",
        "",
        "Nothing loads.",
    );
    let new = dated(
        "dave@customer.test",
        "Site is down again",
        "new1@customer.test",
        "",
        "Still nothing.",
        &recent,
    );
    // Her follow-up, four days ago, is history too: past the window, and
    // past the reopen window of a ticket closed when she first wrote.
    let four_days_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(96);
    let four_days_ago_rfc3339 = four_days_ago.to_string();
    let four_days_ago = jiff::fmt::rfc2822::to_string(&four_days_ago.to_zoned(jiff::tz::TimeZone::UTC)).unwrap();
    let follow_up = dated(
        "carol@customer.test",
        "Re: Shop is down",
        "old1b@customer.test",
        "In-Reply-To: <old1@customer.test>",
        "Still down here.",
        &four_days_ago,
    );
    let summary = desk.ingest(&[&old, &follow_up, &new]);
    assert_eq!(summary["new_tickets"], 2, "{summary}");
    assert_eq!(summary["appended"], 1, "the follow-up: {summary}");
    assert_eq!(summary["history"], 2, "Carol's two: {summary}");
    // A duplicate of history is a duplicate, not history again.
    assert_eq!(desk.ingest(&[&old])["history"], 0);

    // History is recorded and routed, but nobody hears of it, is handed it, or runs a clock on it.
    let t = desk.show(1);
    assert_eq!(t["requester"]["email"], "carol@customer.test", "{t}");
    assert_eq!(crate::support::inbound_messages(&t), 2, "one conversation, one ticket");
    // Closed when it arrived: out of the new and open lists, no one's work.
    assert_eq!(t["status"], "closed", "{t}");
    assert!(t["closed_at"].as_str().unwrap().starts_with("2026-11-23"), "{t}");
    let closed = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "status" && e["to"] == "closed")
        .unwrap_or_else(|| panic!("a status event: {t}"));
    assert_eq!(closed["history"], true, "{closed}");
    // `explain` reads old mail as history too, threaded as an import would.
    let explain = |text: &str| -> serde_json::Value {
        let path = desk.dir.join("explain.eml");
        std::fs::write(&path, text).unwrap();
        serde_json::from_str(&desk.ok(&["explain", path.to_str().unwrap(), "--json"])).unwrap()
    };
    let e = explain(&follow_up.replace("old1b@", "old1c@"));
    assert!(e["history"].as_str().unwrap().contains("backfill_window (48h)"), "{e}");
    assert!(
        e["threading"].as_str().unwrap().contains("appended to ticket 1"),
        "not linked: {e}"
    );
    assert!(explain(&new.replace("new1@", "new1b@"))["history"].is_null());
    let waiting: Vec<u64> = desk
        .tickets()
        .iter()
        .filter(|t| t["status"] == "new" || t["status"] == "open")
        .filter_map(|t| t["id"].as_u64())
        .collect();
    assert_eq!(waiting, [2], "only Dave's waits on an agent");
    assert_eq!(t["priority"], "high", "the rules still route it");
    assert!(t["assignee"].is_null(), "no one's work now: {}", t["assignee"]);
    assert!(t["sla"]["first_response_due"].is_null(), "no SLA clock: {}", t["sla"]);
    let kinds = event_kinds(&t);
    for k in ["ack_queued", "notified", "assigned"] {
        assert!(!kinds.contains(&k.to_string()), "{k}: {kinds:?}");
    }
    let history = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "history")
        .unwrap_or_else(|| panic!("a history event: {kinds:?}"));
    assert_eq!(
        history["not_sent"],
        serde_json::json!(["acknowledgement", "notification"]),
        "{history}"
    );
    assert!(
        history["reason"].as_str().unwrap().contains("backfill_window (48h)"),
        "{history}"
    );
    assert!(
        t["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["direction"] == "inbound")
    );

    // Mail within the window is handled as if it arrived.
    let t = desk.show(2);
    assert!(event_kinds(&t).contains(&"ack_queued".to_string()));
    assert!(!t["sla"]["first_response_due"].is_null(), "{}", t["sla"]);
    assert!(
        smtp.received_by("carol@customer.test").is_empty(),
        "no acknowledgement of history"
    );
    assert_eq!(
        smtp.received_by("dave@customer.test").len(),
        1,
        "Dave's acknowledgement"
    );
    let told = smtp.received_by("alice@example.com");
    assert_eq!(told.len(), 1, "one notification, of Dave's ticket");
    assert!(header(&told[0], "Subject").unwrap().contains("#2"), "{}", told[0]);
    let dave_notice = told[0].clone();

    // A month on, only Dave's ticket has deadlines to miss.
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 30)).to_string();
    assert!(tick(&desk, &later).contains("timers fired"), "tick runs");
    let boss = smtp.received_by("boss@example.com");
    assert!(!boss.is_empty(), "Dave's ticket breached");
    assert!(
        boss.iter().all(|m| header(m, "Subject").unwrap().contains("#2")),
        "{boss:?}"
    );
    assert!(
        !event_kinds(&desk.show(1)).iter().any(|k| k.starts_with("sla_")),
        "history has no deadlines to miss"
    );
    assert!(smtp.received_by("carol@customer.test").is_empty());

    // Carol writes again today: as on any closed ticket, a new one, linked to her history.
    let alice_before = smtp.received_by("alice@example.com").len();
    let reply = mail(
        "carol@customer.test",
        "support@example.com",
        "Re: Shop is down",
        "old2@customer.test",
        "In-Reply-To: <old1@customer.test>",
        "It is down again.",
    );
    desk.deliver(&reply);
    assert_eq!(
        crate::support::inbound_messages(&desk.show(1)),
        2,
        "history is kept as it was"
    );
    let t = desk.show(3);
    assert_eq!(t["requester"]["email"], "carol@customer.test", "{t}");
    assert_eq!(t["linked"], serde_json::json!([1]), "{t}");
    assert_eq!(t["status"], "new", "{t}");
    assert!(!t["sla"]["first_response_due"].is_null(), "{}", t["sla"]);
    assert_eq!(
        smtp.received_by("carol@customer.test").len(),
        1,
        "her acknowledgement, of today's mail only"
    );
    assert_eq!(
        smtp.received_by("alice@example.com").len(),
        alice_before + 1,
        "Alice is told"
    );

    // Through the running daemon (`POST /api/ingest?at=`), old mail is history too.
    let daemon = desk.start();
    let older = mail(
        "erin@customer.test",
        "support@example.com",
        "Invoice question",
        "old3@customer.test",
        "",
        "Where is my invoice?",
    );
    let newer = dated(
        "frank@customer.test",
        "Login question",
        "new2@customer.test",
        "",
        "I cannot sign in.",
        &recent,
    );
    let summary = desk.ingest(&[&older, &newer]);
    assert_eq!(summary["new_tickets"], 2, "{summary}");
    assert_eq!(summary["history"], 1, "Erin's, through the daemon: {summary}");
    // Webhooks hear of the tickets that arrived (2, 3 and 5), never of history (1 and 4).
    let created = || -> Vec<u64> {
        let mut ids: Vec<u64> = hooks
            .received()
            .iter()
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
            .filter_map(|v| v["ticket"]["id"].as_u64())
            .collect();
        ids.sort_unstable();
        ids
    };
    crate::support::wait_until(30, "the webhook deliveries", || created().len() >= 3);
    daemon.stop();
    assert_eq!(created(), [2, 3, 5], "{:?}", hooks.received());
    let t = desk.show(4);
    assert_eq!(t["status"], "closed", "{t}");
    assert!(
        event_kinds(&t).contains(&"history".to_string()),
        "{:?}",
        event_kinds(&t)
    );
    assert!(smtp.received_by("erin@customer.test").is_empty());
    assert_eq!(
        smtp.received_by("frank@customer.test").len(),
        1,
        "Frank's acknowledgement"
    );

    // History reopens nothing: Dave's ticket, waiting on him, stays so when an
    // older mail of his turns up in a later import.
    let now = jiff::fmt::rfc2822::to_string(&jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC)).unwrap();
    desk.ingest(&[&crate::support::agent_reply(
        "alice@example.com",
        &dave_notice,
        &now,
        "a1",
        "#status pending\r\nWhich browser do you use?",
    )]);
    assert_eq!(desk.show(2)["status"], "pending");
    let older = dated(
        "dave@customer.test",
        "Re: Site is down again",
        "new0@customer.test",
        "In-Reply-To: <new1@customer.test>",
        "Also on my phone.",
        &four_days_ago,
    );
    let summary = desk.ingest(&[&older]);
    assert_eq!(
        (&summary["appended"], &summary["history"]),
        (&1.into(), &1.into()),
        "{summary}"
    );
    let t = desk.show(2);
    assert_eq!(crate::support::inbound_messages(&t), 3, "Dave's two and Alice's: {t}");
    assert_eq!(t["status"], "pending", "{t}");
    // Nor does it move the ticket's update time back, or what a reply answers.
    assert!(
        t["updated_at"].as_str().unwrap() > four_days_ago_rfc3339.as_str(),
        "{t}"
    );
    assert_ne!(t["last_public_message_id"], "new0@customer.test", "{t}");

    // A mail without a Date arrived when its topmost Received says: history
    // too; one with neither arrives now.
    let undated = mail(
        "gina@customer.test",
        "support@example.com",
        "Refund?",
        "old4@customer.test",
        "Received: from mx.customer.test by mx.example.com;\n\tMon, 23 Nov 2026 08:00:00 +0000\nReceived: by mx.customer.test; Mon, 23 Nov 2026 07:59:00 +0000",
        "Where is my refund?",
    )
    .replace("Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n", "");
    let timeless = undated
        .replace("gina@", "hank@")
        .replace("old4@", "new4@")
        .lines()
        .filter(|l| !l.starts_with("Received:") && !l.starts_with('\t'))
        .collect::<Vec<_>>()
        .join("\r\n");
    assert!(!undated.contains("Date:") && !timeless.contains("Received:"));
    let summary = desk.ingest(&[&undated, &timeless]);
    assert_eq!(
        (&summary["new_tickets"], &summary["history"]),
        (&2.into(), &1.into()),
        "{summary}"
    );
    let t = desk.show(6);
    assert_eq!(t["requester"]["email"], "gina@customer.test", "{t}");
    assert_eq!(t["created_at"], "2026-11-23T08:00:00Z", "{t}");
    assert_eq!(t["status"], "closed", "{t}");
    assert!(smtp.received_by("gina@customer.test").is_empty());
    assert_eq!(
        smtp.received_by("hank@customer.test").len(),
        1,
        "Hank's acknowledgement"
    );

    // A bad value is named with its line and column.
    crate::support::check_refuses(
        "[automation]\nbackfill_window = \"soon\"\n",
        &["postdesk.toml:", ":19: bad duration \"soon\""],
    );
}
