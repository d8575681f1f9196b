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
