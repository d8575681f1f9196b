//! Intent learned from the desk's own tickets: agents label tickets with
//! `#type`, `postdesk train` learns, a new mail is read and routed by it.

use crate::servers::Smtp;
use crate::support::{Desk, DeskConfig, agent_reply, mail, notification_of};
use serde_json::Value;

const SETUP: &str = r#"
[[agent]]
name = "Alice Jones"
email = "alice@example.com"
queues = ["general"]

[[rule]]
name = "cards"
when.intent = "card"
when.intent_min_confidence = 0.5
set.priority = "high"
set.tags = ["card-intent"]
"#;

const CARD: [&str; 4] = [
    "My new card has not arrived yet, it has been two weeks.",
    "Where is my card? The delivery is taking forever.",
    "I ordered a replacement card but it never came in the post.",
    "Can you track the card you sent me? Still waiting for it to arrive.",
];
const REFUND: [&str; 4] = [
    "I want a refund for the double payment on my account.",
    "Please give me my money back, the merchant charged me twice.",
    "How long does a refund take to reach my account?",
    "The shop cancelled my order, when do I get the refund?",
];

/// Customer `n` asks `text` in a new ticket.
fn ask(desk: &Desk, n: impl std::fmt::Display, text: &str) {
    desk.ingest(&[&mail(
        &format!("c{n}@customer.test"),
        "support@example.com",
        "Question",
        &format!("m{n}@customer.test"),
        "",
        text,
    )]);
}

/// Alice answers ticket `n`'s notification with `#type label`.
fn file_as(desk: &Desk, smtp: &Smtp, n: u64, label: &str) {
    desk.ingest(&[&agent_reply(
        "alice@example.com",
        &notification_of(smtp, "alice@example.com", n),
        "Mon, 23 Nov 2026 10:00:00 +0000",
        &format!("r{n}"),
        &format!("#type {label}"),
    )]);
}

#[test]
fn agents_labels_train_a_model_that_routes_new_mail_by_intent() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new().smtp(smtp.port).agents(SETUP).build();
    // Before any model: no intent, and train says why it cannot learn yet.
    desk.ingest(&[&mail(
        "a0@customer.test",
        "support@example.com",
        "Hello",
        "x0@c",
        "",
        "Just saying hi.",
    )]);
    let out = desk.run(&["train"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fewer than two labels"),
        "{out:?}"
    );
    let mut n = 1;
    for (label, texts) in [("card", CARD), ("refund", REFUND)] {
        for text in texts {
            n += 1;
            ask(&desk, n, text);
            // The agent files it, as agents do.
            file_as(&desk, &smtp, n, label);
        }
    }
    assert!(desk.show(2)["intent"].is_null(), "no model yet");
    let summary: Value = serde_json::from_str(&desk.ok(&["train", "--json"])).unwrap();
    assert_eq!(
        (summary["examples"].as_u64(), summary["labels"].as_u64()),
        (Some(8), Some(2)),
        "{summary}"
    );
    assert_eq!(summary["source"], "tickets:type");
    let new = mail(
        "d@customer.test",
        "support@example.com",
        "Card?",
        "new@customer.test",
        "",
        "My card still has not arrived, where is it?",
    );
    let dir = desk.dir.join("explain");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("new.eml"), &new).unwrap();
    let explained: Value =
        serde_json::from_str(&desk.ok(&["explain", "--json", dir.join("new.eml").to_str().unwrap()])).unwrap();
    assert_eq!(explained["intents"][0][0], "card", "{explained:#}");
    desk.ingest(&[&new]);
    let t = desk.tickets().into_iter().find(|t| t["subject"] == "Card?").unwrap();
    assert_eq!(t["intent"]["label"], "card", "{t:#}");
    let confidence = t["intent"]["confidence"].as_f64().unwrap();
    assert!(confidence > 0.5 && confidence <= 1.0, "{t:#}");
    assert_eq!(
        (t["priority"].as_str(), t["tags"][0].as_str()),
        (Some("high"), Some("card-intent")),
        "{t:#}"
    );
    // A refund question is not a card question: the rule leaves it alone.
    desk.ingest(&[&mail(
        "e@customer.test",
        "support@example.com",
        "Money",
        "new2@customer.test",
        "",
        "I was charged twice, please refund me.",
    )]);
    let t = desk.tickets().into_iter().find(|t| t["subject"] == "Money").unwrap();
    assert_eq!(t["intent"]["label"], "refund", "{t:#}");
    assert_eq!(t["priority"], "normal");
    // The agent's notification says what the model read.
    let note = notification_of(&smtp, "alice@example.com", t["id"].as_u64().unwrap());
    assert!(crate::support::body_text(&note).contains("intent refund"), "{note}");
}

#[test]
fn train_from_csv_names_bad_columns_and_bad_keys_are_refused_by_check() {
    let desk = DeskConfig::new().build();
    let csv = desk.dir.join("export.csv");
    std::fs::write(
        &csv,
        "question,category\n\"Where is my card, please?\",card\nrefund me,refund\n",
    )
    .unwrap();
    let out = desk.run(&["train", "--csv", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(66));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no column \"text\" (columns: question, category)"),
        "{err}"
    );
    let spec = format!("{}:question,category", csv.display());
    let summary: Value = serde_json::from_str(&desk.ok(&["train", "--json", "--csv", &spec])).unwrap();
    assert_eq!(summary["examples"], 2);
    let desk = DeskConfig::new()
        .extra("[[rule]]\nname = \"x\"\nwhen.intent_min_confidence = 2\n\n[[rule]]\nname = \"y\"\nwhen.intent_min_confidence = 0.5\n")
        .build();
    let out = desk.run(&["check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("when.intent_min_confidence must be a number from 0 to 1"),
        "{err}"
    );
    assert!(err.contains("needs when.intent in the same rule"), "{err}");
}

#[test]
fn the_daemon_retrains_on_its_schedule_and_the_new_model_reads_the_next_mail() {
    let smtp = Smtp::start();
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(SETUP)
        .extra("[intent]\nlabel = \"type\"\nretrain = \"2s\"\nmin_examples = 8\n")
        .build();
    let daemon = desk.start();
    let mut n = 0;
    for (label, texts) in [("card", CARD), ("refund", REFUND)] {
        for text in texts {
            n += 1;
            ask(&desk, n, text);
            crate::support::wait_until(20, "the notification", || {
                smtp.received_by("alice@example.com").len() >= n
            });
            if n == 1 {
                daemon.wait(20, "a pass with too few labels", || {
                    daemon.log().contains("too few labelled tickets")
                });
            }
            file_as(&desk, &smtp, n as u64, label);
        }
    }
    daemon.wait(30, "the retrained model", || {
        daemon.log().contains("intent model retrained")
    });
    assert!(desk.dir.join("data/intent.model").exists());
    desk.ingest(&[&mail(
        "d@customer.test",
        "support@example.com",
        "Card?",
        "new@customer.test",
        "",
        "My card still has not arrived, where is it?",
    )]);
    let t = desk.tickets().into_iter().find(|t| t["subject"] == "Card?").unwrap();
    assert_eq!(t["intent"]["label"], "card", "{t:#}");
    assert_eq!(t["priority"], "high", "the intent rule matched: {t:#}");
    daemon.stop();
}

/// Token vectors for a desk: card words along one axis, refund words along
/// another (the safetensors file F16, as wordllama's), their vocabulary a piece a line.
fn embeddings(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let words = [
        ("▁card", 0),
        ("▁arrived", 0),
        ("▁delivery", 0),
        ("▁post", 0),
        ("▁courier", 0),
        ("▁parcel", 0),
        ("▁refund", 1),
        ("▁money", 1),
        ("▁payment", 1),
        ("▁charged", 1),
        ("▁chargeback", 1),
        ("▁reimbursement", 1),
    ];
    let mut vocab = vec!["<unk>", "<s>", "</s>", "▁"];
    let mut table: Vec<u8> = vec![0; 4 * 3 * 2];
    for (w, axis) in words {
        vocab.push(w);
        for d in 0..3 {
            // 1.0 and 0.0 as half floats.
            let half: u16 = if d == axis { 0x3c00 } else { 0 };
            table.extend(half.to_le_bytes());
        }
    }
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![vocab.len(), 3], &table).unwrap();
    let (w, v) = (dir.join("vectors.safetensors"), dir.join("vocabulary.txt"));
    std::fs::write(&w, safetensors::serialize([("embedding", view)], None).unwrap()).unwrap();
    std::fs::write(&v, vocab.join("\n") + "\n").unwrap();
    (w, v)
}

#[test]
fn with_token_embeddings_a_mail_in_words_no_example_used_is_routed_by_intent() {
    let smtp = Smtp::start();
    let dir = std::env::temp_dir().join(format!("postdesk-it-embeddings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (w, v) = embeddings(&dir);
    let desk = DeskConfig::new()
        .smtp(smtp.port)
        .agents(SETUP)
        .extra(&format!(
            "[intent]\nembeddings = \"{}\"\nvocabulary = \"{}\"\n",
            w.display(),
            v.display()
        ))
        .build();
    let csv = desk.dir.join("export.csv");
    let rows: Vec<String> = CARD
        .iter()
        .map(|t| format!("\"{t}\",card"))
        .chain(REFUND.iter().map(|t| format!("\"{t}\",refund")))
        .collect();
    std::fs::write(&csv, format!("text,label\n{}\n", rows.join("\n"))).unwrap();
    let summary: Value = serde_json::from_str(&desk.ok(&["train", "--json", "--csv", csv.to_str().unwrap()])).unwrap();
    assert_eq!(summary["examples"], 8);
    assert_eq!(summary["embeddings"]["tokens"], 16, "{summary:#}");
    assert_eq!(summary["embeddings"]["dims"], 3, "{summary:#}");
    ask(&desk, 1, "courier parcel");
    ask(&desk, 2, "chargeback reimbursement");
    let tickets = desk.tickets();
    let of = |id: &str| {
        tickets
            .iter()
            .find(|t| t["last_public_message_id"] == id)
            .unwrap_or_else(|| panic!("ticket of {id}: {tickets:#?}"))
            .clone()
    };
    let (t1, t2) = (of("m1@customer.test"), of("m2@customer.test"));
    assert_eq!(t1["intent"]["label"], "card", "{t1:#}");
    assert_eq!(t1["priority"], "high", "the card rule matched: {t1:#}");
    assert_eq!(t2["intent"]["label"], "refund", "{t2:#}");
    std::fs::remove_dir_all(&dir).unwrap();
    // The control: the same examples without the vectors do not read both.
    let plain = DeskConfig::new().build();
    plain.ok(&["train", "--csv", csv.to_str().unwrap()]);
    ask(&plain, 1, "courier parcel");
    ask(&plain, 2, "chargeback reimbursement");
    let right = plain
        .tickets()
        .iter()
        .filter(|t| {
            (t["last_public_message_id"] == "m1@customer.test" && t["intent"]["label"] == "card")
                || (t["last_public_message_id"] == "m2@customer.test" && t["intent"]["label"] == "refund")
        })
        .count();
    assert!(right < 2, "without embeddings these words are unknown");

    // Half a pair, or a file that is not there, is refused by check.
    let desk = DeskConfig::new()
        .extra("[intent]\nembeddings = \"/nonexistent/v.safetensors\"\n")
        .build();
    let out = desk.run(&["check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[intent] embeddings and vocabulary go together"), "{err}");
    let desk = DeskConfig::new()
        .extra("[intent]\nembeddings = \"/nonexistent/v.safetensors\"\nvocabulary = \"/nonexistent/v.txt\"\n")
        .build();
    let err = String::from_utf8_lossy(&desk.run(&["check"]).stderr).to_string();
    assert!(
        err.contains("[intent] embeddings /nonexistent/v.safetensors: no such file"),
        "{err}"
    );
}
