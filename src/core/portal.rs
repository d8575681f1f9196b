//! What a customer's status page shows of a ticket: its public conversation
//! (the customers' messages and the agents' relayed replies, never notes,
//! agent notifications or an agent's address) and a status in words.

use crate::core::model::{Direction, MessageKind, MessageRecord, Status, Ticket};
use crate::core::settings::Settings;

/// One message as a customer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicMessage {
    /// Who wrote it, as shown: the customer's name, or "Alice via Example Support".
    pub author: String,
    /// Whether a customer wrote it (else an agent's reply).
    pub from_customer: bool,
    /// When.
    pub date: jiff::Timestamp,
    /// Its text, without the lines of ours (status link, reference token).
    pub text: String,
    /// Its attachments' names.
    pub attachments: Vec<String>,
    /// The stored raw mail that holds the attachments' bytes.
    pub raw_key: Option<String>,
}

/// The public conversation of a ticket, oldest first, from a view's messages
/// (those of merged tickets included).
pub fn public_messages(ticket: &Ticket, messages: &[MessageRecord], config: &Settings) -> Vec<PublicMessage> {
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match (m.direction, m.kind) {
            (Direction::Inbound, MessageKind::Customer) => {
                let sender = m.from.email.to_ascii_lowercase();
                // A customer message from an agent's address was a forgery: say so, name no address.
                let author = if config.agent_by_email(&sender).is_some() || m.flagged.is_some() {
                    "Unverified sender".to_string()
                } else if sender == ticket.requester.email.to_ascii_lowercase() {
                    ticket
                        .requester
                        .name
                        .clone()
                        .filter(|n| !n.trim().is_empty())
                        .unwrap_or_else(|| "You".into())
                } else {
                    m.from.name.clone().filter(|n| !n.trim().is_empty()).unwrap_or(sender)
                };
                out.push(PublicMessage {
                    author,
                    from_customer: true,
                    date: m.date,
                    text: m.text.trim().to_string(),
                    attachments: m.attachments.clone(),
                    raw_key: m.raw_key.clone(),
                });
            }
            (Direction::Outbound, MessageKind::Agent) => {
                // The relay's attachments are those of the agent's mail it came from.
                let raw_key = messages[..i]
                    .iter()
                    .rev()
                    .find(|a| {
                        a.direction == Direction::Inbound
                            && a.kind == MessageKind::Agent
                            && a.attachments == m.attachments
                    })
                    .and_then(|a| a.raw_key.clone());
                out.push(PublicMessage {
                    author: m.from.name.clone().unwrap_or_else(|| config.desk.name.clone()),
                    from_customer: false,
                    date: m.date,
                    text: strip_ours(&m.text),
                    attachments: if raw_key.is_some() {
                        m.attachments.clone()
                    } else {
                        Vec::new()
                    },
                    raw_key,
                });
            }
            _ => {}
        }
    }
    out
}

/// A relay's text without the lines we add to every mail: the reference
/// token, and the status link with the line before it.
fn strip_ours(text: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut skip_link = false;
    for line in text.lines() {
        let l = line.trim();
        if std::mem::take(&mut skip_link) && l.contains("/t/") {
            continue;
        }
        if l == crate::core::agent::STATUS_LINE {
            skip_link = true;
            continue;
        }
        if l.starts_with("[ref:") && l.ends_with(']') {
            continue;
        }
        out.push(line);
    }
    out.join("\n").trim().to_string()
}

/// The leading zero bits of SHA-256(`challenge` `:` `answer`): what the
/// `/new` form's proof of work must reach (its script finds the answer).
pub fn work_bits(challenge: &str, answer: &str) -> u32 {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{challenge}:{answer}").as_bytes());
    let mut bits = 0;
    for b in digest.as_ref() {
        bits += b.leading_zeros();
        if *b != 0 {
            break;
        }
    }
    bits
}

/// The status in a customer's words.
pub fn status_words(status: Status) -> &'static str {
    match status {
        Status::New => "Received, not yet answered",
        Status::Open => "Being worked on",
        Status::Pending => "Waiting for your answer",
        Status::Resolved => "Resolved",
        Status::Closed => "Closed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Mailbox, TicketId};

    #[test]
    fn work_bits_counts_the_digest_s_leading_zero_bits() {
        let digest = |s: &str| {
            ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
                .as_ref()
                .to_vec()
        };
        assert_eq!(digest("x:1")[0].leading_zeros().min(8), work_bits("x", "1").min(8));
        // The first answer with 8 zero bits has a zero first byte, and no smaller answer has.
        let n = (0..).find(|n| work_bits("challenge", &n.to_string()) >= 8).unwrap();
        assert_eq!(digest(&format!("challenge:{n}"))[0], 0);
        assert!((0..n).all(|m| digest(&format!("challenge:{m}"))[0] != 0));
        // 12 bits: the first byte zero and the second's top nibble.
        let n = (0..).find(|n| work_bits("c", &n.to_string()) >= 12).unwrap();
        let d = digest(&format!("c:{n}"));
        assert!(d[0] == 0 && d[1] < 16, "{d:?}");
    }

    fn record(direction: Direction, kind: MessageKind, from: Mailbox, text: &str) -> MessageRecord {
        MessageRecord {
            message_id: "m@x".into(),
            from,
            to: Vec::new(),
            date: "2026-12-01T10:00:00Z".parse().unwrap(),
            direction,
            kind,
            subject: "s".into(),
            text: text.into(),
            raw_key: Some("k".into()),
            auto_reason: None,
            attachments: Vec::new(),
            flagged: None,
            language: None,
            sentiment: None,
            channel: None,
            merged_from: None,
        }
    }

    #[test]
    fn notes_agent_mail_and_agent_addresses_stay_internal() {
        let config = crate::adapters::config::parse(
            "[instance]\nname = \"T\"\ndata_dir = \"/tmp/x\"\nsecret_file = \"/tmp/s\"\n\n[[mailbox]]\nname = \"support\"\naddress = \"support@example.com\"\nmaildir = { path = \"/tmp/in\" }\n\n[outgoing]\nfile = { path = \"/tmp/out\" }\n\n[[agent]]\nname = \"alice\"\nemail = \"alice@example.com\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap()
        .settings;
        let ticket = Ticket::new(
            TicketId(1),
            "s",
            Mailbox::new(Some("Bob".into()), "bob@customer.test"),
            "support",
            "general",
            "2026-12-01T10:00:00Z".parse().unwrap(),
        );
        let alice = Mailbox::new(Some("Alice".into()), "alice@example.com");
        let messages = vec![
            record(
                Direction::Inbound,
                MessageKind::Customer,
                ticket.requester.clone(),
                "help",
            ),
            record(Direction::Inbound, MessageKind::Agent, alice.clone(), "internal draft"),
            record(Direction::Inbound, MessageKind::Note, alice.clone(), "secret note"),
            record(
                Direction::Outbound,
                MessageKind::Agent,
                Mailbox::new(Some("Alice via Desk".into()), "support@example.com"),
                "the answer\n\nSee your request and answer online:\nhttp://x/t/1/abc\n\n[ref:1.abcdef]",
            ),
            record(Direction::Outbound, MessageKind::System, alice.clone(), "notification"),
            record(Direction::Inbound, MessageKind::Customer, alice, "forged"),
        ];
        let public = public_messages(&ticket, &messages, &config);
        let shown: Vec<(&str, &str)> = public.iter().map(|m| (m.author.as_str(), m.text.as_str())).collect();
        assert_eq!(
            shown,
            [
                ("Bob", "help"),
                ("Alice via Desk", "the answer"),
                ("Unverified sender", "forged")
            ]
        );
    }
}
