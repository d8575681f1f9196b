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

#[test]
fn the_core_names_no_io_crate_and_never_reads_the_clock() {
    let core = [
        "subject.rs",
        "token.rs",
        "authres.rs",
        "classify.rs",
        "thread.rs",
        "ticket.rs",
        "outgoing.rs",
        "model.rs",
    ];
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
    ];
    let mut checked = 0;
    for (path, text) in sources() {
        if !core.iter().any(|c| path.ends_with(&format!("src/{c}"))) {
            continue;
        }
        checked += 1;
        for f in forbidden {
            assert!(!text.contains(f), "{path} is core and must not use {f}");
        }
    }
    assert_eq!(checked, core.len());
}

#[test]
fn only_the_inbound_adapter_names_mail_parser() {
    for (path, text) in sources() {
        if path.ends_with("src/inbound.rs") {
            assert!(text.contains("mail_parser"));
        } else {
            assert!(!text.contains("mail_parser::"), "{path} must go through inbound.rs");
        }
    }
}

#[test]
fn only_the_wire_adapter_names_mail_builder() {
    for (path, text) in sources() {
        if path.ends_with("src/wire.rs") {
            assert!(text.contains("mail_builder"));
        } else {
            assert!(!text.contains("mail_builder::"), "{path} must go through wire.rs");
        }
    }
}
