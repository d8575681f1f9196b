//! Tidy checks that keep the architecture's invariants true.

use std::path::Path;

fn sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    assert!(out.len() > 10, "src/ not found");
    out
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    for (path, text) in sources() {
        assert!(text.starts_with("//!"), "{path} must open with a //! comment");
    }
}

/// The code of a file before its `#[cfg(test)]` module (tests may build
/// settings with the TOML adapter).
fn code(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

fn under<'a>(sources: &'a [(String, String)], folder: &str) -> Vec<&'a (String, String)> {
    let folder = format!("src/{folder}/");
    sources.iter().filter(|(p, _)| p.contains(&folder)).collect()
}

#[test]
fn the_core_names_no_io_crate_no_outer_layer_and_never_reads_the_clock() {
    let all = sources();
    let core = under(&all, "core");
    let mut names: Vec<&str> = core
        .iter()
        .map(|(p, _)| p.rsplit('/').next().unwrap().trim_end_matches(".rs"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "agent",
            "authres",
            "calendar",
            "classify",
            "embed",
            "intent",
            "language",
            "merge",
            "mod",
            "model",
            "outgoing",
            "portal",
            "reply",
            "report",
            "route",
            "sentiment",
            "settings",
            "sla",
            "subject",
            "summary",
            "thread",
            "ticket",
            "token"
        ],
        "the core's modules"
    );
    let forbidden = [
        "tokio",
        "sled",
        "lettre",
        "async_imap",
        "std::fs",
        "std::net",
        "Timestamp::now",
        "SystemTime",
        "Instant::now",
        "mail_parser",
        "toml",
        "crate::adapters",
        "crate::transports",
        "crate::pipeline",
        "crate::daemon",
        "crate::cli",
        "crate::view",
    ];
    for (path, text) in core {
        for f in forbidden {
            assert!(!code(text).contains(f), "{path} is core and must not use {f}");
        }
    }
}

#[test]
fn adapters_name_no_transport_and_nothing_borrows_from_the_cli() {
    let all = sources();
    for (path, text) in under(&all, "adapters") {
        for f in [
            "crate::transports",
            "crate::pipeline",
            "crate::daemon",
            "crate::cli",
            "crate::view",
        ] {
            assert!(!code(text).contains(f), "{path} is an adapter and must not use {f}");
        }
    }
    for (path, text) in &all {
        if !path.ends_with("src/cli.rs") && !path.ends_with("src/main.rs") {
            assert!(!text.contains("crate::cli"), "{path} must not borrow from the CLI");
        }
    }
}

#[test]
fn only_the_inbound_adapter_names_mail_parser() {
    for (path, text) in sources() {
        if path.ends_with("src/adapters/inbound.rs") {
            assert!(text.contains("mail_parser"));
        } else {
            assert!(!text.contains("mail_parser::"), "{path} must go through inbound.rs");
        }
    }
}

#[test]
fn only_the_wire_adapter_names_mail_builder() {
    for (path, text) in sources() {
        if path.ends_with("src/transports/smtp/wire.rs") {
            assert!(text.contains("mail_builder"));
        } else {
            assert!(!text.contains("mail_builder::"), "{path} must go through wire.rs");
        }
    }
}
