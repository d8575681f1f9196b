//! Golden fixtures: each `tests/fixtures/explain/NAME.eml` beside `NAME.expected`,
//! the `postdesk explain` output for it on an empty store. Set POSTDESK_BLESS=1
//! to rewrite the expected files after a deliberate change.

use crate::support::DeskConfig;
use std::path::Path;

#[test]
fn explain_matches_the_golden_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/explain");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 8, "golden fixtures missing in {}", dir.display());
    let desk = DeskConfig::new().build();
    let bless = std::env::var_os("POSTDESK_BLESS").is_some();
    let mut failures = Vec::new();
    for eml in &fixtures {
        let got = desk.ok(&["explain", eml.to_str().unwrap()]);
        let expected_path = eml.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no .expected file", eml.display()));
        if got != expected {
            failures.push(format!("{}:\n--- expected\n{expected}--- got\n{got}", eml.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each `tests/fixtures/summaries/NAME.thread` (facts as `key: value` lines,
/// then `--- customer|agent|note TIME` and the text of each message) beside
/// `NAME.expected`, the summary an agent's notification opens with.
#[test]
fn summaries_match_the_golden_fixtures() {
    use postdesk::core::model::{Mailbox, Status, Ticket, TicketId};
    use postdesk::core::summary::{Turn, Who, summary};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/summaries");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "thread"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 3, "golden fixtures missing in {}", dir.display());
    let bless = std::env::var_os("POSTDESK_BLESS").is_some();
    let mut failures = Vec::new();
    for path in &fixtures {
        let text = std::fs::read_to_string(path).unwrap();
        let (head, body) = text.split_once("\n--- ").unwrap();
        let at = |v: &str| v.trim().parse::<jiff::Timestamp>().unwrap();
        let mut facts = std::collections::HashMap::new();
        for line in head.lines() {
            let (k, v) = line.split_once(':').unwrap();
            facts.insert(k.trim().to_string(), v.trim().to_string());
        }
        let mut turns = Vec::new();
        let mut times = Vec::new();
        for part in format!("--- {body}")
            .split("\n--- ")
            .map(|p| p.trim_start_matches("--- "))
        {
            let (first, text) = part.split_once('\n').unwrap_or((part, ""));
            let mut words = first.split_whitespace();
            let who = match words.next().unwrap() {
                "customer" => Who::Customer,
                "agent" => Who::Agent,
                "note" => Who::Note,
                other => panic!("{}: {other}?", path.display()),
            };
            times.push(at(words.next().unwrap()));
            turns.push(Turn {
                who,
                text: text.to_string(),
            });
        }
        let mut t = Ticket::new(
            TicketId(12),
            "A problem",
            Mailbox::new(None, "bob@customer.test"),
            "support",
            "general",
            times[0],
        );
        let score = |k: &str| {
            facts
                .get(k)
                .map(|v| postdesk::core::sentiment::Score::of(v.parse().unwrap()))
        };
        t.sentiment = score("sentiment");
        t.sentiment_trend = score("trend");
        t.sla.first_response_due = facts.get("first_response_due").map(|v| at(v));
        t.sla.resolution_due = facts.get("resolution_due").map(|v| at(v));
        if let Some(s) = facts.get("status") {
            t.status = Status::parse(s).unwrap();
        }
        if turns.iter().any(|x| x.who == Who::Agent) {
            t.first_response_at = Some(times[0]);
        }
        let got = summary(&t, &turns, at(&facts["now"]));
        let expected_path = path.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no .expected file", path.display()));
        if got != expected {
            failures.push(format!("{}:\n--- expected\n{expected}--- got\n{got}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
